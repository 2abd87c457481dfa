//! Reading a VOD event body once and normalizing it into the CloudEvents envelope.

use bytes::Bytes;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use vodbridge_core::{Envelope, EventId, Ingress};

use crate::{
    catalog,
    error::{Error, Result},
    tape::{Duplicates, Tape, Value},
};

/// CloudEvents `type` prefix; the VOD EventType follows verbatim.
pub const TYPE_PREFIX: &str = "com.tencentcloud.vod.";

/// CloudEvents `type` of legacy v2.0 callback bodies, passed through untouched.
pub const LEGACY_TYPE: &str = "com.tencentcloud.vod.legacy";

/// The event type of a salvaged body: a JSON object VOD handed out without a usable
/// `EventType` (see [`Normalizer::salvage`]). Its CloudEvents type is
/// `com.tencentcloud.vod.Invalid`.
pub const INVALID_EVENT_TYPE: &str = "Invalid";

/// A pulled body that cannot become a regular event but can still be taken out of VOD's queue:
/// its `EventHandle`, and an envelope for the dead-letter destination.
#[derive(Debug)]
pub struct Salvaged {
    /// The `EventHandle` to confirm once the envelope is dead-lettered.
    pub handle: String,
    /// Type `com.tencentcloud.vod.Invalid`, id from the canonical body without the handle (so
    /// every redelivery gets the same id), `data` = the body without the handle.
    pub envelope: Envelope,
}

/// A VOD event body (`EventContent`, a normal-callback body, or a legacy v2.0 body) read once:
/// its top-level members, plus the delivery-only fields `EventHandle`, `Sign`, `T`.
///
/// Parsing is lenient: unknown members, explicit nulls and unknown EventTypes are accepted.
pub struct RawEvent<'a> {
    /// The body as received.
    body: &'a Bytes,
    /// The body read once.
    tape: Tape<'a>,
    /// The EventType (or the legacy `eventType`).
    event_type: String,
    /// True for a legacy v2.0 body (`version`/`eventType`/`data`).
    legacy: bool,
}

/// Top-level keys that describe one delivery, not the event: never part of the id or `data`.
fn is_delivery_key(key: &str) -> bool {
    key == "EventHandle" || key.eq_ignore_ascii_case("sign") || key.eq_ignore_ascii_case("t")
}

impl<'a> RawEvent<'a> {
    /// Reads a body.
    ///
    /// # Errors
    ///
    /// [`Error::NotUtf8`], [`Error::Json`] for invalid JSON, [`Error::NotAnObject`], [`Error::MissingEventType`]
    /// when neither `EventType` nor a legacy `eventType` is present, [`Error::InvalidEventType`]
    /// when it is not a non-empty string.
    pub fn parse(body: &'a Bytes) -> Result<Self> {
        // One UTF-8 check of the whole body is much cheaper than a check per string.
        let text = std::str::from_utf8(body).map_err(|_| Error::NotUtf8)?;
        let tape = Tape::parse(text, Duplicates::Refuse)?;
        let root = tape.root();
        let (type_value, legacy) = match root.get("EventType").filter(|v| !v.is_null()) {
            Some(v) => (v, false),
            None => (root.get("eventType").ok_or(Error::MissingEventType)?, true),
        };
        let event_type = match type_value.as_str() {
            Some(s) if !s.trim().is_empty() => s.to_owned(),
            _ => return Err(Error::InvalidEventType),
        };
        Ok(Self {
            body,
            tape,
            event_type,
            legacy,
        })
    }

    /// The VOD EventType (for a legacy body, its `eventType`).
    #[must_use]
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// True for a legacy v2.0 body.
    #[must_use]
    pub const fn is_legacy(&self) -> bool {
        self.legacy
    }

    /// The first top-level member named `key` without ASCII case, in body order, nulls included.
    fn delivery_member(&self, key: &str) -> Option<Value<'_, 'a>> {
        self.tape
            .root()
            .members_in_body_order()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    }

    /// The `EventHandle` of a pulled event.
    #[must_use]
    pub fn event_handle(&self) -> Option<&str> {
        self.tape.root().get("EventHandle").and_then(Value::as_str)
    }

    /// The callback `Sign` carried in the body, if any (key matched without case).
    #[must_use]
    pub fn sign(&self) -> Option<&str> {
        self.delivery_member("sign").and_then(Value::as_str)
    }

    /// The callback `T` carried in the body, if any: `None` when absent, `Some(Err)` when it is
    /// not an integer or numeric string.
    #[must_use]
    pub fn t(&self) -> Option<Result<i64>> {
        let t = self.delivery_member("t")?;
        Some(match (t.as_i64(), t.as_str()) {
            (Some(n), _) => n.map_err(|()| Error::InvalidTimestamp),
            (None, Some(s)) => s.trim().parse().map_err(|_| Error::InvalidTimestamp),
            (None, None) => Err(Error::InvalidTimestamp),
        })
    }

    /// `data` for the envelope: the body itself when it has no delivery-only member, else the
    /// body's other members re-joined with their values byte-for-byte.
    fn data(&self) -> Bytes {
        let root = self.tape.root();
        if root
            .members_in_body_order()
            .all(|(k, _)| !is_delivery_key(k))
        {
            return self.body.clone();
        }
        let mut out = Vec::with_capacity(self.body.len());
        out.push(b'{');
        for (i, (key, value)) in root
            .members_in_body_order()
            .filter(|(k, _)| !is_delivery_key(k))
            .enumerate()
        {
            if i > 0 {
                out.push(b',');
            }
            // Writing a string into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut out, key);
            out.push(b':');
            out.extend_from_slice(value.raw().as_bytes());
        }
        out.push(b'}');
        Bytes::from(out)
    }
}

/// Turns VOD events from one source into envelopes (design.md §2).
#[derive(Debug, Clone)]
pub struct Normalizer {
    /// CloudEvents `source` of every envelope.
    source: String,
    /// The source's VOD sub-application, when configured.
    sub_app_id: Option<u64>,
    /// How this source receives events.
    ingress: Ingress,
}

impl Normalizer {
    /// A normalizer for one configured source. `source` is the CloudEvents `source`; see
    /// [`Normalizer::default_source`].
    #[must_use]
    pub fn new(source: impl Into<String>, sub_app_id: Option<u64>, ingress: Ingress) -> Self {
        Self {
            source: source.into(),
            sub_app_id,
            ingress,
        }
    }

    /// The default CloudEvents `source`: `/tencentcloud/vod/{SubAppId}`, or
    /// `/tencentcloud/vod/{source name}` when the source has no SubAppId.
    #[must_use]
    pub fn default_source(sub_app_id: Option<u64>, source_name: &str) -> String {
        match sub_app_id {
            Some(id) => format!("/tencentcloud/vod/{id}"),
            None => format!("/tencentcloud/vod/{source_name}"),
        }
    }

    /// For a body [`RawEvent::parse`] refused because its `EventType` is missing or not a
    /// non-empty string, while it is still a JSON object with an `EventHandle`: the handle and
    /// an envelope of event type [`INVALID_EVENT_TYPE`] for the dead-letter destination.
    /// `None` for anything else (not UTF-8 JSON, not an object, no handle): such a body cannot
    /// be confirmed.
    #[must_use]
    pub fn salvage(&self, body: &Bytes, received_at: OffsetDateTime) -> Option<Salvaged> {
        let text = std::str::from_utf8(body).ok()?;
        // Read leniently: a body refused for a key twice still has a handle and an id (as with
        // serde_json::Value, the last one wins), and the dead letter needs nothing more.
        let tape = Tape::parse(text, Duplicates::LastWins).ok()?;
        let event = RawEvent {
            body,
            tape,
            event_type: INVALID_EVENT_TYPE.to_owned(),
            legacy: false,
        };
        let handle = event.event_handle()?.to_owned();
        let envelope = self.normalize(event, received_at).ok()?;
        Some(Salvaged { handle, envelope })
    }

    /// The CloudEvents `source` this normalizer stamps.
    #[must_use]
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Builds the envelope of one event. `received_at` is used for `time` when the event carries
    /// no usable finish/create time.
    ///
    /// # Errors
    ///
    /// [`Error::Json`] if a member value cannot be read as JSON (cannot happen for a body that
    /// [`RawEvent::parse`] accepted).
    pub fn normalize(&self, event: RawEvent<'_>, received_at: OffsetDateTime) -> Result<Envelope> {
        let data = event.data();
        let mut canonical = Vec::with_capacity(data.len());
        event.tape.write_canonical(&mut canonical, is_delivery_key);
        let id = EventId::derive(&self.source, &canonical);

        // Lookups read the canonical form: sorted members, without nulls and delivery fields.
        let root = event.tape.root();
        let member = |key: &str| root.get(key).filter(|v| !v.is_null());
        let legacy = event.legacy;
        let event_type = event.event_type;
        let spec = catalog::spec_of(&event_type);
        let payload = if legacy {
            member("data")
        } else {
            let preferred = spec.and_then(|spec| {
                spec.members
                    .iter()
                    .find_map(|k| member(k).filter(|v| v.is_object()))
            });
            // Unknown types (and known ones under an unexpected key): the one object member.
            preferred.or_else(|| {
                root.members()
                    .find(|(k, v)| *k != "EventType" && !is_delivery_key(k) && v.is_object())
                    .map(|(_, v)| v)
            })
        };

        let found = payload
            .map(|p| Found::read(p, spec, legacy))
            .unwrap_or_default();
        let time = found.time.unwrap_or(received_at);
        let partition_key = found
            .file_id
            .clone()
            .or_else(|| found.task_id.clone())
            .or(found.group)
            .unwrap_or_else(|| event_type.clone());
        let (file_id, task_id) = (found.file_id, found.task_id);
        let ty = if legacy {
            LEGACY_TYPE.to_owned()
        } else {
            format!("{TYPE_PREFIX}{event_type}")
        };

        Ok(Envelope {
            id,
            source: self.source.clone(),
            ty,
            partition_key,
            traceparent: None,
            subject: file_id,
            time,
            event_time_known: found.time.is_some(),
            data,
            event_type,
            sub_app_id: self.sub_app_id,
            ingress: self.ingress,
            task_id,
        })
    }
}

/// What the envelope takes from a payload, by its type's [`catalog::EventSpec`].
#[derive(Debug, Default)]
struct Found {
    /// The one video the event is about.
    file_id: Option<String>,
    task_id: Option<String>,
    /// The id that groups the events of one thing without a video (a media cast).
    group: Option<String>,
    time: Option<OffsetDateTime>,
}

impl Found {
    /// Reads a payload by `spec`'s paths, then by the generic rule for what they did not find;
    /// legacy v2.0 bodies by their own (camelCase) names.
    fn read(payload: Value<'_, '_>, spec: Option<&catalog::EventSpec>, legacy: bool) -> Self {
        if legacy {
            let id = |names: &[&str]| {
                names
                    .iter()
                    .find_map(|n| payload.get_ignore_case(n).and_then(Value::as_id))
                    .map(str::to_owned)
            };
            return Self {
                file_id: id(&["fileId"]),
                task_id: id(&["taskId", "vodTaskId"]),
                group: None,
                time: None,
            };
        }
        let generic = &catalog::GENERIC;
        let spec = spec.unwrap_or(generic);
        let one_id = |paths: &[&str]| paths.iter().find_map(|path| only_id(payload, path));
        Self {
            file_id: one_id(spec.subject).or_else(|| one_id(generic.subject)),
            task_id: one_id(spec.task).or_else(|| one_id(generic.task)),
            group: one_id(spec.group),
            time: latest_time(payload, spec.time).or_else(|| latest_time(payload, generic.time)),
        }
    }
}

/// Calls `found` with every value at `path` under `node` (see [`catalog::EventSpec`] for the
/// path syntax).
fn walk<'t, 'a>(node: Value<'t, 'a>, path: &str, found: &mut impl FnMut(Value<'t, 'a>)) {
    if path.is_empty() {
        found(node);
        return;
    }
    let (step, rest) = path.split_once('.').unwrap_or((path, ""));
    if step == "*" {
        for (_, child) in node.members() {
            walk(child, rest, found);
        }
    } else if let Some(list) = step.strip_suffix("[]") {
        for item in node.get(list).into_iter().flat_map(Value::items) {
            walk(item, rest, found);
        }
    } else if let Some(child) = node.get(step) {
        walk(child, rest, found);
    }
}

/// The id at `path` when the path names exactly one (every match the same value); `None`
/// when it names none or several different ones.
fn only_id(payload: Value<'_, '_>, path: &str) -> Option<String> {
    let mut only: Option<&str> = None;
    let mut several = false;
    walk(payload, path, &mut |value| {
        if let Some(id) = value.as_id() {
            match only {
                None => only = Some(id),
                Some(seen) if seen != id => several = true,
                Some(_) => {}
            }
        }
    });
    (!several).then_some(only).flatten().map(str::to_owned)
}

/// The latest RFC 3339 date on any of `paths`. Invalid dates (`0000-00-00T00:00:00Z`) are
/// skipped.
fn latest_time(payload: Value<'_, '_>, paths: &[&str]) -> Option<OffsetDateTime> {
    let mut latest = None;
    for path in paths {
        walk(payload, path, &mut |value| {
            let parsed = value
                .as_str()
                .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok());
            latest = latest.max(parsed);
        });
    }
    latest
}
