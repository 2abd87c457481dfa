//! The shared delivery record's validated settings (`[delivery] shared_record*`): which store,
//! its URL (possibly from a file, never in `Debug`), key prefix or bucket, time to live, timeout.

use std::{fmt, path::PathBuf, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use vodbridge_core::redact_url;

use super::raw::DeliveryConfig;
use crate::error::{Error, Result};

/// Which kind of store holds the shared record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// Redis or Valkey (`redis://`, `rediss://`).
    Redis,
    /// A NATS JetStream KV bucket (`nats://`, `tls://`).
    Nats,
}

impl StoreKind {
    /// `redis` or `nats` (logs, metrics, `/readyz`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Nats => "nats",
        }
    }
}

/// The validated shared delivery record.
#[derive(Clone)]
pub struct SharedRecordSettings {
    /// The store's kind, from the URL's scheme.
    pub kind: StoreKind,
    /// The URL (may hold a password).
    url: SecretString,
    /// Redis key prefix or NATS KV bucket.
    pub name: String,
    /// Time to live of a record.
    pub ttl: Duration,
    /// Each round trip at most.
    pub timeout: Duration,
    /// CA of the store's certificate.
    pub ca_file: Option<PathBuf>,
}

impl SharedRecordSettings {
    /// The URL, for the client only (never log it: [`redact_url`] it).
    #[must_use]
    pub fn url(&self) -> &str {
        self.url.expose_secret()
    }

    /// The URL with any password replaced by `***`.
    #[must_use]
    pub fn display_url(&self) -> String {
        redact_url(self.url())
    }
}

impl fmt::Debug for SharedRecordSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedRecordSettings")
            .field("kind", &self.kind)
            .field("url", &self.display_url())
            .field("name", &self.name)
            .field("ttl", &self.ttl)
            .field("timeout", &self.timeout)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// Validates `[delivery] shared_record*`; `None` when no shared record is configured.
///
/// # Errors
///
/// [`Error::Config`] naming the key: a URL that is doubled, unreadable or of another scheme, a
/// name a store refuses, a time to live or timeout out of range, a local record too small to
/// hold what a batch recalls.
pub(super) fn shared_record(delivery: &DeliveryConfig) -> Result<Option<SharedRecordSettings>> {
    let url = vodbridge_core::inline_or_file(
        "delivery.shared_record",
        delivery.shared_record.as_deref(),
        delivery.shared_record_file.as_deref(),
    )
    .map_err(|e| Error::Config(e.to_string()))?;
    let Some(url) = url else {
        return Ok(None);
    };
    let url = url.trim().to_owned();
    let kind = match url.split_once("://").map(|(scheme, _)| scheme) {
        Some("redis" | "rediss") => StoreKind::Redis,
        Some("nats" | "tls") => StoreKind::Nats,
        _ => {
            return Err(Error::Config(format!(
                "delivery.shared_record {} must start with redis://, rediss://, nats:// or tls://",
                redact_url(&url)
            )))
        }
    };
    let name = &delivery.shared_record_name;
    let valid_name = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid_name {
        return Err(Error::Config(format!(
            "delivery.shared_record_name {name:?} must be 1 to 64 letters, digits, `-` or `_` (a NATS KV bucket name)"
        )));
    }
    if delivery.shared_record_ttl_secs < 60 {
        return Err(Error::Config(
            "delivery.shared_record_ttl_secs must be at least 60 (VOD keeps events 345600 s, 4 days)"
                .into(),
        ));
    }
    if !(10..=5_000).contains(&delivery.shared_record_timeout_ms) {
        return Err(Error::Config(
            "delivery.shared_record_timeout_ms must be between 10 and 5000".into(),
        ));
    }
    if delivery.sink_record_capacity < 1_000 {
        return Err(Error::Config(
            "delivery.shared_record needs delivery.sink_record_capacity of at least 1000: the local record holds what each batch recalls".into(),
        ));
    }
    if let Some(ca) = &delivery.shared_record_ca_file {
        if !ca.is_file() {
            return Err(Error::Config(format!(
                "delivery.shared_record_ca_file {} is not a readable file",
                ca.display()
            )));
        }
    }
    Ok(Some(SharedRecordSettings {
        kind,
        url: SecretString::from(url),
        name: name.clone(),
        ttl: Duration::from_secs(delivery.shared_record_ttl_secs),
        timeout: Duration::from_millis(delivery.shared_record_timeout_ms),
        ca_file: delivery.shared_record_ca_file.clone(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(url: &str) -> DeliveryConfig {
        DeliveryConfig {
            shared_record: Some(url.to_owned()),
            ..DeliveryConfig::default()
        }
    }

    #[test]
    fn the_scheme_picks_the_store_and_the_password_stays_out_of_debug() {
        let redis = shared_record(&delivery("redis://:s3cret@valkey:6379/0"))
            .expect("valid")
            .expect("set");
        assert_eq!(redis.kind, StoreKind::Redis);
        assert_eq!(redis.ttl, Duration::from_secs(345_600), "VOD's 4 days");
        assert!(!format!("{redis:?}").contains("s3cret"));
        assert_eq!(redis.display_url(), "redis://:***@valkey:6379/0");
        let nats = shared_record(&delivery("tls://nats:4222")).expect("valid");
        assert_eq!(nats.map(|n| n.kind), Some(StoreKind::Nats));
        assert!(shared_record(&DeliveryConfig::default())
            .expect("valid")
            .is_none());
    }

    #[test]
    fn bad_values_name_their_key() {
        let error = |d: DeliveryConfig| shared_record(&d).expect_err("invalid").to_string();
        assert!(error(delivery("http://:pw@redis:6379")).contains("redis://"));
        assert!(!error(delivery("http://:pw@redis:6379")).contains("pw@"));
        let mut d = delivery("redis://r");
        d.shared_record_name = "a.b".into();
        assert!(error(d).contains("shared_record_name"));
        let mut d = delivery("redis://r");
        d.shared_record_ttl_secs = 5;
        assert!(error(d).contains("shared_record_ttl_secs"));
        let mut d = delivery("redis://r");
        d.shared_record_timeout_ms = 0;
        assert!(error(d).contains("shared_record_timeout_ms"));
        let mut d = delivery("redis://r");
        d.sink_record_capacity = 0;
        assert!(error(d).contains("sink_record_capacity"));
    }
}
