//! VOD's reliable-callback queue as the pull path sees it: the queue (`PullEvents`,
//! `ConfirmEvents`), and a [`Pulled`] event's lease on it (its handle, until when VOD accepts
//! it, and its slot in the account's governor), which the types settle exactly once.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::{sync::mpsc, time::Instant};
use vodbridge_tencent::{api::VodClient, governor::Governor};

/// VOD's reliable-callback queue as the pull loops use it: [`VodClient`] in service, doubles in
/// unit tests.
pub(crate) trait EventQueue: Send + Sync + 'static {
    /// `PullEvents`: up to 16 raw `EventSet` elements.
    fn pull(&self) -> BoxFuture<'_, vodbridge_tencent::Result<Vec<Bytes>>>;
    /// `ConfirmEvents` for at most 16 handles.
    fn confirm<'a>(
        &'a self,
        handles: &'a [&'a str],
    ) -> BoxFuture<'a, vodbridge_tencent::Result<()>>;
}

impl EventQueue for VodClient {
    fn pull(&self) -> BoxFuture<'_, vodbridge_tencent::Result<Vec<Bytes>>> {
        Box::pin(self.pull_events())
    }

    fn confirm<'a>(
        &'a self,
        handles: &'a [&'a str],
    ) -> BoxFuture<'a, vodbridge_tencent::Result<()>> {
        Box::pin(self.confirm_events(handles))
    }
}

/// One pulled event's place in its account's governor: counted when taken (the event was
/// handed out), settled when dropped (confirmed, or left for VOD to hand out again). The only
/// way the pull path settles anything, so every pulled event is settled exactly once.
#[derive(Debug)]
pub(crate) struct Slot(Arc<Governor>);

impl Slot {
    /// One slot per event of a pull that handed out `count` events.
    pub(crate) fn take(governor: &Arc<Governor>, count: usize) -> Vec<Self> {
        governor.pulled(count);
        (0..count).map(|_| Self(Arc::clone(governor))).collect()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.settled(1);
    }
}

/// A pulled event's lease on VOD's queue: its handle, until when VOD accepts it, and its
/// governor slot. Handed to the confirmers once every routed sink acknowledged the event;
/// dropped anywhere else (not acknowledged, unusable, expired, refused), which settles its slot
/// and leaves the event to VOD's redelivery.
#[derive(Debug)]
pub(crate) struct Pulled {
    /// The `EventHandle` to confirm.
    pub(crate) handle: String,
    /// When VOD stops accepting the handle (pulled-at + the handle lifetime).
    pub(crate) valid_until: Instant,
    /// The event's span: its `confirm` span is a child (disabled without an exporter).
    pub(crate) span: tracing::Span,
    /// Settled when the lease ends.
    _slot: Slot,
}

impl Pulled {
    /// A lease on `handle` until `valid_until`, holding `slot`.
    pub(crate) const fn new(
        handle: String,
        valid_until: Instant,
        span: tracing::Span,
        slot: Slot,
    ) -> Self {
        Self {
            handle,
            valid_until,
            span,
            _slot: slot,
        }
    }
}

/// Where acknowledged events go to be confirmed: the pull loops' end of the confirmers'
/// channel.
#[derive(Clone)]
pub(crate) struct Confirms(mpsc::Sender<Pulled>);

/// The confirmers' end of the channel, shared by a source's confirmers.
pub(crate) type ConfirmQueue = Arc<tokio::sync::Mutex<mpsc::Receiver<Pulled>>>;

impl Confirms {
    /// A channel holding up to `capacity` acknowledged events.
    pub(crate) fn channel(capacity: usize) -> (Self, ConfirmQueue) {
        let (tx, rx) = mpsc::channel(capacity);
        (Self(tx), Arc::new(tokio::sync::Mutex::new(rx)))
    }

    /// Hands an acknowledged event to the confirmers. When they are gone (only at the end of a
    /// drain) the lease is dropped: VOD hands the event out again.
    pub(crate) async fn confirm(&self, pulled: Pulled) {
        let _ = self.0.send(pulled).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use vodbridge_tencent::governor::GovernorConfig;

    use super::*;

    fn governor() -> Arc<Governor> {
        Arc::new(Governor::new(
            "acct",
            GovernorConfig {
                pull_per_sec: 100.0,
                confirm_per_sec: 100.0,
                confirm_horizon: Duration::from_secs(5),
            },
        ))
    }

    fn lease(slot: Slot) -> Pulled {
        Pulled::new(
            "h".into(),
            Instant::now() + Duration::from_secs(30),
            tracing::Span::none(),
            slot,
        )
    }

    #[test]
    fn a_lease_dropped_without_confirming_returns_its_slot() {
        let governor = governor();
        let mut slots = Slot::take(&governor, 3);
        assert_eq!(governor.outstanding(), 3);
        let pulled = lease(slots.remove(0));
        drop(pulled);
        assert_eq!(governor.outstanding(), 2, "the dropped lease settled");
        drop(slots);
        assert_eq!(governor.outstanding(), 0);
    }

    #[tokio::test]
    async fn a_confirmed_lease_holds_its_slot_until_the_confirmer_is_done() {
        let governor = governor();
        let (confirms, queue) = Confirms::channel(4);
        let slot = Slot::take(&governor, 1).remove(0);
        confirms.confirm(lease(slot)).await;
        assert_eq!(governor.outstanding(), 1, "waiting to be confirmed");
        let confirmed = queue.lock().await.recv().await.expect("handed over");
        assert_eq!(confirmed.handle, "h");
        drop(confirmed);
        assert_eq!(governor.outstanding(), 0, "settled once confirmed");

        // With the confirmers gone, handing over settles at once.
        drop(queue);
        confirms
            .confirm(lease(Slot::take(&governor, 1).remove(0)))
            .await;
        assert_eq!(governor.outstanding(), 0);
    }
}
