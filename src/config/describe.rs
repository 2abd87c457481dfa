//! What `vodbridge check-config` prints: the effective settings, secrets redacted.

use vodbridge_core::{Resolution, RouteAction, Target};
use vodbridge_tencent::catalog;

use secrecy::ExposeSecret;

use super::{Settings, SinkConfig, SourceKind, VodCheckPolicy};
use vodbridge_tencent::event_config::redact_token;

impl Settings {
    /// A human-readable account of the effective configuration, secrets redacted: what
    /// `vodbridge check-config` prints.
    #[must_use]
    pub fn describe(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(out, "listen: {}", self.server.listen);
        self.describe_sources(&mut out);
        self.describe_sinks(&mut out);
        self.describe_traces(&mut out);
        self.describe_routes(&mut out);
        out
    }

    /// Each source: how it receives events, and what it expects of VOD's configuration.
    fn describe_sources(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(out, "sources:");
        for source in self.sources.values() {
            match &source.kind {
                SourceKind::Pull(pull) => {
                    let id = &pull.client.credentials.secret_id;
                    let shown: String = id.chars().take(6).collect();
                    let _ = writeln!(
                        out,
                        "  {name}: pull from {endpoint} sub_app_id={sub} loops={loops} handle_lifetime={life:?} \
                         confirm_margin={margin:?}, cloudevents source {src}, secret_id={shown}…, secret_key=<redacted>, \
                         account {account} (PullEvents {pull_rps}/s, ConfirmEvents {confirm_rps}/s, shared by every replica)",
                        name = source.name,
                        endpoint = pull.client.endpoint,
                        sub = pull.client.sub_app_id.map_or_else(|| "none".to_owned(), |v| v.to_string()),
                        loops = pull.loops,
                        life = pull.handle_lifetime,
                        margin = pull.confirm_margin,
                        src = source.normalizer.source(),
                        account = pull.account.label,
                        pull_rps = pull.account.budget.pull_per_sec,
                        confirm_rps = pull.account.budget.confirm_per_sec,
                    );
                    if let Some(sub_apps) = &pull.sub_apps {
                        describe_sub_apps(out, sub_apps, pull.governor_scope);
                    }
                }
                SourceKind::Push(push) => {
                    let _ = writeln!(
                        out,
                        "  {name}: push at POST /callback/{name}, cloudevents source {src}, {auth}, on sink failure: {hold}",
                        name = source.name,
                        src = source.normalizer.source(),
                        auth = push.auth.describe(),
                        hold = push.hold.map_or_else(
                            || "503 at once".to_owned(),
                            |h| format!("hold up to {} ms, no answer before VOD's timeout", h.as_millis())
                        ) + if push.spool { "; 200 once durably spooled" } else { "" },
                    );
                }
            }
            match &source.vod {
                None => {
                    let _ = writeln!(
                        out,
                        "    VOD event configuration: not checked (no API credentials, or vod_check = \"off\")"
                    );
                }
                Some(check) => {
                    let switches: Vec<&str> = check.switches.iter().map(|s| s.name()).collect();
                    let url = check
                        .notification_url
                        .as_ref()
                        .map_or_else(String::new, |u| {
                            format!(", NotificationUrl {}", redact_token(u.expose_secret()))
                        });
                    let _ = writeln!(
                        out,
                        "    VOD event configuration: checked every {} s (vod_check = {}): mode {}{url}, switches on: {}",
                        check.interval.as_secs(),
                        match check.policy {
                            VodCheckPolicy::Readiness => "readiness",
                            VodCheckPolicy::Report => "report",
                            VodCheckPolicy::Off => "off",
                        },
                        check.mode,
                        if switches.is_empty() { "none".to_owned() } else { switches.join(", ") },
                    );
                }
            }
        }
    }

    /// Each sink, and the push spool.
    fn describe_sinks(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(out, "sinks:");
        for (name, sink) in &self.sinks {
            let detail = match sink {
                SinkConfig::Stdout(_) => String::new(),
                SinkConfig::File(f) => format!(
                    " path={} fsync={:?} rotate_bytes={} keep_files={}",
                    f.path.display(),
                    f.fsync,
                    f.rotate_bytes
                        .map_or_else(|| "never".to_owned(), |b| b.to_string()),
                    f.keep_files
                        .map_or_else(|| "all".to_owned(), |k| k.to_string())
                ),
                SinkConfig::Kafka(k) => format!(
                    " brokers={} message_timeout_ms={} {} mode, {} librdkafka properties",
                    k.brokers,
                    k.message_timeout_ms,
                    if k.structured { "structured" } else { "binary" },
                    k.properties.len() + k.secret_property_files.len()
                ),
                SinkConfig::Amqp(a) => format!(
                    " url={} exchange={:?} ({:?}{}) channels={} {} mode",
                    a.display_url(),
                    a.exchange,
                    a.exchange_type,
                    if a.declare_exchange {
                        ", declared"
                    } else {
                        ", must exist"
                    },
                    a.channels,
                    if a.structured { "structured" } else { "binary" }
                ),
                SinkConfig::Nats(n) => format!(
                    " url={} stream={}{} {} mode",
                    n.display_url(),
                    n.stream,
                    if n.create_stream {
                        " (created if missing)"
                    } else {
                        ""
                    },
                    if n.structured { "structured" } else { "binary" }
                ),
            };
            let _ = writeln!(out, "  {name}: {}{detail}", sink.kind());
        }
        if let Some(spool) = &self.spool {
            let _ = writeln!(
                out,
                "spool: {} (at most {} bytes)",
                spool.path.display(),
                spool.max_bytes
            );
        }
    }

    /// Where traces go.
    fn describe_traces(&self, out: &mut String) {
        use std::fmt::Write;
        match &self.telemetry.otlp {
            Some(otlp) => {
                let _ = writeln!(
                    out,
                    "traces: OTLP/HTTP to {}/v1/traces as {:?}, {:.0} % of traces",
                    vodbridge_core::redact_url(otlp.endpoint.trim_end_matches('/')),
                    otlp.service_name,
                    otlp.sample_ratio * 100.0
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "traces: not exported (envelopes still carry traceparent)"
                );
            }
        }
    }

    /// The routes, the dead letter, the delivery record, and the route of every event type.
    fn describe_routes(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(out, "routes (first match wins):");
        for (i, route) in self.routes.routes().iter().enumerate() {
            let patterns: Vec<String> = route.patterns.iter().map(ToString::to_string).collect();
            let _ = writeln!(
                out,
                "  {}. {} -> {}",
                i + 1,
                patterns.join(", "),
                describe_action(&route.action)
            );
        }
        let _ = writeln!(
            out,
            "dead letter: {}",
            self.dead_letter.as_ref().map_or_else(
                || "none (rejected events stay unacknowledged)".to_owned(),
                describe_target
            )
        );
        let _ = writeln!(
            out,
            "unroutable answers: tried {} more time(s), first after {} ms",
            self.unroutable_retry.retries,
            self.unroutable_retry.backoff.as_millis()
        );
        let _ = writeln!(out, "delivery record: {}", self.describe_record());
        let _ = writeln!(out, "best-effort targets: {}", self.describe_best_effort());
        let _ = writeln!(out, "effective routes by event type:");
        let mut types: Vec<&str> = catalog::known_event_types().collect();
        types.push("(any other type)");
        for event_type in types {
            let resolved = match self.routes.resolve(event_type) {
                Resolution::Publish(i, targets) => {
                    format!(
                        "route {}: {}",
                        i + 1,
                        targets
                            .iter()
                            .map(describe_target)
                            .collect::<Vec<_>>()
                            .join(" + ")
                    )
                }
                Resolution::Drop(i) => format!("route {}: drop", i + 1),
                Resolution::NoRoute => {
                    "NO ROUTE: events stay unacknowledged (or go to the dead letter)".to_owned()
                }
            };
            let _ = writeln!(out, "  {event_type:<45} {resolved}");
        }
        if !self.routes.is_total() {
            let _ = writeln!(
                out,
                "warning: some event types match no route; add a `*` route"
            );
        }
    }

    /// The best-effort line: which sinks are best-effort somewhere, and how they queue.
    fn describe_best_effort(&self) -> String {
        let mut sinks: Vec<&str> = self
            .routes
            .routes()
            .iter()
            .filter_map(|r| match &r.action {
                RouteAction::Publish(targets) => Some(targets),
                RouteAction::Drop => None,
            })
            .flatten()
            .filter(|t| !t.required)
            .map(|t| t.sink.as_str())
            .collect();
        sinks.sort_unstable();
        sinks.dedup();
        if sinks.is_empty() {
            return "none (every routed sink must acknowledge before VOD is answered)".to_owned();
        }
        let b = &self.best_effort;
        let full = if self.dead_letter.is_some() {
            "then to the dead letter"
        } else {
            "then dropped and counted"
        };
        let kept = if self.best_effort_durable {
            "in the spool (fsynced before VOD is answered; kept across a crash)"
        } else {
            "in memory (lost on a crash)"
        };
        format!(
            "{} (never hold VOD's answer); up to {} events queued per sink, {kept} ({full}), {} publishes at once, {} ms each, breaker opens after {} failures for {} s to {} s",
            sinks.join(", "),
            b.queue_capacity,
            b.concurrency,
            b.publish_timeout.as_millis(),
            b.breaker_failures,
            b.breaker_open.as_secs(),
            b.breaker_open_max.as_secs()
        )
    }

    /// The delivery record line: this process's record, and the shared one if configured.
    fn describe_record(&self) -> String {
        let local = if self.sink_record_capacity == 0 {
            "none in this process".to_owned()
        } else {
            format!("{} publishes in this process", self.sink_record_capacity)
        };
        match &self.shared_record {
            None => format!("{local}; not shared (each replica keeps its own)"),
            Some(shared) => format!(
                "{local}, shared through {} {} ({} {:?}), kept {} s, {} ms per round trip, publishing without it when unreachable",
                shared.kind.as_str(),
                shared.display_url(),
                match shared.kind {
                    crate::config::StoreKind::Redis => "key prefix",
                    crate::config::StoreKind::Nats => "KV bucket",
                },
                shared.name,
                shared.ttl.as_secs(),
                shared.timeout.as_millis()
            ),
        }
    }
}

fn describe_action(action: &RouteAction) -> String {
    match action {
        RouteAction::Drop => "drop".to_owned(),
        RouteAction::Publish(targets) => targets
            .iter()
            .map(describe_target)
            .collect::<Vec<_>>()
            .join(" + "),
    }
}

/// `sink[:destination]`, then `(required)` or `(best effort)`.
fn describe_target(target: &Target) -> String {
    let kind = if target.required {
        "required"
    } else {
        "best effort"
    };
    if target.destination.as_str().is_empty() {
        format!("{} ({kind})", target.sink)
    } else {
        format!("{}:{} ({kind})", target.sink, target.destination.as_str())
    }
}

/// The line of a pull source with `sub_app_ids`: which, how often listed, how paced.
fn describe_sub_apps(
    out: &mut String,
    sub_apps: &super::SubAppSelection,
    scope: super::GovernorScope,
) {
    use std::fmt::Write;
    let which = sub_apps.listed.as_ref().map_or_else(
        || {
            format!(
                "all sub-applications of the account whose status is On (DescribeSubAppIds every {:?})",
                sub_apps.refresh
            )
        },
        |listed| {
            let ids: Vec<String> = listed.iter().map(ToString::to_string).collect();
            format!("sub-applications {}", ids.join(", "))
        },
    );
    let excluded: Vec<String> = sub_apps.excluded.iter().map(ToString::to_string).collect();
    let _ = writeln!(
        out,
        "    sub_app_ids: {which}{}; budget {}; quiet sub-applications long-poll once per 5 s (at most half the PullEvents rate in all), busy ones share the rest; {} sub_app metric labels, then \"other\"",
        if excluded.is_empty() {
            String::new()
        } else {
            format!(", except {}", excluded.join(", "))
        },
        match scope {
            super::GovernorScope::Account => "shared by all of them (governor_scope = \"account\")",
            super::GovernorScope::SubApp => "whole for each (governor_scope = \"sub_app\")",
        },
        sub_apps.metric_labels,
    );
}
