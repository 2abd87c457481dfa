//! What the ingress, the HTTP surface and the lifecycle share: the pipeline, the metrics,
//! readiness, and the limits and state of the push path.

use std::{
    collections::BTreeMap,
    sync::{atomic::AtomicBool, atomic::Ordering, Arc},
    time::Duration,
};

use tokio::sync::Semaphore;
use vodbridge_core::{BreakerState, Pipeline};
use vodbridge_tencent::governor::Governor;

use crate::{
    config::{ServerConfig, Source},
    record::StoreRecord,
    sources::pull::SubAppSet,
    spool::Spool,
    telemetry::Metrics,
    vod_check::SourceCheck,
};

/// State shared by every request handler.
pub(crate) struct AppState {
    /// Routes and publishes events.
    pub(crate) pipeline: Pipeline,
    /// Sources by name.
    pub(crate) sources: BTreeMap<String, Source>,
    /// Metric families (also the best-effort queues' observer).
    pub(crate) metrics: Arc<Metrics>,
    /// Permits for callbacks in flight; none left means 503 at once.
    pub(crate) in_flight: Arc<Semaphore>,
    /// Set on shutdown: readiness turns false and new callbacks get 503.
    pub(crate) draining: AtomicBool,
    /// Listener and limits.
    pub(crate) server: ServerConfig,
    /// Publish deadline of one callback.
    pub(crate) publish_timeout: Duration,
    /// Each pull source's name and its flag, set while VOD rejects its credentials (readiness).
    pub(crate) pull_auth: Vec<(String, Arc<AtomicBool>)>,
    /// The request governor of each VOD account, for the rate gauges.
    pub(crate) governors: Vec<Arc<Governor>>,
    /// The durable push spool, when configured.
    pub(crate) spool: Option<Arc<Spool>>,
    /// Each checkable source's check of VOD's event configuration (readiness).
    pub(crate) vod_checks: Vec<Arc<SourceCheck>>,
    /// The shared delivery record, when configured (its state shows on `/readyz`).
    pub(crate) shared_record: Option<Arc<StoreRecord>>,
    /// The pull sources with `sub_app_ids` (their listing and each sub-application's mode show
    /// on `/readyz`).
    pub(crate) sub_app_sets: Vec<Arc<SubAppSet>>,
}

impl AppState {
    /// Ready: not draining, every sink healthy, no pull source in auth failure.
    pub(crate) fn is_ready(&self) -> bool {
        self.not_ready_because().is_none()
    }

    /// What `/readyz` adds below its answer without making the bridge unready: a shared
    /// delivery record that is unreachable (the bridge publishes without it), a best-effort sink
    /// that is down or whose breaker is not closed (its events queue).
    pub(crate) fn degraded_because(&self) -> Option<String> {
        let mut lines: Vec<String> = self
            .shared_record
            .as_ref()
            .and_then(|r| r.down_because())
            .into_iter()
            .collect();
        for set in &self.sub_app_sets {
            lines.extend(set.degraded_because());
        }
        for lane in self.pipeline.best_effort() {
            let sink = self.pipeline.sinks().find(|s| s.name() == lane.sink);
            let down = sink.filter(|s| !s.is_healthy()).map(|s| {
                s.down_because()
                    .map_or_else(|| "down".to_owned(), |why| format!("down ({why})"))
            });
            if down.is_none() && lane.breaker == BreakerState::Closed {
                continue;
            }
            lines.push(format!(
                "best-effort sink {} {}, breaker {}: its events queue ({} of {}); VOD is not held",
                lane.sink,
                down.as_deref().unwrap_or("up"),
                lane.breaker.as_str(),
                lane.depth,
                lane.capacity
            ));
        }
        (!lines.is_empty()).then(|| lines.join("\n"))
    }

    /// Why the bridge is not ready, if it is not.
    pub(crate) fn not_ready_because(&self) -> Option<String> {
        if self.draining.load(Ordering::Relaxed) {
            return Some("draining".to_owned());
        }
        // A sink that is only ever a best-effort target holds nothing: see `degraded_because`.
        let down: Vec<String> = self
            .pipeline
            .sinks()
            .filter(|s| !s.is_healthy() && self.pipeline.is_required(s.name()))
            .map(|s| match s.down_because() {
                Some(why) => format!("{} ({why})", s.name()),
                None => s.name().to_owned(),
            })
            .collect();
        if !down.is_empty() {
            return Some(format!("sinks down: {}", down.join(", ")));
        }
        let auth: Vec<&str> = self
            .pull_auth
            .iter()
            .filter(|(_, failed)| failed.load(Ordering::Relaxed))
            .map(|(name, _)| name.as_str())
            .collect();
        if !auth.is_empty() {
            return Some(format!(
                "VOD rejects the credentials of: {}",
                auth.join(", ")
            ));
        }
        let config: Vec<String> = self
            .vod_checks
            .iter()
            .filter_map(|c| c.not_ready_because())
            .chain(
                self.sub_app_sets
                    .iter()
                    .filter_map(|s| s.not_ready_because()),
            )
            .collect();
        (!config.is_empty()).then(|| config.join("; "))
    }
}
