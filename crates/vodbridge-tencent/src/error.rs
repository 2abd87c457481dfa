//! The Tencent crate's error type: bodies that are not VOD events, callbacks that fail auth,
//! and VOD API calls that fail (with VOD's own error answer and how a pull loop reacts to it).

use std::fmt;

/// Errors raised while reading VOD events and authenticating callbacks.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A typed model could not be read from JSON.
    #[error("body is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The body is not JSON, or is ambiguous JSON (an object with a key twice); `offset` is the
    /// byte where reading stopped.
    #[error("body is not valid JSON: {reason} at byte {offset}")]
    Syntax {
        /// What is wrong.
        reason: std::borrow::Cow<'static, str>,
        /// Where, in bytes from the start of the body.
        offset: usize,
    },
    /// The body is not UTF-8 (JSON text must be).
    #[error("body is not valid JSON: not UTF-8")]
    NotUtf8,
    /// The body is JSON but not an object.
    #[error("body is not a JSON object")]
    NotAnObject,
    /// The object has neither `EventType` nor a legacy `eventType`.
    #[error("body has no EventType (nor a legacy v2.0 eventType)")]
    MissingEventType,
    /// `EventType` is present but not a non-empty string.
    #[error("EventType must be a non-empty string")]
    InvalidEventType,
    /// Callback auth is configured but the callback carries no `Sign`/`T`.
    #[error("callback carries no Sign and T")]
    SignatureMissing,
    /// `T` is not an integer.
    #[error("callback T is not a Unix timestamp")]
    InvalidTimestamp,
    /// `Sign` does not equal MD5(SignKey + T).
    #[error("callback Sign does not match")]
    SignatureMismatch,
    /// `T` (the expiry) has passed.
    #[error("callback expired at T={expired_at} (now {now})")]
    SignatureExpired {
        /// The callback's `T`.
        expired_at: i64,
        /// The receiver's clock.
        now: i64,
    },
    /// VOD answered with an API 3.0 error.
    #[error("VOD API error {0}")]
    Api(ApiError),
    /// The call did not produce an API answer (network, timeout, HTTP status, garbage).
    #[error("VOD API call failed: {reason}")]
    Transport {
        /// What happened, short enough for a log line (`timed out`, `HTTP 502`, ...).
        reason: String,
        /// The HTTP client's or JSON reader's error, when there is one.
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The client is misconfigured or misused.
    #[error("VOD API client: {0}")]
    Client(String),
    /// An `Authorization` header is malformed.
    #[error("malformed TC3 Authorization header: {0}")]
    InvalidAuthorization(String),
}

/// Result with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How a pull loop should react to a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// `RequestLimitExceeded*`: back off (longer).
    Throttled,
    /// 5xx, `InternalError`, `ServiceUnavailable`, network: retry with backoff.
    Transient,
    /// `AuthFailure.SignatureExpire`: the clock is off; retry after a pause.
    ClockSkew,
    /// Credentials or permissions: alert and retry slowly.
    Auth,
    /// `ConfirmEvents` with an expired or unknown handle: the events come back by themselves.
    ExpiredHandle,
    /// Anything else: a configuration or request problem.
    Fatal,
}

impl ErrorClass {
    /// Bounded label for metrics.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Throttled => "throttled",
            Self::Transient => "transient",
            Self::ClockSkew => "clock_skew",
            Self::Auth => "auth",
            Self::ExpiredHandle => "expired_handle",
            Self::Fatal => "fatal",
        }
    }
}

/// An error answer of API 3.0 (`Response.Error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// e.g. `RequestLimitExceeded`, `AuthFailure.SignatureFailure`.
    pub code: String,
    /// Tencent's message.
    pub message: String,
    /// `Response.RequestId`.
    pub request_id: String,
}

impl ApiError {
    /// The pull loops' reaction to this code (vod-api.md §7).
    #[must_use]
    pub fn class(&self) -> ErrorClass {
        let code = self.code.as_str();
        if code.starts_with("RequestLimitExceeded") {
            ErrorClass::Throttled
        } else if code == "AuthFailure.SignatureExpire" {
            ErrorClass::ClockSkew
        } else if code.starts_with("AuthFailure")
            || code.starts_with("UnauthorizedOperation")
            || code == "FailedOperation.InvalidVodUser"
            || code == "FailedOperation.InvalidAccount"
        {
            ErrorClass::Auth
        } else if code == "InvalidParameterValue" {
            ErrorClass::ExpiredHandle
        } else if code.starts_with("InternalError") || code.starts_with("ServiceUnavailable") {
            ErrorClass::Transient
        } else {
            ErrorClass::Fatal
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (RequestId {})",
            self.code, self.message, self.request_id
        )
    }
}
