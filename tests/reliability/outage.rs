//! Broker outages longer than the pull handle lifetime, one broker at a time: Kafka (tansu on
//! SQLite storage, so a restart keeps what it acknowledged), RabbitMQ (`stop_app`) and NATS
//! (SIGKILL, file storage). While the broker is down the emulator keeps pushing as VOD does
//! (the bridge's push source has the durable spool) and the pull queue keeps its events.
//! Judged from VOD's side: every pulled event ends confirmed, every push VOD took as delivered
//! got a 200, and every acknowledged event is in the broker after it comes back.
//!
//! The Kafka row runs its producer with `enable.idempotence = false`: tansu's SQLite storage
//! keeps messages across a restart but not the idempotent producers' state, and panics on the
//! first produce of a producer id from before the restart (`idempotent_message_check`: "more
//! or less than one row"), answering UNKNOWN_SERVER_ERROR forever. A real Kafka keeps that
//! state in its log; the row still proves that nothing is confirmed or answered 200 unless
//! the restarted broker holds it.

use std::time::{Duration, Instant};

use lapin::types::FieldTable;
use serde_json::json;
use vodbridge_testkit::{BridgeProcess, NatsServer, RabbitMq, Tansu};

use crate::support::{
    acknowledged, bridge, emulator, enqueue, kafka_held, kafka_sink, kafka_topic, metric,
    nats_held, nats_sink, pull_source, push, push_lost_by_vod, push_settled, rabbit_held,
    rabbit_queue, rabbit_sink, report, route_to, wait_for, wait_ready, Held,
};

const PULLED: usize = 2_000;
const PUSHED: usize = 200;
const LIFETIME_MS: u64 = 4_000;
/// Twice the handle lifetime: handles pulled before the outage expire during it.
const OUTAGE: Duration = Duration::from_secs(8);

/// A broker that can go away and come back.
trait Outage {
    fn down(&mut self);
    fn up(&mut self);
}

impl Outage for Tansu {
    fn down(&mut self) {
        self.stop();
    }
    fn up(&mut self) {
        self.restart();
    }
}

impl Outage for RabbitMq {
    fn down(&mut self) {
        self.stop();
    }
    fn up(&mut self) {
        self.restart();
    }
}

impl Outage for NatsServer {
    fn down(&mut self) {
        self.stop();
    }
    fn up(&mut self) {
        self.restart();
    }
}

/// Runs the outage scenario against `broker` behind `sink` (routed as `destination`), then
/// reads what the broker holds with `held`.
async fn outage<B: Outage>(
    name: &str,
    broker: &mut B,
    sink: &str,
    sink_name: &str,
    destination: &str,
    held: impl AsyncFnOnce(&B) -> Held,
) {
    let emu = emulator(Duration::from_millis(LIFETIME_MS)).await;
    let spool = tempfile::tempdir().expect("spool dir");
    let body = format!(
        "[spool]\npath = {:?}\n[sources.push]\nmode = \"push\"\nsub_app_id = 1500000102\n{}{sink}{}",
        spool.path().display().to_string(),
        pull_source(&emu, LIFETIME_MS, 4),
        route_to(&[(sink_name, destination)]),
    );
    let process: BridgeProcess = bridge(&body, 10);
    wait_ready(&process, Duration::from_secs(30)).await;
    // About 100 pulled events/s (VOD's 100 calls/s would take 1,600): the outage lands
    // mid-stream.
    emu.emulator.set_limits(vod_emulator::Limits {
        pull_events: 8,
        ..vod_emulator::Limits::VOD
    });
    let pulled = enqueue(&emu, "72", 0..PULLED);
    let pushed = push(
        &emu,
        &format!("{}/callback/push", process.url()),
        "73",
        PUSHED,
        20.0,
    )
    .await;
    wait_for(
        "a third of the pulled stream",
        Duration::from_secs(60),
        || emu.emulator.stats().confirmed >= (PULLED / 3) as u64,
    )
    .await;

    let down_at = Instant::now();
    broker.down();
    let confirmed_at_down = acknowledged(&emu, &pulled).len();
    // While it is down: pull confirms at most what was acknowledged before the broker left.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let settled_early = acknowledged(&emu, &pulled).len();
    tokio::time::sleep(OUTAGE.saturating_sub(down_at.elapsed())).await;
    let confirmed_in_outage = acknowledged(&emu, &pulled).len() - settled_early;
    let spooled = metric(&process, "vodbridge_spool_events")
        .await
        .unwrap_or(0.0);
    broker.up();

    wait_for(
        "every pulled event confirmed",
        Duration::from_secs(120),
        || acknowledged(&emu, &pulled).len() == PULLED,
    )
    .await;
    wait_for("VOD done pushing", Duration::from_secs(60), || {
        push_settled(&emu, &pushed)
    })
    .await;
    let started = Instant::now();
    while metric(&process, "vodbridge_spool_events").await != Some(0.0) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the spool forwards everything"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let held = held(broker).await;
    let confirmed = acknowledged(&emu, &pulled);
    let answered = acknowledged(&emu, &pushed);
    let lost_pull = held.missing(&confirmed);
    let lost_push = held.missing(&answered);
    let vod_gave_up = push_lost_by_vod(&emu, &pushed);
    let stats = emu.emulator.stats();
    report(
        &format!("outage-{name}"),
        json!({
            "outage_secs": OUTAGE.as_secs(), "handle_lifetime_ms": LIFETIME_MS,
            "pull": { "sent": PULLED, "confirmed": confirmed.len(),
                      "confirmed_before_outage": confirmed_at_down,
                      "confirmed_during_outage_after_2s": confirmed_in_outage,
                      "found": PULLED - lost_pull.len(), "lost": lost_pull.len(),
                      "redeliveries": stats.redeliveries },
            "push": { "sent": PUSHED, "answered_200": answered.len(),
                      "spooled_during_outage": spooled,
                      "vod_gave_up_or_not_200": vod_gave_up,
                      "found": PUSHED - lost_push.len(), "lost": lost_push.len() },
            "broker": { "messages": held.0.len(), "duplicates": held.duplicates() },
        }),
    );
    assert_eq!(
        confirmed_in_outage, 0,
        "{name}: nothing confirmed while the broker was down"
    );
    assert!(
        lost_pull.is_empty(),
        "{name}: confirmed, not stored: {lost_pull:?}"
    );
    assert_eq!(
        vod_gave_up, 0,
        "{name}: VOD took no push as delivered without a 200"
    );
    assert_eq!(answered.len(), PUSHED);
    assert!(
        lost_push.is_empty(),
        "{name}: answered 200, not stored: {lost_push:?}"
    );
    drop(process);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_outage_longer_than_the_handle_lifetime_loses_nothing() {
    let mut kafka = Tansu::start_durable();
    kafka_topic(&kafka).await;
    let sink = format!(
        "{}[sinks.kafka.properties]\n\"enable.idempotence\" = \"false\"\n",
        kafka_sink(&kafka)
    );
    outage(
        "kafka",
        &mut kafka,
        &sink,
        "kafka",
        "vod.events",
        async |b| kafka_held(b).await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rabbitmq_outage_longer_than_the_handle_lifetime_loses_nothing() {
    let mut rabbit = RabbitMq::start();
    rabbit_queue(&rabbit, "events", FieldTable::default()).await;
    let sink = rabbit_sink(&rabbit);
    outage(
        "rabbitmq",
        &mut rabbit,
        &sink,
        "rabbit",
        "vod.{event_type}",
        async |b| rabbit_held(b, "events").await,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_outage_longer_than_the_handle_lifetime_loses_nothing() {
    let mut nats = NatsServer::start();
    let sink = nats_sink(&nats);
    outage(
        "nats",
        &mut nats,
        &sink,
        "nats",
        "vod.{event_type}",
        async |b| nats_held(b).await,
    )
    .await;
}
