//! One configured pull source: its VOD client and queue, its account's request governor, its
//! settings, and the state its loops share.

use std::sync::{atomic::AtomicBool, Arc, Mutex, PoisonError};

use vodbridge_tencent::{api::VodClient, governor::Governor, Normalizer};

use crate::config::PullSettings;

use super::{
    pacing::{Pacing, QuietShare},
    queue::EventQueue,
    recent::RecentIds,
};

/// One configured pull source: its queue, request governor, settings and shared loop state.
pub(crate) struct PullSource {
    /// Configured name (metric label, `{source}`).
    pub(crate) name: String,
    /// Builds the source's envelopes.
    pub(super) normalizer: Normalizer,
    /// Where events are pulled from and confirmed to.
    pub(super) queue: Arc<dyn EventQueue>,
    /// For `DescribeEventsState` (the backlog gauge).
    pub(super) client: VodClient,
    /// Paces this source's calls within its VOD account's budget, shared with every other
    /// source of the account.
    pub(crate) governor: Arc<Governor>,
    /// Loops, handle lifetime, confirm margin and linger, backoff.
    pub(super) settings: PullSettings,
    /// Ids acknowledged recently: a redelivery of one is confirmed without publishing again
    /// (shared by the sub-applications of a source with `sub_app_ids`).
    recent: Arc<Mutex<RecentIds>>,
    /// Set while VOD rejects the credentials; readiness reports it.
    pub(crate) auth_failed: Arc<AtomicBool>,
    /// One sub-application of a source with `sub_app_ids`: its pacing and counters.
    pub(super) member: Option<Member>,
}

/// One sub-application of a source with `sub_app_ids`, as its loops and confirmers see it.
pub(crate) struct Member {
    /// How its loops take turns with the other sub-applications.
    pub(crate) pacing: Pacing,
    /// What its quiet long polls are spread over.
    pub(crate) quiet: Arc<QuietShare>,
    /// `vodbridge_sub_app_pulled_total{source, sub_app}`.
    pub(crate) pulled: prometheus::IntCounter,
    /// `vodbridge_sub_app_confirmed_total{source, sub_app}`.
    pub(crate) confirmed: prometheus::IntCounter,
    /// `vodbridge_sub_app_pull_full_total{source, sub_app}`.
    pub(crate) full: prometheus::IntCounter,
}

/// What the sub-applications of one source share when each is built as a [`PullSource`].
pub(crate) struct Shared {
    /// The recently acknowledged ids.
    pub(crate) recent: Arc<Mutex<RecentIds>>,
    /// The source's auth flag.
    pub(crate) auth_failed: Arc<AtomicBool>,
}

impl Shared {
    /// Fresh shared state for a source whose record holds `dedupe_capacity` ids.
    pub(crate) fn new(dedupe_capacity: usize) -> Self {
        Self {
            recent: Arc::new(Mutex::new(RecentIds::new(dedupe_capacity))),
            auth_failed: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl PullSource {
    /// Builds the source's client; `governor` is its account's.
    ///
    /// # Errors
    ///
    /// When the endpoint is invalid (already checked by config validation).
    pub(crate) fn new(
        name: &str,
        normalizer: Normalizer,
        settings: PullSettings,
        governor: Arc<Governor>,
    ) -> crate::Result<Self> {
        let client = VodClient::new(settings.client.clone())
            .map_err(|e| crate::Error::Config(format!("sources.{name}.endpoint: {e}")))?;
        let shared = Shared::new(settings.dedupe_capacity);
        Ok(Self::with(
            name, normalizer, settings, governor, &shared, None, client,
        ))
    }

    /// A source calling VOD with `client` (made for `settings.client`), sharing `shared` with
    /// others; `member` when it is one sub-application of a source with `sub_app_ids`.
    pub(crate) fn with(
        name: &str,
        normalizer: Normalizer,
        settings: PullSettings,
        governor: Arc<Governor>,
        shared: &Shared,
        member: Option<Member>,
        client: VodClient,
    ) -> Self {
        Self {
            name: name.to_owned(),
            normalizer,
            queue: Arc::new(client.clone()),
            client,
            governor,
            recent: Arc::clone(&shared.recent),
            settings,
            auth_failed: Arc::clone(&shared.auth_failed),
            member,
        }
    }

    /// The sub-application it pulls (none: the default application).
    pub(crate) fn sub_app_id(&self) -> Option<u64> {
        self.settings.client.sub_app_id
    }

    /// Number of pull loops to run.
    pub(crate) const fn loops(&self) -> usize {
        self.settings.loops
    }

    /// The record of recently acknowledged ids.
    pub(super) fn recent(&self) -> std::sync::MutexGuard<'_, RecentIds> {
        self.recent.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
