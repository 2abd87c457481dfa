//! The confirmers: `ConfirmEvents` for acknowledged handles, up to 16 per call, paced by the
//! account's governor, retried until the handles expire.

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;
use vodbridge_core::TRACE_TARGET;

use crate::sources::backoff::Backoff;
use vodbridge_tencent::{
    api::{ErrorClass, MAX_CONFIRM_HANDLES},
    governor::{Action, Governor},
};

use super::{
    queue::{ConfirmQueue, EventQueue, Pulled},
    source::PullSource,
};

/// What a confirmer needs: where to confirm, its pacing, its batching, its metrics.
pub(super) struct Confirmer {
    /// Source name (metric label).
    name: String,
    queue: Arc<dyn EventQueue>,
    pub(super) governor: Arc<Governor>,
    /// Longest wait for a fuller batch.
    linger: Duration,
    /// `vodbridge_confirmed_total{source}`.
    confirmed: prometheus::IntCounter,
    /// `vodbridge_sub_app_confirmed_total{source, sub_app}`, for one sub-application of many.
    sub_app_confirmed: Option<prometheus::IntCounter>,
    /// `vodbridge_confirm_batch_size{source}`.
    batch_size: prometheus::Histogram,
    /// `vodbridge_confirm_failures_total`, per reason.
    failures: prometheus::IntCounterVec,
    /// `vodbridge_vod_api_throttled_total{account, action="ConfirmEvents"}`.
    pub(super) throttled: prometheus::IntCounter,
}

impl Confirmer {
    /// The confirmer of `source`.
    pub(super) fn new(source: &PullSource, metrics: &crate::telemetry::Metrics) -> Self {
        let mut confirmer = Self::over(
            &source.name,
            Arc::clone(&source.queue),
            Arc::clone(&source.governor),
            source.settings.confirm_linger,
            metrics,
        );
        confirmer.sub_app_confirmed = source.member.as_ref().map(|m| m.confirmed.clone());
        confirmer
    }

    /// A confirmer named `name` (its metric label) confirming to `queue`, paced by `governor`,
    /// waiting up to `linger` for fuller batches.
    pub(super) fn over(
        name: &str,
        queue: Arc<dyn EventQueue>,
        governor: Arc<Governor>,
        linger: Duration,
        metrics: &crate::telemetry::Metrics,
    ) -> Self {
        Self {
            name: name.to_owned(),
            throttled: metrics
                .vod_api_throttled
                .with_label_values(&[governor.account(), Action::Confirm.as_str()]),
            queue,
            governor,
            linger,
            confirmed: metrics.confirmed.with_label_values(&[name]),
            sub_app_confirmed: None,
            batch_size: metrics.confirm_batch_size.with_label_values(&[name]),
            failures: metrics.confirm_failures.clone(),
        }
    }

    fn failed(&self, reason: &str, count: usize) {
        self.failures
            .with_label_values(&[self.name.as_str(), reason])
            .inc_by(count as u64);
    }
}

/// Handles left between a confirm batch's last possible send and its earliest expiry.
pub(super) const LINGER_SAFETY: Duration = Duration::from_secs(1);

/// Confirms acknowledged handles in full batches: after the first handle it waits up to the
/// linger time (never past that handle's deadline) for 16, then for a confirm slot of the
/// governor, topping the batch up with what arrived meanwhile. A source runs two confirmers per
/// pull loop, so confirm round trips never hold the loops back. Exits when every loop has
/// dropped its sender and the queue is empty.
pub(super) async fn run_confirmer(confirmer: Arc<Confirmer>, queue: ConfirmQueue) {
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
/// Every lease of the batch ends here (dropped: confirmed, expired or given up on).
async fn confirm_batch(confirmer: &Confirmer, mut batch: Vec<Pulled>) {
    let name = confirmer.name.as_str();
    let mut transient = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        let now = Instant::now();
        let before = batch.len();
        batch.retain(|c| c.valid_until > now);
        if batch.len() < before {
            confirmer.failed("expired_before_confirm", before - batch.len());
        }
        if batch.is_empty() {
            return;
        }
        let handles: Vec<&str> = batch.iter().map(|c| c.handle.as_str()).collect();
        let spans = confirm_spans(&batch);
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
                if let Some(counter) = &confirmer.sub_app_confirmed {
                    counter.inc_by(batch.len() as u64);
                }
                #[allow(clippy::cast_precision_loss)] // At most 16.
                confirmer.batch_size.observe(batch.len() as f64);
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
                let until = (Instant::now() + transient.next(Duration::ZERO)).min(earliest);
                tracing::debug!(source = name, error = %error, "ConfirmEvents failed; trying again.");
                tokio::time::sleep_until(until).await;
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
                return;
            }
        }
        // The next slot, but not past the handles' end: expired handles are dropped above.
        let earliest = batch.iter().map(|c| c.valid_until).min().unwrap_or(now);
        let _ =
            tokio::time::timeout_at(earliest, confirmer.governor.acquire(Action::Confirm)).await;
    }
}

/// A `confirm` span per event of `batch`, for the call that confirms it (none without an
/// exporter).
fn confirm_spans(batch: &[Pulled]) -> Vec<tracing::Span> {
    batch
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
                vodbridge.confirm_batch = batch.len(),
                error.type = tracing::field::Empty,
            )
        })
        .collect()
}
