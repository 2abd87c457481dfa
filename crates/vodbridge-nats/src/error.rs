//! The NATS crate's error type: configuration and connection setup failures.

/// Errors raised while setting up the NATS sink.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error("invalid NATS sink configuration: {0}")]
    Config(String),
    /// A credentials or certificate file could not be read.
    #[error("cannot read {path}: {source}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The client could not be created.
    #[error("NATS client: {0}")]
    Connect(String),
}

/// Result with the NATS [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
