//! The VOD API 3.0 client: the reliable callback's `PullEvents`, `ConfirmEvents` and
//! `DescribeEventsState`, and the event configuration's `DescribeEventConfig` and
//! `ModifyEventConfig`, signed with TC3-HMAC-SHA256, errors classified for the pull loops.

use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::{
    error::{Error, Result},
    event_config::{EventConfig, ModifyEventConfig},
    sub_apps::{self, DescribeSubAppIds, SubAppIdInfo, SubAppIdsPage},
    tc3::{Credentials, SignRequest},
};

/// The API version of VOD.
pub const VERSION: &str = "2018-07-17";
/// The public endpoint (mainland site).
pub const DEFAULT_ENDPOINT: &str = "https://vod.tencentcloudapi.com";
/// Most handles one `ConfirmEvents` call takes.
pub const MAX_CONFIRM_HANDLES: usize = 16;
/// Most events one `PullEvents` answer carries: a full answer means more are waiting.
pub const MAX_PULL_EVENTS: usize = 16;
/// The content type sent and signed.
const CONTENT_TYPE: &str = "application/json; charset=utf-8";

pub use crate::error::{ApiError, ErrorClass};

/// Where and as whom to call VOD.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `https://vod.tencentcloudapi.com`, `https://vod.intl.tencentcloudapi.com`, or an emulator.
    pub endpoint: String,
    /// Credentials.
    pub credentials: Credentials,
    /// `X-TC-Region`; optional for VOD.
    pub region: Option<String>,
    /// The sub-application (required for accounts opened since 2023-12-25).
    pub sub_app_id: Option<u64>,
    /// HTTP timeout of `PullEvents` (it long-polls up to 5 s; Tencent suggests 10 s).
    pub pull_timeout: Duration,
    /// HTTP timeout of the other calls.
    pub call_timeout: Duration,
}

impl ClientConfig {
    /// Defaults for an endpoint and credentials: 10 s pull timeout, 5 s otherwise.
    #[must_use]
    pub fn new(endpoint: impl Into<String>, credentials: Credentials) -> Self {
        Self {
            endpoint: endpoint.into(),
            credentials,
            region: None,
            sub_app_id: None,
            pull_timeout: Duration::from_secs(10),
            call_timeout: Duration::from_secs(5),
        }
    }
}

/// A VOD API client for one sub-application.
#[derive(Debug, Clone)]
pub struct VodClient {
    http: reqwest::Client,
    url: reqwest::Url,
    /// `host[:port]` as sent in `Host` and signed.
    host: String,
    config: ClientConfig,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "Response", borrow)]
    response: Response<'a>,
}

#[derive(Deserialize)]
struct Response<'a> {
    #[serde(rename = "Error", default)]
    error: Option<ErrorBody>,
    #[serde(rename = "RequestId", default)]
    request_id: String,
    #[serde(rename = "EventSet", default, borrow)]
    event_set: Option<Vec<&'a RawValue>>,
    #[serde(rename = "CountOfEventsToPull", default)]
    count_of_events_to_pull: Option<u64>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "Code", default)]
    code: String,
    #[serde(rename = "Message", default)]
    message: String,
}

impl VodClient {
    /// Builds a client.
    ///
    /// # Errors
    ///
    /// [`Error::Client`] for an endpoint that is not an http(s) URL.
    pub fn new(config: ClientConfig) -> Result<Self> {
        let url = reqwest::Url::parse(&config.endpoint)
            .map_err(|e| Error::Client(format!("endpoint {:?}: {e}", config.endpoint)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Error::Client(format!(
                "endpoint {:?} is not http(s)",
                config.endpoint
            )));
        }
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => {
                return Err(Error::Client(format!(
                    "endpoint {:?} has no host",
                    config.endpoint
                )))
            }
        };
        let http = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(50))
            .build()
            .map_err(|e| Error::Client(e.to_string()))?;
        Ok(Self {
            http,
            url,
            host,
            config,
        })
    }

    /// The same account's client for `sub_app_id`, sharing this one's connection pool (a source
    /// with many sub-applications opens one pool, not one per sub-application).
    #[must_use]
    pub fn for_sub_app(&self, sub_app_id: u64) -> Self {
        let mut client = self.clone();
        client.config.sub_app_id = Some(sub_app_id);
        client
    }

    /// The configured sub-application.
    #[must_use]
    pub const fn sub_app_id(&self) -> Option<u64> {
        self.config.sub_app_id
    }

    /// `PullEvents`: up to 16 events, each the raw JSON of one `EventSet` element (with its
    /// `EventHandle`), sliced from the response without copying. Long-polls up to 5 s.
    ///
    /// # Errors
    ///
    /// [`Error::Api`] for an API error answer, [`Error::Transport`] for network trouble, HTTP
    /// status other than 200, or a body that is not an API 3.0 answer.
    pub async fn pull_events(&self) -> Result<Vec<Bytes>> {
        let body = match self.config.sub_app_id {
            Some(id) => format!(r#"{{"SubAppId":{id}}}"#),
            None => "{}".to_owned(),
        };
        let answer = self
            .call("PullEvents", body.into_bytes(), self.config.pull_timeout)
            .await?;
        let parsed: Envelope<'_> = parse_answer(&answer)?;
        Ok(parsed
            .response
            .event_set
            .unwrap_or_default()
            .into_iter()
            .map(|raw| answer.slice_ref(raw.get().as_bytes()))
            .collect())
    }

    /// `ConfirmEvents` for at most 16 handles.
    ///
    /// # Errors
    ///
    /// [`Error::Client`] for more than 16 handles; as [`VodClient::pull_events`] otherwise.
    /// An expired handle answers `InvalidParameterValue` ([`ErrorClass::ExpiredHandle`]).
    pub async fn confirm_events(&self, handles: &[&str]) -> Result<()> {
        if handles.is_empty() {
            return Ok(());
        }
        if handles.len() > MAX_CONFIRM_HANDLES {
            return Err(Error::Client(format!(
                "ConfirmEvents takes at most 16 handles, got {}",
                handles.len()
            )));
        }
        let body = serde_json::to_vec(&ConfirmBody {
            event_handles: handles,
            sub_app_id: self.config.sub_app_id,
        })?;
        let answer = self
            .call("ConfirmEvents", body, self.config.call_timeout)
            .await?;
        parse_answer(&answer).map(|_| ())
    }

    /// `DescribeEventsState`: the approximate number of events waiting to be pulled.
    ///
    /// # Errors
    ///
    /// As [`VodClient::pull_events`].
    pub async fn describe_events_state(&self) -> Result<u64> {
        let body = match self.config.sub_app_id {
            Some(id) => format!(r#"{{"SubAppId":{id}}}"#),
            None => "{}".to_owned(),
        };
        let answer = self
            .call(
                "DescribeEventsState",
                body.into_bytes(),
                self.config.call_timeout,
            )
            .await?;
        Ok(parse_answer(&answer)?
            .response
            .count_of_events_to_pull
            .unwrap_or(0))
    }

    /// `DescribeEventConfig`: the sub-application's callback mode, URL and event switches.
    ///
    /// # Errors
    ///
    /// As [`VodClient::pull_events`].
    pub async fn describe_event_config(&self) -> Result<EventConfig> {
        let body = match self.config.sub_app_id {
            Some(id) => format!(r#"{{"SubAppId":{id}}}"#),
            None => "{}".to_owned(),
        };
        let answer = self
            .call(
                "DescribeEventConfig",
                body.into_bytes(),
                self.config.call_timeout,
            )
            .await?;
        typed_answer("DescribeEventConfig", &answer)
    }

    /// `ModifyEventConfig` for the configured sub-application (the request's own `SubAppId`
    /// is replaced by it).
    ///
    /// # Errors
    ///
    /// As [`VodClient::pull_events`].
    pub async fn modify_event_config(&self, change: &ModifyEventConfig) -> Result<()> {
        let mut change = change.clone();
        change.sub_app_id = self.config.sub_app_id;
        let body = serde_json::to_vec(&change)?;
        let answer = self
            .call("ModifyEventConfig", body, self.config.call_timeout)
            .await?;
        parse_answer(&answer).map(|_| ())
    }

    /// `DescribeSubAppIds`: one page of the account's sub-applications (the client's own
    /// `SubAppId` plays no part).
    ///
    /// # Errors
    ///
    /// As [`VodClient::pull_events`].
    pub async fn describe_sub_app_ids(&self, request: &DescribeSubAppIds) -> Result<SubAppIdsPage> {
        let body = serde_json::to_vec(request)?;
        let answer = self
            .call("DescribeSubAppIds", body, self.config.call_timeout)
            .await?;
        typed_answer("DescribeSubAppIds", &answer)
    }

    /// Every sub-application of the account, page after page ([`sub_apps::PAGE_LIMIT`] a call),
    /// until `TotalCount` is reached or a page comes back empty; each id once.
    ///
    /// # Errors
    ///
    /// As [`VodClient::pull_events`], for any page.
    pub async fn all_sub_app_ids(&self) -> Result<Vec<SubAppIdInfo>> {
        let mut out: Vec<SubAppIdInfo> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut offset = 0;
        loop {
            let page = self
                .describe_sub_app_ids(&DescribeSubAppIds {
                    offset: Some(offset),
                    limit: Some(sub_apps::PAGE_LIMIT),
                    ..DescribeSubAppIds::default()
                })
                .await?;
            let got = page.sub_apps.len() as u64;
            out.extend(
                page.sub_apps
                    .into_iter()
                    .filter(|s| seen.insert(s.sub_app_id)),
            );
            offset += got;
            if got == 0 || offset >= page.total_count {
                return Ok(out);
            }
        }
    }

    async fn call(&self, action: &str, body: Vec<u8>, timeout: Duration) -> Result<Bytes> {
        let timestamp = time::OffsetDateTime::now_utc().unix_timestamp();
        let timestamp_text = timestamp.to_string();
        let headers = [
            ("content-type", CONTENT_TYPE),
            ("host", self.host.as_str()),
            ("x-tc-action", action),
        ];
        let signed = SignRequest {
            method: "POST",
            query: "",
            headers: &headers,
            payload: &body,
            service: "vod",
            timestamp,
        };
        let authorization = self.config.credentials.authorize(&signed)?;
        let mut request = self
            .http
            .post(self.url.clone())
            .timeout(timeout)
            .header("Content-Type", CONTENT_TYPE)
            .header("X-TC-Action", action)
            .header("X-TC-Version", VERSION)
            .header("X-TC-Timestamp", timestamp_text)
            .header("Authorization", authorization);
        if let Some(region) = &self.config.region {
            request = request.header("X-TC-Region", region);
        }
        if let Some(token) = &self.config.credentials.token {
            request = request.header("X-TC-Token", secrecy::ExposeSecret::expose_secret(token));
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| Error::transport(describe(&e), e))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| Error::transport(describe(&e), e))?;
        if status != reqwest::StatusCode::OK {
            return Err(Error::Transport {
                reason: format!("{action}: HTTP {status}"),
                source: None,
            });
        }
        Ok(bytes)
    }
}

#[derive(serde::Serialize)]
struct ConfirmBody<'a> {
    #[serde(rename = "EventHandles")]
    event_handles: &'a [&'a str],
    #[serde(rename = "SubAppId", skip_serializing_if = "Option::is_none")]
    sub_app_id: Option<u64>,
}

/// An answer's `Response` as `T`, once [`parse_answer`] found no API error in it.
fn typed_answer<T: serde::de::DeserializeOwned>(action: &str, answer: &Bytes) -> Result<T> {
    parse_answer(answer)?;
    #[derive(Deserialize)]
    struct Answer<T> {
        #[serde(rename = "Response")]
        response: T,
    }
    serde_json::from_slice::<Answer<T>>(answer)
        .map(|a| a.response)
        .map_err(|e| Error::transport(format!("not a {action} answer: {e}"), e))
}

fn parse_answer(answer: &Bytes) -> Result<Envelope<'_>> {
    let parsed: Envelope<'_> = serde_json::from_slice(answer)
        .map_err(|e| Error::transport(format!("not an API 3.0 answer: {e}"), e))?;
    if let Some(error) = &parsed.response.error {
        if !error.code.is_empty() {
            return Err(Error::Api(ApiError {
                code: error.code.clone(),
                message: error.message.clone(),
                request_id: parsed.response.request_id.clone(),
            }));
        }
    }
    Ok(parsed)
}

/// A transport error without URL query strings or headers (nothing secret is in them, but
/// keep logs short).
fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        format!(
            "cannot connect: {}",
            std::error::Error::source(error).map_or_else(String::new, ToString::to_string)
        )
    } else {
        error.to_string()
    }
}

impl Error {
    fn transport(reason: String, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Transport {
            reason,
            source: Some(Box::new(source)),
        }
    }

    /// How a pull loop should react to this error.
    #[must_use]
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Api(api) => api.class(),
            Self::Transport { .. } => ErrorClass::Transient,
            _ => ErrorClass::Fatal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: &str) -> ApiError {
        ApiError {
            code: code.into(),
            message: String::new(),
            request_id: String::new(),
        }
    }

    #[test]
    fn classification_follows_vod_api_section_7() {
        for (code, class) in [
            ("RequestLimitExceeded", ErrorClass::Throttled),
            (
                "RequestLimitExceeded.UinLimitExceeded",
                ErrorClass::Throttled,
            ),
            ("InternalError", ErrorClass::Transient),
            ("ServiceUnavailable", ErrorClass::Transient),
            ("AuthFailure.SignatureExpire", ErrorClass::ClockSkew),
            ("AuthFailure.SignatureFailure", ErrorClass::Auth),
            ("AuthFailure.SecretIdNotFound", ErrorClass::Auth),
            ("UnauthorizedOperation", ErrorClass::Auth),
            ("FailedOperation.InvalidVodUser", ErrorClass::Auth),
            ("InvalidParameterValue", ErrorClass::ExpiredHandle),
            ("InvalidAction", ErrorClass::Fatal),
        ] {
            assert_eq!(api(code).class(), class, "{code}");
        }
        let transport = Error::Transport {
            reason: "x".into(),
            source: None,
        };
        assert_eq!(transport.class(), ErrorClass::Transient);
    }

    #[test]
    fn answers_parse() {
        let ok = Bytes::from_static(
            br#"{"Response":{"EventSet":[{"EventHandle":"h","EventType":"X"}],"RequestId":"r"}}"#,
        );
        let parsed = parse_answer(&ok).expect("ok");
        assert_eq!(parsed.response.event_set.map(|s| s.len()), Some(1));
        for empty in [
            &br#"{"Response":{"EventSet":null,"RequestId":"r"}}"#[..],
            br#"{"Response":{"RequestId":"r"}}"#,
        ] {
            assert!(parse_answer(&Bytes::copy_from_slice(empty))
                .expect("ok")
                .response
                .event_set
                .unwrap_or_default()
                .is_empty());
        }
        let err = Bytes::from_static(br#"{"Response":{"Error":{"Code":"RequestLimitExceeded","Message":"slow down"},"RequestId":"r1"}}"#);
        match parse_answer(&err) {
            Err(Error::Api(e)) => assert_eq!(
                (e.code.as_str(), e.request_id.as_str()),
                ("RequestLimitExceeded", "r1")
            ),
            _ => panic!("expected an API error"),
        }
        assert!(matches!(
            parse_answer(&Bytes::from_static(b"<html>")),
            Err(Error::Transport { .. })
        ));
    }

    #[test]
    fn endpoints_are_checked() {
        let creds = Credentials::new("id", "key");
        assert!(VodClient::new(ClientConfig::new("ftp://x", creds.clone())).is_err());
        assert!(VodClient::new(ClientConfig::new("not a url", creds.clone())).is_err());
        let client =
            VodClient::new(ClientConfig::new("http://127.0.0.1:9000", creds)).expect("valid");
        assert_eq!(client.host, "127.0.0.1:9000");
    }
}
