//! The Kafka sink: delivery-report-confirmed produces, CloudEvents headers, one classification of
//! failures, a metadata health probe, flush on close.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, Instant},
};

use rdkafka::{
    client::ClientContext,
    config::{ClientConfig, RDKafkaLogLevel},
    error::{KafkaError, RDKafkaErrorCode},
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord, Producer},
    util::Timeout,
};
use vodbridge_core::{
    Background, FailureReason, HeaderStyle, Message, PublishFuture, Sink, SinkError,
};

use crate::{
    config::KafkaSinkConfig,
    error::{classify, Error, Result},
};

/// A Kafka sink.
pub struct KafkaSink {
    structured: bool,
    /// Shared with the health probe.
    state: Arc<State>,
}

/// The producers' client context: librdkafka's errors and warnings go to the log under the
/// sink's name (rdkafka's default sends them to the `log` crate, which the bridge does not
/// read), and the last error that explains an unreachable cluster (authentication, TLS) is
/// kept for `/readyz`.
#[derive(Clone)]
struct SinkContext {
    name: Arc<str>,
    /// The last error that says why the cluster cannot be used; cleared when it answers.
    cause: Arc<Mutex<Option<String>>>,
}

impl SinkContext {
    fn cause(&self) -> Option<String> {
        self.cause
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_cause(&self, cause: Option<String>) {
        *self.cause.lock().unwrap_or_else(PoisonError::into_inner) = cause;
    }
}

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => {
                tracing::warn!(sink = %self.name, facility = fac, "librdkafka: {log_message}");
            }
            _ => tracing::debug!(sink = %self.name, facility = fac, "librdkafka: {log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Errors a configuration change fixes, not a wait: shown on /readyz until the cluster
        // answers again.
        let lasting = matches!(
            error.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::Authentication
                    | RDKafkaErrorCode::SaslAuthenticationFailed
                    | RDKafkaErrorCode::SSL
                    | RDKafkaErrorCode::UnsupportedSASLMechanism
                    | RDKafkaErrorCode::IllegalSASLState
                    | RDKafkaErrorCode::ClusterAuthorizationFailed
            )
        );
        if lasting {
            self.set_cause(Some(reason.to_owned()));
        }
        tracing::warn!(sink = %self.name, error = %error, "Kafka client error: {reason}");
    }
}

/// The producer and what decides when to replace it.
struct State {
    name: String,
    /// The producer; replaced after a fatal error or a stall (librdkafka requires a new
    /// instance).
    producer: std::sync::RwLock<FutureProducer<SinkContext>>,
    /// How to build a producer again.
    client: ClientConfig,
    /// Every producer's context (one, shared by the replacements).
    context: SinkContext,
    /// Last result of the metadata probe.
    healthy: AtomicBool,
    /// The health probe runs here; `close()` stops it and waits for it.
    background: Background,
    /// Time base of the two marks below.
    started: Instant,
    /// Milliseconds since `started` of the last delivery report (or of creation).
    last_delivery_ms: AtomicU64,
    /// Milliseconds since `started` of the last producer replacement.
    last_replaced_ms: AtomicU64,
    /// Producers replaced so far.
    replaced: AtomicU64,
    /// No delivery for this long while the cluster answers metadata requests and publishes
    /// fail: the producer is stuck (`stuck_timeout_ms`).
    stall_after: Duration,
}

impl KafkaSink {
    /// Creates the producer (`acks=all`, `enable.idempotence=true`, the configured
    /// `message.timeout.ms`, then the pass-through properties) and starts the health probe.
    /// librdkafka connects in the background: a cluster that is down is not an error here.
    ///
    /// The probe runs under `background` (see [`Background`]); must be called inside a Tokio
    /// runtime.
    ///
    /// # Errors
    ///
    /// A property librdkafka rejects, or an unreadable secret file.
    pub fn start(name: &str, config: KafkaSinkConfig, background: Background) -> Result<Self> {
        let client = config.check(name)?.client;
        let context = SinkContext {
            name: name.into(),
            cause: Arc::default(),
        };
        let producer: FutureProducer<SinkContext> = client
            .create_with_context(context.clone())
            .map_err(Error::Producer)?;
        let state = Arc::new(State {
            name: name.to_owned(),
            producer: std::sync::RwLock::new(producer),
            client,
            context,
            healthy: AtomicBool::new(false),
            background,
            started: Instant::now(),
            last_delivery_ms: AtomicU64::new(0),
            last_replaced_ms: AtomicU64::new(0),
            replaced: AtomicU64::new(0),
            stall_after: Duration::from_millis(config.stuck_timeout_ms),
        });
        spawn_probe(Arc::clone(&state));
        Ok(Self {
            structured: config.structured,
            state,
        })
    }
}

impl State {
    fn producer(&self) -> FutureProducer<SinkContext> {
        self.producer
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn delivered(&self) {
        self.last_delivery_ms
            .store(self.now_ms(), Ordering::Relaxed);
    }

    /// After a failed publish: replace the producer when librdkafka reports a fatal error (e.g.
    /// the idempotent producer's state was lost by the cluster), or when it is stuck: the
    /// cluster answers metadata requests, yet publishes fail and nothing was delivered for
    /// `stall_after`, whatever the error. Seen after a silent partition, where the reconnected
    /// idempotent producer got `ProducerFenced` for as long as it lived, and when a broker
    /// restarts without the producer's state and librdkafka keeps retrying the old producer id
    /// forever. A new producer gets a new producer id. A per-message rejection (too large, not
    /// authorized) says nothing about the producer and never replaces it. At most one
    /// replacement per `stall_after`.
    fn recover(&self, failed: &FutureProducer<SinkContext>, error: &KafkaError) {
        let why = if let Some((code, reason)) = failed.client().fatal_error() {
            format!("fatal error {code:?}: {reason}")
        } else {
            let now = self.now_ms();
            let stall = u64::try_from(self.stall_after.as_millis()).unwrap_or(u64::MAX);
            let silent = now.saturating_sub(self.last_delivery_ms.load(Ordering::Relaxed));
            let since_replaced = now.saturating_sub(self.last_replaced_ms.load(Ordering::Relaxed));
            if !(classify(error).is_retryable()
                && self.healthy.load(Ordering::Relaxed)
                && silent >= stall
                && since_replaced >= stall)
            {
                return;
            }
            format!(
                "no delivery for {silent} ms while the cluster is reachable; last error: {error}"
            )
        };
        tracing::error!(sink = %self.name, why = %why, "Kafka producer is stuck; creating a new one.");
        match self
            .client
            .create_with_context::<_, FutureProducer<SinkContext>>(self.context.clone())
        {
            Ok(fresh) => {
                let now = self.now_ms();
                self.replaced.fetch_add(1, Ordering::Relaxed);
                self.last_replaced_ms.store(now, Ordering::Relaxed);
                // Measure the new producer's silence from now.
                self.last_delivery_ms.store(now, Ordering::Relaxed);
                let old = std::mem::replace(
                    &mut *self
                        .producer
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner),
                    fresh,
                );
                // Dropping a producer purges and joins its thread: not on a runtime worker.
                // Its in-flight messages fail (retryable) or arrive (a duplicate at worst).
                tokio::task::spawn_blocking(move || drop(old));
            }
            Err(error) => {
                tracing::error!(sink = %self.name, error = %error, "Cannot create a new Kafka producer.")
            }
        }
    }
}

/// Fetches cluster metadata every few seconds on a blocking thread, through the current
/// producer; a reachable cluster is a healthy sink.
fn spawn_probe(state: Arc<State>) {
    let background = state.background.clone();
    background.spawn(async move {
        loop {
            let probe = state.producer();
            let reachable = tokio::task::spawn_blocking(move || {
                probe
                    .client()
                    .fetch_metadata(None, Timeout::After(Duration::from_secs(2)))
                    .is_ok()
            })
            .await
            .unwrap_or(false);
            if reachable {
                state.context.set_cause(None);
            }
            if state.healthy.swap(reachable, Ordering::Relaxed) != reachable {
                if reachable {
                    tracing::info!(sink = %state.name, "Kafka cluster reachable.");
                } else {
                    tracing::warn!(sink = %state.name, "Kafka cluster unreachable.");
                }
            }
            tokio::time::sleep(Duration::from_millis(if reachable { 3000 } else { 500 })).await;
        }
    });
}

impl Sink for KafkaSink {
    fn name(&self) -> &str {
        &self.state.name
    }

    fn kind(&self) -> &'static str {
        "kafka"
    }

    fn publish<'a>(&'a self, message: &'a Message) -> PublishFuture<'a> {
        Box::pin(async move {
            let envelope = &message.envelope;
            let topic = message.destination.as_str();
            let dead_letter = message.dead_letter.as_ref();
            let mut headers = OwnedHeaders::new();
            let structured;
            let payload: &[u8] = if self.structured {
                headers = headers.insert(Header {
                    key: "content-type",
                    value: Some("application/cloudevents+json"),
                });
                structured = envelope.to_structured_json(dead_letter);
                &structured
            } else {
                for (name, value) in message.wire_attributes() {
                    headers = headers.insert(Header {
                        key: &HeaderStyle::Kafka.header_name(name),
                        value: Some(value.as_ref()),
                    });
                }
                headers = headers.insert(Header {
                    key: "content-type",
                    value: Some(envelope.data_content_type()),
                });
                &envelope.data
            };
            // W3C Trace Context's own header, which OpenTelemetry's propagators read, beside the
            // binding's `ce_traceparent`.
            let traceparent = envelope.traceparent.map(|t| t.to_string());
            if let Some(traceparent) = &traceparent {
                headers = headers.insert(Header {
                    key: "traceparent",
                    value: Some(traceparent.as_str()),
                });
            }
            let record = FutureRecord::to(topic)
                .key(envelope.partition_key.as_bytes())
                .payload(payload)
                .headers(headers);
            // Queue-full is answered at once (retryable) rather than waited on: the caller's
            // deadline, not librdkafka's queue, bounds the wait.
            let producer = self.state.producer();
            match producer.send(record, Timeout::After(Duration::ZERO)).await {
                Ok(_) => {
                    self.state.delivered();
                    Ok(())
                }
                Err((error, _)) => {
                    self.state.recover(&producer, &error);
                    Err(classify(&error))
                }
            }
        })
    }

    fn is_healthy(&self) -> bool {
        self.state.healthy.load(Ordering::Relaxed)
    }

    fn down_because(&self) -> Option<String> {
        self.state.context.cause()
    }

    fn reconnects(&self) -> u64 {
        self.state.replaced.load(Ordering::Relaxed)
    }

    fn close(&self) -> PublishFuture<'_> {
        Box::pin(async move {
            // Stop the probe and wait for it (a metadata fetch in flight ends within 2 s),
            // then flush what librdkafka still holds.
            self.state.background.stop().await;
            let producer = self.state.producer();
            tokio::task::spawn_blocking(move || {
                producer.flush(Timeout::After(Duration::from_secs(10)))
            })
            .await
            .map_err(|e| SinkError::retryable(FailureReason::Other, e.to_string()))?
            .map_err(|e| classify(&e))
        })
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::error::RDKafkaErrorCode;

    use super::*;

    #[test]
    fn classification_and_topics() {
        let e = |code| classify(&KafkaError::MessageProduction(code));
        assert_eq!(
            e(RDKafkaErrorCode::MessageSizeTooLarge).reason(),
            FailureReason::TooLarge
        );
        assert!(!e(RDKafkaErrorCode::MessageSizeTooLarge).is_retryable());
        assert!(e(RDKafkaErrorCode::QueueFull).is_retryable());
        assert!(e(RDKafkaErrorCode::MessageTimedOut).is_retryable());
        assert!(e(RDKafkaErrorCode::NotEnoughReplicas).is_retryable());
        assert!(!e(RDKafkaErrorCode::TopicAuthorizationFailed).is_retryable());
    }
}
