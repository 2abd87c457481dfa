//! The HTTP surface: the callback route, `/metrics`, `/healthz` and `/readyz`.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Router,
};

use axum::extract::ConnectInfo;
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

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
    let degraded = state
        .degraded_because()
        .map_or_else(String::new, |why| format!("{why}\n"));
    match reason {
        None => (StatusCode::OK, format!("ready\n{degraded}")).into_response(),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{reason}\n{degraded}"),
        )
            .into_response(),
    }
}

/// Serves `router` on `listener` with the edge limits of `server.*` until `stop` is cancelled,
/// then stops accepting and lets open connections finish their requests.
///
/// Each connection must send a complete request head within `header_timeout_ms` (also between
/// requests on a kept-alive connection), or it is closed without an answer. At
/// `max_connections` open connections the loop stops accepting: new connections wait in the
/// kernel's listen backlog while the open ones are served.
///
/// # Errors
///
/// When accepting fails for a reason other than a per-connection error.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    state: Arc<AppState>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let limits = &state.server;
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_timeout_ms))
        .keep_alive(true);
    let open = state.metrics.http_connections.clone();
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot,
            () = stop.cancelled() => break,
        };
        let Ok(slot) = slot else { break };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Per-connection failures (reset before accept, out of descriptors): go on,
                // after a breath when the process is out of descriptors.
                Err(error) => {
                    tracing::warn!(error = %error, "Accepting a connection failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            let router = router.clone();
            async move {
                Ok::<_, Infallible>(router.oneshot(request).await.unwrap_or_else(|e| match e {}))
            }
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        let (open, closed) = (open.clone(), state.metrics.http_connections_closed.clone());
        tokio::spawn(async move {
            open.inc();
            let result = connection.await;
            open.dec();
            drop(slot);
            if let Err(error) = result {
                let reason = if error.is_timeout() {
                    "header_timeout"
                } else if error.is_incomplete_message() {
                    "incomplete"
                } else {
                    "error"
                };
                closed.with_label_values(&[reason]).inc();
                tracing::debug!(peer = %peer, reason, error = %error, "Connection closed.");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
