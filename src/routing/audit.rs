//! Every routing decision, recorded for the audit (a bounded ring shown by the admin API) and,
//! once the call tracker exists, handed to it.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;

use super::decide::Reason;
use crate::phone::Number;
use crate::settings::{PortalId, UserId};

/// One decision.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct DecisionRecord {
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// SIP Call-ID (lossy UTF-8), or empty for HTTP decisions.
    #[schema(value_type = String)]
    pub call_id: CallIdText,
    /// The portal, when found.
    #[schema(value_type = Option<i64>)]
    pub portal_id: Option<PortalId>,
    /// The normalised caller number (JSON: a string of digits).
    #[serde(serialize_with = "digits")]
    #[schema(value_type = Option<String>, example = "74951234567")]
    pub caller: Option<u64>,
    /// The responsible user found in the index.
    #[schema(value_type = Option<u64>)]
    pub manager: Option<UserId>,
    /// The extension routed to, or null for "no decision".
    pub target: Option<Arc<str>>,
    /// `redirect` or `no_decision`.
    #[schema(examples("redirect", "no_decision"))]
    pub outcome: &'static str,
    /// Why.
    pub reason: Reason,
    /// `sip` or `http`.
    #[schema(examples("sip", "http"))]
    pub source: &'static str,
}

impl DecisionRecord {
    /// A record stamped now; `call_id` is empty for HTTP decisions, `source` is `sip` or `http`.
    pub fn new(call_id: &[u8], portal: Option<PortalId>, caller: Option<Number>, manager: Option<UserId>, target: Option<Arc<str>>, reason: Reason, source: &'static str) -> Self {
        Self {
            at_ms: now_ms(),
            call_id: CallIdText::new(call_id),
            portal_id: portal,
            caller: caller.map(Number::as_u64),
            manager,
            outcome: if target.is_some() { "redirect" } else { "no_decision" },
            target,
            reason,
            source,
        }
    }
}

/// A Call-ID as text: kept inline up to [`CallIdText::INLINE`] bytes (nearly every Call-ID), so
/// recording a decision allocates nothing and dropping the oldest record frees nothing; longer
/// ones go to the heap. Serialised as a JSON string.
#[derive(Clone, PartialEq, Eq)]
pub struct CallIdText(Repr);

#[derive(Clone, PartialEq, Eq)]
enum Repr {
    Inline { len: u8, buf: [u8; CallIdText::INLINE] },
    Heap(Box<str>),
}

impl CallIdText {
    /// Longest Call-ID kept inline.
    pub const INLINE: usize = 62;

    /// From raw header bytes: valid UTF-8 as is (the usual case), anything else lossily.
    pub fn new(raw: &[u8]) -> Self {
        match std::str::from_utf8(raw) {
            Ok(text) if text.len() <= Self::INLINE => {
                let mut buf = [0u8; Self::INLINE];
                buf[..text.len()].copy_from_slice(text.as_bytes());
                Self(Repr::Inline { len: text.len() as u8, buf })
            }
            Ok(text) => Self(Repr::Heap(text.into())),
            Err(_) => Self(Repr::Heap(String::from_utf8_lossy(raw).into())),
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Only ever filled from a `&str` of `len` bytes, so the prefix is valid UTF-8.
            Repr::Inline { len, buf } => std::str::from_utf8(&buf[..usize::from(*len)]).unwrap_or_default(),
            Repr::Heap(s) => s,
        }
    }
}

impl std::ops::Deref for CallIdText {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Debug for CallIdText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for CallIdText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

fn digits<S: serde::Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(n) => s.collect_str(n),
        None => s.serialize_none(),
    }
}

// Milliseconds since the epoch (the audit's clock; the decision itself never reads it).
use crate::telemetry::unix_ms as now_ms;

/// The most recent decisions, newest last; bounded.
pub struct DecisionLog {
    // Held only for a push or a copy, never across an await.
    ring: Mutex<VecDeque<DecisionRecord>>,
    capacity: usize,
}

impl DecisionLog {
    /// A log keeping `capacity` records.
    pub fn new(capacity: usize) -> Self {
        Self { ring: Mutex::new(VecDeque::with_capacity(capacity.min(4096))), capacity }
    }

    /// Records a decision, dropping the oldest when full.
    pub fn push(&self, rec: DecisionRecord) {
        let mut ring = self.ring.lock();
        if ring.len() == self.capacity {
            ring.pop_front();
        }
        ring.push_back(rec);
    }

    /// The newest `limit` records, newest first.
    pub fn recent(&self, limit: usize) -> Vec<DecisionRecord> {
        self.ring.lock().iter().rev().take(limit).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::CallIdText;

    #[test]
    fn call_ids_read_back_whatever_their_length_or_encoding() {
        let long = "x".repeat(CallIdText::INLINE + 1);
        let exact = "y".repeat(CallIdText::INLINE);
        let cases: &[(&[u8], &str)] = &[
            (b"", ""),
            (b"1-4242@127.0.0.1", "1-4242@127.0.0.1"),
            (exact.as_bytes(), &exact),
            (long.as_bytes(), &long),
            (b"a\xffb", "a\u{fffd}b"),
        ];
        for (raw, want) in cases {
            let id = CallIdText::new(raw);
            assert_eq!(id.as_str(), *want);
            assert_eq!(serde_json::to_string(&id).unwrap(), serde_json::to_string(want).unwrap());
        }
    }
}
