//! VOD faults: 5xx answers, timeouts, throttling and expired handles in turn on one pull
//! stream, and a `ConfirmEvents` that fails after the publish succeeded. The sink is a file
//! (every publish is one line), so a second publish of an event shows as a duplicate line.

use std::time::{Duration, Instant};

use serde_json::json;
use vod_emulator::{Faults, Limits};

use crate::support::{
    acknowledged, bridge, emulator, enqueue, file_held, metric, pull_source, report, route_to,
    wait_for,
};

const LIFETIME_MS: u64 = 4_000;

fn file_sink(path: &std::path::Path) -> String {
    format!(
        "[sinks.file]\ntype = \"file\"\npath = {:?}\nfsync = \"never\"\n",
        path.display().to_string()
    )
}

/// One stream through four faults, each for a few seconds: 30 % `InternalError`; 11 s of
/// latency on every call (pulls time out on the client's 10 s, confirms on its 5 s);
/// `PullEvents` and `ConfirmEvents` limited to 5 calls/s (`RequestLimitExceeded`); 4.5 s of
/// latency on confirms only (they reach VOD after the 4 s handle lifetime and are refused as
/// expired, so the events come back). Every event ends confirmed and in the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_timeouts_throttling_and_expired_handles_lose_nothing() {
    const EVENTS: usize = 3_000;
    const TIMEOUTS: &str = r#"vodbridge_pull_requests_total{result="transient",source="app"}"#;
    let emu = emulator(Duration::from_millis(LIFETIME_MS)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.jsonl");
    let body = format!(
        "{}{}{}",
        pull_source(&emu, LIFETIME_MS, 4),
        file_sink(&path),
        route_to(&[("file", "")])
    );
    let process = bridge(&body, 10);
    // About 160 events/s, so every phase has events to work on.
    let slow = Limits {
        pull_events: 10,
        ..Limits::VOD
    };
    emu.emulator.set_limits(slow);
    let keys = enqueue(&emu, "74", 0..EVENTS);
    let started = Instant::now();
    let phases: [(&str, Faults, Limits, u64); 4] = [
        (
            "errors",
            Faults {
                error_rate: 0.3,
                ..Faults::default()
            },
            slow,
            5,
        ),
        (
            "timeouts",
            Faults {
                latency_ms: 11_000,
                ..Faults::default()
            },
            slow,
            12,
        ),
        (
            "throttling",
            Faults::default(),
            Limits {
                pull_events: 5,
                confirm_events: 5,
                describe_events_state: 5,
                ..Limits::VOD
            },
            5,
        ),
        (
            "expired_handles",
            Faults {
                confirm_latency_ms: 4_500,
                ..Faults::default()
            },
            slow,
            8,
        ),
    ];
    let mut per_phase = serde_json::Map::new();
    for (name, faults, limits, secs) in phases {
        let faults_of_phase = faults.clone();
        let before = emu.emulator.stats();
        let timeouts_before = metric(&process, TIMEOUTS).await.unwrap_or(0.0);
        emu.emulator.set_faults(faults_of_phase);
        emu.emulator.set_limits(limits);
        tokio::time::sleep(Duration::from_secs(secs)).await;
        // Calls under way when the phase ends finish under its faults: let them, so the next
        // phase starts clean.
        let settle = faults.latency_ms.max(faults.confirm_latency_ms) + 1_000;
        emu.emulator.set_faults(Faults::default());
        emu.emulator.set_limits(slow);
        tokio::time::sleep(Duration::from_millis(settle)).await;
        let after = emu.emulator.stats();
        let timeouts = metric(&process, TIMEOUTS).await.unwrap_or(0.0) - timeouts_before;
        per_phase.insert(
            name.to_owned(),
            json!({
                "seconds": secs,
                "confirmed": after.confirmed - before.confirmed,
                "injected_errors": after.injected_errors - before.injected_errors,
                // Client timeouts and InternalError answers (both "transient" to the bridge).
                "transient_pulls": timeouts,
                "throttled": after.throttled - before.throttled,
                "confirm_rejections": after.confirm_rejections - before.confirm_rejections,
                "redeliveries": after.redeliveries - before.redeliveries,
            }),
        );
    }
    emu.emulator.set_limits(Limits::VOD);
    wait_for("every event confirmed", Duration::from_secs(120), || {
        acknowledged(&emu, &keys).len() == EVENTS
    })
    .await;
    let stats = emu.emulator.stats();
    let held = file_held(&path);
    let confirmed = acknowledged(&emu, &keys);
    let missing = held.missing(&confirmed);
    let suppressed = metric(
        &process,
        r#"vodbridge_duplicates_suppressed_total{source="app"}"#,
    )
    .await
    .unwrap_or(0.0);
    report(
        "vod-faults",
        json!({
            "sent": EVENTS, "confirmed": confirmed.len(), "found": held.unique().len(),
            "published": held.0.len(), "duplicates": held.duplicates(), "lost": missing.len(),
            "redeliveries": stats.redeliveries, "confirm_rejections": stats.confirm_rejections,
            "injected_errors": stats.injected_errors, "throttled": stats.throttled,
            "duplicates_suppressed": suppressed, "phases": per_phase,
            "seconds": started.elapsed().as_secs_f64().round(),
        }),
    );
    let phase = |name: &str, key: &str| per_phase[name][key].as_f64().unwrap_or(0.0);
    assert!(phase("errors", "injected_errors") > 0.0, "{per_phase:?}");
    assert!(phase("timeouts", "transient_pulls") > 0.0, "{per_phase:?}");
    assert!(phase("throttling", "throttled") > 0.0, "{per_phase:?}");
    assert!(
        phase("expired_handles", "confirm_rejections") > 0.0,
        "{per_phase:?}"
    );
    assert!(
        missing.is_empty(),
        "confirmed, not in the file: {missing:?}"
    );
    assert_eq!(confirmed.len(), EVENTS);
}

/// `ConfirmEvents` fails (InternalError, not processed) for every call after the events were
/// published: the handles expire, VOD hands the events out again, and the bridge confirms them
/// from its record of acknowledged ids without publishing them a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirm_failing_after_the_publish_is_not_published_again() {
    const EVENTS: usize = 200;
    let emu = emulator(Duration::from_millis(LIFETIME_MS)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.jsonl");
    let body = format!(
        "{}{}{}",
        pull_source(&emu, LIFETIME_MS, 4),
        file_sink(&path),
        route_to(&[("file", "")])
    );
    let process = bridge(&body, 10);
    emu.emulator.set_faults(Faults {
        confirm_error_rate: 1.0,
        ..Faults::default()
    });
    let keys = enqueue(&emu, "75", 0..EVENTS);
    wait_for(
        "every event published once",
        Duration::from_secs(30),
        || file_held(&path).0.len() == EVENTS,
    )
    .await;
    wait_for(
        "VOD handing them out again",
        Duration::from_secs(30),
        || emu.emulator.stats().redeliveries >= EVENTS as u64,
    )
    .await;
    let confirmed_while_failing = acknowledged(&emu, &keys).len();
    emu.emulator.set_faults(Faults::default());
    wait_for("every event confirmed", Duration::from_secs(60), || {
        acknowledged(&emu, &keys).len() == EVENTS
    })
    .await;
    let held = file_held(&path);
    let suppressed = metric(
        &process,
        r#"vodbridge_duplicates_suppressed_total{source="app"}"#,
    )
    .await
    .unwrap_or(0.0);
    let stats = emu.emulator.stats();
    report(
        "confirm-fails-after-publish",
        json!({
            "sent": EVENTS, "confirmed": EVENTS, "published": held.0.len(),
            "duplicates": held.duplicates(), "redeliveries": stats.redeliveries,
            "injected_confirm_errors": stats.injected_errors,
            "duplicates_suppressed": suppressed, "lost": held.missing(keys.values()).len(),
        }),
    );
    assert_eq!(confirmed_while_failing, 0, "no confirm went through");
    assert_eq!(
        held.0.len(),
        EVENTS,
        "a redelivered event is confirmed, not published again"
    );
    assert!(
        suppressed >= EVENTS as f64,
        "each redelivery was recognised: {suppressed}"
    );
}
