//! What the load harnesses share: environment knobs, the readiness wait, medians, and the
//! RabbitMQ topology they publish into. Each harness includes it with `mod support;` and uses
//! its own subset.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use lapin::{
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::FieldTable,
    Connection, ConnectionProperties,
};

/// A count from the environment variable `name`, else `default`.
pub(crate) fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Median of a non-empty list.
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Waits until `GET ready_url` answers 200 (broker sinks connect in the background).
///
/// # Panics
///
/// After 30 s.
pub(crate) async fn wait_ready(client: &reqwest::Client, ready_url: &str) {
    let started = Instant::now();
    while client
        .get(ready_url)
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "bridge not ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A durable topic exchange and a durable queue bound to every routing key (`#`): mandatory
/// publishes need a queue to reach.
pub(crate) async fn declare_topic_queue(url: &str, exchange: &str, queue: &str) {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    channel
        .exchange_declare(
            exchange.into(),
            lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("exchange");
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("queue");
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    let _ = connection.close(200, "declared".into()).await;
}

/// Creates Kafka topics of 3 partitions (tansu does not create them on first use).
pub(crate) async fn create_kafka_topics(broker: &vodbridge_testkit::Tansu, topics: &[&str]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .expect("admin");
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, 3, TopicReplication::Fixed(1)))
        .collect();
    for result in admin
        .create_topics(&new, &AdminOptions::new())
        .await
        .expect("create_topics")
    {
        result.expect("topic");
    }
}
