//! The catalogue of VOD EventTypes and the `EventContent` member that carries each one's payload.

/// Every EventType the VOD model knows (vod-api.md §1.1–1.2), with the `EventContent` keys that
/// may hold its payload, preferred key first. The set is open: events of other types are
/// accepted and passed through.
pub const EVENT_TYPES: &[(&str, &[&str])] = &[
    ("NewFileUpload", &["FileUploadEvent"]),
    ("ProcedureStateChanged", &["ProcedureStateChangeEvent"]),
    ("FileDeleted", &["FileDeleteEvent"]),
    ("RestoreMediaComplete", &["RestoreMediaCompleteEvent"]),
    ("PullComplete", &["PullCompleteEvent"]),
    (
        "EditMediaComplete",
        &["EditMediaCompleteEvent", "EditMediaComplete"],
    ),
    ("SplitMediaComplete", &["SplitMediaCompleteEvent"]),
    ("ComposeMediaComplete", &["ComposeMediaCompleteEvent"]),
    (
        "WechatMiniProgramPublishComplete",
        &[
            "WechatMiniProgramPublishCompleteEvent",
            "WechatMiniProgramPublishEvent",
        ],
    ),
    ("RemoveWatermark", &["RemoveWatermarkCompleteEvent"]),
    ("RebuildMediaComplete", &["RebuildMediaCompleteEvent"]),
    (
        "ReviewAudioVideoComplete",
        &["ReviewAudioVideoCompleteEvent"],
    ),
    (
        "ExtractTraceWatermarkComplete",
        &["ExtractTraceWatermarkCompleteEvent"],
    ),
    (
        "ExtractCopyRightWatermarkComplete",
        &["ExtractCopyRightWatermarkCompleteEvent"],
    ),
    (
        "DescribeFileAttributesComplete",
        &["DescribeFileAttributesCompleteEvent"],
    ),
    ("QualityInspectComplete", &["QualityInspectCompleteEvent"]),
    ("QualityEnhanceComplete", &["QualityEnhanceCompleteEvent"]),
    ("PersistenceComplete", &["PersistenceCompleteEvent"]),
    (
        "ComplexAdaptiveDynamicStreamingComplete",
        &["ComplexAdaptiveDynamicStreamingCompleteEvent"],
    ),
    (
        "ProcessMediaByMPSComplete",
        &["ProcessMediaByMPSCompleteEvent"],
    ),
    ("AigcImageTaskComplete", &["AigcImageCompleteEvent"]),
    ("AigcVideoTaskComplete", &["AigcVideoCompleteEvent"]),
    (
        "DescribeAigcFaceInfoAsyncComplete",
        &["DescribeAigcFaceInfoAsyncCompleteEvent"],
    ),
    ("TranscodeComplete", &["TranscodeCompleteEvent"]),
    ("ConcatComplete", &["ConcatCompleteEvent"]),
    ("ClipComplete", &["ClipCompleteEvent"]),
    (
        "CreateImageSpriteComplete",
        &["CreateImageSpriteCompleteEvent"],
    ),
    (
        "CreateSnapshotByTimeOffsetComplete",
        &["SnapshotByTimeOffsetCompleteEvent"],
    ),
    (
        "WechatPublishComplete",
        &["WechatPublishCompleteEvent", "WechatPublishComplete"],
    ),
    ("MediaCastStatusChanged", &["MediaCastStatusChangedEvent"]),
    (
        "ExtractBlindWatermarkComplete",
        &["ExtractBlindWatermarkComplete"],
    ),
    // The next four strings come only from SDK field comments (vod-api.md §8.4).
    (
        "SceneAigcImageCompleteEvent",
        &["SceneAigcImageCompleteEvent"],
    ),
    (
        "ProcessImageAsyncCompleteEvent",
        &["ProcessImageAsyncCompleteEvent"],
    ),
    (
        "CreateAigcAdvancedCustomElementCompleteEvent",
        &["CreateAigcAdvancedCustomElementCompleteEvent"],
    ),
    (
        "CreateAigcCustomVoiceCompleteEvent",
        &["CreateAigcCustomVoiceCompleteEvent"],
    ),
    // Seen only in an older intl SDK list; no SDK field, payload found by the generic rule.
    ("FastClipMediaComplete", &[]),
];

/// The event type names of [`EVENT_TYPES`].
pub fn known_event_types() -> impl Iterator<Item = &'static str> {
    EVENT_TYPES.iter().map(|(name, _)| *name)
}

/// Whether VOD's model knows `event_type`.
#[must_use]
pub fn is_known(event_type: &str) -> bool {
    payload_keys(event_type).is_some()
}

/// The `EventContent` keys that may carry the payload of `event_type`, preferred first.
#[must_use]
pub fn payload_keys(event_type: &str) -> Option<&'static [&'static str]> {
    EVENT_TYPES
        .iter()
        .find(|(name, _)| *name == event_type)
        .map(|(_, keys)| *keys)
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
