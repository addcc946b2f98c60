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
