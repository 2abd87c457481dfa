//! Memory harness: the resident memory of the real `vodbridge` binary (its own process, its
//! shipped allocator) idle, at its peak under push load, and after the load, with the idle
//! figure of the same process as the in-run baseline.
//!
//! `cargo bench --bench memory`; env `EVENTS` (50,000 per scenario), `MEMORY_SINKS`
//! ("stdout,nats"), and `MEMORY_BINARY` to measure another build of the binary (an A/B against
//! an older commit in the same run).
#![allow(missing_docs)]

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use vod_emulator::generate::{parse_types, Generator};
use vodbridge_testkit::{free_port, NatsServer};

mod support;

/// `VmRSS` and `VmHWM` (peak) of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// POSTs every body with `concurrency` clients, retrying until 200; returns events/s.
async fn drive(
    url: &str,
    client: &reqwest::Client,
    bodies: &Arc<Vec<Bytes>>,
    concurrency: usize,
) -> f64 {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, bodies, client, url) = (
                Arc::clone(&next),
                Arc::clone(bodies),
                client.clone(),
                url.to_owned(),
            );
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else { break };
                    loop {
                        match client.post(&url).body(body.clone()).send().await {
                            Ok(r) if r.status() == 200 => break,
                            _ => tokio::time::sleep(Duration::from_millis(5)).await,
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    bodies.len() as f64 / started.elapsed().as_secs_f64()
}

async fn scenario(label: &str, sink_toml: &str, bodies: &Arc<Vec<Bytes>>, concurrency: usize) {
    let port = free_port();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nmax_in_flight = 4096\n[telemetry]\nlog_level = \"error\"\n{sink_toml}"
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .expect("client");
    let (mut child, _config) = support::start_bridge(&config, port, &client).await;
    let pid = child.id();
    // Let start-up settle (connections, first allocations) before the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (idle, _) = memory_kib(pid);
    let url = format!("http://127.0.0.1:{port}/callback/default");
    let rate = drive(&url, &client, bodies, concurrency).await;
    let (_, peak) = memory_kib(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (after, _) = memory_kib(pid);
    let _ = child.kill();
    let _ = child.wait();
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "| {label} | {} | {concurrency} | {rate:.0} | {:.1} | {:.1} | {:.2} | {:.1} |",
        bodies.len(),
        mib(idle),
        mib(peak),
        peak as f64 / idle.max(1) as f64,
        mib(after),
    );
}

fn main() {
    let events = std::env::var("EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000_usize);
    let mut generator = Generator::new(7);
    let types = parse_types("");
    let bodies: Arc<Vec<Bytes>> = Arc::new(
        (0..events)
            .map(|i| Bytes::from(generator.event(&types[i % types.len()]).to_string()))
            .collect(),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let sinks = std::env::var("MEMORY_SINKS").unwrap_or_else(|_| "stdout,nats".to_owned());
    let wanted = |name: &str| sinks.split(',').any(|s| s.trim() == name);
    let nats = NatsServer::start();
    let stdout_sink = "[sinks.out]\ntype = \"stdout\"\n";
    let nats_sink = format!(
        "[sinks.nats]\ntype = \"nats\"\nurl = \"{}\"\nstream = \"VOD\"\ncreate_stream = true\nstream_subjects = [\"vod.>\"]\n",
        nats.url()
    );
    println!("| scenario | events | concurrent callbacks | events/s | RSS idle MiB (baseline) | RSS peak MiB | peak / idle | RSS 2 s after MiB |");
    println!("|---|---|---|---|---|---|---|---|");
    runtime.block_on(async {
        if wanted("stdout") {
            scenario("push → stdout", stdout_sink, &bodies, 32).await;
            scenario("push → stdout", stdout_sink, &bodies, 512).await;
        }
        if wanted("nats") {
            scenario("push → NATS JetStream", &nats_sink, &bodies, 32).await;
            scenario("push → NATS JetStream", &nats_sink, &bodies, 512).await;
        }
    });
}
