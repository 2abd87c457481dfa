//! The `type = "nats"` configuration: what the file says, and the one validation that
//! `check-config` and the sink's constructor share.

use std::{fmt, path::PathBuf};

use serde::{Deserialize, Serialize};
use vodbridge_core::redact_url;

use crate::error::{Error, Result};

/// Stream storage when the sink creates the stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// Survives server restarts.
    #[default]
    File,
    /// Lost on restart.
    Memory,
}

/// The `type = "nats"` sink section.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSinkConfig {
    /// Server URL(s), comma-separated: `nats://host:4222`, `tls://host:4222`.
    pub url: String,
    /// The JetStream stream that must capture the subjects published to.
    pub stream: String,
    /// Create the stream if it does not exist (else it must exist: checked at start).
    #[serde(default)]
    pub create_stream: bool,
    /// Subjects of a created stream.
    #[serde(default = "default_subjects")]
    pub stream_subjects: Vec<String>,
    /// Duplicate window of a created stream: redeliveries inside it are stored once.
    #[serde(default = "default_duplicate_window")]
    pub duplicate_window_secs: u64,
    /// Storage of a created stream.
    #[serde(default)]
    pub storage: StorageKind,
    /// Replicas of a created stream.
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// Longest wait for a PubAck (the pipeline's deadline still applies).
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout_ms: u64,
    /// How often the client PINGs the server. Two PINGs without a PONG mean a dead
    /// connection, so 4 s finds a silent network partition in 8 to 12 s (the client's own
    /// default, 60 s, takes two to three minutes). 500 to 600,000.
    #[serde(default = "default_ping_interval")]
    pub ping_interval_ms: u64,
    /// Publishes waiting this long with no answer at all from the server (no PubAck, no error
    /// reply) make the client drop its connection and reconnect, before the PINGs notice.
    /// 1,000 to 300,000.
    #[serde(default = "default_stall_timeout")]
    pub stall_timeout_ms: u64,
    /// CloudEvents structured mode (the whole envelope as JSON body) instead of binary mode.
    #[serde(default)]
    pub structured: bool,
    /// NATS credentials file (JWT + NKey seed).
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
    /// File holding a token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Require TLS.
    #[serde(default)]
    pub tls_required: bool,
    /// Extra root certificates (PEM) for TLS: a server certificate signed by a private CA.
    #[serde(default)]
    pub root_certificates: Option<PathBuf>,
    /// Client certificate (PEM) for servers that verify clients (`verify: true`); needs
    /// `client_key_file`.
    #[serde(default)]
    pub client_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM, unencrypted).
    #[serde(default)]
    pub client_key_file: Option<PathBuf>,
}

impl fmt::Debug for NatsSinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsSinkConfig")
            .field("url", &redact_url(&self.url))
            .field("stream", &self.stream)
            .field("create_stream", &self.create_stream)
            .field("stream_subjects", &self.stream_subjects)
            .field("duplicate_window_secs", &self.duplicate_window_secs)
            .field("storage", &self.storage)
            .field("replicas", &self.replicas)
            .field("ack_timeout_ms", &self.ack_timeout_ms)
            .field("ping_interval_ms", &self.ping_interval_ms)
            .field("stall_timeout_ms", &self.stall_timeout_ms)
            .field("structured", &self.structured)
            .field("credentials_file", &self.credentials_file)
            .field("token_file", &self.token_file)
            .field("tls_required", &self.tls_required)
            .field("root_certificates", &self.root_certificates)
            .field("client_cert_file", &self.client_cert_file)
            .field("client_key_file", &self.client_key_file)
            .finish()
    }
}

impl NatsSinkConfig {
    /// The server URL(s) with any password or token redacted, for display.
    #[must_use]
    pub fn display_url(&self) -> String {
        redact_url(&self.url)
    }
}

fn default_subjects() -> Vec<String> {
    vec!["vod.>".to_owned()]
}
const fn default_duplicate_window() -> u64 {
    120
}
const fn default_replicas() -> usize {
    1
}
const fn default_ack_timeout() -> u64 {
    5000
}
const fn default_ping_interval() -> u64 {
    4000
}
const fn default_stall_timeout() -> u64 {
    10_000
}

/// A checked configuration's connection inputs.
pub(crate) struct Validated {
    /// The server addresses.
    pub(crate) addrs: Vec<async_nats::ServerAddr>,
    /// The token read from `token_file`.
    pub(crate) token: Option<String>,
}

impl NatsSinkConfig {
    /// Checks everything the sink's constructor checks, without connecting: a stream name
    /// without `.`, `*`, `>` or spaces, server URLs that parse, `ack_timeout_ms` of at least
    /// 100, 1 to 5 replicas, a duplicate window above 0, readable credentials (a valid creds
    /// file), token and certificate files, and a client certificate only with its key.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] or [`Error::File`] naming the setting.
    pub fn validate(&self) -> Result<()> {
        self.check().map(drop)
    }

    pub(crate) fn check(&self) -> Result<Validated> {
        self.check_limits()?;
        let token = self.check_files()?;
        let addrs: Vec<async_nats::ServerAddr> = self
            .url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| {
                u.parse()
                    .map_err(|e| Error::Config(format!("url {:?}: {e}", redact_url(u))))
            })
            .collect::<Result<_>>()?;
        if addrs.is_empty() {
            return Err(Error::Config("url names no server".into()));
        }
        Ok(Validated { addrs, token })
    }

    /// The stream's name and the numeric settings.
    fn check_limits(&self) -> Result<()> {
        if self.stream.is_empty() || self.stream.contains(['.', ' ', '*', '>']) {
            return Err(Error::Config(format!(
                "stream name {:?} must be non-empty without . * > or spaces",
                self.stream
            )));
        }
        if self.ack_timeout_ms < 100 {
            return Err(Error::Config("ack_timeout_ms must be at least 100".into()));
        }
        if !(500..=600_000).contains(&self.ping_interval_ms) {
            return Err(Error::Config(
                "ping_interval_ms must be 500 to 600000".into(),
            ));
        }
        if !(1_000..=300_000).contains(&self.stall_timeout_ms) {
            return Err(Error::Config(
                "stall_timeout_ms must be 1000 to 300000".into(),
            ));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(Error::Config(
                "replicas must be 1 to 5 (JetStream's limit)".into(),
            ));
        }
        if self.duplicate_window_secs == 0 {
            return Err(Error::Config(
                "duplicate_window_secs must be above 0 (redeliveries are dropped inside it)".into(),
            ));
        }
        if self.stream_subjects.iter().any(|s| s.trim().is_empty()) {
            return Err(Error::Config(
                "stream_subjects holds an empty subject".into(),
            ));
        }
        Ok(())
    }

    /// The credentials, token and certificate files: present and readable (a creds file
    /// parsed); returns the token.
    fn check_files(&self) -> Result<Option<String>> {
        let read = |path: &PathBuf| {
            std::fs::read_to_string(path).map_err(|source| Error::File {
                path: path.clone(),
                source,
            })
        };
        if let Some(path) = &self.credentials_file {
            async_nats::ConnectOptions::with_credentials(&read(path)?).map_err(|e| {
                Error::Config(format!(
                    "credentials_file {} is not a NATS creds file: {e}",
                    path.display()
                ))
            })?;
        }
        let token = vodbridge_core::inline_or_file("token", None, self.token_file.as_deref())
            .map_err(|e| Error::Config(e.to_string()))?;
        // async-nats reads certificate files only when it connects, in the background: check
        // them here so a wrong path is a start-up error, not an endless reconnect loop.
        let readable = |path: &PathBuf| {
            std::fs::metadata(path)
                .and_then(|m| {
                    if m.is_file() {
                        Ok(())
                    } else {
                        Err(std::io::Error::other("not a file"))
                    }
                })
                .map_err(|source| Error::File {
                    path: path.clone(),
                    source,
                })
        };
        if let Some(path) = &self.root_certificates {
            readable(path)?;
        }
        match (&self.client_cert_file, &self.client_key_file) {
            (Some(cert), Some(key)) => {
                readable(cert)?;
                readable(key)?;
            }
            (None, None) => {}
            _ => {
                return Err(Error::Config(
                    "client_cert_file and client_key_file go together".into(),
                ))
            }
        }
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_json: &str) -> NatsSinkConfig {
        serde_json::from_str(toml_json).expect("parses")
    }

    #[test]
    fn validation_refuses_what_connect_would() {
        assert!(parse(r#"{"url":"nats://h:4222","stream":"VOD"}"#)
            .validate()
            .is_ok());
        for (json, needle) in [
            (
                r#"{"url":"nats://h:4222","stream":"bad stream.name*"}"#,
                "stream name",
            ),
            (r#"{"url":"","stream":"VOD"}"#, "no server"),
            (
                r#"{"url":"nats://h:4222","stream":"VOD","ack_timeout_ms":0}"#,
                "ack_timeout_ms",
            ),
            (
                r#"{"url":"nats://h:4222","stream":"VOD","replicas":0}"#,
                "replicas",
            ),
            (
                r#"{"url":"nats://h:4222","stream":"VOD","ping_interval_ms":10}"#,
                "ping_interval_ms",
            ),
            (
                r#"{"url":"nats://h:4222","stream":"VOD","stall_timeout_ms":10}"#,
                "stall_timeout_ms",
            ),
            (
                r#"{"url":"nats://h:4222","stream":"VOD","duplicate_window_secs":0}"#,
                "duplicate_window_secs",
            ),
            (
                r#"{"url":"nats://h:4222","stream":"VOD","client_key_file":"/k"}"#,
                "together",
            ),
        ] {
            let error = parse(json).validate().expect_err(json);
            assert!(error.to_string().contains(needle), "{json}: {error}");
        }
        let error = parse(r#"{"url":"nats://h:4222","stream":"VOD","token_file":"/nonexistent"}"#)
            .validate()
            .expect_err("unreadable");
        assert!(
            error.to_string().contains("token_file /nonexistent"),
            "{error}"
        );
    }
}
