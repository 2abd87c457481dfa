//! What every reliability scenario shares: the emulator, the real bridge binary, the three
//! brokers with an independent consumer each, and the counts a scenario reports.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use lapin::types::{AMQPValue, FieldTable};
use serde_json::{json, Value};
use vod_emulator::RunningEmulator;
use vodbridge_core::Envelope;
use vodbridge_testkit::{tansu_client, BridgeProcess, NatsServer, RabbitMq, Tansu};

/// The SecretId and SecretKey the emulator checks.
pub(crate) const ID: &str = "AKIDRELIABILITY";
pub(crate) const KEY: &str = "reliability-secret";
/// The SubAppId of pulled events.
pub(crate) const PULL_APP: u64 = 1_500_000_101;

/// The emulator with VOD's request limits, a `visibility` (handle lifetime) and a 1 s long poll.
pub(crate) async fn emulator(visibility: Duration) -> RunningEmulator {
    let mut config = vod_emulator::EmulatorConfig::new(ID, KEY);
    config.visibility = visibility;
    config.long_poll = Duration::from_secs(1);
    config.limits = vod_emulator::Limits::VOD;
    vod_emulator::Emulator::new(config)
        .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("emulator serves")
}

/// An event with a unique FileId (its `subject`), of one of three common types.
pub(crate) fn event(run: &str, i: usize) -> (String, Value) {
    let file_id = format!("{run}{i:012}");
    let body = match i % 3 {
        0 => json!({"EventType": "NewFileUpload", "FileUploadEvent": {"FileId": file_id,
            "MediaBasicInfo": {"Name": format!("v{i}"), "CreateTime": "2025-03-01T08:00:00Z"}}}),
        1 => json!({"EventType": "PullComplete", "PullCompleteEvent": {"TaskId":
            format!("1500000101-Pull-{run}-{i}"), "Status": "FINISH", "FileId": file_id}}),
        _ => json!({"EventType": "ProcedureStateChanged", "ProcedureStateChangeEvent": {"TaskId":
            format!("1500000101-procedurev2-{run}-{i}"), "Status": "FINISH", "FileId": file_id,
            "MediaProcessResultSet": []}}),
    };
    (file_id, body)
}

/// Puts events `range` of `run` in VOD's queue; returns ledger key → FileId.
pub(crate) fn enqueue(
    emu: &RunningEmulator,
    run: &str,
    range: std::ops::Range<usize>,
) -> HashMap<u64, String> {
    range
        .map(|i| {
            let (file_id, body) = event(run, i);
            (emu.emulator.enqueue(PULL_APP, &body), file_id)
        })
        .collect()
}

/// Makes the emulator push events `0..count` of `run` to `url` at `rate` per second, as VOD
/// does (the answer's status is ignored, only a timeout or a failed connection is sent again,
/// three sends at most); returns ledger key → FileId.
pub(crate) async fn push(
    emu: &RunningEmulator,
    url: &str,
    run: &str,
    count: usize,
    rate: f64,
) -> HashMap<u64, String> {
    push_events(emu, url, (0..count).map(|i| event(run, i)), rate)
}

/// [`push`] with the scenario's own `(FileId, body)` events.
pub(crate) fn push_events(
    emu: &RunningEmulator,
    url: &str,
    events: impl IntoIterator<Item = (String, Value)>,
    rate: f64,
) -> HashMap<u64, String> {
    let (file_ids, bodies): (Vec<String>, Vec<Value>) = events.into_iter().unzip();
    let keys = emu.emulator.push(url, bodies, rate);
    assert_eq!(keys.len(), file_ids.len());
    keys.into_iter().zip(file_ids).collect()
}

/// FileIds of the ledger entries in `keys` that VOD counts as acknowledged: confirmed (pull)
/// or answered 200 (push).
pub(crate) fn acknowledged(emu: &RunningEmulator, keys: &HashMap<u64, String>) -> HashSet<String> {
    emu.emulator
        .ledger()
        .into_iter()
        .filter(|e| e.confirmed_at.is_some() || e.answer_status == Some(200))
        .filter_map(|e| keys.get(&e.key).cloned())
        .collect()
}

/// Push entries VOD will not send again without a 200: answered otherwise, or given up on.
pub(crate) fn push_lost_by_vod(emu: &RunningEmulator, keys: &HashMap<u64, String>) -> usize {
    emu.emulator
        .ledger()
        .into_iter()
        .filter(|e| keys.contains_key(&e.key))
        .filter(|e| e.gave_up || e.answer_status.is_some_and(|s| s != 200))
        .count()
}

/// Whether VOD is done with every pushed event in `keys` (answered, or given up on).
pub(crate) fn push_settled(emu: &RunningEmulator, keys: &HashMap<u64, String>) -> bool {
    emu.emulator
        .ledger()
        .iter()
        .filter(|e| keys.contains_key(&e.key))
        .all(|e| e.answer_status.is_some() || e.gave_up)
}

/// Polls `done` every 50 ms until it holds; fails the test after `timeout`.
pub(crate) async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A pull source section for the emulator with a handle lifetime of `lifetime_ms`.
pub(crate) fn pull_source(emu: &RunningEmulator, lifetime_ms: u64, loops: usize) -> String {
    format!(
        r#"
[sources.app]
mode = "pull"
endpoint = "{endpoint}"
sub_app_id = {PULL_APP}
secret_id = "{ID}"
secret_key = "{KEY}"
loops = {loops}
handle_lifetime_ms = {lifetime_ms}
confirm_margin_ms = {margin}
max_backoff_ms = 500
"#,
        endpoint = emu.endpoint(),
        margin = lifetime_ms / 4,
    )
}

/// Starts the real binary on `body` (sources, sinks, routes) with its listener on a free port.
pub(crate) fn bridge(body: &str, drain_secs: u64) -> BridgeProcess {
    let port = vodbridge_testkit::free_port();
    let toml = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\ndrain_timeout_secs = {drain_secs}\n\
         publish_timeout_ms = 3000\n[telemetry]\nlog_level = \"warn\"\n{body}"
    );
    BridgeProcess::start(env!("CARGO_BIN_EXE_vodbridge"), &toml, port)
}

/// Reads one Prometheus sample (`name{labels}`) from the bridge.
pub(crate) async fn metric(bridge: &BridgeProcess, series: &str) -> Option<f64> {
    let text = reqwest::get(format!("{}/metrics", bridge.url()))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.trim().parse().ok())
    })
}

/// Waits until `/readyz` answers 200.
pub(crate) async fn wait_ready(bridge: &BridgeProcess, timeout: Duration) {
    let started = Instant::now();
    loop {
        let ready = reqwest::get(format!("{}/readyz", bridge.url()))
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "bridge not ready in {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What one broker holds: every message's `subject` (FileId), duplicates included.
#[derive(Debug, Default)]
pub(crate) struct Held(pub(crate) Vec<String>);

impl Held {
    /// Distinct FileIds.
    pub(crate) fn unique(&self) -> HashSet<&str> {
        self.0.iter().map(String::as_str).collect()
    }

    /// Messages beyond the first per FileId.
    pub(crate) fn duplicates(&self) -> usize {
        self.0.len() - self.unique().len()
    }

    /// FileIds of `expected` this broker does not hold.
    pub(crate) fn missing<'a>(
        &self,
        expected: impl IntoIterator<Item = &'a String>,
    ) -> Vec<String> {
        let held = self.unique();
        expected
            .into_iter()
            .filter(|f| !held.contains(f.as_str()))
            .cloned()
            .collect()
    }
}

/// Kafka (tansu) with the `vod.events` topic (3 partitions).
pub(crate) async fn kafka_topic(broker: &Tansu) {
    broker.create_topics(&[("vod.events", 3)]).await;
}

/// Every message of `vod.events` (subjects), read from the beginning until each partition's
/// high watermark is passed and nothing more arrives for 2 s.
pub(crate) async fn kafka_held(broker: &Tansu) -> Held {
    kafka_held_in(broker, "vod.events").await
}

/// [`kafka_held`] of another 3-partition `topic`.
pub(crate) async fn kafka_held_in(broker: &Tansu, topic: &str) -> Held {
    let messages = broker.read_all(topic, 3, Duration::from_secs(2)).await;
    Held(
        messages
            .iter()
            .map(|m| tansu_client::header(m, "ce_subject").unwrap_or_default())
            .collect(),
    )
}

/// RabbitMQ with a topic exchange `vod` and a durable queue bound to `vod.#`.
pub(crate) async fn rabbit_queue(broker: &RabbitMq, queue: &str, arguments: FieldTable) {
    broker.declare_queue("vod", queue, "vod.#", arguments).await;
}

/// Takes every message out of `queue` (acknowledging each); their subjects.
pub(crate) async fn rabbit_held(broker: &RabbitMq, queue: &str) -> Held {
    let deliveries = broker.take_all(queue).await;
    Held(
        deliveries
            .iter()
            .map(|delivery| {
                let headers = delivery.properties.headers().clone().unwrap_or_default();
                match headers.inner().get("cloudEvents_subject") {
                    Some(AMQPValue::LongString(s)) => {
                        String::from_utf8_lossy(s.as_bytes()).into_owned()
                    }
                    _ => String::new(),
                }
            })
            .collect(),
    )
}

/// Every message of the JetStream stream `VOD`.
pub(crate) async fn nats_held(broker: &NatsServer) -> Held {
    nats_held_in(broker, "VOD").await
}

/// [`nats_held`] of another `stream`.
pub(crate) async fn nats_held_in(broker: &NatsServer, stream: &str) -> Held {
    let client = async_nats::connect(broker.url()).await.expect("connects");
    let Ok(stream) = async_nats::jetstream::new(client).get_stream(stream).await else {
        return Held::default();
    };
    let info = stream.get_info().await.expect("info").state;
    let mut out = Vec::new();
    for seq in info.first_sequence..=info.last_sequence {
        let Ok(message) = stream.get_raw_message(seq).await else {
            continue;
        };
        out.push(
            message
                .headers
                .get("ce-subject")
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default(),
        );
    }
    Held(out)
}

/// Every line of a file sink's JSON Lines file (each line is one publish).
pub(crate) fn file_held(path: &Path) -> Held {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    Held(
        text.lines()
            .filter_map(|line| Envelope::from_structured_json(line.as_bytes()).ok())
            .filter_map(|envelope| envelope.subject)
            .collect(),
    )
}

/// The sink sections for Kafka, RabbitMQ and NATS, named `kafka`, `rabbit` and `nats`.
pub(crate) fn kafka_sink(broker: &Tansu) -> String {
    format!(
        "[sinks.kafka]\ntype = \"kafka\"\nbrokers = \"{}\"\nmessage_timeout_ms = 2500\n",
        broker.bootstrap()
    )
}

/// See [`kafka_sink`].
pub(crate) fn rabbit_sink(broker: &RabbitMq) -> String {
    format!(
        "[sinks.rabbit]\ntype = \"amqp\"\nurl = \"{}\"\nexchange = \"vod\"\nmax_reconnect_backoff_ms = 300\n",
        broker.url()
    )
}

/// See [`kafka_sink`].
pub(crate) fn nats_sink(broker: &NatsServer) -> String {
    format!(
        "[sinks.nats]\ntype = \"nats\"\nurl = \"{}\"\nstream = \"VOD\"\ncreate_stream = true\n\
         stream_subjects = [\"vod.>\"]\nack_timeout_ms = 1500\n",
        broker.url()
    )
}

/// A route of every event to `targets` (sink names), each at its own destination.
pub(crate) fn route_to(targets: &[(&str, &str)]) -> String {
    let sinks: Vec<String> = targets
        .iter()
        .map(|(sink, destination)| {
            format!("{{ sink = \"{sink}\", destination = \"{destination}\" }}")
        })
        .collect();
    format!(
        "[[routes]]\nevent_types = [\"*\"]\nsinks = [{}]\n",
        sinks.join(", ")
    )
}

/// One scenario's counts, printed as one JSON line (`RELIABILITY {...}`) and written to
/// `$CARGO_TARGET_TMPDIR/reliability/{scenario}.json`, which RELIABILITY.md is filled from.
pub(crate) fn report(scenario: &str, counts: Value) {
    let line = json!({ "scenario": scenario, "counts": counts });
    eprintln!("RELIABILITY {line}");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("reliability");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join(format!("{scenario}.json")), format!("{line:#}\n"));
}

/// A small deterministic generator for kill moments (seeded from the clock, printed).
pub(crate) struct Rng(u64);

impl Rng {
    /// Seeded from the clock; the seed is printed so a failing run can be repeated
    /// (`RELIABILITY_SEED=…`).
    pub(crate) fn from_env() -> Self {
        let seed = std::env::var("RELIABILITY_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        eprintln!("RELIABILITY_SEED={seed}");
        Self(seed | 1)
    }

    /// A number in `range`.
    pub(crate) fn below(&mut self, range: std::ops::Range<u64>) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
        range.start + x % (range.end - range.start).max(1)
    }
}
