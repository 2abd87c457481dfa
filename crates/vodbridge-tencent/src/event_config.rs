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
}
