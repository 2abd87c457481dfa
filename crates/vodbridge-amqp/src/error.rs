//! The AMQP crate's errors: its own (configuration, files), and [`classify`], the one place a
//! lapin error becomes retryable or rejected for the pipeline.

use lapin::{
    protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError},
    ErrorKind,
};
use vodbridge_core::{FailureReason, SinkError};

/// Errors raised while setting up the AMQP sink.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error("invalid AMQP sink configuration: {0}")]
    Config(String),
    /// A file named by the configuration could not be read.
    #[error("cannot read {path}: {source}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Talking to the broker failed (reading dead letters for a redrive).
    #[error("RabbitMQ: {0}")]
    Broker(String),
}

/// Result with the AMQP [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The one place a RabbitMQ failure becomes retryable or rejected.
#[must_use]
pub fn classify(error: &lapin::Error) -> SinkError {
    let detail = error.to_string();
    match error.kind() {
        ErrorKind::ProtocolError(amqp) => match amqp.kind() {
            AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) => {
                SinkError::rejected(FailureReason::Unauthorized, detail)
            }
            AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND) => {
                SinkError::rejected(FailureReason::Unroutable, detail)
            }
            AMQPErrorKind::Soft(AMQPSoftError::NOROUTE) => {
                SinkError::rejected(FailureReason::Unroutable, detail)
            }
            // RabbitMQ refuses a message above max_message_size with PRECONDITION_FAILED.
            AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED) => {
                SinkError::rejected(FailureReason::TooLarge, detail)
            }
            AMQPErrorKind::Hard(AMQPHardError::FRAMEERROR | AMQPHardError::SYNTAXERROR) => {
                SinkError::rejected(FailureReason::Invalid, detail)
            }
            _ => SinkError::retryable(FailureReason::Unavailable, detail),
        },
        // Connection or channel gone, IO errors, heartbeat loss, shutdown: the event comes back.
        _ => SinkError::retryable(FailureReason::Unavailable, detail),
    }
}
