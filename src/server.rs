//! The HTTP surface: the callback route, `/metrics`, `/healthz` and `/readyz`.

use std::sync::Arc;

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};

use crate::{sources::push, state::AppState};

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
