//! Silent network partitions: each broker behind a [`SilentProxy`] the test controls. A
//! silence leaves every open connection carrying nothing and closing nothing, for good (new
//! connections go through again after the heal), so only the bridge can notice. Judged as
//! everywhere else: by the emulator's ledger and a consumer per broker.
//!
//! - Every broker silent for 10 s mid-stream: confirms resume within 30 s of the heal, every
//!   event ends confirmed and in every broker, nothing is confirmed during the silence, and
//!   SIGTERM exits 0.
//! - One broker (RabbitMQ) silent for 60 s while the others stay healthy: the healthy sinks
//!   get at most 1 % extra copies (the per-sink delivery record skips what they hold).
//! - SIGTERM right after a silence, per broker, and during a loud outage with the spool
//!   holding events: the process exits 0 within `drain_timeout_secs` + 5 s, and a second
//!   bridge finishes the stream with nothing lost.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use lapin::types::FieldTable;
use serde_json::{json, Value};
use vod_emulator::RunningEmulator;
use vodbridge_testkit::{BridgeProcess, NatsServer, RabbitMq, SilentProxy, Tansu};

use crate::support::{
    acknowledged, bridge, emulator, enqueue, kafka_held, kafka_topic, metric, nats_held,
    pull_source, push, push_settled, rabbit_held, rabbit_queue, report, route_to, wait_for,
    wait_ready, Held,
};

/// Handle lifetime of these runs (the emulator's visibility timeout and the bridge's).
const LIFETIME_MS: u64 = 6_000;
/// The bridge's drain limit in these runs.
const DRAIN_SECS: u64 = 10;
/// How far past the drain limit a SIGTERM may take (the README's shutdown section says 4 s).
const EXIT_MARGIN: Duration = Duration::from_secs(5);

/// The three brokers, each behind its own proxy, with the topic, queue and stream the
/// routes use.
struct Brokers {
    kafka: Tansu,
    rabbit: RabbitMq,
    nats: NatsServer,
    kafka_proxy: SilentProxy,
    rabbit_proxy: SilentProxy,
    nats_proxy: SilentProxy,
}

impl Brokers {
    async fn start() -> Self {
        // tansu must advertise the proxy's port, or librdkafka would go around it.
        let (kafka_port, proxy_port) = (
            vodbridge_testkit::free_port(),
            vodbridge_testkit::free_port(),
        );
        let kafka_proxy = SilentProxy::start_on(proxy_port, kafka_port);
        let kafka = Tansu::start_advertising(kafka_port, proxy_port);
        let rabbit = RabbitMq::start();
        let rabbit_proxy = SilentProxy::start(rabbit.port);
        let nats = NatsServer::start();
        let nats_proxy = SilentProxy::start(nats.port);
        kafka_topic(&kafka).await;
        rabbit_queue(&rabbit, "events", FieldTable::default()).await;
        Self {
            kafka,
            rabbit,
            nats,
            kafka_proxy,
            rabbit_proxy,
            nats_proxy,
        }
    }

    /// Sink sections for all three, through the proxies, with the bridge's default liveness
    /// settings (heartbeats, pings, timeouts): what is measured is what users get.
    fn sinks(&self) -> String {
        format!(
            "[sinks.kafka]\ntype = \"kafka\"\nbrokers = \"{}\"\nmessage_timeout_ms = 3000\n\
             [sinks.rabbit]\ntype = \"amqp\"\nurl = \"amqp://guest:guest@{}/%2f\"\n\
             exchange = \"vod\"\nmax_reconnect_backoff_ms = 1000\n\
             [sinks.nats]\ntype = \"nats\"\nurl = \"nats://{}\"\nstream = \"VOD\"\n\
             create_stream = true\nstream_subjects = [\"vod.>\"]\nack_timeout_ms = 2000\n{}",
            self.kafka_proxy.addr(),
            self.rabbit_proxy.addr(),
            self.nats_proxy.addr(),
            route_to(&[
                ("kafka", "vod.events"),
                ("rabbit", "vod.{event_type}"),
                ("nats", "vod.{event_type}"),
            ]),
        )
    }

    async fn held(&self) -> [(&'static str, Held); 3] {
        [
            ("kafka", kafka_held(&self.kafka).await),
            ("rabbit", rabbit_held(&self.rabbit, "events").await),
            ("nats", nats_held(&self.nats).await),
        ]
    }
}

/// `vodbridge_published_total{sink}` of each sink.
async fn published(process: &BridgeProcess) -> HashMap<&'static str, f64> {
    let mut out = HashMap::new();
    for sink in ["kafka", "rabbit", "nats"] {
        let series = format!("vodbridge_published_total{{sink=\"{sink}\"}}");
        out.insert(sink, metric(process, &series).await.unwrap_or(0.0));
    }
    out
}

/// Waits until every sink published again after `healed_at` (its published count above
/// `before`) and confirms resumed; returns seconds from the heal per sink and for confirms.
async fn recovery(
    process: &BridgeProcess,
    emu: &RunningEmulator,
    keys: &HashMap<u64, String>,
    healed_at: Instant,
    before: &HashMap<&'static str, f64>,
    confirmed_before: usize,
) -> (HashMap<&'static str, f64>, f64) {
    let mut sinks: HashMap<&'static str, f64> = HashMap::new();
    let mut confirms = None;
    while sinks.len() < before.len() || confirms.is_none() {
        assert!(
            healed_at.elapsed() < Duration::from_secs(120),
            "no recovery within 120 s of the heal: sinks {sinks:?}, confirms {confirms:?}"
        );
        let now = published(process).await;
        let elapsed = healed_at.elapsed().as_secs_f64();
        for (sink, count) in now {
            if count > before[sink] {
                sinks.entry(sink).or_insert(elapsed);
            }
        }
        if confirms.is_none() && acknowledged(emu, keys).len() > confirmed_before {
            confirms = Some(elapsed);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (sinks, confirms.unwrap_or_default())
}

/// A pull stream under way: the brokers behind their proxies, the emulator paced to about 130
/// events/s (so a fault lands mid-stream), a bridge on the three sinks (`extra` adds sections
/// before them), and `events` queued as run `run`.
struct Stream {
    brokers: Brokers,
    emu: RunningEmulator,
    body: String,
    process: BridgeProcess,
    keys: HashMap<u64, String>,
}

impl Stream {
    /// Starts it and returns once `confirmed` events are confirmed.
    async fn start(run: &str, events: usize, extra: &str, confirmed: usize) -> Self {
        let brokers = Brokers::start().await;
        let emu = emulator(Duration::from_millis(LIFETIME_MS)).await;
        let body = format!(
            "{extra}{}{}",
            pull_source(&emu, LIFETIME_MS, 4),
            brokers.sinks()
        );
        let process = bridge(&body, DRAIN_SECS);
        wait_ready(&process, Duration::from_secs(30)).await;
        emu.emulator.set_limits(vod_emulator::Limits {
            pull_events: 8,
            ..vod_emulator::Limits::VOD
        });
        let keys = enqueue(&emu, run, 0..events);
        wait_for(
            &format!("{confirmed} confirms"),
            Duration::from_secs(60),
            || acknowledged(&emu, &keys).len() >= confirmed,
        )
        .await;
        Self {
            brokers,
            emu,
            body,
            process,
            keys,
        }
    }
}

fn tenth(seconds: f64) -> f64 {
    (seconds * 10.0).round() / 10.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_broker_silent_for_10_s_recovers_within_30_s_of_the_heal() {
    const EVENTS: usize = 3_000;
    const SILENCE: Duration = Duration::from_secs(10);
    let Stream {
        brokers,
        emu,
        mut process,
        keys,
        ..
    } = Stream::start("81", EVENTS, "", 600).await;

    for proxy in [
        &brokers.kafka_proxy,
        &brokers.rabbit_proxy,
        &brokers.nats_proxy,
    ] {
        proxy.silence();
    }
    let silenced_at = Instant::now();
    // Acks already on their way when the silence began are confirmed in the first 2 s.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let settled = acknowledged(&emu, &keys).len();
    tokio::time::sleep(SILENCE.saturating_sub(silenced_at.elapsed())).await;
    let confirmed_in_silence = acknowledged(&emu, &keys).len() - settled;
    let before = published(&process).await;
    let confirmed_at_heal = acknowledged(&emu, &keys).len();
    for proxy in [
        &brokers.kafka_proxy,
        &brokers.rabbit_proxy,
        &brokers.nats_proxy,
    ] {
        proxy.heal();
    }
    let healed_at = Instant::now();
    let (sinks, confirms) =
        recovery(&process, &emu, &keys, healed_at, &before, confirmed_at_heal).await;
    wait_for("every event confirmed", Duration::from_secs(180), || {
        acknowledged(&emu, &keys).len() == EVENTS
    })
    .await;
    let drained_secs = healed_at.elapsed().as_secs_f64();
    let reconnects = {
        let mut out = serde_json::Map::new();
        for (sink, kind) in [("kafka", "kafka"), ("rabbit", "amqp"), ("nats", "nats")] {
            let series =
                format!("vodbridge_sink_reconnects_total{{kind=\"{kind}\",sink=\"{sink}\"}}");
            out.insert(sink.into(), json!(metric(&process, &series).await));
        }
        Value::Object(out)
    };
    let signalled = Instant::now();
    let clean = process.terminate(Duration::from_secs(DRAIN_SECS) + EXIT_MARGIN);
    let exit_secs = signalled.elapsed().as_secs_f64();

    let confirmed = acknowledged(&emu, &keys);
    let held = brokers.held().await;
    let stats = emu.emulator.stats();
    let mut per_broker = serde_json::Map::new();
    for (name, held) in &held {
        per_broker.insert(
            (*name).into(),
            json!({ "messages": held.0.len(), "duplicates": held.duplicates(),
                    "lost": held.missing(&confirmed).len(),
                    "recovery_secs": sinks.get(name).copied().map(tenth) }),
        );
    }
    report(
        "partition-all-brokers",
        json!({
            "sent": EVENTS, "silence_secs": SILENCE.as_secs(), "handle_lifetime_ms": LIFETIME_MS,
            "confirmed": confirmed.len(), "confirmed_during_silence_after_2s": confirmed_in_silence,
            "confirms_resumed_secs_after_heal": tenth(confirms),
            "all_confirmed_secs_after_heal": tenth(drained_secs),
            "handed_out": stats.deliveries, "redeliveries": stats.redeliveries,
            "reconnects": reconnects, "brokers": per_broker,
            "exit_code_zero": clean, "exit_seconds": tenth(exit_secs),
        }),
    );
    assert_eq!(
        confirmed_in_silence, 0,
        "nothing is confirmed while every broker is silent"
    );
    assert!(
        confirms <= 30.0,
        "confirms resume within 30 s of the heal, took {confirms:.1} s"
    );
    for (name, held) in &held {
        let lost = held.missing(&confirmed);
        assert!(lost.is_empty(), "{name}: confirmed, not stored: {lost:?}");
    }
    assert!(clean, "SIGTERM ends in exit 0 within the drain limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_silent_broker_does_not_flood_the_healthy_ones_with_copies() {
    const EVENTS: usize = 3_000;
    const SILENCE: Duration = Duration::from_secs(60);
    let Stream {
        brokers,
        emu,
        mut process,
        keys,
        ..
    } = Stream::start("82", EVENTS, "", 300).await;
    brokers.rabbit_proxy.silence();
    tokio::time::sleep(SILENCE).await;
    let confirmed_at_heal = acknowledged(&emu, &keys).len();
    brokers.rabbit_proxy.heal();
    let healed_at = Instant::now();
    wait_for("every event confirmed", Duration::from_secs(180), || {
        acknowledged(&emu, &keys).len() == EVENTS
    })
    .await;
    let drained_secs = healed_at.elapsed().as_secs_f64();
    let skipped = {
        let mut out = serde_json::Map::new();
        for sink in ["kafka", "nats"] {
            let series = format!("vodbridge_sink_publishes_skipped_total{{sink=\"{sink}\"}}");
            out.insert(sink.into(), json!(metric(&process, &series).await));
        }
        Value::Object(out)
    };
    let clean = process.terminate(Duration::from_secs(DRAIN_SECS) + EXIT_MARGIN);

    let confirmed = acknowledged(&emu, &keys);
    let held = brokers.held().await;
    let stats = emu.emulator.stats();
    let mut per_broker = serde_json::Map::new();
    for (name, held) in &held {
        per_broker.insert(
            (*name).into(),
            json!({ "messages": held.0.len(), "duplicates": held.duplicates(),
                    "lost": held.missing(&confirmed).len() }),
        );
    }
    report(
        "partition-one-broker",
        json!({
            "sent": EVENTS, "silent": "rabbitmq", "silence_secs": SILENCE.as_secs(),
            "handle_lifetime_ms": LIFETIME_MS, "confirmed": confirmed.len(),
            "confirmed_before_heal": confirmed_at_heal,
            "all_confirmed_secs_after_heal": tenth(drained_secs),
            "handed_out": stats.deliveries, "redeliveries": stats.redeliveries,
            "skipped_publishes": skipped, "brokers": per_broker, "exit_code_zero": clean,
        }),
    );
    for (name, held) in &held {
        let lost = held.missing(&confirmed);
        assert!(lost.is_empty(), "{name}: confirmed, not stored: {lost:?}");
        if *name != "rabbit" {
            assert!(
                held.duplicates() * 100 <= EVENTS,
                "{name} (healthy) stored {} extra copies of {EVENTS} events (> 1 %)",
                held.duplicates()
            );
        }
    }
    assert!(clean, "SIGTERM ends in exit 0");
}

/// Which broker a SIGTERM scenario cuts off, and how.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Silent for 5 s through its proxy, then healed (its old connections dead for good).
    Silent(&'static str),
    /// NATS killed (SIGKILL): a loud outage, with the push spool holding events.
    NatsKilled,
    /// RabbitMQ's app stopped (`rabbitmqctl stop_app`): connections refused, a loud outage.
    RabbitStopped,
}

/// SIGTERM one second after `fault`: exit 0 within the drain limit + 5 s; a second bridge on
/// the same configuration finishes the stream and nothing confirmed is missing.
async fn sigterm_after(fault: Fault) {
    const EVENTS: usize = 1_000;
    const PUSHED: usize = 100;
    let spool = tempfile::tempdir().expect("spool dir");
    let extra = format!(
        "[spool]\npath = {:?}\n[sources.push]\nmode = \"push\"\nsub_app_id = 1500000102\n",
        spool.path().display().to_string(),
    );
    let Stream {
        mut brokers,
        emu,
        body,
        process: mut first,
        keys,
    } = Stream::start("83", EVENTS, &extra, 200).await;
    let mut pushed = HashMap::new();
    match fault {
        Fault::Silent(broker) => {
            let proxy = match broker {
                "kafka" => &brokers.kafka_proxy,
                "rabbit" => &brokers.rabbit_proxy,
                _ => &brokers.nats_proxy,
            };
            proxy.silence();
            tokio::time::sleep(Duration::from_secs(5)).await;
            proxy.heal();
        }
        Fault::RabbitStopped => brokers.rabbit.stop(),
        Fault::NatsKilled => {
            brokers.nats.stop();
            // Callbacks VOD pushes now are spooled (200) and wait for NATS.
            pushed = push(
                &emu,
                &format!("{}/callback/push", first.url()),
                "84",
                PUSHED,
                50.0,
            )
            .await;
            wait_for("the pushes answered", Duration::from_secs(30), || {
                push_settled(&emu, &pushed)
            })
            .await;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let spooled = metric(&first, "vodbridge_spool_events")
        .await
        .unwrap_or(0.0);
    let signalled = Instant::now();
    let clean = first.terminate(Duration::from_secs(DRAIN_SECS) + EXIT_MARGIN);
    let exit_secs = signalled.elapsed().as_secs_f64();
    match fault {
        Fault::NatsKilled => brokers.nats.restart(),
        Fault::RabbitStopped => brokers.rabbit.restart(),
        Fault::Silent(_) => {}
    }

    let second = bridge(&body, DRAIN_SECS);
    wait_for(
        "the second bridge finishes the stream",
        Duration::from_secs(120),
        || acknowledged(&emu, &keys).len() == EVENTS,
    )
    .await;
    let answered = acknowledged(&emu, &pushed);
    // The spool's leftovers are forwarded by the second bridge.
    let started = Instant::now();
    while metric(&second, "vodbridge_spool_events").await != Some(0.0) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the second bridge forwards the spool"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(second);
    let confirmed = acknowledged(&emu, &keys);
    let held = brokers.held().await;
    let name = match fault {
        Fault::Silent(broker) => format!("sigterm-after-silent-{broker}"),
        Fault::NatsKilled => "sigterm-nats-killed-spool".to_owned(),
        Fault::RabbitStopped => "sigterm-rabbitmq-stopped".to_owned(),
    };
    let lost: usize = held
        .iter()
        .map(|(_, h)| h.missing(&confirmed).len() + h.missing(&answered).len())
        .sum();
    report(
        &name,
        json!({
            "sent": EVENTS, "pushed": pushed.len(), "answered_200": answered.len(),
            "spooled_at_signal": spooled, "drain_timeout_secs": DRAIN_SECS,
            "exit_code_zero": clean, "exit_seconds": tenth(exit_secs),
            "confirmed": confirmed.len(), "lost": lost,
        }),
    );
    assert!(
        clean,
        "{name}: SIGTERM ends in exit 0 within {DRAIN_SECS} s + {EXIT_MARGIN:?} (took {exit_secs:.1} s)"
    );
    assert_eq!(
        lost, 0,
        "{name}: nothing confirmed or answered 200 is missing"
    );
    assert_eq!(
        answered.len(),
        pushed.len(),
        "{name}: every push answered 200"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_after_a_silent_rabbitmq_exits_within_the_drain_limit() {
    sigterm_after(Fault::Silent("rabbit")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_after_a_silent_nats_exits_within_the_drain_limit() {
    sigterm_after(Fault::Silent("nats")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_after_a_silent_kafka_exits_within_the_drain_limit() {
    sigterm_after(Fault::Silent("kafka")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_nats_killed_and_the_spool_holding_events_exits_within_the_drain_limit() {
    sigterm_after(Fault::NatsKilled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_rabbitmq_stopped_exits_within_the_drain_limit() {
    sigterm_after(Fault::RabbitStopped).await;
}
