//! Backoff between failed pulls, and a pause that a cancellation cuts short.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Exponential backoff with jitter.
pub(super) struct Backoff {
    current: Duration,
    max: Duration,
    seed: u64,
}

impl Backoff {
    const BASE: Duration = Duration::from_millis(200);

    pub(super) fn new(max: Duration, seed: u64) -> Self {
        Self {
            current: Self::BASE,
            max,
            seed: seed | 1,
        }
    }

    pub(super) fn reset(&mut self) {
        self.current = Self::BASE;
    }

    /// The next pause: the current step with ±25 % jitter, then the step doubles.
    pub(super) fn next(&mut self, floor: Duration) -> Duration {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let step = self.current.max(floor).min(self.max);
        let jitter = 0.75 + (self.seed % 1000) as f64 / 2000.0;
        self.current = (step * 2).min(self.max);
        step.mul_f64(jitter)
    }
}

/// Sleeps unless cancelled first; returns false when cancelled.
pub(super) async fn pause(duration: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(duration) => true,
        () = cancel.cancelled() => false,
    }
}
