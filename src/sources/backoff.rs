//! The one backoff of the sources (pull errors, confirm retries, held callbacks, the spool
//! forwarder): a pause that doubles up to a cap, with optional jitter, and a pause that a
//! cancellation cuts short.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Exponential backoff: `base`, doubling after each pause up to `max`; with
/// [`Backoff::jittered`], each pause is spread ±25 % so that many loops do not retry in step.
///
/// Hand-written rather than `backon`'s (already in the tree): its jitter only adds (up to one
/// more step), and the pull loops need the error class's floor (`next(floor)`).
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    base: Duration,
    current: Duration,
    max: Duration,
    /// xorshift state of the jitter; `None`: no jitter.
    seed: Option<u64>,
}

impl Backoff {
    /// Pauses of `base`, doubling up to `max`, without jitter.
    pub(crate) const fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            current: base,
            max,
            seed: None,
        }
    }

    /// The same with ±25 % jitter drawn from `seed` (give each loop its own).
    pub(crate) const fn jittered(mut self, seed: u64) -> Self {
        self.seed = Some(seed | 1);
        self
    }

    /// Back to `base` (after a success).
    pub(crate) const fn reset(&mut self) {
        self.current = self.base;
    }

    /// The next pause before jitter, without taking it.
    pub(crate) fn peek(&self) -> Duration {
        self.current.min(self.max)
    }

    /// The next pause (at least `floor`, at most the cap, then jittered); the step doubles.
    pub(crate) fn next(&mut self, floor: Duration) -> Duration {
        let step = self.current.max(floor).min(self.max);
        self.current = (step * 2).min(self.max);
        match &mut self.seed {
            None => step,
            Some(seed) => {
                *seed ^= *seed << 13;
                *seed ^= *seed >> 7;
                *seed ^= *seed << 17;
                step.mul_f64(0.75 + (*seed % 1000) as f64 / 2000.0)
            }
        }
    }
}

/// Sleeps unless cancelled first; returns false when cancelled.
pub(crate) async fn pause(duration: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(duration) => true,
        () = cancel.cancelled() => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_jitter_it_doubles_to_the_cap_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let pauses: Vec<u128> = (0..6)
            .map(|_| backoff.next(Duration::ZERO).as_millis())
            .collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1000, 1000]);
        backoff.reset();
        assert_eq!(backoff.peek(), Duration::from_millis(100));
    }
}
