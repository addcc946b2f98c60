//! Every routing decision, recorded for the audit (a bounded ring shown by the admin API) and,
//! once the call tracker exists, handed to it.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;

use super::decide::Reason;
use super::number::Number;
use crate::settings::{PortalId, UserId};

/// One decision.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DecisionRecord {
    /// Wall-clock time, milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// SIP Call-ID (lossy UTF-8), or empty for HTTP decisions.
    pub call_id: String,
    /// The portal, when found.
    pub portal_id: Option<PortalId>,
    /// The normalised caller number (JSON: a string of digits).
    #[serde(serialize_with = "digits")]
    pub caller: Option<u64>,
    /// The responsible user found in the index.
    pub manager: Option<UserId>,
    /// The extension routed to, or null for "no decision".
    pub target: Option<Arc<str>>,
    /// `redirect` or `no_decision`.
    pub outcome: &'static str,
    /// Why.
    pub reason: Reason,
    /// `sip` or `http`.
    pub source: &'static str,
}

impl DecisionRecord {
    /// A record stamped now; `call_id` is empty for HTTP decisions, `source` is `sip` or `http`.
    pub fn new(call_id: &[u8], portal: Option<PortalId>, caller: Option<Number>, manager: Option<UserId>, target: Option<Arc<str>>, reason: Reason, source: &'static str) -> Self {
        Self {
            at_ms: now_ms(),
            // Valid UTF-8 (the usual case) is checked word by word; only the rest goes lossy.
            call_id: std::str::from_utf8(call_id).map_or_else(|_| String::from_utf8_lossy(call_id).into_owned(), str::to_owned),
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
