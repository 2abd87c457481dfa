//! The confirmers: `ConfirmEvents` for acknowledged handles, up to 16 per call, paced by the
//! account's governor, retried until the handles expire.

use std::{sync::Arc, time::Duration};

use tokio::{sync::mpsc, time::Instant};
use vodbridge_core::TRACE_TARGET;
use vodbridge_tencent::{
    api::{ErrorClass, MAX_CONFIRM_HANDLES},
    governor::{Action, Governor},
};

use super::{Confirm, EventQueue, PullSource};

/// The receiving end of a source's acknowledged handles, shared by its confirmers.
pub(crate) type ConfirmQueue = Arc<tokio::sync::Mutex<mpsc::Receiver<Confirm>>>;

/// What a confirmer needs: where to confirm, its pacing, its batching, its metrics.
pub(crate) struct Confirmer {
    /// Source name (metric label).
    pub(super) name: String,
    pub(super) queue: Arc<dyn EventQueue>,
    pub(super) governor: Arc<Governor>,
    /// Longest wait for a fuller batch.
    pub(super) linger: Duration,
    /// `vodbridge_confirmed_total{source}`.
    pub(super) confirmed: prometheus::IntCounter,
    /// `vodbridge_confirm_batch_size{source}`.
    pub(super) batch_size: prometheus::Histogram,
    /// `vodbridge_confirm_failures_total`, per reason.
    pub(super) failures: prometheus::IntCounterVec,
    /// `vodbridge_vod_api_throttled_total{account, action="ConfirmEvents"}`.
    pub(super) throttled: prometheus::IntCounter,
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

    pub(super) fn failed(&self, reason: &str, count: usize) {
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
pub(super) async fn confirm_batch(confirmer: &Confirmer, mut batch: Vec<Confirm>) {
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
