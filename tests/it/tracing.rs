//! Traces: the real binary exports its spans over OTLP/HTTP to a small OTLP receiver (protobuf
//! decoded with the OpenTelemetry protocol types), with the right parents, kinds and messaging
//! attributes, and the `traceparent` a NATS consumer reads names the event's span, so the
//! consumer's span joins the bridge's trace.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{body::Bytes, extract::State, routing::post, Router};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
    common::v1::any_value::Value as AnyValue,
    trace::v1::{span::SpanKind, Span},
};
use prost::Message as _;
use vodbridge_core::{Envelope, Ingress, TraceParent};
use vodbridge_testkit::{free_port, BridgeProcess, NatsServer};

use crate::helpers::{emulator, wait_for};

/// The spans an OTLP receiver got, and the `service.name` of each export.
#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    services: Vec<String>,
}

/// A minimal OTLP/HTTP trace receiver: `POST /v1/traces` with a protobuf
/// `ExportTraceServiceRequest`, answered with an empty `ExportTraceServiceResponse`.
async fn otlp_receiver() -> (String, Arc<Mutex<Received>>) {
    let received = Arc::new(Mutex::new(Received::default()));
    let app = Router::new()
        .route(
            "/v1/traces",
            post(
                |State(received): State<Arc<Mutex<Received>>>, body: Bytes| async move {
                    let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                    let mut received = received.lock().expect("lock");
                    for resource in request.resource_spans {
                        let service = resource
                            .resource
                            .iter()
                            .flat_map(|r| &r.attributes)
                            .find(|kv| kv.key == "service.name")
                            .and_then(|kv| string(kv.value.as_ref()?.value.as_ref()?))
                            .unwrap_or_default();
                        received.services.push(service);
                        for scope in resource.scope_spans {
                            received.spans.extend(scope.spans);
                        }
                    }
                    (
                        [("content-type", "application/x-protobuf")],
                        ExportTraceServiceResponse::default().encode_to_vec(),
                    )
                },
            ),
        )
        .with_state(Arc::clone(&received));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

fn string(value: &AnyValue) -> Option<String> {
    match value {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(n) => Some(n.to_string()),
        AnyValue::BoolValue(b) => Some(b.to_string()),
        _ => None,
    }
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| string(kv.value.as_ref()?.value.as_ref()?))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The spans of one trace by name (one of each name per trace here).
fn by_name(spans: &[Span], trace_id: &str) -> HashMap<String, Span> {
    spans
        .iter()
        .filter(|s| hex(&s.trace_id) == trace_id)
        .map(|s| (s.name.clone(), s.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_receiver_and_consumers_join_the_trace() {
    let (otlp, received) = otlp_receiver().await;
    let nats = NatsServer::start();
    let emu = emulator("AKIDTRACE", "trace-key", Duration::from_secs(3)).await;
    let port = free_port();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
[telemetry]
log_level = "warn"
[telemetry.otlp]
endpoint = "{otlp}"
service_name = "vodbridge-trace-test"
[sources.push]
mode = "push"
sub_app_id = 1500000001
[sources.app]
mode = "pull"
endpoint = "{endpoint}"
sub_app_id = 1500000002
secret_id = "AKIDTRACE"
secret_key = "trace-key"
loops = 1
handle_lifetime_ms = 3000
confirm_margin_ms = 1000
max_backoff_ms = 300
[sinks.nats]
type = "nats"
url = "{nats}"
stream = "VOD"
create_stream = true
stream_subjects = ["vod.>"]
[[routes]]
event_types = ["*"]
sinks = [{{ sink = "nats", destination = "vod.{{event_type}}" }}]
"#,
        endpoint = emu.endpoint(),
        nats = nats.url()
    );
    let mut bridge = BridgeProcess::start(env!("CARGO_BIN_EXE_vodbridge"), &config, port);
    // (`start` returns once the bridge listens; readiness waits for the NATS sink.)
    let client = reqwest::Client::new();
    let ready_url = format!("{}/readyz", bridge.url());
    let started = std::time::Instant::now();
    while !client
        .get(&ready_url)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(started.elapsed() < Duration::from_secs(20), "not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A push callback from a caller that is itself traced; and one pulled event.
    let upstream: TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        .parse()
        .expect("traceparent");
    let mut events = vod_emulator::generate::Generator::new(17);
    let body = events.event("NewFileUpload");
    let answer = client
        .post(format!("{}/callback/push", bridge.url()))
        .header("traceparent", upstream.to_string())
        .json(&body)
        .send()
        .await
        .expect("push");
    assert_eq!(answer.status(), 200);
    emu.emulator
        .enqueue(1_500_000_002, &events.event("FileDeleted"));
    wait_for(
        "the pulled event confirmed",
        Duration::from_secs(20),
        || emu.emulator.stats().confirmed == 1,
    )
    .await;
    // SIGTERM: the exporter flushes what it holds before the process exits.
    assert!(bridge.terminate(Duration::from_secs(30)), "clean exit");

    // What a consumer reads: the event's traceparent in both headers.
    let consumer = async_nats::connect(nats.url()).await.expect("connect");
    let stream = async_nats::jetstream::new(consumer)
        .get_stream("VOD")
        .await
        .expect("stream");
    let mut envelopes: HashMap<Ingress, (Envelope, TraceParent)> = HashMap::new();
    for seq in 1..=2 {
        let message = stream.get_raw_message(seq).await.expect("message");
        let header = |name: &str| message.headers.get(name).map(|v| v.as_str().to_owned());
        let plain: TraceParent = header("traceparent")
            .expect("traceparent header")
            .parse()
            .expect("valid");
        assert_eq!(
            header("ce-traceparent"),
            Some(plain.to_string()),
            "the binding's header agrees"
        );
        let envelope = Envelope::from_binary(
            |name| header(&format!("ce-{name}")).map(Into::into),
            message.payload.clone(),
        )
        .expect("a CloudEvent");
        assert_eq!(envelope.traceparent, Some(plain));
        envelopes.insert(envelope.ingress, (envelope, plain));
    }

    let received = received.lock().expect("lock");
    assert!(
        received
            .services
            .iter()
            .all(|s| s == "vodbridge-trace-test"),
        "service.name: {:?}",
        received.services
    );

    // Push: the bridge's spans joined the caller's trace.
    let (pushed, pushed_parent) = &envelopes[&Ingress::Push];
    assert_eq!(
        pushed_parent.trace_id, upstream.trace_id,
        "same trace as the caller"
    );
    let spans = by_name(&received.spans, &pushed_parent.trace_id_hex());
    let process = &spans["process push"];
    assert_eq!(
        hex(&process.parent_span_id),
        upstream.span_id_hex(),
        "child of the caller"
    );
    assert_eq!(process.kind, SpanKind::Consumer as i32);
    assert_eq!(
        hex(&process.span_id),
        pushed_parent.span_id_hex(),
        "the consumer's parent is the event's span"
    );
    assert_eq!(
        attribute(process, "messaging.operation.type").as_deref(),
        Some("process")
    );
    assert_eq!(
        attribute(process, "messaging.message.id").as_deref(),
        Some(pushed.id.as_str())
    );
    assert_eq!(
        attribute(process, "cloudevents.event_type").as_deref(),
        Some("com.tencentcloud.vod.NewFileUpload")
    );
    assert_eq!(
        attribute(process, "http.response.status_code").as_deref(),
        Some("200")
    );
    let send = &spans["send vod.NewFileUpload"];
    assert_eq!(
        send.parent_span_id, process.span_id,
        "publish under the event"
    );
    assert_eq!(send.kind, SpanKind::Producer as i32);
    assert_eq!(attribute(send, "messaging.system").as_deref(), Some("nats"));
    assert_eq!(
        attribute(send, "messaging.destination.name").as_deref(),
        Some("vod.NewFileUpload")
    );
    assert_eq!(
        attribute(send, "messaging.operation.type").as_deref(),
        Some("send")
    );
    assert_eq!(
        attribute(send, "messaging.message.id").as_deref(),
        Some(pushed.id.as_str())
    );
    for name in ["normalize", "confirm"] {
        assert_eq!(
            spans[name].parent_span_id, process.span_id,
            "{name} under the event"
        );
    }

    // Pull: a trace of its own (VOD's queue carries none), the confirm is the ConfirmEvents call.
    let (pulled, pulled_parent) = &envelopes[&Ingress::Pull];
    assert_ne!(pulled_parent.trace_id, upstream.trace_id);
    let spans = by_name(&received.spans, &pulled_parent.trace_id_hex());
    let process = &spans["process app"];
    assert!(process.parent_span_id.is_empty(), "a root span");
    assert_eq!(hex(&process.span_id), pulled_parent.span_id_hex());
    assert_eq!(
        attribute(process, "messaging.message.id").as_deref(),
        Some(pulled.id.as_str())
    );
    assert_eq!(
        spans["send vod.FileDeleted"].parent_span_id,
        process.span_id
    );
    assert_eq!(spans["normalize"].parent_span_id, process.span_id);
    let confirm = &spans["ConfirmEvents"];
    assert_eq!(confirm.parent_span_id, process.span_id);
    assert_eq!(confirm.kind, SpanKind::Client as i32);
    assert!(confirm.end_time_unix_nano >= confirm.start_time_unix_nano);
}
