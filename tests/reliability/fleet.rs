//! A fleet: 3 replicas pulling one VOD queue (VOD's 30 s handle lifetime) into NATS, RabbitMQ
//! and Kafka through one fan-out route, while `ConfirmEvents` fails for 40 s (longer than a
//! handle lives, so VOD hands the published events out again, mostly to other replicas), then a
//! rolling restart of every replica. Two fleets run side by side on their own VOD queues and
//! destinations: one with the shared delivery record in Redis, one without, so the extra
//! copies each broker's consumer sees are compared in the same run.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use lapin::types::FieldTable;
use serde_json::json;
use vod_emulator::{Faults, RunningEmulator};
use vodbridge_testkit::{BridgeProcess, NatsServer, RabbitMq, RedisServer, Tansu};

use crate::support::{
    acknowledged, bridge, emulator, enqueue, kafka_held_in, kafka_sink, nats_held_in, pull_source,
    rabbit_held, rabbit_sink, report, wait_for, wait_ready, Held,
};

const EVENTS: usize = 6_000;
const REPLICAS: usize = 3;
const LIFETIME_MS: u64 = 30_000;

/// One fleet: its VOD queue, its destinations (prefixed by `name`), its replicas.
struct Fleet {
    name: &'static str,
    emu: RunningEmulator,
    body: String,
    replicas: Vec<BridgeProcess>,
    keys: HashMap<u64, String>,
}

impl Fleet {
    async fn start(
        name: &'static str,
        shared_record: Option<&str>,
        (kafka, rabbit, nats): (&Tansu, &RabbitMq, &NatsServer),
    ) -> Self {
        let emu = emulator(Duration::from_millis(LIFETIME_MS)).await;
        kafka.create_topics(&[(&format!("{name}.events"), 3)]).await;
        rabbit
            .declare_queue("vod", name, &format!("{name}.#"), FieldTable::default())
            .await;
        let record = shared_record.map_or_else(String::new, |url| {
            format!("[delivery]\nshared_record = {url:?}\nshared_record_name = {name:?}\n")
        });
        let stream = stream_name(name);
        let body = format!(
            "{record}{}{}{}[sinks.nats]\ntype = \"nats\"\nurl = \"{}\"\nstream = \"{stream}\"\n\
             create_stream = true\nstream_subjects = [\"{name}.>\"]\nack_timeout_ms = 1500\n\
             [[routes]]\nevent_types = [\"*\"]\nsinks = [{{ sink = \"nats\", destination = \"{name}.{{event_type}}\" }}, \
             {{ sink = \"rabbit\", destination = \"{name}.{{event_type}}\" }}, {{ sink = \"kafka\", destination = \"{name}.events\" }}]\n",
            pull_source(&emu, LIFETIME_MS, 2),
            kafka_sink(kafka),
            rabbit_sink(rabbit),
            nats.url(),
        );
        let replicas = (0..REPLICAS).map(|_| bridge(&body, 35)).collect();
        Self {
            name,
            emu,
            body,
            replicas,
            keys: HashMap::new(),
        }
    }

    /// SIGTERM each replica in turn (asserting a clean exit), start its successor, wait for it
    /// to be ready; returns the exit codes' verdicts.
    async fn rolling_restart(&mut self) -> Vec<bool> {
        let mut clean = Vec::new();
        for index in 0..self.replicas.len() {
            clean.push(self.replicas[index].terminate(Duration::from_secs(45)));
            self.replicas[index] = bridge(&self.body, 35);
            wait_ready(&self.replicas[index], Duration::from_secs(30)).await;
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        clean
    }

    fn confirmed(&self) -> usize {
        acknowledged(&self.emu, &self.keys).len()
    }
}

fn stream_name(fleet: &str) -> String {
    fleet.to_uppercase()
}

/// Extra copies per event a consumer of `held` sees, and the events it lacks of `expected`.
fn copies(held: &Held, expected: &std::collections::HashSet<String>) -> (f64, usize) {
    let extra = held.0.len().saturating_sub(held.unique().len());
    (
        extra as f64 / expected.len().max(1) as f64,
        held.missing(expected).len(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_with_the_shared_record_publishes_each_event_once_per_broker() {
    let kafka = Tansu::start();
    let rabbit = RabbitMq::start();
    let nats = NatsServer::start();
    let redis = RedisServer::start();
    let brokers = (&kafka, &rabbit, &nats);
    let mut shared = Fleet::start("shared", Some(&redis.url()), brokers).await;
    let mut plain = Fleet::start("plain", None, brokers).await;
    for fleet in [&shared, &plain] {
        for replica in &fleet.replicas {
            wait_ready(replica, Duration::from_secs(30)).await;
        }
    }

    // 100 events/s for 60 s into each fleet's queue; ConfirmEvents fails from 10 s to 50 s.
    let started = Instant::now();
    let mut failing = false;
    for second in 0..60 {
        let range = second * EVENTS / 60..(second + 1) * EVENTS / 60;
        for fleet in [&mut shared, &mut plain] {
            let keys = enqueue(&fleet.emu, &format!("9{}", fleet.name.len()), range.clone());
            fleet.keys.extend(keys);
        }
        let fail = (10..50).contains(&second);
        if fail != failing {
            failing = fail;
            for fleet in [&shared, &plain] {
                fleet.emu.emulator.set_faults(Faults {
                    confirm_error_rate: if fail { 1.0 } else { 0.0 },
                    ..Faults::default()
                });
            }
        }
        let next = started + Duration::from_secs(second as u64 + 1);
        tokio::time::sleep(next.saturating_duration_since(Instant::now())).await;
    }
    // The rolling restart, both fleets at once.
    let (shared_exits, plain_exits) =
        tokio::join!(shared.rolling_restart(), plain.rolling_restart());
    wait_for("every event confirmed", Duration::from_secs(180), || {
        shared.confirmed() == EVENTS && plain.confirmed() == EVENTS
    })
    .await;
    let elapsed = started.elapsed().as_secs();

    let mut counts = serde_json::Map::new();
    let mut figures = HashMap::new();
    for fleet in [&shared, &plain] {
        let confirmed = acknowledged(&fleet.emu, &fleet.keys);
        let stats = fleet.emu.emulator.stats();
        let held = [
            ("nats", nats_held_in(&nats, &stream_name(fleet.name)).await),
            ("rabbitmq", rabbit_held(&rabbit, fleet.name).await),
            (
                "kafka",
                kafka_held_in(&kafka, &format!("{}.events", fleet.name)).await,
            ),
        ];
        let mut brokers = serde_json::Map::new();
        for (broker, held) in &held {
            let (extra, lost) = copies(held, &confirmed);
            figures.insert((fleet.name, *broker), (extra, lost));
            brokers.insert(
                (*broker).to_owned(),
                json!({ "messages": held.0.len(), "extra_copies_per_event": (extra * 1000.0).round() / 1000.0, "lost": lost }),
            );
        }
        counts.insert(
            fleet.name.to_owned(),
            json!({ "confirmed": confirmed.len(), "handed_out": stats.deliveries,
                    "redeliveries": stats.redeliveries, "brokers": brokers }),
        );
    }
    counts.insert("sent_per_fleet".into(), json!(EVENTS));
    counts.insert("replicas".into(), json!(REPLICAS));
    counts.insert(
        "sigterm_exit_zero".into(),
        json!(shared_exits.iter().chain(&plain_exits).all(|c| *c)),
    );
    counts.insert("seconds".into(), json!(elapsed));
    report("fleet-shared-record", serde_json::Value::Object(counts));

    assert!(
        shared_exits.iter().chain(&plain_exits).all(|c| *c),
        "every SIGTERM exits 0"
    );
    let redeliveries = shared.emu.emulator.stats().redeliveries;
    assert!(
        redeliveries > 1_000,
        "the scenario made VOD hand events out again: {redeliveries}"
    );
    for broker in ["nats", "rabbitmq", "kafka"] {
        for fleet in ["shared", "plain"] {
            assert_eq!(
                figures[&(fleet, broker)].1,
                0,
                "{fleet}: every confirmed event is in {broker}"
            );
        }
        let (extra, _) = figures[&("shared", broker)];
        assert!(
            extra <= 0.01,
            "{broker}: {extra:.3} extra copies per event with the shared record"
        );
    }
    // Without the record, brokers without a duplicate window pass the copies on.
    assert!(
        figures[&("plain", "rabbitmq")].0 > 0.05,
        "the scenario makes duplicates without the record"
    );
}
