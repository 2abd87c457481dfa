//! The AMQP crate's error type: configuration and setup failures.

/// Errors raised while setting up the AMQP sink.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error("invalid AMQP sink configuration: {0}")]
    Config(String),
    /// A file named by the configuration could not be read.
    #[error("cannot read {path}: {source}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Result with the AMQP [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
