//! Reading a dead-letter topic for `vodbridge redrive` with a consumer group of its own
//! (`vodbridge-redrive`): a partition's offset is committed only past messages that were
//! published again, so a message left in place (filtered out, failed again) is read again by
//! the next redrive, and so is what follows it in its partition (a duplicate at most, with the
//! same id).

use std::{borrow::Cow, collections::HashMap, time::Duration};

use rdkafka::{
    consumer::{CommitMode, Consumer, StreamConsumer},
    message::{BorrowedMessage, Headers, Message},
    Offset, TopicPartitionList,
};
use vodbridge_core::{Envelope, HeaderStyle, RedriveMessage, RedriveTarget};

use crate::{
    config::KafkaSinkConfig,
    error::{Error, Result},
};

/// The consumer group of redrives.
pub const REDRIVE_GROUP: &str = "vodbridge-redrive";

/// How long a partition may stay silent before the redrive ends without its last messages
/// (a broker that reports a high watermark it does not serve).
const IDLE: Duration = Duration::from_secs(5);

/// Where one partition's redrive stands.
struct Partition {
    /// The high watermark when the redrive started: messages from there on are not read.
    end: i64,
    /// The offset to commit: past the last message of an unbroken run of redriven ones.
    commit: Option<i64>,
    /// False once a message was left in place: later ones are not committed.
    unbroken: bool,
    /// True once the read reached `end`.
    done: bool,
}

/// Each partition's first offset to read, and where it stands.
type Starts = HashMap<i32, (i64, Partition)>;

/// Offers the messages of `from` (a topic) between the group's committed offset (else the
/// start) and the high watermark when the redrive starts to `target`; connected with sink
/// `name`'s settings.
///
/// # Errors
///
/// [`Error::Config`]/[`Error::File`] for the connection settings, [`Error::Broker`] when the
/// topic cannot be read or offsets cannot be committed.
pub async fn redrive(
    name: &str,
    config: &KafkaSinkConfig,
    from: &str,
    target: &mut dyn RedriveTarget,
) -> Result<()> {
    let topic = from;
    let broker = |what| move |source| Error::Broker { what, source };
    let mut client = config.check(name)?.client;
    // The producer's settings mean nothing to a consumer.
    client
        .remove("acks")
        .remove("enable.idempotence")
        .remove("message.timeout.ms")
        .set("group.id", REDRIVE_GROUP)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest");
    let consumer: StreamConsumer = client.create().map_err(broker("creating the consumer"))?;
    let timeout = Duration::from_secs(10);
    // librdkafka's metadata and offset calls block: off the runtime's workers.
    let (consumer, partitions) = tokio::task::spawn_blocking({
        let topic = topic.to_owned();
        move || starts(consumer, &topic, timeout)
    })
    .await
    // The blocking task is never cancelled; a panic in it is the caller's panic.
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
    let mut assignment = TopicPartitionList::new();
    let mut total = 0;
    for (id, (start, partition)) in &partitions {
        total += (partition.end - start).max(0) as u64;
        if !partition.done {
            assignment
                .add_partition_offset(topic, *id, Offset::Offset(*start))
                .map_err(broker("assigning the partitions"))?;
        }
    }
    target.total(total);
    let mut partitions: HashMap<i32, Partition> =
        partitions.into_iter().map(|(id, (_, p))| (id, p)).collect();
    consumer
        .assign(&assignment)
        .map_err(broker("assigning the partitions"))?;
    let mut since_commit = 0;
    while !target.is_done() && partitions.values().any(|p| !p.done) {
        let Ok(received) = tokio::time::timeout(IDLE, consumer.recv()).await else {
            tracing::warn!(
                topic,
                "No message for 5 s before the end of every partition; the redrive ends here."
            );
            break;
        };
        let message = received.map_err(broker("reading a dead letter"))?;
        let Some(partition) = partitions.get_mut(&message.partition()) else {
            continue;
        };
        let offset = message.offset();
        if offset >= partition.end {
            partition.done = true;
            continue;
        }
        let redriven = target.offer(decode(&message)).await;
        if redriven && partition.unbroken {
            partition.commit = Some(offset + 1);
        } else if !redriven {
            partition.unbroken = false;
        }
        partition.done = offset + 1 >= partition.end;
        since_commit += 1;
        if since_commit >= 500 {
            commit(&consumer, topic, &partitions)?;
            since_commit = 0;
        }
    }
    commit(&consumer, topic, &partitions)
}

/// Each partition of `topic` with its first offset to read (the group's committed offset, else
/// the start) and its end (the high watermark now). Blocking: librdkafka's metadata and offset
/// calls.
fn starts(
    consumer: StreamConsumer,
    topic: &str,
    timeout: Duration,
) -> Result<(StreamConsumer, Starts)> {
    let broker = |what| move |source| Error::Broker { what, source };
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(broker("reading the topic's metadata"))?;
    let ids: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if ids.is_empty() {
        return Err(Error::NoSuchTopic(topic.to_owned()));
    }
    let mut wanted = TopicPartitionList::new();
    for id in &ids {
        wanted.add_partition(topic, *id);
    }
    let committed = consumer
        .committed_offsets(wanted, timeout)
        .map_err(broker("reading the committed offsets"))?;
    let mut partitions = HashMap::new();
    for id in ids {
        let (low, high) = consumer
            .fetch_watermarks(topic, id, timeout)
            .map_err(broker("reading the watermarks"))?;
        let start = match committed.find_partition(topic, id).map(|p| p.offset()) {
            Some(Offset::Offset(at)) => at.max(low),
            _ => low,
        };
        partitions.insert(
            id,
            (
                start,
                Partition {
                    end: high,
                    commit: None,
                    unbroken: true,
                    done: start >= high,
                },
            ),
        );
    }
    Ok((consumer, partitions))
}

/// Commits each partition's offset past its unbroken run of redriven messages.
fn commit(
    consumer: &StreamConsumer,
    topic: &str,
    partitions: &HashMap<i32, Partition>,
) -> Result<()> {
    let mut offsets = TopicPartitionList::new();
    for (id, partition) in partitions {
        if let Some(at) = partition.commit {
            offsets
                .add_partition_offset(topic, *id, Offset::Offset(at))
                .map_err(|source| Error::Broker {
                    what: "listing the offsets to commit",
                    source,
                })?;
        }
    }
    if offsets.count() == 0 {
        return Ok(());
    }
    consumer
        .commit(&offsets, CommitMode::Sync)
        .map_err(|source| Error::Broker {
            what: "committing the redrive's offsets",
            source,
        })
}

/// A message of the Kafka sink: binary mode (`ce_*` headers, value = `data`) or structured
/// mode (`application/cloudevents+json`).
fn decode(message: &BorrowedMessage<'_>) -> RedriveMessage {
    let headers = message.headers();
    let header = |name: &str| -> Option<Cow<'static, str>> {
        headers?
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .map(|v| Cow::Owned(String::from_utf8_lossy(v).into_owned()))
    };
    let payload = message.payload().unwrap_or_default();
    if header("content-type").is_some_and(|t| t.starts_with("application/cloudevents+json")) {
        return Envelope::from_structured_json_with_dead_letter(payload).map_err(|e| e.to_string());
    }
    Envelope::from_binary_with_dead_letter(
        |name| header(HeaderStyle::Kafka.header_name(name).as_ref()),
        payload.to_vec().into(),
    )
    .map_err(|e| e.to_string())
}
