//! Example consumer: reads vodbridge events from a Kafka topic and decodes them with the
//! project's crates. `cargo run --example kafka_consumer -- BROKERS TOPIC [GROUP]`
#![allow(missing_docs)]

use std::collections::HashSet;

use rdkafka::{
    consumer::{Consumer, StreamConsumer},
    message::{Headers, Message},
    ClientConfig,
};
use vodbridge_core::Envelope;
use vodbridge_tencent::{EventContent, VodEvent};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let brokers = args.next().unwrap_or_else(|| "127.0.0.1:9092".into());
    let topic = args.next().unwrap_or_else(|| "vod.NewFileUpload".into());
    let group = args.next().unwrap_or_else(|| "vodbridge-example".into());
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", &group)
        .set("auto.offset.reset", "earliest")
        .create()?;
    consumer.subscribe(&[&topic])?;
    // At-least-once delivery: remember recent ids and skip duplicates.
    let mut seen = HashSet::new();
    loop {
        let message = consumer.recv().await?;
        let header = |name: &str| {
            message
                .headers()
                .and_then(|h| h.iter().find(|x| x.key == format!("ce_{name}")))
                .and_then(|x| x.value)
                .map(|v| String::from_utf8_lossy(v).into_owned().into())
        };
        let envelope = Envelope::from_binary(
            header,
            message.payload().unwrap_or_default().to_vec().into(),
        )?;
        if !seen.insert(envelope.id.clone()) {
            continue;
        }
        handle(&envelope)?;
    }
}

fn handle(envelope: &Envelope) -> anyhow::Result<()> {
    match EventContent::from_slice(&envelope.data)?.into_event() {
        VodEvent::NewFileUpload(upload) => {
            println!("{} uploaded: {:?}", envelope.id, upload.file_id)
        }
        VodEvent::ProcedureStateChanged(task) => println!(
            "{} task flow {:?} is {:?}",
            envelope.id, task.task_id, task.status
        ),
        other => println!("{} {} ({:?})", envelope.id, envelope.ty, other),
    }
    Ok(())
}
