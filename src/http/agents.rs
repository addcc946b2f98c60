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
use axum::{Extension, Json};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ErrorBody, ErrorCode};
use super::openapi::PortalPath;
use super::origin::OriginPolicy;
use super::{portals, ApiError, AppState};
use crate::settings::{Mapping, Portal};
use crate::sip::transport::WsEndpoint;
use crate::webrtc::{credentials, RegisteredAgent, Registrar};

/// One credential change at a time: the store row and the in-memory copy must end up alike
/// when two admins rotate the same agent at once.
static ISSUING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Token-protected routes.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(issue, revoke))
}

/// The `{extension}` path parameter.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Only its documentation is used.
struct ExtensionPath {
    /// A mapped extension of the portal.
    extension: String,
}

/// `GET /sip`: upgrades to a SIP-over-WebSocket flow when the client offers the `sip`
/// subprotocol (RFC 7118 §4), else 400. A page of a foreign origin: 403 (`origin.rs`). Over
/// `max_connections`: 503.
#[utoipa::path(get, path = "/sip", tag = "agents", summary = "SIP over WebSocket (RFC 7118) for browser agents (JsSIP, SIP.js)",
    description = "The client must offer the subprotocol `sip`; one SIP message per WebSocket message. REGISTER is answered by callgate (Digest MD5, qop=auth, realm = the portal's host, credentials from `POST /api/v1/portals/{id}/agents/{extension}/credentials`); other requests are accepted only from a registered flow.",
    security(()),
    responses(
        (status = 101, description = "Switching Protocols (`Sec-WebSocket-Protocol: sip`)"),
        (status = 400, description = "Not a WebSocket upgrade, or the subprotocol `sip` was not offered", body = ErrorBody),
        (status = 403, description = "The page's Origin is neither callgate's own nor in `http.allowed_origins` (a handshake without Origin is allowed)", body = ErrorBody),
        (status = 503, description = "Too many SIP WebSocket connections (`Retry-After`)", body = ErrorBody),
    ))]
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
        return ErrorBody::new(ErrorCode::Forbidden, "this page's origin may not open SIP WebSockets (http.allowed_origins)").answer(StatusCode::FORBIDDEN);
    }
    let ws = ws.protocols(["sip"]);
    if ws.selected_protocol().is_none() {
        return ApiError::BadRequest("the WebSocket subprotocol \"sip\" is required (RFC 7118)".into()).into_response();
    }
    let Some(permit) = endpoint.admit() else {
        let mut resp = ErrorBody::new(ErrorCode::Unavailable, "too many SIP WebSocket connections").answer(StatusCode::SERVICE_UNAVAILABLE);
        resp.headers_mut().insert(RETRY_AFTER, axum::http::HeaderValue::from_static("5"));
        return resp;
    };
    let max = endpoint.limits().max_message;
    ws.max_message_size(max).max_frame_size(max).on_upgrade(move |socket| async move { endpoint.serve(socket, addr, false, permit) })
}

/// One mapped extension as `GET .../agents` shows it.
#[derive(Debug, Serialize, ToSchema)]
struct AgentView {
    /// The mapped extension.
    extension: String,
    /// Its Bitrix24 user.
    user_id: u64,
    /// Browser credentials were issued for this mapping and not revoked.
    credentials: bool,
    /// The live registration over WebSocket, if any.
    registration: Option<RegisteredAgent>,
}

/// A browser agent's SIP credentials, as issued (the password is shown this once).
#[derive(Serialize, ToSchema)]
struct Issued {
    /// SIP username: the extension.
    username: String,
    /// 24 random alphanumeric characters. Shown once: only MD5(username:realm:password) is stored.
    password: String,
    /// Digest realm and SIP domain: the portal's host.
    realm: String,
    /// `ws://<http listener>/sip` (`wss://` over TLS; the Host the request used when the
    /// listener is bound to a wildcard address).
    ws_url: String,
    /// The agent's address of record, `sip:<extension>@<realm>`.
    sip_uri: String,
}

#[utoipa::path(get, path = "/portals/{id}/agents", tag = "agents", summary = "Browser agents: every mapped extension with whether it has credentials and its live registration", params(PortalPath),
    responses((status = 200, description = "By mapping", body = Vec<AgentView>), (status = 404, description = "No such portal", body = ErrorBody)))]
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

#[utoipa::path(post, path = "/portals/{id}/agents/{extension}/credentials", tag = "agents", summary = "Issue or rotate the agent's SIP password",
    description = "Digest MD5 against callgate's own registrar (`GET /sip`), or callgate's 407 challenge for an IP phone in `ip` mode. Returned once, never readable again; a rotation ends the agent's current registration. Answered with `Cache-Control: no-store`. No request body.",
    params(PortalPath, ExtensionPath),
    responses(
        (status = 201, description = "Issued", body = Issued),
        (status = 200, description = "Rotated: the previous password no longer works", body = Issued),
        (status = 404, description = "No such portal, or the extension is not mapped", body = ErrorBody),
    ))]
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
    let sip_uri = format!("sip:{}@{}", issued.username, issued.realm);
    let body = Issued { username: issued.username, password: issued.password, realm: issued.realm, ws_url: ws_url(&state, &headers), sip_uri };
    let status = if rotated { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, [(CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

#[utoipa::path(delete, path = "/portals/{id}/agents/{extension}/credentials", tag = "agents", summary = "Revoke the agent's credentials (and end its registration)", params(PortalPath, ExtensionPath),
    responses((status = 204, description = "Revoked"), (status = 404, description = "No such portal, unmapped extension, or no credentials", body = ErrorBody)))]
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


