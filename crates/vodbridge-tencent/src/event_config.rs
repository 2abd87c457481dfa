//! VOD's event configuration of a sub-application (`DescribeEventConfig`,
//! `ModifyEventConfig`; vod-api.md §5.5): the callback mode, the normal-callback URL and the
//! switches of the events VOD sends only when asked.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How VOD hands a sub-application's events out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Mode {
    /// Normal callback: VOD POSTs each event to the `NotificationUrl`.
    Push,
    /// Reliable callback: VOD queues events for `PullEvents`; the URL has no effect.
    Pull,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Push => "PUSH",
            Self::Pull => "PULL",
        })
    }
}

/// An event switch's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Switch {
    /// The event is sent.
    On,
    /// The event is not sent (VOD's default for every switch).
    Off,
}

impl fmt::Display for Switch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::On => "ON",
            Self::Off => "OFF",
        })
    }
}

/// The events VOD sends only when their switch is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventSwitch {
    /// `UploadMediaCompleteEventSwitch`: `NewFileUpload`.
    UploadMediaComplete,
    /// `DeleteMediaCompleteEventSwitch`: `FileDeleted`.
    DeleteMediaComplete,
    /// `PersistenceCompleteEventSwitch`: `PersistenceComplete` (clip persistence).
    PersistenceComplete,
}

impl EventSwitch {
    /// Every switch.
    pub const ALL: [Self; 3] = [
        Self::UploadMediaComplete,
        Self::DeleteMediaComplete,
        Self::PersistenceComplete,
    ];

    /// The API parameter, e.g. `UploadMediaCompleteEventSwitch`.
    #[must_use]
    pub const fn parameter(self) -> &'static str {
        match self {
            Self::UploadMediaComplete => "UploadMediaCompleteEventSwitch",
            Self::DeleteMediaComplete => "DeleteMediaCompleteEventSwitch",
            Self::PersistenceComplete => "PersistenceCompleteEventSwitch",
        }
    }

    /// The name in the bridge's configuration and metrics, e.g. `upload_media_complete`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::UploadMediaComplete => "upload_media_complete",
            Self::DeleteMediaComplete => "delete_media_complete",
            Self::PersistenceComplete => "persistence_complete",
        }
    }

    /// The `EventType` the switch controls.
    #[must_use]
    pub const fn event_type(self) -> &'static str {
        match self {
            Self::UploadMediaComplete => "NewFileUpload",
            Self::DeleteMediaComplete => "FileDeleted",
            Self::PersistenceComplete => "PersistenceComplete",
        }
    }

    /// The switch that controls `event_type`, if any.
    #[must_use]
    pub fn for_event_type(event_type: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.event_type() == event_type)
    }
}

/// A sub-application's event configuration as `DescribeEventConfig` answers it (there is no
/// `SignKey` in the answer). Tencent's SDK declares every member of the answer optional, so
/// each is read as such: a member VOD leaves out is unknown ([`EventConfig::missing`] names
/// them), never a default, and a check skips it with a warning instead of failing.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EventConfig {
    /// `PUSH` or `PULL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// The normal-callback URL (empty: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification_url: Option<String>,
    /// `NewFileUpload` on or off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_media_complete_event_switch: Option<Switch>,
    /// `FileDeleted` on or off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_media_complete_event_switch: Option<Switch>,
    /// `PersistenceComplete` on or off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistence_complete_event_switch: Option<Switch>,
}

impl EventConfig {
    /// What a sub-application starts with: normal callback, no URL, every switch off.
    pub const VOD_DEFAULT: Self = Self {
        mode: Some(Mode::Push),
        notification_url: Some(String::new()),
        upload_media_complete_event_switch: Some(Switch::Off),
        delete_media_complete_event_switch: Some(Switch::Off),
        persistence_complete_event_switch: Some(Switch::Off),
    };

    /// The state of `switch`, if the answer had it.
    #[must_use]
    pub const fn switch(&self, switch: EventSwitch) -> Option<Switch> {
        match switch {
            EventSwitch::UploadMediaComplete => self.upload_media_complete_event_switch,
            EventSwitch::DeleteMediaComplete => self.delete_media_complete_event_switch,
            EventSwitch::PersistenceComplete => self.persistence_complete_event_switch,
        }
    }

    /// The URL, if the answer had it (empty: none).
    #[must_use]
    pub fn notification_url(&self) -> Option<&str> {
        self.notification_url.as_deref()
    }

    /// Sets `switch`.
    pub fn set_switch(&mut self, switch: EventSwitch, state: Switch) {
        let slot = match switch {
            EventSwitch::UploadMediaComplete => &mut self.upload_media_complete_event_switch,
            EventSwitch::DeleteMediaComplete => &mut self.delete_media_complete_event_switch,
            EventSwitch::PersistenceComplete => &mut self.persistence_complete_event_switch,
        };
        *slot = Some(state);
    }

    /// The wire names of the members the answer left out.
    #[must_use]
    pub fn missing(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.mode.is_none() {
            out.push("Mode");
        }
        if self.notification_url.is_none() {
            out.push("NotificationUrl");
        }
        for switch in EventSwitch::ALL {
            if self.switch(switch).is_none() {
                out.push(switch.parameter());
            }
        }
        out
    }

    /// Whether VOD emits `event_type` under this configuration (its switch, if it has one, is
    /// on; an unknown switch counts as VOD's default, off).
    #[must_use]
    pub fn emits(&self, event_type: &str) -> bool {
        EventSwitch::for_event_type(event_type).is_none_or(|s| self.switch(s) == Some(Switch::On))
    }

    /// Applies a `ModifyEventConfig` request as VOD does: unset parameters stay, an empty
    /// `NotificationUrl` clears the URL. The `SignKey` is not part of the answer; the caller
    /// keeps it.
    pub fn apply(&mut self, change: &ModifyEventConfig) {
        if let Some(mode) = change.mode {
            self.mode = Some(mode);
        }
        if let Some(url) = &change.notification_url {
            self.notification_url = Some(url.clone());
        }
        for switch in EventSwitch::ALL {
            if let Some(state) = change.switch(switch) {
                self.set_switch(switch, state);
            }
        }
    }
}

/// A `ModifyEventConfig` request: every parameter optional, as in the API.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ModifyEventConfig {
    /// The sub-application.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_app_id: Option<u64>,
    /// `PUSH` or `PULL`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// The normal-callback URL; empty clears it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notification_url: Option<String>,
    /// `NewFileUpload`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_media_complete_event_switch: Option<Switch>,
    /// `FileDeleted`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delete_media_complete_event_switch: Option<Switch>,
    /// `PersistenceComplete`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistence_complete_event_switch: Option<Switch>,
    /// The callback `SignKey` (a secret: never printed by `Debug`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sign_key: Option<String>,
}

impl ModifyEventConfig {
    /// The requested state of `switch`, if the request sets it.
    #[must_use]
    pub const fn switch(&self, switch: EventSwitch) -> Option<Switch> {
        match switch {
            EventSwitch::UploadMediaComplete => self.upload_media_complete_event_switch,
            EventSwitch::DeleteMediaComplete => self.delete_media_complete_event_switch,
            EventSwitch::PersistenceComplete => self.persistence_complete_event_switch,
        }
    }

    /// Requests `state` for `switch`.
    pub fn set_switch(&mut self, switch: EventSwitch, state: Switch) {
        let slot = match switch {
            EventSwitch::UploadMediaComplete => &mut self.upload_media_complete_event_switch,
            EventSwitch::DeleteMediaComplete => &mut self.delete_media_complete_event_switch,
            EventSwitch::PersistenceComplete => &mut self.persistence_complete_event_switch,
        };
        *slot = Some(state);
    }

    /// Whether the request changes nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.mode.is_none()
            && self.notification_url.is_none()
            && EventSwitch::ALL.iter().all(|s| self.switch(*s).is_none())
            && self.sign_key.is_none()
    }
}

impl fmt::Debug for ModifyEventConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ModifyEventConfig")
            .field("sub_app_id", &self.sub_app_id)
            .field("mode", &self.mode)
            .field("notification_url", &self.notification_url)
            .field("upload", &self.upload_media_complete_event_switch)
            .field("delete", &self.delete_media_complete_event_switch)
            .field("persistence", &self.persistence_complete_event_switch)
            .field("sign_key", &self.sign_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

// The comparison of what VOD has with what a source needs (`vodbridge vod status`,
// `vod configure` and the bridge's periodic check).

/// What a source needs of its sub-application's event configuration: the mode, a push
/// source's `NotificationUrl` and `SignKey`, the event switches it needs on. The secrets are
/// borrowed for one comparison and never printed (the URL carries the callback token).
#[derive(Clone, Copy)]
pub struct Wanted<'a> {
    /// `PULL` for a pull source, `PUSH` for a push source.
    pub mode: Mode,
    /// A push source's `NotificationUrl`.
    pub notification_url: Option<&'a str>,
    /// A push source's `SignKey` (cannot be read back, so `desired_change` always sends it).
    pub sign_key: Option<&'a str>,
    /// The event switches it needs on.
    pub switches: &'a [EventSwitch],
}

impl fmt::Debug for Wanted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wanted")
            .field("mode", &self.mode)
            .field("notification_url", &self.notification_url.map(redact_token))
            .field("sign_key", &self.sign_key.map(|_| "<redacted>"))
            .field("switches", &self.switches)
            .finish()
    }
}

/// How much a difference matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Events go elsewhere or nowhere: the source receives nothing.
    Error,
    /// Some event types are never sent.
    Warning,
}

/// One difference between VOD's event configuration and what the source needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// `mode`, `notification_url`, an [`EventSwitch::name`], or `check_failed`.
    pub what: &'static str,
    /// What the source needs (secrets redacted).
    pub expected: String,
    /// What VOD has (secrets redacted).
    pub actual: String,
    /// Error or warning.
    pub severity: Severity,
}

/// Every `what` label, so a resolved mismatch's gauge goes back to 0.
pub const MISMATCH_WHATS: [&str; 6] = [
    "mode",
    "notification_url",
    "upload_media_complete",
    "delete_media_complete",
    "persistence_complete",
    "check_failed",
];

/// A URL with its `token` query value (the callback token) redacted.
pub fn redact_token(url: &str) -> String {
    match url.split_once("token=") {
        Some((head, tail)) => {
            let rest = tail.find('&').map_or("", |i| &tail[i..]);
            format!("{head}token=<redacted>{rest}")
        }
        None => url.to_owned(),
    }
}

/// Compares VOD's configuration with what the source needs.
pub fn compare(check: &Wanted<'_>, actual: &EventConfig) -> Vec<Mismatch> {
    // A member VOD left out of the answer is unknown, not a mismatch (the caller warns).
    let mut out = Vec::new();
    if let Some(mode) = actual.mode.filter(|mode| *mode != check.mode) {
        out.push(Mismatch {
            what: "mode",
            expected: check.mode.to_string(),
            actual: mode.to_string(),
            severity: Severity::Error,
        });
    }
    if check.mode == Mode::Push {
        if let (Some(expected), Some(url)) = (check.notification_url, actual.notification_url()) {
            if url != expected {
                out.push(Mismatch {
                    what: "notification_url",
                    expected: redact_token(expected),
                    actual: if url.is_empty() {
                        "(none)".to_owned()
                    } else {
                        redact_token(url)
                    },
                    severity: Severity::Error,
                });
            }
        }
    }
    for switch in check.switches {
        if actual.switch(*switch) == Some(Switch::Off) {
            out.push(Mismatch {
                what: switch.name(),
                expected: Switch::On.to_string(),
                actual: Switch::Off.to_string(),
                severity: Severity::Warning,
            });
        }
    }
    out
}

/// The `ModifyEventConfig` that makes VOD match the source (empty when nothing differs and
/// no `SignKey` is configured; a `SignKey` cannot be read back, so it is always sent).
pub fn desired_change(check: &Wanted<'_>, actual: &EventConfig) -> ModifyEventConfig {
    // Unknown members are set: sending what is already there changes nothing.
    let mut change = ModifyEventConfig::default();
    if actual.mode != Some(check.mode) {
        change.mode = Some(check.mode);
    }
    if check.mode == Mode::Push {
        if let Some(url) = check.notification_url {
            if actual.notification_url() != Some(url) {
                change.notification_url = Some(url.to_owned());
            }
        }
        change.sign_key = check.sign_key.map(str::to_owned);
    }
    for switch in check.switches {
        if actual.switch(*switch) != Some(Switch::On) {
            change.set_switch(*switch, Switch::On);
        }
    }
    change
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_names_are_vods() {
        let mut change = ModifyEventConfig {
            sub_app_id: Some(1),
            mode: Some(Mode::Pull),
            notification_url: Some(String::new()),
            sign_key: Some("k".into()),
            ..ModifyEventConfig::default()
        };
        change.set_switch(EventSwitch::UploadMediaComplete, Switch::On);
        let json = serde_json::to_value(&change).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"SubAppId": 1, "Mode": "PULL", "NotificationUrl": "",
                "UploadMediaCompleteEventSwitch": "ON", "SignKey": "k"})
        );
        assert!(!format!("{change:?}").contains("\"k\""), "SignKey redacted");
        let answer: EventConfig = serde_json::from_str(
            r#"{"Mode":"PUSH","NotificationUrl":"http://x/cb","UploadMediaCompleteEventSwitch":"OFF",
                "DeleteMediaCompleteEventSwitch":"ON","PersistenceCompleteEventSwitch":"OFF","RequestId":"r"}"#,
        )
        .expect("answer");
        assert_eq!(answer.mode, Some(Mode::Push));
        assert_eq!(
            answer.switch(EventSwitch::DeleteMediaComplete),
            Some(Switch::On)
        );
        assert!(answer.missing().is_empty());
    }

    #[test]
    fn every_member_of_the_answer_is_optional() {
        let answer: EventConfig =
            serde_json::from_str(r#"{"NotificationUrl":"http://x/cb","RequestId":"r"}"#)
                .expect("an answer with members left out still parses");
        assert_eq!(answer.mode, None);
        assert_eq!(answer.notification_url(), Some("http://x/cb"));
        assert_eq!(
            answer.missing(),
            [
                "Mode",
                "UploadMediaCompleteEventSwitch",
                "DeleteMediaCompleteEventSwitch",
                "PersistenceCompleteEventSwitch"
            ]
        );
        assert!(
            !answer.emits("NewFileUpload"),
            "an unknown switch is VOD's default"
        );
    }

    #[test]
    fn modify_keeps_what_it_does_not_set_and_an_empty_url_clears() {
        let mut config = EventConfig::VOD_DEFAULT;
        config.notification_url = Some("http://x/cb".into());
        assert!(!config.emits("NewFileUpload"), "switches start off");
        assert!(
            config.emits("ProcedureStateChanged"),
            "unswitched types always"
        );
        let mut change = ModifyEventConfig {
            mode: Some(Mode::Pull),
            ..ModifyEventConfig::default()
        };
        change.set_switch(EventSwitch::UploadMediaComplete, Switch::On);
        config.apply(&change);
        assert_eq!(config.mode, Some(Mode::Pull));
        assert_eq!(
            config.notification_url(),
            Some("http://x/cb"),
            "unset: kept"
        );
        assert!(config.emits("NewFileUpload"));
        config.apply(&ModifyEventConfig {
            notification_url: Some(String::new()),
            ..ModifyEventConfig::default()
        });
        assert_eq!(config.notification_url(), Some(""), "empty clears");
    }

    #[test]
    fn every_kind_of_difference_is_found_and_fixed_by_one_change() {
        let switches = [EventSwitch::UploadMediaComplete];
        let expected = Wanted {
            mode: Mode::Push,
            notification_url: Some("https://b.example/callback/p?token=s3cret"),
            sign_key: None,
            switches: &switches,
        };
        let actual = EventConfig::VOD_DEFAULT;
        let found = compare(&expected, &actual);
        let whats: Vec<&str> = found.iter().map(|m| m.what).collect();
        assert_eq!(whats, ["notification_url", "upload_media_complete"]);
        assert!(
            found.iter().all(|m| !m.expected.contains("s3cret")),
            "the token never shows: {found:?}"
        );
        assert!(!format!("{expected:?}").contains("s3cret"));
        let change = desired_change(&expected, &actual);
        let mut fixed = actual.clone();
        fixed.apply(&change);
        assert!(compare(&expected, &fixed).is_empty(), "{change:?}");

        let pull = Wanted {
            mode: Mode::Pull,
            notification_url: None,
            ..expected
        };
        let found = compare(&pull, &actual);
        assert_eq!(found[0].what, "mode");
        assert_eq!(found[0].severity, Severity::Error);
        assert_eq!(desired_change(&pull, &actual).mode, Some(Mode::Pull));
    }

    #[test]
    fn the_token_is_redacted_wherever_it_is() {
        assert_eq!(
            redact_token("https://h/callback/p?token=abc&x=1"),
            "https://h/callback/p?token=<redacted>&x=1"
        );
        assert_eq!(redact_token("https://h/cb"), "https://h/cb");
    }
}
