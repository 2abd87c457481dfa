//! Every EventType as Tencent's SDK models it, through the real bridge both ways: queued in the
//! emulator and pulled, and pushed by the emulator as VOD pushes. Each envelope's `subject`,
//! `partitionkey`, `vodtaskid` and `time` must be what
//! `crates/vodbridge-tencent/tests/fixtures/sdk/expected.json` says, for both ingresses.

use std::{sync::Arc, time::Duration};

use serde_json::Value;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use vodbridge_core::{Ingress, Sink};

use crate::helpers::{emulator, settings, wait_for, Behaviour, Scripted, TestApp};

const ID: &str = "AKIDTYPES";
const KEY: &str = "types-secret";
const PULL_APP: u64 = 1_500_000_301;

fn sdk_dir() -> String {
    format!(
        "{}/crates/vodbridge-tencent/tests/fixtures/sdk",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn read_json(name: &str) -> Value {
    let path = format!("{}/{name}", sdk_dir());
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[tokio::test]
async fn every_sdk_event_type_through_push_and_pull() {
    let expected = read_json("expected.json");
    let expected = expected.as_object().expect("a map of EventType → envelope");
    assert!(
        expected.len() >= 35,
        "every SDK EventType: {}",
        expected.len()
    );
    let bodies: Vec<Value> = expected
        .keys()
        .map(|event_type| read_json(&format!("{event_type}.json")))
        .collect();

    let emu = emulator(ID, KEY, Duration::from_secs(30)).await;
    let sink = Scripted::new("main", Behaviour::Ack);
    let toml = format!(
        r#"
[sources.pulled]
mode = "pull"
endpoint = "{endpoint}"
sub_app_id = {PULL_APP}
secret_id = "{ID}"
secret_key = "{KEY}"
loops = 1
max_backoff_ms = 500
[sources.pushed]
mode = "push"
[sinks.main]
type = "stdout"
"#,
        endpoint = emu.endpoint()
    );
    let started = OffsetDateTime::now_utc();
    let app = TestApp::start(settings(&toml), vec![Arc::clone(&sink) as Arc<dyn Sink>]).await;
    for body in &bodies {
        emu.emulator.enqueue(PULL_APP, body);
    }
    emu.emulator
        .push(&app.url("/callback/pushed"), bodies.clone(), 50.0);
    wait_for(
        "every event pulled and pushed",
        Duration::from_secs(60),
        || sink.acked_count() >= 2 * bodies.len(),
    )
    .await;
    let finished = OffsetDateTime::now_utc();

    let acked = sink.acked.lock().expect("lock").clone();
    for ingress in [Ingress::Pull, Ingress::Push] {
        for (event_type, want) in expected {
            let ctx = format!("{event_type} ({})", ingress.as_str());
            let envelope = acked
                .iter()
                .map(|m| &m.envelope)
                .find(|e| &e.event_type == event_type && e.ingress == ingress)
                .unwrap_or_else(|| panic!("{ctx}: no envelope"));
            assert_eq!(
                envelope.subject.as_deref(),
                want["subject"].as_str(),
                "{ctx}: subject"
            );
            assert_eq!(
                Some(envelope.partition_key.as_str()),
                want["partitionkey"].as_str(),
                "{ctx}: partitionkey"
            );
            assert_eq!(
                envelope.task_id.as_deref(),
                want["vodtaskid"].as_str(),
                "{ctx}: vodtaskid"
            );
            match want["time"].as_str() {
                Some(time) => assert_eq!(
                    Some(envelope.time),
                    OffsetDateTime::parse(time, &Rfc3339).ok(),
                    "{ctx}: the event's own time"
                ),
                None => assert!(
                    envelope.time >= started - time::Duration::seconds(1)
                        && envelope.time <= finished,
                    "{ctx}: the time received, got {}",
                    envelope.time
                ),
            }
        }
    }
    app.stop().await.expect("clean stop");
}
