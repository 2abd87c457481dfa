//! `DescribeSubAppIds`: the sub-applications of a VOD account, as Tencent's SDK models declare
//! them (vod 2018-07-17, `DescribeSubAppIdsRequest`, `SubAppIdInfo`, `ResourceTag`), shared by
//! the client and the emulator. Paged: at most [`PAGE_LIMIT`] a call, `Offset` from 0.

use serde::{Deserialize, Serialize};

/// The most `SubAppIdInfo` one call answers (`Limit`'s maximum and default).
pub const PAGE_LIMIT: u64 = 200;

/// A tag on a sub-application (`ResourceTag`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceTag {
    /// `TagKey`.
    #[serde(rename = "TagKey")]
    pub key: String,
    /// `TagValue`.
    #[serde(rename = "TagValue")]
    pub value: String,
}

/// A sub-application's state (`SubAppIdInfo.Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SubAppStatus {
    /// `On`: enabled.
    On,
    /// `Off`: disabled.
    Off,
    /// `Destroying`.
    Destroying,
    /// `Destroyed`.
    Destroyed,
    /// A state this model does not know.
    #[serde(other)]
    Unknown,
}

impl SubAppStatus {
    /// Whether its events can still be pulled: only an enabled sub-application is drained.
    #[must_use]
    pub const fn is_on(self) -> bool {
        matches!(self, Self::On)
    }

    /// The API's word.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::On => "On",
            Self::Off => "Off",
            Self::Destroying => "Destroying",
            Self::Destroyed => "Destroyed",
            Self::Unknown => "Unknown",
        }
    }
}

/// One sub-application (`SubAppIdInfo`). Members the SDK marks optional may be absent or null.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubAppIdInfo {
    /// `SubAppId`.
    #[serde(rename = "SubAppId")]
    pub sub_app_id: u64,
    /// `SubAppIdName` (the current name field).
    #[serde(rename = "SubAppIdName", default)]
    pub sub_app_id_name: Option<String>,
    /// `Name` (deprecated by the SDK in favour of `SubAppIdName`).
    #[serde(rename = "Name", default)]
    pub name: Option<String>,
    /// `Description`.
    #[serde(rename = "Description", default)]
    pub description: Option<String>,
    /// `CreateTime` (ISO 8601).
    #[serde(rename = "CreateTime", default)]
    pub create_time: Option<String>,
    /// `Status`.
    #[serde(rename = "Status")]
    pub status: SubAppStatus,
    /// `Mode`: `fileid` or `fileid+path`.
    #[serde(rename = "Mode", default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// `StorageRegions`.
    #[serde(
        rename = "StorageRegions",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub storage_regions: Option<Vec<String>>,
    /// `Tags`.
    #[serde(rename = "Tags", default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<ResourceTag>>,
}

impl SubAppIdInfo {
    /// The name to show: `SubAppIdName`, else the deprecated `Name`, else empty.
    #[must_use]
    pub fn display_name(&self) -> &str {
        self.sub_app_id_name
            .as_deref()
            .filter(|n| !n.is_empty())
            .or(self.name.as_deref())
            .unwrap_or_default()
    }
}

/// A `DescribeSubAppIds` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DescribeSubAppIds {
    /// `Name`: only sub-applications of this name.
    #[serde(rename = "Name", default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `Tags`: only sub-applications bound to every one of these tags.
    #[serde(rename = "Tags", default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<ResourceTag>>,
    /// `Offset` (default 0).
    #[serde(rename = "Offset", default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// `Limit` (default and maximum [`PAGE_LIMIT`]).
    #[serde(rename = "Limit", default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

/// One page of a `DescribeSubAppIds` answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubAppIdsPage {
    /// `SubAppIdInfoSet`.
    #[serde(rename = "SubAppIdInfoSet", default)]
    pub sub_apps: Vec<SubAppIdInfo>,
    /// `TotalCount`: every match, over all pages.
    #[serde(rename = "TotalCount", default)]
    pub total_count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_sdk_shaped_answer_parses_and_unknown_states_are_kept_apart() {
        let page: SubAppIdsPage = serde_json::from_str(
            r#"{"TotalCount":3,"SubAppIdInfoSet":[
                {"SubAppId":1500000001,"Name":"main","SubAppIdName":"main","Description":"",
                 "CreateTime":"2024-01-01T00:00:00Z","Status":"On","Mode":"fileid",
                 "StorageRegions":["ap-guangzhou"],"Tags":[{"TagKey":"team","TagValue":"a"}]},
                {"SubAppId":1500000002,"Name":"old","SubAppIdName":null,"Status":"Off"},
                {"SubAppId":1500000003,"SubAppIdName":"new","Status":"Frozen","Tags":null}]}"#,
        )
        .expect("parses");
        assert_eq!(page.total_count, 3);
        let states: Vec<_> = page.sub_apps.iter().map(|s| s.status).collect();
        assert_eq!(
            states,
            [SubAppStatus::On, SubAppStatus::Off, SubAppStatus::Unknown]
        );
        assert!(page.sub_apps[0].status.is_on() && !page.sub_apps[1].status.is_on());
        let names: Vec<_> = page
            .sub_apps
            .iter()
            .map(SubAppIdInfo::display_name)
            .collect();
        assert_eq!(names, ["main", "old", "new"]);
        assert_eq!(
            page.sub_apps[0].tags.as_deref(),
            Some(
                &[ResourceTag {
                    key: "team".into(),
                    value: "a".into()
                }][..]
            )
        );
        let request = DescribeSubAppIds {
            offset: Some(200),
            limit: Some(PAGE_LIMIT),
            ..DescribeSubAppIds::default()
        };
        assert_eq!(
            serde_json::to_string(&request).expect("serializes"),
            r#"{"Offset":200,"Limit":200}"#
        );
    }
}
