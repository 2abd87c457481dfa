//! Pull ingress (reliable callback): pull loops publish each event under a deadline inside its
//! handle lifetime and confirm only what every routed sink acknowledged, every call paced by
//! the VOD account's request governor.

mod backlog;
mod batch;
mod confirm;
mod pacing;
mod puller;
mod queue;
mod recent;
mod source;
mod sub_apps;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::state::AppState;

use backlog::run_backlog_probe;
use confirm::{run_confirmer, Confirmer};
use puller::run_puller;
use queue::Confirms;
pub(crate) use source::PullSource;
pub(crate) use sub_apps::{list as list_sub_apps, Listing, SubAppSet};

impl PullSource {
    /// Starts the source's pull loops and backlog probe under `loops`, and its confirmers under
    /// `confirmers`: pull → deliver (`batch`) → acknowledged leases → `ConfirmEvents`
    /// (`confirm`). The loops stop pulling when `stop` is cancelled; the confirmers end once
    /// every loop has ended, after confirming what was handed to them.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        state: &Arc<AppState>,
        stop: &CancellationToken,
        loops: &TaskTracker,
        confirmers: &TaskTracker,
    ) {
        let (confirms, queue) = Confirms::channel(256);
        for index in 0..self.loops() {
            loops.spawn(run_puller(
                Arc::clone(self),
                Arc::clone(state),
                confirms.clone(),
                stop.clone(),
                index,
            ));
        }
        // One sub-application of many: its source's probe covers it.
        if self.member.is_none() {
            loops.spawn(run_backlog_probe(
                Arc::clone(self),
                Arc::clone(state),
                stop.clone(),
            ));
        }
        // Confirmers end once every loop of their source dropped its sender.
        drop(confirms);
        // Two confirmers per loop: a confirm round trip must never be what limits pulling.
        let confirmer = Arc::new(Confirmer::new(self, &state.metrics));
        let least = if self.member.is_some() { 2 } else { 4 };
        for _ in 0..(self.loops() * 2).max(least) {
            confirmers.spawn(run_confirmer(Arc::clone(&confirmer), Arc::clone(&queue)));
        }
    }
}
