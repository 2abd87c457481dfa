//! Best-effort targets through the real HTTP path: a callback is answered as soon as the
//! required sink acknowledged, whatever the best-effort sink does; the bridge stays ready and
//! `/readyz` names the sink; its queue reaches it once it answers; the age at acknowledgement is
//! per sink, and events without a usable VOD time are counted apart.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use vodbridge_core::Sink;

use crate::helpers::{metric, settings, wait_for, Behaviour, Scripted, TestApp};

/// `main` required, `mirror` best effort, one push source `default`.
const CONFIG: &str = r#"
[server]
publish_timeout_ms = 3000

[sinks.main]
type = "stdout"

[sinks.mirror]
type = "stdout"

[[routes]]
event_types = ["*"]
sinks = [{ sink = "main" }, { sink = "mirror", required = false }]

[delivery.best_effort]
publish_timeout_ms = 300
breaker_failures = 3
breaker_open_secs = 1
breaker_open_max_secs = 1
"#;

/// A NewFileUpload callback with its own FileId and `created` as its VOD time (none: no time).
fn callback(n: usize, created: Option<&str>) -> String {
    let basic = created.map_or_else(String::new, |t| {
        format!(r#","MediaBasicInfo":{{"Name":"v","CreateTime":"{t}"}}"#)
    });
    format!(r#"{{"EventType":"NewFileUpload","FileUploadEvent":{{"FileId":"be{n:08}"{basic}}}}}"#)
}

#[tokio::test]
async fn a_best_effort_sink_that_hangs_never_holds_the_answer_and_gets_its_events_after() {
    let main = Scripted::new("main", Behaviour::Ack);
    let mirror = Scripted::new("mirror", Behaviour::Hang);
    mirror.set_healthy(false);
    let app = TestApp::start(
        settings(CONFIG),
        vec![
            main.clone() as Arc<dyn Sink>,
            mirror.clone() as Arc<dyn Sink>,
        ],
    )
    .await;
    // A best-effort sink down does not make the bridge unready; /readyz names it.
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with("ready\n") && body.contains("best-effort sink mirror down"),
        "{body}"
    );

    // 30 callbacks: 10 with a past VOD time, 10 with one ahead of the clock, 10 with none.
    let mut slowest = Duration::ZERO;
    for n in 0..30 {
        let created = match n % 3 {
            0 => Some("2025-03-01T08:00:00Z"),
            1 => Some("2099-01-01T00:00:00Z"),
            _ => None,
        };
        let sent = Instant::now();
        let response = app.post("/callback/default", callback(n, created)).await;
        slowest = slowest.max(sent.elapsed());
        assert_eq!(response.status(), 200);
    }
    assert_eq!(main.acked_count(), 30);
    // A required sink that hung would hold each answer for the 3 s publish deadline.
    assert!(
        slowest < Duration::from_millis(1500),
        "the slowest answer took {slowest:?}: the best-effort sink held it"
    );
    assert_eq!(mirror.acked_count(), 0);

    let (_, metrics) = app.get("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            r#"vodbridge_best_effort_queue_depth{sink="mirror"}"#
        ),
        Some(30.0)
    );
    assert_eq!(
        metric(
            &metrics,
            r#"vodbridge_sink_up{kind="scripted",required="false",sink="mirror"}"#
        ),
        Some(0.0)
    );

    // Later, the sink answers: every queued event reaches it, the queue empties.
    tokio::time::sleep(Duration::from_millis(700)).await;
    mirror.set(Behaviour::Ack);
    mirror.set_healthy(true);
    wait_for("the mirror to hold all 30", Duration::from_secs(15), || {
        let acked = mirror.acked.lock().expect("lock");
        acked
            .iter()
            .map(|m| m.envelope.id.to_string())
            .collect::<std::collections::HashSet<_>>()
            .len()
            == 30
    })
    .await;
    let (_, body) = app.get("/readyz").await;
    assert_eq!(body.trim(), "ready", "nothing to say once it answers");

    let (_, metrics) = app.get("/metrics").await;
    let series = |name: &str, sink: &str, delivery: &str| {
        metric(
            &metrics,
            &format!(
                "vodbridge_event_age_at_ack_seconds_{name}{{delivery=\"{delivery}\",ingress=\"push\",sink=\"{sink}\",source=\"default\"}}"
            ),
        )
        .unwrap_or(0.0)
    };
    // Only the 10 events with a past time are in each sink's histogram.
    assert_eq!(series("count", "main", "required"), 10.0);
    assert_eq!(series("count", "mirror", "best_effort"), 10.0);
    let mean = |sink, delivery| series("sum", sink, delivery) / series("count", sink, delivery);
    assert!(
        mean("mirror", "best_effort") > mean("main", "required") + 0.5,
        "the mirror acknowledged later, on its own clock: {} against {}",
        mean("mirror", "best_effort"),
        mean("main", "required")
    );
    for sink in ["main", "mirror"] {
        for reason in ["missing", "future"] {
            assert_eq!(
                metric(
                    &metrics,
                    &format!(
                        "vodbridge_event_age_unknown_total{{reason=\"{reason}\",sink=\"{sink}\",source=\"default\"}}"
                    )
                ),
                Some(10.0),
                "{sink} {reason}"
            );
        }
    }
    assert_eq!(
        metric(
            &metrics,
            r#"vodbridge_best_effort_queued_total{sink="mirror"}"#
        ),
        Some(30.0)
    );
    assert!(
        metric(
            &metrics,
            r#"vodbridge_publish_failures_total{reason="timeout",sink="mirror"}"#
        )
        .is_some_and(|n| n >= 3.0),
        "the hung publishes count as timeouts"
    );
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_full_queue_goes_to_the_dead_letter_when_there_is_one() {
    let config = format!(
        "{CONFIG}\nqueue_capacity = 2\n[sinks.dlq]\ntype = \"stdout\"\n[dead_letter]\nsink = \"dlq\"\n"
    );
    let main = Scripted::new("main", Behaviour::Ack);
    let mirror = Scripted::new("mirror", Behaviour::Hang);
    let dlq = Scripted::new("dlq", Behaviour::Ack);
    let app = TestApp::start(
        settings(&config),
        vec![
            main.clone() as Arc<dyn Sink>,
            mirror.clone() as Arc<dyn Sink>,
            dlq.clone() as Arc<dyn Sink>,
        ],
    )
    .await;
    for n in 0..5 {
        let response = app.post("/callback/default", callback(n, None)).await;
        assert_eq!(response.status(), 200);
    }
    assert_eq!(main.acked_count(), 5);
    assert_eq!(dlq.acked_count(), 3, "the 3 that found the queue full");
    let reasons: Vec<_> = dlq
        .acked
        .lock()
        .expect("lock")
        .iter()
        .map(|m| {
            m.dead_letter
                .as_ref()
                .map(|d| (d.reason.as_str(), d.failed_sink.clone()))
        })
        .collect();
    assert!(reasons.iter().all(|r| r
        .as_ref()
        .is_some_and(|(reason, sink)| *reason == "queue_full" && sink == "mirror")));
    let (_, metrics) = app.get("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            r#"vodbridge_dead_lettered_total{reason="queue_full"}"#
        ),
        Some(3.0)
    );
    app.stop().await.expect("clean stop");
}

#[test]
fn best_effort_settings_are_checked() {
    use vodbridge::config::{Config, Settings};
    let refused = |extra: &str| {
        let config = Config::from_toml(&format!("{CONFIG}\n{extra}")).expect("parses");
        Settings::from_config(config)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    };
    assert!(
        refused("durable = true").contains("delivery.best_effort.durable needs the spool"),
        "{}",
        refused("durable = true")
    );
    assert!(refused("queue_capacity = 0").contains("queue_capacity must be 1 to 10000000"));
    assert!(refused("concurrency = 5000").contains("concurrency must be 1 to 1024"));
    assert!(
        refused("[dead_letter]\nsink = \"mirror\"\nrequired = false")
            .contains("dead_letter: `required = false` is not allowed")
    );
    let ok = Config::from_toml(&format!(
        "{CONFIG}\ndurable = true\n[spool]\npath = \"/tmp/vodbridge-best-effort-spool\"\n"
    ))
    .expect("parses");
    let settings = Settings::from_config(ok).expect("valid with a spool");
    assert!(settings.best_effort_durable);
    assert_eq!(settings.best_effort.breaker_failures, 3);
}
