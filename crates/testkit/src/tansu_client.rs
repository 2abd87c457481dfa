//! What tests do to tansu as a topic's owner and as a consumer, with rdkafka (feature `kafka`):
//! create topics, read every message of a topic.

use std::time::{Duration, Instant};

use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer},
    message::OwnedMessage,
    ClientConfig, Message, Offset, TopicPartitionList,
};

use crate::Tansu;

impl Tansu {
    /// Creates `topics` (name, partitions), as their owner would: tansu creates no topic on
    /// first use.
    ///
    /// # Panics
    ///
    /// When the broker refuses one of them.
    pub async fn create_topics(&self, topics: &[(&str, i32)]) {
        self.create_topics_as(ClientConfig::new(), topics).await;
    }

    /// [`Tansu::create_topics`] as a client configured by `client` (TLS, SASL).
    ///
    /// # Panics
    ///
    /// When the client cannot be created or the broker refuses a topic.
    pub async fn create_topics_as(&self, mut client: ClientConfig, topics: &[(&str, i32)]) {
        let admin: AdminClient<DefaultClientContext> = client
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .expect("an admin client");
        let new: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|(name, partitions)| NewTopic::new(name, *partitions, TopicReplication::Fixed(1)))
            .collect();
        for result in admin
            .create_topics(&new, &AdminOptions::new())
            .await
            .expect("create_topics")
        {
            result.expect("topic created");
        }
    }

    /// Every message of `topic`'s `partitions`, read from the beginning one partition at a time,
    /// until the partition's high watermark is passed and nothing more arrives for `idle` (tansu
    /// reports watermarks that can trail its last batches, so they are only a lower bound).
    ///
    /// # Panics
    ///
    /// When the broker cannot be read, or a partition is not read within 90 s.
    pub async fn read_all(
        &self,
        topic: &str,
        partitions: i32,
        idle: Duration,
    ) -> Vec<OwnedMessage> {
        let bootstrap = self.bootstrap();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for partition in 0..partitions {
                read_partition(&bootstrap, &topic, partition, idle, &mut out);
            }
            out
        })
        .await
        .expect("the Kafka reader")
    }
}

fn read_partition(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    idle: Duration,
    out: &mut Vec<OwnedMessage>,
) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "vodbridge-testkit")
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer");
    let (low, high) = consumer
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .expect("watermarks");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, partition, Offset::Beginning)
        .expect("offset");
    consumer.assign(&assignment).expect("assign");
    let (started, mut last, mut read) = (Instant::now(), Instant::now(), 0);
    while read < high - low || last.elapsed() < idle {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{topic} partition {partition}: read {read} of at least {}",
            high - low
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.expect("a message");
        (last, read) = (Instant::now(), read + 1);
        out.push(message.detach());
    }
}

/// A message's header as text.
#[must_use]
pub fn header(message: &OwnedMessage, name: &str) -> Option<String> {
    use rdkafka::message::Headers as _;
    message.headers().and_then(|headers| {
        headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    })
}
