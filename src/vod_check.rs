//! The check of each source's sub-application in VOD (`DescribeEventConfig`): the mode that
//! matches the source, a push source's `NotificationUrl`, the event switches it needs. Run at
//! start and every `vod_check_interval_secs`, paced under VOD's 20 calls/s; a mismatch is an
//! ERROR (mode, URL) or WARN (switch) log that says what to change, a
//! `vodbridge_vod_config_mismatch{source, what}` gauge, and, with `vod_check = "readiness"`,
//! a reason on `/readyz`. The comparison itself is `vodbridge_tencent::event_config::compare`,
//! which `vodbridge vod status` and `vod configure` use too.

use std::{
    num::NonZeroU32,
    sync::{Arc, Mutex, PoisonError},
};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use prometheus::IntGaugeVec;
use tokio_util::sync::CancellationToken;
use vodbridge_tencent::{
    api::VodClient,
    event_config::{compare, EventSwitch, Mismatch, Severity, MISMATCH_WHATS},
};

use crate::config::{VodCheck, VodCheckPolicy};

/// Calls per second one process spends on `DescribeEventConfig` per SecretId: half of VOD's
/// 20, leaving room for other replicas and for `vodbridge vod status`.
const CHECKS_PER_SEC: u32 = 10;

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
    async fn run_once(&self, mismatches: &IntGaugeVec) {
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
                compare(&self.check.wanted(), &actual)
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
        for what in MISMATCH_WHATS {
            let on = found.iter().any(|m| m.what == what);
            mismatches
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
pub(crate) async fn run_checks(
    checks: Vec<Arc<SourceCheck>>,
    mismatches: IntGaugeVec,
    cancel: CancellationToken,
) {
    let pacer: DefaultKeyedRateLimiter<String> = RateLimiter::keyed(Quota::per_second(
        NonZeroU32::new(CHECKS_PER_SEC).unwrap_or(NonZeroU32::MIN),
    ));
    let pacer = Arc::new(pacer);
    let tasks = tokio_util::task::TaskTracker::new();
    for check in checks {
        let (pacer, mismatches, cancel) = (Arc::clone(&pacer), mismatches.clone(), cancel.clone());
        tasks.spawn(async move {
            let key = check.check.client.credentials.secret_id.clone();
            loop {
                let round = async {
                    pacer.until_key_ready(&key).await;
                    check.run_once(&mismatches).await;
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
