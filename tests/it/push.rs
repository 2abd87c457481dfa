//! Push ingress: every HTTP answer of design.md §3, produced by sending the input that causes it,
//! and the promise that 200 comes only after every routed sink acknowledged.

use std::{sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::Notify,
};
use vodbridge::EVENT_ID_HEADER;
use vodbridge_core::{Envelope, Sink};
use vodbridge_tencent::SignKey;

use crate::helpers::{fixture, metric, settings, wait_for, Behaviour, Scripted, TestApp};

/// One push source `default` routed to one sink `main` (replaced by a scripted sink).
const ONE_SINK: &str = r#"
[sinks.main]
type = "stdout"
"#;

/// A push source that answers 503 at once when its sinks fail (for senders that retry on 503).
const REJECTING: &str = r#"
[sources.default]
mode = "push"
on_sink_failure = "reject"
"#;

/// Like [`ONE_SINK`] with a source that answers failures with 503 at once.
fn rejecting(extra: &str) -> String {
    format!("{extra}\n{REJECTING}\n{ONE_SINK}")
}

async fn one_sink(behaviour: Behaviour) -> (TestApp, Arc<Scripted>) {
    let sink = Scripted::new("main", behaviour);
    let app = TestApp::start(settings(ONE_SINK), vec![sink.clone() as Arc<dyn Sink>]).await;
    (app, sink)
}

#[tokio::test]
async fn acked_event_gets_200_with_its_id() {
    let (app, sink) = one_sink(Behaviour::Ack).await;
    let response = app
        .post("/callback/default", fixture("ProcedureStateChanged"))
        .await;
    assert_eq!(response.status(), 200);
    let id = response
        .headers()
        .get(EVENT_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let acked = sink.acked.lock().expect("lock").clone();
    assert_eq!(acked.len(), 1);
    assert_eq!(Some(acked[0].envelope.id.to_string()), id);
    assert_eq!(
        acked[0].envelope.data,
        fixture("ProcedureStateChanged"),
        "data is the body"
    );
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn answer_waits_for_the_sink_ack() {
    let gate = Arc::new(Notify::new());
    let sink = Scripted::gated("main", gate.clone());
    let app = TestApp::start(settings(ONE_SINK), vec![sink.clone() as Arc<dyn Sink>]).await;
    let url = app.url("/callback/default");
    let request = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .body(fixture("NewFileUpload"))
            .send()
            .await
    });
    // The sink has the message but has not acknowledged: no answer may exist yet.
    while sink.received_count() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !request.is_finished(),
        "answered before the sink acknowledged"
    );
    gate.notify_one();
    let response = request.await.expect("task").expect("response");
    assert_eq!(response.status(), 200);
    assert_eq!(sink.acked_count(), 1);
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn failing_sink_gets_503_with_retry_after_in_reject_mode() {
    let sink = Scripted::new("main", Behaviour::Fail);
    let app = TestApp::start(
        settings(&rejecting("")),
        vec![sink.clone() as Arc<dyn Sink>],
    )
    .await;
    let response = app
        .post("/callback/default", fixture("NewFileUpload"))
        .await;
    assert_eq!(response.status(), 503);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    assert_eq!(sink.acked_count(), 0);
    // The sink recovers: VOD's retry of the same event now succeeds with the same id.
    sink.set(Behaviour::Ack);
    let retry = app
        .post("/callback/default", fixture("NewFileUpload"))
        .await;
    assert_eq!(retry.status(), 200);
    let (_, metrics) = app.get("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            r#"vodbridge_publish_failures_total{reason="unavailable",sink="main"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &metrics,
            r#"vodbridge_events_total{outcome="retryable",source="default"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &metrics,
            r#"vodbridge_events_total{outcome="delivered",source="default"}"#
        ),
        Some(1.0)
    );
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn hanging_sink_gets_503_at_the_publish_deadline_in_reject_mode() {
    let sink = Scripted::new("main", Behaviour::Hang);
    let toml = rejecting("[server]\npublish_timeout_ms = 300");
    let app = TestApp::start(settings(&toml), vec![sink.clone() as Arc<dyn Sink>]).await;
    let started = std::time::Instant::now();
    let response = app
        .post("/callback/default", fixture("NewFileUpload"))
        .await;
    assert_eq!(response.status(), 503);
    let body = response.text().await.unwrap_or_default();
    assert!(body.contains("timeout"), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered near the deadline, not never"
    );
    assert_eq!(sink.acked_count(), 0);
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn permanent_rejection_is_503_without_dead_letter_and_200_with_it() {
    let (app, _sink) = one_sink(Behaviour::Reject).await;
    let response = app
        .post("/callback/default", fixture("NewFileUpload"))
        .await;
    assert_eq!(response.status(), 503, "not acknowledged");
    let body = response.text().await.unwrap_or_default();
    assert!(
        body.contains("too_large"),
        "the body names the reason: {body}"
    );
    app.stop().await.expect("clean stop");

    let main = Scripted::new("main", Behaviour::Reject);
    let dlq = Scripted::new("dlq", Behaviour::Ack);
    let toml = r#"
[sinks.main]
type = "stdout"
[sinks.dlq]
type = "stdout"
[[routes]]
event_types = ["*"]
sinks = [{ sink = "main", destination = "vod.{event_type}" }]
[dead_letter]
sink = "dlq"
destination = "dead"
"#;
    let app = TestApp::start(
        settings(toml),
        vec![main.clone() as Arc<dyn Sink>, dlq.clone()],
    )
    .await;
    let response = app
        .post("/callback/default", fixture("NewFileUpload"))
        .await;
    assert_eq!(response.status(), 200, "dead-lettered counts as handled");
    let dead = dlq.acked.lock().expect("lock").clone();
    assert_eq!(dead.len(), 1);
    let info = dead[0].dead_letter.clone().expect("dead-letter info");
    assert_eq!(
        (info.failed_sink.as_str(), info.failed_destination.as_str()),
        ("main", "vod.NewFileUpload")
    );
    assert_eq!(dead[0].destination, "dead");
    let (_, metrics) = app.get("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            r#"vodbridge_dead_lettered_total{reason="too_large"}"#
        ),
        Some(1.0)
    );
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn bad_bodies_get_400_and_nothing_is_published() {
    let (app, sink) = one_sink(Behaviour::Ack).await;
    for body in [&b"{not json"[..], b"[]", b"{}", b"{\"EventType\":7}", b""] {
        let response = app.post("/callback/default", body.to_vec()).await;
        assert_eq!(response.status(), 400, "{}", String::from_utf8_lossy(body));
        let text = response.text().await.unwrap_or_default();
        assert!(text.contains("bad_body"), "{text}");
    }
    assert_eq!(sink.received_count(), 0);
    let (_, metrics) = app.get("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            r#"vodbridge_callback_rejected_total{source="default",status="400"}"#
        ),
        Some(5.0)
    );
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn unknown_source_gets_404() {
    let (app, sink) = one_sink(Behaviour::Ack).await;
    let response = app
        .post("/callback/elsewhere", fixture("NewFileUpload"))
        .await;
    assert_eq!(response.status(), 404);
    assert_eq!(sink.received_count(), 0);
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn oversized_bodies_get_413_declared_or_streamed() {
    let sink = Scripted::new("main", Behaviour::Ack);
    let toml = format!("[server]\nbody_limit_bytes = 1024\n{ONE_SINK}");
    let app = TestApp::start(settings(&toml), vec![sink.clone() as Arc<dyn Sink>]).await;
    let big = format!(
        r#"{{"EventType":"NewFileUpload","Pad":"{}"}}"#,
        "x".repeat(2048)
    );
    assert_eq!(
        app.post("/callback/default", big.clone()).await.status(),
        413
    );

    // Chunked, no Content-Length: the limit must hold while streaming.
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    let mut request = b"POST /callback/default HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for chunk in big.as_bytes().chunks(500) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    stream.write_all(&request).await.expect("write");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    let small = fixture("FileDeleted");
    assert!(small.len() < 1024);
    assert_eq!(
        app.post("/callback/default", small).await.status(),
        200,
        "bodies under the limit pass"
    );
    assert_eq!(sink.acked_count(), 1);
    app.stop().await.expect("clean stop");
}

fn signed_settings(extra: &str) -> vodbridge::config::Settings {
    settings(&format!(
        r#"
[sources.app]
mode = "push"
sub_app_id = 1500000001
[sources.app.auth]
sign_key = "abcXYZ123"
{extra}
{ONE_SINK}"#
    ))
}

#[tokio::test]
async fn sign_key_is_enforced() {
    let sink = Scripted::new("main", Behaviour::Ack);
    // Every accepted post below is the same event: without the delivery record each one is
    // published, so the test sees that all three carry one id.
    let mut settings = signed_settings("");
    settings.sink_record_capacity = 0;
    let app = TestApp::start(settings, vec![sink.clone() as Arc<dyn Sink>]).await;
    let key = SignKey::new("abcXYZ123");
    let future = time::OffsetDateTime::now_utc().unix_timestamp() + 600;
    let body = |sign: &str, t: i64| {
        format!(
            r#"{{"EventType":"NewFileUpload","FileUploadEvent":{{"FileId":"1"}},"Sign":"{sign}","T":{t}}}"#
        )
    };
    let unsigned = r#"{"EventType":"NewFileUpload","FileUploadEvent":{"FileId":"1"}}"#;

    assert_eq!(
        app.post("/callback/app", unsigned).await.status(),
        401,
        "missing Sign/T"
    );
    assert_eq!(
        app.post("/callback/app", body("00ff", future))
            .await
            .status(),
        401,
        "wrong Sign"
    );
    let past = future - 3600;
    assert_eq!(
        app.post("/callback/app", body(&key.sign(past), past))
            .await
            .status(),
        401,
        "expired T"
    );
    assert_eq!(
        app.post("/callback/app", body(&key.sign(future), future + 1))
            .await
            .status(),
        401,
        "T altered"
    );
    assert_eq!(
        sink.received_count(),
        0,
        "nothing unauthenticated is published"
    );

    assert_eq!(
        app.post("/callback/app", body(&key.sign(future), future))
            .await
            .status(),
        200
    );
    let upper = key.sign(future).to_uppercase();
    assert_eq!(
        app.post("/callback/app", body(&upper, future))
            .await
            .status(),
        200,
        "hex case is free"
    );
    let query = format!("/callback/app?Sign={}&T={future}", key.sign(future));
    assert_eq!(
        app.post(&query, unsigned).await.status(),
        200,
        "Sign/T in the query string"
    );
    let acked = sink.acked.lock().expect("lock").clone();
    assert_eq!(acked.len(), 3);
    assert!(
        acked
            .iter()
            .all(|m| !String::from_utf8_lossy(&m.envelope.data).contains("Sign")),
        "Sign/T not in data"
    );
    assert!(
        acked.iter().all(|m| m.envelope.id == acked[0].envelope.id),
        "Sign/T do not change the id"
    );
    assert_eq!(acked[0].envelope.source, "/tencentcloud/vod/1500000001");
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn token_is_enforced() {
    let sink = Scripted::new("main", Behaviour::Ack);
    let toml = format!(
        "[sources.app]\nmode = \"push\"\n[sources.app.auth]\ntoken = \"s3cret-token\"\n{ONE_SINK}"
    );
    let app = TestApp::start(settings(&toml), vec![sink.clone() as Arc<dyn Sink>]).await;
    assert_eq!(
        app.post("/callback/app", fixture("NewFileUpload"))
            .await
            .status(),
        401
    );
    assert_eq!(
        app.post("/callback/app?token=wrong", fixture("NewFileUpload"))
            .await
            .status(),
        401
    );
    assert_eq!(sink.received_count(), 0);
    assert_eq!(
        app.post("/callback/app?token=s3cret-token", fixture("NewFileUpload"))
            .await
            .status(),
        200
    );
    let with_header = reqwest::Client::new()
        .post(app.url("/callback/app"))
        .header("x-vodbridge-token", "s3cret-token")
        .body(fixture("NewFileUpload"))
        .send()
        .await
        .expect("response");
    assert_eq!(with_header.status(), 200);
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn ip_allow_list_is_enforced_and_forwarded_for_is_read_from_the_right() {
    let sink = Scripted::new("main", Behaviour::Ack);
    let toml = format!("[sources.app]\nmode = \"push\"\n[sources.app.auth]\nallowed_ips = [\"10.0.0.0/8\"]\n[sources.proxied]\nmode = \"push\"\n[sources.proxied.auth]\nallowed_ips = [\"10.0.0.0/8\"]\ntrusted_proxies = [\"127.0.0.0/8\"]\n{ONE_SINK}");
    let app = TestApp::start(settings(&toml), vec![sink.clone() as Arc<dyn Sink>]).await;
    assert_eq!(
        app.post("/callback/app", fixture("NewFileUpload"))
            .await
            .status(),
        403,
        "127.0.0.1 not allowed"
    );
    let post = |path: &str, forwarded: &str| {
        reqwest::Client::new()
            .post(app.url(path))
            .header("x-forwarded-for", forwarded)
            .body(fixture("NewFileUpload"))
            .send()
    };
    assert_eq!(
        post("/callback/app", "10.1.2.3")
            .await
            .expect("response")
            .status(),
        403,
        "X-Forwarded-For ignored unless the connection is from a trusted proxy"
    );
    // Behind a proxy that appends ($proxy_add_x_forwarded_for), the client writes the first
    // entry itself: 10.1.2.3 is a lie, 192.0.2.1 is who connected to the proxy.
    assert_eq!(
        post("/callback/proxied", "10.1.2.3, 192.0.2.1")
            .await
            .expect("response")
            .status(),
        403,
        "a spoofed first entry is refused"
    );
    assert_eq!(sink.received_count(), 0);
    assert_eq!(
        post("/callback/proxied", "192.0.2.1, 10.1.2.3")
            .await
            .expect("response")
            .status(),
        200,
        "the real client, appended by the proxy, is allowed"
    );
    app.stop().await.expect("clean stop");
}

#[test]
fn trust_forwarded_for_is_refused_with_the_way_out() {
    let config = vodbridge::config::Config::from_toml(
        "[sources.p]\nmode = \"push\"\n[sources.p.auth]\ntrust_forwarded_for = true\n",
    )
    .expect("parses");
    let error = vodbridge::config::Settings::from_config(config).expect_err("refused");
    assert!(error.to_string().contains("trusted_proxies"), "{error}");
}

#[tokio::test]
async fn saturation_gets_503_at_once_in_reject_mode() {
    let gate = Arc::new(Notify::new());
    let sink = Scripted::gated("main", gate.clone());
    let toml = rejecting("[server]\nmax_in_flight = 1");
    let app = TestApp::start(settings(&toml), vec![sink.clone() as Arc<dyn Sink>]).await;
    let url = app.url("/callback/default");
    let first = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .body(fixture("NewFileUpload"))
            .send()
            .await
    });
    while sink.received_count() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second = app.post("/callback/default", fixture("FileDeleted")).await;
    assert_eq!(second.status(), 503);
    assert!(second
        .text()
        .await
        .unwrap_or_default()
        .contains("saturated"));
    gate.notify_one();
    assert_eq!(first.await.expect("task").expect("response").status(), 200);
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn fan_out_needs_every_sink_and_drop_routes_publish_nothing() {
    let a = Scripted::new("a", Behaviour::Ack);
    let b = Scripted::new("b", Behaviour::Fail);
    let toml = r#"
[sources.default]
mode = "push"
on_sink_failure = "reject"
[sinks.a]
type = "stdout"
[sinks.b]
type = "stdout"
[[routes]]
event_types = ["FileDeleted"]
drop = true
[[routes]]
event_types = ["*"]
sinks = [{ sink = "a", destination = "{source}.{event_type}" }, { sink = "b" }]
"#;
    let app = TestApp::start(settings(toml), vec![a.clone() as Arc<dyn Sink>, b.clone()]).await;
    assert_eq!(
        app.post("/callback/default", fixture("NewFileUpload"))
            .await
            .status(),
        503,
        "one of two failed"
    );
    b.set(Behaviour::Ack);
    assert_eq!(
        app.post("/callback/default", fixture("NewFileUpload"))
            .await
            .status(),
        200
    );
    // VOD's resend reached a sink that already held the event: not published to it again.
    assert_eq!((a.acked_count(), b.acked_count()), (1, 1));
    assert_eq!(
        a.acked.lock().expect("lock")[0].destination,
        "default.NewFileUpload"
    );
    let (_, metrics) = app.get("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            r#"vodbridge_sink_publishes_skipped_total{sink="a"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        app.post("/callback/default", fixture("FileDeleted"))
            .await
            .status(),
        200,
        "dropped is handled"
    );
    assert_eq!(
        (a.received_count(), b.received_count()),
        (1, 2),
        "drop publishes nothing"
    );
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn readiness_follows_sink_health() {
    let (app, sink) = one_sink(Behaviour::Ack).await;
    assert_eq!(app.get("/readyz").await.0, 200);
    assert_eq!(app.get("/healthz").await.0, 200);
    sink.set_healthy(false);
    let (status, body) = app.get("/readyz").await;
    assert_eq!((status, body.trim()), (503, "sinks down: main"));
    let (_, metrics) = app.get("/metrics").await;
    assert_eq!(
        metric(
            &metrics,
            r#"vodbridge_sink_up{kind="scripted",required="true",sink="main"}"#
        ),
        Some(0.0)
    );
    assert_eq!(metric(&metrics, "vodbridge_ready"), Some(0.0));
    sink.set_healthy(true);
    assert_eq!(app.get("/readyz").await.0, 200);
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn shutdown_drains_in_flight_callbacks() {
    let gate = Arc::new(Notify::new());
    let sink = Scripted::gated("main", gate.clone());
    let mut app = TestApp::start(settings(ONE_SINK), vec![sink.clone() as Arc<dyn Sink>]).await;
    let url = app.url("/callback/default");
    let in_flight = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .body(fixture("NewFileUpload"))
            .send()
            .await
    });
    while sink.received_count() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    app.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !in_flight.is_finished(),
        "the in-flight callback is still waiting for its ack"
    );
    gate.notify_one();
    let response = in_flight.await.expect("task").expect("response");
    assert_eq!(
        response.status(),
        200,
        "the in-flight callback finished during the drain"
    );
    app.stop().await.expect("exits cleanly after draining");
    assert_eq!(sink.acked_count(), 1);
}

#[tokio::test]
async fn file_sink_writes_one_envelope_per_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("out/events.jsonl");
    let toml = format!(
        "[sinks.file]\ntype = \"file\"\npath = {:?}\n",
        path.display().to_string()
    );
    let app = TestApp::start(settings(&toml), vec![]).await;
    let mut ids = Vec::new();
    for name in ["NewFileUpload", "ProcedureStateChanged", "unknown_type"] {
        let response = app.post("/callback/default", fixture(name)).await;
        assert_eq!(response.status(), 200, "{name}");
        ids.push(
            response
                .headers()
                .get(EVENT_ID_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned(),
        );
    }
    // Acknowledged means written: the lines are there before shutdown.
    let text = std::fs::read_to_string(&path).expect("file written");
    let envelopes: Vec<Envelope> = text
        .lines()
        .map(|l| Envelope::from_structured_json(l.as_bytes()).expect("one envelope per line"))
        .collect();
    assert_eq!(
        envelopes
            .iter()
            .map(|e| e.id.to_string())
            .collect::<Vec<_>>(),
        ids
    );
    assert_eq!(
        envelopes[2].ty,
        "com.tencentcloud.vod.HologramRenderComplete"
    );
    app.stop().await.expect("clean stop");
}

/// VOD's client: a 5 s timeout, the status of an answer ignored.
fn vod_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

#[tokio::test]
async fn a_failing_sink_is_never_answered_before_vods_timeout() {
    let (app, sink) = one_sink(Behaviour::Fail).await;
    let started = std::time::Instant::now();
    let answer = vod_client()
        .post(app.url("/callback/default"))
        .body(fixture("NewFileUpload"))
        .send()
        .await;
    assert!(
        matches!(&answer, Err(e) if e.is_timeout()),
        "no answer within VOD's 5 s, so VOD sends it again: {answer:?}"
    );
    assert!(started.elapsed() >= Duration::from_secs(5));
    assert!(
        sink.received_count() > 3,
        "published again and again while held"
    );
    // The sink recovers inside the hold, after VOD hung up: the held event is still stored.
    sink.set(Behaviour::Ack);
    wait_for("the held event stored", Duration::from_secs(6), || {
        sink.acked_count() == 1
    })
    .await;
    let (_, metrics) = app.get("/metrics").await;
    assert!(
        metric(
            &metrics,
            r#"vodbridge_push_retries_total{source="default"}"#
        )
        .unwrap_or(0.0)
            >= 3.0,
        "{metrics}"
    );
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_held_callback_is_answered_200_once_its_sink_recovers() {
    let (app, sink) = one_sink(Behaviour::Fail).await;
    let url = app.url("/callback/default");
    let request = tokio::spawn(async move {
        vod_client()
            .post(url)
            .body(fixture("NewFileUpload"))
            .send()
            .await
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!request.is_finished(), "held, not answered 503");
    sink.set(Behaviour::Ack);
    let response = request.await.expect("task").expect("answered in time");
    assert_eq!(response.status(), 200);
    assert_eq!(sink.acked_count(), 1);
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn saturation_waits_for_room_instead_of_answering() {
    let gate = Arc::new(Notify::new());
    let sink = Scripted::gated("main", gate.clone());
    let toml = format!("[server]\nmax_in_flight = 1\n{ONE_SINK}");
    let app = TestApp::start(settings(&toml), vec![sink.clone() as Arc<dyn Sink>]).await;
    let post = |body: &'static str| {
        let url = app.url("/callback/default");
        tokio::spawn(async move { vod_client().post(url).body(fixture(body)).send().await })
    };
    let first = post("NewFileUpload");
    while sink.received_count() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second = post("FileDeleted");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !second.is_finished(),
        "the second callback waits, it is not refused"
    );
    gate.notify_one();
    assert_eq!(first.await.expect("task").expect("response").status(), 200);
    while sink.received_count() < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gate.notify_one();
    assert_eq!(second.await.expect("task").expect("response").status(), 200);
    assert_eq!(sink.acked_count(), 2);
    app.stop().await.expect("clean stop");
}

#[test]
fn a_hold_shorter_than_vods_timeout_is_refused() {
    let config = vodbridge::config::Config::from_toml(
        "[sources.default]\nmode = \"push\"\nhold_ms = 3000\n",
    )
    .expect("parses");
    let error = vodbridge::config::Settings::from_config(config).expect_err("refused");
    assert!(error.to_string().contains("hold_ms"), "{error}");
}

/// The hold's schedule, computed from its rule: publish at once, then after pauses of 100 ms
/// doubling to at most 1 s, while the next attempt still starts inside the hold. Returns the
/// attempts' times from the callback's arrival.
fn hold_schedule(hold: Duration) -> Vec<Duration> {
    let (mut at, mut pause, mut times) = (Duration::ZERO, Duration::from_millis(100), Vec::new());
    times.push(at);
    while at + pause < hold {
        at += pause;
        times.push(at);
        pause = (pause * 2).min(Duration::from_secs(1));
    }
    times
}

/// A callback through the router (no socket), on tokio's paused clock: its answer and when,
/// from the callback's arrival.
async fn post_paused(router: axum::Router, body: Vec<u8>) -> (u16, Duration) {
    use tower::ServiceExt as _;
    let started = tokio::time::Instant::now();
    let response = router
        .oneshot(
            axum::http::Request::post("/callback/default")
                .body(axum::body::Body::from(body))
                .expect("a request"),
        )
        .await
        .expect("an answer");
    (response.status().as_u16(), started.elapsed())
}

/// The hold and retry rules on the paused clock: a sink that keeps failing is published at
/// exactly the hold's schedule (10 s by default) and the callback answered 503 only after the
/// last attempt, well past VOD's 5 s timeout; a sink that recovers at 1.2 s is published once
/// more at 1.5 s, and the callback answered 200 then.
#[tokio::test(start_paused = true)]
async fn the_hold_retries_on_its_schedule_and_answers_after_vods_timeout() {
    let hold = Duration::from_secs(10);
    let schedule = hold_schedule(hold);
    let sink = Scripted::new("main", Behaviour::Fail);
    let app =
        vodbridge::App::build_with_sinks(settings(ONE_SINK), vec![sink.clone() as Arc<dyn Sink>])
            .await
            .expect("app builds");
    let (status, after) = post_paused(app.router(), fixture("NewFileUpload")).await;
    assert_eq!(status, 503, "never stored, so never 200");
    assert_eq!(
        after,
        *schedule.last().expect("attempts"),
        "answered right after the last attempt that fits in the hold"
    );
    assert!(
        after > Duration::from_secs(5),
        "after VOD's timeout: VOD sends it again"
    );
    assert_eq!(sink.received_count(), schedule.len(), "{schedule:?}");

    let recovering = Scripted::new("main", Behaviour::Fail);
    let app = vodbridge::App::build_with_sinks(
        settings(ONE_SINK),
        vec![recovering.clone() as Arc<dyn Sink>],
    )
    .await
    .expect("app builds");
    let recover = {
        let sink = Arc::clone(&recovering);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1200)).await;
            sink.set(Behaviour::Ack);
        })
    };
    let (status, after) = post_paused(app.router(), fixture("NewFileUpload")).await;
    recover.await.expect("recovered");
    let first_after_recovery = *schedule
        .iter()
        .find(|t| **t >= Duration::from_millis(1200))
        .expect("inside the hold");
    assert_eq!((status, after), (200, first_after_recovery));
    assert_eq!(recovering.acked_count(), 1);
    assert_eq!(
        recovering.received_count(),
        schedule
            .iter()
            .filter(|t| **t <= first_after_recovery)
            .count()
    );
}
