//! The sink contract: `publish` resolves only after the destination acknowledged the message.

use std::{borrow::Cow, future::Future, pin::Pin, sync::Arc};

use crate::{binding::DeadLetterInfo, envelope::Envelope, failure::SinkError};

/// The future returned by [`Sink::publish`] and [`Sink::close`].
pub type PublishFuture<'a> = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send + 'a>>;

/// A destination for envelopes: a broker producer, a file, standard output.
///
/// Implementations classify every failure at their boundary into [`SinkError::Retryable`] or
/// [`SinkError::Rejected`]; the pipeline never sees a broker-specific error.
pub trait Sink: Send + Sync + 'static {
    /// The configured name of this sink (used in routes, logs and metric labels).
    fn name(&self) -> &str;

    /// The sink's kind (`kafka`, `amqp`, `nats`, `stdout`, `file`, ...), a metric label.
    fn kind(&self) -> &'static str;

    /// Publishes one message.
    ///
    /// The future resolves `Ok(())` only once the destination has durably accepted the message
    /// (broker ack, delivery report, fsync as configured). Concurrency comes from the caller
    /// running many `publish` futures at once, never from returning early.
    ///
    /// # Errors
    ///
    /// [`SinkError::Retryable`] when trying again later may succeed (destination down, timeout,
    /// back-pressure); [`SinkError::Rejected`] when it never will (message too large, not
    /// routable, not authorized).
    fn publish<'a>(&'a self, message: &'a Message) -> PublishFuture<'a>;

    /// Whether the sink is currently connected and able to publish. Feeds readiness and
    /// `vodbridge_sink_up`.
    fn is_healthy(&self) -> bool {
        true
    }

    /// Why the sink is not healthy, when its client knows more than "unreachable" (Kafka: a
    /// failed SASL authentication, a TLS certificate it does not trust). Shown on `/readyz`
    /// beside the sink's name; never holds a secret.
    fn down_because(&self) -> Option<String> {
        None
    }

    /// How many times the sink replaced its broker connection (Kafka: its producer) since it
    /// started: after a loss, a stall or an error that never cleared. Feeds
    /// `vodbridge_sink_reconnects_total`.
    fn reconnects(&self) -> u64 {
        0
    }

    /// Flushes anything buffered and releases connections; called once on shutdown after the last
    /// publish finished.
    ///
    /// # Errors
    ///
    /// When buffered data could not be flushed.
    fn close(&self) -> PublishFuture<'_> {
        Box::pin(async { Ok(()) })
    }
}

/// One publish request: an envelope and where to put it.
#[derive(Debug, Clone)]
pub struct Message {
    /// The event.
    pub envelope: Arc<Envelope>,
    /// Topic, routing key or subject, rendered from the route's template. Empty means the
    /// sink's own default destination.
    pub destination: String,
    /// Set when this message is a dead-letter copy: why it was dead-lettered.
    pub dead_letter: Option<DeadLetterInfo>,
}

impl Message {
    /// The one wire mapping of binary mode: every `(name, value)` a broker carries as headers
    /// (each with its own prefix, see [`crate::HeaderStyle`]), the envelope's attributes first,
    /// then the dead letter's (reason, detail, sink, destination) when this is a dead-letter
    /// copy. Structured mode carries the same names as members of the JSON body.
    pub fn wire_attributes(&self) -> impl Iterator<Item = (&'static str, Cow<'_, str>)> + '_ {
        let dead_letter = self.dead_letter.as_ref().map(DeadLetterInfo::attributes);
        self.envelope.attributes().into_iter().chain(
            dead_letter
                .into_iter()
                .flatten()
                .map(|(name, value)| (name, Cow::Borrowed(value))),
        )
    }
}
