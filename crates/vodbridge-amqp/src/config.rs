//! The `type = "amqp"` configuration: what the file says, and the one validation that
//! `check-config` and the sink's constructor share.

use std::{fmt, path::PathBuf};

use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use serde::{Deserialize, Serialize};
use vodbridge_core::redact_url;

use crate::error::{Error, Result};

/// Exchange type, when the sink declares the exchange.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExchangeType {
    /// Routing keys matched against binding patterns (`vod.*.NewFileUpload`, `vod.#`).
    #[default]
    Topic,
    /// Exact routing keys.
    Direct,
    /// Every bound queue.
    Fanout,
    /// Header matching.
    Headers,
}

/// The `type = "amqp"` sink section.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSinkConfig {
    /// `amqp://user:pass@host:5672/vhost` or `amqps://…`. Prefer `url_file` when the URL
    /// carries a password.
    #[serde(default)]
    pub url: Option<String>,
    /// File holding the URL (a mounted Kubernetes Secret).
    #[serde(default)]
    pub url_file: Option<PathBuf>,
    /// The exchange published to; the route's destination is the routing key.
    pub exchange: String,
    /// Exchange type when declared.
    #[serde(default)]
    pub exchange_type: ExchangeType,
    /// Declare the exchange (durable) at connect; when false it is only checked (passive) and
    /// must exist.
    #[serde(default = "yes")]
    pub declare_exchange: bool,
    /// Confirm-mode channels, each carrying one unconfirmed publish at a time (so a returned
    /// message is always paired with its own publish): the sink's concurrency. 1 to 256.
    #[serde(default = "default_channels")]
    pub channels: usize,
    /// CloudEvents structured mode (the whole envelope as JSON body) instead of binary mode.
    #[serde(default)]
    pub structured: bool,
    /// Longest pause between reconnect attempts.
    #[serde(default = "default_max_backoff")]
    pub max_reconnect_backoff_ms: u64,
    /// AMQP heartbeat interval asked of the broker (the lower of this and the broker's wins).
    /// A connection that carries nothing for two intervals is dead: 5 s finds a silent network
    /// partition in about 10 s (RabbitMQ's own default, 60 s, takes two minutes). A
    /// `heartbeat=` in the URL wins; 0 takes the broker's. 0 to 600.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_secs: u16,
    /// The most time one connection attempt (TCP, TLS, the AMQP handshake, the exchange check
    /// and the channels) may take before it is given up and tried again. 100 to 120,000.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// Publishes waiting this long with no answer at all from the broker (no confirm, no
    /// return, no error) drop the connection and open a new one, before the heartbeat would
    /// notice. 1,000 to 300,000.
    #[serde(default = "default_stall_timeout")]
    pub stall_timeout_ms: u64,
    /// `amqps://` only: CA certificates (PEM) trusted besides the built-in web PKI roots, for
    /// a broker whose certificate a private CA signed.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// `amqps://` only: client certificate chain (PEM) for brokers that require one (mutual
    /// TLS, e.g. `fail_if_no_peer_cert`); needs `client_key_file`.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// `amqps://` only: the client certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1,
    /// unencrypted).
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

const fn yes() -> bool {
    true
}
const fn default_channels() -> usize {
    32
}
const fn default_max_backoff() -> u64 {
    10_000
}
const fn default_heartbeat() -> u16 {
    5
}
const fn default_connect_timeout() -> u64 {
    5_000
}
const fn default_stall_timeout() -> u64 {
    10_000
}

impl fmt::Debug for AmqpSinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmqpSinkConfig")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("url_file", &self.url_file)
            .field("exchange", &self.exchange)
            .field("exchange_type", &self.exchange_type)
            .field("declare_exchange", &self.declare_exchange)
            .field("channels", &self.channels)
            .field("structured", &self.structured)
            .field("heartbeat_secs", &self.heartbeat_secs)
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("stall_timeout_ms", &self.stall_timeout_ms)
            .field("ca_file", &self.ca_file)
            .field("client_cert_file", &self.client_cert_file)
            .field("client_key_file", &self.client_key_file)
            .finish_non_exhaustive()
    }
}

impl AmqpSinkConfig {
    /// The URL with the password redacted, for display.
    #[must_use]
    pub fn display_url(&self) -> String {
        self.url
            .as_deref()
            .map_or_else(|| "(from url_file)".to_owned(), redact_url)
    }
}

/// A checked configuration's connection inputs.
pub(crate) struct Validated {
    /// The URL (from `url` or `url_file`), for logs (redacted there).
    pub(crate) url: String,
    /// The parsed URL with the heartbeat asked for.
    pub(crate) uri: lapin::uri::AMQPUri,
    /// TLS files read (`amqps://` only).
    pub(crate) tls: OwnedTLSConfig,
}

impl AmqpSinkConfig {
    /// Checks everything the sink's constructor checks, without connecting: exactly one of
    /// `url` / `url_file` (readable), an `amqp://` or `amqps://` URL that parses, 1 to 64
    /// channels, a `max_reconnect_backoff_ms` of at least 100, and TLS files that exist and hold
    /// PEM (only with `amqps://`).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] or [`Error::File`] naming the setting.
    pub fn validate(&self) -> Result<()> {
        self.check().map(drop)
    }

    pub(crate) fn check(&self) -> Result<Validated> {
        let url =
            vodbridge_core::inline_or_file("url", self.url.as_deref(), self.url_file.as_deref())
                .map_err(|e| Error::Config(e.to_string()))?
                .ok_or_else(|| Error::Config("give exactly one of `url` and `url_file`".into()))?;
        if !(url.starts_with("amqp://") || url.starts_with("amqps://")) {
            return Err(Error::Config(format!(
                "url {} must start with amqp:// or amqps://",
                redact_url(&url)
            )));
        }
        let mut uri = url
            .parse::<lapin::uri::AMQPUri>()
            .map_err(|e| Error::Config(format!("url {} does not parse: {e}", redact_url(&url))))?;
        if self.heartbeat_secs > 600 {
            return Err(Error::Config("heartbeat_secs must be 0 to 600".into()));
        }
        if uri.query.heartbeat.is_none() && self.heartbeat_secs > 0 {
            uri.query.heartbeat = Some(self.heartbeat_secs);
        }
        if !(100..=120_000).contains(&self.connect_timeout_ms) {
            return Err(Error::Config(
                "connect_timeout_ms must be 100 to 120000".into(),
            ));
        }
        if !(1_000..=300_000).contains(&self.stall_timeout_ms) {
            return Err(Error::Config(
                "stall_timeout_ms must be 1000 to 300000".into(),
            ));
        }
        if !(1..=256).contains(&self.channels) {
            return Err(Error::Config("channels must be 1 to 256".into()));
        }
        if self.max_reconnect_backoff_ms < 100 {
            return Err(Error::Config(
                "max_reconnect_backoff_ms must be at least 100".into(),
            ));
        }
        let tls = tls_config(&url, self)?;
        Ok(Validated { url, uri, tls })
    }
}

/// Reads the TLS files of an `amqps://` sink; TLS settings on a plain `amqp://` URL are a
/// configuration error (they would silently do nothing).
fn tls_config(url: &str, config: &AmqpSinkConfig) -> Result<OwnedTLSConfig> {
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|source| Error::File {
            path: path.clone(),
            source,
        })
    };
    let any = config.ca_file.is_some()
        || config.client_cert_file.is_some()
        || config.client_key_file.is_some();
    if any && !url.starts_with("amqps://") {
        return Err(Error::Config(
            "ca_file, client_cert_file and client_key_file need an amqps:// url".into(),
        ));
    }
    let cert_chain = match &config.ca_file {
        Some(path) => {
            let pem = String::from_utf8(read(path)?).map_err(|_| {
                Error::Config(format!("ca_file {} is not PEM text", path.display()))
            })?;
            if !pem.contains("-----BEGIN CERTIFICATE-----") {
                return Err(Error::Config(format!(
                    "ca_file {} holds no PEM certificate",
                    path.display()
                )));
            }
            Some(pem)
        }
        None => None,
    };
    let identity = match (&config.client_cert_file, &config.client_key_file) {
        (Some(cert), Some(key)) => Some(OwnedIdentity::PKCS8 {
            pem: read(cert)?,
            key: read(key)?,
        }),
        (None, None) => None,
        _ => {
            return Err(Error::Config(
                "client_cert_file and client_key_file go together".into(),
            ))
        }
    };
    Ok(OwnedTLSConfig {
        identity,
        cert_chain,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        let config: AmqpSinkConfig =
            serde_json::from_str(r#"{"url":"amqp://u:pw@h/v","exchange":"vod"}"#).expect("parses");
        assert!(!format!("{config:?}").contains("pw"));
        assert_eq!(
            (
                config.channels,
                config.declare_exchange,
                config.exchange_type
            ),
            (32, true, ExchangeType::Topic)
        );
    }

    #[test]
    fn the_heartbeat_is_asked_for_unless_the_url_names_one() {
        let parse = |json: &str| -> AmqpSinkConfig { serde_json::from_str(json).expect("parses") };
        let heartbeat = |json: &str| parse(json).check().expect("valid").uri.query.heartbeat;
        assert_eq!(
            heartbeat(r#"{"url":"amqp://h/v","exchange":"vod"}"#),
            Some(5)
        );
        assert_eq!(
            heartbeat(r#"{"url":"amqp://h/v?heartbeat=30","exchange":"vod"}"#),
            Some(30)
        );
        assert_eq!(
            heartbeat(r#"{"url":"amqp://h/v","exchange":"vod","heartbeat_secs":0}"#),
            None,
            "0 takes the broker's"
        );
    }

    #[test]
    fn validation_refuses_what_connect_would() {
        let parse = |json: &str| -> AmqpSinkConfig { serde_json::from_str(json).expect("parses") };
        assert!(parse(r#"{"url":"amqp://u:pw@h/v","exchange":"vod"}"#)
            .validate()
            .is_ok());
        for (json, needle) in [
            (r#"{"url":"http://h/v","exchange":"vod"}"#, "amqp://"),
            (
                r#"{"url":"amqp://h:notaport/v","exchange":"vod"}"#,
                "does not parse",
            ),
            (
                r#"{"url":"amqp://h/v","exchange":"vod","channels":0}"#,
                "channels",
            ),
            (
                r#"{"url":"amqp://h/v","exchange":"vod","max_reconnect_backoff_ms":5}"#,
                "max_reconnect_backoff_ms",
            ),
            (
                r#"{"url":"amqp://h/v","exchange":"vod","heartbeat_secs":601}"#,
                "heartbeat_secs",
            ),
            (
                r#"{"url":"amqp://h/v","exchange":"vod","connect_timeout_ms":1}"#,
                "connect_timeout_ms",
            ),
            (
                r#"{"url":"amqp://h/v","exchange":"vod","stall_timeout_ms":10}"#,
                "stall_timeout_ms",
            ),
            (r#"{"exchange":"vod"}"#, "url_file"),
            (
                r#"{"url":"amqp://h/v","exchange":"vod","ca_file":"/x.pem"}"#,
                "amqps://",
            ),
            (
                r#"{"url":"amqps://h/v","exchange":"vod","client_cert_file":"/x.pem"}"#,
                "together",
            ),
        ] {
            let error = parse(json).validate().expect_err(json);
            assert!(error.to_string().contains(needle), "{json}: {error}");
        }
        let error = parse(r#"{"url_file":"/nonexistent/url","exchange":"vod"}"#)
            .validate()
            .expect_err("unreadable");
        assert!(
            error.to_string().contains("url_file /nonexistent/url"),
            "{error}"
        );
    }
}
