//! The backlog probe: VOD's own count of waiting events (`DescribeEventsState`), a gauge.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{sources::backoff::pause, state::AppState};

use super::source::PullSource;

/// How often the VOD backlog gauge is refreshed (DescribeEventsState allows 20 calls/s).
pub(super) const BACKLOG_INTERVAL: Duration = Duration::from_secs(15);

/// Keeps `vodbridge_vod_backlog{source}` current until cancelled; failures only leave the
/// gauge as it was (the pull loops report API trouble). VOD's count runs about 3 minutes
/// behind (its docs say not to decide whether to pull by it): a trend for dashboards, while
/// `vodbridge_pull_full_total` is the signal to scale on.
pub(crate) async fn run_backlog_probe(
    source: Arc<PullSource>,
    state: Arc<AppState>,
    cancel: CancellationToken,
) {
    let client = source.client.clone();
    let gauge = state
        .metrics
        .vod_backlog
        .with_label_values(&[source.name.as_str()]);
    loop {
        // Only a gauge: a call in flight is abandoned on shutdown.
        let count = tokio::select! {
            count = client.describe_events_state() => count,
            () = cancel.cancelled() => break,
        };
        if let Ok(count) = count {
            gauge.set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        if !pause(BACKLOG_INTERVAL, &cancel).await {
            break;
        }
    }
}
