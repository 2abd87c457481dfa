//! The tree canonicalizer that `tape` replaced, kept (test-only) as the oracle of its property
//! tests: a borrowed serde_json tree written with keys sorted, nulls dropped, no whitespace. Every
//! event id until 2026-12 was derived from its output, so the tape must write the same bytes.

use std::{borrow::Cow, fmt};

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A JSON value that borrows its strings from the input where it can.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node<'a> {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(Cow<'a, str>),
    Array(Vec<Node<'a>>),
    Object(Vec<(Cow<'a, str>, Node<'a>)>),
}

impl<'a> Node<'a> {
    /// Puts the tree in canonical order: object members sorted by key (byte order, stable for
    /// duplicate keys) and null members removed, at every depth. Nulls inside arrays stay.
    pub(crate) fn canonicalize(&mut self) {
        match self {
            Self::Array(items) => items.iter_mut().for_each(Self::canonicalize),
            Self::Object(members) => canonicalize_members(members),
            _ => {}
        }
    }

    /// Writes a canonicalized tree without whitespace, strings escaped as serde_json does.
    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        match self {
            Self::Null => out.extend_from_slice(b"null"),
            Self::Bool(true) => out.extend_from_slice(b"true"),
            Self::Bool(false) => out.extend_from_slice(b"false"),
            Self::U64(n) => write_u64(out, *n),
            Self::I64(n) => {
                if *n < 0 {
                    out.push(b'-');
                }
                write_u64(out, n.unsigned_abs());
            }
            Self::F64(f) => write_json(out, f),
            Self::Str(s) => write_str(out, s),
            Self::Array(items) => {
                out.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    item.write(out);
                }
                out.push(b']');
            }
            Self::Object(members) => write_members(out, members),
        }
    }
}

/// Sorts members by key, drops null members, and canonicalizes every value.
pub(crate) fn canonicalize_members(members: &mut Vec<(Cow<'_, str>, Node<'_>)>) {
    members.retain(|(_, v)| !matches!(v, Node::Null));
    members.sort_by(|a, b| a.0.cmp(&b.0));
    for (_, value) in members.iter_mut() {
        value.canonicalize();
    }
}

/// Writes canonicalized members as an object.
pub(crate) fn write_members(out: &mut Vec<u8>, members: &[(Cow<'_, str>, Node<'_>)]) {
    out.push(b'{');
    for (i, (key, value)) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, key);
        out.push(b':');
        value.write(out);
    }
    out.push(b'}');
}

/// Writes a JSON string. A string borrowed from the input had no escape sequence, so it holds no
/// quote, backslash or control character (serde_json rejects raw ones) and is copied as is,
/// which is exactly what serde_json's escaper would produce; decoded strings go through it.
#[allow(clippy::ptr_arg)] // The variant matters: borrowed means the input had no escapes.
fn write_str(out: &mut Vec<u8>, s: &Cow<'_, str>) {
    if let Cow::Owned(s) = s {
        write_json(out, s.as_str());
    } else {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

fn write_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Serializing a string or a float into a Vec cannot fail (non-finite floats become null).
    let _ = serde_json::to_writer(out, value);
}

impl<'de> Deserialize<'de> for Node<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }
    fn visit_none<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node<'de>, E> {
        Ok(Node::Bool(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node<'de>, E> {
        Ok(Node::U64(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node<'de>, E> {
        Ok(Node::I64(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node<'de>, E> {
        Ok(Node::F64(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(4));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(12));
        while let Some(key) = map.next_key::<Key<'de>>()? {
            members.push((key.0, map.next_value()?));
        }
        refuse_duplicates::<A::Error, _>(&members)?;
        Ok(Node::Object(members))
    }
}

/// Refuses an object with a key twice: JSON parsers disagree on which value wins (serde_json
/// keeps the last, others the first), so routing on one reading while consumers act on another
/// would split them. An error names the key.
pub(crate) fn refuse_duplicates<E: serde::de::Error, V>(
    members: &[(Cow<'_, str>, V)],
) -> Result<(), E> {
    let duplicate = if members.len() <= 16 {
        members
            .iter()
            .enumerate()
            .find(|(i, (k, _))| members[..*i].iter().any(|(seen, _)| seen == k))
            .map(|(_, (k, _))| k.as_ref())
    } else {
        let mut keys: Vec<&str> = members.iter().map(|(k, _)| k.as_ref()).collect();
        keys.sort_unstable();
        keys.windows(2).find(|w| w[0] == w[1]).map(|w| w[0])
    };
    match duplicate {
        Some(key) => Err(E::custom(format_args!("duplicate object key {key:?}"))),
        None => Ok(()),
    }
}

/// An owned tree from a lenient parse (duplicate keys resolved, the last wins): for salvaging
/// a body the strict reading refused.
pub(crate) fn node_from_value(value: serde_json::Value) -> Node<'static> {
    match value {
        serde_json::Value::Null => Node::Null,
        serde_json::Value::Bool(b) => Node::Bool(b),
        serde_json::Value::Number(n) => n
            .as_u64()
            .map(Node::U64)
            .or_else(|| n.as_i64().map(Node::I64))
            .unwrap_or_else(|| Node::F64(n.as_f64().unwrap_or(0.0))),
        serde_json::Value::String(s) => Node::Str(Cow::Owned(s)),
        serde_json::Value::Array(items) => {
            Node::Array(items.into_iter().map(node_from_value).collect())
        }
        serde_json::Value::Object(map) => Node::Object(
            map.into_iter()
                .map(|(k, v)| (Cow::Owned(k), node_from_value(v)))
                .collect(),
        ),
    }
}

/// An object key that borrows from the input when it has no escapes.
pub(crate) struct Key<'a>(pub(crate) Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// The canonical form of `text` as event ids were derived before the tape: strict reading (a
/// key twice refused), top level must be an object.
pub(crate) fn oracle(text: &str) -> Result<Vec<u8>, String> {
    write_object(serde_json::from_str(text).map_err(|e| e.to_string())?)
}

/// The canonical form of a salvaged body as it was derived: through `serde_json::Value` (a key
/// twice: the last wins).
pub(crate) fn oracle_lenient(text: &str) -> Result<Vec<u8>, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    write_object(node_from_value(value))
}

/// The canonical bytes of a top-level object.
fn write_object(node: Node<'_>) -> Result<Vec<u8>, String> {
    let Node::Object(mut members) = node else {
        return Err("not an object".into());
    };
    canonicalize_members(&mut members);
    let mut out = Vec::new();
    write_members(&mut out, &members);
    Ok(out)
}
