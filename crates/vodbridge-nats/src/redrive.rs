//! Reading a dead-letter stream for `vodbridge redrive`, through a durable pull consumer of
//! its own: a message is acknowledged only once it was published again, so the consumer's
//! acknowledgement floor marks what was redriven. Messages left in place (filtered out, failed
//! again) are negatively acknowledged at the end, ready for the next redrive.

use std::{borrow::Cow, time::Duration};

use async_nats::jetstream::{
    self,
    consumer::{pull, AckPolicy, DeliverPolicy},
    AckKind,
};
use futures_util::StreamExt;
use vodbridge_core::{Envelope, HeaderStyle, RedriveMessage, RedriveTarget};

use crate::{
    config::NatsSinkConfig,
    error::{Error, Result},
    sink::connect_options,
};

/// The durable consumer a redrive of `subject` (or the whole stream) uses.
fn consumer_name(subject: Option<&str>) -> String {
    match subject {
        None => "vodbridge-redrive".to_owned(),
        Some(subject) => format!(
            "vodbridge-redrive-{}",
            subject
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                })
                .collect::<String>()
        ),
    }
}

/// Offers the messages of `from`, `STREAM` or `STREAM/SUBJECT` (that subject's only; wildcards
/// allowed), that no earlier redrive acknowledged to `target`, up to the stream's last message
/// when it started; connected with sink `name`'s settings.
///
/// # Errors
///
/// [`Error::Config`]/[`Error::File`] for the connection settings or an empty stream name,
/// [`Error::Connect`] when the server cannot be reached, [`Error::Broker`] when the stream does
/// not exist or reading fails.
pub async fn redrive(
    name: &str,
    config: &NatsSinkConfig,
    from: &str,
    target: &mut dyn RedriveTarget,
) -> Result<()> {
    let (stream, subject) = match from.split_once('/') {
        Some((stream, subject)) => (stream, Some(subject)),
        None => (from, None),
    };
    if stream.is_empty() || subject.is_some_and(str::is_empty) {
        return Err(Error::Config(format!(
            "redrive from {from:?}: expected STREAM or STREAM/SUBJECT"
        )));
    }
    let (addrs, options) = connect_options(&format!("{name}-redrive"), config)?;
    let client = options.connect(addrs).await.map_err(Error::Connect)?;
    let js = jetstream::new(client.clone());
    let mut stream_handle = js
        .get_stream(stream)
        .await
        .map_err(Error::broker(format!("stream {stream:?}")))?;
    let mut consumer = redrive_consumer(&stream_handle, subject).await?;
    let info = consumer
        .info()
        .await
        .map_err(Error::broker("reading the consumer's state"))?;
    target.total(info.num_pending + info.num_ack_pending as u64);
    // Only what the stream held when the redrive started: routes that publish back into the
    // same stream must not feed the redrive its own output.
    let last = stream_handle
        .info()
        .await
        .map_err(Error::broker("reading the stream's state"))?
        .state
        .last_sequence;
    let left_in_place = offer_all(&mut consumer, target, last).await?;
    // Left in place: ready for the next redrive at once rather than after the ack wait.
    for message in left_in_place {
        message
            .ack_with(AckKind::Nak(None))
            .await
            .map_err(Error::broker("leaving a dead letter in place"))?;
    }
    // The negative acknowledgements are plain publishes: send them before the client goes.
    client
        .flush()
        .await
        .map_err(Error::broker("flushing the acknowledgements"))?;
    Ok(())
}

/// Offers every message up to stream sequence `last` to `target`, acknowledging each one it
/// published again; returns the others (refused, or newer than `last`), to be left in place.
async fn offer_all(
    consumer: &mut jetstream::consumer::PullConsumer,
    target: &mut dyn RedriveTarget,
    last: u64,
) -> Result<Vec<jetstream::Message>> {
    let mut left_in_place = Vec::new();
    while !target.is_done() {
        let mut batch = consumer
            .fetch()
            .max_messages(256)
            .expires(Duration::from_secs(1))
            .messages()
            .await
            .map_err(Error::broker("fetching dead letters"))?;
        let mut got = 0;
        while let Some(message) = batch.next().await {
            let message = message.map_err(Error::broker("reading a dead letter"))?;
            got += 1;
            let sequence = message.info().map_or(0, |i| i.stream_sequence);
            if sequence > last {
                left_in_place.push(message);
                continue;
            }
            if target.offer(decode(&message)).await {
                message
                    .double_ack()
                    .await
                    .map_err(Error::broker("acknowledging a redriven dead letter"))?;
            } else {
                left_in_place.push(message);
            }
            if target.is_done() {
                break;
            }
        }
        if got == 0 {
            break;
        }
    }
    Ok(left_in_place)
}

/// The durable consumer of the redrive of `subject` (or the whole stream): every message, each
/// acknowledged once published again, so the next redrive starts after the last one.
async fn redrive_consumer(
    stream_handle: &jetstream::stream::Stream,
    subject: Option<&str>,
) -> Result<jetstream::consumer::PullConsumer> {
    let durable = consumer_name(subject);
    stream_handle
        .get_or_create_consumer(
            &durable,
            pull::Config {
                durable_name: Some(durable.clone()),
                description: Some("vodbridge redrive: acknowledged = published again".into()),
                filter_subject: subject.unwrap_or_default().to_owned(),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                // Long enough that nothing comes back while one redrive runs.
                ack_wait: Duration::from_secs(600),
                max_ack_pending: 1_000_000,
                ..pull::Config::default()
            },
        )
        .await
        .map_err(Error::broker("creating the redrive's consumer"))
}

/// A message of the NATS sink: binary mode (`ce-*` headers, payload = `data`) or structured
/// mode (`application/cloudevents+json`).
fn decode(message: &jetstream::Message) -> RedriveMessage {
    let header = |name: &str| -> Option<Cow<'static, str>> {
        message
            .headers
            .as_ref()?
            .get(name)
            .map(|v| Cow::Owned(v.as_str().to_owned()))
    };
    if header("content-type").is_some_and(|t| t.starts_with("application/cloudevents+json")) {
        return Envelope::from_structured_json_with_dead_letter(&message.payload)
            .map_err(|e| e.to_string());
    }
    Envelope::from_binary_with_dead_letter(
        |name| header(HeaderStyle::Nats.header_name(name).as_ref()),
        message.payload.clone(),
    )
    .map_err(|e| e.to_string())
}
