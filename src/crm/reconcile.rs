//! Start-up reconciliation (after a crash or a stop with calls open): every call reported to
//! Bitrix24 but never finished lost its tracker state with the old process, so it is finished
//! now with what was persisted when it started, marked so (`FAILED_REASON: call_state_lost`).
//! Calls restored from a checkpoint (`calls::restore_calls`) are not: their tracker state is
//! back, and the tracker finishes them with what really happened.
//! Without this Bitrix24 would keep the call open and hand its CALL_ID to the next call with
//! the same user and number for 30 minutes (bitrix24-rest.md §11.1).

use std::collections::HashSet;

use serde_json::json;

use crate::directory::Snapshot;
use crate::store::{IntentKind, NewIntent, OutboxWrite, Store, StoreError};

/// Queues a finish for every open call without one, except the calls in `restored` (the call
/// tracker took them back from their checkpoints and finishes them itself); returns how many.
/// Run before SIP starts.
///
/// # Errors
/// The store failed.
pub fn reconcile(store: &dyn Store, snap: &Snapshot, now_ms: u64, restored: &HashSet<String>) -> Result<usize, StoreError> {
    let mut w = OutboxWrite::default();
    for call in store.open_crm_calls()? {
        if restored.contains(&call.call_key) || store.finish_queued(call.portal, &call.call_key)? {
            continue;
        }
        let portal = snap.portals.get(&call.portal);
        let chat = portal.is_none_or(|p| p.portal.settings.other.chat_message);
        let status = if call.start["kind"] == "outgoing" { "480" } else { "304" };
        let payload = json!({
            "USER_ID": call.start["responsible"], "DURATION": 0, "STATUS_CODE": status,
            "ADD_TO_CHAT": u8::from(chat), "FAILED_REASON": "call_state_lost",
        });
        w.intents.push(NewIntent { portal: call.portal, call_key: call.call_key, kind: IntentKind::Finish, payload, not_before_ms: now_ms });
    }
    let n = w.intents.len();
    if n > 0 {
        store.outbox_write(&w, now_ms)?;
    }
    Ok(n)
}
