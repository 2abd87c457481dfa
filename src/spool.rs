//! The durable push spool's storage: a callback is answered 200 once its envelope is fsynced to
//! a local redb database; the forwarder (`sources::forward`) delivers spooled events through the
//! routes and removes each only after every routed sink acknowledged it.
//!
//! VOD sends a normal callback at most three times, 5 s apart, and only when it gets no answer;
//! a broker outage longer than that loses events however long the bridge holds. The spool
//! turns the promise into "200 = durably on this replica's disk": the bridge keeps accepting
//! through a long outage and forwards in order (per FileId) once the broker is back. A restart
//! or a SIGKILL forwards what is left.
//!
//! One writer thread owns every write transaction and commits whatever is queued together
//! (group commit: one fsync for many callbacks). Records are keyed by a sequence number, so the
//! forwarder reads them in arrival order.

use std::{
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use futures_util::future::BoxFuture;
use redb::{Database, ReadableTable, TableDefinition};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot, Notify};
use vodbridge_core::{Envelope, LaneStore, StoredPublish};

use crate::error::{Error, Result};

/// Spooled records: sequence number → [`Record`] bytes.
const EVENTS: TableDefinition<'static, u64, &'static [u8]> = TableDefinition::new("events");
/// Durable best-effort queues (`delivery.best_effort.durable`): sequence number → sink name
/// length (1 byte), the name, destination length (2 bytes big-endian), the destination, then a
/// [`Record`] of the source and envelope.
const QUEUED: TableDefinition<'static, u64, &'static [u8]> = TableDefinition::new("best_effort");
/// The record's flag: the envelope's `time` is when it was received (VOD's payload had none).
const TIME_FROM_RECEIPT: u8 = 0x01;
/// Most operations one commit carries.
const GROUP_COMMIT: usize = 512;

/// A write for the writer thread.
enum Op {
    /// Store a record.
    Append {
        table: Table,
        key: u64,
        record: Vec<u8>,
        done: oneshot::Sender<std::result::Result<(), String>>,
    },
    /// Remove forwarded records.
    Remove {
        table: Table,
        keys: Vec<u64>,
        done: oneshot::Sender<std::result::Result<(), String>>,
    },
}

/// Which table an [`Op`] writes.
#[derive(Clone, Copy)]
enum Table {
    /// Spooled callbacks.
    Events,
    /// Durable best-effort queues.
    Queued,
}

impl Table {
    const fn definition(self) -> TableDefinition<'static, u64, &'static [u8]> {
        match self {
            Self::Events => EVENTS,
            Self::Queued => QUEUED,
        }
    }
}

/// A best-effort queue record (see [`QUEUED`]).
fn encode_queued(publish: &StoredPublish) -> Vec<u8> {
    let sink = &publish.sink.as_bytes()[..publish.sink.len().min(255)];
    let destination = &publish.destination.as_bytes()[..publish.destination.len().min(65_535)];
    let record = encode(
        &publish.source,
        &publish.envelope,
        OffsetDateTime::now_utc(),
    );
    let mut out = Vec::with_capacity(3 + sink.len() + destination.len() + record.len());
    #[allow(clippy::cast_possible_truncation)] // Both bounded by the slices above.
    {
        out.push(sink.len() as u8);
        out.extend_from_slice(sink);
        out.extend_from_slice(&(destination.len() as u16).to_be_bytes());
    }
    out.extend_from_slice(destination);
    out.extend_from_slice(&record);
    out
}

/// Reads a best-effort queue record back.
fn decode_queued(key: u64, record: &[u8]) -> std::result::Result<StoredPublish, String> {
    let short = || "record too short".to_owned();
    let (&len, rest) = record.split_first().ok_or_else(short)?;
    let (sink, rest) = rest.split_at_checked(usize::from(len)).ok_or_else(short)?;
    let (len, rest) = rest.split_first_chunk::<2>().ok_or_else(short)?;
    let (destination, rest) = rest
        .split_at_checked(usize::from(u16::from_be_bytes(*len)))
        .ok_or_else(short)?;
    let spooled = decode(key, rest)?;
    Ok(StoredPublish {
        sink: String::from_utf8_lossy(sink).into_owned(),
        destination: String::from_utf8_lossy(destination).into_owned(),
        source: spooled.source,
        envelope: spooled.envelope,
    })
}

/// One spooled event, read back.
pub(crate) struct Spooled {
    /// Its sequence number.
    key: u64,
    /// The push source it came from (route context and metric label).
    pub(crate) source: String,
    /// When it was spooled.
    spooled_at: OffsetDateTime,
    /// The envelope.
    pub(crate) envelope: Arc<Envelope>,
    /// Its record's size, for the byte count.
    bytes: u64,
}

/// Record layout: spooled-at (Unix ms, 8 bytes big-endian), source name length (1 byte), the
/// name, a flags byte, then the envelope as one structured-mode CloudEvent (the envelope crate's
/// own codec). Flags: [`TIME_FROM_RECEIPT`]. Records written before the flags byte existed go
/// straight from the name to the JSON's `{`, which no flags value equals.
fn encode(source: &str, envelope: &Envelope, spooled_at: OffsetDateTime) -> Vec<u8> {
    let json = envelope.to_structured_json(None);
    let millis = i64::try_from(spooled_at.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    let name = &source.as_bytes()[..source.len().min(255)];
    let mut out = Vec::with_capacity(10 + name.len() + json.len());
    out.extend_from_slice(&millis.to_be_bytes());
    #[allow(clippy::cast_possible_truncation)] // At most 255 by the slice above.
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.push(if envelope.event_time_known {
        0
    } else {
        TIME_FROM_RECEIPT
    });
    out.extend_from_slice(&json);
    out
}

fn decode(key: u64, record: &[u8]) -> std::result::Result<Spooled, String> {
    let (millis, rest) = record
        .split_first_chunk::<8>()
        .ok_or_else(|| "record too short".to_owned())?;
    let (&len, rest) = rest
        .split_first()
        .ok_or_else(|| "record too short".to_owned())?;
    let (name, json) = rest
        .split_at_checked(usize::from(len))
        .ok_or_else(|| "record too short".to_owned())?;
    let (flags, json) = match json.split_first() {
        Some((b'{', _)) | None => (0, json),
        Some((&flags, json)) => (flags, json),
    };
    let mut envelope = Envelope::from_structured_json(json).map_err(|e| e.to_string())?;
    envelope.event_time_known = flags & TIME_FROM_RECEIPT == 0;
    Ok(Spooled {
        key,
        source: String::from_utf8_lossy(name).into_owned(),
        spooled_at: OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(i64::from_be_bytes(*millis)) * 1_000_000,
        )
        .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        envelope: Arc::new(envelope),
        bytes: record.len() as u64,
    })
}

fn storage(
    what: &'static str,
    path: &Path,
    error: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> Error {
    Error::Spool {
        what,
        path: path.to_owned(),
        source: error.into(),
    }
}

/// The spool of this process.
pub(crate) struct Spool {
    db: Arc<Database>,
    path: PathBuf,
    /// To the writer thread; taken (closed) on drop, which ends the thread.
    ops: Option<mpsc::Sender<Op>>,
    /// The writer thread, joined on drop so the database is closed when the spool is.
    writer: Option<std::thread::JoinHandle<()>>,
    next_key: AtomicU64,
    /// Logical bytes of the records held.
    bytes: AtomicU64,
    /// Records held.
    events: AtomicU64,
    /// Each durable best-effort record's size, by key (for the byte count on removal).
    queued: std::sync::Mutex<std::collections::HashMap<u64, u64>>,
    /// Appends are refused beyond this many bytes.
    max_bytes: u64,
    /// Wakes the forwarder when something was spooled.
    pub(crate) wake: Notify,
}

impl Spool {
    /// Opens (or creates) the spool database in `dir`, counting what a previous run left.
    ///
    /// # Errors
    ///
    /// [`Error::Spool`] when the directory or database cannot be opened.
    pub(crate) fn open(dir: &Path, max_bytes: u64) -> Result<Arc<Self>> {
        std::fs::create_dir_all(dir).map_err(|e| storage("cannot create", dir, e))?;
        let path = dir.join("spool.redb");
        let db = Database::create(&path).map_err(|e| storage("cannot open", &path, e))?;
        let fail = |e: redb::Error| storage("cannot read", &path, e);
        let txn = db.begin_write().map_err(|e| fail(e.into()))?;
        txn.open_table(EVENTS).map_err(|e| fail(e.into()))?;
        txn.open_table(QUEUED).map_err(|e| fail(e.into()))?;
        txn.commit().map_err(|e| fail(e.into()))?;
        let (mut bytes, mut events, mut last) = (0u64, 0u64, 0u64);
        let mut queued = std::collections::HashMap::new();
        {
            let read = db.begin_read().map_err(|e| fail(e.into()))?;
            let table = read.open_table(EVENTS).map_err(|e| fail(e.into()))?;
            for item in table.iter().map_err(|e| fail(e.into()))? {
                let (key, value) = item.map_err(|e| fail(e.into()))?;
                bytes += value.value().len() as u64;
                events += 1;
                last = last.max(key.value());
            }
            let table = read.open_table(QUEUED).map_err(|e| fail(e.into()))?;
            for item in table.iter().map_err(|e| fail(e.into()))? {
                let (key, value) = item.map_err(|e| fail(e.into()))?;
                bytes += value.value().len() as u64;
                queued.insert(key.value(), value.value().len() as u64);
                last = last.max(key.value());
            }
        }
        let db = Arc::new(db);
        let (ops, receiver) = mpsc::channel(4 * GROUP_COMMIT);
        let writer_db = Arc::clone(&db);
        let writer = std::thread::Builder::new()
            .name("vodbridge-spool".into())
            .spawn(move || write_loop(&writer_db, receiver))
            .map_err(|e| storage("cannot start the writer of", &path, e))?;
        if events > 0 {
            tracing::info!(path = %path.display(), events, bytes, "Spool holds events from a previous run; forwarding them.");
        }
        Ok(Arc::new(Self {
            db,
            path,
            ops: Some(ops),
            writer: Some(writer),
            next_key: AtomicU64::new(last + 1),
            bytes: AtomicU64::new(bytes),
            events: AtomicU64::new(events),
            queued: std::sync::Mutex::new(queued),
            max_bytes,
            wake: Notify::new(),
        }))
    }

    /// Stores an envelope durably; `Ok(false)` when the spool is full (the caller holds the
    /// callback instead).
    ///
    /// # Errors
    ///
    /// [`Error::Spool`] when the write or fsync fails.
    pub(crate) async fn append(&self, source: &str, envelope: &Envelope) -> Result<bool> {
        let record = encode(source, envelope, OffsetDateTime::now_utc());
        let size = record.len() as u64;
        if self.bytes.load(Ordering::Relaxed) + size > self.max_bytes {
            return Ok(false);
        }
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        let (done, committed) = oneshot::channel();
        let table = Table::Events;
        self.send(
            Op::Append {
                table,
                key,
                record,
                done,
            },
            committed,
        )
        .await?;
        self.bytes.fetch_add(size, Ordering::Relaxed);
        self.events.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
        Ok(true)
    }

    async fn send(
        &self,
        op: Op,
        committed: oneshot::Receiver<std::result::Result<(), String>>,
    ) -> Result<()> {
        let gone = || storage("cannot write", &self.path, "the spool's writer stopped");
        let ops = self.ops.as_ref().ok_or_else(gone)?;
        ops.send(op).await.map_err(|_| gone())?;
        committed
            .await
            .map_err(|_| gone())?
            .map_err(|e| storage("cannot write", &self.path, e))
    }

    /// The oldest records, at most `limit`; unreadable ones are reported and skipped.
    pub(crate) fn oldest(&self, limit: usize) -> Result<Vec<Spooled>> {
        let fail = |e: redb::Error| storage("cannot read", &self.path, e);
        let read = self.db.begin_read().map_err(|e| fail(e.into()))?;
        let table = read.open_table(EVENTS).map_err(|e| fail(e.into()))?;
        let mut out = Vec::with_capacity(limit.min(64));
        for item in table.iter().map_err(|e| fail(e.into()))?.take(limit) {
            let (key, value) = item.map_err(|e| fail(e.into()))?;
            match decode(key.value(), value.value()) {
                Ok(spooled) => out.push(spooled),
                Err(error) => {
                    tracing::error!(
                        key = key.value(),
                        error,
                        "Unreadable spool record; it is kept, not forwarded."
                    );
                }
            }
        }
        Ok(out)
    }

    /// Removes forwarded records.
    pub(crate) async fn remove(&self, done: &[&Spooled]) -> Result<()> {
        if done.is_empty() {
            return Ok(());
        }
        let keys = done.iter().map(|s| s.key).collect();
        let (tx, committed) = oneshot::channel();
        let table = Table::Events;
        self.send(
            Op::Remove {
                table,
                keys,
                done: tx,
            },
            committed,
        )
        .await?;
        let bytes: u64 = done.iter().map(|s| s.bytes).sum();
        let _ = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(bytes))
            });
        let _ = self
            .events
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(done.len() as u64))
            });
        Ok(())
    }

    /// Logical bytes held.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Records held.
    pub(crate) fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    /// The byte limit.
    pub(crate) const fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Seconds since the oldest record was spooled (0 when empty).
    pub(crate) fn oldest_age_secs(&self) -> f64 {
        if self.events() == 0 {
            return 0.0;
        }
        self.oldest(1)
            .ok()
            .and_then(|mut v| v.pop())
            .map_or(0.0, |s| {
                (OffsetDateTime::now_utc() - s.spooled_at)
                    .as_seconds_f64()
                    .max(0.0)
            })
    }
}

/// The durable best-effort queues (`delivery.best_effort.durable`) share the spool's database,
/// writer and byte limit: a queued publish is fsynced before its event counts as handled.
impl LaneStore for Spool {
    fn append<'a>(
        &'a self,
        publish: &'a StoredPublish,
    ) -> BoxFuture<'a, std::result::Result<Option<u64>, String>> {
        Box::pin(async move {
            let record = encode_queued(publish);
            let size = record.len() as u64;
            if self.bytes.load(Ordering::Relaxed) + size > self.max_bytes {
                return Ok(None);
            }
            let key = self.next_key.fetch_add(1, Ordering::Relaxed);
            let (done, committed) = oneshot::channel();
            let op = Op::Append {
                table: Table::Queued,
                key,
                record,
                done,
            };
            self.send(op, committed).await.map_err(|e| e.to_string())?;
            self.bytes.fetch_add(size, Ordering::Relaxed);
            self.queued
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(key, size);
            Ok(Some(key))
        })
    }

    fn remove(&self, keys: Vec<u64>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let (done, committed) = oneshot::channel();
            let freed: u64 = {
                let mut queued = self
                    .queued
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                keys.iter().filter_map(|k| queued.remove(k)).sum()
            };
            let op = Op::Remove {
                table: Table::Queued,
                keys,
                done,
            };
            if let Err(error) = self.send(op, committed).await {
                // They stay stored and are published again after a restart: duplicates only.
                tracing::warn!(error = %error, "Removing published best-effort events from the spool failed.");
            }
            let _ = self
                .bytes
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                    Some(b.saturating_sub(freed))
                });
        })
    }

    fn load(&self, sink: &str) -> Vec<(u64, StoredPublish)> {
        let text = |e: redb::Error| e.to_string();
        let read = || -> std::result::Result<Vec<(u64, StoredPublish)>, String> {
            let read = self.db.begin_read().map_err(|e| text(e.into()))?;
            let table = read.open_table(QUEUED).map_err(|e| text(e.into()))?;
            let mut out = Vec::new();
            for item in table.iter().map_err(|e| text(e.into()))? {
                let (key, value) = item.map_err(|e| text(e.into()))?;
                match decode_queued(key.value(), value.value()) {
                    Ok(publish) if publish.sink == sink => out.push((key.value(), publish)),
                    Ok(_) => {}
                    Err(error) => tracing::error!(
                        key = key.value(),
                        error,
                        "Unreadable best-effort record in the spool; it is kept, not published."
                    ),
                }
            }
            Ok(out)
        };
        read().unwrap_or_else(|error| {
            tracing::error!(path = %self.path.display(), error, "Reading the best-effort queues from the spool failed.");
            Vec::new()
        })
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        drop(self.ops.take());
        if let Some(writer) = self.writer.take() {
            // It ends after the commit in progress, if any.
            let _ = writer.join();
        }
    }
}

/// The writer thread: takes what is queued (up to [`GROUP_COMMIT`] operations), applies it in
/// one write transaction, commits with fsync, then answers every waiter.
fn write_loop(db: &Database, mut ops: mpsc::Receiver<Op>) {
    while let Some(first) = ops.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < GROUP_COMMIT {
            match ops.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let result = apply(db, &batch);
        for op in batch {
            let (Op::Append { done, .. } | Op::Remove { done, .. }) = op;
            let _ = done.send(result.clone());
        }
    }
}

/// Applies a batch in one write transaction; the error is its text (every waiter gets a copy).
fn apply(db: &Database, batch: &[Op]) -> std::result::Result<(), String> {
    let text = |e: redb::Error| e.to_string();
    let txn = db.begin_write().map_err(|e| text(e.into()))?;
    {
        for op in batch {
            match op {
                Op::Append {
                    table, key, record, ..
                } => {
                    let mut table = txn
                        .open_table(table.definition())
                        .map_err(|e| text(e.into()))?;
                    table
                        .insert(*key, record.as_slice())
                        .map_err(|e| text(e.into()))?;
                }
                Op::Remove { table, keys, .. } => {
                    let mut table = txn
                        .open_table(table.definition())
                        .map_err(|e| text(e.into()))?;
                    for key in keys {
                        table.remove(*key).map_err(|e| text(e.into()))?;
                    }
                }
            }
        }
    }
    txn.commit().map_err(|e| text(e.into()))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use vodbridge_core::Ingress;
    use vodbridge_tencent::{Normalizer, RawEvent};

    use super::*;

    fn envelope(n: u32) -> Envelope {
        let body = Bytes::from(format!(
            r#"{{"EventType":"NewFileUpload","FileUploadEvent":{{"FileId":"{n}"}}}}"#
        ));
        let event = RawEvent::parse(&body).expect("parses");
        Normalizer::new("/tencentcloud/vod/1", Some(1), Ingress::Push)
            .normalize(event, OffsetDateTime::now_utc())
            .expect("normalizes")
    }

    #[test]
    fn records_round_trip() {
        let mut env = envelope(7);
        assert!(!env.event_time_known, "this payload has no time of its own");
        env.event_time_known = true;
        let at = OffsetDateTime::from_unix_timestamp(1_767_225_600).expect("time");
        let record = encode("app", &env, at);
        let back = decode(3, &record).expect("decodes");
        assert_eq!((back.key, back.source.as_str()), (3, "app"));
        assert_eq!(back.spooled_at, at);
        assert_eq!(back.envelope.id, env.id);
        assert_eq!(back.envelope.data, env.data);
        assert_eq!(back.bytes, record.len() as u64);
        assert!(back.envelope.event_time_known);
        assert!(decode(1, &record[..5]).is_err());
        // The flag survives, and a record from before the flags byte still reads.
        let mut untimed = env.clone();
        untimed.event_time_known = false;
        let back = decode(4, &encode("app", &untimed, at)).expect("decodes");
        assert!(!back.envelope.event_time_known);
        let mut legacy = record.clone();
        legacy.remove(12);
        let back = decode(5, &legacy).expect("a record without flags decodes");
        assert!(back.envelope.event_time_known);
        assert_eq!(back.envelope.id, env.id);
    }

    #[tokio::test]
    async fn best_effort_queues_survive_a_reopen_per_sink_and_count_in_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let publish = |sink: &str, n: u32| StoredPublish {
            sink: sink.to_owned(),
            destination: format!("vod.{n}"),
            source: "app".to_owned(),
            envelope: Arc::new(envelope(n)),
        };
        let keys = {
            let spool = Spool::open(dir.path(), 1024 * 1024).expect("opens");
            let a = LaneStore::append(spool.as_ref(), &publish("mirror", 1))
                .await
                .expect("stored");
            let b = LaneStore::append(spool.as_ref(), &publish("mirror", 2))
                .await
                .expect("stored");
            let c = LaneStore::append(spool.as_ref(), &publish("other", 3))
                .await
                .expect("stored");
            assert!(spool.bytes() > 0, "the queues count in the spool's bytes");
            assert_eq!(spool.events(), 0, "they are not spooled callbacks");
            [a, b, c].map(|k| k.expect("room"))
        };
        let spool = Spool::open(dir.path(), 1024 * 1024).expect("reopens");
        let mirror = LaneStore::load(spool.as_ref(), "mirror");
        assert_eq!(
            mirror
                .iter()
                .map(|(k, p)| (*k, p.destination.as_str()))
                .collect::<Vec<_>>(),
            [(keys[0], "vod.1"), (keys[1], "vod.2")]
        );
        assert_eq!(mirror[0].1.envelope.id, envelope(1).id);
        LaneStore::remove(spool.as_ref(), vec![keys[0], keys[1]]).await;
        assert!(LaneStore::load(spool.as_ref(), "mirror").is_empty());
        assert_eq!(LaneStore::load(spool.as_ref(), "other").len(), 1);
        // A spool appends after the highest key of either table.
        let next = LaneStore::append(spool.as_ref(), &publish("other", 4))
            .await
            .expect("stored");
        assert!(next > Some(keys[2]));
        // Full: the store says so instead of failing.
        let tiny = tempfile::tempdir().expect("tempdir");
        let small = Spool::open(tiny.path(), 10).expect("opens");
        assert_eq!(
            LaneStore::append(small.as_ref(), &publish("m", 5)).await,
            Ok(None)
        );
    }

    #[tokio::test]
    async fn spooled_events_survive_a_reopen_in_order_and_the_limit_holds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spool = Spool::open(dir.path(), 10_000).expect("opens");
        for n in 0..5 {
            assert!(spool.append("app", &envelope(n)).await.expect("append"));
        }
        assert_eq!(spool.events(), 5);
        let first_two: Vec<Spooled> = spool.oldest(2).expect("read");
        spool
            .remove(&first_two.iter().collect::<Vec<_>>())
            .await
            .expect("remove");
        let bytes = spool.bytes();
        drop(spool);

        let reopened = Spool::open(dir.path(), 10_000).expect("reopens");
        assert_eq!((reopened.events(), reopened.bytes()), (3, bytes));
        let left: Vec<String> = reopened
            .oldest(10)
            .expect("read")
            .into_iter()
            .filter_map(|s| s.envelope.subject.clone())
            .collect();
        assert_eq!(left, ["2", "3", "4"], "in arrival order");
        assert!(reopened.append("app", &envelope(9)).await.expect("append"));
        assert_eq!(
            reopened.oldest(10).expect("read").last().map(|s| s.key),
            Some(6),
            "keys go on"
        );

        let tiny = Spool::open(&dir.path().join("tiny"), 100).expect("opens");
        assert!(
            !tiny.append("app", &envelope(1)).await.expect("no error"),
            "full"
        );
        assert_eq!(tiny.events(), 0);
    }
}
