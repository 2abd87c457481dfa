//! The CloudEvents 1.0 envelope every VOD event becomes, with its content-derived id.

use std::{borrow::Cow, fmt, str::FromStr};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use time::{format_description::well_known::Rfc3339, OffsetDateTime};

use crate::{
    binding::DeadLetterInfo,
    error::{Error, Result},
    trace::TraceParent,
};

/// The CloudEvents specification version every envelope carries.
pub const SPEC_VERSION: &str = "1.0";

/// Content type of `data`: VOD events are JSON.
const DATA_CONTENT_TYPE: &str = "application/json";

/// A stable event id: the first 32 hex characters of a SHA-256 over the source and the event's
/// canonical JSON. It is the same for every push retry and pull redelivery of one event, so
/// consumers can drop duplicates.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct EventId(String);

impl EventId {
    /// Length of an id in hex characters.
    pub const LEN: usize = 32;

    /// Derives the id of an event from its source and canonical JSON bytes: hex SHA-256 of
    /// `source`, one `\n` byte, then `canonical`, cut to [`EventId::LEN`] characters.
    #[must_use]
    pub fn derive(source: &str, canonical: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(source.as_bytes());
        hasher.update(b"\n");
        hasher.update(canonical);
        let digest = hasher.finalize();
        // Into a fixed buffer: `hex::encode` collects the text one `char` at a time. Hex digits
        // are ASCII, so the lossy conversion never replaces anything.
        let mut text = [0u8; Self::LEN];
        hex::encode_to_slice(&digest[..Self::LEN / 2], &mut text)
            .expect("LEN / 2 bytes encode to LEN hex digits");
        Self(String::from_utf8_lossy(&text).into_owned())
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for EventId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let valid =
            s.len() == Self::LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if valid {
            Ok(Self(s.to_owned()))
        } else {
            Err(Error::InvalidEventId(s.to_owned()))
        }
    }
}

impl<'de> Deserialize<'de> for EventId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How an event reached vodbridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ingress {
    /// VOD POSTed it to a callback URL ("normal callback").
    Push,
    /// vodbridge pulled it with `PullEvents` ("reliable callback").
    Pull,
}

impl Ingress {
    /// `push` or `pull`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Push => "push",
            Self::Pull => "pull",
        }
    }
}

impl FromStr for Ingress {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "push" => Ok(Self::Push),
            "pull" => Ok(Self::Pull),
            other => Err(Error::Decode(format!(
                "vodingress must be push or pull, got {other:?}"
            ))),
        }
    }
}

/// One event as a CloudEvents 1.0 envelope (see `schema/envelope.v1.json`).
///
/// `data` holds the provider's event JSON bytes as received (minus delivery-only members such as
/// VOD's `EventHandle`, `Sign` and `T`); unknown fields pass through untouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// CloudEvents `id`: content-derived, stable across redeliveries.
    pub id: EventId,
    /// CloudEvents `source`, e.g. `/tencentcloud/vod/1500000001`.
    pub source: String,
    /// CloudEvents `type`, e.g. `com.tencentcloud.vod.NewFileUpload`.
    pub ty: String,
    /// CloudEvents `subject`: the video's FileId when the event names one video.
    pub subject: Option<String>,
    /// CloudEvents `time`: the event's own finish/create time, else the time it was received.
    pub time: OffsetDateTime,
    /// Whether `time` is the event's own time. False when the provider's payload carried none
    /// and `time` is when the bridge received it: its age at acknowledgement then means nothing,
    /// and metrics count it apart. Not on the wire; the push spool keeps it.
    pub event_time_known: bool,
    /// CloudEvents `data`: the event JSON.
    pub data: Bytes,
    /// Extension `vodeventtype`: the provider's event type verbatim; routes match on it.
    pub event_type: String,
    /// Extension `vodsubappid`: the VOD sub-application, when known.
    pub sub_app_id: Option<u64>,
    /// Extension `vodingress`.
    pub ingress: Ingress,
    /// Extension `vodtaskid`: the VOD task id, when the event has one.
    pub task_id: Option<String>,
    /// Extension `partitionkey` (CloudEvents partitioning): FileId, else the event type.
    pub partition_key: String,
    /// Extension `traceparent` (CloudEvents distributed tracing, W3C Trace Context): the
    /// bridge's span of this delivery, so a consumer's span joins the bridge's trace. Not part
    /// of the id: each delivery of an event may carry another.
    pub traceparent: Option<TraceParent>,
}

/// Structured-mode wire form, for decoding.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    specversion: Cow<'a, str>,
    id: EventId,
    #[serde(borrow)]
    source: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    #[serde(default, borrow)]
    subject: Option<Cow<'a, str>>,
    #[serde(borrow)]
    time: Cow<'a, str>,
    #[serde(borrow)]
    datacontenttype: Cow<'a, str>,
    #[serde(borrow)]
    vodeventtype: Cow<'a, str>,
    #[serde(default, borrow)]
    vodsubappid: Option<Cow<'a, str>>,
    vodingress: Ingress,
    #[serde(default, borrow)]
    vodtaskid: Option<Cow<'a, str>>,
    #[serde(borrow)]
    partitionkey: Cow<'a, str>,
    #[serde(default, borrow)]
    traceparent: Option<Cow<'a, str>>,
    #[serde(default, borrow, rename = "deadletterreason")]
    _deadletterreason: Option<Cow<'a, str>>,
    #[serde(default, borrow, rename = "deadletterdetail")]
    _deadletterdetail: Option<Cow<'a, str>>,
    #[serde(default, borrow, rename = "deadlettersink")]
    _deadlettersink: Option<Cow<'a, str>>,
    #[serde(default, borrow, rename = "deadletterdestination")]
    _deadletterdestination: Option<Cow<'a, str>>,
    #[serde(borrow)]
    data: &'a RawValue,
}

impl Envelope {
    /// The CloudEvents `time` as RFC 3339 text.
    #[must_use]
    pub fn time_rfc3339(&self) -> String {
        // Formatting a valid OffsetDateTime as RFC 3339 fails only for years outside 0..=9999,
        // which the normalizer never produces; fall back to the Unix epoch text then.
        self.time
            .format(&Rfc3339)
            .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned())
    }

    /// `application/json`.
    #[must_use]
    pub const fn data_content_type(&self) -> &'static str {
        DATA_CONTENT_TYPE
    }

    /// Every CloudEvents attribute and extension except `data` and `datacontenttype`, as
    /// `(name, value)` text pairs in a fixed order: what binary-mode broker mappings put in
    /// headers (with their own prefix: `ce_`, `cloudEvents_`, `ce-`).
    #[must_use]
    pub fn attributes(&self) -> Vec<(&'static str, Cow<'_, str>)> {
        let mut out = Vec::with_capacity(11);
        out.push(("specversion", Cow::Borrowed(SPEC_VERSION)));
        out.push(("id", Cow::Borrowed(self.id.as_str())));
        out.push(("source", Cow::Borrowed(self.source.as_str())));
        out.push(("type", Cow::Borrowed(self.ty.as_str())));
        if let Some(subject) = &self.subject {
            out.push(("subject", Cow::Borrowed(subject.as_str())));
        }
        out.push(("time", Cow::Owned(self.time_rfc3339())));
        out.push(("vodeventtype", Cow::Borrowed(self.event_type.as_str())));
        if let Some(sub_app_id) = self.sub_app_id {
            out.push(("vodsubappid", Cow::Owned(sub_app_id.to_string())));
        }
        out.push(("vodingress", Cow::Borrowed(self.ingress.as_str())));
        if let Some(task_id) = &self.task_id {
            out.push(("vodtaskid", Cow::Borrowed(task_id.as_str())));
        }
        out.push(("partitionkey", Cow::Borrowed(self.partition_key.as_str())));
        if let Some(traceparent) = &self.traceparent {
            out.push(("traceparent", Cow::Owned(traceparent.to_string())));
        }
        out
    }

    /// Encodes the envelope as one structured-mode CloudEvents JSON object on one line (no
    /// trailing newline): `data` is embedded as received, minus line breaks between tokens.
    /// `dead_letter` adds its extensions ([`DeadLetterInfo::attributes`]).
    #[must_use]
    pub fn to_structured_json(&self, dead_letter: Option<&DeadLetterInfo>) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() + 512);
        self.write_structured_json(&mut out, dead_letter);
        out
    }

    /// Appends [`Envelope::to_structured_json`]'s line to `out` (no trailing newline), for a
    /// writer that batches lines in one buffer.
    pub fn write_structured_json(&self, out: &mut Vec<u8>, dead_letter: Option<&DeadLetterInfo>) {
        out.reserve(self.data.len() + 512);
        out.extend_from_slice(br#"{"specversion":"1.0","id":"#);
        push_json_str(out, self.id.as_str());
        push_member(out, "source", &self.source);
        push_member(out, "type", &self.ty);
        if let Some(subject) = &self.subject {
            push_member(out, "subject", subject);
        }
        push_member(out, "time", &self.time_rfc3339());
        push_member(out, "datacontenttype", DATA_CONTENT_TYPE);
        push_member(out, "vodeventtype", &self.event_type);
        if let Some(sub_app_id) = self.sub_app_id {
            push_member(out, "vodsubappid", &sub_app_id.to_string());
        }
        push_member(out, "vodingress", self.ingress.as_str());
        if let Some(task_id) = &self.task_id {
            push_member(out, "vodtaskid", task_id);
        }
        push_member(out, "partitionkey", &self.partition_key);
        if let Some(traceparent) = &self.traceparent {
            // Hex digits and dashes: nothing to escape.
            out.extend_from_slice(br#","traceparent":""#);
            out.extend_from_slice(&traceparent.encode());
            out.push(b'"');
        }
        if let Some(info) = dead_letter {
            for (name, value) in info.attributes() {
                push_member(out, name, value);
            }
        }
        out.extend_from_slice(br#","data":"#);
        // `data` is JSON by construction. Line breaks outside strings are insignificant
        // whitespace (inside strings JSON escapes them), so dropping them keeps `data` equal
        // while keeping the event on one line.
        // (memchr's vectorised search: a byte loop here was 5 % of the push path's CPU.)
        if memchr::memchr2(b'\n', b'\r', &self.data).is_some() {
            out.extend(
                self.data
                    .iter()
                    .copied()
                    .filter(|b| !matches!(b, b'\n' | b'\r')),
            );
        } else {
            out.extend_from_slice(&self.data);
        }
        out.push(b'}');
    }

    /// Decodes a structured-mode CloudEvents JSON object produced by
    /// [`Envelope::to_structured_json`]. Dead-letter extensions are accepted and ignored.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] when the bytes are not such an object.
    pub fn from_structured_json(bytes: &[u8]) -> Result<Self> {
        Self::from_structured_json_with_dead_letter(bytes).map(|(envelope, _)| envelope)
    }

    /// [`Envelope::from_structured_json`], with the dead-letter extensions when the line is a
    /// dead-letter copy.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] when the bytes are not such an object or a dead-letter reason is
    /// unknown.
    pub fn from_structured_json_with_dead_letter(
        bytes: &[u8],
    ) -> Result<(Self, Option<DeadLetterInfo>)> {
        let wire: Wire<'_> =
            serde_json::from_slice(bytes).map_err(|e| Error::Decode(e.to_string()))?;
        if wire.specversion != SPEC_VERSION {
            return Err(Error::Decode(format!(
                "unsupported specversion {:?}",
                wire.specversion
            )));
        }
        if wire.datacontenttype != DATA_CONTENT_TYPE {
            return Err(Error::Decode(format!(
                "unsupported datacontenttype {:?}",
                wire.datacontenttype
            )));
        }
        let envelope = Self {
            id: wire.id.clone(),
            source: wire.source.into_owned(),
            ty: wire.ty.into_owned(),
            subject: wire.subject.map(Cow::into_owned),
            time: parse_time(&wire.time)?,
            event_time_known: true,
            data: Bytes::copy_from_slice(wire.data.get().as_bytes()),
            event_type: wire.vodeventtype.into_owned(),
            sub_app_id: wire
                .vodsubappid
                .as_deref()
                .map(parse_sub_app_id)
                .transpose()?,
            ingress: wire.vodingress,
            task_id: wire.vodtaskid.map(Cow::into_owned),
            partition_key: wire.partitionkey.into_owned(),
            // Only tracing: a malformed one is dropped rather than failing the event.
            traceparent: wire.traceparent.and_then(|t| t.parse().ok()),
        };
        let dead_letter = DeadLetterInfo::from_attributes(|name| match name {
            "deadletterreason" => wire._deadletterreason.clone(),
            "deadletterdetail" => wire._deadletterdetail.clone(),
            "deadlettersink" => wire._deadlettersink.clone(),
            "deadletterdestination" => wire._deadletterdestination.clone(),
            _ => None,
        })?;
        Ok((envelope, dead_letter))
    }

    /// [`Envelope::from_binary`], with the dead-letter extensions when the message is a
    /// dead-letter copy.
    ///
    /// # Errors
    ///
    /// As [`Envelope::from_binary`]; also for an unknown dead-letter reason.
    pub fn from_binary_with_dead_letter<'a>(
        attribute: impl Fn(&str) -> Option<Cow<'a, str>>,
        data: Bytes,
    ) -> Result<(Self, Option<DeadLetterInfo>)> {
        let envelope = Self::from_binary(&attribute, data)?;
        Ok((envelope, DeadLetterInfo::from_attributes(&attribute)?))
    }

    /// Decodes a binary-mode message: `attribute` looks an attribute up by its bare name
    /// (`id`, `type`, `vodeventtype`, ...; the caller strips its broker's header prefix), `data`
    /// is the message body.
    ///
    /// # Errors
    ///
    /// [`Error::Decode`] when a required attribute is missing or malformed, or `data` is not JSON.
    pub fn from_binary<'a>(
        attribute: impl Fn(&str) -> Option<Cow<'a, str>>,
        data: Bytes,
    ) -> Result<Self> {
        let required = |name: &str| {
            attribute(name)
                .ok_or_else(|| Error::Decode(format!("missing CloudEvents attribute {name:?}")))
        };
        let specversion = required("specversion")?;
        if specversion != SPEC_VERSION {
            return Err(Error::Decode(format!(
                "unsupported specversion {specversion:?}"
            )));
        }
        serde_json::from_slice::<&RawValue>(&data)
            .map_err(|e| Error::Decode(format!("data is not JSON: {e}")))?;
        Ok(Self {
            id: required("id")?.parse()?,
            source: required("source")?.into_owned(),
            ty: required("type")?.into_owned(),
            subject: attribute("subject").map(Cow::into_owned),
            time: parse_time(&required("time")?)?,
            event_time_known: true,
            data,
            event_type: required("vodeventtype")?.into_owned(),
            sub_app_id: attribute("vodsubappid")
                .as_deref()
                .map(parse_sub_app_id)
                .transpose()?,
            ingress: required("vodingress")?.parse()?,
            task_id: attribute("vodtaskid").map(Cow::into_owned),
            partition_key: required("partitionkey")?.into_owned(),
            traceparent: attribute("traceparent").and_then(|t| t.parse().ok()),
        })
    }
}

fn push_json_str(out: &mut Vec<u8>, value: &str) {
    // Serializing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

fn push_member(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    push_json_str(out, value);
}

fn parse_time(text: &str) -> Result<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).map_err(|e| Error::Decode(format!("time {text:?}: {e}")))
}

fn parse_sub_app_id(text: &str) -> Result<u64> {
    text.parse()
        .map_err(|_| Error::Decode(format!("vodsubappid {text:?} is not an unsigned integer")))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::HeaderStyle;

    pub(crate) fn sample() -> Envelope {
        let data = br#"{"EventType":"NewFileUpload","FileUploadEvent":{"FileId":"1"}}"#;
        Envelope {
            id: EventId::derive("/tencentcloud/vod/1", data),
            source: "/tencentcloud/vod/1".into(),
            ty: "com.tencentcloud.vod.NewFileUpload".into(),
            subject: Some("1".into()),
            time: OffsetDateTime::from_unix_timestamp(1_740_816_000)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            event_time_known: true,
            data: Bytes::from_static(data),
            event_type: "NewFileUpload".into(),
            sub_app_id: Some(1_500_000_001),
            ingress: Ingress::Push,
            task_id: None,
            partition_key: "1".into(),
            traceparent: None,
        }
    }

    #[test]
    fn dead_letter_copies_decode_with_their_reason() {
        let mut envelope = sample();
        envelope.traceparent = Some(crate::TraceParent::random());
        let info = DeadLetterInfo {
            reason: crate::FailureReason::Unroutable,
            detail: "no queue bound".into(),
            failed_sink: "rabbit".into(),
            failed_destination: "vod.x".into(),
        };
        let line = envelope.to_structured_json(Some(&info));
        let (back, dead) = Envelope::from_structured_json_with_dead_letter(&line).expect("decodes");
        assert_eq!(back, envelope);
        assert_eq!(dead, Some(info.clone()));
        let plain = envelope.to_structured_json(None);
        assert_eq!(
            Envelope::from_structured_json_with_dead_letter(&plain)
                .expect("decodes")
                .1,
            None
        );
        let attributes: Vec<(String, String)> = envelope
            .attributes()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.into_owned()))
            .chain(info.attributes().map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
        let (binary, dead) = Envelope::from_binary_with_dead_letter(
            |name| {
                attributes
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| Cow::Owned(v.clone()))
            },
            envelope.data.clone(),
        )
        .expect("decodes");
        assert_eq!(binary, envelope);
        assert_eq!(dead, Some(info));
    }

    #[test]
    fn header_names_are_prefix_plus_attribute_for_every_style() {
        let mut full = sample();
        full.task_id = Some("t".into());
        let mut names: Vec<&str> = full.attributes().iter().map(|(n, _)| *n).collect();
        names.extend([
            "deadletterreason",
            "deadletterdetail",
            "deadlettersink",
            "other",
        ]);
        for style in [HeaderStyle::Kafka, HeaderStyle::Amqp, HeaderStyle::Nats] {
            for name in &names {
                let header = style.header_name(name);
                assert_eq!(header, format!("{}{name}", style.prefix()));
                assert_eq!(
                    matches!(header, Cow::Borrowed(_)),
                    *name != "other",
                    "{name}: table entries are borrowed"
                );
            }
        }
    }

    #[test]
    fn event_id_is_32_hex_and_parses_back() {
        let id = EventId::derive("s", b"{}");
        assert_eq!(id.as_str().len(), 32);
        assert_eq!(id.as_str().parse::<EventId>().ok(), Some(id.clone()));
        assert_ne!(id, EventId::derive("t", b"{}"), "source is part of the id");
        assert!("ABC".parse::<EventId>().is_err());
        assert!("G".repeat(32).parse::<EventId>().is_err());
    }

    #[test]
    fn structured_json_is_one_line_even_for_pretty_data() {
        let mut env = sample();
        env.data = Bytes::from_static(b"{\r\n  \"EventType\": \"X\\n\",\n  \"A\": [1,\n 2]\n}\n");
        let json = env.to_structured_json(None);
        assert!(!json.contains(&b'\n'), "{}", String::from_utf8_lossy(&json));
        let back = Envelope::from_structured_json(&json).expect("decodes");
        let parsed: serde_json::Value = serde_json::from_slice(&back.data).expect("json");
        assert_eq!(parsed, serde_json::json!({"EventType": "X\n", "A": [1, 2]}));
    }

    #[test]
    fn structured_json_round_trips_and_keeps_data_bytes() {
        let env = sample();
        let json = env.to_structured_json(None);
        let back = Envelope::from_structured_json(&json).expect("decodes");
        assert_eq!(back, env);
        let text = String::from_utf8(json).expect("utf8");
        assert!(
            text.contains(
                r#""data":{"EventType":"NewFileUpload","FileUploadEvent":{"FileId":"1"}}"#
            ),
            "{text}"
        );
        assert!(text.contains(r#""vodsubappid":"1500000001""#), "{text}");
        assert!(text.contains(r#""time":"2025-03-01T08:00:00Z""#), "{text}");
    }

    #[test]
    fn binary_attributes_round_trip() {
        let env = sample();
        let attrs = env.attributes();
        let lookup = |name: &str| {
            attrs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
        };
        let back = Envelope::from_binary(lookup, env.data.clone()).expect("decodes");
        assert_eq!(back, env);
    }

    #[test]
    fn decoding_rejects_garbage() {
        assert!(Envelope::from_structured_json(b"{}").is_err());
        assert!(Envelope::from_structured_json(b"not json").is_err());
        let env = sample();
        let attrs = env.attributes();
        let lookup = |name: &str| {
            attrs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
        };
        assert!(Envelope::from_binary(lookup, Bytes::from_static(b"{oops")).is_err());
    }
}
