//! `POST /api/v1/bitrix24/events`: Bitrix24's event deliveries (bitrix24-rest.md §2.2, §6).
//! No bearer token (Bitrix24 cannot send one): every delivery proves its origin with
//! `auth[application_token]`, compared in constant time with the one stored at `ONAPPINSTALL`.
//!
//! Body: `application/x-www-form-urlencoded` with PHP bracket keys (`event`, `event_handler_id`,
//! `data[FIELDS][ID]`, `ts`, `auth[member_id]`, ...), at most [`EVENT_BODY_LIMIT`] bytes;
//! unknown keys are ignored (the payload shape changes without notice, pitfall 19).
//!
//! Answers: 200 as soon as the event is queued (or recognised as a repeat, or not one callgate
//! processes); 400 naming the malformed field; 403 for an unknown portal or a wrong token; 503
//! when the processing queue is full (Bitrix24 does not retry: the drop shows in its log, and
//! here in `callgate_b24_events_total{outcome="shed"}`). `ONAPPINSTALL` for a portal set up as
//! an OAuth app (found by `auth[domain]`) is verified and stored before the answer
//! (`crm::install`: 403 without proof that it is this app on this portal, or over a working
//! installation of another member; 503 while it cannot be verified). The app's events are then
//! bound to the configured `http.public_url` (or this listener's own address), never to a URL
//! taken from `Host` or `X-Forwarded-*` headers.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ErrorBody, ErrorCode};
use super::AppState;
use crate::crm::events::{classify, is_oauth, EventKind, EventsHub, InboundEvent, InstallError, Offered, BOUND_EVENTS};
use crate::crm::install::EventsBinding;
use crate::directory::PortalEntry;
use crate::settings::{normalize_domain, PortalId};
use crate::store::PortalTokens;

/// Event bodies are small; anything bigger is not Bitrix24.
pub(super) const EVENT_BODY_LIMIT: usize = 64 * 1024;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(receive))
        .layer(DefaultBodyLimit::max(EVENT_BODY_LIMIT))
}

/// The form fields `parse_form` reads (PHP bracket keys; any other key is ignored). Only its
/// documentation is used: the body is parsed by hand.
#[derive(ToSchema)]
#[allow(dead_code)]
struct EventForm {
    /// The event's name (`ONEXTERNALCALLSTART`, `ONCRMCONTACTUPDATE`, `ONAPPINSTALL`, ...).
    #[schema(example = "ONEXTERNALCALLSTART")]
    event: String,
    /// The handler's id at Bitrix24.
    event_handler_id: Option<String>,
    /// Unix time (integer).
    ts: Option<String>,
    /// The call of `ONEXTERNALCALLSTART`.
    #[schema(rename = "data[CALL_ID]")]
    data_call_id: Option<String>,
    /// The entity of `ONCRM...` events.
    #[schema(rename = "data[FIELDS][ID]")]
    data_fields_id: Option<String>,
    /// The portal's id at Bitrix24.
    #[schema(rename = "auth[member_id]")]
    auth_member_id: Option<String>,
    /// The portal's host (finds the portal of `ONAPPINSTALL`).
    #[schema(rename = "auth[domain]")]
    auth_domain: Option<String>,
    /// Proves the event comes from the portal's installation (every event but `ONAPPINSTALL`).
    #[schema(rename = "auth[application_token]")]
    auth_application_token: Option<String>,
    /// `ONAPPINSTALL`.
    #[schema(rename = "auth[access_token]")]
    auth_access_token: Option<String>,
    /// `ONAPPINSTALL`: must refresh at the portal's `oauth_server`.
    #[schema(rename = "auth[refresh_token]")]
    auth_refresh_token: Option<String>,
    /// `ONAPPINSTALL`: `https://portal/rest/`.
    #[schema(rename = "auth[client_endpoint]")]
    auth_client_endpoint: Option<String>,
    /// `ONAPPINSTALL`: seconds.
    #[schema(rename = "auth[expires_in]")]
    auth_expires_in: Option<String>,
}

/// A delivery taken.
#[derive(Serialize, ToSchema)]
struct Accepted {
    /// `installed`, `reinstalled`, `updated` (an install), `queued`, `duplicate` (a repeat
    /// within 5 minutes) or `ignored` (an event callgate does not process).
    #[schema(examples("queued", "installed", "duplicate", "ignored"))]
    status: &'static str,
}

/// One delivery, parsed.
#[derive(Debug, Default, PartialEq)]
struct RawEvent {
    event: String,
    data: BTreeMap<String, String>,
    auth: BTreeMap<String, String>,
    ts: Option<i64>,
}

/// A refused delivery.
#[derive(Debug)]
enum Refused {
    Malformed { field: String, message: String },
    Forbidden(&'static str),
    TooLarge,
    Full,
    Unavailable(String),
    Internal(String),
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let (status, code, message, fields) = match self {
            Self::Malformed { field, message } => {
                let text = format!("{field} {message}");
                (
                    StatusCode::BAD_REQUEST,
                    ErrorCode::BadRequest,
                    text,
                    vec![crate::settings::FieldError { field, message }],
                )
            }
            Self::Forbidden(why) => (
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                why.to_owned(),
                Vec::new(),
            ),
            Self::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::TooLarge,
                "the request body is too large".to_owned(),
                Vec::new(),
            ),
            Self::Full => (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Overloaded,
                "the event queue is full".to_owned(),
                Vec::new(),
            ),
            Self::Unavailable(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                why,
                Vec::new(),
            ),
            Self::Internal(why) => {
                tracing::error!(error = %why, "Bitrix24 event handling failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::Internal,
                    "internal error".to_owned(),
                    Vec::new(),
                )
            }
        };
        let mut resp = ErrorBody { fields, ..ErrorBody::new(code, message) }.answer(status);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        resp
    }
}

fn malformed(field: &str, message: &str) -> Refused {
    Refused::Malformed {
        field: field.to_owned(),
        message: message.to_owned(),
    }
}

#[utoipa::path(post, path = "/bitrix24/events", tag = "bitrix24", summary = "Bitrix24 event deliveries: the app's installation handler and event handler (called by Bitrix24, no bearer token)",
    description = "Form-encoded with PHP bracket keys (unknown keys ignored; body at most 64 KiB). ONAPPINSTALL for a portal set up as an OAuth app (found by auth[domain]) is verified and stored: auth[refresh_token] must refresh at the portal's oauth_server with the configured client_id/client_secret, the OAuth server's answer must name auth[member_id] and the portal's client_endpoint, and app.info with the refreshed token must name the client_id; the refreshed tokens are stored. An installation of another member_id is replaced only after POST /api/v1/portals/{id}/install/rearm; over a working installation of the same member only the tokens change. The app's events are then bound to {http.public_url}/api/v1/bitrix24/events (or the listener's own address), never to a URL from request headers. Every other event must carry the stored auth[application_token] (portal found by auth[member_id], else auth[domain]); it is de-duplicated (same event and CALL_ID, or entity id + ts, within 5 minutes), queued and answered at once. Processed: ONEXTERNALCALLSTART (click-to-call), ONCRM{CONTACT,COMPANY,LEAD}{ADD,UPDATE,DELETE} (personal-manager index).",
    security(()),
    request_body(content = EventForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Installed, queued, a duplicate, or an event callgate does not process", body = Accepted),
        (status = 400, description = "Malformed: `fields[0].field` names the field (`event`, `ts`, `auth[application_token]`, `content-type`, ...)", body = ErrorBody),
        (status = 403, description = "Unknown portal, wrong application_token, or an install without proof that it is this app on this portal (or over another member's installation without a re-arm)", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 503, description = "The processing queue is full (`overloaded`, `Retry-After: 1`), the OAuth server or the portal could not verify an install, or another install is being verified", body = ErrorBody),
    ))]
async fn receive(
    State(state): State<AppState>,
    hub: Option<Extension<EventsHub>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (label, outcome, resp) = match handle(&state, hub.map(|Extension(h)| h), &headers, body).await
    {
        Ok((label, outcome)) => (
            label,
            outcome,
            (StatusCode::OK, Json(Accepted { status: outcome })).into_response(),
        ),
        Err((label, e)) => {
            let outcome = match &e {
                Refused::Malformed { .. } | Refused::TooLarge => "malformed",
                Refused::Forbidden(_) => "forbidden",
                Refused::Full => "shed",
                Refused::Unavailable(_) | Refused::Internal(_) => "failed",
            };
            (label, outcome, e.into_response())
        }
    };
    if outcome == "shed" {
        tracing::warn!(
            event = label,
            "Bitrix24 event shed: the processing queue is full (Bitrix24 will not retry)"
        );
    }
    metrics::counter!("callgate_b24_events_total", "event" => label, "outcome" => outcome)
        .increment(1);
    resp
}

type Handled = Result<(&'static str, &'static str), (&'static str, Refused)>;

async fn handle(
    state: &AppState,
    hub: Option<EventsHub>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Handled {
    let body = body.map_err(|e| {
        (
            "unknown",
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Refused::TooLarge
            } else {
                malformed("body", &e.body_text())
            },
        )
    })?;
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    if !form {
        return Err((
            "unknown",
            malformed("content-type", "must be application/x-www-form-urlencoded"),
        ));
    }
    let ev = parse_form(&body).map_err(|e| ("unknown", e))?;
    let kind = classify(&ev.event);
    let label = event_label(&ev.event, kind);
    let Some(hub) = hub else {
        return Err((
            label,
            Refused::Unavailable("Bitrix24 events are not being processed".into()),
        ));
    };
    if kind == EventKind::Install {
        return install_event(state, &hub, ev)
            .await
            .map(|o| (label, o))
            .map_err(|e| (label, e));
    }
    let token = ev
        .auth
        .get("application_token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| (label, malformed("auth[application_token]", "is required")))?;
    let (portal, stored) = resolve(state, &ev.auth).await.map_err(|e| (label, e))?;
    if !stored.is_some_and(|t| t.application_token.ct_eq(token.as_bytes())) {
        return Err((
            label,
            Refused::Forbidden("unknown portal or wrong application_token"),
        ));
    }
    if kind == EventKind::Other {
        return Ok((label, "ignored"));
    }
    let inbound = InboundEvent {
        portal: portal.portal.id,
        name: ev.event,
        data: ev.data,
        ts: ev.ts,
        handler_url: None,
    };
    match hub
        .inbox
        .offer(inbound, tokio::time::Instant::now().into_std())
    {
        Offered::Queued => Ok((label, "queued")),
        Offered::Duplicate => Ok((label, "duplicate")),
        Offered::Full => Err((label, Refused::Full)),
    }
}

/// `ONAPPINSTALL`: the portal (by `auth[domain]`) must be set up as an OAuth app.
async fn install_event(state: &AppState, hub: &EventsHub, ev: RawEvent) -> Result<&'static str, Refused> {
    let domain = ev
        .auth
        .get("domain")
        .filter(|d| !d.is_empty())
        .ok_or_else(|| malformed("auth[domain]", "is required"))?;
    let domain = normalize_domain(domain).map_err(|e| malformed("auth[domain]", &e.to_string()))?;
    let snap = state.directory.snapshot();
    let portal = snap
        .portals
        .values()
        .find(|p| p.portal.domain == domain && is_oauth(p))
        .cloned();
    let portal = portal.ok_or(Refused::Forbidden(
        "no portal with this domain is set up as an OAuth app",
    ))?;
    let installed = match hub.installer.install(&portal, &ev.auth).await {
        Ok(done) => done,
        Err(InstallError::Missing(f)) => return Err(malformed(&format!("auth[{f}]"), "is required")),
        Err(InstallError::Mismatch(why)) => return Err(Refused::Forbidden(why)),
        Err(e @ (InstallError::Unverified(_) | InstallError::Busy)) => return Err(Refused::Unavailable(e.to_string())),
        Err(e) => return Err(Refused::Internal(e.to_string())),
    };
    bind_events(state, hub, portal.portal.id, ev);
    Ok(installed.as_str())
}

/// Queues `event.bind` for the configured handler URL (the processor makes the REST calls after
/// the answer), or records why nothing can be bound.
fn bind_events(state: &AppState, hub: &EventsHub, portal: PortalId, ev: RawEvent) {
    let (listener, scheme) = {
        let addresses = state.addresses.read();
        (addresses.get("http").cloned(), addresses.get("http_scheme").cloned().unwrap_or_default())
    };
    let at = crate::telemetry::unix_ms() / 1000;
    let handler = match hub.handler_url(listener.as_deref(), &scheme) {
        Ok(url) => url,
        Err(reason) => {
            tracing::error!(portal, %reason, "installed, but the app's events cannot be bound");
            hub.installer.events_bound(portal, EventsBinding::NotBound { reason, at });
            return;
        }
    };
    let bind = InboundEvent {
        portal,
        name: ev.event,
        data: ev.data,
        ts: ev.ts,
        handler_url: Some(handler.clone()),
    };
    if hub.inbox.offer(bind, tokio::time::Instant::now().into_std()) == Offered::Full {
        let reason = "the event queue was full: the app's events were not bound; install again".to_owned();
        tracing::warn!(portal, "installed, but the event queue is full: the app's events were not bound");
        hub.installer.events_bound(portal, EventsBinding::NotBound { reason, at });
        return;
    }
    hub.installer.events_bound(portal, EventsBinding::Requested { handler, at });
}

/// The portal by `auth[member_id]` (OAuth installations), else by `auth[domain]`; with its
/// installation, if any.
async fn resolve(
    state: &AppState,
    auth: &BTreeMap<String, String>,
) -> Result<(Arc<PortalEntry>, Option<PortalTokens>), Refused> {
    let snap = state.directory.snapshot();
    if let Some(member) = auth.get("member_id").filter(|m| !m.is_empty()).cloned() {
        let found = state
            .store
            .run(move |s| s.portal_tokens_by_member(&member))
            .await
            .map_err(|e| Refused::Internal(e.to_string()))?;
        if let Some(t) = found {
            if let Some(p) = snap.portals.get(&t.portal) {
                return Ok((Arc::clone(p), Some(t)));
            }
        }
    }
    let domain = auth
        .get("domain")
        .and_then(|d| normalize_domain(d).ok())
        .ok_or(Refused::Forbidden("unknown portal"))?;
    let portal = snap
        .portals
        .values()
        .find(|p| p.portal.domain == domain)
        .cloned()
        .ok_or(Refused::Forbidden("unknown portal"))?;
    let pid = portal.portal.id;
    let tokens = state
        .store
        .run(move |s| s.portal_tokens(pid))
        .await
        .map_err(|e| Refused::Internal(e.to_string()))?;
    Ok((portal, tokens))
}

/// A bounded metrics label: the events callgate knows (the install and those it binds), else
/// `other`.
fn event_label(name: &str, kind: EventKind) -> &'static str {
    match kind {
        EventKind::Other => "other",
        _ if name == "ONAPPINSTALL" => "ONAPPINSTALL",
        _ => BOUND_EVENTS.iter().find(|k| **k == name).copied().unwrap_or("other"),
    }
}

/// Parses the form body. Keys: `event`, `ts`, `data[...]`, `auth[...]` (bracket paths kept as
/// `A[B]` below the top level); others are ignored.
///
/// # Errors
/// The first malformed field: `event` missing, `ts` not an integer, `data`/`auth` without
/// brackets, unbalanced brackets.
fn parse_form(body: &[u8]) -> Result<RawEvent, Refused> {
    let mut ev = RawEvent::default();
    for (k, v) in url::form_urlencoded::parse(body) {
        let (top, path) = split_key(&k).ok_or_else(|| malformed(&k, "has unbalanced brackets"))?;
        match (top, path) {
            ("event", None) => ev.event = v.trim().to_ascii_uppercase(),
            ("ts", None) => {
                ev.ts = Some(
                    v.trim()
                        .parse()
                        .map_err(|_| malformed("ts", "must be a unix time"))?,
                )
            }
            ("data" | "auth", None) => return Err(malformed(top, "must be a map (data[KEY]=...)")),
            ("data", Some(p)) => drop(ev.data.insert(p, v.into_owned())),
            ("auth", Some(p)) => drop(ev.auth.insert(p, v.into_owned())),
            _ => {}
        }
    }
    if ev.event.is_empty() {
        return Err(malformed("event", "is required"));
    }
    Ok(ev)
}

/// `data[FIELDS][ID]` -> (`data`, `FIELDS[ID]`); `event` -> (`event`, None); `None` when the
/// brackets do not balance.
fn split_key(key: &str) -> Option<(&str, Option<String>)> {
    let Some(open) = key.find('[') else {
        return (!key.contains(']')).then_some((key, None));
    };
    let (top, rest) = key.split_at(open);
    let inner = rest.strip_prefix('[')?.strip_suffix(']')?;
    let segs: Vec<&str> = inner.split("][").collect();
    if segs.iter().any(|s| s.contains('[') || s.contains(']')) {
        return None;
    }
    let mut path = segs[0].to_owned();
    for s in &segs[1..] {
        path.push('[');
        path.push_str(s);
        path.push(']');
    }
    Some((top, Some(path)))
}

/// Fuzz entry (`crate::fuzzing`, issue 8): the form parser and what the handler does with its
/// result before any I/O; must never panic on any body.
#[cfg(feature = "fuzzing")]
pub(super) fn fuzz_form(body: &[u8]) {
    match parse_form(body) {
        Ok(ev) => {
            let kind = classify(&ev.event);
            let _ = (event_label(&ev.event, kind), crate::crm::events::dedup_key(&ev.event, &ev.data, ev.ts));
        }
        Err(e) => drop(e.into_response()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(e: Refused) -> String {
        match e {
            Refused::Malformed { field, .. } => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn php_bracket_keys_become_event_data_and_auth() {
        let body = b"event=onCrmContactUpdate&event_handler_id=7&data%5BFIELDS%5D%5BID%5D=1001&ts=1773236988&auth%5Bmember_id%5D=m1&auth[application_token]=t%2B1&extra=1";
        let ev = parse_form(body).unwrap();
        assert_eq!(ev.event, "ONCRMCONTACTUPDATE");
        assert_eq!(ev.data.get("FIELDS[ID]").map(String::as_str), Some("1001"));
        assert_eq!(ev.auth.get("member_id").map(String::as_str), Some("m1"));
        assert_eq!(
            ev.auth.get("application_token").map(String::as_str),
            Some("t+1")
        );
        assert_eq!(ev.ts, Some(1_773_236_988));
    }

    #[test]
    fn malformed_bodies_name_the_field() {
        assert_eq!(field_of(parse_form(b"data[X]=1").unwrap_err()), "event");
        assert_eq!(
            field_of(parse_form(b"event=X&ts=yesterday").unwrap_err()),
            "ts"
        );
        assert_eq!(field_of(parse_form(b"event=X&data=1").unwrap_err()), "data");
        assert_eq!(
            field_of(parse_form(b"event=X&data[A=1").unwrap_err()),
            "data[A"
        );
        assert_eq!(
            field_of(parse_form(b"event=X&auth[a]]=1").unwrap_err()),
            "auth[a]]"
        );
    }

    #[test]
    fn split_keeps_nested_and_empty_segments() {
        assert_eq!(
            split_key("data[X][]"),
            Some(("data", Some("X[]".to_owned())))
        );
        assert_eq!(
            split_key("data[A][B][C]"),
            Some(("data", Some("A[B][C]".to_owned())))
        );
        assert_eq!(split_key("x]"), None);
    }
}
