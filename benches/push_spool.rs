//! Load harness: the cost of the durable push spool. The whole bridge in-process behind HTTP,
//! 32 concurrent callbacks, into NATS JetStream (file storage) and RabbitMQ (durable,
//! confirms), once straight to the broker (200 after the broker's ack) and once through the
//! spool (200 after the fsync, the broker fed by the forwarder), rounds alternating, in the same
//! run. Reported: callbacks answered per second, and events in the broker per second (until the
//! spool is empty).
//!
//! `cargo bench --bench push_spool`; env `EVENTS` (20,000), `CONCURRENCY` (32), `ROUNDS` (3),
//! `BROKERS` (`nats,amqp`).
#![allow(missing_docs)]

/// The allocator the `vodbridge` binary ships with, so the bench measures what runs.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use vod_emulator::generate::{parse_types, Generator};
use vodbridge::{
    config::{Config, Settings},
    App,
};
use vodbridge_testkit::{NatsServer, RabbitMq};

mod support;

/// Answered/s and in-the-broker/s of one run.
struct Rates {
    answered: f64,
    stored: f64,
}

/// One run of the bridge with `sink_toml`, the spool in `spool` when given.
async fn run(
    sink_toml: &str,
    spool: Option<&std::path::Path>,
    bodies: Arc<Vec<Bytes>>,
    concurrency: usize,
) -> Rates {
    let spool = spool.map_or_else(String::new, |dir| {
        format!("[spool]\npath = {:?}\n", dir.display().to_string())
    });
    let toml = format!("[server]\nlisten = \"127.0.0.1:0\"\nmax_in_flight = 4096\n[telemetry]\nlog_level = \"error\"\n{spool}{sink_toml}");
    let settings = Settings::from_config(Config::from_toml(&toml).expect("config")).expect("valid");
    let app = App::build(settings).await.expect("app");
    let progress = app.progress();
    let url = format!(
        "http://{}/callback/default",
        app.local_addr().expect("addr")
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    support::wait_ready(&client, &url.replace("/callback/default", "/readyz")).await;
    let n = bodies.len();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url, bodies, next) = (
                client.clone(),
                url.clone(),
                Arc::clone(&bodies),
                Arc::clone(&next),
            );
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    loop {
                        match client.post(&url).body(bodies[i].clone()).send().await {
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
    let answered = started.elapsed();
    while progress.published() < n as u64 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let stored = started.elapsed();
    let _ = stop.send(());
    let _ = server.await;
    Rates {
        answered: n as f64 / answered.as_secs_f64(),
        stored: n as f64 / stored.as_secs_f64(),
    }
}

fn compare(
    runtime: &tokio::runtime::Runtime,
    label: &str,
    sink_toml: &str,
    bodies: &Arc<Vec<Bytes>>,
    concurrency: usize,
    rounds: usize,
) {
    let (mut straight, mut spooled_answered, mut spooled_stored) =
        (Vec::new(), Vec::new(), Vec::new());
    let (mut answered_ratio, mut stored_ratio) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let dir = tempfile::tempdir().expect("tempdir");
        let direct = || runtime.block_on(run(sink_toml, None, Arc::clone(bodies), concurrency));
        let spool = || {
            runtime.block_on(run(
                sink_toml,
                Some(dir.path()),
                Arc::clone(bodies),
                concurrency,
            ))
        };
        let (a, b) = if round % 2 == 0 {
            let a = direct();
            (a, spool())
        } else {
            let b = spool();
            (direct(), b)
        };
        eprintln!(
            "{label} round {}: straight {:.0}/s, spool answered {:.0}/s stored {:.0}/s",
            round + 1,
            a.answered,
            b.answered,
            b.stored
        );
        answered_ratio.push(b.answered / a.answered);
        stored_ratio.push(b.stored / a.stored);
        straight.push(a.answered);
        spooled_answered.push(b.answered);
        spooled_stored.push(b.stored);
    }
    let range = |r: &[f64]| {
        (
            r.iter().copied().fold(f64::INFINITY, f64::min),
            r.iter().copied().fold(0.0, f64::max),
        )
    };
    let ((al, ah), (sl, sh)) = (range(&answered_ratio), range(&stored_ratio));
    println!(
        "| {label} | {} | {:.0} | {:.0} | **{:.2}** ({al:.2}–{ah:.2}) | {:.0} | **{:.2}** ({sl:.2}–{sh:.2}) |",
        bodies.len(),
        support::median(straight),
        support::median(spooled_answered),
        support::median(answered_ratio),
        support::median(spooled_stored),
        support::median(stored_ratio),
    );
}

fn main() {
    let (events, concurrency, rounds) = (
        support::env_usize("EVENTS", 20_000),
        support::env_usize("CONCURRENCY", 32),
        support::env_usize("ROUNDS", 3).max(1),
    );
    let brokers = std::env::var("BROKERS").unwrap_or_else(|_| "nats,amqp".into());
    let wanted = |name: &str| brokers.split(',').any(|b| b.trim() == name);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut generator = Generator::new(7);
    let types = parse_types("");
    let bodies: Arc<Vec<Bytes>> = Arc::new(
        (0..events)
            .map(|i| Bytes::from(generator.event(&types[i % types.len()]).to_string()))
            .collect(),
    );
    println!("| broker | events | straight: answered = stored events/s | spool: answered events/s | ratio, median (range) of {rounds} rounds | spool: stored events/s | ratio |");
    println!("|---|---|---|---|---|---|---|");
    if wanted("nats") {
        let nats = NatsServer::start();
        let sink = format!(
            "[sinks.nats]\ntype = \"nats\"\nurl = \"{}\"\nstream = \"BRIDGE\"\ncreate_stream = true\nstream_subjects = [\"bridge.>\"]\n[[routes]]\nevent_types = [\"*\"]\nsinks = [{{ sink = \"nats\", destination = \"bridge.{{event_type}}\" }}]\n",
            nats.url()
        );
        compare(
            &runtime,
            "NATS JetStream (file storage)",
            &sink,
            &bodies,
            concurrency,
            rounds,
        );
    }
    if wanted("amqp") {
        let rabbit = RabbitMq::start();
        runtime.block_on(support::declare_topic_queue(&rabbit, "vod", "vod-all"));
        let sink = format!(
            "[sinks.rabbit]\ntype = \"amqp\"\nurl = \"{}\"\nexchange = \"vod\"\n[[routes]]\nevent_types = [\"*\"]\nsinks = [{{ sink = \"rabbit\", destination = \"vod.{{event_type}}\" }}]\n",
            rabbit.url()
        );
        compare(
            &runtime,
            "RabbitMQ (durable, confirms)",
            &sink,
            &bodies,
            concurrency,
            rounds,
        );
    }
}
