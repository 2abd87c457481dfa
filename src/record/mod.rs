//! The shared delivery record's service side: the store `[delivery] shared_record` names
//! (Redis/Valkey or NATS KV), read before each batch within a bounded time, written behind in
//! batches after each broker acknowledgement, measured, and failing open.

mod nats;
mod redis;

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, Instant},
};

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use vodbridge_core::{redact_url, RecordKey, SharedRecord};

use crate::{
    config::{SharedRecordSettings, StoreKind},
    error::{Error, Result},
    telemetry::RecordMetrics,
};

/// Keys waiting to be written at most; beyond it an acknowledged publish is not recorded (and
/// counted as `dropped`): a store that cannot keep up costs duplicates, never memory.
const WRITE_QUEUE: usize = 65_536;
/// Keys in one write round trip at most.
const WRITE_BATCH: usize = 1_024;
/// How long the writer waits for more keys before it writes a batch that is not full.
const WRITE_LINGER: Duration = Duration::from_millis(5);

/// One store's operations, each one round trip for the whole slice.
trait Backend: Send + Sync + 'static {
    /// For each key, in order, whether the store holds it.
    fn get<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<Vec<bool>>>;
    /// Stores each key, with the record's time to live.
    fn put<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<()>>;
    /// Reaches the store (and, for NATS KV, its bucket).
    fn ping(&self) -> BoxFuture<'_, Result<()>>;
    /// Drops the connection for a new one (made on the next round trip): after a round trip
    /// failed or timed out, the connection may be dead without being closed (a silent
    /// partition), which the clients do not notice by themselves.
    fn reconnect(&self);
}

/// Least time between two forced reconnects.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);

/// What the writer task is handed.
enum Write {
    /// An acknowledged publish to record.
    Key(String),
    /// Answer once everything handed before is written (or given up on).
    Flush(oneshot::Sender<()>),
}

/// The shared record over one store: bounded reads, writes behind, health and metrics.
pub(crate) struct StoreRecord {
    /// `redis` or `nats`, for logs and `/readyz`.
    kind: &'static str,
    /// The store's address without credentials, for logs and `/readyz`.
    display: String,
    backend: Arc<dyn Backend>,
    /// Each round trip's limit; past it the round trip counts as failed (fail open).
    timeout: Duration,
    /// To the writer task; bounded (see [`WRITE_QUEUE`]).
    writes: mpsc::Sender<Write>,
    state: Arc<Health>,
    metrics: RecordMetrics,
}

/// Whether the store answered its last round trip, and why not.
#[derive(Default)]
struct Health {
    down: AtomicBool,
    why: Mutex<Option<String>>,
    /// When the connection was last replaced.
    reconnected: Mutex<Option<Instant>>,
}

impl Health {
    /// After a failed round trip: replaces `backend`'s connection, at most every
    /// [`RECONNECT_EVERY`].
    fn reconnect(&self, backend: &dyn Backend) {
        let mut last = self
            .reconnected
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.is_none_or(|at| at.elapsed() >= RECONNECT_EVERY) {
            *last = Some(Instant::now());
            backend.reconnect();
        }
    }

    /// Records a round trip's result; logs only the changes (a dead store does not flood logs).
    fn set(&self, kind: &str, address: &str, result: Result<(), &Error>, metrics: &RecordMetrics) {
        match result {
            Ok(()) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!(
                        store = kind,
                        address,
                        "Shared delivery record reachable again."
                    );
                }
                *self.why.lock().unwrap_or_else(PoisonError::into_inner) = None;
                metrics.up.with_label_values(&[kind]).set(1);
            }
            Err(error) => {
                if !self.down.swap(true, Ordering::Relaxed) {
                    tracing::warn!(store = kind, address, error = %error, "Shared delivery record unreachable; publishing without it (duplicates possible, no loss).");
                }
                *self.why.lock().unwrap_or_else(PoisonError::into_inner) = Some(error.to_string());
                metrics.up.with_label_values(&[kind]).set(0);
            }
        }
    }
}

impl StoreRecord {
    /// Opens the store named by `settings` without waiting for it: an unreachable store is
    /// reported (metrics, `/readyz` detail) and the bridge publishes without it. Spawns the
    /// writer task, so it must run inside the runtime.
    ///
    /// # Errors
    ///
    /// When the address or the CA file is unusable (no network is involved).
    pub(crate) fn open(settings: &SharedRecordSettings, metrics: RecordMetrics) -> Result<Self> {
        let backend = backend(settings)?;
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let state = Arc::new(Health::default());
        metrics
            .up
            .with_label_values(&[settings.kind.as_str()])
            .set(1);
        let record = Self {
            kind: settings.kind.as_str(),
            display: redact_url(settings.url()),
            backend,
            timeout: settings.timeout,
            writes: tx,
            state,
            metrics,
        };
        tokio::spawn(write_behind(
            rx,
            Arc::clone(&record.backend),
            record.timeout,
            Arc::clone(&record.state),
            record.metrics.clone(),
            (record.kind, record.display.clone()),
        ));
        Ok(record)
    }

    /// Why the store is not usable now, for `/readyz`'s detail (the bridge stays ready).
    pub(crate) fn down_because(&self) -> Option<String> {
        if !self.state.down.load(Ordering::Relaxed) {
            return None;
        }
        let why = self
            .state
            .why
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Some(format!(
            "shared delivery record {} at {} unreachable ({}); publishing without it",
            self.kind,
            self.display,
            why.unwrap_or_default()
        ))
    }
}

impl SharedRecord for StoreRecord {
    fn recall<'a>(&'a self, keys: &'a [RecordKey]) -> BoxFuture<'a, Vec<bool>> {
        Box::pin(async move {
            let store_keys: Vec<String> = keys.iter().map(RecordKey::store_key).collect();
            let started = Instant::now();
            let result =
                match tokio::time::timeout(self.timeout, self.backend.get(&store_keys)).await {
                    Ok(result) => result,
                    Err(_) => Err(Error::Record(format!(
                        "no answer within {} ms",
                        self.timeout.as_millis()
                    ))),
                };
            self.metrics
                .round_trip
                .with_label_values(&["read"])
                .observe(started.elapsed().as_secs_f64());
            self.state.set(
                self.kind,
                &self.display,
                result.as_ref().map(|_| ()),
                &self.metrics,
            );
            match result {
                Ok(known) if known.len() == keys.len() => {
                    let hits = known.iter().filter(|k| **k).count() as u64;
                    self.metrics
                        .lookups
                        .with_label_values(&["hit"])
                        .inc_by(hits);
                    self.metrics
                        .lookups
                        .with_label_values(&["miss"])
                        .inc_by(keys.len() as u64 - hits);
                    known
                }
                Ok(_) | Err(_) => {
                    self.state.reconnect(self.backend.as_ref());
                    self.metrics.errors.with_label_values(&["read"]).inc();
                    self.metrics
                        .lookups
                        .with_label_values(&["error"])
                        .inc_by(keys.len() as u64);
                    vec![false; keys.len()]
                }
            }
        })
    }

    fn remember(&self, key: RecordKey) {
        if self.writes.try_send(Write::Key(key.store_key())).is_err() {
            self.metrics.writes.with_label_values(&["dropped"]).inc();
        }
    }

    fn flush(&self, within: Duration) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            let flushed = async {
                if self.writes.send(Write::Flush(tx)).await.is_ok() {
                    let _ = rx.await;
                }
            };
            if tokio::time::timeout(within, flushed).await.is_err() {
                tracing::warn!(store = self.kind, "Shared delivery record writes not flushed in time; those publishes may be repeated by a redelivery.");
            }
        })
    }
}

/// The writer task: takes keys as they come, writes them in batches of up to [`WRITE_BATCH`]
/// (after at most [`WRITE_LINGER`] of waiting for more), each batch one round trip under
/// `timeout`. A failed batch is counted and dropped: its publishes may be repeated, never lost.
async fn write_behind(
    mut rx: mpsc::Receiver<Write>,
    backend: Arc<dyn Backend>,
    timeout: Duration,
    health: Arc<Health>,
    metrics: RecordMetrics,
    (kind, display): (&'static str, String),
) {
    let mut batch: Vec<String> = Vec::with_capacity(WRITE_BATCH);
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let linger = tokio::time::sleep(WRITE_LINGER);
        tokio::pin!(linger);
        loop {
            match next.take() {
                Some(Write::Key(key)) => batch.push(key),
                Some(Write::Flush(done)) => {
                    waiting.push(done);
                    break;
                }
                None => {}
            }
            if batch.len() >= WRITE_BATCH {
                break;
            }
            tokio::select! {
                item = rx.recv() => match item {
                    Some(item) => next = Some(item),
                    None => break,
                },
                () = &mut linger => break,
            }
        }
        if !batch.is_empty() {
            let started = Instant::now();
            let result = match tokio::time::timeout(timeout, backend.put(&batch)).await {
                Ok(result) => result,
                Err(_) => Err(Error::Record(format!(
                    "no answer within {} ms",
                    timeout.as_millis()
                ))),
            };
            metrics
                .round_trip
                .with_label_values(&["write"])
                .observe(started.elapsed().as_secs_f64());
            health.set(kind, &display, result.as_ref().map(|_| ()), &metrics);
            let outcome = if result.is_ok() {
                "ok"
            } else {
                health.reconnect(backend.as_ref());
                metrics.errors.with_label_values(&["write"]).inc();
                "error"
            };
            metrics
                .writes
                .with_label_values(&[outcome])
                .inc_by(batch.len() as u64);
            batch.clear();
        }
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}

/// The backend for `settings`' URL scheme.
fn backend(settings: &SharedRecordSettings) -> Result<Arc<dyn Backend>> {
    Ok(match settings.kind {
        StoreKind::Redis => Arc::new(redis::RedisRecord::new(settings)?),
        StoreKind::Nats => Arc::new(nats::NatsRecord::new(settings)),
    })
}

/// Reaches the store named by `settings` within its timeout (plus a connection's worth):
/// `check-config`'s check.
///
/// # Errors
///
/// [`Error::Record`] with what failed.
pub async fn check(settings: &SharedRecordSettings) -> Result<()> {
    let backend = backend(settings)?;
    let within = settings.timeout + Duration::from_secs(5);
    match tokio::time::timeout(within, backend.ping()).await {
        Ok(result) => result,
        Err(_) => Err(Error::Record(format!(
            "no answer within {} ms",
            within.as_millis()
        ))),
    }
}
