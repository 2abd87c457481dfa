//! Sinks built from configuration: the embedded `stdout` and `file` sinks, and the broker sinks
//! of their own crates (Kafka, NATS JetStream, AMQP).

mod line;

use std::sync::Arc;

use vodbridge_core::Sink;

pub use line::LineSink;

use crate::{config::SinkConfig, error::Result};

/// Creates the sink a config entry describes.
///
/// # Errors
///
/// [`crate::Error::Sink`] when the sink cannot be opened (e.g. the file is not writable). A
/// broker that is down is not an error: broker sinks connect in the background and report
/// unhealthy until they are connected.
pub async fn build(name: &str, config: &SinkConfig) -> Result<Arc<dyn Sink>> {
    Ok(match config {
        SinkConfig::Stdout(_) => Arc::new(LineSink::stdout(name)),
        SinkConfig::File(file) => Arc::new(LineSink::file(name, file)?),
        SinkConfig::Kafka(kafka) => {
            Arc::new(vodbridge_kafka::KafkaSink::new(name, kafka).map_err(|e| {
                crate::Error::Sink {
                    name: name.to_owned(),
                    reason: e.to_string(),
                }
            })?)
        }
        SinkConfig::Amqp(amqp) => Arc::new(
            vodbridge_amqp::AmqpSink::connect(name, amqp.clone()).map_err(|e| {
                crate::Error::Sink {
                    name: name.to_owned(),
                    reason: e.to_string(),
                }
            })?,
        ),
        SinkConfig::Nats(nats) => Arc::new(
            vodbridge_nats::NatsSink::connect(name, nats.clone())
                .await
                .map_err(|e| crate::Error::Sink {
                    name: name.to_owned(),
                    reason: e.to_string(),
                })?,
        ),
    })
}
