//! The core crate's error type: invalid identifiers, envelopes that cannot be decoded, bad routes.

/// Errors raised by the core crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An event id was not 32 lowercase hexadecimal characters.
    #[error("invalid event id {0:?}: expected 32 lowercase hex characters")]
    InvalidEventId(String),
    /// A `traceparent` was not a valid W3C Trace Context header.
    #[error("invalid traceparent {0:?}: expected 00-<32 hex>-<16 hex>-<2 hex>")]
    InvalidTraceParent(String),
    /// A message could not be decoded into an envelope.
    #[error("cannot decode envelope: {0}")]
    Decode(String),
    /// A destination template used an unknown placeholder or was malformed.
    #[error("invalid destination template {template:?}: {reason}")]
    InvalidTemplate {
        /// The template as written.
        template: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An event type pattern was malformed.
    #[error("invalid event type pattern {0:?}: use an exact name, `prefix*`, `*suffix`, `*` or `@unknown`")]
    InvalidPattern(String),
    /// A route named a sink that does not exist.
    #[error("route {route} names sink {sink:?}, which is not configured")]
    UnknownSink {
        /// Index of the route (0-based) in the table.
        route: usize,
        /// The sink name.
        sink: String,
    },
    /// A secret in the configuration is missing, doubled, empty or unreadable.
    #[error("{0}")]
    Secret(String),
    /// A route that publishes has no target.
    #[error("route {0} publishes to no sink: give it `sinks` or make it a `drop` route")]
    EmptyRoute(usize),
}

/// Result with the core [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
