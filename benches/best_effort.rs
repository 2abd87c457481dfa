//! Push answer time with a best-effort destination down, against the same run with it healthy:
//! the release `vodbridge` binary with one push source routed to NATS JetStream (required) and
//! RabbitMQ (`required = false`). In the **healthy** rows RabbitMQ answers; in the **down** rows
//! it sits behind a proxy that is silent from the start (connections open and carry nothing,
//! the worst a broker can do), so its publishes time out, its breaker opens and its events
//! queue. The answer should wait for NATS only either way.
//!
//! `CONNS` concurrent HTTP clients in this process post a ~2 KB callback each (a new FileId
//! each) for `SECS` seconds; rows alternate healthy / down for `ROUNDS` rounds. Per row:
//! answers/s, p50, p99, p99.9 and non-200 answers; then the medians' ratios down ÷ healthy.
//!
//! `cargo bench --bench best_effort` (`BEST_EFFORT_SECS` (8), `BEST_EFFORT_CONNS` (16),
//! `BEST_EFFORT_ROUNDS` (3)).

mod support;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use support::{declare_topic_queue, env_usize, median, wait_ready};
use vodbridge_testkit::{free_port, BridgeProcess, NatsServer, RabbitMq, SilentProxy};

/// One row's figures.
#[derive(Debug, Clone, Copy)]
struct Row {
    rps: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    errors: usize,
}

/// The bridge's configuration with RabbitMQ reached at `rabbit`.
fn config(port: u16, nats: &NatsServer, rabbit: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\n[telemetry]\nlog_level = \"warn\"\n\
         [sources.push]\nmode = \"push\"\nsub_app_id = 1500000001\n\
         [sinks.nats]\ntype = \"nats\"\nurl = \"{}\"\nstream = \"VOD\"\ncreate_stream = true\n\
         stream_subjects = [\"vod.>\"]\n\
         [sinks.rabbit]\ntype = \"amqp\"\nurl = \"amqp://guest:guest@{rabbit}/%2f\"\n\
         exchange = \"vod\"\n\
         [[routes]]\nevent_types = [\"*\"]\nsinks = [\
         {{ sink = \"nats\", destination = \"vod.{{event_type}}\" }}, \
         {{ sink = \"rabbit\", destination = \"vod.{{event_type}}\", required = false }}]\n",
        nats.url()
    )
}

/// `conns` clients posting for `secs`; every answer's latency in ms.
async fn load(url: &str, conns: usize, secs: u64, template: &str) -> Row {
    let client = reqwest::Client::new();
    let stop = Arc::new(AtomicBool::new(false));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(0usize));
    let started = Instant::now();
    let tasks: Vec<_> = (0..conns)
        .map(|c| {
            let (client, stop, latencies, errors) = (
                client.clone(),
                Arc::clone(&stop),
                Arc::clone(&latencies),
                Arc::clone(&errors),
            );
            let (url, template) = (url.to_owned(), template.to_owned());
            tokio::spawn(async move {
                let mut n = 0u64;
                let mut mine = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let body = template.replace("__FILEID__", &format!("{c:04}{n:012}"));
                    let sent = Instant::now();
                    let ok = client
                        .post(&url)
                        .body(body)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().as_u16() == 200);
                    mine.push(sent.elapsed().as_secs_f64() * 1000.0);
                    if !ok {
                        *errors.lock().expect("lock") += 1;
                    }
                }
                latencies.lock().expect("lock").extend(mine);
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut all = std::mem::take(&mut *latencies.lock().expect("lock"));
    all.sort_by(f64::total_cmp);
    let at = |q: f64| all[((all.len() as f64 * q) as usize).min(all.len() - 1)];
    let errors = *errors.lock().expect("lock");
    Row {
        rps: all.len() as f64 / elapsed,
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
        errors,
    }
}

fn main() {
    let secs = env_usize("BEST_EFFORT_SECS", 8) as u64;
    let conns = env_usize("BEST_EFFORT_CONNS", 16);
    let rounds = env_usize("BEST_EFFORT_ROUNDS", 3).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut event = vod_emulator::generate::Generator::new(7).event("ProcedureStateChanged");
    event["ProcedureStateChangeEvent"]["FileId"] = "__FILEID__".into();
    event["ProcedureStateChangeEvent"]["SessionContext"] = "x".repeat(1200).into();
    let template = event.to_string();
    let nats = NatsServer::start();
    let rabbit = RabbitMq::start();
    runtime.block_on(declare_topic_queue(&rabbit, "vod", "load"));
    let healthy_addr = format!("127.0.0.1:{}", rabbit.port);
    println!(
        "body {} bytes, {conns} clients, {secs} s per row, {rounds} rounds\n",
        template.len()
    );
    println!("| RabbitMQ (best effort) | answers/s | p50 ms | p99 ms | p99.9 ms | non-200 | queued at the end |");
    println!("|---|---|---|---|---|---|---|");
    let mut rows: Vec<(bool, Row)> = Vec::new();
    for _ in 0..rounds {
        for down in [false, true] {
            let proxy = SilentProxy::start(rabbit.port);
            if down {
                proxy.silence();
            }
            let rabbit_addr = if down {
                proxy.addr()
            } else {
                healthy_addr.clone()
            };
            let port = free_port();
            let bridge = BridgeProcess::start(
                env!("CARGO_BIN_EXE_vodbridge"),
                &config(port, &nats, &rabbit_addr),
                port,
            );
            let client = reqwest::Client::new();
            runtime.block_on(wait_ready(&client, &format!("{}/readyz", bridge.url())));
            let url = format!("{}/callback/push", bridge.url());
            let row = runtime.block_on(load(&url, conns, secs, &template));
            let queued = runtime.block_on(async {
                let text = client
                    .get(format!("{}/metrics", bridge.url()))
                    .send()
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()?;
                text.lines().find_map(|l| {
                    l.strip_prefix("vodbridge_best_effort_queue_depth{sink=\"rabbit\"} ")
                        .map(str::to_owned)
                })
            });
            println!(
                "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} |",
                if down { "silent" } else { "healthy" },
                row.rps,
                row.p50,
                row.p99,
                row.p999,
                row.errors,
                queued.unwrap_or_default()
            );
            rows.push((down, row));
            drop(bridge);
            drop(proxy);
        }
    }
    let of = |down: bool, f: fn(&Row) -> f64| {
        median(
            rows.iter()
                .filter(|(d, _)| *d == down)
                .map(|(_, r)| f(r))
                .collect(),
        )
    };
    println!("\n| median over {rounds} rounds | healthy | silent | silent ÷ healthy |");
    println!("|---|---|---|---|");
    for (name, f) in [
        ("answers/s", (|r: &Row| r.rps) as fn(&Row) -> f64),
        ("p50 ms", |r: &Row| r.p50),
        ("p99 ms", |r: &Row| r.p99),
        ("p99.9 ms", |r: &Row| r.p999),
    ] {
        let (h, s) = (of(false, f), of(true, f));
        println!("| {name} | {h:.2} | {s:.2} | {:.3} |", s / h);
    }
}
