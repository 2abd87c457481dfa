//! Typed models of VOD events for consumers: `EventContent` and the six core payloads.
//!
//! Every field is optional (VOD may send `null` or omit anything), unknown fields are ignored,
//! ids accept a string or a number, and dates stay strings (VOD sends `0000-00-00T00:00:00Z`).
//! The envelope's `data` always keeps the full original JSON; these models are a convenience.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::error::Result;

fn lenient_id<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(deserializer)? {
        Some(Value::String(s)) => Some(s),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

fn lenient_ids<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<String>>, D::Error> {
    Ok(Option::<Vec<Value>>::deserialize(deserializer)?.map(|ids| {
        ids.into_iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(s),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .collect()
    }))
}

/// One VOD event record (`EventContent`): the EventType plus the member that carries its payload.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EventContent {
    /// The event type, e.g. `NewFileUpload`.
    pub event_type: Option<String>,
    /// Reliable-callback receipt (absent in `data`: the bridge removes it).
    pub event_handle: Option<String>,
    /// `NewFileUpload` payload.
    pub file_upload_event: Option<FileUploadTask>,
    /// `ProcedureStateChanged` payload.
    pub procedure_state_change_event: Option<ProcedureTask>,
    /// `FileDeleted` payload.
    pub file_delete_event: Option<FileDeleteTask>,
    /// `PullComplete` payload.
    pub pull_complete_event: Option<PullUploadTask>,
    /// `EditMediaComplete` payload (SDK key).
    pub edit_media_complete_event: Option<EditMediaTask>,
    /// `EditMediaComplete` payload under the older doc key.
    #[serde(rename = "EditMediaComplete")]
    pub edit_media_complete_legacy: Option<EditMediaTask>,
    /// `WechatPublishComplete` payload (SDK key).
    pub wechat_publish_complete_event: Option<WechatPublishTask>,
    /// `WechatPublishComplete` payload under the older doc key.
    #[serde(rename = "WechatPublishComplete")]
    pub wechat_publish_complete_legacy: Option<WechatPublishTask>,
}

/// A VOD event decoded into its typed payload.
#[derive(Debug, Clone, PartialEq)]
pub enum VodEvent {
    /// A file was uploaded.
    NewFileUpload(FileUploadTask),
    /// A pull-upload finished.
    PullComplete(PullUploadTask),
    /// Files were deleted.
    FileDeleted(FileDeleteTask),
    /// A task flow changed state.
    ProcedureStateChanged(ProcedureTask),
    /// A video edit finished.
    EditMediaComplete(EditMediaTask),
    /// A WeChat publish finished.
    WechatPublishComplete(WechatPublishTask),
    /// Any other EventType (or a known one without its payload): read `data` directly.
    Other {
        /// The EventType, when present.
        event_type: Option<String>,
    },
}

impl EventContent {
    /// Decodes an event body (e.g. an envelope's `data`).
    ///
    /// # Errors
    ///
    /// [`crate::Error::Json`] when the bytes are not a JSON object of this shape.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        Ok(serde_json::from_slice(bytes)?)
    }

    /// The typed event, picking whichever key spelling VOD used.
    #[must_use]
    pub fn into_event(self) -> VodEvent {
        match self.event_type.as_deref() {
            Some("NewFileUpload") if self.file_upload_event.is_some() => {
                self.file_upload_event.map_or(
                    VodEvent::Other { event_type: None },
                    VodEvent::NewFileUpload,
                )
            }
            Some("PullComplete") if self.pull_complete_event.is_some() => self
                .pull_complete_event
                .map_or(VodEvent::Other { event_type: None }, VodEvent::PullComplete),
            Some("FileDeleted") if self.file_delete_event.is_some() => self
                .file_delete_event
                .map_or(VodEvent::Other { event_type: None }, VodEvent::FileDeleted),
            Some("ProcedureStateChanged") if self.procedure_state_change_event.is_some() => {
                self.procedure_state_change_event.map_or(
                    VodEvent::Other { event_type: None },
                    VodEvent::ProcedureStateChanged,
                )
            }
            Some("EditMediaComplete")
                if self.edit_media_complete_event.is_some()
                    || self.edit_media_complete_legacy.is_some() =>
            {
                self.edit_media_complete_event
                    .or(self.edit_media_complete_legacy)
                    .map_or(
                        VodEvent::Other { event_type: None },
                        VodEvent::EditMediaComplete,
                    )
            }
            Some("WechatPublishComplete")
                if self.wechat_publish_complete_event.is_some()
                    || self.wechat_publish_complete_legacy.is_some() =>
            {
                self.wechat_publish_complete_event
                    .or(self.wechat_publish_complete_legacy)
                    .map_or(
                        VodEvent::Other { event_type: None },
                        VodEvent::WechatPublishComplete,
                    )
            }
            _ => VodEvent::Other {
                event_type: self.event_type,
            },
        }
    }
}

/// Where a media file came from (`MediaSourceData`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct MediaSourceData {
    /// `Record`, `Upload`, `VideoProcessing`, ...
    pub source_type: Option<String>,
    /// Pass-through string set when the file was created.
    pub source_context: Option<String>,
}

/// Basic facts about a media file (`MediaBasicInfo`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct MediaBasicInfo {
    /// Name.
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Creation time (ISO 8601 text).
    pub create_time: Option<String>,
    /// Last update time.
    pub update_time: Option<String>,
    /// Expiry; `9999-12-31T23:59:59Z` means never.
    pub expire_time: Option<String>,
    /// Category id.
    pub class_id: Option<i64>,
    /// Category name.
    pub class_name: Option<String>,
    /// Category path.
    pub class_path: Option<String>,
    /// Cover image URL.
    pub cover_url: Option<String>,
    /// Container, e.g. `mp4`.
    #[serde(rename = "Type")]
    pub container_type: Option<String>,
    /// Playback URL.
    pub media_url: Option<String>,
    /// Origin.
    pub source_info: Option<MediaSourceData>,
    /// Storage region, e.g. `ap-chongqing`.
    pub storage_region: Option<String>,
    /// Tags.
    pub tag_set: Option<Vec<String>>,
    /// Live-recording id.
    pub vid: Option<String>,
    /// `Video`, `Audio` or `Image`.
    pub category: Option<String>,
    /// `Normal` or `Forbidden`.
    pub status: Option<String>,
    /// `STANDARD`, `STANDARD_IA`, `ARCHIVE`, `DEEP_ARCHIVE`.
    pub storage_class: Option<String>,
}

/// One video stream.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct VideoStream {
    /// Bits per second.
    pub bitrate: Option<i64>,
    /// Pixels.
    pub height: Option<i64>,
    /// Pixels.
    pub width: Option<i64>,
    /// Codec, e.g. `h264`.
    pub codec: Option<String>,
    /// Frames per second.
    pub fps: Option<f64>,
}

/// One audio stream.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AudioStream {
    /// Bits per second.
    pub bitrate: Option<i64>,
    /// Hz.
    pub sampling_rate: Option<i64>,
    /// Codec, e.g. `aac`.
    pub codec: Option<String>,
}

/// Technical metadata of a media file (`MediaMetaData`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct MediaMetaData {
    /// Bytes.
    pub size: Option<i64>,
    /// Container list, e.g. `mov,mp4,m4a,3gp,3g2,mj2`.
    pub container: Option<String>,
    /// Bits per second.
    pub bitrate: Option<i64>,
    /// Pixels.
    pub height: Option<i64>,
    /// Pixels.
    pub width: Option<i64>,
    /// Seconds.
    pub duration: Option<f64>,
    /// Degrees.
    pub rotate: Option<i64>,
    /// Video streams.
    pub video_stream_set: Option<Vec<VideoStream>>,
    /// Audio streams.
    pub audio_stream_set: Option<Vec<AudioStream>>,
    /// Seconds.
    pub video_duration: Option<f64>,
    /// Seconds.
    pub audio_duration: Option<f64>,
    /// MD5 (only after a DescribeFileAttributes task).
    pub md5: Option<String>,
}

/// `NewFileUpload` payload (`FileUploadTask`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct FileUploadTask {
    /// The new file.
    #[serde(deserialize_with = "lenient_id")]
    pub file_id: Option<String>,
    /// Basic facts.
    pub media_basic_info: Option<MediaBasicInfo>,
    /// Task flow started by the upload.
    pub procedure_task_id: Option<String>,
    /// Review task started by the upload.
    pub review_audio_video_task_id: Option<String>,
    /// Metadata.
    pub meta_data: Option<MediaMetaData>,
}

/// `PullComplete` payload (`PullUploadTask`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PullUploadTask {
    /// Task id.
    pub task_id: Option<String>,
    /// `PROCESSING` or `FINISH`.
    pub status: Option<String>,
    /// 0 OK, 40000 bad input, 60000 bad source, 70000 internal.
    pub err_code: Option<i64>,
    /// Message.
    pub message: Option<String>,
    /// The pulled file.
    #[serde(deserialize_with = "lenient_id")]
    pub file_id: Option<String>,
    /// Basic facts.
    pub media_basic_info: Option<MediaBasicInfo>,
    /// Metadata.
    pub meta_data: Option<MediaMetaData>,
    /// Playback URL.
    pub file_url: Option<String>,
    /// Task flow started.
    pub procedure_task_id: Option<String>,
    /// Review task started.
    pub review_audio_video_task_id: Option<String>,
    /// Echo of the request's context.
    pub session_context: Option<String>,
    /// Request dedup id.
    pub session_id: Option<String>,
    /// 0–100.
    pub progress: Option<i64>,
}

/// One part removed from a file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct DeletePart {
    /// `OriginalFiles`, `TranscodeFiles`, ...
    #[serde(rename = "Type")]
    pub part_type: Option<String>,
    /// Template id; 0 means all.
    pub definition: Option<i64>,
}

/// Per-file result of a deletion.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct FileDeleteResultInfo {
    /// The file.
    #[serde(deserialize_with = "lenient_id")]
    pub file_id: Option<String>,
    /// What was removed.
    pub delete_parts: Option<Vec<DeletePart>>,
}

/// `FileDeleted` payload (`FileDeleteTask`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct FileDeleteTask {
    /// Deleted files.
    #[serde(deserialize_with = "lenient_ids")]
    pub file_id_set: Option<Vec<String>>,
    /// Per-file detail.
    pub file_delete_result_info: Option<Vec<FileDeleteResultInfo>>,
}

/// `ProcedureStateChanged` payload (`ProcedureTask`). Sub-task results stay JSON values: their
/// shapes vary by type and grow often.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ProcedureTask {
    /// Task id.
    pub task_id: Option<String>,
    /// `PROCESSING` or `FINISH`.
    pub status: Option<String>,
    /// Deprecated by VOD: read the sub-tasks.
    pub err_code: Option<i64>,
    /// Deprecated by VOD.
    pub message: Option<String>,
    /// The processed file.
    #[serde(deserialize_with = "lenient_id")]
    pub file_id: Option<String>,
    /// File name.
    pub file_name: Option<String>,
    /// File URL.
    pub file_url: Option<String>,
    /// Source metadata.
    pub meta_data: Option<MediaMetaData>,
    /// Media processing sub-tasks.
    pub media_process_result_set: Option<Vec<Value>>,
    /// Content review results.
    pub ai_content_review_result_set: Option<Vec<Value>>,
    /// Analysis results.
    pub ai_analysis_result_set: Option<Vec<Value>>,
    /// Recognition results.
    pub ai_recognition_result_set: Option<Vec<Value>>,
    /// −10…10.
    pub tasks_priority: Option<i64>,
    /// `Finish`, `Change` or `None`.
    pub tasks_notify_mode: Option<String>,
    /// Echo of the request's context.
    pub session_context: Option<String>,
    /// Request dedup id.
    pub session_id: Option<String>,
    /// Who started it, e.g. `System`.
    pub operator: Option<String>,
    /// e.g. `TSC`.
    pub operation_type: Option<String>,
}

/// One input file of an edit.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EditMediaFileInfo {
    /// The file.
    #[serde(deserialize_with = "lenient_id")]
    pub file_id: Option<String>,
    /// Seconds.
    pub start_time_offset: Option<f64>,
    /// Seconds.
    pub end_time_offset: Option<f64>,
}

/// Input of an edit.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EditMediaTaskInput {
    /// `File` or `Stream`.
    pub input_type: Option<String>,
    /// Input files.
    pub file_info_set: Option<Vec<EditMediaFileInfo>>,
    /// Input streams (kept as JSON).
    pub stream_info_set: Option<Vec<Value>>,
}

/// Output of an edit.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EditMediaTaskOutput {
    /// Container.
    pub file_type: Option<String>,
    /// URL.
    pub file_url: Option<String>,
    /// The produced file.
    #[serde(deserialize_with = "lenient_id")]
    pub file_id: Option<String>,
    /// Name.
    pub media_name: Option<String>,
    /// Category.
    pub class_id: Option<i64>,
    /// Expiry.
    pub expire_time: Option<String>,
}

/// `EditMediaComplete` payload (`EditMediaTask`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EditMediaTask {
    /// Task id.
    pub task_id: Option<String>,
    /// `PROCESSING` or `FINISH`.
    pub status: Option<String>,
    /// 0 OK.
    pub err_code: Option<i64>,
    /// Extended error code; empty means OK.
    pub err_code_ext: Option<String>,
    /// Message.
    pub message: Option<String>,
    /// 0–100.
    pub progress: Option<i64>,
    /// Input.
    pub input: Option<EditMediaTaskInput>,
    /// Output.
    pub output: Option<EditMediaTaskOutput>,
    /// Output metadata.
    pub meta_data: Option<MediaMetaData>,
    /// Task flow started.
    pub procedure_task_id: Option<String>,
    /// Review task started.
    pub review_audio_video_task_id: Option<String>,
    /// Request dedup id.
    pub session_id: Option<String>,
    /// Echo of the request's context.
    pub session_context: Option<String>,
}

/// `WechatPublishComplete` payload (`WechatPublishTask`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct WechatPublishTask {
    /// Task id.
    pub task_id: Option<String>,
    /// `WAITING`, `PROCESSING` or `FINISH`.
    pub status: Option<String>,
    /// 0 OK.
    pub err_code: Option<i64>,
    /// Message.
    pub message: Option<String>,
    /// The published file.
    #[serde(deserialize_with = "lenient_id")]
    pub file_id: Option<String>,
    /// Publishing template.
    pub definition: Option<i64>,
    /// Transcode template; 0 means the original.
    pub source_definition: Option<i64>,
    /// `FAIL`, `SUCCESS`, `AUDITNOTPASS`, `NOTTRIGGERED`.
    pub wechat_status: Option<String>,
    /// WeChat video id.
    pub wechat_vid: Option<String>,
    /// WeChat URL.
    pub wechat_url: Option<String>,
}
