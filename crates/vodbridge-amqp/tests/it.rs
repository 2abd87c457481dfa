//! The AMQP sink against a real RabbitMQ: confirms before success, properties and headers,
//! unroutable messages are failures, a broker stop with publishes in flight loses nothing, and
//! the sink contract (`vodbridge_testkit::contract`).

use std::{collections::HashSet, sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::StreamExt;
use lapin::{
    options::{BasicAckOptions, BasicConsumeOptions},
    types::{AMQPValue, FieldTable},
    Connection,
};
use vodbridge_amqp::{AmqpSink, AmqpSinkConfig, ExchangeType};
use vodbridge_core::{Background, Envelope, EventId, FailureReason, Ingress, Message, Sink};
use vodbridge_testkit::{contract, rabbitmq_client, RabbitMq, TestPki};

fn envelope(n: u32) -> Arc<Envelope> {
    let data = format!(r#"{{"EventType":"NewFileUpload","FileUploadEvent":{{"FileId":"{n}"}}}}"#);
    Arc::new(Envelope {
        id: EventId::derive("/tencentcloud/vod/1", data.as_bytes()),
        source: "/tencentcloud/vod/1".into(),
        ty: "com.tencentcloud.vod.NewFileUpload".into(),
        subject: Some(n.to_string()),
        time: time::OffsetDateTime::from_unix_timestamp(1_740_816_000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
        event_time_known: true,
        data: Bytes::from(data),
        event_type: "NewFileUpload".into(),
        sub_app_id: Some(1),
        ingress: Ingress::Push,
        task_id: None,
        partition_key: n.to_string(),
        traceparent: None,
    })
}

fn message(n: u32, routing_key: &str) -> Message {
    Message {
        envelope: envelope(n),
        destination: routing_key.to_owned(),
        dead_letter: None,
    }
}

fn config(broker: &RabbitMq) -> AmqpSinkConfig {
    AmqpSinkConfig {
        url: Some(broker.url()),
        url_file: None,
        exchange: "vod".into(),
        exchange_type: ExchangeType::Topic,
        declare_exchange: true,
        channels: 4,
        structured: false,
        max_reconnect_backoff_ms: 500,
        heartbeat_secs: 5,
        connect_timeout_ms: 5_000,
        stall_timeout_ms: 10_000,
        ca_file: None,
        client_cert_file: None,
        client_key_file: None,
    }
}

async fn healthy(sink: &AmqpSink, timeout: Duration) {
    let started = std::time::Instant::now();
    while !sink.is_healthy() {
        assert!(
            started.elapsed() < timeout,
            "sink not healthy within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A durable queue bound to `vod` with `pattern`, and a channel to consume it on.
async fn queue(broker: &RabbitMq, name: &str, pattern: &str) -> (Connection, lapin::Channel) {
    let (connection, channel) = broker.channel().await;
    rabbitmq_client::declare_queue(&channel, "vod", name, pattern, FieldTable::default()).await;
    (connection, channel)
}

async fn drain(
    channel: &lapin::Channel,
    queue: &str,
    expected: usize,
) -> Vec<lapin::message::Delivery> {
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "test".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let mut out = Vec::new();
    while out.len() < expected {
        let next = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("a delivery in time");
        let delivery = next.expect("stream open").expect("delivery");
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
        out.push(delivery);
    }
    out
}

fn header(delivery: &lapin::message::Delivery, name: &str) -> Option<String> {
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_end_to_end() {
    // One broker for the whole story: starting RabbitMQ costs seconds.
    let mut broker = RabbitMq::start();
    let sink =
        Arc::new(AmqpSink::start("amqp", config(&broker), Background::default()).expect("sink"));
    healthy(&sink, Duration::from_secs(20)).await;

    // 1. Acknowledged, persistent, with CloudEvents properties and headers.
    let (_connection, consumer) = queue(&broker, "uploads", "vod.*.NewFileUpload").await;
    let msg = message(7, "vod.1.NewFileUpload");
    sink.publish(&msg).await.expect("confirmed");
    let delivered = drain(&consumer, "uploads", 1).await;
    let d = &delivered[0];
    assert_eq!(
        d.data,
        msg.envelope.data.to_vec(),
        "body = data, byte for byte"
    );
    assert_eq!(d.routing_key.as_str(), "vod.1.NewFileUpload");
    let p = &d.properties;
    assert_eq!(
        p.message_id().as_ref().map(|s| s.as_str().to_owned()),
        Some(msg.envelope.id.to_string())
    );
    assert_eq!(p.delivery_mode(), &Some(2), "persistent");
    assert_eq!(
        p.kind().as_ref().map(|s| s.as_str()),
        Some("com.tencentcloud.vod.NewFileUpload")
    );
    assert_eq!(
        p.content_type().as_ref().map(|s| s.as_str()),
        Some("application/json")
    );
    assert_eq!(p.timestamp(), &Some(1_740_816_000));
    assert_eq!(
        header(d, "cloudEvents_id"),
        Some(msg.envelope.id.to_string())
    );
    assert_eq!(header(d, "cloudEvents_specversion").as_deref(), Some("1.0"));
    let decoded = Envelope::from_binary(
        |name| header(d, &format!("cloudEvents_{name}")).map(Into::into),
        Bytes::from(d.data.clone()),
    )
    .expect("decodes");
    assert_eq!(&decoded, msg.envelope.as_ref());

    // 2. Unroutable: mandatory + publisher confirms make it a permanent failure.
    let error = sink
        .publish(&message(8, "nobody.listens.here"))
        .await
        .expect_err("no queue bound");
    assert_eq!(error.reason(), FailureReason::Unroutable, "{error}");
    assert!(!error.is_retryable());
    sink.publish(&message(9, "vod.1.NewFileUpload"))
        .await
        .expect("the sink still works after a return");
    drain(&consumer, "uploads", 1).await;

    // 2b. Above the broker's max_message_size: RabbitMQ refuses the message and closes the
    //     channel. That is a permanent too_large failure, and the sink reopens and goes on.
    let mut big = message(10, "vod.1.NewFileUpload");
    big.envelope = Arc::new(Envelope {
        data: Bytes::from(vec![b'x'; RabbitMq::MAX_MESSAGE_SIZE + 1024]),
        ..(*big.envelope).clone()
    });
    let error = sink.publish(&big).await.expect_err("too large");
    assert_eq!(error.reason(), FailureReason::TooLarge, "{error}");
    assert!(!error.is_retryable(), "{error}");
    // The other channels keep working: only the closed one is replaced, the connection and
    // the publishes on it are not torn down.
    for n in 11..14 {
        sink.publish(&message(n, "vod.1.NewFileUpload"))
            .await
            .expect("the other channels are unaffected");
    }
    publish_until_confirmed(&sink, &message(14, "vod.1.NewFileUpload")).await;
    let after = drain(&consumer, "uploads", 4).await;
    let subjects: HashSet<String> = after
        .iter()
        .filter_map(|d| header(d, "cloudEvents_subject"))
        .collect();
    assert_eq!(subjects, ["11", "12", "13", "14"].map(String::from).into());

    // 2c. declare_exchange = false: the exchange is only checked. Until someone declares it
    //     the sink is unhealthy and publishes fail as retryable; then it connects by itself.
    let passive = AmqpSink::start(
        "passive",
        AmqpSinkConfig {
            exchange: "vod-managed".into(),
            declare_exchange: false,
            ..config(&broker)
        },
        Background::default(),
    )
    .expect("sink");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !passive.is_healthy(),
        "a missing exchange keeps the sink down"
    );
    let error = passive
        .publish(&message(12, "vod.1.NewFileUpload"))
        .await
        .expect_err("no exchange yet");
    assert!(error.is_retryable(), "{error}");
    consumer
        .exchange_declare(
            "vod-managed".into(),
            lapin::ExchangeKind::Topic,
            lapin::options::ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declared by its owner");
    healthy(&passive, Duration::from_secs(10)).await;
    passive.close().await.expect("closes");

    // 3. A broker stop, then a crash (SIGKILL of the VM), each with publishes in flight on
    //    every channel, lose nothing confirmed: durable queue, persistent messages, failed
    //    publishes retried (as VOD's redelivery would). A message in flight at the stop may be
    //    stored while its confirm is lost, so its retry stores it twice: queues are drained by
    //    id, never by count (a count-based drain once made such a duplicate look like a loss).
    interrupt_mid_stream(&sink, &mut broker, 2, RabbitMq::stop).await;
    interrupt_mid_stream(&sink, &mut broker, 3, RabbitMq::crash).await;
}

/// Publishes `msg`, retrying retryable failures for up to 5 s.
async fn publish_until_confirmed(sink: &AmqpSink, msg: &Message) {
    let started = std::time::Instant::now();
    while let Err(error) = sink.publish(msg).await {
        assert!(
            error.is_retryable() && started.elapsed() < Duration::from_secs(5),
            "{error}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Four publishers send 500 events each to `vod.{app}.NewFileUpload`, retrying retryable
/// failures, while `interrupt` takes the broker down; then every event must be in the queue.
async fn interrupt_mid_stream(
    sink: &Arc<AmqpSink>,
    broker: &mut RabbitMq,
    app: u32,
    interrupt: fn(&mut RabbitMq),
) {
    let queue_name = format!("all-{app}");
    let routing_key = format!("vod.{app}.NewFileUpload");
    let _bound = queue(broker, &queue_name, &routing_key).await;
    let base = app * 10_000;
    let publishers: Vec<_> = (0..4)
        .map(|p| {
            let sink = Arc::clone(sink);
            let routing_key = routing_key.clone();
            tokio::spawn(async move {
                let mut retried = 0_u32;
                for n in (0..500).map(|i| base + p * 500 + i) {
                    let msg = message(n, &routing_key);
                    while let Err(error) = sink.publish(&msg).await {
                        assert!(error.is_retryable(), "{error}");
                        retried += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                retried
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    interrupt(broker);
    let down = std::time::Instant::now();
    while sink.is_healthy() {
        assert!(
            down.elapsed() < Duration::from_secs(10),
            "health follows the connection"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let error = sink
        .publish(&message(base + 9_999, &routing_key))
        .await
        .expect_err("broker down");
    assert!(error.is_retryable(), "{error}");
    broker.restart();
    let mut retried = 0;
    for publisher in publishers {
        retried += tokio::time::timeout(Duration::from_secs(90), publisher)
            .await
            .expect("publishers finish")
            .expect("task");
    }
    assert!(retried > 0, "the broker went down while publishing");
    let (_connection, consumer) = queue(broker, &queue_name, &routing_key).await;
    let expected: HashSet<String> = (base..base + 2000).map(|n| n.to_string()).collect();
    let (seen, deliveries) = drain_ids(&consumer, &queue_name, &expected).await;
    let missing: Vec<&String> = expected.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "confirmed events lost: {missing:?} ({retried} publishes retried, {deliveries} \
         deliveries)"
    );
    eprintln!(
        "{queue_name}: {retried} publishes retried, {} duplicates",
        deliveries - seen.len()
    );
}

/// Consumes `queue` until every id in `expected` was seen (or 15 s without a delivery);
/// returns the ids seen and the number of deliveries.
async fn drain_ids(
    channel: &lapin::Channel,
    queue: &str,
    expected: &HashSet<String>,
) -> (HashSet<String>, usize) {
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "ids".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let mut seen = HashSet::new();
    let mut deliveries = 0;
    while !expected.is_subset(&seen) {
        let Ok(next) = tokio::time::timeout(Duration::from_secs(15), consumer.next()).await else {
            break;
        };
        let delivery = next.expect("stream open").expect("delivery");
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
        deliveries += 1;
        if let Some(subject) = header(&delivery, "cloudEvents_subject") {
            seen.insert(subject);
        }
    }
    (seen, deliveries)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_with_a_private_ca_and_a_client_certificate() {
    let pki = TestPki::generate();
    let broker = RabbitMq::start_tls(&pki);
    let tls_url = broker.tls_url().expect("a TLS listener");
    let tls = |ca: bool, client: bool| AmqpSinkConfig {
        url: Some(tls_url.clone()),
        ca_file: ca.then(|| pki.ca()),
        client_cert_file: client.then(|| pki.client_cert()),
        client_key_file: client.then(|| pki.client_key()),
        ..config(&broker)
    };

    // Trusting the CA and presenting a client certificate: connected, publishes confirmed.
    let sink = AmqpSink::start("amqps", tls(true, true), Background::default()).expect("sink");
    healthy(&sink, Duration::from_secs(20)).await;
    let (_connection, consumer) = queue(&broker, "tls", "vod.#").await;
    sink.publish(&message(1, "vod.1.NewFileUpload"))
        .await
        .expect("confirmed over TLS");
    let delivered = drain(&consumer, "tls", 1).await;
    assert_eq!(
        header(&delivered[0], "cloudEvents_subject").as_deref(),
        Some("1")
    );

    // An unknown CA (web PKI roots only), or no client certificate: never connected, publishes
    // fail as retryable.
    for (ca, client, what) in [
        (false, true, "server certificate from an unknown CA"),
        (true, false, "no client certificate"),
    ] {
        let sink =
            AmqpSink::start("amqps-bad", tls(ca, client), Background::default()).expect("starts");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!sink.is_healthy(), "{what}: must not connect");
        let error = sink
            .publish(&message(2, "vod.1.NewFileUpload"))
            .await
            .expect_err(what);
        assert!(error.is_retryable(), "{what}: {error}");
        sink.close().await.expect("closes");
    }

    // TLS files on a plain URL, half a client identity, or a missing file: start-up errors.
    let plain = AmqpSinkConfig {
        ca_file: Some(pki.ca()),
        ..config(&broker)
    };
    let errors = [
        AmqpSink::start("a", plain, Background::default()).err(),
        AmqpSink::start(
            "b",
            AmqpSinkConfig {
                client_key_file: None,
                ..tls(true, true)
            },
            Background::default(),
        )
        .err(),
        AmqpSink::start(
            "c",
            AmqpSinkConfig {
                ca_file: Some("/nonexistent/ca.pem".into()),
                ..tls(true, false)
            },
            Background::default(),
        )
        .err(),
        AmqpSink::start(
            "d",
            AmqpSinkConfig {
                ca_file: Some(pki.client_key()),
                ..tls(true, false)
            },
            Background::default(),
        )
        .err(),
    ]
    .map(|e| e.map(|e| e.to_string()).unwrap_or_default());
    assert!(errors[0].contains("need an amqps:// url"), "{}", errors[0]);
    assert!(errors[1].contains("go together"), "{}", errors[1]);
    assert!(errors[2].contains("/nonexistent/ca.pem"), "{}", errors[2]);
    assert!(errors[3].contains("no PEM certificate"), "{}", errors[3]);
}

/// Routable and unroutable publishes interleaved, many in flight: each answer is its own. lapin
/// pairs a `basic.return` with whichever pending confirm it completes next (and a `multiple`
/// ack completes them in hash-map order), so with several publishes in flight on one channel
/// an unroutable message could read as acknowledged, and a routable one as returned. The sink
/// keeps one publish per channel; this fails when it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returns_are_never_paired_with_another_publish() {
    let broker = RabbitMq::start();
    let sink = AmqpSink::start("amqp", config(&broker), Background::default()).expect("sink");
    healthy(&sink, Duration::from_secs(20)).await;
    let (_connection, consumer) = queue(&broker, "paired", "paired.#").await;
    let messages: Vec<Message> = (0..8_000u32)
        .map(|n| {
            message(
                n,
                if n % 2 == 0 {
                    "paired.ok"
                } else {
                    "nowhere.ok"
                },
            )
        })
        .collect();
    let results = futures_util::future::join_all(messages.iter().map(|m| sink.publish(m))).await;
    let mut wrong = Vec::new();
    for (n, result) in results.iter().enumerate() {
        let routable = n % 2 == 0;
        match result {
            Ok(()) if routable => {}
            Err(e) if !routable && e.reason() == FailureReason::Unroutable => {}
            other => wrong.push((n, routable, format!("{other:?}"))),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} answers belong to another publish, e.g. {:?}",
        wrong.len(),
        wrong.first()
    );
    let delivered = drain(&consumer, "paired", 4_000).await;
    let ids: std::collections::HashSet<String> = delivered
        .iter()
        .filter_map(|d| d.properties.message_id().as_ref().map(|m| m.to_string()))
        .collect();
    assert_eq!(ids.len(), 4_000, "every routable message once in the queue");
    sink.close().await.expect("closes");
}

/// RabbitMQ under the sink contract: a durable queue bound to the routable key, read back with
/// `basic.get` on a connection of its own (the broker restarts in the middle).
struct ContractRabbitMq {
    broker: RabbitMq,
    /// Ids read (and acknowledged) so far: a queue hands each message out once.
    seen: HashSet<String>,
}

impl contract::Broker for ContractRabbitMq {
    type Sink = AmqpSink;

    fn sink(&self) -> AmqpSink {
        AmqpSink::start("amqp", config(&self.broker), Background::default()).expect("sink")
    }

    async fn prepare(&mut self) {
        let key = self.routable();
        self.broker
            .declare_queue("vod", "contract", &key, FieldTable::default())
            .await;
    }

    fn routable(&self) -> String {
        "vod.contract.NewFileUpload".into()
    }

    fn unroutable(&self) -> String {
        "nobody.listens.here".into()
    }

    fn too_large(&self) -> usize {
        RabbitMq::MAX_MESSAGE_SIZE + 1024
    }

    async fn stored(&mut self) -> HashSet<String> {
        for delivery in self.broker.take_all("contract").await {
            if let Some(id) = delivery.properties.message_id() {
                self.seen.insert(id.as_str().to_owned());
            }
        }
        self.seen.clone()
    }

    fn stop(&mut self) {
        self.broker.stop();
    }

    async fn restart(&mut self) {
        self.broker.restart();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_contract() {
    let mut broker = ContractRabbitMq {
        broker: RabbitMq::start(),
        seen: HashSet::new(),
    };
    let report = contract::run(&mut broker).await;
    eprintln!("RabbitMQ under the sink contract: {report:?}");
}
