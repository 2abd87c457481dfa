//! The callback edge of the real `vodbridge` binary, tried the way an attacker would: slow
//! clients, ambiguous JSON, spoofed client addresses.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use vodbridge_testkit::{free_port, BridgeProcess};

use crate::helpers::{fixture, metric};

const BIN: &str = env!("CARGO_BIN_EXE_vodbridge");

fn bridge(extra: &str, dir: &std::path::Path) -> BridgeProcess {
    let port = free_port();
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
header_timeout_ms = 2000
body_timeout_ms = 2000
[telemetry]
log_level = "warn"
[sources.default]
mode = "push"
[sources.default.auth]
allowed_ips = ["192.0.2.0/24"]
trusted_proxies = ["127.0.0.0/8"]
[sources.open]
mode = "push"
{extra}
[sinks.file]
type = "file"
path = {path:?}
fsync = "never"
"#,
        path = dir.join("events.jsonl").display().to_string()
    );
    BridgeProcess::start(BIN, &toml, port)
}

fn lines(dir: &std::path::Path) -> usize {
    std::fs::read_to_string(dir.join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .count()
}

/// 400 connections that send half a request head and stop are closed within the header
/// timeout, while a good callback sent meanwhile is answered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_dropped_and_good_callbacks_still_get_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bridge = bridge("", dir.path());
    let addr = format!("127.0.0.1:{}", bridge.port);
    let mut slow: Vec<TcpStream> = (0..400)
        .map(|_| {
            let mut stream = TcpStream::connect(&addr).expect("connects");
            stream
                .write_all(b"POST /callback/open HTTP/1.1\r\nHost: bridge\r\nContent-Le")
                .expect("half a head");
            stream
        })
        .collect();
    let started = Instant::now();
    let answer = reqwest::Client::new()
        .post(format!("{}/callback/open", bridge.url()))
        .body(fixture("NewFileUpload"))
        .send()
        .await
        .expect("answered");
    assert_eq!(answer.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "a good callback waits for no slow client: {:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut closed = 0;
    for stream in &mut slow {
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let mut buf = [0u8; 256];
        // Closed without an answer: end of stream (or a reset), never an HTTP status; a read
        // that times out means the connection is still open.
        match stream.read(&mut buf) {
            Ok(0) => closed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed += 1,
            Err(e) => panic!("a slow client is still connected after the header timeout: {e}"),
            Ok(n) => panic!(
                "a slow client got an answer: {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
        }
    }
    assert_eq!(closed, 400, "every slow client dropped");
    let metrics = reqwest::get(format!("{}/metrics", bridge.url()))
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    assert!(
        metric(
            &metrics,
            r#"vodbridge_http_connections_closed_total{reason="header_timeout"}"#
        )
        .unwrap_or(0.0)
            >= 400.0,
        "{metrics}"
    );
}

/// A body with a key twice is ambiguous (parsers disagree on which value wins): 400, and
/// nothing is published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_keys_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bridge = bridge("", dir.path());
    let client = reqwest::Client::new();
    for body in [
        r#"{"EventType":"NewFileUpload","FileUploadEvent":{"FileId":"1"},"EventType":"FileDeleted"}"#,
        r#"{"EventType":"NewFileUpload","FileUploadEvent":{"FileId":"1","FileId":"2"}}"#,
        r#"{"EventType":"NewFileUpload","FileUploadEvent":{"FileId":"\ud800"}}"#,
        r#"{"EventType":"NewFileUpload","FileUploadEvent":{"FileId":"1","Size":1e400}}"#,
    ] {
        let answer = client
            .post(format!("{}/callback/open", bridge.url()))
            .body(body)
            .send()
            .await
            .expect("answered");
        assert_eq!(answer.status(), 400, "{body}");
        let text = answer.text().await.unwrap_or_default();
        assert!(text.contains("bad_body"), "{body}: {text}");
    }
    let answer = client
        .post(format!("{}/callback/open", bridge.url()))
        .body(fixture("NewFileUpload"))
        .send()
        .await
        .expect("answered");
    assert_eq!(answer.status(), 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        lines(dir.path()),
        1,
        "only the valid callback was published"
    );
}

/// Behind a proxy that appends to `X-Forwarded-For`, the first entry is the client's own words:
/// a spoofed one is refused while the real client's address (the rightmost untrusted entry) is
/// allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_forwarded_for_entry_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bridge = bridge("", dir.path());
    let client = reqwest::Client::new();
    let post = |forwarded: &'static str| {
        client
            .post(format!("{}/callback/default", bridge.url()))
            .header("x-forwarded-for", forwarded)
            .body(fixture("NewFileUpload"))
            .send()
    };
    assert_eq!(
        post("192.0.2.10, 203.0.113.66")
            .await
            .expect("answered")
            .status(),
        403
    );
    assert_eq!(lines(dir.path()), 0);
    assert_eq!(
        post("203.0.113.66, 192.0.2.10")
            .await
            .expect("answered")
            .status(),
        200
    );
}

/// A body that stops halfway is answered 408 after the body timeout, not held forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_gets_408() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bridge = bridge("", dir.path());
    let mut stream = TcpStream::connect(format!("127.0.0.1:{}", bridge.port)).expect("connects");
    stream
        .write_all(b"POST /callback/open HTTP/1.1\r\nHost: bridge\r\nContent-Length: 100\r\n\r\n{\"EventType\":")
        .expect("half a body");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let started = Instant::now();
    let mut answer = String::new();
    let mut buf = [0u8; 1024];
    if let Ok(n) = stream.read(&mut buf) {
        answer.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() >= Duration::from_millis(1500));
}
