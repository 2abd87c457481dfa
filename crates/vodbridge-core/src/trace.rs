//! W3C Trace Context for envelopes: the `traceparent` of the CloudEvents distributed-tracing
//! extension, parsed, written and made up when no tracer is configured.

use std::{
    collections::hash_map::RandomState,
    fmt,
    hash::{BuildHasher, Hasher},
    str::FromStr,
    sync::atomic::{AtomicU64, Ordering},
};

use crate::error::{Error, Result};

/// A W3C `traceparent` (version `00`): trace id, parent span id, sampled flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// 16 bytes, not all zero.
    pub trace_id: [u8; 16],
    /// 8 bytes, not all zero: the span the receiver's span becomes a child of.
    pub span_id: [u8; 8],
    /// The `sampled` trace flag.
    pub sampled: bool,
}

impl TraceParent {
    /// A new trace with random ids, sampled: what an envelope carries when no tracer exports
    /// spans and no upstream trace came with the event, so consumers' spans still share one
    /// trace per event. (Random, not secret: the ids only need to be unique.)
    #[must_use]
    pub fn random() -> Self {
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&nonzero_random().to_be_bytes());
        trace_id[8..].copy_from_slice(&nonzero_random().to_be_bytes());
        Self {
            trace_id,
            span_id: nonzero_random().to_be_bytes(),
            sampled: true,
        }
    }

    /// The same trace with another parent span (a child of this one).
    #[must_use]
    pub fn with_random_span(self) -> Self {
        Self {
            span_id: nonzero_random().to_be_bytes(),
            ..self
        }
    }

    /// The trace id as 32 lowercase hex characters.
    #[must_use]
    pub fn trace_id_hex(&self) -> String {
        hex::encode(self.trace_id)
    }

    /// The span id as 16 lowercase hex characters.
    #[must_use]
    pub fn span_id_hex(&self) -> String {
        hex::encode(self.span_id)
    }
}

/// A 64-bit random value, never zero: SipHash with the process's random keys over a counter.
fn nonzero_random() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    thread_local! {
        static KEYS: RandomState = RandomState::new();
    }
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let value = KEYS.with(|keys| {
            let mut hasher = keys.build_hasher();
            hasher.write_u64(n);
            hasher.finish()
        });
        if value != 0 {
            return value;
        }
    }
}

impl TraceParent {
    /// The header value's 55 ASCII bytes, written without allocating (it is on every event's
    /// path).
    #[must_use]
    pub fn encode(&self) -> [u8; 55] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [b'-'; 55];
        out[..2].copy_from_slice(b"00");
        let mut at = 3;
        for byte in &self.trace_id {
            out[at] = HEX[usize::from(byte >> 4)];
            out[at + 1] = HEX[usize::from(byte & 0x0f)];
            at += 2;
        }
        at += 1;
        for byte in &self.span_id {
            out[at] = HEX[usize::from(byte >> 4)];
            out[at + 1] = HEX[usize::from(byte & 0x0f)];
            at += 2;
        }
        out[53..].copy_from_slice(if self.sampled { b"01" } else { b"00" });
        out
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.encode();
        f.write_str(std::str::from_utf8(&bytes).map_err(|_| fmt::Error)?)
    }
}

impl FromStr for TraceParent {
    type Err = Error;

    /// Reads a `traceparent` header as W3C Trace Context says a receiver must: version `00`
    /// exactly 55 characters; a later version at least that, its first four fields read the
    /// same way; `ff`, upper-case hex and all-zero ids are invalid.
    fn from_str(s: &str) -> Result<Self> {
        let invalid = || Error::InvalidTraceParent(s.chars().take(80).collect());
        let bytes = s.trim().as_bytes();
        let hex = |part: &[u8]| -> Option<Vec<u8>> {
            part.iter()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                .then(|| hex::decode(part).ok())
                .flatten()
        };
        if bytes.len() < 55 || bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return Err(invalid());
        }
        let version = hex(&bytes[..2]).ok_or_else(invalid)?;
        if version[0] == 0xff || (version[0] == 0 && bytes.len() != 55) {
            return Err(invalid());
        }
        if version[0] != 0 && bytes.len() > 55 && bytes[55] != b'-' {
            return Err(invalid());
        }
        let trace = hex(&bytes[3..35]).ok_or_else(invalid)?;
        let span = hex(&bytes[36..52]).ok_or_else(invalid)?;
        let flags = hex(&bytes[53..55]).ok_or_else(invalid)?;
        if trace.iter().all(|&b| b == 0) || span.iter().all(|&b| b == 0) {
            return Err(invalid());
        }
        let mut parent = Self {
            trace_id: [0; 16],
            span_id: [0; 8],
            sampled: flags[0] & 1 == 1,
        };
        parent.trace_id.copy_from_slice(&trace);
        parent.span_id.copy_from_slice(&span);
        Ok(parent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_writes_the_w3c_example() {
        let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parent: TraceParent = text.parse().expect("valid");
        assert!(parent.sampled);
        assert_eq!(parent.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parent.span_id_hex(), "00f067aa0ba902b7");
        assert_eq!(parent.to_string(), text);
        let unsampled: TraceParent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
            .parse()
            .expect("valid");
        assert!(!unsampled.sampled);
        // A later version may append fields; its first four are read as version 00's.
        let future: TraceParent =
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what-comes-next"
                .parse()
                .expect("valid");
        assert!(future.sampled);
    }

    #[test]
    fn refuses_what_w3c_calls_invalid() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(bad.parse::<TraceParent>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn random_parents_are_valid_and_differ() {
        let a = TraceParent::random();
        let b = TraceParent::random();
        assert_ne!(a.trace_id, b.trace_id);
        assert_eq!(a.to_string().parse::<TraceParent>().expect("valid"), a);
        let child = a.with_random_span();
        assert_eq!(child.trace_id, a.trace_id);
        assert_ne!(child.span_id, a.span_id);
    }
}
