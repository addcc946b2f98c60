//! REST telephony, part 1 (bitrix24-rest.md §5.2, §5.4, §10.5 items 16-17):
//! `telephony.externalcall.register` with the 30-minute re-registration dedup and CRM binding,
//! and `show`/`hide`. Finish and records are in `finish.rs`, lines in `lines.rs`.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::auth::{random_hex, Caller, Owner};
use super::clock::{parse_iso, Now};
use super::crm::{normalize_phone, EntityKind};
use super::envelope::ApiError;
use super::events;
use super::lines::Line;
use super::params::Param;
use super::state::State;
use super::users::Users;

/// The dedup window: an unfinished call started less than this long ago is handed out again.
pub const DEDUP_WINDOW_SECS: i64 = 30 * 60;

/// What `finish` was called with (as sent) and what it decided.
#[derive(Clone, Debug, PartialEq)]
pub struct FinishParams {
    pub user_id: u64,
    pub duration: u64,
    /// `STATUS_CODE` as sent (None = absent).
    pub status_code: Option<String>,
    /// The effective `CALL_FAILED_CODE` (default 200 if DURATION > 0 else 304).
    pub call_failed_code: String,
    /// `ADD_TO_CHAT` as sent (None = absent), e.g. `Some("0")`.
    pub add_to_chat: Option<String>,
    /// Whether a chat message was recorded (sent value, else the configured default).
    pub chat_message: bool,
    pub failed_reason: Option<String>,
    pub cost: Option<String>,
    pub cost_currency: Option<String>,
    pub vote: Option<u64>,
    pub record_url: Option<String>,
    /// The statistics row id and CRM activity id returned.
    pub stat_id: u64,
    pub activity_id: u64,
}

/// An attached recording.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordFile {
    pub file_id: u64,
    pub filename: String,
    pub bytes: Vec<u8>,
    /// "FILE_CONTENT", "RECORD_URL" or "upload".
    pub via: String,
}

/// One registered call, kept after finish (then it is the statistics row).
#[derive(Clone, Debug)]
pub struct CallState {
    pub call_id: String,
    pub user_id: u64,
    /// PHONE_NUMBER with letters stripped, as registered.
    pub phone_number: String,
    pub normalized_phone: String,
    pub call_type: u8,
    pub line_number: Option<String>,
    pub external_call_id: Option<String>,
    pub crm_create: bool,
    pub crm_source: Option<String>,
    pub show: bool,
    /// CALL_START_DATE as sent.
    pub call_start_date: Option<String>,
    pub start_unix: i64,
    pub owner: Owner,
    pub crm_entity: Option<(EntityKind, u64)>,
    pub created_lead: Option<u64>,
    pub lead_creation_error: Option<String>,
    /// How many register calls answered with this CALL_ID (1 + dedup hits).
    pub registrations: u32,
    /// Card shows in order (user lists); a register with SHOW≠0 adds `[USER_ID]`.
    pub shows: Vec<Vec<u64>>,
    /// Explicit hides in order (finish's implicit hide is not listed).
    pub hides: Vec<Vec<u64>>,
    pub finished: Option<FinishParams>,
    /// STATUS 304 on TYPE 2/3: a missed call was recorded.
    pub missed: bool,
    pub record: Option<RecordFile>,
    pub record_attachments: u32,
}

impl CallState {
    pub fn active(&self) -> bool {
        self.finished.is_none()
    }
}

#[derive(Debug, Default)]
pub struct Telephony {
    pub calls: Vec<CallState>,
    pub lines: Vec<Line>,
    /// Chat messages about finished calls: (user, CALL_ID).
    pub chat: Vec<(u64, String)>,
    /// Pending signed upload URLs: token → (CALL_ID, FILENAME).
    pub uploads: HashMap<String, (String, String)>,
    pub next_id: u64,
}

impl Telephony {
    pub fn next(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn active_index(&self, call_id: &str) -> Option<usize> {
        self.calls
            .iter()
            .position(|c| c.call_id == call_id && c.active())
    }
}

/// USER_ID (non-zero wins) or USER_PHONE_INNER → an active user.
pub fn resolve_user(users: &Users, p: &Param) -> Result<u64, ApiError> {
    let id = p.get("USER_ID").and_then(Param::as_u64).unwrap_or(0);
    let inner = p.get("USER_PHONE_INNER").and_then(Param::nonempty);
    if id == 0 && inner.is_none() {
        return Err(ApiError::legacy(
            "USER_ID or USER_PHONE_INNER should be set",
        ));
    }
    let user = if id != 0 {
        users.active(id)
    } else {
        users.active_by_extension(inner.as_deref().unwrap_or(""))
    };
    user.map(|u| u.id)
        .ok_or_else(|| ApiError::legacy("User is not found or is not active"))
}

/// A validated register request.
struct RegisterReq {
    user_id: u64,
    phone: String,
    norm: String,
    ty: u8,
    start_unix: i64,
    start_sent: Option<String>,
    line: Option<String>,
    ext_id: Option<String>,
    crm_create: bool,
    crm_source: Option<String>,
    show: bool,
    explicit: Option<(EntityKind, u64)>,
}

fn parse_register(users: &Users, p: &Param, now: Now) -> Result<RegisterReq, ApiError> {
    let has_user = p.get("USER_ID").and_then(Param::as_u64).unwrap_or(0) != 0
        || p.get("USER_PHONE_INNER")
            .and_then(Param::nonempty)
            .is_some();
    if !has_user {
        return Err(ApiError::legacy(
            "USER_ID or USER_PHONE_INNER should be set",
        ));
    }
    let ty = p
        .get("TYPE")
        .and_then(Param::as_u64)
        .filter(|t| (1..=5).contains(t));
    let ty = ty.ok_or_else(|| ApiError::legacy("Unknown TYPE"))? as u8;
    let start_sent = p.get("CALL_START_DATE").and_then(Param::nonempty);
    let start_unix = match &start_sent {
        Some(s) => parse_iso(s)
            .ok_or_else(|| ApiError::legacy("CALL_START_DATE should be in the ISO-8601 format"))?,
        None => now.unix_secs(),
    };
    let raw = p
        .get("PHONE_NUMBER")
        .and_then(Param::text)
        .unwrap_or_default();
    let phone: String = raw
        .chars()
        .filter(|c| !c.is_alphabetic())
        .collect::<String>()
        .trim()
        .to_owned();
    if !phone.chars().any(|c| c.is_ascii_digit()) {
        return Err(ApiError::legacy("Unsupported phone number format"));
    }
    let user_id = resolve_user(users, p)?;
    let explicit = match (
        p.get("CRM_ENTITY_TYPE").and_then(Param::nonempty),
        p.get("CRM_ENTITY_ID").and_then(Param::as_u64),
    ) {
        (Some(t), Some(id)) if id > 0 => EntityKind::parse(&t).map(|k| (k, id)),
        _ => None,
    };
    Ok(RegisterReq {
        user_id,
        norm: normalize_phone(&phone),
        phone,
        ty,
        start_unix,
        start_sent,
        line: p
            .get("LINE_NUMBER")
            .and_then(Param::nonempty)
            .map(|l| l.chars().take(50).collect()),
        ext_id: p.get("EXTERNAL_CALL_ID").and_then(Param::nonempty),
        crm_create: p.get("CRM_CREATE").and_then(Param::flag).unwrap_or(false),
        crm_source: p.get("CRM_SOURCE").and_then(Param::nonempty),
        show: p.get("SHOW").and_then(Param::flag).unwrap_or(true),
        explicit,
    })
}

/// `telephony.externalcall.register`.
pub fn register(st: &mut State, caller: &Caller, p: &Param, now: Now) -> Result<Value, ApiError> {
    let req = parse_register(&st.users, p, now)?;
    if let Some(i) = find_duplicate(&st.tel, &caller.owner, &req, now) {
        let call = &mut st.tel.calls[i];
        call.registrations += 1;
        if req.show {
            call.shows.push(vec![req.user_id]);
        }
        return Ok(register_result(call));
    }
    let owner_key = caller.owner.key();
    let line_auto_create = match &req.line {
        Some(number) => super::lines::ensure(&mut st.tel, &owner_key, number).crm_auto_create,
        None => true,
    };
    let call_id = format!("externalCall.{}.{}", random_hex(), now.unix_secs());
    let crm_create = req.crm_create && (req.ty != 1 || line_auto_create);
    let mut call = new_call(&req, call_id, caller.owner.clone());
    call.crm_create = req.crm_create;
    bind_crm(st, &mut call, &req, crm_create, now);
    let result = register_result(&call);
    st.tel.calls.push(call);
    Ok(result)
}

fn find_duplicate(tel: &Telephony, owner: &Owner, req: &RegisterReq, now: Now) -> Option<usize> {
    tel.calls.iter().position(|c| {
        c.active()
            && c.owner == *owner
            && c.user_id == req.user_id
            && c.normalized_phone == req.norm
            && c.call_type == req.ty
            && c.start_unix > now.unix_secs() - DEDUP_WINDOW_SECS
            && (req.line.is_none() || c.line_number == req.line)
            && (req.ext_id.is_none() || c.external_call_id == req.ext_id)
    })
}

fn new_call(req: &RegisterReq, call_id: String, owner: Owner) -> CallState {
    CallState {
        call_id,
        user_id: req.user_id,
        phone_number: req.phone.clone(),
        normalized_phone: req.norm.clone(),
        call_type: req.ty,
        line_number: req.line.clone(),
        external_call_id: req.ext_id.clone(),
        crm_create: req.crm_create,
        crm_source: req.crm_source.clone(),
        show: req.show,
        call_start_date: req.start_sent.clone(),
        start_unix: req.start_unix,
        owner,
        crm_entity: None,
        created_lead: None,
        lead_creation_error: None,
        registrations: 1,
        shows: if req.show {
            vec![vec![req.user_id]]
        } else {
            Vec::new()
        },
        hides: Vec::new(),
        finished: None,
        missed: false,
        record: None,
        record_attachments: 0,
    }
}

/// Explicit CRM_ENTITY_* → lookup by phone (contact → lead → company) → lead creation when
/// CRM_CREATE and the number is not an employee extension.
fn bind_crm(st: &mut State, call: &mut CallState, req: &RegisterReq, crm_create: bool, now: Now) {
    if let Some(e) = req.explicit {
        call.crm_entity = Some(e);
        return;
    }
    if let Some(e) = st.crm.by_phone(&req.norm).first() {
        call.crm_entity = Some((e.kind, e.id));
        return;
    }
    let internal = st.users.active_by_extension(&req.phone).is_some();
    if !crm_create || internal {
        return;
    }
    if let Some(err) = st.knobs.lead_creation_error.clone() {
        call.lead_creation_error = Some(err);
        return;
    }
    let id = st.crm.add(EntityKind::Lead, &req.phone, req.user_id, now);
    let lead = st.crm.find_mut(EntityKind::Lead, id).expect("just added");
    lead.created_by_call = Some(call.call_id.clone());
    lead.source_id = req.crm_source.clone().unwrap_or_else(|| "CALL".into());
    lead.title = format!(
        "{} call {}",
        if req.ty == 1 { "Outgoing" } else { "Incoming" },
        req.phone
    );
    call.crm_entity = Some((EntityKind::Lead, id));
    call.created_lead = Some(id);
    events::fire(
        st,
        "ONCRMLEADADD",
        vec![("FIELDS[ID]".into(), id.to_string())],
        &format!("LEAD:{id}"),
        now,
    );
}

fn register_result(call: &CallState) -> Value {
    let created: Vec<Value> = call
        .created_lead
        .iter()
        .map(|id| json!({"ENTITY_TYPE": "LEAD", "ENTITY_ID": id}))
        .collect();
    let mut v = json!({
        "CALL_ID": call.call_id,
        "CRM_CREATED_LEAD": call.created_lead,
        "CRM_CREATED_ENTITIES": created,
        "CRM_ENTITY_TYPE": call.crm_entity.map_or("", |(k, _)| k.name()),
        "CRM_ENTITY_ID": call.crm_entity.map(|(_, id)| id),
    });
    if let Some(err) = &call.lead_creation_error {
        v["LEAD_CREATION_ERROR"] = json!(err);
    }
    v
}

/// `telephony.externalcall.show` / `.hide`: USER_ID scalar or array (default: the call's
/// user); `true` for an active call, `false` otherwise (no error).
pub fn show_hide(st: &mut State, p: &Param, show: bool) -> Result<Value, ApiError> {
    let call_id = p.get("CALL_ID").and_then(Param::text).unwrap_or_default();
    let Some(i) = st.tel.active_index(&call_id) else {
        return Ok(json!(false));
    };
    let call = &mut st.tel.calls[i];
    let mut users: Vec<u64> = p
        .get("USER_ID")
        .map(|u| u.items().iter().filter_map(|v| v.as_u64()).collect())
        .unwrap_or_default();
    if users.is_empty() {
        users.push(call.user_id);
    }
    if show {
        call.shows.push(users);
    } else {
        call.hides.push(users);
    }
    Ok(json!(true))
}
