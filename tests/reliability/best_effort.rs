//! A best-effort destination silenced: RabbitMQ behind a [`SilentProxy`] as a `required = false`
//! target, NATS and Kafka required, events pulled at VOD's API limits. Judged by the emulator's
//! ledger and a consumer per broker.
//!
//! - Queue large enough: with RabbitMQ silent for 60 s, the pulled throughput stays what it was
//!   with RabbitMQ healthy (≥ 0.97 of it), VOD hands out 0 events again, every event is
//!   confirmed while RabbitMQ is still silent, and after the heal RabbitMQ holds every event
//!   (0 lost). The age at acknowledgement is read per sink from `/metrics`: RabbitMQ's events
//!   are older than NATS's, and the events without a VOD time are counted apart, exactly.
//! - Queue small (1,000): the bridge starts ready with RabbitMQ silent (`/readyz` names it),
//!   every event is confirmed, and the events RabbitMQ never got are exactly the drops counted
//!   as `queue_full`.
//! - Durable queue (`durable = true`, in the spool): with RabbitMQ silent every event is confirmed
//!   and waits in the spool; the bridge is SIGKILLed, RabbitMQ heals, a second bridge on the
//!   same spool publishes every one of them.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use lapin::types::FieldTable;
use serde_json::json;
use vod_emulator::RunningEmulator;
use vodbridge_testkit::{BridgeProcess, NatsServer, RabbitMq, SilentProxy, Tansu};

use crate::support::{
    acknowledged, bridge, emulator, enqueue, kafka_held, kafka_sink, kafka_topic, metric,
    nats_held, nats_sink, pull_source, rabbit_held, rabbit_queue, report, wait_ready,
};

/// Handle lifetime (the emulator's visibility timeout and the bridge's): VOD's own 30 s.
const LIFETIME_MS: u64 = 30_000;
/// Events of each measured phase.
const PHASE: usize = 12_000;
/// How long RabbitMQ stays silent.
const SILENCE: Duration = Duration::from_secs(60);

/// NATS and Kafka direct (required), RabbitMQ behind its proxy (best effort).
struct Brokers {
    kafka: Tansu,
    rabbit: RabbitMq,
    nats: NatsServer,
    rabbit_proxy: SilentProxy,
}

impl Brokers {
    async fn start() -> Self {
        let kafka = Tansu::start();
        let rabbit = RabbitMq::start();
        let rabbit_proxy = SilentProxy::start(rabbit.port);
        let nats = NatsServer::start();
        kafka_topic(&kafka).await;
        rabbit_queue(&rabbit, "events", FieldTable::default()).await;
        Self {
            kafka,
            rabbit,
            nats,
            rabbit_proxy,
        }
    }

    /// The bridge's configuration: the pull source, the three sinks, RabbitMQ best effort with
    /// a queue of `capacity`, its breaker opening after 5 failures for 1 s to 2 s.
    fn config(&self, emu: &RunningEmulator, capacity: usize) -> String {
        format!(
            "{source}{kafka}{nats}\
             [sinks.rabbit]\ntype = \"amqp\"\nurl = \"amqp://guest:guest@{rabbit}/%2f\"\n\
             exchange = \"vod\"\nmax_reconnect_backoff_ms = 1000\n\
             [[routes]]\nevent_types = [\"*\"]\nsinks = [\
             {{ sink = \"nats\", destination = \"vod.{{event_type}}\" }}, \
             {{ sink = \"kafka\", destination = \"vod.events\" }}, \
             {{ sink = \"rabbit\", destination = \"vod.{{event_type}}\", required = false }}]\n\
             [delivery.best_effort]\nqueue_capacity = {capacity}\npublish_timeout_ms = 3000\n\
             breaker_open_secs = 1\nbreaker_open_max_secs = 2\n",
            source = pull_source(emu, LIFETIME_MS, 4),
            kafka = kafka_sink(&self.kafka),
            nats = nats_sink(&self.nats),
            rabbit = self.rabbit_proxy.addr(),
        )
    }
}

/// Events per second confirmed from `enqueued` (ledger keys), from the first confirm to the
/// last; waits until all are confirmed (at most `within`).
async fn drain_rate(emu: &RunningEmulator, keys: &HashMap<u64, String>, within: Duration) -> f64 {
    let started = Instant::now();
    let mut first = None;
    loop {
        let confirmed = acknowledged(emu, keys).len();
        if confirmed > 0 && first.is_none() {
            first = Some((Instant::now(), confirmed));
        }
        if confirmed == keys.len() {
            let (at, already) = first.unwrap_or((started, 0));
            return (keys.len() - already) as f64 / at.elapsed().as_secs_f64().max(0.001);
        }
        assert!(
            started.elapsed() < within,
            "{confirmed} of {} confirmed in {within:?}",
            keys.len()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A sample of the bridge's `/metrics`, 0 when absent.
async fn sample(process: &BridgeProcess, series: &str) -> f64 {
    metric(process, series).await.unwrap_or(0.0)
}

/// Mean age at acknowledgement of `sink`'s events (`delivery` as labelled).
async fn mean_age(process: &BridgeProcess, sink: &str, delivery: &str) -> f64 {
    let labels =
        format!("{{delivery=\"{delivery}\",ingress=\"pull\",sink=\"{sink}\",source=\"app\"}}");
    let sum = sample(
        process,
        &format!("vodbridge_event_age_at_ack_seconds_sum{labels}"),
    )
    .await;
    let count = sample(
        process,
        &format!("vodbridge_event_age_at_ack_seconds_count{labels}"),
    )
    .await;
    assert!(count > 0.0, "no age observed for {sink} ({delivery})");
    sum / count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_best_effort_sink_never_holds_the_confirms_and_gets_every_event_after() {
    let brokers = Brokers::start().await;
    let emu = emulator(Duration::from_millis(LIFETIME_MS)).await;
    let mut process = bridge(&brokers.config(&emu, 100_000), 35);
    wait_ready(&process, Duration::from_secs(30)).await;

    // Phase 1, RabbitMQ healthy: the rate to compare with.
    let healthy_keys = enqueue(&emu, "beh", 0..PHASE);
    let healthy = drain_rate(&emu, &healthy_keys, Duration::from_secs(90)).await;

    // Phase 2, RabbitMQ silent: the same backlog again.
    brokers.rabbit_proxy.silence();
    let silenced = Instant::now();
    let silent_keys = enqueue(&emu, "bes", 0..PHASE);
    let silent = drain_rate(&emu, &silent_keys, Duration::from_secs(90)).await;
    let confirmed_during_silence = acknowledged(&emu, &silent_keys).len();
    let depth = sample(
        &process,
        "vodbridge_best_effort_queue_depth{sink=\"rabbit\"}",
    )
    .await;
    let readyz = reqwest::get(format!("{}/readyz", process.url()))
        .await
        .expect("readyz");
    let ready_status = readyz.status().as_u16();
    let ready_body = readyz.text().await.unwrap_or_default();
    assert!(
        silenced.elapsed() < SILENCE,
        "the silent phase drained after the silence ended: {:?}",
        silenced.elapsed()
    );
    tokio::time::sleep(SILENCE.saturating_sub(silenced.elapsed())).await;
    let breaker = sample(
        &process,
        "vodbridge_best_effort_breaker_state{sink=\"rabbit\"}",
    )
    .await;
    brokers.rabbit_proxy.heal();
    let healed = Instant::now();
    drained(&process, Duration::from_secs(120)).await;
    let drained_after = healed.elapsed().as_secs_f64();

    let rabbit_age = mean_age(&process, "rabbit", "best_effort").await;
    let nats_age = mean_age(&process, "nats", "required").await;
    let unknown = sample(
        &process,
        "vodbridge_event_age_unknown_total{reason=\"missing\",sink=\"nats\",source=\"app\"}",
    )
    .await;
    let dropped = sample(
        &process,
        "vodbridge_best_effort_dropped_total{reason=\"queue_full\",sink=\"rabbit\"}",
    )
    .await;
    let stats = emu.emulator.stats();
    assert!(
        process.terminate(Duration::from_secs(45)),
        "SIGTERM exits in time"
    );

    let all: Vec<&String> = healthy_keys.values().chain(silent_keys.values()).collect();
    let rabbit = rabbit_held(&brokers.rabbit, "events").await;
    let nats = nats_held(&brokers.nats).await;
    let kafka = kafka_held(&brokers.kafka).await;
    let ratio = silent / healthy;
    report(
        "best_effort_silent",
        json!({
            "events": all.len(), "confirmed": acknowledged(&emu, &healthy_keys).len()
                + acknowledged(&emu, &silent_keys).len(),
            "held": { "nats": nats.unique().len(), "rabbitmq": rabbit.unique().len(),
                      "kafka": kafka.unique().len() },
            "duplicates": { "nats": nats.duplicates(), "rabbitmq": rabbit.duplicates(),
                            "kafka": kafka.duplicates() },
            "healthy_rate": healthy.round(), "silent_rate": silent.round(),
            "ratio": (ratio * 1000.0).round() / 1000.0, "redeliveries": stats.redeliveries,
            "queued_at_peak": depth, "rabbit_drained_after_heal_s": drained_after,
            "rabbit_missing": rabbit.missing(all.iter().copied()).len(),
            "rabbit_duplicates": rabbit.duplicates(),
            "nats_missing": nats.missing(all.iter().copied()).len(),
            "kafka_missing": kafka.missing(all.iter().copied()).len(),
            "mean_age_rabbit_s": rabbit_age, "mean_age_nats_s": nats_age,
        }),
    );
    assert_eq!(stats.redeliveries, 0, "VOD handed events out again");
    assert_eq!(
        confirmed_during_silence, PHASE,
        "every event confirmed while RabbitMQ was silent"
    );
    assert!(
        ratio >= 0.97,
        "pulled {silent:.0}/s with RabbitMQ silent against {healthy:.0}/s healthy"
    );
    assert!(depth > 0.0, "the silent sink's events were queued");
    assert_eq!(
        ready_status, 200,
        "a silent best-effort sink leaves the bridge ready"
    );
    assert!(
        ready_body.contains("best-effort sink rabbit"),
        "/readyz names it: {ready_body}"
    );
    assert_eq!(breaker, 2.0, "the breaker was open during the silence");
    assert_eq!(dropped, 0.0);
    for (name, held) in [("rabbit", &rabbit), ("nats", &nats), ("kafka", &kafka)] {
        assert!(
            held.missing(all.iter().copied()).is_empty(),
            "{name} misses events"
        );
    }
    assert!(
        rabbit_age > nats_age + 5.0,
        "RabbitMQ acknowledged later than NATS: {rabbit_age:.1} s against {nats_age:.1} s"
    );
    // Two event types in three carry no time of their own (PullComplete,
    // ProcedureStateChanged): each counted once at NATS, never folded into the histogram.
    let untimed = all.len() - all.len().div_ceil(3);
    assert_eq!(unknown as usize, untimed);
}

/// Waits until RabbitMQ's best-effort queue is empty (read from the bridge's metrics).
async fn drained(process: &BridgeProcess, within: Duration) {
    let started = Instant::now();
    let series = "vodbridge_best_effort_queue_depth{sink=\"rabbit\"}";
    while metric(process, series).await != Some(0.0) {
        assert!(
            started.elapsed() < within,
            "RabbitMQ's queue not drained in {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_small_queue_drops_exactly_what_it_counts() {
    const EVENTS: usize = 4_000;
    const CAPACITY: usize = 1_000;
    let brokers = Brokers::start().await;
    let emu = emulator(Duration::from_millis(LIFETIME_MS)).await;
    // Silent from the start: the sink never connects, and the bridge is ready anyway.
    brokers.rabbit_proxy.silence();
    let mut process = bridge(&brokers.config(&emu, CAPACITY), 35);
    wait_ready(&process, Duration::from_secs(30)).await;
    let keys = enqueue(&emu, "bsq", 0..EVENTS);
    drain_rate(&emu, &keys, Duration::from_secs(90)).await;
    let dropped = sample(
        &process,
        "vodbridge_best_effort_dropped_total{reason=\"queue_full\",sink=\"rabbit\"}",
    )
    .await;
    brokers.rabbit_proxy.heal();
    drained(&process, Duration::from_secs(120)).await;
    let stats = emu.emulator.stats();
    assert!(
        process.terminate(Duration::from_secs(45)),
        "SIGTERM exits in time"
    );
    let rabbit = rabbit_held(&brokers.rabbit, "events").await;
    let got = rabbit.unique().len();
    let nats_missing = nats_held(&brokers.nats).await.missing(keys.values()).len();
    let kafka_missing = kafka_held(&brokers.kafka)
        .await
        .missing(keys.values())
        .len();
    report(
        "best_effort_small_queue",
        json!({ "events": EVENTS, "capacity": CAPACITY, "rabbit_held": got,
                "confirmed": acknowledged(&emu, &keys).len(),
                "rabbit_duplicates": rabbit.duplicates(),
                "dropped_queue_full": dropped, "redeliveries": stats.redeliveries }),
    );
    assert_eq!(stats.redeliveries, 0);
    assert_eq!(
        (nats_missing, kafka_missing),
        (0, 0),
        "the required sinks hold every event"
    );
    assert!(dropped > 0.0, "a queue of {CAPACITY} overflowed");
    assert_eq!(
        got + dropped as usize,
        EVENTS,
        "every event RabbitMQ lacks is a counted drop"
    );
    assert!(got >= CAPACITY, "the queue delivered what it held: {got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_durable_queue_loses_nothing_to_a_sigkill() {
    const EVENTS: usize = 3_000;
    let brokers = Brokers::start().await;
    let emu = emulator(Duration::from_millis(LIFETIME_MS)).await;
    let spool = tempfile::tempdir().expect("spool dir");
    let config = format!(
        "{}durable = true\n[spool]\npath = {:?}\n",
        brokers.config(&emu, 100_000),
        spool.path().display().to_string()
    );
    brokers.rabbit_proxy.silence();
    let mut first = bridge(&config, 35);
    wait_ready(&first, Duration::from_secs(30)).await;
    let keys = enqueue(&emu, "bed", 0..EVENTS);
    drain_rate(&emu, &keys, Duration::from_secs(90)).await;
    let depth = sample(&first, "vodbridge_best_effort_queue_depth{sink=\"rabbit\"}").await;
    // Every event is confirmed to VOD and waits for RabbitMQ only in the spool: killed now, an
    // in-memory queue would lose all of them.
    first.kill();
    brokers.rabbit_proxy.heal();
    let mut second = bridge(&config, 35);
    wait_ready(&second, Duration::from_secs(30)).await;
    drained(&second, Duration::from_secs(120)).await;
    let stats = emu.emulator.stats();
    assert!(
        second.terminate(Duration::from_secs(45)),
        "SIGTERM exits in time"
    );
    let rabbit = rabbit_held(&brokers.rabbit, "events").await;
    let missing = rabbit.missing(keys.values()).len();
    report(
        "best_effort_durable_sigkill",
        json!({ "events": EVENTS, "confirmed": acknowledged(&emu, &keys).len(),
                "queued_at_kill": depth, "rabbit_held": rabbit.unique().len(),
                "rabbit_missing": missing, "rabbit_duplicates": rabbit.duplicates(),
                "redeliveries": stats.redeliveries }),
    );
    assert_eq!(
        depth as usize, EVENTS,
        "everything waited for RabbitMQ at the kill"
    );
    assert_eq!(
        missing, 0,
        "the spool kept every queued event across the SIGKILL"
    );
    assert_eq!(stats.redeliveries, 0);
}
