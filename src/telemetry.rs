//! Telemetry: the Prometheus metric families of design.md §5 and the `tracing` log setup.

use std::io::IsTerminal;

use prometheus::{
    CounterVec, Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use tracing_subscriber::{fmt, EnvFilter};
use vodbridge_core::{
    BreakerState, DeliveryReport, DropReason, Envelope, FailureReason, LaneObserver, Outcome,
    Pipeline, SinkAttempt,
};
use vodbridge_tencent::{
    catalog,
    governor::{Action, Governor},
};

use crate::{
    config::{LogFormat, OtlpConfig, TelemetryConfig},
    error::{Error, Result},
};

/// Declares [`Metrics`] from one table: each family's field (with its doc), its kind, its name
/// without the `vodbridge_` prefix, its help and labels (and buckets). `Metrics::new` registers
/// them all, in the table's order.
macro_rules! metric_families {
    ($(
        $(#[doc = $doc:literal])*
        $field:ident: $kind:ident($name:literal, $help:literal $(, $labels:expr)? $(, $buckets:ident)?);
    )*) => {
        /// Every metric the service exports, registered in its own registry (one per app, so
        /// tests running several apps in one process do not mix their numbers).
        pub struct Metrics {
            registry: Registry,
            /// Names of every registered family, for checks against dashboards and alert rules.
            names: Vec<String>,
            $( $(#[doc = $doc])* pub $field: metric_families!(@type $kind), )*
            /// The shared delivery record's families (`vodbridge_shared_record_*`).
            pub record: RecordMetrics,
        }

        impl Metrics {
            /// Creates and registers every family.
            ///
            /// # Errors
            ///
            /// Only on a duplicate registration, which would be a bug.
            pub fn new() -> Result<Self> {
                let registry = Registry::new();
                let mut names = Vec::new();
                $(
                    let $field = metric_families!(
                        @make $kind, concat!("vodbridge_", $name), $help $(, $labels)? $(, $buckets)?
                    )?;
                    registry.register(Box::new($field.clone()))?;
                    names.push(concat!("vodbridge_", $name).to_owned());
                )*
                let (record, record_names) = RecordMetrics::register(&registry)?;
                names.extend(record_names);
                let metrics = Self { registry, names, $($field,)* record };
                metrics
                    .build_info
                    .with_label_values(&[env!("CARGO_PKG_VERSION")])
                    .set(1);
                Ok(metrics)
            }
        }
    };
    (@type counter) => { IntCounterVec };
    (@type counter_f) => { CounterVec };
    (@type histogram) => { HistogramVec };
    (@type gauge) => { IntGaugeVec };
    (@type gauge_f) => { GaugeVec };
    (@type plain) => { IntGauge };
    (@type plain_f) => { prometheus::Gauge };
    (@make counter, $name:expr, $help:literal, $labels:expr) => {
        IntCounterVec::new(Opts::new($name, $help), $labels)
    };
    (@make counter_f, $name:expr, $help:literal, $labels:expr) => {
        CounterVec::new(Opts::new($name, $help), $labels)
    };
    (@make histogram, $name:expr, $help:literal, $labels:expr, $buckets:ident) => {
        HistogramVec::new(HistogramOpts::new($name, $help).buckets($buckets.to_vec()), $labels)
    };
    (@make gauge, $name:expr, $help:literal, $labels:expr) => {
        IntGaugeVec::new(Opts::new($name, $help), $labels)
    };
    (@make gauge_f, $name:expr, $help:literal, $labels:expr) => {
        GaugeVec::new(Opts::new($name, $help), $labels)
    };
    (@make plain, $name:expr, $help:literal) => {
        IntGauge::new($name, $help)
    };
    (@make plain_f, $name:expr, $help:literal) => {
        prometheus::Gauge::new($name, $help)
    };
}

metric_families! {
    /// `vodbridge_events_received_total{source, ingress, event_type}`.
    events_received: counter("events_received_total", "Events received, by source, ingress and VOD event type (unknown types as `other`).", &["source", "ingress", "event_type"]);
    /// `vodbridge_events_total{source, outcome}`: the merged outcome of each event.
    events_outcome: counter("events_total", "Events by merged delivery outcome.", &["source", "outcome"]);
    /// `vodbridge_published_total{sink}`: acknowledged publishes.
    published: counter("published_total", "Publishes acknowledged by the sink.", &["sink"]);
    /// `vodbridge_publish_failures_total{sink, reason}`.
    publish_failures: counter("publish_failures_total", "Publishes that failed.", &["sink", "reason"]);
    /// `vodbridge_unroutable_retries_total{sink}`: `unroutable` answers tried again (a consumer's
    /// queue or stream is missing, maybe only for a moment).
    unroutable_retries: counter("unroutable_retries_total", "Unroutable answers tried again before counting as permanent.", &["sink"]);
    /// `vodbridge_publish_duration_seconds{sink}`: publish to ack (or failure).
    publish_duration: histogram("publish_duration_seconds", "Time from publish to the sink's answer.", &["sink"], LATENCY_BUCKETS);
    /// `vodbridge_confirmed_total{source}`: events confirmed to VOD (pull) or answered 200 (push).
    confirmed: counter("confirmed_total", "Events acknowledged to VOD (ConfirmEvents, or HTTP 200 on push).", &["source"]);
    /// `vodbridge_confirm_failures_total{source, reason}`.
    confirm_failures: counter("confirm_failures_total", "Failed acknowledgements to VOD.", &["source", "reason"]);
    /// `vodbridge_pull_requests_total{source, result}`.
    pull_requests: counter("pull_requests_total", "PullEvents calls by result.", &["source", "result"]);
    /// `vodbridge_pull_backoff_seconds_total{source, reason}`: time pull loops spent backing off.
    pull_backoff: counter_f("pull_backoff_seconds_total", "Seconds pull loops spent backing off, by reason.", &["source", "reason"]);
    /// `vodbridge_pull_batch_size{source}`.
    pull_batch_size: histogram("pull_batch_size", "Events per PullEvents answer.", &["source"], BATCH_BUCKETS);
    /// `vodbridge_confirm_batch_size{source}`: handles per successful `ConfirmEvents` call (16
    /// is a full call; the account's budget carries 16 × its confirm rate events a second).
    confirm_batch_size: histogram("confirm_batch_size", "Handles per successful ConfirmEvents call.", &["source"], BATCH_BUCKETS);
    /// `vodbridge_vod_api_rate{account, action}`: the calls per second the account's governor
    /// currently allows (the ceiling, cut on throttling, climbing back).
    vod_api_rate: gauge_f("vod_api_rate", "Calls per second the VOD account's request governor currently allows, by action.", &["account", "action"]);
    /// `vodbridge_vod_api_throttled_total{account, action}`: `RequestLimitExceeded` answers.
    vod_api_throttled: counter("vod_api_throttled_total", "RequestLimitExceeded answers from VOD, by account and action.", &["account", "action"]);
    /// `vodbridge_event_age_at_ack_seconds{source, ingress, sink, delivery}`: the event's own
    /// time to each sink's acknowledgement (`delivery`: `required`, or `best_effort` for a
    /// queued target, which acknowledges on its own clock). Events without a usable time are in
    /// `event_age_unknown`.
    event_age_at_ack: histogram("event_age_at_ack_seconds", "Time from the event's own time to a sink's acknowledgement, by sink and delivery (required or best_effort).", &["source", "ingress", "sink", "delivery"], AGE_BUCKETS);
    /// `vodbridge_event_age_unknown_total{source, sink, reason}`: acknowledgements whose age is
    /// not measured: `missing` (VOD's payload has no time; the envelope carries its receipt
    /// time) or `future` (the event's time is ahead of this clock).
    event_age_unknown: counter("event_age_unknown_total", "Acknowledgements whose event age is not measured: the event's time is missing or in the future.", &["source", "sink", "reason"]);
    /// `vodbridge_pull_full_total{source}`: `PullEvents` answers that came back full (16
    /// events): VOD held more. Its rate is the backlog signal the bridge measures itself, with
    /// no lag (the chart's KEDA ScaledObject scales on it).
    pull_full: counter("pull_full_total", "PullEvents answers that came back full (16 events): VOD held more.", &["source"]);
    /// `vodbridge_vod_backlog{source}`: events waiting in VOD's queue (`DescribeEventsState`,
    /// approximate, about 3 minutes behind).
    vod_backlog: gauge("vod_backlog", "Events waiting in VOD's reliable-callback queue (DescribeEventsState, approximate, about 3 minutes behind).", &["source"]);
    /// `vodbridge_vod_config_mismatch{source, what}`: 1 while VOD's event configuration of the
    /// source's sub-application differs from what the source needs (`what`: `mode`,
    /// `notification_url`, an event switch, or `check_failed` when it cannot be read); for a
    /// source with `sub_app_ids`, the number of its sub-applications that differ so.
    vod_config_mismatch: gauge("vod_config_mismatch", "VOD's event configuration (mode, NotificationUrl, event switches) differs from what the source needs: 1, or the number of sub-applications that differ for a source with sub_app_ids.", &["source", "what"]);
    /// `vodbridge_sub_app_pulled_total{source, sub_app}`: events pulled per sub-application
    /// (`sub_app` is the id for the first `sub_app_metric_labels` found, then `other`).
    sub_app_pulled: counter("sub_app_pulled_total", "Events pulled, per sub-application (sub_app=\"other\" beyond sub_app_metric_labels).", &["source", "sub_app"]);
    /// `vodbridge_sub_app_confirmed_total{source, sub_app}`: events confirmed per
    /// sub-application.
    sub_app_confirmed: counter("sub_app_confirmed_total", "Events confirmed to VOD, per sub-application (sub_app=\"other\" beyond sub_app_metric_labels).", &["source", "sub_app"]);
    /// `vodbridge_sub_app_pull_full_total{source, sub_app}`: full answers per sub-application
    /// (the sub-application has a backlog).
    sub_app_pull_full: counter("sub_app_pull_full_total", "PullEvents answers that came back full, per sub-application (sub_app=\"other\" beyond sub_app_metric_labels).", &["source", "sub_app"]);
    /// `vodbridge_sub_app_backlog{source, sub_app}`: VOD's count of waiting events per
    /// sub-application (`other` sums the unlabelled ones).
    sub_app_backlog: gauge("sub_app_backlog", "Events waiting in VOD's queue per sub-application (DescribeEventsState, about 3 minutes behind; sub_app=\"other\" sums those beyond sub_app_metric_labels).", &["source", "sub_app"]);
    /// `vodbridge_sub_apps{source, state}`: sub-applications of a source with `sub_app_ids`:
    /// `pulled`, `excluded` (by `exclude_sub_app_ids` or not in the list), `not_on` (VOD lists
    /// them with a status other than On).
    sub_apps: gauge("sub_apps", "Sub-applications of a source with sub_app_ids, by state: pulled, excluded, not_on.", &["source", "state"]);
    /// `vodbridge_sub_app_listings_total{source, result}`: `DescribeSubAppIds` listings, `ok` or
    /// `failed` (the sub-applications already pulled are kept on a failure).
    sub_app_listings: counter("sub_app_listings_total", "DescribeSubAppIds listings of a source with sub_app_ids = \"all\", by result (ok, failed).", &["source", "result"]);
    /// `vodbridge_in_flight{ingress}`: events between receipt and outcome.
    in_flight: gauge("in_flight", "Events received and not yet answered.", &["ingress"]);
    /// `vodbridge_dead_lettered_total{reason}`.
    dead_lettered: counter("dead_lettered_total", "Events sent to the dead-letter destination.", &["reason"]);
    /// `vodbridge_duplicates_suppressed_total{source}`.
    duplicates_suppressed: counter("duplicates_suppressed_total", "Redelivered events confirmed without publishing again.", &["source"]);
    /// `vodbridge_spool_bytes`: logical bytes of the events in the push spool.
    spool_bytes: plain("spool_bytes", "Logical bytes of the events in the push spool.");
    /// `vodbridge_spool_capacity_bytes`: the spool's byte limit (`spool.max_bytes`).
    spool_capacity_bytes: plain("spool_capacity_bytes", "Byte limit of the push spool.");
    /// `vodbridge_spool_events`: events in the push spool, not yet forwarded.
    spool_events: plain("spool_events", "Events in the push spool, not yet forwarded.");
    /// `vodbridge_spool_oldest_age_seconds`: age of the oldest spooled event.
    spool_oldest_age: plain_f("spool_oldest_age_seconds", "Age of the oldest event in the push spool (0 when empty).");
    /// `vodbridge_spool_full_total{source}`: callbacks held because the spool was full.
    spool_full: counter("spool_full_total", "Callbacks held instead of spooled because the spool was full.", &["source"]);
    /// `vodbridge_http_connections`: open HTTP connections (`server.max_connections` caps it).
    http_connections: plain("http_connections", "Open HTTP connections.");
    /// `vodbridge_http_connections_closed_total{reason}`: connections closed by the edge limits
    /// or errors: `header_timeout` (no complete request head in time, idle keep-alive
    /// included), `incomplete`, `error`.
    http_connections_closed: counter("http_connections_closed_total", "HTTP connections closed by the edge limits or errors, by reason.", &["reason"]);
    /// `vodbridge_callback_body_timeouts_total{source}`: callbacks whose body did not arrive in
    /// `server.body_timeout_ms` (answered 408).
    body_timeouts: counter("callback_body_timeouts_total", "Callbacks whose body did not arrive in time (answered 408).", &["source"]);
    /// `vodbridge_push_retries_total{source}`: publishes of held callbacks tried again.
    push_retries: counter("push_retries_total", "Publishes of held callbacks tried again while their sinks could not acknowledge.", &["source"]);
    /// `vodbridge_callback_rejected_total{source, status}`: callbacks refused before publishing.
    callback_rejected: counter("callback_rejected_total", "Callbacks refused before publishing, by HTTP status.", &["source", "status"]);
    /// `vodbridge_sink_up{sink, kind, required}`: 1 while the sink can publish; `required` is
    /// `false` for a sink that is only ever a best-effort target.
    sink_up: gauge("sink_up", "1 while the sink can publish (required=false: only a best-effort target).", &["sink", "kind", "required"]);
    /// `vodbridge_best_effort_queue_depth{sink}`: events a best-effort sink's queue holds
    /// (queued and in flight).
    best_effort_depth: gauge("best_effort_queue_depth", "Events a best-effort sink's queue holds, queued and in flight.", &["sink"]);
    /// `vodbridge_best_effort_queue_capacity{sink}`: the queue's limit.
    best_effort_capacity: gauge("best_effort_queue_capacity", "Events a best-effort sink's queue can hold.", &["sink"]);
    /// `vodbridge_best_effort_queued_total{sink}`: events offered to the queue and taken.
    best_effort_queued: counter("best_effort_queued_total", "Events taken into a best-effort sink's queue.", &["sink"]);
    /// `vodbridge_best_effort_dropped_total{sink, reason}`: events that never reached their
    /// best-effort sink: `queue_full` (and no dead letter), `rejected` (refused and not
    /// dead-lettered), `shutdown` (left in the queue at exit).
    best_effort_dropped: counter("best_effort_dropped_total", "Events that never reached their best-effort sink, by reason.", &["sink", "reason"]);
    /// `vodbridge_best_effort_breaker_state{sink}`: 0 closed, 1 half-open (probing), 2 open.
    best_effort_breaker: gauge("best_effort_breaker_state", "A best-effort sink's circuit breaker: 0 closed, 1 half-open, 2 open.", &["sink"]);
    /// `vodbridge_sink_reconnects_total{sink, kind}`: connections (Kafka: producers) the sink
    /// replaced after a loss, a stall or a stuck error.
    sink_reconnects: counter("sink_reconnects_total", "Broker connections (Kafka: producers) a sink replaced after a loss, a stall or a stuck error.", &["sink", "kind"]);
    /// `vodbridge_sink_in_flight{sink}`: publishes waiting for the sink's acknowledgement.
    sink_in_flight: gauge("sink_in_flight", "Publishes waiting for the sink's acknowledgement.", &["sink"]);
    /// `vodbridge_sink_publishes_skipped_total{sink}`: publishes not repeated because the sink
    /// already acknowledged the event at that destination (it came back because another sink
    /// failed; `delivery.sink_record_capacity`).
    sink_skipped: counter("sink_publishes_skipped_total", "Publishes not repeated because the sink already acknowledged the event at that destination.", &["sink"]);
    /// `vodbridge_ready`: 1 while `/readyz` answers 200.
    ready: plain("ready", "1 while the bridge reports ready.");
    /// `vodbridge_build_info{version}`: always 1.
    build_info: gauge("build_info", "Build information; always 1.", &["version"]);
}

/// The shared delivery record's metric families; empty unless `delivery.shared_record` is set.
#[derive(Clone)]
pub struct RecordMetrics {
    /// `vodbridge_shared_record_lookups_total{result}`: keys read before publishing, by
    /// `hit` (publish skipped), `miss`, `error` (the store failed or was slow: published anyway).
    pub lookups: IntCounterVec,
    /// `vodbridge_shared_record_writes_total{result}`: acknowledged publishes recorded, by `ok`,
    /// `error` (the write failed: a redelivery may publish again) and `dropped` (the write queue
    /// was full).
    pub writes: IntCounterVec,
    /// `vodbridge_shared_record_errors_total{op}`: round trips (`read`, `write`) that failed or
    /// timed out.
    pub errors: IntCounterVec,
    /// `vodbridge_shared_record_round_trip_seconds{op}`: one batch's read or write.
    pub round_trip: HistogramVec,
    /// `vodbridge_shared_record_up{store}`: 1 while the store answered its last round trip.
    pub up: IntGaugeVec,
}

impl RecordMetrics {
    /// Registers the families in `registry`; returns them with their names.
    fn register(registry: &Registry) -> Result<(Self, Vec<String>)> {
        let counter = |name: &str, help: &str, label: &str| -> Result<IntCounterVec> {
            let c = IntCounterVec::new(Opts::new(format!("vodbridge_{name}"), help), &[label])?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let round_trip = HistogramVec::new(
            HistogramOpts::new(
                "vodbridge_shared_record_round_trip_seconds",
                "One batch's read or write of the shared delivery record.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["op"],
        )?;
        registry.register(Box::new(round_trip.clone()))?;
        let up = IntGaugeVec::new(
            Opts::new(
                "vodbridge_shared_record_up",
                "1 while the shared delivery record's store answered its last round trip.",
            ),
            &["store"],
        )?;
        registry.register(Box::new(up.clone()))?;
        let metrics = Self {
            lookups: counter(
                "shared_record_lookups_total",
                "Keys read from the shared delivery record before publishing, by result (hit: publish skipped).",
                "result",
            )?,
            writes: counter(
                "shared_record_writes_total",
                "Acknowledged publishes written to the shared delivery record, by result.",
                "result",
            )?,
            errors: counter(
                "shared_record_errors_total",
                "Round trips to the shared delivery record that failed or timed out (published without it).",
                "op",
            )?,
            round_trip,
            up,
        };
        let names = [
            "lookups_total",
            "writes_total",
            "errors_total",
            "round_trip_seconds",
            "up",
        ]
        .iter()
        .map(|n| format!("vodbridge_shared_record_{n}"))
        .collect();
        Ok((metrics, names))
    }
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const AGE_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0, 345_600.0,
];
const BATCH_BUCKETS: &[f64] = &[0.0, 1.0, 2.0, 4.0, 8.0, 12.0, 16.0];

impl Metrics {
    /// The name of every metric family (histograms without their `_bucket`/`_sum`/`_count`
    /// suffixes).
    #[must_use]
    pub fn family_names(&self) -> &[String] {
        &self.names
    }

    /// Records one delivery: per-sink results and latency, the outcome, dead letters, and the
    /// event's age when it was handled.
    pub fn record_delivery(&self, source: &str, envelope: &Envelope, report: &DeliveryReport) {
        for attempt in &report.attempts {
            let sink = attempt.sink.name();
            if attempt.skipped {
                self.sink_skipped.with_label_values(&[sink]).inc();
                continue;
            }
            // A best-effort target was queued, not published: its queue reports its publishes.
            if attempt.best_effort.is_some() {
                continue;
            }
            self.record_attempt(attempt);
            if attempt.result.is_ok() && report.outcome.is_handled() {
                self.record_age(source, envelope, sink, "required");
            }
        }
        self.events_outcome
            .with_label_values(&[source, report.outcome.as_str()])
            .inc();
        if let Outcome::DeadLettered { reason } = &report.outcome {
            self.dead_lettered
                .with_label_values(&[reason.as_str()])
                .inc();
        }
    }

    /// One publish's duration, result and unroutable retries.
    pub(crate) fn record_attempt(&self, attempt: &SinkAttempt) {
        let sink = attempt.sink.name();
        if attempt.unroutable_retries > 0 {
            self.unroutable_retries
                .with_label_values(&[sink])
                .inc_by(u64::from(attempt.unroutable_retries));
        }
        self.publish_duration
            .with_label_values(&[sink])
            .observe(attempt.elapsed.as_secs_f64());
        match &attempt.result {
            Ok(()) => self.published.with_label_values(&[sink]).inc(),
            Err(e) => self
                .publish_failures
                .with_label_values(&[sink, e.reason().as_str()])
                .inc(),
        }
    }

    /// The event's age at `sink`'s acknowledgement, or why it has none (`missing`, `future`).
    pub(crate) fn record_age(&self, source: &str, envelope: &Envelope, sink: &str, delivery: &str) {
        if !envelope.event_time_known {
            self.event_age_unknown
                .with_label_values(&[source, sink, "missing"])
                .inc();
            return;
        }
        let age = (time::OffsetDateTime::now_utc() - envelope.time).as_seconds_f64();
        if age < 0.0 {
            self.event_age_unknown
                .with_label_values(&[source, sink, "future"])
                .inc();
            return;
        }
        self.event_age_at_ack
            .with_label_values(&[source, envelope.ingress.as_str(), sink, delivery])
            .observe(age);
    }

    /// Refreshes the gauges that are read from state (sink health, readiness).
    pub fn refresh(&self, pipeline: &Pipeline, ready: bool) {
        for sink in pipeline.sinks() {
            let required = if pipeline.is_required(sink.name()) {
                "true"
            } else {
                "false"
            };
            self.sink_up
                .with_label_values(&[sink.name(), sink.kind(), required])
                .set(i64::from(sink.is_healthy()));
            let labels = [sink.name(), sink.kind()];
            let reconnects = self.sink_reconnects.with_label_values(&labels);
            reconnects.inc_by(sink.reconnects().saturating_sub(reconnects.get()));
        }
        for (sink, count) in pipeline.in_flight() {
            self.sink_in_flight
                .with_label_values(&[sink])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
        for lane in pipeline.best_effort() {
            let labels = [lane.sink.as_str()];
            let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
            self.best_effort_depth
                .with_label_values(&labels)
                .set(gauge(lane.depth));
            self.best_effort_capacity
                .with_label_values(&labels)
                .set(gauge(lane.capacity));
            self.best_effort_breaker
                .with_label_values(&labels)
                .set(lane.breaker.as_gauge());
            let queued = self.best_effort_queued.with_label_values(&labels);
            queued.inc_by(lane.queued_total.saturating_sub(queued.get()));
            // Every drop reason shows from the start, at 0: an alert on its increase needs it.
            for reason in DropReason::ALL {
                self.best_effort_dropped
                    .with_label_values(&[lane.sink.as_str(), reason.as_str()]);
            }
        }
        self.ready.set(i64::from(ready));
    }

    /// Refreshes the governors' current rates.
    pub fn refresh_governors(&self, governors: &[std::sync::Arc<Governor>]) {
        for governor in governors {
            for action in [Action::Pull, Action::Confirm] {
                self.vod_api_rate
                    .with_label_values(&[governor.account(), action.as_str()])
                    .set(governor.rate(action));
            }
        }
    }

    /// Counts one `RequestLimitExceeded` answer.
    pub fn note_throttled(&self, account: &str, action: Action) {
        self.vod_api_throttled
            .with_label_values(&[account, action.as_str()])
            .inc();
    }

    /// The Prometheus text exposition of every family.
    #[must_use]
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding gathered families into a Vec fails only on invalid metric data, which the
        // typed API above cannot produce.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

/// The best-effort queues report here: their publishes count like any other (published,
/// failures, duration), their acknowledgements give the sink's own event age, and their drops and
/// breaker changes are counted and logged.
impl LaneObserver for Metrics {
    fn attempted(&self, source: &str, envelope: &Envelope, attempt: &SinkAttempt) {
        self.record_attempt(attempt);
        if attempt.result.is_err() {
            return;
        }
        if !attempt.dead_letter {
            self.record_age(source, envelope, attempt.sink.name(), "best_effort");
        }
    }

    fn dead_lettered(&self, reason: FailureReason) {
        self.dead_lettered
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    fn dropped(&self, sink: &str, reason: DropReason, count: u64) {
        self.best_effort_dropped
            .with_label_values(&[sink, reason.as_str()])
            .inc_by(count);
    }

    fn breaker(&self, sink: &str, state: BreakerState) {
        self.best_effort_breaker
            .with_label_values(&[sink])
            .set(state.as_gauge());
        match state {
            BreakerState::Open => tracing::warn!(
                sink,
                "A best-effort sink failed too often: its breaker is open; its events queue."
            ),
            BreakerState::HalfOpen => {
                tracing::info!(sink, "Probing a best-effort sink with one event.");
            }
            BreakerState::Closed => {
                tracing::info!(
                    sink,
                    "A best-effort sink answers again: its breaker is closed."
                );
            }
        }
    }
}

/// Counts one event in `vodbridge_in_flight` for as long as it lives, also when the request
/// future is dropped (a caller that hung up).
pub struct InFlight(prometheus::IntGauge);

impl InFlight {
    /// Increments `gauge` until the guard is dropped.
    #[must_use]
    pub fn enter(gauge: &prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The `event_type` label value: known VOD types verbatim, anything else `other`, so a sender
/// cannot create unbounded series.
#[must_use]
pub fn event_type_label(event_type: &str) -> &str {
    if catalog::is_known(event_type) {
        event_type
    } else {
        "other"
    }
}

/// The `tracing` target of the spans exported over OTLP ([`vodbridge_core::TRACE_TARGET`]);
/// logs never show them.
pub use vodbridge_core::TRACE_TARGET;

/// Keeps the span exporter running; dropping it flushes what is buffered and stops it. Drop it
/// outside the async runtime (the exporter's HTTP client blocks).
#[must_use = "dropping the guard stops the span exporter"]
pub struct TelemetryGuard {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl TelemetryGuard {
    /// True when spans are exported.
    #[must_use]
    pub const fn exporting(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            if let Err(error) = provider.shutdown() {
                tracing::warn!(error = %error, "Flushing spans at shutdown failed.");
            }
        }
    }
}

/// Installs the global `tracing` subscriber: logs to stderr (stdout carries the stdout sink's
/// envelopes only; `RUST_LOG` overrides the configured level) and, with `telemetry.otlp`, the
/// OpenTelemetry layer that exports the spans of [`TRACE_TARGET`] over OTLP/HTTP.
///
/// # Errors
///
/// [`Error::Otlp`] when the OTLP exporter cannot be built.
pub fn init_logging(config: &TelemetryConfig) -> Result<TelemetryGuard> {
    use tracing_subscriber::{filter, layer::SubscriberExt, util::SubscriberInitExt, Layer};

    // The exported spans stay out of the logs (log lines look the same with tracing on or
    // off), by a directive of the one static filter: a dynamic filter beside it would make
    // every disabled `debug!` call site ask the subscriber again on each call.
    let level = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"))
        .add_directive(
            format!("{TRACE_TARGET}=off")
                .parse()
                .map_err(|e| Error::Config(format!("internal log directive: {e}")))?,
        );
    let json = match config.log_format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let logs = if json {
        fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        fmt::layer().with_writer(std::io::stderr).boxed()
    };
    let mut layers = vec![logs.with_filter(level).boxed()];
    let mut provider = None;
    if let Some(otlp) = &config.otlp {
        let built = otlp_provider(otlp)?;
        let tracer = opentelemetry::trace::TracerProvider::tracer(&built, "vodbridge");
        let only_trace_spans =
            filter::Targets::new().with_target(TRACE_TARGET, tracing::Level::INFO);
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(only_trace_spans)
                .boxed(),
        );
        provider = Some(built);
    }
    // A second init (tests) keeps the first subscriber; that is fine.
    let _ = tracing_subscriber::registry().with(layers).try_init();
    if let Some(otlp) = &config.otlp {
        tracing::info!(endpoint = %vodbridge_core::redact_url(&otlp.endpoint), service = %otlp.service_name, sample_ratio = otlp.sample_ratio, "Exporting spans over OTLP.");
    }
    Ok(TelemetryGuard { provider })
}

/// The tracer provider: OTLP/HTTP protobuf to `{endpoint}/v1/traces` in batches, parent-based
/// ratio sampling, `service.name` and `service.version` on every span.
fn otlp_provider(otlp: &OtlpConfig) -> Result<opentelemetry_sdk::trace::SdkTracerProvider> {
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    use opentelemetry_sdk::trace::Sampler;

    let timeout = std::time::Duration::from_millis(otlp.timeout_ms);
    let client = reqwest::blocking::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| Error::Otlp {
            what: "cannot build the HTTP client",
            source: Box::new(e),
        })?;
    let endpoint = format!("{}/v1/traces", otlp.endpoint.trim().trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(OtlpHttpClient(client))
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(endpoint)
        .with_timeout(timeout)
        .build()
        .map_err(|e| Error::Otlp {
            what: "cannot build the span exporter",
            source: Box::new(e),
        })?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(otlp.service_name.clone())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    Ok(opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            otlp.sample_ratio,
        ))))
        .with_resource(resource)
        .build())
}

/// Makes `span` a child of a `traceparent` that came from upstream (a push request's header).
pub(crate) fn set_remote_parent(span: &tracing::Span, upstream: &vodbridge_core::TraceParent) {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if span.is_disabled() {
        return;
    }
    let flags = if upstream.sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let remote = SpanContext::new(
        TraceId::from_bytes(upstream.trace_id),
        SpanId::from_bytes(upstream.span_id),
        flags,
        true,
        TraceState::default(),
    );
    let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
}

/// The `traceparent` an envelope carries: `span`'s own context when spans are exported (a
/// consumer's span then joins the bridge's trace under the event's span); otherwise the
/// upstream trace with a new span id, or a new trace.
pub(crate) fn trace_parent(
    span: &tracing::Span,
    upstream: Option<vodbridge_core::TraceParent>,
) -> vodbridge_core::TraceParent {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    if !span.is_disabled() {
        let context = span.context();
        let own = context.span().span_context().clone();
        if own.is_valid() {
            return vodbridge_core::TraceParent {
                trace_id: own.trace_id().to_bytes(),
                span_id: own.span_id().to_bytes(),
                sampled: own.is_sampled(),
            };
        }
    }
    upstream.map_or_else(
        vodbridge_core::TraceParent::random,
        vodbridge_core::TraceParent::with_random_span,
    )
}

/// The span of one event (OpenTelemetry `process`, kind consumer), disabled unless spans are
/// exported. A pulled event's is a root (VOD's queue carries no context); a push callback's
/// becomes a child of the request's `traceparent` ([`set_remote_parent`]).
pub(crate) fn event_span(source: &str, ingress: vodbridge_core::Ingress) -> tracing::Span {
    tracing::info_span!(
        target: TRACE_TARGET,
        "process",
        otel.name = %format_args!("process {source}"),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "tencent_vod",
        messaging.operation.type = "process",
        messaging.destination.name = source,
        messaging.message.id = tracing::field::Empty,
        cloudevents.event_id = tracing::field::Empty,
        cloudevents.event_type = tracing::field::Empty,
        cloudevents.event_source = tracing::field::Empty,
        vodbridge.ingress = ingress.as_str(),
        http.response.status_code = tracing::field::Empty,
    )
}

/// Records the envelope's identity on the event's span (messaging and CloudEvents conventions).
pub(crate) fn record_event(span: &tracing::Span, envelope: &Envelope) {
    if span.is_disabled() {
        return;
    }
    span.record("messaging.message.id", envelope.id.as_str());
    span.record("cloudevents.event_id", envelope.id.as_str());
    span.record("cloudevents.event_type", envelope.ty.as_str());
    span.record("cloudevents.event_source", envelope.source.as_str());
}

/// A `confirm` span under the event's span, for an acknowledgement given to VOD at once (a
/// push answer: `how` says why it is a 200).
pub(crate) fn confirmed(parent: &tracing::Span, how: &str) {
    if parent.is_disabled() {
        return;
    }
    let span = tracing::info_span!(target: TRACE_TARGET, parent: parent, "confirm", otel.name = "confirm", vodbridge.confirm = how);
    drop(span);
}

/// The exporter's HTTP client: the workspace's reqwest, blocking, because the SDK's batch
/// processor exports from its own thread with no async runtime. (opentelemetry-http ships this
/// for reqwest 0.13 only; the rest of vodbridge uses 0.12.)
#[derive(Debug)]
struct OtlpHttpClient(reqwest::blocking::Client);

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OtlpHttpClient {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<bytes::Bytes>,
    ) -> Result<opentelemetry_http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let (parts, body) = request.into_parts();
        let mut outgoing = self
            .0
            .request(parts.method, parts.uri.to_string())
            .body(body.to_vec());
        for (name, value) in &parts.headers {
            outgoing = outgoing.header(name, value);
        }
        let response = outgoing.send()?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes()?;
        let mut answer = opentelemetry_http::Response::builder()
            .status(status)
            .body(body)?;
        *answer.headers_mut() = headers;
        Ok(answer)
    }
}
