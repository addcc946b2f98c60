//! Browser agents (WebRTC widget): their SIP credentials, their live registrations, and the
//! `GET /sip` WebSocket upgrade their softphones connect to (RFC 7118).
//!
//! - `POST /api/v1/portals/{id}/agents/{extension}/credentials` issues (or rotates) the agent's
//!   password and returns it once; only its HA1 is stored. A rotation or a `DELETE` also ends
//!   the agent's current registration, so a leaked password stops working at once.
//! - Issuing works in both modes: in `webrtc` mode the password is a browser agent's (REGISTER
//!   over `/sip`); in `ip` mode an IP phone's that does not register with the PBX through
//!   callgate and answers callgate's own 407 challenge instead (README, "Who may send what").
//! - `GET /api/v1/portals/{id}/agents` lists the mapped extensions with whether they have
//!   credentials and their registration, if any.
//!
//! The registrar and the WebSocket endpoint come as request extensions (wired in `app.rs`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::header::{CACHE_CONTROL, HOST, RETRY_AFTER};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::{json, Value};

use super::origin::OriginPolicy;
use super::{portals, ApiError, AppState};
use crate::settings::{Mapping, Portal};
use crate::sip::transport::WsEndpoint;
use crate::webrtc::{credentials, RegisteredAgent, Registrar};

/// One credential change at a time: the store row and the in-memory copy must end up alike
/// when two admins rotate the same agent at once.
static ISSUING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Token-protected routes.
pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/portals/{id}/agents", get(list)).route("/portals/{id}/agents/{extension}/credentials", post(issue).delete(revoke))
}

/// `GET /sip`: upgrades to a SIP-over-WebSocket flow when the client offers the `sip`
/// subprotocol (RFC 7118 §4), else 400. A page of a foreign origin: 403 (`origin.rs`). Over
/// `max_connections`: 503.
pub(super) async fn sip_websocket(
    ws: WebSocketUpgrade,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Extension(endpoint): Extension<Arc<WsEndpoint>>,
    Extension(origins): Extension<Arc<OriginPolicy>>,
    headers: HeaderMap,
) -> Response {
    if !origins.allows(&headers) {
        metrics::counter!("callgate_http_ws_origin_refused_total").increment(1);
        tracing::debug!(%addr, origin = ?headers.get(axum::http::header::ORIGIN), "SIP WebSocket from a foreign origin refused");
        return answer(StatusCode::FORBIDDEN, "forbidden", "this page's origin may not open SIP WebSockets (http.allowed_origins)");
    }
    let ws = ws.protocols(["sip"]);
    if ws.selected_protocol().is_none() {
        return ApiError::BadRequest("the WebSocket subprotocol \"sip\" is required (RFC 7118)".into()).into_response();
    }
    let Some(permit) = endpoint.admit() else {
        let mut resp = answer(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "too many SIP WebSocket connections");
        resp.headers_mut().insert(RETRY_AFTER, axum::http::HeaderValue::from_static("5"));
        return resp;
    };
    let max = endpoint.limits().max_message;
    ws.max_message_size(max).max_frame_size(max).on_upgrade(move |socket| async move { endpoint.serve(socket, addr, false, permit) })
}

/// One mapped extension as `GET .../agents` shows it.
#[derive(Debug, serde::Serialize)]
struct AgentView {
    extension: String,
    user_id: u64,
    credentials: bool,
    registration: Option<RegisteredAgent>,
}

async fn list(
    State(state): State<AppState>,
    Extension(registrar): Extension<Arc<Registrar>>,
    Path(raw): Path<String>,
) -> Result<Json<Vec<AgentView>>, ApiError> {
    let portal = portals::load(&state, &raw).await?;
    let pid = portal.id;
    let mappings = state.store.run(move |s| s.list_mappings(pid)).await?;
    let mut live = registrar.registered(pid, tokio::time::Instant::now().into_std());
    let realm = crate::settings::realm_of(&portal);
    // Usable credentials: issued for this very mapping, extension and realm.
    let usable = |m: &Mapping| registrar.credentials().get(pid, &m.extension).is_some_and(|s| s.mapping_id == m.id && s.realm == realm);
    let view = mappings
        .into_iter()
        .map(|m| {
            let registration = live.iter().position(|r| r.extension == m.extension).map(|i| live.swap_remove(i));
            AgentView { credentials: usable(&m), extension: m.extension, user_id: m.user_id, registration }
        })
        .collect();
    Ok(Json(view))
}

async fn issue(
    State(state): State<AppState>,
    Extension(registrar): Extension<Arc<Registrar>>,
    Path((raw, extension)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (portal, mapping) = agent(&state, &raw, extension).await?;
    let (issued, row) = credentials::issue(&portal, &mapping);
    let _one_at_a_time = ISSUING.lock().await;
    let rotated = registrar.credentials().has_mapping(portal.id, mapping.id);
    let stored = row.clone();
    state.store.run(move |s| s.put_agent_credential(&stored, crate::telemetry::unix_ms())).await?;
    registrar.credentials().insert(&row);
    registrar.unbind(portal.id, &mapping.extension);
    tracing::info!(portal = portal.id, mapping = mapping.id, rotated, "browser agent credentials issued");
    let body = json!({
        "username": issued.username,
        "password": issued.password,
        "realm": issued.realm,
        "ws_url": ws_url(&state, &headers),
        "sip_uri": format!("sip:{}@{}", issued.username, issued.realm),
    });
    let status = if rotated { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, [(CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

async fn revoke(
    State(state): State<AppState>,
    Extension(registrar): Extension<Arc<Registrar>>,
    Path((raw, extension)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let (portal, mapping) = agent(&state, &raw, extension).await?;
    let _one_at_a_time = ISSUING.lock().await;
    let (pid, mid) = (portal.id, mapping.id);
    if !state.store.run(move |s| s.delete_agent_credential(pid, mid)).await? {
        return Err(ApiError::NotFound("credentials"));
    }
    registrar.credentials().remove(pid, mid);
    registrar.unbind(pid, &mapping.extension);
    tracing::info!(portal = pid, mapping = mid, "browser agent credentials revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// The portal and the mapping of `extension` in it (404 for either).
async fn agent(state: &AppState, raw: &str, extension: String) -> Result<(Portal, Mapping), ApiError> {
    let portal = portals::load(state, raw).await?;
    let pid = portal.id;
    let mapping = state.store.run(move |s| s.list_mappings(pid)).await?.into_iter().find(|m| m.extension == extension).ok_or(ApiError::NotFound("mapping"))?;
    Ok((portal, mapping))
}

/// `ws://<http listener>/sip` (`wss://` when the listener serves TLS); when the listener is bound
/// to a wildcard address, the host the admin reached callgate by instead.
fn ws_url(state: &AppState, headers: &HeaderMap) -> String {
    let scheme = if state.addresses.read().get("http_scheme").is_some_and(|s| s == "https") { "wss" } else { "ws" };
    let bound = state.addresses.read().get("http").and_then(|a| a.parse::<SocketAddr>().ok());
    let host = match bound {
        Some(a) if !a.ip().is_unspecified() => a.to_string(),
        _ => headers.get(HOST).and_then(|h| h.to_str().ok()).map_or_else(|| bound.map(|a| a.to_string()).unwrap_or_default(), str::to_owned),
    };
    format!("{scheme}://{host}/sip")
}

/// The admin API's error envelope for the answers `ApiError` has no variant for.
fn answer(status: StatusCode, code: &str, message: &str) -> Response {
    let body: Value = json!({ "error": code, "message": message, "fields": [] });
    (status, Json(body)).into_response()
}


