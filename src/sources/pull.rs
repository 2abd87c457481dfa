//! Pull ingress (reliable callback): pull loops publish each event under a deadline inside its
//! handle lifetime and confirm only what every routed sink acknowledged, every call paced by
//! the VOD account's request governor.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::Duration,
};

use bytes::Bytes;
use futures_util::future::{join_all, BoxFuture};
use time::OffsetDateTime;
use tokio::{sync::mpsc, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use vodbridge_core::{Envelope, EventId, FailureReason, Ingress, RouteContext, TRACE_TARGET};
use vodbridge_tencent::{
    api::{ErrorClass, VodClient, MAX_CONFIRM_HANDLES, MAX_PULL_EVENTS},
    governor::{Action, Governor},
    Normalizer, RawEvent,
};

use crate::{
    config::PullSettings,
    state::AppState,
    telemetry::{self, event_type_label, InFlight},
};

/// A handle to confirm, and until when VOD accepts it.
#[derive(Debug)]
pub(crate) struct Confirm {
    handle: String,
    valid_until: Instant,
    /// The event's span: its `confirm` span is a child (disabled without an exporter).
    span: tracing::Span,
}

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

/// One configured pull source: its queue, request governor, settings and shared loop state.
pub(crate) struct PullSource {
    /// Configured name (metric label, `{source}`).
    pub(crate) name: String,
    normalizer: Normalizer,
    /// Where events are pulled from and confirmed to.
    queue: Arc<dyn EventQueue>,
    /// For `DescribeEventsState` (the backlog gauge); `None` for test doubles.
    client: Option<VodClient>,
    /// Paces this source's calls within its VOD account's budget, shared with every other
    /// source of the account.
    pub(crate) governor: Arc<Governor>,
    settings: PullSettings,
    /// Ids acknowledged recently: a redelivery of one is confirmed without publishing again.
    recent: Mutex<RecentIds>,
    /// Set while VOD rejects the credentials; readiness reports it.
    pub(crate) auth_failed: Arc<AtomicBool>,
}

impl PullSource {
    /// Builds the source's client; `governor` is its account's.
    ///
    /// # Errors
    ///
    /// When the endpoint is invalid (already checked by config validation).
    pub(crate) fn new(
        name: &str,
        normalizer: Normalizer,
        settings: PullSettings,
        governor: Arc<Governor>,
    ) -> crate::Result<Self> {
        let client = VodClient::new(settings.client.clone())
            .map_err(|e| crate::Error::Config(format!("sources.{name}.endpoint: {e}")))?;
        let mut source = Self::with_queue(
            name,
            normalizer,
            settings,
            governor,
            Arc::new(client.clone()),
        );
        source.client = Some(client);
        Ok(source)
    }

    /// A source over any queue (tests).
    pub(crate) fn with_queue(
        name: &str,
        normalizer: Normalizer,
        settings: PullSettings,
        governor: Arc<Governor>,
        queue: Arc<dyn EventQueue>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            normalizer,
            queue,
            client: None,
            governor,
            recent: Mutex::new(RecentIds::new(settings.dedupe_capacity)),
            settings,
            auth_failed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Number of pull loops to run.
    pub(crate) const fn loops(&self) -> usize {
        self.settings.loops
    }

    fn recent(&self) -> std::sync::MutexGuard<'_, RecentIds> {
        self.recent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands an acknowledged event's handle to the confirmers.
    async fn confirm_later(
        &self,
        confirms: &mpsc::Sender<Confirm>,
        handle: String,
        valid_until: Instant,
        span: tracing::Span,
    ) {
        if confirms
            .send(Confirm {
                handle,
                valid_until,
                span,
            })
            .await
            .is_err()
        {
            // The confirmers are gone (only at the end of a drain): VOD hands it out again.
            self.governor.settled(1);
        }
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
/// gauge as it was (the pull loops report API trouble). VOD's count runs about 3 minutes
/// behind (its docs say not to decide whether to pull by it): a trend for dashboards, while
/// `vodbridge_pull_full_total` is the signal to scale on.
pub(crate) async fn run_backlog_probe(
    source: Arc<PullSource>,
    state: Arc<AppState>,
    cancel: CancellationToken,
) {
    let Some(client) = source.client.clone() else {
        return;
    };
    let gauge = state
        .metrics
        .vod_backlog
        .with_label_values(&[source.name.as_str()]);
    loop {
        // Only a gauge: a call in flight is abandoned on shutdown.
        let count = tokio::select! {
            count = client.describe_events_state() => count,
            () = cancel.cancelled() => break,
        };
        if let Ok(count) = count {
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
/// cancelled. Every pull first waits for its account's governor (confirm headroom, then a pull
/// slot). The next pull starts while the previous batch is still being published (at most
/// [`BATCHES_PER_LOOP`] batches held; a loop waits for a free slot *before* pulling, so pulled
/// events never wait). On cancel no new pull starts; a pull in flight and the batches in
/// progress are finished and their acks confirmed.
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
                if events.len() >= MAX_PULL_EVENTS {
                    // VOD had more than one answer holds: the bridge's own backlog signal.
                    metrics.pull_full.with_label_values(&[name]).inc();
                }
                if !events.is_empty() {
                    source.governor.pulled(events.len());
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
                if class == ErrorClass::Throttled {
                    // The account's budget is spent (by this process or another replica): the
                    // governor slows down, and its pacing is the only wait.
                    source.governor.throttled(Action::Pull);
                    metrics.note_throttled(source.governor.account(), Action::Pull);
                    continue;
                }
                let delay = match class {
                    ErrorClass::Throttled | ErrorClass::Transient | ErrorClass::ExpiredHandle => {
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
    /// The event's `process` span (disabled without an exporter).
    span: tracing::Span,
}

/// A pulled batch sorted for delivery.
#[derive(Default)]
struct Sorted {
    /// Events by FileId (partition key), each group in pull order.
    groups: Vec<Vec<Pulled>>,
    /// Events without a usable EventType, with why, for the dead letter.
    invalid: Vec<(Pulled, String)>,
    /// Handles of events acknowledged recently: confirmed without publishing again.
    duplicates: Vec<String>,
    /// Events that can never be confirmed (no handle) or published (not normalizable).
    unusable: usize,
}

/// Publishes one pulled batch: classify, dead-letter the invalid, deliver the rest (events of
/// one FileId one after another, stopping at the first that is not acknowledged so order holds;
/// different FileIds at once). Every event ends either handed to the confirmers or settled with
/// the governor.
async fn process_batch(
    source: &PullSource,
    state: &AppState,
    confirms: &mpsc::Sender<Confirm>,
    events: Vec<Bytes>,
    pulled_at: Instant,
) {
    let valid_until = pulled_at + source.settings.handle_lifetime;
    let deadline = valid_until - source.settings.confirm_margin;
    let sorted = classify(source, state, &events, OffsetDateTime::now_utc());
    source.governor.settled(sorted.unusable);
    for handle in sorted.duplicates {
        source
            .confirm_later(confirms, handle, valid_until, tracing::Span::none())
            .await;
    }
    dead_letter_invalid(
        source,
        state,
        confirms,
        sorted.invalid,
        valid_until,
        deadline,
    )
    .await;
    deliver_groups(
        source,
        state,
        confirms,
        sorted.groups,
        valid_until,
        deadline,
    )
    .await;
}

/// Reads, counts and normalizes each pulled element and sorts it for delivery.
fn classify(
    source: &PullSource,
    state: &AppState,
    events: &[Bytes],
    received_at: OffsetDateTime,
) -> Sorted {
    let metrics = &state.metrics;
    let name = source.name.as_str();
    let mut sorted = Sorted::default();
    let mut group_of: HashMap<String, usize> = HashMap::new();
    let unusable = |why: &dyn std::fmt::Display, message: &str| {
        metrics
            .events_outcome
            .with_label_values(&[name, "unparseable"])
            .inc();
        tracing::warn!(source = name, error = %why, "{}", message);
    };
    for element in events {
        let span = telemetry::event_span(name, Ingress::Pull);
        let normalize = tracing::info_span!(target: TRACE_TARGET, parent: &span, "normalize", otel.name = "normalize");
        let entered = normalize.enter();
        // `refused`: why an event without a usable EventType goes to the dead letter instead.
        let (handle, mut envelope, refused) = match RawEvent::parse(element) {
            Ok(event) => {
                let Some(handle) = event.event_handle().map(str::to_owned) else {
                    unusable(
                        &"no EventHandle",
                        "Pulled an event without EventHandle; it cannot be confirmed.",
                    );
                    sorted.unusable += 1;
                    continue;
                };
                metrics
                    .events_received
                    .with_label_values(&[name, "pull", event_type_label(event.event_type())])
                    .inc();
                match source.normalizer.normalize(event, received_at) {
                    Ok(envelope) => (handle, envelope, None),
                    Err(error) => {
                        unusable(&error, "Pulled an event that cannot be normalized.");
                        sorted.unusable += 1;
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
                    (salvaged.handle, salvaged.envelope, Some(error.to_string()))
                } else {
                    unusable(&error, "Pulled an event that cannot be read; it stays unconfirmed (with a dead letter configured, a JSON object with an EventHandle would be dead-lettered).");
                    sorted.unusable += 1;
                    continue;
                }
            }
        };
        drop(entered);
        drop(normalize);
        envelope.traceparent = Some(telemetry::trace_parent(&span, None));
        telemetry::record_event(&span, &envelope);
        let envelope = Arc::new(envelope);
        if source.recent().contains(&envelope.id) {
            metrics
                .duplicates_suppressed
                .with_label_values(&[name])
                .inc();
            sorted.duplicates.push(handle);
            continue;
        }
        if let Some(why) = refused {
            sorted.invalid.push((
                Pulled {
                    handle,
                    envelope,
                    span,
                },
                why,
            ));
            continue;
        }
        let index = *group_of
            .entry(envelope.partition_key.clone())
            .or_insert_with(|| {
                sorted.groups.push(Vec::new());
                sorted.groups.len() - 1
            });
        sorted.groups[index].push(Pulled {
            handle,
            envelope,
            span,
        });
    }
    sorted
}

/// Sends events without a usable EventType to the dead letter; confirms those it holds.
async fn dead_letter_invalid(
    source: &PullSource,
    state: &AppState,
    confirms: &mpsc::Sender<Confirm>,
    invalid: Vec<(Pulled, String)>,
    valid_until: Instant,
    deadline: Instant,
) {
    let name = source.name.as_str();
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
            .instrument(pulled.span.clone())
            .await;
        state
            .metrics
            .record_delivery(name, &pulled.envelope, &report);
        if !report.outcome.is_handled() {
            tracing::warn!(source = name, event_id = %pulled.envelope.id, outcome = ?report.outcome, "Invalid pulled event not dead-lettered; VOD will hand it out again.");
            source.governor.settled(1);
            continue;
        }
        tracing::warn!(source = name, event_id = %pulled.envelope.id, "Pulled an event without a usable EventType; dead-lettered.");
        source.recent().insert(pulled.envelope.id.clone());
        source
            .confirm_later(confirms, pulled.handle, valid_until, pulled.span)
            .await;
    }
}

/// Delivers the groups at once, each group's events one after another.
async fn deliver_groups(
    source: &PullSource,
    state: &AppState,
    confirms: &mpsc::Sender<Confirm>,
    groups: Vec<Vec<Pulled>>,
    valid_until: Instant,
    deadline: Instant,
) {
    let metrics = &state.metrics;
    let name = source.name.as_str();
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
                    .instrument(pulled.span.clone())
                    .await;
                drop(guard);
                metrics.record_delivery(name, &pulled.envelope, &report);
                if report.outcome.is_handled() {
                    source.recent().insert(pulled.envelope.id.clone());
                    source
                        .confirm_later(confirms, pulled.handle, valid_until, pulled.span)
                        .await;
                } else {
                    let held_back = count - done - 1;
                    tracing::warn!(
                        source = name,
                        event_id = %pulled.envelope.id,
                        event_type = %pulled.envelope.event_type,
                        outcome = ?report.outcome,
                        held_back,
                        "Pulled event not acknowledged; VOD will hand it out again."
                    );
                    // Later events of the same video wait for this one's redelivery.
                    source.governor.settled(1 + held_back);
                    break;
                }
            }
        }
    }))
    .await;
}

/// The receiving end of a source's acknowledged handles, shared by its confirmers.
pub(crate) type ConfirmQueue = Arc<tokio::sync::Mutex<mpsc::Receiver<Confirm>>>;

/// What a confirmer needs: where to confirm, its pacing, its batching, its metrics.
pub(crate) struct Confirmer {
    /// Source name (metric label).
    name: String,
    queue: Arc<dyn EventQueue>,
    governor: Arc<Governor>,
    /// Longest wait for a fuller batch.
    linger: Duration,
    /// `vodbridge_confirmed_total{source}`.
    confirmed: prometheus::IntCounter,
    /// `vodbridge_confirm_batch_size{source}`.
    batch_size: prometheus::Histogram,
    /// `vodbridge_confirm_failures_total`, per reason.
    failures: prometheus::IntCounterVec,
    /// `vodbridge_vod_api_throttled_total{account, action="ConfirmEvents"}`.
    throttled: prometheus::IntCounter,
}

impl Confirmer {
    /// The confirmer of `source`.
    pub(crate) fn new(source: &PullSource, metrics: &crate::telemetry::Metrics) -> Self {
        let name = source.name.as_str();
        Self {
            name: name.to_owned(),
            queue: Arc::clone(&source.queue),
            governor: Arc::clone(&source.governor),
            linger: source.settings.confirm_linger,
            confirmed: metrics.confirmed.with_label_values(&[name]),
            batch_size: metrics.confirm_batch_size.with_label_values(&[name]),
            failures: metrics.confirm_failures.clone(),
            throttled: metrics
                .vod_api_throttled
                .with_label_values(&[source.governor.account(), Action::Confirm.as_str()]),
        }
    }

    fn failed(&self, reason: &str, count: usize) {
        self.failures
            .with_label_values(&[self.name.as_str(), reason])
            .inc_by(count as u64);
    }
}

/// Handles left between a confirm batch's last possible send and its earliest expiry.
const LINGER_SAFETY: Duration = Duration::from_secs(1);

/// Confirms acknowledged handles in full batches: after the first handle it waits up to the
/// linger time (never past that handle's deadline) for 16, then for a confirm slot of the
/// governor, topping the batch up with what arrived meanwhile. A source runs two confirmers per
/// pull loop, so confirm round trips never hold the loops back. Exits when every loop has
/// dropped its sender and the queue is empty.
pub(crate) async fn run_confirmer(confirmer: Arc<Confirmer>, queue: ConfirmQueue) {
    loop {
        let batch = {
            let mut confirms = queue.lock().await;
            let Some(first) = confirms.recv().await else {
                break;
            };
            let linger_until = (Instant::now() + confirmer.linger).min(
                first
                    .valid_until
                    .checked_sub(LINGER_SAFETY)
                    .unwrap_or(first.valid_until),
            );
            let mut batch = Vec::with_capacity(MAX_CONFIRM_HANDLES);
            batch.push(first);
            while batch.len() < MAX_CONFIRM_HANDLES {
                tokio::select! {
                    next = confirms.recv() => match next {
                        Some(next) => batch.push(next),
                        None => break,
                    },
                    () = tokio::time::sleep_until(linger_until) => break,
                }
            }
            confirmer.governor.acquire(Action::Confirm).await;
            while batch.len() < MAX_CONFIRM_HANDLES {
                match confirms.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            batch
        };
        confirm_batch(&confirmer, batch).await;
    }
}

/// Confirms one batch, whose confirm slot is already taken. Throttled and transient failures
/// are tried again, paced by the governor, for as long as the handles live: throttling never
/// turns into a redelivery. A stale handle failing the call has the others confirmed one by one.
async fn confirm_batch(confirmer: &Confirmer, mut batch: Vec<Confirm>) {
    let name = confirmer.name.as_str();
    let mut transient_pause = Duration::from_millis(100);
    loop {
        let now = Instant::now();
        let before = batch.len();
        batch.retain(|c| c.valid_until > now);
        if batch.len() < before {
            confirmer.failed("expired_before_confirm", before - batch.len());
            confirmer.governor.settled(before - batch.len());
        }
        if batch.is_empty() {
            return;
        }
        let handles: Vec<&str> = batch.iter().map(|c| c.handle.as_str()).collect();
        // A `confirm` span per event for the call that confirms it (none without an exporter).
        let spans: Vec<tracing::Span> = batch
            .iter()
            .filter(|c| !c.span.is_disabled())
            .map(|c| {
                tracing::info_span!(
                    target: TRACE_TARGET,
                    parent: &c.span,
                    "confirm",
                    otel.name = "ConfirmEvents",
                    otel.kind = "client",
                    otel.status_code = tracing::field::Empty,
                    rpc.system = "tencentcloud",
                    rpc.method = "ConfirmEvents",
                    vodbridge.confirm_batch = handles.len(),
                    error.type = tracing::field::Empty,
                )
            })
            .collect();
        let result = confirmer.queue.confirm(&handles).await;
        if let Err(error) = &result {
            for span in &spans {
                span.record("otel.status_code", "ERROR");
                span.record("error.type", error.to_string().as_str());
            }
        }
        drop(spans);
        let error = match result {
            Ok(()) => {
                confirmer.confirmed.inc_by(batch.len() as u64);
                #[allow(clippy::cast_precision_loss)] // At most 16.
                confirmer.batch_size.observe(batch.len() as f64);
                confirmer.governor.settled(batch.len());
                return;
            }
            Err(error) => error,
        };
        let class = error.class();
        confirmer.failed(class.as_str(), 1);
        match class {
            ErrorClass::Throttled => {
                confirmer.governor.throttled(Action::Confirm);
                confirmer.throttled.inc();
                tracing::debug!(
                    source = name,
                    handles = batch.len(),
                    "ConfirmEvents throttled; trying again."
                );
            }
            ErrorClass::Transient => {
                let earliest = batch.iter().map(|c| c.valid_until).min().unwrap_or(now);
                let until = (Instant::now() + transient_pause).min(earliest);
                tracing::debug!(source = name, error = %error, "ConfirmEvents failed; trying again.");
                tokio::time::sleep_until(until).await;
                transient_pause = (transient_pause * 2).min(Duration::from_secs(2));
            }
            // One stale handle may fail the whole call: confirm the others one by one.
            ErrorClass::ExpiredHandle if batch.len() > 1 => {
                for one in batch {
                    confirmer.governor.acquire(Action::Confirm).await;
                    Box::pin(confirm_batch(confirmer, vec![one])).await;
                }
                return;
            }
            _ => {
                tracing::warn!(source = name, error = %error, handles = batch.len(), "ConfirmEvents failed; VOD will hand these events out again.");
                confirmer.governor.settled(batch.len());
                return;
            }
        }
        // The next slot, but not past the handles' end: expired handles are dropped above.
        let earliest = batch.iter().map(|c| c.valid_until).min().unwrap_or(now);
        let _ =
            tokio::time::timeout_at(earliest, confirmer.governor.acquire(Action::Confirm)).await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use vodbridge_tencent::{api::ApiError, governor::GovernorConfig};

    use super::*;

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
        Arc::new(Confirmer {
            name: "src".into(),
            queue: Arc::clone(queue) as Arc<dyn EventQueue>,
            governor,
            linger: Duration::from_millis(linger_ms),
            confirmed: metrics.confirmed.with_label_values(&["src"]),
            batch_size: metrics.confirm_batch_size.with_label_values(&["src"]),
            failures: metrics.confirm_failures.clone(),
            throttled: metrics
                .vod_api_throttled
                .with_label_values(&["acct", "ConfirmEvents"]),
        })
    }

    /// Starts `workers` confirmers on one queue; returns the sender.
    fn start(
        confirmer: &Arc<Confirmer>,
        workers: usize,
    ) -> (mpsc::Sender<Confirm>, tokio_util::task::TaskTracker) {
        let (tx, rx) = mpsc::channel(256);
        let queue = Arc::new(tokio::sync::Mutex::new(rx));
        let tracker = tokio_util::task::TaskTracker::new();
        for _ in 0..workers {
            tracker.spawn(run_confirmer(Arc::clone(confirmer), Arc::clone(&queue)));
        }
        tracker.close();
        (tx, tracker)
    }

    fn handle(n: usize, valid_until: Instant) -> Confirm {
        Confirm {
            handle: format!("h{n}"),
            valid_until,
            span: tracing::Span::none(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn acknowledged_handles_go_out_in_full_batches() {
        let queue = FakeQueue::new(0);
        let confirmer = confirmer(&queue, 10.0, 50);
        let (tx, tracker) = start(&confirmer, 4);
        let valid_until = Instant::now() + Duration::from_secs(30);
        // Handles come faster than 10 calls/s can carry one by one: 200 a second for 0.8 s.
        for n in 0..160 {
            tx.send(handle(n, valid_until)).await.expect("send");
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
        tx.send(handle(1, sent + Duration::from_secs(30)))
            .await
            .expect("send");
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
        tx2.send(handle(2, valid_until)).await.expect("send");
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
        confirmer.governor.pulled(48);
        let valid_until = Instant::now() + Duration::from_secs(30);
        for n in 0..48 {
            tx.send(handle(n, valid_until)).await.expect("send");
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
        confirmer.governor.pulled(3);
        let valid_until = Instant::now() + Duration::from_secs(2);
        for n in 0..3 {
            tx.send(handle(n, valid_until)).await.expect("send");
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
