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
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::openapi::PortalPath;
use super::{auth, ApiError, AppState};
use crate::directory::parse_csv;
use crate::phone::normalize_number;
use crate::routing::{decide, Decision, DecisionRecord};

/// Index uploads are large (a million rows is ~17 MB of CSV).
const INDEX_BODY_LIMIT: usize = 256 * 1024 * 1024;

/// Routes that carry their own authorisation (`/route`: token or trusted PBX address).
pub(super) fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(route))
}

/// Token-protected routes.
pub(super) fn admin_routes() -> OpenApiRouter<AppState> {
    let index = OpenApiRouter::new().routes(routes!(index_count, index_upload)).layer(DefaultBodyLimit::max(INDEX_BODY_LIMIT));
    index.routes(routes!(decisions))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RouteQuery {
    /// The customer's number in any common spelling (required).
    #[param(required = true, example = "+7 916 123-45-67")]
    caller: Option<String>,
    /// The called line (selects the portal; may be left out while there is one portal).
    line: Option<String>,
}

/// The decision as `GET /route` answers it.
#[derive(Serialize, ToSchema)]
struct RouteAnswer {
    /// `redirect` or `no_decision`.
    #[schema(examples("redirect", "no_decision"))]
    decision: &'static str,
    /// The extension to send the call to.
    target: Option<String>,
    /// `sip:<target>@<pbx_host>`.
    contact: Option<String>,
    /// The personal manager.
    user_id: Option<u64>,
    /// The portal found for the line.
    portal_id: Option<i64>,
    /// The caller's number normalised (digits).
    caller: Option<String>,
    /// Why.
    reason: crate::routing::Reason,
}

#[utoipa::path(get, path = "/route", tag = "routing", summary = "The personal-manager routing decision as JSON",
    description = "For PBX scenarios that call HTTP. Answers the admin token, or a source the SIP side trusts as the PBX of the request's portal (its `trusted_pbx` networks or its `pbx_host`; any portal's when the request names no line and several portals exist); everyone else gets 403.",
    params(RouteQuery), security(("bearer" = []), ()),
    responses(
        (status = 200, description = "The decision", body = RouteAnswer),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 403, description = "Neither the token nor a trusted PBX address", body = ErrorBody),
        (status = 422, description = "No `caller`", body = ErrorBody),
    ))]
async fn route(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<RouteQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<RouteAnswer>, ApiError> {
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
    Ok(Json(RouteAnswer { decision: outcome, target, contact, user_id: user, portal_id: portal.map(|p| p.portal.id), caller: caller.map(|n| n.to_string()), reason }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct UploadQuery {
    /// Drop the portal's index first.
    #[serde(default)]
    replace: bool,
}

/// What an index upload did.
#[derive(Serialize, ToSchema)]
struct Imported {
    /// Rows imported.
    imported: usize,
    /// Numbers in the portal's index now.
    total: usize,
}

/// How many numbers a portal's index holds.
#[derive(Serialize, ToSchema)]
struct IndexCount {
    /// Numbers in the portal's personal-manager index.
    count: usize,
}

#[utoipa::path(post, path = "/portals/{id}/index", tag = "routing", summary = "Bulk import of personal managers: CSV rows `number,user_id` (all or nothing)", params(PortalPath, UploadQuery),
    request_body(content = String, content_type = "text/csv", description = "`number,user_id` per line, at most 256 MB", example = "74951234567,7\n79161234567,12\n"),
    responses(
        (status = 200, description = "Imported", body = Imported),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 404, description = "No such portal", body = ErrorBody),
        (status = 413, description = "Over 256 MB", body = ErrorBody),
        (status = 422, description = "Bad rows (`fields`: `line N`), nothing imported", body = ErrorBody),
    ))]
async fn index_upload(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    query: Result<Query<UploadQuery>, axum::extract::rejection::QueryRejection>,
    body: Bytes,
) -> Result<(StatusCode, Json<Imported>), ApiError> {
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
    Ok((StatusCode::OK, Json(Imported { imported: n, total: state.directory.index().count(pid) })))
}

#[utoipa::path(get, path = "/portals/{id}/index", tag = "routing", summary = "Numbers in the portal's personal-manager index", params(PortalPath),
    responses((status = 200, description = "Count", body = IndexCount), (status = 404, description = "No such portal", body = ErrorBody)))]
async fn index_count(State(state): State<AppState>, Path(raw): Path<String>) -> Result<Json<IndexCount>, ApiError> {
    let pid = super::portals::load(&state, &raw).await?.id;
    Ok(Json(IndexCount { count: state.directory.index().count(pid) }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RecentQuery {
    /// How many, newest first; 100 by default, at most 10,000.
    #[param(maximum = 10000)]
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/decisions", tag = "routing", summary = "Recent routing decisions (audit), newest first", params(RecentQuery),
    responses((status = 200, description = "Decisions", body = Vec<DecisionRecord>), (status = 400, description = "Bad query", body = ErrorBody)))]
async fn decisions(State(state): State<AppState>, query: Result<Query<RecentQuery>, axum::extract::rejection::QueryRejection>) -> Result<Json<Vec<DecisionRecord>>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    Ok(Json(state.decisions.recent(q.limit.unwrap_or(100).min(10_000))))
}
