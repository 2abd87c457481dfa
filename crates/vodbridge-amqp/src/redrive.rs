//! Reading a dead-letter queue for `vodbridge redrive`: each message is offered to the target
//! and acknowledged only once it was published again; the others go back to the queue when the
//! reading channel closes, in their order.

use std::borrow::Cow;

use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable},
    Connection, ConnectionProperties,
};
use vodbridge_core::{Envelope, HeaderStyle, RedriveMessage, RedriveTarget};

use crate::{
    config::AmqpSinkConfig,
    error::{Error, Result},
};

/// Offers every message `from` (a queue) holds when the redrive starts (counted then, so events the
/// routes publish back into the same queue are not read again) to `target`, with
/// `basic.get` and manual acknowledgements; connected with sink `name`'s settings.
///
/// # Errors
///
/// [`Error::Config`]/[`Error::File`] for the connection settings, [`Error::Broker`] when the
/// broker cannot be reached, the queue does not exist, or an acknowledgement fails.
pub async fn redrive(
    name: &str,
    config: &AmqpSinkConfig,
    from: &str,
    target: &mut dyn RedriveTarget,
) -> Result<()> {
    let queue = from;
    let validated = config.check()?;
    let broker = |what: &str| {
        let what = what.to_owned();
        move |source| Error::Broker { what, source }
    };
    let connection = Connection::connect_with_config(
        &validated.url,
        ConnectionProperties::default()
            .with_connection_name(format!("vodbridge-{name}-redrive").into()),
        validated.tls,
        lapin::runtime::default_runtime().map_err(broker("starting lapin's runtime"))?,
    )
    .await
    .map_err(broker("connecting"))?;
    let channel = connection
        .create_channel()
        .await
        .map_err(broker("opening a channel"))?;
    let declared = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(broker(&format!("queue {queue:?}")))?;
    let mut left = u64::from(declared.message_count());
    target.total(left);
    while left > 0 && !target.is_done() {
        let Some(message) = channel
            .basic_get(queue.into(), BasicGetOptions { no_ack: false })
            .await
            .map_err(broker("reading a dead letter"))?
        else {
            break;
        };
        left -= 1;
        let delivery = message.delivery;
        if target.offer(decode(&delivery)).await {
            delivery
                .ack(BasicAckOptions::default())
                .await
                .map_err(broker("acknowledging a redriven dead letter"))?;
        }
    }
    // What was not acknowledged is requeued by the broker when the channel closes.
    let _ = channel.close(200, "redrive done".into()).await;
    let _ = connection.close(200, "redrive done".into()).await;
    Ok(())
}

/// A message of the AMQP sink: binary mode (`cloudEvents_*` headers, body = `data`) or
/// structured mode (`application/cloudevents+json`).
fn decode(delivery: &Delivery) -> RedriveMessage {
    let structured = delivery
        .properties
        .content_type()
        .as_ref()
        .is_some_and(|t| t.as_str().starts_with("application/cloudevents+json"));
    if structured {
        return Envelope::from_structured_json_with_dead_letter(&delivery.data)
            .map_err(|e| e.to_string());
    }
    let headers = delivery.properties.headers().clone().unwrap_or_default();
    let attribute = |name: &str| -> Option<Cow<'static, str>> {
        match headers
            .inner()
            .get(HeaderStyle::Amqp.header_name(name).as_ref())
        {
            Some(AMQPValue::LongString(s)) => Some(Cow::Owned(
                String::from_utf8_lossy(s.as_bytes()).into_owned(),
            )),
            Some(AMQPValue::ShortString(s)) => Some(Cow::Owned(s.as_str().to_owned())),
            _ => None,
        }
    };
    Envelope::from_binary_with_dead_letter(attribute, delivery.data.clone().into())
        .map_err(|e| e.to_string())
}
