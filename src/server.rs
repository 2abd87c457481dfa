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

use crate::{
    config::{ServerConfig, Source},
    push,
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
}

impl AppState {
    /// Ready: not draining and every sink healthy.
    pub(crate) fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::Relaxed) && self.pipeline.is_healthy()
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
    let draining = state.draining.load(Ordering::Relaxed);
    let down: Vec<&str> = state
        .pipeline
        .sinks()
        .filter(|s| !s.is_healthy())
        .map(|s| s.name())
        .collect();
    state
        .metrics
        .refresh(&state.pipeline, !draining && down.is_empty());
    if draining {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else if down.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("sinks down: {}\n", down.join(", ")),
        )
            .into_response()
    }
}
