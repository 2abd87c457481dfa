//! The Tencent Cloud API 3.0 endpoint at `POST /`: TC3 verification, fault injection, and the
//! actions `PullEvents`, `ConfirmEvents`, `DescribeEventsState`, `DescribeEventConfig`,
//! `ModifyEventConfig` and `DescribeSubAppIds`.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::State,
    http::{header, HeaderMap},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use serde_json::Value;
use subtle::ConstantTimeEq;
use tokio::time::Instant;
use vodbridge_tencent::tc3::{self, Authorization, SignRequest};

use crate::{
    error::{Error, Result},
    queue::MAX_PULL,
    Shared,
};

/// The only API version VOD's event actions have.
const VERSION: &str = "2018-07-17";

/// Answers one API call, always HTTP 200 with an API 3.0 body, like Tencent.
pub(crate) async fn handle(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = shared.request_id();
    let response = match call(&shared, &headers, &body).await {
        Ok(mut response) => {
            response.extend_from_slice(format!(r#""RequestId":"{request_id}"}}}}"#).as_bytes());
            response
        }
        Err(Error::Api { code, message }) => serde_json::to_vec(&serde_json::json!({
            "Response": { "Error": { "Code": code, "Message": message }, "RequestId": request_id }
        }))
        .unwrap_or_default(),
        Err(other) => serde_json::to_vec(&serde_json::json!({
            "Response": { "Error": { "Code": "InternalError", "Message": other.to_string() }, "RequestId": request_id }
        }))
        .unwrap_or_default(),
    };
    ([(header::CONTENT_TYPE, "application/json")], response).into_response()
}

/// Returns the start of a successful `{"Response":{…,` body; the caller closes it with the
/// RequestId.
async fn call(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Result<Vec<u8>> {
    let action = header_str(headers, "x-tc-action")?.to_owned();
    let secret_id = match verify(shared, headers, body) {
        Ok(secret_id) => secret_id,
        Err(error) => {
            shared.queue().stats.auth_failures += 1;
            return Err(error);
        }
    };
    if header_str(headers, "x-tc-version")? != VERSION {
        return Err(Error::api(
            "NoSuchVersion",
            format!("the version must be {VERSION}"),
        ));
    }
    shared.apply_limits(&action, &secret_id)?;
    shared.inject_faults(&action).await?;
    let params: Value = serde_json::from_slice(body)
        .map_err(|e| Error::api("InvalidParameter", format!("the body is not JSON: {e}")))?;
    let sub_app_id = match params.get("SubAppId") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_u64()
            .ok_or_else(|| Error::api("InvalidParameterValue", "SubAppId must be an integer"))?,
    };
    match action.as_str() {
        "PullEvents" => Ok(pull(shared, sub_app_id).await),
        "ConfirmEvents" => confirm(shared, &params),
        "DescribeEventConfig" => {
            let stored =
                crate::lock(&shared.event_configs).get(sub_app_id, shared.config.event_config);
            open_response(&stored.config)
        }
        "ModifyEventConfig" => {
            let change = crate::event_config::parse_modify(&params)?;
            crate::lock(&shared.event_configs).modify(
                sub_app_id,
                shared.config.event_config,
                &change,
            );
            Ok(br#"{"Response":{"#.to_vec())
        }
        "DescribeSubAppIds" => {
            let page = crate::lock(&shared.sub_apps).describe(&params)?;
            open_response(&page)
        }
        "DescribeEventsState" => {
            let count = shared.queue().count_to_pull_lagging(
                sub_app_id,
                Instant::now(),
                time::OffsetDateTime::now_utc(),
                shared.config.events_state_lag,
            );
            Ok(format!(r#"{{"Response":{{"CountOfEventsToPull":{count},"#).into_bytes())
        }
        other => Err(Error::api(
            "InvalidAction",
            format!("action {other} does not exist"),
        )),
    }
}

/// An answer's members as the start of a successful body: `{…}` becomes `{"Response":{…,`
/// for [`handle`] to close with the RequestId.
fn open_response(members: &impl serde::Serialize) -> Result<Vec<u8>> {
    let mut out =
        serde_json::to_vec(members).map_err(|e| Error::api("InternalError", e.to_string()))?;
    out.pop();
    let mut body = br#"{"Response":"#.to_vec();
    body.extend_from_slice(&out);
    if body.last() != Some(&b'{') {
        body.push(b',');
    }
    Ok(body)
}

async fn pull(shared: &Shared, sub_app_id: u64) -> Vec<u8> {
    let deadline = Instant::now() + shared.config.long_poll;
    let events = loop {
        // Register for wake-ups before looking, so an enqueue in between is not missed.
        let notified = shared.notify.notified();
        let (events, next_visible) = {
            let mut queue = shared.queue();
            let events = queue.pull(sub_app_id, Instant::now());
            let next = if events.is_empty() {
                queue.next_visible(sub_app_id)
            } else {
                None
            };
            (events, next)
        };
        let now = Instant::now();
        if !events.is_empty() || now >= deadline {
            break events;
        }
        let wake = next_visible.map_or(deadline, |t| t.clamp(now, deadline));
        tokio::select! {
            () = notified => {}
            () = tokio::time::sleep_until(wake) => {}
        }
    };
    {
        let stats = &mut shared.queue().stats;
        stats.pulls += 1;
        *stats.pulls_by_sub_app.entry(sub_app_id).or_default() += 1;
    }
    let mut out = Vec::with_capacity(64 + events.iter().map(Bytes::len).sum::<usize>());
    out.extend_from_slice(br#"{"Response":{"EventSet":["#);
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(event);
    }
    out.extend_from_slice(b"],");
    out
}

fn confirm(shared: &Shared, params: &Value) -> Result<Vec<u8>> {
    let handles = params
        .get("EventHandles")
        .ok_or_else(|| Error::api("MissingParameter", "EventHandles is required"))?
        .as_array()
        .ok_or_else(|| Error::api("InvalidParameterValue", "EventHandles must be an array"))?;
    if handles.is_empty() || handles.len() > MAX_PULL {
        return Err(Error::api(
            "InvalidParameterValue",
            "EventHandles takes 1 to 16 handles",
        ));
    }
    let handles: Vec<String> = handles
        .iter()
        .map(|h| h.as_str().map(str::to_owned))
        .collect::<Option<_>>()
        .ok_or_else(|| Error::api("InvalidParameterValue", "EventHandles must be strings"))?;
    shared
        .queue()
        .confirm(&handles, Instant::now())
        .map_err(|handle| {
            Error::api(
                "InvalidParameterValue",
                format!("EventHandle {handle} is invalid or expired (30 s after the pull)"),
            )
        })?;
    Ok(br#"{"Response":{"#.to_vec())
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Result<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Error::api("MissingParameter", format!("the {name} header is required")))
}

/// Verifies TC3-HMAC-SHA256 exactly as Tencent does: known SecretId, timestamp within the
/// clock window, scope date of that timestamp, and the signature over the signed headers.
/// Returns the SecretId, the key of the request limits.
fn verify(shared: &Shared, headers: &HeaderMap, body: &[u8]) -> Result<String> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            Error::api(
                "AuthFailure.InvalidAuthorization",
                "the Authorization header is missing",
            )
        })?;
    let auth = Authorization::parse(authorization)
        .map_err(|e| Error::api("AuthFailure.InvalidAuthorization", e.to_string()))?;
    if auth.secret_id != shared.config.secret_id {
        return Err(Error::api(
            "AuthFailure.SecretIdNotFound",
            "the SecretId is not found",
        ));
    }
    let timestamp: i64 = header_str(headers, "x-tc-timestamp")?
        .parse()
        .map_err(|_| {
            Error::api(
                "InvalidParameterValue",
                "X-TC-Timestamp must be Unix seconds",
            )
        })?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let window = i64::try_from(shared.config.clock_window.as_secs()).unwrap_or(i64::MAX);
    if (now - timestamp).abs() > window {
        return Err(Error::api(
            "AuthFailure.SignatureExpire",
            format!("the request timestamp {timestamp} is more than {window} s from the server time {now}"),
        ));
    }
    let failure = |why: &str| Error::api("AuthFailure.SignatureFailure", why.to_owned());
    if auth.service != "vod" || tc3::utc_date(timestamp).ok().as_deref() != Some(auth.date.as_str())
    {
        return Err(failure(
            "the credential scope does not match the timestamp and service vod",
        ));
    }
    if !auth.signed_headers.iter().any(|h| h == "content-type")
        || !auth.signed_headers.iter().any(|h| h == "host")
    {
        return Err(failure("SignedHeaders must include content-type and host"));
    }
    let mut signed = Vec::with_capacity(auth.signed_headers.len());
    for name in &auth.signed_headers {
        let value = headers
            .get(name.as_str())
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| failure(&format!("signed header {name} is missing")))?;
        signed.push((name.as_str(), value));
    }
    let request = SignRequest {
        method: "POST",
        query: "",
        headers: &signed,
        payload: body,
        service: "vod",
        timestamp,
    };
    let expected = request
        .sign(&shared.config.secret_key)
        .map_err(|e| failure(&e.to_string()))?;
    if bool::from(
        expected
            .signature
            .as_bytes()
            .ct_eq(auth.signature.as_bytes()),
    ) {
        Ok(auth.secret_id.to_string())
    } else {
        Err(failure("The provided credentials could not be validated. Please check your signature is correct."))
    }
}

/// How long injected latency may be, at most.
pub(crate) const MAX_LATENCY: Duration = Duration::from_secs(60);
