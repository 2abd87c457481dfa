//! The Kafka sink: delivery-report-confirmed produces, CloudEvents headers, one classification of
//! failures, a metadata health probe, flush on close.

use std::{
    collections::BTreeMap,
    fmt,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use rdkafka::{
    config::ClientConfig,
    error::{KafkaError, RDKafkaErrorCode},
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord, Producer},
    util::Timeout,
};
use serde::{Deserialize, Serialize};
use vodbridge_core::{FailureReason, HeaderStyle, Message, PublishFuture, Sink, SinkError};

use crate::error::{Error, Result};

/// The `type = "kafka"` sink section.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// `bootstrap.servers`: `host:9092,host2:9092`.
    pub brokers: String,
    /// librdkafka `message.timeout.ms`: how long librdkafka keeps trying one message. Keep it
    /// inside the bridge's deadlines (push: `publish_timeout_ms`; pull: lifetime − margin).
    #[serde(default = "default_message_timeout")]
    pub message_timeout_ms: u64,
    /// CloudEvents structured mode (the whole envelope as JSON value) instead of binary mode.
    #[serde(default)]
    pub structured: bool,
    /// Extra librdkafka properties (`compression.type`, `linger.ms`, `security.protocol`,
    /// `sasl.mechanism`, `sasl.username`, `ssl.ca.location`, ...). `acks` and
    /// `enable.idempotence` can be overridden here but default to `all` / `true`.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties read from files (secrets such as `sasl.password`).
    #[serde(default)]
    pub secret_property_files: BTreeMap<String, PathBuf>,
}

const fn default_message_timeout() -> u64 {
    20_000
}

impl fmt::Debug for KafkaSinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let properties: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    if is_secret(k) {
                        "<redacted>"
                    } else {
                        v.as_str()
                    },
                )
            })
            .collect();
        f.debug_struct("KafkaSinkConfig")
            .field("brokers", &self.brokers)
            .field("message_timeout_ms", &self.message_timeout_ms)
            .field("structured", &self.structured)
            .field("properties", &properties)
            .field("secret_property_files", &self.secret_property_files)
            .finish()
    }
}

fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("password")
        || key.contains("secret")
        || key.ends_with(".key.pem")
        || key.contains("token")
}

/// A Kafka sink.
pub struct KafkaSink {
    name: String,
    /// The producer; replaced after a fatal error (librdkafka requires a new instance).
    producer: std::sync::RwLock<FutureProducer>,
    /// How to build a producer again.
    client: ClientConfig,
    structured: bool,
    /// Last result of the metadata probe.
    healthy: Arc<AtomicBool>,
    /// Stops the probe.
    closing: Arc<AtomicBool>,
}

impl KafkaSink {
    /// Creates the producer (`acks=all`, `enable.idempotence=true`, the configured
    /// `message.timeout.ms`, then the pass-through properties) and starts the health probe.
    /// librdkafka connects in the background: a cluster that is down is not an error here.
    ///
    /// # Errors
    ///
    /// A property librdkafka rejects, or an unreadable secret file.
    pub fn new(name: &str, config: &KafkaSinkConfig) -> Result<Self> {
        if config.brokers.trim().is_empty() {
            return Err(Error::Config("brokers is empty".into()));
        }
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &config.brokers)
            .set("client.id", format!("vodbridge-{name}"))
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set(
                "message.timeout.ms",
                config.message_timeout_ms.max(1).to_string(),
            );
        for (key, value) in &config.properties {
            client.set(key, value);
        }
        for (key, path) in &config.secret_property_files {
            let value = std::fs::read_to_string(path).map_err(|source| Error::File {
                path: path.clone(),
                source,
            })?;
            client.set(key, value.trim());
        }
        let producer: FutureProducer = client
            .create()
            .map_err(|e| Error::Producer(e.to_string()))?;
        let healthy = Arc::new(AtomicBool::new(false));
        let closing = Arc::new(AtomicBool::new(false));
        spawn_probe(
            name.to_owned(),
            producer.clone(),
            Arc::clone(&healthy),
            Arc::clone(&closing),
        );
        Ok(Self {
            name: name.to_owned(),
            producer: std::sync::RwLock::new(producer),
            client,
            structured: config.structured,
            healthy,
            closing,
        })
    }

    fn producer(&self) -> FutureProducer {
        self.producer
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// After a fatal error (e.g. the idempotent producer's state was lost by the cluster)
    /// librdkafka refuses every further message: build a new producer.
    fn recover_if_fatal(&self, failed: &FutureProducer) {
        let Some((code, reason)) = failed.client().fatal_error() else {
            return;
        };
        tracing::error!(sink = %self.name, code = ?code, reason = %reason, "Kafka producer hit a fatal error; creating a new one.");
        match self.client.create::<FutureProducer>() {
            Ok(fresh) => {
                *self
                    .producer
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh
            }
            Err(error) => {
                tracing::error!(sink = %self.name, error = %error, "Cannot create a new Kafka producer.")
            }
        }
    }
}

/// Fetches cluster metadata every few seconds on a blocking thread; a reachable cluster is a
/// healthy sink.
fn spawn_probe(
    name: String,
    producer: FutureProducer,
    healthy: Arc<AtomicBool>,
    closing: Arc<AtomicBool>,
) {
    tokio::spawn(async move {
        while !closing.load(Ordering::Relaxed) {
            let probe = producer.clone();
            let reachable = tokio::task::spawn_blocking(move || {
                probe
                    .client()
                    .fetch_metadata(None, Timeout::After(Duration::from_secs(2)))
                    .is_ok()
            })
            .await
            .unwrap_or(false);
            if healthy.swap(reachable, Ordering::Relaxed) != reachable {
                if reachable {
                    tracing::info!(sink = %name, "Kafka cluster reachable.");
                } else {
                    tracing::warn!(sink = %name, "Kafka cluster unreachable.");
                }
            }
            tokio::time::sleep(Duration::from_millis(if reachable { 3000 } else { 500 })).await;
        }
    });
}

/// The one place a Kafka error becomes retryable or rejected.
#[must_use]
pub fn classify(error: &KafkaError) -> SinkError {
    let detail = error.to_string();
    let code = match error {
        KafkaError::MessageProduction(code) => *code,
        _ => return SinkError::retryable(FailureReason::Other, detail),
    };
    match code {
        RDKafkaErrorCode::MessageSizeTooLarge | RDKafkaErrorCode::InvalidMessageSize => {
            SinkError::rejected(FailureReason::TooLarge, detail)
        }
        RDKafkaErrorCode::TopicAuthorizationFailed
        | RDKafkaErrorCode::ClusterAuthorizationFailed => {
            SinkError::rejected(FailureReason::Unauthorized, detail)
        }
        RDKafkaErrorCode::InvalidTopic
        | RDKafkaErrorCode::UnknownTopic
        | RDKafkaErrorCode::UnknownTopicOrPartition => {
            SinkError::rejected(FailureReason::Unroutable, detail)
        }
        RDKafkaErrorCode::InvalidRecord => SinkError::rejected(FailureReason::Invalid, detail),
        RDKafkaErrorCode::QueueFull => SinkError::retryable(FailureReason::Saturated, detail),
        RDKafkaErrorCode::MessageTimedOut | RDKafkaErrorCode::RequestTimedOut => {
            SinkError::retryable(FailureReason::Timeout, detail)
        }
        // Broker down, leader moving, not enough in-sync replicas, ...: the event comes back.
        _ => SinkError::retryable(FailureReason::Unavailable, detail),
    }
}

/// `vod.{event_type}` with the event type reduced to topic-safe characters.
fn default_topic(event_type: &str) -> String {
    let name: String = event_type
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("vod.{name}")
}

impl Sink for KafkaSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn publish<'a>(&'a self, message: &'a Message) -> PublishFuture<'a> {
        Box::pin(async move {
            let envelope = &message.envelope;
            let topic = if message.destination.is_empty() {
                default_topic(&envelope.event_type)
            } else {
                message.destination.clone()
            };
            let dead_letter = message
                .dead_letter
                .as_ref()
                .map(|d| (d.reason.as_str(), d.detail.as_str()));
            let mut headers = OwnedHeaders::new();
            let structured;
            let payload: &[u8] = if self.structured {
                headers = headers.insert(Header {
                    key: "content-type",
                    value: Some("application/cloudevents+json"),
                });
                structured = envelope.to_structured_json(dead_letter);
                &structured
            } else {
                for (name, value) in envelope.attributes() {
                    headers = headers.insert(Header {
                        key: &HeaderStyle::Kafka.header_name(name),
                        value: Some(value.as_ref()),
                    });
                }
                headers = headers.insert(Header {
                    key: "content-type",
                    value: Some(envelope.data_content_type()),
                });
                if let Some((reason, detail)) = dead_letter {
                    headers = headers.insert(Header {
                        key: "ce_deadletterreason",
                        value: Some(reason),
                    });
                    headers = headers.insert(Header {
                        key: "ce_deadletterdetail",
                        value: Some(detail),
                    });
                }
                &envelope.data
            };
            if let Some(info) = &message.dead_letter {
                headers = headers.insert(Header {
                    key: "ce_deadlettersink",
                    value: Some(info.failed_sink.as_str()),
                });
            }
            let record = FutureRecord::to(&topic)
                .key(envelope.partition_key.as_bytes())
                .payload(payload)
                .headers(headers);
            // Queue-full is answered at once (retryable) rather than waited on: the caller's
            // deadline, not librdkafka's queue, bounds the wait.
            let producer = self.producer();
            match producer.send(record, Timeout::After(Duration::ZERO)).await {
                Ok(_) => Ok(()),
                Err((error, _)) => {
                    self.recover_if_fatal(&producer);
                    Err(classify(&error))
                }
            }
        })
    }

    fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    fn close(&self) -> PublishFuture<'_> {
        Box::pin(async move {
            self.closing.store(true, Ordering::Relaxed);
            let producer = self.producer();
            tokio::task::spawn_blocking(move || {
                producer.flush(Timeout::After(Duration::from_secs(10)))
            })
            .await
            .map_err(|e| SinkError::retryable(FailureReason::Other, e.to_string()))?
            .map_err(|e| classify(&e))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_and_topics() {
        let e = |code| classify(&KafkaError::MessageProduction(code));
        assert_eq!(
            e(RDKafkaErrorCode::MessageSizeTooLarge).reason(),
            FailureReason::TooLarge
        );
        assert!(!e(RDKafkaErrorCode::MessageSizeTooLarge).is_retryable());
        assert!(e(RDKafkaErrorCode::QueueFull).is_retryable());
        assert!(e(RDKafkaErrorCode::MessageTimedOut).is_retryable());
        assert!(e(RDKafkaErrorCode::NotEnoughReplicas).is_retryable());
        assert!(!e(RDKafkaErrorCode::TopicAuthorizationFailed).is_retryable());
        assert_eq!(default_topic("a/b c"), "vod.a_b_c");
    }

    #[test]
    fn secrets_are_redacted() {
        let mut config = KafkaSinkConfig {
            brokers: "b:9092".into(),
            message_timeout_ms: 1000,
            structured: false,
            properties: BTreeMap::new(),
            secret_property_files: BTreeMap::new(),
        };
        config
            .properties
            .insert("sasl.password".into(), "hunter2".into());
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
