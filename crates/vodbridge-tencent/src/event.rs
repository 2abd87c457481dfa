//! Reading a VOD event body once and normalizing it into the CloudEvents envelope.

use std::{borrow::Cow, fmt};

use bytes::Bytes;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use time::{format_description::well_known::Rfc3339, OffsetDateTime};
use vodbridge_core::{Envelope, EventId, Ingress};

use crate::{
    canonical::{
        canonicalize_members, node_from_value, refuse_duplicates, write_members, Key, Node,
    },
    catalog,
    error::{Error, Result},
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
    /// Top-level members in body order.
    members: Vec<(Cow<'a, str>, Node<'a>)>,
    /// The EventType (or the legacy `eventType`).
    event_type: Cow<'a, str>,
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
        // One UTF-8 check of the whole body is much cheaper than serde_json's check per string.
        let text = std::str::from_utf8(body).map_err(|_| Error::NotUtf8)?;
        let Members(members) = serde_json::from_str(text).map_err(|e| {
            // A JSON value of another type; other data errors (a key twice) keep their message.
            if e.is_data() && e.to_string().contains("expected a JSON object") {
                Error::NotAnObject
            } else {
                Error::Json(e)
            }
        })?;
        let find = |key: &str| members.iter().find(|(k, _)| k == key).map(|(_, v)| v);
        let (type_node, legacy) = match find("EventType").filter(|v| !matches!(v, Node::Null)) {
            Some(v) => (v, false),
            None => (find("eventType").ok_or(Error::MissingEventType)?, true),
        };
        let event_type = match type_node {
            Node::Str(s) if !s.trim().is_empty() => s.clone(),
            _ => return Err(Error::InvalidEventType),
        };
        Ok(Self {
            body,
            members,
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

    fn delivery_member(&self, key: &str) -> Option<&Node<'a>> {
        self.members
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    }

    /// The `EventHandle` of a pulled event.
    #[must_use]
    pub fn event_handle(&self) -> Option<&str> {
        self.members
            .iter()
            .find(|(k, _)| k == "EventHandle")
            .and_then(|(_, v)| v.as_str())
    }

    /// The callback `Sign` carried in the body, if any (key matched without case).
    #[must_use]
    pub fn sign(&self) -> Option<&str> {
        self.delivery_member("sign").and_then(Node::as_str)
    }

    /// The callback `T` carried in the body, if any: `None` when absent, `Some(Err)` when it is
    /// not an integer or numeric string.
    #[must_use]
    pub fn t(&self) -> Option<Result<i64>> {
        Some(match self.delivery_member("t")? {
            Node::U64(n) => i64::try_from(*n).map_err(|_| Error::InvalidTimestamp),
            Node::I64(n) => Ok(*n),
            Node::Str(s) => s.trim().parse().map_err(|_| Error::InvalidTimestamp),
            _ => Err(Error::InvalidTimestamp),
        })
    }

    /// `data` for the envelope: the body itself when it has no delivery-only member, else the
    /// body's other members re-joined with their values byte-for-byte.
    fn data(&self) -> Result<Bytes> {
        if self.members.iter().all(|(k, _)| !is_delivery_key(k)) {
            return Ok(self.body.clone());
        }
        let raw = match self.raw_members_by_offset() {
            Some(raw) => raw,
            None => {
                let RawMembers(raw) = serde_json::from_slice(self.body)?;
                raw.into_iter()
                    .map(|(k, v)| (k, v.get().as_bytes()))
                    .collect()
            }
        };
        let mut out = Vec::with_capacity(self.body.len());
        out.push(b'{');
        for (i, (key, value)) in raw.iter().filter(|(k, _)| !is_delivery_key(k)).enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // Writing a string into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut out, key.as_ref());
            out.push(b':');
            out.extend_from_slice(value);
        }
        out.push(b'}');
        Ok(Bytes::from(out))
    }

    /// The raw bytes of each top-level value, located from where the (borrowed) keys sit in the
    /// body, without parsing it again. `None` when a key had escapes (it is then not borrowed)
    /// or the layout is not as expected; the caller then re-reads the body.
    fn raw_members_by_offset(&self) -> Option<Vec<(Cow<'a, str>, &'a [u8])>> {
        let body: &'a [u8] = self.body;
        let base = body.as_ptr() as usize;
        let mut starts = Vec::with_capacity(self.members.len());
        for (key, _) in &self.members {
            let Cow::Borrowed(k) = key else { return None };
            let offset = (k.as_ptr() as usize)
                .checked_sub(base)
                .filter(|o| o + k.len() < body.len())?;
            starts.push((offset, k.len()));
        }
        let skip_back = |mut end: usize| {
            while end > 0 && body[end - 1].is_ascii_whitespace() {
                end -= 1;
            }
            end
        };
        let mut out = Vec::with_capacity(starts.len());
        for (i, (offset, len)) in starts.iter().enumerate() {
            // After the key: closing quote, whitespace, colon, whitespace, the value.
            let mut start = offset + len + 1;
            while body.get(start)?.is_ascii_whitespace() {
                start += 1;
            }
            if body[start] != b':' {
                return None;
            }
            start += 1;
            while body.get(start)?.is_ascii_whitespace() {
                start += 1;
            }
            // The value ends before the comma that precedes the next key's opening quote, or
            // before the object's closing brace.
            let end = match starts.get(i + 1) {
                Some((next, _)) => {
                    let comma = skip_back(next.checked_sub(1)?);
                    (comma > 0 && body[comma - 1] == b',').then(|| skip_back(comma - 1))?
                }
                None => {
                    let brace = skip_back(body.len());
                    (brace > 0 && body[brace - 1] == b'}').then(|| skip_back(brace - 1))?
                }
            };
            out.push((
                self.members[i].0.clone(),
                body.get(start..end).filter(|v| !v.is_empty())?,
            ));
        }
        Some(out)
    }
}

/// Top-level object members, parsed.
struct Members<'a>(Vec<(Cow<'a, str>, Node<'a>)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    members.push((key, map.next_value::<Node<'de>>()?));
                }
                refuse_duplicates::<A::Error, _>(&members)?;
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(V)
    }
}

/// Top-level object members with unparsed values (the slow path of [`RawEvent::data`]).
struct RawMembers<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for RawMembers<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawMembers<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawMembers<'de>, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    members.push((key, map.next_value::<&'de RawValue>()?));
                }
                Ok(RawMembers(members))
            }
        }
        deserializer.deserialize_map(V)
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
        // The strict reading first; a body it refused for a duplicate key is read leniently,
        // since the dead letter only needs its handle and an id.
        let members = match serde_json::from_str::<Members<'_>>(text) {
            Ok(Members(members)) => members,
            Err(_) => match node_from_value(serde_json::from_str(text).ok()?) {
                Node::Object(members) => members,
                _ => return None,
            },
        };
        let event = RawEvent {
            body,
            members,
            event_type: Cow::Borrowed(INVALID_EVENT_TYPE),
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
        let data = event.data()?;
        let RawEvent {
            members,
            event_type,
            legacy,
            ..
        } = event;
        let mut nodes = members;
        nodes.retain(|(k, _)| !is_delivery_key(k));
        canonicalize_members(&mut nodes);
        let mut canonical = Vec::with_capacity(data.len());
        write_members(&mut canonical, &nodes);
        let id = EventId::derive(&self.source, &canonical);

        let member = |key: &str| nodes.iter().find(|(k, _)| k == key).map(|(_, v)| v);
        let payload = if legacy {
            member("data")
        } else {
            let preferred = catalog::payload_keys(&event_type).and_then(|keys| {
                keys.iter()
                    .find_map(|k| member(k).filter(|v| matches!(v, Node::Object(_))))
            });
            // Unknown types (and known ones under an unexpected key): the one object member.
            preferred.or_else(|| {
                nodes
                    .iter()
                    .find(|(k, v)| k != "EventType" && matches!(v, Node::Object(_)))
                    .map(|(_, v)| v)
            })
        };

        let file_id = payload.and_then(|p| file_id(p, legacy));
        let task_id = payload.and_then(|p| task_id(p, legacy));
        let time = payload.and_then(event_time).unwrap_or(received_at);
        let ty = if legacy {
            LEGACY_TYPE.to_owned()
        } else {
            format!("{TYPE_PREFIX}{event_type}")
        };

        Ok(Envelope {
            id,
            source: self.source.clone(),
            ty,
            partition_key: file_id.clone().unwrap_or_else(|| event_type.to_string()),
            traceparent: None,
            subject: file_id,
            time,
            data,
            event_type: event_type.into_owned(),
            sub_app_id: self.sub_app_id,
            ingress: self.ingress,
            task_id,
        })
    }
}

/// The one video an event names: `FileId`, the edit output's `FileId`, or a one-element
/// `FileIdSet`.
fn file_id(payload: &Node<'_>, legacy: bool) -> Option<String> {
    if legacy {
        return payload
            .get_ignore_case("fileId")
            .and_then(Node::as_id)
            .map(Cow::into_owned);
    }
    payload
        .get("FileId")
        .and_then(Node::as_id)
        .or_else(|| {
            payload
                .get("Output")
                .and_then(|o| o.get("FileId"))
                .and_then(Node::as_id)
        })
        .or_else(|| match payload.get("FileIdSet") {
            Some(Node::Array(ids)) if ids.len() == 1 => ids[0].as_id(),
            _ => None,
        })
        .map(Cow::into_owned)
}

fn task_id(payload: &Node<'_>, legacy: bool) -> Option<String> {
    let node = if legacy {
        payload
            .get_ignore_case("taskId")
            .or_else(|| payload.get_ignore_case("vodTaskId"))
    } else {
        payload.get("TaskId")
    };
    node.and_then(Node::as_id).map(Cow::into_owned)
}

/// The event's own time: `FinishTime`, `CreateTime`, the media's `CreateTime`, or the latest
/// sub-task `FinishTime` of a task flow. Invalid dates (`0000-00-00T00:00:00Z`) are skipped.
fn event_time(payload: &Node<'_>) -> Option<OffsetDateTime> {
    let parse = |node: Option<&Node<'_>>| {
        node.and_then(Node::as_str)
            .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
    };
    parse(payload.get("FinishTime"))
        .or_else(|| parse(payload.get("CreateTime")))
        .or_else(|| {
            parse(
                payload
                    .get("MediaBasicInfo")
                    .and_then(|m| m.get("CreateTime")),
            )
        })
        .or_else(|| match payload.get("MediaProcessResultSet") {
            Some(Node::Array(results)) => results
                .iter()
                .filter_map(|r| match r {
                    Node::Object(members) => members
                        .iter()
                        .filter_map(|(_, task)| parse(task.get("FinishTime")))
                        .max(),
                    _ => None,
                })
                .max(),
            _ => None,
        })
}
