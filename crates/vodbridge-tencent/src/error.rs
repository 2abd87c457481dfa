//! The Tencent crate's error type: bodies that are not VOD events, and callbacks that fail auth.

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
    Api(crate::api::ApiError),
    /// The call did not produce an API answer (network, timeout, HTTP status, garbage).
    #[error("VOD API call failed: {0}")]
    Transport(String),
    /// The client is misconfigured or misused.
    #[error("VOD API client: {0}")]
    Client(String),
    /// An `Authorization` header is malformed.
    #[error("malformed TC3 Authorization header: {0}")]
    InvalidAuthorization(String),
}

/// Result with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
