//! A fixed amount of normalization work for `valgrind --tool=callgrind`, whose instruction
//! counts are repeatable on a noisy machine where criterion's times are not:
//!
//! ```sh
//! cargo build --release -p vodbridge-tencent --example normalize_instructions
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/normalize_instructions normalize 10000
//! ```
//!
//! Modes: `baseline` (a `serde_json::Value` parse of the body), `normalize` (parse + id +
//! envelope), `pulled` (the same body with an `EventHandle`, so `data` is rebuilt),
//! `structured` (normalize, then the JSON line the file sink writes). Divide the total by the
//! count (less a run with count 0, the start-up) for instructions per event.
#![allow(missing_docs)]

use std::hint::black_box;

use bytes::Bytes;
use time::OffsetDateTime;
use vodbridge_core::Ingress;
use vodbridge_tencent::{Normalizer, RawEvent};

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "normalize".into());
    let count: usize = args.next().and_then(|n| n.parse().ok()).unwrap_or(10_000);
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ProcedureStateChanged.json"
    );
    let pretty = std::fs::read(path).expect("fixture");
    let value: serde_json::Value = serde_json::from_slice(&pretty).expect("json");
    let body = Bytes::from(serde_json::to_vec(&value).expect("compact"));
    let normalizer = Normalizer::new(
        "/tencentcloud/vod/1500000001",
        Some(1_500_000_001),
        Ingress::Pull,
    );
    let now = OffsetDateTime::now_utc();
    // A pulled event carries EventHandle: `data` is rebuilt without it.
    let mut pulled = br#"{"EventHandle":"a1b2c3d4e5f60718293a4b5c6d7e8f90","#.to_vec();
    pulled.extend_from_slice(&body[1..]);
    let pulled = Bytes::from(pulled);
    for _ in 0..count {
        match mode.as_str() {
            "baseline" => {
                black_box(
                    serde_json::from_slice::<serde_json::Value>(black_box(&body)).expect("json"),
                );
            }
            "normalize" => {
                let event = RawEvent::parse(black_box(&body)).expect("parses");
                black_box(normalizer.normalize(event, now).expect("normalizes"));
            }
            "structured" => {
                let event = RawEvent::parse(black_box(&body)).expect("parses");
                let envelope = normalizer.normalize(event, now).expect("normalizes");
                black_box(envelope.to_structured_json(None));
            }
            "pulled" => {
                let event = RawEvent::parse(black_box(&pulled)).expect("parses");
                black_box(normalizer.normalize(event, now).expect("normalizes"));
            }
            other => panic!("unknown mode {other}: baseline, normalize, pulled, structured"),
        }
    }
}
