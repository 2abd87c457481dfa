//! The validated settings the service runs on: [`Settings::from_config`] fills the embedded
//! defaults, loads secrets, parses patterns and templates and runs every sink's `validate()`,
//! so `check-config` and `run` refuse exactly the same files.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use vodbridge_core::{
    BestEffortSettings, EventTypePattern, Ingress, Route, RouteAction, RouteTable, Target,
    Template, UnroutableRetry,
};
use vodbridge_tencent::{
    api::{ClientConfig, VodClient},
    catalog,
    event_config::{EventSwitch, Mode},
    governor::GovernorConfig,
    tc3::Credentials,
    Normalizer, SignKey,
};

use super::raw::{
    BestEffortConfig, Config, DeliveryConfig, GovernorScope, OtlpConfig, PullSourceConfig,
    PushSourceConfig, RouteConfig, ServerConfig, SinkConfig, SinkFailureAnswer, SourceConfig,
    SpoolConfig, StdoutSinkConfig, SubAppIds, TargetConfig, TelemetryConfig, VodAccessConfig,
    VodCheckConfig, VodCheckPolicy,
};
use crate::error::{Error, Result};

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
    /// Acknowledged publishes remembered per (event, sink, destination)
    /// (`delivery.sink_record_capacity`).
    pub sink_record_capacity: usize,
    /// The delivery record the fleet shares, when configured (`delivery.shared_record`).
    pub shared_record: Option<super::SharedRecordSettings>,
    /// How best-effort targets queue, publish and break (`[delivery.best_effort]`).
    pub best_effort: BestEffortSettings,
    /// Whether the best-effort queues live in the spool (`delivery.best_effort.durable`).
    pub best_effort_durable: bool,
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
    /// What it expects of its sub-application's event configuration in VOD, when it can check
    /// (a pull source always can; a push source with `[sources.x.vod]` credentials).
    pub vod: Option<VodCheck>,
}

/// A source's expectations of VOD's event configuration, and the client to check them with.
#[derive(Clone)]
pub struct VodCheck {
    /// Endpoint, credentials and SubAppId.
    pub client: ClientConfig,
    /// `PULL` for a pull source, `PUSH` for a push source.
    pub mode: Mode,
    /// A push source's `NotificationUrl` (from `server.public_base_url`; it carries the
    /// callback token, so it is never printed whole).
    pub notification_url: Option<SecretString>,
    /// The event switches it needs on.
    pub switches: Vec<EventSwitch>,
    /// A push source's `SignKey`, for `vod configure`.
    pub sign_key: Option<SecretString>,
    /// What a mismatch does (never [`VodCheckPolicy::Off`]: then there is no check).
    pub policy: VodCheckPolicy,
    /// Time between checks.
    pub interval: Duration,
}

impl VodCheck {
    /// What the source needs of VOD, for one comparison
    /// (`vodbridge_tencent::event_config::compare`).
    #[must_use]
    pub fn wanted(&self) -> vodbridge_tencent::event_config::Wanted<'_> {
        vodbridge_tencent::event_config::Wanted {
            mode: self.mode,
            notification_url: self.notification_url.as_ref().map(|u| u.expose_secret()),
            sign_key: self.sign_key.as_ref().map(|k| k.expose_secret()),
            switches: &self.switches,
        }
    }
}

impl fmt::Debug for VodCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VodCheck")
            .field("sub_app_id", &self.client.sub_app_id)
            .field("mode", &self.mode)
            .field("switches", &self.switches)
            .field("policy", &self.policy)
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
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
    /// Many sub-applications (`sub_app_ids`), when set.
    pub sub_apps: Option<SubAppSelection>,
    /// Whose budget each sub-application spends.
    pub governor_scope: GovernorScope,
}

/// The sub-applications a pull source with `sub_app_ids` covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAppSelection {
    /// `None`: every sub-application of the account whose status is On (`"all"`).
    pub listed: Option<BTreeSet<u64>>,
    /// Left out, whatever `listed` says.
    pub excluded: BTreeSet<u64>,
    /// Time between two `DescribeSubAppIds` listings (with `"all"`).
    pub refresh: Duration,
    /// Sub-applications that get their own metric label.
    pub metric_labels: usize,
    /// The CloudEvents `source` template (`{sub_app_id}` replaced), if configured.
    pub cloudevents_source: Option<String>,
}

impl SubAppSelection {
    /// The CloudEvents `source` of `sub_app_id`'s events.
    #[must_use]
    pub fn cloudevents_source(&self, sub_app_id: u64, source_name: &str) -> String {
        self.cloudevents_source.as_ref().map_or_else(
            || Normalizer::default_source(Some(sub_app_id), source_name),
            |template| template.replace("{sub_app_id}", &sub_app_id.to_string()),
        )
    }

    /// Whether `sub_app_id` is pulled when VOD lists it as On (or, with a list, at all).
    #[must_use]
    pub fn covers(&self, sub_app_id: u64) -> bool {
        !self.excluded.contains(&sub_app_id)
            && self
                .listed
                .as_ref()
                .is_none_or(|listed| listed.contains(&sub_app_id))
    }
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
        validate_server(&config.server)?;
        fill_defaults(&mut config)?;
        let spool = spool_settings(&config.spool)?;
        let mut sources = BTreeMap::new();
        for (name, source) in &config.sources {
            validate_name("sources", name)?;
            let mut built = build_source(name, source, spool.is_some())?;
            built.vod = vod_check(
                name,
                source,
                &built,
                config.server.public_base_url.as_deref(),
            )?;
            sources.insert(name.clone(), built);
        }
        share_accounts(&mut sources)?;
        drain_covers_sources(config.server.drain_timeout_secs, &sources)?;
        for (name, sink) in &config.sinks {
            validate_sink(name, sink)?;
        }
        let (routes, dead_letter) = route_table(&config)?;
        let unroutable_retry = unroutable_retry(&config.delivery)?;
        if config.delivery.sink_record_capacity > 10_000_000 {
            return Err(Error::Config(
                "delivery.sink_record_capacity must be at most 10000000 (about 600 MB)".into(),
            ));
        }
        let shared_record = super::record::shared_record(&config.delivery)?;
        let best_effort = best_effort(&config.delivery.best_effort)?;
        if config.delivery.best_effort.durable && spool.is_none() {
            return Err(Error::Config(
                "delivery.best_effort.durable needs the spool: set spool.path (push sources \
                 that should not spool say `spool = false`)"
                    .into(),
            ));
        }
        if let Some(otlp) = &config.telemetry.otlp {
            validate_otlp(otlp)?;
        }
        Ok(Self {
            server: config.server,
            telemetry: config.telemetry,
            sources,
            sinks: config.sinks,
            routes,
            dead_letter,
            unroutable_retry,
            sink_record_capacity: config.delivery.sink_record_capacity,
            shared_record,
            best_effort,
            best_effort_durable: config.delivery.best_effort.durable,
            spool,
        })
    }

    /// Publish deadline of a callback.
    #[must_use]
    pub const fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.server.publish_timeout_ms)
    }
}

fn validate_otlp(otlp: &OtlpConfig) -> Result<()> {
    let endpoint = otlp.endpoint.trim();
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        || reqwest::Url::parse(endpoint).is_err()
    {
        return Err(Error::Config(format!(
            "telemetry.otlp.endpoint must be an http(s) URL such as http://otel-collector:4318, got {:?}",
            vodbridge_core::redact_url(endpoint)
        )));
    }
    if !(0.0..=1.0).contains(&otlp.sample_ratio) {
        return Err(Error::Config(format!(
            "telemetry.otlp.sample_ratio must be between 0.0 and 1.0, got {}",
            otlp.sample_ratio
        )));
    }
    if otlp.timeout_ms == 0 || otlp.service_name.trim().is_empty() {
        return Err(Error::Config(
            "telemetry.otlp.timeout_ms must be above 0 and service_name not empty".into(),
        ));
    }
    Ok(())
}

fn validate_server(server: &ServerConfig) -> Result<()> {
    for (key, value) in [
        ("body_limit_bytes", server.body_limit_bytes),
        ("max_in_flight", server.max_in_flight),
        (
            "publish_timeout_ms",
            usize::try_from(server.publish_timeout_ms).unwrap_or(usize::MAX),
        ),
        ("max_connections", server.max_connections),
    ] {
        if value == 0 {
            return Err(Error::Config(format!("server.{key} must be above 0")));
        }
    }
    for (key, ms) in [
        ("header_timeout_ms", server.header_timeout_ms),
        ("body_timeout_ms", server.body_timeout_ms),
    ] {
        if !(100..=600_000).contains(&ms) {
            return Err(Error::Config(format!("server.{key} must be 100 to 600000")));
        }
    }
    Ok(())
}

/// The drain must outlast every pulled batch's own deadline: a batch cut off by the drain is
/// not confirmed, so VOD hands its events out again although the broker may hold them.
fn drain_covers_sources(drain_timeout_secs: u64, sources: &BTreeMap<String, Source>) -> Result<()> {
    for source in sources.values() {
        if let SourceKind::Pull(pull) = &source.kind {
            if Duration::from_secs(drain_timeout_secs) < pull.handle_lifetime {
                return Err(Error::Config(format!(
                    "server.drain_timeout_secs ({drain_timeout_secs}) must be at least \
                     sources.{}.handle_lifetime_ms ({} ms): a batch still publishing when the \
                     drain ends would come back from VOD as a duplicate",
                    source.name,
                    pull.handle_lifetime.as_millis()
                )));
            }
        }
    }
    Ok(())
}

/// The embedded defaults: a push source, a stdout sink, and one route when there is one sink.
fn fill_defaults(config: &mut Config) -> Result<()> {
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
                    required: true,
                }],
            }),
            _ => {
                return Err(Error::Config(
                    "several sinks are configured: `routes` must say which events go where".into(),
                ))
            }
        }
    }
    Ok(())
}

fn spool_settings(spool: &SpoolConfig) -> Result<Option<SpoolSettings>> {
    let Some(path) = &spool.path else {
        return Ok(None);
    };
    if spool.max_bytes < 1024 * 1024 {
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
    Ok(Some(SpoolSettings {
        path: path.clone(),
        max_bytes: spool.max_bytes,
    }))
}

/// A sink's name and options: the broker crates' own `validate()` (exactly what their
/// constructors refuse, so `check-config` and `run` agree) and the file sink's limits.
fn validate_sink(name: &str, sink: &SinkConfig) -> Result<()> {
    validate_name("sinks", name)?;
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
    Ok(())
}

/// The routes and the dead-letter target, every sink they name checked to exist.
fn route_table(config: &Config) -> Result<(RouteTable, Option<Target>)> {
    let target = |key: &str, t: &TargetConfig| -> Result<Target> {
        if !config.sinks.contains_key(&t.sink) {
            return Err(Error::Config(format!(
                "{key}: sink {:?} is not configured under [sinks]",
                t.sink
            )));
        }
        let destination =
            Template::parse(&t.destination).map_err(|e| Error::Config(format!("{key}: {e}")))?;
        Ok(Target {
            sink: t.sink.clone(),
            destination,
            required: t.required,
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
    if config.dead_letter.as_ref().is_some_and(|t| !t.required) {
        return Err(Error::Config(
            "dead_letter: `required = false` is not allowed (the dead letter is where an event \
             goes when nothing else may hold it)"
                .into(),
        ));
    }
    let dead_letter = config
        .dead_letter
        .as_ref()
        .map(|t| target("dead_letter", t))
        .transpose()?;
    Ok((routes, dead_letter))
}

/// `[delivery.best_effort]`, each value within its bounds.
fn best_effort(config: &BestEffortConfig) -> Result<BestEffortSettings> {
    let within = |key: &str, value: u64, low: u64, high: u64| {
        if (low..=high).contains(&value) {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "delivery.best_effort.{key} must be {low} to {high}, not {value}"
            )))
        }
    };
    within(
        "queue_capacity",
        config.queue_capacity as u64,
        1,
        10_000_000,
    )?;
    within("concurrency", config.concurrency as u64, 1, 1024)?;
    within("publish_timeout_ms", config.publish_timeout_ms, 100, 60_000)?;
    within(
        "breaker_failures",
        u64::from(config.breaker_failures),
        1,
        1000,
    )?;
    within("breaker_open_secs", config.breaker_open_secs, 1, 3600)?;
    within(
        "breaker_open_max_secs",
        config.breaker_open_max_secs,
        config.breaker_open_secs,
        3600,
    )?;
    Ok(BestEffortSettings {
        queue_capacity: config.queue_capacity,
        concurrency: config.concurrency,
        publish_timeout: Duration::from_millis(config.publish_timeout_ms),
        breaker_failures: config.breaker_failures,
        breaker_open: Duration::from_secs(config.breaker_open_secs),
        breaker_open_max: Duration::from_secs(config.breaker_open_max_secs),
    })
}

fn unroutable_retry(delivery: &DeliveryConfig) -> Result<UnroutableRetry> {
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
    Ok(UnroutableRetry {
        retries: delivery.unroutable_retries,
        backoff: Duration::from_millis(delivery.unroutable_backoff_ms),
    })
}

/// What `source` expects of VOD's event configuration, when it can check it.
fn vod_check(
    name: &str,
    source: &SourceConfig,
    built: &Source,
    public_base_url: Option<&str>,
) -> Result<Option<VodCheck>> {
    let key = format!("sources.{name}");
    let VodCheckConfig {
        event_switches: switches,
        vod_check: policy,
        vod_check_interval_secs: interval,
    } = match source {
        SourceConfig::Pull(p) => &p.check,
        SourceConfig::Push(p) => &p.check,
    };
    let (policy, interval) = (*policy, *interval);
    if interval == 0 {
        return Err(Error::Config(format!(
            "{key}.vod_check_interval_secs must be at least 1"
        )));
    }
    let mut switches = switches.clone();
    switches.sort_unstable();
    switches.dedup();
    let (client, mode, notification_url, sign_key) = match (source, &built.kind) {
        (SourceConfig::Pull(_), SourceKind::Pull(pull)) => {
            (pull.client.clone(), Mode::Pull, None, None)
        }
        (SourceConfig::Push(push), SourceKind::Push(settings)) => {
            let Some(access) = &push.vod else {
                return Ok(None);
            };
            let client = vod_client(&format!("{key}.vod"), access, push.sub_app_id)?;
            let url = match public_base_url {
                None => None,
                Some(base) => {
                    let parsed = trimmed_base_url(base).ok_or_else(|| {
                        Error::Config(format!(
                            "server.public_base_url {base:?} is not an http(s) URL"
                        ))
                    })?;
                    let mut url = format!("{parsed}/callback/{name}");
                    if let Some(token) = &settings.auth.token {
                        url.push_str("?token=");
                        url.push_str(token.expose_secret());
                    }
                    Some(SecretString::from(url))
                }
            };
            let sign_key = secret(
                &format!("{key}.auth.sign_key"),
                push.auth.sign_key.as_ref(),
                push.auth.sign_key_file.as_deref(),
            )?
            .map(SecretString::from);
            (client, Mode::Push, url, sign_key)
        }
        _ => return Ok(None),
    };
    if policy == VodCheckPolicy::Off {
        return Ok(None);
    }
    Ok(Some(VodCheck {
        client,
        mode,
        notification_url,
        switches,
        sign_key,
        policy,
        interval: Duration::from_secs(interval),
    }))
}

/// `base` without a trailing `/` when it is an absolute http(s) URL without query or fragment.
fn trimmed_base_url(base: &str) -> Option<&str> {
    let trimmed = base.trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"))?;
    let host = rest.split('/').next().unwrap_or("");
    (!host.is_empty() && !trimmed.contains(['?', '#', ' '])).then_some(trimmed)
}

/// The VOD API client of a pull source (its own keys, `key` = `sources.x`) or of a push
/// source's `[sources.x.vod]` section: secrets loaded, the endpoint validated with the key named.
fn vod_client(
    key: &str,
    access: &VodAccessConfig,
    sub_app_id: Option<u64>,
) -> Result<ClientConfig> {
    let secret_id = secret(
        &format!("{key}.secret_id"),
        access.secret_id.clone().map(SecretString::from).as_ref(),
        access.secret_id_file.as_deref(),
    )?
    .ok_or_else(|| Error::Config(format!("{key}.secret_id (or secret_id_file) is required")))?;
    let secret_key = secret(
        &format!("{key}.secret_key"),
        access.secret_key.as_ref(),
        access.secret_key_file.as_deref(),
    )?
    .ok_or_else(|| Error::Config(format!("{key}.secret_key (or secret_key_file) is required")))?;
    let token = secret(
        &format!("{key}.token"),
        access.token.as_ref(),
        access.token_file.as_deref(),
    )?;
    let mut credentials = Credentials::new(secret_id, secret_key);
    credentials.token = token.map(SecretString::from);
    let mut client = ClientConfig::new(access.endpoint.clone(), credentials);
    client.region.clone_from(&access.region);
    client.sub_app_id = sub_app_id;
    VodClient::new(client.clone()).map_err(|e| Error::Config(format!("{key}.endpoint: {e}")))?;
    Ok(client)
}

/// Refuses the keys of `key`'s table that no setting takes (serde's `deny_unknown_fields` does
/// not work with the flattened access and check keys).
fn refuse_unknown(key: &str, unknown: &BTreeMap<String, figment::value::Value>) -> Result<()> {
    if unknown.is_empty() {
        return Ok(());
    }
    let names: Vec<String> = unknown.keys().map(|k| format!("`{k}`")).collect();
    Err(Error::Config(format!(
        "{key}: unknown key {}; see config/vodbridge.example.toml for a source's keys",
        names.join(", ")
    )))
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
        SourceConfig::Pull(pull) => build_pull_source(name, pull),
        SourceConfig::Push(push) => build_push_source(name, push, spool_configured),
    }
}

/// A pull source: its VOD client, loops, handle lifetime and margins, its account's budget.
fn build_pull_source(name: &str, pull: &PullSourceConfig) -> Result<Source> {
    let key = format!("sources.{name}");
    refuse_unknown(&key, &pull.unknown)?;
    let client = vod_client(&key, &pull.access, pull.sub_app_id)?;
    let secret_id = client.credentials.secret_id.clone();
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
    if pull.confirm_linger_ms > 1_000 {
        return Err(Error::Config(format!(
            "{key}.confirm_linger_ms must be 0 to 1000"
        )));
    }
    let account = pull_account(&key, name, pull, &secret_id)?;
    let sub_apps = sub_app_selection(&key, pull)?;
    // With sub_app_ids each sub-application's events get their own source; the source's own
    // normalizer only shows the template.
    let cloudevents_source = pull.cloudevents_source.clone().unwrap_or_else(|| {
        if sub_apps.is_some() {
            "/tencentcloud/vod/{sub_app_id}".to_owned()
        } else {
            Normalizer::default_source(pull.sub_app_id, name)
        }
    });
    Ok(Source {
        name: name.to_owned(),
        normalizer: Normalizer::new(cloudevents_source, pull.sub_app_id, Ingress::Pull),
        vod: None,
        kind: SourceKind::Pull(Box::new(PullSettings {
            client,
            loops: pull.loops,
            handle_lifetime: Duration::from_millis(pull.handle_lifetime_ms),
            confirm_margin: Duration::from_millis(pull.confirm_margin_ms),
            dedupe_capacity: pull.dedupe_capacity,
            max_backoff: Duration::from_millis(pull.max_backoff_ms),
            account,
            confirm_linger: Duration::from_millis(pull.confirm_linger_ms),
            sub_apps,
            governor_scope: pull.governor_scope,
        })),
    })
}

/// A pull source's `sub_app_ids`, `exclude_sub_app_ids` and their settings, checked.
fn sub_app_selection(key: &str, pull: &PullSourceConfig) -> Result<Option<SubAppSelection>> {
    let Some(ids) = &pull.sub_app_ids else {
        if !pull.exclude_sub_app_ids.is_empty() {
            return Err(Error::Config(format!(
                "{key}.exclude_sub_app_ids needs sub_app_ids (\"all\" or a list)"
            )));
        }
        return Ok(None);
    };
    if pull.sub_app_id.is_some() {
        return Err(Error::Config(format!(
            "{key}: sub_app_id and sub_app_ids cannot both be set (one sub-application, or many)"
        )));
    }
    let listed = match ids {
        SubAppIds::All(word) if word == "all" => None,
        SubAppIds::All(word) => {
            return Err(Error::Config(format!(
                "{key}.sub_app_ids must be \"all\" or a list of sub-application ids, not {word:?}"
            )))
        }
        SubAppIds::List(list) if list.is_empty() => {
            return Err(Error::Config(format!(
                "{key}.sub_app_ids is an empty list: name at least one sub-application, or \"all\""
            )))
        }
        SubAppIds::List(list) => Some(list.iter().copied().collect::<BTreeSet<u64>>()),
    };
    if !(10..=86_400).contains(&pull.sub_app_refresh_secs) {
        return Err(Error::Config(format!(
            "{key}.sub_app_refresh_secs must be 10 to 86400"
        )));
    }
    if !(1..=10_000).contains(&pull.sub_app_metric_labels) {
        return Err(Error::Config(format!(
            "{key}.sub_app_metric_labels must be 1 to 10000"
        )));
    }
    let excluded: BTreeSet<u64> = pull.exclude_sub_app_ids.iter().copied().collect();
    if listed
        .as_ref()
        .is_some_and(|listed| listed.iter().all(|id| excluded.contains(id)))
    {
        return Err(Error::Config(format!(
            "{key}.exclude_sub_app_ids leaves none of sub_app_ids to pull"
        )));
    }
    Ok(Some(SubAppSelection {
        listed,
        excluded,
        refresh: Duration::from_secs(pull.sub_app_refresh_secs),
        metric_labels: pull.sub_app_metric_labels,
        cloudevents_source: pull.cloudevents_source.clone(),
    }))
}

/// The VOD account a pull source spends the budget of (see `api_account`), and that budget.
fn pull_account(
    key: &str,
    name: &str,
    pull: &PullSourceConfig,
    secret_id: &str,
) -> Result<ApiAccount> {
    let per_sec = |k: &str, v: u32| -> Result<f64> {
        if (1..=100_000).contains(&v) {
            Ok(f64::from(v))
        } else {
            Err(Error::Config(format!("{key}.{k} must be 1 to 100000")))
        }
    };
    if let Some(account) = &pull.api_account {
        validate_name(&format!("{key}.api_account"), account)?;
    }
    Ok(ApiAccount {
        key: pull
            .api_account
            .as_ref()
            .map_or_else(|| format!("secret-id:{secret_id}"), |a| format!("name:{a}")),
        label: pull.api_account.clone().unwrap_or_else(|| name.to_owned()),
        budget: GovernorConfig {
            pull_per_sec: per_sec("pull_requests_per_sec", pull.pull_requests_per_sec)?,
            confirm_per_sec: per_sec("confirm_requests_per_sec", pull.confirm_requests_per_sec)?,
            ..GovernorConfig::default()
        },
    })
}

/// A push source: its callback authentication, what it answers while the sinks fail, the spool.
fn build_push_source(
    name: &str,
    push: &PushSourceConfig,
    spool_configured: bool,
) -> Result<Source> {
    refuse_unknown(&format!("sources.{name}"), &push.unknown)?;
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
            if hold < VOD_CALLBACK_TIMEOUT + Duration::from_secs(1) || push.hold_ms > 120_000 {
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
        vod: None,
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
