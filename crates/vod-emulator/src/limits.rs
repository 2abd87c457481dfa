//! VOD's API request limits: calls per second per action and SecretId, answered
//! `RequestLimitExceeded` beyond them, as Tencent Cloud API quotas are.

use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};

/// Calls per second allowed per SecretId, by action (0: unlimited).
///
/// VOD's defaults (vod-api.md §3, §4, §5.5): `PullEvents` 100/s, `ConfirmEvents` 100/s,
/// `DescribeEventsState` 20/s, `DescribeSubAppIds` 100/s, `ModifyEventConfig` 20/s (`DescribeEventConfig`: 20/s by the
/// English doc, 100/s by the Go SDK; 20 here, the stricter). The docs do not say what the limit is counted over; like other
/// Tencent Cloud API quotas it is taken to be the account's (here: the SecretId's) budget,
/// shared by every process that uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// `PullEvents` calls per second (VOD: 100).
    pub pull_events: u32,
    /// `ConfirmEvents` calls per second (VOD: 100).
    pub confirm_events: u32,
    /// `DescribeEventsState` calls per second (VOD: 20).
    pub describe_events_state: u32,
    /// `DescribeEventConfig` and `ModifyEventConfig` calls per second, each (VOD: 20).
    pub event_config: u32,
    /// `DescribeSubAppIds` calls per second (VOD: 100).
    pub describe_sub_app_ids: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self::VOD
    }
}

impl Limits {
    /// VOD's default quotas.
    pub const VOD: Self = Self {
        pull_events: 100,
        confirm_events: 100,
        describe_events_state: 20,
        event_config: 20,
        describe_sub_app_ids: 100,
    };

    /// No limits at all (for benchmarks of the bridge's own cost).
    pub const OFF: Self = Self {
        pull_events: 0,
        confirm_events: 0,
        describe_events_state: 0,
        event_config: 0,
        describe_sub_app_ids: 0,
    };
}

/// One GCRA limiter per action, keyed by SecretId: a rejected call does not use budget, and a
/// full second's budget may be spent at once (burst = the per-second rate).
pub(crate) struct Limiters {
    limits: Limits,
    pull: Option<DefaultKeyedRateLimiter<String>>,
    confirm: Option<DefaultKeyedRateLimiter<String>>,
    describe: Option<DefaultKeyedRateLimiter<String>>,
    describe_config: Option<DefaultKeyedRateLimiter<String>>,
    modify_config: Option<DefaultKeyedRateLimiter<String>>,
    sub_app_ids: Option<DefaultKeyedRateLimiter<String>>,
}

fn limiter(per_second: u32) -> Option<DefaultKeyedRateLimiter<String>> {
    NonZeroU32::new(per_second).map(|n| RateLimiter::keyed(Quota::per_second(n)))
}

impl Limiters {
    pub(crate) fn new(limits: Limits) -> Self {
        Self {
            limits,
            pull: limiter(limits.pull_events),
            confirm: limiter(limits.confirm_events),
            describe: limiter(limits.describe_events_state),
            describe_config: limiter(limits.event_config),
            modify_config: limiter(limits.event_config),
            sub_app_ids: limiter(limits.describe_sub_app_ids),
        }
    }

    pub(crate) const fn limits(&self) -> Limits {
        self.limits
    }

    /// True when `secret_id` may make one more `action` call now (and counts it).
    pub(crate) fn admit(&self, action: &str, secret_id: &str) -> bool {
        let limiter = match action {
            "PullEvents" => &self.pull,
            "ConfirmEvents" => &self.confirm,
            "DescribeEventsState" => &self.describe,
            "DescribeEventConfig" => &self.describe_config,
            "ModifyEventConfig" => &self.modify_config,
            "DescribeSubAppIds" => &self.sub_app_ids,
            _ => return true,
        };
        limiter.as_ref().is_none_or(|l| {
            let key = secret_id.to_owned();
            l.check_key(&key).is_ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_action_and_secret_id_has_its_own_budget() {
        let limiters = Limiters::new(Limits {
            pull_events: 5,
            confirm_events: 3,
            describe_events_state: 0,
            event_config: 1,
            describe_sub_app_ids: 0,
        });
        let pulls = (0..20)
            .filter(|_| limiters.admit("PullEvents", "A"))
            .count();
        assert_eq!(pulls, 5, "a burst of one second's budget, then throttled");
        assert_eq!(
            (0..20)
                .filter(|_| limiters.admit("ConfirmEvents", "A"))
                .count(),
            3,
            "confirms are counted apart from pulls"
        );
        assert_eq!(
            (0..20)
                .filter(|_| limiters.admit("PullEvents", "B"))
                .count(),
            5,
            "another SecretId has its own budget"
        );
        assert!(
            (0..100).all(|_| limiters.admit("DescribeEventsState", "A")),
            "0 is unlimited"
        );
        let off = Limiters::new(Limits::OFF);
        assert!((0..1000).all(|_| off.admit("PullEvents", "A")));
    }
}
