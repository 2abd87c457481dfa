//! `vodbridge redrive` against the file sink's JSON Lines (rotated files included) and real
//! brokers' dead-letter destinations (a RabbitMQ queue, a NATS JetStream stream, a Kafka topic
//! on tansu). The dead letters are written by the bridge's own sinks, so they are exactly what
//! the bridge writes. Four of them: two `unroutable` uploads/deletes that now have a route, one
//! `too_large` the filter leaves out, one whose route fails again. Every case checks the dry run
//! changes nothing, the redrive republishes with the same ids, and what it did not take (the
//! filtered one, the failed one) is still there for the next redrive.

use std::{collections::HashSet, path::Path, process::Command, sync::Arc, time::Duration};

use bytes::Bytes;
use lapin::{options::QueueDeclareOptions, types::FieldTable};
use time::OffsetDateTime;
use vodbridge_core::{
    Background, DeadLetterInfo, Envelope, FailureReason, Ingress, Message, Sink, TraceParent,
};
use vodbridge_tencent::{Normalizer, RawEvent};
use vodbridge_testkit::{NatsServer, RabbitMq, Tansu};

/// A sink configuration from the TOML the bridge reads.
fn sink_config<T: serde::de::DeserializeOwned>(text: &str) -> T {
    use figment::providers::Format;
    figment::Figment::from(figment::providers::Toml::string(text))
        .extract()
        .expect("sink config")
}

/// One dead letter: its envelope, reason, and what the redrive must do with it.
struct DeadLetter {
    envelope: Arc<Envelope>,
    reason: FailureReason,
}

/// A: upload, unroutable (redriven); B: upload, too_large (filtered out); C: delete,
/// unroutable (redriven); D: task flow, unroutable, whose route fails again (left in place).
fn dead_letters() -> Vec<DeadLetter> {
    let mut generator = vod_emulator::generate::Generator::new(41);
    let normalizer = Normalizer::new(
        "/tencentcloud/vod/1500000001",
        Some(1_500_000_001),
        Ingress::Pull,
    );
    [
        ("NewFileUpload", FailureReason::Unroutable),
        ("NewFileUpload", FailureReason::TooLarge),
        ("FileDeleted", FailureReason::Unroutable),
        ("ProcedureStateChanged", FailureReason::Unroutable),
    ]
    .into_iter()
    .map(|(event_type, reason)| {
        let body = Bytes::from(generator.event(event_type).to_string());
        let event = RawEvent::parse(&body).expect("parses");
        let mut envelope = normalizer
            .normalize(event, OffsetDateTime::now_utc())
            .expect("normalizes");
        // As every envelope the bridge writes.
        envelope.traceparent = Some(TraceParent::random());
        DeadLetter {
            envelope: Arc::new(envelope),
            reason,
        }
    })
    .collect()
}

/// Publishes the dead letters with `sink` to `destination`, as the bridge's dead-letter step
/// does.
async fn write_dead_letters(sink: &dyn Sink, destination: &str, letters: &[DeadLetter]) {
    let started = std::time::Instant::now();
    while !sink.is_healthy() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "sink not healthy"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for letter in letters {
        let message = Message {
            destination: destination.to_owned(),
            envelope: Arc::clone(&letter.envelope),
            dead_letter: Some(DeadLetterInfo {
                reason: letter.reason,
                detail: "refused for the test".into(),
                failed_sink: "old".into(),
                failed_destination: "old.destination".into(),
            }),
        };
        sink.publish(&message).await.expect("dead letter written");
    }
}

/// Runs the CLI; its exit status and standard output.
fn redrive(config: &Path, args: &[String]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_vodbridge"))
        .arg("redrive")
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("redrive {args:?}:\n{stdout}{stderr}");
    (output.status.success(), stdout)
}

/// The three runs every case makes, and what each must show. `taken` reads the ids at the
/// redrive's destination; `left` says how many dead letters the source must still offer.
async fn scenario<F, Fut>(
    config: &Path,
    from: &[&str],
    letters: &[DeadLetter],
    left: usize,
    taken: F,
) where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = HashSet<String>>,
{
    let id = |i: usize| letters[i].envelope.id.to_string();
    let with = |extra: &[&'static str]| -> Vec<String> {
        from.iter()
            .map(|s| (*s).to_owned())
            .chain(extra.iter().map(|s| (*s).to_owned()))
            .collect()
    };

    // Dry run: the plan, nothing published, nothing acknowledged.
    let dry = with(&["--reason", "unroutable", "--dry-run"]);
    let (ok, plan) = redrive(config, &dry);
    assert!(ok, "dry run: {plan}");
    assert!(plan.contains("3 would be redriven"), "{plan}");
    assert!(plan.contains("1 skipped"), "{plan}");
    assert!(
        plan.contains(&format!(
            "{} NewFileUpload (dead letter: unroutable) -> out:",
            id(0)
        )),
        "{plan}"
    );
    assert!(
        !plan.contains(&id(1)),
        "the too_large one is filtered out: {plan}"
    );
    assert!(taken().await.is_empty(), "a dry run publishes nothing");

    // The redrive: A and C republished with their ids, D fails again (exit status 1).
    let real = with(&["--reason", "unroutable"]);
    let (ok, summary) = redrive(config, &real);
    assert!(!ok, "an event failed again: the exit status says so");
    assert!(summary.contains("2 redriven"), "{summary}");
    assert!(summary.contains("1 skipped"), "{summary}");
    assert!(
        summary.contains("1 failed and left where they were"),
        "{summary}"
    );
    let landed = taken().await;
    assert_eq!(
        landed,
        HashSet::from([id(0), id(2)]),
        "same ids, at the new route"
    );

    // What it did not take is still there.
    let again = with(&["--dry-run"]);
    let (ok, plan) = redrive(config, &again);
    assert!(ok, "{plan}");
    assert!(
        plan.contains(&format!("{left} would be redriven")),
        "{plan}"
    );
    for kept in [1, 3] {
        assert!(
            plan.contains(&id(kept)),
            "dead letter {kept} left in place: {plan}"
        );
    }
}

/// Routes of every case: task flows to a destination that fails, the rest to `out`.
fn routes(failing: &str) -> String {
    format!(
        r#"
[[routes]]
event_types = ["ProcedureStateChanged"]
sinks = [{failing}]
[[routes]]
event_types = ["*"]
sinks = [{{ sink = "out", destination = "vod.{{event_type}}" }}]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_from_the_file_sink_including_rotated_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dead = dir.path().join("dead.jsonl");
    let letters = dead_letters();
    let file_config = |path: &Path| vodbridge::config::FileSinkConfig {
        path: path.to_owned(),
        fsync: vodbridge::config::FsyncPolicy::Always,
        rotate_bytes: None,
        keep_files: None,
    };
    // Two dead letters in a rotated file, two in the live one.
    let sink = vodbridge::sinks::LineSink::file("dead", &file_config(&dead)).expect("opens");
    write_dead_letters(&sink, "", &letters[..2]).await;
    sink.close().await.expect("closes");
    std::fs::rename(&dead, dir.path().join("dead.jsonl.20261201T000000Z-000001")).expect("rotate");
    let sink = vodbridge::sinks::LineSink::file("dead", &file_config(&dead)).expect("opens");
    write_dead_letters(&sink, "", &letters[2..]).await;
    sink.close().await.expect("closes");

    let out = dir.path().join("out.jsonl");
    let config = dir.path().join("redrive.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[sinks.out]
type = "file"
path = {out:?}
[sinks.broken]
type = "file"
path = "/dev/full"
{}"#,
            routes(r#"{ sink = "broken" }"#),
            out = out.display().to_string()
        ),
    )
    .expect("config");
    let from = format!("file:{}", dead.display());
    // A file is a log: nothing is removed, so the third run still sees all four.
    scenario(&config, &["--from", from.as_str()], &letters, 4, || async {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .map(|line| {
                Envelope::from_structured_json(line.as_bytes())
                    .expect("envelope")
                    .id
                    .to_string()
            })
            .collect()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_from_a_rabbitmq_queue() {
    let rabbit = RabbitMq::start();
    // The redrive's destination (`events`, bound to `vod.#`) and the dead letters' queue.
    let (_connection, channel) = crate::helpers::amqp_consumer(&rabbit).await;
    vodbridge_testkit::rabbitmq_client::declare_queue(
        &channel,
        "dlx",
        "dead",
        "dead",
        lapin::types::FieldTable::default(),
    )
    .await;
    let letters = dead_letters();
    let amqp = |exchange: &str| -> vodbridge_amqp::AmqpSinkConfig {
        sink_config(&format!(
            "url = \"{}\"\nexchange = \"{exchange}\"\n",
            rabbit.url()
        ))
    };
    let background = Background::default();
    let sink =
        vodbridge_amqp::AmqpSink::start("dead", amqp("dlx"), background.child()).expect("sink");
    write_dead_letters(&sink, "dead", &letters).await;
    sink.close().await.expect("closes");

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("redrive.toml");
    std::fs::write(
        &config,
        format!(
            "[delivery]\nunroutable_retries = 0\n[sinks.out]\ntype = \"amqp\"\nurl = \"{}\"\nexchange = \"vod\"\n{}",
            rabbit.url(),
            // No queue is bound to `nowhere.*`: the broker returns it (unroutable).
            routes(r#"{ sink = "out", destination = "nowhere.{event_type}" }"#)
        ),
    )
    .expect("config");
    scenario(
        &config,
        &["--from", "amqp:dead", "--sink", "out"],
        &letters,
        2,
        || async {
            crate::helpers::amqp_drain(&channel)
                .await
                .into_iter()
                .map(|e| e.id.to_string())
                .collect()
        },
    )
    .await;
    let dead = channel
        .queue_declare(
            "dead".into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("dead queue");
    assert_eq!(dead.message_count(), 2, "B and D are back in the queue");
    background.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_from_a_jetstream_stream() {
    let nats = NatsServer::start();
    let letters = dead_letters();
    let background = Background::default();
    let dead_config: vodbridge_nats::NatsSinkConfig = sink_config(&format!(
        "url = \"{}\"\nstream = \"DEAD\"\ncreate_stream = true\nstream_subjects = [\"dead.>\"]\n",
        nats.url()
    ));
    let sink =
        vodbridge_nats::NatsSink::start("dead", dead_config, background.child()).expect("sink");
    write_dead_letters(&sink, "dead.events", &letters).await;
    sink.close().await.expect("closes");

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("redrive.toml");
    std::fs::write(
        &config,
        format!(
            "[delivery]\nunroutable_retries = 0\n[sinks.out]\ntype = \"nats\"\nurl = \"{}\"\nstream = \"VOD\"\ncreate_stream = true\nstream_subjects = [\"vod.>\"]\n{}",
            nats.url(),
            // No stream takes `nowhere.*`: unroutable.
            routes(r#"{ sink = "out", destination = "nowhere.{event_type}" }"#)
        ),
    )
    .expect("config");
    let url = nats.url();
    scenario(
        &config,
        &["--from", "nats:DEAD/dead.>", "--sink", "out"],
        &letters,
        2,
        || async {
            crate::helpers::jetstream_envelopes(&url, "VOD")
                .await
                .into_iter()
                .map(|e| e.id.to_string())
                .collect()
        },
    )
    .await;
    background.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redrive_from_a_kafka_topic() {
    use rdkafka::{
        consumer::{BaseConsumer, Consumer},
        message::{Headers, Message as _},
        ClientConfig, Offset, TopicPartitionList,
    };
    let broker = Tansu::start();
    // One partition each: the redrive's commits are then in the order of the dead letters.
    broker
        .create_topics(&[
            ("vod.dead", 1),
            ("vod.NewFileUpload", 1),
            ("vod.FileDeleted", 1),
        ])
        .await;
    let letters = dead_letters();
    let kafka_config = |brokers: &str| -> vodbridge_kafka::KafkaSinkConfig {
        sink_config(&format!(
            "brokers = \"{brokers}\"\nmessage_timeout_ms = 3000\n"
        ))
    };
    let background = Background::default();
    let sink = vodbridge_kafka::KafkaSink::start(
        "dead",
        kafka_config(&broker.bootstrap()),
        background.child(),
    )
    .expect("sink");
    write_dead_letters(&sink, "vod.dead", &letters).await;
    sink.close().await.expect("closes");

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("redrive.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\npublish_timeout_ms = 4000\n[sinks.out]\ntype = \"kafka\"\nbrokers = \"{}\"\nmessage_timeout_ms = 3000\n{}",
            broker.bootstrap(),
            // A topic that does not exist: the delivery report never comes.
            routes(r#"{ sink = "out", destination = "vod.missing" }"#)
        ),
    )
    .expect("config");
    let bootstrap = broker.bootstrap();
    let read = move || {
        let bootstrap = bootstrap.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let consumer: BaseConsumer = ClientConfig::new()
                    .set("bootstrap.servers", &bootstrap)
                    .set("group.id", "redrive-test-reader")
                    .set("enable.auto.commit", "false")
                    .create()
                    .expect("consumer");
                let mut ids = HashSet::new();
                for topic in ["vod.NewFileUpload", "vod.FileDeleted"] {
                    let mut assignment = TopicPartitionList::new();
                    assignment
                        .add_partition_offset(topic, 0, Offset::Beginning)
                        .expect("offset");
                    consumer.assign(&assignment).expect("assign");
                    let quiet = std::time::Instant::now();
                    while quiet.elapsed() < Duration::from_secs(2) {
                        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
                            let id = message
                                .headers()
                                .and_then(|h| h.iter().find(|x| x.key == "ce_id"))
                                .and_then(|x| x.value)
                                .map(|v| String::from_utf8_lossy(v).into_owned());
                            ids.extend(id);
                        }
                    }
                }
                ids
            })
            .await
            .expect("reader")
        }
    };
    // B (filtered out) stops the partition's commit: C and D come back with it, so the third
    // run sees three.
    scenario(
        &config,
        &["--from", "kafka:vod.dead", "--sink", "out"],
        &letters,
        3,
        read,
    )
    .await;
    background.stop().await;
}
