//! One configured pull source: its VOD client and queue, its account's request governor, its
//! settings, and the state its loops share.

use std::sync::{atomic::AtomicBool, Arc, Mutex, PoisonError};

use vodbridge_tencent::{api::VodClient, governor::Governor, Normalizer};

use crate::config::PullSettings;

use super::{queue::EventQueue, recent::RecentIds};

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
    /// Ids acknowledged recently: a redelivery of one is confirmed without publishing again.
    recent: Mutex<RecentIds>,
    /// Set while VOD rejects the credentials; readiness reports it.
    pub(crate) auth_failed: Arc<AtomicBool>,
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
        Ok(Self {
            name: name.to_owned(),
            normalizer,
            queue: Arc::new(client.clone()),
            client,
            governor,
            recent: Mutex::new(RecentIds::new(settings.dedupe_capacity)),
            settings,
            auth_failed: Arc::new(AtomicBool::new(false)),
        })
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
