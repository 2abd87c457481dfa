//! Load harness: events/s through the bridge into Kafka (tansu), NATS JetStream and RabbitMQ,
//! beside a direct client publishing the same envelopes with the same guarantees (PubAck /
//! publisher confirm, persistent, mandatory) at the same concurrency, in the same run; the
//! bridge is measured from those envelopes and from the raw bodies.
//!
//! `cargo bench --bench broker_throughput`; env `EVENTS` (50,000), `CONCURRENCY` (32), `ROUNDS`
//! (5: the three measurements rotate, medians reported) and `BROKERS` (`kafka,nats,amqp`).
#![allow(missing_docs)]

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use bytes::Bytes;

/// The allocator the `vodbridge` binary ships with, so the bench measures what runs.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use lapin::{
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::{AMQPValue, FieldTable, LongString},
    BasicProperties, Confirmation, Connection, ConnectionProperties,
};
use vod_emulator::generate::{parse_types, Generator};
use vodbridge::{
    config::{Config, Settings},
    App,
};
use vodbridge_core::{
    Background, Envelope, EventTypePattern, Ingress, Pipeline, Route, RouteAction, RouteContext,
    RouteTable, Sink, Target, Template,
};
use vodbridge_tencent::{Normalizer, RawEvent};
use vodbridge_testkit::{NatsServer, RabbitMq, Tansu};

mod support;

/// Runs `work(i)` for i in 0..n with `concurrency` tasks; returns events/s.
async fn drive<F, Fut>(n: usize, concurrency: usize, work: F) -> f64
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let work = Arc::new(work);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (work, next) = (Arc::clone(&work), Arc::clone(&next));
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    work(i).await;
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    n as f64 / started.elapsed().as_secs_f64()
}

/// The bridge on its push path: `concurrency` HTTP clients POST callbacks and wait for 200.
async fn bridge(sink_toml: &str, bodies: Arc<Vec<Bytes>>, concurrency: usize) -> f64 {
    let toml = format!("[server]\nlisten = \"127.0.0.1:0\"\nmax_in_flight = 4096\n[telemetry]\nlog_level = \"error\"\n{sink_toml}");
    let settings = Settings::from_config(Config::from_toml(&toml).expect("config")).expect("valid");
    let app = App::build(settings).await.expect("app");
    let url = format!(
        "http://{}/callback/default",
        app.local_addr().expect("addr")
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    // Wait until the broker sink is connected.
    support::wait_ready(&client, &url.replace("/callback/default", "/readyz")).await;
    let rate = drive(bodies.len(), concurrency, move |i| {
        let (client, url, body) = (client.clone(), url.clone(), bodies[i].clone());
        async move {
            loop {
                match client.post(&url).body(body.clone()).send().await {
                    Ok(r) if r.status() == 200 => break,
                    _ => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        }
    })
    .await;
    let _ = stop.send(());
    let _ = server.await;
    rate
}

/// The bridge's own path without HTTP: normalize each body and deliver it through the pipeline
/// to the real sink, at the same concurrency (the HTTP load generator would otherwise compete
/// for the same two cores).
async fn pipeline(
    sink: Arc<dyn Sink>,
    destination: &str,
    bodies: Arc<Vec<Bytes>>,
    concurrency: usize,
) -> f64 {
    while !sink.is_healthy() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pipeline = Arc::new(one_route_pipeline(sink, destination));
    let normalizer = Arc::new(Normalizer::new(
        "/tencentcloud/vod/default",
        None,
        Ingress::Push,
    ));
    drive(bodies.len(), concurrency, move |i| {
        let (pipeline, normalizer, body) = (
            Arc::clone(&pipeline),
            Arc::clone(&normalizer),
            bodies[i].clone(),
        );
        async move {
            let event = RawEvent::parse(&body).expect("parses");
            let envelope = Arc::new(
                normalizer
                    .normalize(event, time::OffsetDateTime::now_utc())
                    .expect("normalizes"),
            );
            let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
            let report = pipeline
                .deliver(envelope, RouteContext { source: "default" }, deadline)
                .await;
            assert!(report.outcome.is_handled(), "{:?}", report.outcome);
        }
    })
    .await
}

/// The pipeline and sink from the same envelopes the direct client gets (no parsing): what
/// routing and the sink add over a client holding envelopes.
async fn pipeline_from_envelopes(
    sink: Arc<dyn Sink>,
    destination: &str,
    envelopes: Arc<Vec<Arc<Envelope>>>,
    concurrency: usize,
) -> f64 {
    while !sink.is_healthy() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pipeline = Arc::new(one_route_pipeline(sink, destination));
    drive(envelopes.len(), concurrency, move |i| {
        let (pipeline, envelope) = (Arc::clone(&pipeline), Arc::clone(&envelopes[i]));
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
            let report = pipeline
                .deliver(envelope, RouteContext { source: "default" }, deadline)
                .await;
            assert!(report.outcome.is_handled(), "{:?}", report.outcome);
        }
    })
    .await
}

/// Every event type to `sink` at `destination`.
fn one_route_pipeline(sink: Arc<dyn Sink>, destination: &str) -> Pipeline {
    let routes = RouteTable::new(
        vec![Route {
            patterns: vec![EventTypePattern::Any],
            action: RouteAction::Publish(vec![Target {
                sink: sink.name().to_owned(),
                destination: Template::parse(destination).expect("template"),
                required: true,
            }]),
        }],
        vodbridge_tencent::catalog::known_event_types(),
    )
    .expect("routes");
    Pipeline::new(vec![sink], routes, None).expect("pipeline")
}

async fn direct_nats(
    server: &NatsServer,
    envelopes: Arc<Vec<Arc<Envelope>>>,
    concurrency: usize,
) -> f64 {
    let client = async_nats::connect(server.url()).await.expect("connect");
    let js = async_nats::jetstream::new(client);
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: "DIRECT".into(),
        subjects: vec!["direct.>".into()],
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .expect("stream");
    drive(envelopes.len(), concurrency, move |i| {
        let (js, envelope) = (js.clone(), Arc::clone(&envelopes[i]));
        async move {
            let mut headers = async_nats::HeaderMap::new();
            for (name, value) in envelope.attributes() {
                headers.insert(format!("ce-{name}").as_str(), value.as_ref());
            }
            headers.insert("content-type", "application/json");
            let publish = async_nats::jetstream::message::PublishMessage::build()
                .payload(envelope.data.clone())
                .headers(headers)
                .message_id(envelope.id.as_str());
            let subject = format!("direct.{}", envelope.event_type);
            js.send_publish(subject, publish)
                .await
                .expect("publish")
                .await
                .expect("PubAck");
        }
    })
    .await
}

async fn direct_kafka(
    broker: &Tansu,
    envelopes: Arc<Vec<Arc<Envelope>>>,
    concurrency: usize,
) -> f64 {
    use rdkafka::{
        message::{Header, OwnedHeaders},
        producer::{FutureProducer, FutureRecord},
        util::Timeout,
    };
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "20000")
        .create()
        .expect("producer");
    drive(envelopes.len(), concurrency, move |i| {
        let (producer, envelope) = (producer.clone(), Arc::clone(&envelopes[i]));
        async move {
            let mut headers = OwnedHeaders::new();
            for (name, value) in envelope.attributes() {
                headers = headers.insert(Header {
                    key: &format!("ce_{name}"),
                    value: Some(value.as_ref()),
                });
            }
            headers = headers.insert(Header {
                key: "content-type",
                value: Some("application/json"),
            });
            let record = FutureRecord::to("direct")
                .key(envelope.partition_key.as_bytes())
                .payload(&envelope.data[..])
                .headers(headers);
            producer
                .send(record, Timeout::After(Duration::from_secs(5)))
                .await
                .expect("delivered");
        }
    })
    .await
}

async fn direct_amqp(
    broker: &RabbitMq,
    envelopes: Arc<Vec<Arc<Envelope>>>,
    concurrency: usize,
) -> f64 {
    let connection = Connection::connect(&broker.url(), ConnectionProperties::default())
        .await
        .expect("connect");
    let mut channels = Vec::new();
    for _ in 0..4 {
        let channel = connection.create_channel().await.expect("channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        channels.push(channel);
    }
    let channels = Arc::new(channels);
    drive(envelopes.len(), concurrency, move |i| {
        let (channels, envelope) = (Arc::clone(&channels), Arc::clone(&envelopes[i]));
        async move {
            let mut headers = FieldTable::default();
            for (name, value) in envelope.attributes() {
                headers.insert(
                    format!("cloudEvents_{name}").into(),
                    AMQPValue::LongString(LongString::from(value.as_ref())),
                );
            }
            let properties = BasicProperties::default()
                .with_message_id(envelope.id.as_str().into())
                .with_content_type("application/json".into())
                .with_type(envelope.ty.as_str().into())
                .with_timestamp(u64::try_from(envelope.time.unix_timestamp()).unwrap_or(0))
                .with_delivery_mode(2)
                .with_headers(headers);
            let key = format!("vod.{}", envelope.event_type);
            let confirm = channels[i % channels.len()]
                .basic_publish(
                    "bench".into(),
                    key.as_str().into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..Default::default()
                    },
                    &envelope.data,
                    properties,
                )
                .await
                .expect("publish")
                .await
                .expect("confirm");
            assert!(matches!(confirm, Confirmation::Ack(None)));
        }
    })
    .await
}

/// A sink config from the TOML the bridge would read.
/// Empties both benchmark queues, so every round starts from the same broker state.
async fn purge(rabbit: &RabbitMq) {
    let connection = Connection::connect(&rabbit.url(), ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = connection.create_channel().await.expect("channel");
    for queue in ["bench-all", "vod-all"] {
        channel
            .queue_purge(queue.into(), lapin::options::QueuePurgeOptions::default())
            .await
            .expect("purge");
    }
    let _ = connection.close(200, "purged".into()).await;
}

fn toml_sink<T: serde::de::DeserializeOwned>(text: &str) -> T {
    use figment::providers::Format;
    figment::Figment::from(figment::providers::Toml::string(text))
        .extract()
        .expect("sink config")
}

/// What every row measures with.
struct Run<'a> {
    runtime: &'a tokio::runtime::Runtime,
    rounds: usize,
    concurrency: usize,
    bodies: &'a Arc<Vec<Bytes>>,
    envelopes: &'a Arc<Vec<Arc<Envelope>>>,
}

/// One table row: `rounds` rounds of the direct client, the bridge from the same envelopes and
/// the bridge from raw bodies, rotating which goes first (so drift on this shared machine hits
/// all three), then one push-path run. Prints medians and the medians of the per-round ratios.
fn compare(
    run: &Run<'_>,
    label: &str,
    (sink, destination): (&Arc<dyn Sink>, &str),
    before_each: &dyn Fn(),
    direct: &dyn Fn() -> f64,
    through: &dyn Fn() -> f64,
) {
    let (runtime, rounds, events, concurrency) =
        (run.runtime, run.rounds, run.bodies.len(), run.concurrency);
    let direct = || {
        before_each();
        direct()
    };
    let enveloped = || {
        before_each();
        runtime.block_on(pipeline_from_envelopes(
            Arc::clone(sink),
            destination,
            Arc::clone(run.envelopes),
            concurrency,
        ))
    };
    let piped = || {
        before_each();
        runtime.block_on(pipeline(
            Arc::clone(sink),
            destination,
            Arc::clone(run.bodies),
            concurrency,
        ))
    };
    let runs: [&dyn Fn() -> f64; 3] = [&direct, &enveloped, &piped];
    let mut rates: [Vec<f64>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    let (mut env_ratios, mut pipe_ratios) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let mut this = [0.0; 3];
        for k in 0..3 {
            let which = (round + k) % 3;
            this[which] = runs[which]();
        }
        eprintln!(
            "{label} round {}: direct {:.0}/s, from envelopes {:.0}/s ({:.2}), from bodies {:.0}/s ({:.2})",
            round + 1,
            this[0],
            this[1],
            this[1] / this[0],
            this[2],
            this[2] / this[0]
        );
        for (all, rate) in rates.iter_mut().zip(this) {
            all.push(rate);
        }
        env_ratios.push(this[1] / this[0]);
        pipe_ratios.push(this[2] / this[0]);
    }
    let [direct, enveloped, piped] = rates.map(support::median);
    let through = through();
    let range = |ratios: &[f64]| {
        (
            ratios.iter().copied().fold(f64::INFINITY, f64::min),
            ratios.iter().copied().fold(0.0, f64::max),
        )
    };
    let ((el, eh), (pl, ph)) = (range(&env_ratios), range(&pipe_ratios));
    println!(
        "| {label} | {events} | {concurrency} | {direct:.0} | {enveloped:.0} | **{:.2}** ({el:.2}–{eh:.2}) | {piped:.0} | **{:.2}** ({pl:.2}–{ph:.2}) | {through:.0} | {:.2} |",
        support::median(env_ratios),
        support::median(pipe_ratios),
        through / direct
    );
}

fn main() {
    let (events, concurrency, rounds) = (
        support::env_usize("EVENTS", 50_000),
        support::env_usize("CONCURRENCY", 32),
        support::env_usize("ROUNDS", 5).max(1),
    );
    let brokers = std::env::var("BROKERS").unwrap_or_else(|_| "kafka,nats,amqp".into());
    let wanted = |name: &str| brokers.split(',').any(|b| b.trim() == name);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut generator = Generator::new(42);
    let types = parse_types("");
    let bodies: Vec<Bytes> = (0..events)
        .map(|i| Bytes::from(generator.event(&types[i % types.len()]).to_string()))
        .collect();
    let normalizer = Normalizer::new("/tencentcloud/vod/default", None, Ingress::Push);
    let now = time::OffsetDateTime::now_utc();
    let envelopes: Vec<Arc<Envelope>> = bodies
        .iter()
        .map(|b| {
            Arc::new(
                normalizer
                    .normalize(RawEvent::parse(b).expect("parses"), now)
                    .expect("normalizes"),
            )
        })
        .collect();
    let (bodies, envelopes) = (Arc::new(bodies), Arc::new(envelopes));
    let run = Run {
        runtime: &runtime,
        rounds,
        concurrency,
        bodies: &bodies,
        envelopes: &envelopes,
    };

    println!("| broker | events | concurrency | direct client events/s | bridge from the same envelopes (route + sink) events/s | ratio, median (range) of {rounds} rounds | bridge from raw bodies (parse + normalize + route + sink) events/s | ratio | push path incl. HTTP load generator events/s | ratio |");
    println!("|---|---|---|---|---|---|---|---|---|---|");

    if wanted("kafka") {
        let kafka = Tansu::start();
        runtime.block_on(support::create_kafka_topics(
            &kafka,
            &["direct", "pipe", "bridge"],
        ));
        let sink: Arc<dyn Sink> = Arc::new(
            runtime
                .block_on(async {
                    let config: vodbridge_kafka::KafkaSinkConfig =
                        toml_sink(&format!("brokers = \"{}\"", kafka.bootstrap()));
                    vodbridge_kafka::KafkaSink::start("kafka", config, Background::default())
                })
                .expect("sink"),
        );
        let kafka_sink = format!(
            "[sinks.kafka]\ntype = \"kafka\"\nbrokers = \"{}\"\n[[routes]]\nevent_types = [\"*\"]\nsinks = [{{ sink = \"kafka\", destination = \"bridge\" }}]\n",
            kafka.bootstrap()
        );
        compare(
            &run,
            "Kafka (tansu, memory storage)",
            (&sink, "pipe"),
            &|| {},
            &|| runtime.block_on(direct_kafka(&kafka, Arc::clone(&envelopes), concurrency)),
            &|| runtime.block_on(bridge(&kafka_sink, Arc::clone(&bodies), concurrency)),
        );
    }

    if wanted("nats") {
        let nats = NatsServer::start();
        let sink: Arc<dyn Sink> = runtime.block_on(async {
            let config: vodbridge_nats::NatsSinkConfig = toml_sink(&format!(
                "url = \"{}\"\nstream = \"PIPE\"\ncreate_stream = true\nstream_subjects = [\"pipe.>\"]",
                nats.url()
            ));
            Arc::new(
                vodbridge_nats::NatsSink::start("nats", config, Background::default())
                    .expect("sink"),
            )
        });
        let nats_sink = format!(
            "[sinks.nats]\ntype = \"nats\"\nurl = \"{}\"\nstream = \"BRIDGE\"\ncreate_stream = true\nstream_subjects = [\"bridge.>\"]\n[[routes]]\nevent_types = [\"*\"]\nsinks = [{{ sink = \"nats\", destination = \"bridge.{{event_type}}\" }}]\n",
            nats.url()
        );
        compare(
            &run,
            "NATS JetStream (file storage)",
            (&sink, "pipe.{event_type}"),
            &|| {},
            &|| runtime.block_on(direct_nats(&nats, Arc::clone(&envelopes), concurrency)),
            &|| runtime.block_on(bridge(&nats_sink, Arc::clone(&bodies), concurrency)),
        );
    }

    if wanted("amqp") {
        let rabbit = RabbitMq::start();
        // The queue every routing key reaches (mandatory publishes need one).
        for exchange in ["bench", "vod"] {
            runtime.block_on(support::declare_topic_queue(
                &rabbit,
                exchange,
                &format!("{exchange}-all"),
            ));
        }
        let sink: Arc<dyn Sink> = runtime.block_on(async {
            let config: vodbridge_amqp::AmqpSinkConfig =
                toml_sink(&format!("url = \"{}\"\nexchange = \"vod\"", rabbit.url()));
            Arc::new(
                vodbridge_amqp::AmqpSink::start("rabbit", config, Background::default())
                    .expect("sink"),
            )
        });
        let amqp_sink = format!(
            "[sinks.rabbit]\ntype = \"amqp\"\nurl = \"{}\"\nexchange = \"vod\"\n[[routes]]\nevent_types = [\"*\"]\nsinks = [{{ sink = \"rabbit\", destination = \"vod.{{event_type}}\" }}]\n",
            rabbit.url()
        );
        compare(
            &run,
            "RabbitMQ (durable, confirms)",
            (&sink, "vod.{event_type}"),
            &|| runtime.block_on(purge(&rabbit)),
            &|| runtime.block_on(direct_amqp(&rabbit, Arc::clone(&envelopes), concurrency)),
            &|| runtime.block_on(bridge(&amqp_sink, Arc::clone(&bodies), concurrency)),
        );
    }
}
