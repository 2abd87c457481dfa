//! Configuration: the TOML file and `VODBRIDGE_…` environment as written, then validated into
//! [`Settings`] the service runs on.

use std::{
    collections::BTreeMap,
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use figment::{
    providers::{Env, Format, Serialized, Toml},
    Figment,
};
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use vodbridge_core::{
    EventTypePattern, Ingress, Resolution, Route, RouteAction, RouteTable, Target, Template,
    UnroutableRetry,
};
use vodbridge_tencent::{
    api::{ClientConfig, VodClient},
    catalog,
    governor::GovernorConfig,
    tc3::Credentials,
    Normalizer, SignKey,
};

use crate::error::{Error, Result};

/// Prefix of environment variables that override config keys; `__` separates levels, e.g.
/// `VODBRIDGE_SERVER__LISTEN=127.0.0.1:9000`.
pub const ENV_PREFIX: &str = "VODBRIDGE_";

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
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Times an `unroutable` answer (no queue bound, no stream for the subject) is tried again
    /// before it counts as permanent and is dead-lettered; retries stay inside the event's
    /// deadline (0 to 10).
    pub unroutable_retries: u32,
    /// Pause before the first such retry, doubled after each (10 to 10,000 ms).
    pub unroutable_backoff_ms: u64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        let policy = UnroutableRetry::default();
        Self {
            unroutable_retries: policy.retries,
            unroutable_backoff_ms: u64::try_from(policy.backoff.as_millis()).unwrap_or(200),
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
    /// On SIGTERM, time allowed for in-flight work to finish before exiting.
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
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            body_limit_bytes: 1024 * 1024,
            max_in_flight: 1024,
            publish_timeout_ms: 4000,
            retry_after_secs: 1,
            drain_timeout_secs: 20,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            max_connections: 4096,
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
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Auto,
            log_level: "info".to_owned(),
        }
    }
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
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PullSourceConfig {
    /// VOD API endpoint: `https://vod.tencentcloudapi.com`, `https://vod.intl.tencentcloudapi.com`,
    /// or an emulator URL.
    pub endpoint: String,
    /// `X-TC-Region`; optional for VOD.
    pub region: Option<String>,
    /// The VOD sub-application to pull (required for accounts opened since 2023-12-25).
    pub sub_app_id: Option<u64>,
    /// CloudEvents `source`; default `/tencentcloud/vod/{sub_app_id}` (or `/tencentcloud/vod/{name}`).
    pub cloudevents_source: Option<String>,
    /// API SecretId.
    pub secret_id: Option<String>,
    /// File holding the SecretId.
    pub secret_id_file: Option<PathBuf>,
    /// API SecretKey.
    #[serde(skip_serializing)]
    pub secret_key: Option<SecretString>,
    /// File holding the SecretKey.
    pub secret_key_file: Option<PathBuf>,
    /// Session token of temporary credentials (`X-TC-Token`).
    #[serde(skip_serializing)]
    pub token: Option<SecretString>,
    /// File holding the session token.
    pub token_file: Option<PathBuf>,
    /// Concurrent pull loops (each holds at most 16 events).
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
}

impl Default for PullSourceConfig {
    fn default() -> Self {
        Self {
            endpoint: vodbridge_tencent::api::DEFAULT_ENDPOINT.to_owned(),
            region: None,
            sub_app_id: None,
            cloudevents_source: None,
            secret_id: None,
            secret_id_file: None,
            secret_key: None,
            secret_key_file: None,
            token: None,
            token_file: None,
            loops: 2,
            handle_lifetime_ms: 30_000,
            confirm_margin_ms: 5_000,
            dedupe_capacity: 10_000,
            max_backoff_ms: 30_000,
            api_account: None,
            pull_requests_per_sec: 100,
            confirm_requests_per_sec: 100,
            confirm_linger_ms: 50,
        }
    }
}

impl fmt::Debug for PullSourceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PullSourceConfig")
            .field("endpoint", &self.endpoint)
            .field("sub_app_id", &self.sub_app_id)
            .field(
                "secret_key",
                &self.secret_key.as_ref().map(|_| "<redacted>"),
            )
            .field("loops", &self.loops)
            .field("api_account", &self.api_account)
            .field("pull_requests_per_sec", &self.pull_requests_per_sec)
            .field("confirm_requests_per_sec", &self.confirm_requests_per_sec)
            .finish_non_exhaustive()
    }
}

/// A push (normal callback) source.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
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
        }
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
    /// Publish to every one of these (all must acknowledge).
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

/// Validated configuration: what the service runs on.
#[derive(Debug)]
pub struct Settings {
    /// Listener and limits.
    pub server: ServerConfig,
    /// Logs.
    pub telemetry: TelemetryConfig,
    /// Sources, by name.
    pub sources: BTreeMap<String, Source>,
    /// Sink configs, by name (built into sinks by the app).
    pub sinks: BTreeMap<String, SinkConfig>,
    /// The routing table.
    pub routes: RouteTable,
    /// The dead-letter target.
    pub dead_letter: Option<Target>,
    /// Retries of `unroutable` answers.
    pub unroutable_retry: UnroutableRetry,
    /// The push spool, when configured.
    pub spool: Option<SpoolSettings>,
}

/// A validated source.
#[derive(Debug, Clone)]
pub struct Source {
    /// Configured name.
    pub name: String,
    /// Builds this source's envelopes.
    pub normalizer: Normalizer,
    /// How it receives events.
    pub kind: SourceKind,
}

/// A validated source's ingress.
#[derive(Debug, Clone)]
pub enum SourceKind {
    /// Normal callbacks.
    Push(PushSettings),
    /// Reliable callbacks (boxed: much larger than a push source, and built once).
    Pull(Box<PullSettings>),
}

/// A validated pull source.
#[derive(Debug, Clone)]
pub struct PullSettings {
    /// Endpoint, credentials, SubAppId, timeouts.
    pub client: ClientConfig,
    /// Concurrent pull loops.
    pub loops: usize,
    /// How long a handle can be confirmed after the pull.
    pub handle_lifetime: Duration,
    /// Margin kept before the handle expires.
    pub confirm_margin: Duration,
    /// Size of the recently-acknowledged id record.
    pub dedupe_capacity: usize,
    /// Longest pause between pulls after errors.
    pub max_backoff: Duration,
    /// Whose API budget the source spends.
    pub account: ApiAccount,
    /// Longest wait for a fuller confirm batch.
    pub confirm_linger: Duration,
}

/// A VOD account's API budget, shared by the pull sources that use it.
#[derive(Clone, PartialEq)]
pub struct ApiAccount {
    /// What identifies the account: `api_account`, else the SecretId (never printed).
    pub key: String,
    /// The metric label: `api_account`, else the first source's name.
    pub label: String,
    /// Its per-action ceilings.
    pub budget: GovernorConfig,
}

impl fmt::Debug for ApiAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiAccount")
            .field("label", &self.label)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

/// A validated push source.
#[derive(Debug, Clone)]
pub struct PushSettings {
    /// Callback authentication.
    pub auth: CallbackAuth,
    /// `Some(hold)`: a retryable failure is published again for up to `hold` and never answered
    /// before VOD's timeout; `None`: answered 503 at once.
    pub hold: Option<Duration>,
    /// Callbacks are answered once durably spooled.
    pub spool: bool,
}

/// A validated spool.
#[derive(Debug, Clone)]
pub struct SpoolSettings {
    /// Directory of the database.
    pub path: PathBuf,
    /// Byte limit of spooled records.
    pub max_bytes: u64,
}

/// VOD's normal-callback timeout: an answer before it ends a delivery, whatever its status.
pub const VOD_CALLBACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Validated callback authentication, secrets loaded.
#[derive(Clone)]
pub struct CallbackAuth {
    /// VOD SignKey check.
    pub sign_key: Option<SignKey>,
    /// Seconds tolerated past `T`.
    pub sign_skew_secs: i64,
    /// Shared token.
    pub token: Option<SecretString>,
    /// Allowed client networks; empty allows all.
    pub allowed_ips: Vec<IpNet>,
    /// Reverse proxies whose `X-Forwarded-For` entries are believed.
    pub trusted_proxies: Vec<IpNet>,
}

impl fmt::Debug for CallbackAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

impl CallbackAuth {
    /// A one-line description with secrets redacted.
    #[must_use]
    pub fn describe(&self) -> String {
        let ips = if self.allowed_ips.is_empty() {
            "any".to_owned()
        } else {
            self.allowed_ips
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        let proxies = if self.trusted_proxies.is_empty() {
            String::new()
        } else {
            format!(
                " trusted_proxies={}",
                self.trusted_proxies
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            )
        };
        format!(
            "sign_key={} token={} allowed_ips={ips}{proxies}",
            if self.sign_key.is_some() {
                "<redacted>"
            } else {
                "none"
            },
            if self.token.is_some() {
                "<redacted>"
            } else {
                "none"
            },
        )
    }
}

/// Default tolerated clock difference past a callback's `T`.
const DEFAULT_SIGN_SKEW_SECS: i64 = 60;

impl Settings {
    /// Validates a configuration: fills the embedded defaults, loads secret files, parses
    /// patterns and templates, checks that routes name existing sinks.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] with the key at fault.
    pub fn from_config(mut config: Config) -> Result<Self> {
        let server = &config.server;
        if server.body_limit_bytes == 0
            || server.max_in_flight == 0
            || server.publish_timeout_ms == 0
            || server.max_connections == 0
        {
            return Err(Error::Config(
                "server.body_limit_bytes, server.max_in_flight, server.publish_timeout_ms and server.max_connections must be above 0".into(),
            ));
        }
        for (key, ms) in [
            ("header_timeout_ms", server.header_timeout_ms),
            ("body_timeout_ms", server.body_timeout_ms),
        ] {
            if !(100..=600_000).contains(&ms) {
                return Err(Error::Config(format!("server.{key} must be 100 to 600000")));
            }
        }
        if config.sources.is_empty() {
            config.sources.insert(
                "default".to_owned(),
                SourceConfig::Push(PushSourceConfig::default()),
            );
        }
        if config.sinks.is_empty() {
            config
                .sinks
                .insert("stdout".to_owned(), SinkConfig::Stdout(StdoutSinkConfig {}));
        }
        if config.routes.is_empty() {
            let mut names = config.sinks.keys();
            match (names.next(), names.next()) {
                (Some(only), None) => config.routes.push(RouteConfig {
                    event_types: vec!["*".to_owned()],
                    drop: false,
                    sinks: vec![TargetConfig {
                        sink: only.clone(),
                        destination: String::new(),
                    }],
                }),
                _ => {
                    return Err(Error::Config(
                        "several sinks are configured: `routes` must say which events go where"
                            .into(),
                    ))
                }
            }
        }

        let spool = match &config.spool.path {
            None => None,
            Some(path) => {
                if config.spool.max_bytes < 1024 * 1024 {
                    return Err(Error::Config(
                        "spool.max_bytes must be at least 1048576 (1 MiB)".into(),
                    ));
                }
                if path.is_relative() {
                    return Err(Error::Config(format!(
                        "spool.path {} must be absolute (the working directory is no place for \
                         data that must survive a restart)",
                        path.display()
                    )));
                }
                Some(SpoolSettings {
                    path: path.clone(),
                    max_bytes: config.spool.max_bytes,
                })
            }
        };
        let mut sources = BTreeMap::new();
        for (name, source) in &config.sources {
            validate_name("sources", name)?;
            sources.insert(name.clone(), build_source(name, source, spool.is_some())?);
        }
        share_accounts(&mut sources)?;

        for (name, sink) in &config.sinks {
            validate_name("sinks", name)?;
            // The broker crates' own checks: exactly what their constructors refuse, so
            // `check-config` and `run` agree.
            let checked = match sink {
                SinkConfig::Kafka(kafka) => kafka.validate().map_err(|e| e.to_string()),
                SinkConfig::Amqp(amqp) => amqp.validate().map_err(|e| e.to_string()),
                SinkConfig::Nats(nats) => nats.validate().map_err(|e| e.to_string()),
                SinkConfig::Stdout(_) | SinkConfig::File(_) => Ok(()),
            };
            checked.map_err(|e| Error::Config(format!("sinks.{name}: {e}")))?;
            if let SinkConfig::File(file) = sink {
                if file.rotate_bytes.is_some_and(|b| b < 4096) {
                    return Err(Error::Config(format!(
                        "sinks.{name}.rotate_bytes must be at least 4096"
                    )));
                }
                if file.keep_files == Some(0) {
                    return Err(Error::Config(format!(
                        "sinks.{name}.keep_files must be at least 1 (unset keeps every file)"
                    )));
                }
                if file.keep_files.is_some() && file.rotate_bytes.is_none() {
                    return Err(Error::Config(format!(
                        "sinks.{name}.keep_files needs rotate_bytes"
                    )));
                }
            }
        }
        let target = |key: &str, t: &TargetConfig| -> Result<Target> {
            if !config.sinks.contains_key(&t.sink) {
                return Err(Error::Config(format!(
                    "{key}: sink {:?} is not configured under [sinks]",
                    t.sink
                )));
            }
            let destination = Template::parse(&t.destination)
                .map_err(|e| Error::Config(format!("{key}: {e}")))?;
            Ok(Target {
                sink: t.sink.clone(),
                destination,
            })
        };

        let mut routes = Vec::with_capacity(config.routes.len());
        for (i, route) in config.routes.iter().enumerate() {
            let key = format!("routes[{i}]");
            if route.event_types.is_empty() {
                return Err(Error::Config(format!("{key}.event_types is empty")));
            }
            let patterns = route
                .event_types
                .iter()
                .map(|p| {
                    EventTypePattern::parse(p)
                        .map_err(|e| Error::Config(format!("{key}.event_types: {e}")))
                })
                .collect::<Result<Vec<_>>>()?;
            let action = match (route.drop, route.sinks.is_empty()) {
                (true, true) => RouteAction::Drop,
                (true, false) => {
                    return Err(Error::Config(format!("{key}: a drop route has no sinks")))
                }
                (false, true) => {
                    return Err(Error::Config(format!(
                        "{key}: give it sinks, or `drop = true`"
                    )))
                }
                (false, false) => RouteAction::Publish(
                    route
                        .sinks
                        .iter()
                        .enumerate()
                        .map(|(j, t)| target(&format!("{key}.sinks[{j}]"), t))
                        .collect::<Result<_>>()?,
                ),
            };
            routes.push(Route { patterns, action });
        }
        let routes = RouteTable::new(routes, catalog::known_event_types())
            .map_err(|e| Error::Config(e.to_string()))?;
        let dead_letter = config
            .dead_letter
            .as_ref()
            .map(|t| target("dead_letter", t))
            .transpose()?;
        let delivery = &config.delivery;
        if delivery.unroutable_retries > 10 {
            return Err(Error::Config(
                "delivery.unroutable_retries must be 0 to 10".into(),
            ));
        }
        if !(10..=10_000).contains(&delivery.unroutable_backoff_ms) {
            return Err(Error::Config(
                "delivery.unroutable_backoff_ms must be 10 to 10000".into(),
            ));
        }
        let unroutable_retry = UnroutableRetry {
            retries: delivery.unroutable_retries,
            backoff: Duration::from_millis(delivery.unroutable_backoff_ms),
        };

        Ok(Self {
            server: config.server,
            telemetry: config.telemetry,
            sources,
            sinks: config.sinks,
            routes,
            dead_letter,
            unroutable_retry,
            spool,
        })
    }

    /// Publish deadline of a callback.
    #[must_use]
    pub const fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.server.publish_timeout_ms)
    }

    /// A human-readable account of the effective configuration, secrets redacted: what
    /// `vodbridge check-config` prints.
    #[must_use]
    pub fn describe(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(out, "listen: {}", self.server.listen);
        let _ = writeln!(out, "sources:");
        for source in self.sources.values() {
            match &source.kind {
                SourceKind::Pull(pull) => {
                    let id = &pull.client.credentials.secret_id;
                    let shown: String = id.chars().take(6).collect();
                    let _ = writeln!(
                        out,
                        "  {name}: pull from {endpoint} sub_app_id={sub} loops={loops} handle_lifetime={life:?} \
                         confirm_margin={margin:?}, cloudevents source {src}, secret_id={shown}…, secret_key=<redacted>, \
                         account {account} (PullEvents {pull_rps}/s, ConfirmEvents {confirm_rps}/s, shared by every replica)",
                        name = source.name,
                        endpoint = pull.client.endpoint,
                        sub = pull.client.sub_app_id.map_or_else(|| "none".to_owned(), |v| v.to_string()),
                        loops = pull.loops,
                        life = pull.handle_lifetime,
                        margin = pull.confirm_margin,
                        src = source.normalizer.source(),
                        account = pull.account.label,
                        pull_rps = pull.account.budget.pull_per_sec,
                        confirm_rps = pull.account.budget.confirm_per_sec,
                    );
                }
                SourceKind::Push(push) => {
                    let _ = writeln!(
                        out,
                        "  {name}: push at POST /callback/{name}, cloudevents source {src}, {auth}, on sink failure: {hold}",
                        name = source.name,
                        src = source.normalizer.source(),
                        auth = push.auth.describe(),
                        hold = push.hold.map_or_else(
                            || "503 at once".to_owned(),
                            |h| format!("hold up to {} ms, no answer before VOD's timeout", h.as_millis())
                        ) + if push.spool { "; 200 once durably spooled" } else { "" },
                    );
                }
            }
        }
        let _ = writeln!(out, "sinks:");
        for (name, sink) in &self.sinks {
            let detail = match sink {
                SinkConfig::Stdout(_) => String::new(),
                SinkConfig::File(f) => format!(
                    " path={} fsync={:?} rotate_bytes={} keep_files={}",
                    f.path.display(),
                    f.fsync,
                    f.rotate_bytes
                        .map_or_else(|| "never".to_owned(), |b| b.to_string()),
                    f.keep_files
                        .map_or_else(|| "all".to_owned(), |k| k.to_string())
                ),
                SinkConfig::Kafka(k) => format!(
                    " brokers={} message_timeout_ms={} {} mode, {} librdkafka properties",
                    k.brokers,
                    k.message_timeout_ms,
                    if k.structured { "structured" } else { "binary" },
                    k.properties.len() + k.secret_property_files.len()
                ),
                SinkConfig::Amqp(a) => format!(
                    " url={} exchange={:?} ({:?}{}) channels={} {} mode",
                    a.display_url(),
                    a.exchange,
                    a.exchange_type,
                    if a.declare_exchange {
                        ", declared"
                    } else {
                        ", must exist"
                    },
                    a.channels,
                    if a.structured { "structured" } else { "binary" }
                ),
                SinkConfig::Nats(n) => format!(
                    " url={} stream={}{} {} mode",
                    n.display_url(),
                    n.stream,
                    if n.create_stream {
                        " (created if missing)"
                    } else {
                        ""
                    },
                    if n.structured { "structured" } else { "binary" }
                ),
            };
            let _ = writeln!(out, "  {name}: {}{detail}", sink.kind());
        }
        if let Some(spool) = &self.spool {
            let _ = writeln!(
                out,
                "spool: {} (at most {} bytes)",
                spool.path.display(),
                spool.max_bytes
            );
        }
        let _ = writeln!(out, "routes (first match wins):");
        for (i, route) in self.routes.routes().iter().enumerate() {
            let patterns: Vec<String> = route.patterns.iter().map(ToString::to_string).collect();
            let _ = writeln!(
                out,
                "  {}. {} -> {}",
                i + 1,
                patterns.join(", "),
                describe_action(&route.action)
            );
        }
        let _ = writeln!(
            out,
            "dead letter: {}",
            self.dead_letter.as_ref().map_or_else(
                || "none (rejected events stay unacknowledged)".to_owned(),
                describe_target
            )
        );
        let _ = writeln!(
            out,
            "unroutable answers: tried {} more time(s), first after {} ms",
            self.unroutable_retry.retries,
            self.unroutable_retry.backoff.as_millis()
        );
        let _ = writeln!(out, "effective routes by event type:");
        let mut types: Vec<&str> = catalog::known_event_types().collect();
        types.push("(any other type)");
        for event_type in types {
            let resolved = match self.routes.resolve(event_type) {
                Resolution::Publish(i, targets) => {
                    format!(
                        "route {}: {}",
                        i + 1,
                        targets
                            .iter()
                            .map(describe_target)
                            .collect::<Vec<_>>()
                            .join(" + ")
                    )
                }
                Resolution::Drop(i) => format!("route {}: drop", i + 1),
                Resolution::NoRoute => {
                    "NO ROUTE: events stay unacknowledged (or go to the dead letter)".to_owned()
                }
            };
            let _ = writeln!(out, "  {event_type:<45} {resolved}");
        }
        if !self.routes.is_total() {
            let _ = writeln!(
                out,
                "warning: some event types match no route; add a `*` route"
            );
        }
        out
    }
}

fn describe_action(action: &RouteAction) -> String {
    match action {
        RouteAction::Drop => "drop".to_owned(),
        RouteAction::Publish(targets) => targets
            .iter()
            .map(describe_target)
            .collect::<Vec<_>>()
            .join(" + "),
    }
}

fn describe_target(target: &Target) -> String {
    if target.destination.as_str().is_empty() {
        target.sink.clone()
    } else {
        format!("{}:{}", target.sink, target.destination.as_str())
    }
}

fn validate_name(section: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{section}.{name}: names use a-z, 0-9, - and _ (at most 64)"
        )))
    }
}

fn build_source(name: &str, source: &SourceConfig, spool_configured: bool) -> Result<Source> {
    match source {
        SourceConfig::Pull(pull) => {
            let key = format!("sources.{name}");
            let secret_id = secret(
                &format!("{key}.secret_id"),
                pull.secret_id.clone().map(SecretString::from).as_ref(),
                pull.secret_id_file.as_deref(),
            )?
            .ok_or_else(|| {
                Error::Config(format!(
                    "{key}.secret_id (or secret_id_file) is required for a pull source"
                ))
            })?;
            let secret_key = secret(
                &format!("{key}.secret_key"),
                pull.secret_key.as_ref(),
                pull.secret_key_file.as_deref(),
            )?
            .ok_or_else(|| {
                Error::Config(format!(
                    "{key}.secret_key (or secret_key_file) is required for a pull source"
                ))
            })?;
            let token = secret(
                &format!("{key}.token"),
                pull.token.as_ref(),
                pull.token_file.as_deref(),
            )?;
            if !(1..=64).contains(&pull.loops) {
                return Err(Error::Config(format!("{key}.loops must be 1 to 64")));
            }
            if pull.max_backoff_ms < 100 {
                return Err(Error::Config(format!(
                    "{key}.max_backoff_ms must be at least 100"
                )));
            }
            if pull.confirm_margin_ms >= pull.handle_lifetime_ms {
                return Err(Error::Config(format!(
                    "{key}.confirm_margin_ms must be below handle_lifetime_ms"
                )));
            }
            let per_sec = |k: &str, v: u32| -> Result<f64> {
                if (1..=100_000).contains(&v) {
                    Ok(f64::from(v))
                } else {
                    Err(Error::Config(format!("{key}.{k} must be 1 to 100000")))
                }
            };
            if pull.confirm_linger_ms > 1_000 {
                return Err(Error::Config(format!(
                    "{key}.confirm_linger_ms must be 0 to 1000"
                )));
            }
            if let Some(account) = &pull.api_account {
                validate_name(&format!("{key}.api_account"), account)?;
            }
            let account = ApiAccount {
                key: pull
                    .api_account
                    .as_ref()
                    .map_or_else(|| format!("secret-id:{secret_id}"), |a| format!("name:{a}")),
                label: pull.api_account.clone().unwrap_or_else(|| name.to_owned()),
                budget: GovernorConfig {
                    pull_per_sec: per_sec("pull_requests_per_sec", pull.pull_requests_per_sec)?,
                    confirm_per_sec: per_sec(
                        "confirm_requests_per_sec",
                        pull.confirm_requests_per_sec,
                    )?,
                    ..GovernorConfig::default()
                },
            };
            let mut credentials = Credentials::new(secret_id, secret_key);
            credentials.token = token.map(SecretString::from);
            let mut client = ClientConfig::new(pull.endpoint.clone(), credentials);
            client.region.clone_from(&pull.region);
            client.sub_app_id = pull.sub_app_id;
            // Validate the endpoint now, with the key named.
            VodClient::new(client.clone())
                .map_err(|e| Error::Config(format!("{key}.endpoint: {e}")))?;
            let cloudevents_source = pull
                .cloudevents_source
                .clone()
                .unwrap_or_else(|| Normalizer::default_source(pull.sub_app_id, name));
            Ok(Source {
                name: name.to_owned(),
                normalizer: Normalizer::new(cloudevents_source, pull.sub_app_id, Ingress::Pull),
                kind: SourceKind::Pull(Box::new(PullSettings {
                    client,
                    loops: pull.loops,
                    handle_lifetime: Duration::from_millis(pull.handle_lifetime_ms),
                    confirm_margin: Duration::from_millis(pull.confirm_margin_ms),
                    dedupe_capacity: pull.dedupe_capacity,
                    max_backoff: Duration::from_millis(pull.max_backoff_ms),
                    account,
                    confirm_linger: Duration::from_millis(pull.confirm_linger_ms),
                })),
            })
        }
        SourceConfig::Push(push) => {
            let key = format!("sources.{name}.auth");
            let auth = &push.auth;
            if auth.trust_forwarded_for {
                return Err(Error::Config(format!(
                    "{key}.trust_forwarded_for is replaced by trusted_proxies: it took the first \
                     X-Forwarded-For entry, which the client controls behind a proxy that appends \
                     ($proxy_add_x_forwarded_for). List your proxies' networks instead, e.g. \
                     trusted_proxies = [\"10.0.0.0/8\"]: the client is then the rightmost entry \
                     that is not one of them"
                )));
            }
            let sign_key = secret(
                &format!("{key}.sign_key"),
                auth.sign_key.as_ref(),
                auth.sign_key_file.as_deref(),
            )?;
            if let Some(k) = &sign_key {
                if k.len() > 32 || !k.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    return Err(Error::Config(format!(
                        "{key}.sign_key: VOD SignKeys are 1 to 32 letters and digits"
                    )));
                }
            }
            let token = secret(
                &format!("{key}.token"),
                auth.token.as_ref(),
                auth.token_file.as_deref(),
            )?;
            let hold = match push.on_sink_failure {
                SinkFailureAnswer::Reject => None,
                SinkFailureAnswer::Hold => {
                    let hold = Duration::from_millis(push.hold_ms);
                    if hold < VOD_CALLBACK_TIMEOUT + Duration::from_secs(1)
                        || push.hold_ms > 120_000
                    {
                        return Err(Error::Config(format!(
                            "sources.{name}.hold_ms must be 6000 to 120000: VOD resends a callback only \
                             when it gets no answer within 5 s, so a held callback must outlast that"
                        )));
                    }
                    Some(hold)
                }
            };
            let spool = match push.spool {
                None => spool_configured,
                Some(false) => false,
                Some(true) if spool_configured => true,
                Some(true) => {
                    return Err(Error::Config(format!(
                        "sources.{name}.spool = true needs [spool] path"
                    )))
                }
            };
            let cloudevents_source = push
                .cloudevents_source
                .clone()
                .unwrap_or_else(|| Normalizer::default_source(push.sub_app_id, name));
            Ok(Source {
                name: name.to_owned(),
                normalizer: Normalizer::new(cloudevents_source, push.sub_app_id, Ingress::Push),
                kind: SourceKind::Push(PushSettings {
                    auth: CallbackAuth {
                        sign_key: sign_key.map(SignKey::new),
                        sign_skew_secs: auth.sign_skew_secs.unwrap_or(DEFAULT_SIGN_SKEW_SECS),
                        token: token.map(SecretString::from),
                        allowed_ips: auth.allowed_ips.clone(),
                        trusted_proxies: auth.trusted_proxies.clone(),
                    },
                    hold,
                    spool,
                }),
            })
        }
    }
}

/// Gives the pull sources of one account one label, and refuses different budgets for it.
fn share_accounts(sources: &mut BTreeMap<String, Source>) -> Result<()> {
    let mut first: BTreeMap<String, (String, ApiAccount)> = BTreeMap::new();
    for source in sources.values_mut() {
        let SourceKind::Pull(pull) = &mut source.kind else {
            continue;
        };
        match first.get(&pull.account.key) {
            None => {
                first.insert(
                    pull.account.key.clone(),
                    (source.name.clone(), pull.account.clone()),
                );
            }
            Some((other, account)) => {
                if account.budget != pull.account.budget {
                    return Err(Error::Config(format!(
                        "sources.{} and sources.{other} use one VOD account (the same api_account \
                         or SecretId) with different pull_requests_per_sec, \
                         confirm_requests_per_sec: an account has one budget",
                        source.name
                    )));
                }
                pull.account.label.clone_from(&account.label);
            }
        }
    }
    Ok(())
}

/// A secret given inline or as a file (not both); returns the plain value.
fn secret(key: &str, inline: Option<&SecretString>, file: Option<&Path>) -> Result<Option<String>> {
    vodbridge_core::inline_or_file(key, inline.map(ExposeSecret::expose_secret), file)
        .map_err(|e| Error::Config(e.to_string()))
}
