//! Events (bitrix24-rest.md §6, §7.6, §10.7): `event.bind/unbind/get`, `event.offline.get/
//! clear`, internal firing (lead add/update, call end, click-to-call) and the form-encoded
//! emitter that POSTs like Bitrix24's queue server (`event`, `event_handler_id`, `data[...]`,
//! `ts`, `auth[...]`, all strings). Deliveries are not retried.

use serde_json::{json, Value};

use super::auth::{Caller, Owner};
use super::clock::{iso, Now};
use super::envelope::ApiError;
use super::params::Param;
use super::state::State;

/// Events `event.bind` accepts.
pub const KNOWN: &[&str] = &[
    "ONAPPINSTALL",
    "ONAPPUNINSTALL",
    "ONAPPUPDATE",
    "ONEXTERNALCALLSTART",
    "ONEXTERNALCALLBACKSTART",
    "ONVOXIMPLANTCALLINIT",
    "ONVOXIMPLANTCALLSTART",
    "ONVOXIMPLANTCALLEND",
    "ONCRMLEADADD",
    "ONCRMLEADUPDATE",
    "ONCRMLEADDELETE",
    "ONCRMCONTACTADD",
    "ONCRMCONTACTUPDATE",
    "ONCRMCONTACTDELETE",
    "ONCRMCOMPANYADD",
    "ONCRMCOMPANYUPDATE",
    "ONCRMCOMPANYDELETE",
    "ONCRMDEALADD",
    "ONCRMDEALUPDATE",
    "ONCRMDEALDELETE",
    "ONUSERADD",
];

/// A handler registration. `owner` is the app's client_id, or "" for an outgoing webhook
/// configured in the portal UI (then `webhook_token` is its application_token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    pub id: u64,
    pub event: String,
    pub handler: String,
    pub auth_type: u64,
    pub offline: bool,
    pub owner: String,
    pub webhook_token: Option<String>,
}

/// A queued online delivery.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub event: String,
    pub url: String,
    pub pairs: Vec<(String, String)>,
}

/// A finished delivery attempt: `status` None = transport error/timeout (dropped, no retry).
#[derive(Clone, Debug)]
pub struct Delivered {
    pub event: String,
    pub url: String,
    pub pairs: Vec<(String, String)>,
    pub status: Option<u16>,
}

#[derive(Clone, Debug)]
pub struct OfflineEvent {
    pub id: u64,
    pub owner: String,
    pub event: String,
    pub object: String,
    pub data: Value,
    pub unix: i64,
    pub process_id: Option<String>,
}

#[derive(Debug, Default)]
pub struct Events {
    pub bindings: Vec<Binding>,
    pub outbox: Vec<Delivery>,
    pub delivered: Vec<Delivered>,
    pub offline: Vec<OfflineEvent>,
    next_id: u64,
}

impl Events {
    fn next(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn add_outgoing_webhook(&mut self, url: &str, events: &[&str], token: &str) {
        for e in events {
            let id = self.next();
            self.bindings.push(Binding {
                id,
                event: e.to_ascii_uppercase(),
                handler: url.to_owned(),
                auth_type: 0,
                offline: false,
                owner: String::new(),
                webhook_token: Some(token.to_owned()),
            });
        }
    }
}

fn app_of(caller: &Caller) -> Result<String, ApiError> {
    match &caller.owner {
        Owner::App { client_id, .. } => Ok(client_id.clone()),
        Owner::Webhook { .. } => Err(ApiError::new(
            403,
            "WRONG_AUTH_TYPE",
            "Application context required",
        )),
    }
}

/// `event.bind` (apps only).
pub fn bind(ev: &mut Events, caller: &Caller, p: &Param) -> Result<Value, ApiError> {
    let owner = app_of(caller)?;
    let event = p
        .get_any(&["event", "EVENT"])
        .and_then(Param::nonempty)
        .unwrap_or_default()
        .to_ascii_uppercase();
    if !KNOWN.contains(&event.as_str()) {
        return Err(ApiError::new(
            400,
            "ERROR_EVENT_NOT_FOUND",
            "Event not found",
        ));
    }
    let offline = p
        .get("event_type")
        .and_then(Param::text)
        .is_some_and(|t| t.eq_ignore_ascii_case("offline"));
    let handler = p
        .get_any(&["handler", "HANDLER"])
        .and_then(Param::nonempty)
        .unwrap_or_default();
    if handler.is_empty() && !offline {
        return Err(ApiError::new(
            400,
            "ERROR_ARGUMENT",
            "Handler is not specified",
        ));
    }
    if ev.bindings.iter().any(|b| {
        b.owner == owner && b.event == event && b.handler == handler && b.offline == offline
    }) {
        return Err(ApiError::new(400, "ERROR_CORE", "Handler already binded"));
    }
    let id = ev.next();
    let auth_type = p.get("auth_type").and_then(Param::as_u64).unwrap_or(0);
    ev.bindings.push(Binding {
        id,
        event,
        handler,
        auth_type,
        offline,
        owner,
        webhook_token: None,
    });
    Ok(json!(true))
}

/// `event.unbind` → `{"count": n}`.
pub fn unbind(ev: &mut Events, caller: &Caller, p: &Param) -> Result<Value, ApiError> {
    let owner = app_of(caller)?;
    let event = p
        .get_any(&["event", "EVENT"])
        .and_then(Param::nonempty)
        .unwrap_or_default()
        .to_ascii_uppercase();
    let handler = p.get_any(&["handler", "HANDLER"]).and_then(Param::nonempty);
    let before = ev.bindings.len();
    ev.bindings.retain(|b| {
        !(b.owner == owner && b.event == event && handler.as_ref().is_none_or(|h| *h == b.handler))
    });
    Ok(json!({ "count": before - ev.bindings.len() }))
}

/// `event.get` → the app's bindings.
pub fn get(ev: &Events, caller: &Caller) -> Result<Value, ApiError> {
    let owner = app_of(caller)?;
    let rows = ev.bindings.iter().filter(|b| b.owner == owner).map(|b| {
        json!({"event": b.event, "handler": b.handler, "auth_type": b.auth_type.to_string(), "offline": u8::from(b.offline)})
    });
    Ok(Value::Array(rows.collect()))
}

/// `event.offline.get`: `limit` (50), `clear` (1), `process_id`. Like Bitrix24: up to `limit`
/// unmarked events get the process_id (the one given, or a new one with clear=0), then every
/// event marked with it is returned, so a reader that crashed or failed before
/// `event.offline.clear` gets the same events again by naming its process_id. With clear=1 the
/// returned events are deleted at once (process_id null).
pub fn offline_get(
    ev: &mut Events,
    caller: &Caller,
    p: &Param,
    tz: i32,
) -> Result<Value, ApiError> {
    let owner = app_of(caller)?;
    let limit = p.get("limit").and_then(Param::as_u64).unwrap_or(50).min(50) as usize;
    let clear = p.get("clear").and_then(Param::flag).unwrap_or(true);
    let given = p.get("process_id").and_then(Param::nonempty);
    let process_id = given.unwrap_or_else(super::auth::random_hex);
    let already = ev
        .offline
        .iter()
        .filter(|e| e.owner == owner && e.process_id.as_deref() == Some(process_id.as_str()))
        .count();
    for e in ev
        .offline
        .iter_mut()
        .filter(|e| e.owner == owner && e.process_id.is_none())
        .take(limit.saturating_sub(already))
    {
        e.process_id = Some(process_id.clone());
    }
    let picked: Vec<Value> = ev
        .offline
        .iter()
        .filter(|e| e.owner == owner && e.process_id.as_deref() == Some(process_id.as_str()))
        .map(|e| {
            json!({
                "ID": e.id.to_string(), "TIMESTAMP_X": iso(e.unix, tz), "EVENT_NAME": e.event,
                "EVENT_DATA": e.data, "EVENT_ADDITIONAL": {"user_id": "1"}, "MESSAGE_ID": e.id.to_string(),
            })
        })
        .collect();
    if clear {
        ev.offline
            .retain(|e| !(e.owner == owner && e.process_id.as_deref() == Some(process_id.as_str())));
        return Ok(json!({ "process_id": null, "events": picked }));
    }
    Ok(json!({ "process_id": process_id, "events": picked }))
}

/// `event.offline.clear`: removes the events handed out under `process_id`.
pub fn offline_clear(ev: &mut Events, caller: &Caller, p: &Param) -> Result<Value, ApiError> {
    let owner = app_of(caller)?;
    let pid = p
        .get("process_id")
        .and_then(Param::nonempty)
        .ok_or_else(|| ApiError::new(400, "ERROR_ARGUMENT", "process_id is required"))?;
    ev.offline
        .retain(|e| !(e.owner == owner && e.process_id.as_deref() == Some(pid.as_str())));
    Ok(json!(true))
}

/// Fires an event to every matching binding (all apps). `data` keys like `FIELDS[ID]`.
pub fn fire(st: &mut State, event: &str, data: Vec<(String, String)>, object: &str, now: Now) {
    fire_for(st, event, data, object, now, None);
}

/// Fires to the bindings of one app only (`only_app` = client_id), as ONEXTERNALCALLSTART is.
pub fn fire_for(
    st: &mut State,
    event: &str,
    data: Vec<(String, String)>,
    object: &str,
    now: Now,
    only_app: Option<&str>,
) {
    let bindings: Vec<Binding> = st
        .events
        .bindings
        .iter()
        .filter(|b| b.event == event && only_app.is_none_or(|a| a == b.owner))
        .cloned()
        .collect();
    for b in bindings {
        if b.offline {
            queue_offline(st, &b, event, &data, object, now);
            continue;
        }
        let auth = binding_auth(st, &b, now);
        let data_ref: Vec<(&str, &str)> =
            data.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let auth_ref: Vec<(&str, &str)> =
            auth.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let pairs = event_pairs(event, b.id, &data_ref, now.unix_secs(), &auth_ref);
        st.events.outbox.push(Delivery {
            event: event.to_owned(),
            url: b.handler.clone(),
            pairs,
        });
    }
}

/// The offline queue keeps only the latest state per (app, event, object).
fn queue_offline(
    st: &mut State,
    b: &Binding,
    event: &str,
    data: &[(String, String)],
    object: &str,
    now: Now,
) {
    let mut tree = Param::map();
    for (k, v) in data {
        let p = super::params::parse_form(&format!("{}={}", url_enc(k), url_enc(v)));
        if let Param::Map(m) = p {
            for (k, v) in m {
                tree.set(&k, v);
            }
        }
    }
    st.events.offline.retain(|e| {
        !(e.owner == b.owner && e.event == event && e.object == object && e.process_id.is_none())
    });
    let id = st.events.next();
    st.events.offline.push(OfflineEvent {
        id,
        owner: b.owner.clone(),
        event: event.to_owned(),
        object: object.to_owned(),
        data: tree.to_json(),
        unix: now.unix_secs() - st.knobs.offline_backdate.as_secs() as i64,
        process_id: None,
    });
}

fn url_enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `auth[...]` for a delivery: app events carry fresh tokens unless the fake is set to
/// "automation" mode; outgoing webhooks never do.
fn binding_auth(st: &mut State, b: &Binding, now: Now) -> Vec<(String, String)> {
    let ep = st.endpoints.clone();
    let mut auth = vec![
        ("domain".to_owned(), ep.domain.clone()),
        ("client_endpoint".to_owned(), ep.client_endpoint()),
        ("server_endpoint".to_owned(), ep.server_endpoint()),
        ("member_id".to_owned(), ep.member_id.clone()),
    ];
    if let Some(token) = &b.webhook_token {
        auth.push(("application_token".into(), token.clone()));
        return auth;
    }
    let Some(app) = st.auth.app(&b.owner).cloned() else {
        return auth;
    };
    if st.knobs.event_tokens {
        let t = st.auth.issue(&app.client_id, app.user_id, now);
        auth.push(("access_token".into(), t.access_token));
        auth.push(("expires".into(), t.expires.to_string()));
        auth.push(("expires_in".into(), t.expires_in.to_string()));
        auth.push(("scope".into(), t.scope));
        auth.push(("status".into(), "L".into()));
        auth.push(("user_id".into(), t.user_id.to_string()));
    }
    auth.push(("application_token".into(), app.application_token));
    auth
}

/// `data[FIELDS][ID]` from `FIELDS[ID]`, `data[PHONE_NUMBER]` from `PHONE_NUMBER`.
fn nest(prefix: &str, key: &str) -> String {
    match key.split_once('[') {
        Some((base, rest)) => format!("{prefix}[{base}][{rest}"),
        None => format!("{prefix}[{key}]"),
    }
}

/// The form pairs of one event delivery.
pub fn event_pairs(
    event: &str,
    handler_id: u64,
    data: &[(&str, &str)],
    ts: i64,
    auth: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut pairs = vec![
        ("event".to_owned(), event.to_owned()),
        ("event_handler_id".to_owned(), handler_id.to_string()),
    ];
    pairs.extend(data.iter().map(|(k, v)| (nest("data", k), (*v).to_owned())));
    pairs.push(("ts".into(), ts.to_string()));
    pairs.extend(auth.iter().map(|(k, v)| (nest("auth", k), (*v).to_owned())));
    pairs
}

/// POSTs `application/x-www-form-urlencoded`; the status, or None on a transport error.
pub async fn post_form(
    http: &reqwest::Client,
    url: &str,
    pairs: &[(String, String)],
) -> Option<u16> {
    let resp = http.post(url).form(pairs).send().await.ok()?;
    Some(resp.status().as_u16())
}
