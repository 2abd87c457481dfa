//! Benchmark of what the pipeline adds around a sink: route, render the destination, deadline,
//! merge, report; beside calling the same (no-op) sink directly as the in-run baseline.
#![allow(missing_docs)]

use std::{hint::black_box, sync::Arc, time::Duration};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vodbridge_core::{
    Envelope, EventId, EventTypePattern, Ingress, Message, Pipeline, PublishFuture, Route,
    RouteAction, RouteContext, RouteTable, Sink, Target, Template,
};

/// Acknowledges everything at once.
struct Noop;

impl Sink for Noop {
    fn name(&self) -> &str {
        "noop"
    }
    fn kind(&self) -> &'static str {
        "noop"
    }
    fn publish<'a>(&'a self, message: &'a Message) -> PublishFuture<'a> {
        Box::pin(async move {
            black_box(message);
            Ok(())
        })
    }
}

fn envelope() -> Arc<Envelope> {
    let data =
        br#"{"EventType":"NewFileUpload","FileUploadEvent":{"FileId":"5285485487985271487"}}"#;
    Arc::new(Envelope {
        id: EventId::derive("/tencentcloud/vod/1500000001", data),
        source: "/tencentcloud/vod/1500000001".into(),
        ty: "com.tencentcloud.vod.NewFileUpload".into(),
        subject: Some("5285485487985271487".into()),
        time: time::OffsetDateTime::from_unix_timestamp(1_740_816_000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
        event_time_known: true,
        data: Bytes::from_static(data),
        event_type: "NewFileUpload".into(),
        sub_app_id: Some(1_500_000_001),
        ingress: Ingress::Pull,
        task_id: None,
        partition_key: "5285485487985271487".into(),
        traceparent: None,
    })
}

fn deliver(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let sink: Arc<dyn Sink> = Arc::new(Noop);
    let routes = RouteTable::new(
        vec![Route {
            patterns: vec![EventTypePattern::Any],
            action: RouteAction::Publish(vec![Target {
                sink: "noop".into(),
                destination: Template::parse("vod.{sub_app_id}.{event_type}").expect("template"),
                required: true,
            }]),
        }],
        ["NewFileUpload"],
    )
    .expect("routes");
    let pipeline = Pipeline::new(vec![Arc::clone(&sink)], routes, None).expect("pipeline");
    let envelope = envelope();
    let mut group = c.benchmark_group("one_target");
    group.throughput(Throughput::Elements(1));
    group.bench_function("baseline_sink_publish", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let message = Message {
                    envelope: Arc::clone(&envelope),
                    destination: "vod.1500000001.NewFileUpload".to_owned(),
                    dead_letter: None,
                };
                black_box(sink.publish(&message).await)
            })
        });
    });
    group.bench_function("pipeline_deliver", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
                black_box(
                    pipeline
                        .deliver(
                            Arc::clone(&envelope),
                            RouteContext { source: "default" },
                            deadline,
                        )
                        .await,
                )
            })
        });
    });
    group.bench_function("envelope_attributes", |b| {
        b.iter(|| black_box(black_box(&envelope).attributes()));
    });
    group.finish();
}

criterion_group!(benches, deliver);
criterion_main!(benches);
