//! The JSON Lines sinks (`stdout`, `file`): one structured-mode CloudEvent per line, written by a
//! dedicated thread that group-commits and acknowledges each line only after it is written
//! (and fsynced, for `fsync = "always"`).

use std::{
    fs::{File, OpenOptions},
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
};

use tokio::sync::{mpsc, oneshot};
use vodbridge_core::{FailureReason, Message, PublishFuture, Sink, SinkError};

use crate::{
    config::{FileSinkConfig, FsyncPolicy},
    error::{Error, Result},
};

/// Lines waiting for the writer; publishers wait (bounded by their deadline) when it is full.
const QUEUE_CAPACITY: usize = 4096;
/// Most lines written under one flush/fsync.
const MAX_BATCH: usize = 512;

/// Answers one publisher once its line is written (or the write failed).
type Ack = oneshot::Sender<Result<(), SinkError>>;

/// A request to the writer thread.
enum Job {
    /// Write this line and answer when it is durable as configured.
    Line {
        line: Vec<u8>,
        done: oneshot::Sender<Result<(), SinkError>>,
    },
    /// Flush, sync and stop; answer when done.
    Close {
        done: oneshot::Sender<Result<(), SinkError>>,
    },
}

/// Where the writer thread writes.
enum Output {
    Stdout,
    File(FileOutput),
}

/// The file sink's current file and its rotation.
struct FileOutput {
    path: PathBuf,
    file: BufWriter<File>,
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
        self.file.flush()?;
        self.file.get_ref().sync_all()?;
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
        self.file = BufWriter::with_capacity(256 * 1024, open_append(&self.path)?);
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
fn rotated_files(path: &Path) -> io::Result<Vec<PathBuf>> {
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
    /// Writes a batch and makes it as durable as configured.
    fn write_batch(&mut self, lines: &[&[u8]]) -> io::Result<()> {
        match self {
            Self::Stdout => {
                let mut out = io::stdout().lock();
                for line in lines {
                    out.write_all(line)?;
                }
                out.flush()
            }
            Self::File(out) => {
                for line in lines {
                    out.file.write_all(line)?;
                    out.size += line.len() as u64;
                }
                out.file.flush()?;
                if out.fsync == FsyncPolicy::Always {
                    out.file.get_ref().sync_data()?;
                }
                Ok(())
            }
        }
    }
}

/// A JSON Lines sink: `stdout` or `file`.
pub struct LineSink {
    /// Configured name.
    name: String,
    /// `stdout` or `file`.
    kind: &'static str,
    /// Queue to the writer thread; `None` after close.
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    /// False after a write error until a write succeeds again.
    healthy: Arc<AtomicBool>,
    /// The writer thread, joined on close.
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl LineSink {
    /// A sink writing to standard output.
    #[must_use]
    pub fn stdout(name: &str) -> Self {
        Self::start(name, "stdout", Output::Stdout)
    }

    /// A sink appending to `config.path`, creating it (and its parent directories) if
    /// needed, rotating it as configured.
    ///
    /// # Errors
    ///
    /// [`Error::Sink`] when the file cannot be opened for appending.
    pub fn file(name: &str, config: &FileSinkConfig) -> Result<Self> {
        let path = &config.path;
        let opened = open_append(path).and_then(|file| {
            let size = file.metadata()?.len();
            Ok((file, size))
        });
        let (file, size) = opened.map_err(|e| Error::Sink {
            name: name.to_owned(),
            reason: format!("{}: {e}", path.display()),
        })?;
        Ok(Self::start(
            name,
            "file",
            Output::File(FileOutput {
                path: path.clone(),
                file: BufWriter::with_capacity(256 * 1024, file),
                fsync: config.fsync,
                size,
                rotate_bytes: config.rotate_bytes,
                keep_files: config.keep_files,
                sequence: 0,
            }),
        ))
    }

    fn start(name: &str, kind: &'static str, output: Output) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let healthy = Arc::new(AtomicBool::new(true));
        let writer = {
            let healthy = Arc::clone(&healthy);
            let name = name.to_owned();
            std::thread::Builder::new()
                .name(format!("sink-{name}"))
                .spawn(move || run_writer(&name, output, rx, &healthy))
                .ok()
        };
        if writer.is_none() {
            healthy.store(false, Ordering::Relaxed);
        }
        Self {
            name: name.to_owned(),
            kind,
            jobs: Mutex::new(Some(tx)),
            healthy,
            writer: Mutex::new(writer),
        }
    }

    fn sender(&self) -> Option<mpsc::Sender<Job>> {
        self.jobs.lock().ok().and_then(|jobs| jobs.clone())
    }
}

fn closed() -> SinkError {
    SinkError::retryable(FailureReason::Unavailable, "sink is closed")
}

/// The writer thread: take what is queued (up to [`MAX_BATCH`]), write it in one go, then answer
/// every line of the batch.
fn run_writer(name: &str, mut output: Output, mut rx: mpsc::Receiver<Job>, healthy: &AtomicBool) {
    let mut batch: Vec<(Vec<u8>, Ack)> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        let mut close = None;
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Line { line, done } => batch.push((line, done)),
                Job::Close { done } => {
                    close = Some(done);
                    break;
                }
            }
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            let lines: Vec<&[u8]> = batch.iter().map(|(line, _)| line.as_slice()).collect();
            let result = output.write_batch(&lines).map_err(|e| {
                tracing::error!(sink = name, error = %e, "Writing events failed; they will be retried.");
                SinkError::retryable(FailureReason::Unavailable, format!("write failed: {e}"))
            });
            healthy.store(result.is_ok(), Ordering::Relaxed);
            for (_, done) in batch.drain(..) {
                // The publisher may have given up (deadline); its event is then not acknowledged.
                let _ = done.send(result.clone());
            }
            // The batch is acknowledged; a failed rotation only delays it to the next batch.
            if let (Ok(()), Output::File(out)) = (&result, &mut output) {
                if let Err(e) = out.rotate_if_full() {
                    tracing::error!(sink = name, error = %e, "Rotating the file failed; writing on to the current one.");
                }
            }
        }
        if let Some(done) = close {
            let _ = done.send(Ok(()));
            break;
        }
    }
    rx.close();
}

impl Sink for LineSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        self.kind
    }

    fn publish<'a>(&'a self, message: &'a Message) -> PublishFuture<'a> {
        Box::pin(async move {
            let mut line = message
                .envelope
                .to_structured_json(message.dead_letter.as_ref());
            line.push(b'\n');
            let (done, answer) = oneshot::channel();
            let jobs = self.sender().ok_or_else(closed)?;
            jobs.send(Job::Line { line, done })
                .await
                .map_err(|_| closed())?;
            answer.await.map_err(|_| closed())?
        })
    }

    fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && self.sender().is_some()
    }

    fn close(&self) -> PublishFuture<'_> {
        Box::pin(async move {
            let Some(jobs) = self.jobs.lock().ok().and_then(|mut jobs| jobs.take()) else {
                return Ok(());
            };
            let (done, answer) = oneshot::channel();
            if jobs.send(Job::Close { done }).await.is_ok() {
                let _ = answer.await;
            }
            let writer = self.writer.lock().ok().and_then(|mut w| w.take());
            if let Some(writer) = writer {
                let _ = tokio::task::spawn_blocking(move || writer.join()).await;
            }
            Ok(())
        })
    }
}
