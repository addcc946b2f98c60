//! The `call_checkpoints` and `calls_alive` tables: the saved state of every open call (opaque
//! JSON the call tracker wrote), keyed by the call's outbox key, and the time of the last
//! checkpoint written (the last moment the open calls were known to be up).
//!
//! One checkpoint is one transaction: upserts, deletes and the new `alive` time together, so
//! a crash leaves the table as of some checkpoint, never half of one.

use rusqlite::{params, Connection};

use super::StoreError;
use crate::settings::PortalId;

/// One open call's saved state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallCheckpoint {
    /// The call's outbox key (`crm_calls.call_key`).
    pub call_key: String,
    /// Its portal.
    pub portal: PortalId,
    /// The tracker's saved state (JSON).
    pub state: String,
}

/// What a checkpoint writes.
#[derive(Debug, Default)]
pub struct CheckpointWrite {
    /// Calls whose state changed.
    pub upsert: Vec<CallCheckpoint>,
    /// Calls no longer open.
    pub delete: Vec<String>,
    /// When this checkpoint was taken (unix ms); `None` leaves the stored time.
    pub alive_ms: Option<u64>,
}

/// Writes one checkpoint in one transaction.
pub(super) fn write(conn: &Connection, w: &CheckpointWrite, now_ms: u64) -> Result<(), StoreError> {
    let tx = conn.unchecked_transaction()?;
    {
        let mut up = tx.prepare_cached(
            "INSERT INTO call_checkpoints (call_key, portal_id, state, saved_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (call_key) DO UPDATE SET portal_id = excluded.portal_id, state = excluded.state, saved_at = excluded.saved_at",
        )?;
        for c in &w.upsert {
            up.execute(params![c.call_key, c.portal, c.state, now_ms as i64])?;
        }
        let mut del = tx.prepare_cached("DELETE FROM call_checkpoints WHERE call_key = ?1")?;
        for key in &w.delete {
            del.execute(params![key])?;
        }
        if let Some(alive) = w.alive_ms {
            tx.execute(
                "INSERT INTO calls_alive (id, alive_ms) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET alive_ms = excluded.alive_ms",
                params![alive as i64],
            )?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Every saved call, and the time of the last checkpoint (unix ms), if one was ever written.
pub(super) fn load(conn: &Connection) -> Result<(Vec<CallCheckpoint>, Option<u64>), StoreError> {
    let mut stmt = conn.prepare("SELECT call_key, portal_id, state FROM call_checkpoints ORDER BY saved_at, call_key")?;
    let rows = stmt.query_map([], |r| Ok(CallCheckpoint { call_key: r.get(0)?, portal: r.get(1)?, state: r.get(2)? }))?;
    let calls = rows.collect::<Result<Vec<_>, _>>()?;
    let alive: Option<i64> = conn.query_row("SELECT max(alive_ms) FROM calls_alive", [], |r| r.get(0))?;
    Ok((calls, alive.and_then(|a| u64::try_from(a).ok())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{SqliteStore, Store};

    fn row(key: &str, state: &str) -> CallCheckpoint {
        CallCheckpoint { call_key: key.into(), portal: 1, state: state.into() }
    }

    #[test]
    fn a_checkpoint_upserts_deletes_and_moves_alive_in_one_write() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("c.db")).unwrap();
        assert_eq!(s.call_checkpoints().unwrap(), (vec![], None), "nothing before the first checkpoint");
        let w = CheckpointWrite { upsert: vec![row("b-1", "{1}"), row("b-2", "{2}")], delete: vec![], alive_ms: Some(1_000) };
        s.checkpoint_calls(&w, 1_000).unwrap();
        let w = CheckpointWrite { upsert: vec![row("b-1", "{1'}")], delete: vec!["b-2".into(), "unknown".into()], alive_ms: Some(2_000) };
        s.checkpoint_calls(&w, 2_000).unwrap();
        assert_eq!(s.call_checkpoints().unwrap(), (vec![row("b-1", "{1'}")], Some(2_000)));
        let w = CheckpointWrite { delete: vec!["b-1".into()], ..CheckpointWrite::default() };
        s.checkpoint_calls(&w, 3_000).unwrap();
        assert_eq!(s.call_checkpoints().unwrap(), (vec![], Some(2_000)), "alive kept when not given");
    }
}
