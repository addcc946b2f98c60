//! The checkpoint driver: restores the calls an earlier run left open ([`restore_calls`], once
//! at start, before SIP is served) and writes the tracker's checkpoints to the store
//! ([`run_saver`]) on its own schedule.
//!
//! Why a schedule and not a write per change: the SIP path only marks a call dirty (a set
//! insert under the tracker's lock); every `calls.checkpoint_interval` (250 ms) the saver takes
//! the dirty calls and writes them in **one** transaction (SQLite `synchronous=FULL`), with the
//! time of the checkpoint (`alive`). While calls are open and nothing changes it still writes
//! `alive` once a second, the evidence that they were up. A crash loses at most the changes of
//! the last interval (a call seen to start within it is finished as `call_state_lost`, as
//! before; a call checkpointed once is never lost), and a restored call's talk time is known up
//! to the last `alive`, at most a second before the crash.
//!
//! Rows of finished calls are deleted one interval after the finish left the tracker, so the
//! finish reaches the outbox first; a row whose finish is already queued is dropped at restore.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{CallId, CallsHandle, SavedCall};
use crate::settings::PortalId;
use crate::store::{CallCheckpoint, CheckpointWrite, Store, StoreError, StoreHandle};

/// The outbox key of every tracked call: `{boot}-{id}` for calls of this run (as
/// `crm::Rules::call_key`), the earlier run's key for restored calls.
#[derive(Debug, Clone, Default)]
pub struct CallKeys {
    boot: u64,
    restored: HashMap<CallId, String>,
}

impl CallKeys {
    /// The key of call `id`.
    #[must_use]
    pub fn key(&self, id: CallId) -> String {
        match self.restored.get(&id) {
            Some(k) => k.clone(),
            None => format!("{}-{}", self.boot, id.0),
        }
    }
}

/// One call taken back at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoredCall {
    /// Its new id in this run's tracker.
    pub id: CallId,
    /// Its portal.
    pub portal: PortalId,
    /// Its outbox key (from the run that started it).
    pub call_key: String,
    /// Bitrix24 knows it (a register was queued and no finish yet): its finish is due.
    pub reported: bool,
}

/// What [`restore_calls`] did.
#[derive(Debug, Default)]
pub struct Restored {
    /// The calls taken back.
    pub calls: Vec<RestoredCall>,
    /// The keys for the saver.
    pub keys: CallKeys,
}

/// Takes back every call the earlier run checkpointed and left open, up as of that run's last
/// checkpoint. Rows that cannot be used (corrupt, their finish already queued) are deleted;
/// their calls, if Bitrix24 knows them, are left to `crm::reconcile`.
///
/// # Errors
/// The store failed.
pub fn restore_calls(store: &dyn Store, calls: &CallsHandle, boot: u64, now: Instant) -> Result<Restored, StoreError> {
    let (rows, alive) = store.call_checkpoints()?;
    let open: HashMap<(PortalId, String), ()> = store.open_crm_calls()?.into_iter().map(|c| ((c.portal, c.call_key), ())).collect();
    let evidence = alive.unwrap_or_else(|| calls.wall_ms(now));
    let mut out = Restored { keys: CallKeys { boot, restored: HashMap::new() }, calls: Vec::new() };
    let mut stale = Vec::new();
    for row in rows {
        let reported = open.contains_key(&(row.portal, row.call_key.clone()));
        match restore_one(store, calls, &row, reported, evidence, now)? {
            Some(id) => {
                out.keys.restored.insert(id, row.call_key.clone());
                out.calls.push(RestoredCall { id, portal: row.portal, call_key: row.call_key, reported });
            }
            None => stale.push(row.call_key),
        }
    }
    if !stale.is_empty() {
        tracing::warn!(rows = stale.len(), "call checkpoints not restored (finish already queued, or unreadable)");
        store.checkpoint_calls(&CheckpointWrite { delete: stale, ..CheckpointWrite::default() }, evidence)?;
    }
    Ok(out)
}

fn restore_one(store: &dyn Store, calls: &CallsHandle, row: &CallCheckpoint, reported: bool, evidence: u64, now: Instant) -> Result<Option<CallId>, StoreError> {
    if reported && store.finish_queued(row.portal, &row.call_key)? {
        return Ok(None);
    }
    let Ok(saved) = SavedCall::from_json(&row.state) else {
        return Ok(None);
    };
    if saved.portal() != row.portal {
        return Ok(None);
    }
    Ok(calls.restore(now, saved, evidence))
}

/// How often `alive` is rewritten while calls are open and nothing changes.
const ALIVE_EVERY: Duration = Duration::from_secs(1);

/// Writes checkpoints every `interval` until `cancel`, then a last one (a stop with calls
/// still open leaves them, checkpointed, to the next start). A failed write keeps nothing
/// back: the calls it carried are taken again at their next change, or in the last one.
///
/// # Cancel safety
/// Runs to its last checkpoint after `cancel`; spawn it on a tracked task.
pub async fn run_saver(calls: CallsHandle, store: StoreHandle, keys: CallKeys, interval: Duration, cancel: CancellationToken) {
    let mut saver = Saver { calls, store, keys, deferred: Vec::new(), last_alive: None };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => saver.save(false).await,
        }
    }
    saver.save(true).await;
}

struct Saver {
    calls: CallsHandle,
    store: StoreHandle,
    keys: CallKeys,
    /// Keys of calls gone in the previous round: deleted in this one.
    deferred: Vec<String>,
    last_alive: Option<Instant>,
}

impl Saver {
    async fn save(&mut self, last: bool) {
        let now = Instant::now();
        let cp = self.calls.checkpoint();
        let gone: Vec<String> = cp.gone.iter().map(|&id| self.keys.key(id)).collect();
        // The last round keeps this round's rows: their finish may still be on its way to the
        // outbox, and a restore drops a row whose finish was queued or delivered.
        let delete = std::mem::replace(&mut self.deferred, gone);
        let stale = self.last_alive.is_none_or(|t| now.duration_since(t) >= ALIVE_EVERY);
        if cp.saved.is_empty() && delete.is_empty() && !(cp.open > 0 && (stale || last)) {
            return;
        }
        let upsert = cp.saved.iter().map(|(id, s)| CallCheckpoint { call_key: self.keys.key(*id), portal: s.portal(), state: s.to_json() }).collect();
        let alive = self.calls.wall_ms(now);
        let w = CheckpointWrite { upsert, delete, alive_ms: Some(alive) };
        match self.store.run(move |s| s.checkpoint_calls(&w, alive)).await {
            Ok(()) => self.last_alive = Some(now),
            Err(error) => tracing::error!(%error, "writing the calls' checkpoint failed; retried with the next change"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::calls::{Direction, Event, Offer, Policy};
    use crate::store::{CrmCall, IntentKind, NewIntent, OutboxWrite, SqliteStore};

    fn offer(leg: &str) -> Offer {
        Offer {
            leg: leg.into(),
            portal: 1,
            policy: Policy::default(),
            direction: Direction::FromPbx,
            agent_extension: Arc::from("101"),
            agent_user: Some(11),
            remote: Arc::from("79001234567"),
            remote_is_extension: false,
            correlation: Some(Arc::from(leg)),
            replaces: None,
            referred_by: None,
            line: None,
        }
    }

    fn crm_call(key: &str) -> CrmCall {
        CrmCall { portal: 1, call_key: key.into(), external_call_id: format!("callgate-{key}"), b24_call_id: None, finished: false, start: serde_json::json!({}) }
    }

    #[test]
    fn restore_takes_back_open_calls_under_their_keys_and_drops_finished_or_corrupt_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("c.db")).unwrap();
        let now = Instant::now();
        let old = CallsHandle::new(crate::calls::TrackerConfig::default(), now, 1_000);
        old.feed(now, ["L1", "L2", "L3"].map(|l| Event::Offered(offer(l))));
        let states: Vec<String> = old.checkpoint().saved.iter().map(|(_, s)| s.to_json()).collect();
        let rows = ["100-1", "100-2", "100-3"].iter().zip(&states).map(|(k, s)| CallCheckpoint { call_key: (*k).into(), portal: 1, state: s.clone() });
        let mut upsert: Vec<CallCheckpoint> = rows.collect();
        upsert.push(CallCheckpoint { call_key: "100-9".into(), portal: 1, state: "not json".into() });
        store.checkpoint_calls(&CheckpointWrite { upsert, delete: vec![], alive_ms: Some(5_000) }, 5_000).unwrap();
        // Bitrix24 knows 100-1 (open) and 100-2 (its finish already queued); 100-3 was never reported.
        let finish = NewIntent { portal: 1, call_key: "100-2".into(), kind: IntentKind::Finish, payload: serde_json::json!({}), not_before_ms: 0 };
        store.outbox_write(&OutboxWrite { calls: vec![crm_call("100-1"), crm_call("100-2")], intents: vec![finish] }, 5_000).unwrap();

        let new = CallsHandle::new(crate::calls::TrackerConfig::default(), now, 9_000);
        let restored = restore_calls(&store, &new, 200, now).unwrap();
        let got: Vec<(u64, &str, bool)> = restored.calls.iter().map(|c| (c.id.0, c.call_key.as_str(), c.reported)).collect();
        assert_eq!(got, [(1, "100-1", true), (2, "100-3", false)]);
        assert_eq!((restored.keys.key(CallId(1)), restored.keys.key(CallId(3))), ("100-1".to_owned(), "200-3".to_owned()), "new calls get this run's keys");
        assert_eq!(new.open_count(), 2);
        let left: Vec<String> = store.call_checkpoints().unwrap().0.into_iter().map(|r| r.call_key).collect();
        assert_eq!(left, ["100-1", "100-3"], "the finished and the corrupt rows are deleted");
        assert_eq!(new.get(CallId(1)).map(|r| r.started_at.0), Some(1_000), "times from the earlier run");
    }
}
