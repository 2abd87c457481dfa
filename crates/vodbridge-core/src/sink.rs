//! The sink contract: `publish` resolves only after the destination acknowledged the message.

use std::{borrow::Cow, fmt, future::Future, pin::Pin, sync::Arc};

use crate::envelope::Envelope;

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

/// Why a message was sent to the dead-letter destination; sinks carry it as headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterInfo {
    /// Bounded reason label.
    pub reason: FailureReason,
    /// Human-readable detail from the sink that rejected the message.
    pub detail: String,
    /// The sink that rejected the message.
    pub failed_sink: String,
    /// The destination that rejected the message.
    pub failed_destination: String,
}

impl DeadLetterInfo {
    /// Reads the dead-letter extensions back: `None` when `attribute` has no
    /// `deadletterreason` (a message that is no dead letter).
    ///
    /// # Errors
    ///
    /// [`crate::Error::Decode`] for a reason that is no [`FailureReason`].
    pub fn from_attributes<'a>(
        attribute: impl Fn(&str) -> Option<std::borrow::Cow<'a, str>>,
    ) -> crate::Result<Option<Self>> {
        let Some(reason) = attribute("deadletterreason") else {
            return Ok(None);
        };
        let text = |name: &str| attribute(name).map(|v| v.into_owned()).unwrap_or_default();
        Ok(Some(Self {
            reason: reason.parse()?,
            detail: text("deadletterdetail"),
            failed_sink: text("deadlettersink"),
            failed_destination: text("deadletterdestination"),
        }))
    }

    /// The dead-letter extension attributes, in a fixed order: what every sink writes, as
    /// headers in binary mode (with its binding's prefix, [`crate::HeaderStyle`]) or as members
    /// of the structured-mode JSON. Empty values (no sink failed: the body itself was unusable)
    /// are still written, so consumers see one shape.
    #[must_use]
    pub fn attributes(&self) -> [(&'static str, &str); 4] {
        [
            ("deadletterreason", self.reason.as_str()),
            ("deadletterdetail", self.detail.as_str()),
            ("deadlettersink", self.failed_sink.as_str()),
            ("deadletterdestination", self.failed_destination.as_str()),
        ]
    }
}

/// Bounded classification of a failure, used as a metric label and in dead-letter headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureReason {
    /// No acknowledgement before the deadline.
    Timeout,
    /// The destination is down or unreachable.
    Unavailable,
    /// The sink or destination pushes back (queue full, too many in flight).
    Saturated,
    /// The message exceeds the destination's size limit.
    TooLarge,
    /// The destination cannot route the message (no queue bound, no stream for the subject).
    Unroutable,
    /// The destination refused access.
    Unauthorized,
    /// The destination considers the message or destination name invalid.
    Invalid,
    /// No route matches the event type.
    NoRoute,
    /// Anything else.
    Other,
}

impl FailureReason {
    /// The label value.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Unavailable => "unavailable",
            Self::Saturated => "saturated",
            Self::TooLarge => "too_large",
            Self::Unroutable => "unroutable",
            Self::Unauthorized => "unauthorized",
            Self::Invalid => "invalid",
            Self::NoRoute => "no_route",
            Self::Other => "other",
        }
    }
}

impl FailureReason {
    /// Every reason, in a fixed order.
    pub const ALL: [Self; 9] = [
        Self::Timeout,
        Self::Unavailable,
        Self::Saturated,
        Self::TooLarge,
        Self::Unroutable,
        Self::Unauthorized,
        Self::Invalid,
        Self::NoRoute,
        Self::Other,
    ];
}

impl std::str::FromStr for FailureReason {
    type Err = crate::Error;

    /// Reads a label value ([`FailureReason::as_str`]).
    fn from_str(s: &str) -> crate::Result<Self> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| crate::Error::Decode(format!("unknown failure reason {s:?}")))
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a publish failed, classified once at the sink boundary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// Trying again later may succeed; the event must not be acknowledged now.
    #[error("{reason}: {detail}")]
    Retryable {
        /// Bounded reason.
        reason: FailureReason,
        /// Detail for logs.
        detail: String,
    },
    /// Trying again will not succeed; the event goes to the dead-letter destination if any.
    #[error("{reason} (permanent): {detail}")]
    Rejected {
        /// Bounded reason.
        reason: FailureReason,
        /// Detail for logs.
        detail: String,
    },
}

impl SinkError {
    /// A transient failure.
    pub fn retryable(reason: FailureReason, detail: impl Into<String>) -> Self {
        Self::Retryable {
            reason,
            detail: detail.into(),
        }
    }

    /// A permanent failure.
    pub fn rejected(reason: FailureReason, detail: impl Into<String>) -> Self {
        Self::Rejected {
            reason,
            detail: detail.into(),
        }
    }

    /// The bounded reason of either kind.
    #[must_use]
    pub const fn reason(&self) -> FailureReason {
        match self {
            Self::Retryable { reason, .. } | Self::Rejected { reason, .. } => *reason,
        }
    }

    /// True for [`SinkError::Retryable`].
    #[must_use]
    pub const fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable { .. })
    }
}
