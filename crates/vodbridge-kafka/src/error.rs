//! The Kafka crate's errors: its own (configuration, producer creation), and [`classify`], the
//! one place a librdkafka error becomes retryable or rejected for the pipeline.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use vodbridge_core::{FailureReason, SinkError};

/// Errors raised while setting up the Kafka sink.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error("invalid Kafka sink configuration: {0}")]
    Config(String),
    /// A file named by the configuration could not be read.
    #[error("cannot read {path}: {source}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// librdkafka refused the configuration.
    #[error("cannot create the Kafka client: {0}")]
    Producer(#[source] KafkaError),
    /// Reading or committing dead letters for a redrive failed.
    #[error("Kafka: {what}: {source}")]
    Broker {
        /// What was being done.
        what: &'static str,
        /// librdkafka's error.
        source: KafkaError,
    },
    /// The redrive's topic is not in the cluster's metadata.
    #[error("Kafka: topic {0:?} does not exist")]
    NoSuchTopic(String),
}

/// Result with the Kafka [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

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
