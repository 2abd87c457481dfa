//! Load harness: pull throughput of the bridge against the VOD emulator.
//!
//! Two tables, every row measured in the same run:
//!
//! 1. **The bridge's own cost**, request limits off: the bridge in-process at 0 ms and 20 ms of
//!    simulated API latency, beside the bound the latency allows (loops × 16 / round trip) and a
//!    bare client that only pulls and confirms.
//! 2. **At VOD's real limits** (`PullEvents` and `ConfirmEvents` 100 calls/s each per account,
//!    20 ms of latency): 1, 2 and 4 `vodbridge` processes × 4 loops and 1 × 16 on one account,
//!    against the account's bound of 100 × 16 = 1,600 events/s, with the throttled answers and
//!    the events handed out again, repeated `RUNS` times.
//! 3. **The shared delivery record's cost** at VOD's limits: 2 processes × 4 loops with the
//!    record in a real `redis-server` beside the same fleet without it, runs alternating, with
//!    the p99 time one batch's read and write of the record took (the bridges' own histogram).
//!
//! `cargo bench --bench pull_throughput` (env `EVENTS`, `LOOPS`, `LIMITED_EVENTS`, `RUNS`,
//! `RECORD_RUNS`).
#![allow(missing_docs)]

/// The allocator the `vodbridge` binary ships with, so the bench measures what runs.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use vod_emulator::{
    generate::parse_types, Emulator, EmulatorConfig, Faults, Limits, RunningEmulator,
};
use vodbridge::{
    config::{Config, Settings},
    App,
};
use vodbridge_tencent::{
    api::{ClientConfig, VodClient},
    tc3::Credentials,
};
use vodbridge_testkit::{free_port, BridgeProcess, RedisServer};

mod support;

const ID: &str = "AKIDBENCH";
const KEY: &str = "bench-key";
const SUB_APP_ID: u64 = 1_500_000_001;
/// One account's bound at VOD's default limits: 100 ConfirmEvents calls/s × 16 handles.
const ACCOUNT_BOUND: f64 = 1600.0;

async fn emulator(
    events: usize,
    latency_ms: u64,
    limits: Limits,
    long_poll: Duration,
) -> RunningEmulator {
    let mut config = EmulatorConfig::new(ID, KEY);
    config.long_poll = long_poll;
    config.limits = limits;
    let emulator = Emulator::new(config);
    emulator.generate(SUB_APP_ID, events, &parse_types(""));
    emulator.set_faults(Faults {
        latency_ms,
        ..Faults::default()
    });
    emulator
        .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("emulator")
}

async fn wait_confirmed(emu: &RunningEmulator, events: u64) {
    while emu.emulator.stats().confirmed < events {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A pull source on the emulator; `per_sec` is the account's quota the governor paces to.
fn source_toml(endpoint: &str, loops: usize, per_sec: u32) -> String {
    format!(
        r#"
[sources.bench]
mode = "pull"
endpoint = "{endpoint}"
sub_app_id = {SUB_APP_ID}
secret_id = "{ID}"
secret_key = "{KEY}"
loops = {loops}
pull_requests_per_sec = {per_sec}
confirm_requests_per_sec = {per_sec}
"#
    )
}

/// A bridge config: `listen`, errors-only logs, `source`, and a file sink at `path` without
/// fsync (the pull path is what is measured).
fn bridge_toml(listen: &str, source: &str, path: &std::path::Path) -> String {
    format!(
        r#"
[server]
listen = "{listen}"
[telemetry]
log_level = "error"
{source}
[sinks.file]
type = "file"
path = {:?}
fsync = "never"
"#,
        path.display().to_string()
    )
}

/// The bridge in-process on a pull source with a file sink (no fsync: the pull path is
/// measured).
async fn bridge(events: usize, loops: usize, latency_ms: u64) -> f64 {
    let emu = emulator(events, latency_ms, Limits::OFF, Duration::from_millis(200)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // No limits on the emulator: the governor is told the quota is far away.
    let toml = bridge_toml(
        "127.0.0.1:0",
        &source_toml(&emu.endpoint(), loops, 100_000),
        &dir.path().join("events.jsonl"),
    );
    let settings = Settings::from_config(Config::from_toml(&toml).expect("config")).expect("valid");
    let app = App::build(settings).await.expect("app");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let task = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    wait_confirmed(&emu, events as u64).await;
    let elapsed = started.elapsed();
    let _ = stop.send(());
    let _ = task.await;
    events as f64 / elapsed.as_secs_f64()
}

/// A bare client: `loops` tasks that pull and confirm, publishing nothing.
async fn bare_client(events: usize, loops: usize, latency_ms: u64) -> f64 {
    let emu = emulator(events, latency_ms, Limits::OFF, Duration::from_millis(200)).await;
    let mut config = ClientConfig::new(emu.endpoint(), Credentials::new(ID, KEY));
    config.sub_app_id = Some(SUB_APP_ID);
    let client = VodClient::new(config).expect("client");
    let started = Instant::now();
    let tasks: Vec<_> = (0..loops)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                loop {
                    let pulled = client.pull_events().await.unwrap_or_default();
                    if pulled.is_empty() {
                        break;
                    }
                    let handles: Vec<String> = pulled
                        .iter()
                        .filter_map(|e| serde_json::from_slice::<serde_json::Value>(e).ok())
                        .filter_map(|v| v["EventHandle"].as_str().map(str::to_owned))
                        .collect();
                    let refs: Vec<&str> = handles.iter().map(String::as_str).collect();
                    let _ = client.confirm_events(&refs).await;
                }
            })
        })
        .collect();
    wait_confirmed(&emu, events as u64).await;
    let elapsed = started.elapsed();
    for task in tasks {
        task.abort();
    }
    events as f64 / elapsed.as_secs_f64()
}

/// One limited row's result.
struct Limited {
    /// From the first to the last confirm.
    events_per_sec: f64,
    /// From 25 % to 90 % confirmed: without the one-second burst the emulator's limiter (a full
    /// token bucket, as a quota at rest would be) admits at the start; several replicas spend
    /// it within the first 10 %.
    steady_per_sec: f64,
    throttled_pulls: u64,
    throttled_confirms: u64,
    handed_out_again: u64,
}

/// `processes` bridge binaries × `loops` on one account at VOD's limits; the events are
/// enqueued once every process listens, and the clock runs until VOD saw every one confirmed.
async fn replicas(events: usize, processes: usize, loops: usize) -> Limited {
    replicas_with(events, processes, loops, "").await.0
}

/// [`replicas`] with `extra` TOML in every bridge's configuration; also returns each bridge's
/// `/metrics` text, read once every event was confirmed.
async fn replicas_with(
    events: usize,
    processes: usize,
    loops: usize,
    extra: &str,
) -> (Limited, Vec<String>) {
    let emu = emulator(0, 20, Limits::VOD, Duration::from_secs(5)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let bridges: Vec<BridgeProcess> = (0..processes)
        .map(|i| {
            let port = free_port();
            let toml = bridge_toml(
                &format!("127.0.0.1:{port}"),
                &source_toml(&emu.endpoint(), loops, 100),
                &dir.path().join(format!("events-{i}.jsonl")),
            );
            BridgeProcess::start(
                env!("CARGO_BIN_EXE_vodbridge"),
                &format!("{toml}{extra}"),
                port,
            )
        })
        .collect();
    // Let every loop reach its first (empty) long poll.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    emu.emulator.generate(SUB_APP_ID, events, &parse_types(""));
    wait_confirmed(&emu, events as u64 / 4).await;
    let quarter = started.elapsed();
    wait_confirmed(&emu, events as u64 * 9 / 10).await;
    let nine_tenths = started.elapsed();
    wait_confirmed(&emu, events as u64).await;
    let elapsed = started.elapsed();
    let stats = emu.emulator.stats();
    let mut metrics = Vec::new();
    for bridge in &bridges {
        let text = reqwest::get(format!("{}/metrics", bridge.url()))
            .await
            .expect("metrics");
        metrics.push(text.text().await.expect("metrics text"));
    }
    drop(bridges);
    let limited = Limited {
        events_per_sec: events as f64 / elapsed.as_secs_f64(),
        steady_per_sec: (events as f64 * 0.65) / (nine_tenths - quarter).as_secs_f64(),
        throttled_pulls: stats.throttled_pulls,
        throttled_confirms: stats.throttled_confirms,
        handed_out_again: stats.redeliveries,
    };
    (limited, metrics)
}

/// The p99 of `vodbridge_shared_record_round_trip_seconds{op}` over every bridge's buckets: the
/// upper bound of the bucket the 99th percentile falls in (and the count of round trips).
fn record_p99(metrics: &[String], op: &str) -> (f64, f64) {
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    let prefix = "vodbridge_shared_record_round_trip_seconds_bucket{";
    for line in metrics.iter().flat_map(|text| text.lines()) {
        let Some(rest) = line.strip_prefix(prefix) else {
            continue;
        };
        if !rest.contains(&format!("op=\"{op}\"")) {
            continue;
        }
        let Some(le) = rest.split("le=\"").nth(1).and_then(|r| r.split('"').next()) else {
            continue;
        };
        let bound = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::NAN)
        };
        let count: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0.0);
        match buckets.iter_mut().find(|(b, _)| *b == bound) {
            Some((_, total)) => *total += count,
            None => buckets.push((bound, count)),
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map_or(0.0, |(_, c)| *c);
    let p99 = buckets
        .iter()
        .find(|(_, c)| *c >= total * 0.99)
        .map_or(f64::NAN, |(b, _)| *b);
    (p99, total)
}

fn main() {
    let loops = support::env_usize("LOOPS", 4);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("Request limits off:\n");
    println!("| API latency | events | loops | bridge events/s | bare pull+confirm client events/s | bound loops×16/latency | bridge / bound |");
    println!("|---|---|---|---|---|---|---|");
    for (latency_ms, events) in [
        (0u64, support::env_usize("EVENTS", 20_000)),
        (20, support::env_usize("EVENTS", 20_000) / 2),
    ] {
        let bridge = runtime.block_on(bridge(events, loops, latency_ms));
        let bare = runtime.block_on(bare_client(events, loops, latency_ms));
        let (bound, ratio) = if latency_ms == 0 {
            ("none".to_owned(), "–".to_owned())
        } else {
            let bound = (loops * 16) as f64 / (latency_ms as f64 / 1000.0);
            (format!("{bound:.0}"), format!("{:.2}", bridge / bound))
        };
        println!("| {latency_ms} ms | {events} | {loops} | {bridge:.0} | {bare:.0} | {bound} | {ratio} |");
    }

    let events = support::env_usize("LIMITED_EVENTS", 20_000);
    let runs = support::env_usize("RUNS", 3);
    println!("\nVOD's limits (PullEvents, ConfirmEvents 100/s each per account), 20 ms API latency, {events} events, {runs} runs per row:\n");
    println!("| processes × loops | run | events/s, whole run | steady events/s (25–90 %) | share of 1,600 (steady) | throttled PullEvents | throttled ConfirmEvents | handed out again |");
    println!("|---|---|---|---|---|---|---|---|");
    for (processes, loops) in [(1usize, 4usize), (2, 4), (4, 4), (1, 16)] {
        let mut shares = Vec::new();
        for run in 1..=runs {
            let row = runtime.block_on(replicas(events, processes, loops));
            let share = row.steady_per_sec / ACCOUNT_BOUND;
            shares.push(share);
            println!(
                "| {processes} × {loops} | {run} | {:.0} | {:.0} | {share:.3} | {} | {} | {} |",
                row.events_per_sec,
                row.steady_per_sec,
                row.throttled_pulls,
                row.throttled_confirms,
                row.handed_out_again
            );
        }
        let min = shares.iter().copied().fold(f64::INFINITY, f64::min);
        let max = shares.iter().copied().fold(0.0, f64::max);
        println!("| {processes} × {loops} | spread | | | {min:.3}–{max:.3} | | | |");
    }

    let runs = support::env_usize("RECORD_RUNS", 3);
    let redis = RedisServer::start();
    println!("\nThe shared delivery record (redis-server, loopback) at VOD's limits, 2 processes × 4 loops, {events} events, runs alternating:\n");
    println!("| run | steady events/s without | steady events/s with | with ÷ without | handed out again (with) | record reads | p99 read per batch | record writes | p99 write per batch |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut ratios = Vec::new();
    for run in 1..=runs {
        let without = runtime.block_on(replicas(events, 2, 4));
        // A key prefix of its own per run: nothing recorded in an earlier run is recalled.
        let record = format!(
            "[delivery]\nshared_record = {:?}\nshared_record_name = \"bench{run}\"\n",
            redis.url()
        );
        let (with, metrics) = runtime.block_on(replicas_with(events, 2, 4, &record));
        let ratio = with.steady_per_sec / without.steady_per_sec;
        ratios.push(ratio);
        let (read_p99, reads) = record_p99(&metrics, "read");
        let (write_p99, writes) = record_p99(&metrics, "write");
        println!(
            "| {run} | {:.0} | {:.0} | {ratio:.3} | {} | {reads:.0} | ≤ {:.1} ms | {writes:.0} | ≤ {:.1} ms |",
            without.steady_per_sec,
            with.steady_per_sec,
            with.handed_out_again,
            read_p99 * 1000.0,
            write_p99 * 1000.0
        );
    }
    println!("| median | | | {:.3} | | | | | |", support::median(ratios));
}
