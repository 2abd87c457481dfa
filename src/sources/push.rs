//! Push ingress: `POST /callback/{source}` answers VOD only after every routed sink acknowledged.
//!
//! VOD takes any answer as delivered and resends only when a callback times out (5 s) or its
//! connection fails. So with `hold` (the default) a callback whose sinks fail for a reason that
//! may pass is published again and again and not answered before VOD's timeout has passed:
//! VOD then sends it again, and an event a sink stores meanwhile is kept (a duplicate at most).

use std::{
    collections::HashMap,
    fmt::Display,
    net::{IpAddr, SocketAddr},
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use axum::{
    extract::{ConnectInfo, Path, Query, Request, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use secrecy::ExposeSecret;
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use tokio::{sync::OwnedSemaphorePermit, time::Instant};
use tracing::Instrument;
use vodbridge_core::{
    DeliveryReport, Envelope, EventId, Ingress, Outcome, RouteContext, TraceParent, TRACE_TARGET,
};
use vodbridge_tencent::RawEvent;

use crate::{
    config::{CallbackAuth, PushSettings, SourceKind},
    sources::backoff::Backoff,
    state::AppState,
    telemetry::{self, event_type_label, InFlight},
};

/// Header carrying the envelope id in answers, for correlating VOD's request with the logs.
pub const EVENT_ID_HEADER: &str = "x-vodbridge-event-id";
/// Header that may carry the shared callback token instead of `?token=`.
pub const TOKEN_HEADER: &str = "x-vodbridge-token";

/// A refused callback: status, a stable code word, and a message for the caller.
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, message: impl Display) -> Self {
        Self {
            status,
            code,
            message: message.to_string(),
        }
    }
}

/// Handles one normal callback.
pub(crate) async fn callback(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    request: Request,
) -> Response {
    let Some(source) = state.sources.get(&name) else {
        // An unknown name is not used as a label: senders must not create series.
        return refuse(
            &state,
            "unknown",
            Refusal::new(
                StatusCode::NOT_FOUND,
                "unknown_source",
                format!("no push source named {name:?}"),
            ),
        );
    };
    let SourceKind::Push(push) = &source.kind else {
        return refuse(
            &state,
            &name,
            Refusal::new(
                StatusCode::NOT_FOUND,
                "not_a_push_source",
                format!("source {name:?} pulls; it takes no callbacks"),
            ),
        );
    };
    // A child of the caller's `traceparent` when one came with the request.
    let span = telemetry::event_span(&name, Ingress::Push);
    let upstream = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<TraceParent>().ok());
    if let Some(upstream) = &upstream {
        telemetry::set_remote_parent(&span, upstream);
    }
    let response = match handle(&state, &name, push, source, request, &span, upstream)
        .instrument(span.clone())
        .await
    {
        Ok(response) => response,
        Err(refusal) => refuse(&state, &name, refusal),
    };
    span.record("http.response.status_code", response.status().as_u16());
    if response.status() != StatusCode::OK {
        span.record("otel.status_code", "ERROR");
    }
    response
}

/// One callback, step by step: admit → authenticate and read → normalize → spool or deliver →
/// answer. A refusal at any step is answered at once.
async fn handle(
    state: &Arc<AppState>,
    name: &str,
    push: &PushSettings,
    source: &crate::config::Source,
    request: Request,
    span: &tracing::Span,
    upstream: Option<TraceParent>,
) -> Result<Response, Refusal> {
    let received = Instant::now();
    let permit = admit(state, push, received).await?;
    let (query, body) = authenticate_and_read(state, name, &push.auth, request).await?;
    let envelope = normalize(source, &push.auth, &body, &query, span, upstream)?;
    state
        .metrics
        .events_received
        .with_label_values(&[name, "push", event_type_label(&envelope.event_type)])
        .inc();
    if push.spool {
        if let Some(answer) = spool(state, name, &envelope, span).await {
            return Ok(answer);
        }
    }
    let report = deliver(state, name, push, &envelope, received, permit).await?;
    Ok(answer(
        state, name, push, &envelope, &report, received, span,
    ))
}

/// Admission: a permit for one callback in flight. Without `hold`, a draining bridge and a full
/// bridge refuse at once (shed load rather than queue past VOD's timeout); with `hold`, a
/// refusal is an answer VOD takes as delivered, so the callback waits for room, up to the hold.
async fn admit(
    state: &AppState,
    push: &PushSettings,
    received: Instant,
) -> Result<OwnedSemaphorePermit, Refusal> {
    // With `hold` a draining bridge still takes callbacks (its sinks stay open until the
    // listener closes).
    if push.hold.is_none() && state.draining.load(Ordering::Relaxed) {
        return Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "draining",
            "the bridge is shutting down",
        ));
    }
    match (Arc::clone(&state.in_flight).try_acquire_owned(), push.hold) {
        (Ok(permit), _) => Ok(permit),
        (Err(_), None) => Err(Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "saturated",
            "too many callbacks in flight",
        )),
        (Err(_), Some(hold)) => {
            match tokio::time::timeout_at(
                received + hold,
                Arc::clone(&state.in_flight).acquire_owned(),
            )
            .await
            {
                Ok(Ok(permit)) => Ok(permit),
                _ => Err(Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "saturated",
                    "too many callbacks in flight for the whole hold",
                )),
            }
        }
    }
}

/// Authentication before the body is read (client address, token), then the body under
/// `body_timeout_ms` and `body_limit_bytes`. Returns the query (for `Sign`/`T` on the body's
/// side) and the body.
async fn authenticate_and_read(
    state: &AppState,
    name: &str,
    auth: &CallbackAuth,
    request: Request,
) -> Result<(HashMap<String, String>, Bytes), Refusal> {
    check_client(auth, &request)?;
    let query: HashMap<String, String> = Query::try_from_uri(request.uri())
        .map(|Query(q)| q)
        .unwrap_or_default();
    check_token(auth, &query, request.headers())?;
    match tokio::time::timeout(
        std::time::Duration::from_millis(state.server.body_timeout_ms),
        read_body(request, state.server.body_limit_bytes),
    )
    .await
    {
        Ok(body) => Ok((query, body?)),
        Err(_) => {
            state.metrics.body_timeouts.with_label_values(&[name]).inc();
            Err(Refusal::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the body did not arrive within {} ms",
                    state.server.body_timeout_ms
                ),
            ))
        }
    }
}

/// The body into the envelope: parse, check `Sign`/`T`, normalize, and continue the caller's
/// trace.
fn normalize(
    source: &crate::config::Source,
    auth: &CallbackAuth,
    body: &Bytes,
    query: &HashMap<String, String>,
    span: &tracing::Span,
    upstream: Option<TraceParent>,
) -> Result<Arc<Envelope>, Refusal> {
    let normalize = tracing::info_span!(target: TRACE_TARGET, "normalize", otel.name = "normalize");
    let mut envelope = normalize.in_scope(|| {
        let event = RawEvent::parse(body)
            .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "bad_body", e))?;
        check_sign(auth, &event, query)?;
        let received_at = OffsetDateTime::now_utc();
        source
            .normalizer
            .normalize(event, received_at)
            .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "bad_body", e))
    })?;
    drop(normalize);
    envelope.traceparent = Some(telemetry::trace_parent(span, upstream));
    telemetry::record_event(span, &envelope);
    Ok(Arc::new(envelope))
}

/// With the spool: the answer once the envelope is durably spooled (the forwarder delivers it);
/// `None` when the spool is full or failed, and the callback is published directly.
async fn spool(
    state: &AppState,
    name: &str,
    envelope: &Arc<Envelope>,
    span: &tracing::Span,
) -> Option<Response> {
    let spool = state.spool.as_ref()?;
    match spool.append(name, envelope).await {
        Ok(true) => {
            telemetry::confirmed(span, "spooled");
            state.metrics.confirmed.with_label_values(&[name]).inc();
            tracing::debug!(source = name, event_id = %envelope.id, event_type = %envelope.event_type, "Callback spooled.");
            Some(outcome_response(
                &Outcome::Delivered,
                &envelope.id,
                state.server.retry_after_secs,
            ))
        }
        Ok(false) => {
            state.metrics.spool_full.with_label_values(&[name]).inc();
            tracing::warn!(source = name, event_id = %envelope.id, "Spool full; the callback is published directly (held if its sinks fail).");
            None
        }
        Err(error) => {
            tracing::error!(source = name, event_id = %envelope.id, error = %error, "Spooling failed; the callback is published directly (held if its sinks fail).");
            None
        }
    }
}

/// Publishes to every routed sink: once, or with `hold` again and again until a sink holds it
/// or the hold passes. The permit is released when publishing ends.
async fn deliver(
    state: &Arc<AppState>,
    name: &str,
    push: &PushSettings,
    envelope: &Arc<Envelope>,
    received: Instant,
    permit: OwnedSemaphorePermit,
) -> Result<DeliveryReport, Refusal> {
    // What another replica's broker already holds (the shared record), skipped below.
    state
        .pipeline
        .recall(&[envelope.as_ref()], RouteContext { source: name })
        .await;
    let Some(hold) = push.hold else {
        let report = deliver_once(state, name, envelope, received).await;
        drop(permit);
        return Ok(report);
    };
    // The first attempt inline, so the common case spawns nothing: VOD waits for it (if it
    // hangs up meanwhile, that was its timeout, and it sends the event again).
    let first = deliver_once(state, name, envelope, received).await;
    if !matches!(first.outcome, Outcome::Retryable { .. }) {
        drop(permit);
        return Ok(first);
    }
    // Retries go on in their own task: when VOD hangs up after its timeout, the event is still
    // stored if a sink comes back within the hold.
    let task = tokio::spawn(deliver_holding(
        Arc::clone(state),
        name.to_owned(),
        Arc::clone(envelope),
        received + hold,
        permit,
        first,
    ));
    task.await.map_err(|join| {
        tracing::error!(source = name, error = %join, "Publishing task failed; VOD sends the event again.");
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "internal",
            "publishing failed",
        )
    })
}

/// The answer to VOD for a delivery, with its metrics, span status and log line.
fn answer(
    state: &AppState,
    name: &str,
    push: &PushSettings,
    envelope: &Envelope,
    report: &DeliveryReport,
    received: Instant,
    span: &tracing::Span,
) -> Response {
    let metrics = &state.metrics;
    metrics.record_delivery(name, envelope, report);
    if report.outcome.is_handled() {
        telemetry::confirmed(span, report.outcome.as_str());
        metrics.confirmed.with_label_values(&[name]).inc();
        tracing::debug!(source = name, event_id = %envelope.id, event_type = %envelope.event_type, outcome = report.outcome.as_str(), "Callback handled.");
    } else if push.hold.is_some() && matches!(report.outcome, Outcome::Retryable { .. }) {
        tracing::warn!(source = name, event_id = %envelope.id, event_type = %envelope.event_type, outcome = ?report.outcome, held_ms = received.elapsed().as_millis() as u64, "Callback held past VOD's timeout without an acknowledgement; VOD sends it again.");
    } else {
        tracing::warn!(source = name, event_id = %envelope.id, event_type = %envelope.event_type, outcome = ?report.outcome, "Callback not acknowledged; VOD may retry.");
    }
    outcome_response(&report.outcome, &envelope.id, state.server.retry_after_secs)
}

/// One delivery under the publish deadline.
async fn deliver_once(
    state: &AppState,
    name: &str,
    envelope: &Arc<Envelope>,
    received: Instant,
) -> DeliveryReport {
    let _in_flight = InFlight::enter(
        &state
            .metrics
            .in_flight
            .with_label_values(&[Ingress::Push.as_str()]),
    );
    state
        .pipeline
        .deliver(
            Arc::clone(envelope),
            RouteContext { source: name },
            received + state.publish_timeout,
        )
        .await
}

/// After a retryable `first` answer: delivers again until a sink holds the event, a permanent
/// answer comes, or `hold_until` passes, pausing 100 ms before the first retry, doubling to
/// 1 s. Holds its in-flight permit throughout, so `max_in_flight` bounds held callbacks too.
async fn deliver_holding(
    state: Arc<AppState>,
    name: String,
    envelope: Arc<Envelope>,
    hold_until: Instant,
    permit: OwnedSemaphorePermit,
    first: DeliveryReport,
) -> DeliveryReport {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    let mut last = first;
    while matches!(last.outcome, Outcome::Retryable { .. })
        && Instant::now() + backoff.peek() < hold_until
    {
        state
            .metrics
            .push_retries
            .with_label_values(&[name.as_str()])
            .inc();
        tokio::time::sleep(backoff.next(Duration::ZERO)).await;
        last = deliver_once(&state, &name, &envelope, Instant::now()).await;
    }
    drop(permit);
    last
}

/// The one place an outcome becomes an HTTP answer: 200 only for a handled event, 503 with
/// `Retry-After` for anything a broker does not hold.
fn outcome_response(outcome: &Outcome, id: &EventId, retry_after: u64) -> Response {
    let id_header = HeaderValue::from_str(id.as_str()).ok();
    let mut response = match outcome {
        Outcome::Delivered | Outcome::Dropped | Outcome::DeadLettered { .. } => {
            StatusCode::OK.into_response()
        }
        Outcome::Retryable { reason, detail } => error_body(
            StatusCode::SERVICE_UNAVAILABLE,
            reason.as_str(),
            detail,
            Some(retry_after),
        ),
        // A permanent failure without a dead-letter destination is not acknowledged either: the
        // body names the reason (`unroutable`, `too_large`, ...) and VOD may try again, which
        // succeeds once the operator fixes the binding or adds a dead letter.
        Outcome::Rejected { reason, detail } => error_body(
            StatusCode::SERVICE_UNAVAILABLE,
            reason.as_str(),
            detail,
            Some(retry_after),
        ),
    };
    if let Some(value) = id_header {
        response.headers_mut().insert(EVENT_ID_HEADER, value);
    }
    response
}

fn refuse(state: &AppState, source_label: &str, refusal: Refusal) -> Response {
    state
        .metrics
        .callback_rejected
        .with_label_values(&[source_label, refusal.status.as_str()])
        .inc();
    tracing::info!(source = source_label, status = refusal.status.as_u16(), code = refusal.code, detail = %refusal.message, "Callback refused.");
    let retry_after = (refusal.status == StatusCode::SERVICE_UNAVAILABLE)
        .then_some(state.server.retry_after_secs);
    error_body(refusal.status, refusal.code, &refusal.message, retry_after)
}

fn error_body(status: StatusCode, code: &str, message: &str, retry_after: Option<u64>) -> Response {
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    let mut response = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// The client's address: the connection's, or, when the connection comes from a trusted proxy,
/// the rightmost `X-Forwarded-For` entry that is not a trusted proxy (each proxy appends the
/// address it saw, so entries left of the last untrusted one are the client's own words).
fn client_ip(auth: &CallbackAuth, request: &Request) -> Option<IpAddr> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| canonical_ip(addr.ip()))?;
    Some(forwarded_client(
        &auth.trusted_proxies,
        peer,
        request.headers(),
    ))
}

fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The client behind `peer` by `X-Forwarded-For` and the trusted proxies; an unparseable entry
/// stops the walk there (it is not a proxy we trust, so it is the client as far as we know).
fn forwarded_client(trusted: &[ipnet::IpNet], peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut client = peer;
    let entries = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect::<Vec<_>>();
    for entry in entries.iter().rev() {
        let Ok(ip) = entry.parse::<IpAddr>().map(canonical_ip) else {
            break;
        };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    client
}

fn check_client(auth: &CallbackAuth, request: &Request) -> Result<(), Refusal> {
    if auth.allowed_ips.is_empty() {
        return Ok(());
    }
    match client_ip(auth, request) {
        Some(ip) if auth.allowed_ips.iter().any(|net| net.contains(&ip)) => Ok(()),
        Some(ip) => Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "ip_not_allowed",
            format!("client {ip} is not allowed"),
        )),
        None => Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "ip_not_allowed",
            "client address unknown",
        )),
    }
}

fn check_token(
    auth: &CallbackAuth,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<(), Refusal> {
    let Some(expected) = &auth.token else {
        return Ok(());
    };
    let given = query
        .get("token")
        .map(String::as_str)
        .or_else(|| headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok()))
        .unwrap_or_default();
    if bool::from(given.as_bytes().ct_eq(expected.expose_secret().as_bytes())) {
        Ok(())
    } else {
        Err(Refusal::new(
            StatusCode::UNAUTHORIZED,
            "bad_token",
            "missing or wrong callback token",
        ))
    }
}

fn check_sign(
    auth: &CallbackAuth,
    event: &RawEvent<'_>,
    query: &HashMap<String, String>,
) -> Result<(), Refusal> {
    let Some(key) = &auth.sign_key else {
        return Ok(());
    };
    let unauthorized =
        |e: vodbridge_tencent::Error| Refusal::new(StatusCode::UNAUTHORIZED, "bad_signature", e);
    let from_query = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let sign = event
        .sign()
        .map(str::to_owned)
        .or_else(|| from_query("sign"));
    let t = match event.t() {
        Some(t) => Some(t),
        None => from_query("t").map(|t| {
            t.trim()
                .parse()
                .map_err(|_| vodbridge_tencent::Error::InvalidTimestamp)
        }),
    };
    let (Some(sign), Some(t)) = (sign, t) else {
        return Err(unauthorized(vodbridge_tencent::Error::SignatureMissing));
    };
    let t = t.map_err(unauthorized)?;
    key.verify(
        &sign,
        t,
        OffsetDateTime::now_utc().unix_timestamp(),
        auth.sign_skew_secs,
    )
    .map_err(unauthorized)
}

async fn read_body(request: Request, limit: usize) -> Result<Bytes, Refusal> {
    let too_large = || {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("body exceeds {limit} bytes"),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|e| {
            let is_limit = std::error::Error::source(&e)
                .is_some_and(|inner| inner.is::<http_body_util::LengthLimitError>())
                || e.to_string().contains("length limit");
            if is_limit {
                too_large()
            } else {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    format!("cannot read body: {e}"),
                )
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for v in values {
            map.append("x-forwarded-for", HeaderValue::from_str(v).expect("header"));
        }
        map
    }

    #[test]
    fn the_client_is_the_rightmost_untrusted_forwarded_entry() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let proxy = ip("10.0.0.5");
        // nginx appends the address it saw: the first entry is the client's own words.
        assert_eq!(
            forwarded_client(&trusted, proxy, &headers(&["203.0.113.9, 198.51.100.7"])),
            ip("198.51.100.7")
        );
        // Two trusted proxies in a row are skipped.
        assert_eq!(
            forwarded_client(&trusted, proxy, &headers(&["198.51.100.7, 10.1.1.1"])),
            ip("198.51.100.7")
        );
        // Several headers count as one list.
        assert_eq!(
            forwarded_client(&trusted, proxy, &headers(&["203.0.113.9", "198.51.100.7"])),
            ip("198.51.100.7")
        );
        // A connection that is not from a trusted proxy: its own address, whatever it claims.
        assert_eq!(
            forwarded_client(&trusted, ip("198.51.100.7"), &headers(&["10.0.0.1"])),
            ip("198.51.100.7")
        );
        // Garbage stops the walk; no header leaves the proxy's own address.
        assert_eq!(
            forwarded_client(
                &trusted,
                proxy,
                &headers(&["203.0.113.9, nonsense, 10.0.0.9"])
            ),
            ip("10.0.0.9")
        );
        assert_eq!(forwarded_client(&trusted, proxy, &headers(&[])), proxy);
        assert_eq!(
            forwarded_client(&trusted, proxy, &headers(&["::ffff:198.51.100.7"])),
            ip("198.51.100.7")
        );
    }
}
