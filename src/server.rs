//! The HTTP surface: callback route, `/metrics`, `/healthz`, `/readyz`, and their shared state.

use std::{
    collections::BTreeMap,
    sync::{atomic::AtomicBool, atomic::Ordering, Arc},
    time::Duration,
};

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};
use tokio::sync::Semaphore;
use vodbridge_core::Pipeline;
use vodbridge_tencent::governor::Governor;

use crate::{
    config::{ServerConfig, Source},
    pull::PullSource,
    push,
    spool::Spool,
    telemetry::Metrics,
};

/// State shared by every request handler.
pub(crate) struct AppState {
    /// Routes and publishes events.
    pub(crate) pipeline: Pipeline,
    /// Sources by name.
    pub(crate) sources: BTreeMap<String, Source>,
    /// Metric families.
    pub(crate) metrics: Metrics,
    /// Permits for callbacks in flight; none left means 503 at once.
    pub(crate) in_flight: Arc<Semaphore>,
    /// Set on shutdown: readiness turns false and new callbacks get 503.
    pub(crate) draining: AtomicBool,
    /// Listener and limits.
    pub(crate) server: ServerConfig,
    /// Publish deadline of one callback.
    pub(crate) publish_timeout: Duration,
    /// Pull sources, for readiness (auth failures).
    pub(crate) pull_sources: Vec<Arc<PullSource>>,
    /// The request governor of each VOD account, for the rate gauges.
    pub(crate) governors: Vec<Arc<Governor>>,
    /// The durable push spool, when configured.
    pub(crate) spool: Option<Arc<Spool>>,
}

impl AppState {
    /// Ready: not draining, every sink healthy, no pull source in auth failure.
    pub(crate) fn is_ready(&self) -> bool {
        self.not_ready_because().is_none()
    }

    /// Why the bridge is not ready, if it is not.
    pub(crate) fn not_ready_because(&self) -> Option<String> {
        if self.draining.load(Ordering::Relaxed) {
            return Some("draining".to_owned());
        }
        let down: Vec<&str> = self
            .pipeline
            .sinks()
            .filter(|s| !s.is_healthy())
            .map(|s| s.name())
            .collect();
        if !down.is_empty() {
            return Some(format!("sinks down: {}", down.join(", ")));
        }
        let auth: Vec<&str> = self
            .pull_sources
            .iter()
            .filter(|s| s.auth_failed.load(Ordering::Relaxed))
            .map(|s| s.name.as_str())
            .collect();
        (!auth.is_empty()).then(|| format!("VOD rejects the credentials of: {}", auth.join(", ")))
    }
}

/// The router of every endpoint.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/callback/{source}", post(push::callback))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(state)
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    state.metrics.refresh(&state.pipeline, state.is_ready());
    state.metrics.refresh_governors(&state.governors);
    if let Some(spool) = &state.spool {
        state
            .metrics
            .spool_bytes
            .set(i64::try_from(spool.bytes()).unwrap_or(i64::MAX));
        state
            .metrics
            .spool_events
            .set(i64::try_from(spool.events()).unwrap_or(i64::MAX));
        state
            .metrics
            .spool_capacity_bytes
            .set(i64::try_from(spool.max_bytes()).unwrap_or(i64::MAX));
        state.metrics.spool_oldest_age.set(spool.oldest_age_secs());
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let reason = state.not_ready_because();
    state.metrics.refresh(&state.pipeline, reason.is_none());
    match reason {
        None => (StatusCode::OK, "ready\n").into_response(),
        Some(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response(),
    }
}
