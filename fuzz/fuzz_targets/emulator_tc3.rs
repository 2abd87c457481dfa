//! Fuzz target: the emulator's API endpoint (TC3-HMAC-SHA256 verification, then the action)
//! answers every request with an API 3.0 body and never panics; a request signed with the real
//! key is never refused for its signature, and one whose signature was altered always is.
#![no_main]

use std::sync::OnceLock;

use axum::{body::Body, http::Request};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;
use vod_emulator::{Emulator, EmulatorConfig, Limits};
use vodbridge_tencent::tc3::{Credentials, SignRequest};

const ID: &str = "AKIDFUZZ";
const KEY: &str = "fuzz-secret-key";

fn emulator() -> &'static Emulator {
    static EMULATOR: OnceLock<Emulator> = OnceLock::new();
    EMULATOR.get_or_init(|| {
        let mut config = EmulatorConfig::new(ID, KEY);
        config.long_poll = std::time::Duration::ZERO;
        config.limits = Limits::OFF;
        Emulator::new(config)
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
    })
}

/// The error code of an answer, if it is one.
fn answer(request: Request<Body>) -> Option<String> {
    let response = runtime()
        .block_on(emulator().router().oneshot(request))
        .expect("infallible");
    let bytes = runtime()
        .block_on(axum::body::to_bytes(response.into_body(), 1 << 20))
        .expect("body");
    let value: serde_json::Value = serde_json::from_slice(&bytes).expect("an API 3.0 JSON body");
    let response = value.get("Response").expect("a Response member");
    assert!(response.get("RequestId").is_some(), "{value}");
    response["Error"]["Code"].as_str().map(str::to_owned)
}

fuzz_target!(|input: (u8, String, String, Vec<u8>, u8)| {
    let (mode, action, authorization, body, flip) = (input.0, input.1, input.2, input.3, input.4);
    let actions = ["PullEvents", "ConfirmEvents", "DescribeEventsState"];
    let action = if mode & 1 == 0 {
        actions[usize::from(mode >> 1) % 3].to_owned()
    } else {
        action
    };
    let Ok(action_header) = axum::http::HeaderValue::from_str(&action) else {
        return;
    };
    // An action header that is not visible ASCII is refused before any signature check
    // (MissingParameter), so only a readable one makes the signature the question.
    let readable = action_header.to_str().is_ok();
    let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
    let content_type = "application/json; charset=utf-8";
    let host = "vod.tencentcloudapi.com";
    let lower = action.to_ascii_lowercase();
    let signed = SignRequest {
        method: "POST",
        query: "",
        headers: &[
            ("content-type", content_type),
            ("host", host),
            ("x-tc-action", &lower),
        ],
        payload: &body,
        service: "vod",
        timestamp,
    };
    let real = Credentials::new(ID, KEY).authorize(&signed).expect("signs");
    let (header, expect) = match mode % 3 {
        0 => (real.clone(), Some(true)),
        1 => {
            // The real header with one signature character changed.
            let mut bytes = real.clone().into_bytes();
            let at = bytes.len() - 1 - usize::from(flip) % 64;
            bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
            (String::from_utf8(bytes).expect("ascii"), Some(false))
        }
        _ => (authorization, None),
    };
    let Ok(header_value) = axum::http::HeaderValue::from_str(&header) else {
        return;
    };
    let request = Request::post("/")
        .header("host", host)
        .header("content-type", content_type)
        .header("x-tc-action", action_header)
        .header("x-tc-version", "2018-07-17")
        .header("x-tc-timestamp", timestamp.to_string())
        .header("authorization", header_value)
        .body(Body::from(body))
        .expect("request");
    let code = answer(request);
    let signature_refused = code.as_deref() == Some("AuthFailure.SignatureFailure");
    match expect.filter(|_| readable) {
        Some(true) => assert!(
            !signature_refused,
            "a correctly signed request refused: {code:?}"
        ),
        Some(false) => assert!(signature_refused, "an altered signature accepted: {code:?}"),
        None => {}
    }
});
