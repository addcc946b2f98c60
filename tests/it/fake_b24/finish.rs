//! REST telephony, part 2 (bitrix24-rest.md §5.3, §5.5, §10.5 items 18-19):
//! `telephony.externalcall.finish` and `telephony.externalCall.attachRecord` (FILE_CONTENT,
//! RECORD_URL, or a signed upload URL served at `<base>rest/upload.json`).

use serde_json::{json, Value};

use super::auth::{random_hex, Caller, Owner};
use super::clock::Now;
use super::envelope::ApiError;
use super::events;
use super::params::Param;
use super::state::State;
use super::telephony::{resolve_user, CallState, FinishParams, RecordFile};

pub const NOT_FOUND: &str = "Call is not found (call should be registered prior to finishing";
pub const NOT_IN_STATS: &str =
    "Call is not found in the statistic table. It looks like it is not finished yet.";

/// `telephony.externalcall.finish`.
pub fn finish(st: &mut State, _caller: &Caller, p: &Param, now: Now) -> Result<Value, ApiError> {
    let call_id = match p.get("CALL_ID") {
        Some(Param::Str(s)) => s.clone(),
        _ => {
            return Err(ApiError::new(
                400,
                "INVALID_ARGUMENT",
                "CALL_ID must be a string",
            ))
        }
    };
    let user_id = resolve_user(&st.users, p)?;
    let i = st
        .tel
        .active_index(&call_id)
        .ok_or_else(|| ApiError::legacy(NOT_FOUND))?;
    let fin = finish_params(st, p, user_id);
    reassign_created(st, &call_id, user_id);
    if fin.chat_message {
        st.tel.chat.push((user_id, call_id.clone()));
    }
    let call = &mut st.tel.calls[i];
    call.missed = fin.call_failed_code == "304" && matches!(call.call_type, 2 | 3);
    call.finished = Some(fin);
    let call = call.clone();
    let row = stats_row(&call);
    events::fire(
        st,
        "ONVOXIMPLANTCALLEND",
        call_end_data(&call),
        &call.call_id,
        now,
    );
    Ok(row)
}

fn finish_params(st: &mut State, p: &Param, user_id: u64) -> FinishParams {
    let duration = p.get("DURATION").and_then(Param::as_u64).unwrap_or(0);
    let status_code = p.get("STATUS_CODE").and_then(Param::nonempty);
    let add_to_chat = p.get("ADD_TO_CHAT").and_then(Param::text);
    let chat_message = add_to_chat
        .as_ref()
        .map_or(st.knobs.add_to_chat_default, |v| {
            Param::Str(v.clone()).flag().unwrap_or(false)
        });
    FinishParams {
        user_id,
        duration,
        call_failed_code: status_code
            .clone()
            .unwrap_or_else(|| if duration > 0 { "200" } else { "304" }.into()),
        status_code,
        add_to_chat,
        chat_message,
        failed_reason: p.get("FAILED_REASON").and_then(Param::text),
        cost: p.get("COST").and_then(Param::nonempty),
        cost_currency: p.get("COST_CURRENCY").and_then(Param::nonempty),
        vote: p.get("VOTE").and_then(Param::as_u64).filter(|v| *v > 0),
        record_url: p.get("RECORD_URL").and_then(Param::nonempty),
        stat_id: st.tel.next(),
        activity_id: st.tel.next() + 7000,
    }
}

/// Only entities created by this call get the finishing user as responsible.
fn reassign_created(st: &mut State, call_id: &str, user_id: u64) {
    for e in st
        .crm
        .entities
        .iter_mut()
        .filter(|e| e.created_by_call.as_deref() == Some(call_id))
    {
        e.assigned_by_id = user_id;
    }
}

fn rest_app(owner: &Owner) -> (Value, Value, String) {
    match owner {
        Owner::App { app_id, name, .. } => (
            json!(app_id.to_string()),
            json!(name),
            format!("REST_APP:{app_id}"),
        ),
        Owner::Webhook { .. } => (Value::Null, json!(false), "REST_APP:".into()),
    }
}

/// The statistics row (§5.3): `CALL_START_DATE` is `{}` (a PHP DateTime object).
pub fn stats_row(call: &CallState) -> Value {
    let fin = call.finished.as_ref().expect("finished call");
    let (app_id, app_name, portal_number) = rest_app(&call.owner);
    let cost = fin
        .cost
        .as_deref()
        .and_then(|c| c.parse::<f64>().ok())
        .unwrap_or(0.0);
    json!({
        "CALL_ID": call.call_id,
        "EXTERNAL_CALL_ID": call.external_call_id,
        "PORTAL_USER_ID": fin.user_id,
        "PHONE_NUMBER": call.phone_number,
        "PORTAL_NUMBER": call.line_number.clone().unwrap_or(portal_number),
        "INCOMING": call.call_type.to_string(),
        "CALL_DURATION": fin.duration,
        "CALL_START_DATE": {},
        "CALL_STATUS": u8::from(fin.duration > 0),
        "CALL_VOTE": fin.vote,
        "COST": cost,
        "COST_CURRENCY": fin.cost_currency.clone().unwrap_or_default(),
        "CALL_FAILED_CODE": fin.call_failed_code,
        "CALL_FAILED_REASON": fin.failed_reason.clone().unwrap_or_default(),
        "REST_APP_ID": app_id,
        "REST_APP_NAME": app_name,
        "CRM_ACTIVITY_ID": fin.activity_id,
        "COMMENT": null,
        "CRM_ENTITY_TYPE": call.crm_entity.map_or("", |(k, _)| k.name()),
        "CRM_ENTITY_ID": call.crm_entity.map(|(_, id)| id),
        "ID": fin.stat_id,
    })
}

fn call_end_data(call: &CallState) -> Vec<(String, String)> {
    let fin = call.finished.as_ref().expect("finished call");
    let (_, _, portal_number) = rest_app(&call.owner);
    vec![
        ("CALL_ID".into(), call.call_id.clone()),
        ("CALL_TYPE".into(), call.call_type.to_string()),
        ("PHONE_NUMBER".into(), call.phone_number.clone()),
        (
            "PORTAL_NUMBER".into(),
            call.line_number.clone().unwrap_or(portal_number),
        ),
        ("PORTAL_USER_ID".into(), fin.user_id.to_string()),
        ("CALL_DURATION".into(), fin.duration.to_string()),
        ("CALL_FAILED_CODE".into(), fin.call_failed_code.clone()),
        ("CRM_ACTIVITY_ID".into(), fin.activity_id.to_string()),
    ]
}

/// The async part of attachRecord with RECORD_URL: the fake downloads the file.
#[derive(Clone, Debug)]
pub struct FetchJob {
    pub call_id: String,
    pub filename: String,
    pub url: String,
}

/// What attachRecord decided: an answer now, or a download first.
pub enum Attach {
    Done(Value),
    Fetch(FetchJob),
}

/// `telephony.externalCall.attachRecord`.
pub fn attach_record(st: &mut State, p: &Param) -> Result<Attach, ApiError> {
    let call_id = p.get("CALL_ID").and_then(Param::text).unwrap_or_default();
    let filename = p.get("FILENAME").and_then(Param::nonempty);
    let url = p.get("RECORD_URL").and_then(Param::nonempty);
    if filename.is_none() && url.is_none() {
        return Err(ApiError::legacy(
            "Required parameters are not set. Request should contain either URL or FILENAME parameter",
        ));
    }
    if !st
        .tel
        .calls
        .iter()
        .any(|c| c.call_id == call_id && !c.active())
    {
        return Err(ApiError::legacy(NOT_IN_STATS));
    }
    let from_url = url
        .as_deref()
        .and_then(|u| u.split('?').next())
        .and_then(|u| u.rsplit('/').next());
    let filename = filename
        .or_else(|| from_url.map(str::to_owned))
        .unwrap_or_default();
    check_filename(&filename)?;
    if let Some(content) = p.get("FILE_CONTENT") {
        let text = content.text().unwrap_or_default();
        if text.trim().is_empty() {
            return Err(ApiError::legacy("File content is empty."));
        }
        let bytes = base64_decode(&text).ok_or_else(|| {
            ApiError::legacy("File content is not properly encoded. Base64 encoding is expected.")
        })?;
        let id = store_record(st, &call_id, &filename, bytes, "FILE_CONTENT");
        return Ok(Attach::Done(json!({ "FILE_ID": id })));
    }
    if let Some(url) = url {
        return Ok(Attach::Fetch(FetchJob {
            call_id,
            filename,
            url,
        }));
    }
    let token = random_hex();
    st.tel.uploads.insert(token.clone(), (call_id, filename));
    let upload_url = format!(
        "{}rest/upload.json?token=telephony%7C{token}",
        st.endpoints.base
    );
    Ok(Attach::Done(
        json!({ "uploadUrl": upload_url, "fieldName": "file" }),
    ))
}

fn check_filename(name: &str) -> Result<(), ApiError> {
    if name.trim().is_empty() {
        return Err(ApiError::legacy("File name is empty"));
    }
    match name.rsplit_once('.') {
        Some((_, "wav" | "mp3")) => Ok(()),
        _ => Err(ApiError::legacy(
            "Wrong file extension. Only wav and mp3 are allowed",
        )),
    }
}

/// Stores (replacing) the call's record and returns the new file id.
pub fn store_record(
    st: &mut State,
    call_id: &str,
    filename: &str,
    bytes: Vec<u8>,
    via: &str,
) -> u64 {
    let file_id = st.tel.next() + 9000;
    if let Some(call) = st.tel.calls.iter_mut().find(|c| c.call_id == call_id) {
        call.record = Some(RecordFile {
            file_id,
            filename: filename.to_owned(),
            bytes,
            via: via.to_owned(),
        });
        call.record_attachments += 1;
    }
    file_id
}

/// The answer to a RECORD_URL download: `Ok(bytes)`, `Err(Some(status))` or `Err(None)`.
pub fn finish_fetch(
    st: &mut State,
    job: &FetchJob,
    got: Result<Vec<u8>, Option<u16>>,
) -> Result<Value, ApiError> {
    match got {
        Ok(bytes) => Ok(
            json!({ "FILE_ID": store_record(st, &job.call_id, &job.filename, bytes, "RECORD_URL") }),
        ),
        Err(Some(code)) => Err(ApiError::legacy(format!(
            "Server returns HTTP error code {code}"
        ))),
        Err(None) => Err(ApiError::new(
            400,
            "SERVER_NOT_AVAILABLE",
            "Server is not available",
        )),
    }
}

/// A strict standard-alphabet base64 decoder (whitespace ignored, padding optional).
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let clean: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    let body = clean
        .strip_suffix(b"==")
        .or_else(|| clean.strip_suffix(b"="))
        .unwrap_or(&clean);
    if body.len() % 4 == 1 {
        return None;
    }
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    for chunk in body.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c)? << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len() - 1]);
    }
    Some(out)
}
