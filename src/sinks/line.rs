//! The JSON Lines sinks (`stdout`, `file`): one structured-mode CloudEvent per line, written by a
//! dedicated thread that group-commits and acknowledges each line only after it is written
//! (and fsynced, for `fsync = "always"`).

use std::{
    fs::{File, OpenOptions},
    io::{self, BufWriter, Write},
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
};

use tokio::sync::{mpsc, oneshot};
use vodbridge_core::{FailureReason, Message, PublishFuture, Sink, SinkError};

use crate::{
    config::FsyncPolicy,
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
    File {
        file: BufWriter<File>,
        fsync: FsyncPolicy,
    },
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
            Self::File { file, fsync } => {
                for line in lines {
                    file.write_all(line)?;
                }
                file.flush()?;
                if *fsync == FsyncPolicy::Always {
                    file.get_ref().sync_data()?;
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

    /// A sink appending to `path`, creating it (and its parent directories) if needed.
    ///
    /// # Errors
    ///
    /// [`Error::Sink`] when the file cannot be opened for appending.
    pub fn file(name: &str, path: &Path, fsync: FsyncPolicy) -> Result<Self> {
        let open = || -> io::Result<File> {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)?;
            }
            OpenOptions::new().create(true).append(true).open(path)
        };
        let file = open().map_err(|e| Error::Sink {
            name: name.to_owned(),
            reason: format!("{}: {e}", path.display()),
        })?;
        Ok(Self::start(
            name,
            "file",
            Output::File {
                file: BufWriter::with_capacity(256 * 1024, file),
                fsync,
            },
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
            let dead_letter = message
                .dead_letter
                .as_ref()
                .map(|d| (d.reason.as_str(), d.detail.as_str()));
            let mut line = message.envelope.to_structured_json(dead_letter);
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
