//! The RabbitMQ sink: a supervised connection, a pool of confirm-mode channels, mandatory
//! persistent publishes, and one classification of failures.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::Duration,
};

use lapin::{
    options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions},
    tcp::OwnedTLSConfig,
    types::{AMQPValue, FieldTable, LongString, ShortString},
    uri::AMQPUri,
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind,
};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use vodbridge_core::{
    redact_url, Background, FailureReason, HeaderStyle, Message, PublishFuture, Sink, SinkError,
    StallWatch,
};

use crate::{
    config::{AmqpSinkConfig, ExchangeType, Validated},
    error::{classify, classify_confirmation, Result},
};

/// Connection and channels of one connected period.
///
/// A channel carries **one unconfirmed publish at a time**. lapin hands a `basic.return` to
/// whichever pending confirm it completes next, and completes the confirms of a `multiple`
/// ack in hash-map order, so with several publishes in flight on one channel an unroutable
/// message's return can be paired with another publish: the unroutable one then reads as
/// acknowledged, and its event would be confirmed to VOD while no queue holds it (found by
/// the reliability suite's refusal scenario under load). With one publish per channel the
/// return and the ack always belong to it; the pool's size (`channels`) is the concurrency.
struct Connected {
    connection: Connection,
    channels: Vec<Mutex<Channel>>,
    /// Set while the channel of the same index has a publish awaiting its confirm.
    busy: Vec<AtomicBool>,
    /// One permit per channel not busy.
    free: Arc<Semaphore>,
    /// This connection's publishes waiting with no answer from the broker: the supervisor
    /// replaces it when they stall (a silent network partition) before the heartbeat notices.
    /// Per connection, so publishes still hanging on an abandoned one never count against the
    /// next.
    stall: StallWatch,
}

impl Connected {
    /// Waits for a channel with nothing in flight and takes it.
    async fn take(self: &Arc<Self>, start: usize) -> Option<Slot> {
        let permit = Arc::clone(&self.free).acquire_owned().await.ok()?;
        let n = self.channels.len();
        // A permit means some channel is not busy.
        let index = (0..n).map(|i| (start + i) % n).find(|&index| {
            self.busy[index]
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })?;
        Some(Slot {
            connected: Arc::clone(self),
            index,
            _permit: permit,
        })
    }
}

/// A channel taken for one publish; given back when dropped (after its confirm resolved).
struct Slot {
    connected: Arc<Connected>,
    index: usize,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Slot {
    fn channel(&self) -> Channel {
        self.connected.channels[self.index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.connected.busy[self.index].store(false, Ordering::Release);
    }
}

/// A RabbitMQ sink.
pub struct AmqpSink {
    name: String,
    config: AmqpSinkConfig,
    /// The live connection, if any; replaced by the supervisor after a loss.
    current: Arc<Mutex<Option<Arc<Connected>>>>,
    /// Round-robin channel choice.
    next: AtomicUsize,
    /// Wakes the supervisor when a publish saw the connection die.
    lost: Arc<Notify>,
    /// Connections replaced after a loss or a stall.
    reconnects: Arc<AtomicU64>,
    /// The supervisor runs here; `close()` stops it and waits for it.
    background: Background,
}

/// The longest wait for the broker's `close-ok` when a connection is closed: a connection cut
/// off by a silent partition never answers, and neither a reconnect nor a shutdown may hang on
/// it (the heartbeat ends the abandoned connection's socket shortly after).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Closes `connection`, waiting at most [`CLOSE_TIMEOUT`] for the broker's answer.
async fn close_bounded(connection: &Connection, code: u16, reason: &str) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, connection.close(code, reason.into())).await;
}

impl AmqpSink {
    /// Starts the supervisor (it connects and reconnects in the background, so the bridge starts
    /// while RabbitMQ is down and reports the sink unhealthy) and returns at once. The supervisor
    /// runs under `background` (see [`Background`]); must be called inside a Tokio runtime.
    ///
    /// # Errors
    ///
    /// A missing or unreadable URL, or an invalid setting.
    pub fn start(name: &str, config: AmqpSinkConfig, background: Background) -> Result<Self> {
        let Validated { url, uri, tls } = config.check()?;
        let sink = Self {
            name: name.to_owned(),
            config: config.clone(),
            current: Arc::new(Mutex::new(None)),
            next: AtomicUsize::new(0),
            lost: Arc::new(Notify::new()),
            reconnects: Arc::new(AtomicU64::new(0)),
            background,
        };
        let supervisor = supervise(Supervisor {
            name: name.to_owned(),
            url,
            uri,
            tls,
            config,
            current: Arc::clone(&sink.current),
            lost: Arc::clone(&sink.lost),
            reconnects: Arc::clone(&sink.reconnects),
            shutdown: sink.background.shutdown().clone(),
        });
        // Cancelled at any await (a connect in progress, a backoff), not only between rounds.
        sink.background.spawn(supervisor);
        Ok(sink)
    }

    fn connected(&self) -> Option<Arc<Connected>> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// What the connection supervisor works with.
struct Supervisor {
    name: String,
    /// For logs (redacted).
    url: String,
    uri: AMQPUri,
    tls: OwnedTLSConfig,
    config: AmqpSinkConfig,
    current: Arc<Mutex<Option<Arc<Connected>>>>,
    lost: Arc<Notify>,
    reconnects: Arc<AtomicU64>,
    shutdown: CancellationToken,
}

/// Connects, declares, opens channels; waits for the connection to die or stall; repeats. Every
/// attempt is bounded by `connect_timeout_ms`: through a silent partition the TCP connect may
/// succeed and the handshake never answer.
async fn supervise(s: Supervisor) {
    let name = s.name.as_str();
    let max = Duration::from_millis(s.config.max_reconnect_backoff_ms);
    let connect_timeout = Duration::from_millis(s.config.connect_timeout_ms);
    let mut delay = Duration::from_millis(100);
    let mut connected_before = false;
    while !s.shutdown.is_cancelled() {
        let opened =
            match tokio::time::timeout(connect_timeout, open(&s.uri, &s.tls, &s.config)).await {
                Ok(result) => result.map_err(|e| e.to_string()),
                Err(_) => Err(format!(
                    "no answer within connect_timeout_ms ({} ms)",
                    connect_timeout.as_millis()
                )),
            };
        match opened {
            Ok(connected) => {
                tracing::info!(sink = %name, url = %redact_url(&s.url), "Connected to RabbitMQ.");
                if connected_before {
                    s.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                connected_before = true;
                delay = Duration::from_millis(100);
                let connected = Arc::new(connected);
                *s.current.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some(Arc::clone(&connected));
                // Wait until a publish reports a loss, the connection closes by itself (a
                // missed heartbeat included), or publishes stall. A channel the broker closed
                // (a refused message) is replaced on the live connection, so publishes on the
                // other channels go on undisturbed.
                let why = loop {
                    tokio::select! {
                        () = s.lost.notified() => {}
                        () = tokio::time::sleep(Duration::from_millis(250)) => {}
                    }
                    if s.shutdown.is_cancelled() {
                        return;
                    }
                    if !connected.connection.status().connected() {
                        break "lost".to_owned();
                    }
                    if let Some(silent) = connected.stall.stalled() {
                        break format!(
                            "publishes got no answer for {} ms (stall_timeout_ms)",
                            silent.as_millis()
                        );
                    }
                    if !replace_closed_channels(name, &connected).await {
                        break "a channel could not be reopened".to_owned();
                    }
                };
                *s.current.lock().unwrap_or_else(PoisonError::into_inner) = None;
                close_bounded(&connected.connection, 320, "vodbridge reconnecting").await;
                tracing::warn!(sink = %name, why = %why, "RabbitMQ connection dropped; reconnecting.");
            }
            Err(error) => {
                tracing::warn!(sink = %name, error = %error, retry_in_ms = delay.as_millis() as u64, "Cannot connect to RabbitMQ; retrying.");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(max);
            }
        }
    }
}

/// Opens a confirm-mode channel in place of each closed one; false when that fails (the
/// connection is then replaced as a whole).
async fn replace_closed_channels(name: &str, connected: &Connected) -> bool {
    for slot in &connected.channels {
        let closed = !slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .status()
            .connected();
        if !closed {
            continue;
        }
        match confirm_channel(&connected.connection).await {
            Ok(channel) => {
                *slot.lock().unwrap_or_else(PoisonError::into_inner) = channel;
                tracing::info!(sink = %name, "Replaced a channel the broker closed.");
            }
            Err(error) => {
                tracing::warn!(sink = %name, error = %error, "Cannot reopen a closed channel; reconnecting.");
                return false;
            }
        }
    }
    true
}

async fn confirm_channel(connection: &Connection) -> std::result::Result<Channel, lapin::Error> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

async fn open(
    uri: &AMQPUri,
    tls: &OwnedTLSConfig,
    config: &AmqpSinkConfig,
) -> std::result::Result<Connected, lapin::Error> {
    let connection = Connection::connect_uri_with_config(
        uri.clone(),
        ConnectionProperties::default(),
        tls.clone(),
        lapin::runtime::default_runtime()?,
    )
    .await?;
    let setup = connection.create_channel().await?;
    if !config.exchange.is_empty() {
        let kind = match config.exchange_type {
            ExchangeType::Topic => ExchangeKind::Topic,
            ExchangeType::Direct => ExchangeKind::Direct,
            ExchangeType::Fanout => ExchangeKind::Fanout,
            ExchangeType::Headers => ExchangeKind::Headers,
        };
        let options = ExchangeDeclareOptions {
            durable: true,
            passive: !config.declare_exchange,
            ..ExchangeDeclareOptions::default()
        };
        setup
            .exchange_declare(
                config.exchange.as_str().into(),
                kind,
                options,
                FieldTable::default(),
            )
            .await?;
    }
    let _ = setup.close(200, "setup done".into()).await;
    let mut channels = Vec::with_capacity(config.channels);
    for _ in 0..config.channels {
        channels.push(Mutex::new(confirm_channel(&connection).await?));
    }
    Ok(Connected {
        connection,
        busy: (0..channels.len())
            .map(|_| AtomicBool::new(false))
            .collect(),
        free: Arc::new(Semaphore::new(channels.len())),
        channels,
        stall: StallWatch::new(Duration::from_millis(config.stall_timeout_ms)),
    })
}

/// The `cloudEvents_*` headers: the envelope's attributes and, on a dead-letter copy, its
/// dead-letter attributes, in one loop.
fn headers(message: &Message) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in message.wire_attributes() {
        table.insert(
            HeaderStyle::Amqp.header_name(name).as_ref().into(),
            AMQPValue::LongString(LongString::from(value.as_ref())),
        );
    }
    // W3C Trace Context's own header, which OpenTelemetry's propagators read, beside the
    // binding's `cloudEvents_traceparent`.
    if let Some(traceparent) = &message.envelope.traceparent {
        table.insert(
            "traceparent".into(),
            AMQPValue::LongString(LongString::from(traceparent.to_string())),
        );
    }
    table
}

/// A message as RabbitMQ carries it: the body (`data` in binary mode, the whole CloudEvent in
/// structured mode) and the persistent message's properties, the attributes as headers.
fn wire(structured: bool, message: &Message) -> (Vec<u8>, BasicProperties) {
    let envelope = &message.envelope;
    let dead_letter = message.dead_letter.as_ref();
    let (payload, content_type) = if structured {
        (
            envelope.to_structured_json(dead_letter),
            "application/cloudevents+json",
        )
    } else {
        (envelope.data.to_vec(), envelope.data_content_type())
    };
    let properties = BasicProperties::default()
        .with_message_id(ShortString::from(envelope.id.as_str()))
        .with_content_type(ShortString::from(content_type))
        .with_type(ShortString::from(envelope.ty.as_str()))
        .with_timestamp(u64::try_from(envelope.time.unix_timestamp()).unwrap_or(0))
        .with_delivery_mode(2)
        .with_app_id(ShortString::from("vodbridge"))
        .with_headers(headers(message));
    (payload, properties)
}

impl Sink for AmqpSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "amqp"
    }

    fn publish<'a>(&'a self, message: &'a Message) -> PublishFuture<'a> {
        Box::pin(async move {
            let Some(connected) = self.connected() else {
                return Err(SinkError::retryable(
                    FailureReason::Unavailable,
                    "not connected to RabbitMQ",
                ));
            };
            let start = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(slot) = connected.take(start).await else {
                return Err(SinkError::retryable(
                    FailureReason::Unavailable,
                    "no RabbitMQ channel is free",
                ));
            };
            let channel = slot.channel();
            let envelope = &message.envelope;
            let (payload, properties) = wire(self.config.structured, message);
            let options = BasicPublishOptions {
                mandatory: true,
                ..BasicPublishOptions::default()
            };
            let routing_key = message.destination.as_str();
            // The publish and its confirm run in their own task, which holds the channel until
            // lapin resolved the confirm: a publish cut off by its deadline must not leave a
            // pending confirm on a channel the next publish takes.
            let (exchange, key) = (self.config.exchange.clone(), routing_key.to_owned());
            let (tx, rx) = tokio::sync::oneshot::channel();
            let pending = connected.stall.begin();
            tokio::spawn(async move {
                let result = async {
                    channel
                        .basic_publish(
                            exchange.as_str().into(),
                            key.as_str().into(),
                            options,
                            &payload,
                            properties,
                        )
                        .await?
                        .await
                }
                .await;
                if result.is_ok() {
                    pending.answered();
                }
                drop(pending);
                drop(slot);
                let _ = tx.send(result);
            });
            let Ok(result) = rx.await else {
                self.lost.notify_one();
                return Err(SinkError::retryable(
                    FailureReason::Unavailable,
                    "the publish ended without an answer from RabbitMQ",
                ));
            };
            match result {
                Ok(confirmation) => {
                    classify_confirmation(&confirmation, envelope.id.as_str(), routing_key)
                }
                Err(error) => {
                    // The channel or connection may be dead: let the supervisor check now.
                    self.lost.notify_one();
                    Err(classify(&error))
                }
            }
        })
    }

    fn is_healthy(&self) -> bool {
        self.connected()
            .is_some_and(|c| c.connection.status().connected())
    }

    fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    fn close(&self) -> PublishFuture<'_> {
        Box::pin(async move {
            self.background.stop().await;
            let connected = self
                .current
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(connected) = connected {
                close_bounded(&connected.connection, 200, "vodbridge shutting down").await;
            }
            Ok(())
        })
    }
}
