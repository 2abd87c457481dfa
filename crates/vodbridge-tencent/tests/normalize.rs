//! Normalization of every documented VOD body into the envelope of design.md §2.

use bytes::Bytes;
use proptest::prelude::*;
use time::{macros::datetime, OffsetDateTime};
use vodbridge_core::{Envelope, EventId, Ingress};
use vodbridge_tencent::{EventContent, Normalizer, RawEvent, VodEvent, INVALID_EVENT_TYPE};

const RECEIVED: OffsetDateTime = datetime!(2026-11-27 06:00:00 UTC);

fn fixture(name: &str) -> Bytes {
    let path = format!("{}/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

fn normalizer() -> Normalizer {
    Normalizer::new(
        Normalizer::default_source(Some(1_500_000_001), "default"),
        Some(1_500_000_001),
        Ingress::Push,
    )
}

fn normalize(body: &Bytes) -> Envelope {
    let event = RawEvent::parse(body).expect("parses");
    normalizer().normalize(event, RECEIVED).expect("normalizes")
}

/// What design.md §2 says each sample must become.
struct Expected {
    fixture: &'static str,
    event_type: &'static str,
    subject: Option<&'static str>,
    task_id: Option<&'static str>,
    time: OffsetDateTime,
}

const EXPECTED: &[Expected] = &[
    Expected {
        fixture: "NewFileUpload",
        event_type: "NewFileUpload",
        subject: Some("3704211140000000001"),
        task_id: None,
        time: datetime!(2025-03-01 08:00:00 UTC),
    },
    Expected {
        fixture: "PullComplete",
        event_type: "PullComplete",
        subject: Some("3704211140000000002"),
        task_id: Some("1500000001-Pull-5d0c2e7f9a8b4c3d2e1f0a9b8c7d6e5f"),
        time: datetime!(2025-03-01 09:00:00 UTC),
    },
    Expected {
        fixture: "FileDeleted",
        event_type: "FileDeleted",
        subject: Some("3704211140000000001"),
        task_id: None,
        time: RECEIVED,
    },
    Expected {
        fixture: "ProcedureStateChanged",
        event_type: "ProcedureStateChanged",
        subject: Some("3704211140000000001"),
        task_id: Some("1500000001-procedurev2-8f2c0d1e4b6a4f0e9c1d2b3a4e5f6071tt0"),
        time: datetime!(2025-03-01 08:02:10 UTC),
    },
    Expected {
        fixture: "EditMediaComplete",
        event_type: "EditMediaComplete",
        subject: Some("3704211140000000009"),
        task_id: Some("1500000001-EditMedia-3c4d5e6f708192a3b4c5d6e7f8091a2b"),
        time: RECEIVED,
    },
    Expected {
        fixture: "WechatPublishComplete",
        event_type: "WechatPublishComplete",
        subject: Some("3704211140000000001"),
        task_id: Some("1500000001-Wechat-7a6b5c4d3e2f10a9b8c7d6e5f4a3b2c1"),
        time: RECEIVED,
    },
    Expected {
        fixture: "wechat_legacy_key",
        event_type: "WechatPublishComplete",
        subject: Some("3704211140000000004"),
        task_id: Some("1500000001-Wechat-01"),
        time: RECEIVED,
    },
    Expected {
        fixture: "nulls_miniprogram",
        event_type: "ProcedureStateChanged",
        subject: Some("3704211140000000003"),
        task_id: Some("1500000001-procedurev2-77aa"),
        time: RECEIVED,
    },
    Expected {
        fixture: "unknown_type",
        event_type: "HologramRenderComplete",
        subject: Some("5285890784273533167"),
        task_id: Some("1500000001-Holo-01"),
        time: datetime!(2025-03-02 10:00:00 UTC),
    },
];

#[test]
fn every_sample_normalizes_to_the_documented_envelope() {
    for want in EXPECTED {
        let body = fixture(want.fixture);
        let env = normalize(&body);
        let ctx = want.fixture;
        assert_eq!(
            env.ty,
            format!("com.tencentcloud.vod.{}", want.event_type),
            "{ctx}"
        );
        assert_eq!(env.event_type, want.event_type, "{ctx}");
        assert_eq!(env.source, "/tencentcloud/vod/1500000001", "{ctx}");
        assert_eq!(env.subject.as_deref(), want.subject, "{ctx}");
        assert_eq!(
            env.partition_key,
            want.subject.unwrap_or(want.event_type),
            "{ctx}"
        );
        assert_eq!(env.task_id.as_deref(), want.task_id, "{ctx}");
        assert_eq!(env.time, want.time, "{ctx}");
        assert_eq!(env.sub_app_id, Some(1_500_000_001), "{ctx}");
        assert_eq!(env.ingress, Ingress::Push, "{ctx}");
        assert_eq!(env.data, body, "{ctx}: data is the body byte for byte");
        assert!(env.id.as_str().parse::<EventId>().is_ok(), "{ctx}");
    }
}

#[test]
fn ids_differ_between_samples() {
    let mut ids: Vec<_> = EXPECTED
        .iter()
        .map(|w| normalize(&fixture(w.fixture)).id)
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), EXPECTED.len());
}

#[test]
fn legacy_body_passes_through_as_legacy() {
    let body = fixture("legacy_v2");
    let env = normalize(&body);
    assert_eq!(env.ty, "com.tencentcloud.vod.legacy");
    assert_eq!(env.event_type, "NewFileUpload");
    assert_eq!(env.subject.as_deref(), Some("3704211140000000001"));
    assert_eq!(env.task_id.as_deref(), Some("1500000001-upload-0a1b2c"));
    assert_eq!(env.data, body);
    assert!(RawEvent::parse(&body).expect("parses").is_legacy());
}

#[test]
fn delivery_fields_are_removed_from_data_and_id() {
    let signed = fixture("signed_callback");
    let event = RawEvent::parse(&signed).expect("parses");
    assert_eq!(event.sign(), Some("767e63fe68863688beb7f494e211ae4a"));
    assert_eq!(event.t().and_then(Result::ok), Some(1_767_226_200));
    let env = normalize(&signed);
    assert_eq!(
        &env.data[..],
        br#"{"EventType":"NewFileUpload","FileUploadEvent":{ "FileId": "3704211140000000001" }}"#
    );
    let unsigned = Bytes::from_static(
        br#"{"EventType":"NewFileUpload","FileUploadEvent":{"FileId":"3704211140000000001"}}"#,
    );
    assert_eq!(
        env.id,
        normalize(&unsigned).id,
        "Sign and T do not change the id"
    );

    let pulled = fixture("pulled_element");
    let event = RawEvent::parse(&pulled).expect("parses");
    assert_eq!(event.event_handle(), Some("EventHandle1"));
    let env = normalize(&pulled);
    assert!(!String::from_utf8_lossy(&env.data).contains("EventHandle"));
    assert_eq!(env.subject.as_deref(), Some("3704211140000000001"));
    let pushed = Bytes::from_static(
        br#"{"EventType":"FileDeleted","FileDeleteEvent":{"FileIdSet":["3704211140000000001"],"FileDeleteResultInfo":[]}}"#,
    );
    assert_eq!(
        env.id,
        normalize(&pushed).id,
        "a pulled event and its pushed twin share the id"
    );
}

#[test]
fn bad_bodies_are_clear_errors() {
    for (body, want) in [
        (&b"{not json"[..], "not valid JSON"),
        (b"[1,2]", "not a JSON object"),
        (b"{\"FileUploadEvent\":{}}", "no EventType"),
        (b"{\"EventType\":42}", "non-empty string"),
        (b"{\"EventType\":\"\"}", "non-empty string"),
        (b"", "not valid JSON"),
        (b"{\"EventType\":\"\xff\"}", "not UTF-8"),
    ] {
        let body = Bytes::copy_from_slice(body);
        let err = RawEvent::parse(&body)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains(want), "{body:?}: {err}");
    }
}

#[test]
fn pulled_bodies_without_a_usable_event_type_are_salvaged_for_the_dead_letter() {
    let n = normalizer();
    let first = Bytes::from_static(
        br#"{"EventHandle":"h-1","EventType":"","WeirdEvent":{"FileId":"5285485487985271487"}}"#,
    );
    let again = Bytes::from_static(
        br#"{"WeirdEvent":{"FileId":"5285485487985271487"},"EventType":"","EventHandle":"h-2"}"#,
    );
    assert!(RawEvent::parse(&first).is_err(), "not a regular event");
    let salvaged = n.salvage(&first, RECEIVED).expect("salvaged");
    assert_eq!(salvaged.handle, "h-1");
    let envelope = &salvaged.envelope;
    assert_eq!(envelope.ty, "com.tencentcloud.vod.Invalid");
    assert_eq!(envelope.event_type, INVALID_EVENT_TYPE);
    assert_eq!(envelope.subject.as_deref(), Some("5285485487985271487"));
    assert_eq!(
        &envelope.data[..],
        br#"{"EventType":"","WeirdEvent":{"FileId":"5285485487985271487"}}"#,
        "the body without its handle"
    );
    let redelivered = n.salvage(&again, RECEIVED).expect("salvaged");
    assert_eq!(redelivered.handle, "h-2");
    assert_eq!(
        redelivered.envelope.id, envelope.id,
        "the same id on every hand-out"
    );

    // Nothing to confirm: not JSON, not an object, or no handle.
    for body in [
        &b"{not json"[..],
        b"[1,2]",
        b"{\"WeirdEvent\":{}}",
        b"\"EventHandle\"",
    ] {
        assert!(
            n.salvage(&Bytes::copy_from_slice(body), RECEIVED).is_none(),
            "{body:?}"
        );
    }
}

#[test]
fn typed_models_read_both_key_spellings() {
    let content = EventContent::from_slice(&fixture("wechat_legacy_key")).expect("decodes");
    match content.into_event() {
        VodEvent::WechatPublishComplete(task) => {
            assert_eq!(task.wechat_vid.as_deref(), Some("wxv_1"))
        }
        other => panic!("{other:?}"),
    }
    let content = EventContent::from_slice(&fixture("unknown_type")).expect("decodes");
    assert_eq!(
        content.into_event(),
        VodEvent::Other {
            event_type: Some("HologramRenderComplete".into())
        }
    );
    for want in EXPECTED.iter().take(6) {
        let event = EventContent::from_slice(&fixture(want.fixture))
            .expect("decodes")
            .into_event();
        assert!(
            !matches!(event, VodEvent::Other { .. }),
            "{}: typed",
            want.fixture
        );
    }
    let numeric = EventContent::from_slice(
        br#"{"EventType":"NewFileUpload","FileUploadEvent":{"FileId":42}}"#,
    )
    .expect("decodes")
    .into_event();
    assert!(matches!(numeric, VodEvent::NewFileUpload(t) if t.file_id.as_deref() == Some("42")));
}

#[test]
fn envelopes_validate_against_the_checked_in_schema() {
    let path = format!(
        "{}/../../schema/envelope.v1.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let schema: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).expect("schema")).expect("json");
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&schema)
        .expect("valid schema");
    let mut names: Vec<&str> = EXPECTED.iter().map(|w| w.fixture).collect();
    names.extend(["legacy_v2", "signed_callback", "pulled_element"]);
    for name in names {
        let env = normalize(&fixture(name));
        let info = vodbridge_core::DeadLetterInfo {
            reason: vodbridge_core::FailureReason::TooLarge,
            detail: "2 MB".into(),
            failed_sink: "kafka".into(),
            failed_destination: "vod.events".into(),
        };
        for dead_letter in [None, Some(&info)] {
            let json: serde_json::Value =
                serde_json::from_slice(&env.to_structured_json(dead_letter)).expect("json");
            let errors: Vec<String> = validator
                .iter_errors(&json)
                .map(|e| e.to_string())
                .collect();
            assert!(errors.is_empty(), "{name}: {errors:?}");
        }
    }
    let mut broken: serde_json::Value =
        serde_json::from_slice(&normalize(&fixture("NewFileUpload")).to_structured_json(None))
            .expect("json");
    broken["id"] = "not-an-id".into();
    assert!(!validator.is_valid(&broken), "the schema constrains ids");
}

/// Reorders object members, adds whitespace and null members: the id must not change.
fn perturb(value: &serde_json::Value, seed: u64, out: &mut String) {
    match value {
        serde_json::Value::Object(map) => {
            let mut members: Vec<_> = map.iter().collect();
            if seed % 2 == 1 {
                members.reverse();
            }
            out.push_str("{ ");
            for (key, v) in members {
                out.push_str(&serde_json::to_string(key).unwrap_or_default());
                out.push_str(" :\n ");
                perturb(v, seed / 2 + 1, out);
                out.push_str(" , ");
            }
            out.push_str("\"ZzAddedNull\" : null }");
        }
        serde_json::Value::Array(items) => {
            out.push_str("[ ");
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(" ,\t");
                }
                perturb(v, seed / 3 + 1, out);
            }
            out.push_str(" ]");
        }
        other => out.push_str(&other.to_string()),
    }
}

fn json_leaf() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        "[a-zA-Z0-9 é\"\\\\/\n]{0,12}".prop_map(serde_json::Value::from),
    ]
}

fn json_object() -> impl Strategy<Value = serde_json::Value> {
    json_leaf()
        .prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map("[A-Za-z]{1,6}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
        .prop_map(|payload| serde_json::json!({ "EventType": "ProcedureStateChanged", "ProcedureStateChangeEvent": payload }))
}

proptest! {
    #[test]
    fn id_is_stable_under_order_whitespace_and_nulls(event in json_object(), seed in 0u64..1000) {
        let compact = Bytes::from(serde_json::to_vec(&event).expect("json"));
        let mut noisy = String::new();
        perturb(&event, seed, &mut noisy);
        let noisy = Bytes::from(noisy);
        prop_assert_eq!(normalize(&compact).id, normalize(&noisy).id);
    }

    #[test]
    fn id_differs_for_different_events(a in json_object(), b in json_object()) {
        prop_assume!(a != b);
        let ea = normalize(&Bytes::from(serde_json::to_vec(&a).expect("json")));
        let eb = normalize(&Bytes::from(serde_json::to_vec(&b).expect("json")));
        prop_assert_ne!(ea.id, eb.id);
    }
}

#[test]
fn data_without_delivery_fields_keeps_values_byte_for_byte_in_any_layout() {
    let cases: &[(&[u8], &[u8])] = &[
        (
            br#"{"EventHandle":"h","EventType":"X","XEvent":{"a":[1, 2],"b":"c,d}\""}}"#,
            br#"{"EventType":"X","XEvent":{"a":[1, 2],"b":"c,d}\""}}"#,
        ),
        (
            b" {\n \"EventType\" : \"X\" ,\n \"XEvent\" : { \"k\" : 1 } ,\n \"EventHandle\" : \"h\"\n }\n",
            br#"{"EventType":"X","XEvent":{ "k" : 1 }}"#,
        ),
        (br#"{"Sign":"ab","EventType":"X","T":"5","XEvent":null}"#, br#"{"EventType":"X","XEvent":null}"#),
        // A key with an escape is decoded: the slower re-read path gives the same result.
        (br#"{"Event\u0054ype":"X","t":5,"XEvent":{}}"#, br#"{"EventType":"X","XEvent":{}}"#),
    ];
    for (body, want) in cases {
        let env = normalize(&Bytes::copy_from_slice(body));
        assert_eq!(
            String::from_utf8_lossy(&env.data),
            String::from_utf8_lossy(want),
            "{}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(env.id, normalize(&Bytes::copy_from_slice(want)).id);
    }
}

#[test]
fn ambiguous_json_is_refused_with_a_clear_message() {
    use bytes::Bytes;
    for (body, needle) in [
        (
            &br#"{"EventType":"NewFileUpload","FileUploadEvent":{"FileId":"1"},"EventType":"FileDeleted"}"#[..],
            "duplicate object key \"EventType\"",
        ),
        (
            br#"{"EventType":"NewFileUpload","FileUploadEvent":{"FileId":"1","FileId":"2"}}"#,
            "duplicate object key \"FileId\"",
        ),
        (
            br#"{"EventType":"X","A":[{"k":1,"k":2}]}"#,
            "duplicate object key \"k\"",
        ),
        (br#"{"EventType":"X","A":"\ud800"}"#, "hex escape"),
        (br#"{"EventType":"X","A":1e400}"#, "out of range"),
    ] {
        let body = Bytes::copy_from_slice(body);
        let Err(error) = vodbridge_tencent::RawEvent::parse(&body) else {
            panic!("accepted {}", String::from_utf8_lossy(&body));
        };
        assert!(
            error.to_string().contains(needle),
            "{}: {error}",
            String::from_utf8_lossy(&body)
        );
    }
    // Many members take the sorting path of the check.
    let mut wide = String::from(r#"{"EventType":"X""#);
    for i in 0..40 {
        wide.push_str(&format!(r#","k{i}":{i}"#));
    }
    let fine = Bytes::from(format!("{wide}}}"));
    assert!(vodbridge_tencent::RawEvent::parse(&fine).is_ok());
    let doubled = Bytes::from(format!(r#"{wide},"k7":0}}"#));
    let Err(error) = vodbridge_tencent::RawEvent::parse(&doubled) else {
        panic!("a key twice among 41 accepted");
    };
    assert!(error.to_string().contains("\"k7\""), "{error}");
}

/// Found by `fuzz/callback_normalize`: an integer beyond u64 and its shortest float spelling
/// are the same number, so the event keeps its id (numbers parse correctly rounded).
#[test]
fn every_spelling_of_a_number_gives_the_same_id() {
    use bytes::Bytes;
    use vodbridge_core::Ingress;
    use vodbridge_tencent::{Normalizer, RawEvent};
    let normalizer = Normalizer::new("/tencentcloud/vod/1", Some(1), Ingress::Push);
    let id = |progress: &str| {
        let body = Bytes::from(format!(
            r#"{{"EventType":"ProcedureStateChanged","ProcedureStateChangeEvent":{{"TaskId":"t","Progress":{progress}}}}}"#
        ));
        let event = RawEvent::parse(&body).expect("parses");
        normalizer
            .normalize(event, time::OffsetDateTime::UNIX_EPOCH)
            .expect("normalizes")
            .id
    };
    let long = "4011111111111111111111111111111111111111111111111";
    assert_eq!(id(long), id("4.011111111111111e+48"));
    assert_eq!(id(long), id("4.011111111111111e48"));
    assert_eq!(id("0.30000000000000004"), id("3.0000000000000004e-1"));
}
