//! Realistic event bodies for every known EventType, shaped like vod-api.md's samples.

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

    /// One `EventContent` body of `event_type` (any string: unknown types get the generic shape).
    pub fn event(&mut self, event_type: &str) -> Value {
        let now = OffsetDateTime::now_utc();
        let t = |offset: i64| {
            (now - time::Duration::seconds(offset))
                .format(&Rfc3339)
                .unwrap_or_default()
        };
        let file_id = self.file_id();
        let media = |name: &str| {
            json!({
                "Name": name, "Description": "", "CreateTime": t(60), "UpdateTime": t(58),
                "ExpireTime": "9999-12-31T23:59:59Z", "ClassId": 0, "ClassName": "Other", "ClassPath": "Other",
                "CoverUrl": "", "Type": "mp4",
                "MediaUrl": format!("https://1500000001.vod-qcloud.com/0a1b2c3dvodcq1500000001/{file_id}/{name}.mp4"),
                "TagSet": [], "StorageRegion": "ap-chongqing",
                "SourceInfo": { "SourceType": "Upload", "SourceContext": "" }, "Vid": "",
                "Category": "Video", "Status": "Normal", "StorageClass": "STANDARD"
            })
        };
        let meta = json!({
            "Size": 10_485_760 + self.below(1 << 20), "Container": "mov,mp4,m4a,3gp,3g2,mj2", "Bitrate": 1_398_101,
            "Height": 720, "Width": 1280, "Duration": 60.0, "Rotate": 0,
            "VideoStreamSet": [{ "Bitrate": 1_270_000, "Height": 720, "Width": 1280, "Codec": "h264", "Fps": 25 }],
            "AudioStreamSet": [{ "Bitrate": 128_000, "SamplingRate": 44100, "Codec": "aac" }],
            "VideoDuration": 60.0, "AudioDuration": 59.98
        });
        match event_type {
            "NewFileUpload" => json!({ "EventType": event_type, "FileUploadEvent": {
                "FileId": file_id, "MediaBasicInfo": media("upload"), "ProcedureTaskId": "",
                "ReviewAudioVideoTaskId": "", "MetaData": meta } }),
            "PullComplete" => json!({ "EventType": event_type, "PullCompleteEvent": {
                "TaskId": self.task_id("Pull"), "Status": "FINISH", "ErrCode": 0, "Message": "SUCCESS",
                "FileId": file_id, "MediaBasicInfo": media("pulled"), "MetaData": meta,
                "FileUrl": format!("https://1500000001.vod-qcloud.com/{file_id}/pulled.mp4"),
                "ProcedureTaskId": "", "ReviewAudioVideoTaskId": "", "SessionContext": "", "SessionId": "",
                "Progress": 100 } }),
            "FileDeleted" => json!({ "EventType": event_type, "FileDeleteEvent": {
                "FileIdSet": [file_id], "FileDeleteResultInfo": [{ "FileId": file_id,
                "DeleteParts": [{ "Type": "TranscodeFiles", "Definition": 100_030 }] }] } }),
            "ProcedureStateChanged" => {
                json!({ "EventType": event_type, "ProcedureStateChangeEvent": {
                "TaskId": self.task_id("procedurev2"), "Status": "FINISH", "ErrCode": 0, "Message": "SUCCESS",
                "FileId": file_id, "FileName": "lesson", "FileUrl": format!("https://1500000001.vod-qcloud.com/{file_id}/lesson.mp4"),
                "MetaData": meta,
                "MediaProcessResultSet": [{ "Type": "Transcode", "TranscodeTask": {
                    "Status": "SUCCESS", "ErrCode": 0, "ErrCodeExt": "", "Message": "SUCCESS", "Progress": 100,
                    "BeginProcessTime": t(50), "FinishTime": t(5), "Input": { "Definition": 100_030 },
                    "Output": { "Url": format!("https://1500000001.vod-qcloud.com/{file_id}/v.f100030.mp4"),
                        "Definition": 100_030, "Bitrate": 1_100_000, "Height": 720, "Width": 1280, "Size": 8_250_000,
                        "Duration": 60.02, "Container": "mov,mp4,m4a,3gp,3g2,mj2", "DigitalWatermarkType": "None" } } }],
                "AiContentReviewResultSet": [], "AiAnalysisResultSet": [], "AiRecognitionResultSet": [],
                "TasksPriority": 0, "TasksNotifyMode": "Finish", "SessionContext": "", "SessionId": "" } })
            }
            "EditMediaComplete" => json!({ "EventType": event_type, "EditMediaCompleteEvent": {
                "TaskId": self.task_id("EditMedia"), "Status": "FINISH", "ErrCode": 0, "ErrCodeExt": "",
                "Message": "SUCCESS", "Progress": 100,
                "Input": { "InputType": "File", "FileInfoSet": [{ "FileId": self.file_id(), "StartTimeOffset": 0, "EndTimeOffset": 30 }] },
                "Output": { "FileType": "mp4", "FileId": file_id, "FileUrl": format!("https://1500000001.vod-qcloud.com/{file_id}/f0.mp4"),
                    "MediaName": "edit", "ClassId": 0, "ExpireTime": "9999-12-31T23:59:59Z" },
                "ProcedureTaskId": "", "ReviewAudioVideoTaskId": "", "SessionId": "", "SessionContext": "" } }),
            "WechatPublishComplete" => {
                json!({ "EventType": event_type, "WechatPublishCompleteEvent": {
                "TaskId": self.task_id("Wechat"), "Status": "FINISH", "ErrCode": 0, "Message": "SUCCESS",
                "FileId": file_id, "Definition": 10, "SourceDefinition": 0, "WechatStatus": "SUCCESS",
                "WechatVid": format!("wxv_{:x}", self.next()), "WechatUrl": "https://example.invalid/wechat" } })
            }
            other => {
                let key = catalog::payload_keys(other)
                    .and_then(|keys| keys.first().copied())
                    .map_or_else(|| format!("{other}Event"), str::to_owned);
                let kind = other.trim_end_matches("Complete");
                json!({ "EventType": other, key: {
                    "TaskId": self.task_id(kind), "Status": "FINISH", "ErrCode": 0, "ErrCodeExt": "",
                    "Message": "SUCCESS", "FileId": file_id, "Progress": 100,
                    "CreateTime": t(30), "BeginProcessTime": t(25), "FinishTime": t(1) } })
            }
        }
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
    fn seeds_are_reproducible_and_ids_vary() {
        let (mut a, mut b) = (Generator::new(1), Generator::new(1));
        assert_eq!(a.file_id(), b.file_id());
        assert_ne!(a.file_id(), a.file_id());
    }
}
