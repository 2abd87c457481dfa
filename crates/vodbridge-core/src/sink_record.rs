//! The per-sink delivery record: which (event, sink, destination) publishes a broker already
//! acknowledged, so a redelivery caused by another sink's failure is not published again where
//! it is already held.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Mutex, PoisonError},
};

use crate::envelope::EventId;

/// One acknowledged publish: the event id's 16 bytes and the interned (sink, destination).
type Key = ([u8; 16], u32);

/// A bounded record of acknowledged publishes, keyed by event id and target (sink and rendered
/// destination), oldest forgotten first.
///
/// When VOD hands an event out again because *one* of its routed sinks failed, the sinks that
/// already acknowledged it are skipped: a one-sink outage no longer multiplies copies on the
/// healthy sinks. A publish is recorded only after its acknowledgement, and a key is exact (the
/// full id, never a hash), so a skip never stands in for a publish that did not happen. The
/// record lives in one process: another replica, or this one after a restart, publishes again
/// (a duplicate with the same id, which consumers drop).
pub struct SinkRecord {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// sink → destination → its number in the keys (looked up without allocating). Bounded by
    /// the distinct destinations routes render (event types × targets), not by traffic.
    targets: HashMap<String, HashMap<String, u32>>,
    /// Numbers handed out so far.
    next_target: u32,
    order: VecDeque<Key>,
    set: HashSet<Key>,
}

impl SinkRecord {
    /// A record of at most `capacity` acknowledged publishes; 0 records nothing.
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// How many publishes it remembers at most.
    #[must_use]
    pub const fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many publishes it remembers now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().order.len()
    }

    /// True when it remembers nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// True when `sink` acknowledged event `id` at `destination` recently.
    #[must_use]
    pub fn contains(&self, id: &EventId, sink: &str, destination: &str) -> bool {
        if self.capacity == 0 {
            return false;
        }
        let Some(id) = id_bytes(id) else {
            return false;
        };
        let inner = self.lock();
        let Some(&target) = inner.targets.get(sink).and_then(|d| d.get(destination)) else {
            return false;
        };
        inner.set.contains(&(id, target))
    }

    /// Records that `sink` acknowledged event `id` at `destination`.
    pub fn insert(&self, id: &EventId, sink: &str, destination: &str) {
        if self.capacity == 0 {
            return;
        }
        let Some(id) = id_bytes(id) else {
            return;
        };
        let mut inner = self.lock();
        let known = inner
            .targets
            .get(sink)
            .and_then(|d| d.get(destination))
            .copied();
        let target = match known {
            Some(target) => target,
            None => {
                let target = inner.next_target;
                inner.next_target = target.saturating_add(1);
                inner
                    .targets
                    .entry(sink.to_owned())
                    .or_default()
                    .insert(destination.to_owned(), target);
                target
            }
        };
        let key = (id, target);
        if !inner.set.insert(key) {
            return;
        }
        inner.order.push_back(key);
        while inner.order.len() > self.capacity {
            if let Some(old) = inner.order.pop_front() {
                inner.set.remove(&old);
            }
        }
    }
}

/// The 16 bytes behind an id's 32 hex digits; `None` for an id that is not one (never recorded,
/// so never skipped).
fn id_bytes(id: &EventId) -> Option<[u8; 16]> {
    let mut bytes = [0u8; 16];
    hex::decode_to_slice(id.as_str(), &mut bytes).ok()?;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> EventId {
        EventId::derive("/test", &[n])
    }

    #[test]
    fn remembers_per_sink_and_destination() {
        let record = SinkRecord::new(10);
        record.insert(&id(1), "kafka", "vod.events");
        assert!(record.contains(&id(1), "kafka", "vod.events"));
        assert!(
            !record.contains(&id(1), "nats", "vod.events"),
            "another sink"
        );
        assert!(
            !record.contains(&id(1), "kafka", "vod.other"),
            "another topic"
        );
        assert!(
            !record.contains(&id(2), "kafka", "vod.events"),
            "another event"
        );
        record.insert(&id(1), "kafka", "vod.events");
        assert_eq!(record.len(), 1, "a second insert is no second entry");
    }

    #[test]
    fn forgets_the_oldest_beyond_capacity() {
        let record = SinkRecord::new(3);
        for n in 0..5 {
            record.insert(&id(n), "s", "d");
        }
        assert_eq!(record.len(), 3);
        assert!(!record.contains(&id(0), "s", "d"));
        assert!(!record.contains(&id(1), "s", "d"));
        assert!((2..5).all(|n| record.contains(&id(n), "s", "d")));
    }

    #[test]
    fn capacity_zero_records_nothing() {
        let record = SinkRecord::new(0);
        record.insert(&id(1), "s", "d");
        assert!(!record.contains(&id(1), "s", "d"));
        assert!(record.is_empty());
    }
}
