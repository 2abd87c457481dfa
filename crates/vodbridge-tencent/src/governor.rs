//! The request governor of one VOD account: paces `PullEvents` and `ConfirmEvents` under the
//! account's per-action budget and adapts to `RequestLimitExceeded` without coordination.
//!
//! VOD's limits (100 calls/s for each action by default) belong to the account, not to a
//! process, so several replicas, each with several pull loops, share one budget they cannot see.
//! Each [`Governor`] paces its calls at a current rate per action, starting at the configured
//! ceiling. A throttled answer cuts the rate multiplicatively (at most once per
//! [`CUT_INTERVAL`], so one overshoot counts once); without throttling the rate climbs back
//! additively. This is AIMD, the rule TCP congestion control uses: any number of independent
//! governors on one budget settle on shares that add up to about the budget.
//!
//! Written here rather than taken from a rate-limiting crate because the well-kept ones
//! (`governor`, `leaky-bucket`) enforce a fixed quota; none changes its rate from the server's
//! answers, and replacing a quota object on every adjustment would lose its timing state.
//!
//! Confirms come before pulls: the governor counts events pulled and not yet settled (confirmed
//! or given up), and [`Governor::before_pull`] waits while confirming them at the current
//! confirm rate would take longer than [`GovernorConfig::confirm_horizon`]. So pulled events are
//! never left to expire for lack of confirm budget.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex, PoisonError,
    },
    time::Duration,
};

use tokio::{sync::Notify, time::Instant};

use crate::api::MAX_CONFIRM_HANDLES;

/// A paced VOD API action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `PullEvents`.
    Pull,
    /// `ConfirmEvents`.
    Confirm,
}

impl Action {
    /// The API action name (a metric label).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pull => "PullEvents",
            Self::Confirm => "ConfirmEvents",
        }
    }
}

/// Shortest time between two multiplicative cuts of one action's rate.
pub const CUT_INTERVAL: Duration = Duration::from_millis(250);
/// The factor a throttled answer multiplies the rate by.
const CUT_FACTOR: f64 = 0.8;
/// Additive increase per second, as a share of the ceiling. With the hold below, a simulated
/// budget shared by 1, 2, 4 and 8 replicas of 4 loops is used to 1.00 of its size with 0, 1.4,
/// 6 and 18 % of calls throttled (`independent_governors_share_one_budget`).
const RAISE_PER_SEC: f64 = 0.05;
/// How long the rate stays where a cut left it before it climbs again.
const HOLD_AFTER_CUT: Duration = Duration::from_millis(500);
/// No action is paced below this many calls per second.
const FLOOR_PER_SEC: f64 = 1.0;

/// The budget of one account.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GovernorConfig {
    /// Highest `PullEvents` rate, calls per second (VOD's default quota: 100).
    pub pull_per_sec: f64,
    /// Highest `ConfirmEvents` rate, calls per second (VOD's default quota: 100).
    pub confirm_per_sec: f64,
    /// Longest time the events pulled and not yet confirmed may need to be confirmed at the
    /// current confirm rate; a pull waits beyond it. Keep it well inside the 30 s handle life.
    pub confirm_horizon: Duration,
}

impl Default for GovernorConfig {
    fn default() -> Self {
        Self {
            pull_per_sec: 100.0,
            confirm_per_sec: 100.0,
            confirm_horizon: Duration::from_secs(5),
        }
    }
}

/// One action's adaptive pacer.
#[derive(Debug)]
struct Pacer {
    ceiling: f64,
    state: Mutex<PacerState>,
}

#[derive(Debug)]
struct PacerState {
    /// Current calls per second.
    rate: f64,
    /// The next free slot.
    next: Instant,
    /// When the rate was last raised (the additive increase is per elapsed time).
    raised_at: Instant,
    /// When the rate was last cut.
    cut_at: Option<Instant>,
}

impl Pacer {
    fn new(ceiling: f64, now: Instant) -> Self {
        let ceiling = ceiling.max(FLOOR_PER_SEC);
        Self {
            ceiling,
            state: Mutex::new(PacerState {
                rate: ceiling,
                next: now,
                raised_at: now,
                cut_at: None,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PacerState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reserves the next slot and returns when it starts. Slots are never saved up: after an
    /// idle time the next call goes at once, the one after it a full interval later.
    fn reserve(&self, now: Instant) -> Instant {
        let mut state = self.state();
        // After a cut the rate holds for a while, so the other replicas' cuts show first.
        let climb_from = state.cut_at.map_or(state.raised_at, |at| {
            state.raised_at.max(at + HOLD_AFTER_CUT)
        });
        let elapsed = now.saturating_duration_since(climb_from).as_secs_f64();
        state.rate = (state.rate + self.ceiling * RAISE_PER_SEC * elapsed).min(self.ceiling);
        state.raised_at = now.max(climb_from);
        let slot = state.next.max(now);
        state.next = slot + Duration::from_secs_f64(1.0 / state.rate);
        slot
    }

    /// A throttled answer: cut the rate (once per [`CUT_INTERVAL`]) and push the next slot out
    /// by one interval at the new rate.
    fn throttled(&self, now: Instant) {
        let mut state = self.state();
        if state
            .cut_at
            .is_some_and(|at| now.saturating_duration_since(at) < CUT_INTERVAL)
        {
            return;
        }
        state.cut_at = Some(now);
        state.rate = (state.rate * CUT_FACTOR).max(FLOOR_PER_SEC);
        state.raised_at = now;
        state.next = state.next.max(now) + Duration::from_secs_f64(1.0 / state.rate);
    }

    fn rate(&self) -> f64 {
        self.state().rate
    }
}

/// Paces one account's `PullEvents` and `ConfirmEvents`; shared by every pull source and loop of
/// the process that uses the account's credentials.
#[derive(Debug)]
pub struct Governor {
    /// A bounded name for metrics and logs (never the SecretId).
    account: String,
    pull: Pacer,
    confirm: Pacer,
    confirm_horizon: Duration,
    /// Events pulled and not yet settled: confirmed, or given up on.
    outstanding: AtomicUsize,
    /// Wakes pulls waiting for confirm headroom.
    settled: Notify,
}

impl Governor {
    /// A governor at full rate.
    #[must_use]
    pub fn new(account: impl Into<String>, config: GovernorConfig) -> Self {
        let now = Instant::now();
        Self {
            account: account.into(),
            pull: Pacer::new(config.pull_per_sec, now),
            confirm: Pacer::new(config.confirm_per_sec, now),
            confirm_horizon: config.confirm_horizon,
            outstanding: AtomicUsize::new(0),
            settled: Notify::new(),
        }
    }

    /// The account's name, as configured.
    #[must_use]
    pub fn account(&self) -> &str {
        &self.account
    }

    fn pacer(&self, action: Action) -> &Pacer {
        match action {
            Action::Pull => &self.pull,
            Action::Confirm => &self.confirm,
        }
    }

    /// Waits for a slot of `action` at its current rate.
    pub async fn acquire(&self, action: Action) {
        let now = Instant::now();
        let slot = self.pacer(action).reserve(now);
        // A due slot goes at once: even an elapsed timer waits for the driver's next tick
        // (about 1 ms), which would cap a fast queue at a call per millisecond.
        if slot > now {
            tokio::time::sleep_until(slot).await;
        }
    }

    /// Waits until the events already pulled can be confirmed within the horizon at the current
    /// confirm rate, then for a pull slot.
    pub async fn before_pull(&self) {
        loop {
            let notified = self.settled.notified();
            if self.has_confirm_headroom() {
                break;
            }
            // Settlements wake it; the timer covers a rate that rises with nothing settled.
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
        self.acquire(Action::Pull).await;
    }

    /// True when one more full pull could be confirmed within the horizon.
    #[must_use]
    pub fn has_confirm_headroom(&self) -> bool {
        #[allow(clippy::cast_precision_loss)] // Counts far below 2^52.
        let after_pull = (self.outstanding.load(Ordering::Relaxed) + MAX_CONFIRM_HANDLES) as f64;
        #[allow(clippy::cast_precision_loss)]
        let capacity =
            self.confirm.rate() * MAX_CONFIRM_HANDLES as f64 * self.confirm_horizon.as_secs_f64();
        after_pull <= capacity
    }

    /// Notes a `RequestLimitExceeded` answer to `action`.
    pub fn throttled(&self, action: Action) {
        self.pacer(action).throttled(Instant::now());
    }

    /// The current rate of `action`, calls per second.
    #[must_use]
    pub fn rate(&self, action: Action) -> f64 {
        self.pacer(action).rate()
    }

    /// Notes `count` events handed out by a pull.
    pub fn pulled(&self, count: usize) {
        self.outstanding.fetch_add(count, Ordering::Relaxed);
    }

    /// Notes `count` pulled events settled: confirmed, or left for VOD to hand out again.
    pub fn settled(&self, count: usize) {
        let _ = self
            .outstanding
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(count))
            });
        self.settled.notify_waiters();
    }

    /// Events pulled and not yet settled.
    #[must_use]
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn config(per_sec: f64) -> GovernorConfig {
        GovernorConfig {
            pull_per_sec: per_sec,
            confirm_per_sec: per_sec,
            confirm_horizon: Duration::from_secs(5),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn paces_at_the_ceiling_without_bursts() {
        let governor = Governor::new("a", config(10.0));
        let started = Instant::now();
        for _ in 0..21 {
            governor.acquire(Action::Pull).await;
        }
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(1999) && elapsed <= Duration::from_millis(2001),
            "21 calls at 10/s take 2 s: {elapsed:?}"
        );
        // Idle time is not saved up as a burst.
        tokio::time::advance(Duration::from_secs(10)).await;
        let started = Instant::now();
        for _ in 0..3 {
            governor.acquire(Action::Pull).await;
        }
        assert!(started.elapsed() >= Duration::from_millis(199));
        // Confirms have their own budget.
        let started = Instant::now();
        governor.acquire(Action::Confirm).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttle_cuts_once_per_interval_then_the_rate_climbs_back() {
        let governor = Governor::new("a", config(100.0));
        governor.throttled(Action::Pull);
        governor.throttled(Action::Pull);
        assert!((governor.rate(Action::Pull) - 80.0).abs() < 1e-9, "one cut");
        assert!((governor.rate(Action::Confirm) - 100.0).abs() < 1e-9);
        tokio::time::advance(CUT_INTERVAL).await;
        governor.throttled(Action::Pull);
        assert!((governor.rate(Action::Pull) - 64.0).abs() < 1e-9);
        tokio::time::advance(Duration::from_secs(2)).await;
        governor.acquire(Action::Pull).await;
        let rate = governor.rate(Action::Pull);
        assert!(
            (rate - 71.5).abs() < 0.1,
            "held 0.5 s, then +5 % of the ceiling a second: {rate}"
        );
        tokio::time::advance(Duration::from_secs(10)).await;
        governor.acquire(Action::Pull).await;
        assert!((governor.rate(Action::Pull) - 100.0).abs() < 1e-9, "capped");
    }

    #[tokio::test(start_paused = true)]
    async fn pulls_wait_for_confirm_headroom() {
        // 1 confirm/s × 16 handles × 5 s = 80 events may be outstanding.
        let governor = Arc::new(Governor::new("a", config(1.0)));
        governor.pulled(64);
        assert!(governor.has_confirm_headroom(), "64 + 16 fit");
        governor.pulled(16);
        assert!(!governor.has_confirm_headroom());
        let waiting = {
            let governor = Arc::clone(&governor);
            tokio::spawn(async move { governor.before_pull().await })
        };
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!waiting.is_finished(), "the pull waits while confirms lag");
        governor.settled(16);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(waiting.is_finished(), "a settlement lets it go");
        governor.settled(1_000);
        assert_eq!(governor.outstanding(), 0, "never below zero");
    }

    /// A budget shared by governors that cannot see each other: a server admitting `budget`
    /// calls per second (GCRA with one second of burst) and answering the rest throttled.
    struct Server {
        budget: f64,
        tat: Instant,
    }

    impl Server {
        fn admit(&mut self, now: Instant) -> bool {
            let interval = Duration::from_secs_f64(1.0 / self.budget);
            let tat = self.tat.max(now);
            if tat > now + Duration::from_secs(1) {
                return false;
            }
            self.tat = tat + interval;
            true
        }
    }

    #[tokio::test(start_paused = true)]
    async fn independent_governors_share_one_budget() {
        for replicas in [1usize, 2, 4, 8] {
            let server = Arc::new(Mutex::new(Server {
                budget: 100.0,
                tat: Instant::now(),
            }));
            let admitted = Arc::new(AtomicUsize::new(0));
            let throttled = Arc::new(AtomicUsize::new(0));
            let until = Instant::now() + Duration::from_secs(60);
            let measure_from = Instant::now() + Duration::from_secs(10);
            let mut tasks = Vec::new();
            for _ in 0..replicas {
                let governor = Arc::new(Governor::new("a", config(100.0)));
                // Four loops per replica, each call taking 20 ms.
                for _ in 0..4 {
                    let (governor, server, admitted, throttled) = (
                        Arc::clone(&governor),
                        Arc::clone(&server),
                        Arc::clone(&admitted),
                        Arc::clone(&throttled),
                    );
                    tasks.push(tokio::spawn(async move {
                        while Instant::now() < until {
                            governor.acquire(Action::Pull).await;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            let now = Instant::now();
                            let ok = server.lock().expect("lock").admit(now);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            if now < measure_from {
                                continue;
                            }
                            if ok {
                                admitted.fetch_add(1, Ordering::Relaxed);
                            } else {
                                governor.throttled(Action::Pull);
                                throttled.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }));
                }
            }
            for task in tasks {
                task.await.expect("task");
            }
            #[allow(clippy::cast_precision_loss)]
            let share = admitted.load(Ordering::Relaxed) as f64 / (100.0 * 50.0);
            assert!(
                share >= 0.95,
                "{replicas} replicas use {share:.3} of the budget"
            );
            #[allow(clippy::cast_precision_loss)]
            let wasted = throttled.load(Ordering::Relaxed) as f64 / (100.0 * 50.0);
            assert!(
                wasted < 0.25,
                "{replicas} replicas: throttled calls {wasted:.3} of the budget"
            );
        }
    }
}
