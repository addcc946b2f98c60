//! The Bitrix24 outbox tables (migration 2): `crm_calls` (each customer call reported to a
//! portal: its unique EXTERNAL_CALL_ID, the CALL_ID Bitrix24 gave it, finished or not) and
//! `outbox` (intents not yet delivered, in order). Written in one transaction per group of
//! call-state changes; delivered intents are deleted in the same transaction that records what
//! Bitrix24 answered, so a restart resumes exactly where delivery stopped. Migration 5 adds
//! `crm_calls.notes` (what delivery did differently, e.g. a refused user replaced) and the
//! intents' age index behind the overdue count and `delivery_problems`.

use rusqlite::{params, Connection, OptionalExtension};

use super::StoreError;
use crate::settings::PortalId;

/// What an intent asks Bitrix24 to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IntentKind {
    /// `telephony.externalcall.register`
    Register,
    /// `telephony.externalcall.show`
    Show,
    /// `telephony.externalcall.hide`
    Hide,
    /// `telephony.externalcall.finish`
    Finish,
    /// `crm.lead.update` with UTM fields
    LeadUtm,
}

impl IntentKind {
    /// Stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::Show => "show",
            Self::Hide => "hide",
            Self::Finish => "finish",
            Self::LeadUtm => "lead_utm",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "register" => Self::Register,
            "show" => Self::Show,
            "hide" => Self::Hide,
            "finish" => Self::Finish,
            "lead_utm" => Self::LeadUtm,
            _ => return None,
        })
    }
}

/// An intent to enqueue.
#[derive(Debug, Clone)]
pub struct NewIntent {
    /// Portal to deliver to.
    pub portal: PortalId,
    /// The call it belongs to.
    pub call_key: String,
    /// What to do.
    pub kind: IntentKind,
    /// Method parameters (JSON object), without CALL_ID (resolved at delivery).
    pub payload: serde_json::Value,
    /// Not before this time (unix ms): show/hide wait for their aggregation window.
    pub not_before_ms: u64,
}

/// A queued intent.
#[derive(Debug, Clone)]
pub struct Intent {
    /// Queue id (delivery order).
    pub id: i64,
    /// Portal.
    pub portal: PortalId,
    /// Call.
    pub call_key: String,
    /// What to do.
    pub kind: IntentKind,
    /// Parameters.
    pub payload: serde_json::Value,
    /// Failed attempts so far.
    pub attempts: u32,
    /// When it was queued (unix ms): past `crm.delivery_horizon` it is overdue.
    pub created_at_ms: u64,
}

/// A call reported (or to be reported) to a portal.
#[derive(Debug, Clone, PartialEq)]
pub struct CrmCall {
    /// Portal.
    pub portal: PortalId,
    /// callgate's key of the call (unique across restarts).
    pub call_key: String,
    /// The EXTERNAL_CALL_ID sent with register.
    pub external_call_id: String,
    /// Bitrix24's CALL_ID, once registered.
    pub b24_call_id: Option<String>,
    /// A finish was delivered.
    pub finished: bool,
    /// What was known when the call started (for reconciliation after a crash).
    pub start: serde_json::Value,
}

/// One group of call-state changes, written atomically.
#[derive(Debug, Clone, Default)]
pub struct OutboxWrite {
    /// New calls.
    pub calls: Vec<CrmCall>,
    /// Intents.
    pub intents: Vec<NewIntent>,
}

/// What one delivery round achieved, recorded atomically.
#[derive(Debug, Clone, Default)]
pub struct Delivered {
    /// Intents done (delivered, or permanently answered).
    pub done: Vec<i64>,
    /// CALL_IDs learnt from register: (portal, call_key, CALL_ID).
    pub registered: Vec<(PortalId, String, String)>,
    /// Calls whose finish was delivered.
    pub finished: Vec<(PortalId, String)>,
    /// Follow-up intents (e.g. UTM for a lead the register created).
    pub follow_ups: Vec<NewIntent>,
    /// Intents that can never succeed: (id, error), kept in `outbox_dead` for the audit.
    pub dead: Vec<(i64, String)>,
    /// Intents sent again at once with new parameters (a refused USER_ID replaced): (id, payload).
    pub rewritten: Vec<(i64, serde_json::Value)>,
    /// Notes on calls for the operator: (portal, call_key, note), appended to `crm_calls.notes`.
    pub notes: Vec<(PortalId, String, serde_json::Value)>,
    /// Intents waiting for their call's CALL_ID: (id, next attempt, unix ms); attempts unchanged.
    pub postponed: Vec<(i64, u64)>,
    /// The portal answered again after failures: its postponed intents are due now.
    pub pull_forward: Option<PortalId>,
}

/// A call whose delivery needs the operator's eye (`GET /api/v1/calls?delivery=problems`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct DeliveryProblem {
    /// Portal.
    #[schema(value_type = i64)]
    pub portal: PortalId,
    /// callgate's key of the call.
    pub call_key: String,
    /// What was known when the call started (kind, customer, responsible, started_at).
    pub start: serde_json::Value,
    /// Bitrix24's CALL_ID, once registered.
    pub call_id: Option<String>,
    /// A finish was delivered.
    pub finished: bool,
    /// Intents still queued: kind, attempts, queued_at (unix ms), overdue.
    pub queued: Vec<serde_json::Value>,
    /// Intents Bitrix24 refused for good: kind, error, failed_at.
    pub dead: Vec<serde_json::Value>,
    /// What delivery did differently (e.g. `{"user_refused": 7, "replaced_by": 1, "method": ...}`).
    pub notes: Vec<serde_json::Value>,
}

pub(super) fn write(conn: &Connection, w: &OutboxWrite, now_ms: u64) -> Result<(), StoreError> {
    let tx = conn.unchecked_transaction()?;
    for c in &w.calls {
        tx.execute(
            "INSERT OR IGNORE INTO crm_calls (portal_id, call_key, external_call_id, b24_call_id, finished, start, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![c.portal, c.call_key, c.external_call_id, c.b24_call_id, c.finished, c.start.to_string(), now_ms as i64],
        )?;
    }
    insert_intents(&tx, &w.intents, now_ms)?;
    tx.commit()?;
    Ok(())
}

fn insert_intents(conn: &Connection, intents: &[NewIntent], now_ms: u64) -> Result<(), StoreError> {
    let mut stmt = conn.prepare_cached("INSERT INTO outbox (portal_id, call_key, kind, payload, next_at, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")?;
    for i in intents {
        stmt.execute(params![i.portal, i.call_key, i.kind.as_str(), i.payload.to_string(), i.not_before_ms.max(now_ms) as i64, now_ms as i64])?;
    }
    Ok(())
}

pub(super) fn due(conn: &Connection, portal: PortalId, now_ms: u64, limit: usize) -> Result<Vec<Intent>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT id, portal_id, call_key, kind, payload, attempts, created_at FROM outbox WHERE portal_id = ?1 AND next_at <= ?2 ORDER BY id LIMIT ?3")?;
    let rows = stmt.query_map(params![portal, now_ms as i64, limit as i64], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, PortalId>(1)?, r.get::<_, Option<String>>(2)?, r.get::<_, String>(3)?, r.get::<_, String>(4)?, r.get::<_, u32>(5)?, r.get::<_, i64>(6)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, portal, call_key, kind, payload, attempts, created) = row?;
        let Some(kind) = IntentKind::parse(&kind) else { continue };
        let created_at_ms = created.max(0) as u64;
        out.push(Intent { id, portal, call_key: call_key.unwrap_or_default(), kind, payload: serde_json::from_str(&payload)?, attempts, created_at_ms });
    }
    Ok(out)
}

/// The earliest `next_at` of the portal's queue (unix ms), if anything is queued.
pub(super) fn next_due(conn: &Connection, portal: PortalId) -> Result<Option<u64>, StoreError> {
    let at: Option<i64> = conn.query_row("SELECT MIN(next_at) FROM outbox WHERE portal_id = ?1", params![portal], |r| r.get(0))?;
    Ok(at.map(|v| v.max(0) as u64))
}

pub(super) fn delivered(conn: &Connection, d: &Delivered, now_ms: u64) -> Result<(), StoreError> {
    let tx = conn.unchecked_transaction()?;
    for (portal, key, call_id) in &d.registered {
        tx.execute("UPDATE crm_calls SET b24_call_id = ?3 WHERE portal_id = ?1 AND call_key = ?2", params![portal, key, call_id])?;
    }
    for (portal, key) in &d.finished {
        tx.execute("UPDATE crm_calls SET finished = 1 WHERE portal_id = ?1 AND call_key = ?2", params![portal, key])?;
    }
    for (id, error) in &d.dead {
        tx.execute(
            "INSERT OR REPLACE INTO outbox_dead (id, portal_id, call_key, kind, payload, error, failed_at) SELECT id, portal_id, call_key, kind, payload, ?2, ?3 FROM outbox WHERE id = ?1",
            params![id, error, now_ms as i64],
        )?;
        tx.execute("DELETE FROM outbox WHERE id = ?1", params![id])?;
    }
    for id in &d.done {
        tx.execute("DELETE FROM outbox WHERE id = ?1", params![id])?;
    }
    for (id, payload) in &d.rewritten {
        tx.execute("UPDATE outbox SET payload = ?2, next_at = ?3 WHERE id = ?1", params![id, payload.to_string(), now_ms as i64])?;
    }
    for (portal, key, note) in &d.notes {
        add_note(&tx, *portal, key, note)?;
    }
    for (id, at) in &d.postponed {
        tx.execute("UPDATE outbox SET next_at = ?2 WHERE id = ?1", params![id, *at as i64])?;
    }
    if let Some(portal) = d.pull_forward {
        // Everything: what failed, and what waits for a register that failed (a show or hide
        // still in its aggregation window only goes a few hundred milliseconds early).
        tx.execute("UPDATE outbox SET next_at = ?2 WHERE portal_id = ?1 AND next_at > ?2", params![portal, now_ms as i64])?;
    }
    insert_intents(&tx, &d.follow_ups, now_ms)?;
    tx.commit()?;
    Ok(())
}

pub(super) fn retry(conn: &Connection, ids: &[i64], next_at_ms: u64) -> Result<(), StoreError> {
    let tx = conn.unchecked_transaction()?;
    for id in ids {
        tx.execute("UPDATE outbox SET attempts = attempts + 1, next_at = ?2 WHERE id = ?1", params![id, next_at_ms as i64])?;
    }
    tx.commit()?;
    Ok(())
}

pub(super) fn crm_call(conn: &Connection, portal: PortalId, key: &str) -> Result<Option<CrmCall>, StoreError> {
    conn.query_row(
        "SELECT portal_id, call_key, external_call_id, b24_call_id, finished, start FROM crm_calls WHERE portal_id = ?1 AND call_key = ?2",
        params![portal, key],
        row_to_call,
    )
    .optional()?
    .map(|(c, start)| Ok(CrmCall { start: serde_json::from_str(&start)?, ..c }))
    .transpose()
}

/// Calls never finished: after a crash their tracker state is gone (reconciliation).
pub(super) fn open_calls(conn: &Connection) -> Result<Vec<CrmCall>, StoreError> {
    let mut stmt = conn.prepare("SELECT portal_id, call_key, external_call_id, b24_call_id, finished, start FROM crm_calls WHERE finished = 0 ORDER BY created_at")?;
    let rows = stmt.query_map([], row_to_call)?;
    let mut out = Vec::new();
    for row in rows {
        let (c, start) = row?;
        out.push(CrmCall { start: serde_json::from_str(&start)?, ..c });
    }
    Ok(out)
}

/// Whether a finish for `key` is already queued.
pub(super) fn finish_queued(conn: &Connection, portal: PortalId, key: &str) -> Result<bool, StoreError> {
    Ok(conn.query_row("SELECT EXISTS (SELECT 1 FROM outbox WHERE portal_id = ?1 AND call_key = ?2 AND kind = 'finish')", params![portal, key], |r| r.get(0))?)
}

/// Queued intents (all portals).
pub(super) fn depth(conn: &Connection) -> Result<usize, StoreError> {
    let n: i64 = conn.query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))?;
    Ok(n.max(0) as usize)
}

/// Appends `note` to the call's notes (a JSON array).
fn add_note(conn: &Connection, portal: PortalId, key: &str, note: &serde_json::Value) -> Result<(), StoreError> {
    let old: Option<Option<String>> = conn.query_row("SELECT notes FROM crm_calls WHERE portal_id = ?1 AND call_key = ?2", params![portal, key], |r| r.get(0)).optional()?;
    let Some(old) = old else { return Ok(()) };
    let mut notes: Vec<serde_json::Value> = old.as_deref().map(serde_json::from_str).transpose()?.unwrap_or_default();
    notes.push(note.clone());
    conn.execute("UPDATE crm_calls SET notes = ?3 WHERE portal_id = ?1 AND call_key = ?2", params![portal, key, serde_json::Value::from(notes).to_string()])?;
    Ok(())
}

/// Which of `keys` still have a register queued, with when it is tried next (unix ms).
pub(super) fn registers_queued(conn: &Connection, portal: PortalId, keys: &[String]) -> Result<Vec<(String, u64)>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT MIN(next_at) FROM outbox WHERE portal_id = ?1 AND call_key = ?2 AND kind = 'register'")?;
    let mut out = Vec::new();
    for key in keys {
        if let Some(at) = stmt.query_row(params![portal, key], |r| r.get::<_, Option<i64>>(0))? {
            out.push((key.clone(), at.max(0) as u64));
        }
    }
    Ok(out)
}

/// Intents queued before `before_ms`.
pub(super) fn older_than(conn: &Connection, before_ms: u64) -> Result<usize, StoreError> {
    let n: i64 = conn.query_row("SELECT COUNT(*) FROM outbox WHERE created_at < ?1", params![before_ms as i64], |r| r.get(0))?;
    Ok(n.max(0) as usize)
}

/// Calls with overdue or dead-lettered intents, or notes; newest first.
pub(super) fn problems(conn: &Connection, overdue_before_ms: u64, limit: usize) -> Result<Vec<DeliveryProblem>, StoreError> {
    let mut stmt = conn.prepare(
        "SELECT portal_id, call_key, external_call_id, b24_call_id, finished, start, notes FROM crm_calls c
         WHERE notes IS NOT NULL
            OR EXISTS (SELECT 1 FROM outbox o WHERE o.portal_id = c.portal_id AND o.call_key = c.call_key AND o.created_at < ?1)
            OR EXISTS (SELECT 1 FROM outbox_dead d WHERE d.portal_id = c.portal_id AND d.call_key = c.call_key)
         ORDER BY created_at DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![overdue_before_ms as i64, limit as i64], |r| Ok((row_to_call(r)?, r.get::<_, Option<String>>(6)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let ((c, start), notes) = row?;
        let notes: Vec<serde_json::Value> = notes.as_deref().map(serde_json::from_str).transpose()?.unwrap_or_default();
        let queued = queued_of(conn, c.portal, &c.call_key, overdue_before_ms)?;
        let dead = dead_of(conn, c.portal, &c.call_key)?;
        out.push(DeliveryProblem { portal: c.portal, call_key: c.call_key, start: serde_json::from_str(&start)?, call_id: c.b24_call_id, finished: c.finished, queued, dead, notes });
    }
    Ok(out)
}

fn queued_of(conn: &Connection, portal: PortalId, key: &str, overdue_before_ms: u64) -> Result<Vec<serde_json::Value>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT kind, attempts, created_at FROM outbox WHERE portal_id = ?1 AND call_key = ?2 ORDER BY id")?;
    let rows = stmt.query_map(params![portal, key], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?, r.get::<_, i64>(2)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (kind, attempts, at) = row?;
        out.push(serde_json::json!({ "kind": kind, "attempts": attempts, "queued_at": at, "overdue": at < overdue_before_ms as i64 }));
    }
    Ok(out)
}

fn dead_of(conn: &Connection, portal: PortalId, key: &str) -> Result<Vec<serde_json::Value>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT kind, error, failed_at FROM outbox_dead WHERE portal_id = ?1 AND call_key = ?2 ORDER BY id")?;
    let rows = stmt.query_map(params![portal, key], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (kind, error, at) = row?;
        out.push(serde_json::json!({ "kind": kind, "error": error, "failed_at": at }));
    }
    Ok(out)
}

fn row_to_call(r: &rusqlite::Row<'_>) -> rusqlite::Result<(CrmCall, String)> {
    Ok((
        CrmCall {
            portal: r.get(0)?,
            call_key: r.get(1)?,
            external_call_id: r.get(2)?,
            b24_call_id: r.get(3)?,
            finished: r.get(4)?,
            start: serde_json::Value::Null,
        },
        r.get(5)?,
    ))
}
