//! The JSON Lines sinks (`stdout`, `file`): one structured-mode CloudEvent per line, written in
//! group commits, each line acknowledged only after it is written (and fsynced, for
//! `fsync = "always"`).
//!
//! Publishers encode their line straight into one shared buffer; the first publisher that
//! finds no commit running starts one, which first yields to the runtime (so the callbacks
//! its sockets have ready add their lines), then takes the whole buffer, writes it with one
//! `write(2)`, answers every line in it, and goes on until the buffer is empty. Concurrent
//! publishers so share a write (and an fsync) without a dedicated writer thread: a profile
//! of push → file showed the old thread's wake-ups (futex, context switches, wakes from
//! outside the runtime) at about a fifth of the push path's CPU. The commit writes on the
//! runtime's worker only for `fsync = "never"` (the write lands in the page cache); an fsync
//! and standard output (a pipe may block) run on the blocking pool.

use std::{
    fs::{File, OpenOptions},
    io::{self, Write},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard, PoisonError,
    },
};

use tokio::sync::{oneshot, Notify};
use vodbridge_core::{FailureReason, Message, PublishFuture, Sink, SinkError};

use crate::{
    config::{FileSinkConfig, FsyncPolicy},
    error::{Error, Result},
};

/// Longest wait on close for the running commit.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A commit keeps at most this much buffer capacity between batches.
const KEEP_CAPACITY: usize = 4 << 20;

/// Answers one publisher once its line is written (or the write failed).
type Ack = oneshot::Sender<Result<(), SinkError>>;

/// Lines not yet written, and who waits for them.
#[derive(Default)]
struct Pending {
    /// Lines in arrival order, each ending in `\n`.
    bytes: Vec<u8>,
    /// One answer per line in `bytes`.
    acks: Vec<Ack>,
    /// True while a commit runs: it takes what is pending until nothing is.
    committing: bool,
    /// Set by close: no more lines.
    closed: bool,
    /// The buffer of the last batch, emptied, for the next: two buffers take turns, so their
    /// capacity is allocated once instead of regrown (and freed across threads) per batch.
    spare: Vec<u8>,
}

/// What the sink's publishers and its commits share.
struct Shared {
    name: String,
    pending: Mutex<Pending>,
    /// Locked by the running commit (one at a time) and by close.
    output: Mutex<Output>,
    /// False after a write error until a write succeeds again.
    healthy: AtomicBool,
    /// Signalled when a commit ends, for close.
    idle: Notify,
    /// Write on the worker that runs the commit (page-cache writes only).
    inline: bool,
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        // The guarded code does not panic; a poisoned lock still holds consistent data.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes one batch as durable as configured.
    fn write(&self, bytes: &[u8]) -> io::Result<()> {
        let mut output = self.output.lock().unwrap_or_else(PoisonError::into_inner);
        output.write_batch(bytes)
    }

    /// Rotates the file once it is full.
    fn rotate(&self) {
        let mut output = self.output.lock().unwrap_or_else(PoisonError::into_inner);
        if let Output::File(out) = &mut *output {
            if let Err(e) = out.rotate_if_full() {
                tracing::error!(sink = %self.name, error = %e, "Rotating the file failed; writing on to the current one.");
            }
        }
    }

    /// True once the file reached `rotate_bytes`.
    fn needs_rotation(&self) -> bool {
        let output = self.output.lock().unwrap_or_else(PoisonError::into_inner);
        matches!(&*output, Output::File(out) if out.rotate_bytes.is_some_and(|limit| out.size >= limit))
    }
}

/// Resets `committing` if a commit ends without doing so (a panic), so the next publisher
/// starts a new one instead of waiting for ever.
struct CommitGuard<'a>(&'a Shared, bool);

impl Drop for CommitGuard<'_> {
    fn drop(&mut self) {
        if self.1 {
            self.0.pending().committing = false;
            self.0.idle.notify_waiters();
        }
    }
}

/// One commit: write what is pending, answer it, again until nothing is pending.
async fn commit(shared: Arc<Shared>) {
    let mut guard = CommitGuard(&shared, true);
    loop {
        // Let the runtime poll its sockets and the tasks they woke first: under load they
        // add their lines to this batch, so one write(2) (and one inode update) serves many
        // callbacks instead of one each. Idle, this costs one trip through the scheduler.
        tokio::task::yield_now().await;
        let (mut bytes, acks) = {
            let mut pending = shared.pending();
            if pending.bytes.is_empty() {
                pending.committing = false;
                drop(pending);
                guard.1 = false;
                shared.idle.notify_waiters();
                return;
            }
            let next = std::mem::take(&mut pending.spare);
            let bytes = std::mem::replace(&mut pending.bytes, next);
            (bytes, std::mem::take(&mut pending.acks))
        };
        let written = if shared.inline {
            let result = shared.write(&bytes);
            Ok((result, bytes))
        } else {
            let blocking = Arc::clone(&shared);
            tokio::task::spawn_blocking(move || {
                let result = blocking.write(&bytes);
                (result, bytes)
            })
            .await
            .map_err(|e| io::Error::other(format!("the writing task failed: {e}")))
        };
        let result = match written {
            Ok((result, returned)) => {
                bytes = returned;
                result
            }
            Err(e) => {
                bytes = Vec::new();
                Err(e)
            }
        };
        let result = result.map_err(|e| {
            tracing::error!(sink = %shared.name, error = %e, "Writing events failed; they will be retried.");
            SinkError::retryable(FailureReason::Unavailable, format!("write failed: {e}"))
        });
        shared.healthy.store(result.is_ok(), Ordering::Relaxed);
        for ack in acks {
            // The publisher may have given up (deadline); its event is then not acknowledged.
            let _ = ack.send(result.clone());
        }
        // The batch is acknowledged; a failed rotation only delays it to the next batch.
        if result.is_ok() && shared.needs_rotation() {
            let blocking = Arc::clone(&shared);
            let _ = tokio::task::spawn_blocking(move || blocking.rotate()).await;
        }
        if bytes.capacity() <= KEEP_CAPACITY {
            bytes.clear();
            shared.pending().spare = bytes;
        }
    }
}

/// Where the sink writes.
enum Output {
    Stdout,
    File(FileOutput),
}

/// The file sink's current file and its rotation.
struct FileOutput {
    path: PathBuf,
    file: File,
    fsync: FsyncPolicy,
    /// Bytes in the current file.
    size: u64,
    rotate_bytes: Option<u64>,
    keep_files: Option<usize>,
    /// Makes rotated names unique within a second.
    sequence: u64,
}

fn open_append(path: &Path) -> io::Result<File> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

impl FileOutput {
    /// After a durable batch: once the file reached `rotate_bytes`, rename it aside, start a
    /// new one, and delete the oldest rotated files beyond `keep_files`.
    fn rotate_if_full(&mut self) -> io::Result<()> {
        let Some(limit) = self.rotate_bytes else {
            return Ok(());
        };
        if self.size < limit {
            return Ok(());
        }
        self.file.sync_all()?;
        let stamp = time::OffsetDateTime::now_utc()
            .format(time::macros::format_description!(
                "[year][month][day]T[hour][minute][second]Z"
            ))
            .unwrap_or_else(|_| "19700101T000000Z".to_owned());
        let rotated = loop {
            self.sequence += 1;
            let candidate = rotated_name(&self.path, &stamp, self.sequence);
            if !candidate.exists() {
                break candidate;
            }
        };
        std::fs::rename(&self.path, &rotated)?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        if let Some(dir) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            // Make the rename and the new file durable too.
            File::open(dir).and_then(|d| d.sync_all())?;
        }
        if let Some(keep) = self.keep_files {
            let mut old = rotated_files(&self.path)?;
            old.sort();
            let excess = old.len().saturating_sub(keep);
            for path in old.into_iter().take(excess) {
                std::fs::remove_file(&path)?;
                tracing::info!(file = %path.display(), "Deleted a rotated file beyond keep_files.");
            }
        }
        Ok(())
    }
}

/// `{path}.{stamp}-{sequence:06}`: sorts by age.
fn rotated_name(path: &Path, stamp: &str, sequence: u64) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{stamp}-{sequence:06}"));
    PathBuf::from(name)
}

/// The rotated files of `path`, in no order.
pub(crate) fn rotated_files(path: &Path) -> io::Result<Vec<PathBuf>> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let Some(base) = path.file_name().and_then(|n| n.to_str()) else {
        return Ok(Vec::new());
    };
    let prefix = format!("{base}.");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        // `{base}.YYYYMMDDTHHMMSSZ-NNNNNN`
        let rest = name.strip_prefix(&prefix).unwrap_or_default();
        if rest.len() == 23 && rest.as_bytes()[8] == b'T' && rest.as_bytes()[15] == b'Z' {
            out.push(entry.path());
        }
    }
    Ok(out)
}

impl Output {
    /// Writes a batch of lines and makes it as durable as configured.
    fn write_batch(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Self::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(bytes)?;
                out.flush()
            }
            Self::File(out) => {
                out.file.write_all(bytes)?;
                out.size += bytes.len() as u64;
                if out.fsync == FsyncPolicy::Always {
                    out.file.sync_data()?;
                }
                Ok(())
            }
        }
    }

    /// Makes everything written durable (on close).
    fn sync(&mut self) -> io::Result<()> {
        match self {
            Self::Stdout => io::stdout().lock().flush(),
            Self::File(out) => out.file.sync_data(),
        }
    }
}

/// A JSON Lines sink: `stdout` or `file`.
pub struct LineSink {
    /// `stdout` or `file`.
    kind: &'static str,
    shared: Arc<Shared>,
}

impl LineSink {
    /// A sink writing to standard output.
    #[must_use]
    pub fn stdout(name: &str) -> Self {
        Self::start(name, "stdout", Output::Stdout, false)
    }

    /// A sink appending to `config.path`, creating it (and its parent directories) if
    /// needed, rotating it as configured.
    ///
    /// # Errors
    ///
    /// [`Error::SinkFile`] when the file cannot be opened for appending.
    pub fn file(name: &str, config: &FileSinkConfig) -> Result<Self> {
        let path = &config.path;
        let opened = open_append(path).and_then(|file| {
            let size = file.metadata()?.len();
            Ok((file, size))
        });
        let (file, size) = opened.map_err(|source| Error::SinkFile {
            name: name.to_owned(),
            path: path.clone(),
            source,
        })?;
        Ok(Self::start(
            name,
            "file",
            Output::File(FileOutput {
                path: path.clone(),
                file,
                fsync: config.fsync,
                size,
                rotate_bytes: config.rotate_bytes,
                keep_files: config.keep_files,
                sequence: 0,
            }),
            config.fsync == FsyncPolicy::Never,
        ))
    }

    fn start(name: &str, kind: &'static str, output: Output, inline: bool) -> Self {
        Self {
            kind,
            shared: Arc::new(Shared {
                name: name.to_owned(),
                pending: Mutex::new(Pending::default()),
                output: Mutex::new(output),
                healthy: AtomicBool::new(true),
                idle: Notify::new(),
                inline,
            }),
        }
    }
}

fn closed() -> SinkError {
    SinkError::retryable(FailureReason::Unavailable, "sink is closed")
}

impl Sink for LineSink {
    fn name(&self) -> &str {
        &self.shared.name
    }

    fn kind(&self) -> &'static str {
        self.kind
    }

    fn publish<'a>(&'a self, message: &'a Message) -> PublishFuture<'a> {
        Box::pin(async move {
            let (done, answer) = oneshot::channel();
            let start = {
                let mut pending = self.shared.pending();
                if pending.closed {
                    return Err(closed());
                }
                message
                    .envelope
                    .write_structured_json(&mut pending.bytes, message.dead_letter.as_ref());
                pending.bytes.push(b'\n');
                pending.acks.push(done);
                !std::mem::replace(&mut pending.committing, true)
            };
            if start {
                // Its own task: a publisher that gives up (deadline) must not stop a commit
                // that answers the others.
                tokio::spawn(commit(Arc::clone(&self.shared)));
            }
            answer.await.map_err(|_| closed())?
        })
    }

    fn is_healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::Relaxed) && !self.shared.pending().closed
    }

    fn close(&self) -> PublishFuture<'_> {
        Box::pin(async move {
            if std::mem::replace(&mut self.shared.pending().closed, true) {
                return Ok(());
            }
            // The running commit writes what is pending; wait for it to end (bounded: a commit
            // task the runtime dropped unpolled would never say so).
            let until = tokio::time::Instant::now() + CLOSE_WAIT;
            loop {
                let idle = self.shared.idle.notified();
                if !self.shared.pending().committing {
                    break;
                }
                if tokio::time::timeout_at(until, idle).await.is_err() {
                    tracing::warn!(sink = %self.shared.name, "A write was still running when the sink closed; its lines stay unacknowledged.");
                    break;
                }
            }
            let shared = Arc::clone(&self.shared);
            let synced = tokio::task::spawn_blocking(move || {
                shared
                    .output
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .sync()
            })
            .await;
            match synced {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(SinkError::retryable(
                    FailureReason::Unavailable,
                    format!("sync on close failed: {e}"),
                )),
                Err(e) => Err(SinkError::retryable(
                    FailureReason::Unavailable,
                    format!("sync on close failed: {e}"),
                )),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashSet, sync::Arc};

    use bytes::Bytes;
    use time::OffsetDateTime;
    use vodbridge_core::{Envelope, Ingress, Message};
    use vodbridge_tencent::{Normalizer, RawEvent};

    use super::*;

    fn message(n: usize) -> Message {
        let body = Bytes::from(format!(
            r#"{{"EventType":"NewFileUpload","FileUploadEvent":{{"FileId":"{n}"}}}}"#
        ));
        let event = RawEvent::parse(&body).expect("parses");
        let envelope: Envelope = Normalizer::new("/tencentcloud/vod/1", Some(1), Ingress::Push)
            .normalize(event, OffsetDateTime::now_utc())
            .expect("normalizes");
        Message {
            destination: "vod.NewFileUpload".into(),
            envelope: Arc::new(envelope),
            dead_letter: None,
        }
    }

    fn config(path: PathBuf, fsync: FsyncPolicy) -> FileSinkConfig {
        FileSinkConfig {
            path,
            fsync,
            rotate_bytes: None,
            keep_files: None,
        }
    }

    /// Concurrent publishers share commits, yet every acknowledged line is in the file once,
    /// whole, for both fsync policies; a publish after close is refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_publishes_are_each_written_once_before_their_answer() {
        for fsync in [FsyncPolicy::Never, FsyncPolicy::Always] {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("events.jsonl");
            let sink =
                Arc::new(LineSink::file("out", &config(path.clone(), fsync)).expect("opens"));
            let tasks: Vec<_> = (0..400)
                .map(|n| {
                    let sink = Arc::clone(&sink);
                    tokio::spawn(async move {
                        let message = message(n);
                        sink.publish(&message).await.expect("written");
                        message.envelope.id.as_str().to_owned()
                    })
                })
                .collect();
            let mut ids = HashSet::new();
            for task in tasks {
                ids.insert(task.await.expect("task"));
            }
            sink.close().await.expect("closes");
            assert!(sink.publish(&message(9999)).await.is_err(), "closed");
            let text = std::fs::read_to_string(&path).expect("file");
            let lines: Vec<&str> = text.lines().collect();
            assert_eq!(lines.len(), 400, "{fsync:?}");
            let written: HashSet<String> = lines
                .iter()
                .map(|line| {
                    Envelope::from_structured_json(line.as_bytes())
                        .expect("a whole envelope per line")
                        .id
                        .as_str()
                        .to_owned()
                })
                .collect();
            assert_eq!(written, ids, "{fsync:?}");
        }
    }

    /// An answer comes only after the line reached the file: read right after each
    /// acknowledgement, the file holds it.
    #[tokio::test]
    async fn an_acknowledged_line_is_already_in_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("events.jsonl");
        let sink = LineSink::file("out", &config(path.clone(), FsyncPolicy::Never)).expect("opens");
        for n in 0..20 {
            let message = message(n);
            sink.publish(&message).await.expect("written");
            let text = std::fs::read_to_string(&path).expect("file");
            assert!(
                text.contains(message.envelope.id.as_str()),
                "line {n} acknowledged before it was written"
            );
        }
    }

    /// A failing write answers every waiting publisher with a retryable error and marks the
    /// sink unhealthy; the sink keeps taking publishes (and fails them) instead of hanging.
    #[tokio::test]
    async fn a_failed_write_is_retryable_and_unhealthy() {
        let sink = LineSink::file("out", &config("/dev/full".into(), FsyncPolicy::Never))
            .expect("opens /dev/full");
        for n in 0..3 {
            let error = sink.publish(&message(n)).await.expect_err("ENOSPC");
            assert!(error.is_retryable(), "{error:?}");
            assert!(!sink.is_healthy());
        }
    }
}
