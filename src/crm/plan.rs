//! Planning one delivery round, pure: the portal's due intents (oldest first) and the CALL_IDs
//! already known become at most 50 `batch` commands. Show and hide may travel with their call's
//! register, naming its CALL_ID as `$result[key][CALL_ID]` (both are harmless when repeated);
//! a finish never does: it goes out only once the register's CALL_ID is stored. Otherwise a
//! register+finish batch whose answer was lost would, sent again, register a second call
//! (Bitrix24 hands the same CALL_ID back only for a call still open). Show and hide intents of
//! one call due together merge into one command with a USER_ID array.

use std::collections::{BTreeSet, HashMap};

use serde_json::{json, Value};

use crate::store::{Intent, IntentKind};

/// Sub-calls per `batch` at most (Bitrix24 refuses more).
pub const MAX_BATCH: usize = bitrix24::MAX_BATCH_COMMANDS;

/// One `batch` command.
#[derive(Debug, Clone, PartialEq)]
pub struct Cmd {
    /// Its key in `cmd` (non-numeric, so results are always a map).
    pub key: String,
    /// REST method.
    pub method: &'static str,
    /// Parameters (a JSON object).
    pub params: Value,
    /// Where CALL_ID comes from.
    pub call_id: CallRef,
    /// The intents it delivers.
    pub intents: Vec<i64>,
    /// The intent kind.
    pub kind: IntentKind,
    /// The call.
    pub call_key: String,
}

/// The CALL_ID of a command.
#[derive(Debug, Clone, PartialEq)]
pub enum CallRef {
    /// None needed (register, lead update).
    None,
    /// Known.
    Known(String),
    /// Returned by the register command with this key in the same batch.
    Result(String),
}

/// A planned round.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    /// Commands in order.
    pub(crate) cmds: Vec<Cmd>,
    /// Intents that wait for their call's register (not due or not delivered yet).
    pub(crate) blocked: Vec<i64>,
}

/// Plans a round from `due` intents; `known` maps call keys to CALL_IDs Bitrix24 gave.
pub(crate) fn plan(due: &[Intent], known: &HashMap<String, String>) -> Plan {
    let mut out = Plan::default();
    // finish hides the card of its USER_ID itself: a hide for that user, due in the same round,
    // would only cost a command (bitrix24-rest.md §5.3).
    let finish_user: HashMap<&str, u64> = due.iter().filter(|i| i.kind == IntentKind::Finish).filter_map(|i| Some((i.call_key.as_str(), i.payload["USER_ID"].as_u64()?))).collect();
    let mut redundant = Vec::new();
    let mut registering: HashMap<&str, String> = HashMap::new();
    let mut merged: HashMap<(String, IntentKind), usize> = HashMap::new();
    for i in due {
        if out.cmds.len() >= MAX_BATCH {
            break;
        }
        let call_id = match i.kind {
            IntentKind::Register | IntentKind::LeadUtm => CallRef::None,
            kind => match (known.get(&i.call_key), registering.get(i.call_key.as_str())) {
                (Some(id), _) => CallRef::Known(id.clone()),
                (None, Some(key)) if kind != IntentKind::Finish => CallRef::Result(key.clone()),
                (None, _) => {
                    out.blocked.push(i.id);
                    continue;
                }
            },
        };
        if i.kind == IntentKind::Hide {
            if let Some(&user) = finish_user.get(i.call_key.as_str()) {
                let users: Vec<u64> = i.payload["USER_ID"].as_array().into_iter().flatten().filter_map(Value::as_u64).collect();
                if users.iter().all(|u| *u == user) {
                    redundant.push(i.id);
                    continue;
                }
            }
        }
        if matches!(i.kind, IntentKind::Show | IntentKind::Hide) {
            if let Some(&at) = merged.get(&(i.call_key.clone(), i.kind)) {
                merge_users(&mut out.cmds[at], i);
                continue;
            }
            merged.insert((i.call_key.clone(), i.kind), out.cmds.len());
        }
        // A show after a hide of the same call (or the reverse) starts a new command, so the
        // order the users saw stays right.
        let opposite = if i.kind == IntentKind::Show { IntentKind::Hide } else { IntentKind::Show };
        merged.remove(&(i.call_key.clone(), opposite));
        let key = format!("{}{}", prefix(i.kind), i.id);
        if i.kind == IntentKind::Register {
            registering.insert(&i.call_key, key.clone());
        }
        out.cmds.push(Cmd { key, method: method(i.kind), params: i.payload.clone(), call_id, intents: vec![i.id], kind: i.kind, call_key: i.call_key.clone() });
    }
    // Delivered along with the finish that makes them unnecessary.
    for id in redundant {
        let Some(call) = due.iter().find(|i| i.id == id).map(|i| i.call_key.clone()) else { continue };
        match out.cmds.iter_mut().find(|c| c.kind == IntentKind::Finish && c.call_key == call) {
            Some(fin) => fin.intents.push(id),
            None => out.blocked.push(id), // its finish did not fit in this round
        }
    }
    out
}

fn merge_users(cmd: &mut Cmd, i: &Intent) {
    let mut users: BTreeSet<u64> = cmd.params["USER_ID"].as_array().into_iter().flatten().filter_map(Value::as_u64).collect();
    users.extend(i.payload["USER_ID"].as_array().into_iter().flatten().filter_map(Value::as_u64));
    cmd.params["USER_ID"] = json!(users.into_iter().collect::<Vec<_>>());
    cmd.intents.push(i.id);
}

fn prefix(kind: IntentKind) -> &'static str {
    match kind {
        IntentKind::Register => "reg",
        IntentKind::Show => "show",
        IntentKind::Hide => "hide",
        IntentKind::Finish => "fin",
        IntentKind::LeadUtm => "utm",
    }
}

/// The REST method of an intent kind.
pub(crate) fn method(kind: IntentKind) -> &'static str {
    use bitrix24::telephony::{Finish, Hide, Register, Show};
    match kind {
        IntentKind::Register => Register::METHOD,
        IntentKind::Show => Show::METHOD,
        IntentKind::Hide => Hide::METHOD,
        IntentKind::Finish => Finish::METHOD,
        IntentKind::LeadUtm => bitrix24::crm::LeadUpdate::METHOD,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(id: i64, call: &str, kind: IntentKind, payload: Value) -> Intent {
        Intent { id, portal: 1, call_key: call.into(), kind, payload, attempts: 0, created_at_ms: 0 }
    }

    #[test]
    fn a_finish_waits_for_its_registers_stored_call_id_while_a_show_may_ride_along() {
        let due = [
            intent(1, "a", IntentKind::Register, json!({"USER_ID": 5})),
            intent(2, "a", IntentKind::Show, json!({"USER_ID": [5]})),
            intent(3, "a", IntentKind::Hide, json!({"USER_ID": [5]})),
            intent(4, "a", IntentKind::Finish, json!({"USER_ID": 5})),
        ];
        let p = plan(&due, &HashMap::new());
        let got: Vec<_> = p.cmds.iter().map(|c| (c.kind, c.call_id.clone())).collect();
        assert_eq!(got, [(IntentKind::Register, CallRef::None), (IntentKind::Show, CallRef::Result("reg1".into()))]);
        // The finish waits for the next round, and the hide of its user with it.
        assert_eq!(p.blocked, [4, 3]);
        let known = HashMap::from([("a".to_owned(), "externalCall.x".to_owned())]);
        let p = plan(&due[3..], &known);
        assert_eq!(p.cmds[0].call_id, CallRef::Known("externalCall.x".into()));
    }

    #[test]
    fn a_finish_without_its_register_waits_unless_the_call_id_is_known() {
        let due = [intent(7, "a", IntentKind::Finish, json!({}))];
        assert_eq!(plan(&due, &HashMap::new()).blocked, [7]);
        let known = HashMap::from([("a".to_owned(), "externalCall.x".to_owned())]);
        assert_eq!(plan(&due, &known).cmds[0].call_id, CallRef::Known("externalCall.x".into()));
    }

    #[test]
    fn shows_of_one_call_merge_into_one_user_array_and_keep_order_with_hides() {
        let known = HashMap::from([("a".to_owned(), "C".to_owned())]);
        let due = [
            intent(1, "a", IntentKind::Show, json!({"USER_ID": [11]})),
            intent(2, "a", IntentKind::Show, json!({"USER_ID": [12]})),
            intent(3, "a", IntentKind::Show, json!({"USER_ID": [13]})),
            intent(4, "a", IntentKind::Hide, json!({"USER_ID": [11]})),
            intent(5, "a", IntentKind::Hide, json!({"USER_ID": [13]})),
        ];
        let p = plan(&due, &known);
        let users: Vec<_> = p.cmds.iter().map(|c| (c.method, c.params["USER_ID"].clone(), c.intents.clone())).collect();
        assert_eq!(users, [("telephony.externalcall.show", json!([11, 12, 13]), vec![1, 2, 3]), ("telephony.externalcall.hide", json!([11, 13]), vec![4, 5])]);
    }

    #[test]
    fn a_hide_for_the_user_the_finish_names_travels_with_the_finish_instead() {
        let known = HashMap::from([("a".to_owned(), "C".to_owned())]);
        let due = [
            intent(1, "a", IntentKind::Hide, json!({"USER_ID": [11]})),
            intent(2, "a", IntentKind::Hide, json!({"USER_ID": [12]})),
            intent(3, "a", IntentKind::Finish, json!({"USER_ID": 11})),
        ];
        let p = plan(&due, &known);
        let got: Vec<_> = p.cmds.iter().map(|c| (c.method, c.intents.clone())).collect();
        assert_eq!(got, [("telephony.externalcall.hide", vec![2]), ("telephony.externalcall.finish", vec![3, 1])]);
    }

    #[test]
    fn at_most_fifty_commands_per_round() {
        let due: Vec<_> = (0..80).map(|i| intent(i, &format!("c{i}"), IntentKind::Register, json!({}))).collect();
        assert_eq!(plan(&due, &HashMap::new()).cmds.len(), MAX_BATCH);
    }
}
