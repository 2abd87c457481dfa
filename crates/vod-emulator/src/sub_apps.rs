//! The account's sub-applications, answered by `DescribeSubAppIds` as VOD does: filtered by
//! `Name` and `Tags`, ordered by `SubAppId`, paged by `Offset` and `Limit` (at most 200). Each
//! sub-application keeps its own queue and event configuration (see `queue` and
//! `event_config`); this registry only says which exist and in what state, so a bridge that
//! discovers them can be tested against additions, removals and disabled ones.

use std::collections::BTreeMap;

use serde_json::Value;
use vodbridge_tencent::sub_apps::{
    DescribeSubAppIds, ResourceTag, SubAppIdInfo, SubAppIdsPage, SubAppStatus, PAGE_LIMIT,
};

use crate::error::{Error, Result};

/// Every sub-application of the emulated account, by id.
#[derive(Debug, Default)]
pub(crate) struct Registry(BTreeMap<u64, SubAppIdInfo>);

impl Registry {
    /// Adds (or replaces) a sub-application.
    pub(crate) fn insert(&mut self, info: SubAppIdInfo) {
        self.0.insert(info.sub_app_id, info);
    }

    /// Removes a sub-application from the list; true when it was there.
    pub(crate) fn remove(&mut self, sub_app_id: u64) -> bool {
        self.0.remove(&sub_app_id).is_some()
    }

    /// Sets a sub-application's state; false when it does not exist.
    pub(crate) fn set_status(&mut self, sub_app_id: u64, status: SubAppStatus) -> bool {
        self.0
            .get_mut(&sub_app_id)
            .map(|info| info.status = status)
            .is_some()
    }

    /// Answers one `DescribeSubAppIds` call.
    pub(crate) fn describe(&self, params: &Value) -> Result<SubAppIdsPage> {
        let request: DescribeSubAppIds = serde_json::from_value(params.clone())
            .map_err(|e| Error::api("InvalidParameter", e.to_string()))?;
        let limit = request.limit.unwrap_or(PAGE_LIMIT);
        if limit > PAGE_LIMIT {
            return Err(Error::api(
                "InvalidParameterValue.Limit",
                format!("Limit must be at most {PAGE_LIMIT}"),
            ));
        }
        let matching: Vec<&SubAppIdInfo> =
            self.0
                .values()
                .filter(|info| {
                    request
                        .name
                        .as_deref()
                        .is_none_or(|name| info.display_name().contains(name))
                })
                .filter(|info| {
                    request.tags.as_deref().is_none_or(|wanted| {
                        has_tags(info.tags.as_deref().unwrap_or_default(), wanted)
                    })
                })
                .collect();
        let offset = usize::try_from(request.offset.unwrap_or(0)).unwrap_or(usize::MAX);
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        Ok(SubAppIdsPage {
            total_count: matching.len() as u64,
            sub_apps: matching
                .into_iter()
                .skip(offset)
                .take(limit)
                .cloned()
                .collect(),
        })
    }
}

fn has_tags(tags: &[ResourceTag], wanted: &[ResourceTag]) -> bool {
    wanted.iter().all(|w| tags.contains(w))
}

/// A sub-application as VOD lists a new one: enabled, `fileid` mode, created now.
#[must_use]
pub fn sub_app(sub_app_id: u64, name: &str) -> SubAppIdInfo {
    let created = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default();
    SubAppIdInfo {
        sub_app_id,
        sub_app_id_name: Some(name.to_owned()),
        name: Some(name.to_owned()),
        description: Some(String::new()),
        create_time: Some(created),
        status: SubAppStatus::On,
        mode: Some("fileid".to_owned()),
        storage_regions: Some(vec!["ap-guangzhou".to_owned()]),
        tags: Some(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn registry(n: u64) -> Registry {
        let mut registry = Registry::default();
        for i in 0..n {
            let mut info = sub_app(1_500_000_000 + i, &format!("tenant-{i}"));
            if i % 2 == 0 {
                info.tags = Some(vec![ResourceTag {
                    key: "tier".into(),
                    value: "even".into(),
                }]);
            }
            registry.insert(info);
        }
        registry
    }

    #[test]
    fn pages_filters_and_the_limit() {
        let registry = registry(450);
        let first = registry.describe(&json!({})).expect("answers");
        assert_eq!((first.total_count, first.sub_apps.len()), (450, 200));
        let last = registry
            .describe(&json!({"Offset": 400, "Limit": 200}))
            .expect("answers");
        assert_eq!(last.sub_apps.len(), 50);
        assert_eq!(last.sub_apps[0].sub_app_id, 1_500_000_400);
        let named = registry
            .describe(&json!({"Name": "tenant-44"}))
            .expect("answers");
        assert_eq!(named.total_count, 1 + 10, "tenant-44 and tenant-440..449");
        let tagged = registry
            .describe(&json!({"Tags": [{"TagKey": "tier", "TagValue": "even"}]}))
            .expect("answers");
        assert_eq!(tagged.total_count, 225);
        assert!(registry.describe(&json!({"Limit": 201})).is_err());
        let mut registry = registry;
        assert!(registry.set_status(1_500_000_001, SubAppStatus::Off));
        assert!(registry.remove(1_500_000_002));
        assert!(!registry.remove(1_500_000_002));
        let page = registry.describe(&json!({"Limit": 3})).expect("answers");
        let states: Vec<_> = page
            .sub_apps
            .iter()
            .map(|s| (s.sub_app_id, s.status))
            .collect();
        assert_eq!(
            states,
            [
                (1_500_000_000, SubAppStatus::On),
                (1_500_000_001, SubAppStatus::Off),
                (1_500_000_003, SubAppStatus::On)
            ]
        );
    }
}
