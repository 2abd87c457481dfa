//! Every EventType as Tencent's SDK models it (`tests/fixtures/sdk/{EventType}.json`, one body
//! per type with the members, nesting and status values `EventContent` declares): `subject`,
//! `partitionkey`, `vodtaskid` and `time` as `tests/fixtures/sdk/expected.json` says, written
//! by hand from the README's rule (with the reason where it is not the plain `FileId`) rather
//! than read from the catalogue that produces them. The end-to-end test (`tests/it`) checks
//! the same file through push and pull.

use bytes::Bytes;
use serde_json::Value;
use time::{format_description::well_known::Rfc3339, macros::datetime, OffsetDateTime};
use vodbridge_core::{Envelope, Ingress};
use vodbridge_tencent::{catalog, Normalizer, RawEvent};

const RECEIVED: OffsetDateTime = datetime!(2026-12-01 06:00:00 UTC);
/// The video worked on, in every fixture that names one.
const INPUT: &str = "5285890784246869901";
/// The second file of a fixture (an output, or a second source).
const SECOND: &str = "5285890784246869902";

fn read(name: &str) -> Bytes {
    let path = format!("{}/tests/fixtures/sdk/{name}", env!("CARGO_MANIFEST_DIR"));
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

fn normalize(body: &Bytes) -> Envelope {
    let normalizer = Normalizer::new(
        "/tencentcloud/vod/1500000001",
        Some(1_500_000_001),
        Ingress::Pull,
    );
    normalizer
        .normalize(RawEvent::parse(body).expect("parses"), RECEIVED)
        .expect("normalizes")
}

#[test]
fn every_sdk_event_type_has_its_subject_key_task_and_time() {
    let expected: serde_json::Map<String, Value> =
        serde_json::from_slice(&read("expected.json")).expect("expected.json");
    // Every catalogued type with an SDK member has a fixture and an expectation.
    let mut with_member: Vec<&str> = catalog::EVENTS
        .iter()
        .filter(|s| !s.members.is_empty())
        .map(|s| s.event_type)
        .collect();
    with_member.sort_unstable();
    let rows: Vec<&str> = expected.keys().map(String::as_str).collect();
    assert_eq!(rows, with_member, "one expectation per catalogued type");
    for (event_type, want) in &expected {
        let body = read(&format!("{event_type}.json"));
        let env = normalize(&body);
        let ctx = event_type.as_str();
        assert_eq!(&env.event_type, event_type, "{ctx}");
        assert_eq!(
            env.subject.as_deref(),
            want["subject"].as_str(),
            "{ctx}: subject"
        );
        assert_eq!(
            Some(env.partition_key.as_str()),
            want["partitionkey"].as_str(),
            "{ctx}: partitionkey"
        );
        assert_eq!(
            env.task_id.as_deref(),
            want["vodtaskid"].as_str(),
            "{ctx}: vodtaskid"
        );
        let time = want["time"]
            .as_str()
            .map(|t| OffsetDateTime::parse(t, &Rfc3339).expect("a time"));
        assert_eq!(env.time, time.unwrap_or(RECEIVED), "{ctx}: time");
        assert_eq!(env.data, body, "{ctx}: data is the body as received");
    }
}

#[test]
fn several_different_files_on_a_path_name_no_video() {
    // A deletion of two files: no subject, and no task to partition by.
    let body = Bytes::from(
        r#"{"EventType":"FileDeleted","FileDeleteEvent":{"FileIdSet":["5285890784246869901","5285890784246869902"],
            "FileDeleteResultInfo":[{"FileId":"5285890784246869901","DeleteParts":[]},{"FileId":"5285890784246869902","DeleteParts":[]}]}}"#,
    );
    let env = normalize(&body);
    assert_eq!(env.subject, None);
    assert_eq!(env.partition_key, "FileDeleted");

    // An edit of two inputs: the video it produced.
    let body = Bytes::from(
        r#"{"EventType":"EditMediaComplete","EditMediaCompleteEvent":{"TaskId":"1500000001-EditMedia-x","Status":"FINISH",
            "Input":{"InputType":"File","FileInfoSet":[{"FileId":"5285890784246869901"},{"FileId":"5285890784246869903"}]},
            "Output":{"FileId":"5285890784246869902"}}}"#,
    );
    let env = normalize(&body);
    assert_eq!(env.subject.as_deref(), Some(SECOND));

    // The same file twice on a path is still one video.
    let body = Bytes::from(
        r#"{"EventType":"SplitMediaComplete","SplitMediaCompleteEvent":{"TaskId":"t","Status":"FINISH",
            "FileInfoSet":[{"Input":{"FileId":"5285890784246869901"},"Output":{"FileId":"a"}},
                           {"Input":{"FileId":"5285890784246869901"},"Output":{"FileId":"b"}}]}}"#,
    );
    assert_eq!(normalize(&body).subject.as_deref(), Some(INPUT));
}

#[test]
fn a_known_type_under_an_unexpected_shape_falls_back_to_the_generic_rule() {
    // A RemoveWatermark body with a top-level FileId (no Input): still a video.
    let body = Bytes::from(
        r#"{"EventType":"RemoveWatermark","RemoveWatermarkCompleteEvent":{"TaskId":"t1","FileId":"5285890784246869901","FinishTime":"2026-11-30T09:00:00Z"}}"#,
    );
    let env = normalize(&body);
    assert_eq!(env.subject.as_deref(), Some(INPUT));
    assert_eq!(env.time, datetime!(2026-11-30 09:00:00 UTC));
}
