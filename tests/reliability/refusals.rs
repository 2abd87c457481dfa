//! Broker refusals: a RabbitMQ queue at its length limit with `overflow = reject-publish`, a
//! message over RabbitMQ's `max_message_size`, and destinations nothing is bound to (an AMQP
//! routing key, a NATS subject outside every stream). The bridge confirms (pull) or answers 200
//! (push) only what a broker kept: a full queue is tried again until it has room, a permanent
//! refusal goes to the dead letter (a file) with its reason, and only then is it acknowledged.

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use lapin::types::{AMQPValue, FieldTable};
use serde_json::{json, Value};
use vodbridge_core::Envelope;
use vodbridge_testkit::{NatsServer, RabbitMq};

use crate::support::{
    acknowledged, bridge, emulator, enqueue, nats_held, nats_sink, pull_source, push, push_settled,
    rabbit_held, rabbit_queue, rabbit_sink, report, wait_for, Held, PULL_APP,
};

const LIFETIME_MS: u64 = 4_000;

/// Dead-lettered lines of a file: FileId → reason.
fn dead_letters(path: &std::path::Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let value: Value = serde_json::from_str(line).ok()?;
            let envelope = Envelope::from_structured_json(line.as_bytes()).ok()?;
            Some((
                envelope.subject?,
                value["deadletterreason"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// 150 pulled events into a queue that holds 50 (`x-overflow = reject-publish`): RabbitMQ
/// nacks the rest, so exactly the 50 it kept are confirmed, handle lifetime after handle
/// lifetime; a consumer then takes 50 at a time and the rest follow, each confirmed only once
/// it is in the queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_with_reject_publish_confirms_only_what_it_kept() {
    const EVENTS: usize = 150;
    const LIMIT: usize = 50;
    let rabbit = RabbitMq::start();
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongInt(LIMIT as i32));
    arguments.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    rabbit_queue(&rabbit, "limited", arguments).await;
    let emu = emulator(Duration::from_millis(LIFETIME_MS)).await;
    let body = format!(
        "{}{}[[routes]]\nevent_types = [\"*\"]\nsinks = [{{ sink = \"rabbit\", destination = \"vod.{{event_type}}\" }}]\n",
        pull_source(&emu, LIFETIME_MS, 2),
        rabbit_sink(&rabbit),
    );
    let process = bridge(&body, 10);
    let keys = enqueue(&emu, "76", 0..EVENTS);
    wait_for("the queue full", Duration::from_secs(30), || {
        acknowledged(&emu, &keys).len() >= LIMIT
    })
    .await;
    // Two handle lifetimes later the rest was refused, came back and was refused again.
    tokio::time::sleep(Duration::from_millis(2 * LIFETIME_MS)).await;
    let confirmed_while_full = acknowledged(&emu, &keys).len();
    let refused_rounds = emu.emulator.stats().redeliveries;

    let mut drained = Held::default();
    let started = Instant::now();
    while acknowledged(&emu, &keys).len() < EVENTS {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the rest follows once there is room"
        );
        drained.0.extend(rabbit_held(&rabbit, "limited").await.0);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drained.0.extend(rabbit_held(&rabbit, "limited").await.0);
    let confirmed = acknowledged(&emu, &keys);
    let missing = drained.missing(&confirmed);
    report(
        "refusal-queue-full",
        json!({
            "sent": EVENTS, "queue_limit": LIMIT, "confirmed_while_full": confirmed_while_full,
            "redeliveries_while_full": refused_rounds, "confirmed": confirmed.len(),
            "found": drained.unique().len(), "duplicates": drained.duplicates(),
            "lost": missing.len(),
        }),
    );
    assert_eq!(
        confirmed_while_full, LIMIT,
        "only what the full queue kept is confirmed"
    );
    assert!(refused_rounds > 0, "the refused events came back from VOD");
    assert!(
        missing.is_empty(),
        "confirmed, not in the queue: {missing:?}"
    );
    drop(process);
}

/// A pulled event over RabbitMQ's 512 KiB `max_message_size`, events routed to a key no queue
/// is bound to, and events on a NATS subject no stream takes, pulled and pushed: each is
/// dead-lettered to a file with its reason and only then confirmed or answered 200; none is in
/// a broker, and the events around them are delivered normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_and_unroutable_events_are_dead_lettered_before_they_are_acknowledged() {
    let rabbit = RabbitMq::start();
    let nats = NatsServer::start();
    rabbit_queue(&rabbit, "events", FieldTable::default()).await;
    let emu = emulator(Duration::from_millis(LIFETIME_MS)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let dead = dir.path().join("dead.jsonl");
    let body = format!(
        r#"{pull}
[sources.push]
mode = "push"
sub_app_id = 1500000103
{rabbit}{nats}
[sinks.dead]
type = "file"
path = {dead:?}
[dead_letter]
sink = "dead"
[delivery]
unroutable_retries = 1
unroutable_backoff_ms = 100
[[routes]]
event_types = ["PullComplete"]
sinks = [{{ sink = "rabbit", destination = "nowhere.{{event_type}}" }}]
[[routes]]
event_types = ["ProcedureStateChanged"]
sinks = [{{ sink = "nats", destination = "elsewhere.{{event_type}}" }}]
[[routes]]
event_types = ["*"]
sinks = [{{ sink = "rabbit", destination = "vod.{{event_type}}" }}]
"#,
        pull = pull_source(&emu, LIFETIME_MS, 2),
        rabbit = rabbit_sink(&rabbit),
        nats = nats_sink(&nats),
        dead = dead.display().to_string(),
    );
    let process = bridge(&body, 10);
    crate::support::wait_ready(&process, Duration::from_secs(30)).await;

    // 30 events: NewFileUpload (delivered), PullComplete (unroutable key), ProcedureStateChanged
    // (no stream), plus one NewFileUpload over the size limit.
    let mut pulled = enqueue(&emu, "77", 0..30);
    let big_id = "77big".to_owned();
    let big = json!({"EventType": "NewFileUpload", "FileUploadEvent": {"FileId": big_id,
        "MediaBasicInfo": {"Name": "big", "Description": "x".repeat(RabbitMq::MAX_MESSAGE_SIZE + 4096)}}});
    pulled.insert(emu.emulator.enqueue(PULL_APP, &big), big_id.clone());
    let pushed = push(
        &emu,
        &format!("{}/callback/push", process.url()),
        "78",
        30,
        30.0,
    )
    .await;

    wait_for(
        "every pulled event confirmed",
        Duration::from_secs(60),
        || acknowledged(&emu, &pulled).len() == pulled.len(),
    )
    .await;
    wait_for("VOD done pushing", Duration::from_secs(60), || {
        push_settled(&emu, &pushed)
    })
    .await;
    let answered = acknowledged(&emu, &pushed);
    let dead = dead_letters(&dead);
    let in_queue = rabbit_held(&rabbit, "events").await;
    let in_stream = nats_held(&nats).await;
    let dead_ids: HashSet<&str> = dead.iter().map(|(id, _)| id.as_str()).collect();
    let reason_of = |id: &str| dead.iter().find(|(d, _)| d == id).map(|(_, r)| r.clone());
    let mut expected_dead = 0;
    for (i, file_id) in (0..30)
        .map(|i| (i, format!("77{i:012}")))
        .chain((0..30).map(|i| (i, format!("78{i:012}"))))
    {
        match i % 3 {
            0 => assert!(
                in_queue.unique().contains(file_id.as_str()),
                "{file_id} delivered to the queue"
            ),
            _ => {
                expected_dead += 1;
                assert_eq!(
                    reason_of(&file_id).as_deref(),
                    Some("unroutable"),
                    "{file_id} dead-lettered as unroutable"
                );
                assert!(!in_queue.unique().contains(file_id.as_str()));
            }
        }
    }
    assert_eq!(
        reason_of(&big_id).as_deref(),
        Some("too_large"),
        "the big event is dead-lettered as too large"
    );
    assert_eq!(answered.len(), 30, "VOD got a 200 for every pushed event");
    report(
        "refusal-too-large-unroutable",
        json!({
            "pulled": pulled.len(), "pushed": pushed.len(),
            "confirmed": acknowledged(&emu, &pulled).len(), "answered_200": answered.len(),
            "delivered_to_queue": in_queue.unique().len(), "in_stream": in_stream.0.len(),
            "dead_lettered": dead_ids.len(), "expected_dead": expected_dead + 1,
            "lost": (pulled.len() + pushed.len()) - in_queue.unique().len() - dead_ids.len(),
        }),
    );
    assert_eq!(in_stream.0.len(), 0, "nothing reached a NATS stream");
    assert_eq!(dead_ids.len(), expected_dead + 1);
    drop(process);
}
