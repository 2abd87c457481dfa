//! Best-effort targets: a bounded queue per sink, drained at the sink's own pace behind a circuit
//! breaker, so that a secondary destination never holds the provider's answer or confirm.
//!
//! A route target with `required = false` is not published while the event is delivered: the
//! pipeline offers the event to the sink's [`Lane`] and counts the target as handled. The lane's
//! worker publishes what is queued, in order per partition key, up to
//! [`BestEffortSettings::concurrency`] at once. After [`BestEffortSettings::breaker_failures`]
//! failed publishes in a row its breaker opens: nothing is tried for
//! [`BestEffortSettings::breaker_open`] (then twice as long each time, up to
//! [`BestEffortSettings::breaker_open_max`]), then one event probes the sink, and its success
//! closes the breaker. Meanwhile events queue; a full queue sends the event to the dead-letter
//! destination when one is configured, or drops it and counts the drop.
//!
//! What this can lose is the price of not holding the provider: the queue lives in memory, so a
//! crash loses what it held (unless a [`LaneStore`] keeps it durably), and a full queue without a
//! dead letter drops. Every drop is counted by [`DropReason`].

use std::{
    collections::{HashSet, VecDeque},
    sync::{
        atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use failsafe::{
    backoff::{self, Exponential},
    failure_policy::{consecutive_failures, ConsecutiveFailures},
    Instrument, StateMachine,
};
use futures_util::future::BoxFuture;
use tokio::{sync::Notify, task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::{
    binding::DeadLetterInfo,
    envelope::{Envelope, EventId},
    failure::{FailureReason, SinkError},
    ordered::in_order,
    publish::{destination, publish, Queued, SinkAttempt, UnroutableRetry},
    route::Target,
    shared_record::{RecordKey, SharedRecord},
    sink::{Message, Sink},
    sink_record::SinkRecord,
};

/// How every best-effort lane queues, publishes and breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BestEffortSettings {
    /// Events one best-effort sink holds, queued and in flight; past it an event goes to the
    /// dead letter (when configured) or is dropped.
    pub queue_capacity: usize,
    /// Publishes in flight at once per best-effort sink.
    pub concurrency: usize,
    /// Deadline of each publish of a queued event.
    pub publish_timeout: Duration,
    /// Failed publishes in a row that open the breaker.
    pub breaker_failures: u32,
    /// How long the breaker stays open the first time, in whole seconds (at least 1 s); it
    /// doubles each time a probe fails, up to `breaker_open_max`.
    pub breaker_open: Duration,
    /// The longest open period.
    pub breaker_open_max: Duration,
}

impl Default for BestEffortSettings {
    /// 100,000 events, 64 in flight, 4 s per publish, open after 5 failures for 5 s to 30 s.
    fn default() -> Self {
        Self {
            queue_capacity: 100_000,
            concurrency: 64,
            publish_timeout: Duration::from_secs(4),
            breaker_failures: 5,
            breaker_open: Duration::from_secs(5),
            breaker_open_max: Duration::from_secs(30),
        }
    }
}

/// Why a best-effort event never reached its sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The sink's queue was full and no dead-letter destination is configured.
    QueueFull,
    /// The sink rejected the event permanently and the dead letter did not take it (none is
    /// configured, or it failed).
    Rejected,
    /// The bridge stopped before the queue was drained.
    Shutdown,
}

impl DropReason {
    /// Every reason, in a fixed order.
    pub const ALL: [Self; 3] = [Self::QueueFull, Self::Rejected, Self::Shutdown];

    /// The metric label value.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::QueueFull => "queue_full",
            Self::Rejected => "rejected",
            Self::Shutdown => "shutdown",
        }
    }
}

/// A best-effort sink's circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Publishing normally.
    Closed,
    /// Open for long enough: the next publish is a probe.
    HalfOpen,
    /// Failed too often: nothing is tried until the open period ends.
    Open,
}

impl BreakerState {
    /// The gauge value: 0 closed, 1 half-open, 2 open.
    #[must_use]
    pub const fn as_gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::HalfOpen => 1,
            Self::Open => 2,
        }
    }

    /// A word for logs and `/readyz`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::HalfOpen => "half-open",
            Self::Open => "open",
        }
    }

    fn from_u8(value: u8) -> Self {
        match value {
            0 => Self::Closed,
            1 => Self::HalfOpen,
            _ => Self::Open,
        }
    }
}

/// Where best-effort queues are kept durably (the application's push spool): a queued publish
/// is stored before the event counts as handled and removed once it is done with, so a crash
/// loses nothing of it; what a previous run left is queued again at start.
pub trait LaneStore: Send + Sync + 'static {
    /// Stores one queued publish durably (fsynced); its key, `Ok(None)` when the store is full.
    ///
    /// # Errors
    ///
    /// The storage's failure, as text: the event is then not handled, and comes back.
    fn append<'a>(
        &'a self,
        publish: &'a StoredPublish,
    ) -> BoxFuture<'a, Result<Option<u64>, String>>;

    /// Removes publishes that are done with (acknowledged, dead-lettered or dropped).
    fn remove(&self, keys: Vec<u64>) -> BoxFuture<'_, ()>;

    /// What a previous run left for `sink`, oldest first.
    fn load(&self, sink: &str) -> Vec<(u64, StoredPublish)>;
}

/// One queued publish as a [`LaneStore`] keeps it.
#[derive(Debug, Clone)]
pub struct StoredPublish {
    /// The best-effort sink.
    pub sink: String,
    /// The rendered destination.
    pub destination: String,
    /// The source's name.
    pub source: String,
    /// The event.
    pub envelope: Arc<Envelope>,
}

/// What the application learns of the lanes' work, for its metrics and logs (the pipeline knows
/// no metrics). Called from the lanes' workers and from `deliver` (a full queue).
pub trait LaneObserver: Send + Sync + 'static {
    /// A queued event was published, or failed (dead-letter copies included, with
    /// [`SinkAttempt::dead_letter`] set).
    fn attempted(&self, source: &str, envelope: &Envelope, attempt: &SinkAttempt);

    /// A rejected queued event went to the dead-letter destination.
    fn dead_lettered(&self, reason: FailureReason) {
        let _ = reason;
    }

    /// `count` events of `sink` left its queue without reaching it.
    fn dropped(&self, sink: &str, reason: DropReason, count: u64);

    /// The breaker of `sink` changed state.
    fn breaker(&self, sink: &str, state: BreakerState) {
        let _ = (sink, state);
    }
}

/// A best-effort lane's state, for gauges and `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneStatus {
    /// The sink's name.
    pub sink: String,
    /// Events queued or in flight.
    pub depth: usize,
    /// [`BestEffortSettings::queue_capacity`].
    pub capacity: usize,
    /// The breaker.
    pub breaker: BreakerState,
    /// Events ever queued.
    pub queued_total: u64,
}

/// One queued publish.
struct Item {
    envelope: Arc<Envelope>,
    destination: String,
    /// The source's name, for the route context of a dead letter and metric labels.
    source: Arc<str>,
    /// Its key in the [`LaneStore`], when the queue is durable.
    stored: Option<u64>,
}

/// The queue and the keys it holds (queued and in flight), under one lock.
#[derive(Default)]
struct Queue {
    items: VecDeque<Item>,
    keys: HashSet<(EventId, String)>,
}

/// What a lane's worker needs of the pipeline: its records and the dead letter.
pub(crate) struct LaneContext {
    pub(crate) record: Arc<SinkRecord>,
    pub(crate) shared: Option<Arc<dyn SharedRecord>>,
    pub(crate) dead_letter: Option<(Arc<dyn Sink>, Arc<AtomicUsize>, Target)>,
    pub(crate) unroutable: UnroutableRetry,
}

/// A queue key reserved by [`Lane::offer`]: removed on drop unless [`Reservation::keep`] was
/// called.
struct Reservation<'a> {
    lane: &'a Lane,
    key: Option<(EventId, String)>,
}

impl Reservation<'_> {
    /// The event is queued: its key stays.
    fn keep(mut self) {
        self.key = None;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.lane.lock().keys.remove(&key);
        }
    }
}

/// Keeps the breaker's state where the gauges read it, and tells the observer.
struct BreakerGauge {
    state: Arc<AtomicU8>,
    sink: String,
    observer: Option<Arc<dyn LaneObserver>>,
}

impl BreakerGauge {
    fn set(&self, state: BreakerState) {
        let before = self.state.swap(state.as_gauge() as u8, Ordering::Relaxed);
        if before != state.as_gauge() as u8 {
            if let Some(observer) = &self.observer {
                observer.breaker(&self.sink, state);
            }
        }
    }
}

impl Instrument for BreakerGauge {
    fn on_call_rejected(&self) {}
    fn on_open(&self) {
        self.set(BreakerState::Open);
    }
    fn on_half_open(&self) {
        self.set(BreakerState::HalfOpen);
    }
    fn on_closed(&self) {
        self.set(BreakerState::Closed);
    }
}

type Breaker = StateMachine<ConsecutiveFailures<Exponential>, BreakerGauge>;

/// How often an open breaker is looked at.
const OPEN_POLL: Duration = Duration::from_millis(100);
/// The pause after a batch with a failure while the breaker stays closed.
const FAILED_PAUSE: Duration = Duration::from_millis(100);

/// One best-effort sink's queue, worker and breaker.
pub(crate) struct Lane {
    sink: Arc<dyn Sink>,
    on_wire: Arc<AtomicUsize>,
    settings: BestEffortSettings,
    queue: Mutex<Queue>,
    wake: Notify,
    closing: CancellationToken,
    breaker: Breaker,
    breaker_state: Arc<AtomicU8>,
    /// Told what the lane does (metrics).
    observer: Option<Arc<dyn LaneObserver>>,
    worker: Mutex<Option<JoinHandle<()>>>,
    queued_total: AtomicU64,
    /// Where the queue is kept durably, if it is.
    store: Option<Arc<dyn LaneStore>>,
}

impl Lane {
    /// A lane for `sink`; its worker starts with the first event.
    pub(crate) fn new(
        sink: Arc<dyn Sink>,
        on_wire: Arc<AtomicUsize>,
        settings: BestEffortSettings,
        store: Option<Arc<dyn LaneStore>>,
        observer: Option<Arc<dyn LaneObserver>>,
    ) -> Self {
        let state = Arc::new(AtomicU8::new(0));
        let open = settings.breaker_open.max(Duration::from_secs(1));
        let policy = consecutive_failures(
            settings.breaker_failures.max(1),
            backoff::exponential(open, settings.breaker_open_max.max(open)),
        );
        let breaker = StateMachine::new(
            policy,
            BreakerGauge {
                state: Arc::clone(&state),
                sink: sink.name().to_owned(),
                observer: observer.clone(),
            },
        );
        Self {
            sink,
            on_wire,
            settings,
            queue: Mutex::default(),
            wake: Notify::new(),
            closing: CancellationToken::new(),
            breaker,
            breaker_state: state,
            observer,
            worker: Mutex::default(),
            queued_total: AtomicU64::new(0),
            store,
        }
    }

    /// Queues again what the store kept from a previous run (beyond the capacity too: nothing
    /// stored is thrown away); returns how many.
    pub(crate) fn restore(&self) -> usize {
        let Some(store) = &self.store else {
            return 0;
        };
        let stored = store.load(self.sink.name());
        let mut queue = self.lock();
        for (key, publish) in &stored {
            if queue
                .keys
                .insert((publish.envelope.id.clone(), publish.destination.clone()))
            {
                queue.items.push_back(Item {
                    envelope: Arc::clone(&publish.envelope),
                    destination: publish.destination.clone(),
                    source: Arc::from(publish.source.as_str()),
                    stored: Some(*key),
                });
            }
        }
        stored.len()
    }

    /// Starts the worker when the queue holds something (restored events).
    pub(crate) fn resume(self: &Arc<Self>, context: impl FnOnce() -> Arc<LaneContext>) {
        if !self.lock().items.is_empty() {
            self.start(context);
            self.wake.notify_one();
        }
    }

    /// Events the queue may hold.
    pub(crate) const fn capacity(&self) -> usize {
        self.settings.queue_capacity
    }

    /// The lane's state now.
    pub(crate) fn status(&self) -> LaneStatus {
        LaneStatus {
            sink: self.sink.name().to_owned(),
            depth: self.lock().keys.len(),
            capacity: self.settings.queue_capacity,
            breaker: BreakerState::from_u8(self.breaker_state.load(Ordering::Relaxed)),
            queued_total: self.queued_total.load(Ordering::Relaxed),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues one publish (stored first when the queue is durable); starts the worker (with
    /// `context`) on the first one.
    pub(crate) async fn offer(
        self: &Arc<Self>,
        envelope: &Arc<Envelope>,
        destination: &str,
        source: &str,
        context: impl FnOnce() -> Arc<LaneContext>,
    ) -> Queued {
        if self.closing.is_cancelled() {
            return Queued::Full;
        }
        let key = (envelope.id.clone(), destination.to_owned());
        {
            let mut queue = self.lock();
            if queue.keys.contains(&key) {
                return Queued::AlreadyQueued;
            }
            if queue.keys.len() >= self.settings.queue_capacity {
                return Queued::Full;
            }
            // Reserved while it is stored: a redelivery meanwhile is `AlreadyQueued`.
            queue.keys.insert(key.clone());
        }
        // Released unless the event is queued, also when this future is dropped while the store
        // writes (a caller that hung up): a reservation left behind would make every later
        // delivery of the event `AlreadyQueued` and never publish it.
        let reservation = Reservation {
            lane: self,
            key: Some(key),
        };
        let stored = match &self.store {
            None => None,
            Some(store) => {
                let publish = StoredPublish {
                    sink: self.sink.name().to_owned(),
                    destination: destination.to_owned(),
                    source: source.to_owned(),
                    envelope: Arc::clone(envelope),
                };
                match store.append(&publish).await {
                    Ok(Some(stored)) => Some(stored),
                    Ok(None) => return Queued::Full,
                    Err(error) => {
                        tracing::warn!(
                            sink = self.sink.name(),
                            error,
                            "Storing a best-effort publish failed; the event is not handled and comes back."
                        );
                        return Queued::NotStored;
                    }
                }
            }
        };
        reservation.keep();
        self.lock().items.push_back(Item {
            envelope: Arc::clone(envelope),
            destination: destination.to_owned(),
            source: Arc::from(source),
            stored,
        });
        self.queued_total.fetch_add(1, Ordering::Relaxed);
        self.start(context);
        self.wake.notify_one();
        Queued::Queued
    }

    fn start(self: &Arc<Self>, context: impl FnOnce() -> Arc<LaneContext>) {
        let mut worker = self
            .worker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if worker.is_none() {
            *worker = Some(tokio::spawn(Arc::clone(self).run(context())));
        }
    }

    /// The worker: takes batches as the breaker allows and publishes them, until closed.
    async fn run(self: Arc<Self>, context: Arc<LaneContext>) {
        while let Some(batch) = self.next_batch().await {
            let failed = self.publish_batch(batch, &context).await;
            // A sink that answers at once (a local file, a refused connection) must not keep
            // this worker from the runtime.
            tokio::task::yield_now().await;
            if failed && self.breaker_state.load(Ordering::Relaxed) == 0 {
                tokio::select! {
                    () = tokio::time::sleep(FAILED_PAUSE) => {}
                    () = self.closing.cancelled() => {}
                }
            }
        }
    }

    /// The next events to publish: up to `concurrency` while the breaker is closed, one probe
    /// when it is half-open, none while it is open. `None` once closing and nothing can be sent
    /// (the queue is empty, or the breaker is open).
    async fn next_batch(&self) -> Option<Vec<Item>> {
        loop {
            let empty = self.lock().items.is_empty();
            if empty {
                if self.closing.is_cancelled() {
                    return None;
                }
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = self.closing.cancelled() => {}
                }
                continue;
            }
            if !self.breaker.is_call_permitted() {
                if self.closing.is_cancelled() {
                    return None;
                }
                tokio::select! {
                    () = tokio::time::sleep(OPEN_POLL) => {}
                    () = self.closing.cancelled() => {}
                }
                continue;
            }
            let take = if self.breaker_state.load(Ordering::Relaxed) == 0 {
                self.settings.concurrency.max(1)
            } else {
                1
            };
            let mut queue = self.lock();
            let take = take.min(queue.items.len());
            return Some(queue.items.drain(..take).collect());
        }
    }

    /// Publishes one batch in order per partition key; puts what was not acknowledged back at
    /// the front of the queue, in its order. True when a publish failed.
    async fn publish_batch(&self, batch: Vec<Item>, context: &LaneContext) -> bool {
        let refs: Vec<(usize, &Item)> = batch.iter().enumerate().collect();
        let result = in_order(
            refs,
            |(_, item)| item.envelope.partition_key.as_str(),
            |(index, item)| async move { self.publish_one(item, context).await.then_some(index) },
        )
        .await;
        let done: HashSet<usize> = result.done.into_iter().collect();
        let mut failed = false;
        let mut stored = Vec::new();
        {
            let mut queue = self.lock();
            for (index, item) in batch.into_iter().enumerate().rev() {
                if done.contains(&index) {
                    stored.extend(item.stored);
                    queue
                        .keys
                        .remove(&(item.envelope.id.clone(), item.destination));
                } else {
                    failed = true;
                    queue.items.push_front(item);
                }
            }
        }
        if let (Some(store), false) = (&self.store, stored.is_empty()) {
            store.remove(stored).await;
        }
        failed
    }

    /// Publishes one queued event; true when it is done with (acknowledged, or rejected and
    /// dead-lettered or dropped), false when it must be tried again.
    async fn publish_one(&self, item: &Item, context: &LaneContext) -> bool {
        let message = Message {
            envelope: Arc::clone(&item.envelope),
            destination: item.destination.clone(),
            dead_letter: None,
        };
        let deadline = Instant::now() + self.settings.publish_timeout;
        let attempt = publish(
            Arc::clone(&self.sink),
            &self.on_wire,
            message,
            deadline,
            false,
            context.unroutable,
        )
        .await;
        if let Some(observer) = &self.observer {
            observer.attempted(&item.source, &item.envelope, &attempt);
        }
        match &attempt.result {
            Ok(()) => {
                self.breaker.on_success();
                context
                    .record
                    .insert(&item.envelope.id, self.sink.name(), &item.destination);
                if let Some(shared) = &context.shared {
                    shared.remember(RecordKey {
                        id: item.envelope.id.clone(),
                        sink: self.sink.name().to_owned(),
                        destination: item.destination.clone(),
                    });
                }
                true
            }
            Err(SinkError::Retryable { .. }) => {
                self.breaker.on_error();
                false
            }
            Err(SinkError::Rejected { reason, detail }) => {
                // The sink answered: it is up, the event is what it refuses.
                self.breaker.on_success();
                let info = DeadLetterInfo {
                    reason: *reason,
                    detail: detail.clone(),
                    failed_sink: self.sink.name().to_owned(),
                    failed_destination: item.destination.clone(),
                };
                if !self.dead_letter(item, info, context).await {
                    tracing::warn!(
                        sink = self.sink.name(),
                        destination = %item.destination,
                        event_id = %item.envelope.id,
                        reason = reason.as_str(),
                        detail = %detail,
                        "A best-effort sink rejected an event permanently and no dead letter took it; dropped."
                    );
                    if let Some(observer) = &self.observer {
                        observer.dropped(self.sink.name(), DropReason::Rejected, 1);
                    }
                }
                true
            }
        }
    }

    /// Sends a rejected event to the dead-letter destination once; true when it took it.
    async fn dead_letter(&self, item: &Item, info: DeadLetterInfo, context: &LaneContext) -> bool {
        let Some((sink, on_wire, target)) = &context.dead_letter else {
            return false;
        };
        let route = crate::route::RouteContext {
            source: &item.source,
        };
        let reason = info.reason;
        let message = Message {
            destination: destination(target, &item.envelope, &route),
            envelope: Arc::clone(&item.envelope),
            dead_letter: Some(info),
        };
        let once = UnroutableRetry {
            retries: 0,
            ..context.unroutable
        };
        let deadline = Instant::now() + self.settings.publish_timeout;
        let attempt = publish(Arc::clone(sink), on_wire, message, deadline, true, once).await;
        if let Some(observer) = &self.observer {
            observer.attempted(&item.source, &item.envelope, &attempt);
            if attempt.result.is_ok() {
                observer.dead_lettered(reason);
            }
        }
        attempt.result.is_ok()
    }

    /// Stops taking events and drains what is queued within `within` (nothing more is tried
    /// while the breaker is open); what is left is counted as dropped on shutdown, unless the
    /// queue is durable (it stays stored for the next start). Returns how many were dropped.
    pub(crate) async fn close(&self, within: Duration) -> u64 {
        self.closing.cancel();
        let worker = self
            .worker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(mut worker) = worker {
            if tokio::time::timeout(within, &mut worker).await.is_err() {
                worker.abort();
                let _ = worker.await;
            }
        }
        let left = {
            let mut queue = self.lock();
            let left = queue.keys.len() as u64;
            queue.items.clear();
            queue.keys.clear();
            left
        };
        if left > 0 && self.store.is_some() {
            tracing::info!(
                sink = self.sink.name(),
                events = left,
                "A best-effort sink's queue is kept in the spool; the next start publishes it."
            );
            return 0;
        }
        if left > 0 {
            tracing::warn!(
                sink = self.sink.name(),
                events = left,
                "A best-effort sink's queue was not drained before shutdown; those events are lost for it."
            );
            if let Some(observer) = &self.observer {
                observer.dropped(self.sink.name(), DropReason::Shutdown, left);
            }
        }
        left
    }
}
