//! Fuzz target: a callback body through `RawEvent::parse` and `Normalizer::normalize` never
//! panics, and an accepted event keeps its id when its keys are reordered, its whitespace
//! changes or a null member is added (the id is over the canonical form).
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use time::OffsetDateTime;
use vodbridge_core::Ingress;
use vodbridge_tencent::{Normalizer, RawEvent};

fn id(normalizer: &Normalizer, body: &Bytes) -> Option<String> {
    let event = RawEvent::parse(body).ok()?;
    let envelope = normalizer
        .normalize(event, OffsetDateTime::UNIX_EPOCH)
        .expect("an accepted body always normalizes");
    Some(envelope.id.to_string())
}

fuzz_target!(|data: &[u8]| {
    let normalizer = Normalizer::new("/tencentcloud/vod/1", Some(1), Ingress::Push);
    let body = Bytes::copy_from_slice(data);
    let Some(original) = id(&normalizer, &body) else {
        return;
    };
    // Variants of the same event: serde_json's map sorts keys (a reordering), pretty printing
    // changes whitespace, a null member is dropped by the canonical form.
    let Ok(serde_json::Value::Object(mut object)) = serde_json::from_slice(data) else {
        return;
    };
    let sorted = Bytes::from(serde_json::to_vec(&object).expect("serializes"));
    let pretty = Bytes::from(serde_json::to_vec_pretty(&object).expect("serializes"));
    // A member name the event does not have (the fuzzer learns names from the target).
    let mut absent = String::from("ZzFuzzNull");
    while object.contains_key(&absent) {
        absent.push('_');
    }
    object.insert(absent, serde_json::Value::Null);
    let with_null = Bytes::from(serde_json::to_vec(&object).expect("serializes"));
    for variant in [sorted, pretty, with_null] {
        assert_eq!(
            id(&normalizer, &variant).as_deref(),
            Some(original.as_str()),
            "the id changed for {:?} vs {:?}",
            String::from_utf8_lossy(data),
            String::from_utf8_lossy(&variant)
        );
    }
});
