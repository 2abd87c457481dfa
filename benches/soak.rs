//! Soak: the real binary under steady push and pull load for `SOAK_SECS` (600) across Kafka
//! (tansu), RabbitMQ and NATS JetStream at once, with the VOD emulator as the pull side and
//! this process posting callbacks as VOD would. Reports per minute the bridge's RSS, push
//! p50/p99, errors and confirmed events, then whether RSS stayed flat after warm-up (within
//! 10 % of the first minute's), errors were 0 and p99 stayed stable. Not part of CI (it runs
//! ten minutes); figures in RELIABILITY.md.
//!
//! `cargo bench --bench soak` (`SOAK_SECS`, `SOAK_PUSH_RPS` (100), `SOAK_PULL_RPS` (100)).

mod support;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use lapin::{options::BasicConsumeOptions, types::FieldTable, Connection, ConnectionProperties};
use serde_json::json;
use support::{env_usize, wait_ready};
use vodbridge_testkit::{free_port, BridgeProcess, NatsServer, RabbitMq, Tansu};

const ID: &str = "AKIDSOAK";
const KEY: &str = "soak-secret";
const APP: u64 = 1_500_000_201;

/// Resident set size of a process, in MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// Counts every message of the `soak` queue (declared by `main`, bound to every key;
/// auto-ack, so the queue stays small).
async fn count_rabbit(url: String, counted: Arc<AtomicU64>) {
    let connection = Connection::connect(&url, ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    let mut deliveries = channel
        .basic_consume(
            "soak".into(),
            "soak".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("consume");
    while let Some(Ok(_)) = deliveries.next().await {
        counted.fetch_add(1, Ordering::Relaxed);
    }
}

/// One minute's row: (minute, RSS MiB, push p50 ms, push p99 ms, errors so far, pull
/// confirmed so far, RabbitMQ messages so far).
type Row = (usize, f64, f64, f64, u64, u64, u64);

/// Closes the current minute: takes its latencies, prints and keeps its row.
fn report_minute(
    rows: &mut Vec<Row>,
    latencies: &Mutex<Vec<f64>>,
    errors: &AtomicU64,
    emu: &vod_emulator::RunningEmulator,
    rabbit_count: &AtomicU64,
    pid: u32,
) {
    let mut window = std::mem::take(&mut *latencies.lock().expect("lock"));
    window.sort_by(f64::total_cmp);
    let row = (
        rows.len() + 1,
        rss_mib(pid),
        percentile(&window, 0.5),
        percentile(&window, 0.99),
        errors.load(Ordering::Relaxed),
        emu.emulator.stats().confirmed,
        rabbit_count.load(Ordering::Relaxed),
    );
    println!(
        "{:>6}  {:>7.1}  {:>11.2}  {:>11.2}  {:>6}  {:>14}  {:>11}",
        row.0, row.1, row.2, row.3, row.4, row.5, row.6
    );
    rows.push(row);
}

fn main() {
    let secs = env_usize("SOAK_SECS", 600) as u64;
    let push_rps = env_usize("SOAK_PUSH_RPS", 100) as u64;
    let pull_rps = env_usize("SOAK_PULL_RPS", 100) as u64;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let kafka = Tansu::start();
        support::create_kafka_topics(&kafka, &["vod.events"]).await;
        let rabbit = RabbitMq::start();
        let nats = NatsServer::start();
        let rabbit_count = Arc::new(AtomicU64::new(0));
        // The queue must exist before the first mandatory publish.
        support::declare_topic_queue(&rabbit, "vod", "soak").await;
        tokio::spawn(count_rabbit(rabbit.url(), Arc::clone(&rabbit_count)));

        let mut config = vod_emulator::EmulatorConfig::new(ID, KEY);
        config.long_poll = Duration::from_secs(1);
        let emu = vod_emulator::Emulator::new(config)
            .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("emulator");
        let port = free_port();
        let toml = format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
[telemetry]
log_level = "warn"
[sources.push]
mode = "push"
sub_app_id = 1500000202
[sources.app]
mode = "pull"
endpoint = "{endpoint}"
sub_app_id = {APP}
secret_id = "{ID}"
secret_key = "{KEY}"
loops = 2
[sinks.kafka]
type = "kafka"
brokers = "{kafka}"
[sinks.rabbit]
type = "amqp"
url = "{rabbit}"
exchange = "vod"
[sinks.nats]
type = "nats"
url = "{nats}"
stream = "VOD"
create_stream = true
stream_subjects = ["vod.>"]
[[routes]]
event_types = ["*"]
sinks = [{{ sink = "kafka", destination = "vod.events" }}, {{ sink = "rabbit", destination = "vod.{{event_type}}" }}, {{ sink = "nats", destination = "vod.{{event_type}}" }}]
"#,
            endpoint = emu.endpoint(),
            kafka = kafka.bootstrap(),
            rabbit = rabbit.url(),
            nats = nats.url(),
        );
        let bridge = BridgeProcess::start(env!("CARGO_BIN_EXE_vodbridge"), &toml, port);
        let pid = bridge.pid().expect("pid");
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .expect("client");
        wait_ready(&client, &format!("{}/readyz", bridge.url())).await;

        let latencies: Arc<Mutex<Vec<f64>>> = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(AtomicU64::new(0));
        let sent = Arc::new(AtomicU64::new(0));
        let callback = format!("{}/callback/push", bridge.url());
        let started = Instant::now();
        let mut minute_rows = Vec::new();
        let mut next_push = Instant::now();
        let mut next_pull = Instant::now();
        let mut next_report = started + Duration::from_secs(60);
        let mut i = 0u64;
        let mut j = 0u64;
        println!("minute  rss_mib  push_p50_ms  push_p99_ms  errors  pull_confirmed  rabbit_msgs");
        while started.elapsed() < Duration::from_secs(secs) {
            let now = Instant::now();
            if now >= next_push {
                next_push += Duration::from_secs_f64(1.0 / push_rps as f64);
                i += 1;
                let body = json!({"EventType": "NewFileUpload", "FileUploadEvent": {
                    "FileId": format!("5285{i:016}"),
                    "MediaBasicInfo": {"Name": format!("soak-{i}"), "CreateTime": "2025-03-01T08:00:00Z",
                        "Description": "x".repeat(1024)}}});
                let (client, url, latencies, errors, sent) = (
                    client.clone(),
                    callback.clone(),
                    Arc::clone(&latencies),
                    Arc::clone(&errors),
                    Arc::clone(&sent),
                );
                tokio::spawn(async move {
                    let t = Instant::now();
                    let ok = client
                        .post(&url)
                        .json(&body)
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 200);
                    sent.fetch_add(1, Ordering::Relaxed);
                    if ok {
                        latencies
                            .lock()
                            .expect("lock")
                            .push(t.elapsed().as_secs_f64() * 1000.0);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            if now >= next_pull {
                next_pull += Duration::from_secs_f64(1.0 / pull_rps as f64);
                j += 1;
                emu.emulator.enqueue(
                    APP,
                    &json!({"EventType": "ProcedureStateChanged", "ProcedureStateChangeEvent": {
                        "TaskId": format!("1500000201-procedurev2-{j}"), "Status": "FINISH",
                        "FileId": format!("5286{j:016}"), "MediaProcessResultSet": []}}),
                );
            }
            if now >= next_report {
                next_report += Duration::from_secs(60);
                report_minute(&mut minute_rows, &latencies, &errors, &emu, &rabbit_count, pid);
            }
            let wake = next_push.min(next_pull).min(next_report);
            tokio::time::sleep_until(wake.into()).await;
        }
        // The last minute ends with the loop.
        if minute_rows.len() < (secs / 60) as usize {
            report_minute(&mut minute_rows, &latencies, &errors, &emu, &rabbit_count, pid);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while emu.emulator.stats().confirmed < j && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let stats = emu.emulator.stats();
        let warm = minute_rows.first().map_or(0.0, |r| r.1);
        let peak = minute_rows.iter().map(|r| r.1).fold(0.0, f64::max);
        let p99s: Vec<f64> = minute_rows.iter().map(|r| r.3).collect();
        println!(
            "\nsoak {secs} s: push sent {} errors {}, pull enqueued {j} confirmed {}, RabbitMQ got {} (expected {})",
            sent.load(Ordering::Relaxed),
            errors.load(Ordering::Relaxed),
            stats.confirmed,
            rabbit_count.load(Ordering::Relaxed),
            sent.load(Ordering::Relaxed) + j,
        );
        println!(
            "RSS first minute {warm:.1} MiB, peak {peak:.1} MiB ({:+.1} %); push p99 per minute min {:.2} ms, max {:.2} ms",
            (peak / warm.max(0.001) - 1.0) * 100.0,
            p99s.iter().copied().fold(f64::INFINITY, f64::min),
            p99s.iter().copied().fold(0.0, f64::max),
        );
        drop(bridge);
    });
}
