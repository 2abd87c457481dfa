//! Pull ingress (reliable callback): pull loops publish each event under a deadline inside its
//! handle lifetime and confirm only what every routed sink acknowledged.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::Duration,
};

use bytes::Bytes;
use futures_util::future::join_all;
use time::OffsetDateTime;
use tokio::{sync::mpsc, time::Instant};
use tokio_util::sync::CancellationToken;
use vodbridge_core::{Envelope, EventId, FailureReason, Ingress, RouteContext};
use vodbridge_tencent::{
    api::{ErrorClass, VodClient, MAX_CONFIRM_HANDLES},
    Normalizer, RawEvent,
};

use crate::{
    config::PullSettings,
    server::AppState,
    telemetry::{event_type_label, InFlight},
};

/// A handle to confirm, and until when VOD accepts it.
#[derive(Debug)]
pub(crate) struct Confirm {
    handle: String,
    valid_until: Instant,
}

/// One configured pull source: its client, settings and shared loop state.
pub(crate) struct PullSource {
    /// Configured name (metric label, `{source}`).
    pub(crate) name: String,
    normalizer: Normalizer,
    client: VodClient,
    settings: PullSettings,
    /// Ids acknowledged recently: a redelivery of one is confirmed without publishing again.
    recent: Mutex<RecentIds>,
    /// Set while VOD rejects the credentials; readiness reports it.
    pub(crate) auth_failed: AtomicBool,
}

impl PullSource {
    /// Builds the source's client.
    ///
    /// # Errors
    ///
    /// When the endpoint is invalid (already checked by config validation).
    pub(crate) fn new(
        name: &str,
        normalizer: Normalizer,
        settings: PullSettings,
    ) -> crate::Result<Self> {
        let client = VodClient::new(settings.client.clone())
            .map_err(|e| crate::Error::Config(format!("sources.{name}.endpoint: {e}")))?;
        Ok(Self {
            name: name.to_owned(),
            normalizer,
            client,
            recent: Mutex::new(RecentIds::new(settings.dedupe_capacity)),
            settings,
            auth_failed: AtomicBool::new(false),
        })
    }

    /// Number of pull loops to run.
    pub(crate) const fn loops(&self) -> usize {
        self.settings.loops
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, RecentIds> {
        self.recent.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A bounded FIFO record of recently acknowledged ids.
struct RecentIds {
    capacity: usize,
    order: VecDeque<EventId>,
    set: HashSet<EventId>,
}

impl RecentIds {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            order: VecDeque::new(),
            set: HashSet::new(),
        }
    }

    fn contains(&self, id: &EventId) -> bool {
        self.set.contains(id)
    }

    fn insert(&mut self, id: EventId) {
        if self.capacity == 0 || !self.set.insert(id.clone()) {
            return;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }
}

/// Exponential backoff with jitter.
struct Backoff {
    current: Duration,
    max: Duration,
    seed: u64,
}

impl Backoff {
    const BASE: Duration = Duration::from_millis(200);

    fn new(max: Duration, seed: u64) -> Self {
        Self {
            current: Self::BASE,
            max,
            seed: seed | 1,
        }
    }

    fn reset(&mut self) {
        self.current = Self::BASE;
    }

    /// The next pause: the current step with ±25 % jitter, then the step doubles.
    fn next(&mut self, floor: Duration) -> Duration {
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
async fn pause(duration: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(duration) => true,
        () = cancel.cancelled() => false,
    }
}

/// How often the VOD backlog gauge is refreshed (DescribeEventsState allows 20 calls/s).
const BACKLOG_INTERVAL: Duration = Duration::from_secs(15);

/// Keeps `vodbridge_vod_backlog{source}` current until cancelled; failures only leave the
/// gauge as it was (the pull loops report API trouble).
pub(crate) async fn run_backlog_probe(
    source: Arc<PullSource>,
    state: Arc<AppState>,
    cancel: CancellationToken,
) {
    let gauge = state
        .metrics
        .vod_backlog
        .with_label_values(&[source.name.as_str()]);
    loop {
        if let Ok(count) = source.client.describe_events_state().await {
            gauge.set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        if !pause(BACKLOG_INTERVAL, &cancel).await {
            break;
        }
    }
}

/// Batches one loop may hold at once: one being published while the next pull is in flight, so
/// the loop never idles on a publish or a pull round trip.
const BATCHES_PER_LOOP: usize = 2;

/// One pull loop: pull, publish, hand acknowledged handles to the confirmers, repeat, until
/// cancelled. The next pull starts while the previous batch is still being published (at most
/// [`BATCHES_PER_LOOP`] batches held; a loop waits for a free slot *before* pulling, so pulled
/// events never wait). Batches in progress when cancelled are finished and their acks
/// confirmed.
pub(crate) async fn run_loop(
    source: Arc<PullSource>,
    state: Arc<AppState>,
    confirms: mpsc::Sender<Confirm>,
    cancel: CancellationToken,
    index: usize,
) {
    let metrics = &state.metrics;
    let name = source.name.as_str();
    let mut backoff = Backoff::new(
        source.settings.max_backoff,
        0x5eed ^ ((index as u64 + 1) * 0x9e37_79b9),
    );
    let slots = Arc::new(tokio::sync::Semaphore::new(BATCHES_PER_LOOP));
    let batches = tokio_util::task::TaskTracker::new();
    while !cancel.is_cancelled() {
        // VOD's queue is the buffer: with every sink down, pulling would only hand events out
        // to time out.
        if state.pipeline.sinks().all(|s| !s.is_healthy()) {
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
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot,
            () = cancel.cancelled() => break,
        };
        let Ok(slot) = slot else { break };
        let pulled_at = Instant::now();
        let result = tokio::select! {
            result = source.client.pull_events() => result,
            () = cancel.cancelled() => break,
        };
        match result {
            Ok(events) => {
                source.auth_failed.store(false, Ordering::Relaxed);
                backoff.reset();
                let label = if events.is_empty() { "empty" } else { "ok" };
                metrics
                    .pull_requests
                    .with_label_values(&[name, label])
                    .inc();
                #[allow(clippy::cast_precision_loss)] // At most 16.
                metrics
                    .pull_batch_size
                    .with_label_values(&[name])
                    .observe(events.len() as f64);
                if !events.is_empty() {
                    let (source, state, confirms) =
                        (Arc::clone(&source), Arc::clone(&state), confirms.clone());
                    batches.spawn(async move {
                        process_batch(&source, &state, &confirms, events, pulled_at).await;
                        drop(slot);
                    });
                }
            }
            Err(error) => {
                let class = error.class();
                metrics
                    .pull_requests
                    .with_label_values(&[name, class.as_str()])
                    .inc();
                let delay = match class {
                    ErrorClass::Throttled => backoff.next(Duration::from_secs(1)),
                    ErrorClass::Transient | ErrorClass::ExpiredHandle => {
                        backoff.next(Duration::ZERO)
                    }
                    ErrorClass::ClockSkew => backoff.next(Duration::from_secs(5)),
                    ErrorClass::Auth | ErrorClass::Fatal => {
                        backoff.next(source.settings.max_backoff)
                    }
                };
                match class {
                    ErrorClass::Auth => {
                        source.auth_failed.store(true, Ordering::Relaxed);
                        tracing::error!(source = name, error = %error, "VOD rejects the credentials; fix them, pulling is paused.");
                    }
                    ErrorClass::Fatal | ErrorClass::ClockSkew => {
                        tracing::error!(source = name, error = %error, class = class.as_str(), "PullEvents failed.");
                    }
                    _ => {
                        tracing::warn!(source = name, error = %error, retry_in_ms = delay.as_millis() as u64, "PullEvents failed; retrying.")
                    }
                }
                metrics
                    .pull_backoff
                    .with_label_values(&[name, class.as_str()])
                    .inc_by(delay.as_secs_f64());
                if !pause(delay, &cancel).await {
                    break;
                }
            }
        }
    }
    batches.close();
    batches.wait().await;
}

/// One pulled event ready to publish.
struct Pulled {
    handle: String,
    envelope: Arc<Envelope>,
}

/// Publishes one pulled batch: events of one FileId one after another (stopping at the first
/// that is not acknowledged, so order holds), different FileIds at once.
async fn process_batch(
    source: &PullSource,
    state: &AppState,
    confirms: &mpsc::Sender<Confirm>,
    events: Vec<Bytes>,
    pulled_at: Instant,
) {
    let metrics = &state.metrics;
    let name = source.name.as_str();
    let valid_until = pulled_at + source.settings.handle_lifetime;
    let deadline = valid_until - source.settings.confirm_margin;
    let received_at = OffsetDateTime::now_utc();

    let mut groups: Vec<Vec<Pulled>> = Vec::new();
    let mut group_of: HashMap<String, usize> = HashMap::new();
    let mut invalid: Vec<(Pulled, String)> = Vec::new();
    for element in &events {
        // `refused`: why an event without a usable EventType goes to the dead letter instead.
        let (handle, envelope, refused) = match RawEvent::parse(element) {
            Ok(event) => {
                let Some(handle) = event.event_handle().map(str::to_owned) else {
                    metrics
                        .events_outcome
                        .with_label_values(&[name, "unparseable"])
                        .inc();
                    tracing::warn!(
                        source = name,
                        "Pulled an event without EventHandle; it cannot be confirmed."
                    );
                    continue;
                };
                metrics
                    .events_received
                    .with_label_values(&[name, "pull", event_type_label(event.event_type())])
                    .inc();
                match source.normalizer.normalize(event, received_at) {
                    Ok(envelope) => (handle, Arc::new(envelope), None),
                    Err(error) => {
                        metrics
                            .events_outcome
                            .with_label_values(&[name, "unparseable"])
                            .inc();
                        tracing::warn!(source = name, error = %error, "Pulled an event that cannot be normalized.");
                        continue;
                    }
                }
            }
            Err(error) => {
                // An object with a handle but no usable EventType can still leave VOD's queue
                // through the dead-letter destination; anything else cannot be confirmed.
                let salvaged = state
                    .pipeline
                    .dead_letter()
                    .and_then(|_| source.normalizer.salvage(element, received_at));
                if let Some(salvaged) = salvaged {
                    metrics
                        .events_received
                        .with_label_values(&[name, "pull", "other"])
                        .inc();
                    (
                        salvaged.handle,
                        Arc::new(salvaged.envelope),
                        Some(error.to_string()),
                    )
                } else {
                    metrics
                        .events_outcome
                        .with_label_values(&[name, "unparseable"])
                        .inc();
                    tracing::warn!(source = name, error = %error, "Pulled an event that cannot be read; it stays unconfirmed (with a dead letter configured, a JSON object with an EventHandle would be dead-lettered).");
                    continue;
                }
            }
        };
        if source.recent().contains(&envelope.id) {
            metrics
                .duplicates_suppressed
                .with_label_values(&[name])
                .inc();
            let _ = confirms
                .send(Confirm {
                    handle,
                    valid_until,
                })
                .await;
            continue;
        }
        if let Some(why) = refused {
            invalid.push((Pulled { handle, envelope }, why));
            continue;
        }
        let index = *group_of
            .entry(envelope.partition_key.clone())
            .or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
        groups[index].push(Pulled { handle, envelope });
    }

    for (pulled, error) in invalid {
        let report = state
            .pipeline
            .reject(
                Arc::clone(&pulled.envelope),
                RouteContext { source: name },
                deadline,
                FailureReason::Invalid,
                error,
            )
            .await;
        metrics.record_delivery(name, &pulled.envelope, &report);
        if !report.outcome.is_handled() {
            tracing::warn!(source = name, event_id = %pulled.envelope.id, outcome = ?report.outcome, "Invalid pulled event not dead-lettered; VOD will hand it out again.");
            continue;
        }
        tracing::warn!(source = name, event_id = %pulled.envelope.id, "Pulled an event without a usable EventType; dead-lettered.");
        source.recent().insert(pulled.envelope.id.clone());
        let _ = confirms
            .send(Confirm {
                handle: pulled.handle,
                valid_until,
            })
            .await;
    }

    let in_flight = metrics
        .in_flight
        .with_label_values(&[Ingress::Pull.as_str()]);
    join_all(groups.into_iter().map(|group| {
        let in_flight = in_flight.clone();
        async move {
            let count = group.len();
            for (done, pulled) in group.into_iter().enumerate() {
                let guard = InFlight::enter(&in_flight);
                let report = state
                    .pipeline
                    .deliver(
                        Arc::clone(&pulled.envelope),
                        RouteContext { source: name },
                        deadline,
                    )
                    .await;
                drop(guard);
                metrics.record_delivery(name, &pulled.envelope, &report);
                if report.outcome.is_handled() {
                    source.recent().insert(pulled.envelope.id.clone());
                    let _ = confirms
                        .send(Confirm {
                            handle: pulled.handle,
                            valid_until,
                        })
                        .await;
                } else {
                    tracing::warn!(
                        source = name,
                        event_id = %pulled.envelope.id,
                        event_type = %pulled.envelope.event_type,
                        outcome = ?report.outcome,
                        held_back = count - done - 1,
                        "Pulled event not acknowledged; VOD will hand it out again."
                    );
                    // Later events of the same video wait for this one's redelivery.
                    break;
                }
            }
        }
    }))
    .await;
}

/// The receiving end of a source's acknowledged handles, shared by its confirmers.
pub(crate) type ConfirmQueue = Arc<tokio::sync::Mutex<mpsc::Receiver<Confirm>>>;

/// Confirms acknowledged handles in batches of at most 16 as soon as they arrive. A source runs
/// two confirmers per pull loop, so confirm round trips never hold the loops back. Exits when
/// every loop has dropped its sender and the queue is empty.
pub(crate) async fn run_confirmer(
    source: Arc<PullSource>,
    state: Arc<AppState>,
    queue: ConfirmQueue,
) {
    let name = source.name.as_str();
    loop {
        let batch = {
            let mut confirms = queue.lock().await;
            let Some(first) = confirms.recv().await else {
                break;
            };
            let mut batch = Vec::with_capacity(MAX_CONFIRM_HANDLES);
            batch.push(first);
            while batch.len() < MAX_CONFIRM_HANDLES {
                match confirms.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            batch
        };
        confirm_batch(&source.client, name, &state.metrics, batch).await;
    }
}

async fn confirm_batch(
    client: &VodClient,
    name: &str,
    metrics: &crate::telemetry::Metrics,
    mut batch: Vec<Confirm>,
) {
    let mut attempt = 0u32;
    loop {
        let now = Instant::now();
        let before = batch.len();
        batch.retain(|c| c.valid_until > now);
        if batch.len() < before {
            metrics
                .confirm_failures
                .with_label_values(&[name, "expired_before_confirm"])
                .inc_by((before - batch.len()) as u64);
        }
        if batch.is_empty() {
            return;
        }
        let handles: Vec<&str> = batch.iter().map(|c| c.handle.as_str()).collect();
        match client.confirm_events(&handles).await {
            Ok(()) => {
                metrics
                    .confirmed
                    .with_label_values(&[name])
                    .inc_by(batch.len() as u64);
                return;
            }
            Err(error) => {
                let class = error.class();
                metrics
                    .confirm_failures
                    .with_label_values(&[name, class.as_str()])
                    .inc();
                match class {
                    // One stale handle may fail the whole call: confirm the others one by one.
                    ErrorClass::ExpiredHandle if batch.len() > 1 => {
                        for one in batch {
                            Box::pin(confirm_batch(client, name, metrics, vec![one])).await;
                        }
                        return;
                    }
                    ErrorClass::Transient | ErrorClass::Throttled if attempt < 3 => {
                        attempt += 1;
                        tracing::debug!(source = name, error = %error, attempt, "ConfirmEvents failed; retrying.");
                        tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
                    }
                    _ => {
                        tracing::warn!(source = name, error = %error, handles = batch.len(), "ConfirmEvents failed; VOD will hand these events out again.");
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut backoff = Backoff::new(Duration::from_secs(2), 42);
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
}
