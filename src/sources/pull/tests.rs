//! The pull path against queue doubles: confirm batching, pacing and retries, dedupe, backoff.

use std::sync::atomic::AtomicUsize;

use vodbridge_tencent::{api::ApiError, governor::GovernorConfig};

use std::{
    collections::HashSet,
    sync::{atomic::Ordering, Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::time::Instant;
use vodbridge_core::EventId;
use vodbridge_tencent::{
    api::MAX_CONFIRM_HANDLES,
    governor::{Action, Governor},
};

use crate::sources::backoff::Backoff;

use super::{
    confirm::{run_confirmer, Confirmer, LINGER_SAFETY},
    queue::{Confirms, EventQueue, Pulled, Slot},
    recent::RecentIds,
};

/// A queue double: confirm calls take 20 ms, the first `throttle` of them are answered
/// `RequestLimitExceeded`, and successful batches are recorded with their time.
struct FakeQueue {
    throttle: AtomicUsize,
    confirmed: Mutex<Vec<(Instant, Vec<String>)>>,
}

impl FakeQueue {
    fn new(throttle: usize) -> Arc<Self> {
        Arc::new(Self {
            throttle: AtomicUsize::new(throttle),
            confirmed: Mutex::new(Vec::new()),
        })
    }

    fn batches(&self) -> Vec<(Instant, Vec<String>)> {
        self.confirmed.lock().expect("lock").clone()
    }
}

impl EventQueue for FakeQueue {
    fn pull(&self) -> BoxFuture<'_, vodbridge_tencent::Result<Vec<Bytes>>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn confirm<'a>(
        &'a self,
        handles: &'a [&'a str],
    ) -> BoxFuture<'a, vodbridge_tencent::Result<()>> {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let throttled = self
                .throttle
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok();
            if throttled {
                return Err(vodbridge_tencent::Error::Api(ApiError {
                    code: "RequestLimitExceeded".into(),
                    message: String::new(),
                    request_id: String::new(),
                }));
            }
            self.confirmed.lock().expect("lock").push((
                Instant::now(),
                handles.iter().map(|h| (*h).to_owned()).collect(),
            ));
            Ok(())
        })
    }
}

fn confirmer(queue: &Arc<FakeQueue>, confirms_per_sec: f64, linger_ms: u64) -> Arc<Confirmer> {
    let metrics = crate::telemetry::Metrics::new().expect("metrics");
    let governor = Arc::new(Governor::new(
        "acct",
        GovernorConfig {
            pull_per_sec: 100.0,
            confirm_per_sec: confirms_per_sec,
            confirm_horizon: Duration::from_secs(5),
        },
    ));
    Arc::new(Confirmer::over(
        "src",
        Arc::clone(queue) as Arc<dyn EventQueue>,
        governor,
        Duration::from_millis(linger_ms),
        &metrics,
    ))
}

/// Starts `workers` confirmers on one queue; returns the sender.
fn start(confirmer: &Arc<Confirmer>, workers: usize) -> (Confirms, tokio_util::task::TaskTracker) {
    let (tx, queue) = Confirms::channel(256);
    let tracker = tokio_util::task::TaskTracker::new();
    for _ in 0..workers {
        tracker.spawn(run_confirmer(Arc::clone(confirmer), Arc::clone(&queue)));
    }
    tracker.close();
    (tx, tracker)
}

/// An acknowledged event's lease on handle `h{n}`, holding a slot of `confirmer`'s governor.
fn handle(confirmer: &Confirmer, n: usize, valid_until: Instant) -> Pulled {
    let slot = Slot::take(&confirmer.governor, 1).remove(0);
    Pulled::new(format!("h{n}"), valid_until, tracing::Span::none(), slot)
}

#[tokio::test(start_paused = true)]
async fn acknowledged_handles_go_out_in_full_batches() {
    let queue = FakeQueue::new(0);
    let confirmer = confirmer(&queue, 10.0, 50);
    let (tx, tracker) = start(&confirmer, 4);
    let valid_until = Instant::now() + Duration::from_secs(30);
    // Handles come faster than 10 calls/s can carry one by one: 200 a second for 0.8 s.
    for n in 0..160 {
        tx.confirm(handle(&confirmer, n, valid_until)).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(tx);
    tracker.wait().await;
    let batches = queue.batches();
    let sizes: Vec<usize> = batches.iter().map(|(_, b)| b.len()).collect();
    assert_eq!(
        sizes.iter().sum::<usize>(),
        160,
        "every handle confirmed: {sizes:?}"
    );
    assert!(
        sizes[1..sizes.len() - 1]
            .iter()
            .all(|&n| n == MAX_CONFIRM_HANDLES),
        "full calls but the first (sent when its linger ended) and the last: {sizes:?}"
    );
    assert_eq!(confirmer.governor.outstanding(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_lone_handle_waits_only_the_linger_and_never_past_its_deadline() {
    let queue = FakeQueue::new(0);
    let confirmer = confirmer(&queue, 100.0, 50);
    let (tx, tracker) = start(&confirmer, 2);
    let sent = Instant::now();
    tx.confirm(handle(&confirmer, 1, sent + Duration::from_secs(30)))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let batches = queue.batches();
    assert_eq!(batches.len(), 1);
    let waited = batches[0].0 - sent;
    assert!(
        waited <= Duration::from_millis(71),
        "linger 50 ms + 20 ms call: {waited:?}"
    );

    // A handle close to its end is not kept for a long linger.
    let long = confirmer_with_linger(&queue, 1000);
    let (tx2, tracker2) = start(&long, 1);
    let sent = Instant::now();
    let valid_until = sent + Duration::from_millis(1300);
    tx2.confirm(handle(&long, 2, valid_until)).await;
    drop(tx2);
    tracker2.wait().await;
    let batches = queue.batches();
    let (at, handles) = batches.last().expect("confirmed");
    assert_eq!(handles, &vec!["h2".to_owned()]);
    assert!(
        *at <= valid_until - LINGER_SAFETY + Duration::from_millis(21),
        "{:?}",
        *at - sent
    );
    drop(tx);
    tracker.wait().await;
}

fn confirmer_with_linger(queue: &Arc<FakeQueue>, linger_ms: u64) -> Arc<Confirmer> {
    confirmer(queue, 100.0, linger_ms)
}

#[tokio::test(start_paused = true)]
async fn throttled_confirms_are_tried_again_until_they_pass() {
    let queue = FakeQueue::new(12);
    let confirmer = confirmer(&queue, 20.0, 0);
    let (tx, tracker) = start(&confirmer, 4);
    let valid_until = Instant::now() + Duration::from_secs(30);
    for n in 0..48 {
        tx.confirm(handle(&confirmer, n, valid_until)).await;
    }
    drop(tx);
    tracker.wait().await;
    let confirmed: HashSet<String> = queue.batches().into_iter().flat_map(|(_, b)| b).collect();
    assert_eq!(confirmed.len(), 48, "twelve throttled answers lost nothing");
    assert!(
        confirmer.governor.rate(Action::Confirm) < 20.0,
        "the governor slowed down"
    );
    assert_eq!(confirmer.throttled.get(), 12);
    assert_eq!(
        confirmer.governor.outstanding(),
        0,
        "every pulled event settled"
    );
}

#[tokio::test(start_paused = true)]
async fn handles_past_their_deadline_are_dropped_not_sent() {
    let queue = FakeQueue::new(1_000);
    let confirmer = confirmer(&queue, 10.0, 0);
    let (tx, tracker) = start(&confirmer, 1);
    let valid_until = Instant::now() + Duration::from_secs(2);
    for n in 0..3 {
        tx.confirm(handle(&confirmer, n, valid_until)).await;
    }
    drop(tx);
    tracker.wait().await;
    assert!(
        Instant::now() <= valid_until + Duration::from_millis(200),
        "gave up at the deadline"
    );
    assert!(queue.batches().is_empty());
    assert_eq!(confirmer.governor.outstanding(), 0);
}

#[test]
fn recent_ids_are_bounded_fifo() {
    let id = |n: u8| EventId::derive("s", &[n]);
    let mut recent = RecentIds::new(2);
    recent.insert(id(1));
    recent.insert(id(2));
    recent.insert(id(1));
    assert!(recent.contains(&id(1)) && recent.contains(&id(2)));
    recent.insert(id(3));
    assert!(!recent.contains(&id(1)), "the oldest is forgotten");
    assert!(recent.contains(&id(3)));
    let mut off = RecentIds::new(0);
    off.insert(id(1));
    assert!(!off.contains(&id(1)));
}

#[test]
fn backoff_grows_with_jitter_up_to_the_cap() {
    let mut backoff =
        Backoff::new(super::puller::PULL_BACKOFF, Duration::from_secs(2)).jittered(42);
    let pauses: Vec<Duration> = (0..8).map(|_| backoff.next(Duration::ZERO)).collect();
    assert!(
        pauses[0] >= Duration::from_millis(150) && pauses[0] <= Duration::from_millis(250),
        "{pauses:?}"
    );
    assert!(
        pauses.iter().all(|p| *p <= Duration::from_millis(2500)),
        "{pauses:?}"
    );
    assert!(
        pauses[7] >= Duration::from_millis(1500),
        "reaches the cap: {pauses:?}"
    );
    backoff.reset();
    assert!(
        backoff.next(Duration::from_secs(1)) >= Duration::from_millis(750),
        "floor applies"
    );
}
