//! What the load harnesses share: environment knobs, the readiness wait, medians, and the
//! RabbitMQ topology they publish into. Each harness includes it with `mod support;` and uses
//! its own subset.
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// A count from the environment variable `name`, else `default`.
pub(crate) fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Median of a non-empty list.
pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Waits until `GET ready_url` answers 200 (broker sinks connect in the background).
///
/// # Panics
///
/// After 30 s.
pub(crate) async fn wait_ready(client: &reqwest::Client, ready_url: &str) {
    let started = Instant::now();
    while client
        .get(ready_url)
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "bridge not ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A durable topic exchange and a durable queue bound to every routing key (`#`): mandatory
/// publishes need a queue to reach.
pub(crate) async fn declare_topic_queue(
    rabbit: &vodbridge_testkit::RabbitMq,
    exchange: &str,
    queue: &str,
) {
    rabbit
        .declare_queue(exchange, queue, "#", lapin::types::FieldTable::default())
        .await;
}

/// Creates Kafka topics of 3 partitions (tansu does not create them on first use).
pub(crate) async fn create_kafka_topics(broker: &vodbridge_testkit::Tansu, topics: &[&str]) {
    let topics: Vec<(&str, i32)> = topics.iter().map(|t| (*t, 3)).collect();
    broker.create_topics(&topics).await;
}

/// The bridge binary (`MEMORY_BINARY`, else this build's) on `config`, output discarded;
/// returns once `/readyz` answers 200.
pub(crate) async fn start_bridge(
    config: &str,
    port: u16,
    client: &reqwest::Client,
) -> (std::process::Child, tempfile::NamedTempFile) {
    let mut file = tempfile::NamedTempFile::new().expect("tempfile");
    std::io::Write::write_all(&mut file, config.as_bytes()).expect("write config");
    let binary = std::env::var("MEMORY_BINARY")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_vodbridge").to_owned());
    let child = std::process::Command::new(binary)
        .args(["run", "--config"])
        .arg(file.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("vodbridge starts");
    wait_ready(client, &format!("http://127.0.0.1:{port}/readyz")).await;
    (child, file)
}
