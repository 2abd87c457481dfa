//! The outcome of delivering one event, merged across sinks so that the worst result wins.

use crate::failure::{FailureReason, SinkError};

/// What happened to one event, across every sink it was routed to.
///
/// Outcomes are ordered by severity; [`Outcome::merge`] keeps the worse one. A transient failure
/// ([`Outcome::Retryable`]) is the worst: it means the event must come back from the provider,
/// and on its next delivery any permanent failure shows up alone and is dead-lettered then. This
/// way no sink loses an event because another sink rejected it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every routed sink acknowledged the event.
    Delivered,
    /// A drop rule matched: the event is handled without being published.
    Dropped,
    /// A sink rejected the event permanently and the dead-letter destination acknowledged it.
    DeadLettered {
        /// Why the event was dead-lettered.
        reason: FailureReason,
    },
    /// A sink rejected the event permanently and no dead-letter destination holds it.
    Rejected {
        /// Why it was rejected.
        reason: FailureReason,
        /// Human-readable detail for logs.
        detail: String,
    },
    /// A sink failed transiently (down, timeout, saturated): the event must be delivered again.
    Retryable {
        /// Why it failed.
        reason: FailureReason,
        /// Human-readable detail for logs.
        detail: String,
    },
}

impl Outcome {
    /// Severity rank: higher is worse.
    const fn severity(&self) -> u8 {
        match self {
            Self::Delivered | Self::Dropped => 0,
            Self::DeadLettered { .. } => 1,
            Self::Rejected { .. } => 2,
            Self::Retryable { .. } => 3,
        }
    }

    /// Merges two outcomes; the worse one wins, and on a tie the first is kept.
    #[must_use]
    pub fn merge(self, other: Self) -> Self {
        if other.severity() > self.severity() {
            other
        } else {
            self
        }
    }

    /// True when the event may be acknowledged to the provider: a broker holds it, or a rule
    /// decided it needs no broker.
    #[must_use]
    pub const fn is_handled(&self) -> bool {
        matches!(
            self,
            Self::Delivered | Self::Dropped | Self::DeadLettered { .. }
        )
    }

    /// A short, bounded label for metrics and logs.
    #[must_use]
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Dropped => "dropped",
            Self::DeadLettered { .. } => "dead_lettered",
            Self::Rejected { .. } => "rejected",
            Self::Retryable { .. } => "retryable",
        }
    }
}

impl From<SinkError> for Outcome {
    fn from(error: SinkError) -> Self {
        match error {
            SinkError::Retryable { reason, detail } => Self::Retryable { reason, detail },
            SinkError::Rejected { reason, detail } => Self::Rejected { reason, detail },
        }
    }
}

impl From<Result<(), SinkError>> for Outcome {
    fn from(result: Result<(), SinkError>) -> Self {
        result.map_or_else(Self::from, |()| Self::Delivered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retry() -> Outcome {
        SinkError::retryable(FailureReason::Unavailable, "down").into()
    }
    fn reject() -> Outcome {
        SinkError::rejected(FailureReason::TooLarge, "big").into()
    }

    #[test]
    fn worst_wins_in_any_order() {
        let all = [Outcome::Delivered, Outcome::Dropped, reject(), retry()];
        for a in &all {
            for b in &all {
                let merged = a.clone().merge(b.clone());
                assert_eq!(
                    merged.severity(),
                    a.severity().max(b.severity()),
                    "{a:?} + {b:?}"
                );
            }
        }
        assert!(matches!(reject().merge(retry()), Outcome::Retryable { .. }));
        assert!(matches!(retry().merge(reject()), Outcome::Retryable { .. }));
    }

    #[test]
    fn only_safe_outcomes_are_handled() {
        assert!(Outcome::Delivered.is_handled());
        assert!(Outcome::Dropped.is_handled());
        assert!(Outcome::DeadLettered {
            reason: FailureReason::TooLarge
        }
        .is_handled());
        assert!(!reject().is_handled());
        assert!(!retry().is_handled());
    }
}
