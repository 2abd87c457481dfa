//! The sink contract: what every broker sink promises the pipeline, checked the same way against
//! each real broker (NATS JetStream, RabbitMQ, Kafka through tansu).
//!
//! The pipeline answers VOD on a sink's `Ok`, dead-letters on `Rejected` and retries on
//! `Retryable`, so a sink that says `Ok` before the broker stored the message, or `Retryable`
//! for a message the broker will never take, breaks the bridge's promise whatever the rest does.
//! A broker crate implements [`Broker`] in its tests (how to start its sink, where messages land,
//! how to read them back, how to take the broker down) and calls [`run`]; the checks here are
//! written once:
//!
//! 1. **acknowledged only after stored**: every message whose publish said `Ok` is read back from
//!    the broker by its id, and while the broker is down no publish says `Ok`;
//! 2. **unroutable**: a destination nothing stores fails as `Rejected(unroutable)` in bounded time,
//!    and the sink goes on;
//! 3. **too large**: a message above the broker's limit fails as `Rejected(too_large)`, and the
//!    sink goes on;
//! 4. **broker down**: publishes fail as `Retryable` in bounded time (never hang), the sink reports
//!    unhealthy, recovers by itself when the broker is back, and what it acknowledged before the
//!    outage is still stored;
//! 5. **close**: `close()` after the last publish returns `Ok` in bounded time, and everything
//!    acknowledged is stored.

use std::{
    collections::HashSet,
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use vodbridge_core::{Envelope, EventId, FailureReason, Ingress, Message, Sink, SinkError};

/// How long a sink may take to become healthy, or healthy again after an outage.
const HEALTHY_WITHIN: Duration = Duration::from_secs(60);
/// How long a refused publish may take to say so. Every sink refuses much faster; this bounds a
/// hang, not a latency.
const DECIDED_WITHIN: Duration = Duration::from_secs(30);

/// One broker under the contract: what the contract needs to know about it and its sink.
pub trait Broker {
    /// The sink under test.
    type Sink: Sink;

    /// A new sink for this broker, configured the way the crate's tests configure it. Called
    /// inside the tokio runtime.
    fn sink(&self) -> Self::Sink;

    /// Makes the routable destination exist once the sink is healthy (a queue bound to it, a
    /// topic), as its owner would. The default does nothing.
    fn prepare(&mut self) -> impl Future<Output = ()> {
        async {}
    }

    /// A destination the broker stores durably and [`Broker::stored`] reads back.
    fn routable(&self) -> String;

    /// A destination nothing stores.
    fn unroutable(&self) -> String;

    /// A payload size (bytes of `data`) above what the broker accepts.
    fn too_large(&self) -> usize;

    /// Every event id stored at [`Broker::routable`] so far, read back from the broker with its
    /// own client (not through the sink).
    fn stored(&mut self) -> impl Future<Output = HashSet<String>>;

    /// Takes the broker down (the process stopped; its storage stays).
    fn stop(&mut self);

    /// Brings the broker back on the same address and storage.
    fn restart(&mut self) -> impl Future<Output = ()>;
}

/// What one run of the contract measured, for the test's output.
#[derive(Debug, Default, Clone, Copy)]
pub struct Report {
    /// Messages acknowledged by the sink (and found stored).
    pub acknowledged: usize,
    /// The slowest refusal of an unroutable message.
    pub unroutable_in: Duration,
    /// The slowest refusal of a too-large message.
    pub too_large_in: Duration,
    /// The slowest retryable failure while the broker was down.
    pub down_failed_in: Duration,
    /// From the restart until the sink was healthy again.
    pub recovered_in: Duration,
    /// How long `close()` took.
    pub closed_in: Duration,
}

/// Runs the whole contract against `broker` and returns its figures.
///
/// # Panics
///
/// When the sink breaks a rule; the message names the rule and what happened.
pub async fn run<B: Broker>(broker: &mut B) -> Report {
    let mut run = Run {
        sink: Arc::new(broker.sink()),
        next: 0,
        acknowledged: HashSet::new(),
        report: Report::default(),
    };
    run.healthy("at start").await;
    broker.prepare().await;
    run.acks_only_after_store(broker).await;
    run.unroutable(broker).await;
    run.too_large(broker).await;
    run.broker_down(broker).await;
    run.close(broker).await;
    run.report.acknowledged = run.acknowledged.len();
    run.report
}

/// A message with a fresh event id, `data` padded to `size` bytes when given.
#[must_use]
pub fn message(n: u64, destination: &str, size: Option<usize>) -> Message {
    let head = format!(r#"{{"EventType":"NewFileUpload","FileUploadEvent":{{"FileId":"{n}"}}"#);
    let data = match size {
        Some(size) => {
            let pad = size.saturating_sub(head.len() + 11);
            format!(r#"{head},"Pad":"{}"}}"#, "x".repeat(pad))
        }
        None => format!("{head}}}"),
    };
    Message {
        envelope: Arc::new(Envelope {
            id: EventId::derive("/tencentcloud/vod/1", data.as_bytes()),
            source: "/tencentcloud/vod/1".into(),
            ty: "com.tencentcloud.vod.NewFileUpload".into(),
            subject: Some(n.to_string()),
            time: time::OffsetDateTime::UNIX_EPOCH,
            event_time_known: true,
            data: Bytes::from(data),
            event_type: "NewFileUpload".into(),
            sub_app_id: Some(1),
            ingress: Ingress::Pull,
            task_id: None,
            partition_key: n.to_string(),
            traceparent: None,
        }),
        destination: destination.to_owned(),
        dead_letter: None,
    }
}

struct Run<S> {
    sink: Arc<S>,
    next: u64,
    /// Ids of every message the sink acknowledged.
    acknowledged: HashSet<String>,
    report: Report,
}

impl<S: Sink> Run<S> {
    fn message(&mut self, destination: &str, size: Option<usize>) -> Message {
        self.next += 1;
        message(self.next, destination, size)
    }

    async fn healthy(&self, when: &str) -> Duration {
        let started = Instant::now();
        while !self.sink.is_healthy() {
            assert!(
                started.elapsed() < HEALTHY_WITHIN,
                "{}: not healthy {when} within {HEALTHY_WITHIN:?}",
                self.sink.kind()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        started.elapsed()
    }

    /// Publishes `message`, bounded by [`DECIDED_WITHIN`]; returns the outcome and its time.
    async fn publish(&self, message: &Message) -> (Result<(), SinkError>, Duration) {
        let started = Instant::now();
        let outcome = tokio::time::timeout(DECIDED_WITHIN, self.sink.publish(message))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{}: a publish to {:?} neither succeeded nor failed within {DECIDED_WITHIN:?}",
                    self.sink.kind(),
                    message.destination
                )
            });
        (outcome, started.elapsed())
    }

    /// Publishes until acknowledged (retryable failures only, for up to [`HEALTHY_WITHIN`]).
    async fn publish_until_acknowledged(&mut self, message: &Message) {
        let started = Instant::now();
        loop {
            match self.publish(message).await.0 {
                Ok(()) => break,
                Err(error) => assert!(
                    error.is_retryable() && started.elapsed() < HEALTHY_WITHIN,
                    "{}: {error}",
                    self.sink.kind()
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.acknowledged.insert(message.envelope.id.to_string());
    }

    /// Every acknowledged id is stored.
    async fn all_acknowledged_stored<B: Broker>(&self, broker: &mut B, rule: &str) {
        let stored = broker.stored().await;
        let mut missing: Vec<&String> = self.acknowledged.difference(&stored).collect();
        missing.sort();
        assert!(
            missing.is_empty(),
            "{}: {rule}: {} of {} acknowledged messages are not in the broker: {missing:?}",
            self.sink.kind(),
            missing.len(),
            self.acknowledged.len()
        );
    }

    /// Rule 1, healthy half: 50 concurrent publishes, each `Ok` read back by id.
    async fn acks_only_after_store<B: Broker>(&mut self, broker: &mut B) {
        eprintln!(
            "{} under the sink contract: acknowledged only after stored",
            self.sink.kind()
        );
        let destination = broker.routable();
        let messages: Vec<Message> = (0..50).map(|_| self.message(&destination, None)).collect();
        let outcomes =
            futures_util::future::join_all(messages.iter().map(|m| self.sink.publish(m))).await;
        for (message, outcome) in messages.iter().zip(outcomes) {
            if let Err(error) = outcome {
                panic!("{}: a healthy broker refused: {error}", self.sink.kind());
            }
            self.acknowledged.insert(message.envelope.id.to_string());
        }
        self.all_acknowledged_stored(broker, "acknowledged only after stored")
            .await;
    }

    /// A refused message: `Rejected` with `reason`, and the next ordinary publish succeeds.
    async fn refused<B: Broker>(
        &mut self,
        broker: &B,
        message: &Message,
        reason: FailureReason,
    ) -> Duration {
        let (outcome, took) = self.publish(message).await;
        let error = outcome.expect_err("the broker cannot take it");
        assert!(
            !error.is_retryable() && error.reason() == reason,
            "{}: expected Rejected({}), got {error:?}",
            self.sink.kind(),
            reason.as_str()
        );
        let next = self.message(&broker.routable(), None);
        self.publish_until_acknowledged(&next).await;
        took
    }

    /// Rule 2.
    async fn unroutable<B: Broker>(&mut self, broker: &mut B) {
        eprintln!("{} under the sink contract: unroutable", self.sink.kind());
        let message = self.message(&broker.unroutable(), None);
        self.report.unroutable_in = self
            .refused(broker, &message, FailureReason::Unroutable)
            .await;
    }

    /// Rule 3.
    async fn too_large<B: Broker>(&mut self, broker: &mut B) {
        eprintln!("{} under the sink contract: too large", self.sink.kind());
        let message = self.message(&broker.routable(), Some(broker.too_large()));
        self.report.too_large_in = self
            .refused(broker, &message, FailureReason::TooLarge)
            .await;
    }

    /// Rule 4, and rule 1's outage half.
    async fn broker_down<B: Broker>(&mut self, broker: &mut B) {
        eprintln!("{} under the sink contract: broker down", self.sink.kind());
        let destination = broker.routable();
        broker.stop();
        let down: Vec<Message> = (0..5).map(|_| self.message(&destination, None)).collect();
        for message in &down {
            let (outcome, took) = self.publish(message).await;
            match outcome {
                Ok(()) => panic!(
                    "{}: acknowledged a message while the broker was down",
                    self.sink.kind()
                ),
                Err(error) => assert!(
                    error.is_retryable(),
                    "{}: an outage must be retryable (VOD sends the event again): {error:?}",
                    self.sink.kind()
                ),
            }
            self.report.down_failed_in = self.report.down_failed_in.max(took);
        }
        let started = Instant::now();
        while self.sink.is_healthy() {
            assert!(
                started.elapsed() < HEALTHY_WITHIN,
                "{}: still healthy {HEALTHY_WITHIN:?} into an outage",
                self.sink.kind()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        broker.restart().await;
        self.report.recovered_in = self.healthy("after the broker came back").await;
        for message in &down {
            self.publish_until_acknowledged(message).await;
        }
        self.all_acknowledged_stored(broker, "acknowledged before and after an outage")
            .await;
    }

    /// Rule 5.
    async fn close<B: Broker>(&mut self, broker: &mut B) {
        eprintln!("{} under the sink contract: close", self.sink.kind());
        let destination = broker.routable();
        for _ in 0..5 {
            let message = self.message(&destination, None);
            self.publish_until_acknowledged(&message).await;
        }
        let started = Instant::now();
        tokio::time::timeout(DECIDED_WITHIN, self.sink.close())
            .await
            .unwrap_or_else(|_| panic!("{}: close() hung", self.sink.kind()))
            .unwrap_or_else(|error| panic!("{}: close() failed: {error}", self.sink.kind()));
        self.report.closed_in = started.elapsed();
        self.all_acknowledged_stored(broker, "acknowledged before close")
            .await;
    }
}
