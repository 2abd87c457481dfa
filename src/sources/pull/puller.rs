//! One pull loop (a puller): pull a batch, hand it to `batch`, pull the next while it is
//! published.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use vodbridge_tencent::{
    api::{ErrorClass, MAX_PULL_EVENTS},
    governor::Action,
};

use crate::{
    sources::backoff::{pause, Backoff},
    state::AppState,
};

use super::{
    batch::process_batch,
    queue::{Confirms, Slot},
    source::PullSource,
};

/// Batches one loop may hold at once: one being published while the next pull is in flight, so
/// the loop never idles on a publish or a pull round trip.
pub(super) const BATCHES_PER_LOOP: usize = 2;

/// The first pause after a failed pull (doubling, jittered, up to `max_backoff_ms`).
pub(super) const PULL_BACKOFF: Duration = Duration::from_millis(200);

/// One pull loop: pull, publish, hand acknowledged handles to the confirmers, repeat, until
/// cancelled. Every pull first waits for its account's governor (confirm headroom, then a pull
/// slot). The next pull starts while the previous batch is still being published (at most
/// [`BATCHES_PER_LOOP`] batches held; a loop waits for a free batch permit *before* pulling, so pulled
/// events never wait). On cancel no new pull starts; a pull in flight and the batches in
/// progress are finished and their acks confirmed.
pub(super) async fn run_puller(
    source: Arc<PullSource>,
    state: Arc<AppState>,
    confirms: Confirms,
    cancel: CancellationToken,
    index: usize,
) {
    let metrics = &state.metrics;
    let name = source.name.as_str();
    let mut backoff = Backoff::new(PULL_BACKOFF, source.settings.max_backoff)
        .jittered(0x5eed ^ ((index as u64 + 1) * 0x9e37_79b9));
    let batch_permits = Arc::new(tokio::sync::Semaphore::new(BATCHES_PER_LOOP));
    let batches = tokio_util::task::TaskTracker::new();
    while !cancel.is_cancelled() {
        // VOD's queue is the buffer: with every required sink down, pulling would only hand
        // events out to time out (best-effort sinks hold nothing back).
        if state.pipeline.required_sinks_down() {
            metrics
                .pull_requests
                .with_label_values(&[name, "sinks_down"])
                .inc();
            let delay = backoff.next(Duration::ZERO);
            metrics
                .pull_backoff
                .with_label_values(&[name, "sinks_down"])
                .inc_by(delay.as_secs_f64());
            if !pause(delay, &cancel).await {
                break;
            }
            continue;
        }
        // One sub-application among many waits for its turn (quiet: one long poll per
        // interval, first loop only; busy: every loop).
        if let Some(member) = &source.member {
            if !member.pacing.turn(index, &cancel).await {
                break;
            }
        }
        let permit = tokio::select! {
            permit = Arc::clone(&batch_permits).acquire_owned() => permit,
            () = cancel.cancelled() => break,
        };
        let Ok(permit) = permit else { break };
        tokio::select! {
            () = source.governor.before_pull() => {}
            () = cancel.cancelled() => break,
        }
        let pulled_at = Instant::now();
        // A pull on the wire is not abandoned on shutdown: VOD may already have handed its
        // events out, and dropping the answer would hide them for a handle lifetime. The long
        // poll ends within the client's timeout; its events are delivered and confirmed.
        let result = source.queue.pull().await;
        match result {
            Ok(events) => {
                source.auth_failed.store(false, Ordering::Relaxed);
                backoff.reset();
                count_pull(&source, &state, events.len(), (index, pulled_at));
                if !events.is_empty() {
                    // Each event's governor slot, settled when its lease ends.
                    let slots = Slot::take(&source.governor, events.len());
                    let (source, state, confirms) =
                        (Arc::clone(&source), Arc::clone(&state), confirms.clone());
                    batches.spawn(async move {
                        process_batch(&source, &state, &confirms, events, slots, pulled_at).await;
                        drop(permit);
                    });
                }
            }
            Err(error) => {
                if !after_failed_pull(&source, &state, &error, &mut backoff, &cancel).await {
                    break;
                }
            }
        }
    }
    batches.close();
    batches.wait().await;
}

/// Counts one answered pull of `events` events (`empty` or `ok`, its size, a full answer);
/// for one sub-application of many, also in its own counters and pacing (the pull of loop
/// `index` that started at `pulled_at`).
fn count_pull(
    source: &PullSource,
    state: &AppState,
    events: usize,
    (index, pulled_at): (usize, Instant),
) {
    if let Some(member) = &source.member {
        member
            .pacing
            .answered(index, events, pulled_at, &member.quiet);
        member.pulled.inc_by(events as u64);
        if events >= MAX_PULL_EVENTS {
            member.full.inc();
        }
    }
    let name = source.name.as_str();
    let metrics = &state.metrics;
    let label = if events == 0 { "empty" } else { "ok" };
    metrics
        .pull_requests
        .with_label_values(&[name, label])
        .inc();
    #[allow(clippy::cast_precision_loss)] // At most 16.
    metrics
        .pull_batch_size
        .with_label_values(&[name])
        .observe(events as f64);
    if events >= MAX_PULL_EVENTS {
        // VOD had more than one answer holds: the bridge's own backlog signal.
        metrics.pull_full.with_label_values(&[name]).inc();
    }
}

/// After a failed pull: throttling slows the account's governor (its pacing is the only
/// wait); anything else backs off by its class (rejected credentials turn readiness false and
/// wait the longest). Returns false when cancelled during the pause.
async fn after_failed_pull(
    source: &PullSource,
    state: &AppState,
    error: &vodbridge_tencent::Error,
    backoff: &mut Backoff,
    cancel: &CancellationToken,
) -> bool {
    let metrics = &state.metrics;
    let name = source.name.as_str();
    let class = error.class();
    metrics
        .pull_requests
        .with_label_values(&[name, class.as_str()])
        .inc();
    if class == ErrorClass::Throttled {
        // The account's budget is spent (by this process or another replica).
        source.governor.throttled(Action::Pull);
        metrics.note_throttled(source.governor.account(), Action::Pull);
        return true;
    }
    let delay = match class {
        ErrorClass::Throttled | ErrorClass::Transient | ErrorClass::ExpiredHandle => {
            backoff.next(Duration::ZERO)
        }
        ErrorClass::ClockSkew => backoff.next(Duration::from_secs(5)),
        ErrorClass::Auth | ErrorClass::Fatal => backoff.next(source.settings.max_backoff),
    };
    match class {
        ErrorClass::Auth => {
            source.auth_failed.store(true, Ordering::Relaxed);
            tracing::error!(source = name, sub_app_id = source.sub_app_id(), error = %error, "VOD rejects the credentials; fix them, pulling is paused.");
        }
        ErrorClass::Fatal | ErrorClass::ClockSkew => {
            tracing::error!(source = name, sub_app_id = source.sub_app_id(), error = %error, class = class.as_str(), "PullEvents failed.");
        }
        _ => {
            tracing::warn!(source = name, sub_app_id = source.sub_app_id(), error = %error, retry_in_ms = delay.as_millis() as u64, "PullEvents failed; retrying.")
        }
    }
    metrics
        .pull_backoff
        .with_label_values(&[name, class.as_str()])
        .inc_by(delay.as_secs_f64());
    pause(delay, cancel).await
}
