//! Push load harness: the real `vodbridge` binary (release) under `wrk` (a separate process,
//! keep-alive, pinned to CPU 0 when `taskset` exists) posting realistic `ProcedureStateChanged`
//! callbacks from the emulator's generator, each with its own FileId, into each sink: file
//! (`fsync = "never"`), NATS JetStream, RabbitMQ (confirms, persistent) and Kafka (tansu). Per
//! row: req/s, p50/p99/p99.9, server CPU µs per callback (utime + stime of the server process),
//! peak RSS, and non-200 answers; beside the limit of the HTTP stack measured in the same run: a
//! no-op axum handler answering 200 on the same stack (hyper http1, tokio), in-process here.
//!
//! `cargo bench --bench push_load` (`PUSH_LOAD_SECS` (10), `PUSH_LOAD_CONNS` ("16,64"),
//! `PUSH_LOAD_SINKS` ("file,nats,rabbitmq,kafka")). Needs `wrk` (`apt-get install wrk`).

mod support;

use std::{net::SocketAddr, path::Path, process::Command, time::Duration};

use support::{env_usize, wait_ready};
use vodbridge_testkit::{free_port, BridgeProcess, NatsServer, RabbitMq, Tansu};

/// One wrk run's figures.
#[derive(Debug, Clone, Copy)]
struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    errors: u64,
    requests: u64,
}

/// The wrk script: a unique FileId per request (NATS would drop repeats as duplicates), the
/// percentiles and error counts printed as one line at the end.
const LUA: &str = r#"
local template = io.open(os.getenv("PUSH_LOAD_BODY")):read("*a")
local counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  counter = counter + 1
  local body = string.gsub(template, "__FILEID__", string.format("52857%015d", counter), 1)
  return wrk.format(nil, nil, nil, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %.1f %.1f %.1f %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"#;

fn wrk(url: &str, conns: usize, secs: u64, script: &Path, body: &Path) -> Run {
    let mut command = if Command::new("taskset").arg("-V").output().is_ok() {
        let mut c = Command::new("taskset");
        c.args(["-c", "0", "wrk"]);
        c
    } else {
        Command::new("wrk")
    };
    let output = command
        .args([
            "-t1",
            &format!("-c{conns}"),
            &format!("-d{secs}s"),
            "--timeout",
            "10s",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .env("PUSH_LOAD_BODY", body)
        .output()
        .expect("wrk is not installed: apt-get install wrk");
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("wrk printed no result: {text}"));
    let v: Vec<f64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    Run {
        requests: v[0] as u64,
        rps: v[0] / (v[1] / 1e6),
        p50_ms: v[2] / 1000.0,
        p99_ms: v[3] / 1000.0,
        p999_ms: v[4] / 1000.0,
        errors: v[5] as u64,
    }
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|x| x.parse::<f64>().ok()).sum()
    });
    ticks / 100.0
}

/// Peak RSS (VmHWM) of a process, in MiB.
fn peak_rss_mib(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn row(name: &str, conns: usize, run: Run, cpu: f64, rss: f64, limit: Option<f64>) {
    let us = cpu * 1e6 / run.requests.max(1) as f64;
    println!(
        "| {name} | {conns} | {:.0} | {} | {:.2} | {:.2} | {:.2} | {us:.1} | {rss:.1} | {} |",
        run.rps,
        limit.map_or_else(|| "1.00".to_owned(), |l| format!("{:.2}", run.rps / l)),
        run.p50_ms,
        run.p99_ms,
        run.p999_ms,
        run.errors
    );
}

fn sink_config(sink: &str, dir: &Path, brokers: &Brokers) -> String {
    let route = "[[routes]]\nevent_types = [\"*\"]\nsinks = [{ sink = \"out\", destination = \"vod.{event_type}\" }]\n";
    let sink = match sink {
        "file" => format!(
            "[sinks.out]\ntype = \"file\"\npath = {:?}\nfsync = \"never\"\n",
            dir.join("events.jsonl").display().to_string()
        ),
        "nats" => format!(
            "[sinks.out]\ntype = \"nats\"\nurl = \"{}\"\nstream = \"VOD\"\ncreate_stream = true\nstream_subjects = [\"vod.>\"]\n",
            brokers.nats.as_ref().expect("nats").url()
        ),
        "rabbitmq" => format!(
            "[sinks.out]\ntype = \"amqp\"\nurl = \"{}\"\nexchange = \"vod\"\n",
            brokers.rabbit.as_ref().expect("rabbit").url()
        ),
        "kafka" => format!(
            "[sinks.out]\ntype = \"kafka\"\nbrokers = \"{}\"\n",
            brokers.kafka.as_ref().expect("kafka").bootstrap()
        ),
        other => panic!("unknown sink {other}: file, nats, rabbitmq, kafka"),
    };
    format!("{sink}{route}")
}

struct Brokers {
    nats: Option<NatsServer>,
    rabbit: Option<RabbitMq>,
    kafka: Option<Tansu>,
}

fn main() {
    let secs = env_usize("PUSH_LOAD_SECS", 10) as u64;
    let conns: Vec<usize> = std::env::var("PUSH_LOAD_CONNS")
        .unwrap_or_else(|_| "16,64".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let sinks: Vec<String> = std::env::var("PUSH_LOAD_SINKS")
        .unwrap_or_else(|_| "file,nats,rabbitmq,kafka".into())
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let body = dir.path().join("body.json");
    let mut event = vod_emulator::generate::Generator::new(7).event("ProcedureStateChanged");
    event["ProcedureStateChangeEvent"]["FileId"] = "__FILEID__".into();
    // A ~2 KB callback, as in the issue's measurements.
    event["ProcedureStateChangeEvent"]["SessionContext"] = "x".repeat(1200).into();
    std::fs::write(&body, event.to_string()).expect("body");
    let script = dir.path().join("post.lua");
    std::fs::write(&script, LUA).expect("script");
    println!(
        "body {} bytes, {secs} s per row, wrk -t1 pinned to CPU 0\n",
        event.to_string().len()
    );
    println!("| target | conns | req/s | of no-op | p50 ms | p99 ms | p99.9 ms | server CPU µs/callback | peak RSS MiB | errors |");
    println!("|---|---|---|---|---|---|---|---|---|---|");

    // The HTTP stack's limit: a no-op handler on axum/hyper in this process.
    let noop_port = free_port();
    runtime.spawn(async move {
        let app = axum::Router::new().route("/callback/push", axum::routing::post(|| async { "" }));
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], noop_port)))
            .await
            .expect("bind");
        axum::serve(listener, app).await.expect("serve");
    });
    std::thread::sleep(Duration::from_millis(300));
    let me = std::process::id().to_string();
    let mut limits = Vec::new();
    for &c in &conns {
        let before = cpu_secs(&me);
        let run = wrk(
            &format!("http://127.0.0.1:{noop_port}/callback/push"),
            c,
            secs,
            &script,
            &body,
        );
        row(
            "no-op axum handler",
            c,
            run,
            cpu_secs(&me) - before,
            peak_rss_mib(&me),
            None,
        );
        limits.push(run.rps);
    }

    let mut brokers = Brokers {
        nats: None,
        rabbit: None,
        kafka: None,
    };
    for sink in &sinks {
        match sink.as_str() {
            "nats" => brokers.nats = Some(NatsServer::start()),
            "rabbitmq" => {
                let rabbit = RabbitMq::start();
                runtime.block_on(support::declare_topic_queue(&rabbit.url(), "vod", "load"));
                brokers.rabbit = Some(rabbit);
            }
            "kafka" => {
                let kafka = Tansu::start();
                runtime.block_on(support::create_kafka_topics(
                    &kafka,
                    &["vod.ProcedureStateChanged"],
                ));
                brokers.kafka = Some(kafka);
            }
            _ => {}
        }
    }
    for sink in &sinks {
        for (i, &c) in conns.iter().enumerate() {
            let port = free_port();
            let toml = format!(
                "[server]\nlisten = \"127.0.0.1:{port}\"\n[telemetry]\nlog_level = \"warn\"\n[sources.push]\nmode = \"push\"\nsub_app_id = 1500000001\n{}",
                sink_config(sink, dir.path(), &brokers)
            );
            let bridge = BridgeProcess::start(env!("CARGO_BIN_EXE_vodbridge"), &toml, port);
            let pid = bridge.pid().expect("pid").to_string();
            let client = reqwest::Client::new();
            runtime.block_on(wait_ready(&client, &format!("{}/readyz", bridge.url())));
            let before = cpu_secs(&pid);
            let run = wrk(
                &format!("{}/callback/push", bridge.url()),
                c,
                secs,
                &script,
                &body,
            );
            let cpu = cpu_secs(&pid) - before;
            row(
                &format!("vodbridge → {sink}"),
                c,
                run,
                cpu,
                peak_rss_mib(&pid),
                limits.get(i).copied(),
            );
            drop(bridge);
        }
    }
}
