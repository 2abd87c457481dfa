//! The shared delivery record: the per-sink record kept in a store the whole fleet reads, so a
//! redelivery that VOD hands to another replica (or to this one after a restart) skips the
//! publishes a broker already acknowledged.

use std::{fmt, time::Duration};

use futures_util::future::BoxFuture;
use sha2::{Digest, Sha256};

use crate::envelope::EventId;

/// One acknowledged publish as a shared store keys it: the event id and its target (sink and
/// rendered destination).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RecordKey {
    /// The event's content-derived id.
    pub id: EventId,
    /// The sink's configured name.
    pub sink: String,
    /// The rendered destination (topic, routing key, subject).
    pub destination: String,
}

impl RecordKey {
    /// The key a store uses: `{id}.{target}`, where `target` is the first 32 hex digits of
    /// SHA-256 over `sink`, a NUL and `destination`. Only `[0-9a-f.]`, so it is a valid NATS KV
    /// key and a plain Redis key; the event id stays whole (a collision between two targets
    /// would need two of the few destinations a route table renders to share 128 bits).
    #[must_use]
    pub fn store_key(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(self.sink.as_bytes());
        hash.update([0]);
        hash.update(self.destination.as_bytes());
        let digest = hash.finalize();
        let mut key = String::with_capacity(32 + 1 + 32);
        key.push_str(self.id.as_str());
        key.push('.');
        key.push_str(&hex::encode(&digest[..16]));
        key
    }
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}:{}", self.id, self.sink, self.destination)
    }
}

/// A record of acknowledged publishes shared by every replica of the bridge (Redis/Valkey, NATS
/// KV), consulted by [`crate::Pipeline::recall`] before a batch is published and written after
/// each acknowledgement.
///
/// The rules every implementation keeps, because the record may cost a duplicate but never an
/// event or a confirm:
/// - a key is written **only after** the broker acknowledged that publish (a key written
///   before would turn a crash into a loss);
/// - `recall` answers within a bounded time: a store that is down or slow answers "not
///   recorded" for every key (fail open: publish anyway), and says so in its metrics;
/// - `remember` never waits for the store (the write happens behind, in batches), so a slow
///   store never holds an answer to VOD.
pub trait SharedRecord: Send + Sync + 'static {
    /// For each of `keys`, in order, whether some bridge recorded it. One round trip for the
    /// whole slice. Never fails: an unreachable or slow store answers `false` for each key.
    fn recall<'a>(&'a self, keys: &'a [RecordKey]) -> BoxFuture<'a, Vec<bool>>;

    /// Records an acknowledged publish; returns at once (the write is batched behind). A write
    /// that cannot be made is dropped and counted: the cost is a possible duplicate.
    fn remember(&self, key: RecordKey);

    /// Writes what is still waiting, within `within` (on shutdown, after the last publish).
    fn flush(&self, within: Duration) -> BoxFuture<'_, ()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_key_keeps_the_id_and_hashes_the_target() {
        let id = EventId::derive("/t", b"{}");
        let key = |sink: &str, destination: &str| RecordKey {
            id: id.clone(),
            sink: sink.into(),
            destination: destination.into(),
        };
        let a = key("kafka", "vod.events").store_key();
        assert!(a.starts_with(&format!("{id}.")));
        assert_eq!(a.len(), 65);
        assert!(a.bytes().all(|b| b == b'.' || b.is_ascii_hexdigit()));
        assert_eq!(a, key("kafka", "vod.events").store_key(), "stable");
        assert_ne!(a, key("nats", "vod.events").store_key(), "per sink");
        assert_ne!(a, key("kafka", "vod.other").store_key(), "per destination");
        // The separator keeps `ab` + `c` apart from `a` + `bc`.
        assert_ne!(key("ab", "c").store_key(), key("a", "bc").store_key());
    }
}
