//! Push load harness: the real `vodbridge` binary (release) under `wrk` (a separate process,
//! keep-alive, pinned to CPU 0 when `taskset` exists) posting realistic `ProcedureStateChanged`
//! callbacks from the emulator's generator, each with its own FileId, into each sink: file
//! (`fsync = "never"`), NATS JetStream, RabbitMQ (confirms, persistent) and Kafka (tansu). Per
//! row: req/s, p50/p99/p99.9, server CPU µs per callback (utime + stime of the server process),
//! the broker's CPU µs per message, peak RSS, and non-200 answers. Beside them, from the same
//! run, two baselines:
//!
//! - the limit of the HTTP stack: a no-op axum handler answering 200 on the same stack (hyper
//!   http1, tokio), in-process here;
//! - per broker, the direct client (async-nats, lapin, rdkafka) publishing the same envelopes
//!   with the same guarantees (PubAck / publisher confirm, persistent, mandatory / acks=all) and
//!   the same headers, with as many publishes in flight as wrk has connections. RabbitMQ gets
//!   three: one channel with only `delivery_mode` and `content_type` (the plainest publish), one
//!   channel with the bridge's properties and headers, and the bridge's layout (one unconfirmed
//!   publish per channel) with its properties, which tells what each part costs the broker;
//! - per sink, the ideal bridge: the no-op's HTTP stack whose handler reads the body and
//!   publishes an already-normalized envelope with that direct client (for the file: the
//!   bridge's own file sink and its group commit), under the same wrk. On a machine where wrk,
//!   the bridge and the broker share the cores, this is the most any bridge in front of that
//!   client can reach; `bridge ÷ HTTP + client` is what the bridge's own work (parsing, normalization,
//!   routing, metrics) costs.
//!
//! Every wrk row also gives wrk's own CPU per request (this process's waited-for children).
//!
//! `cargo bench --bench push_load` (`PUSH_LOAD_SECS` (10), `PUSH_LOAD_CONNS` ("16,64"),
//! `PUSH_LOAD_SINKS` ("file,nats,rabbitmq,kafka"), `PUSH_LOAD_ROUNDS` (1)). With more than one
//! round every row runs once per round (so the bridge, its ceiling and its reference alternate)
//! and the ratio table gives each ratio's median over the rounds with its range: on a shared
//! machine one round's ratios can be off by a third. Needs `wrk` (`apt-get install wrk`).

mod support;

use std::{
    net::SocketAddr,
    path::Path,
    process::Command,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures_util::{future::BoxFuture, FutureExt};
use lapin::{
    options::{BasicPublishOptions, ConfirmSelectOptions, QueuePurgeOptions},
    types::{AMQPValue, FieldTable, LongString, ShortString},
    BasicProperties, Confirmation, Connection, ConnectionProperties,
};
use support::{env_usize, wait_ready};
use time::OffsetDateTime;
use vodbridge_core::{Envelope, HeaderStyle, Ingress, TraceParent};
use vodbridge_tencent::{Normalizer, RawEvent};
use vodbridge_testkit::{free_port, BridgeProcess, NatsServer, RabbitMq, Tansu};

/// One wrk run's figures.
#[derive(Debug, Clone, Copy)]
struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    errors: u64,
    requests: u64,
    /// CPU seconds the load generator spent (wrk only: the in-process driver shares the
    /// bench's process).
    load_cpu: Option<f64>,
}

/// The wrk script: a unique FileId per request (NATS would drop repeats as duplicates), the
/// percentiles and error counts printed as one line at the end.
const LUA: &str = r#"
local template = io.open(os.getenv("PUSH_LOAD_BODY")):read("*a")
local counter = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  counter = counter + 1
  local body = string.gsub(template, "__FILEID__", string.format("52857%015d", counter), 1)
  return wrk.format(nil, nil, nil, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %.1f %.1f %.1f %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"#;

fn wrk(url: &str, conns: usize, secs: u64, script: &Path, body: &Path) -> Run {
    let children_before = children_cpu_secs();
    let mut command = if Command::new("taskset").arg("-V").output().is_ok() {
        let mut c = Command::new("taskset");
        c.args(["-c", "0", "wrk"]);
        c
    } else {
        Command::new("wrk")
    };
    let output = command
        .args([
            "-t1",
            &format!("-c{conns}"),
            &format!("-d{secs}s"),
            "--timeout",
            "10s",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .env("PUSH_LOAD_BODY", body)
        .output()
        .expect("wrk is not installed: apt-get install wrk");
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("wrk printed no result: {text}"));
    let v: Vec<f64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    Run {
        requests: v[0] as u64,
        rps: v[0] / (v[1] / 1e6),
        p50_ms: v[2] / 1000.0,
        p99_ms: v[3] / 1000.0,
        p999_ms: v[4] / 1000.0,
        errors: v[5] as u64,
        load_cpu: Some(children_cpu_secs() - children_before),
    }
}

/// cutime + cstime of this process: the CPU of its children that were waited for (wrk, once
/// `output()` returned), in seconds.
fn children_cpu_secs() -> f64 {
    stat_cpu_secs("self", 13..15)
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: &str) -> f64 {
    stat_cpu_secs(pid, 11..13)
}

/// The sum of two clock-tick fields of `/proc/{pid}/stat`, in seconds; `fields` counts from the
/// first field after the parenthesised command name (utime and stime are the 14th and 15th of
/// the whole line, cutime and cstime the 16th and 17th).
fn stat_cpu_secs(pid: &str, fields: std::ops::Range<usize>) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let all: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = all.get(fields).map_or(0.0, |f| {
        f.iter().filter_map(|x| x.parse::<f64>().ok()).sum()
    });
    ticks / 100.0
}

/// Peak RSS (VmHWM) of a process, in MiB.
fn peak_rss_mib(pid: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn row(
    name: &str,
    conns: usize,
    run: Run,
    cpu: Option<f64>,
    broker_cpu: Option<f64>,
    rss: Option<f64>,
    limit: Option<f64>,
) {
    let per = |secs: Option<f64>| {
        secs.map_or_else(
            || "–".to_owned(),
            |s| format!("{:.1}", s * 1e6 / run.requests.max(1) as f64),
        )
    };
    println!(
        "| {name} | {conns} | {:.0} | {} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {} |",
        run.rps,
        limit.map_or_else(|| "1.00".to_owned(), |l| format!("{:.2}", run.rps / l)),
        run.p50_ms,
        run.p99_ms,
        run.p999_ms,
        per(cpu),
        per(broker_cpu),
        per(run.load_cpu),
        rss.map_or_else(|| "–".to_owned(), |r| format!("{r:.1}")),
        run.errors
    );
}

/// The median of `values` with `digits` decimals, and with more than one value their range in
/// brackets.
fn median_and_range(values: &mut [f64], digits: usize) -> String {
    values.sort_by(f64::total_cmp);
    let Some((&low, &high)) = values.first().zip(values.last()) else {
        return "–".to_owned();
    };
    let n = values.len();
    let median = if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    };
    if n == 1 {
        format!("{median:.digits$}")
    } else {
        format!("{median:.digits$} ({low:.digits$}–{high:.digits$})")
    }
}

/// One publish with a direct client: `(task, i)` → acknowledged. `task` is the driving task
/// of `drive_for` (0, 1, ...) or [`SERVER_TASK`], `i` counts publishes.
type Publish = Arc<dyn Fn(usize, usize) -> BoxFuture<'static, bool> + Send + Sync>;

/// The `task` of a publish from the HTTP server, whose requests have no task of their own.
const SERVER_TASK: usize = usize::MAX;

/// Runs `publish(task, i)` for i = 0, 1, ... on `in_flight` tasks at once for `secs`; the
/// figures of the run.
async fn drive_for(secs: u64, in_flight: usize, publish: Publish) -> Run {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let stop = started + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..in_flight)
        .map(|task| {
            let (publish, next) = (Arc::clone(&publish), Arc::clone(&next));
            tokio::spawn(async move {
                let (mut latencies, mut errors) = (Vec::new(), 0u64);
                while Instant::now() < stop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let sent = Instant::now();
                    if !publish(task, i).await {
                        errors += 1;
                    }
                    latencies.push(sent.elapsed().as_micros() as u64);
                }
                (latencies, errors)
            })
        })
        .collect();
    let (mut all, mut errors) = (Vec::new(), 0);
    for task in tasks {
        let (latencies, e) = task.await.expect("task");
        all.extend(latencies);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let at = |q: f64| all.get(((all.len() as f64 * q) as usize).min(all.len().saturating_sub(1)));
    let ms = |q: f64| at(q).map_or(0.0, |&us| us as f64 / 1000.0);
    Run {
        requests: all.len() as u64,
        rps: all.len() as f64 / elapsed,
        p50_ms: ms(0.50),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        errors,
        load_cpu: None,
    }
}

/// The ideal bridge on this stack, in this process: the no-op's axum/hyper, a handler that
/// reads the whole body, publishes an already-normalized envelope with `publish` and answers
/// 200 after the acknowledgement (503 without). No parsing, no normalization, no routing, no
/// metrics: what any bridge in front of this client can reach here, under the same wrk.
fn serve_publisher(
    runtime: &tokio::runtime::Runtime,
    publish: Publish,
) -> (u16, tokio::task::JoinHandle<()>) {
    let port = free_port();
    let next = Arc::new(AtomicUsize::new(0));
    let handler = move |body: Bytes| {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let acknowledged = publish(SERVER_TASK, i);
        async move {
            drop(body);
            if acknowledged.await {
                axum::http::StatusCode::OK
            } else {
                axum::http::StatusCode::SERVICE_UNAVAILABLE
            }
        }
    };
    let (ready, bound) = std::sync::mpsc::channel();
    let server = runtime.spawn(async move {
        let app = axum::Router::new().route("/callback/push", axum::routing::post(handler));
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .expect("bind");
        let _ = ready.send(());
        axum::serve(listener, app).await.expect("serve");
    });
    bound.recv().expect("the publishing server started");
    (port, server)
}

/// Envelopes of the load's body, normalized as the bridge does, each with its own FileId.
fn envelopes(template: &str, n: usize) -> Arc<Vec<Arc<Envelope>>> {
    let normalizer = Normalizer::new(
        "/tencentcloud/vod/1500000001",
        Some(1_500_000_001),
        Ingress::Push,
    );
    Arc::new(
        (0..n)
            .map(|i| {
                let body = Bytes::from(template.replacen("__FILEID__", &format!("99{i:017}"), 1));
                let event = RawEvent::parse(&body).expect("parses");
                let mut envelope = normalizer
                    .normalize(event, OffsetDateTime::now_utc())
                    .expect("normalizes");
                // The bridge stamps one on every envelope (and its sinks send it twice: the
                // binding's `cloudEvents_traceparent` / `ce_traceparent` and W3C `traceparent`).
                envelope.traceparent = Some(TraceParent::random());
                Arc::new(envelope)
            })
            .collect(),
    )
}

/// The file sink's work without the bridge: the bridge's own `LineSink` (`fsync = "never"`,
/// its group commit: lines of concurrent publishes share one `write(2)`) given envelopes
/// normalized beforehand. A `write(2)` per request under a lock, the naive ideal, measures a
/// way of writing the bridge does not use: on this machine it reached 0.55–0.63 of the no-op
/// where the same handler writing to `/dev/null` reached 1.06.
fn file_publisher(path: &Path, envelopes: &Arc<Vec<Arc<Envelope>>>) -> Publish {
    use vodbridge::{
        config::{FileSinkConfig, FsyncPolicy},
        sinks::LineSink,
    };
    use vodbridge_core::{Message, Sink};
    let sink = Arc::new(
        LineSink::file(
            "ceiling",
            &FileSinkConfig {
                path: path.to_owned(),
                fsync: FsyncPolicy::Never,
                rotate_bytes: None,
                keep_files: None,
            },
        )
        .expect("open the file"),
    );
    let envelopes = Arc::clone(envelopes);
    Arc::new(move |_, i| {
        let (sink, envelope) = (
            Arc::clone(&sink),
            Arc::clone(&envelopes[i % envelopes.len()]),
        );
        async move {
            let message = Message {
                destination: vodbridge_core::default_destination(&envelope.event_type),
                envelope,
                dead_letter: None,
            };
            sink.publish(&message).await.is_ok()
        }
        .boxed()
    })
}

/// The direct JetStream client: the NATS sink's headers and payload, a Msg-Id per publish.
async fn nats_publisher(
    url: &str,
    envelopes: Arc<Vec<Arc<Envelope>>>,
    tag: &'static str,
) -> Publish {
    let client = async_nats::connect(url).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    Arc::new(move |_, i| {
        let (js, envelope) = (js.clone(), Arc::clone(&envelopes[i % envelopes.len()]));
        async move {
            let mut headers = async_nats::HeaderMap::new();
            for (name, value) in envelope.attributes() {
                headers.insert(HeaderStyle::Nats.header_name(name).as_ref(), value.as_ref());
            }
            headers.insert("content-type", "application/json");
            if let Some(traceparent) = &envelope.traceparent {
                headers.insert("traceparent", traceparent.to_string().as_str());
            }
            let publish = async_nats::jetstream::message::PublishMessage::build()
                .payload(envelope.data.clone())
                .headers(headers)
                .message_id(format!("{tag}-{i}"));
            match js
                .send_publish(format!("vod.{}", envelope.event_type), publish)
                .await
            {
                Ok(ack) => ack.await.is_ok(),
                Err(_) => false,
            }
        }
        .boxed()
    })
}

/// How the direct RabbitMQ client publishes.
#[derive(Clone, Copy)]
enum AmqpLayout {
    /// One channel, every publish on it, only `delivery_mode` and `content_type`.
    Plain,
    /// One channel, the bridge's properties and `cloudEvents_*` headers.
    BridgeProperties,
    /// The bridge's properties on one channel per publish in flight (one unconfirmed each).
    BridgeLayout,
}

/// The direct lapin client in `layout`, with publisher confirms, persistent and mandatory.
async fn amqp_publisher(
    url: &str,
    envelopes: Arc<Vec<Arc<Envelope>>>,
    in_flight: usize,
    layout: AmqpLayout,
) -> Publish {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("connect");
    let count = match layout {
        AmqpLayout::BridgeLayout => in_flight,
        _ => 1,
    };
    let mut channels = Vec::new();
    for _ in 0..count {
        let channel = connection.create_channel().await.expect("channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        channels.push(channel);
    }
    // The bridge's layout keeps one publish unconfirmed per channel: the driving tasks each
    // own one, the HTTP server takes a free one from the pool.
    let idle = Arc::new(std::sync::Mutex::new(channels.clone()));
    let channels = Arc::new(channels);
    Arc::new(move |task, i| {
        let (channels, idle, envelope) = (
            Arc::clone(&channels),
            Arc::clone(&idle),
            Arc::clone(&envelopes[i % envelopes.len()]),
        );
        async move {
            let properties = match layout {
                AmqpLayout::Plain => BasicProperties::default()
                    .with_content_type(ShortString::from("application/json"))
                    .with_delivery_mode(2),
                _ => {
                    let mut headers = FieldTable::default();
                    for (name, value) in envelope.attributes() {
                        headers.insert(
                            HeaderStyle::Amqp.header_name(name).as_ref().into(),
                            AMQPValue::LongString(LongString::from(value.as_ref())),
                        );
                    }
                    if let Some(traceparent) = &envelope.traceparent {
                        headers.insert(
                            "traceparent".into(),
                            AMQPValue::LongString(LongString::from(traceparent.to_string())),
                        );
                    }
                    BasicProperties::default()
                        .with_message_id(ShortString::from(envelope.id.as_str()))
                        .with_content_type(ShortString::from("application/json"))
                        .with_type(ShortString::from(envelope.ty.as_str()))
                        .with_timestamp(u64::try_from(envelope.time.unix_timestamp()).unwrap_or(0))
                        .with_delivery_mode(2)
                        .with_app_id(ShortString::from("vodbridge"))
                        .with_headers(headers)
                }
            };
            // A driving task owns channel `task`; the server's requests take a free one.
            let pooled = matches!(layout, AmqpLayout::BridgeLayout) && task == SERVER_TASK;
            let channel = if pooled {
                idle.lock()
                    .expect("pool")
                    .pop()
                    .unwrap_or_else(|| channels[0].clone())
            } else {
                channels[task % channels.len()].clone()
            };
            let key = format!("vod.{}", envelope.event_type);
            let confirmed = match channel
                .basic_publish(
                    "vod".into(),
                    key.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &envelope.data,
                    properties,
                )
                .await
            {
                Ok(confirm) => matches!(confirm.await, Ok(Confirmation::Ack(None))),
                Err(_) => false,
            };
            if pooled {
                idle.lock().expect("pool").push(channel);
            }
            confirmed
        }
        .boxed()
    })
}

/// The direct Kafka producer: the Kafka sink's settings (acks=all, idempotence) and headers.
fn kafka_publisher(bootstrap: &str, envelopes: Arc<Vec<Arc<Envelope>>>) -> Publish {
    use rdkafka::{
        message::{Header, OwnedHeaders},
        producer::{FutureProducer, FutureRecord},
        util::Timeout,
    };
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "20000")
        .create()
        .expect("producer");
    Arc::new(move |_, i| {
        let (producer, envelope) = (
            producer.clone(),
            Arc::clone(&envelopes[i % envelopes.len()]),
        );
        async move {
            let mut headers = OwnedHeaders::new();
            for (name, value) in envelope.attributes() {
                headers = headers.insert(Header {
                    key: &HeaderStyle::Kafka.header_name(name),
                    value: Some(value.as_ref()),
                });
            }
            headers = headers.insert(Header {
                key: "content-type",
                value: Some("application/json"),
            });
            let traceparent = envelope.traceparent.map(|t| t.to_string());
            if let Some(traceparent) = &traceparent {
                headers = headers.insert(Header {
                    key: "traceparent",
                    value: Some(traceparent.as_str()),
                });
            }
            let topic = format!("vod.{}", envelope.event_type);
            let record = FutureRecord::to(&topic)
                .key(envelope.partition_key.as_bytes())
                .payload(&envelope.data[..])
                .headers(headers);
            producer
                .send(record, Timeout::After(Duration::from_secs(10)))
                .await
                .is_ok()
        }
        .boxed()
    })
}

/// Empties the load queue, so every RabbitMQ row starts from the same broker state.
async fn purge(url: &str) {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    let _ = channel
        .queue_purge("load".into(), QueuePurgeOptions::default())
        .await;
    let _ = connection.close(200, "purged".into()).await;
}

/// The bridge's sink for a row at `conns` connections. RabbitMQ gets one confirm channel per
/// connection (the default is 32), so the bridge has as many publishes in flight as wrk has
/// callbacks and as the direct client has.
fn sink_config(sink: &str, dir: &Path, brokers: &Brokers, conns: usize) -> String {
    let route = "[[routes]]\nevent_types = [\"*\"]\nsinks = [{ sink = \"out\", destination = \"vod.{event_type}\" }]\n";
    let sink = match sink {
        "file" => format!(
            "[sinks.out]\ntype = \"file\"\npath = {:?}\nfsync = \"never\"\n",
            dir.join("events.jsonl").display().to_string()
        ),
        "nats" => format!(
            "[sinks.out]\ntype = \"nats\"\nurl = \"{}\"\nstream = \"VOD\"\ncreate_stream = true\nstream_subjects = [\"vod.>\"]\n",
            brokers.nats.as_ref().expect("nats").url()
        ),
        "rabbitmq" => format!(
            "[sinks.out]\ntype = \"amqp\"\nurl = \"{}\"\nexchange = \"vod\"\nchannels = {conns}\n",
            brokers.rabbit.as_ref().expect("rabbit").url()
        ),
        "kafka" => format!(
            "[sinks.out]\ntype = \"kafka\"\nbrokers = \"{}\"\n",
            brokers.kafka.as_ref().expect("kafka").bootstrap()
        ),
        other => panic!("unknown sink {other}: file, nats, rabbitmq, kafka"),
    };
    format!("{sink}{route}")
}

struct Brokers {
    nats: Option<NatsServer>,
    rabbit: Option<RabbitMq>,
    kafka: Option<Tansu>,
}

fn main() {
    let secs = env_usize("PUSH_LOAD_SECS", 10) as u64;
    let rounds = env_usize("PUSH_LOAD_ROUNDS", 1).max(1);
    let conns: Vec<usize> = std::env::var("PUSH_LOAD_CONNS")
        .unwrap_or_else(|_| "16,64".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let sinks: Vec<String> = std::env::var("PUSH_LOAD_SINKS")
        .unwrap_or_else(|_| "file,nats,rabbitmq,kafka".into())
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let body = dir.path().join("body.json");
    let mut event = vod_emulator::generate::Generator::new(7).event("ProcedureStateChanged");
    event["ProcedureStateChangeEvent"]["FileId"] = "__FILEID__".into();
    // A ~2 KB callback, as in the issue's measurements.
    event["ProcedureStateChangeEvent"]["SessionContext"] = "x".repeat(1200).into();
    let template = event.to_string();
    std::fs::write(&body, &template).expect("body");
    let direct_envelopes = envelopes(&template, 2_000);
    let script = dir.path().join("post.lua");
    std::fs::write(&script, LUA).expect("script");
    println!(
        "body {} bytes, {secs} s per row, wrk -t1 pinned to CPU 0\n",
        event.to_string().len()
    );
    let mut brokers = Brokers {
        nats: None,
        rabbit: None,
        kafka: None,
    };
    for sink in &sinks {
        match sink.as_str() {
            "nats" => brokers.nats = Some(NatsServer::start()),
            "rabbitmq" => {
                let rabbit = RabbitMq::start();
                runtime.block_on(support::declare_topic_queue(&rabbit, "vod", "load"));
                brokers.rabbit = Some(rabbit);
            }
            "kafka" => {
                let kafka = Tansu::start();
                runtime.block_on(support::create_kafka_topics(
                    &kafka,
                    &["vod.ProcedureStateChanged"],
                ));
                brokers.kafka = Some(kafka);
            }
            _ => {}
        }
    }
    // The HTTP stack's limit: a no-op handler on axum/hyper in this process.
    let noop_port = free_port();
    runtime.spawn(async move {
        let app = axum::Router::new().route("/callback/push", axum::routing::post(|| async { "" }));
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], noop_port)))
            .await
            .expect("bind");
        axum::serve(listener, app).await.expect("serve");
    });
    std::thread::sleep(Duration::from_millis(300));
    // (sink, conns, bridge, HTTP + client, reference) for the ratio table.
    let mut pairs: Vec<(String, usize, Run, Run, Run)> = Vec::new();
    let me = std::process::id().to_string();
    for round in 1..=rounds {
        if rounds > 1 {
            println!("\nround {round} of {rounds}\n");
        }
        println!("| target | conns / in flight | req/s | of no-op | p50 ms | p99 ms | p99.9 ms | server CPU µs/callback | broker CPU µs/msg | wrk CPU µs/req | peak RSS MiB | errors |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
        // Each round's files start empty, so the page cache does not grow with the rounds.
        for file in ["events.jsonl", "ceiling.jsonl"] {
            let _ = std::fs::remove_file(dir.path().join(file));
        }
        let mut noop_runs = Vec::new();
        for &c in &conns {
            let before = cpu_secs(&me);
            let run = wrk(
                &format!("http://127.0.0.1:{noop_port}/callback/push"),
                c,
                secs,
                &script,
                &body,
            );
            row(
                "no-op axum handler",
                c,
                run,
                Some(cpu_secs(&me) - before),
                None,
                Some(peak_rss_mib(&me)),
                None,
            );
            noop_runs.push(run);
        }

        for sink in &sinks {
            let broker_pid = match sink.as_str() {
                "nats" => brokers.nats.as_ref().and_then(NatsServer::pid),
                "rabbitmq" => brokers.rabbit.as_ref().and_then(RabbitMq::pid),
                "kafka" => brokers.kafka.as_ref().and_then(Tansu::pid),
                _ => None,
            }
            .map(|pid| pid.to_string());
            let broker_cpu = || broker_pid.as_deref().map(cpu_secs);
            let rabbit_url = brokers.rabbit.as_ref().map(RabbitMq::url);
            let purge_rabbit = || {
                if let Some(url) = &rabbit_url {
                    runtime.block_on(purge(url));
                }
            };
            let mut bridge_runs = Vec::new();
            for (i, &c) in conns.iter().enumerate() {
                purge_rabbit();
                let port = free_port();
                let toml = format!(
                    "[server]\nlisten = \"127.0.0.1:{port}\"\n[telemetry]\nlog_level = \"warn\"\n[sources.push]\nmode = \"push\"\nsub_app_id = 1500000001\n{}",
                    sink_config(sink, dir.path(), &brokers, c)
                );
                let bridge = BridgeProcess::start(env!("CARGO_BIN_EXE_vodbridge"), &toml, port);
                let pid = bridge.pid().expect("pid").to_string();
                let client = reqwest::Client::new();
                runtime.block_on(wait_ready(&client, &format!("{}/readyz", bridge.url())));
                let (before, broker_before) = (cpu_secs(&pid), broker_cpu());
                let run = wrk(
                    &format!("{}/callback/push", bridge.url()),
                    c,
                    secs,
                    &script,
                    &body,
                );
                let cpu = cpu_secs(&pid) - before;
                let broker = broker_cpu().zip(broker_before).map(|(a, b)| a - b);
                row(
                    &format!("vodbridge → {sink}"),
                    c,
                    run,
                    Some(cpu),
                    broker,
                    Some(peak_rss_mib(&pid)),
                    noop_runs.get(i).map(|r| r.rps),
                );
                bridge_runs.push((c, run));
                drop(bridge);
            }
            // The ideal bridge in front of the same client: HTTP + direct publish, under the same wrk.
            let mut ceiling_runs = Vec::new();
            for (i, &c) in conns.iter().enumerate() {
                purge_rabbit();
                let envelopes = Arc::clone(&direct_envelopes);
                let (label, publish) = match sink.as_str() {
                    "file" => (
                        "HTTP + the file sink, no bridge work",
                        file_publisher(&dir.path().join("ceiling.jsonl"), &envelopes),
                    ),
                    "nats" => (
                        "HTTP + direct async-nats, no bridge work",
                        runtime.block_on(nats_publisher(
                            &brokers.nats.as_ref().expect("nats").url(),
                            envelopes,
                            "ceiling",
                        )),
                    ),
                    "kafka" => (
                        "HTTP + direct rdkafka, no bridge work",
                        kafka_publisher(
                            &brokers.kafka.as_ref().expect("kafka").bootstrap(),
                            envelopes,
                        ),
                    ),
                    "rabbitmq" => (
                        "HTTP + direct lapin (bridge layout), no bridge work",
                        runtime.block_on(amqp_publisher(
                            &rabbit_url.clone().expect("rabbit"),
                            envelopes,
                            c,
                            AmqpLayout::BridgeLayout,
                        )),
                    ),
                    other => unreachable!("unknown sink {other}"),
                };
                let (port, server) = serve_publisher(&runtime, publish);
                let (before, broker_before) = (cpu_secs(&me), broker_cpu());
                let run = wrk(
                    &format!("http://127.0.0.1:{port}/callback/push"),
                    c,
                    secs,
                    &script,
                    &body,
                );
                let cpu = cpu_secs(&me) - before;
                let broker = broker_cpu().zip(broker_before).map(|(a, b)| a - b);
                server.abort();
                let limit = noop_runs.get(i).map(|r| r.rps);
                row(label, c, run, Some(cpu), broker, None, limit);
                ceiling_runs.push(run);
            }
            // The direct clients at the same in-flight counts, after the bridge's rows.
            let layouts: Vec<(&str, Option<AmqpLayout>)> = match sink.as_str() {
                "nats" => vec![("direct async-nats", None)],
                "kafka" => vec![("direct rdkafka", None)],
                "rabbitmq" => vec![
                    (
                        "direct lapin, bridge layout and properties",
                        Some(AmqpLayout::BridgeLayout),
                    ),
                    (
                        "direct lapin, 1 channel, bridge properties",
                        Some(AmqpLayout::BridgeProperties),
                    ),
                    ("direct lapin, 1 channel, plain", Some(AmqpLayout::Plain)),
                ],
                // The file has no client of its own: its reference is the no-op handler.
                _ => {
                    for (i, &(c, bridge_run)) in bridge_runs.iter().enumerate() {
                        pairs.push((sink.clone(), c, bridge_run, ceiling_runs[i], noop_runs[i]));
                    }
                    Vec::new()
                }
            };
            for (layout_index, (label, layout)) in layouts.into_iter().enumerate() {
                for (i, &(c, bridge_run)) in bridge_runs.iter().enumerate() {
                    purge_rabbit();
                    let envelopes = Arc::clone(&direct_envelopes);
                    let broker_before = broker_cpu();
                    let run = runtime.block_on(async {
                        let publish = match (sink.as_str(), layout) {
                            ("nats", _) => {
                                let url = brokers.nats.as_ref().expect("nats").url();
                                nats_publisher(&url, envelopes, "direct").await
                            }
                            ("kafka", _) => kafka_publisher(
                                &brokers.kafka.as_ref().expect("kafka").bootstrap(),
                                envelopes,
                            ),
                            (_, Some(layout)) => {
                                let url = rabbit_url.clone().expect("rabbit");
                                amqp_publisher(&url, envelopes, c, layout).await
                            }
                            _ => unreachable!("a direct client per broker sink"),
                        };
                        drive_for(secs, c, publish).await
                    });
                    let broker = broker_cpu().zip(broker_before).map(|(a, b)| a - b);
                    row(label, c, run, None, broker, None, None);
                    if layout_index == 0 {
                        pairs.push((sink.clone(), c, bridge_run, ceiling_runs[i], run));
                    }
                }
            }
        }
    }
    if !pairs.is_empty() {
        // One line per (sink, conns): each ratio is taken within one round (its rows ran next to
        // each other; rounds ran minutes apart), then the median over the rounds, and their
        // range when more than one: the median is what to quote on a noisy machine.
        println!(
            "\n| sink | conns / in flight | bridge ÷ reference | HTTP + client ÷ reference | bridge ÷ HTTP + client | bridge p99 ÷ reference p99 |"
        );
        println!("|---|---|---|---|---|---|");
        let mut keys: Vec<(String, usize)> = Vec::new();
        for (sink, c, ..) in &pairs {
            if !keys.contains(&(sink.clone(), *c)) {
                keys.push((sink.clone(), *c));
            }
        }
        for (sink, c) in keys {
            let of_key: Vec<_> = pairs
                .iter()
                .filter(|(s, n, ..)| *s == sink && *n == c)
                .collect();
            let cell = |ratio: &dyn Fn(&Run, &Run, &Run) -> f64, digits: usize| {
                let mut values: Vec<f64> = of_key
                    .iter()
                    .map(|(_, _, b, h, r)| ratio(b, h, r))
                    .collect();
                median_and_range(&mut values, digits)
            };
            println!(
                "| {sink} | {c} | {} | {} | {} | {} |",
                cell(&|b, _, r| b.rps / r.rps.max(1.0), 2),
                cell(&|_, h, r| h.rps / r.rps.max(1.0), 2),
                cell(&|b, h, _| b.rps / h.rps.max(1.0), 2),
                cell(&|b, _, r| b.p99_ms / r.p99_ms.max(0.001), 1),
            );
        }
        println!("\n(reference: the direct client for a broker, the no-op handler for the file)");
    }
}
