//! The pipeline: route an envelope, publish to every target under one deadline, merge outcomes,
//! dead-letter permanent failures.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, OnceLock,
    },
    time::Duration,
};

use futures_util::future::join_all;
use tokio::time::Instant;

use crate::{
    best_effort::{
        BestEffortSettings, DropReason, Lane, LaneContext, LaneObserver, LaneStatus, LaneStore,
    },
    binding::DeadLetterInfo,
    envelope::Envelope,
    error::{Error, Result},
    failure::{FailureReason, SinkError},
    outcome::Outcome,
    publish::{destination, publish, Queued, SinkAttempt, UnroutableRetry},
    route::{Resolution, RouteAction, RouteContext, RouteTable, Target},
    shared_record::{RecordKey, SharedRecord},
    sink::{Message, Sink},
    sink_record::SinkRecord,
};

/// Routes envelopes to sinks and decides each event's [`Outcome`].
///
/// The pipeline holds no queue: `deliver` returns when every routed sink answered or the deadline
/// passed, and the caller acknowledges the event upstream only if the outcome is handled.
pub struct Pipeline {
    /// Sinks by configured name, each with its count of publishes on the wire.
    sinks: HashMap<String, (Arc<dyn Sink>, Arc<AtomicUsize>)>,
    /// Publishes acknowledged recently, per sink and destination: not repeated when the event
    /// comes back because another sink failed.
    record: Arc<SinkRecord>,
    /// The record the fleet shares (Redis/Valkey, NATS KV): read by [`Pipeline::recall`] into
    /// `record`, written after each acknowledgement. `None`: this process's record only.
    shared: Option<Arc<dyn SharedRecord>>,
    /// The routing table, first match wins.
    routes: RouteTable,
    /// Where permanently rejected (and unroutable) events go; `None` leaves them unacknowledged.
    dead_letter: Option<Target>,
    /// How an `unroutable` answer is retried before it counts as permanent.
    unroutable: UnroutableRetry,
    /// The queue of each sink that some route names as a best-effort target.
    lanes: HashMap<String, Arc<Lane>>,
    /// How the lanes queue, publish and break.
    best_effort: BestEffortSettings,
    /// Where the lanes keep their queues durably, if they do.
    lane_store: Option<Arc<dyn LaneStore>>,
    /// Told what the lanes do (metrics).
    observer: Option<Arc<dyn LaneObserver>>,
    /// What the lanes' workers share, made when the first one starts (after every `with_*`).
    lane_context: OnceLock<Arc<LaneContext>>,
}

/// How one sink ended at shutdown (see [`Pipeline::close`]).
#[derive(Debug)]
pub struct SinkClosed {
    /// The sink's name.
    pub sink: String,
    /// Publishes still waiting for the broker when the sink was closed: their events were not
    /// acknowledged upstream, so VOD hands them out again (a pull) or sends them again (a push).
    pub abandoned: usize,
    /// What closing (flushing) answered; a close that did not end in time is a timeout.
    pub result: Result<(), SinkError>,
}

/// Everything `deliver` learned about one event.
pub struct DeliveryReport {
    /// The merged outcome; acknowledge upstream only if [`Outcome::is_handled`].
    pub outcome: Outcome,
    /// Index of the route that matched, if any.
    pub route: Option<usize>,
    /// Every publish attempt, dead-letter included.
    pub attempts: Vec<SinkAttempt>,
}

impl Pipeline {
    /// Builds a pipeline and checks that every route and the dead-letter target name a sink.
    ///
    /// # Errors
    ///
    /// [`Error::UnknownSink`] when a route (or the dead-letter target, reported as route
    /// `usize::MAX`) names a sink that is not in `sinks`.
    pub fn new(
        sinks: Vec<Arc<dyn Sink>>,
        routes: RouteTable,
        dead_letter: Option<Target>,
    ) -> Result<Self> {
        let sinks: HashMap<String, (Arc<dyn Sink>, Arc<AtomicUsize>)> = sinks
            .into_iter()
            .map(|s| (s.name().to_owned(), (s, Arc::default())))
            .collect();
        for (index, route) in routes.routes().iter().enumerate() {
            if let RouteAction::Publish(targets) = &route.action {
                if let Some(t) = targets.iter().find(|t| !sinks.contains_key(&t.sink)) {
                    return Err(Error::UnknownSink {
                        route: index,
                        sink: t.sink.clone(),
                    });
                }
            }
        }
        if let Some(t) = dead_letter
            .as_ref()
            .filter(|t| !sinks.contains_key(&t.sink))
        {
            return Err(Error::UnknownSink {
                route: usize::MAX,
                sink: t.sink.clone(),
            });
        }
        let mut pipeline = Self {
            sinks,
            record: Arc::new(SinkRecord::new(0)),
            shared: None,
            routes,
            dead_letter,
            unroutable: UnroutableRetry::default(),
            lanes: HashMap::new(),
            best_effort: BestEffortSettings::default(),
            lane_store: None,
            observer: None,
            lane_context: OnceLock::new(),
        };
        pipeline.build_lanes();
        Ok(pipeline)
    }

    /// One lane per sink that some route names as a best-effort target.
    fn build_lanes(&mut self) {
        let mut lanes = HashMap::new();
        for route in self.routes.routes() {
            let RouteAction::Publish(targets) = &route.action else {
                continue;
            };
            for target in targets.iter().filter(|t| !t.required) {
                if let Some((sink, on_wire)) = self.sinks.get(&target.sink) {
                    lanes.entry(target.sink.clone()).or_insert_with(|| {
                        Arc::new(Lane::new(
                            Arc::clone(sink),
                            Arc::clone(on_wire),
                            self.best_effort.clone(),
                            self.lane_store.clone(),
                            self.observer.clone(),
                        ))
                    });
                }
            }
        }
        self.lanes = lanes;
    }

    /// Sets how best-effort targets queue, publish and break (see [`BestEffortSettings`];
    /// defaults without this call), and who is told what their queues do. Call it before the
    /// first delivery.
    #[must_use]
    pub fn with_best_effort(
        mut self,
        settings: &BestEffortSettings,
        observer: Option<Arc<dyn LaneObserver>>,
    ) -> Self {
        self.best_effort = settings.clone();
        self.observer = observer;
        self.build_lanes();
        self
    }

    /// Keeps every best-effort queue durably in `store` (see [`LaneStore`]): each queued event
    /// is stored before it counts as handled, so a crash loses nothing of it, and what a
    /// previous run left is queued again now (published once [`Pipeline::resume`] is called).
    /// Returns the pipeline and how many stored events were queued again.
    #[must_use]
    pub fn with_best_effort_store(mut self, store: Arc<dyn LaneStore>) -> (Self, usize) {
        self.lane_store = Some(store);
        self.build_lanes();
        let restored = self.lanes.values().map(|lane| lane.restore()).sum();
        (self, restored)
    }

    /// Starts publishing what the best-effort queues hold from a previous run (a durable
    /// store); queues that are empty start with their first event.
    pub fn resume(&self) {
        for lane in self.lanes.values() {
            lane.resume(|| self.lane_context());
        }
    }

    /// Whether `sink` must acknowledge before an event it is routed to is handled: it is a
    /// required target of some route, or the dead-letter destination. A sink that is only ever
    /// a best-effort target is not required: its outage does not make the bridge unready.
    #[must_use]
    pub fn is_required(&self, sink: &str) -> bool {
        self.dead_letter.as_ref().is_some_and(|t| t.sink == sink)
            || self.routes.routes().iter().any(|route| {
                matches!(&route.action, RouteAction::Publish(targets)
                    if targets.iter().any(|t| t.required && t.sink == sink))
            })
    }

    /// True when there are required sinks and none of them is healthy: nothing can be
    /// acknowledged, so pulling is pointless.
    #[must_use]
    pub fn required_sinks_down(&self) -> bool {
        let mut required = self
            .sinks()
            .filter(|s| self.is_required(s.name()))
            .peekable();
        required.peek().is_some() && required.all(|s| !s.is_healthy())
    }

    /// The state of every best-effort sink's queue, by sink name.
    pub fn best_effort(&self) -> impl Iterator<Item = LaneStatus> + '_ {
        let mut names: Vec<&String> = self.lanes.keys().collect();
        names.sort();
        names.into_iter().map(|name| self.lanes[name].status())
    }

    /// What the lanes' workers share; made once, on the first offer.
    fn lane_context(&self) -> Arc<LaneContext> {
        Arc::clone(self.lane_context.get_or_init(|| {
            Arc::new(LaneContext {
                record: Arc::clone(&self.record),
                shared: self.shared.clone(),
                dead_letter: self.dead_letter.as_ref().and_then(|target| {
                    self.sinks.get(&target.sink).map(|(sink, on_wire)| {
                        (Arc::clone(sink), Arc::clone(on_wire), target.clone())
                    })
                }),
                unroutable: self.unroutable,
            })
        }))
    }

    /// Remembers up to `capacity` acknowledged publishes (event id, sink, destination): when an
    /// event is delivered again (VOD hands it out again because another routed sink failed),
    /// a sink that already acknowledged it there is skipped and the attempt reports
    /// [`SinkAttempt::skipped`]. 0 (the default) always publishes.
    #[must_use]
    pub fn with_sink_record(mut self, capacity: usize) -> Self {
        self.record = Arc::new(SinkRecord::new(capacity));
        self
    }

    /// The record of acknowledged publishes.
    #[must_use]
    pub fn sink_record(&self) -> &SinkRecord {
        &self.record
    }

    /// Shares the record of acknowledged publishes with the fleet through `shared`: every
    /// acknowledged publish is also remembered there (written behind, after the ack), and
    /// [`Pipeline::recall`] reads it before a batch is delivered. The local record (see
    /// [`Pipeline::with_sink_record`]) holds what was recalled, so it needs a capacity of at
    /// least a few batches.
    #[must_use]
    pub fn with_shared_record(mut self, shared: Arc<dyn SharedRecord>) -> Self {
        self.shared = Some(shared);
        self
    }

    /// Reads the shared record (one round trip) for every target the envelopes route to that
    /// the local record does not know, and copies what some bridge recorded into the local
    /// record, so [`Pipeline::deliver`] skips those publishes. Returns how many targets were
    /// recalled. Without a shared record (or with nothing to ask) it returns 0 at once; a store
    /// that is down or slow answers nothing and costs at most its timeout.
    pub async fn recall(&self, envelopes: &[&Envelope], context: RouteContext<'_>) -> usize {
        let Some(shared) = &self.shared else {
            return 0;
        };
        if self.record.capacity() == 0 {
            return 0;
        }
        let mut keys = Vec::new();
        for envelope in envelopes {
            let Resolution::Publish(_, targets) = self.routes.resolve(&envelope.event_type) else {
                continue;
            };
            for target in targets {
                let destination = destination(target, envelope, &context);
                if !self
                    .record
                    .contains(&envelope.id, &target.sink, &destination)
                {
                    keys.push(RecordKey {
                        id: envelope.id.clone(),
                        sink: target.sink.clone(),
                        destination,
                    });
                }
            }
        }
        if keys.is_empty() {
            return 0;
        }
        let known = shared.recall(&keys).await;
        let mut recalled = 0;
        for (key, known) in keys.iter().zip(known) {
            if known {
                self.record.insert(&key.id, &key.sink, &key.destination);
                recalled += 1;
            }
        }
        recalled
    }

    /// Replaces the [`UnroutableRetry`] policy (default: two retries, 200 ms then 400 ms).
    #[must_use]
    pub const fn with_unroutable_retry(mut self, policy: UnroutableRetry) -> Self {
        self.unroutable = policy;
        self
    }

    /// The routing table.
    #[must_use]
    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// The dead-letter target, if configured.
    #[must_use]
    pub fn dead_letter(&self) -> Option<&Target> {
        self.dead_letter.as_ref()
    }

    /// Every sink, in no particular order.
    pub fn sinks(&self) -> impl Iterator<Item = &Arc<dyn Sink>> {
        self.sinks.values().map(|(sink, _)| sink)
    }

    /// True when every sink reports healthy.
    #[must_use]
    pub fn is_healthy(&self) -> bool {
        self.sinks().all(|s| s.is_healthy())
    }

    /// Publishes on the wire now, per sink name.
    pub fn in_flight(&self) -> impl Iterator<Item = (&str, usize)> {
        self.sinks
            .iter()
            .map(|(name, (_, count))| (name.as_str(), count.load(Ordering::Relaxed)))
    }

    /// Delivers one envelope: publish to every routed target at once, wait for all answers or the
    /// deadline, merge (worst wins), and dead-letter a permanent failure.
    pub async fn deliver(
        &self,
        envelope: Arc<Envelope>,
        context: RouteContext<'_>,
        deadline: Instant,
    ) -> DeliveryReport {
        let (route, targets) = match self.routes.resolve(&envelope.event_type) {
            Resolution::Drop(index) => {
                return DeliveryReport {
                    outcome: Outcome::Dropped,
                    route: Some(index),
                    attempts: Vec::new(),
                }
            }
            Resolution::NoRoute => {
                let outcome = Outcome::Rejected {
                    reason: FailureReason::NoRoute,
                    detail: format!("no route matches event type {:?}", envelope.event_type),
                };
                return self
                    .dead_letter_if_rejected(envelope, context, deadline, None, outcome, Vec::new())
                    .await;
            }
            Resolution::Publish(index, targets) => (index, targets),
        };

        let publish_to = |target| self.publish_to(target, &envelope, context, deadline);
        // One target is the common case: no join machinery for it.
        let attempts: Vec<SinkAttempt> = match targets {
            [only] => vec![publish_to(only).await],
            _ => join_all(targets.iter().map(publish_to)).await,
        };

        let outcome = attempts
            .iter()
            .map(|a| Outcome::from(a.result.clone()))
            .fold(Outcome::Delivered, Outcome::merge);
        self.dead_letter_if_rejected(envelope, context, deadline, Some(route), outcome, attempts)
            .await
    }

    /// One target's part of a delivery: skipped when the record says the sink holds the event
    /// there, offered to the sink's queue for a best-effort target, else published now (and
    /// recorded once acknowledged).
    async fn publish_to(
        &self,
        target: &Target,
        envelope: &Arc<Envelope>,
        context: RouteContext<'_>,
        deadline: Instant,
    ) -> SinkAttempt {
        let message = Message {
            destination: destination(target, envelope, &context),
            envelope: Arc::clone(envelope),
            dead_letter: None,
        };
        let Some((sink, on_wire)) = self.sinks.get(&target.sink).cloned() else {
            unreachable!("route targets are validated in Pipeline::new")
        };
        if self
            .record
            .contains(&envelope.id, sink.name(), &message.destination)
        {
            return SinkAttempt {
                sink,
                destination: message.destination,
                result: Ok(()),
                elapsed: Duration::ZERO,
                dead_letter: false,
                unroutable_retries: 0,
                skipped: true,
                best_effort: None,
            };
        }
        if let Some(lane) = (!target.required)
            .then(|| self.lanes.get(&target.sink))
            .flatten()
        {
            return self.offer(lane, sink, message, context).await;
        }
        let attempt = publish(sink, &on_wire, message, deadline, false, self.unroutable).await;
        if attempt.result.is_ok() {
            self.record
                .insert(&envelope.id, attempt.sink.name(), &attempt.destination);
            if let Some(shared) = &self.shared {
                shared.remember(RecordKey {
                    id: envelope.id.clone(),
                    sink: attempt.sink.name().to_owned(),
                    destination: attempt.destination.clone(),
                });
            }
        }
        attempt
    }

    /// Offers a best-effort target's publish to its sink's queue. A full queue sends the event
    /// to the dead letter when one is configured (the attempt is a `queue_full` rejection, so
    /// the merged outcome dead-letters it), else drops it for that sink and counts the drop.
    async fn offer(
        &self,
        lane: &Arc<Lane>,
        sink: Arc<dyn Sink>,
        message: Message,
        context: RouteContext<'_>,
    ) -> SinkAttempt {
        let queued = lane
            .offer(
                &message.envelope,
                &message.destination,
                context.source,
                || self.lane_context(),
            )
            .await;
        let result = match queued {
            Queued::Full if self.dead_letter.is_some() => Err(SinkError::rejected(
                FailureReason::QueueFull,
                format!(
                    "the best-effort queue of {} is full ({} events)",
                    sink.name(),
                    lane.capacity()
                ),
            )),
            Queued::Full => {
                if let Some(observer) = &self.observer {
                    observer.dropped(sink.name(), DropReason::QueueFull, 1);
                }
                Ok(())
            }
            Queued::NotStored => Err(SinkError::retryable(
                FailureReason::Unavailable,
                format!(
                    "the best-effort queue of {} could not store the event",
                    sink.name()
                ),
            )),
            Queued::Queued | Queued::AlreadyQueued => Ok(()),
        };
        SinkAttempt {
            sink,
            destination: message.destination,
            result,
            elapsed: Duration::ZERO,
            dead_letter: false,
            unroutable_retries: 0,
            skipped: false,
            best_effort: Some(queued),
        }
    }

    /// Sends an event that cannot be routed at all (its body is unusable) straight to the
    /// dead-letter destination with `reason`; without one the outcome is
    /// [`Outcome::Rejected`] and the event stays unacknowledged.
    pub async fn reject(
        &self,
        envelope: Arc<Envelope>,
        context: RouteContext<'_>,
        deadline: Instant,
        reason: FailureReason,
        detail: String,
    ) -> DeliveryReport {
        let outcome = Outcome::Rejected { reason, detail };
        self.dead_letter_if_rejected(envelope, context, deadline, None, outcome, Vec::new())
            .await
    }

    async fn dead_letter_if_rejected(
        &self,
        envelope: Arc<Envelope>,
        context: RouteContext<'_>,
        deadline: Instant,
        route: Option<usize>,
        outcome: Outcome,
        mut attempts: Vec<SinkAttempt>,
    ) -> DeliveryReport {
        let (Outcome::Rejected { reason, detail }, Some(target)) = (&outcome, &self.dead_letter)
        else {
            return DeliveryReport {
                outcome,
                route,
                attempts,
            };
        };
        let Some((sink, on_wire)) = self.sinks.get(&target.sink).cloned() else {
            unreachable!("the dead-letter sink is validated in Pipeline::new");
        };
        let failed = attempts
            .iter()
            .find(|a| matches!(a.result, Err(SinkError::Rejected { .. })));
        let message = Message {
            destination: destination(target, &envelope, &context),
            dead_letter: Some(DeadLetterInfo {
                reason: *reason,
                detail: detail.clone(),
                failed_sink: failed.map(|a| a.sink.name().to_owned()).unwrap_or_default(),
                failed_destination: failed.map(|a| a.destination.clone()).unwrap_or_default(),
            }),
            envelope,
        };
        // The dead-letter destination is tried once: its failure leaves the event unacknowledged.
        let once = UnroutableRetry {
            retries: 0,
            ..self.unroutable
        };
        let attempt = publish(sink, &on_wire, message, deadline, true, once).await;
        let outcome = match &attempt.result {
            Ok(()) => Outcome::DeadLettered { reason: *reason },
            // The dead-letter destination failed too: the event stays unacknowledged. A transient
            // failure there means it comes back and both steps are tried again.
            Err(error) => outcome.merge(Outcome::from(error.clone())),
        };
        attempts.push(attempt);
        DeliveryReport {
            outcome,
            route,
            attempts,
        }
    }

    /// Closes every sink at once (flushes buffers, releases connections), each within `within`,
    /// and says how each ended: a close still running then (a flush to a broker that does
    /// not answer, a connection whose close is never acknowledged) is abandoned as a timeout.
    /// The shared record's last writes are flushed at the same time, within the same limit.
    ///
    /// Best-effort queues are drained first (what a healthy sink can take within `within`;
    /// nothing waits for an open breaker), and what is left in them is counted as dropped.
    pub async fn close(&self, within: Duration) -> Vec<SinkClosed> {
        let started = Instant::now();
        join_all(self.lanes.values().map(|lane| lane.close(within))).await;
        let within = within
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(500));
        let flush = async {
            if let Some(shared) = &self.shared {
                shared.flush(within).await;
            }
        };
        let close = join_all(self.sinks.iter().map(|(name, (sink, on_wire))| async move {
            let abandoned = on_wire.load(Ordering::Relaxed);
            let result = match tokio::time::timeout(within, sink.close()).await {
                Ok(result) => result,
                Err(_) => Err(SinkError::retryable(
                    FailureReason::Timeout,
                    format!("the sink did not close within {} ms", within.as_millis()),
                )),
            };
            SinkClosed {
                sink: name.clone(),
                abandoned,
                result,
            }
        }));
        let ((), closed) = futures_util::future::join(flush, close).await;
        closed
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::sync::Notify;

    use super::*;
    use crate::{
        best_effort::BreakerState, envelope::tests::sample, route::Route, sink::PublishFuture,
        EventTypePattern, Template,
    };

    /// A sink whose answer the test decides, recording what it was given.
    struct Scripted {
        name: &'static str,
        answer: Box<dyn Fn() -> Result<(), SinkError> + Send + Sync>,
        hang: bool,
        gate: Option<Arc<Notify>>,
        seen: Mutex<Vec<(String, Option<FailureReason>)>>,
    }

    impl Scripted {
        fn new(
            name: &'static str,
            answer: impl Fn() -> Result<(), SinkError> + Send + Sync + 'static,
        ) -> Arc<Self> {
            Arc::new(Self {
                name,
                answer: Box::new(answer),
                hang: false,
                gate: None,
                seen: Mutex::default(),
            })
        }
        fn seen(&self) -> Vec<(String, Option<FailureReason>)> {
            self.seen.lock().map(|s| s.clone()).unwrap_or_default()
        }
    }

    impl Sink for Scripted {
        fn name(&self) -> &str {
            self.name
        }
        fn kind(&self) -> &'static str {
            "scripted"
        }
        fn publish<'a>(&'a self, message: &'a Message) -> PublishFuture<'a> {
            Box::pin(async move {
                if let Ok(mut seen) = self.seen.lock() {
                    seen.push((
                        message.destination.clone(),
                        message.dead_letter.as_ref().map(|d| d.reason),
                    ));
                }
                if let Some(gate) = &self.gate {
                    gate.notified().await;
                }
                if self.hang {
                    std::future::pending::<()>().await;
                }
                (self.answer)()
            })
        }
    }

    /// A sink that times out while its switch is above 0, and acknowledges after.
    fn switchable(name: &'static str) -> (Arc<Scripted>, Arc<AtomicUsize>) {
        let down = Arc::new(AtomicUsize::new(1));
        let sink = Scripted::new(name, {
            let down = Arc::clone(&down);
            move || {
                if down.load(Ordering::Relaxed) > 0 {
                    Err(SinkError::retryable(FailureReason::Timeout, "silent"))
                } else {
                    Ok(())
                }
            }
        });
        (sink, down)
    }

    fn route(pattern: &str, sinks: &[&str]) -> Route {
        Route {
            patterns: vec![EventTypePattern::parse(pattern).expect("valid")],
            action: RouteAction::Publish(
                sinks
                    .iter()
                    .map(|s| Target {
                        sink: (*s).into(),
                        destination: Template::parse("t.{event_type}").expect("ok"),
                        required: true,
                    })
                    .collect(),
            ),
        }
    }

    fn pipeline(sinks: Vec<Arc<dyn Sink>>, routes: Vec<Route>, dlq: Option<&str>) -> Pipeline {
        let dlq = dlq.map(|s| Target {
            sink: s.into(),
            destination: Template::parse("dlq").expect("ok"),
            required: true,
        });
        Pipeline::new(
            sinks,
            RouteTable::new(routes, ["NewFileUpload"]).expect("valid"),
            dlq,
        )
        .expect("valid")
    }

    fn ctx() -> RouteContext<'static> {
        RouteContext { source: "default" }
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(4)
    }

    #[tokio::test]
    async fn fan_out_needs_every_ack() {
        let a = Scripted::new("a", || Ok(()));
        let b = Scripted::new("b", || {
            Err(SinkError::retryable(FailureReason::Unavailable, "down"))
        });
        let p = pipeline(
            vec![a.clone(), b.clone()],
            vec![route("*", &["a", "b"])],
            None,
        );
        let report = p.deliver(Arc::new(sample()), ctx(), soon()).await;
        assert!(matches!(
            report.outcome,
            Outcome::Retryable {
                reason: FailureReason::Unavailable,
                ..
            }
        ));
        assert_eq!(a.seen(), vec![("t.NewFileUpload".to_owned(), None)]);
        assert_eq!(b.seen().len(), 1);
        assert_eq!(report.attempts.len(), 2);
    }

    #[tokio::test]
    async fn a_redelivery_skips_the_sinks_that_already_acknowledged() {
        let healthy = Scripted::new("a", || Ok(()));
        let (failing, down) = switchable("b");
        let p = pipeline(
            vec![healthy.clone(), failing.clone()],
            vec![route("*", &["a", "b"])],
            None,
        )
        .with_sink_record(100);
        // VOD hands the event out three times while b fails: a stores it once.
        for _ in 0..3 {
            let report = p.deliver(Arc::new(sample()), ctx(), soon()).await;
            assert!(!report.outcome.is_handled());
        }
        assert_eq!(healthy.seen().len(), 1, "no copies on the healthy sink");
        assert_eq!(failing.seen().len(), 3);
        down.store(0, Ordering::Relaxed);
        let report = p.deliver(Arc::new(sample()), ctx(), soon()).await;
        assert_eq!(report.outcome, Outcome::Delivered);
        let skipped: Vec<&str> = report
            .attempts
            .iter()
            .filter(|a| a.skipped)
            .map(|a| a.sink.name())
            .collect();
        assert_eq!(skipped, ["a"]);
        assert_eq!((healthy.seen().len(), failing.seen().len()), (1, 4));
        // Without the record every redelivery publishes everywhere again.
        let plain = pipeline(vec![healthy.clone()], vec![route("*", &["a"])], None);
        plain.deliver(Arc::new(sample()), ctx(), soon()).await;
        assert_eq!(healthy.seen().len(), 2);
    }

    /// A shared record in memory: what was remembered, what was asked, and whether it answers.
    #[derive(Default)]
    struct Store {
        keys: Mutex<std::collections::HashSet<String>>,
        asked: AtomicUsize,
        flushed: AtomicUsize,
        down: std::sync::atomic::AtomicBool,
    }

    impl SharedRecord for Store {
        fn recall<'a>(
            &'a self,
            keys: &'a [RecordKey],
        ) -> futures_util::future::BoxFuture<'a, Vec<bool>> {
            self.asked.fetch_add(1, Ordering::Relaxed);
            let known = self.keys.lock().map(|k| k.clone()).unwrap_or_default();
            let down = self.down.load(Ordering::Relaxed);
            Box::pin(async move {
                keys.iter()
                    .map(|k| !down && known.contains(&k.store_key()))
                    .collect()
            })
        }
        fn remember(&self, key: RecordKey) {
            if let Ok(mut keys) = self.keys.lock() {
                keys.insert(key.store_key());
            }
        }
        fn flush(&self, _within: Duration) -> futures_util::future::BoxFuture<'_, ()> {
            self.flushed.fetch_add(1, Ordering::Relaxed);
            Box::pin(async {})
        }
    }

    #[tokio::test]
    async fn a_shared_record_lets_another_replica_skip_what_one_acknowledged() {
        let store = Arc::new(Store::default());
        let healthy = Scripted::new("a", || Ok(()));
        let (failing, down) = switchable("b");
        let replica = || {
            pipeline(
                vec![healthy.clone(), failing.clone()],
                vec![route("*", &["a", "b"])],
                None,
            )
            .with_sink_record(100)
            .with_shared_record(store.clone())
        };
        let (first, second) = (replica(), replica());
        let event = Arc::new(sample());
        // The first replica: a acknowledges, b fails. Only a's publish is remembered.
        assert_eq!(first.recall(&[&event], ctx()).await, 0);
        let report = first.deliver(Arc::clone(&event), ctx(), soon()).await;
        assert!(!report.outcome.is_handled());
        assert_eq!(store.keys.lock().expect("lock").len(), 1, "only the ack");
        // VOD hands it to the second replica, b is back: a is recalled and skipped.
        down.store(0, Ordering::Relaxed);
        assert_eq!(second.recall(&[&event], ctx()).await, 1);
        let report = second.deliver(Arc::clone(&event), ctx(), soon()).await;
        assert_eq!(report.outcome, Outcome::Delivered);
        assert_eq!((healthy.seen().len(), failing.seen().len()), (1, 2));
        // Both are recorded now: a third replica publishes nothing, and asks once per batch.
        let third = replica();
        let asked = store.asked.load(Ordering::Relaxed);
        assert_eq!(third.recall(&[&event, &event], ctx()).await, 4);
        assert_eq!(store.asked.load(Ordering::Relaxed), asked + 1);
        let report = third.deliver(Arc::clone(&event), ctx(), soon()).await;
        assert!(report.attempts.iter().all(|a| a.skipped));
        // What the local record knows is not asked again.
        assert_eq!(third.recall(&[&event], ctx()).await, 0);
        assert_eq!(store.asked.load(Ordering::Relaxed), asked + 1);
        third.close(Duration::from_secs(1)).await;
        assert_eq!(store.flushed.load(Ordering::Relaxed), 1, "close flushes");
    }

    #[tokio::test]
    async fn a_shared_record_that_is_down_costs_a_publish_not_an_event() {
        let store = Arc::new(Store::default());
        let a = Scripted::new("a", || Ok(()));
        let replica = || {
            pipeline(vec![a.clone()], vec![route("*", &["a"])], None)
                .with_sink_record(100)
                .with_shared_record(store.clone())
        };
        let event = Arc::new(sample());
        replica().deliver(Arc::clone(&event), ctx(), soon()).await;
        store.down.store(true, Ordering::Relaxed);
        let other = replica();
        assert_eq!(other.recall(&[&event], ctx()).await, 0);
        let report = other.deliver(Arc::clone(&event), ctx(), soon()).await;
        assert_eq!(report.outcome, Outcome::Delivered);
        assert_eq!(
            a.seen().len(),
            2,
            "published again: a duplicate, never a loss"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn close_is_bounded_and_counts_what_was_abandoned() {
        struct Stuck;
        impl Sink for Stuck {
            fn name(&self) -> &str {
                "stuck"
            }
            fn kind(&self) -> &'static str {
                "scripted"
            }
            fn publish<'a>(&'a self, _: &'a Message) -> PublishFuture<'a> {
                Box::pin(std::future::pending())
            }
            fn close(&self) -> PublishFuture<'_> {
                Box::pin(std::future::pending())
            }
        }
        let p = Arc::new(pipeline(
            vec![Arc::new(Stuck)],
            vec![route("*", &["stuck"])],
            None,
        ));
        let deliver = tokio::spawn({
            let p = Arc::clone(&p);
            async move {
                p.deliver(
                    Arc::new(sample()),
                    ctx(),
                    Instant::now() + Duration::from_secs(60),
                )
                .await
                .outcome
            }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(p.in_flight().collect::<Vec<_>>(), [("stuck", 1)]);
        let started = Instant::now();
        let closed = p.close(Duration::from_secs(2)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].abandoned, 1);
        assert!(matches!(
            &closed[0].result,
            Err(SinkError::Retryable {
                reason: FailureReason::Timeout,
                ..
            })
        ));
        deliver.abort();
    }

    #[tokio::test]
    async fn all_acks_deliver() {
        let a = Scripted::new("a", || Ok(()));
        let b = Scripted::new("b", || Ok(()));
        let p = pipeline(vec![a, b], vec![route("*", &["a", "b"])], None);
        let report = p.deliver(Arc::new(sample()), ctx(), soon()).await;
        assert_eq!(report.outcome, Outcome::Delivered);
        assert_eq!(report.route, Some(0));
    }

    #[tokio::test(start_paused = true)]
    async fn hanging_sink_times_out_as_retryable_at_the_deadline() {
        let hang = Arc::new(Scripted {
            name: "h",
            answer: Box::new(|| Ok(())),
            hang: true,
            gate: None,
            seen: Mutex::default(),
        });
        let p = pipeline(vec![hang], vec![route("*", &["h"])], Some("h"));
        let start = Instant::now();
        let report = p
            .deliver(Arc::new(sample()), ctx(), start + Duration::from_secs(4))
            .await;
        assert!(
            matches!(
                report.outcome,
                Outcome::Retryable {
                    reason: FailureReason::Timeout,
                    ..
                }
            ),
            "{:?}",
            report.outcome
        );
        assert_eq!(start.elapsed(), Duration::from_secs(4));
    }

    #[tokio::test(start_paused = true)]
    async fn a_publish_past_its_deadline_is_never_started() {
        let sink = Scripted::new("s", || Ok(()));
        let p = pipeline(vec![sink.clone()], vec![route("*", &["s"])], None);
        let report = p.deliver(Arc::new(sample()), ctx(), Instant::now()).await;
        assert!(
            matches!(
                report.outcome,
                Outcome::Retryable {
                    reason: FailureReason::Timeout,
                    ..
                }
            ),
            "{:?}",
            report.outcome
        );
        assert!(sink.seen().is_empty(), "the sink was never asked");
    }

    #[tokio::test(start_paused = true)]
    async fn outcome_waits_for_the_ack() {
        let gate = Arc::new(Notify::new());
        let gated = Arc::new(Scripted {
            name: "g",
            answer: Box::new(|| Ok(())),
            hang: false,
            gate: Some(Arc::clone(&gate)),
            seen: Mutex::default(),
        });
        let p = Arc::new(pipeline(vec![gated], vec![route("*", &["g"])], None));
        let task = tokio::spawn({
            let p = Arc::clone(&p);
            async move {
                p.deliver(
                    Arc::new(sample()),
                    ctx(),
                    Instant::now() + Duration::from_secs(4),
                )
                .await
                .outcome
            }
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!task.is_finished(), "no outcome before the sink acked");
        gate.notify_one();
        assert_eq!(task.await.ok(), Some(Outcome::Delivered));
    }

    #[tokio::test]
    async fn rejection_goes_to_dead_letter_with_reason() {
        let k = Scripted::new("k", || {
            Err(SinkError::rejected(FailureReason::TooLarge, "2 MB"))
        });
        let dlq = Scripted::new("dlq", || Ok(()));
        let p = pipeline(vec![k, dlq.clone()], vec![route("*", &["k"])], Some("dlq"));
        let report = p.deliver(Arc::new(sample()), ctx(), soon()).await;
        assert_eq!(
            report.outcome,
            Outcome::DeadLettered {
                reason: FailureReason::TooLarge
            }
        );
        assert!(report.outcome.is_handled());
        assert_eq!(
            dlq.seen(),
            vec![("dlq".to_owned(), Some(FailureReason::TooLarge))]
        );
        assert!(report.attempts.last().is_some_and(|a| a.dead_letter));
    }

    #[tokio::test]
    async fn rejection_without_dead_letter_stays_unhandled() {
        let k = Scripted::new("k", || {
            Err(SinkError::rejected(FailureReason::TooLarge, "2 MB"))
        });
        let p = pipeline(vec![k], vec![route("*", &["k"])], None);
        let report = p.deliver(Arc::new(sample()), ctx(), soon()).await;
        assert!(matches!(
            report.outcome,
            Outcome::Rejected {
                reason: FailureReason::TooLarge,
                ..
            }
        ));
        assert!(!report.outcome.is_handled());
    }

    #[tokio::test]
    async fn transient_failure_elsewhere_defers_dead_lettering() {
        let k = Scripted::new("k", || {
            Err(SinkError::rejected(FailureReason::TooLarge, "big"))
        });
        let n = Scripted::new("n", || {
            Err(SinkError::retryable(FailureReason::Unavailable, "down"))
        });
        let dlq = Scripted::new("dlq", || Ok(()));
        let p = pipeline(
            vec![k, n, dlq.clone()],
            vec![route("*", &["k", "n"])],
            Some("dlq"),
        );
        let report = p.deliver(Arc::new(sample()), ctx(), soon()).await;
        assert!(matches!(report.outcome, Outcome::Retryable { .. }));
        assert!(
            dlq.seen().is_empty(),
            "nothing dead-lettered while another sink must still get the event"
        );
    }

    #[tokio::test]
    async fn failing_dead_letter_keeps_event_unhandled() {
        let k = Scripted::new("k", || {
            Err(SinkError::rejected(FailureReason::Unroutable, "no queue"))
        });
        let dlq = Scripted::new("dlq", || {
            Err(SinkError::retryable(FailureReason::Unavailable, "down"))
        });
        let p = pipeline(vec![k, dlq], vec![route("*", &["k"])], Some("dlq"));
        let report = p.deliver(Arc::new(sample()), ctx(), soon()).await;
        assert!(matches!(
            report.outcome,
            Outcome::Retryable {
                reason: FailureReason::Unavailable,
                ..
            }
        ));
    }

    /// A sink that answers `unroutable` for its first `n` publishes, then acks.
    fn unroutable_first(name: &'static str, n: usize) -> Arc<Scripted> {
        let count = std::sync::atomic::AtomicUsize::new(0);
        Scripted::new(name, move || {
            if count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < n {
                Err(SinkError::rejected(FailureReason::Unroutable, "no queue"))
            } else {
                Ok(())
            }
        })
    }

    #[tokio::test(start_paused = true)]
    async fn unroutable_is_retried_with_backoff_before_it_counts() {
        // The queue appears before the second retry: delivered, nothing dead-lettered.
        let k = unroutable_first("k", 2);
        let dlq = Scripted::new("dlq", || Ok(()));
        let p = pipeline(
            vec![k.clone(), dlq.clone()],
            vec![route("*", &["k"])],
            Some("dlq"),
        );
        let start = Instant::now();
        let report = p.deliver(Arc::new(sample()), ctx(), soon()).await;
        assert_eq!(report.outcome, Outcome::Delivered);
        assert_eq!(k.seen().len(), 3, "first try and two retries");
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(600),
            "200 ms, then 400 ms"
        );
        assert!(dlq.seen().is_empty());
        assert_eq!(report.attempts[0].elapsed, Duration::from_millis(600));
        assert_eq!(report.attempts[0].unroutable_retries, 2);

        // Still unroutable after the retries: dead-lettered.
        let k = unroutable_first("k", 3);
        let dlq = Scripted::new("dlq", || Ok(()));
        let p = pipeline(
            vec![k.clone(), dlq.clone()],
            vec![route("*", &["k"])],
            Some("dlq"),
        );
        let report = p.deliver(Arc::new(sample()), ctx(), soon()).await;
        assert_eq!(
            report.outcome,
            Outcome::DeadLettered {
                reason: FailureReason::Unroutable
            }
        );
        assert_eq!(k.seen().len(), 3);

        // No retries configured: the first answer counts.
        let k = unroutable_first("k", 1);
        let dlq = Scripted::new("dlq", || Ok(()));
        let p = pipeline(vec![k.clone(), dlq], vec![route("*", &["k"])], Some("dlq"))
            .with_unroutable_retry(UnroutableRetry {
                retries: 0,
                backoff: Duration::from_millis(200),
            });
        let report = p.deliver(Arc::new(sample()), ctx(), soon()).await;
        assert!(matches!(report.outcome, Outcome::DeadLettered { .. }));
        assert_eq!(k.seen().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn unroutable_retries_stop_before_the_deadline() {
        let k = unroutable_first("k", 100);
        let p = pipeline(vec![k.clone()], vec![route("*", &["k"])], None).with_unroutable_retry(
            UnroutableRetry {
                retries: 10,
                backoff: Duration::from_millis(200),
            },
        );
        let start = Instant::now();
        let report = p
            .deliver(
                Arc::new(sample()),
                ctx(),
                start + Duration::from_millis(1000),
            )
            .await;
        // Tries at 0, 200 and 600 ms; the next pause (800 ms) would cross the deadline.
        assert_eq!(k.seen().len(), 3);
        assert_eq!(start.elapsed(), Duration::from_millis(600));
        assert!(matches!(
            report.outcome,
            Outcome::Rejected {
                reason: FailureReason::Unroutable,
                ..
            }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn other_failures_are_not_retried_by_the_pipeline() {
        for error in [
            SinkError::rejected(FailureReason::TooLarge, "big"),
            SinkError::retryable(FailureReason::Unavailable, "down"),
        ] {
            let k = Scripted::new("k", move || Err(error.clone()));
            let p = pipeline(vec![k.clone()], vec![route("*", &["k"])], None);
            let start = Instant::now();
            p.deliver(Arc::new(sample()), ctx(), soon()).await;
            assert_eq!(k.seen().len(), 1);
            assert_eq!(start.elapsed(), Duration::ZERO);
        }
    }

    #[tokio::test]
    async fn reject_goes_straight_to_the_dead_letter() {
        let a = Scripted::new("a", || Ok(()));
        let dlq = Scripted::new("dlq", || Ok(()));
        let p = pipeline(
            vec![a.clone(), dlq.clone()],
            vec![route("*", &["a"])],
            Some("dlq"),
        );
        let report = p
            .reject(
                Arc::new(sample()),
                ctx(),
                soon(),
                FailureReason::Invalid,
                "no EventType".into(),
            )
            .await;
        assert_eq!(
            report.outcome,
            Outcome::DeadLettered {
                reason: FailureReason::Invalid
            }
        );
        assert!(a.seen().is_empty(), "never routed");
        assert_eq!(
            dlq.seen(),
            vec![("dlq".to_owned(), Some(FailureReason::Invalid))]
        );

        let p = pipeline(vec![a], vec![route("*", &["a"])], None);
        let report = p
            .reject(
                Arc::new(sample()),
                ctx(),
                soon(),
                FailureReason::Invalid,
                String::new(),
            )
            .await;
        assert!(
            !report.outcome.is_handled(),
            "no dead letter: unacknowledged"
        );
    }

    #[tokio::test]
    async fn drop_and_no_route() {
        let a = Scripted::new("a", || Ok(()));
        let p = pipeline(
            vec![a.clone()],
            vec![Route {
                patterns: vec![EventTypePattern::Exact("NewFileUpload".into())],
                action: RouteAction::Drop,
            }],
            None,
        );
        assert_eq!(
            p.deliver(Arc::new(sample()), ctx(), soon()).await.outcome,
            Outcome::Dropped
        );
        let mut other = sample();
        other.event_type = "FileDeleted".into();
        let report = p.deliver(Arc::new(other.clone()), ctx(), soon()).await;
        assert!(matches!(
            report.outcome,
            Outcome::Rejected {
                reason: FailureReason::NoRoute,
                ..
            }
        ));
        let p = pipeline(
            vec![a.clone()],
            vec![route("NewFileUpload", &["a"])],
            Some("a"),
        );
        let report = p.deliver(Arc::new(other), ctx(), soon()).await;
        assert_eq!(
            report.outcome,
            Outcome::DeadLettered {
                reason: FailureReason::NoRoute
            }
        );
        assert!(a.seen().is_empty() || a.seen()[0].1 == Some(FailureReason::NoRoute));
    }

    #[test]
    fn unknown_sinks_are_refused() {
        let routes = RouteTable::new(vec![route("*", &["missing"])], []).expect("valid");
        assert!(
            matches!(Pipeline::new(vec![], routes, None), Err(Error::UnknownSink { sink, .. }) if sink == "missing")
        );
    }

    /// Counts what the best-effort lanes report.
    #[derive(Default)]
    struct Counting {
        acked: AtomicUsize,
        failed: AtomicUsize,
        dropped: Mutex<Vec<(String, DropReason, u64)>>,
    }

    impl LaneObserver for Counting {
        fn attempted(&self, _source: &str, _envelope: &Envelope, attempt: &SinkAttempt) {
            let counter = if attempt.result.is_ok() {
                &self.acked
            } else {
                &self.failed
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        fn dropped(&self, sink: &str, reason: DropReason, count: u64) {
            if let Ok(mut dropped) = self.dropped.lock() {
                dropped.push((sink.to_owned(), reason, count));
            }
        }
    }

    fn numbered(n: usize) -> Arc<Envelope> {
        let mut envelope = sample();
        envelope.id = crate::EventId::derive("/test", n.to_string().as_bytes());
        envelope.partition_key = format!("video-{n}");
        Arc::new(envelope)
    }

    /// `a` required, `b` best-effort, both behind one route.
    fn with_best_effort(
        a: Arc<Scripted>,
        b: Arc<Scripted>,
        dlq: Option<Arc<Scripted>>,
        settings: &BestEffortSettings,
    ) -> (Pipeline, Arc<Counting>) {
        let mut routes = route("*", &["a", "b"]);
        if let RouteAction::Publish(targets) = &mut routes.action {
            targets[1].required = false;
        }
        let mut sinks: Vec<Arc<dyn Sink>> = vec![a, b];
        sinks.extend(dlq.map(|d| d as Arc<dyn Sink>));
        let dlq_name = (sinks.len() == 3).then_some("dlq");
        let counting = Arc::new(Counting::default());
        let p = pipeline(sinks, vec![routes], dlq_name)
            .with_sink_record(1000)
            .with_best_effort(settings, Some(Arc::clone(&counting) as _));
        (p, counting)
    }

    async fn until(what: &str, check: impl Fn() -> bool) {
        let end = Instant::now() + Duration::from_secs(10);
        while !check() {
            assert!(Instant::now() < end, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_best_effort_sink_down_never_holds_the_outcome_and_gets_its_events_later() {
        let a = Scripted::new("a", || Ok(()));
        let (b, down) = switchable("b");
        let (p, counting) = with_best_effort(a, b.clone(), None, &BestEffortSettings::default());
        assert!(p.is_required("a") && !p.is_required("b"));
        for n in 0..20 {
            let report = p.deliver(numbered(n), ctx(), soon()).await;
            assert_eq!(report.outcome, Outcome::Delivered);
            let queued = report.attempts.iter().find(|a| a.sink.name() == "b");
            assert_eq!(queued.and_then(|a| a.best_effort), Some(Queued::Queued));
        }
        // A redelivery while the event waits is not queued twice.
        let again = p.deliver(numbered(3), ctx(), soon()).await;
        let queued = again.attempts.iter().find(|a| a.sink.name() == "b");
        assert_eq!(
            queued.and_then(|a| a.best_effort),
            Some(Queued::AlreadyQueued)
        );
        until("a failed try", || {
            counting.failed.load(Ordering::Relaxed) > 0
        })
        .await;
        let status = p.best_effort().next().expect("one lane");
        assert_eq!((status.sink.as_str(), status.depth), ("b", 20));
        down.store(0, Ordering::Relaxed);
        until("every queued event acknowledged", || {
            counting.acked.load(Ordering::Relaxed) == 20
        })
        .await;
        until("an empty queue", || p.best_effort().all(|s| s.depth == 0)).await;
        // Acknowledged: a later redelivery skips the sink.
        let later = p.deliver(numbered(3), ctx(), soon()).await;
        assert!(later
            .attempts
            .iter()
            .any(|a| a.sink.name() == "b" && a.skipped));
        assert!(counting.dropped.lock().expect("lock").is_empty());
        let mut seen = b.seen();
        seen.dedup();
        assert!(seen.iter().all(|(d, _)| d == "t.NewFileUpload"));
    }

    #[tokio::test]
    async fn a_full_queue_drops_exactly_the_overflow_or_dead_letters_it() {
        let settings = BestEffortSettings {
            queue_capacity: 5,
            ..BestEffortSettings::default()
        };
        let (b, _down) = switchable("b");
        let (p, counting) = with_best_effort(Scripted::new("a", || Ok(())), b, None, &settings);
        for n in 0..12 {
            let report = p.deliver(numbered(n), ctx(), soon()).await;
            assert_eq!(
                report.outcome,
                Outcome::Delivered,
                "a drop never holds the event"
            );
        }
        let dropped = counting.dropped.lock().expect("lock").clone();
        assert_eq!(dropped.len(), 7);
        assert!(dropped
            .iter()
            .all(|d| *d == ("b".to_owned(), DropReason::QueueFull, 1)));
        assert_eq!(p.best_effort().next().map(|s| s.depth), Some(5));

        // With a dead letter, the overflow goes there and the outcome says so.
        let (b, _down) = switchable("b");
        let dlq = Scripted::new("dlq", || Ok(()));
        let (p, counting) = with_best_effort(
            Scripted::new("a", || Ok(())),
            b,
            Some(dlq.clone()),
            &settings,
        );
        let mut dead_lettered = 0;
        for n in 0..8 {
            let report = p.deliver(numbered(n), ctx(), soon()).await;
            if let Outcome::DeadLettered { reason } = report.outcome {
                assert_eq!(reason, FailureReason::QueueFull);
                dead_lettered += 1;
            } else {
                assert_eq!(report.outcome, Outcome::Delivered);
            }
        }
        assert_eq!(dead_lettered, 3);
        assert_eq!(dlq.seen().len(), 3);
        assert!(counting.dropped.lock().expect("lock").is_empty());
    }

    #[tokio::test]
    async fn the_breaker_opens_after_a_run_of_failures_and_a_probe_closes_it() {
        let settings = BestEffortSettings {
            concurrency: 1,
            breaker_failures: 3,
            breaker_open: Duration::from_secs(1),
            breaker_open_max: Duration::from_secs(1),
            ..BestEffortSettings::default()
        };
        let (b, down) = switchable("b");
        let (p, counting) =
            with_best_effort(Scripted::new("a", || Ok(())), b.clone(), None, &settings);
        for n in 0..10 {
            p.deliver(numbered(n), ctx(), soon()).await;
        }
        until("the breaker to open", || {
            p.best_effort().all(|s| s.breaker == BreakerState::Open)
        })
        .await;
        // Open: nothing is tried until the open period (1 s) ends.
        let tried = b.seen().len();
        assert_eq!(tried, 3, "three failures open it");
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(b.seen().len(), 3, "nothing tried while open");
        down.store(0, Ordering::Relaxed);
        until("all ten acknowledged", || {
            counting.acked.load(Ordering::Relaxed) == 10
        })
        .await;
        assert!(p.best_effort().all(|s| s.breaker == BreakerState::Closed));
    }

    #[tokio::test]
    async fn close_drains_a_healthy_queue_and_counts_what_an_open_breaker_left() {
        let gate = Arc::new(Notify::new());
        let b = Arc::new(Scripted {
            name: "b",
            answer: Box::new(|| Ok(())),
            hang: false,
            gate: Some(Arc::clone(&gate)),
            seen: Mutex::default(),
        });
        let (p, counting) = with_best_effort(
            Scripted::new("a", || Ok(())),
            b,
            None,
            &BestEffortSettings::default(),
        );
        for n in 0..4 {
            p.deliver(numbered(n), ctx(), soon()).await;
        }
        until("four publishes waiting", || {
            p.in_flight().any(|(s, n)| s == "b" && n == 4)
        })
        .await;
        let opened = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            gate.notify_waiters();
        };
        let (closed, ()) = tokio::join!(p.close(Duration::from_secs(5)), opened);
        assert!(closed.iter().all(|c| c.result.is_ok()));
        assert_eq!(
            counting.acked.load(Ordering::Relaxed),
            4,
            "drained before closing"
        );

        let (b, _down) = switchable("b");
        let settings = BestEffortSettings {
            breaker_failures: 1,
            ..BestEffortSettings::default()
        };
        let (p, counting) = with_best_effort(Scripted::new("a", || Ok(())), b, None, &settings);
        for n in 0..6 {
            p.deliver(numbered(n), ctx(), soon()).await;
        }
        until("the breaker to open", || {
            p.best_effort().all(|s| s.breaker == BreakerState::Open)
        })
        .await;
        let started = Instant::now();
        p.close(Duration::from_secs(5)).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "no wait for an open breaker"
        );
        let dropped = counting.dropped.lock().expect("lock").clone();
        assert_eq!(dropped, [("b".to_owned(), DropReason::Shutdown, 6)]);
    }

    /// A store in memory, standing in for the push spool.
    #[derive(Default)]
    struct MemoryStore {
        next: AtomicUsize,
        held: Mutex<std::collections::BTreeMap<u64, crate::StoredPublish>>,
    }

    impl crate::LaneStore for MemoryStore {
        fn append<'a>(
            &'a self,
            publish: &'a crate::StoredPublish,
        ) -> futures_util::future::BoxFuture<'a, std::result::Result<Option<u64>, String>> {
            Box::pin(async move {
                let key = self.next.fetch_add(1, Ordering::Relaxed) as u64;
                self.held.lock().expect("lock").insert(key, publish.clone());
                Ok(Some(key))
            })
        }
        fn remove(&self, keys: Vec<u64>) -> futures_util::future::BoxFuture<'_, ()> {
            Box::pin(async move {
                let mut held = self.held.lock().expect("lock");
                for key in keys {
                    held.remove(&key);
                }
            })
        }
        fn load(&self, sink: &str) -> Vec<(u64, crate::StoredPublish)> {
            let held = self.held.lock().expect("lock");
            held.iter()
                .filter(|(_, p)| p.sink == sink)
                .map(|(k, p)| (*k, p.clone()))
                .collect()
        }
    }

    #[tokio::test]
    async fn a_durable_queue_survives_a_restart_and_is_emptied_by_the_acks() {
        let store = Arc::new(MemoryStore::default());
        let settings = BestEffortSettings {
            breaker_failures: 1,
            ..BestEffortSettings::default()
        };
        let (b, _down) = switchable("b");
        let (p, counting) = with_best_effort(Scripted::new("a", || Ok(())), b, None, &settings);
        let (p, restored) = p.with_best_effort_store(Arc::clone(&store) as _);
        assert_eq!(restored, 0);
        for n in 0..5 {
            let report = p.deliver(numbered(n), ctx(), soon()).await;
            assert_eq!(report.outcome, Outcome::Delivered);
        }
        assert_eq!(
            store.held.lock().expect("lock").len(),
            5,
            "stored before handled"
        );
        p.close(Duration::from_secs(1)).await;
        assert!(
            counting.dropped.lock().expect("lock").is_empty(),
            "a durable queue drops nothing at shutdown"
        );

        // The next start: the sink answers, the stored events reach it, the store empties.
        let b = Scripted::new("b", || Ok(()));
        let (p, counting) =
            with_best_effort(Scripted::new("a", || Ok(())), b.clone(), None, &settings);
        let (p, restored) = p.with_best_effort_store(Arc::clone(&store) as _);
        assert_eq!(restored, 5);
        p.resume();
        until("the restored events acknowledged", || {
            counting.acked.load(Ordering::Relaxed) == 5
        })
        .await;
        until("an empty store", || {
            store.held.lock().expect("lock").is_empty()
        })
        .await;
        assert_eq!(b.seen().len(), 5);
    }

    /// A store whose first write never finishes.
    #[derive(Default)]
    struct StuckOnce {
        stuck: std::sync::atomic::AtomicBool,
        inner: MemoryStore,
    }

    impl crate::LaneStore for StuckOnce {
        fn append<'a>(
            &'a self,
            publish: &'a crate::StoredPublish,
        ) -> futures_util::future::BoxFuture<'a, std::result::Result<Option<u64>, String>> {
            if !self.stuck.swap(true, Ordering::Relaxed) {
                return Box::pin(std::future::pending());
            }
            self.inner.append(publish)
        }
        fn remove(&self, keys: Vec<u64>) -> futures_util::future::BoxFuture<'_, ()> {
            self.inner.remove(keys)
        }
        fn load(&self, sink: &str) -> Vec<(u64, crate::StoredPublish)> {
            self.inner.load(sink)
        }
    }

    #[tokio::test]
    async fn a_delivery_dropped_while_its_event_is_stored_leaves_no_reservation() {
        let settings = BestEffortSettings::default();
        let b = Scripted::new("b", || Ok(()));
        let (p, counting) = with_best_effort(Scripted::new("a", || Ok(())), b, None, &settings);
        let store = Arc::new(StuckOnce::default());
        let (p, _) = p.with_best_effort_store(Arc::clone(&store) as _);
        let hung_up = tokio::time::timeout(
            Duration::from_millis(100),
            p.deliver(numbered(1), ctx(), soon()),
        )
        .await;
        assert!(hung_up.is_err(), "the first store write never ends");
        assert_eq!(p.best_effort().next().map(|s| s.depth), Some(0));
        // The event comes back: it is queued (not "already queued") and published.
        let report = p.deliver(numbered(1), ctx(), soon()).await;
        let queued = report.attempts.iter().find(|a| a.sink.name() == "b");
        assert_eq!(queued.and_then(|a| a.best_effort), Some(Queued::Queued));
        until("the event acknowledged", || {
            counting.acked.load(Ordering::Relaxed) == 1
        })
        .await;
    }
}
