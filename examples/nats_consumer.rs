//! Example consumer: reads vodbridge events from a NATS JetStream stream with a durable pull
//! consumer and decodes them with the project's crates.
//! `cargo run --example nats_consumer -- NATS_URL STREAM [COUNT]`
#![allow(missing_docs)]

use futures_util::StreamExt;
use vodbridge_core::Envelope;
use vodbridge_tencent::EventContent;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let stream = args.next().unwrap_or_else(|| "VOD".into());
    let count: usize = args
        .next()
        .and_then(|c| c.parse().ok())
        .unwrap_or(usize::MAX);
    let client = async_nats::connect(&url).await?;
    let jetstream = async_nats::jetstream::new(client);
    let consumer: async_nats::jetstream::consumer::PullConsumer = jetstream
        .get_stream(&stream)
        .await?
        .get_or_create_consumer(
            "vodbridge-example",
            async_nats::jetstream::consumer::pull::Config {
                durable_name: Some("vodbridge-example".into()),
                ..Default::default()
            },
        )
        .await?;
    let mut messages = consumer.messages().await?.take(count);
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| anyhow::anyhow!(e))?;
        let headers = message.headers.clone().unwrap_or_default();
        let envelope = Envelope::from_binary(
            |name| {
                headers
                    .get(format!("ce-{name}").as_str())
                    .map(|v| v.as_str().to_owned().into())
            },
            message.payload.clone(),
        )?;
        let event = EventContent::from_slice(&envelope.data)?.into_event();
        println!(
            "{} {} subject={:?}: {event:?}",
            envelope.id, envelope.ty, envelope.subject
        );
        message.ack().await.map_err(|e| anyhow::anyhow!(e))?;
    }
    Ok(())
}
