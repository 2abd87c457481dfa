//! Fair pacing of one sub-application among the many of a source with `sub_app_ids`: a quiet
//! one long-polls with its first loop only, at most once per [`QUIET_POLL`] (spaced further
//! when the quiet ones together would take more than [`QUIET_SHARE`] of the account's
//! `PullEvents` rate); a busy one (its last answer was full) runs all its loops, which take
//! the account governor's slots in turn with every other busy sub-application's loops.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex, PoisonError,
    },
    time::Duration,
};

use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;
use vodbridge_tencent::api::MAX_PULL_EVENTS;

/// The least time between the starts of two empty long polls of one sub-application: VOD
/// holds an empty `PullEvents` this long, so a quiet sub-application always has one open.
pub(crate) const QUIET_POLL: Duration = Duration::from_secs(5);

/// The most of the account's `PullEvents` rate the quiet sub-applications' long polls take
/// together; the rest is left to the busy ones.
pub(crate) const QUIET_SHARE: f64 = 0.5;

/// What the sub-applications of one source share: how many there are, and the rate their
/// quiet long polls are spread over.
#[derive(Debug)]
pub(crate) struct QuietShare {
    members: AtomicUsize,
    pull_per_sec: f64,
}

impl QuietShare {
    /// The share of an account whose `PullEvents` ceiling is `pull_per_sec`.
    pub(crate) fn new(pull_per_sec: f64) -> Self {
        Self {
            members: AtomicUsize::new(0),
            pull_per_sec: pull_per_sec.max(1.0),
        }
    }

    /// Sets how many sub-applications are pulled.
    pub(crate) fn set_members(&self, members: usize) {
        self.members.store(members, Ordering::Relaxed);
    }

    /// The least time between two empty long polls of one sub-application: [`QUIET_POLL`],
    /// or longer once `members` quiet polls per [`QUIET_POLL`] would exceed [`QUIET_SHARE`]
    /// of the rate (with VOD's 100/s, beyond 250 sub-applications: 500 poll once per 10 s).
    pub(crate) fn interval(&self) -> Duration {
        #[allow(clippy::cast_precision_loss)] // Far below 2^52.
        let members = self.members.load(Ordering::Relaxed) as f64;
        let spread = Duration::from_secs_f64(members / (self.pull_per_sec * QUIET_SHARE));
        spread.max(QUIET_POLL)
    }
}

/// One sub-application's pacing, shared by its loops.
#[derive(Debug)]
pub(crate) struct Pacing {
    /// True while its last answer was full: every loop pulls.
    busy: watch::Sender<bool>,
    /// After an empty answer to the first loop: when that loop may poll again.
    quiet_until: Mutex<Option<Instant>>,
}

impl Pacing {
    /// A quiet sub-application's pacing.
    pub(crate) fn new() -> Self {
        Self {
            busy: watch::Sender::new(false),
            quiet_until: Mutex::new(None),
        }
    }

    /// Waits for loop `index`'s turn to pull: the first loop after its quiet interval, the
    /// others while the sub-application is busy. False when cancelled meanwhile.
    pub(crate) async fn turn(&self, index: usize, cancel: &CancellationToken) -> bool {
        if index == 0 {
            let until = *self
                .quiet_until
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(until) = until {
                tokio::select! {
                    () = tokio::time::sleep_until(until) => {}
                    () = cancel.cancelled() => return false,
                }
            }
            return true;
        }
        let mut busy = self.busy.subscribe();
        tokio::select! {
            woke = busy.wait_for(|busy| *busy) => woke.is_ok(),
            () = cancel.cancelled() => false,
        }
    }

    /// Notes loop `index`'s answer of `events` events to a pull that started at `started`.
    pub(crate) fn answered(
        &self,
        index: usize,
        events: usize,
        started: Instant,
        quiet: &QuietShare,
    ) {
        let full = events >= MAX_PULL_EVENTS;
        self.busy.send_if_modified(|busy| {
            let changed = *busy != full;
            *busy = full;
            changed
        });
        if index == 0 {
            *self
                .quiet_until
                .lock()
                .unwrap_or_else(PoisonError::into_inner) =
                (events == 0).then(|| started + quiet.interval());
        }
    }

    /// True while the last answer was full.
    #[cfg(test)]
    pub(crate) fn is_busy(&self) -> bool {
        *self.busy.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_polls_spread_beyond_half_the_rate() {
        let share = QuietShare::new(100.0);
        share.set_members(50);
        assert_eq!(share.interval(), QUIET_POLL, "50 polls per 5 s is 10/s");
        share.set_members(250);
        assert_eq!(share.interval(), QUIET_POLL, "250 per 5 s is exactly half");
        share.set_members(500);
        assert_eq!(share.interval(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_first_loop_waits_and_the_others_only_run_while_busy() {
        let share = QuietShare::new(100.0);
        share.set_members(1);
        let pacing = Pacing::new();
        let cancel = CancellationToken::new();
        let started = Instant::now();
        pacing.answered(0, 0, started, &share);
        assert!(pacing.turn(0, &cancel).await);
        assert_eq!(started.elapsed(), QUIET_POLL, "one empty long poll per 5 s");

        // A second loop waits until an answer is full.
        let waiting = tokio::time::timeout(Duration::from_secs(60), pacing.turn(1, &cancel));
        assert!(waiting.await.is_err(), "not busy: the extra loop parks");
        pacing.answered(0, MAX_PULL_EVENTS, Instant::now(), &share);
        assert!(pacing.is_busy());
        assert!(pacing.turn(1, &cancel).await, "busy: it pulls");
        let now = Instant::now();
        assert!(pacing.turn(0, &cancel).await);
        assert_eq!(
            now.elapsed(),
            Duration::ZERO,
            "a full answer is pulled again at once"
        );

        // A partial answer ends the busy spell; cancel ends a parked loop.
        pacing.answered(1, 3, Instant::now(), &share);
        assert!(!pacing.is_busy());
        cancel.cancel();
        assert!(!pacing.turn(1, &cancel).await);
    }
}
