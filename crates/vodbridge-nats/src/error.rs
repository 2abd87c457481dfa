//! The NATS crate's errors: its own (configuration, files, connection), and [`classify`], the
//! one place a JetStream publish error becomes retryable or rejected for the pipeline.

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use vodbridge_core::{FailureReason, SinkError};

/// Errors raised while setting up the NATS sink.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error("invalid NATS sink configuration: {0}")]
    Config(String),
    /// A credentials or certificate file could not be read.
    #[error("cannot read {path}: {source}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The client could not be created.
    #[error("NATS client: {0}")]
    Connect(#[source] async_nats::ConnectError),
    /// Reading or acknowledging dead letters for a redrive failed.
    #[error("NATS JetStream: {what}: {source}")]
    Broker {
        /// What was being done.
        what: String,
        /// The client's error (async-nats has one error type per operation).
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// Wraps a JetStream client error with what was being done, for `map_err`.
    pub(crate) fn broker<E>(what: impl Into<String>) -> impl FnOnce(E) -> Self
    where
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let what = what.into();
        move |source| Self::Broker {
            what,
            source: source.into(),
        }
    }
}

/// Result with the NATS [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The one place a JetStream failure becomes retryable or rejected.
#[must_use]
pub fn classify(error: &PublishError) -> SinkError {
    let detail = error.to_string();
    match error.kind() {
        PublishErrorKind::TimedOut => SinkError::retryable(FailureReason::Timeout, detail),
        PublishErrorKind::BrokenPipe => SinkError::retryable(FailureReason::Unavailable, detail),
        PublishErrorKind::MaxAckPending => SinkError::retryable(FailureReason::Saturated, detail),
        PublishErrorKind::StreamNotFound => SinkError::rejected(FailureReason::Unroutable, detail),
        PublishErrorKind::MaxPayloadExceeded => {
            SinkError::rejected(FailureReason::TooLarge, detail)
        }
        PublishErrorKind::WrongLastMessageId | PublishErrorKind::WrongLastSequence => {
            SinkError::rejected(FailureReason::Invalid, detail)
        }
        // Unknown failures are retried: a redelivery is cheap, a wrong dead letter is not.
        PublishErrorKind::Other => SinkError::retryable(FailureReason::Other, detail),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_is_exhaustive_and_conservative() {
        let c = |kind| classify(&PublishError::new(kind));
        assert!(c(PublishErrorKind::TimedOut).is_retryable());
        assert!(c(PublishErrorKind::BrokenPipe).is_retryable());
        assert!(c(PublishErrorKind::Other).is_retryable());
        assert_eq!(
            c(PublishErrorKind::StreamNotFound).reason(),
            FailureReason::Unroutable
        );
        assert!(!c(PublishErrorKind::MaxPayloadExceeded).is_retryable());
    }
}
