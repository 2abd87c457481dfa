//! Pull ingress (reliable callback): pull loops publish each event under a deadline inside its
//! handle lifetime and confirm only what every routed sink acknowledged, every call paced by
//! the VOD account's request governor.

mod backlog;
mod backoff;
mod batch;
mod confirm;
mod pull_loop;
mod recent;
#[cfg(test)]
mod tests;

use std::sync::{atomic::AtomicBool, Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::{sync::mpsc, time::Instant};
use vodbridge_tencent::{api::VodClient, governor::Governor, Normalizer};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{config::PullSettings, state::AppState};

pub(crate) use backlog::run_backlog_probe;
pub(crate) use confirm::{run_confirmer, Confirmer};
pub(crate) use pull_loop::run_loop;
use recent::RecentIds;

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

    /// Starts the source's pull loops and backlog probe under `loops`, and its confirmers under
    /// `confirmers`: pull → deliver (`batch`) → acknowledged handles → `ConfirmEvents`
    /// (`confirm`). The loops stop pulling when `stop` is cancelled; the confirmers end once
    /// every loop has ended, after confirming what was handed to them.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        state: &Arc<AppState>,
        stop: &CancellationToken,
        loops: &TaskTracker,
        confirmers: &TaskTracker,
    ) {
        let (tx, rx) = mpsc::channel(256);
        for index in 0..self.loops() {
            loops.spawn(run_loop(
                Arc::clone(self),
                Arc::clone(state),
                tx.clone(),
                stop.clone(),
                index,
            ));
        }
        loops.spawn(run_backlog_probe(
            Arc::clone(self),
            Arc::clone(state),
            stop.clone(),
        ));
        // Confirmers end once every loop of their source dropped its sender.
        let queue = Arc::new(tokio::sync::Mutex::new(rx));
        // Two confirmers per loop: a confirm round trip must never be what limits pulling.
        let confirmer = Arc::new(Confirmer::new(self, &state.metrics));
        for _ in 0..(self.loops() * 2).max(4) {
            confirmers.spawn(run_confirmer(Arc::clone(&confirmer), Arc::clone(&queue)));
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
