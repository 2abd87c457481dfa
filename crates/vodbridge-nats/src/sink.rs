//! The JetStream sink: binary or structured CloudEvents, PubAck-confirmed publishes, one place
//! that classifies failures.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use async_nats::{
    connection::State,
    header::HeaderMap,
    jetstream::{self, context::PublishErrorKind, message::PublishMessage, stream},
    ConnectOptions,
};
use bytes::Bytes;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use vodbridge_core::{
    DeadLetterInfo, FailureReason, HeaderStyle, Message, PublishFuture, Sink, SinkError,
};

use crate::{
    config::{Checked, NatsSinkConfig, StorageKind},
    error::{classify, Error, Result},
};

/// A JetStream sink.
pub struct NatsSink {
    name: String,
    config: NatsSinkConfig,
    client: async_nats::Client,
    context: jetstream::Context,
    /// Set once the stream was found (or created) on the server.
    stream_ready: Arc<AtomicBool>,
    /// Set while a stream check started by a `StreamNotFound` answer runs.
    rechecking: Arc<AtomicBool>,
    /// Cancelled by `close()`: the stream checks stop.
    shutdown: CancellationToken,
    /// The stream checks, awaited by `close()`.
    tasks: TaskTracker,
}

impl NatsSink {
    /// Creates the client (it connects and reconnects in the background, so the bridge starts
    /// while NATS is down and reports the sink unhealthy) and checks or creates the stream
    /// once connected.
    ///
    /// # Errors
    ///
    /// An unreadable credentials, token or certificate file, or an invalid configuration.
    pub async fn connect(name: &str, config: NatsSinkConfig) -> Result<Self> {
        let Checked { addrs, token } = config.check()?;
        let mut options = ConnectOptions::new()
            .name(format!("vodbridge/{name}"))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(5))
            .require_tls(config.tls_required);
        if let Some(path) = &config.credentials_file {
            options = options
                .credentials_file(path)
                .await
                .map_err(|source| Error::File {
                    path: path.clone(),
                    source,
                })?;
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
        let client = options
            .connect(addrs)
            .await
            .map_err(|e| Error::Connect(e.to_string()))?;
        let mut context = jetstream::new(client.clone());
        context.set_timeout(Duration::from_millis(config.ack_timeout_ms));
        let stream_ready = Arc::new(AtomicBool::new(false));
        let (shutdown, tasks) = (CancellationToken::new(), TaskTracker::new());
        let check = ensure_stream(
            name.to_owned(),
            context.clone(),
            config.clone(),
            Arc::clone(&stream_ready),
        );
        tasks.spawn(shutdown.clone().run_until_cancelled_owned(check));
        Ok(Self {
            name: name.to_owned(),
            config,
            client,
            context,
            stream_ready,
            rechecking: Arc::new(AtomicBool::new(false)),
            shutdown,
            tasks,
        })
    }

    /// After a `StreamNotFound` answer with `create_stream` on: check the stream again and
    /// create it if it is gone (deleted while the bridge ran), one check at a time. The
    /// publish itself fails as unroutable; the pipeline's retry finds the new stream.
    fn recheck_stream(&self) {
        if !self.config.create_stream || self.rechecking.swap(true, Ordering::AcqRel) {
            return;
        }
        let (name, context, config, ready, rechecking) = (
            self.name.clone(),
            self.context.clone(),
            self.config.clone(),
            Arc::clone(&self.stream_ready),
            Arc::clone(&self.rechecking),
        );
        let shutdown = self.shutdown.clone();
        self.tasks.spawn(async move {
            shutdown
                .run_until_cancelled(ensure_stream(name, context, config, ready))
                .await;
            rechecking.store(false, Ordering::Release);
        });
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

/// `vod.{event_type}` with the event type reduced to subject-safe characters.
fn default_subject(event_type: &str) -> String {
    let token: String = event_type
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("vod.{token}")
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
            let dead_letter_attributes = dead_letter.map(DeadLetterInfo::attributes);
            for (name, value) in envelope.attributes().into_iter().chain(
                dead_letter_attributes
                    .into_iter()
                    .flatten()
                    .map(|(n, v)| (n, v.into())),
            ) {
                headers.insert(HeaderStyle::Nats.header_name(name).as_ref(), value.as_ref());
            }
            headers.insert("content-type", envelope.data_content_type());
            envelope.data.clone()
        };
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
            let subject = if message.destination.is_empty() {
                default_subject(&message.envelope.event_type)
            } else {
                message.destination.clone()
            };
            let publish = self.message(message)?;
            let ack = self
                .context
                .send_publish(subject, publish)
                .await
                .map_err(|e| {
                    if e.kind() == PublishErrorKind::StreamNotFound {
                        self.recheck_stream();
                    }
                    classify(&e)
                })?;
            ack.await.map(|_| ()).map_err(|e| {
                if e.kind() == PublishErrorKind::StreamNotFound {
                    self.recheck_stream();
                }
                classify(&e)
            })
        })
    }

    fn is_healthy(&self) -> bool {
        self.client.connection_state() == State::Connected
            && self.stream_ready.load(Ordering::Relaxed)
    }

    fn close(&self) -> PublishFuture<'_> {
        Box::pin(async move {
            // Stop the stream checks and wait for them, then flush what the client buffered.
            self.shutdown.cancel();
            self.tasks.close();
            self.tasks.wait().await;
            self.client
                .flush()
                .await
                .map_err(|e| SinkError::retryable(FailureReason::Unavailable, e.to_string()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_subjects_are_safe() {
        assert_eq!(default_subject("NewFileUpload"), "vod.NewFileUpload");
        assert_eq!(default_subject("a.b *>"), "vod.a_b___");
    }
}
