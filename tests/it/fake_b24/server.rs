//! The HTTP side: the axum handler and the request pipeline (fault → bucket → auth → method →
//! envelope → record → deliver events).
//!
//! Routes: `/rest/{user}/{code}/{method}[.json]` (webhook), `/rest/{method}[.json]` (OAuth),
//! `/rest/upload.json?token=..` (attachRecord upload URL), `/oauth/token/` (OAuth server).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::State as AxState;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use parking_lot::{Mutex, MutexGuard};
use serde_json::{json, Value};
use tokio::sync::Notify;

use super::auth::Caller;
use super::batch;
use super::clock::Now;
use super::envelope::{success_body, ApiError, Output, TimeInfo};
use super::events::{post_form, Delivered};
use super::faults::{fault_error, Action, Fault};
use super::finish;
use super::limits::Operating;
use super::listener::Conn;
use super::params::{parse_form, parse_multipart, request_params, Param};
use super::record::{Recorded, Via};
use super::state::{State, Step};

/// Shared by the handle and the server.
pub struct Inner {
    /// One lock for the whole portal: handlers copy what they need and never hold it across
    /// an `.await`.
    pub state: Mutex<State>,
    pub http: reqwest::Client,
    /// Woken after every finished event delivery.
    pub delivered: Notify,
}

impl Inner {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    pub fn now(&self) -> Now {
        self.lock().now()
    }
}

/// The one handler behind every path.
pub async fn handle(
    AxState(inner): AxState<Arc<Inner>>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    if path == "/rest/upload.json" {
        return upload(&inner, &uri, &headers, &body);
    }
    if path.starts_with("/rest/") {
        if let Some(to) = moved(&inner, &uri, &headers) {
            return (StatusCode::FOUND, [(header::LOCATION, to)]).into_response();
        }
        return rest(inner, conn, uri, headers, body).await;
    }
    if path == "/oauth/token/" || path == "/oauth/token" {
        return oauth(inner, conn, uri, headers, body).await;
    }
    (StatusCode::NOT_FOUND, "not found").into_response()
}

/// The new location of a REST request sent to a former address of the portal.
fn moved(inner: &Inner, uri: &Uri, headers: &HeaderMap) -> Option<String> {
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let st = inner.lock();
    if !st.knobs.moved_from.iter().any(|h| h == host) {
        return None;
    }
    let pq = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    Some(format!("{}{}", st.endpoints.base.trim_end_matches('/'), pq))
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// `/rest/{method}` or `/rest/{user}/{code}/{method}`; `.json` stripped, lower-cased.
struct RestPath {
    webhook: Option<(String, String)>,
    method: String,
}

fn parse_rest_path(path: &str) -> Option<RestPath> {
    let segs: Vec<&str> = path
        .strip_prefix("/rest/")?
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (webhook, method) = match segs.as_slice() {
        [m] => (None, *m),
        [u, c, m] => (Some(((*u).to_owned(), (*c).to_owned())), *m),
        _ => return None,
    };
    let method = method.to_lowercase();
    Some(RestPath {
        webhook,
        method: method.strip_suffix(".json").unwrap_or(&method).to_owned(),
    })
}

/// Pulls the access token out of `auth` / `access_token` / `Authorization: Bearer`.
fn via_of(path: &Option<RestPath>, params: &mut Param, headers: &HeaderMap) -> Via {
    let from_param = params
        .remove("auth")
        .or_else(|| params.remove("access_token"))
        .and_then(|p| p.text());
    if let Some((user_id, code)) = path.as_ref().and_then(|p| p.webhook.clone()) {
        return Via::Webhook { user_id, code };
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").map(|t| t.trim().to_owned()));
    Via::OAuth {
        token: from_param.or(bearer).unwrap_or_default(),
    }
}

struct Reply {
    status: u16,
    body: Value,
    result: Option<Value>,
    error: Option<ApiError>,
    subs: Vec<Recorded>,
}

impl Reply {
    fn err(inner: &Inner, e: ApiError) -> Self {
        let body = e.body(inner.lock().knobs.empty_code_as.as_deref());
        Self {
            status: e.status,
            body,
            result: None,
            error: Some(e),
            subs: Vec::new(),
        }
    }

    fn ok(inner: &Inner, out: Output, op: Operating, start: Now, subs: Vec<Recorded>) -> Self {
        let (now, tz) = {
            let st = inner.lock();
            (st.now(), st.knobs.tz_offset)
        };
        let time = TimeInfo {
            start: start.unix,
            finish: now.unix.max(start.unix),
            operating: op.used,
            operating_reset_at: op.reset_at,
        };
        let body = success_body(&out, time.to_json(tz));
        Self {
            status: 200,
            body,
            result: Some(out.result),
            error: None,
            subs,
        }
    }
}

async fn rest(
    inner: Arc<Inner>,
    conn: Conn,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = Instant::now();
    let path = parse_rest_path(uri.path());
    let parsed = request_params(uri.query(), &content_type(&headers), &body);
    let mut params = parsed.clone().unwrap_or_else(|_| Param::map());
    let via = via_of(&path, &mut params, &headers);
    let method = path.as_ref().map(|p| p.method.clone()).unwrap_or_default();
    let mut rec = Recorded::new(at, &method, params.to_json(), via.clone());
    let fault = inner.lock().faults.take();
    let mut lost = None;
    if let Some(fault) = fault {
        let target = uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned();
        match fault.action(&target) {
            Action::Stall(d) => tokio::time::sleep(d).await,
            _ if fault.executes_first() => lost = Some(fault),
            action => return fault_response(&inner, &conn, rec, fault, action, false),
        }
    }
    let reply = process(&inner, conn.peer, path, params, parsed.err(), &via).await;
    rec.status = reply.status;
    rec.result = reply.result;
    rec.error = reply.error;
    rec.sub_calls = reply.subs;
    rec.fault = lost.clone();
    inner.lock().log.push(rec);
    spawn_deliveries(&inner);
    if let Some(fault) = lost {
        return lose_answer(&conn, &fault);
    }
    (
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK),
        Json(reply.body),
    )
        .into_response()
}

async fn process(
    inner: &Inner,
    peer: SocketAddr,
    path: Option<RestPath>,
    params: Param,
    parse_err: Option<String>,
    via: &Via,
) -> Reply {
    let start = inner.now();
    if !inner.lock().limits.admit(peer.ip(), start.mono) {
        return Reply::err(inner, ApiError::query_limit());
    }
    let Some(path) = path else {
        return Reply::err(inner, ApiError::method_not_found());
    };
    if let Some(e) = parse_err {
        return Reply::err(inner, ApiError::new(400, "INVALID_REQUEST", e));
    }
    let caller = {
        let st = inner.lock();
        match via {
            Via::Webhook { user_id, code } => st.auth.webhook(user_id, code),
            Via::OAuth { token } => st.auth.token(token, start),
        }
    };
    let caller = match caller {
        Ok(c) => c,
        Err(e) => return Reply::err(inner, e),
    };
    if path.method == "batch" {
        let (out, subs) = batch::run(inner, &caller, &params, via).await;
        return Reply::ok(inner, out, Operating::default(), start, subs);
    }
    match call_method(inner, &caller, &path.method, &params).await {
        Ok((out, op)) => Reply::ok(inner, out, op, start, Vec::new()),
        Err(e) => Reply::err(inner, e),
    }
}

/// One method call (direct or inside a batch): checks, operating limit, execution, and the
/// RECORD_URL download outside the lock.
pub async fn call_method(
    inner: &Inner,
    caller: &Caller,
    method: &str,
    p: &Param,
) -> Result<(Output, Operating), ApiError> {
    let (step, op) = {
        let mut st = inner.lock();
        let now = st.now();
        st.admit_method(caller, method)?;
        let op = st.limits.charge(method, &caller.owner.key(), now)?;
        (st.call(caller, method, p, now)?, op)
    };
    match step {
        Step::Done(out) => Ok((out, op)),
        Step::Fetch(job) => {
            let got = match inner.http.get(&job.url).send().await {
                Ok(r) if r.status().as_u16() == 200 => {
                    r.bytes().await.map(|b| b.to_vec()).map_err(|_| None)
                }
                Ok(r) => Err(Some(r.status().as_u16())),
                Err(_) => Err(None),
            };
            let v = finish::finish_fetch(&mut inner.lock(), &job, got)?;
            Ok((Output::of(v), op))
        }
    }
}

/// The answer of an executed request, lost: the connection dropped, or a proxy's 502.
fn lose_answer(conn: &Conn, fault: &Fault) -> Response {
    match fault.action("/") {
        Action::Html(s, html) => (
            StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_GATEWAY),
            [(header::CONTENT_TYPE, "text/html")],
            html,
        )
            .into_response(),
        _ => {
            conn.reset();
            StatusCode::OK.into_response()
        }
    }
}

fn fault_response(
    inner: &Inner,
    conn: &Conn,
    mut rec: Recorded,
    fault: Fault,
    action: Action,
    oauth: bool,
) -> Response {
    rec.status = fault.status();
    rec.error = fault_error(&fault);
    rec.fault = Some(fault.clone());
    {
        let mut st = inner.lock();
        if fault == Fault::Status503QueryLimit {
            st.limits.rejected += 1;
        }
        if oauth {
            st.oauth_log.push(rec)
        } else {
            st.log.push(rec)
        }
    }
    match action {
        Action::Json(s, body) => (
            StatusCode::from_u16(s).unwrap_or(StatusCode::OK),
            Json(body),
        )
            .into_response(),
        Action::Html(s, html) => (
            StatusCode::from_u16(s).unwrap_or(StatusCode::BAD_GATEWAY),
            [(header::CONTENT_TYPE, "text/html")],
            html,
        )
            .into_response(),
        Action::Redirect(loc) => (StatusCode::FOUND, [(header::LOCATION, loc)]).into_response(),
        Action::Reset | Action::Stall(_) => {
            conn.reset();
            StatusCode::OK.into_response()
        }
    }
}

async fn oauth(
    inner: Arc<Inner>,
    conn: Conn,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = request_params(uri.query(), &content_type(&headers), &body)
        .unwrap_or_else(|_| Param::map());
    let mut rec = Recorded::new(
        Instant::now(),
        "oauth.token",
        params.to_json(),
        Via::OAuth {
            token: String::new(),
        },
    );
    let fault = inner.lock().faults.take_oauth();
    if let Some(fault) = fault {
        match fault.action(uri.path()) {
            Action::Stall(d) => tokio::time::sleep(d).await,
            action => return fault_response(&inner, &conn, rec, fault, action, true),
        }
    }
    let (status, body) = {
        let mut st = inner.lock();
        let (now, ep) = (st.now(), st.endpoints.clone());
        st.auth.token_endpoint(&params, now, &ep)
    };
    rec.status = status;
    if status == 200 {
        rec.result = Some(body.clone());
    } else {
        let text = |k: &str| body[k].as_str().unwrap_or_default().to_owned();
        rec.error = Some(ApiError::new(
            status,
            &text("error"),
            text("error_description"),
        ));
    }
    inner.lock().oauth_log.push(rec);
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
        Json(body),
    )
        .into_response()
}

/// The signed upload URL attachRecord hands out: multipart field `file`.
fn upload(inner: &Inner, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Response {
    let q = parse_form(uri.query().unwrap_or(""));
    let token = q.get("token").and_then(Param::text).unwrap_or_default();
    let token = token
        .strip_prefix("telephony|")
        .unwrap_or(&token)
        .to_owned();
    let bad = |code: &str, desc: &str| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": code, "error_description": desc})),
        )
            .into_response()
    };
    let Some((call_id, filename)) = inner.lock().tel.uploads.remove(&token) else {
        return bad("INVALID_TOKEN", "Upload token is not valid");
    };
    let parts = parse_multipart(&content_type(headers), body).unwrap_or_default();
    let Some(file) = parts.into_iter().find(|p| p.name == "file") else {
        return bad("ERROR_ARGUMENT", "File is not found in the field 'file'");
    };
    let id = finish::store_record(&mut inner.lock(), &call_id, &filename, file.data, "upload");
    Json(json!({ "result": { "FILE_ID": id } })).into_response()
}

/// Sends queued event deliveries in the background (after `delivery_delay`); results land in
/// `Events::delivered`. Tasks live as long as the runtime; a failed delivery is not retried.
pub fn spawn_deliveries(inner: &Arc<Inner>) {
    let (batch, delay, down) = {
        let mut st = inner.lock();
        (
            std::mem::take(&mut st.events.outbox),
            st.knobs.delivery_delay,
            st.knobs.handlers_down,
        )
    };
    for d in batch {
        let inner = inner.clone();
        tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let status = if down {
                None
            } else {
                post_form(&inner.http, &d.url, &d.pairs).await
            };
            inner.lock().events.delivered.push(Delivered {
                event: d.event,
                url: d.url,
                pairs: d.pairs,
                status,
            });
            inner.delivered.notify_waiters();
        });
    }
}
