//! Why a publish failed, classified once at the sink boundary: [`SinkError`] and its bounded
//! [`FailureReason`].

use std::fmt;

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
    /// A best-effort sink's queue was full (its breaker open, or the sink slower than the
    /// events): the event went to the dead-letter destination instead of the queue.
    QueueFull,
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
            Self::QueueFull => "queue_full",
            Self::Other => "other",
        }
    }
}

impl FailureReason {
    /// Every reason, in a fixed order.
    pub const ALL: [Self; 10] = [
        Self::Timeout,
        Self::Unavailable,
        Self::Saturated,
        Self::TooLarge,
        Self::Unroutable,
        Self::Unauthorized,
        Self::Invalid,
        Self::NoRoute,
        Self::QueueFull,
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
