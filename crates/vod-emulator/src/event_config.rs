//! Each sub-application's event configuration (`DescribeEventConfig`, `ModifyEventConfig`)
//! and, when enforced, what it does to a finished event: queued for pulling in `PULL` mode,
//! pushed to the `NotificationUrl` in `PUSH` mode (nowhere without one), not emitted at all
//! while its event switch is off.

use std::{collections::HashMap, sync::Arc};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;
use vodbridge_tencent::{
    event_config::{EventConfig, Mode, ModifyEventConfig, Switch},
    SignKey,
};

use crate::{
    error::{Error, Result},
    Shared,
};

/// Whether the sub-applications' event configuration decides delivery.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventConfigPolicy {
    /// The configuration is kept and answered, but every event is queued for pulling whatever
    /// it says, and a sub-application starts in `PULL` mode with every switch on: for tests
    /// of everything but the configuration.
    #[default]
    Recorded,
    /// VOD's semantics: a sub-application starts as VOD's do (`PUSH`, no URL, every switch
    /// off), and its configuration decides what happens to each event.
    Enforced,
}

/// A sub-application's configuration and its `SignKey` (never answered).
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(crate) config: EventConfig,
    pub(crate) sign_key: Option<String>,
}

/// Every sub-application's configuration.
#[derive(Debug, Default)]
pub(crate) struct Configs(HashMap<u64, Stored>);

impl Configs {
    /// The configuration of `sub_app_id`, as it starts under `policy` if never modified.
    pub(crate) fn get(&self, sub_app_id: u64, policy: EventConfigPolicy) -> Stored {
        self.0.get(&sub_app_id).cloned().unwrap_or_else(|| Stored {
            config: initial(policy),
            sign_key: None,
        })
    }

    /// Applies a `ModifyEventConfig`.
    pub(crate) fn modify(
        &mut self,
        sub_app_id: u64,
        policy: EventConfigPolicy,
        change: &ModifyEventConfig,
    ) {
        let entry = self.0.entry(sub_app_id).or_insert_with(|| Stored {
            config: initial(policy),
            sign_key: None,
        });
        entry.config.apply(change);
        if let Some(key) = &change.sign_key {
            entry.sign_key = (!key.is_empty()).then(|| key.clone());
        }
    }
}

fn initial(policy: EventConfigPolicy) -> EventConfig {
    match policy {
        EventConfigPolicy::Enforced => EventConfig::VOD_DEFAULT,
        EventConfigPolicy::Recorded => EventConfig {
            mode: Some(Mode::Pull),
            notification_url: Some(String::new()),
            upload_media_complete_event_switch: Some(Switch::On),
            delete_media_complete_event_switch: Some(Switch::On),
            persistence_complete_event_switch: Some(Switch::On),
        },
    }
}

/// Parses the parameters of a `ModifyEventConfig` call (unknown ones are ignored).
pub(crate) fn parse_modify(params: &Value) -> Result<ModifyEventConfig> {
    serde_json::from_value(params.clone()).map_err(|e| {
        Error::api(
            "InvalidParameterValue",
            format!("ModifyEventConfig: {e} (Mode is PUSH or PULL, switches ON or OFF)"),
        )
    })
}

/// What VOD did with a finished event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "Outcome", content = "Key")]
pub enum Emitted {
    /// Queued for `PullEvents`.
    Queued(u64),
    /// Being pushed to the sub-application's `NotificationUrl`.
    Pushed(u64),
    /// Not sent: its event switch is off, or the sub-application is in `PUSH` mode without
    /// a URL. Recorded in the ledger with mode `dropped`.
    Dropped(u64),
}

impl Emitted {
    /// The event's ledger key.
    #[must_use]
    pub const fn key(self) -> u64 {
        match self {
            Self::Queued(key) | Self::Pushed(key) | Self::Dropped(key) => key,
        }
    }
}

/// Emits one finished event of `sub_app_id` as the policy says.
pub(crate) fn emit(shared: &Arc<Shared>, sub_app_id: u64, event: Value) -> Emitted {
    let event_type = event
        .get("EventType")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let policy = shared.config.event_config;
    let stored = crate::lock(&shared.event_configs).get(sub_app_id, policy);
    if policy == EventConfigPolicy::Recorded || stored.config.mode == Some(Mode::Pull) {
        if policy == EventConfigPolicy::Enforced && !stored.config.emits(&event_type) {
            return dropped(shared, sub_app_id, &event_type);
        }
        let body = Bytes::from(event.to_string());
        let key = shared
            .queue()
            .enqueue(sub_app_id, &event_type, body, Instant::now());
        shared.notify.notify_waiters();
        return Emitted::Queued(key);
    }
    let url = stored.config.notification_url.clone().unwrap_or_default();
    if !stored.config.emits(&event_type) || url.is_empty() {
        return dropped(shared, sub_app_id, &event_type);
    }
    let key = shared.queue().record(sub_app_id, &event_type, "push");
    let shared = Arc::clone(shared);
    let sign_key = stored.sign_key.map(SignKey::new);
    tokio::spawn(async move {
        crate::delivery::push_one(&shared, &url, key, event, sign_key.as_ref()).await;
    });
    Emitted::Pushed(key)
}

fn dropped(shared: &Shared, sub_app_id: u64, event_type: &str) -> Emitted {
    let mut queue = shared.queue();
    queue.stats.dropped_by_config += 1;
    Emitted::Dropped(queue.record(sub_app_id, event_type, "dropped"))
}
