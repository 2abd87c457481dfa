//! The catalogue of VOD EventTypes and the `EventContent` member that carries each one's payload.

/// Where one EventType's payload says what the envelope needs. Paths are member names joined
/// by `.`; a step ending in `[]` walks every item of a list, and `*` any member of an object.
///
/// **Subject** (the video the event is about, which is also its `partitionkey`): the first of
/// `subject`'s paths that names **exactly one** FileId. The paths list the video the work was
/// done *on* first, then the file it *produced*, so an event that names several different
/// files on a path (a deletion of several files, an edit of several inputs) falls through to
/// the next path, and to no subject at all when none names one. Without a subject the
/// `partitionkey` is the event's task (or cast) id, else the EventType.
///
/// **Time**: the latest RFC 3339 date found on any of `time`'s paths, else the time received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventSpec {
    /// The `EventType` value.
    pub event_type: &'static str,
    /// The `EventContent` keys that may hold the payload, preferred first.
    pub members: &'static [&'static str],
    /// Paths to the FileId: the video worked on, then the file produced.
    pub subject: &'static [&'static str],
    /// Paths to the task id (`vodtaskid`), first found wins.
    pub task: &'static [&'static str],
    /// Paths to an id that groups the events of one thing when no video is named (a media
    /// cast), for the `partitionkey` after the task id.
    pub group: &'static [&'static str],
    /// Paths to the time the work finished (or the media was created); the latest wins.
    pub time: &'static [&'static str],
}

const TASK: &[&str] = &["TaskId"];
const NONE: &[&str] = &[];

const fn spec(
    event_type: &'static str,
    members: &'static [&'static str],
    subject: &'static [&'static str],
    task: &'static [&'static str],
    time: &'static [&'static str],
) -> EventSpec {
    EventSpec {
        event_type,
        members,
        subject,
        task,
        group: NONE,
        time,
    }
}

/// Every EventType VOD's model knows (Tencent's SDK `EventContent`, tencentcloud-sdk-go
/// v1.3.166; see `docs/vod.md`), with where its payload names its video, task and time. The
/// set is open: events of other types are accepted and read by the generic rule
/// ([`GENERIC`]).
pub const EVENTS: &[EventSpec] = &[
    spec(
        "NewFileUpload",
        &["FileUploadEvent"],
        &["FileId"],
        NONE,
        &["MediaBasicInfo.CreateTime"],
    ),
    spec(
        "ProcedureStateChanged",
        &["ProcedureStateChangeEvent"],
        // With ProcessMediaByUrl this is the input's `MediaInputInfo.Id`, not a VOD FileId.
        &["FileId"],
        TASK,
        &[
            "MediaProcessResultSet[].*.FinishTime",
            "AiAnalysisResultSet[].*.FinishTime",
        ],
    ),
    spec(
        "FileDeleted",
        &["FileDeleteEvent"],
        &["FileIdSet[]", "FileDeleteResultInfo[].FileId"],
        NONE,
        NONE,
    ),
    spec(
        "RestoreMediaComplete",
        &["RestoreMediaCompleteEvent"],
        &["FileId"],
        NONE,
        NONE,
    ),
    spec(
        "PullComplete",
        &["PullCompleteEvent"],
        &["FileId"],
        TASK,
        &["MediaBasicInfo.CreateTime"],
    ),
    spec(
        "EditMediaComplete",
        &["EditMediaCompleteEvent", "EditMediaComplete"],
        &["Input.FileInfoSet[].FileId", "Output.FileId"],
        TASK,
        NONE,
    ),
    spec(
        "SplitMediaComplete",
        &["SplitMediaCompleteEvent"],
        &["FileInfoSet[].Input.FileId", "FileInfoSet[].Output.FileId"],
        TASK,
        &["FileInfoSet[].Output.MediaBasicInfo.CreateTime"],
    ),
    spec(
        "ComposeMediaComplete",
        &["ComposeMediaCompleteEvent"],
        &["Output.FileId"],
        TASK,
        NONE,
    ),
    spec(
        "WechatMiniProgramPublishComplete",
        &[
            "WechatMiniProgramPublishCompleteEvent",
            "WechatMiniProgramPublishEvent",
        ],
        &["FileId"],
        TASK,
        NONE,
    ),
    spec(
        "RemoveWatermark",
        &["RemoveWatermarkCompleteEvent"],
        &["Input.FileId", "Output.FileId"],
        TASK,
        NONE,
    ),
    spec(
        "RebuildMediaComplete",
        &["RebuildMediaCompleteEvent"],
        &["Input.FileId", "Output.FileId"],
        TASK,
        NONE,
    ),
    spec(
        "ReviewAudioVideoComplete",
        &["ReviewAudioVideoCompleteEvent"],
        &["Input.FileId"],
        TASK,
        NONE,
    ),
    spec(
        "ExtractTraceWatermarkComplete",
        &["ExtractTraceWatermarkCompleteEvent"],
        &["Input.FileId"],
        TASK,
        NONE,
    ),
    // Its input is a URL: no video.
    spec(
        "ExtractCopyRightWatermarkComplete",
        &["ExtractCopyRightWatermarkCompleteEvent"],
        NONE,
        TASK,
        NONE,
    ),
    spec(
        "DescribeFileAttributesComplete",
        &["DescribeFileAttributesCompleteEvent"],
        &["FileId"],
        TASK,
        NONE,
    ),
    spec(
        "QualityInspectComplete",
        &["QualityInspectCompleteEvent"],
        &["Input.FileId"],
        TASK,
        NONE,
    ),
    spec(
        "QualityEnhanceComplete",
        &["QualityEnhanceCompleteEvent"],
        &["Input.FileId", "Output.FileId"],
        TASK,
        NONE,
    ),
    spec(
        "PersistenceComplete",
        &["PersistenceCompleteEvent"],
        &["FileId"],
        NONE,
        NONE,
    ),
    // Its payload names no file, only the task.
    spec(
        "ComplexAdaptiveDynamicStreamingComplete",
        &["ComplexAdaptiveDynamicStreamingCompleteEvent"],
        NONE,
        TASK,
        NONE,
    ),
    spec(
        "ProcessMediaByMPSComplete",
        &["ProcessMediaByMPSCompleteEvent"],
        &["SubTaskSet[].Output.OutputFiles[].FileId"],
        TASK,
        NONE,
    ),
    spec(
        "AigcImageTaskComplete",
        &["AigcImageCompleteEvent"],
        &["Input.FileInfos[].FileId", "Output.FileInfos[].FileId"],
        TASK,
        NONE,
    ),
    spec(
        "AigcVideoTaskComplete",
        &["AigcVideoCompleteEvent"],
        &["Input.FileInfos[].FileId", "Output.FileInfos[].FileId"],
        TASK,
        NONE,
    ),
    spec(
        "DescribeAigcFaceInfoAsyncComplete",
        &["DescribeAigcFaceInfoAsyncCompleteEvent"],
        &["Input.FileInfos[].FileId"],
        TASK,
        NONE,
    ),
    spec(
        "TranscodeComplete",
        &["TranscodeCompleteEvent"],
        &["FileId"],
        TASK,
        NONE,
    ),
    spec(
        "ConcatComplete",
        &["ConcatCompleteEvent"],
        &["FileInfoSet[].FileId"],
        TASK,
        NONE,
    ),
    spec(
        "ClipComplete",
        &["ClipCompleteEvent"],
        &["SrcFileId", "FileInfo.FileId"],
        TASK,
        NONE,
    ),
    spec(
        "CreateImageSpriteComplete",
        &["CreateImageSpriteCompleteEvent"],
        &["FileId"],
        TASK,
        NONE,
    ),
    spec(
        "CreateSnapshotByTimeOffsetComplete",
        &["SnapshotByTimeOffsetCompleteEvent"],
        &["FileId"],
        TASK,
        NONE,
    ),
    spec(
        "WechatPublishComplete",
        &["WechatPublishCompleteEvent", "WechatPublishComplete"],
        &["FileId"],
        TASK,
        NONE,
    ),
    EventSpec {
        event_type: "MediaCastStatusChanged",
        members: &["MediaCastStatusChangedEvent"],
        subject: NONE,
        task: NONE,
        group: &["CastId"],
        time: NONE,
    },
    spec(
        "ExtractBlindWatermarkComplete",
        &["ExtractBlindWatermarkComplete"],
        &["InputInfo.FileId"],
        TASK,
        NONE,
    ),
    // The next four EventType strings come only from SDK field comments (docs/vod.md).
    spec(
        "SceneAigcImageCompleteEvent",
        &["SceneAigcImageCompleteEvent"],
        &["Input.FileInfos[].FileId", "Output.FileInfos[].FileId"],
        TASK,
        NONE,
    ),
    // The SDK types this member as an image-processing configuration; real bodies carry the
    // task record (as DescribeTaskDetail shows), so the task's paths are read.
    spec(
        "ProcessImageAsyncCompleteEvent",
        &["ProcessImageAsyncCompleteEvent"],
        &["Input.FileId", "Output.FileId"],
        TASK,
        NONE,
    ),
    spec(
        "CreateAigcAdvancedCustomElementCompleteEvent",
        &["CreateAigcAdvancedCustomElementCompleteEvent"],
        NONE,
        TASK,
        NONE,
    ),
    spec(
        "CreateAigcCustomVoiceCompleteEvent",
        &["CreateAigcCustomVoiceCompleteEvent"],
        NONE,
        TASK,
        NONE,
    ),
    // Seen only in an older intl SDK list; no SDK field, payload found by the generic rule.
    EventSpec {
        event_type: "FastClipMediaComplete",
        ..GENERIC
    },
];

/// How an event of a type not in [`EVENTS`] is read (and a known one whose paths find
/// nothing): its one object member, a top-level `FileId`, else the produced `Output.FileId`,
/// else a one-element `FileIdSet`; `TaskId`; `FinishTime` or `CreateTime`.
pub const GENERIC: EventSpec = EventSpec {
    event_type: "",
    members: NONE,
    subject: &["FileId", "Output.FileId", "FileIdSet[]"],
    task: TASK,
    group: NONE,
    time: &["FinishTime", "CreateTime"],
};

/// The spec of `event_type`, if VOD's model knows it.
#[must_use]
pub fn spec_of(event_type: &str) -> Option<&'static EventSpec> {
    EVENTS.iter().find(|s| s.event_type == event_type)
}

/// The event type names of [`EVENTS`].
pub fn known_event_types() -> impl Iterator<Item = &'static str> {
    EVENTS.iter().map(|s| s.event_type)
}

/// Whether VOD's model knows `event_type`.
#[must_use]
pub fn is_known(event_type: &str) -> bool {
    payload_keys(event_type).is_some()
}

/// The `EventContent` keys that may carry the payload of `event_type`, preferred first.
#[must_use]
pub fn payload_keys(event_type: &str) -> Option<&'static [&'static str]> {
    spec_of(event_type).map(|s| s.members)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_has_every_sdk_type_once() {
        let mut names: Vec<_> = known_event_types().collect();
        assert_eq!(names.len(), 36);
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 36, "no duplicates");
        assert_eq!(
            payload_keys("WechatPublishComplete"),
            Some(&["WechatPublishCompleteEvent", "WechatPublishComplete"][..])
        );
        assert!(!is_known("Brand-new"));
    }
}
