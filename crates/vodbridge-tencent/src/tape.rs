//! A VOD body read once into a flat token tape: the strict JSON check, the canonical form the
//! event id covers (keys sorted, nulls dropped, no whitespace), and the lookups normalization
//! needs, without building a tree.
//!
//! Why by hand: the id is a hash of the canonical form, so that form must stay byte-for-byte what
//! the serde_json-based canonicalizer produced (the `canonical` module, kept as the property
//! tests' oracle). The maintained SIMD parsers were weighed against it (git history of
//! BENCHMARKS.md, December 2026; a one-off measurement, not repeated by the suite): simd-json
//! reads differently from serde_json where ids depend on it (it accepts a key twice, refuses
//! integers beyond 64 bits, decodes a lone `\ud800` as U+0000, reads `-0` as `0`, has no nesting
//! limit); sonic-rs reads the same only with its `arbitrary_precision` numbers, and needs a
//! second pass for the byte offsets `data` is cut at, its SIMD paths needing target features the
//! portable image cannot assume. So this scanner does the common work
//! itself and hands the two rare, subtle cases to serde_json: strings with escape sequences
//! (decoding, surrogate rules) and numbers that are not plain integers (correctly rounded floats,
//! range errors). It accepts and refuses what the tree reading did: serde_json's grammar and
//! nesting limit (127), and a key twice in one object (which serde_json itself would let through).
//!
//! The tape holds one 20-byte token per value and per key, in body order. A container's token
//! knows where its subtree ends, and an object's token points at its members sorted by key, so
//! canonical writing and lookups are a walk over slices, with three or four allocations per body
//! instead of one per string, array and object.

use std::borrow::Cow;

use crate::error::{Error, Result};

/// serde_json refuses the 128th level of nesting; so does the tape.
const MAX_DEPTH: u32 = 128;

/// What a token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Null,
    True,
    False,
    /// An integer whose text is its canonical form (fits u64, or i64 when negative, not `-0`).
    Int,
    /// Any other number; `aux` indexes `Tape::floats`.
    Float,
    /// A string without escapes; its text (with quotes) is its canonical form.
    Str,
    /// A string with escapes; `aux` indexes `Tape::decoded`.
    EscStr,
    /// `aux` is the element count.
    Array,
    /// `aux` indexes `Tape::order`: the member count, then the key tokens sorted by key.
    Object,
}

/// One value or key. `start..end` are its bytes in the body (strings with their quotes).
#[derive(Debug, Clone, Copy)]
struct Token {
    start: u32,
    end: u32,
    /// The index of the first token after this value's subtree.
    next: u32,
    aux: u32,
    kind: Kind,
}

/// How a key that appears twice in one object is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Duplicates {
    /// Refused: parsers disagree on which value wins, so routing on one reading while consumers
    /// act on another would split them.
    Refuse,
    /// The last one wins, as in `serde_json::Value` (for salvaging a body the strict reading
    /// refused).
    LastWins,
}

/// A JSON object body read into tokens. Index 0 is the top-level object.
#[derive(Debug)]
pub(crate) struct Tape<'a> {
    text: &'a str,
    tokens: Vec<Token>,
    order: Vec<u32>,
    decoded: Vec<String>,
    floats: Vec<f64>,
}

fn syntax(reason: impl Into<Cow<'static, str>>, offset: usize) -> Error {
    Error::Syntax {
        reason: reason.into(),
        offset,
    }
}

/// serde_json's message without its position, which is relative to the slice it was given.
fn delegated(error: &serde_json::Error, offset: usize) -> Error {
    let message = error.to_string();
    let reason = message
        .rsplit_once(" at line ")
        .map_or(message.as_str(), |(reason, _)| reason);
    syntax(reason.to_owned(), offset)
}

impl<'a> Tape<'a> {
    /// Reads a body that must be one JSON object.
    ///
    /// # Errors
    ///
    /// [`Error::NotAnObject`] when the body starts another JSON value, [`Error::Syntax`] for
    /// anything serde_json would refuse (and, with [`Duplicates::Refuse`], a key twice).
    pub(crate) fn parse(text: &'a str, duplicates: Duplicates) -> Result<Self> {
        if u32::try_from(text.len()).is_err() {
            return Err(syntax("body larger than 4 GiB", 0));
        }
        let mut parser = Parser {
            bytes: text.as_bytes(),
            tape: Tape {
                text,
                tokens: Vec::with_capacity(text.len() / 8 + 8),
                order: Vec::with_capacity(text.len() / 16 + 8),
                decoded: Vec::new(),
                floats: Vec::new(),
            },
            scratch: Vec::with_capacity(64),
            duplicates,
            failure: None,
        };
        let start = parser.skip_ws(0);
        match parser.bytes.get(start) {
            Some(b'{') => {}
            Some(b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n') => {
                return Err(Error::NotAnObject)
            }
            Some(_) => return Err(syntax("expected a value", start)),
            None => return Err(syntax("EOF while parsing a value", start)),
        }
        let Ok(end) = parser.object(start, 1) else {
            return Err(parser
                .failure
                .take()
                .unwrap_or_else(|| syntax("unreadable body", start)));
        };
        let end = parser.skip_ws(end);
        if end != parser.bytes.len() {
            return Err(syntax("trailing characters", end));
        }
        Ok(parser.tape)
    }

    /// The top-level object.
    pub(crate) fn root(&self) -> Value<'_, 'a> {
        Value {
            tape: self,
            index: 0,
        }
    }

    fn token(&self, index: u32) -> Token {
        self.tokens[index as usize]
    }

    /// A key token's text, decoded.
    fn key(&self, index: u32) -> &str {
        key_of(self.text, &self.tokens, &self.decoded, index)
    }

    /// A key token's bytes, decoded.
    fn key_bytes(&self, index: u32) -> &[u8] {
        bytes_of(self.text, &self.tokens, &self.decoded, index)
    }

    /// The key tokens of an object, sorted by key (duplicates resolved).
    fn sorted(&self, object: Token) -> &[u32] {
        let at = object.aux as usize;
        let len = self.order[at] as usize;
        &self.order[at + 1..at + 1 + len]
    }

    /// Writes the top-level object in canonical form, leaving out the members `skip` names.
    pub(crate) fn write_canonical(&self, out: &mut Vec<u8>, skip: impl Fn(&str) -> bool) {
        out.reserve(self.text.len() + 16);
        out.push(b'{');
        let mut first = true;
        for &key in self.sorted(self.token(0)) {
            if self.token(key + 1).kind != Kind::Null && !skip(self.key(key)) {
                self.write_member(out, key, &mut first);
            }
        }
        out.push(b'}');
    }

    fn write_object(&self, out: &mut Vec<u8>, index: u32) {
        out.push(b'{');
        let mut first = true;
        for &key in self.sorted(self.token(index)) {
            if self.token(key + 1).kind != Kind::Null {
                self.write_member(out, key, &mut first);
            }
        }
        out.push(b'}');
    }

    fn write_member(&self, out: &mut Vec<u8>, key: u32, first: &mut bool) {
        if !*first {
            out.push(b',');
        }
        *first = false;
        let (k, v) = (self.token(key), self.token(key + 1));
        let bytes = self.text.as_bytes();
        // `"key":value` as one copy when the body has it that way: a key and a scalar without
        // escapes, nothing but the colon between them.
        if k.kind == Kind::Str
            && matches!(v.kind, Kind::Str | Kind::Int | Kind::True | Kind::False)
            && v.start == k.end + 1
        {
            out.extend_from_slice(&bytes[k.start as usize..v.end as usize]);
            return;
        }
        self.write_string(out, key);
        out.push(b':');
        self.write_value(out, key + 1);
    }

    fn write_string(&self, out: &mut Vec<u8>, index: u32) {
        let token = self.token(index);
        if token.kind == Kind::EscStr {
            write_json(out, self.decoded[token.aux as usize].as_str());
        } else {
            // Without escapes the text holds no quote, backslash or control character: it is
            // exactly what serde_json's escaper would write.
            out.extend_from_slice(&self.text.as_bytes()[token.start as usize..token.end as usize]);
        }
    }

    fn write_value(&self, out: &mut Vec<u8>, index: u32) {
        let token = self.token(index);
        match token.kind {
            Kind::Null => out.extend_from_slice(b"null"),
            Kind::True => out.extend_from_slice(b"true"),
            Kind::False => out.extend_from_slice(b"false"),
            Kind::Int => out
                .extend_from_slice(&self.text.as_bytes()[token.start as usize..token.end as usize]),
            Kind::Float => write_json(out, &self.floats[token.aux as usize]),
            Kind::Str | Kind::EscStr => self.write_string(out, index),
            Kind::Array => {
                out.push(b'[');
                let mut item = index + 1;
                while item < token.next {
                    if item > index + 1 {
                        out.push(b',');
                    }
                    self.write_value(out, item);
                    item = self.token(item).next;
                }
                out.push(b']');
            }
            Kind::Object => self.write_object(out, index),
        }
    }
}

/// The canonical form of a whole body, or why it is refused (the property tests and the
/// differential fuzz target compare it with the tree oracle).
#[cfg(any(test, feature = "oracle"))]
pub(crate) fn canonical_form(text: &str, duplicates: Duplicates) -> Result<Vec<u8>, String> {
    let tape = Tape::parse(text, duplicates).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    tape.write_canonical(&mut out, |_| false);
    Ok(out)
}

fn key_of<'t>(text: &'t str, tokens: &[Token], decoded: &'t [String], index: u32) -> &'t str {
    let token = tokens[index as usize];
    if token.kind == Kind::EscStr {
        &decoded[token.aux as usize]
    } else {
        &text[token.start as usize + 1..token.end as usize - 1]
    }
}

/// A string token's decoded bytes (for comparing: no UTF-8 boundary checks).
fn bytes_of<'t>(text: &'t str, tokens: &[Token], decoded: &'t [String], index: u32) -> &'t [u8] {
    let token = tokens[index as usize];
    if token.kind == Kind::EscStr {
        decoded[token.aux as usize].as_bytes()
    } else {
        &text.as_bytes()[token.start as usize + 1..token.end as usize - 1]
    }
}

/// The first eight bytes of a key, big-endian, zero-padded: comparing two prefixes orders the
/// keys unless they are equal (no key holds a raw NUL, so padding never ties a longer key).
fn prefix(key: &[u8]) -> u64 {
    match key.first_chunk::<8>() {
        Some(head) => u64::from_be_bytes(*head),
        // Byte by byte: a variable-length copy would be a memcpy call per key.
        None => key
            .iter()
            .enumerate()
            .fold(0, |word, (i, &b)| word | u64::from(b) << (56 - 8 * i)),
    }
}

fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Serializing a string or a finite float into a Vec cannot fail.
    let _ = serde_json::to_writer(out, value);
}

/// One value on a tape.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Value<'t, 'a> {
    tape: &'t Tape<'a>,
    index: u32,
}

impl<'t, 'a> Value<'t, 'a> {
    fn token(self) -> Token {
        self.tape.token(self.index)
    }

    fn at(self, index: u32) -> Self {
        Self {
            tape: self.tape,
            index,
        }
    }

    /// True for JSON `null`.
    pub(crate) fn is_null(self) -> bool {
        self.token().kind == Kind::Null
    }

    /// True for an object.
    pub(crate) fn is_object(self) -> bool {
        self.token().kind == Kind::Object
    }

    /// The value's bytes as they are in the body.
    pub(crate) fn raw(self) -> &'a str {
        let token = self.token();
        &self.tape.text[token.start as usize..token.end as usize]
    }

    /// The member `key` of an object (the only one; with [`Duplicates::LastWins`] the last).
    pub(crate) fn get(self, key: &str) -> Option<Self> {
        let token = self.token();
        if token.kind != Kind::Object {
            return None;
        }
        let sorted = self.tape.sorted(token);
        let found = sorted
            .binary_search_by(|&k| self.tape.key_bytes(k).cmp(key.as_bytes()))
            .ok()?;
        Some(self.at(sorted[found] + 1))
    }

    /// An object's members in canonical order (by key, nulls left out).
    pub(crate) fn members(self) -> impl Iterator<Item = (&'t str, Self)> {
        let token = self.token();
        let sorted: &'t [u32] = if token.kind == Kind::Object {
            self.tape.sorted(token)
        } else {
            &[]
        };
        sorted
            .iter()
            .map(move |&k| (self.tape.key(k), self.at(k + 1)))
            .filter(|(_, v)| !v.is_null())
    }

    /// An object's members in body order, nulls and duplicates included.
    pub(crate) fn members_in_body_order(self) -> impl Iterator<Item = (&'t str, Self)> {
        let token = self.token();
        let end = if token.kind == Kind::Object {
            token.next
        } else {
            self.index + 1
        };
        let mut key = self.index + 1;
        std::iter::from_fn(move || {
            if key >= end {
                return None;
            }
            let item = (self.tape.key(key), self.at(key + 1));
            key = self.tape.token(key + 1).next;
            Some(item)
        })
    }

    /// The first member whose key equals `key` without ASCII case, in canonical order.
    pub(crate) fn get_ignore_case(self, key: &str) -> Option<Self> {
        self.members()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    }

    /// An array's elements.
    pub(crate) fn items(self) -> impl Iterator<Item = Self> {
        let token = self.token();
        let end = if token.kind == Kind::Array {
            token.next
        } else {
            self.index + 1
        };
        let mut item = self.index + 1;
        std::iter::from_fn(move || {
            if item >= end {
                return None;
            }
            let value = self.at(item);
            item = self.tape.token(item).next;
            Some(value)
        })
    }

    /// An array's element count.
    #[cfg(test)]
    pub(crate) fn array_len(self) -> Option<usize> {
        let token = self.token();
        (token.kind == Kind::Array).then_some(token.aux as usize)
    }

    /// A string value.
    pub(crate) fn as_str(self) -> Option<&'t str> {
        let token = self.token();
        match token.kind {
            Kind::Str | Kind::EscStr => Some(self.tape.key(self.index)),
            _ => None,
        }
    }

    /// A string value, or an integer written as its decimal text (ids such as FileId sometimes
    /// arrive as numbers). Empty strings count as absent.
    pub(crate) fn as_id(self) -> Option<&'t str> {
        match self.token().kind {
            Kind::Int => Some(self.raw()),
            _ => self.as_str().filter(|s| !s.is_empty()),
        }
    }

    /// An integer value (`None` for floats, as before: `1.0` is not an integer here).
    pub(crate) fn as_i64(self) -> Option<Result<i64, ()>> {
        match self.token().kind {
            Kind::Int => Some(self.raw().parse().map_err(|_| ())),
            _ => None,
        }
    }
}

struct Parser<'a> {
    bytes: &'a [u8],
    tape: Tape<'a>,
    /// Key prefixes and tokens of the objects being read, innermost last.
    scratch: Vec<(u64, u32)>,
    duplicates: Duplicates,
    /// Why the read stopped: the steps return a bare [`Failed`], so their results fit in two
    /// registers instead of being copied through memory with the whole [`Error`] at every `?`.
    failure: Option<Error>,
}

/// A read step failed; the parser holds the error.
struct Failed;

/// Where a step ended, or that it failed.
type Step<T = usize> = std::result::Result<T, Failed>;

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of every byte of `word` equal to `byte` (exact for the lowest such byte).
const fn bytes_equal(word: u64, byte: u8) -> u64 {
    let x = word ^ (ONES * byte as u64);
    x.wrapping_sub(ONES) & !x & HIGHS
}

impl<'a> Parser<'a> {
    /// Keeps `error` as the reason the read stopped.
    #[cold]
    #[inline(never)]
    fn fail(&mut self, error: Error) -> Failed {
        self.failure = Some(error);
        Failed
    }

    #[inline(always)]
    fn skip_ws(&self, mut at: usize) -> usize {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.bytes.get(at) {
            at += 1;
        }
        at
    }

    #[inline(always)]
    fn push(&mut self, kind: Kind, start: usize, end: usize, aux: u32) -> u32 {
        // The body is below 4 GiB, so offsets and counts fit.
        let index = self.tape.tokens.len() as u32;
        self.tape.tokens.push(Token {
            start: start as u32,
            end: end as u32,
            next: index + 1,
            aux,
            kind,
        });
        index
    }

    fn value(&mut self, at: usize, depth: u32) -> Step {
        match self.bytes.get(at) {
            Some(b'{') => self.object(at, depth + 1),
            Some(b'[') => self.array(at, depth + 1),
            Some(b'"') => self.string(at),
            Some(b'-' | b'0'..=b'9') => self.number(at),
            Some(b't') => self.literal(at, b"true", Kind::True),
            Some(b'f') => self.literal(at, b"false", Kind::False),
            Some(b'n') => self.literal(at, b"null", Kind::Null),
            Some(_) => Err(self.fail(syntax("expected value", at))),
            None => Err(self.fail(syntax("EOF while parsing a value", at))),
        }
    }

    /// A value inside a container: strings, the most common, without the call to `value`.
    #[inline(always)]
    fn member_value(&mut self, at: usize, depth: u32) -> Step {
        if self.bytes.get(at) == Some(&b'"') {
            self.string(at)
        } else {
            self.value(at, depth)
        }
    }

    fn literal(&mut self, at: usize, word: &[u8], kind: Kind) -> Step {
        if !self.bytes[at..].starts_with(word) {
            return Err(self.fail(syntax("expected ident", at)));
        }
        self.push(kind, at, at + word.len(), 0);
        Ok(at + word.len())
    }

    fn array(&mut self, at: usize, depth: u32) -> Step {
        if depth >= MAX_DEPTH {
            return Err(self.fail(syntax("recursion limit exceeded", at)));
        }
        let index = self.push(Kind::Array, at, at, 0);
        let mut count = 0u32;
        let mut pos = self.skip_ws(at + 1);
        if self.bytes.get(pos) == Some(&b']') {
            pos += 1;
        } else {
            loop {
                pos = self.member_value(pos, depth)?;
                count += 1;
                pos = self.skip_ws(pos);
                match self.bytes.get(pos) {
                    Some(b',') => pos = self.skip_ws(pos + 1),
                    Some(b']') => {
                        pos += 1;
                        break;
                    }
                    Some(_) => return Err(self.fail(syntax("expected `,` or `]`", pos))),
                    None => return Err(self.fail(syntax("EOF while parsing a list", pos))),
                }
            }
        }
        let next = self.tape.tokens.len() as u32;
        let token = &mut self.tape.tokens[index as usize];
        token.end = pos as u32;
        token.next = next;
        token.aux = count;
        Ok(pos)
    }

    fn object(&mut self, at: usize, depth: u32) -> Step {
        if depth >= MAX_DEPTH {
            return Err(self.fail(syntax("recursion limit exceeded", at)));
        }
        let index = self.push(Kind::Object, at, at, 0);
        let base = self.scratch.len();
        let mut pos = self.skip_ws(at + 1);
        if self.bytes.get(pos) == Some(&b'}') {
            pos += 1;
        } else {
            loop {
                match self.bytes.get(pos) {
                    Some(b'"') => {}
                    Some(_) => return Err(self.fail(syntax("key must be a string", pos))),
                    None => return Err(self.fail(syntax("EOF while parsing an object", pos))),
                }
                let key = self.tape.tokens.len() as u32;
                pos = self.string(pos)?;
                pos = self.skip_ws(pos);
                let Tape {
                    text,
                    tokens,
                    decoded,
                    ..
                } = &self.tape;
                self.scratch
                    .push((prefix(bytes_of(text, tokens, decoded, key)), key));
                match self.bytes.get(pos) {
                    Some(b':') => {}
                    Some(_) => return Err(self.fail(syntax("expected `:`", pos))),
                    None => return Err(self.fail(syntax("EOF while parsing an object", pos))),
                }
                pos = self.skip_ws(pos + 1);
                pos = self.member_value(pos, depth)?;
                pos = self.skip_ws(pos);
                match self.bytes.get(pos) {
                    Some(b',') => pos = self.skip_ws(pos + 1),
                    Some(b'}') => {
                        pos += 1;
                        break;
                    }
                    Some(_) => return Err(self.fail(syntax("expected `,` or `}`", pos))),
                    None => return Err(self.fail(syntax("EOF while parsing an object", pos))),
                }
            }
        }
        let aux = self.sort_members(base)?;
        let next = self.tape.tokens.len() as u32;
        let token = &mut self.tape.tokens[index as usize];
        token.end = pos as u32;
        token.next = next;
        token.aux = aux;
        Ok(pos)
    }

    /// Sorts the object's keys gathered since `base`, resolves duplicates, and appends the
    /// result to the tape's order list; returns where it starts.
    fn sort_members(&mut self, base: usize) -> Step<u32> {
        let Tape {
            text,
            tokens,
            order,
            decoded,
            ..
        } = &mut self.tape;
        let bytes = |index: u32| bytes_of(text, tokens, decoded, index);
        // By prefix first; ties (a key twice) in body order, so the last of a run is the last
        // in the body.
        let cmp = |a: &(u64, u32), b: &(u64, u32)| {
            a.0.cmp(&b.0)
                .then_with(|| bytes(a.1).cmp(bytes(b.1)))
                .then(a.1.cmp(&b.1))
        };
        let members = &mut self.scratch[base..];
        if !members.windows(2).all(|w| cmp(&w[0], &w[1]).is_lt()) {
            members.sort_unstable_by(cmp);
        }
        let at = order.len() as u32;
        order.push(0);
        let mut kept = 0u32;
        for i in 0..members.len() {
            let (this, key) = members[i];
            if let Some(&(next, later)) = members.get(i + 1) {
                if this == next && bytes(key) == bytes(later) {
                    if self.duplicates == Duplicates::Refuse {
                        let error = syntax(
                            format!(
                                "duplicate object key {:?}",
                                key_of(text, tokens, decoded, key)
                            ),
                            tokens[later as usize].start as usize,
                        );
                        return Err(self.fail(error));
                    }
                    continue;
                }
            }
            order.push(key);
            kept += 1;
        }
        order[at as usize] = kept;
        self.scratch.truncate(base);
        Ok(at)
    }

    /// Where the next quote, backslash or control character is, from `at`.
    #[inline(always)]
    fn scan_string(&self, mut at: usize) -> usize {
        let bytes = self.bytes;
        while let Some(chunk) = bytes.get(at..at + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            let word = u64::from_le_bytes(word);
            let found = bytes_equal(word, b'"')
                | bytes_equal(word, b'\\')
                | (word.wrapping_sub(ONES * 0x20) & !word & HIGHS);
            if found != 0 {
                return at + (found.trailing_zeros() / 8) as usize;
            }
            at += 8;
        }
        while let Some(&b) = bytes.get(at) {
            if b == b'"' || b == b'\\' || b < 0x20 {
                break;
            }
            at += 1;
        }
        at
    }

    #[inline(always)]
    fn string(&mut self, at: usize) -> Step {
        let mut pos = at + 1;
        let mut escaped = false;
        loop {
            pos = self.scan_string(pos);
            match self.bytes.get(pos) {
                Some(b'"') => break,
                Some(b'\\') => {
                    // What follows is checked when the string is decoded; skipping it here keeps
                    // an escaped quote from ending the string.
                    escaped = true;
                    pos += 2;
                }
                Some(_) => {
                    return Err(self.fail(syntax(
                        "control character (\\u0000-\\u001F) found while parsing a string",
                        pos,
                    )))
                }
                None => {
                    return Err(self.fail(syntax(
                        "EOF while parsing a string",
                        pos.min(self.bytes.len()),
                    )))
                }
            }
        }
        let end = pos + 1;
        if escaped {
            self.escaped_string(at, end)?;
        } else {
            self.push(Kind::Str, at, end, 0);
        }
        Ok(end)
    }

    /// A string with escape sequences, decoded by serde_json (rare in VOD bodies).
    #[cold]
    #[inline(never)]
    fn escaped_string(&mut self, at: usize, end: usize) -> Step<()> {
        let text = &self.tape.text[at..end];
        let decoded: String =
            serde_json::from_str(text).map_err(|e| self.fail(delegated(&e, at)))?;
        let aux = self.tape.decoded.len() as u32;
        self.tape.decoded.push(decoded);
        self.push(Kind::EscStr, at, end, aux);
        Ok(())
    }

    fn number(&mut self, at: usize) -> Step {
        let bytes = self.bytes;
        let digits = |mut pos: usize| {
            while bytes.get(pos).is_some_and(u8::is_ascii_digit) {
                pos += 1;
            }
            pos
        };
        let negative = bytes[at] == b'-';
        let int_start = at + usize::from(negative);
        let mut pos = match bytes.get(int_start) {
            Some(b'0') => int_start + 1,
            Some(b'1'..=b'9') => digits(int_start + 1),
            _ => return Err(self.fail(syntax("invalid number", int_start))),
        };
        let int_end = pos;
        let mut float = false;
        if bytes.get(pos) == Some(&b'.') {
            let fraction = digits(pos + 1);
            if fraction == pos + 1 {
                return Err(self.fail(syntax("invalid number", fraction)));
            }
            pos = fraction;
            float = true;
        }
        if let Some(b'e' | b'E') = bytes.get(pos) {
            pos += 1;
            if let Some(b'+' | b'-') = bytes.get(pos) {
                pos += 1;
            }
            let exponent = digits(pos);
            if exponent == pos {
                return Err(self.fail(syntax("invalid number", pos)));
            }
            pos = exponent;
            float = true;
        }
        let integer = &self.tape.text[int_start..int_end];
        // serde_json's reading: an integer is a u64, or an i64 when negative (but `-0` and
        // anything out of range are floats).
        let canonical_int = !float
            && if negative {
                integer != "0" && fits(integer, "9223372036854775808")
            } else {
                fits(integer, "18446744073709551615")
            };
        if canonical_int {
            self.push(Kind::Int, at, pos, 0);
        } else {
            let value: f64 = serde_json::from_str(&self.tape.text[at..pos])
                .map_err(|e| self.fail(delegated(&e, at)))?;
            let aux = self.tape.floats.len() as u32;
            self.tape.floats.push(value);
            self.push(Kind::Float, at, pos, aux);
        }
        Ok(pos)
    }
}

/// Whether the decimal digits `n` (no leading zeros) are at most `max`.
fn fits(n: &str, max: &str) -> bool {
    n.len() < max.len() || (n.len() == max.len() && n <= max)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::canonical;

    fn canon(json: &str) -> String {
        let out = canonical_form(json, Duplicates::Refuse).expect("json");
        String::from_utf8(out).expect("utf8")
    }

    #[test]
    fn sorts_drops_nulls_and_strips_whitespace() {
        assert_eq!(
            canon(
                r#" { "b" : [1, null, {"z":null,"y":"\u00e9\n"}], "a": null, "A": -2.5e0, "c": {} } "#
            ),
            r#"{"A":-2.5,"b":[1,null,{"y":"é\n"}],"c":{}}"#
        );
    }

    #[test]
    fn escaped_keys_are_decoded_and_numbers_read_as_serde_json_does() {
        assert_eq!(canon(r#"{"\u0041":1,"B":true}"#), r#"{"A":1,"B":true}"#);
        assert_eq!(
            canon(
                r#"{"n":[0,7,-7,18446744073709551615,-9223372036854775808,1.5,-0,18446744073709551616,-9223372036854775809,1E2,0.1e-2]}"#
            ),
            r#"{"n":[0,7,-7,18446744073709551615,-9223372036854775808,1.5,-0.0,1.8446744073709552e+19,-9.223372036854776e+18,100.0,0.001]}"#
        );
        assert_eq!(
            canon(r#"{"s":["a\"b","c\\d","e\u0001","\u00e9","\ud83d\ude00"]}"#),
            r#"{"s":["a\"b","c\\d","e\u0001","é","😀"]}"#
        );
    }

    #[test]
    fn lookups_read_the_canonical_form() {
        let text =
            r#"{"b":{"FileId":7,"x":null,"fileid":"s"},"a":[1,[2,3],{"k":"v"}],"EventType":"E"}"#;
        let tape = Tape::parse(text, Duplicates::Refuse).expect("json");
        let root = tape.root();
        assert_eq!(root.get("EventType").and_then(Value::as_str), Some("E"));
        let b = root.get("b").expect("b");
        assert_eq!(b.get("FileId").and_then(Value::as_id), Some("7"));
        assert!(b.get("x").is_some_and(Value::is_null));
        assert!(b.get("missing").is_none());
        assert_eq!(
            b.get_ignore_case("FILEID").and_then(Value::as_id),
            Some("7"),
            "sorted: FileId before fileid"
        );
        assert_eq!(b.members().count(), 2, "the null member is left out");
        let a = root.get("a").expect("a");
        assert_eq!(a.array_len(), Some(3));
        let raws: Vec<&str> = a.items().map(Value::raw).collect();
        assert_eq!(raws, ["1", "[2,3]", r#"{"k":"v"}"#]);
        let keys: Vec<&str> = root.members_in_body_order().map(|(k, _)| k).collect();
        assert_eq!(keys, ["b", "a", "EventType"]);
    }

    #[test]
    fn nesting_stops_where_serde_json_stops() {
        let nested = |depth: usize| {
            format!(
                "{{\"a\":{}1{}}}",
                "[".repeat(depth - 1),
                "]".repeat(depth - 1)
            )
        };
        assert!(Tape::parse(&nested(127), Duplicates::Refuse).is_ok());
        let error = Tape::parse(&nested(128), Duplicates::Refuse).expect_err("too deep");
        assert!(error.to_string().contains("recursion limit"), "{error}");
        for depth in [127, 128] {
            assert_eq!(
                canonical::oracle(&nested(depth)).is_ok(),
                depth == 127,
                "the oracle agrees at {depth}"
            );
        }
    }

    #[test]
    fn errors_say_what_and_where() {
        for (text, want) in [
            ("", "EOF while parsing a value at byte 0"),
            ("{\"a\":1,}", "key must be a string at byte 7"),
            ("{\"a\" 1}", "expected `:` at byte 5"),
            ("{\"a\":1} x", "trailing characters at byte 8"),
            ("{\"a\":01}", "expected `,` or `}` at byte 6"),
            ("{\"a\":\"\\x\"}", "invalid escape at byte 5"),
            ("{\"a\":\"x\ny\"}", "control character"),
            ("{\"a\":1,\"a\":2}", "duplicate object key \"a\" at byte 7"),
        ] {
            let error = Tape::parse(text, Duplicates::Refuse).expect_err(text);
            assert!(error.to_string().contains(want), "{text:?}: {error}");
        }
        assert!(matches!(
            Tape::parse(" [1,2]", Duplicates::Refuse),
            Err(Error::NotAnObject)
        ));
    }

    /// JSON text with what the canonical form must see through: any member order, whitespace,
    /// escapes, nulls, every spelling of a number, and sometimes a key twice.
    fn json_text(depth: u32) -> BoxedStrategy<String> {
        let ws = prop_oneof![Just(""), Just(" "), Just("\n\t"), Just("\r\n  ")];
        let number = prop_oneof![
            any::<u64>().prop_map(|n| n.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| format!("{f:e}")),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| f.to_string()),
            prop::sample::select(vec![
                "-0",
                "0",
                "-0.0",
                "0e0",
                "1E+2",
                "1e-2",
                "18446744073709551616",
                "-9223372036854775809",
                "-9223372036854775808",
                "99999999999999999999999",
                "4011111111111111111111111111111111111111111111111",
                "1e400",
                "1.5e308",
                "2.2250738585072014e-308",
                "5e-324",
                "0.30000000000000004",
            ])
            .prop_map(str::to_owned),
        ];
        let string = prop_oneof![
            "[a-zA-Z0-9 é/_\u{7f}-]{0,10}".prop_map(|s| format!("\"{s}\"")),
            prop::sample::select(vec![
                r#""a\"b""#,
                r#""\\""#,
                r#""\u0041""#,
                r#""\ud83d\ude00""#,
                r#""\ud800""#,
                r#""\udc00x""#,
                r#""\n\t\b\f\r\/""#,
                r#""\u00E9""#,
                r#""\x""#,
                r#""""#,
            ])
            .prop_map(str::to_owned),
        ];
        let leaf = prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            Just("false".to_owned()),
            number,
            string.clone(),
        ];
        if depth == 0 {
            return leaf.boxed();
        }
        let inner = json_text(depth - 1);
        let key = prop_oneof!["[A-Za-z]{1,3}".prop_map(|s| format!("\"{s}\"")), string,];
        let member = (key, ws.clone(), inner.clone(), ws.clone())
            .prop_map(|(k, w1, v, w2)| format!("{k}{w1}:{w2}{v}"));
        prop_oneof![
            2 => leaf,
            1 => (prop::collection::vec(inner, 0..5), ws.clone())
                .prop_map(|(items, w)| format!("[{w}{}{w}]", items.join(&format!("{w},")))),
            2 => (prop::collection::vec(member, 0..6), ws, any::<bool>())
                .prop_map(|(mut members, w, twice)| {
                    if twice && !members.is_empty() {
                        members.push(members[0].clone());
                    }
                    format!("{{{w}{}{w}}}", members.join(&format!("{w},")))
                }),
        ]
        .boxed()
    }

    fn object_text() -> impl Strategy<Value = String> {
        json_text(4).prop_map(|v| {
            if v.starts_with('{') {
                v
            } else {
                format!("{{\"v\":{v}}}")
            }
        })
    }

    /// The tape and the oracle accept and refuse alike, and write the same bytes.
    fn agree(
        text: &str,
        oracle: Result<Vec<u8>, String>,
        tape: Result<Vec<u8>, String>,
    ) -> Result<(), TestCaseError> {
        prop_assert_eq!(
            oracle.is_ok(),
            tape.is_ok(),
            "{:?} oracle {:?} tape {:?}",
            text,
            oracle,
            tape
        );
        if let (Ok(a), Ok(b)) = (oracle, tape) {
            prop_assert_eq!(String::from_utf8_lossy(&a), String::from_utf8_lossy(&b));
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The tape writes the oracle's bytes (so ids do not change) and refuses what it refuses.
        #[test]
        fn canonical_form_equals_the_tree_oracle(text in object_text()) {
            agree(&text, canonical::oracle(&text), canonical_form(&text, Duplicates::Refuse))?;
        }

        /// Salvaging reads a key twice as serde_json::Value does: the last wins.
        #[test]
        fn lenient_reading_equals_serde_json_value(text in object_text()) {
            agree(
                &text,
                canonical::oracle_lenient(&text),
                canonical_form(&text, Duplicates::LastWins),
            )?;
        }

        /// A damaged body is refused exactly when serde_json refuses it.
        #[test]
        fn damaged_bodies_are_refused_as_serde_json_refuses_them(
            text in object_text(),
            at in any::<prop::sample::Index>(),
            edit in 0u8..3,
            byte in prop::sample::select(b"{}[]\",:\\ 0-.eE1tnu\x01a".to_vec()),
        ) {
            let mut bytes = text.into_bytes();
            let i = at.index(bytes.len() + 1);
            match edit {
                0 => bytes.insert(i, byte),
                1 if i < bytes.len() => { bytes.remove(i); }
                _ if i < bytes.len() => bytes[i] = byte,
                _ => bytes.push(byte),
            }
            let Ok(text) = String::from_utf8(bytes) else { return Ok(()) };
            agree(&text, canonical::oracle(&text), canonical_form(&text, Duplicates::Refuse))?;
        }
    }
}
