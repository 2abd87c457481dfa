//! The check of each source's sub-application in VOD (`DescribeEventConfig`): the mode that
//! matches the source, a push source's `NotificationUrl`, the event switches it needs. Run at
//! start and every `vod_check_interval_secs`, paced under VOD's 20 calls/s; a mismatch is an
//! ERROR (mode, URL) or WARN (switch) log that says what to change, a
//! `vodbridge_vod_config_mismatch{source, what}` gauge, and, with `vod_check = "readiness"`,
//! a reason on `/readyz`. `vodbridge vod status` and `vod configure` use the same comparison.

use std::{
    num::NonZeroU32,
    sync::{Arc, Mutex, PoisonError},
};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;
use vodbridge_tencent::{
    api::VodClient,
    event_config::{EventConfig, EventSwitch, Mode, ModifyEventConfig, Switch},
};

use crate::{
    config::{VodCheck, VodCheckPolicy},
    state::AppState,
    telemetry::Metrics,
};

/// Calls per second one process spends on `DescribeEventConfig` per SecretId: half of VOD's
/// 20, leaving room for other replicas and for `vodbridge vod status`.
const CHECKS_PER_SEC: u32 = 10;

/// How much a difference matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Severity {
    /// Events go elsewhere or nowhere: the source receives nothing.
    Error,
    /// Some event types are never sent.
    Warning,
}

/// One difference between VOD's event configuration and what the source needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mismatch {
    /// `mode`, `notification_url`, an [`EventSwitch::name`], or `check_failed`.
    pub(crate) what: &'static str,
    /// What the source needs (secrets redacted).
    pub(crate) expected: String,
    /// What VOD has (secrets redacted).
    pub(crate) actual: String,
    /// Error or warning.
    pub(crate) severity: Severity,
}

/// Every `what` label, so a resolved mismatch's gauge goes back to 0.
const WHATS: [&str; 6] = [
    "mode",
    "notification_url",
    "upload_media_complete",
    "delete_media_complete",
    "persistence_complete",
    "check_failed",
];

/// A URL with its `token` query value (the callback token) redacted.
pub(crate) fn redact_token(url: &str) -> String {
    match url.split_once("token=") {
        Some((head, tail)) => {
            let rest = tail.find('&').map_or("", |i| &tail[i..]);
            format!("{head}token=<redacted>{rest}")
        }
        None => url.to_owned(),
    }
}

/// Compares VOD's configuration with what the source needs.
pub(crate) fn compare(check: &VodCheck, actual: &EventConfig) -> Vec<Mismatch> {
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
        if let (Some(expected), Some(url)) = (&check.notification_url, actual.notification_url()) {
            if url != expected.expose_secret() {
                out.push(Mismatch {
                    what: "notification_url",
                    expected: redact_token(expected.expose_secret()),
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
    for switch in &check.switches {
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
pub(crate) fn desired_change(check: &VodCheck, actual: &EventConfig) -> ModifyEventConfig {
    // Unknown members are set: sending what is already there changes nothing.
    let mut change = ModifyEventConfig::default();
    if actual.mode != Some(check.mode) {
        change.mode = Some(check.mode);
    }
    if check.mode == Mode::Push {
        if let Some(url) = &check.notification_url {
            if actual.notification_url() != Some(url.expose_secret()) {
                change.notification_url = Some(url.expose_secret().to_owned());
            }
        }
        change.sign_key = check
            .sign_key
            .as_ref()
            .map(|k| k.expose_secret().to_owned());
    }
    for switch in &check.switches {
        if actual.switch(*switch) != Some(Switch::On) {
            change.set_switch(*switch, Switch::On);
        }
    }
    change
}

/// The advice an operator needs for a mismatch.
fn advice(source: &str, m: &Mismatch) -> String {
    match m.what {
        "mode" => format!(
            "VOD's sub-application is in {} mode but source {source} expects {}: events go {}. \
             Run `vodbridge vod configure --source {source}` or set the callback mode in the VOD console.",
            m.actual,
            m.expected,
            if m.actual == "PUSH" { "to the callback URL (or nowhere), never to the queue" } else { "to the reliable queue, never to the URL" }
        ),
        "notification_url" => format!(
            "VOD's NotificationUrl is {} but source {source} receives at {}: callbacks go elsewhere. \
             Run `vodbridge vod configure --source {source}`.",
            m.actual, m.expected
        ),
        "check_failed" => format!("Cannot read VOD's event configuration for source {source}: {}.", m.actual),
        switch => {
            let event = EventSwitch::ALL
                .into_iter()
                .find(|s| s.name() == switch)
                .map_or("", EventSwitch::event_type);
            format!(
                "VOD's {switch} event switch is OFF: {event} events are never sent to source {source}. \
                 Run `vodbridge vod configure --source {source}`."
            )
        }
    }
}

/// One source's check and its last result.
pub(crate) struct SourceCheck {
    /// The source's name.
    pub(crate) source: String,
    /// What it expects.
    pub(crate) check: VodCheck,
    client: VodClient,
    /// Mismatches of the last check.
    last: Mutex<Vec<Mismatch>>,
}

impl SourceCheck {
    /// A check for `source`.
    ///
    /// # Errors
    ///
    /// When the client cannot be built (the endpoint was validated with the config, so not
    /// in practice).
    pub(crate) fn new(source: &str, check: VodCheck) -> crate::Result<Self> {
        let client = VodClient::new(check.client.clone())
            .map_err(|e| crate::Error::Config(format!("sources.{source}: {e}")))?;
        Ok(Self {
            source: source.to_owned(),
            check,
            client,
            last: Mutex::new(Vec::new()),
        })
    }

    /// Why this source makes the bridge unready, if it does: a mode or URL mismatch under
    /// `vod_check = "readiness"`.
    pub(crate) fn not_ready_because(&self) -> Option<String> {
        if self.check.policy != VodCheckPolicy::Readiness {
            return None;
        }
        let last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let errors: Vec<String> = last
            .iter()
            .filter(|m| m.severity == Severity::Error && m.what != "check_failed")
            .map(|m| format!("{} is {} (expected {})", m.what, m.actual, m.expected))
            .collect();
        (!errors.is_empty()).then(|| {
            format!(
                "source {}: VOD's event configuration of sub-application {} differs: {} (vodbridge vod configure --source {})",
                self.source,
                self.check
                    .client
                    .sub_app_id
                    .map_or_else(|| "default".to_owned(), |id| id.to_string()),
                errors.join("; "),
                self.source
            )
        })
    }

    /// Reads VOD's configuration once, records and reports the mismatches.
    async fn run_once(&self, metrics: &Metrics) {
        let found = match self.client.describe_event_config().await {
            Ok(actual) => {
                let missing = actual.missing();
                if !missing.is_empty() {
                    tracing::warn!(
                        source = %self.source,
                        missing = %missing.join(", "),
                        "DescribeEventConfig left members out of its answer; they are not checked."
                    );
                }
                compare(&self.check, &actual)
            }
            Err(error) => vec![Mismatch {
                what: "check_failed",
                expected: String::new(),
                actual: error.to_string(),
                severity: Severity::Warning,
            }],
        };
        let previous = std::mem::replace(
            &mut *self.last.lock().unwrap_or_else(PoisonError::into_inner),
            found.clone(),
        );
        for what in WHATS {
            let on = found.iter().any(|m| m.what == what);
            metrics
                .vod_config_mismatch
                .with_label_values(&[self.source.as_str(), what])
                .set(i64::from(on));
        }
        for m in &found {
            // Report each mismatch when it appears, not every interval.
            if previous.contains(m) {
                continue;
            }
            let message = advice(&self.source, m);
            match m.severity {
                Severity::Error => {
                    tracing::error!(source = %self.source, what = m.what, expected = %m.expected, actual = %m.actual, "{message}");
                }
                Severity::Warning => {
                    tracing::warn!(source = %self.source, what = m.what, expected = %m.expected, actual = %m.actual, "{message}");
                }
            }
        }
        if found.is_empty() && !previous.is_empty() {
            tracing::info!(source = %self.source, "VOD's event configuration matches the source.");
        }
    }
}

/// Runs every source's check at start and then at its interval, paced per SecretId, until
/// cancelled.
pub(crate) async fn run_checks(state: Arc<AppState>, cancel: CancellationToken) {
    let pacer: DefaultKeyedRateLimiter<String> = RateLimiter::keyed(Quota::per_second(
        NonZeroU32::new(CHECKS_PER_SEC).unwrap_or(NonZeroU32::MIN),
    ));
    let pacer = Arc::new(pacer);
    let tasks = tokio_util::task::TaskTracker::new();
    for check in state.vod_checks.iter().cloned() {
        let (pacer, state, cancel) = (Arc::clone(&pacer), Arc::clone(&state), cancel.clone());
        tasks.spawn(async move {
            let key = check.check.client.credentials.secret_id.clone();
            loop {
                let round = async {
                    pacer.until_key_ready(&key).await;
                    check.run_once(&state.metrics).await;
                };
                tokio::select! {
                    () = round => {}
                    () = cancel.cancelled() => return,
                }
                tokio::select! {
                    () = tokio::time::sleep(check.check.interval) => {}
                    () = cancel.cancelled() => return,
                }
            }
        });
    }
    tasks.close();
    tasks.wait().await;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use secrecy::SecretString;
    use vodbridge_tencent::{api::ClientConfig, tc3::Credentials};

    use super::*;

    fn check(mode: Mode, url: Option<&str>) -> VodCheck {
        VodCheck {
            client: ClientConfig::new("http://127.0.0.1:1", Credentials::new("id", "key")),
            mode,
            notification_url: url.map(|u| SecretString::from(u.to_owned())),
            switches: vec![EventSwitch::UploadMediaComplete],
            sign_key: None,
            policy: VodCheckPolicy::Readiness,
            interval: Duration::from_secs(300),
        }
    }

    #[test]
    fn every_kind_of_difference_is_found_and_fixed_by_one_change() {
        let expected = check(
            Mode::Push,
            Some("https://b.example/callback/p?token=s3cret"),
        );
        let actual = EventConfig::VOD_DEFAULT;
        let found = compare(&expected, &actual);
        let whats: Vec<&str> = found.iter().map(|m| m.what).collect();
        assert_eq!(whats, ["notification_url", "upload_media_complete"]);
        assert!(
            found.iter().all(|m| !m.expected.contains("s3cret")),
            "the token never shows: {found:?}"
        );
        let change = desired_change(&expected, &actual);
        let mut fixed = actual.clone();
        fixed.apply(&change);
        assert!(compare(&expected, &fixed).is_empty(), "{change:?}");

        let pull = check(Mode::Pull, None);
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
