//! The shared delivery record against a real `redis-server` and a real NATS KV bucket: a second
//! replica skips what the first one's sink acknowledged, a store that is killed costs
//! duplicates (counted, shown on `/readyz`) but no event, and the record comes back with it.

use std::{path::Path, time::Duration};

use vodbridge_core::Envelope;
use vodbridge_testkit::{NatsServer, RedisServer};

use crate::helpers::{metric, settings, TestApp};

/// A bridge with a file sink at `path` and the shared record at `store`.
fn replica_config(path: &Path, store: &str) -> String {
    replica_config_with(path, store, "")
}

/// [`replica_config`] with more `[delivery]` keys.
fn replica_config_with(path: &Path, store: &str, delivery: &str) -> String {
    format!(
        "[delivery]\nshared_record = {store:?}\nshared_record_timeout_ms = 200\n{delivery}\
         [sinks.file]\ntype = \"file\"\npath = {:?}\nfsync = \"never\"\n",
        path.display().to_string()
    )
}

/// The FileIds (subjects) a file sink wrote, one per publish.
fn published(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| Envelope::from_structured_json(l.as_bytes()).ok()?.subject)
        .collect()
}

fn body(file_id: &str) -> String {
    format!(
        r#"{{"EventType":"NewFileUpload","FileUploadEvent":{{"FileId":"{file_id}","MediaBasicInfo":{{"Name":"v"}}}}}}"#
    )
}

/// Sends new events to `a`, then again to `b`, until `b` publishes none of them (the record is
/// read and written again); fails after `within`.
async fn record_comes_back(
    a: &TestApp,
    b: &TestApp,
    path_b: &Path,
    prefix: &str,
    within: Duration,
    kind: &str,
) {
    let started = std::time::Instant::now();
    for i in 100.. {
        let id = format!("{prefix}{i}");
        assert_eq!(a.post("/callback/default", body(&id)).await.status(), 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(b.post("/callback/default", body(&id)).await.status(), 200);
        if !published(path_b).contains(&id) {
            return;
        }
        assert!(
            started.elapsed() < within,
            "{kind}: the record never came back: {}",
            a.get("/readyz").await.1
        );
    }
}

async fn metrics(app: &TestApp) -> String {
    app.get("/metrics").await.1
}

/// Two replicas behind one Service: VOD sends an event again and it reaches the other one.
/// `restart` kills the store and starts it again (empty).
async fn two_replicas_share_one_record(
    store_url: &str,
    kind: &str,
    mut kill: impl FnMut(),
    mut restart: impl FnMut(),
) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path_a, path_b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    let a = TestApp::start(settings(&replica_config(&path_a, store_url)), vec![]).await;
    let b = TestApp::start(settings(&replica_config(&path_b, store_url)), vec![]).await;

    // Sent to A, then sent again to B: B's sink holds nothing, B answers 200 all the same.
    for i in 0..20 {
        assert_eq!(
            a.post("/callback/default", body(&format!("f{i}")))
                .await
                .status(),
            200
        );
    }
    // Written behind the ack: give the writer its linger.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..20 {
        assert_eq!(
            b.post("/callback/default", body(&format!("f{i}")))
                .await
                .status(),
            200
        );
    }
    assert_eq!(published(&path_a).len(), 20);
    let (ma, mb) = (metrics(&a).await, metrics(&b).await);
    let lines = |t: &str| {
        t.lines()
            .filter(|l| l.contains("shared_record") && !l.starts_with('#') && !l.contains("bucket"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        published(&path_b),
        Vec::<String>::new(),
        "{kind}: B skipped every publish A made; A:\n{}\nB:\n{}\n{}",
        lines(&ma),
        lines(&mb),
        b.get("/readyz").await.1
    );
    let text = metrics(&b).await;
    assert_eq!(
        metric(
            &text,
            r#"vodbridge_shared_record_lookups_total{result="hit"}"#
        ),
        Some(20.0),
        "{kind}"
    );
    assert_eq!(
        metric(
            &text,
            r#"vodbridge_sink_publishes_skipped_total{sink="file"}"#
        ),
        Some(20.0)
    );
    assert_eq!(
        metric(
            &metrics(&a).await,
            r#"vodbridge_shared_record_writes_total{result="ok"}"#
        ),
        Some(20.0)
    );
    assert_eq!(
        metric(
            &text,
            &format!("vodbridge_shared_record_up{{store=\"{kind}\"}}")
        ),
        Some(1.0)
    );

    // The store dies: both replicas publish without it (fail open), stay ready, and say so.
    kill();
    for i in 20..30 {
        assert_eq!(
            a.post("/callback/default", body(&format!("f{i}")))
                .await
                .status(),
            200
        );
        assert_eq!(
            b.post("/callback/default", body(&format!("f{i}")))
                .await
                .status(),
            200
        );
    }
    let a_files: Vec<String> = published(&path_a);
    let b_files: Vec<String> = published(&path_b);
    for i in 20..30 {
        let id = format!("f{i}");
        assert!(
            a_files.contains(&id) && b_files.contains(&id),
            "{kind}: {id} published by both while the store is down"
        );
    }
    let (status, detail) = b.get("/readyz").await;
    assert_eq!(
        status, 200,
        "{kind}: a dead store never makes the bridge unready"
    );
    assert!(
        detail.contains("shared delivery record") && detail.contains("unreachable"),
        "{detail}"
    );
    let text = metrics(&b).await;
    assert_eq!(
        metric(
            &text,
            &format!("vodbridge_shared_record_up{{store=\"{kind}\"}}")
        ),
        Some(0.0)
    );
    assert!(
        metric(&text, r#"vodbridge_shared_record_errors_total{op="read"}"#).unwrap_or(0.0) >= 1.0
    );
    assert!(
        metric(
            &text,
            r#"vodbridge_shared_record_lookups_total{result="error"}"#
        )
        .unwrap_or(0.0)
            >= 10.0
    );

    // It comes back (empty): the record works again without a restart of the bridge.
    restart();
    record_comes_back(&a, &b, &path_b, "f", Duration::from_secs(20), kind).await;
    let (status, detail) = b.get("/readyz").await;
    assert_eq!((status, detail.as_str()), (200, "ready\n"));
    a.stop().await.expect("clean stop");
    b.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_record_is_shared_and_fails_open() {
    let redis = std::cell::RefCell::new(RedisServer::start_with_password("s3cret"));
    let url = redis.borrow().url();
    two_replicas_share_one_record(
        &url,
        "redis",
        || redis.borrow_mut().stop(),
        || redis.borrow_mut().restart(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_kv_record_is_shared_and_fails_open() {
    let nats = std::cell::RefCell::new(NatsServer::start());
    let url = nats.borrow().url();
    two_replicas_share_one_record(
        &url,
        "nats",
        || nats.borrow_mut().stop(),
        || nats.borrow_mut().restart(),
    )
    .await;
}

/// The record is written only after the acknowledgement: a publish that failed is not
/// recorded, so the next replica publishes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_publish_is_never_recorded() {
    use crate::helpers::{Behaviour, Scripted};
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let failing = Scripted::new("file", Behaviour::Fail);
    let config = format!(
        "{}[sources.default]\nmode = \"push\"\non_sink_failure = \"reject\"\n",
        replica_config(&dir.path().join("a.jsonl"), &redis.url())
    );
    let a = TestApp::start(settings(&config), vec![failing.clone()]).await;
    assert_eq!(
        a.post("/callback/default", body("lost?")).await.status(),
        503
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let path_b = dir.path().join("b.jsonl");
    let b = TestApp::start(settings(&replica_config(&path_b, &redis.url())), vec![]).await;
    assert_eq!(
        b.post("/callback/default", body("lost?")).await.status(),
        200
    );
    assert_eq!(
        published(&path_b),
        ["lost?"],
        "published by the replica that got it next"
    );
    assert_eq!(
        metric(
            &metrics(&a).await,
            r#"vodbridge_shared_record_writes_total{result="ok"}"#
        ),
        None,
        "nothing written for a failed publish"
    );
    a.stop().await.expect("clean stop");
    b.stop().await.expect("clean stop");
}

/// The store cut off silently (a partition: the connection carries nothing and closes
/// nothing): callbacks are still answered at once (each read waits at most the record's
/// timeout), the bridge stays ready and names the store, and once the network heals the record
/// is used again without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_store_costs_at_most_its_timeout_and_comes_back() {
    let redis = RedisServer::start();
    silent_store("redis", redis.port).await;
    let nats = NatsServer::start();
    silent_store("nats", nats.port).await;
}

/// [`a_silent_store_costs_at_most_its_timeout_and_comes_back`] for the store of `scheme`
/// listening on `port`.
async fn silent_store(scheme: &str, port: u16) {
    let proxy = vodbridge_testkit::SilentProxy::start(port);
    let url = format!("{scheme}://127.0.0.1:{}", proxy.port);
    let dir = tempfile::tempdir().expect("tempdir");
    let (path_a, path_b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    let a = TestApp::start(settings(&replica_config(&path_a, &url)), vec![]).await;
    let b = TestApp::start(settings(&replica_config(&path_b, &url)), vec![]).await;
    assert_eq!(a.post("/callback/default", body("s0")).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(b.post("/callback/default", body("s0")).await.status(), 200);
    assert!(
        published(&path_b).is_empty(),
        "the record works through the proxy"
    );

    proxy.silence();
    let mut slowest = Duration::ZERO;
    for i in 1..=10 {
        let started = std::time::Instant::now();
        assert_eq!(
            a.post("/callback/default", body(&format!("s{i}")))
                .await
                .status(),
            200
        );
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest < Duration::from_secs(2),
        "{scheme}: a silent store must not hold callbacks: {slowest:?}"
    );
    assert_eq!(published(&path_a).len(), 11, "every event published");
    let (status, detail) = a.get("/readyz").await;
    assert_eq!(status, 200, "{detail}");
    assert!(detail.contains("unreachable"), "{detail}");

    // Healed: new connections go through (the silent ones stay dead); the record is back.
    proxy.heal();
    record_comes_back(&a, &b, &path_b, "s", Duration::from_secs(30), scheme).await;
    a.stop().await.expect("clean stop");
    b.stop().await.expect("clean stop");
}

/// `rediss://` with the store's CA from `shared_record_ca_file`: the record works over TLS, and
/// a CA that did not sign the store's certificate fails `check-config` and leaves the running
/// bridge publishing without the record (never refusing events).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_over_tls_trusts_the_given_ca_only() {
    let pki = vodbridge_testkit::TestPki::generate();
    let redis = RedisServer::start_tls(&pki);
    let dir = tempfile::tempdir().expect("tempdir");
    let with_ca = |path: &Path, ca: &Path| {
        let line = format!("shared_record_ca_file = {:?}\n", ca.display().to_string());
        replica_config_with(path, &redis.url(), &line)
    };
    let (path_a, path_b) = (dir.path().join("a.jsonl"), dir.path().join("b.jsonl"));
    let a = TestApp::start(settings(&with_ca(&path_a, &pki.ca())), vec![]).await;
    let b = TestApp::start(settings(&with_ca(&path_b, &pki.ca())), vec![]).await;
    assert_eq!(a.post("/callback/default", body("t0")).await.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(b.post("/callback/default", body("t0")).await.status(), 200);
    assert!(
        published(&path_b).is_empty(),
        "recorded and recalled over TLS"
    );
    assert_eq!(b.get("/readyz").await.1, "ready\n");

    // Another CA: the certificate is not trusted.
    let other = vodbridge_testkit::TestPki::generate();
    let path_c = dir.path().join("c.jsonl");
    let c = TestApp::start(settings(&with_ca(&path_c, &other.ca())), vec![]).await;
    assert_eq!(c.post("/callback/default", body("t0")).await.status(), 200);
    assert_eq!(published(&path_c), ["t0"], "published without the record");
    let (status, detail) = c.get("/readyz").await;
    assert_eq!(status, 200);
    assert!(detail.contains("unreachable"), "{detail}");
    let file = dir.path().join("c.toml");
    std::fs::write(&file, with_ca(&path_c, &other.ca())).expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vodbridge"))
        .args(["check-config", &file.display().to_string()])
        .output()
        .expect("runs");
    assert!(
        !out.status.success(),
        "an untrusted store fails check-config"
    );
    for app in [a, b, c] {
        app.stop().await.expect("clean stop");
    }
}
