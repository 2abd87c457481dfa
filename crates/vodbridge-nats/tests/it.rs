//! The NATS sink against a real `nats-server -js`: PubAck before success, headers and bytes,
//! duplicates stored once, nothing lost across a crash-restart, unroutable subjects rejected,
//! and the sink contract (`vodbridge_testkit::contract`).

use std::{collections::HashSet, sync::Arc, time::Duration};

use bytes::Bytes;
use vodbridge_core::{Background, Envelope, FailureReason, Message, Sink};
use vodbridge_nats::{NatsSink, NatsSinkConfig, StorageKind};
use vodbridge_testkit::{contract, NatsServer, TestPki};

/// A NewFileUpload of video `n` to `subject`: the contract's message.
fn message(n: u32, subject: &str) -> Message {
    contract::message(n.into(), subject, None)
}

fn config(server: &NatsServer, storage: StorageKind) -> NatsSinkConfig {
    NatsSinkConfig {
        url: server.url(),
        stream: "VOD".into(),
        create_stream: true,
        stream_subjects: vec!["vod.>".into()],
        duplicate_window_secs: 120,
        storage,
        replicas: 1,
        ack_timeout_ms: 2000,
        ping_interval_ms: 4000,
        stall_timeout_ms: 10_000,
        structured: false,
        credentials_file: None,
        token_file: None,
        tls_required: false,
        root_certificates: None,
        client_cert_file: None,
        client_key_file: None,
    }
}

async fn healthy(sink: &NatsSink, timeout: Duration) {
    let started = std::time::Instant::now();
    while !sink.is_healthy() {
        assert!(
            started.elapsed() < timeout,
            "sink not healthy within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn stream(server: &NatsServer) -> async_nats::jetstream::stream::Stream {
    let client = async_nats::connect(server.url())
        .await
        .expect("consumer connects");
    async_nats::jetstream::new(client)
        .get_stream("VOD")
        .await
        .expect("stream exists")
}

#[tokio::test]
async fn publish_is_acknowledged_and_carries_cloudevents_headers() {
    let server = NatsServer::start();
    let sink = NatsSink::start(
        "nats",
        config(&server, StorageKind::Memory),
        Background::default(),
    )
    .expect("sink");
    healthy(&sink, Duration::from_secs(10)).await;
    let msg = message(7, "vod.1.NewFileUpload");
    sink.publish(&msg).await.expect("PubAck");
    let stored = stream(&server)
        .await
        .get_raw_message(1)
        .await
        .expect("stored");
    assert_eq!(stored.subject.as_str(), "vod.1.NewFileUpload");
    assert_eq!(
        stored.payload, msg.envelope.data,
        "body = data, byte for byte"
    );
    let header = |name: &str| stored.headers.get(name).map(|v| v.as_str().to_owned());
    assert_eq!(header("Nats-Msg-Id"), Some(msg.envelope.id.to_string()));
    assert_eq!(header("ce-id"), Some(msg.envelope.id.to_string()));
    assert_eq!(
        header("ce-type").as_deref(),
        Some("com.tencentcloud.vod.NewFileUpload")
    );
    assert_eq!(header("ce-specversion").as_deref(), Some("1.0"));
    assert_eq!(header("ce-vodingress").as_deref(), Some("pull"));
    assert_eq!(header("content-type").as_deref(), Some("application/json"));
    // A consumer rebuilds the envelope from the headers.
    let decoded = Envelope::from_binary(
        |name| {
            stored
                .headers
                .get(format!("ce-{name}").as_str())
                .map(|v| v.as_str().to_owned().into())
        },
        stored.payload.clone(),
    )
    .expect("decodes");
    assert_eq!(&decoded, msg.envelope.as_ref());
}

#[tokio::test]
async fn the_same_event_published_twice_is_stored_once() {
    let server = NatsServer::start();
    let sink = NatsSink::start(
        "nats",
        config(&server, StorageKind::File),
        Background::default(),
    )
    .expect("sink");
    healthy(&sink, Duration::from_secs(10)).await;
    sink.publish(&message(1, "vod.x")).await.expect("first");
    sink.publish(&message(1, "vod.x"))
        .await
        .expect("a redelivery is acknowledged too");
    sink.publish(&message(2, "vod.x"))
        .await
        .expect("another event");
    let info = stream(&server).await.get_info().await.expect("info");
    assert_eq!(
        info.state.messages, 2,
        "the redelivery was dropped by Nats-Msg-Id"
    );
}

#[tokio::test]
async fn unroutable_subject_is_rejected_not_retried() {
    let server = NatsServer::start();
    let sink = NatsSink::start(
        "nats",
        config(&server, StorageKind::Memory),
        Background::default(),
    )
    .expect("sink");
    healthy(&sink, Duration::from_secs(10)).await;
    let error = sink
        .publish(&message(1, "elsewhere.x"))
        .await
        .expect_err("no stream captures it");
    assert!(!error.is_retryable(), "{error}");
    assert_eq!(error.reason(), FailureReason::Unroutable);
}

/// Creates the `VOD` stream (memory storage, `vod.>`) the way its owner would, outside the sink.
async fn create_stream_as_its_owner(server: &NatsServer) {
    let client = async_nats::connect(server.url()).await.expect("connects");
    async_nats::jetstream::new(client)
        .create_stream(async_nats::jetstream::stream::Config {
            name: "VOD".into(),
            subjects: vec!["vod.>".into()],
            storage: async_nats::jetstream::stream::StorageType::Memory,
            ..Default::default()
        })
        .await
        .expect("created by its owner");
}

#[tokio::test]
async fn too_large_is_rejected_and_a_missing_stream_keeps_the_sink_down() {
    let server = NatsServer::start();

    // create_stream = false: the stream is only checked. Until its owner creates it the sink is
    // unhealthy; then it becomes ready by itself.
    let sink = NatsSink::start(
        "nats",
        NatsSinkConfig {
            create_stream: false,
            ..config(&server, StorageKind::Memory)
        },
        Background::default(),
    )
    .expect("sink");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!sink.is_healthy(), "no stream yet");
    create_stream_as_its_owner(&server).await;
    healthy(&sink, Duration::from_secs(15)).await;
    sink.publish(&message(1, "vod.x")).await.expect("acked");

    // Above the server's max_payload (1 MiB by default): permanent, too_large.
    let mut big = message(2, "vod.x");
    big.envelope = Arc::new(Envelope {
        data: Bytes::from(vec![b'x'; 1024 * 1024 + 1]),
        ..(*big.envelope).clone()
    });
    let error = sink.publish(&big).await.expect_err("too large");
    assert_eq!(error.reason(), FailureReason::TooLarge, "{error}");
    assert!(!error.is_retryable());
    sink.publish(&message(3, "vod.x"))
        .await
        .expect("the connection is fine afterwards");
}

#[tokio::test]
async fn a_stream_deleted_while_running_is_created_again() {
    let server = NatsServer::start();
    let sink = NatsSink::start(
        "nats",
        config(&server, StorageKind::Memory),
        Background::default(),
    )
    .expect("sink");
    healthy(&sink, Duration::from_secs(10)).await;
    sink.publish(&message(1, "vod.x")).await.expect("acked");
    let client = async_nats::connect(server.url()).await.expect("connects");
    let js = async_nats::jetstream::new(client);
    js.delete_stream("VOD").await.expect("deleted by someone");

    // The first publish finds no stream (unroutable: the pipeline retries such answers); the
    // sink creates the stream again, and a retry moments later is stored.
    let error = sink
        .publish(&message(2, "vod.x"))
        .await
        .expect_err("no stream right now");
    assert_eq!(error.reason(), FailureReason::Unroutable, "{error}");
    let started = std::time::Instant::now();
    while let Err(error) = sink.publish(&message(2, "vod.x")).await {
        assert!(started.elapsed() < Duration::from_secs(5), "{error}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let info = js
        .get_stream("VOD")
        .await
        .expect("created again")
        .info()
        .await
        .expect("info")
        .clone();
    assert_eq!(info.state.messages, 1, "the retried event, stored once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_restart_with_file_storage_loses_nothing() {
    let mut server = NatsServer::start();
    let sink = Arc::new(
        NatsSink::start(
            "nats",
            config(&server, StorageKind::File),
            Background::default(),
        )
        .expect("sink"),
    );
    healthy(&sink, Duration::from_secs(10)).await;
    // Publish 300 events like the bridge does: a failed publish is retried (VOD redelivers).
    let publisher = {
        let sink = Arc::clone(&sink);
        tokio::spawn(async move {
            let mut failures = 0;
            for n in 0..300 {
                let msg = message(n, "vod.crash");
                while let Err(error) = sink.publish(&msg).await {
                    assert!(error.is_retryable(), "{error}");
                    failures += 1;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            failures
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.stop();
    let down = std::time::Instant::now();
    while sink.is_healthy() {
        assert!(
            down.elapsed() < Duration::from_secs(10),
            "health follows the connection"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart();
    let failures = publisher.await.expect("publisher");
    healthy(&sink, Duration::from_secs(10)).await;
    let info = stream(&server).await.get_info().await.expect("info");
    assert_eq!(
        info.state.messages, 300,
        "every acknowledged event survived, none twice ({failures} retried publishes)"
    );
}

#[tokio::test]
async fn token_file_authenticates_and_a_wrong_token_never_connects() {
    let server = NatsServer::start_with_token("s3cret-token");
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("token");
    let bad = dir.path().join("wrong");
    std::fs::write(&good, "s3cret-token\n").expect("write");
    std::fs::write(&bad, "guess\n").expect("write");
    let with = |path: &std::path::Path| NatsSinkConfig {
        token_file: Some(path.to_path_buf()),
        ..config(&server, StorageKind::Memory)
    };

    let sink = NatsSink::start("nats", with(&good), Background::default()).expect("sink");
    healthy(&sink, Duration::from_secs(10)).await;
    sink.publish(&message(1, "vod.token")).await.expect("acked");

    let sink = NatsSink::start("nats", with(&bad), Background::default())
        .expect("starts; connects in the background");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!sink.is_healthy(), "a wrong token never connects");
    let error = sink
        .publish(&message(2, "vod.token"))
        .await
        .expect_err("not connected");
    assert!(error.is_retryable(), "{error}");
    assert!(
        !format!("{:?}", with(&good)).contains("s3cret"),
        "the token is read from the file, never part of the config"
    );

    let missing = NatsSink::start(
        "nats",
        with(&dir.path().join("absent")),
        Background::default(),
    )
    .err()
    .expect("a missing token file is a start-up error");
    assert!(missing.to_string().contains("absent"), "{missing}");
}

#[tokio::test]
async fn tls_with_a_private_ca_and_a_client_certificate() {
    let pki = TestPki::generate();
    let server = NatsServer::start_tls(&pki);
    let tls = |ca: bool, client: bool| NatsSinkConfig {
        tls_required: true,
        root_certificates: ca.then(|| pki.ca()),
        client_cert_file: client.then(|| pki.client_cert()),
        client_key_file: client.then(|| pki.client_key()),
        ..config(&server, StorageKind::Memory)
    };

    // Trusting the CA and presenting a client certificate: connected, publishes acknowledged.
    let sink = NatsSink::start("nats-tls", tls(true, true), Background::default()).expect("sink");
    healthy(&sink, Duration::from_secs(10)).await;
    sink.publish(&message(1, "vod.tls")).await.expect("acked");

    // An unknown CA, or no client certificate: never connected, publishes fail as retryable.
    for (ca, client, what) in [
        (false, true, "server certificate from an unknown CA"),
        (true, false, "no client certificate"),
    ] {
        let sink = NatsSink::start("nats-bad-tls", tls(ca, client), Background::default())
            .expect("starts; connects in the background");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!sink.is_healthy(), "{what}: must not connect");
        let error = sink.publish(&message(2, "vod.tls")).await.expect_err(what);
        assert!(error.is_retryable(), "{what}: {error}");
    }

    // Half a client identity, or a missing file, is a start-up error.
    let mut half = tls(true, true);
    half.client_key_file = None;
    let error = NatsSink::start("nats", half, Background::default())
        .err()
        .expect("rejected");
    assert!(error.to_string().contains("go together"), "{error}");
    let mut missing = tls(true, false);
    missing.root_certificates = Some("/nonexistent/ca.pem".into());
    let error = NatsSink::start("nats", missing, Background::default())
        .err()
        .expect("rejected");
    assert!(error.to_string().contains("/nonexistent/ca.pem"), "{error}");

    // A consumer over TLS reads what was published.
    let client = async_nats::ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(pki.ca())
        .add_client_certificate(pki.client_cert(), pki.client_key())
        .connect(server.url())
        .await
        .expect("consumer connects");
    let info = async_nats::jetstream::new(client)
        .get_stream("VOD")
        .await
        .expect("stream")
        .info()
        .await
        .expect("info")
        .clone();
    assert_eq!(
        info.state.messages, 1,
        "exactly the one acknowledged publish"
    );
}

/// `close()` stops the stream check that would otherwise retry forever (the stream must exist
/// and never does) and waits for it: no check runs after close, and a stream created later is
/// not noticed by the closed sink.
#[tokio::test]
async fn close_stops_the_stream_checks_and_waits_for_them() {
    let server = NatsServer::start();
    let sink = NatsSink::start(
        "nats",
        NatsSinkConfig {
            create_stream: false,
            ..config(&server, StorageKind::Memory)
        },
        Background::default(),
    )
    .expect("sink");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !sink.is_healthy(),
        "the stream is missing, the check keeps retrying"
    );
    let started = std::time::Instant::now();
    sink.close().await.expect("closes");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "close waited only for the check to stop: {:?}",
        started.elapsed()
    );
    create_stream_as_its_owner(&server).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !sink.is_healthy(),
        "no stream check ran after close (it would have found the stream)"
    );
}

/// NATS JetStream under the sink contract: file storage, the sink creates the `VOD` stream.
struct ContractNats(NatsServer);

impl contract::Broker for ContractNats {
    type Sink = NatsSink;

    fn sink(&self) -> NatsSink {
        NatsSink::start(
            "nats",
            config(&self.0, StorageKind::File),
            Background::default(),
        )
        .expect("sink")
    }

    fn routable(&self) -> String {
        "vod.1.NewFileUpload".into()
    }

    fn unroutable(&self) -> String {
        "elsewhere.x".into()
    }

    fn too_large(&self) -> usize {
        // nats-server's max_payload is 1 MiB by default.
        1024 * 1024 + 1
    }

    async fn stored(&mut self) -> HashSet<String> {
        let stream = stream(&self.0).await;
        let state = stream.get_info().await.expect("info").state;
        let mut ids = HashSet::new();
        for sequence in state.first_sequence..=state.last_sequence {
            if let Ok(message) = stream.get_raw_message(sequence).await {
                if let Some(id) = message.headers.get("ce-id") {
                    ids.insert(id.as_str().to_owned());
                }
            }
        }
        ids
    }

    fn stop(&mut self) {
        self.0.stop();
    }

    async fn restart(&mut self) {
        self.0.restart();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_contract() {
    let report = contract::run(&mut ContractNats(NatsServer::start())).await;
    eprintln!("NATS under the sink contract: {report:?}");
}
