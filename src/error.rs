//! The service library's error type: configuration, startup and serving failures.

/// Errors that stop the service from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid; the message names the key.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A sink could not be created.
    #[error("sink {name}: {reason}")]
    Sink {
        /// Sink name.
        name: String,
        /// What went wrong.
        reason: String,
    },
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The HTTP server failed.
    #[error("HTTP server: {0}")]
    Serve(#[source] std::io::Error),
    /// The push spool cannot be opened or written.
    #[error("spool: {0}")]
    Spool(String),
    /// Metrics registration failed (a bug: duplicate metric names).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Result with the service [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
