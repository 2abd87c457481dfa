//! The JetStream sink: binary or structured CloudEvents, PubAck-confirmed publishes, one place
//! that classifies failures.

use std::{
    fmt,
    path::PathBuf,
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
use serde::{Deserialize, Serialize};
use vodbridge_core::{
    redact_url, FailureReason, HeaderStyle, Message, PublishFuture, Sink, SinkError,
};

use crate::error::{Error, Result};

/// Stream storage when the sink creates the stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// Survives server restarts.
    #[default]
    File,
    /// Lost on restart.
    Memory,
}

/// The `type = "nats"` sink section.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSinkConfig {
    /// Server URL(s), comma-separated: `nats://host:4222`, `tls://host:4222`.
    pub url: String,
    /// The JetStream stream that must capture the subjects published to.
    pub stream: String,
    /// Create the stream if it does not exist (else it must exist: checked at start).
    #[serde(default)]
    pub create_stream: bool,
    /// Subjects of a created stream.
    #[serde(default = "default_subjects")]
    pub stream_subjects: Vec<String>,
    /// Duplicate window of a created stream: redeliveries inside it are stored once.
    #[serde(default = "default_duplicate_window")]
    pub duplicate_window_secs: u64,
    /// Storage of a created stream.
    #[serde(default)]
    pub storage: StorageKind,
    /// Replicas of a created stream.
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// Longest wait for a PubAck (the pipeline's deadline still applies).
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout_ms: u64,
    /// CloudEvents structured mode (the whole envelope as JSON body) instead of binary mode.
    #[serde(default)]
    pub structured: bool,
    /// NATS credentials file (JWT + NKey seed).
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// File holding a token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Require TLS.
    #[serde(default)]
    pub tls_required: bool,
    /// Extra root certificates (PEM) for TLS: a server certificate signed by a private CA.
    #[serde(default)]
    pub root_certificates: Option<PathBuf>,
    /// Client certificate (PEM) for servers that verify clients (`verify: true`); needs
    /// `client_key_file`.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM, unencrypted).
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

impl fmt::Debug for NatsSinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsSinkConfig")
            .field("url", &redact_url(&self.url))
            .field("stream", &self.stream)
            .field("create_stream", &self.create_stream)
            .field("stream_subjects", &self.stream_subjects)
            .field("duplicate_window_secs", &self.duplicate_window_secs)
            .field("storage", &self.storage)
            .field("replicas", &self.replicas)
            .field("ack_timeout_ms", &self.ack_timeout_ms)
            .field("structured", &self.structured)
            .field("credentials_file", &self.credentials_file)
            .field("token_file", &self.token_file)
            .field("tls_required", &self.tls_required)
            .field("root_certificates", &self.root_certificates)
            .field("client_cert_file", &self.client_cert_file)
            .field("client_key_file", &self.client_key_file)
            .finish()
    }
}

impl NatsSinkConfig {
    /// The server URL(s) with any password or token redacted, for display.
    #[must_use]
    pub fn display_url(&self) -> String {
        redact_url(&self.url)
    }
}

fn default_subjects() -> Vec<String> {
    vec!["vod.>".to_owned()]
}
const fn default_duplicate_window() -> u64 {
    120
}
const fn default_replicas() -> usize {
    1
}
const fn default_ack_timeout() -> u64 {
    5000
}

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
        if config.stream.is_empty() || config.stream.contains(['.', ' ', '*', '>']) {
            return Err(Error::Config(format!(
                "stream name {:?} must be non-empty without . * > or spaces",
                config.stream
            )));
        }
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
        if let Some(path) = &config.token_file {
            let token = std::fs::read_to_string(path).map_err(|source| Error::File {
                path: path.clone(),
                source,
            })?;
            options = options.token(token.trim().to_owned());
        }
        // async-nats reads certificate files only when it connects, in the background: check
        // them here so a wrong path is a start-up error, not an endless reconnect loop.
        let readable = |path: &PathBuf| {
            std::fs::metadata(path)
                .and_then(|m| {
                    if m.is_file() {
                        Ok(())
                    } else {
                        Err(std::io::Error::other("not a file"))
                    }
                })
                .map_err(|source| Error::File {
                    path: path.clone(),
                    source,
                })
        };
        if let Some(path) = &config.root_certificates {
            readable(path)?;
            options = options.add_root_certificates(path.clone());
        }
        match (&config.client_cert_file, &config.client_key_file) {
            (Some(cert), Some(key)) => {
                readable(cert)?;
                readable(key)?;
                options = options.add_client_certificate(cert.clone(), key.clone());
            }
            (None, None) => {}
            _ => {
                return Err(Error::Config(
                    "client_cert_file and client_key_file go together".into(),
                ))
            }
        }
        let urls: Vec<&str> = config
            .url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        let addrs: Vec<async_nats::ServerAddr> = urls
            .iter()
            .map(|u| {
                u.parse()
                    .map_err(|e| Error::Config(format!("url {u:?}: {e}")))
            })
            .collect::<Result<_>>()?;
        let client = options
            .connect(addrs)
            .await
            .map_err(|e| Error::Connect(e.to_string()))?;
        let mut context = jetstream::new(client.clone());
        context.set_timeout(Duration::from_millis(config.ack_timeout_ms.max(100)));
        let stream_ready = Arc::new(AtomicBool::new(false));
        tokio::spawn(ensure_stream(
            name.to_owned(),
            context.clone(),
            config.clone(),
            Arc::clone(&stream_ready),
        ));
        Ok(Self {
            name: name.to_owned(),
            config,
            client,
            context,
            stream_ready,
            rechecking: Arc::new(AtomicBool::new(false)),
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
        tokio::spawn(async move {
            ensure_stream(name, context, config, ready).await;
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

/// The one place a JetStream failure becomes retryable or rejected.
#[must_use]
pub fn classify(kind: PublishErrorKind, detail: String) -> SinkError {
    match kind {
        PublishErrorKind::TimedOut => SinkError::retryable(FailureReason::Timeout, detail),
        PublishErrorKind::BrokenPipe => SinkError::retryable(FailureReason::Unavailable, detail),
        PublishErrorKind::MaxAckPending => SinkError::retryable(FailureReason::Saturated, detail),
        PublishErrorKind::StreamNotFound => SinkError::rejected(FailureReason::Unroutable, detail),
        PublishErrorKind::MaxPayloadExceeded => {
            SinkError::rejected(FailureReason::TooLarge, detail)
        }
        PublishErrorKind::WrongLastMessageId | PublishErrorKind::WrongLastSequence => {
            SinkError::rejected(FailureReason::Invalid, detail)
        }
        // Unknown failures are retried: a redelivery is cheap, a wrong dead letter is not.
        PublishErrorKind::Other => SinkError::retryable(FailureReason::Other, detail),
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
        let dead_letter = message
            .dead_letter
            .as_ref()
            .map(|d| (d.reason.as_str(), d.detail.as_str()));
        let payload = if self.config.structured {
            headers.insert("content-type", "application/cloudevents+json");
            Bytes::from(envelope.to_structured_json(dead_letter))
        } else {
            for (name, value) in envelope.attributes() {
                headers.insert(HeaderStyle::Nats.header_name(name).as_ref(), value.as_ref());
            }
            if let Some((reason, detail)) = dead_letter {
                headers.insert("ce-deadletterreason", reason);
                headers.insert("ce-deadletterdetail", detail);
            }
            headers.insert("content-type", envelope.data_content_type());
            envelope.data.clone()
        };
        if let Some(info) = &message.dead_letter {
            headers.insert("ce-deadlettersink", info.failed_sink.as_str());
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
                    classify(e.kind(), e.to_string())
                })?;
            ack.await.map(|_| ()).map_err(|e| {
                if e.kind() == PublishErrorKind::StreamNotFound {
                    self.recheck_stream();
                }
                classify(e.kind(), e.to_string())
            })
        })
    }

    fn is_healthy(&self) -> bool {
        self.client.connection_state() == State::Connected
            && self.stream_ready.load(Ordering::Relaxed)
    }

    fn close(&self) -> PublishFuture<'_> {
        Box::pin(async move {
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
    fn classification_is_exhaustive_and_conservative() {
        let d = || "x".to_owned();
        assert!(classify(PublishErrorKind::TimedOut, d()).is_retryable());
        assert!(classify(PublishErrorKind::BrokenPipe, d()).is_retryable());
        assert!(classify(PublishErrorKind::Other, d()).is_retryable());
        assert_eq!(
            classify(PublishErrorKind::StreamNotFound, d()).reason(),
            FailureReason::Unroutable
        );
        assert!(!classify(PublishErrorKind::MaxPayloadExceeded, d()).is_retryable());
    }

    #[test]
    fn default_subjects_are_safe() {
        assert_eq!(default_subject("NewFileUpload"), "vod.NewFileUpload");
        assert_eq!(default_subject("a.b *>"), "vod.a_b___");
    }
}
