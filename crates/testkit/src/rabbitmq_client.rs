//! What tests do to RabbitMQ as its owner and as a consumer, with lapin (feature `amqp`):
//! declare and bind a queue, take every message out of it.

use lapin::{
    message::Delivery,
    options::{
        BasicAckOptions, BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions,
        QueueDeclareOptions,
    },
    types::FieldTable,
    Connection, ConnectionProperties, ExchangeKind,
};

use crate::RabbitMq;

impl RabbitMq {
    /// A connection and a channel of the test's own (the broker's URL, guest user).
    ///
    /// # Panics
    ///
    /// When the broker does not accept the connection.
    pub async fn channel(&self) -> (Connection, lapin::Channel) {
        let connection = Connection::connect(&self.url(), ConnectionProperties::default())
            .await
            .expect("connects to RabbitMQ");
        let channel = connection.create_channel().await.expect("a channel");
        (connection, channel)
    }

    /// Declares a durable topic `exchange` and a durable `queue` (with `arguments`, such as a
    /// length limit) bound to it by `key`, as their owner would.
    ///
    /// # Panics
    ///
    /// When the broker refuses one of the declarations.
    pub async fn declare_queue(
        &self,
        exchange: &str,
        queue: &str,
        key: &str,
        arguments: FieldTable,
    ) {
        let (connection, channel) = self.channel().await;
        declare_queue(&channel, exchange, queue, key, arguments).await;
        let _ = connection.close(200, "declared".into()).await;
    }

    /// Takes every message now in `queue` out of it (`basic.get`, each acknowledged).
    ///
    /// # Panics
    ///
    /// When the broker cannot be reached or the queue does not exist.
    pub async fn take_all(&self, queue: &str) -> Vec<Delivery> {
        let (connection, channel) = self.channel().await;
        let out = take_all(&channel, queue).await;
        let _ = connection.close(200, "drained".into()).await;
        out
    }
}

/// [`RabbitMq::declare_queue`] on a channel the test keeps.
///
/// # Panics
///
/// When the broker refuses one of the declarations.
pub async fn declare_queue(
    channel: &lapin::Channel,
    exchange: &str,
    queue: &str,
    key: &str,
    arguments: FieldTable,
) {
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("exchange declared");
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            arguments,
        )
        .await
        .expect("queue declared");
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("queue bound");
}

/// [`RabbitMq::take_all`] on a channel the test keeps.
///
/// # Panics
///
/// When a `basic.get` or an acknowledgement fails.
pub async fn take_all(channel: &lapin::Channel, queue: &str) -> Vec<Delivery> {
    let mut out = Vec::new();
    while let Some(message) = channel
        .basic_get(queue.into(), BasicGetOptions::default())
        .await
        .expect("basic.get")
    {
        message
            .delivery
            .ack(BasicAckOptions::default())
            .await
            .expect("ack");
        out.push(message.delivery);
    }
    out
}
