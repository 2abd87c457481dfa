//! Pull ingress against the VOD emulator: no event lost, nothing confirmed before a sink holds
//! it, under API errors, throttling, latency, failing and slow sinks.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use tokio::sync::Notify;
use vod_emulator::{Faults, RunningEmulator};
use vodbridge_core::{Envelope, Sink};

use crate::helpers::{metric, settings, wait_for, Behaviour, Scripted, TestApp};

const ID: &str = "AKIDPULLTEST";
const KEY: &str = "pull-test-secret";

async fn emulator(visibility: Duration) -> RunningEmulator {
    crate::helpers::emulator(ID, KEY, visibility).await
}

/// A pull source section for the emulator.
fn pull_source(
    name: &str,
    emu: &RunningEmulator,
    sub_app_id: u64,
    loops: usize,
    lifetime_ms: u64,
    margin_ms: u64,
) -> String {
    format!(
        r#"
[sources.{name}]
mode = "pull"
endpoint = "{endpoint}"
sub_app_id = {sub_app_id}
secret_id = "{ID}"
secret_key = "{KEY}"
loops = {loops}
handle_lifetime_ms = {lifetime_ms}
confirm_margin_ms = {margin_ms}
max_backoff_ms = 500
"#,
        endpoint = emu.endpoint()
    )
}

/// An event with a unique FileId, so the test can tie ledger keys to sink output.
fn event(i: usize) -> (String, Value) {
    let file_id = format!("9{i:018}");
    let body = match i % 3 {
        0 => {
            json!({"EventType": "NewFileUpload", "FileUploadEvent": {"FileId": file_id, "MediaBasicInfo": {"Name": format!("v{i}"), "CreateTime": "2025-03-01T08:00:00Z"}}})
        }
        1 => {
            json!({"EventType": "PullComplete", "PullCompleteEvent": {"TaskId": format!("1500000001-Pull-{i}"), "Status": "FINISH", "FileId": file_id}})
        }
        _ => {
            json!({"EventType": "ProcedureStateChanged", "ProcedureStateChangeEvent": {"TaskId": format!("1500000001-procedurev2-{i}"), "Status": "FINISH", "FileId": file_id, "MediaProcessResultSet": []}})
        }
    };
    (file_id, body)
}

/// Enqueues `count` events; returns ledger key → FileId.
fn enqueue(
    emu: &RunningEmulator,
    sub_app_id: u64,
    range: std::ops::Range<usize>,
) -> HashMap<u64, String> {
    range
        .map(|i| {
            let (file_id, body) = event(i);
            (emu.emulator.enqueue(sub_app_id, &body), file_id)
        })
        .collect()
}

fn confirmed_keys(emu: &RunningEmulator) -> HashSet<u64> {
    emu.emulator
        .ledger()
        .into_iter()
        .filter(|e| e.confirmed_at.is_some())
        .map(|e| e.key)
        .collect()
}

/// Subjects (FileIds) of the complete lines of a JSON Lines file.
fn subjects_in(path: &std::path::Path) -> (HashSet<String>, usize, HashSet<String>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let (mut subjects, mut ids, mut lines) = (HashSet::new(), HashSet::new(), 0);
    for line in text.lines() {
        if let Ok(envelope) = Envelope::from_structured_json(line.as_bytes()) {
            lines += 1;
            ids.insert(envelope.id.to_string());
            subjects.extend(envelope.subject);
        }
    }
    (subjects, lines, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_two_sub_apps_all_confirmed_never_before_written() {
    let emu = emulator(Duration::from_secs(30)).await;
    let mut file_ids = enqueue(&emu, 1_500_000_001, 0..5000);
    file_ids.extend(enqueue(&emu, 1_500_000_002, 5000..10_000));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.jsonl");
    let toml = format!(
        "{}{}\n[sinks.file]\ntype = \"file\"\npath = {:?}\n",
        pull_source("app1", &emu, 1_500_000_001, 4, 30_000, 5_000),
        pull_source("app2", &emu, 1_500_000_002, 4, 30_000, 5_000),
        path.display().to_string()
    );
    let app = TestApp::start(settings(&toml), vec![]).await;

    // Snapshot the ledger, then read the file: every event confirmed by the snapshot must
    // already be in the file, because the sink wrote it before the bridge confirmed it.
    let started = Instant::now();
    let mut snapshots = 0;
    loop {
        let confirmed = confirmed_keys(&emu);
        let (subjects, _, _) = subjects_in(&path);
        let missing: Vec<&u64> = confirmed
            .iter()
            .filter(|k| !subjects.contains(&file_ids[*k]))
            .collect();
        assert!(
            missing.is_empty(),
            "confirmed before written: {} events, e.g. key {:?}",
            missing.len(),
            missing.first()
        );
        snapshots += 1;
        if confirmed.len() == 10_000 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(150),
            "only {} of 10000 confirmed",
            confirmed.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    let (subjects, lines, ids) = subjects_in(&path);
    assert_eq!(subjects.len(), 10_000, "every event is in the sink");
    assert_eq!(ids.len(), 10_000, "ids are distinct per event");
    let stats = emu.emulator.stats();
    println!(
        "10000 events in {elapsed:?} ({snapshots} order checks); lines {lines}, duplicates {}, redeliveries {}",
        lines - ids.len(),
        stats.redeliveries
    );
    let (_, metrics) = app.get("/metrics").await;
    let confirmed: f64 = ["app1", "app2"]
        .iter()
        .filter_map(|s| {
            metric(
                &metrics,
                &format!(r#"vodbridge_confirmed_total{{source="{s}"}}"#),
            )
        })
        .sum();
    assert!(confirmed >= 10_000.0, "{confirmed}");
    let backlog = metric(&metrics, r#"vodbridge_vod_backlog{source="app1"}"#);
    assert!(
        backlog.is_some_and(|b| b <= 5000.0),
        "the VOD backlog gauge is exported: {backlog:?}"
    );
    // 5,000 events queued per source at once: most answers came back full.
    let full = metric(&metrics, r#"vodbridge_pull_full_total{source="app1"}"#);
    assert!(
        full.is_some_and(|f| f >= 100.0),
        "full pulls are counted: {full:?}"
    );
    app.stop().await.expect("clean stop");
}

/// A bridge with one pull source and one scripted sink `main`.
async fn bridge(
    emu: &RunningEmulator,
    sink: &Arc<Scripted>,
    lifetime_ms: u64,
    margin_ms: u64,
) -> TestApp {
    let toml = format!(
        "{}\n[sinks.main]\ntype = \"stdout\"\n",
        pull_source("app", emu, 1, 2, lifetime_ms, margin_ms)
    );
    TestApp::start(settings(&toml), vec![Arc::clone(sink) as Arc<dyn Sink>]).await
}

/// Everything confirmed was acknowledged by the sink; returns the confirmed count.
fn assert_confirmed_were_acked(
    emu: &RunningEmulator,
    file_ids: &HashMap<u64, String>,
    sink: &Scripted,
) -> usize {
    let acked: HashSet<String> = sink
        .acked
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|m| m.envelope.subject.clone())
        .collect();
    let confirmed = confirmed_keys(emu);
    for key in &confirmed {
        assert!(
            acked.contains(&file_ids[key]),
            "event {key} confirmed without a sink ack"
        );
    }
    confirmed.len()
}

#[tokio::test]
async fn api_errors_lose_nothing_and_show_backoff() {
    let emu = emulator(Duration::from_secs(2)).await;
    let file_ids = enqueue(&emu, 1, 0..300);
    emu.emulator.set_faults(Faults {
        error_rate: 0.2,
        ..Faults::default()
    });
    let sink = Scripted::new("main", Behaviour::Ack);
    let app = bridge(&emu, &sink, 2000, 500).await;
    wait_for(
        "all confirmed despite 20 % errors",
        Duration::from_secs(60),
        || confirmed_keys(&emu).len() == 300,
    )
    .await;
    assert_eq!(assert_confirmed_were_acked(&emu, &file_ids, &sink), 300);
    assert!(emu.emulator.stats().injected_errors > 0);
    let (_, metrics) = app.get("/metrics").await;
    assert!(
        metric(
            &metrics,
            r#"vodbridge_pull_requests_total{result="transient",source="app"}"#
        )
        .unwrap_or(0.0)
            > 0.0
    );
    assert!(
        metric(
            &metrics,
            r#"vodbridge_pull_backoff_seconds_total{reason="transient",source="app"}"#
        )
        .unwrap_or(0.0)
            > 0.0
    );
    assert_eq!(app.get("/healthz").await.0, 200);
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn throttling_backs_off_and_loses_nothing() {
    let emu = emulator(Duration::from_secs(3)).await;
    let file_ids = enqueue(&emu, 1, 0..200);
    emu.emulator.set_faults(Faults {
        throttle_rps: 8,
        ..Faults::default()
    });
    let sink = Scripted::new("main", Behaviour::Ack);
    let app = bridge(&emu, &sink, 3000, 500).await;
    wait_for(
        "all confirmed under throttling",
        Duration::from_secs(60),
        || confirmed_keys(&emu).len() == 200,
    )
    .await;
    assert_eq!(assert_confirmed_were_acked(&emu, &file_ids, &sink), 200);
    assert!(emu.emulator.stats().throttled > 0, "the emulator throttled");
    let (_, metrics) = app.get("/metrics").await;
    let throttled = metric(
        &metrics,
        r#"vodbridge_vod_api_throttled_total{account="app",action="PullEvents"}"#,
    )
    .unwrap_or(0.0)
        + metric(
            &metrics,
            r#"vodbridge_vod_api_throttled_total{account="app",action="ConfirmEvents"}"#,
        )
        .unwrap_or(0.0);
    assert!(throttled > 0.0, "throttled answers are counted: {metrics}");
    let rate = metric(
        &metrics,
        r#"vodbridge_vod_api_rate{account="app",action="PullEvents"}"#,
    )
    .expect("the governor's rate is exported");
    assert!(
        rate < 100.0,
        "the governor slowed down from its ceiling: {rate}"
    );
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn api_latency_near_the_deadline_loses_nothing() {
    let emu = emulator(Duration::from_millis(2000)).await;
    let file_ids = enqueue(&emu, 1, 0..100);
    emu.emulator.set_faults(Faults {
        latency_ms: 600,
        ..Faults::default()
    });
    let sink = Scripted::new("main", Behaviour::Ack);
    let app = bridge(&emu, &sink, 2000, 700).await;
    wait_for(
        "all confirmed with slow API calls",
        Duration::from_secs(90),
        || confirmed_keys(&emu).len() == 100,
    )
    .await;
    assert_eq!(assert_confirmed_were_acked(&emu, &file_ids, &sink), 100);
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn failing_sink_confirms_nothing_until_it_recovers() {
    let emu = emulator(Duration::from_millis(800)).await;
    let file_ids = enqueue(&emu, 1, 0..50);
    let sink = Scripted::new("main", Behaviour::Fail);
    let app = bridge(&emu, &sink, 800, 200).await;
    wait_for("deliveries while failing", Duration::from_secs(10), || {
        emu.emulator.stats().redeliveries > 0
    })
    .await;
    assert!(
        confirmed_keys(&emu).is_empty(),
        "nothing confirmed while the sink fails"
    );
    sink.set(Behaviour::Ack);
    wait_for(
        "all confirmed after recovery",
        Duration::from_secs(30),
        || confirmed_keys(&emu).len() == 50,
    )
    .await;
    assert_eq!(assert_confirmed_were_acked(&emu, &file_ids, &sink), 50);
    let (_, metrics) = app.get("/metrics").await;
    assert!(
        metric(
            &metrics,
            r#"vodbridge_events_total{outcome="retryable",source="app"}"#
        )
        .unwrap_or(0.0)
            > 0.0
    );
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn sink_slower_than_the_deadline_confirms_nothing_and_keeps_running() {
    let emu = emulator(Duration::from_millis(800)).await;
    let file_ids = enqueue(&emu, 1, 0..20);
    let sink = Scripted::new("main", Behaviour::Hang);
    let app = bridge(&emu, &sink, 800, 300).await;
    wait_for(
        "a redelivery after the deadline",
        Duration::from_secs(10),
        || emu.emulator.stats().redeliveries >= 20,
    )
    .await;
    assert!(
        confirmed_keys(&emu).is_empty(),
        "a publish past its deadline is never confirmed"
    );
    let (_, metrics) = app.get("/metrics").await;
    assert!(
        metric(
            &metrics,
            r#"vodbridge_publish_failures_total{reason="timeout",sink="main"}"#
        )
        .unwrap_or(0.0)
            > 0.0
    );
    assert_eq!(app.get("/healthz").await.0, 200);
    sink.set(Behaviour::Ack);
    wait_for(
        "all confirmed once the sink is fast",
        Duration::from_secs(30),
        || confirmed_keys(&emu).len() == 20,
    )
    .await;
    assert_eq!(assert_confirmed_were_acked(&emu, &file_ids, &sink), 20);
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn sinks_down_pause_pulling() {
    let emu = emulator(Duration::from_secs(30)).await;
    enqueue(&emu, 1, 0..10);
    let sink = Scripted::new("main", Behaviour::Ack);
    sink.set_healthy(false);
    let app = bridge(&emu, &sink, 30_000, 5_000).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        emu.emulator.stats().deliveries,
        0,
        "no pulls while every sink is down"
    );
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    sink.set_healthy(true);
    wait_for("pulling resumes", Duration::from_secs(10), || {
        confirmed_keys(&emu).len() == 10
    })
    .await;
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn redelivered_event_is_confirmed_without_publishing_again() {
    let emu = emulator(Duration::from_secs(30)).await;
    let sink = Scripted::new("main", Behaviour::Ack);
    let app = bridge(&emu, &sink, 30_000, 5_000).await;
    let (_, body) = event(1);
    emu.emulator.enqueue(1, &body);
    wait_for("first copy confirmed", Duration::from_secs(10), || {
        confirmed_keys(&emu).len() == 1
    })
    .await;
    emu.emulator.enqueue(1, &body);
    wait_for("second copy confirmed", Duration::from_secs(10), || {
        confirmed_keys(&emu).len() == 2
    })
    .await;
    assert_eq!(
        sink.received_count(),
        1,
        "the redelivery was not published again"
    );
    let (_, metrics) = app.get("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            r#"vodbridge_duplicates_suppressed_total{source="app"}"#
        ),
        Some(1.0)
    );
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn events_of_one_video_are_published_in_order_never_at_once() {
    let emu = emulator(Duration::from_secs(30)).await;
    let sink = Scripted::new("main", Behaviour::AckAfter(Duration::from_millis(30)));
    for step in 0..6 {
        for video in 0..2 {
            emu.emulator.enqueue(
                1,
                &json!({"EventType": "ProcedureStateChanged", "ProcedureStateChangeEvent": {
                    "TaskId": format!("t-{video}"), "Status": "PROCESSING", "FileId": format!("video-{video}"), "Step": step }}),
            );
        }
    }
    let app = bridge(&emu, &sink, 30_000, 5_000).await;
    wait_for("all confirmed", Duration::from_secs(20), || {
        confirmed_keys(&emu).len() == 12
    })
    .await;
    assert!(
        !sink.overlapped.load(std::sync::atomic::Ordering::Relaxed),
        "two events of one video were published at once"
    );
    let acked = sink.acked.lock().expect("lock").clone();
    for video in ["video-0", "video-1"] {
        let steps: Vec<i64> = acked
            .iter()
            .filter(|m| m.envelope.subject.as_deref() == Some(video))
            .filter_map(|m| serde_json::from_slice::<Value>(&m.envelope.data).ok())
            .filter_map(|v| v["ProcedureStateChangeEvent"]["Step"].as_i64())
            .collect();
        assert_eq!(steps, [0, 1, 2, 3, 4, 5], "{video} in order");
    }
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn wrong_credentials_make_the_bridge_unready_not_busy() {
    let emu = emulator(Duration::from_secs(30)).await;
    enqueue(&emu, 1, 0..5);
    let toml = format!(
        "{}\n[sinks.main]\ntype = \"stdout\"\n",
        pull_source("app", &emu, 1, 2, 30_000, 5_000)
    )
    .replace(&format!("secret_key = \"{KEY}\""), "secret_key = \"wrong\"");
    let sink = Scripted::new("main", Behaviour::Ack);
    let app = TestApp::start(settings(&toml), vec![sink.clone() as Arc<dyn Sink>]).await;
    wait_for("an auth failure", Duration::from_secs(10), || {
        emu.emulator.stats().auth_failures > 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("credentials"), "{body}");
    let failures = emu.emulator.stats().auth_failures;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        emu.emulator.stats().auth_failures <= failures + 2,
        "auth failures back off instead of a hot loop"
    );
    assert_eq!(sink.received_count(), 0);
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn shutdown_finishes_in_flight_events_and_confirms_them() {
    let emu = emulator(Duration::from_secs(30)).await;
    enqueue(&emu, 1, 0..3);
    let gate = Arc::new(Notify::new());
    let sink = Scripted::gated("main", gate.clone());
    let mut app = bridge(&emu, &sink, 30_000, 5_000).await;
    wait_for("events in flight", Duration::from_secs(10), || {
        sink.received_count() == 3
    })
    .await;
    app.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..3 {
        gate.notify_one();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app.stop().await.expect("clean stop");
    assert_eq!(
        confirmed_keys(&emu).len(),
        3,
        "acknowledged during the drain, confirmed before exit"
    );
}

#[tokio::test]
async fn events_without_a_usable_event_type_are_dead_lettered_then_confirmed() {
    let invalid = json!({"WeirdEvent": {"FileId": "5285485487985271487"}});
    let dir = tempfile::tempdir().expect("tempdir");
    let dead_letters = dir.path().join("dead.jsonl");

    // With a dead letter: the invalid event goes there with reason `invalid` and is confirmed;
    // the regular one is published as usual.
    let emu = emulator(Duration::from_secs(1)).await;
    let sink = Scripted::new("main", Behaviour::Ack);
    let toml = format!(
        "{}\n[sinks.main]\ntype = \"stdout\"\n[sinks.dlq]\ntype = \"file\"\npath = {:?}\n\
         [[routes]]\nevent_types = [\"*\"]\nsinks = [{{ sink = \"main\" }}]\n\
         [dead_letter]\nsink = \"dlq\"\n",
        pull_source("app", &emu, 1, 2, 30_000, 5_000),
        dead_letters.display().to_string()
    );
    let app = TestApp::start(settings(&toml), vec![Arc::clone(&sink) as Arc<dyn Sink>]).await;
    let invalid_key = emu.emulator.enqueue(1, &invalid);
    emu.emulator.enqueue(1, &event(1).1);
    wait_for("both confirmed", Duration::from_secs(10), || {
        confirmed_keys(&emu).len() == 2
    })
    .await;
    assert!(confirmed_keys(&emu).contains(&invalid_key));
    assert_eq!(
        sink.received_count(),
        1,
        "only the regular event was routed"
    );
    let text = std::fs::read_to_string(&dead_letters).expect("dead letters");
    let line: Value = serde_json::from_str(text.lines().next().expect("a line")).expect("json");
    assert_eq!(line["type"], "com.tencentcloud.vod.Invalid");
    assert_eq!(line["deadletterreason"], "invalid");
    assert_eq!(line["subject"], "5285485487985271487");
    assert_eq!(line["data"], invalid, "the body without its EventHandle");

    // A key twice (routing would read one EventType, consumers another): invalid as well.
    let ambiguous = emu.emulator.enqueue_raw(
        1,
        "NewFileUpload",
        bytes::Bytes::from_static(
            br#"{"EventType":"NewFileUpload","FileUploadEvent":{"FileId":"77"},"EventType":"FileDeleted"}"#,
        ),
    );
    wait_for(
        "the ambiguous event confirmed",
        Duration::from_secs(10),
        || confirmed_keys(&emu).contains(&ambiguous),
    )
    .await;
    assert_eq!(sink.received_count(), 1, "nothing routed for it");
    let text = std::fs::read_to_string(&dead_letters).expect("dead letters");
    let line: Value =
        serde_json::from_str(text.lines().nth(1).expect("a second line")).expect("json");
    assert_eq!(line["type"], "com.tencentcloud.vod.Invalid");
    assert_eq!(line["deadletterreason"], "invalid");
    assert!(
        line["deadletterdetail"]
            .as_str()
            .is_some_and(|d| d.contains("duplicate object key \"EventType\"")),
        "{line}"
    );
    let (_, metrics) = app.get("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            r#"vodbridge_dead_lettered_total{reason="invalid"}"#
        ),
        Some(2.0)
    );
    app.stop().await.expect("clean stop");

    // Without one: never confirmed, counted on every hand-out, the rest flows.
    let emu = emulator(Duration::from_millis(300)).await;
    let sink = Scripted::new("main", Behaviour::Ack);
    let app = bridge(&emu, &sink, 30_000, 5_000).await;
    let invalid_key = emu.emulator.enqueue(1, &invalid);
    emu.emulator.enqueue(1, &event(2).1);
    wait_for("handed out three times", Duration::from_secs(10), || {
        emu.emulator
            .ledger()
            .iter()
            .any(|e| e.key == invalid_key && e.delivered >= 3)
    })
    .await;
    assert_eq!(confirmed_keys(&emu).len(), 1, "only the regular event");
    assert!(!confirmed_keys(&emu).contains(&invalid_key));
    let (_, metrics) = app.get("/metrics").await;
    assert!(
        metric(
            &metrics,
            r#"vodbridge_events_total{outcome="unparseable",source="app"}"#
        )
        .is_some_and(|n| n >= 2.0),
        "counted on each hand-out"
    );
    app.stop().await.expect("clean stop");
}

/// Three bridge processes on one VOD account and queue at VOD's limits (100 PullEvents and 100
/// ConfirmEvents calls/s per SecretId, 20 ms per call): the governors share the budget without
/// seeing each other, every event is confirmed and stored, and none is handed out again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_the_account_budget_without_redeliveries() {
    let mut config = vod_emulator::EmulatorConfig::new(ID, KEY);
    config.limits = vod_emulator::Limits::VOD;
    config.long_poll = Duration::from_secs(5);
    let emu = vod_emulator::Emulator::new(config)
        .serve(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("emulator serves");
    emu.emulator.set_faults(Faults {
        latency_ms: 20,
        ..Faults::default()
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let replicas: Vec<vodbridge_testkit::BridgeProcess> = (0..3)
        .map(|i| {
            let port = vodbridge_testkit::free_port();
            let toml = format!(
                r#"
[server]
listen = "127.0.0.1:{port}"
[telemetry]
log_level = "warn"
{source}
[sinks.file]
type = "file"
path = {path:?}
fsync = "never"
"#,
                source = pull_source("app", &emu, 7, 4, 30_000, 5_000),
                path = dir
                    .path()
                    .join(format!("events-{i}.jsonl"))
                    .display()
                    .to_string()
            );
            vodbridge_testkit::BridgeProcess::start(env!("CARGO_BIN_EXE_vodbridge"), &toml, port)
        })
        .collect();
    let file_ids = enqueue(&emu, 7, 0..5_000);
    wait_for(
        "5,000 events confirmed by three replicas",
        Duration::from_secs(60),
        || emu.emulator.stats().confirmed == 5_000,
    )
    .await;
    let stats = emu.emulator.stats();
    assert_eq!(stats.redeliveries, 0, "nothing handed out again: {stats:?}");
    assert_eq!(stats.confirm_rejections, 0, "no handle expired: {stats:?}");

    let mut stored = HashSet::new();
    let mut per_replica = Vec::new();
    for i in 0..3 {
        let (subjects, _, _) = subjects_in(&dir.path().join(format!("events-{i}.jsonl")));
        per_replica.push(subjects.len());
        stored.extend(subjects);
    }
    for (key, file_id) in &file_ids {
        assert!(
            stored.contains(file_id),
            "event {key} confirmed but in no file"
        );
    }
    assert!(
        per_replica.iter().all(|&n| n > 0),
        "every replica took part: {per_replica:?}"
    );
    let mut metrics = String::new();
    for replica in &replicas {
        metrics.push_str(
            &reqwest::get(format!("{}/metrics", replica.url()))
                .await
                .expect("metrics")
                .text()
                .await
                .unwrap_or_default(),
        );
    }
    assert!(
        metrics.contains("vodbridge_confirm_batch_size_count"),
        "{metrics}"
    );
    drop(replicas);
}

/// With VOD's queue empty the loops long-poll: four loops spend about one call each per long
/// poll, nowhere near the account's 100 calls/s, and nothing is throttled.
#[tokio::test]
async fn an_empty_queue_spends_almost_no_budget() {
    let mut config = vod_emulator::EmulatorConfig::new(ID, KEY);
    config.long_poll = Duration::from_secs(1);
    config.limits = vod_emulator::Limits::VOD;
    let emu = vod_emulator::Emulator::new(config)
        .serve(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("emulator serves");
    let sink = Scripted::new("main", Behaviour::Ack);
    let toml = format!(
        "{}\n[sinks.main]\ntype = \"stdout\"\n",
        pull_source("app", &emu, 1, 4, 30_000, 5_000)
    );
    let app = TestApp::start(settings(&toml), vec![Arc::clone(&sink) as Arc<dyn Sink>]).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let stats = emu.emulator.stats();
    assert!(
        stats.pulls <= 4 * 5,
        "4 loops × (3.5 s / 1 s long poll + 1): {} pulls",
        stats.pulls
    );
    assert_eq!(stats.throttled, 0);
    // An event that arrives is handed out at once, not after a poll interval.
    let started = Instant::now();
    enqueue(&emu, 1, 0..1);
    wait_for("the event confirmed", Duration::from_secs(5), || {
        emu.emulator.stats().confirmed == 1
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    app.stop().await.expect("clean stop");
}
