//! The routing table: event type patterns to sinks and destination templates, first match wins.

use std::{collections::HashSet, fmt};

use crate::{
    envelope::Envelope,
    error::{Error, Result},
};

/// Matches an event type (the envelope's `vodeventtype`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventTypePattern {
    /// The exact name, e.g. `NewFileUpload`.
    Exact(String),
    /// `Procedure*`: names starting with the prefix.
    Prefix(String),
    /// `*Complete`: names ending with the suffix.
    Suffix(String),
    /// `*`: every event type.
    Any,
    /// `@unknown`: event types the provider model does not know (new or misspelled types).
    Unknown,
}

impl EventTypePattern {
    /// Parses `Name`, `Prefix*`, `*Suffix`, `*` or `@unknown`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidPattern`] for an empty pattern, a `*` in the middle, or an unknown `@` word.
    pub fn parse(pattern: &str) -> Result<Self> {
        let invalid = || Error::InvalidPattern(pattern.to_owned());
        if pattern == "*" {
            return Ok(Self::Any);
        }
        if pattern == "@unknown" {
            return Ok(Self::Unknown);
        }
        if pattern.is_empty() || pattern.starts_with('@') {
            return Err(invalid());
        }
        let stars = pattern.matches('*').count();
        match (stars, pattern.strip_prefix('*'), pattern.strip_suffix('*')) {
            (0, _, _) => Ok(Self::Exact(pattern.to_owned())),
            (1, Some(suffix), _) if !suffix.is_empty() => Ok(Self::Suffix(suffix.to_owned())),
            (1, _, Some(prefix)) if !prefix.is_empty() => Ok(Self::Prefix(prefix.to_owned())),
            _ => Err(invalid()),
        }
    }

    /// Whether `event_type` matches; `known` says whether the provider model knows the type.
    #[must_use]
    pub fn matches(&self, event_type: &str, known: bool) -> bool {
        match self {
            Self::Exact(name) => name == event_type,
            Self::Prefix(prefix) => event_type.starts_with(prefix.as_str()),
            Self::Suffix(suffix) => event_type.ends_with(suffix.as_str()),
            Self::Any => true,
            Self::Unknown => !known,
        }
    }
}

impl fmt::Display for EventTypePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Prefix(prefix) => write!(f, "{prefix}*"),
            Self::Suffix(suffix) => write!(f, "*{suffix}"),
            Self::Any => f.write_str("*"),
            Self::Unknown => f.write_str("@unknown"),
        }
    }
}

/// One piece of a destination template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    EventType,
    Source,
    SubAppId,
}

/// A destination (topic, routing key, subject) with placeholders `{event_type}`, `{source}`
/// (the configured source name) and `{sub_app_id}` (`unknown` when the source has none).
///
/// Substituted values go through [`push_token`]: they keep only `A-Z a-z 0-9 _ -`, so an
/// unexpected event type or source name can never add a separator (`.` in NATS subjects and
/// AMQP topic keys, `/` elsewhere) or a wildcard (`*`, `>`, `#`). Literal text is kept as
/// written: separators belong there. Sinks without a route destination use
/// [`default_destination`], built by the same rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
    segments: Vec<Segment>,
}

impl Template {
    /// Parses a template.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTemplate`] for an unknown placeholder or an unbalanced brace.
    pub fn parse(text: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidTemplate {
            template: text.to_owned(),
            reason: reason.to_owned(),
        };
        let mut segments = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find(['{', '}']) {
            if rest.as_bytes()[open] == b'}' {
                return Err(invalid("`}` without `{`"));
            }
            if open > 0 {
                segments.push(Segment::Literal(rest[..open].to_owned()));
            }
            let after = &rest[open + 1..];
            let close = after.find('}').ok_or_else(|| invalid("`{` without `}`"))?;
            segments.push(match &after[..close] {
                "event_type" => Segment::EventType,
                "source" => Segment::Source,
                "sub_app_id" => Segment::SubAppId,
                other => {
                    return Err(invalid(&format!(
                        "unknown placeholder {{{other}}}; use {{event_type}}, {{source}} or {{sub_app_id}}"
                    )))
                }
            });
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            segments.push(Segment::Literal(rest.to_owned()));
        }
        Ok(Self {
            text: text.to_owned(),
            segments,
        })
    }

    /// The template as written.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Renders the destination for one envelope.
    #[must_use]
    pub fn render(&self, envelope: &Envelope, context: &RouteContext<'_>) -> String {
        let mut out = String::with_capacity(self.text.len() + 16);
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::EventType => push_token(&mut out, &envelope.event_type),
                Segment::Source => push_token(&mut out, context.source),
                Segment::SubAppId => match envelope.sub_app_id {
                    Some(id) => out.push_str(&id.to_string()),
                    None => out.push_str("unknown"),
                },
            }
        }
        out
    }
}

/// Appends `value` as one destination token: every character outside `A-Z a-z 0-9 _ -`
/// becomes `_`. Safe as one Kafka topic part, one AMQP topic-exchange word and one NATS
/// subject token, so a placeholder's value can never change a destination's shape.
pub fn push_token(out: &mut String, value: &str) {
    out.extend(value.chars().map(|c| {
        if c.is_ascii_alphanumeric() || matches!(c, '_' | '-') {
            c
        } else {
            '_'
        }
    }));
}

/// The destination of a route without one: `vod.{event_type}`, rendered as a template
/// would render it (the event type through [`push_token`]).
#[must_use]
pub fn default_destination(event_type: &str) -> String {
    let mut out = String::with_capacity(4 + event_type.len());
    out.push_str("vod.");
    push_token(&mut out, event_type);
    out
}

/// Facts about where an event came from that routing needs besides the envelope.
#[derive(Debug, Clone, Copy)]
pub struct RouteContext<'a> {
    /// The configured source name (`{source}` in templates).
    pub source: &'a str,
}

/// One sink and destination an event is published to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The sink's configured name.
    pub sink: String,
    /// Where in the sink; an empty template means the sink's default destination.
    pub destination: Template,
    /// True (the default in configuration): the sink's acknowledgement decides the event's
    /// outcome. False: a best-effort target, queued per sink and published at the sink's own
    /// pace; it never holds the provider's answer (see `BestEffortSettings`).
    pub required: bool,
}

/// What a matching route does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteAction {
    /// Publish to every target; every required one must acknowledge (fan-out).
    Publish(Vec<Target>),
    /// Acknowledge without publishing.
    Drop,
}

/// Event type patterns and what to do with matching events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Any of these patterns selects the route.
    pub patterns: Vec<EventTypePattern>,
    /// What to do.
    pub action: RouteAction,
}

/// The result of looking an event up in the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution<'a> {
    /// Publish to these targets (route index for logs).
    Publish(usize, &'a [Target]),
    /// A drop route matched (route index).
    Drop(usize),
    /// No route matched.
    NoRoute,
}

/// Ordered routes: the first route with a matching pattern decides.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    known: HashSet<String>,
}

impl RouteTable {
    /// Builds a table. `known_event_types` is the provider model's list, for `@unknown`.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyRoute`] for a publishing route without targets.
    pub fn new<'k>(
        routes: Vec<Route>,
        known_event_types: impl IntoIterator<Item = &'k str>,
    ) -> Result<Self> {
        for (index, route) in routes.iter().enumerate() {
            if matches!(&route.action, RouteAction::Publish(targets) if targets.is_empty()) {
                return Err(Error::EmptyRoute(index));
            }
        }
        Ok(Self {
            routes,
            known: known_event_types.into_iter().map(str::to_owned).collect(),
        })
    }

    /// The routes in order.
    #[must_use]
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Whether the provider model knows `event_type`.
    #[must_use]
    pub fn is_known(&self, event_type: &str) -> bool {
        self.known.contains(event_type)
    }

    /// Whether some route matches every possible event type (a `*` route exists).
    #[must_use]
    pub fn is_total(&self) -> bool {
        self.routes
            .iter()
            .any(|r| r.patterns.contains(&EventTypePattern::Any))
            || (self
                .routes
                .iter()
                .any(|r| r.patterns.contains(&EventTypePattern::Unknown))
                && self
                    .known
                    .iter()
                    .all(|t| self.resolve(t) != Resolution::NoRoute))
    }

    /// Finds what to do with an event type.
    #[must_use]
    pub fn resolve(&self, event_type: &str) -> Resolution<'_> {
        let known = self.is_known(event_type);
        for (index, route) in self.routes.iter().enumerate() {
            if route.patterns.iter().any(|p| p.matches(event_type, known)) {
                return match &route.action {
                    RouteAction::Publish(targets) => Resolution::Publish(index, targets),
                    RouteAction::Drop => Resolution::Drop(index),
                };
            }
        }
        Resolution::NoRoute
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::tests::sample;

    fn target(sink: &str, template: &str) -> Target {
        Target {
            sink: sink.into(),
            destination: Template::parse(template).expect("valid"),
            required: true,
        }
    }

    fn pats(list: &[&str]) -> Vec<EventTypePattern> {
        list.iter()
            .map(|p| EventTypePattern::parse(p).expect("valid"))
            .collect()
    }

    #[test]
    fn patterns_parse_and_match() {
        assert_eq!(
            EventTypePattern::parse("Procedure*").ok(),
            Some(EventTypePattern::Prefix("Procedure".into()))
        );
        assert!(EventTypePattern::parse("*Complete")
            .expect("ok")
            .matches("PullComplete", true));
        assert!(!EventTypePattern::parse("*Complete")
            .expect("ok")
            .matches("FileDeleted", true));
        assert!(EventTypePattern::parse("@unknown")
            .expect("ok")
            .matches("Brand", false));
        assert!(!EventTypePattern::parse("@unknown")
            .expect("ok")
            .matches("FileDeleted", true));
        for bad in ["", "a*b", "**", "*a*", "@known"] {
            assert!(EventTypePattern::parse(bad).is_err(), "{bad}");
        }
        for p in ["X", "X*", "*X", "*", "@unknown"] {
            assert_eq!(EventTypePattern::parse(p).expect("ok").to_string(), p);
        }
    }

    #[test]
    fn templates_render_and_sanitize() {
        let mut env = sample();
        let ctx = RouteContext { source: "app one" };
        let t = Template::parse("vod.{sub_app_id}.{event_type}.{source}").expect("valid");
        assert_eq!(t.render(&env, &ctx), "vod.1500000001.NewFileUpload.app_one");
        env.event_type = "a.b/c>*".into();
        env.sub_app_id = None;
        assert_eq!(t.render(&env, &ctx), "vod.unknown.a_b_c__.app_one");
        // A default destination is shaped exactly like the template that spells it out.
        let spelled = Template::parse("vod.{event_type}").expect("valid");
        assert_eq!(
            default_destination(&env.event_type),
            spelled.render(&env, &ctx)
        );
        assert_eq!(default_destination("NewFileUpload"), "vod.NewFileUpload");
        assert_eq!(
            Template::parse("plain").expect("ok").render(&env, &ctx),
            "plain"
        );
        for bad in ["{nope}", "{event_type", "a}b"] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn first_match_wins_and_unknown_is_separate() {
        let table = RouteTable::new(
            vec![
                Route {
                    patterns: pats(&["FileDeleted"]),
                    action: RouteAction::Drop,
                },
                Route {
                    patterns: pats(&["@unknown"]),
                    action: RouteAction::Publish(vec![target("dlq", "unknown")]),
                },
                Route {
                    patterns: pats(&["*"]),
                    action: RouteAction::Publish(vec![target("k", "vod"), target("f", "")]),
                },
            ],
            ["FileDeleted", "NewFileUpload"],
        )
        .expect("valid");
        assert_eq!(table.resolve("FileDeleted"), Resolution::Drop(0));
        assert!(matches!(table.resolve("Mystery"), Resolution::Publish(1, [t]) if t.sink == "dlq"));
        assert!(
            matches!(table.resolve("NewFileUpload"), Resolution::Publish(2, ts) if ts.len() == 2)
        );
        assert!(table.is_total());
    }

    #[test]
    fn no_route_and_totality() {
        let table = RouteTable::new(
            vec![Route {
                patterns: pats(&["NewFileUpload"]),
                action: RouteAction::Publish(vec![target("k", "")]),
            }],
            ["FileDeleted", "NewFileUpload"],
        )
        .expect("valid");
        assert_eq!(table.resolve("FileDeleted"), Resolution::NoRoute);
        assert!(!table.is_total());
        assert!(RouteTable::new(
            vec![Route {
                patterns: pats(&["*"]),
                action: RouteAction::Publish(vec![])
            }],
            []
        )
        .is_err());
    }
}
