//! Load harness: pull throughput of the bridge against the VOD emulator at 0 ms and 20 ms of
//! simulated API latency, beside the bound the latency allows (loops × 16 / round trip) and a
//! bare client that only pulls and confirms, measured in the same run.
//!
//! `cargo bench --bench pull_throughput` (env `EVENTS`, `LOOPS` override the defaults).
#![allow(missing_docs)]

/// The allocator the `vodbridge` binary ships with, so the bench measures what runs.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use vod_emulator::{generate::parse_types, Emulator, EmulatorConfig, Faults, RunningEmulator};
use vodbridge::{
    config::{Config, Settings},
    App,
};
use vodbridge_tencent::{
    api::{ClientConfig, VodClient},
    tc3::Credentials,
};

const ID: &str = "AKIDBENCH";
const KEY: &str = "bench-key";
const SUB_APP_ID: u64 = 1_500_000_001;

async fn emulator(events: usize, latency_ms: u64) -> RunningEmulator {
    let mut config = EmulatorConfig::new(ID, KEY);
    config.long_poll = Duration::from_millis(200);
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

/// The bridge on a pull source with a file sink (no fsync: the pull path is measured).
async fn bridge(events: usize, loops: usize, latency_ms: u64) -> f64 {
    let emu = emulator(events, latency_ms).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[telemetry]
log_level = "error"
[sources.bench]
mode = "pull"
endpoint = "{}"
sub_app_id = {SUB_APP_ID}
secret_id = "{ID}"
secret_key = "{KEY}"
loops = {loops}
[sinks.file]
type = "file"
path = {:?}
fsync = "never"
"#,
        emu.endpoint(),
        dir.path().join("events.jsonl").display().to_string()
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
    let emu = emulator(events, latency_ms).await;
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

fn main() {
    let env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let loops = env("LOOPS", 4);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("| API latency | events | loops | bridge events/s | bare pull+confirm client events/s | bound loops×16/latency | bridge / bound |");
    println!("|---|---|---|---|---|---|---|");
    for (latency_ms, events) in [
        (0u64, env("EVENTS", 20_000)),
        (20, env("EVENTS", 20_000) / 2),
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
}
