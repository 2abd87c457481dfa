//! The AMQP crate's errors: its own (configuration, files), and [`classify`], the one place a
//! lapin error becomes retryable or rejected for the pipeline.

use lapin::{
    protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError},
    types::ShortString,
    Confirmation, ErrorKind,
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
    #[error("RabbitMQ: {what}: {source}")]
    Broker {
        /// What was being done.
        what: String,
        /// lapin's error.
        source: lapin::Error,
    },
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

/// The fate of a publish from its publisher confirm: stored (an ack that returned nothing),
/// unroutable (an ack that returned this very message: `mandatory`, and no queue is bound to
/// `routing_key`), or to be tried again (a nack, a return of another message, no confirm).
/// The sink keeps one publish per channel so that a return belongs to the publish it arrives
/// with; a return carrying another `message_id` is still never taken for this one's.
///
/// # Errors
///
/// [`SinkError::Rejected`] (`unroutable`) for this message returned; [`SinkError::Retryable`]
/// otherwise.
pub fn classify_confirmation(
    confirmation: &Confirmation,
    message_id: &str,
    routing_key: &str,
) -> Result<(), SinkError> {
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(returned))
            if returned
                .delivery
                .properties
                .message_id()
                .as_ref()
                .map(ShortString::as_str)
                != Some(message_id) =>
        {
            Err(SinkError::retryable(
                FailureReason::Other,
                "RabbitMQ returned a different message with this confirm",
            ))
        }
        Confirmation::Ack(Some(returned)) => Err(SinkError::rejected(
            FailureReason::Unroutable,
            format!(
                "returned by the broker: {} (no queue bound for routing key {routing_key:?})",
                returned.reply_text
            ),
        )),
        Confirmation::Nack(_) => Err(SinkError::retryable(
            FailureReason::Unavailable,
            "the broker negatively acknowledged the message",
        )),
        Confirmation::NotRequested => Err(SinkError::retryable(
            FailureReason::Other,
            "publisher confirms are not enabled on the channel",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_confirm_decides_stored_or_retried() {
        assert_eq!(
            classify_confirmation(&Confirmation::Ack(None), "id", "vod.x"),
            Ok(())
        );
        let nack = classify_confirmation(&Confirmation::Nack(None), "id", "vod.x")
            .expect_err("a nack is no acknowledgement");
        assert!(nack.is_retryable());
        assert_eq!(nack.reason(), FailureReason::Unavailable);
        let none = classify_confirmation(&Confirmation::NotRequested, "id", "vod.x")
            .expect_err("no confirm is no acknowledgement");
        assert!(none.is_retryable());
    }
}
