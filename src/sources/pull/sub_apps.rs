//! A pull source with `sub_app_ids`: many sub-applications of one VOD account from one source.
//! A registry task lists them (`DescribeSubAppIds` with `"all"`, every `sub_app_refresh_secs`)
//! and runs one [`PullSource`] per sub-application, each with its own `SubAppId`, envelope
//! `source` and pacing ([`super::pacing`]), all under the account's governor (or one each with
//! `governor_scope = "sub_app"`). A sub-application that is gone or no longer On is stopped the
//! way a shutdown stops a source: no new pull, what was pulled is delivered and confirmed. One
//! probe task reads the per-sub-application backlog, one check task each one's callback mode.

use std::{
    collections::{BTreeMap, BTreeSet},
    num::NonZeroU32,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use vodbridge_core::Ingress;
use vodbridge_tencent::{
    api::{ErrorClass, VodClient},
    event_config::{compare, Mismatch, Severity, MISMATCH_WHATS},
    governor::Governor,
    sub_apps::SubAppStatus,
    Normalizer,
};

use crate::{
    config::{PullSettings, SubAppSelection, VodCheck, VodCheckPolicy},
    sources::backoff::{pause, Backoff},
    state::AppState,
};

use super::{
    pacing::{Pacing, QuietShare},
    source::{Member, PullSource, Shared},
};

/// `DescribeEventsState` calls per second one source spends on its sub-applications' backlog
/// (VOD allows 20 per account).
const BACKLOG_CALLS_PER_SEC: u32 = 5;
/// `DescribeEventConfig` calls per second one source spends checking its sub-applications'
/// mode (VOD allows 20 per account; the other sources' checks and `vod status` share them).
const CHECK_CALLS_PER_SEC: u32 = 5;
/// The label of the sub-applications beyond `sub_app_metric_labels`.
pub(crate) const OTHER_LABEL: &str = "other";

/// What one listing found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Listing {
    /// Sub-applications to pull.
    pub(crate) pulled: BTreeSet<u64>,
    /// Left out by the configuration (`exclude_sub_app_ids`, or not in the list).
    pub(crate) excluded: BTreeSet<u64>,
    /// Listed by VOD with a status other than On, with it.
    pub(crate) not_on: BTreeMap<u64, SubAppStatus>,
    /// VOD's names of the listed ones (none for a configured list).
    pub(crate) names: BTreeMap<u64, String>,
}

/// The sub-applications `selection` covers: the configured list as it is, or every
/// sub-application VOD lists whose status is On (one `DescribeSubAppIds` page per 200).
///
/// # Errors
///
/// VOD's answer to `DescribeSubAppIds`, for `"all"`.
pub(crate) async fn list(
    client: &VodClient,
    selection: &SubAppSelection,
) -> vodbridge_tencent::Result<Listing> {
    let mut listing = Listing::default();
    if let Some(listed) = &selection.listed {
        for &id in listed {
            if selection.covers(id) {
                listing.pulled.insert(id);
            } else {
                listing.excluded.insert(id);
            }
        }
        return Ok(listing);
    }
    for info in client.all_sub_app_ids().await? {
        let id = info.sub_app_id;
        listing.names.insert(id, info.display_name().to_owned());
        if !selection.covers(id) {
            listing.excluded.insert(id);
        } else if info.status.is_on() {
            listing.pulled.insert(id);
        } else {
            listing.not_on.insert(id, info.status);
        }
    }
    Ok(listing)
}

/// One running sub-application.
struct Unit {
    source: Arc<PullSource>,
    stop: CancellationToken,
    label: String,
}

/// The `sub_app` labels given so far: each id keeps its label; beyond the limit, `other`.
struct Labels {
    given: BTreeSet<u64>,
    limit: usize,
}

impl Labels {
    fn label(&mut self, id: u64) -> String {
        if self.given.contains(&id) || self.given.len() < self.limit {
            self.given.insert(id);
            id.to_string()
        } else {
            OTHER_LABEL.to_owned()
        }
    }
}

/// What readiness reads.
#[derive(Default)]
struct Health {
    /// Set after a successful listing.
    listed_once: bool,
    /// The last listing's error, while listings fail.
    listing_failed: Option<String>,
    /// Each pulled sub-application's differences from what the source needs.
    mismatches: BTreeMap<u64, Vec<Mismatch>>,
}

/// A pull source with `sub_app_ids`.
pub(crate) struct SubAppSet {
    /// The source's name (the `source` label of every metric and route).
    pub(crate) name: String,
    /// The source's settings; each sub-application's client adds its `SubAppId`.
    settings: PullSettings,
    selection: SubAppSelection,
    /// What each sub-application's event configuration must be, when checked.
    check: Option<VodCheck>,
    /// The account's governor (`governor_scope = "account"`).
    governor: Arc<Governor>,
    /// `DescribeSubAppIds` (no `SubAppId`).
    lister: VodClient,
    shared: Shared,
    quiet: Arc<QuietShare>,
    units: Mutex<BTreeMap<u64, Unit>>,
    labels: Mutex<Labels>,
    health: Mutex<Health>,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SubAppSet {
    /// The set of source `name`; `governor` is its account's.
    ///
    /// # Errors
    ///
    /// When the endpoint is invalid (already checked by config validation).
    pub(crate) fn new(
        name: &str,
        settings: PullSettings,
        check: Option<VodCheck>,
        governor: Arc<Governor>,
    ) -> crate::Result<Self> {
        let Some(selection) = settings.sub_apps.clone() else {
            return Err(crate::Error::Config(format!(
                "sources.{name}: a sub-application set needs sub_app_ids"
            )));
        };
        let lister = VodClient::new(settings.client.clone())
            .map_err(|e| crate::Error::Config(format!("sources.{name}.endpoint: {e}")))?;
        Ok(Self {
            name: name.to_owned(),
            quiet: Arc::new(QuietShare::new(settings.account.budget.pull_per_sec)),
            shared: Shared::new(settings.dedupe_capacity),
            labels: Mutex::new(Labels {
                given: BTreeSet::new(),
                limit: selection.metric_labels,
            }),
            selection,
            check,
            governor,
            lister,
            settings,
            units: Mutex::new(BTreeMap::new()),
            health: Mutex::new(Health::default()),
        })
    }

    /// Set while VOD rejects the source's credentials (readiness).
    pub(crate) fn auth_failed(&self) -> Arc<std::sync::atomic::AtomicBool> {
        Arc::clone(&self.shared.auth_failed)
    }

    /// Starts the registry, the backlog probe and the mode check under `loops`; each
    /// sub-application's loops go under `loops`, its confirmers under `confirmers`.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        state: &Arc<AppState>,
        stop: &CancellationToken,
        loops: &TaskTracker,
        confirmers: &TaskTracker,
    ) {
        loops.spawn(run_registry(
            Arc::clone(self),
            Arc::clone(state),
            stop.clone(),
            loops.clone(),
            confirmers.clone(),
        ));
        loops.spawn(run_backlog(
            Arc::clone(self),
            Arc::clone(state),
            stop.clone(),
        ));
        if self.check.is_some() {
            loops.spawn(run_checks(
                Arc::clone(self),
                Arc::clone(state),
                stop.clone(),
            ));
        }
    }

    /// Why the source makes the bridge unready: no listing has succeeded yet (it pulls
    /// nothing until one does).
    pub(crate) fn not_ready_because(&self) -> Option<String> {
        let health = locked(&self.health);
        if health.listed_once {
            return None;
        }
        Some(match &health.listing_failed {
            Some(error) => format!(
                "source {}: cannot list the account's sub-applications (DescribeSubAppIds): {error}",
                self.name
            ),
            None => format!(
                "source {}: listing the account's sub-applications (DescribeSubAppIds)",
                self.name
            ),
        })
    }

    /// What `/readyz` adds without making the bridge unready: listings that fail after one
    /// succeeded, and sub-applications in PUSH mode (with `vod_check = "readiness"`): the
    /// others are pulled, and a restart would not change VOD's configuration.
    pub(crate) fn degraded_because(&self) -> Vec<String> {
        // The units' lock is never taken while holding the health lock (`apply` takes them
        // the other way round).
        let pulled = locked(&self.units).len();
        let health = locked(&self.health);
        let mut lines = Vec::new();
        if let (Some(error), true) = (&health.listing_failed, health.listed_once) {
            lines.push(format!(
                "source {}: DescribeSubAppIds fails ({error}); the {} sub-applications found before are pulled",
                self.name, pulled
            ));
        }
        if self
            .check
            .as_ref()
            .is_some_and(|c| c.policy == VodCheckPolicy::Readiness)
        {
            let push: Vec<String> = health
                .mismatches
                .iter()
                .filter(|(_, found)| {
                    found
                        .iter()
                        .any(|m| m.what == "mode" && m.severity == Severity::Error)
                })
                .map(|(id, _)| id.to_string())
                .collect();
            if !push.is_empty() {
                lines.push(format!(
                    "source {}: sub-application(s) {} not in PULL mode in VOD while the bridge pulls them: their events never reach the queue (vodbridge vod configure --source {})",
                    self.name,
                    push.join(", "),
                    self.name
                ));
            }
        }
        lines
    }

    /// Starts the sub-applications of `listing` that are not running and stops those it no
    /// longer has; updates the gauges.
    fn apply(&self, listing: &Listing, run: &Running) {
        let metrics = &run.state.metrics;
        let mut units = locked(&self.units);
        let gone: Vec<u64> = units
            .keys()
            .filter(|id| !listing.pulled.contains(id))
            .copied()
            .collect();
        for id in gone {
            if let Some(unit) = units.remove(&id) {
                tracing::info!(source = %self.name, sub_app_id = id, "Sub-application no longer listed as On or no longer selected; it is stopped (what it pulled is still delivered and confirmed).");
                unit.stop.cancel();
                if unit.label != OTHER_LABEL {
                    let _ = metrics
                        .sub_app_backlog
                        .remove_label_values(&[self.name.as_str(), unit.label.as_str()]);
                }
            }
            locked(&self.health).mismatches.remove(&id);
        }
        for &id in &listing.pulled {
            if units.contains_key(&id) {
                continue;
            }
            let unit = self.unit(id, metrics, run.stop.child_token());
            tracing::info!(source = %self.name, sub_app_id = id, name = listing.names.get(&id).map_or("", String::as_str), "Pulling a sub-application.");
            unit.source
                .spawn(&run.state, &unit.stop, &run.loops, &run.confirmers);
            units.insert(id, unit);
        }
        self.quiet.set_members(units.len());
        for (state, count) in [
            ("pulled", units.len()),
            ("excluded", listing.excluded.len()),
            ("not_on", listing.not_on.len()),
        ] {
            metrics
                .sub_apps
                .with_label_values(&[self.name.as_str(), state])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }

    /// Builds sub-application `id`'s source.
    fn unit(&self, id: u64, metrics: &crate::telemetry::Metrics, stop: CancellationToken) -> Unit {
        let label = locked(&self.labels).label(id);
        let mut settings = self.settings.clone();
        settings.client.sub_app_id = Some(id);
        settings.sub_apps = None;
        let governor = match self.settings.governor_scope {
            crate::config::GovernorScope::Account => Arc::clone(&self.governor),
            crate::config::GovernorScope::SubApp => Arc::new(Governor::new(
                self.governor.account(),
                self.settings.account.budget,
            )),
        };
        let labels = [self.name.as_str(), label.as_str()];
        let member = Member {
            pacing: Pacing::new(),
            quiet: Arc::clone(&self.quiet),
            pulled: metrics.sub_app_pulled.with_label_values(&labels),
            confirmed: metrics.sub_app_confirmed.with_label_values(&labels),
            full: metrics.sub_app_pull_full.with_label_values(&labels),
        };
        let normalizer = Normalizer::new(
            self.selection.cloudevents_source(id, &self.name),
            Some(id),
            Ingress::Pull,
        );
        let client = self.lister.for_sub_app(id);
        let source = PullSource::with(
            &self.name,
            normalizer,
            settings,
            governor,
            &self.shared,
            Some(member),
            client,
        );
        Unit {
            source: Arc::new(source),
            stop,
            label,
        }
    }

    /// A snapshot of the running sub-applications: id, client, label.
    fn snapshot(&self) -> Vec<(u64, VodClient, String)> {
        locked(&self.units)
            .iter()
            .map(|(id, unit)| (*id, unit.source.client.clone(), unit.label.clone()))
            .collect()
    }
}

/// Where the registry starts sub-applications.
struct Running {
    state: Arc<AppState>,
    /// The bridge's stop: each sub-application's own is its child.
    stop: CancellationToken,
    loops: TaskTracker,
    confirmers: TaskTracker,
}

/// Lists the sub-applications and keeps one source running per sub-application until `stop`.
/// A configured list is applied once; `"all"` is listed again every refresh period (sooner,
/// backing off, while listings fail: the sub-applications found before keep being pulled).
async fn run_registry(
    set: Arc<SubAppSet>,
    state: Arc<AppState>,
    stop: CancellationToken,
    loops: TaskTracker,
    confirmers: TaskTracker,
) {
    let run = Running {
        state,
        stop: stop.clone(),
        loops,
        confirmers,
    };
    let listings = &run.state.metrics.sub_app_listings;
    let mut backoff = Backoff::new(Duration::from_secs(1), set.selection.refresh);
    loop {
        let listed = tokio::select! {
            listed = list(&set.lister, &set.selection) => listed,
            () = stop.cancelled() => break,
        };
        let delay = match listed {
            Ok(listing) => {
                backoff.reset();
                if set.selection.listed.is_none() {
                    listings.with_label_values(&[set.name.as_str(), "ok"]).inc();
                }
                {
                    let mut health = locked(&set.health);
                    health.listed_once = true;
                    health.listing_failed = None;
                }
                set.shared
                    .auth_failed
                    .store(false, std::sync::atomic::Ordering::Relaxed);
                set.apply(&listing, &run);
                if set.selection.listed.is_some() {
                    // A configured list does not change while the bridge runs.
                    stop.cancelled().await;
                    break;
                }
                set.selection.refresh
            }
            Err(error) => {
                listings
                    .with_label_values(&[set.name.as_str(), "failed"])
                    .inc();
                if error.class() == ErrorClass::Auth {
                    set.shared
                        .auth_failed
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
                tracing::warn!(source = %set.name, error = %error, "DescribeSubAppIds failed; the sub-applications found before keep being pulled.");
                locked(&set.health).listing_failed = Some(error.to_string());
                backoff.next(Duration::ZERO)
            }
        };
        if !pause(delay, &stop).await {
            break;
        }
    }
}

/// Keeps `vodbridge_sub_app_backlog{source, sub_app}` and `vodbridge_vod_backlog{source}` (their
/// sum) current: one `DescribeEventsState` per sub-application, at most
/// [`BACKLOG_CALLS_PER_SEC`], a round at least every 15 s. Failures leave a gauge as it was.
async fn run_backlog(set: Arc<SubAppSet>, state: Arc<AppState>, cancel: CancellationToken) {
    let pacer = per_second(BACKLOG_CALLS_PER_SEC);
    let metrics = &state.metrics;
    loop {
        let round = Instant::now();
        let mut sums: BTreeMap<String, i64> = BTreeMap::new();
        for (_, client, label) in set.snapshot() {
            let count = tokio::select! {
                count = async {
                    pacer.until_ready().await;
                    client.describe_events_state().await
                } => count,
                () = cancel.cancelled() => return,
            };
            if let Ok(count) = count {
                *sums.entry(label).or_default() += i64::try_from(count).unwrap_or(i64::MAX);
            }
        }
        for (label, count) in &sums {
            metrics
                .sub_app_backlog
                .with_label_values(&[set.name.as_str(), label.as_str()])
                .set(*count);
        }
        metrics
            .vod_backlog
            .with_label_values(&[set.name.as_str()])
            .set(sums.values().sum());
        let next = round + super::backlog::BACKLOG_INTERVAL;
        if !pause(next.saturating_duration_since(Instant::now()), &cancel).await {
            return;
        }
    }
}

/// Checks each pulled sub-application's event configuration (`DescribeEventConfig`) when it
/// starts being pulled and every `vod_check_interval_secs` after, at most
/// [`CHECK_CALLS_PER_SEC`]: a mismatch is logged when it appears, counted in
/// `vodbridge_vod_config_mismatch{source, what}` (sub-applications that differ) and, for the
/// mode under `vod_check = "readiness"`, named on `/readyz`.
async fn run_checks(set: Arc<SubAppSet>, state: Arc<AppState>, cancel: CancellationToken) {
    let Some(check) = set.check.clone() else {
        return;
    };
    let pacer = per_second(CHECK_CALLS_PER_SEC);
    let mut checked: BTreeMap<u64, Instant> = BTreeMap::new();
    loop {
        let now = Instant::now();
        let running = set.snapshot();
        checked.retain(|id, _| running.iter().any(|(r, _, _)| r == id));
        // What a check in flight reported of a sub-application stopped meanwhile.
        locked(&set.health)
            .mismatches
            .retain(|id, _| running.iter().any(|(r, _, _)| r == id));
        for (id, client, _) in running {
            if checked
                .get(&id)
                .is_some_and(|at| now < *at + check.interval)
            {
                continue;
            }
            let found = tokio::select! {
                found = async {
                    pacer.until_ready().await;
                    client.describe_event_config().await
                } => found,
                () = cancel.cancelled() => return,
            };
            checked.insert(id, Instant::now());
            let found = match found {
                Ok(actual) => compare(&check.wanted(), &actual),
                Err(error) => vec![Mismatch {
                    what: "check_failed",
                    expected: String::new(),
                    actual: error.to_string(),
                    severity: Severity::Warning,
                }],
            };
            note_check(&set, id, found);
        }
        let counts = {
            let health = locked(&set.health);
            MISMATCH_WHATS.map(|what| {
                health
                    .mismatches
                    .values()
                    .filter(|found| found.iter().any(|m| m.what == what))
                    .count()
            })
        };
        for (what, count) in MISMATCH_WHATS.iter().zip(counts) {
            state
                .metrics
                .vod_config_mismatch
                .with_label_values(&[set.name.as_str(), what])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        if !pause(Duration::from_secs(1), &cancel).await {
            return;
        }
    }
}

/// Records sub-application `id`'s differences, logging those that are new.
fn note_check(set: &SubAppSet, id: u64, found: Vec<Mismatch>) {
    // Stopped while its check was in flight: nothing to report of it.
    if !locked(&set.units).contains_key(&id) {
        return;
    }
    let previous = locked(&set.health)
        .mismatches
        .insert(id, found.clone())
        .unwrap_or_default();
    for m in found.iter().filter(|m| !previous.contains(m)) {
        let source = set.name.as_str();
        match m.severity {
            Severity::Error => tracing::error!(
                source, sub_app_id = id, what = m.what, expected = %m.expected, actual = %m.actual,
                "VOD's event configuration of this sub-application differs from what the source needs; run `vodbridge vod configure --source {source}`."
            ),
            Severity::Warning => tracing::warn!(
                source, sub_app_id = id, what = m.what, expected = %m.expected, actual = %m.actual,
                "VOD's event configuration of this sub-application differs from what the source needs; run `vodbridge vod configure --source {source}`."
            ),
        }
    }
    if found.is_empty() && !previous.is_empty() {
        tracing::info!(source = %set.name, sub_app_id = id, "VOD's event configuration of this sub-application matches the source.");
    }
}

/// A limiter of `calls` per second.
fn per_second(calls: u32) -> DefaultDirectRateLimiter {
    RateLimiter::direct(Quota::per_second(
        NonZeroU32::new(calls).unwrap_or(NonZeroU32::MIN),
    ))
}
