//! The configuration file as written: the TOML file and `VODBRIDGE_…` environment, with the
//! embedded defaults, before any validation.

use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use figment::{
    providers::{Env, Format, Serialized, Toml},
    Figment,
};
use ipnet::IpNet;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use vodbridge_core::UnroutableRetry;
use vodbridge_tencent::event_config::EventSwitch;

use super::ENV_PREFIX;
use crate::error::{Error, Result};

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The HTTP listener and request handling.
    pub server: ServerConfig,
    /// Logs.
    pub telemetry: TelemetryConfig,
    /// Where events come from, by name (the name is the callback path and a metric label).
    /// Empty: one push source named `default` without auth.
    pub sources: BTreeMap<String, SourceConfig>,
    /// Where events go, by name. Empty: one `stdout` sink named `stdout`.
    pub sinks: BTreeMap<String, SinkConfig>,
    /// Event type patterns to sinks; the first matching route decides. Empty: every event to the
    /// only sink (an error when there are several).
    pub routes: Vec<RouteConfig>,
    /// Where permanently rejected and unroutable events go. Unset: they stay unacknowledged,
    /// are counted, and come back from VOD.
    pub dead_letter: Option<TargetConfig>,
    /// How publishes are tried.
    pub delivery: DeliveryConfig,
    /// The durable push spool (off unless `path` is set).
    pub spool: SpoolConfig,
}

/// The durable push spool: a callback is answered 200 once its envelope is fsynced to a local
/// database, and a forwarder delivers it once the routed sinks can acknowledge it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// Directory of the spool database (a PersistentVolume in Kubernetes). Setting it turns the
    /// spool on for every push source; a source opts out with `spool = false`. The promise of a
    /// 200 becomes "durably spooled on this replica's volume".
    pub path: Option<PathBuf>,
    /// Appends are refused beyond this many bytes of spooled records; callbacks are then held
    /// as without a spool.
    pub max_bytes: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        Self {
            path: None,
            max_bytes: 1024 * 1024 * 1024,
        }
    }
}

/// How publishes are tried.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Times an `unroutable` answer (no queue bound, no stream for the subject) is tried again
    /// before it counts as permanent and is dead-lettered; retries stay inside the event's
    /// deadline (0 to 10).
    pub unroutable_retries: u32,
    /// Pause before the first such retry, doubled after each (10 to 10,000 ms).
    pub unroutable_backoff_ms: u64,
    /// Acknowledged publishes remembered per (event id, sink, destination), oldest forgotten
    /// first: an event that comes back because *another* routed sink failed is not published
    /// again to the sinks that already hold it. About 60 bytes each; 0 turns it off. Size it
    /// for the events that arrive during the longest sink outage to cover (100,000: a minute
    /// at 1,600 events/s).
    pub sink_record_capacity: usize,
    /// The delivery record shared by every replica: `redis://[:password@]host:6379[/db]`
    /// (`rediss://` for TLS; Redis or Valkey, not Redis Cluster) or `nats://[user:pass@]host:4222`
    /// (`tls://` for TLS; a JetStream KV bucket). Read before each batch is published, written
    /// only after a broker acknowledged: a redelivery that reaches another replica, or this one
    /// after a restart, is not published again where a broker already holds it. Unset: each
    /// process keeps its own record (`sink_record_capacity`). Prefer `shared_record_file` when
    /// the URL carries a password.
    pub shared_record: Option<String>,
    /// A file holding the `shared_record` URL (a mounted Secret).
    pub shared_record_file: Option<PathBuf>,
    /// The Redis key prefix (`{name}:{event id}.{target}`) or the NATS KV bucket's name.
    pub shared_record_name: String,
    /// How long a record is kept (Redis `EX`, the bucket's `max_age`). VOD keeps an unconfirmed
    /// event 4 days, so shorter lets a late redelivery be published again (60 s at least).
    pub shared_record_ttl_secs: u64,
    /// Each round trip to the store (a batch's read, a batch's write) at most; past it the bridge
    /// publishes without the record (fail open) and counts it (10 to 5,000 ms).
    pub shared_record_timeout_ms: u64,
    /// PEM file of the CA that signed the store's certificate (`rediss://`, `tls://`); the
    /// system's roots without it.
    pub shared_record_ca_file: Option<PathBuf>,
    /// How best-effort targets (`required = false` in a route) are queued and published.
    pub best_effort: BestEffortConfig,
}

/// The queue, publishing and circuit breaker of every best-effort sink (a sink some route names
/// with `required = false`). Its events never hold VOD's answer or confirm: they wait in this
/// queue, in memory, and a crash loses what it holds.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BestEffortConfig {
    /// Events one best-effort sink holds, queued and in flight (1 to 10,000,000). Past it an
    /// event goes to the dead letter when one is configured, else it is dropped for that sink
    /// and counted. Size it for the longest outage to ride out: 100,000 is a minute at VOD's
    /// pull bound, about 1.5 KB each.
    pub queue_capacity: usize,
    /// Publishes in flight at once per best-effort sink (1 to 1,024).
    pub concurrency: usize,
    /// Deadline of each publish of a queued event (100 to 60,000 ms).
    pub publish_timeout_ms: u64,
    /// Failed publishes in a row that open the sink's circuit breaker (1 to 1,000).
    pub breaker_failures: u32,
    /// Seconds the breaker stays open the first time (1 to 3,600); then one event probes the
    /// sink. Each failed probe doubles it, up to `breaker_open_max_secs`.
    pub breaker_open_secs: u64,
    /// The longest open period, in seconds (at least `breaker_open_secs`, at most 3,600).
    pub breaker_open_max_secs: u64,
    /// Keep the queues in the push spool's database (needs `spool.path`) instead of memory:
    /// each queued event is fsynced before VOD is answered for it (group commit, as a spooled
    /// callback), so a crash loses nothing of it and the next start publishes what is left. The
    /// spool's `max_bytes` then bounds the queues too.
    pub durable: bool,
}

impl Default for BestEffortConfig {
    fn default() -> Self {
        let settings = vodbridge_core::BestEffortSettings::default();
        Self {
            queue_capacity: settings.queue_capacity,
            concurrency: settings.concurrency,
            publish_timeout_ms: u64::try_from(settings.publish_timeout.as_millis()).unwrap_or(4000),
            breaker_failures: settings.breaker_failures,
            breaker_open_secs: settings.breaker_open.as_secs(),
            breaker_open_max_secs: settings.breaker_open_max.as_secs(),
            durable: false,
        }
    }
}

impl std::fmt::Debug for DeliveryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeliveryConfig")
            .field("unroutable_retries", &self.unroutable_retries)
            .field("unroutable_backoff_ms", &self.unroutable_backoff_ms)
            .field("sink_record_capacity", &self.sink_record_capacity)
            .field(
                "shared_record",
                &self
                    .shared_record
                    .as_deref()
                    .map(vodbridge_core::redact_url),
            )
            .field("shared_record_file", &self.shared_record_file)
            .field("shared_record_name", &self.shared_record_name)
            .field("shared_record_ttl_secs", &self.shared_record_ttl_secs)
            .field("shared_record_timeout_ms", &self.shared_record_timeout_ms)
            .field("shared_record_ca_file", &self.shared_record_ca_file)
            .field("best_effort", &self.best_effort)
            .finish()
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        let policy = UnroutableRetry::default();
        Self {
            unroutable_retries: policy.retries,
            unroutable_backoff_ms: u64::try_from(policy.backoff.as_millis()).unwrap_or(200),
            sink_record_capacity: 100_000,
            shared_record: None,
            shared_record_file: None,
            shared_record_name: "vodbridge-delivery".to_owned(),
            shared_record_ttl_secs: 4 * 24 * 3600,
            shared_record_timeout_ms: 250,
            shared_record_ca_file: None,
            best_effort: BestEffortConfig::default(),
        }
    }
}

/// HTTP listener and request handling.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address of the callback, metrics and health listener.
    pub listen: SocketAddr,
    /// Largest callback body accepted; larger ones get 413.
    pub body_limit_bytes: usize,
    /// Callbacks handled at once; beyond it a callback gets 503 at once (back-pressure).
    pub max_in_flight: usize,
    /// Time a callback may wait for every routed sink's ack, inside VOD's 5 s timeout.
    pub publish_timeout_ms: u64,
    /// `Retry-After` on 503 answers.
    pub retry_after_secs: u64,
    /// On SIGTERM, the most time in-flight work may take before the sinks close: pulls stop,
    /// pulled batches publish up to their own deadline and are confirmed, held callbacks get
    /// their answer. At least every pull source's `handle_lifetime_ms`, so no batch is cut
    /// off (and comes back from VOD) by the drain itself.
    pub drain_timeout_secs: u64,
    /// A connection must send a complete request head within this time, the first and every
    /// later one on a kept-alive connection (so it is the idle keep-alive timeout too); else it
    /// is closed without an answer.
    pub header_timeout_ms: u64,
    /// A request body must arrive within this time after its head; else 408.
    pub body_timeout_ms: u64,
    /// Open connections at most. Beyond it new connections wait in the listen backlog (the
    /// bridge keeps serving the ones it has) rather than getting an answer VOD would take as
    /// delivered.
    pub max_connections: usize,
    /// The bridge's address as VOD reaches it, e.g. `https://vodbridge.example.com`: a push
    /// source's `NotificationUrl` is this plus `/callback/{source}` (and `?token=…` with a
    /// token). Checked at start and set by `vodbridge vod configure`; unset: the URL is neither.
    pub public_base_url: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            body_limit_bytes: 1024 * 1024,
            max_in_flight: 1024,
            publish_timeout_ms: 4000,
            retry_after_secs: 1,
            drain_timeout_secs: 35,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            max_connections: 4096,
            public_base_url: None,
        }
    }
}

/// Log output.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// `auto` (pretty on a terminal, JSON otherwise), `json` or `pretty`.
    pub log_format: LogFormat,
    /// A `tracing` filter such as `info` or `vodbridge=debug,info`; `RUST_LOG` wins when set.
    pub log_level: String,
    /// Export spans (receive, normalize, publish per sink, confirm) over OTLP; off when unset.
    pub otlp: Option<OtlpConfig>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Auto,
            log_level: "info".to_owned(),
            otlp: None,
        }
    }
}

/// Where and how spans are exported (OTLP over HTTP, protobuf). `Debug` redacts credentials in
/// the endpoint.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// The collector's OTLP/HTTP base URL, e.g. `http://otel-collector:4318`; spans go to
    /// `{endpoint}/v1/traces`.
    pub endpoint: String,
    /// `service.name` of the spans.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Share of traces recorded, 0.0 to 1.0 (parent-based: an upstream decision is kept).
    #[serde(default = "default_sample_ratio")]
    pub sample_ratio: f64,
    /// Timeout of one export call.
    #[serde(default = "default_otlp_timeout_ms")]
    pub timeout_ms: u64,
}

impl std::fmt::Debug for OtlpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpConfig")
            .field("endpoint", &vodbridge_core::redact_url(&self.endpoint))
            .field("service_name", &self.service_name)
            .field("sample_ratio", &self.sample_ratio)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

fn default_service_name() -> String {
    "vodbridge".to_owned()
}

const fn default_sample_ratio() -> f64 {
    1.0
}

const fn default_otlp_timeout_ms() -> u64 {
    10_000
}

/// Log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Pretty on a terminal, JSON otherwise.
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable.
    Pretty,
}

/// One event source.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "mode", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceConfig {
    /// VOD POSTs events to `/callback/{name}` ("normal callback").
    Push(PushSourceConfig),
    /// vodbridge pulls events with `PullEvents` and confirms them with `ConfirmEvents`
    /// ("reliable callback").
    Pull(PullSourceConfig),
}

/// A pull (reliable callback) source.
///
/// Its VOD API access (`endpoint`, `region`, `secret_id`, …) and its check of VOD's event
/// configuration (`event_switches`, `vod_check`, …) are keys of the source itself, declared once
/// in [`VodAccessConfig`] and [`VodCheckConfig`] and flattened in. serde refuses
/// `deny_unknown_fields` together with `flatten`, so the keys no field takes are collected in
/// `unknown` and refused by validation instead.
#[derive(Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct PullSourceConfig {
    /// Where and as whom the source calls VOD's API.
    #[serde(flatten)]
    pub access: VodAccessConfig,
    /// The VOD sub-application to pull (required for accounts opened since 2023-12-25).
    pub sub_app_id: Option<u64>,
    /// Many sub-applications from this one source: `"all"` (every sub-application of the
    /// account whose status is On, found with `DescribeSubAppIds` and refreshed every
    /// `sub_app_refresh_secs`) or a list of ids. Not with `sub_app_id`.
    pub sub_app_ids: Option<SubAppIds>,
    /// Sub-applications `sub_app_ids` leaves out.
    pub exclude_sub_app_ids: Vec<u64>,
    /// With `sub_app_ids = "all"`: seconds between two `DescribeSubAppIds` listings (a new
    /// sub-application is pulled, a removed or disabled one stopped, within this time).
    pub sub_app_refresh_secs: u64,
    /// With `sub_app_ids`: sub-applications that get their own `sub_app` label on the
    /// per-sub-application metrics, in the order they are found; the others share
    /// `sub_app="other"`.
    pub sub_app_metric_labels: usize,
    /// Whose `PullEvents` / `ConfirmEvents` budget a sub-application spends: `account` (the
    /// default: every sub-application of the account shares one governor, the safe reading of
    /// VOD's limits) or `sub_app` (each sub-application gets the whole budget).
    pub governor_scope: GovernorScope,
    /// CloudEvents `source`; default `/tencentcloud/vod/{sub_app_id}` (or `/tencentcloud/vod/{name}`).
    /// With `sub_app_ids`, `{sub_app_id}` in it is replaced by each event's sub-application.
    pub cloudevents_source: Option<String>,
    /// Concurrent pull loops (each holds at most 16 events). With `sub_app_ids`, per
    /// sub-application: a quiet one runs only its first loop, a busy one (its last answer was
    /// full) all of them.
    pub loops: usize,
    /// How long a pulled event's handle can be confirmed (VOD: 30 s; lower it for an emulator).
    pub handle_lifetime_ms: u64,
    /// Safety margin before the handle expires: publishes must be acknowledged by
    /// pulled-at + lifetime − margin, so the confirm still reaches VOD in time.
    pub confirm_margin_ms: u64,
    /// Recently acknowledged event ids remembered, so a redelivered event is confirmed without
    /// publishing it again (0 disables).
    pub dedupe_capacity: usize,
    /// Longest pause between pulls after errors.
    pub max_backoff_ms: u64,
    /// The VOD account whose API budget this source spends. VOD's request limits belong to the
    /// account, so sources with the same account (default: the same SecretId) share one request
    /// governor in the process; the name also labels the governor's metrics (default: the name
    /// of the first source using the account).
    pub api_account: Option<String>,
    /// The account's `PullEvents` quota, calls per second, shared by every replica (VOD's
    /// default: 100; set it only for an account with a raised quota).
    pub pull_requests_per_sec: u32,
    /// The account's `ConfirmEvents` quota, calls per second, shared by every replica (VOD's
    /// default: 100).
    pub confirm_requests_per_sec: u32,
    /// Longest wait for more acknowledged handles, so that a `ConfirmEvents` call carries 16;
    /// never past a handle's deadline (0 confirms at once).
    pub confirm_linger_ms: u64,
    /// What the source expects of its sub-application's event configuration in VOD.
    #[serde(flatten)]
    pub check: VodCheckConfig,
    /// Keys no field takes (refused by validation, naming them).
    #[serde(flatten)]
    pub unknown: BTreeMap<String, figment::value::Value>,
}

impl Default for PullSourceConfig {
    fn default() -> Self {
        Self {
            access: VodAccessConfig::default(),
            sub_app_id: None,
            sub_app_ids: None,
            exclude_sub_app_ids: Vec::new(),
            sub_app_refresh_secs: 60,
            sub_app_metric_labels: 500,
            governor_scope: GovernorScope::Account,
            cloudevents_source: None,
            loops: 2,
            handle_lifetime_ms: 30_000,
            confirm_margin_ms: 5_000,
            dedupe_capacity: 10_000,
            max_backoff_ms: 30_000,
            api_account: None,
            pull_requests_per_sec: 100,
            confirm_requests_per_sec: 100,
            confirm_linger_ms: 50,
            check: VodCheckConfig::default(),
            unknown: BTreeMap::new(),
        }
    }
}

impl fmt::Debug for PullSourceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PullSourceConfig")
            .field("access", &self.access)
            .field("sub_app_id", &self.sub_app_id)
            .field("sub_app_ids", &self.sub_app_ids)
            .field("exclude_sub_app_ids", &self.exclude_sub_app_ids)
            .field("governor_scope", &self.governor_scope)
            .field("loops", &self.loops)
            .field("api_account", &self.api_account)
            .field("pull_requests_per_sec", &self.pull_requests_per_sec)
            .field("confirm_requests_per_sec", &self.confirm_requests_per_sec)
            .finish_non_exhaustive()
    }
}

/// A push (normal callback) source. Its check of VOD's event configuration is flattened in
/// from [`VodCheckConfig`]; unknown keys are refused by validation (see [`PullSourceConfig`]).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct PushSourceConfig {
    /// The VOD sub-application whose `NotificationUrl` points here (a normal callback does not
    /// say which sub-application sent it).
    pub sub_app_id: Option<u64>,
    /// CloudEvents `source`; default `/tencentcloud/vod/{sub_app_id}` (or `/tencentcloud/vod/{name}`).
    pub cloudevents_source: Option<String>,
    /// Callback authentication.
    pub auth: CallbackAuthConfig,
    /// How a callback is answered when its sinks cannot acknowledge it for a reason that may
    /// pass (down, timeout, saturated). `hold` (the default): keep publishing and do not answer
    /// before `hold_ms`, past VOD's 5 s timeout, so VOD sends the event again (VOD ignores the
    /// status of an answer and resends only on a timeout or a failed connection). `reject`:
    /// answer 503 with `Retry-After` at once, for senders that do retry on 503.
    pub on_sink_failure: SinkFailureAnswer,
    /// With `hold`: how long a callback keeps being published before it is given up (answered
    /// 503, long after VOD stopped waiting); at least 6000 (VOD's timeout and a margin).
    pub hold_ms: u64,
    /// Answer callbacks once they are in the durable spool (`[spool]`): unset follows whether
    /// `[spool] path` is set, `false` opts this source out, `true` requires `[spool] path`.
    pub spool: Option<bool>,
    /// Credentials for VOD's API, optional: with them the source checks (and `vodbridge vod
    /// configure` sets) its sub-application's event configuration.
    pub vod: Option<VodAccessConfig>,
    /// What the source expects of its sub-application's event configuration in VOD.
    #[serde(flatten)]
    pub check: VodCheckConfig,
    /// Keys no field takes (refused by validation, naming them).
    #[serde(flatten)]
    pub unknown: BTreeMap<String, figment::value::Value>,
}

/// What a source expects of its sub-application's event configuration in VOD, and what a
/// mismatch does: keys of a pull or push source.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VodCheckConfig {
    /// The event switches this source needs on in VOD: `upload_media_complete`
    /// (NewFileUpload), `delete_media_complete` (FileDeleted), `persistence_complete`
    /// (PersistenceComplete). VOD starts with all of them off. Default: upload and delete.
    pub event_switches: Vec<EventSwitch>,
    /// What a mismatch of the sub-application's event configuration (`DescribeEventConfig`,
    /// checked at start and every `vod_check_interval_secs`) does: `readiness` (the default: a
    /// wrong mode or URL fails `/readyz` with the reason, a switch that is off is a warning),
    /// `report` (logs and `vodbridge_vod_config_mismatch` only), `off` (no check).
    pub vod_check: VodCheckPolicy,
    /// Seconds between checks after the one at start (at least 1).
    pub vod_check_interval_secs: u64,
}

impl Default for VodCheckConfig {
    fn default() -> Self {
        Self {
            event_switches: default_event_switches(),
            vod_check: VodCheckPolicy::Readiness,
            vod_check_interval_secs: 300,
        }
    }
}

impl Default for PushSourceConfig {
    fn default() -> Self {
        Self {
            sub_app_id: None,
            cloudevents_source: None,
            auth: CallbackAuthConfig::default(),
            on_sink_failure: SinkFailureAnswer::Hold,
            hold_ms: 10_000,
            spool: None,
            vod: None,
            check: VodCheckConfig::default(),
            unknown: BTreeMap::new(),
        }
    }
}

/// The event switches a source needs by default: NewFileUpload and FileDeleted.
fn default_event_switches() -> Vec<EventSwitch> {
    vec![
        EventSwitch::UploadMediaComplete,
        EventSwitch::DeleteMediaComplete,
    ]
}

/// The sub-applications of a pull source with `sub_app_ids`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum SubAppIds {
    /// `"all"` (validation refuses any other word): every sub-application of the account
    /// whose status is On.
    All(String),
    /// These sub-applications.
    List(Vec<u64>),
}

/// Whose API budget one sub-application's calls spend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GovernorScope {
    /// One governor per VOD account, shared by all its sub-applications (VOD does not say
    /// that its limits are per sub-application, so this is the safe default).
    #[default]
    Account,
    /// One governor per sub-application, each with the whole configured budget.
    SubApp,
}

/// What a mismatch of VOD's event configuration does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VodCheckPolicy {
    /// A wrong mode or URL fails readiness; switches off are warnings.
    #[default]
    Readiness,
    /// Logs and the metric only.
    Report,
    /// No check.
    Off,
}

/// Where and as whom a push source calls VOD's API (its callbacks need none of this).
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VodAccessConfig {
    /// API endpoint (VOD's public one by default, or an emulator).
    pub endpoint: String,
    /// `X-TC-Region`, optional for VOD.
    pub region: Option<String>,
    /// API SecretId.
    pub secret_id: Option<String>,
    /// File holding the SecretId.
    pub secret_id_file: Option<PathBuf>,
    /// API SecretKey.
    #[serde(skip_serializing)]
    pub secret_key: Option<SecretString>,
    /// File holding the SecretKey.
    pub secret_key_file: Option<PathBuf>,
    /// Session token of temporary credentials.
    #[serde(skip_serializing)]
    pub token: Option<SecretString>,
    /// File holding the session token.
    pub token_file: Option<PathBuf>,
}

impl Default for VodAccessConfig {
    fn default() -> Self {
        Self {
            endpoint: vodbridge_tencent::api::DEFAULT_ENDPOINT.to_owned(),
            region: None,
            secret_id: None,
            secret_id_file: None,
            secret_key: None,
            secret_key_file: None,
            token: None,
            token_file: None,
        }
    }
}

impl fmt::Debug for VodAccessConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VodAccessConfig")
            .field("endpoint", &self.endpoint)
            .field("secret_id", &self.secret_id)
            .field(
                "secret_key",
                &self.secret_key.as_ref().map(|_| "<redacted>"),
            )
            .finish_non_exhaustive()
    }
}

/// How a push source answers a callback whose sinks cannot acknowledge it yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkFailureAnswer {
    /// Keep publishing and do not answer before VOD's timeout has passed (VOD resends).
    #[default]
    Hold,
    /// Answer 503 with `Retry-After` at once (for senders that retry on 503; VOD does not).
    Reject,
}

/// How a push source authenticates callbacks. Every configured check must pass.
#[derive(Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CallbackAuthConfig {
    /// VOD `SignKey` (set with `ModifyEventConfig`): callbacks must carry `Sign` = MD5(key + T)
    /// and an unexpired `T`.
    #[serde(skip_serializing)]
    pub sign_key: Option<SecretString>,
    /// File holding the `SignKey` (e.g. a mounted Kubernetes Secret); trailing whitespace ignored.
    pub sign_key_file: Option<PathBuf>,
    /// Seconds of clock difference tolerated past `T`.
    pub sign_skew_secs: Option<i64>,
    /// Shared secret the callback URL carries as `?token=` (or an `X-Vodbridge-Token` header).
    #[serde(skip_serializing)]
    pub token: Option<SecretString>,
    /// File holding the token.
    pub token_file: Option<PathBuf>,
    /// Client networks allowed to call (CIDR); empty allows all.
    pub allowed_ips: Vec<IpNet>,
    /// The reverse proxies in front of the bridge (CIDR). When the connection comes from one,
    /// the client address is the rightmost `X-Forwarded-For` entry that is not a trusted proxy
    /// (entries to its left are whatever the client sent). Empty: the connection's address.
    pub trusted_proxies: Vec<IpNet>,
    /// Replaced by `trusted_proxies`: it took the *first* `X-Forwarded-For` entry, which the
    /// client writes itself behind a proxy that appends. Setting it is a configuration error
    /// that says how to migrate.
    pub trust_forwarded_for: bool,
}

impl fmt::Debug for CallbackAuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallbackAuthConfig")
            .field("sign_key", &self.sign_key.as_ref().map(|_| "<redacted>"))
            .field("sign_key_file", &self.sign_key_file)
            .field("sign_skew_secs", &self.sign_skew_secs)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("allowed_ips", &self.allowed_ips)
            .field("trusted_proxies", &self.trusted_proxies)
            .finish_non_exhaustive()
    }
}

/// One sink.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum SinkConfig {
    /// Structured-mode CloudEvents as JSON Lines on standard output.
    Stdout(StdoutSinkConfig),
    /// Structured-mode CloudEvents as JSON Lines appended to a file.
    File(FileSinkConfig),
    /// NATS JetStream: publish waits for the PubAck; `Nats-Msg-Id` = the envelope id.
    Nats(vodbridge_nats::NatsSinkConfig),
    /// AMQP 0-9-1 (RabbitMQ): mandatory persistent publishes confirmed by the broker.
    Amqp(vodbridge_amqp::AmqpSinkConfig),
    /// Kafka: produce confirmed by the delivery report (`acks=all`, idempotent).
    Kafka(vodbridge_kafka::KafkaSinkConfig),
}

impl SinkConfig {
    /// The `type` word.
    #[must_use]
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Stdout(_) => "stdout",
            Self::File(_) => "file",
            Self::Nats(_) => "nats",
            Self::Amqp(_) => "amqp",
            Self::Kafka(_) => "kafka",
        }
    }
}

/// The stdout sink has no options; a publish is acknowledged once the line is flushed.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutSinkConfig {}

/// The file sink.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// File to append to (created if missing, parent directories included).
    pub path: PathBuf,
    /// When a publish is acknowledged: `always` after fsync (group commit), `never` after the
    /// write reached the OS.
    #[serde(default)]
    pub fsync: FsyncPolicy,
    /// Start a new file once the current one reaches this many bytes: the full one is renamed
    /// to `{path}.{UTC time}-{sequence}` (names sort by age). Unset: never rotate.
    #[serde(default)]
    pub rotate_bytes: Option<u64>,
    /// Rotated files to keep; older ones are deleted, and the events in them with them. Unset:
    /// keep every rotated file (nothing is ever deleted).
    #[serde(default)]
    pub keep_files: Option<usize>,
}

/// When the file sink acknowledges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// fsync before acknowledging (lines written together share one fsync).
    #[default]
    Always,
    /// Acknowledge once written to the OS; a machine crash can lose acknowledged lines.
    Never,
}

/// One route.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Patterns: `NewFileUpload`, `Procedure*`, `*Complete`, `*`, or `@unknown` (types VOD's
    /// model does not list).
    pub event_types: Vec<String>,
    /// Acknowledge matching events without publishing them.
    #[serde(default)]
    pub drop: bool,
    /// Publish to every one of these: every required one must acknowledge before VOD is
    /// answered; a best-effort one (`required = false`) is queued and never holds the answer.
    #[serde(default)]
    pub sinks: Vec<TargetConfig>,
}

/// A sink and destination.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Sink name.
    pub sink: String,
    /// Topic / routing key / subject template with `{event_type}`, `{source}`, `{sub_app_id}`;
    /// empty means the sink's default (stdout and file ignore it).
    #[serde(default)]
    pub destination: String,
    /// True (the default): VOD is answered (HTTP 200, ConfirmEvents) only after this sink
    /// acknowledged. False: a best-effort target (an analytics topic, another region's mirror):
    /// its events are queued per sink (`[delivery.best_effort]`) and published at the sink's own
    /// pace, so its outage never holds VOD; what its queue holds is lost on a crash, and a full
    /// queue dead-letters or drops. Not allowed on `dead_letter`.
    #[serde(default = "default_required")]
    pub required: bool,
}

const fn default_required() -> bool {
    true
}

impl Config {
    /// Reads the configuration: embedded defaults, then `path` (TOML) if given, then
    /// `VODBRIDGE_…` environment variables.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the file and key at fault.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let mut figment = Figment::from(Serialized::defaults(Self::default()));
        if let Some(path) = path {
            if !path.is_file() {
                return Err(Error::Config(format!(
                    "config file {} does not exist or is not a file",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__").ignore(&["config"]));
        figment
            .extract()
            .map_err(|e| Error::Config(format_figment_error(e)))
    }

    /// Parses TOML text (with defaults, without the environment); for tests and tools.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the key at fault.
    pub fn from_toml(text: &str) -> Result<Self> {
        Figment::from(Serialized::defaults(Self::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(|e| Error::Config(format_figment_error(e)))
    }
}

fn format_figment_error(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}
