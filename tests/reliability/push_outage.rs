//! Push through broker outages, judged from VOD's side: the emulator pushes at a steady rate as
//! VOD does (any answer ends a delivery, only timeouts and failed connections are sent again,
//! three sends at most), a real broker goes away mid-stream, and its ledger tells which events
//! VOD took as delivered without a 200 or gave up on. An outage shorter than VOD's retry window
//! loses nothing; a 60 s one, without a spool, loses what VOD stopped resending, and the count is
//! recorded.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use vod_emulator::RunningEmulator;
use vodbridge_testkit::{NatsServer, RabbitMq};

use crate::helpers::{jetstream_envelopes, settings, wait_for, TestApp};

/// A push event with a unique FileId.
fn event(run: &str, i: usize) -> (String, Value) {
    let file_id = format!("{run}{i:012}");
    let body = json!({
        "EventType": "NewFileUpload",
        "FileUploadEvent": { "FileId": file_id, "MediaBasicInfo": { "Name": format!("v{i}") } }
    });
    (file_id, body)
}

/// What VOD's side saw of a pushed stream.
#[derive(Debug)]
struct Seen {
    /// Answered 200.
    acknowledged: usize,
    /// Answered with another status: VOD takes it as delivered and never sends it again.
    answered_otherwise: usize,
    /// No attempt answered: VOD gave up.
    gave_up: usize,
    /// FileIds of the events VOD will not send again without a 200 (lost unless stored).
    lost: HashSet<String>,
}

/// Makes the emulator push `count` events at `rate` per second to `url`; returns key → FileId.
async fn push(
    emu: &RunningEmulator,
    url: &str,
    run: &str,
    count: usize,
    rate: f64,
) -> HashMap<u64, String> {
    crate::support::push_events(emu, url, (0..count).map(|i| event(run, i)), rate)
}

/// Waits until VOD is done with every pushed event, then reads the ledger.
async fn seen(emu: &RunningEmulator, keys: &HashMap<u64, String>, timeout: Duration) -> Seen {
    let done = || {
        emu.emulator
            .ledger()
            .iter()
            .filter(|e| keys.contains_key(&e.key))
            .all(|e| e.answer_status.is_some() || e.gave_up)
    };
    wait_for("VOD done with every pushed event", timeout, done).await;
    let mut seen = Seen {
        acknowledged: 0,
        answered_otherwise: 0,
        gave_up: 0,
        lost: HashSet::new(),
    };
    for entry in emu.emulator.ledger() {
        let Some(file_id) = keys.get(&entry.key) else {
            continue;
        };
        match entry.answer_status {
            Some(200) => seen.acknowledged += 1,
            Some(_) => {
                seen.answered_otherwise += 1;
                seen.lost.insert(file_id.clone());
            }
            None => {
                seen.gave_up += 1;
                seen.lost.insert(file_id.clone());
            }
        }
    }
    seen
}

fn bridge_config(sink: &str) -> String {
    format!(
        r#"
[server]
publish_timeout_ms = 2000
[sources.default]
mode = "push"
sub_app_id = 1500000001
{sink}
[[routes]]
event_types = ["*"]
sinks = [{{ sink = "broker", destination = "vod.{{event_type}}" }}]
"#
    )
}

fn nats_sink(nats: &NatsServer) -> String {
    format!(
        r#"
[sinks.broker]
type = "nats"
url = "{}"
stream = "VOD"
create_stream = true
stream_subjects = ["vod.>"]
ack_timeout_ms = 1000
"#,
        nats.url()
    )
}

/// FileIds of every message in the NATS stream.
async fn nats_file_ids(nats: &NatsServer) -> HashSet<String> {
    jetstream_envelopes(&nats.url(), "VOD")
        .await
        .into_iter()
        .filter_map(|envelope| envelope.subject)
        .collect()
}

/// 200 events at 20/s; NATS is killed 2 s in and started again 6 s later, inside VOD's retry
/// window (three sends 5 s apart): VOD gets a 200 for every event, and the stream has them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_outage_inside_vods_retry_window_loses_nothing() {
    let mut nats = NatsServer::start();
    let emu = crate::helpers::emulator("AKIDPUSH", "push-key", Duration::from_secs(30)).await;
    let app = TestApp::start(settings(&bridge_config(&nats_sink(&nats))), vec![]).await;
    app.wait_ready(Duration::from_secs(20)).await;

    let keys = push(&emu, &app.url("/callback/default"), "81", 200, 20.0).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    nats.stop();
    tokio::time::sleep(Duration::from_secs(6)).await;
    nats.restart();

    let seen = seen(&emu, &keys, Duration::from_secs(60)).await;
    assert_eq!(
        (seen.answered_otherwise, seen.gave_up),
        (0, 0),
        "VOD took no event as delivered without a 200: {seen:?}"
    );
    assert_eq!(seen.acknowledged, 200);
    let stored = nats_file_ids(&nats).await;
    let missing: Vec<&String> = keys.values().filter(|f| !stored.contains(*f)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not in the stream: {missing:?}"
    );
    app.stop().await.expect("clean stop");
}

/// The same with RabbitMQ stopped (`stop_app`) for 6 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rabbitmq_outage_inside_vods_retry_window_loses_nothing() {
    let mut broker = RabbitMq::start();
    let (_connection, channel) = crate::helpers::amqp_consumer(&broker).await;
    let sink = format!(
        r#"
[sinks.broker]
type = "amqp"
url = "{}"
exchange = "vod"
max_reconnect_backoff_ms = 300
"#,
        broker.url()
    );
    let emu = crate::helpers::emulator("AKIDPUSH", "push-key", Duration::from_secs(30)).await;
    let app = TestApp::start(settings(&bridge_config(&sink)), vec![]).await;
    app.wait_ready(Duration::from_secs(30)).await;

    let keys = push(&emu, &app.url("/callback/default"), "82", 200, 20.0).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stopped = Instant::now();
    broker.stop();
    tokio::time::sleep(Duration::from_secs(6).saturating_sub(stopped.elapsed())).await;
    broker.restart();

    let seen = seen(&emu, &keys, Duration::from_secs(60)).await;
    assert_eq!(
        (seen.answered_otherwise, seen.gave_up),
        (0, 0),
        "VOD took no event as delivered without a 200: {seen:?}"
    );
    drop(channel);
    let (_connection, channel) = crate::helpers::amqp_consumer(&broker).await;
    let stored: HashSet<String> = crate::helpers::amqp_drain(&channel)
        .await
        .into_iter()
        .filter_map(|envelope| envelope.subject)
        .collect();
    let missing: Vec<&String> = keys.values().filter(|f| !stored.contains(*f)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not in the queue: {missing:?}"
    );
    app.stop().await.expect("clean stop");
}

/// A 60 s NATS outage without a spool: VOD's three sends 5 s apart cannot cover it, so the
/// events that arrive early in the outage are given up on. The test counts them (VOD's side:
/// no 200 ever) and checks that every event VOD did get a 200 for is in the stream, and that no
/// event was answered with anything but a 200 (a fast failure would be a loss VOD cannot see).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_nats_outage_without_a_spool_loses_only_what_vod_gave_up_on() {
    let mut nats = NatsServer::start();
    let emu = crate::helpers::emulator("AKIDPUSH", "push-key", Duration::from_secs(30)).await;
    let app = TestApp::start(settings(&bridge_config(&nats_sink(&nats))), vec![]).await;
    app.wait_ready(Duration::from_secs(20)).await;

    // 5 events a second for 80 s; the outage is from 5 s to 65 s.
    let keys = push(&emu, &app.url("/callback/default"), "83", 400, 5.0).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    nats.stop();
    tokio::time::sleep(Duration::from_secs(60)).await;
    nats.restart();

    let seen = seen(&emu, &keys, Duration::from_secs(60)).await;
    assert_eq!(seen.answered_otherwise, 0, "never a fast failure: {seen:?}");
    assert!(
        seen.gave_up >= 150,
        "VOD gives up on the events of most of a 60 s outage: {seen:?}"
    );
    let stored = nats_file_ids(&nats).await;
    let stored_anyway = seen.lost.iter().filter(|f| stored.contains(*f)).count();
    let acknowledged_missing = keys
        .values()
        .filter(|f| !seen.lost.contains(*f) && !stored.contains(*f))
        .count();
    assert_eq!(
        acknowledged_missing, 0,
        "every event answered 200 is stored"
    );
    eprintln!(
        "60 s NATS outage without spool: {} events pushed, {} acknowledged, {} given up by VOD \
         ({} of them stored anyway by a held publish)",
        keys.len(),
        seen.acknowledged,
        seen.gave_up,
        stored_anyway
    );
    app.stop().await.expect("clean stop");
}

/// The same with Kafka: librdkafka's mock cluster (it keeps its data while a broker is down,
/// which tansu's memory storage does not across a restart) with its only broker down for 6 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_outage_inside_vods_retry_window_loses_nothing() {
    use rdkafka::{
        consumer::{BaseConsumer, Consumer},
        message::{Headers, Message as _},
        mocking::MockCluster,
        ClientConfig, Offset, TopicPartitionList,
    };
    let cluster = MockCluster::new(1).expect("mock cluster");
    cluster
        .create_topic("vod.NewFileUpload", 1, 1)
        .expect("topic");
    let sink = format!(
        r#"
[sinks.broker]
type = "kafka"
brokers = "{}"
message_timeout_ms = 1500
"#,
        cluster.bootstrap_servers()
    );
    let emu = crate::helpers::emulator("AKIDPUSH", "push-key", Duration::from_secs(30)).await;
    let app = TestApp::start(settings(&bridge_config(&sink)), vec![]).await;
    app.wait_ready(Duration::from_secs(20)).await;

    let keys = push(&emu, &app.url("/callback/default"), "84", 200, 20.0).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    cluster.broker_down(1).expect("down");
    tokio::time::sleep(Duration::from_secs(6)).await;
    cluster.broker_up(1).expect("up");

    let seen = seen(&emu, &keys, Duration::from_secs(60)).await;
    assert_eq!(
        (seen.answered_otherwise, seen.gave_up),
        (0, 0),
        "VOD took no event as delivered without a 200: {seen:?}"
    );
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap_servers())
        .set("group.id", "push-outage")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset("vod.NewFileUpload", 0, Offset::Beginning)
        .expect("offset");
    consumer.assign(&assignment).expect("assign");
    let mut stored = HashSet::new();
    let started = Instant::now();
    while stored.len() < keys.len() && started.elapsed() < Duration::from_secs(30) {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.expect("message").detach();
        let subject = message.headers().and_then(|h| {
            h.iter()
                .find(|x| x.key == "ce_subject")
                .and_then(|x| x.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        });
        stored.extend(subject);
    }
    let missing: Vec<&String> = keys.values().filter(|f| !stored.contains(*f)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not in the topic: {missing:?}"
    );
    app.stop().await.expect("clean stop");
}
