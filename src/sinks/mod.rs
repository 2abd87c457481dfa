//! Sinks built from configuration: the embedded `stdout` and `file` sinks, and the broker sinks
//! of their own crates (Kafka, NATS JetStream, AMQP).

mod line;

use std::sync::Arc;

use vodbridge_core::{Background, Sink};

pub(crate) use line::rotated_files;
pub use line::LineSink;

use crate::{config::SinkConfig, error::Result};

/// Creates the sink a config entry describes; a broker sink's background tasks run under
/// `background` (the app hands each sink a [`Background::child`]).
///
/// # Errors
///
/// [`crate::Error::SinkFile`] when a file sink cannot be opened, [`crate::Error::Sink`] when a
/// broker sink's client cannot be created. A broker that is down is not an error: broker sinks
/// connect in the background and report unhealthy until they are connected.
pub fn build(name: &str, config: &SinkConfig, background: Background) -> Result<Arc<dyn Sink>> {
    let failed = |source| crate::Error::Sink {
        name: name.to_owned(),
        source,
    };
    Ok(match config {
        SinkConfig::Stdout(_) => Arc::new(LineSink::stdout(name)),
        SinkConfig::File(file) => Arc::new(LineSink::file(name, file)?),
        SinkConfig::Kafka(kafka) => Arc::new(
            vodbridge_kafka::KafkaSink::start(name, kafka.clone(), background)
                .map_err(|e| failed(e.into()))?,
        ),
        SinkConfig::Amqp(amqp) => Arc::new(
            vodbridge_amqp::AmqpSink::start(name, amqp.clone(), background)
                .map_err(|e| failed(e.into()))?,
        ),
        SinkConfig::Nats(nats) => Arc::new(
            vodbridge_nats::NatsSink::start(name, nats.clone(), background)
                .map_err(|e| failed(e.into()))?,
        ),
    })
}
