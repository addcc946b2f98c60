//! Users Bitrix24 refuses, pure: when a register or finish is answered "User is not found or is
//! not active" (the user was deactivated or deleted in Bitrix24, whether it came from a mapping,
//! a default responsible or a personal manager), the call is delivered with the direction's
//! default responsible instead (incoming: `incoming.default_responsible`; outgoing:
//! `outgoing.default_responsible`), and the replacement is noted for the operator.
//!
//! Only a refused user is replaced, and only by a different one: when the default itself is
//! refused there is nobody left to fall back to, and the intent is kept in `outbox_dead`.

use serde_json::{json, Value};

use crate::directory::PortalEntry;
use crate::settings::UserId;
use crate::store::IntentKind;

/// Bitrix24 `TYPE` of outgoing calls (register).
const TYPE_OUTGOING: u64 = 1;

/// The direction of a call, for its default responsible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Incoming (and anything that is not outgoing).
    Incoming,
    /// Outgoing.
    Outgoing,
}

impl Direction {
    /// From a register's parameters (`TYPE` 1 is outgoing).
    pub(crate) fn of_register(payload: &Value) -> Self {
        if payload["TYPE"].as_u64() == Some(TYPE_OUTGOING) {
            Self::Outgoing
        } else {
            Self::Incoming
        }
    }

    /// From what was stored when the call started (`"kind": "outgoing"`).
    pub(crate) fn of_start(start: &Value) -> Self {
        if start["kind"] == "outgoing" {
            Self::Outgoing
        } else {
            Self::Incoming
        }
    }
}

/// The replacement of a refused user.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Replacement {
    /// The intent's parameters with the new USER_ID.
    pub(crate) payload: Value,
    /// The note kept on the call (`GET /api/v1/calls?delivery=problems`).
    pub(crate) note: Value,
}

/// The intent's parameters with its refused USER_ID replaced by the direction's default
/// responsible; `None` when there is no default or it is the refused user itself.
pub(crate) fn replace_user(portal: &PortalEntry, kind: IntentKind, direction: Direction, payload: &Value, now_ms: u64) -> Option<Replacement> {
    let refused = payload["USER_ID"].as_u64();
    let default: UserId = match direction {
        Direction::Incoming => portal.portal.settings.incoming.default_responsible?,
        Direction::Outgoing => portal.portal.settings.outgoing.default_responsible?,
    };
    if refused == Some(default) {
        return None;
    }
    let mut payload = payload.clone();
    payload["USER_ID"] = json!(default);
    let note = json!({
        "what": "user_refused", "method": super::plan::method(kind), "user_refused": refused,
        "replaced_by": default, "reason": "User is not found or is not active", "at": now_ms,
    });
    Some(Replacement { payload, note })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn portal(incoming: Option<UserId>, outgoing: Option<UserId>) -> PortalEntry {
        let mut settings = crate::settings::PortalSettings::default();
        settings.incoming.default_responsible = incoming;
        settings.outgoing.default_responsible = outgoing;
        let portal = crate::settings::Portal { id: 1, name: None, domain: "https://a.bitrix24.ru/".into(), auth: None, settings };
        PortalEntry::build(portal, Vec::new(), Vec::new())
    }

    #[test]
    fn a_refused_user_is_replaced_by_the_default_of_the_calls_direction() {
        let p = portal(Some(1), Some(2));
        let reg = json!({"USER_ID": 7, "TYPE": 2, "PHONE_NUMBER": "79161234567"});
        let r = replace_user(&p, IntentKind::Register, Direction::of_register(&reg), &reg, 5).unwrap();
        assert_eq!((r.payload["USER_ID"].clone(), r.payload["PHONE_NUMBER"].clone()), (json!(1), json!("79161234567")));
        assert_eq!((r.note["user_refused"].clone(), r.note["replaced_by"].clone()), (json!(7), json!(1)));
        let fin = json!({"USER_ID": 7, "DURATION": 12, "STATUS_CODE": "200"});
        let r = replace_user(&p, IntentKind::Finish, Direction::of_start(&json!({"kind": "outgoing"})), &fin, 5).unwrap();
        assert_eq!((r.payload["USER_ID"].clone(), r.payload["DURATION"].clone()), (json!(2), json!(12)));
    }

    #[test]
    fn no_replacement_when_the_default_is_the_refused_user_or_missing() {
        let reg = json!({"USER_ID": 1, "TYPE": 2});
        assert_eq!(replace_user(&portal(Some(1), Some(2)), IntentKind::Register, Direction::Incoming, &reg, 5), None);
        assert_eq!(replace_user(&portal(None, Some(2)), IntentKind::Register, Direction::Incoming, &json!({"USER_ID": 7}), 5), None);
    }
}
