//! The durable push spool against a real NATS JetStream and the emulator pushing as VOD does:
//! a 60 s outage loses nothing, a SIGKILL of the bridge with a full spool loses nothing after a
//! restart, and the events of one video are forwarded in the order they came.

use std::{collections::HashMap, time::Duration};

use serde_json::{json, Value};
use vod_emulator::RunningEmulator;
use vodbridge_testkit::{free_port, BridgeProcess, NatsServer};

use crate::helpers::{jetstream_envelopes, metric, settings, wait_for, TestApp};

fn config(nats: &NatsServer, spool: &std::path::Path) -> String {
    format!(
        r#"
[server]
publish_timeout_ms = 2000
[spool]
path = {spool:?}
[sources.default]
mode = "push"
sub_app_id = 1500000001
[sinks.broker]
type = "nats"
url = "{url}"
stream = "VOD"
create_stream = true
stream_subjects = ["vod.>"]
ack_timeout_ms = 1000
[[routes]]
event_types = ["*"]
sinks = [{{ sink = "broker", destination = "vod.{{event_type}}" }}]
"#,
        spool = spool.display().to_string(),
        url = nats.url()
    )
}

/// `count` events, `per_video` in a row for each FileId, numbered by `Progress`.
fn events(run: &str, count: usize, per_video: usize) -> Vec<Value> {
    (0..count)
        .map(|i| {
            json!({
                "EventType": "ProcedureStateChanged",
                "ProcedureStateChangeEvent": {
                    "TaskId": format!("1500000001-procedurev2-{run}-{i}"),
                    "Status": "PROCESSING",
                    "FileId": format!("{run}{:012}", i / per_video),
                    "Progress": i % per_video,
                }
            })
        })
        .collect()
}

/// Waits until VOD is done with `keys`; returns how many it got a 200 for.
async fn acknowledged(emu: &RunningEmulator, keys: &[u64], timeout: Duration) -> usize {
    let ours = |key: u64| keys.contains(&key);
    wait_for("VOD done with every pushed event", timeout, || {
        emu.emulator
            .ledger()
            .iter()
            .filter(|e| ours(e.key))
            .all(|e| e.answer_status.is_some() || e.gave_up)
    })
    .await;
    emu.emulator
        .ledger()
        .iter()
        .filter(|e| ours(e.key) && e.answer_status == Some(200))
        .count()
}

/// The stream's events in stream order: (FileId, Progress).
async fn stored(nats: &NatsServer) -> Vec<(String, u64)> {
    jetstream_envelopes(&nats.url(), "VOD")
        .await
        .into_iter()
        .map(|envelope| {
            let data: Value = serde_json::from_slice(&envelope.data).expect("json");
            let progress = data["ProcedureStateChangeEvent"]["Progress"]
                .as_u64()
                .unwrap_or(0);
            (envelope.subject.unwrap_or_default(), progress)
        })
        .collect()
}

/// Every pushed event is stored, and each video's events first appear in the order the
/// bridge took them. The emulator sends each push on its own schedule, so under load a later
/// send can arrive first; what the spool promises is the order of arrival, seen here as the
/// order of the answers (`confirmed_at` in the ledger; `keys[i]` is `bodies[i]`). Two answers
/// less than 5 ms apart may have shared a group commit and are not compared.
fn assert_all_in_order(
    stored: &[(String, u64)],
    bodies: &[Value],
    keys: &[u64],
    emu: &RunningEmulator,
) {
    let answered: HashMap<u64, time::OffsetDateTime> = emu
        .emulator
        .ledger()
        .into_iter()
        .filter_map(|e| Some((e.key, e.confirmed_at?)))
        .collect();
    let mut first_seen: HashMap<(&str, u64), usize> = HashMap::new();
    for (i, (file_id, progress)) in stored.iter().enumerate() {
        first_seen.entry((file_id.as_str(), *progress)).or_insert(i);
    }
    let mut by_video: HashMap<&str, Vec<(time::OffsetDateTime, u64, usize)>> = HashMap::new();
    for (body, key) in bodies.iter().zip(keys) {
        let event = &body["ProcedureStateChangeEvent"];
        let file_id = event["FileId"].as_str().unwrap_or_default();
        let progress = event["Progress"].as_u64().unwrap_or(0);
        let position = first_seen.get(&(file_id, progress)).copied();
        let Some(position) = position else {
            panic!("{file_id}/{progress} answered 200 but not in the stream");
        };
        let at = answered
            .get(key)
            .copied()
            .unwrap_or_else(|| panic!("{file_id}/{progress} has no answer in the ledger"));
        by_video
            .entry(file_id)
            .or_default()
            .push((at, progress, position));
    }
    for (file_id, mut events) in by_video {
        events.sort();
        for pair in events.windows(2) {
            let ((a_at, a, a_pos), (b_at, b, b_pos)) = (pair[0], pair[1]);
            if b_at - a_at >= time::Duration::milliseconds(5) {
                assert!(
                    a_pos < b_pos,
                    "the events of {file_id} came out of order: {a} answered before {b} but stored after it"
                );
            }
        }
    }
}

/// A 60 s NATS outage with the spool: VOD gets a 200 for every event (none given up on), and
/// the stream has every one once NATS is back, each video's in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_outage_with_the_spool_loses_nothing() {
    let mut nats = NatsServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let emu = crate::helpers::emulator("AKIDSPOOL", "spool-key", Duration::from_secs(30)).await;
    let app = TestApp::start(settings(&config(&nats, dir.path())), vec![]).await;
    app.wait_ready(Duration::from_secs(20)).await;

    let bodies = events("91", 400, 4);
    let keys = emu
        .emulator
        .push(&app.url("/callback/default"), bodies.clone(), 5.0);
    tokio::time::sleep(Duration::from_secs(5)).await;
    nats.stop();
    tokio::time::sleep(Duration::from_secs(30)).await;
    let (_, metrics) = app.get("/metrics").await;
    assert!(
        metric(&metrics, "vodbridge_spool_events").unwrap_or(0.0) >= 100.0,
        "the outage fills the spool: {metrics}"
    );
    tokio::time::sleep(Duration::from_secs(30)).await;
    nats.restart();

    assert_eq!(
        acknowledged(&emu, &keys, Duration::from_secs(60)).await,
        400,
        "VOD got a 200 for every event"
    );
    let started = std::time::Instant::now();
    while metric(&app.get("/metrics").await.1, "vodbridge_spool_events") != Some(0.0) {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the spool forwards everything"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_all_in_order(&stored(&nats).await, &bodies, &keys, &emu);
    app.stop().await.expect("clean stop");
}

/// The real binary with NATS down spools what VOD pushes, is SIGKILLed, and started again on
/// the same spool once NATS is up: every event VOD got a 200 for reaches the stream, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_with_a_full_spool_loses_nothing_after_a_restart() {
    let mut nats = NatsServer::start();
    nats.stop();
    let dir = tempfile::tempdir().expect("tempdir");
    let emu = crate::helpers::emulator("AKIDSPOOL", "spool-key", Duration::from_secs(30)).await;
    let port = free_port();
    let toml = format!(
        "{}\n[telemetry]\nlog_level = \"warn\"\n",
        config(&nats, dir.path()).replace(
            "[server]\n",
            &format!("[server]\nlisten = \"127.0.0.1:{port}\"\n")
        )
    );
    let mut bridge = BridgeProcess::start(env!("CARGO_BIN_EXE_vodbridge"), &toml, port);
    let bodies = events("92", 300, 3);
    let keys = emu.emulator.push(
        &format!("{}/callback/default", bridge.url()),
        bodies.clone(),
        100.0,
    );
    assert_eq!(
        acknowledged(&emu, &keys, Duration::from_secs(30)).await,
        300,
        "spooled while NATS is down: 200 for every event"
    );
    bridge.kill();

    nats.restart();
    let bridge = BridgeProcess::start(env!("CARGO_BIN_EXE_vodbridge"), &toml, port);
    let mut last = Vec::new();
    for _ in 0..300 {
        last = stored(&nats).await;
        let distinct: std::collections::HashSet<_> = last.iter().collect();
        if distinct.len() == 300 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_all_in_order(&last, &bodies, &keys, &emu);
    drop(bridge);
}
