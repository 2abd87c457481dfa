//! Crash: the bridge is SIGKILLed at five random moments of a 10,000-event pull stream fanned
//! out to Kafka, RabbitMQ and NATS, and restarted each time. Every event ends confirmed, and
//! every confirmed event is in every broker; duplicates are counted per broker.

use std::time::{Duration, Instant};

use lapin::types::FieldTable;
use serde_json::json;
use vodbridge_testkit::{NatsServer, RabbitMq, Tansu};

use crate::support::{
    bridge, emulator, enqueue, kafka_held, kafka_sink, kafka_topic, nats_held, nats_sink,
    pull_source, rabbit_held, rabbit_queue, rabbit_sink, report, route_to, wait_for, Rng,
};

const EVENTS: usize = 10_000;
const KILLS: usize = 5;
/// Handle lifetime of this run: what a killed bridge held comes back after it.
const LIFETIME_MS: u64 = 4_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_five_times_during_a_fanned_out_stream_loses_nothing() {
    let kafka = Tansu::start();
    let rabbit = RabbitMq::start();
    let nats = NatsServer::start();
    kafka_topic(&kafka).await;
    rabbit_queue(&rabbit, "events", FieldTable::default()).await;
    let emu = emulator(Duration::from_millis(LIFETIME_MS)).await;
    let body = format!(
        "{}{}{}{}{}",
        pull_source(&emu, LIFETIME_MS, 4),
        kafka_sink(&kafka),
        rabbit_sink(&rabbit),
        nats_sink(&nats),
        route_to(&[
            ("kafka", "vod.events"),
            ("rabbit", "vod.{event_type}"),
            ("nats", "vod.{event_type}"),
        ]),
    );
    let keys = enqueue(&emu, "71", 0..EVENTS);
    let started = Instant::now();
    let mut process = bridge(&body, 10);

    // Kill at random confirmed counts, so every kill lands mid-stream.
    let mut rng = Rng::from_env();
    let mut thresholds: Vec<u64> = (0..KILLS)
        .map(|_| rng.below(300..(EVENTS as u64 - 1_000)))
        .collect();
    thresholds.sort_unstable();
    let mut killed_at = Vec::new();
    for threshold in thresholds {
        wait_for(
            "the stream to reach the next kill",
            Duration::from_secs(120),
            || emu.emulator.stats().confirmed >= threshold,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(rng.below(0..400))).await;
        process.kill();
        killed_at.push(emu.emulator.stats().confirmed);
        process = bridge(&body, 10);
    }
    wait_for("every event confirmed", Duration::from_secs(180), || {
        emu.emulator.stats().confirmed == EVENTS as u64
    })
    .await;
    let elapsed = started.elapsed();
    let confirmed = crate::support::acknowledged(&emu, &keys);
    assert_eq!(confirmed.len(), EVENTS, "every event ends confirmed");

    let held = [
        ("kafka", kafka_held(&kafka).await),
        ("rabbitmq", rabbit_held(&rabbit, "events").await),
        ("nats", nats_held(&nats).await),
    ];
    let stats = emu.emulator.stats();
    let mut per_broker = serde_json::Map::new();
    for (name, held) in &held {
        let missing = held.missing(&confirmed);
        assert!(
            missing.is_empty(),
            "{name}: {} confirmed events missing, e.g. {:?}",
            missing.len(),
            missing.first()
        );
        per_broker.insert(
            (*name).to_owned(),
            json!({ "found": held.unique().len(), "messages": held.0.len(),
                    "duplicates": held.duplicates(), "lost": missing.len() }),
        );
    }
    report(
        "crash",
        json!({
            "sent": EVENTS, "confirmed": confirmed.len(), "kills": KILLS,
            "killed_at_confirmed": killed_at, "redeliveries": stats.redeliveries,
            "confirm_rejections": stats.confirm_rejections, "brokers": per_broker,
            "seconds": elapsed.as_secs_f64().round(),
        }),
    );
    drop(process);
}
