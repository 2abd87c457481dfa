//! The `type = "kafka"` configuration: what the file says, and the one validation that
//! `check-config` and the sink's constructor share.

use std::{collections::BTreeMap, fmt, path::PathBuf};

use rdkafka::config::ClientConfig;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The `type = "kafka"` sink section.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// `bootstrap.servers`: `host:9092,host2:9092`.
    pub brokers: String,
    /// librdkafka `message.timeout.ms`: how long librdkafka keeps trying one message. Keep it
    /// inside the bridge's deadlines (push: `publish_timeout_ms`; pull: lifetime − margin).
    /// Half of it is `topic.metadata.propagation.max.ms`: a topic the cluster does not have
    /// fails as unroutable by then (retried, then dead-lettered), not as a timeout.
    #[serde(default = "default_message_timeout")]
    pub message_timeout_ms: u64,
    /// CloudEvents structured mode (the whole envelope as JSON value) instead of binary mode.
    #[serde(default)]
    pub structured: bool,
    /// Publishes failing with no delivery at all for this long, while the cluster answers
    /// metadata requests, replace the producer (a new producer id): an error that never clears
    /// (a fenced or wedged idempotent producer after a partition) stops being forever.
    /// 1,000 to 600,000.
    #[serde(default = "default_stuck_timeout")]
    pub stuck_timeout_ms: u64,
    /// Extra librdkafka properties (`compression.type`, `linger.ms`, `security.protocol`,
    /// `sasl.mechanism`, `sasl.username`, `ssl.ca.location`, ...). `acks` and
    /// `enable.idempotence` can be overridden here but default to `all` / `true`.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties read from files (secrets such as `sasl.password`).
    #[serde(default)]
    pub secret_property_files: BTreeMap<String, PathBuf>,
}

const fn default_message_timeout() -> u64 {
    20_000
}
const fn default_stuck_timeout() -> u64 {
    10_000
}

/// librdkafka settings the sink sets unless `properties` names them: dead connections found in
/// seconds, not minutes (librdkafka's own defaults: 60 s request timeout, 30 s connection
/// setup, no TCP keepalive).
pub(crate) const CONNECTION_DEFAULTS: [(&str, &str); 4] = [
    ("socket.keepalive.enable", "true"),
    ("socket.timeout.ms", "10000"),
    ("socket.connection.setup.timeout.ms", "10000"),
    ("reconnect.backoff.max.ms", "2000"),
];

impl fmt::Debug for KafkaSinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let properties: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str(),
                    if is_secret(k) {
                        "<redacted>"
                    } else {
                        v.as_str()
                    },
                )
            })
            .collect();
        f.debug_struct("KafkaSinkConfig")
            .field("brokers", &self.brokers)
            .field("message_timeout_ms", &self.message_timeout_ms)
            .field("structured", &self.structured)
            .field("stuck_timeout_ms", &self.stuck_timeout_ms)
            .field("properties", &properties)
            .field("secret_property_files", &self.secret_property_files)
            .finish()
    }
}

fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("password")
        || key.contains("secret")
        || key.ends_with(".key.pem")
        || key.contains("token")
}

/// What [`KafkaSinkConfig::check`] found valid, ready to connect with (the same shape as the
/// other broker crates' `Validated`).
pub(crate) struct Validated {
    /// librdkafka's configuration of the producer.
    pub(crate) client: ClientConfig,
}

impl KafkaSinkConfig {
    /// Checks everything the sink's constructor checks, without connecting: brokers given,
    /// `message_timeout_ms` above 0, secret files readable, and every librdkafka property known
    /// to librdkafka with a valid value.
    ///
    /// # Errors
    ///
    /// [`Error::Config`], [`Error::File`] or [`Error::Producer`] naming the setting.
    pub fn validate(&self) -> Result<()> {
        self.check("check")?
            .client
            .create_native_config()
            .map(drop)
            .map_err(Error::Producer)
    }

    /// The checked settings the sink and the redrive connect with: the producer's librdkafka
    /// configuration (`acks=all`, `enable.idempotence=true`, the configured
    /// `message.timeout.ms`, the connection defaults, then the pass-through and secret
    /// properties) for client `vodbridge-{name}`.
    pub(crate) fn check(&self, name: &str) -> Result<Validated> {
        if self.brokers.trim().is_empty() {
            return Err(Error::Config("brokers is empty".into()));
        }
        if self.message_timeout_ms == 0 {
            return Err(Error::Config("message_timeout_ms must be above 0".into()));
        }
        if !(1_000..=600_000).contains(&self.stuck_timeout_ms) {
            return Err(Error::Config(
                "stuck_timeout_ms must be 1000 to 600000".into(),
            ));
        }
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &self.brokers)
            .set("client.id", format!("vodbridge-{name}"))
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", self.message_timeout_ms.to_string())
            // A topic missing from the cluster's metadata fails its messages as unknown (the
            // pipeline retries that as unroutable, then dead-letters) before they time out
            // (retryable: held and retried as long as VOD resends). librdkafka's default, 30 s,
            // is longer than the message timeout, so a missing topic looked like an outage.
            .set(
                "topic.metadata.propagation.max.ms",
                (self.message_timeout_ms / 2).max(1).to_string(),
            );
        for (key, value) in CONNECTION_DEFAULTS {
            client.set(key, value);
        }
        for (key, value) in &self.properties {
            client.set(key, value);
        }
        for (key, path) in &self.secret_property_files {
            let value = vodbridge_core::read_secret_file(path).map_err(|source| Error::File {
                path: path.clone(),
                source,
            })?;
            client.set(key, value);
        }
        Ok(Validated { client })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> KafkaSinkConfig {
        KafkaSinkConfig {
            brokers: "b:9092".into(),
            message_timeout_ms: 1000,
            structured: false,
            stuck_timeout_ms: 10_000,
            properties: BTreeMap::new(),
            secret_property_files: BTreeMap::new(),
        }
    }

    #[test]
    fn secrets_are_redacted() {
        let mut config = config();
        config
            .properties
            .insert("sasl.password".into(), "hunter2".into());
        assert!(!format!("{config:?}").contains("hunter2"));
    }

    #[test]
    fn connection_defaults_give_way_to_properties() {
        let client = config().check("t").expect("valid").client;
        assert_eq!(client.get("socket.timeout.ms"), Some("10000"));
        assert_eq!(client.get("socket.keepalive.enable"), Some("true"));
        let mut own = config();
        own.properties
            .insert("socket.timeout.ms".into(), "30000".into());
        let client = own.check("t").expect("valid").client;
        assert_eq!(client.get("socket.timeout.ms"), Some("30000"));
        assert_eq!(
            config()
                .check("t")
                .expect("valid")
                .client
                .get("topic.metadata.propagation.max.ms"),
            Some("500"),
            "a missing topic is unroutable before a message times out"
        );
        let mut bad = config();
        bad.stuck_timeout_ms = 5;
        assert!(bad.validate().is_err());
    }

    #[test]
    fn validation_refuses_what_the_producer_would() {
        assert!(config().validate().is_ok());
        let mut empty = config();
        empty.brokers = " ".into();
        assert!(empty.validate().is_err());
        let mut unknown = config();
        unknown
            .properties
            .insert("no.such.property".into(), "1".into());
        let error = unknown.validate().expect_err("librdkafka refuses it");
        assert!(error.to_string().contains("no.such.property"), "{error}");
        let mut bad = config();
        bad.properties.insert("linger.ms".into(), "soon".into());
        assert!(bad.validate().is_err());
        let mut missing = config();
        missing
            .secret_property_files
            .insert("sasl.password".into(), "/nonexistent/secret".into());
        assert!(matches!(missing.validate(), Err(Error::File { .. })));
    }

    /// Managed Kafka needs TLS and SASL PLAIN, SCRAM and OAUTHBEARER with OIDC: librdkafka
    /// as built by default serves them all (its own SASL over OpenSSL, OIDC over libcurl).
    #[test]
    fn the_default_build_speaks_tls_and_every_managed_kafka_mechanism() {
        let features = ClientConfig::new()
            .create_native_config()
            .expect("librdkafka")
            .get("builtin.features")
            .expect("builtin.features");
        for needed in [
            "ssl",
            "sasl_plain",
            "sasl_scram",
            "sasl_oauthbearer",
            "oidc",
        ] {
            assert!(
                features.split(',').any(|f| f == needed),
                "librdkafka lacks {needed}: {features}"
            );
        }
        for (mechanism, extra) in [
            ("PLAIN", &[][..]),
            ("SCRAM-SHA-256", &[][..]),
            ("SCRAM-SHA-512", &[][..]),
            (
                "OAUTHBEARER",
                &[
                    ("sasl.oauthbearer.method", "oidc"),
                    ("sasl.oauthbearer.client.id", "vodbridge"),
                    ("sasl.oauthbearer.client.secret", "s"),
                    (
                        "sasl.oauthbearer.token.endpoint.url",
                        "https://idp.example/oauth2/token",
                    ),
                ][..],
            ),
        ] {
            let mut sasl = config();
            for (key, value) in [
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanism", mechanism),
                ("sasl.username", "u"),
                ("sasl.password", "p"),
            ]
            .iter()
            .chain(extra)
            {
                sasl.properties.insert((*key).into(), (*value).into());
            }
            sasl.validate()
                .unwrap_or_else(|e| panic!("SASL_SSL with {mechanism}: {e}"));
        }
    }
}
