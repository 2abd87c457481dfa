//! One publish to one sink under a deadline: the `unroutable` retries, the publish span, the
//! count of publishes on the wire, and the attempt it reports. The pipeline's required targets
//! and the best-effort queues both publish through here.

use std::{
    sync::{atomic::AtomicUsize, atomic::Ordering, Arc},
    time::Duration,
};

use tokio::time::{timeout_at, Instant};

use crate::{
    envelope::Envelope,
    failure::{FailureReason, SinkError},
    route::{RouteContext, Target},
    sink::{Message, Sink},
};

/// How often an `unroutable` answer (no queue bound, no stream for the subject, unknown topic)
/// is tried again before it counts as a permanent failure and is dead-lettered: a consumer
/// that is (re)declaring its queue right now should not divert events. Retries stay inside
/// the event's deadline; the backoff doubles after each try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnroutableRetry {
    /// Tries after the first one.
    pub retries: u32,
    /// Pause before the first retry.
    pub backoff: Duration,
}

impl Default for UnroutableRetry {
    /// Two retries, after 200 ms and 400 ms.
    fn default() -> Self {
        Self {
            retries: 2,
            backoff: Duration::from_millis(200),
        }
    }
}

/// What offering an event to a best-effort sink's queue did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queued {
    /// The event is in the sink's queue.
    Queued,
    /// The same event and destination is already queued or in flight (a redelivery).
    AlreadyQueued,
    /// The queue is full: the event is dead-lettered or dropped.
    Full,
    /// The queue is durable and storing the event failed: the event is not handled (it comes
    /// back from the provider).
    NotStored,
}

/// One publish attempt, for metrics and logs.
pub struct SinkAttempt {
    /// The sink that was asked.
    pub sink: Arc<dyn Sink>,
    /// The rendered destination.
    pub destination: String,
    /// What the sink answered (a missed deadline is a retryable timeout).
    pub result: Result<(), SinkError>,
    /// Time from the start of the publish to its answer.
    pub elapsed: Duration,
    /// True when this was the dead-letter publish.
    pub dead_letter: bool,
    /// Set for a best-effort target: the event was offered to the sink's queue instead of
    /// being published now (`result` is `Ok`, unless the queue was full and the event goes to
    /// the dead letter). The queue's own publishes are reported to the [`LaneObserver`].
    pub best_effort: Option<Queued>,
    /// Times an `unroutable` answer was tried again (see [`UnroutableRetry`]).
    pub unroutable_retries: u32,
    /// True when the sink was not asked because it acknowledged this event at this
    /// destination before (see [`Pipeline::with_sink_record`]); `result` is then `Ok`.
    pub skipped: bool,
}

/// Counts one publish on the wire for as long as it lives.
struct OnWire<'a>(&'a AtomicUsize);

impl<'a> OnWire<'a> {
    fn enter(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for OnWire<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Publishes `message`, trying an `unroutable` rejection again per `policy` while the deadline
/// allows the pause; the attempt reports the last answer and the whole time taken.
pub(crate) async fn publish(
    sink: Arc<dyn Sink>,
    on_wire: &AtomicUsize,
    message: Message,
    deadline: Instant,
    dead_letter: bool,
    policy: UnroutableRetry,
) -> SinkAttempt {
    let _on_wire = OnWire::enter(on_wire);
    let started = Instant::now();
    let mut backoff = policy.backoff;
    let mut retries = 0;
    // One span per sink and attempt series (OpenTelemetry messaging conventions: a `send` span
    // of kind producer); disabled at the call site unless an exporter takes TRACE_TARGET.
    let span = tracing::info_span!(
        target: crate::TRACE_TARGET,
        "send",
        otel.name = %format_args!("send {}", message.destination),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        messaging.system = messaging_system(sink.kind()),
        messaging.operation.type = "send",
        messaging.operation.name = "publish",
        messaging.destination.name = %message.destination,
        messaging.message.id = %message.envelope.id,
        vodbridge.sink = sink.name(),
        vodbridge.dead_letter = dead_letter,
        error.type = tracing::field::Empty,
    );
    loop {
        let result = tracing::Instrument::instrument(
            publish_once(sink.as_ref(), &message, deadline),
            span.clone(),
        )
        .await;
        let unroutable = matches!(
            &result,
            Err(SinkError::Rejected {
                reason: FailureReason::Unroutable,
                ..
            })
        );
        if !unroutable || retries >= policy.retries || Instant::now() + backoff >= deadline {
            if let Err(error) = &result {
                span.record("otel.status_code", "ERROR");
                span.record("error.type", error.reason().as_str());
            }
            return SinkAttempt {
                destination: message.destination,
                result,
                elapsed: started.elapsed(),
                dead_letter,
                unroutable_retries: retries,
                skipped: false,
                best_effort: None,
                sink,
            };
        }
        tokio::time::sleep(backoff).await;
        backoff = backoff.saturating_mul(2);
        retries += 1;
    }
}

/// OpenTelemetry's `messaging.system` for a sink kind.
fn messaging_system(kind: &str) -> &str {
    match kind {
        "amqp" => "rabbitmq",
        other => other,
    }
}

/// One publish under the deadline; a missed deadline is a retryable timeout. A publish is not
/// started once its deadline has passed: its acknowledgement could not count, so a broker that
/// took the message anyway would only hold a copy that comes back as a duplicate.
async fn publish_once(
    sink: &dyn Sink,
    message: &Message,
    deadline: Instant,
) -> Result<(), SinkError> {
    if Instant::now() >= deadline {
        return Err(SinkError::retryable(
            FailureReason::Timeout,
            "the deadline passed before the publish could start",
        ));
    }
    match timeout_at(deadline, sink.publish(message)).await {
        Ok(result) => result,
        Err(_) => Err(SinkError::retryable(
            FailureReason::Timeout,
            "no acknowledgement before the deadline",
        )),
    }
}

/// Where `target` puts `envelope`: its rendered template, or `vod.{event_type}` when the
/// route names no destination. The one place a destination is defaulted: sinks always get one.
pub(crate) fn destination(
    target: &Target,
    envelope: &Envelope,
    context: &RouteContext<'_>,
) -> String {
    let rendered = target.destination.render(envelope, context);
    if rendered.is_empty() {
        crate::default_destination(&envelope.event_type)
    } else {
        rendered
    }
}
