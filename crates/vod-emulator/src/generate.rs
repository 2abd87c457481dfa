//! Realistic event bodies for every known EventType, in the shapes Tencent's SDK declares.

use std::collections::HashMap;

use serde_json::{json, Value};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use vodbridge_tencent::catalog;

/// The six core EventTypes: the default mix.
pub const CORE_TYPES: &[&str] = &[
    "NewFileUpload",
    "PullComplete",
    "FileDeleted",
    "ProcedureStateChanged",
    "EditMediaComplete",
    "WechatPublishComplete",
];

/// A small deterministic generator (xorshift), so runs are reproducible from a seed.
#[derive(Debug, Clone)]
pub struct Generator {
    state: u64,
    app_id: u64,
}

impl Generator {
    /// A generator with a seed (0 is replaced by a fixed non-zero seed).
    #[must_use]
    pub const fn new(seed: u64) -> Self {
        Self {
            state: if seed == 0 {
                0x9e37_79b9_7f4a_7c15
            } else {
                seed
            },
            app_id: 1_500_000_001,
        }
    }

    fn next(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        x
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn file_id(&mut self) -> String {
        format!("37042111{:011}", self.below(100_000_000_000))
    }

    fn task_id(&mut self, kind: &str) -> String {
        let (a, b) = (self.next(), self.next());
        format!("{}-{kind}-{a:016x}{b:016x}", self.app_id)
    }

    /// One `EventContent` body of `event_type` (any string: unknown types get a generic
    /// shape). Known types have the shape Tencent's SDK declares for their member (the bodies in
    /// `crates/vodbridge-tencent/tests/fixtures/sdk/`), with fresh FileIds, task and cast ids,
    /// and times moved to just before now.
    pub fn event(&mut self, event_type: &str) -> Value {
        let now = OffsetDateTime::now_utc();
        if let Some((_, shape)) = SHAPES.iter().find(|(name, _)| *name == event_type) {
            let mut body: Value = serde_json::from_str(shape).unwrap_or(Value::Null);
            let mut fresh = Fresh {
                generator: self,
                ids: HashMap::new(),
                now,
            };
            fresh.renew(&mut body, "");
            return body;
        }
        let t = |offset: i64| {
            (now - time::Duration::seconds(offset))
                .format(&Rfc3339)
                .unwrap_or_default()
        };
        let file_id = self.file_id();
        let key = catalog::payload_keys(event_type)
            .and_then(|keys| keys.first().copied())
            .map_or_else(|| format!("{event_type}Event"), str::to_owned);
        let kind = event_type.trim_end_matches("Complete");
        json!({ "EventType": event_type, key: {
            "TaskId": self.task_id(kind), "Status": "FINISH", "ErrCode": 0, "ErrCodeExt": "",
            "Message": "SUCCESS", "FileId": file_id, "Progress": 100,
            "CreateTime": t(30), "BeginProcessTime": t(25), "FinishTime": t(1) } })
    }
}

/// The SDK-shaped body of every catalogued EventType that has an `EventContent` member.
macro_rules! shape {
    ($name:literal) => {
        (
            $name,
            include_str!(concat!(
                "../../vodbridge-tencent/tests/fixtures/sdk/",
                $name,
                ".json"
            )),
        )
    };
}

const SHAPES: &[(&str, &str)] = &[
    shape!("AigcImageTaskComplete"),
    shape!("AigcVideoTaskComplete"),
    shape!("ClipComplete"),
    shape!("ComplexAdaptiveDynamicStreamingComplete"),
    shape!("ComposeMediaComplete"),
    shape!("ConcatComplete"),
    shape!("CreateAigcAdvancedCustomElementCompleteEvent"),
    shape!("CreateAigcCustomVoiceCompleteEvent"),
    shape!("CreateImageSpriteComplete"),
    shape!("CreateSnapshotByTimeOffsetComplete"),
    shape!("DescribeAigcFaceInfoAsyncComplete"),
    shape!("DescribeFileAttributesComplete"),
    shape!("EditMediaComplete"),
    shape!("ExtractBlindWatermarkComplete"),
    shape!("ExtractCopyRightWatermarkComplete"),
    shape!("ExtractTraceWatermarkComplete"),
    shape!("FileDeleted"),
    shape!("MediaCastStatusChanged"),
    shape!("NewFileUpload"),
    shape!("PersistenceComplete"),
    shape!("ProcedureStateChanged"),
    shape!("ProcessImageAsyncCompleteEvent"),
    shape!("ProcessMediaByMPSComplete"),
    shape!("PullComplete"),
    shape!("QualityEnhanceComplete"),
    shape!("QualityInspectComplete"),
    shape!("RebuildMediaComplete"),
    shape!("RemoveWatermark"),
    shape!("RestoreMediaComplete"),
    shape!("ReviewAudioVideoComplete"),
    shape!("SceneAigcImageCompleteEvent"),
    shape!("SplitMediaComplete"),
    shape!("TranscodeComplete"),
    shape!("WechatMiniProgramPublishComplete"),
    shape!("WechatPublishComplete"),
];

/// The moment the shapes' times lead up to: a shape's time `d` before it becomes `d` before
/// now.
const SHAPES_AT: OffsetDateTime = time::macros::datetime!(2026-11-30 08:05:00 UTC);

/// Renews one shape's identities and times; the same old id maps to the same new one, so an
/// input named twice stays one video.
struct Fresh<'g> {
    generator: &'g mut Generator,
    ids: HashMap<String, String>,
    now: OffsetDateTime,
}

impl Fresh<'_> {
    fn renew(&mut self, value: &mut Value, key: &str) {
        match value {
            Value::Object(members) => {
                for (key, member) in members.iter_mut() {
                    self.renew(member, key);
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.renew(item, key);
                }
            }
            Value::String(text) if text.is_empty() => {}
            Value::String(text) => match key {
                "FileId" | "SrcFileId" | "LastFrameFileId" | "FileIdSet" => {
                    *text = self.id(text, Generator::file_id);
                }
                "TaskId" => {
                    let kind = text.split('-').nth(1).unwrap_or("task").to_owned();
                    *text = self.id(text, |g| g.task_id(&kind));
                }
                "CastId" => *text = self.id(text, |g| format!("{:016x}", g.next())),
                _ if key.ends_with("Time") => {
                    if let Ok(at) = OffsetDateTime::parse(text, &Rfc3339) {
                        if at < SHAPES_AT {
                            *text = (self.now - (SHAPES_AT - at))
                                .format(&Rfc3339)
                                .unwrap_or_default();
                        }
                    }
                }
                _ => {}
            },
            _ => {}
        }
    }

    fn id(&mut self, old: &str, make: impl FnOnce(&mut Generator) -> String) -> String {
        if let Some(new) = self.ids.get(old) {
            return new.clone();
        }
        let new = make(self.generator);
        self.ids.insert(old.to_owned(), new.clone());
        new
    }
}

/// The EventTypes named by a `types` parameter: empty → the six core types; `all` → every
/// type in the catalogue; otherwise a comma-separated list (unknown names allowed).
#[must_use]
pub fn parse_types(spec: &str) -> Vec<String> {
    match spec.trim() {
        "" => CORE_TYPES.iter().map(|t| (*t).to_owned()).collect(),
        "all" => catalog::known_event_types().map(str::to_owned).collect(),
        list => list
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_type_generates_its_payload_member() {
        let mut g = Generator::new(7);
        for event_type in catalog::known_event_types() {
            let event = g.event(event_type);
            assert_eq!(event["EventType"], event_type);
            if let Some(key) = catalog::payload_keys(event_type).and_then(|k| k.first()) {
                assert!(event[key].is_object(), "{event_type} carries {key}");
            }
        }
        assert_eq!(parse_types("").len(), 6);
        assert_eq!(
            parse_types("all").len(),
            catalog::known_event_types().count()
        );
        assert_eq!(parse_types("A, B"), ["A", "B"]);
    }

    #[test]
    fn shapes_are_the_sdk_bodies_with_fresh_ids_and_times() {
        let mut g = Generator::new(3);
        assert_eq!(SHAPES.len(), 35, "every catalogued type with an SDK member");
        for (name, shape) in SHAPES {
            let template: Value = serde_json::from_str(shape).expect("a shape is JSON");
            assert_eq!(template["EventType"], *name);
            let (a, b) = (g.event(name), g.event(name));
            assert_ne!(a, b, "{name}: two events differ");
            let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>());
            assert_eq!(keys(&a), keys(&template), "{name}: the SDK's shape");
        }
        let edit = g.event("EditMediaComplete");
        let member = &edit["EditMediaCompleteEvent"];
        assert_ne!(
            member["Output"]["FileId"], "5285890784246869902",
            "fresh ids"
        );
        assert_ne!(
            member["Input"]["FileInfoSet"][0]["FileId"],
            member["Output"]["FileId"]
        );
        let cast = g.event("MediaCastStatusChanged");
        assert_eq!(cast["MediaCastStatusChangedEvent"]["Status"], "Working");
        let upload = g.event("NewFileUpload");
        let created = upload["FileUploadEvent"]["MediaBasicInfo"]["CreateTime"]
            .as_str()
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
            .expect("a time");
        let age = OffsetDateTime::now_utc() - created;
        assert!(
            age > time::Duration::ZERO && age < time::Duration::minutes(10),
            "{age}"
        );
    }

    #[test]
    fn seeds_are_reproducible_and_ids_vary() {
        let (mut a, mut b) = (Generator::new(1), Generator::new(1));
        assert_eq!(a.file_id(), b.file_id());
        assert_ne!(a.file_id(), a.file_id());
    }
}
