//! The service library's error type: configuration, startup and serving failures.

/// Errors that stop the service from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid; the message names the key.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A broker sink could not be created, or its broker not read (redrive).
    #[error("sink {name}: {source}")]
    Sink {
        /// Sink name.
        name: String,
        /// The broker crate's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A file sink's file cannot be opened for appending.
    #[error("sink {name}: cannot open {}: {source}", path.display())]
    SinkFile {
        /// Sink name.
        name: String,
        /// The file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
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
    #[error("spool: {what} {}: {source}", path.display())]
    Spool {
        /// What failed (`cannot open`, `cannot write`, ...).
        what: &'static str,
        /// The spool's directory or database.
        path: std::path::PathBuf,
        /// The storage's error (the writer's, when a batch failed, is cloned to every waiter as
        /// text).
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The shared delivery record's store did not answer in time.
    #[error("shared delivery record: {0}")]
    Record(String),
    /// The shared delivery record's store failed, with its client's error.
    #[error("shared delivery record: {what}: {source}")]
    RecordStore {
        /// What was being done (`reading`, `writing`, `connecting to nats://…`).
        what: String,
        /// The store client's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A VOD API call failed (network, VOD's own error, credentials): `vodbridge vod` reports
    /// it with the source and the call.
    #[error("sources.{source_name}: {call}: {source}")]
    VodApi {
        /// The configured source.
        source_name: String,
        /// The API action (`DescribeEventConfig`, `ModifyEventConfig`).
        call: &'static str,
        /// The client's error.
        source: vodbridge_tencent::Error,
    },
    /// VOD's event configuration still differs after `ModifyEventConfig`.
    #[error("sources.{source_name}: VOD still differs after ModifyEventConfig: {differences}")]
    VodStillDiffers {
        /// The configured source.
        source_name: String,
        /// What differs, comma-separated.
        differences: String,
    },
    /// The OpenTelemetry exporter could not be built.
    #[error("telemetry.otlp: {what}: {source}")]
    Otlp {
        /// What was being built.
        what: &'static str,
        /// The client's or SDK's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The routes and sinks do not make a pipeline (a route naming a sink that is not built).
    #[error("routes: {0}")]
    Pipeline(#[source] vodbridge_core::Error),
    /// The built-in VOD emulator (`demo`) could not start.
    #[error("the built-in VOD emulator: {0}")]
    Emulator(#[source] vod_emulator::Error),
    /// Metrics registration failed (a bug: duplicate metric names).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Result with the service [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
