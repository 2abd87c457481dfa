//! The bridge into a real RabbitMQ: callbacks and pulled events arrive with the routing key,
//! properties and bytes; an unroutable route is never acknowledged; a broker crash mid-stream
//! loses nothing VOD saw confirmed and answers 503 while it is down.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use futures_util::StreamExt;
use lapin::{
    options::{BasicAckOptions, BasicConsumeOptions},
    types::{AMQPValue, FieldTable},
    Connection, ConnectionProperties,
};
use vodbridge_core::{Envelope, Ingress};
use vodbridge_testkit::{rabbitmq_client, RabbitMq};

use crate::helpers::{
    amqp_consumer as consumer, amqp_decode as decode, emulator, fixture, metric, settings,
    wait_for, TestApp,
};

fn config(broker: &RabbitMq, emulator: &str) -> String {
    format!(
        r#"
[server]
publish_timeout_ms = 1500
[sources.default]
mode = "push"
sub_app_id = 1500000001
# These tests check that nothing is answered 200 while the broker is down, so fast; holding
# for VOD is tested in the reliability suite (push_outage.rs).
on_sink_failure = "reject"
[sources.app]
mode = "pull"
endpoint = "{emulator}"
sub_app_id = 1500000002
secret_id = "AKIDAMQP"
secret_key = "amqp-key"
handle_lifetime_ms = 3000
loops = 4
confirm_margin_ms = 1000
max_backoff_ms = 300
[sinks.rabbit]
type = "amqp"
url = "{url}"
exchange = "vod"
max_reconnect_backoff_ms = 300
[[routes]]
event_types = ["FileDeleted"]
sinks = [{{ sink = "rabbit", destination = "nowhere.{{event_type}}" }}]
[[routes]]
event_types = ["EditMediaComplete"]
sinks = [{{ sink = "rabbit", destination = "late.{{event_type}}" }}]
[delivery]
unroutable_retries = 1
unroutable_backoff_ms = 1000
[[routes]]
event_types = ["*"]
sinks = [{{ sink = "rabbit", destination = "vod.{{sub_app_id}}.{{event_type}}" }}]
"#,
        url = broker.url()
    )
}

async fn receive(channel: &lapin::Channel, count: usize) -> Vec<(String, Envelope)> {
    let mut deliveries = channel
        .basic_consume(
            "events".into(),
            "test".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let mut out = Vec::new();
    while out.len() < count {
        let delivery = tokio::time::timeout(Duration::from_secs(20), deliveries.next())
            .await
            .expect("a delivery in time")
            .expect("open")
            .expect("delivery");
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
        out.push((delivery.routing_key.to_string(), decode(&delivery)));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_into_rabbitmq() {
    let mut broker = RabbitMq::start();
    let (_connection, channel) = consumer(&broker).await;
    let emu = emulator("AKIDAMQP", "amqp-key", Duration::from_secs(3)).await;
    let app = TestApp::start(settings(&config(&broker, &emu.endpoint())), vec![]).await;
    app.wait_ready(Duration::from_secs(20)).await;

    // Callbacks and pulled events arrive with routing key, headers and bytes.
    assert_eq!(
        app.post("/callback/default", fixture("ProcedureStateChanged"))
            .await
            .status(),
        200
    );
    emu.emulator.generate(
        1_500_000_002,
        20,
        &["NewFileUpload".into(), "PullComplete".into()],
    );
    wait_for(
        "20 pulled events confirmed",
        Duration::from_secs(30),
        || emu.emulator.stats().confirmed == 20,
    )
    .await;
    let received = receive(&channel, 21).await;
    for (routing_key, envelope) in &received {
        assert_eq!(
            routing_key,
            &format!(
                "vod.{}.{}",
                envelope.sub_app_id.unwrap_or(0),
                envelope.event_type
            )
        );
    }
    let pushed = received
        .iter()
        .find(|(_, e)| e.ingress == Ingress::Push)
        .map(|(_, e)| e.data.clone());
    assert_eq!(
        pushed,
        Some(fixture("ProcedureStateChanged").into()),
        "bytes as received"
    );

    // A queue that appears a moment after the first publish: the returned message is tried
    // again (one retry after 1 s here) and the callback is answered 200. (Before the
    // unroutable events below, which keep coming back and being retried.)
    let retries = |metrics: &str| {
        metric(
            metrics,
            r#"vodbridge_unroutable_retries_total{sink="rabbit"}"#,
        )
        .unwrap_or(0.0)
    };
    let retries_before = retries(&app.get("/metrics").await.1);
    let late = {
        let url = broker.url();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let connection = Connection::connect(&url, ConnectionProperties::default())
                .await
                .expect("connects");
            let channel = connection.create_channel().await.expect("channel");
            rabbitmq_client::declare_queue(
                &channel,
                "vod",
                "late",
                "late.#",
                FieldTable::default(),
            )
            .await;
            (connection, channel)
        })
    };
    assert_eq!(
        app.post("/callback/default", fixture("EditMediaComplete"))
            .await
            .status(),
        200,
        "delivered once the queue was bound"
    );
    let (_late_connection, late_channel) = late.await.expect("binder");
    let message = late_channel
        .basic_get("late".into(), lapin::options::BasicGetOptions::default())
        .await
        .expect("get")
        .expect("the late event is in its queue");
    assert_eq!(
        message.delivery.routing_key.as_str(),
        "late.EditMediaComplete"
    );
    assert_eq!(
        retries(&app.get("/metrics").await.1) - retries_before,
        1.0,
        "the first publish was returned, the retry delivered it"
    );

    // An unroutable route is never acknowledged: 503 on push, no confirm on pull.
    let response = app.post("/callback/default", fixture("FileDeleted")).await;
    assert_eq!(response.status(), 503);
    assert!(response
        .text()
        .await
        .unwrap_or_default()
        .contains("unroutable"));
    emu.emulator
        .generate(1_500_000_002, 3, &["FileDeleted".into()]);
    wait_for(
        "the unroutable events handed out",
        Duration::from_secs(10),
        || emu.emulator.stats().deliveries >= 23,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        emu.emulator.stats().confirmed,
        20,
        "unroutable events stay unconfirmed"
    );

    // A broker crash (SIGKILL) in the middle of a pulled stream: 503 while down, and every
    // event VOD saw confirmed is in the queue afterwards. Pulls are slowed so the crash lands
    // mid-stream; the queue is checked by FileId, not by count (a publish whose confirm was
    // lost in the crash is retried and may be stored twice).
    emu.emulator.set_faults(vod_emulator::Faults {
        latency_ms: 5,
        ..vod_emulator::Faults::default()
    });
    let file_ids: HashMap<u64, String> = (0..2000)
        .map(|i| {
            let file_id = format!("crash-{i}");
            let body = serde_json::json!({
                "EventType": "NewFileUpload",
                "FileUploadEvent": {"FileId": file_id, "MediaBasicInfo": {"Name": format!("v{i}.mp4")}}
            });
            (emu.emulator.enqueue(1_500_000_002, &body), file_id)
        })
        .collect();
    let confirmed_of = |keys: &HashMap<u64, String>| -> HashSet<String> {
        emu.emulator
            .ledger()
            .into_iter()
            .filter(|e| e.confirmed_at.is_some())
            .filter_map(|e| keys.get(&e.key).cloned())
            .collect()
    };
    wait_for("the stream under way", Duration::from_secs(30), || {
        confirmed_of(&file_ids).len() >= 200
    })
    .await;
    broker.crash();
    let before_restart = confirmed_of(&file_ids);
    assert!(
        before_restart.len() < file_ids.len(),
        "the crash must land mid-stream ({} of {} confirmed)",
        before_restart.len(),
        file_ids.len()
    );
    app.wait_unready(Duration::from_secs(10)).await;
    assert_eq!(
        app.post("/callback/default", fixture("NewFileUpload"))
            .await
            .status(),
        503
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let while_down = confirmed_of(&file_ids);
    broker.restart();
    let (_connection, channel) = consumer(&broker).await;
    app.wait_ready(Duration::from_secs(30)).await;
    assert_eq!(
        app.post("/callback/default", fixture("NewFileUpload"))
            .await
            .status(),
        200,
        "VOD's retry succeeds"
    );
    wait_for(
        "every pulled event confirmed after the restart",
        Duration::from_secs(60),
        || confirmed_of(&file_ids).len() == file_ids.len(),
    )
    .await;
    // The pushed callback (its FileId) and every pulled event.
    let pushed_file_id = "3704211140000000001".to_owned();
    let expected: HashSet<String> = file_ids
        .values()
        .cloned()
        .chain([pushed_file_id.clone()])
        .collect();
    let (seen, deliveries) = receive_subjects(&channel, &expected).await;
    let lost: Vec<&String> = expected.difference(&seen).collect();
    assert!(
        lost.is_empty(),
        "confirmed to VOD but not in RabbitMQ: {} events, e.g. {:?} ({} confirmed before the \
         crash, {} while down)",
        lost.len(),
        lost.first(),
        before_restart.len(),
        while_down.len()
    );
    eprintln!(
        "RabbitMQ crash mid-stream: {} confirmed before the crash, {} deliveries for {} events",
        before_restart.len(),
        deliveries,
        seen.len()
    );
    app.stop().await.expect("clean stop");
}

/// Consumes the `events` queue until every subject in `expected` was seen (or 20 s pass
/// without a delivery); returns the subjects seen and the number of deliveries.
async fn receive_subjects(
    channel: &lapin::Channel,
    expected: &HashSet<String>,
) -> (HashSet<String>, usize) {
    let mut deliveries = channel
        .basic_consume(
            "events".into(),
            "subjects".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let (mut seen, mut count) = (HashSet::new(), 0);
    while !expected.is_subset(&seen) {
        let Ok(next) = tokio::time::timeout(Duration::from_secs(20), deliveries.next()).await
        else {
            break;
        };
        let delivery = next.expect("open").expect("delivery");
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
        count += 1;
        if let Some(AMQPValue::LongString(subject)) = delivery
            .properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("cloudEvents_subject").cloned())
        {
            seen.insert(String::from_utf8_lossy(subject.as_bytes()).into_owned());
        }
    }
    (seen, count)
}
