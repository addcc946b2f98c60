//! DESIGN.md §5 as a pure function: the tracker's effects and the portal's settings in, the
//! Bitrix24 intents out. Nothing at all for an inactive portal or an internal call; USER_ID,
//! CRM_CREATE, STATUS_CODE and ADD_TO_CHAT always explicit; one unique EXTERNAL_CALL_ID per call.
//!
//! A call is "reported" once its register intent exists; show, hide and finish only follow for
//! reported calls, so a portal switched on mid-call never gets a finish without a register, and
//! one switched off mid-call still gets its finish (every registered call is finished once).
//!
//! Withheld callers (`anonymous`, no digit in the number: Bitrix24 strips letters and refuses
//! what is left empty with "Unsupported phone number format") are registered with
//! PHONE_NUMBER [`WITHHELD_NUMBER`] and CRM_CREATE 0: the call is on record, but no lead is made
//! for a number that identifies nobody. Feature codes and short internal numbers never get here:
//! the tracker makes such calls internal (`internal_max_digits`).
//!
//! Click-to-call: an agent's outgoing call that matches a pending click (same portal, the
//! clicking user, the same normalised number, see `events::ClickToCalls`) is not registered:
//! Bitrix24 already did, and show/hide/finish go to the click's CALL_ID.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde_json::{json, Map, Value};

use super::events::ClickToCalls;
use crate::calls::{CallId, CallKind, CallRecord, Effect, ResponsibleReason};
use crate::directory::PortalEntry;
use crate::settings::{PortalId, UserId, UtmTag};
use crate::store::{CrmCall, IntentKind, NewIntent, OutboxWrite};

/// PHONE_NUMBER for a withheld caller: a digit, so Bitrix24 takes it; no real number, so it
/// matches no CRM entity.
pub(crate) const WITHHELD_NUMBER: &str = "0";

/// Bitrix24 `TYPE`: 1 outgoing, 2 incoming.
const TYPE_OUTGOING: u8 = 1;
const TYPE_INCOMING: u8 = 2;

/// Turns effects into outbox writes, remembering which calls were reported.
#[derive(Debug)]
pub struct Rules {
    /// Distinguishes this run's call ids from earlier runs' (the tracker counts from 1).
    boot: u64,
    /// Show/hide wait this long so a ring-all group's cards travel in one call.
    window_ms: u64,
    reported: HashSet<(PortalId, CallId)>,
    /// Pending click-to-calls (shared with the event processor).
    clicks: Option<Arc<ClickToCalls>>,
    /// Calls restored from an earlier run keep that run's key.
    restored: HashMap<CallId, String>,
}

impl Rules {
    /// `boot` is a value unique to this process run (start time in ms).
    pub fn new(boot: u64, window_ms: u64) -> Self {
        Self { boot, window_ms, reported: HashSet::new(), clicks: None, restored: HashMap::new() }
    }

    /// Outgoing calls matching a pending click-to-call take its CALL_ID instead of a register.
    #[must_use]
    pub fn with_click_to_calls(mut self, clicks: Arc<ClickToCalls>) -> Self {
        self.clicks = Some(clicks);
        self
    }

    /// Calls restored after a restart: they keep their earlier key, and those Bitrix24 knows
    /// (`reported`) get their show, hide and finish.
    #[must_use]
    pub fn with_restored(mut self, calls: &[crate::calls::RestoredCall]) -> Self {
        for c in calls {
            self.restored.insert(c.id, c.call_key.clone());
            if c.reported {
                self.reported.insert((c.portal, c.id));
            }
        }
        self
    }

    /// The outbox key of a call: `{boot}-{id}` for this run's, the earlier key for restored ones.
    pub fn call_key(&self, call: CallId) -> String {
        match self.restored.get(&call) {
            Some(key) => key.clone(),
            None => format!("{}-{}", self.boot, call.0),
        }
    }

    /// What `effect` means for `portal` (its settings now) at `now_ms`; appended to `out`.
    pub fn apply(&mut self, effect: &Effect, portal: Option<&PortalEntry>, now_ms: u64, out: &mut OutboxWrite) {
        match effect {
            Effect::CallStarted { call, portal: pid, kind, customer, line, responsible, reason } => {
                let Some(p) = portal.filter(|p| p.portal.settings.active && *kind != CallKind::Internal) else { return };
                let Some(user) = responsible.or_else(|| default_for(p, *kind)) else { return };
                let key = self.call_key(*call);
                let start = json!({ "kind": kind, "customer": customer, "line": line, "responsible": user, "started_at": now_ms });
                let click = self.clicks.as_ref().filter(|_| *reason == ResponsibleReason::CallingAgent);
                let click = click.and_then(|c| c.take(*pid, user, crate::phone::normalize_number(customer)?.as_u64(), now_ms));
                let b24_call_id = click.map(|c| c.call_id);
                let registered = b24_call_id.is_some();
                out.calls.push(CrmCall { portal: *pid, call_key: key.clone(), external_call_id: format!("callgate-{key}"), b24_call_id, finished: false, start });
                if !registered {
                    let payload = register_params(p, *kind, customer, line.as_deref(), user, &format!("callgate-{key}"), now_ms);
                    out.intents.push(intent(*pid, key, IntentKind::Register, payload, now_ms));
                }
                self.reported.insert((*pid, *call));
            }
            Effect::Show { call, portal: pid, users } | Effect::Hide { call, portal: pid, users } => {
                if !self.reported.contains(&(*pid, *call)) || users.is_empty() {
                    return;
                }
                let kind = if matches!(effect, Effect::Show { .. }) { IntentKind::Show } else { IntentKind::Hide };
                out.intents.push(intent(*pid, self.call_key(*call), kind, json!({ "USER_ID": users }), now_ms + self.window_ms));
            }
            Effect::CallFinished(record) => {
                if !self.reported.remove(&(record.portal, record.id)) {
                    return;
                }
                let payload = finish_params(record, portal);
                out.intents.push(intent(record.portal, self.call_key(record.id), IntentKind::Finish, payload, now_ms));
            }
        }
    }
}

fn intent(portal: PortalId, call_key: String, kind: IntentKind, payload: Value, not_before_ms: u64) -> NewIntent {
    NewIntent { portal, call_key, kind, payload, not_before_ms }
}

fn default_for(p: &PortalEntry, kind: CallKind) -> Option<UserId> {
    match kind {
        CallKind::Outgoing => p.portal.settings.outgoing.default_responsible,
        _ => p.portal.settings.incoming.default_responsible,
    }
}

fn register_params(p: &PortalEntry, kind: CallKind, customer: &str, line: Option<&str>, user: UserId, external_id: &str, now_ms: u64) -> Value {
    let s = &p.portal.settings;
    let (ty, create) = match kind {
        CallKind::Outgoing => (TYPE_OUTGOING, s.outgoing.create_entity),
        _ => (TYPE_INCOMING, s.incoming.create_entity),
    };
    let withheld = crate::calls::is_withheld(customer);
    let (phone, create) = if withheld { (WITHHELD_NUMBER, false) } else { (customer, create) };
    let mut m = Map::new();
    m.insert("USER_ID".into(), json!(user));
    m.insert("PHONE_NUMBER".into(), json!(phone));
    m.insert("TYPE".into(), json!(ty));
    m.insert("CRM_CREATE".into(), json!(u8::from(create)));
    m.insert("SHOW".into(), json!(0));
    m.insert("EXTERNAL_CALL_ID".into(), json!(external_id));
    m.insert("CALL_START_DATE".into(), json!(iso8601_utc(now_ms)));
    if let Some(line) = line {
        m.insert("LINE_NUMBER".into(), json!(line));
    }
    Value::Object(m)
}

fn finish_params(r: &CallRecord, portal: Option<&PortalEntry>) -> Value {
    let chat = portal.is_none_or(|p| p.portal.settings.other.chat_message);
    let user = r.responsible.or_else(|| portal.and_then(|p| default_for(p, r.kind)));
    let mut m = Map::new();
    m.insert("USER_ID".into(), json!(user));
    m.insert("DURATION".into(), json!(r.talk_seconds));
    m.insert("STATUS_CODE".into(), json!(r.status_code.as_deref().unwrap_or("304")));
    m.insert("ADD_TO_CHAT".into(), json!(u8::from(chat)));
    if let Some(reason) = r.failed_reason {
        m.insert("FAILED_REASON".into(), serde_json::to_value(reason).unwrap_or(Value::Null));
    }
    Value::Object(m)
}

/// `crm.lead.update` fields for a lead the call created: only the portal's selected UTM tags,
/// with the values of the called line's static table. `None` when CallTracking is off or no
/// selected tag has a value.
pub fn utm_fields(portal: &PortalEntry, line: Option<&str>) -> Option<Value> {
    let s = &portal.portal.settings;
    if !s.other.calltracking {
        return None;
    }
    let number = line.and_then(crate::phone::normalize_number)?;
    let table = portal.lines.get(&number.as_u64())?.utm.as_ref()?;
    let mut fields = Map::new();
    for tag in &s.other.utm_tags {
        if let Some(v) = table.get(tag) {
            fields.insert(utm_field(*tag).into(), json!(v));
        }
    }
    (!fields.is_empty()).then_some(Value::Object(fields))
}

fn utm_field(tag: UtmTag) -> &'static str {
    match tag {
        UtmTag::UtmSource => "UTM_SOURCE",
        UtmTag::UtmMedium => "UTM_MEDIUM",
        UtmTag::UtmCampaign => "UTM_CAMPAIGN",
        UtmTag::UtmContent => "UTM_CONTENT",
        UtmTag::UtmTerm => "UTM_TERM",
    }
}

/// `2026-03-07T10:20:30+00:00` (Bitrix24 wants ISO 8601 with an offset).
pub fn iso8601_utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}+00:00", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn portal() -> PortalEntry {
        let mut settings = crate::settings::PortalSettings { active: true, ..Default::default() };
        settings.incoming.default_responsible = Some(1);
        settings.outgoing.default_responsible = Some(2);
        let portal = crate::settings::Portal { id: 1, name: None, domain: "https://a.bitrix24.ru/".into(), auth: None, settings };
        PortalEntry::build(portal, Vec::new(), Vec::new())
    }

    fn register_of(customer: &str) -> Value {
        let mut rules = Rules::new(7, 0);
        let started = Effect::CallStarted { call: CallId(1), portal: 1, kind: CallKind::Incoming, customer: customer.into(), line: None, responsible: Some(1), reason: ResponsibleReason::DefaultIncoming };
        let mut out = OutboxWrite::default();
        rules.apply(&started, Some(&portal()), 0, &mut out);
        assert_eq!(out.intents.len(), 1);
        out.intents.remove(0).payload
    }

    #[test]
    fn a_withheld_caller_is_registered_with_the_placeholder_and_no_lead_a_real_one_as_is() {
        for hidden in ["anonymous", "Restricted", ""] {
            let p = register_of(hidden);
            assert_eq!((&p["PHONE_NUMBER"], &p["CRM_CREATE"]), (&json!(WITHHELD_NUMBER), &json!(0)), "{hidden}: {p}");
        }
        let p = register_of("79161234567");
        assert_eq!((&p["PHONE_NUMBER"], &p["CRM_CREATE"]), (&json!("79161234567"), &json!(1)), "the incoming toggle");
    }

    #[test]
    fn iso_dates_have_an_offset() {
        assert_eq!(iso8601_utc(0), "1970-01-01T00:00:00+00:00");
        assert_eq!(iso8601_utc(1_795_551_899_006), "2026-11-24T20:24:59+00:00");
        assert_eq!(iso8601_utc(951_782_400_000), "2000-02-29T00:00:00+00:00");
    }
}
