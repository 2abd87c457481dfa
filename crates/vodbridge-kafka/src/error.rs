//! The Kafka crate's error type: configuration and producer creation failures.

/// Errors raised while setting up the Kafka sink.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error("invalid Kafka sink configuration: {0}")]
    Config(String),
    /// A file named by the configuration could not be read.
    #[error("cannot read {path}: {source}")]
    File {
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// librdkafka refused the configuration.
    #[error("cannot create the Kafka producer: {0}")]
    Producer(String),
}

/// Result with the Kafka [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
