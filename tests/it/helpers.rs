//! Shared test helpers of the `it` and `reliability` suites: start the real app on port 0,
//! scripted sinks, fixture bodies, the emulator, readers of JetStream and RabbitMQ.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use lapin::types::{AMQPValue, FieldTable};
use tokio::{
    sync::{oneshot, Notify},
    task::JoinHandle,
};
use vodbridge::{
    config::{Config, Settings},
    App,
};
use vodbridge_core::{FailureReason, Message, PublishFuture, Sink, SinkError};
use vodbridge_testkit::{rabbitmq_client, RabbitMq};

/// A sample body from vod-api.md, by fixture name.
pub(crate) fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/crates/vodbridge-tencent/tests/fixtures/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Validated settings from TOML, listening on a free loopback port.
pub(crate) fn settings(toml: &str) -> Settings {
    let mut config = Config::from_toml(toml).expect("test config parses");
    config.server.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    Settings::from_config(config).expect("test config is valid")
}

/// A running app.
pub(crate) struct TestApp {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// Resolves the app's shutdown future.
    shutdown: Option<oneshot::Sender<()>>,
    /// The serving task.
    task: Option<JoinHandle<vodbridge::Result<()>>>,
}

impl TestApp {
    /// Starts the app with scripted sinks replacing configured sinks of the same name.
    pub(crate) async fn start(settings: Settings, overrides: Vec<Arc<dyn Sink>>) -> Self {
        let app = App::build_with_sinks(settings, overrides)
            .await
            .expect("app builds");
        let addr = app.local_addr().expect("bound");
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until(async move {
            let _ = rx.await;
        }));
        Self {
            addr,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// `http://addr{path}`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POSTs a body to a callback path.
    pub(crate) async fn post(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Response {
        reqwest::Client::new()
            .post(self.url(path))
            .body(body)
            .send()
            .await
            .expect("request completes")
    }

    /// GETs a path and returns status and body.
    pub(crate) async fn get(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(self.url(path))
            .await
            .expect("request completes");
        (
            response.status().as_u16(),
            response.text().await.unwrap_or_default(),
        )
    }

    /// Waits until `/readyz` answers 200 (broker sinks connect in the background).
    pub(crate) async fn wait_ready(&self, timeout: std::time::Duration) {
        let started = std::time::Instant::now();
        loop {
            let (status, reason) = self.get("/readyz").await;
            if status == 200 {
                break;
            }
            assert!(
                started.elapsed() < timeout,
                "not ready within {timeout:?}: {reason}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Waits until `/readyz` stops answering 200 (a broker went away).
    pub(crate) async fn wait_unready(&self, timeout: std::time::Duration) {
        let started = std::time::Instant::now();
        while self.get("/readyz").await.0 == 200 {
            assert!(started.elapsed() < timeout, "still ready after {timeout:?}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Signals shutdown without waiting.
    pub(crate) fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Signals shutdown and waits for the app to finish.
    pub(crate) async fn stop(mut self) -> vodbridge::Result<()> {
        self.begin_shutdown();
        self.task
            .take()
            .expect("running")
            .await
            .expect("app task does not panic")
    }
}

/// How a [`Scripted`] sink answers.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Behaviour {
    /// Acknowledge.
    Ack,
    /// Fail transiently.
    Fail,
    /// Reject permanently.
    Reject,
    /// Never answer.
    Hang,
    /// Acknowledge after a pause.
    AckAfter(std::time::Duration),
}

/// A sink whose answers the test decides, recording every message it was given.
pub(crate) struct Scripted {
    name: String,
    behaviour: Mutex<Behaviour>,
    /// When set, each publish waits for a permit before answering.
    gate: Option<Arc<Notify>>,
    healthy: AtomicBool,
    /// Messages received (dead-letter copies included).
    pub(crate) received: Mutex<Vec<Message>>,
    /// Messages acknowledged.
    pub(crate) acked: Mutex<Vec<Message>>,
    /// Publishes in flight per partition key, to catch events of one video published at once.
    in_flight: Mutex<std::collections::HashMap<String, usize>>,
    /// Set when two publishes of one partition key overlapped.
    pub(crate) overlapped: AtomicBool,
}

impl Scripted {
    /// A sink answering with `behaviour`.
    pub(crate) fn new(name: &str, behaviour: Behaviour) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_owned(),
            behaviour: Mutex::new(behaviour),
            gate: None,
            healthy: AtomicBool::new(true),
            received: Mutex::default(),
            acked: Mutex::default(),
            in_flight: Mutex::default(),
            overlapped: AtomicBool::new(false),
        })
    }

    /// A sink that acknowledges only when `gate` is notified.
    pub(crate) fn gated(name: &str, gate: Arc<Notify>) -> Arc<Self> {
        Arc::new(Self {
            name: name.to_owned(),
            behaviour: Mutex::new(Behaviour::Ack),
            gate: Some(gate),
            healthy: AtomicBool::new(true),
            received: Mutex::default(),
            acked: Mutex::default(),
            in_flight: Mutex::default(),
            overlapped: AtomicBool::new(false),
        })
    }

    /// Changes the answer.
    pub(crate) fn set(&self, behaviour: Behaviour) {
        *self.behaviour.lock().expect("lock") = behaviour;
    }

    /// Changes the reported health.
    pub(crate) fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Number of messages acknowledged.
    pub(crate) fn acked_count(&self) -> usize {
        self.acked.lock().expect("lock").len()
    }

    /// Number of messages received.
    pub(crate) fn received_count(&self) -> usize {
        self.received.lock().expect("lock").len()
    }
}

impl Sink for Scripted {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "scripted"
    }

    fn publish<'a>(&'a self, message: &'a Message) -> PublishFuture<'a> {
        Box::pin(async move {
            self.received.lock().expect("lock").push(message.clone());
            let key = message.envelope.partition_key.clone();
            {
                let mut in_flight = self.in_flight.lock().expect("lock");
                let count = in_flight.entry(key.clone()).or_insert(0);
                *count += 1;
                if *count > 1 {
                    self.overlapped.store(true, Ordering::Relaxed);
                }
            }
            let _guard = InFlightGuard { sink: self, key };
            if let Some(gate) = &self.gate {
                gate.notified().await;
            }
            let behaviour = *self.behaviour.lock().expect("lock");
            if let Behaviour::AckAfter(pause) = behaviour {
                tokio::time::sleep(pause).await;
            }
            match behaviour {
                Behaviour::AckAfter(_) => {
                    self.acked.lock().expect("lock").push(message.clone());
                    Ok(())
                }
                Behaviour::Ack => {
                    self.acked.lock().expect("lock").push(message.clone());
                    Ok(())
                }
                Behaviour::Fail => Err(SinkError::retryable(
                    FailureReason::Unavailable,
                    "scripted outage",
                )),
                Behaviour::Reject => Err(SinkError::rejected(
                    FailureReason::TooLarge,
                    "scripted rejection",
                )),
                Behaviour::Hang => std::future::pending().await,
            }
        })
    }

    fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }
}

/// Decrements a partition key's in-flight count when a publish ends (or is dropped).
struct InFlightGuard<'a> {
    sink: &'a Scripted,
    key: String,
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut in_flight) = self.sink.in_flight.lock() {
            if let Some(count) = in_flight.get_mut(&self.key) {
                *count -= 1;
            }
        }
    }
}

/// A VOD emulator on a free port with these credentials, a `visibility` timeout and a short
/// long poll (200 ms) so tests do not wait on empty pulls.
pub(crate) async fn emulator(
    secret_id: &str,
    secret_key: &str,
    visibility: std::time::Duration,
) -> vod_emulator::RunningEmulator {
    let mut config = vod_emulator::EmulatorConfig::new(secret_id, secret_key);
    config.visibility = visibility;
    config.long_poll = std::time::Duration::from_millis(200);
    vod_emulator::Emulator::new(config)
        .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("emulator serves")
}

/// Polls `done` every 20 ms until it holds; fails the test after `timeout`.
pub(crate) async fn wait_for(
    what: &str,
    timeout: std::time::Duration,
    mut done: impl FnMut() -> bool,
) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Reads one Prometheus sample value (`name{labels}`) from a text exposition.
pub(crate) fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.trim().parse().ok())
    })
}

/// Every message of a JetStream stream, in stream order, decoded from CloudEvents binary mode
/// (`ce-*` headers); empty when the stream does not exist.
pub(crate) async fn jetstream_envelopes(url: &str, stream: &str) -> Vec<vodbridge_core::Envelope> {
    let client = async_nats::connect(url).await.expect("connects");
    let Ok(stream) = async_nats::jetstream::new(client).get_stream(stream).await else {
        return Vec::new();
    };
    let info = stream.get_info().await.expect("info").state;
    let mut out = Vec::new();
    for seq in info.first_sequence..=info.last_sequence {
        let Ok(message) = stream.get_raw_message(seq).await else {
            continue;
        };
        out.push(
            vodbridge_core::Envelope::from_binary(
                |name| {
                    message
                        .headers
                        .get(format!("ce-{name}").as_str())
                        .map(|v| v.as_str().to_owned().into())
                },
                message.payload.clone(),
            )
            .expect("a CloudEvent"),
        );
    }
    out
}

/// A durable queue `events` for every `vod.#` routing key of the `vod` exchange, and the
/// channel to read it on.
pub(crate) async fn amqp_consumer(broker: &RabbitMq) -> (lapin::Connection, lapin::Channel) {
    let (connection, channel) = broker.channel().await;
    rabbitmq_client::declare_queue(&channel, "vod", "events", "vod.#", FieldTable::default()).await;
    (connection, channel)
}

/// Every message in the `events` queue, acknowledged, as envelopes.
pub(crate) async fn amqp_drain(channel: &lapin::Channel) -> Vec<vodbridge_core::Envelope> {
    rabbitmq_client::take_all(channel, "events")
        .await
        .iter()
        .map(amqp_decode)
        .collect()
}

/// The envelope of a binary-mode delivery; its W3C `traceparent` header must agree with the
/// binding's `cloudEvents_traceparent`.
pub(crate) fn amqp_decode(delivery: &lapin::message::Delivery) -> vodbridge_core::Envelope {
    let headers = delivery.properties.headers().clone().unwrap_or_default();
    let header = |name: &str| match headers.inner().get(format!("cloudEvents_{name}").as_str()) {
        Some(AMQPValue::LongString(s)) => {
            Some(String::from_utf8_lossy(s.as_bytes()).into_owned().into())
        }
        _ => None,
    };
    let envelope = vodbridge_core::Envelope::from_binary(header, delivery.data.clone().into())
        .expect("a CloudEvent");
    // Every event carries its trace: the binding's cloudEvents_traceparent and W3C's own header
    // agree.
    let plain = match headers.inner().get("traceparent") {
        Some(AMQPValue::LongString(s)) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    };
    let traceparent = envelope
        .traceparent
        .expect("cloudEvents_traceparent")
        .to_string();
    assert_eq!(
        plain.as_deref(),
        Some(traceparent.as_str()),
        "traceparent header"
    );
    envelope
}
