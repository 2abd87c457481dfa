//! `vodbridge redrive`: dead-lettered events back through the current routes, from the file
//! sink's JSON Lines (rotated files included) or a broker's dead-letter destination (a Kafka
//! topic, an AMQP queue, a NATS JetStream stream), with filters and a dry run.
//!
//! Events keep their id, so consumers' duplicate checks still work. The routes are used
//! without the dead-letter destination: an event that fails again is left where it was (the
//! broker message is not acknowledged, the file line stays), never lost and never dead-lettered
//! a second time.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use futures_util::future::BoxFuture;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use time::OffsetDateTime;
use tokio::time::Instant;
use vodbridge_core::{
    Background, DeadLetterInfo, Envelope, EventTypePattern, FailureReason, Outcome, Pipeline,
    RedriveMessage, RedriveTarget, Resolution, RouteContext,
};

use crate::{
    config::{Settings, SinkConfig},
    error::{Error, Result},
    sinks,
};

/// Where dead-lettered events are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// The file sink's JSON Lines file; its rotated files (`{path}.{stamp}-{seq}`) too.
    File(PathBuf),
    /// A Kafka topic, read with the connection settings of a configured Kafka sink.
    Kafka {
        /// Configured sink whose brokers and properties are used.
        sink: String,
        /// The topic.
        topic: String,
    },
    /// An AMQP queue, read with the connection of a configured AMQP sink.
    Amqp {
        /// Configured sink whose URL and TLS settings are used.
        sink: String,
        /// The queue.
        queue: String,
    },
    /// A NATS JetStream stream (optionally one subject filter), read with the connection of a
    /// configured NATS sink.
    Nats {
        /// Configured sink whose URL and credentials are used.
        sink: String,
        /// The stream.
        stream: String,
        /// Only messages of this subject (wildcards allowed).
        subject: Option<String>,
    },
}

impl Location {
    /// Reads `file:PATH`, `kafka:TOPIC`, `amqp:QUEUE` or `nats:STREAM[/SUBJECT]`; the broker
    /// forms need the sink whose connection they use.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for another form, or a broker form without `sink`.
    pub fn parse(text: &str, sink: Option<&str>) -> Result<Self> {
        let (kind, rest) = text.split_once(':').ok_or_else(|| {
            Error::Config(format!(
                "--from {text:?}: expected file:PATH, kafka:TOPIC, amqp:QUEUE or nats:STREAM[/SUBJECT]"
            ))
        })?;
        if rest.is_empty() {
            return Err(Error::Config(format!(
                "--from {text:?}: nothing after {kind}:"
            )));
        }
        let sink = || {
            sink.map(str::to_owned).ok_or_else(|| {
                Error::Config(format!(
                    "--from {kind}:... needs --sink NAME: the configured {kind} sink whose connection to use"
                ))
            })
        };
        Ok(match kind {
            "file" => Self::File(PathBuf::from(rest)),
            "kafka" => Self::Kafka {
                sink: sink()?,
                topic: rest.to_owned(),
            },
            "amqp" => Self::Amqp {
                sink: sink()?,
                queue: rest.to_owned(),
            },
            "nats" => {
                let (stream, subject) = match rest.split_once('/') {
                    Some((stream, subject)) => (stream, Some(subject.to_owned())),
                    None => (rest, None),
                };
                Self::Nats {
                    sink: sink()?,
                    stream: stream.to_owned(),
                    subject,
                }
            }
            other => {
                return Err(Error::Config(format!(
                    "--from {other}:...: unknown kind; expected file, kafka, amqp or nats"
                )))
            }
        })
    }
}

/// Which dead-lettered events to redrive; an empty list matches everything.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    /// Dead-letter reasons (`unroutable`, `too_large`, ...).
    pub reasons: Vec<FailureReason>,
    /// Event type patterns (`NewFileUpload`, `Procedure*`, `*`).
    pub event_types: Vec<EventTypePattern>,
    /// Sources: a configured source's name or a CloudEvents `source`.
    pub sources: Vec<String>,
    /// Only events whose CloudEvents `time` is at or after this.
    pub since: Option<OffsetDateTime>,
    /// Only events whose CloudEvents `time` is before this.
    pub until: Option<OffsetDateTime>,
}

impl Filters {
    fn matches(
        &self,
        envelope: &Envelope,
        dead_letter: Option<&DeadLetterInfo>,
        source: &str,
    ) -> bool {
        let reason = dead_letter.map(|d| d.reason);
        (self.reasons.is_empty() || reason.is_some_and(|r| self.reasons.contains(&r)))
            && (self.event_types.is_empty()
                || self.event_types.iter().any(|p| {
                    p.matches(
                        &envelope.event_type,
                        vodbridge_tencent::catalog::is_known(&envelope.event_type),
                    )
                }))
            && (self.sources.is_empty()
                || self
                    .sources
                    .iter()
                    .any(|s| s == source || *s == envelope.source))
            && self.since.is_none_or(|t| envelope.time >= t)
            && self.until.is_none_or(|t| envelope.time < t)
    }
}

/// What a redrive did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Published again (dry run: would be), and acknowledged at the source.
    pub redriven: u64,
    /// Acknowledged because the current routes drop their event type.
    pub dropped: u64,
    /// Not matching the filters (or past `--limit`); left where they are.
    pub skipped: u64,
    /// Failed again; left where they are.
    pub failed: u64,
    /// Not an envelope at all; left where they are.
    pub undecodable: u64,
    /// Failures by reason.
    pub failures: BTreeMap<String, u64>,
}

impl Summary {
    /// One line per count, for the terminal.
    #[must_use]
    pub fn render(&self, dry_run: bool) -> String {
        let mut out = String::new();
        let verb = if dry_run {
            "would be redriven"
        } else {
            "redriven"
        };
        let _ = writeln!(out, "{} {verb}", self.redriven);
        if self.dropped > 0 {
            let _ = writeln!(out, "{} dropped by the current routes", self.dropped);
        }
        let _ = writeln!(out, "{} skipped (filters, limit)", self.skipped);
        let _ = write!(out, "{} failed and left where they were", self.failed);
        if !self.failures.is_empty() {
            let reasons: Vec<String> = self
                .failures
                .iter()
                .map(|(r, n)| format!("{r}: {n}"))
                .collect();
            let _ = write!(out, " ({})", reasons.join(", "));
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{} not envelopes, left where they were",
            self.undecodable
        );
        out
    }
}

/// How a redrive runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the dead letters are.
    pub from: Location,
    /// Which to take.
    pub filters: Filters,
    /// Print what would go where; publish and acknowledge nothing.
    pub dry_run: bool,
    /// Stop after this many matching events.
    pub limit: Option<u64>,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
}

/// Publishes what a reader offers through the routes (without the dead letter).
struct Redriver {
    pipeline: Pipeline,
    settings_sources: Vec<(String, String)>,
    filters: Filters,
    dry_run: bool,
    limit: Option<u64>,
    publish_timeout: Duration,
    summary: Summary,
    progress: ProgressBar,
}

impl Redriver {
    /// The configured source an envelope came from (its CloudEvents `source`), for filters
    /// and `{source}` in destinations.
    fn source_of(&self, envelope: &Envelope) -> String {
        self.settings_sources
            .iter()
            .find(|(_, ce)| *ce == envelope.source)
            .map_or_else(|| "redrive".to_owned(), |(name, _)| name.clone())
    }

    fn taken(&self) -> u64 {
        self.summary.redriven + self.summary.dropped + self.summary.failed
    }

    async fn handle(&mut self, message: RedriveMessage) -> bool {
        self.progress.inc(1);
        let (envelope, dead_letter) = match message {
            Ok(decoded) => decoded,
            Err(why) => {
                self.summary.undecodable += 1;
                self.progress
                    .suspend(|| tracing::warn!(error = %why, "Not an envelope; left where it is."));
                return false;
            }
        };
        let source = self.source_of(&envelope);
        if self.limit.is_some_and(|limit| self.taken() >= limit)
            || !self
                .filters
                .matches(&envelope, dead_letter.as_ref(), &source)
        {
            self.summary.skipped += 1;
            return false;
        }
        let context = RouteContext { source: &source };
        if self.dry_run {
            let plan = match self.pipeline.routes().resolve(&envelope.event_type) {
                Resolution::Drop(_) => "dropped by the routes".to_owned(),
                Resolution::NoRoute => "no route: would fail".to_owned(),
                Resolution::Publish(_, targets) => targets
                    .iter()
                    .map(|t| format!("{}:{}", t.sink, t.destination.render(&envelope, &context)))
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            let reason = dead_letter.map_or("-", |d| d.reason.as_str());
            self.progress.suspend(|| {
                println!(
                    "{} {} (dead letter: {reason}) -> {plan}",
                    envelope.id, envelope.event_type
                );
            });
            self.summary.redriven += 1;
            return false;
        }
        let id = envelope.id.clone();
        let report = self
            .pipeline
            .deliver(
                Arc::new(envelope),
                context,
                Instant::now() + self.publish_timeout,
            )
            .await;
        match &report.outcome {
            Outcome::Delivered => {
                self.summary.redriven += 1;
                true
            }
            Outcome::Dropped => {
                self.summary.dropped += 1;
                true
            }
            outcome => {
                self.summary.failed += 1;
                *self
                    .summary
                    .failures
                    .entry(outcome.as_str().to_owned())
                    .or_default() += 1;
                self.progress.suspend(|| {
                    tracing::warn!(event_id = %id, outcome = ?outcome, "Redriving failed; the event is left where it was.");
                });
                false
            }
        }
    }
}

impl RedriveTarget for Redriver {
    fn total(&mut self, messages: u64) {
        self.progress.set_length(messages);
    }

    fn offer(&mut self, message: RedriveMessage) -> BoxFuture<'_, bool> {
        Box::pin(self.handle(message))
    }

    fn is_done(&self) -> bool {
        self.limit.is_some_and(|limit| self.taken() >= limit)
    }
}

/// Runs a redrive with `settings`' sinks and routes (not its dead-letter destination).
///
/// # Errors
///
/// [`Error::Config`] for a `--from` sink that is not configured or of another kind, or a
/// file that cannot be read; [`Error::Sink`] when a sink cannot be opened or reading the
/// broker fails.
pub async fn run(settings: &Settings, options: Options) -> Result<Summary> {
    let background = Background::default();
    let mut built = Vec::with_capacity(settings.sinks.len());
    for (name, config) in &settings.sinks {
        built.push(sinks::build(name, config, background.child())?);
    }
    // No dead-letter destination: a failure leaves the event where it is.
    let pipeline = Pipeline::new(built, settings.routes.clone(), None)
        .map_err(|e| Error::Config(e.to_string()))?
        .with_unroutable_retry(settings.unroutable_retry);
    if !options.dry_run {
        wait_healthy(&pipeline, Duration::from_secs(30)).await;
    }
    let progress = if options.progress {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {pos}/{len} read [{elapsed}] {wide_bar} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut redriver = Redriver {
        pipeline,
        settings_sources: settings
            .sources
            .iter()
            .map(|(name, s)| (name.clone(), s.normalizer.source().to_owned()))
            .collect(),
        filters: options.filters,
        dry_run: options.dry_run,
        limit: options.limit,
        publish_timeout: settings.publish_timeout(),
        summary: Summary::default(),
        progress,
    };
    let read = read(settings, &options.from, &mut redriver).await;
    redriver.progress.finish_and_clear();
    for closed in redriver.pipeline.close(Duration::from_secs(15)).await {
        if let Err(error) = closed.result {
            tracing::warn!(sink = %closed.sink, error = %error, "Closing sink failed.");
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), background.stop()).await;
    read?;
    Ok(redriver.summary)
}

async fn wait_healthy(pipeline: &Pipeline, within: Duration) {
    let until = Instant::now() + within;
    while !pipeline.is_healthy() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn sink_config<'a>(settings: &'a Settings, name: &str) -> Result<&'a SinkConfig> {
    settings.sinks.get(name).ok_or_else(|| {
        Error::Config(format!(
            "--sink {name:?}: no such sink in the configuration (it gives the connection to read with)"
        ))
    })
}

async fn read(settings: &Settings, from: &Location, target: &mut Redriver) -> Result<()> {
    let broker = |name: &str, source: Box<dyn std::error::Error + Send + Sync>| Error::Sink {
        name: name.to_owned(),
        source,
    };
    match from {
        Location::File(path) => read_files(path, target).await,
        Location::Kafka { sink, topic } => match sink_config(settings, sink)? {
            SinkConfig::Kafka(config) => vodbridge_kafka::redrive(sink, config, topic, target)
                .await
                .map_err(|e| broker(sink, e.into())),
            _ => Err(wrong_kind(sink, "kafka")),
        },
        Location::Amqp { sink, queue } => match sink_config(settings, sink)? {
            SinkConfig::Amqp(config) => vodbridge_amqp::redrive(sink, config, queue, target)
                .await
                .map_err(|e| broker(sink, e.into())),
            _ => Err(wrong_kind(sink, "amqp")),
        },
        Location::Nats {
            sink,
            stream,
            subject,
        } => match sink_config(settings, sink)? {
            SinkConfig::Nats(config) => {
                let from = match subject {
                    Some(subject) => format!("{stream}/{subject}"),
                    None => stream.clone(),
                };
                vodbridge_nats::redrive(sink, config, &from, target)
                    .await
                    .map_err(|e| broker(sink, e.into()))
            }
            _ => Err(wrong_kind(sink, "nats")),
        },
    }
}

fn wrong_kind(sink: &str, kind: &str) -> Error {
    Error::Config(format!("--sink {sink:?} is not a {kind} sink"))
}

/// The file and its rotated files, oldest first (rotated names sort by age; the live file is
/// the newest).
fn files_of(path: &Path) -> Result<Vec<PathBuf>> {
    let mut files = sinks::rotated_files(path)
        .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
    files.sort();
    if path.exists() {
        files.push(path.to_owned());
    }
    if files.is_empty() {
        return Err(Error::Config(format!("{}: no such file", path.display())));
    }
    Ok(files)
}

/// Offers every line of the files. A file is a log: nothing is removed from it (a redriven
/// line stays; run with filters, or move the file aside, to redrive once).
async fn read_files(path: &Path, target: &mut Redriver) -> Result<()> {
    let files = files_of(path)?;
    let mut lines = Vec::new();
    for file in &files {
        let reader = std::fs::File::open(file)
            .map(BufReader::new)
            .map_err(|e| Error::Config(format!("{}: {e}", file.display())))?;
        for line in reader.split(b'\n') {
            let line = line.map_err(|e| Error::Config(format!("{}: {e}", file.display())))?;
            if !line.iter().all(u8::is_ascii_whitespace) {
                lines.push(line);
            }
        }
    }
    target.total(lines.len() as u64);
    for line in lines {
        if target.is_done() {
            break;
        }
        let message =
            Envelope::from_structured_json_with_dead_letter(&line).map_err(|e| e.to_string());
        target.offer(message).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use vodbridge_core::Ingress;
    use vodbridge_tencent::{Normalizer, RawEvent};

    use super::*;

    #[test]
    fn from_reads_every_kind_and_names_what_is_missing() {
        assert_eq!(
            Location::parse("file:/var/lib/dead.jsonl", None).expect("file"),
            Location::File("/var/lib/dead.jsonl".into())
        );
        assert_eq!(
            Location::parse("nats:DEAD/dead.>", Some("nats")).expect("nats"),
            Location::Nats {
                sink: "nats".into(),
                stream: "DEAD".into(),
                subject: Some("dead.>".into()),
            }
        );
        assert_eq!(
            Location::parse("kafka:vod.dead", Some("k")).expect("kafka"),
            Location::Kafka {
                sink: "k".into(),
                topic: "vod.dead".into(),
            }
        );
        for (bad, words) in [
            ("amqp:dead", "needs --sink"),
            ("s3:bucket", "unknown kind"),
            ("dead.jsonl", "expected file:PATH"),
            ("file:", "nothing after"),
        ] {
            let error = Location::parse(bad, None).expect_err(bad).to_string();
            assert!(error.contains(words), "{bad}: {error}");
        }
    }

    #[test]
    fn filters_must_all_match() {
        let body = Bytes::from_static(
            br#"{"EventType":"NewFileUpload","FileUploadEvent":{"FileId":"1","MediaBasicInfo":{"CreateTime":"2026-11-30T10:00:00Z"}}}"#,
        );
        let envelope = Normalizer::new("/tencentcloud/vod/7", Some(7), Ingress::Pull)
            .normalize(
                RawEvent::parse(&body).expect("parses"),
                OffsetDateTime::now_utc(),
            )
            .expect("normalizes");
        let dead = DeadLetterInfo {
            reason: FailureReason::Unroutable,
            detail: String::new(),
            failed_sink: String::new(),
            failed_destination: String::new(),
        };
        let at = |text: &str| {
            OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .expect("time")
        };
        let all = Filters::default();
        assert!(all.matches(&envelope, None, "app"), "no filter: everything");
        let cases = [
            (
                Filters {
                    reasons: vec![FailureReason::Unroutable],
                    ..Filters::default()
                },
                true,
            ),
            (
                Filters {
                    reasons: vec![FailureReason::TooLarge],
                    ..Filters::default()
                },
                false,
            ),
            (
                Filters {
                    event_types: vec![EventTypePattern::parse("New*").expect("pattern")],
                    ..Filters::default()
                },
                true,
            ),
            (
                Filters {
                    event_types: vec![EventTypePattern::parse("@unknown").expect("pattern")],
                    ..Filters::default()
                },
                false,
            ),
            (
                Filters {
                    sources: vec!["app".into()],
                    ..Filters::default()
                },
                true,
            ),
            (
                Filters {
                    sources: vec!["/tencentcloud/vod/7".into()],
                    ..Filters::default()
                },
                true,
            ),
            (
                Filters {
                    sources: vec!["other".into()],
                    ..Filters::default()
                },
                false,
            ),
            (
                Filters {
                    since: Some(at("2026-11-30T00:00:00Z")),
                    ..Filters::default()
                },
                true,
            ),
            (
                Filters {
                    until: Some(at("2026-11-30T10:00:00Z")),
                    ..Filters::default()
                },
                false,
            ),
            (
                Filters {
                    reasons: vec![FailureReason::Unroutable],
                    sources: vec!["other".into()],
                    ..Filters::default()
                },
                false,
            ),
        ];
        for (i, (filters, expected)) in cases.iter().enumerate() {
            assert_eq!(
                filters.matches(&envelope, Some(&dead), "app"),
                *expected,
                "case {i}: {filters:?}"
            );
        }
        let by_reason = Filters {
            reasons: vec![FailureReason::Unroutable],
            ..Filters::default()
        };
        assert!(
            !by_reason.matches(&envelope, None, "app"),
            "a reason filter takes only dead letters"
        );
    }
}
