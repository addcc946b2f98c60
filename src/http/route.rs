//! `GET /api/v1/route`: the routing decision as JSON, for PBX scenarios that call HTTP; the
//! personal-manager index upload; the decision audit.
//!
//! `/route` answers the admin token, or a source the SIP side would trust as the PBX of the
//! request's portal (its `trusted_pbx` networks or its `pbx_host` address; any portal's when the
//! request names no line and several portals exist). Nothing is trusted that was not configured,
//! so with no `trusted_pbx` and a remote `pbx_host`, only the token works; everyone else gets 403.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{auth, ApiError, AppState};
use crate::directory::parse_csv;
use crate::phone::normalize_number;
use crate::routing::{decide, Decision, DecisionRecord};

/// Index uploads are large (a million rows is ~17 MB of CSV).
const INDEX_BODY_LIMIT: usize = 256 * 1024 * 1024;

/// Routes that carry their own authorisation (`/route`: token or trusted PBX address).
pub(super) fn public_routes() -> Router<AppState> {
    Router::new().route("/route", get(route))
}

/// Token-protected routes.
pub(super) fn admin_routes() -> Router<AppState> {
    Router::new()
        .route("/portals/{id}/index", get(index_count).post(index_upload).layer(DefaultBodyLimit::max(INDEX_BODY_LIMIT)))
        .route("/decisions", get(decisions))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteQuery {
    caller: Option<String>,
    line: Option<String>,
}

async fn route(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<RouteQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let snap = state.directory.snapshot();
    let portal = q.line.as_deref().and_then(normalize_number).and_then(|n| snap.by_line_number(n)).or_else(|| snap.single());
    if !auth::token_ok(&state, &headers) && !snap.trusts(portal.map(|p| &**p), peer.ip()) {
        return Err(ApiError::Forbidden);
    }
    let raw_caller = q.caller.as_deref().map(str::trim).filter(|c| !c.is_empty()).ok_or_else(|| ApiError::field("caller", "is required"))?;
    let caller = normalize_number(raw_caller);
    let manager = state.directory.manager_of(portal.map(|p| &**p), caller);
    let decision = decide(portal.map(|p| &**p), caller, raw_caller.as_bytes(), manager);
    let reason = decision.reason();
    let (target, contact, user) = match decision {
        Decision::Redirect { mapping } => {
            let host = portal.map_or("", |p| p.portal.settings.pbx_host_port());
            (Some(mapping.extension.clone()), Some(format!("sip:{}@{host}", mapping.extension)), Some(mapping.user_id))
        }
        Decision::NoDecision(_) => (None, None, None),
    };
    let record = DecisionRecord::new(b"", portal.map(|p| p.portal.id), caller, manager, target.as_deref().map(std::sync::Arc::from), reason, "http");
    let outcome = record.outcome;
    metrics::counter!("callgate_routing_decisions_total", "outcome" => outcome, "reason" => reason.as_str()).increment(1);
    state.decisions.push(record);
    Ok(Json(json!({
        "decision": outcome, "target": target, "contact": contact, "user_id": user,
        "portal_id": portal.map(|p| p.portal.id), "caller": caller.map(|n| n.to_string()), "reason": reason,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadQuery {
    #[serde(default)]
    replace: bool,
}

async fn index_upload(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    query: Result<Query<UploadQuery>, axum::extract::rejection::QueryRejection>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let pid = super::portals::load(&state, &raw).await?.id;
    let text = std::str::from_utf8(&body).map_err(|_| ApiError::field("body", "must be UTF-8 CSV: number,user_id"))?;
    let rows = parse_csv(text).map_err(|bad| {
        ApiError::Validation(crate::settings::FieldErrors(
            bad.into_iter().map(|b| crate::settings::FieldError { field: format!("line {}", b.line), message: b.message }).collect(),
        ))
    })?;
    let n = rows.len();
    let stored = rows.clone();
    state
        .store
        .run(move |s| {
            if q.replace {
                s.clear_index(pid)?;
            }
            s.upsert_index(pid, &stored)
        })
        .await?;
    if q.replace {
        state.directory.index().clear_portal(pid);
    }
    state.directory.index().insert_all(pid, &rows);
    tracing::info!(portal = pid, rows = n, replace = q.replace, "personal-manager index imported");
    Ok((StatusCode::OK, Json(json!({ "imported": n, "total": state.directory.index().count(pid) }))))
}

async fn index_count(State(state): State<AppState>, Path(raw): Path<String>) -> Result<Json<Value>, ApiError> {
    let pid = super::portals::load(&state, &raw).await?.id;
    Ok(Json(json!({ "count": state.directory.index().count(pid) })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecentQuery {
    limit: Option<usize>,
}

async fn decisions(State(state): State<AppState>, query: Result<Query<RecentQuery>, axum::extract::rejection::QueryRejection>) -> Result<Json<Vec<DecisionRecord>>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    Ok(Json(state.decisions.recent(q.limit.unwrap_or(100).min(10_000))))
}
