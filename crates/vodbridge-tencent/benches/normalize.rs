//! Benchmark of normalization (parse + id + envelope) of a 2 KB ProcedureStateChanged body,
//! beside plain `serde_json::Value` parsing of the same bytes as the in-run baseline.
#![allow(missing_docs)]

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use time::OffsetDateTime;
use vodbridge_core::Ingress;
use vodbridge_tencent::{Normalizer, RawEvent};

fn body() -> Bytes {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ProcedureStateChanged.json"
    );
    let pretty = std::fs::read(path).expect("fixture");
    let value: serde_json::Value = serde_json::from_slice(&pretty).expect("json");
    Bytes::from(serde_json::to_vec(&value).expect("compact"))
}

fn normalize(c: &mut Criterion) {
    let body = body();
    let normalizer = Normalizer::new(
        "/tencentcloud/vod/1500000001",
        Some(1_500_000_001),
        Ingress::Pull,
    );
    let now = OffsetDateTime::now_utc();
    let mut group = c.benchmark_group(format!("procedure_state_changed_{}b", body.len()));
    group.throughput(Throughput::Elements(1));
    group.bench_function("baseline_serde_json_value", |b| {
        b.iter(|| {
            black_box(serde_json::from_slice::<serde_json::Value>(black_box(&body)).expect("json"))
        })
    });
    group.bench_function("normalize", |b| {
        b.iter(|| {
            let event = RawEvent::parse(black_box(&body)).expect("parses");
            black_box(normalizer.normalize(event, now).expect("normalizes"))
        })
    });
    // A pulled event carries EventHandle: `data` is rebuilt without it.
    let mut pulled = br#"{"EventHandle":"a1b2c3d4e5f60718293a4b5c6d7e8f90","#.to_vec();
    pulled.extend_from_slice(&body[1..]);
    let pulled = Bytes::from(pulled);
    group.bench_function("normalize_pulled_with_event_handle", |b| {
        b.iter(|| {
            let event = RawEvent::parse(black_box(&pulled)).expect("parses");
            black_box(normalizer.normalize(event, now).expect("normalizes"))
        })
    });
    group.bench_function("normalize_and_encode_structured", |b| {
        b.iter(|| {
            let event = RawEvent::parse(black_box(&body)).expect("parses");
            let envelope = normalizer.normalize(event, now).expect("normalizes");
            black_box(envelope.to_structured_json(None))
        })
    });
    group.finish();
}

criterion_group!(benches, normalize);
criterion_main!(benches);
