//! The bridge into a Kafka-compatible broker (tansu): callbacks and pulled events land with
//! `ce_*` headers, key and bytes; nothing is acknowledged before the delivery report; too-large
//! events are dead-lettered with their reason.

use std::time::Duration;

use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    message::{Headers, Message as _, OwnedMessage},
    ClientConfig, Offset, TopicPartitionList,
};
use vod_emulator::generate::parse_types;
use vodbridge_core::Envelope;
use vodbridge_testkit::{ScramUser, Tansu, TestPki};

use crate::helpers::{emulator, fixture, settings, wait_for, TestApp};

async fn create_topics(broker: &Tansu) {
    broker
        .create_topics(&[("vod.events", 3), ("vod.deadletter", 1)])
        .await;
}

fn consume(broker: &Tansu, topic: &str, partitions: i32, expected: usize) -> Vec<OwnedMessage> {
    consume_with(ClientConfig::new(), broker, topic, partitions, expected)
}

/// Reads `expected` messages of `topic` from the beginning, as a client configured by `client`.
fn consume_with(
    mut client: ClientConfig,
    broker: &Tansu,
    topic: &str,
    partitions: i32,
    expected: usize,
) -> Vec<OwnedMessage> {
    let consumer: BaseConsumer = client
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "vodbridge-it")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, Offset::Beginning)
            .expect("offset");
    }
    consumer.assign(&assignment).expect("assign");
    let started = std::time::Instant::now();
    let mut out = Vec::new();
    while out.len() < expected {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{topic}: only {} of {expected}",
            out.len()
        );
        if let Some(message) = consumer.poll(Duration::from_millis(200)) {
            out.push(message.expect("message").detach());
        }
    }
    out
}

fn decode(message: &OwnedMessage) -> Envelope {
    let header = |name: &str| {
        message
            .headers()
            .and_then(|h| {
                h.iter()
                    .find(|x| x.key == format!("ce_{name}"))
                    .and_then(|x| x.value)
            })
            .map(|v| String::from_utf8_lossy(v).into_owned().into())
    };
    let envelope = Envelope::from_binary(
        header,
        message.payload().unwrap_or_default().to_vec().into(),
    )
    .expect("a CloudEvent");
    // Every event carries its trace: the binding's ce_traceparent and W3C's own header agree.
    let plain = message
        .headers()
        .and_then(|h| {
            h.iter()
                .find(|x| x.key == "traceparent")
                .and_then(|x| x.value)
        })
        .map(|v| String::from_utf8_lossy(v).into_owned());
    let traceparent = envelope.traceparent.expect("ce_traceparent").to_string();
    assert_eq!(
        plain.as_deref(),
        Some(traceparent.as_str()),
        "traceparent header"
    );
    envelope
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_into_kafka() {
    let mut broker = Tansu::start();
    create_topics(&broker).await;
    let emu = emulator("AKIDKAFKA", "kafka-key", Duration::from_secs(4)).await;
    let toml = format!(
        r#"
[server]
publish_timeout_ms = 2500
[sources.default]
mode = "push"
sub_app_id = 1500000001
# These tests check that nothing is answered 200 while the broker is down, so fast; holding
# for VOD is tested in the reliability suite (push_outage.rs).
on_sink_failure = "reject"
[sources.app]
mode = "pull"
endpoint = "{endpoint}"
sub_app_id = 1500000002
secret_id = "AKIDKAFKA"
secret_key = "kafka-key"
handle_lifetime_ms = 4000
confirm_margin_ms = 1000
max_backoff_ms = 300
[sinks.kafka]
type = "kafka"
brokers = "{brokers}"
message_timeout_ms = 2000
# Idempotence on (the default): tansu (memory storage) forgets producer ids on restart, and
# the sink replaces the wedged producer (see crates/vodbridge-kafka/tests/it.rs).
properties = {{ "message.max.bytes" = "8000" }}
[sinks.dlq]
type = "kafka"
brokers = "{brokers}"
message_timeout_ms = 2000
[[routes]]
event_types = ["*"]
sinks = [{{ sink = "kafka", destination = "vod.events" }}]
[dead_letter]
sink = "dlq"
destination = "vod.deadletter"
"#,
        endpoint = emu.endpoint(),
        brokers = broker.bootstrap()
    );
    let app = TestApp::start(settings(&toml), vec![]).await;
    app.wait_ready(Duration::from_secs(20)).await;

    // Push and pull land with headers, key and bytes.
    assert_eq!(
        app.post("/callback/default", fixture("ProcedureStateChanged"))
            .await
            .status(),
        200
    );
    emu.emulator.generate(1_500_000_002, 30, &parse_types(""));
    wait_for(
        "30 pulled events confirmed",
        Duration::from_secs(30),
        || emu.emulator.stats().confirmed == 30,
    )
    .await;
    let received = consume(&broker, "vod.events", 3, 31);
    for message in &received {
        let envelope = decode(message);
        assert_eq!(
            message.key(),
            Some(envelope.partition_key.as_bytes()),
            "key = partitionkey"
        );
        assert!(
            !String::from_utf8_lossy(message.payload().unwrap_or_default()).contains("EventHandle")
        );
    }
    let pushed = received
        .iter()
        .map(decode)
        .find(|e| e.sub_app_id == Some(1_500_000_001))
        .map(|e| e.data);
    assert_eq!(
        pushed,
        Some(fixture("ProcedureStateChanged").into()),
        "bytes as received"
    );

    // Too large: dead-lettered with the reason, answered 200 (handled), not retried forever.
    let big = format!(
        r#"{{"EventType":"NewFileUpload","FileUploadEvent":{{"FileId":"big","Pad":"{}"}}}}"#,
        "x".repeat(9000)
    );
    assert_eq!(
        app.post("/callback/default", big.clone()).await.status(),
        200,
        "dead-lettered counts as handled"
    );
    let dead = consume(&broker, "vod.deadletter", 1, 1);
    let reason = dead[0].headers().and_then(|h| {
        h.iter()
            .find(|x| x.key == "ce_deadletterreason")
            .and_then(|x| x.value)
    });
    assert_eq!(reason, Some(&b"too_large"[..]));
    let header = |name: &str| {
        dead[0].headers().and_then(|h| {
            h.iter()
                .find(|x| x.key == name)
                .and_then(|x| x.value)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        })
    };
    assert_eq!(
        (
            header("ce_deadlettersink").as_deref(),
            header("ce_deadletterdestination").as_deref()
        ),
        (Some("kafka"), Some("vod.events")),
        "the dead letter names the sink and the topic that refused it"
    );

    // Broker down: 503 and no confirm; back up: everything delivered.
    broker.stop();
    assert_eq!(
        app.post("/callback/default", fixture("NewFileUpload"))
            .await
            .status(),
        503
    );
    emu.emulator.generate(1_500_000_002, 5, &parse_types(""));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        emu.emulator.stats().confirmed,
        30,
        "no confirm while the broker is down"
    );
    broker.restart();
    create_topics(&broker).await;
    wait_for(
        "the rest confirmed after the restart",
        Duration::from_secs(40),
        || emu.emulator.stats().confirmed == 35,
    )
    .await;
    app.wait_ready(Duration::from_secs(20)).await;
    assert_eq!(
        app.post("/callback/default", fixture("NewFileUpload"))
            .await
            .status(),
        200,
        "VOD's retry succeeds"
    );
    let after = consume(&broker, "vod.events", 3, 6);
    assert!(after.len() >= 6);
    app.stop().await.expect("clean stop");
}

/// librdkafka properties of a client reaching `broker` (TLS from `pki`'s CA, SASL).
fn secure(pki: &TestPki, mechanism: &str, user: &str, password: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("security.protocol", "SASL_SSL")
        .set("ssl.ca.location", pki.ca().display().to_string())
        .set("sasl.mechanism", mechanism)
        .set("sasl.username", user)
        .set("sasl.password", password);
    config
}

/// Managed Kafka (CKafka, Confluent Cloud, MSK, Aiven) is reached over TLS with SASL. Against
/// a broker that requires both: one sink per SCRAM mechanism (SHA-256, SHA-512, the passwords
/// read from secret files) each delivers a pushed and a pulled event; a wrong password is named
/// on `/readyz`, and nothing is confirmed to VOD. (tansu 0.6 serves SCRAM only: PLAIN and
/// OAUTHBEARER are refused with `NoSharedMechanism`, and librdkafka's mock cluster has no SASL.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_over_tls_and_a_wrong_password() {
    let pki = TestPki::generate();
    let broker = Tansu::start_secure(
        &pki,
        &[
            ScramUser {
                name: "bridge256",
                password: "pw-256",
                mechanism: "scram256",
            },
            ScramUser {
                name: "bridge512",
                password: "pw-512",
                mechanism: "scram512",
            },
        ],
    );
    broker
        .create_topics_as(
            secure(&pki, "SCRAM-SHA-512", "bridge512", "pw-512"),
            &[("vod.scram256", 1), ("vod.scram512", 1), ("vod.wrong", 1)],
        )
        .await;
    let secrets = tempfile::tempdir().expect("secrets");
    let secret = |name: &str, value: &str| {
        let path = secrets.path().join(name);
        std::fs::write(&path, value).expect("a secret file");
        path.display().to_string()
    };
    let (pw256, pw512, wrong) = (
        secret("pw256", "pw-256"),
        secret("pw512", "pw-512\n"),
        secret("wrong", "not-the-password"),
    );

    let emu = emulator("AKIDSASL", "sasl-key", Duration::from_secs(4)).await;
    let sink = |name: &str, mechanism: &str, user: &str, password: &str| {
        format!(
            r#"
[sinks.{name}]
type = "kafka"
brokers = "{brokers}"
message_timeout_ms = 3000
properties = {{ "security.protocol" = "SASL_SSL", "ssl.ca.location" = "{ca}", "sasl.mechanism" = "{mechanism}", "sasl.username" = "{user}" }}
secret_property_files = {{ "sasl.password" = "{password}" }}
"#,
            brokers = broker.bootstrap(),
            ca = pki.ca().display(),
        )
    };
    let bridge = |sinks: &[(&str, &str, &str, &str)], sub_app: u64| {
        let sections: String = sinks.iter().map(|(n, m, u, p)| sink(n, m, u, p)).collect();
        let routes: Vec<String> = sinks
            .iter()
            .map(|(n, ..)| format!(r#"{{ sink = "{n}", destination = "vod.{n}" }}"#))
            .collect();
        format!(
            r#"
[server]
publish_timeout_ms = 3000
[sources.default]
mode = "push"
sub_app_id = 1500000001
on_sink_failure = "reject"
[sources.app]
mode = "pull"
endpoint = "{endpoint}"
sub_app_id = {sub_app}
secret_id = "AKIDSASL"
secret_key = "sasl-key"
handle_lifetime_ms = 4000
confirm_margin_ms = 1000
max_backoff_ms = 300
{sections}
[[routes]]
event_types = ["*"]
sinks = [{routes}]
"#,
            endpoint = emu.endpoint(),
            routes = routes.join(", ")
        )
    };

    // Every mechanism delivers: one pushed, one pulled event in each sink's topic.
    let good = [
        ("scram256", "SCRAM-SHA-256", "bridge256", pw256.as_str()),
        ("scram512", "SCRAM-SHA-512", "bridge512", pw512.as_str()),
    ];
    let app = TestApp::start(settings(&bridge(&good, 1_500_000_002)), vec![]).await;
    app.wait_ready(Duration::from_secs(30)).await;
    assert_eq!(
        app.post("/callback/default", fixture("NewFileUpload"))
            .await
            .status(),
        200
    );
    emu.emulator.generate(1_500_000_002, 1, &parse_types(""));
    wait_for(
        "the pulled event confirmed",
        Duration::from_secs(30),
        || emu.emulator.stats().confirmed == 1,
    )
    .await;
    for (topic, mechanism, user, password) in [
        ("vod.scram256", "SCRAM-SHA-256", "bridge256", "pw-256"),
        ("vod.scram512", "SCRAM-SHA-512", "bridge512", "pw-512"),
    ] {
        let received = consume_with(
            secure(&pki, mechanism, user, password),
            &broker,
            topic,
            1,
            2,
        );
        let subs: std::collections::BTreeSet<Option<u64>> =
            received.iter().map(|m| decode(m).sub_app_id).collect();
        assert_eq!(
            subs,
            [Some(1_500_000_001), Some(1_500_000_002)].into(),
            "{topic}: the pushed and the pulled event"
        );
    }
    app.stop().await.expect("clean stop");

    // A wrong SCRAM password: not ready, with the reason; nothing answered 200 or confirmed.
    let app = TestApp::start(
        settings(&bridge(
            &[("wrong", "SCRAM-SHA-512", "bridge512", wrong.as_str())],
            1_500_000_003,
        )),
        vec![],
    )
    .await;
    emu.emulator.generate(1_500_000_003, 3, &parse_types(""));
    let started = std::time::Instant::now();
    let reason = loop {
        let (status, body) = app.get("/readyz").await;
        assert_eq!(status, 503, "never ready with a wrong password: {body}");
        if body.to_ascii_lowercase().contains("authentication")
            || started.elapsed() > Duration::from_secs(15)
        {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        reason.contains("wrong") && reason.to_ascii_lowercase().contains("authentication"),
        "/readyz names the sink and the cause: {reason}"
    );
    assert!(!reason.contains("not-the-password"), "no secret on /readyz");
    eprintln!("wrong password: /readyz says {}", reason.trim());
    assert_ne!(
        app.post("/callback/default", fixture("NewFileUpload"))
            .await
            .status(),
        200,
        "no push confirmed"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        emu.emulator.stats().confirmed,
        1,
        "no pulled event confirmed"
    );
    let (_, metrics) = app.get("/metrics").await;
    assert!(
        !metrics.contains("not-the-password"),
        "no secret in metrics"
    );
    let reader: BaseConsumer = secure(&pki, "SCRAM-SHA-512", "bridge512", "pw-512")
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "vodbridge-it")
        .create()
        .expect("a reader");
    let (low, high) = reader
        .fetch_watermarks("vod.wrong", 0, Duration::from_secs(10))
        .expect("watermarks");
    assert_eq!(high - low, 0, "nothing reached the broker");
    app.stop().await.expect("clean stop");
}
