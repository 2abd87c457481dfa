//! The bridge into a real NATS JetStream server: callbacks and pulled events arrive with the
//! right subject, headers and bytes; nothing is acknowledged to VOD while NATS is down.

use std::{collections::HashSet, time::Duration};

use vodbridge_core::{Envelope, Ingress};
use vodbridge_testkit::NatsServer;

use crate::helpers::{emulator, fixture, settings, wait_for, TestApp};

fn config(nats: &NatsServer, emulator: &str) -> String {
    format!(
        r#"
[server]
publish_timeout_ms = 1500
[sources.default]
mode = "push"
sub_app_id = 1500000001
# These tests check that nothing is answered 200 while the broker is down, so fast; holding
# for VOD is tested in the reliability suite (push_outage.rs).
on_sink_failure = "reject"
[sources.app]
mode = "pull"
endpoint = "{emulator}"
sub_app_id = 1500000002
secret_id = "AKIDNATS"
secret_key = "nats-key"
loops = 2
handle_lifetime_ms = 3000
confirm_margin_ms = 1000
max_backoff_ms = 300
[sinks.nats]
type = "nats"
url = "{url}"
stream = "VOD"
create_stream = true
stream_subjects = ["vod.>"]
ack_timeout_ms = 1000
[[routes]]
event_types = ["*"]
sinks = [{{ sink = "nats", destination = "vod.{{sub_app_id}}.{{event_type}}" }}]
"#,
        url = nats.url()
    )
}

async fn stored(nats: &NatsServer) -> Vec<async_nats::jetstream::message::StreamMessage> {
    let client = async_nats::connect(nats.url())
        .await
        .expect("consumer connects");
    let stream = async_nats::jetstream::new(client)
        .get_stream("VOD")
        .await
        .expect("stream");
    let count = stream.get_info().await.expect("info").state.messages;
    let mut out = Vec::new();
    for seq in 1..=count {
        out.push(stream.get_raw_message(seq).await.expect("message"));
    }
    out
}

fn decode(message: &async_nats::jetstream::message::StreamMessage) -> Envelope {
    let envelope = Envelope::from_binary(
        |name| {
            message
                .headers
                .get(format!("ce-{name}").as_str())
                .map(|v| v.as_str().to_owned().into())
        },
        message.payload.clone(),
    )
    .expect("a CloudEvent in binary mode");
    // Every event carries its trace: the binding's ce-traceparent and W3C's own header agree.
    let plain = message
        .headers
        .get("traceparent")
        .map(|v| v.as_str().to_owned());
    let traceparent = envelope.traceparent.expect("ce-traceparent").to_string();
    assert_eq!(
        plain.as_deref(),
        Some(traceparent.as_str()),
        "traceparent header"
    );
    envelope
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_and_pulled_events_land_in_jetstream() {
    let nats = NatsServer::start();
    let emu = emulator("AKIDNATS", "nats-key", Duration::from_secs(3)).await;
    emu.emulator
        .generate(1_500_000_002, 30, &vod_emulator::generate::parse_types(""));
    let app = TestApp::start(settings(&config(&nats, &emu.endpoint())), vec![]).await;
    app.wait_ready(Duration::from_secs(20)).await;

    for name in ["NewFileUpload", "ProcedureStateChanged", "unknown_type"] {
        assert_eq!(
            app.post("/callback/default", fixture(name)).await.status(),
            200,
            "{name}"
        );
    }
    wait_for(
        "30 pulled events confirmed",
        Duration::from_secs(30),
        || emu.emulator.stats().confirmed == 30,
    )
    .await;

    let messages = stored(&nats).await;
    assert_eq!(messages.len(), 33, "every event stored once");
    let mut ids = HashSet::new();
    for message in &messages {
        let envelope = decode(message);
        let sub = envelope.sub_app_id.expect("sub app id");
        assert_eq!(
            message.subject.as_str(),
            format!("vod.{sub}.{}", envelope.event_type),
            "subject from the route template"
        );
        assert_eq!(
            message
                .headers
                .get("Nats-Msg-Id")
                .map(|v| v.as_str().to_owned()),
            Some(envelope.id.to_string())
        );
        assert!(!String::from_utf8_lossy(&message.payload).contains("EventHandle"));
        match envelope.ingress {
            Ingress::Push => assert_eq!(sub, 1_500_000_001),
            Ingress::Pull => assert_eq!(sub, 1_500_000_002),
        }
        ids.insert(envelope.id);
    }
    assert_eq!(ids.len(), 33);
    let pushed = messages
        .iter()
        .map(decode)
        .find(|e| e.event_type == "ProcedureStateChanged" && e.ingress == Ingress::Push);
    assert_eq!(
        pushed.map(|e| e.data),
        Some(fixture("ProcedureStateChanged").into()),
        "bytes as received"
    );
    app.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_acknowledged_while_nats_is_down() {
    let mut nats = NatsServer::start();
    let emu = emulator("AKIDNATS", "nats-key", Duration::from_secs(3)).await;
    let app = TestApp::start(settings(&config(&nats, &emu.endpoint())), vec![]).await;
    app.wait_ready(Duration::from_secs(10)).await;

    nats.stop();
    app.wait_unready(Duration::from_secs(10)).await;
    let response = app
        .post("/callback/default", fixture("NewFileUpload"))
        .await;
    assert_eq!(response.status(), 503, "no 200 while the broker is down");
    emu.emulator
        .generate(1_500_000_002, 10, &vod_emulator::generate::parse_types(""));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        emu.emulator.stats().confirmed,
        0,
        "no confirm while the broker is down"
    );

    nats.restart();
    wait_for(
        "everything confirmed after the restart",
        Duration::from_secs(30),
        || emu.emulator.stats().confirmed == 10,
    )
    .await;
    assert_eq!(
        app.post("/callback/default", fixture("NewFileUpload"))
            .await
            .status(),
        200,
        "VOD's retry succeeds"
    );
    let messages = stored(&nats).await;
    assert_eq!(messages.len(), 11);
    app.stop().await.expect("clean stop");
}
