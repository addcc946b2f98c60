//! Errors Bitrix24 reports inside a success (bitrix24-rest.md §5.2, pitfall 4): HTTP 200 with
//! `LEAD_CREATION_ERROR` ("Lead creation is disabled for local users") in the result of
//! `telephony.externalcall.register`. The call *is* registered (its CALL_ID is used as usual),
//! but what the operator expected (a lead) did not happen, silently. Every such field is
//! counted (`callgate_b24_errors_in_success_total{method,field}`), logged once, and kept for the
//! call view (`GET /api/v1/calls/{id}`, field `bitrix24_notices`).
//!
//! The memory is bounded (the oldest calls' notices are forgotten first) and lives as long as
//! the process, like the tracker's memory of finished calls.

use std::collections::{HashMap, HashSet, VecDeque};

use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;

use crate::settings::PortalId;

/// Calls whose notices are remembered at most.
const CAP: usize = 10_000;

/// One error Bitrix24 reported inside a successful answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Notice {
    /// The method that answered (`telephony.externalcall.register`).
    pub method: String,
    /// The result field (`LEAD_CREATION_ERROR`).
    pub field: String,
    /// Bitrix24's text.
    pub message: String,
}

#[derive(Default)]
struct Memory {
    /// The boot stamps of the call keys (`{boot}-{call id}`) of the runs in this process (one
    /// in production; tests run several gateways): a call of an earlier process, finished
    /// after a restart, has another stamp and never shows on a call of this run.
    boots: HashSet<u64>,
    by_call: HashMap<(PortalId, String), Vec<Notice>>,
    order: VecDeque<(PortalId, String)>,
}

static MEMORY: Mutex<Option<Memory>> = Mutex::new(None);

fn with<R>(f: impl FnOnce(&mut Memory) -> R) -> R {
    f(MEMORY.lock().get_or_insert_with(Memory::default))
}

/// Names a run's boot stamp, so the call view finds its calls' notices by call id.
pub fn set_boot(boot: u64) {
    with(|m| m.boots.insert(boot));
}

/// Looks for errors inside `result` of `method` answered for the outbox call `call_key`;
/// counts, logs and remembers each. Returns how many there were.
pub fn note(portal: PortalId, call_key: &str, method: &str, result: &Value) -> usize {
    let found = bitrix24::errors_inside(result);
    if found.is_empty() {
        return 0;
    }
    let notices: Vec<Notice> = found
        .into_iter()
        .map(|(field, message)| {
            metrics::counter!("callgate_b24_errors_in_success_total", "method" => method.to_owned(), "field" => field.clone()).increment(1);
            tracing::warn!(portal, call = call_key, method, field = %field, message = %message, "Bitrix24 accepted the request but reports an error inside its answer");
            Notice { method: method.to_owned(), field, message }
        })
        .collect();
    let n = notices.len();
    with(|m| {
        let key = (portal, call_key.to_owned());
        if !m.by_call.contains_key(&key) {
            m.order.push_back(key.clone());
        }
        m.by_call.entry(key).or_default().extend(notices);
        while m.order.len() > CAP {
            if let Some(old) = m.order.pop_front() {
                m.by_call.remove(&old);
            }
        }
    });
    n
}

/// The notices of call `call_id` of this run on `portal` (empty when none).
pub fn for_call(portal: PortalId, call_id: u64) -> Vec<Notice> {
    with(|m| {
        m.boots
            .iter()
            .find_map(|boot| m.by_call.get(&(portal, format!("{boot}-{call_id}"))))
            .cloned()
            .unwrap_or_default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_error_inside_a_register_answer_is_remembered_for_its_call_only() {
        set_boot(77);
        let ok = json!({"CALL_ID": "externalCall.a.1", "CRM_CREATED_LEAD": 5, "CRM_ENTITY_TYPE": "LEAD"});
        assert_eq!(note(9, "77-1", "telephony.externalcall.register", &ok), 0);
        let failed = json!({"CALL_ID": "externalCall.b.1", "CRM_CREATED_LEAD": null, "CRM_ENTITY_TYPE": "", "CRM_ENTITY_ID": null,
            "LEAD_CREATION_ERROR": "Lead creation is disabled for local users"});
        assert_eq!(note(9, "77-2", "telephony.externalcall.register", &failed), 1);
        assert!(for_call(9, 1).is_empty());
        assert_eq!(
            for_call(9, 2),
            vec![Notice {
                method: "telephony.externalcall.register".into(),
                field: "LEAD_CREATION_ERROR".into(),
                message: "Lead creation is disabled for local users".into()
            }]
        );
        assert!(for_call(8, 2).is_empty(), "per portal");
    }
}
