//! The spool's forwarder: delivers spooled push events through the routes, per FileId in
//! order, and removes each from the spool only after every routed sink acknowledged it.

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use vodbridge_core::{in_order, Ingress, RouteContext};

use crate::{
    sources::backoff::{pause, Backoff},
    spool::{Spool, Spooled},
    state::AppState,
    telemetry::InFlight,
};

/// Most records one forwarding round reads.
const FORWARD_BATCH: usize = 256;

/// Forwards spooled events until cancelled: each round reads the oldest records, delivers the
/// events of each FileId one after another (stopping at the first that is not acknowledged, so
/// order holds), different FileIds at once, and removes what was acknowledged. A round that
/// moved nothing backs off (100 ms doubling to 5 s); a new record wakes it.
pub(crate) async fn run_forwarder(
    spool: Arc<Spool>,
    state: Arc<AppState>,
    cancel: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    while !cancel.is_cancelled() {
        let read = {
            let spool = Arc::clone(&spool);
            tokio::task::spawn_blocking(move || spool.oldest(FORWARD_BATCH)).await
        };
        let batch = match read {
            Ok(Ok(batch)) => batch,
            Ok(Err(error)) => {
                tracing::error!(error = %error, "Reading the spool failed; retrying.");
                Vec::new()
            }
            Err(join) => {
                tracing::error!(error = %join, "Reading the spool failed; retrying.");
                Vec::new()
            }
        };
        if batch.is_empty() {
            tokio::select! {
                () = spool.wake.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
                () = cancel.cancelled() => break,
            }
            continue;
        }
        let delivered = forward(&state, &batch).await;
        let moved = delivered.len();
        if let Err(error) = spool.remove(&delivered).await {
            tracing::error!(error = %error, "Removing forwarded events from the spool failed; they will be forwarded again.");
        }
        if moved == 0 {
            if !pause(backoff.next(Duration::ZERO), &cancel).await {
                break;
            }
        } else {
            backoff.reset();
        }
    }
}

/// Delivers one round; returns the records every routed sink acknowledged (or that a rule or
/// the dead letter handled).
async fn forward<'a>(state: &AppState, batch: &'a [Spooled]) -> Vec<&'a Spooled> {
    // One read of the shared record per source in the batch (usually one).
    let mut sources: Vec<&str> = batch.iter().map(|s| s.source.as_str()).collect();
    sources.sort_unstable();
    sources.dedup();
    for source in sources {
        let envelopes: Vec<&vodbridge_core::Envelope> = batch
            .iter()
            .filter(|s| s.source == source)
            .map(|s| s.envelope.as_ref())
            .collect();
        state
            .pipeline
            .recall(&envelopes, RouteContext { source })
            .await;
    }
    let in_flight = state
        .metrics
        .in_flight
        .with_label_values(&[Ingress::Push.as_str()]);
    let in_flight = &in_flight;
    in_order(
        batch.iter().collect(),
        |spooled| spooled.envelope.partition_key.as_str(),
        |spooled| async move {
            let guard = InFlight::enter(in_flight);
            let report = state
                .pipeline
                .deliver(
                    Arc::clone(&spooled.envelope),
                    RouteContext {
                        source: &spooled.source,
                    },
                    Instant::now() + state.publish_timeout,
                )
                .await;
            drop(guard);
            state
                .metrics
                .record_delivery(&spooled.source, &spooled.envelope, &report);
            if report.outcome.is_handled() {
                Some(spooled)
            } else {
                tracing::debug!(source = %spooled.source, event_id = %spooled.envelope.id, outcome = ?report.outcome, "Spooled event not acknowledged; it stays spooled.");
                None
            }
        },
    )
    .await
    .done
}
