//! Sinks built from configuration: the embedded `stdout` and `file` sinks (broker sinks live in
//! their own crates).

mod line;

use std::sync::Arc;

use vodbridge_core::Sink;

pub use line::LineSink;

use crate::{config::SinkConfig, error::Result};

/// Creates the sink a config entry describes.
///
/// # Errors
///
/// [`crate::Error::Sink`] when the sink cannot be opened (e.g. the file is not writable).
pub fn build(name: &str, config: &SinkConfig) -> Result<Arc<dyn Sink>> {
    Ok(match config {
        SinkConfig::Stdout(_) => Arc::new(LineSink::stdout(name)),
        SinkConfig::File(file) => Arc::new(LineSink::file(name, &file.path, file.fsync)?),
    })
}
