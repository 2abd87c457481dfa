//! A pull source with `sub_app_ids` against the VOD emulator: sub-applications listed with
//! `DescribeSubAppIds`, pulled each under its own `SubAppId`, added and removed while the bridge
//! runs, labelled up to a limit, each one's mode checked on `/readyz`; and the configuration's
//! refusals.

use std::time::{Duration, Instant};

use serde_json::json;
use vod_emulator::{sub_app, RunningEmulator, SubAppStatus};
use vodbridge_tencent::event_config::{Mode, ModifyEventConfig};

use crate::helpers::{metric, settings, wait_for, Behaviour, Scripted, TestApp};

const ID: &str = "AKIDSUBAPPS";
const KEY: &str = "sub-apps-secret";

fn source(emu: &RunningEmulator, extra: &str) -> String {
    format!(
        r#"
[sources.tenants]
mode = "pull"
endpoint = "{endpoint}"
secret_id = "{ID}"
secret_key = "{KEY}"
handle_lifetime_ms = 10000
confirm_margin_ms = 2000
max_backoff_ms = 500
sub_app_refresh_secs = 10
{extra}
"#,
        endpoint = emu.endpoint()
    )
}

/// The bridge on the source with `extra` keys, publishing to a scripted sink that acknowledges.
async fn start(emu: &RunningEmulator, extra: &str) -> (TestApp, std::sync::Arc<Scripted>) {
    let sink = Scripted::new("s", Behaviour::Ack);
    let toml = format!("{}\n[sinks.s]\ntype = \"stdout\"\n", source(emu, extra));
    let app = TestApp::start(settings(&toml), vec![sink.clone()]).await;
    (app, sink)
}

/// Queues `count` uploads in each of `sub_apps`.
fn enqueue(emu: &RunningEmulator, sub_apps: &[u64], count: usize) {
    for &id in sub_apps {
        for i in 0..count {
            emu.emulator.enqueue(id, &upload(id, i));
        }
    }
}

fn upload(sub_app_id: u64, i: usize) -> serde_json::Value {
    json!({"EventType": "NewFileUpload", "FileUploadEvent": {"FileId": format!("{sub_app_id}-{i}"), "MediaBasicInfo": {"Name": format!("v{i}")}}})
}

/// Events the sink acknowledged, by sub-application id (from the envelope).
fn acked_by_sub_app(sink: &Scripted) -> std::collections::BTreeMap<u64, Vec<String>> {
    let mut out = std::collections::BTreeMap::<u64, Vec<String>>::new();
    for message in sink.acked.lock().expect("lock").iter() {
        let envelope = &message.envelope;
        out.entry(envelope.sub_app_id.unwrap_or(0))
            .or_default()
            .push(envelope.source.clone());
    }
    out
}

fn pulls_of(emu: &RunningEmulator, sub_app_id: u64) -> u64 {
    emu.emulator
        .stats()
        .pulls_by_sub_app
        .get(&sub_app_id)
        .copied()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_sub_apps_are_listed_pulled_refreshed_labelled_and_checked() {
    let emu = crate::helpers::emulator(ID, KEY, Duration::from_secs(10)).await;
    for (id, name) in [
        (101, "news"),
        (102, "sports"),
        (103, "kids"),
        (105, "internal"),
    ] {
        emu.emulator.add_sub_app(sub_app(id, name));
    }
    emu.emulator.add_sub_app(sub_app(104, "archived"));
    emu.emulator.set_sub_app_status(104, SubAppStatus::Off);
    // 102's callbacks were switched to PUSH by someone: the bridge pulls it and says so.
    emu.emulator.modify_event_config(
        102,
        &ModifyEventConfig {
            mode: Some(Mode::Push),
            ..ModifyEventConfig::default()
        },
    );
    enqueue(&emu, &[101, 102, 103, 104, 105], 20);
    let (app, sink) = start(
        &emu,
        "sub_app_ids = \"all\"\nexclude_sub_app_ids = [105]\nsub_app_metric_labels = 2",
    )
    .await;
    wait_for(
        "the three On sub-applications drained",
        Duration::from_secs(30),
        || sink.acked_count() >= 60,
    )
    .await;
    let acked = acked_by_sub_app(&sink);
    assert_eq!(
        acked.keys().copied().collect::<Vec<_>>(),
        vec![101, 102, 103],
        "Off (104) and excluded (105) sub-applications are not pulled"
    );
    for (id, sources) in &acked {
        assert_eq!(sources.len(), 20, "sub-application {id}: every event once");
        assert!(
            sources
                .iter()
                .all(|s| *s == format!("/tencentcloud/vod/{id}")),
            "each event keeps its sub-application's source: {sources:?}"
        );
    }
    assert_eq!(pulls_of(&emu, 104) + pulls_of(&emu, 105), 0);

    // Per-sub-application metrics: two labels, then "other"; the states counted.
    let metrics = wait_metrics(&app, |m| {
        metric(
            m,
            r#"vodbridge_vod_config_mismatch{source="tenants",what="mode"}"#,
        ) == Some(1.0)
    })
    .await;
    for (label, pulled) in [("101", 20.0), ("102", 20.0), ("other", 20.0)] {
        assert_eq!(
            metric(
                &metrics,
                &format!(r#"vodbridge_sub_app_pulled_total{{source="tenants",sub_app="{label}"}}"#)
            ),
            Some(pulled),
            "{label}"
        );
        assert_eq!(
            metric(
                &metrics,
                &format!(
                    r#"vodbridge_sub_app_confirmed_total{{source="tenants",sub_app="{label}"}}"#
                )
            ),
            Some(pulled),
            "{label}"
        );
    }
    assert!(
        !metrics.contains(r#"sub_app="103""#),
        "103 is beyond the label limit"
    );
    for (state, count) in [("pulled", 3.0), ("excluded", 1.0), ("not_on", 1.0)] {
        assert_eq!(
            metric(
                &metrics,
                &format!(r#"vodbridge_sub_apps{{source="tenants",state="{state}"}}"#)
            ),
            Some(count),
            "{state}"
        );
    }
    // Ready (the other sub-applications flow), with a line naming the one in PUSH mode.
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("sub-application(s) 102 not in PULL mode"),
        "{body}"
    );

    // A sub-application created while the bridge runs is drained within one refresh period.
    emu.emulator.add_sub_app(sub_app(106, "new"));
    for i in 0..5 {
        emu.emulator.enqueue(106, &upload(106, i));
    }
    let added = Instant::now();
    wait_for(
        "the new sub-application drained",
        Duration::from_secs(20),
        || acked_by_sub_app(&sink).get(&106).map_or(0, Vec::len) == 5,
    )
    .await;
    let took = added.elapsed();
    assert!(
        took <= Duration::from_secs(11),
        "drained {took:?} after it was created"
    );

    // One removed and one turned Off stop being polled after the next listing.
    assert!(emu.emulator.remove_sub_app(101));
    emu.emulator.set_sub_app_status(103, SubAppStatus::Off);
    tokio::time::sleep(Duration::from_secs(11)).await;
    let (before_101, before_103) = (pulls_of(&emu, 101), pulls_of(&emu, 103));
    let before_102 = pulls_of(&emu, 102);
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(pulls_of(&emu, 101), before_101, "removed: no more pulls");
    assert_eq!(pulls_of(&emu, 103), before_103, "Off: no more pulls");
    assert!(
        pulls_of(&emu, 102) > before_102,
        "the others are still pulled"
    );
    emu.emulator.enqueue(101, &upload(101, 99));
    emu.emulator.enqueue(102, &upload(102, 99));
    wait_for("102 still drained", Duration::from_secs(10), || {
        acked_by_sub_app(&sink).get(&102).map_or(0, Vec::len) == 21
    })
    .await;
    assert_eq!(acked_by_sub_app(&sink).get(&101).map_or(0, Vec::len), 20);
    let (_, metrics) = app.get("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            r#"vodbridge_sub_apps{source="tenants",state="pulled"}"#
        ),
        Some(2.0),
        "102 and 106"
    );
    let stats = emu.emulator.stats();
    assert_eq!(stats.redeliveries, 0);
    app.stop().await.expect("stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_set_needs_no_listing_and_keeps_a_source_template() {
    let emu = crate::helpers::emulator(ID, KEY, Duration::from_secs(10)).await;
    // Not registered: a configured list does not ask DescribeSubAppIds.
    enqueue(&emu, &[201, 202, 203], 3);
    let (app, sink) = start(&emu, "sub_app_ids = [201, 202, 203]\nexclude_sub_app_ids = [203]\ncloudevents_source = \"/acme/vod/{sub_app_id}\"\ngovernor_scope = \"sub_app\"").await;
    wait_for("201 and 202 drained", Duration::from_secs(20), || {
        sink.acked_count() >= 6
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let acked = acked_by_sub_app(&sink);
    assert_eq!(acked.keys().copied().collect::<Vec<_>>(), vec![201, 202]);
    assert!(
        acked[&201].iter().all(|s| s == "/acme/vod/201"),
        "{acked:?}"
    );
    assert_eq!(pulls_of(&emu, 203), 0, "excluded");
    let (_, metrics) = app.get("/metrics").await;
    assert!(
        !metrics.contains("vodbridge_sub_app_listings_total{"),
        "a list is not listed with DescribeSubAppIds"
    );
    assert_eq!(
        metric(
            &metrics,
            r#"vodbridge_sub_apps{source="tenants",state="excluded"}"#
        ),
        Some(1.0)
    );
    app.stop().await.expect("stops");
}

/// `/metrics` once `ready` holds for it (the checks run once a second).
async fn wait_metrics(app: &TestApp, ready: impl Fn(&str) -> bool) -> String {
    let started = Instant::now();
    loop {
        let (_, metrics) = app.get("/metrics").await;
        if ready(&metrics) {
            return metrics;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "metrics never matched:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn sub_app_settings_are_checked() {
    let base = r#"
[sources.tenants]
mode = "pull"
endpoint = "http://127.0.0.1:1"
secret_id = "AKID"
secret_key = "k"
"#;
    for (extra, expected) in [
        (
            "sub_app_id = 1\nsub_app_ids = \"all\"",
            "sub_app_id and sub_app_ids cannot both be set",
        ),
        ("sub_app_ids = \"some\"", "must be \"all\" or a list"),
        ("sub_app_ids = []", "empty list"),
        ("exclude_sub_app_ids = [1]", "needs sub_app_ids"),
        (
            "sub_app_ids = [1]\nexclude_sub_app_ids = [1]",
            "leaves none of sub_app_ids",
        ),
        (
            "sub_app_ids = \"all\"\nsub_app_refresh_secs = 1",
            "sub_app_refresh_secs must be 10 to 86400",
        ),
        (
            "sub_app_ids = \"all\"\nsub_app_metric_labels = 0",
            "sub_app_metric_labels must be 1 to 10000",
        ),
        ("governor_scope = \"galaxy\"", "`account` or `sub_app`"),
    ] {
        let toml = format!("{base}{extra}\n");
        let error = vodbridge::config::Config::from_toml(&toml)
            .and_then(vodbridge::config::Settings::from_config)
            .expect_err(extra);
        assert!(error.to_string().contains(expected), "{extra}: {error}");
    }
    let ok = format!("{base}sub_app_ids = \"all\"\nexclude_sub_app_ids = [7]\n");
    let settings = vodbridge::config::Config::from_toml(&ok)
        .and_then(vodbridge::config::Settings::from_config)
        .expect("valid");
    let described = settings.describe();
    assert!(
        described.contains("sub_app_ids: all sub-applications of the account whose status is On (DescribeSubAppIds every 60s), except 7; budget shared by all of them"),
        "{described}"
    );
}

/// Until a first `DescribeSubAppIds` listing succeeds the source pulls nothing, and `/readyz`
/// says why; the listing is tried again (backing off) and the bridge turns ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_is_not_ready_until_the_sub_apps_are_listed() {
    let emu = crate::helpers::emulator(ID, KEY, Duration::from_secs(10)).await;
    emu.emulator.add_sub_app(sub_app(301, "one"));
    emu.emulator.set_faults(vod_emulator::Faults {
        error_rate: 1.0,
        ..vod_emulator::Faults::default()
    });
    let (app, sink) = start(&emu, "sub_app_ids = \"all\"").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains(
            "source tenants: cannot list the account's sub-applications (DescribeSubAppIds)"
        ),
        "{body}"
    );
    emu.emulator.set_faults(vod_emulator::Faults::default());
    emu.emulator.enqueue(301, &upload(301, 0));
    app.wait_ready(Duration::from_secs(15)).await;
    wait_for(
        "the sub-application pulled",
        Duration::from_secs(10),
        || sink.acked_count() == 1,
    )
    .await;
    let (_, metrics) = app.get("/metrics").await;
    assert!(
        metric(
            &metrics,
            r#"vodbridge_sub_app_listings_total{result="failed",source="tenants"}"#
        )
        .is_some_and(|failed| failed >= 1.0),
        "{metrics}"
    );
    app.stop().await.expect("stops");
}
