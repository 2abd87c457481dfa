//! Stall detection for a broker connection: publishes waiting while the broker has said nothing
//! for a whole window, the sign of a silent network partition that the client library has not
//! noticed yet.

use std::{
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::time::Instant;

/// Watches one connection's publishes. A sink calls [`StallWatch::begin`] when a publish goes on
/// the wire and [`Pending::answered`] when the broker answers it (ack, nack or an error reply:
/// any sign of life); its supervisor asks [`StallWatch::stalled`] and replaces the connection
/// when publishes have waited a whole window with no answer at all. A slow broker that answers
/// anything within the window is never taken for a dead one.
///
/// Client heartbeats (AMQP heartbeats, NATS pings, librdkafka's socket timeout) find a dead
/// connection too, but only after several missed intervals; this finds it as soon as traffic
/// that expects an answer gets none.
#[derive(Debug, Clone)]
pub struct StallWatch {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    window: Duration,
    epoch: Instant,
    /// Publishes on the wire now.
    pending: AtomicUsize,
    /// Milliseconds since `epoch` when `pending` last rose from 0.
    pending_since_ms: AtomicU64,
    /// Milliseconds since `epoch` of the last answer (or of the last reset).
    answered_ms: AtomicU64,
}

impl StallWatch {
    /// A watch that calls a connection stalled after `window` of waiting publishes and no
    /// answer.
    #[must_use]
    pub fn new(window: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                window,
                epoch: Instant::now(),
                pending: AtomicUsize::new(0),
                pending_since_ms: AtomicU64::new(0),
                answered_ms: AtomicU64::new(0),
            }),
        }
    }

    /// The window.
    #[must_use]
    pub fn window(&self) -> Duration {
        self.inner.window
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.inner.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A publish went on the wire; drop the guard when it ends, answered or not.
    #[must_use]
    pub fn begin(&self) -> Pending {
        if self.inner.pending.fetch_add(1, Ordering::AcqRel) == 0 {
            self.inner
                .pending_since_ms
                .store(self.now_ms(), Ordering::Release);
        }
        Pending {
            watch: self.clone(),
        }
    }

    /// The broker answered something outside a publish (a probe, a heartbeat seen by the
    /// sink): counts as a sign of life.
    pub fn alive(&self) {
        self.inner
            .answered_ms
            .store(self.now_ms(), Ordering::Release);
    }

    /// Starts a new window from now (after a reconnect): earlier silence does not count against
    /// the new connection.
    pub fn reset(&self) {
        self.alive();
    }

    /// How long publishes have waited with no answer, if they have waited a whole window.
    #[must_use]
    pub fn stalled(&self) -> Option<Duration> {
        if self.inner.pending.load(Ordering::Acquire) == 0 {
            return None;
        }
        let since = self
            .inner
            .pending_since_ms
            .load(Ordering::Acquire)
            .max(self.inner.answered_ms.load(Ordering::Acquire));
        let silent = Duration::from_millis(self.now_ms().saturating_sub(since));
        (silent >= self.inner.window).then_some(silent)
    }
}

/// One publish on the wire (see [`StallWatch::begin`]).
#[derive(Debug)]
pub struct Pending {
    watch: StallWatch,
}

impl Pending {
    /// The broker answered this publish (whatever it said).
    pub fn answered(&self) {
        self.watch.alive();
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.watch.inner.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::time::advance;

    #[tokio::test(start_paused = true)]
    async fn waiting_publishes_with_no_answer_stall() {
        let watch = StallWatch::new(Duration::from_millis(30));
        assert!(watch.stalled().is_none(), "nothing waits");
        let pending = watch.begin();
        assert!(watch.stalled().is_none(), "not a whole window yet");
        advance(Duration::from_millis(40)).await;
        assert!(watch.stalled().is_some());
        watch.reset();
        assert!(watch.stalled().is_none(), "a reset starts a new window");
        drop(pending);
        advance(Duration::from_millis(40)).await;
        assert!(watch.stalled().is_none(), "nothing waits any more");
    }

    #[tokio::test(start_paused = true)]
    async fn any_answer_keeps_a_busy_connection_alive() {
        let watch = StallWatch::new(Duration::from_millis(30));
        let waiting = watch.begin();
        for _ in 0..4 {
            advance(Duration::from_millis(15)).await;
            let other = watch.begin();
            other.answered();
        }
        assert!(
            watch.stalled().is_none(),
            "answers keep coming, a slow publish is no stall"
        );
        drop(waiting);
    }
}
