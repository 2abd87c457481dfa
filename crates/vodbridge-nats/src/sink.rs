//! The JetStream sink: binary or structured CloudEvents, PubAck-confirmed publishes, one place
//! that classifies failures.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, OnceLock,
    },
    time::Duration,
};

use async_nats::{
    connection::State,
    header::HeaderMap,
    jetstream::{self, context::PublishErrorKind, message::PublishMessage, stream},
    ConnectOptions, Event,
};
use bytes::Bytes;
use vodbridge_core::{
    Background, FailureReason, HeaderStyle, Message, PublishFuture, Sink, SinkError, StallWatch,
};

use crate::{
    config::{NatsSinkConfig, StorageKind, Validated},
    error::{classify, Error, Result},
};

/// The longest wait for the server when flushing on close.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// A JetStream sink.
pub struct NatsSink {
    name: String,
    config: NatsSinkConfig,
    /// Set by the connect task as soon as the client exists (it then connects and reconnects
    /// by itself).
    client: Arc<OnceLock<Client>>,
    /// Set once the stream was found (or created) on the server.
    stream_ready: Arc<AtomicBool>,
    /// Set while a stream check started by a `StreamNotFound` answer runs.
    rechecking: Arc<AtomicBool>,
    /// Publishes waiting with no answer from the server: a stalled connection (a silent
    /// network partition) is dropped before the PINGs notice.
    stall: StallWatch,
    /// Reconnects of the client (a loss it noticed, or a stall).
    reconnects: Arc<AtomicU64>,
    /// The connect task and stream checks run here; `close()` stops them and waits for them.
    background: Background,
}

/// The client and its JetStream context.
struct Client {
    client: async_nats::Client,
    context: jetstream::Context,
}

impl NatsSink {
    /// Reads the credentials, then starts a task that creates the client (it connects and
    /// reconnects in the background, so the bridge starts while NATS is down and reports the
    /// sink unhealthy) and checks or creates the stream once connected. Returns at once; the
    /// tasks run under `background` (see [`Background`]); must be called inside a Tokio runtime.
    ///
    /// # Errors
    ///
    /// An unreadable credentials, token or certificate file, or an invalid configuration.
    pub fn start(name: &str, config: NatsSinkConfig, background: Background) -> Result<Self> {
        let (addrs, options) = connect_options(name, &config)?;
        let reconnects = Arc::new(AtomicU64::new(0));
        let options = options
            .retry_on_initial_connect()
            .max_reconnects(None)
            .event_callback({
                let (name, reconnects, connected_before) = (
                    name.to_owned(),
                    Arc::clone(&reconnects),
                    Arc::new(AtomicBool::new(false)),
                );
                move |event| {
                    let (name, reconnects, connected_before) = (
                        name.clone(),
                        Arc::clone(&reconnects),
                        Arc::clone(&connected_before),
                    );
                    async move {
                        match event {
                            Event::Connected if connected_before.swap(true, Ordering::Relaxed) => {
                                reconnects.fetch_add(1, Ordering::Relaxed);
                                tracing::info!(sink = %name, "Reconnected to NATS.");
                            }
                            Event::Disconnected => {
                                tracing::warn!(sink = %name, "NATS connection lost; reconnecting.");
                            }
                            _ => {}
                        }
                    }
                }
            });
        let sink = Self {
            name: name.to_owned(),
            stall: StallWatch::new(Duration::from_millis(config.stall_timeout_ms)),
            config,
            client: Arc::new(OnceLock::new()),
            stream_ready: Arc::new(AtomicBool::new(false)),
            rechecking: Arc::new(AtomicBool::new(false)),
            reconnects,
            background,
        };
        let (name, config, slot, ready) = (
            sink.name.clone(),
            sink.config.clone(),
            Arc::clone(&sink.client),
            Arc::clone(&sink.stream_ready),
        );
        sink.background.spawn(async move {
            // With `retry_on_initial_connect` this only spawns the client's own tasks.
            let client = match options.connect(addrs).await {
                Ok(client) => client,
                Err(error) => {
                    tracing::error!(sink = %name, error = %error, "Cannot create the NATS client.");
                    return;
                }
            };
            let mut context = jetstream::new(client.clone());
            context.set_timeout(Duration::from_millis(config.ack_timeout_ms));
            let context = slot
                .get_or_init(|| Client { client, context })
                .context
                .clone();
            ensure_stream(name, context, config, ready).await;
        });
        sink.background.spawn(watch_stalls(
            sink.name.clone(),
            Arc::clone(&sink.client),
            sink.stall.clone(),
        ));
        Ok(sink)
    }

    /// After a `StreamNotFound` answer with `create_stream` on: check the stream again and
    /// create it if it is gone (deleted while the bridge ran), one check at a time. The
    /// publish itself fails as unroutable; the pipeline's retry finds the new stream.
    fn recheck_stream(&self, context: &jetstream::Context) {
        if !self.config.create_stream || self.rechecking.swap(true, Ordering::AcqRel) {
            return;
        }
        let (name, context, config, ready, rechecking) = (
            self.name.clone(),
            context.clone(),
            self.config.clone(),
            Arc::clone(&self.stream_ready),
            Arc::clone(&self.rechecking),
        );
        self.background.spawn(async move {
            ensure_stream(name, context, config, ready).await;
            rechecking.store(false, Ordering::Release);
        });
    }
}

/// Drops the client's connection when publishes stalled (see [`StallWatch`]); the client then
/// reconnects by itself, and only a new connection gets through a silent partition.
async fn watch_stalls(name: String, client: Arc<OnceLock<Client>>, stall: StallWatch) {
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (Some(client), Some(silent)) = (client.get(), stall.stalled()) else {
            continue;
        };
        tracing::warn!(sink = %name, silent_ms = silent.as_millis() as u64, "NATS publishes got no answer (stall_timeout_ms); dropping the connection.");
        stall.reset();
        if let Err(error) = client.client.force_reconnect().await {
            tracing::warn!(sink = %name, error = %error, "Cannot make the NATS client reconnect.");
        }
    }
}

/// Finds (or creates) the stream, retrying until the server answers.
async fn ensure_stream(
    name: String,
    context: jetstream::Context,
    config: NatsSinkConfig,
    ready: Arc<AtomicBool>,
) {
    let mut delay = Duration::from_millis(100);
    loop {
        let result = if config.create_stream {
            if context.get_stream(&config.stream).await.is_err() {
                tracing::warn!(sink = %name, stream = %config.stream, "NATS stream not found; creating it.");
            }
            context
                .get_or_create_stream(stream::Config {
                    name: config.stream.clone(),
                    subjects: config.stream_subjects.clone(),
                    duplicate_window: Duration::from_secs(config.duplicate_window_secs),
                    storage: match config.storage {
                        StorageKind::File => stream::StorageType::File,
                        StorageKind::Memory => stream::StorageType::Memory,
                    },
                    num_replicas: config.replicas,
                    ..stream::Config::default()
                })
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        } else {
            context
                .get_stream(&config.stream)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        match result {
            Ok(()) => {
                if !ready.swap(true, Ordering::Relaxed) {
                    tracing::info!(sink = %name, stream = %config.stream, "NATS stream ready.");
                }
                return;
            }
            Err(error) => {
                tracing::warn!(sink = %name, stream = %config.stream, error = %error, "NATS stream not ready; retrying.");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// The server addresses and the client options of a configuration: name, credentials, token,
/// TLS (the sink adds its reconnect policy).
pub(crate) fn connect_options(
    name: &str,
    config: &NatsSinkConfig,
) -> Result<(Vec<async_nats::ServerAddr>, ConnectOptions)> {
    let Validated { addrs, token } = config.check()?;
    let mut options = ConnectOptions::new()
        .name(format!("vodbridge/{name}"))
        .connection_timeout(Duration::from_secs(5))
        .ping_interval(Duration::from_millis(config.ping_interval_ms))
        .require_tls(config.tls_required);
    if let Some(path) = &config.credentials_file {
        let file_error = |source| Error::File {
            path: path.clone(),
            source,
        };
        let creds = std::fs::read_to_string(path).map_err(file_error)?;
        options = options.credentials(&creds).map_err(file_error)?;
    }
    if let Some(token) = token {
        options = options.token(token);
    }
    if let Some(path) = &config.root_certificates {
        options = options.add_root_certificates(path.clone());
    }
    if let (Some(cert), Some(key)) = (&config.client_cert_file, &config.client_key_file) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    Ok((addrs, options))
}

impl NatsSink {
    fn message(&self, message: &Message) -> std::result::Result<PublishMessage, SinkError> {
        let envelope = &message.envelope;
        let mut headers = HeaderMap::new();
        let dead_letter = message.dead_letter.as_ref();
        let payload = if self.config.structured {
            headers.insert("content-type", "application/cloudevents+json");
            Bytes::from(envelope.to_structured_json(dead_letter))
        } else {
            for (name, value) in message.wire_attributes() {
                headers.insert(HeaderStyle::Nats.header_name(name).as_ref(), value.as_ref());
            }
            headers.insert("content-type", envelope.data_content_type());
            envelope.data.clone()
        };
        // W3C Trace Context's own header, which OpenTelemetry's propagators read, beside the
        // binding's `ce-traceparent`.
        if let Some(traceparent) = &envelope.traceparent {
            headers.insert("traceparent", traceparent.to_string().as_str());
        }
        // A dead-letter copy must not be dropped as a duplicate of the original.
        let msg_id = if message.dead_letter.is_some() {
            format!("{}-dead", envelope.id)
        } else {
            envelope.id.to_string()
        };
        Ok(PublishMessage::build()
            .payload(payload)
            .headers(headers)
            .message_id(msg_id))
    }
}

impl Sink for NatsSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "nats"
    }

    fn publish<'a>(&'a self, message: &'a Message) -> PublishFuture<'a> {
        Box::pin(async move {
            let subject = message.destination.clone();
            let Some(Client { context, .. }) = self.client.get() else {
                return Err(SinkError::retryable(
                    FailureReason::Unavailable,
                    "the NATS client is starting",
                ));
            };
            let publish = self.message(message)?;
            let pending = self.stall.begin();
            let failed = |e: jetstream::context::PublishError| {
                match e.kind() {
                    PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => {}
                    PublishErrorKind::StreamNotFound => {
                        pending.answered();
                        self.recheck_stream(context);
                    }
                    _ => pending.answered(),
                }
                classify(&e)
            };
            let ack = context
                .send_publish(subject, publish)
                .await
                .map_err(&failed)?;
            let acked = ack.await.map_err(&failed)?;
            pending.answered();
            drop(acked);
            Ok(())
        })
    }

    fn is_healthy(&self) -> bool {
        self.client
            .get()
            .is_some_and(|c| c.client.connection_state() == State::Connected)
            && self.stream_ready.load(Ordering::Relaxed)
    }

    fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    fn close(&self) -> PublishFuture<'_> {
        Box::pin(async move {
            // Stop the stream checks and wait for them, then flush what the client buffered.
            self.background.stop().await;
            // A flush to a server that does not answer (a silent partition) must not hold the
            // shutdown: what it could not flush was never acknowledged, so it comes back.
            let Some(c) = self.client.get() else {
                return Ok(());
            };
            match tokio::time::timeout(FLUSH_TIMEOUT, c.client.flush()).await {
                Ok(flushed) => flushed
                    .map_err(|e| SinkError::retryable(FailureReason::Unavailable, e.to_string())),
                Err(_) => Err(SinkError::retryable(
                    FailureReason::Timeout,
                    format!("no flush within {} ms", FLUSH_TIMEOUT.as_millis()),
                )),
            }
        })
    }
}
