//! Example consumer: reads vodbridge events from a RabbitMQ queue and decodes them with the
//! project's crates. `cargo run --example amqp_consumer -- AMQP_URL QUEUE`
#![allow(missing_docs)]

use futures_util::StreamExt;
use lapin::{
    options::{BasicAckOptions, BasicConsumeOptions},
    types::{AMQPValue, FieldTable},
    Connection, ConnectionProperties,
};
use vodbridge_core::Envelope;
use vodbridge_tencent::EventContent;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let queue = args.next().unwrap_or_else(|| "vod-events".into());
    let connection = Connection::connect(&url, ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    let mut deliveries = channel
        .basic_consume(
            queue.as_str().into(),
            "vodbridge-example".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    while let Some(delivery) = deliveries.next().await {
        let delivery = delivery?;
        let headers = delivery.properties.headers().clone().unwrap_or_default();
        let header = |name: &str| match headers.inner().get(format!("cloudEvents_{name}").as_str())
        {
            Some(AMQPValue::LongString(s)) => {
                Some(String::from_utf8_lossy(s.as_bytes()).into_owned().into())
            }
            _ => None,
        };
        let envelope = Envelope::from_binary(header, delivery.data.clone().into())?;
        let event = EventContent::from_slice(&envelope.data)?.into_event();
        println!(
            "{} {} subject={:?}: {event:?}",
            envelope.id, envelope.ty, envelope.subject
        );
        // Acknowledge after handling: RabbitMQ redelivers what was not acknowledged.
        delivery.ack(BasicAckOptions::default()).await?;
    }
    Ok(())
}
