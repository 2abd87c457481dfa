//! One pulled batch: classify each event (new, redelivered, invalid), dead-letter the invalid,
//! deliver the rest in order per FileId under the batch's deadline, hand the acknowledged to
//! the confirmers. Every other event's lease is dropped, which settles it.

use std::sync::Arc;

use bytes::Bytes;
use time::OffsetDateTime;
use tokio::time::Instant;
use tracing::Instrument;
use vodbridge_core::{in_order, Envelope, FailureReason, Ingress, RouteContext, TRACE_TARGET};
use vodbridge_tencent::RawEvent;

use crate::{
    state::AppState,
    telemetry::{self, event_type_label, InFlight},
};

use super::{
    queue::{Confirms, Pulled, Slot},
    source::PullSource,
};

/// One pulled event ready to publish: its lease on VOD's queue and its envelope.
pub(super) struct Event {
    pulled: Pulled,
    envelope: Arc<Envelope>,
}

/// A pulled batch, classified for delivery. Events that can never be confirmed (no handle) or
/// published (not normalizable) are not in it: their leases ended in [`classify`].
#[derive(Default)]
pub(super) struct Classified {
    /// Events to publish, in pull order.
    events: Vec<Event>,
    /// Events without a usable EventType, with why, for the dead letter.
    invalid: Vec<(Event, String)>,
    /// Leases of events acknowledged recently: confirmed without publishing again.
    duplicates: Vec<Pulled>,
}

/// Publishes one pulled batch (one `slot` per event): classify, dead-letter the invalid,
/// deliver the rest (events of one FileId one after another, stopping at the first that is not
/// acknowledged so order holds; different FileIds at once). Acknowledged events go to the
/// confirmers; every other lease ends here.
pub(super) async fn process_batch(
    source: &PullSource,
    state: &AppState,
    confirms: &Confirms,
    events: Vec<Bytes>,
    slots: Vec<Slot>,
    pulled_at: Instant,
) {
    let valid_until = pulled_at + source.settings.handle_lifetime;
    let deadline = valid_until - source.settings.confirm_margin;
    let classified = classify(
        source,
        state,
        events.iter().zip(slots),
        valid_until,
        OffsetDateTime::now_utc(),
    );
    // One read of the shared record for the whole batch: what another replica's brokers
    // already acknowledged is skipped by the deliveries below.
    let envelopes: Vec<&Envelope> = classified
        .events
        .iter()
        .map(|event| event.envelope.as_ref())
        .collect();
    state
        .pipeline
        .recall(
            &envelopes,
            RouteContext {
                source: &source.name,
            },
        )
        .await;
    for pulled in classified.duplicates {
        confirms.confirm(pulled).await;
    }
    dead_letter_invalid(source, state, confirms, classified.invalid, deadline).await;
    deliver_in_order(source, state, confirms, classified.events, deadline).await;
}

/// Reads, counts and normalizes each pulled element (with its governor slot) and sorts it for
/// delivery.
pub(super) fn classify<'a>(
    source: &PullSource,
    state: &AppState,
    events: impl Iterator<Item = (&'a Bytes, Slot)>,
    valid_until: Instant,
    received_at: OffsetDateTime,
) -> Classified {
    let metrics = &state.metrics;
    let name = source.name.as_str();
    let mut classified = Classified::default();
    for (element, slot) in events {
        let span = telemetry::event_span(name, Ingress::Pull);
        let normalize = tracing::info_span!(target: TRACE_TARGET, parent: &span, "normalize", otel.name = "normalize");
        let read = normalize.in_scope(|| read_event(source, state, element, received_at));
        // Unusable: its lease ends here (the slot is dropped), the event stays in VOD's queue.
        let Some((handle, mut envelope, refused)) = read else {
            continue;
        };
        envelope.traceparent = Some(telemetry::trace_parent(&span, None));
        telemetry::record_event(&span, &envelope);
        let envelope = Arc::new(envelope);
        let pulled = Pulled::new(handle, valid_until, span, slot);
        if source.recent().contains(&envelope.id) {
            metrics
                .duplicates_suppressed
                .with_label_values(&[name])
                .inc();
            classified.duplicates.push(pulled);
            continue;
        }
        let event = Event { pulled, envelope };
        match refused {
            Some(why) => classified.invalid.push((event, why)),
            None => classified.events.push(event),
        }
    }
    classified
}

/// Reads, counts and normalizes one pulled element: its handle, its envelope, and why it goes to
/// the dead letter instead (no usable EventType, salvaged with a dead letter configured). `None`
/// for an element that can never be confirmed (no handle) or published (not normalizable),
/// counted and logged.
fn read_event(
    source: &PullSource,
    state: &AppState,
    element: &Bytes,
    received_at: OffsetDateTime,
) -> Option<(String, Envelope, Option<String>)> {
    let metrics = &state.metrics;
    let name = source.name.as_str();
    let unusable = |why: &dyn std::fmt::Display, message: &str| {
        metrics
            .events_outcome
            .with_label_values(&[name, "unparseable"])
            .inc();
        tracing::warn!(source = name, error = %why, "{}", message);
    };
    match RawEvent::parse(element) {
        Ok(event) => {
            let Some(handle) = event.event_handle().map(str::to_owned) else {
                unusable(
                    &"no EventHandle",
                    "Pulled an event without EventHandle; it cannot be confirmed.",
                );
                return None;
            };
            metrics
                .events_received
                .with_label_values(&[name, "pull", event_type_label(event.event_type())])
                .inc();
            match source.normalizer.normalize(event, received_at) {
                Ok(envelope) => Some((handle, envelope, None)),
                Err(error) => {
                    unusable(&error, "Pulled an event that cannot be normalized.");
                    None
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
                Some((salvaged.handle, salvaged.envelope, Some(error.to_string())))
            } else {
                unusable(&error, "Pulled an event that cannot be read; it stays unconfirmed (with a dead letter configured, a JSON object with an EventHandle would be dead-lettered).");
                None
            }
        }
    }
}

/// Sends events without a usable EventType to the dead letter; confirms those it holds.
pub(super) async fn dead_letter_invalid(
    source: &PullSource,
    state: &AppState,
    confirms: &Confirms,
    invalid: Vec<(Event, String)>,
    deadline: Instant,
) {
    let name = source.name.as_str();
    for (Event { pulled, envelope }, error) in invalid {
        let report = state
            .pipeline
            .reject(
                Arc::clone(&envelope),
                RouteContext { source: name },
                deadline,
                FailureReason::Invalid,
                error,
            )
            .instrument(pulled.span.clone())
            .await;
        state.metrics.record_delivery(name, &envelope, &report);
        if !report.outcome.is_handled() {
            tracing::warn!(source = name, event_id = %envelope.id, outcome = ?report.outcome, "Invalid pulled event not dead-lettered; VOD will hand it out again.");
            continue;
        }
        tracing::warn!(source = name, event_id = %envelope.id, "Pulled an event without a usable EventType; dead-lettered.");
        source.recent().insert(envelope.id.clone());
        confirms.confirm(pulled).await;
    }
}

/// Delivers the events in order per FileId (see [`in_order`]); hands each acknowledged one to
/// the confirmers as soon as it is acknowledged.
pub(super) async fn deliver_in_order(
    source: &PullSource,
    state: &AppState,
    confirms: &Confirms,
    events: Vec<Event>,
    deadline: Instant,
) {
    let metrics = &state.metrics;
    let name = source.name.as_str();
    let in_flight = metrics
        .in_flight
        .with_label_values(&[Ingress::Pull.as_str()]);
    let delivered = in_order(
        events,
        |event| event.envelope.partition_key.as_str(),
        |Event { pulled, envelope }| {
            let in_flight = &in_flight;
            async move {
                let guard = InFlight::enter(in_flight);
                let report = state
                    .pipeline
                    .deliver(
                        Arc::clone(&envelope),
                        RouteContext { source: name },
                        deadline,
                    )
                    .instrument(pulled.span.clone())
                    .await;
                drop(guard);
                metrics.record_delivery(name, &envelope, &report);
                if !report.outcome.is_handled() {
                    tracing::warn!(
                        source = name,
                        event_id = %envelope.id,
                        event_type = %envelope.event_type,
                        outcome = ?report.outcome,
                        "Pulled event not acknowledged; VOD will hand it out again (later events of its video wait for it)."
                    );
                    return None;
                }
                source.recent().insert(envelope.id.clone());
                confirms.confirm(pulled).await;
                Some(())
            }
        },
    )
    .await;
    if delivered.held_back > 0 {
        tracing::debug!(
            source = name,
            held_back = delivered.held_back,
            "Pulled events held back behind an earlier event of their video; VOD hands them out again."
        );
    }
}
