//! The admin API: enqueue or push events, read the ledger and stats, set faults.

use std::sync::Arc;

use axum::{
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use vodbridge_tencent::SignKey;

use crate::{
    delivery::{push_at_rate, push_one},
    generate::parse_types,
    Faults, Limits, Shared,
};

/// Largest `generate` count per call.
const MAX_GENERATE: usize = 1_000_000;

#[derive(Debug, Deserialize)]
pub(crate) struct EnqueueParams {
    #[serde(default)]
    sub_app_id: u64,
    generate: Option<usize>,
    #[serde(default)]
    types: String,
}

fn bad_request(message: impl std::fmt::Display) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "Error": message.to_string() })),
    )
        .into_response()
}

/// The events of a request: generated, or the body's JSON array of objects.
fn events(
    shared: &Shared,
    generate: Option<usize>,
    types: &str,
    body: &Bytes,
) -> Result<Vec<Value>, String> {
    if let Some(count) = generate {
        if count > MAX_GENERATE {
            return Err(format!("generate at most {MAX_GENERATE} events per call"));
        }
        let types = parse_types(types);
        let mut generator = shared.generator();
        return Ok((0..count)
            .map(|i| generator.event(&types[i % types.len().max(1)]))
            .collect());
    }
    let events: Vec<Value> = serde_json::from_slice(body).map_err(|e| format!("body: {e}"))?;
    if events.iter().any(|e| !e.is_object()) {
        return Err("every event must be a JSON object".to_owned());
    }
    Ok(events)
}

fn event_type(event: &Value) -> String {
    event
        .get("EventType")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

pub(crate) async fn enqueue(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<EnqueueParams>,
    body: Bytes,
) -> Response {
    let events = match events(&shared, params.generate, &params.types, &body) {
        Ok(events) => events,
        Err(message) => return bad_request(message),
    };
    // Through the sub-application's event configuration, as VOD emits finished events.
    let emitted: Vec<crate::Emitted> = events
        .into_iter()
        .map(|e| crate::event_config::emit(&shared, params.sub_app_id, e))
        .collect();
    let keys: Vec<u64> = emitted.iter().map(|e| e.key()).collect();
    Json(json!({ "Keys": keys, "Emitted": emitted })).into_response()
}

#[derive(Debug, Deserialize)]
pub(crate) struct PushParams {
    url: String,
    #[serde(default)]
    sub_app_id: u64,
    generate: Option<usize>,
    #[serde(default)]
    types: String,
    sign_key: Option<String>,
    #[serde(default = "default_concurrency")]
    concurrency: usize,
    /// Events sent per second, each on its own schedule like VOD's steady stream (the
    /// concurrency then does not apply); unset: as fast as `concurrency` allows.
    rate: Option<f64>,
}

const fn default_concurrency() -> usize {
    8
}

/// Starts pushing events to `url` like VOD's normal callback (`rate` per second on a steady
/// schedule, or as fast as `concurrency` senders go); answers the keys at once and records each
/// event's attempts, the answer VOD took and whether it gave up, in the ledger.
pub(crate) async fn push(
    State(shared): State<Arc<Shared>>,
    Query(params): Query<PushParams>,
    body: Bytes,
) -> Response {
    if reqwest::Url::parse(&params.url).is_err() {
        return bad_request(format!("url {:?} is not a URL", params.url));
    }
    let events = match events(&shared, params.generate, &params.types, &body) {
        Ok(events) => events,
        Err(message) => return bad_request(message),
    };
    let jobs: Vec<(u64, Value)> = {
        let mut queue = shared.queue();
        events
            .into_iter()
            .map(|e| (queue.record(params.sub_app_id, &event_type(&e), "push"), e))
            .collect()
    };
    let keys: Vec<u64> = jobs.iter().map(|(k, _)| *k).collect();
    let sign_key = params.sign_key.map(SignKey::new);
    if let Some(rate) = params.rate {
        if !(rate > 0.0 && rate <= 100_000.0) {
            return bad_request("rate must be above 0 and at most 100000 events per second");
        }
        push_at_rate(&shared, &params.url, jobs, rate, sign_key);
        return Json(json!({ "Keys": keys })).into_response();
    }
    let jobs = Arc::new(tokio::sync::Mutex::new(jobs.into_iter()));
    for _ in 0..params.concurrency.clamp(1, 64) {
        let (shared, jobs, url, sign_key) = (
            Arc::clone(&shared),
            Arc::clone(&jobs),
            params.url.clone(),
            sign_key.clone(),
        );
        tokio::spawn(async move {
            loop {
                let Some((key, event)) = jobs.lock().await.next() else {
                    break;
                };
                push_one(&shared, &url, key, event, sign_key.as_ref()).await;
            }
        });
    }
    Json(json!({ "Keys": keys })).into_response()
}

pub(crate) async fn ledger(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.queue().ledger()).into_response()
}

pub(crate) async fn stats(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.queue().stats()).into_response()
}

pub(crate) async fn set_faults(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Faults>(&body) {
        Ok(faults)
            if (0.0..=1.0).contains(&faults.error_rate)
                && (0.0..=1.0).contains(&faults.confirm_error_rate) =>
        {
            *crate::lock(&shared.faults) = faults.clone();
            Json(faults).into_response()
        }
        Ok(_) => bad_request("error_rate and confirm_error_rate must be within 0.0..=1.0"),
        Err(e) => bad_request(e),
    }
}

pub(crate) async fn get_faults(State(shared): State<Arc<Shared>>) -> Response {
    Json(crate::lock(&shared.faults).clone()).into_response()
}

pub(crate) async fn set_limits(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Limits>(&body) {
        Ok(limits) => {
            shared.set_limits(limits);
            Json(limits).into_response()
        }
        Err(e) => bad_request(e),
    }
}

pub(crate) async fn get_limits(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.limits()).into_response()
}

/// `PUT /emulator/sub-apps`: lists (or replaces) one sub-application, a `SubAppIdInfo`.
pub(crate) async fn put_sub_app(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<vodbridge_tencent::sub_apps::SubAppIdInfo>(&body) {
        Ok(info) => {
            crate::lock(&shared.sub_apps).insert(info.clone());
            Json(info).into_response()
        }
        Err(e) => bad_request(e),
    }
}

/// `DELETE /emulator/sub-apps/{id}`: takes one off the list (404 when it was not listed).
pub(crate) async fn delete_sub_app(
    State(shared): State<Arc<Shared>>,
    axum::extract::Path(sub_app_id): axum::extract::Path<u64>,
) -> Response {
    if crate::lock(&shared.sub_apps).remove(sub_app_id) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}
