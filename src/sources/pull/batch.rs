//! One pulled batch: classify each event (new, redelivered, invalid), dead-letter the invalid,
//! deliver the rest grouped by FileId under the batch's deadline, hand the acknowledged to the
//! confirmers.

use std::{collections::HashMap, sync::Arc};

use bytes::Bytes;
use futures_util::future::join_all;
use time::OffsetDateTime;
use tokio::{sync::mpsc, time::Instant};
use tracing::Instrument;
use vodbridge_core::{Envelope, FailureReason, Ingress, RouteContext, TRACE_TARGET};
use vodbridge_tencent::RawEvent;

use crate::{
    state::AppState,
    telemetry::{self, event_type_label, InFlight},
};

use super::{Confirm, PullSource};

/// One pulled event ready to publish.
pub(super) struct Pulled {
    handle: String,
    envelope: Arc<Envelope>,
    /// The event's `process` span (disabled without an exporter).
    span: tracing::Span,
}

/// A pulled batch sorted for delivery.
#[derive(Default)]
pub(super) struct Sorted {
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
pub(super) async fn process_batch(
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
    // One read of the shared record for the whole batch: what another replica's brokers
    // already acknowledged is skipped by the deliveries below.
    let envelopes: Vec<&Envelope> = sorted
        .groups
        .iter()
        .flatten()
        .map(|pulled| pulled.envelope.as_ref())
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
pub(super) fn classify(
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
pub(super) async fn dead_letter_invalid(
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
pub(super) async fn deliver_groups(
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
