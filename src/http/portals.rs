//! `/api/v1/portals` and its sub-resources: settings, mappings, lines.
//!
//! Deleting a portal while calls of it are still open is refused with 409 (and `Retry-After`)
//! until they end: open in the tracker, or ended but not yet finished in Bitrix24 (the finish
//! waits in the outbox). Their finish goes to Bitrix24 through the portal's credentials, which a
//! delete would take away, leaving them open there for good (an open Bitrix24 call also captures
//! the customer's next call). Hang them up, or wait, then delete again; `?force=true` deletes
//! anyway (a Bitrix24 that refuses the finish for good would otherwise block the delete forever),
//! and logs what it leaves open.

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, put};
use axum::{Json, Router};
use serde_json::json;

use super::{ApiError, ApiJson, AppState};
use crate::settings::{
    check_line, check_mapping, check_settings, portal_from_input, Line, Mapping, MappingInput, Portal, PortalId, PortalInput, PortalSettings,
    PortalView,
};
use crate::store::NewPortal;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/portals", get(list).post(create))
        .route("/portals/{id}", get(show).put(update).delete(remove))
        .route("/portals/{id}/settings", get(get_settings).put(put_settings))
        .route("/portals/{id}/mappings", get(list_mappings).post(create_mapping))
        .route("/portals/{id}/mappings/{mapping_id}", put(update_mapping).delete(delete_mapping).get(show_mapping))
        .route("/portals/{id}/lines", get(list_lines).post(upsert_line))
        .route("/portals/{id}/lines/{number}", delete(delete_line))
}

/// Path ids are parsed by hand so that a non-numeric id is a JSON 404, not a text 400.
fn id(raw: &str, what: &'static str) -> Result<i64, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound(what))
}

pub(super) async fn load(state: &AppState, raw: &str) -> Result<Portal, ApiError> {
    let pid = id(raw, "portal")?;
    state.store.run(move |s| s.get_portal(pid)).await?.ok_or(ApiError::NotFound("portal"))
}

async fn reload(state: &AppState) -> Result<(), ApiError> {
    state.directory.reload(&state.store).await.map_err(ApiError::from)
}

async fn list(State(state): State<AppState>) -> Result<Json<Vec<PortalView>>, ApiError> {
    let portals = state.store.run(|s| s.list_portals()).await?;
    Ok(Json(portals.iter().map(PortalView::from).collect()))
}

async fn create(State(state): State<AppState>, ApiJson(input): ApiJson<PortalInput>) -> Result<(StatusCode, Json<PortalView>), ApiError> {
    let (name, domain, auth) = portal_from_input(&input, None)?;
    let new = NewPortal { name, domain, auth };
    let portal = state.store.run(move |s| s.insert_portal(&new)).await?;
    reload(&state).await?;
    tracing::info!(portal = portal.id, domain = %portal.domain, "portal added");
    Ok((StatusCode::CREATED, Json(PortalView::from(&portal))))
}

async fn show(State(state): State<AppState>, Path(raw): Path<String>) -> Result<Json<PortalView>, ApiError> {
    Ok(Json(PortalView::from(&load(&state, &raw).await?)))
}

async fn update(State(state): State<AppState>, Path(raw): Path<String>, ApiJson(input): ApiJson<PortalInput>) -> Result<Json<PortalView>, ApiError> {
    let existing = load(&state, &raw).await?;
    let (name, domain, auth) = portal_from_input(&input, Some(&existing))?;
    let new = NewPortal { name, domain, auth };
    let pid = existing.id;
    let stored = new.clone();
    if !state.store.run(move |s| s.update_portal(pid, &stored)).await? {
        return Err(ApiError::NotFound("portal"));
    }
    reload(&state).await?;
    let portal = Portal { name: new.name, domain: new.domain, auth: new.auth, ..existing };
    Ok(Json(PortalView::from(&portal)))
}

/// How long a client is asked to wait before deleting a portal with open calls again.
const OPEN_CALLS_RETRY_AFTER_S: u64 = 30;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveQuery {
    /// Delete even with open calls (they are left open in Bitrix24).
    #[serde(default)]
    force: bool,
}

async fn remove(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    query: Result<Query<RemoveQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let pid = id(&raw, "portal")?;
    let open = open_calls(&state, pid);
    let unfinished = state.store.run(move |s| s.open_crm_calls()).await?.iter().filter(|c| c.portal == pid).count();
    if open + unfinished > 0 {
        if !q.force {
            tracing::info!(portal = pid, open, unfinished, "portal delete refused: calls are still open");
            return Ok(open_calls_refusal(open, unfinished));
        }
        tracing::warn!(portal = pid, open, unfinished, "portal deleted by force with calls still open: they stay open in Bitrix24");
    }
    if !state.store.run(move |s| s.delete_portal(pid)).await? {
        return Err(ApiError::NotFound("portal"));
    }
    reload(&state).await?;
    tracing::info!(portal = pid, "portal deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Calls of `portal` the tracker still holds open.
fn open_calls(state: &AppState, portal: PortalId) -> usize {
    state.calls.list(usize::MAX).iter().filter(|c| c.portal == portal && c.ended_at.is_none()).count()
}

/// 409 naming the open calls; the portal and everything of it stay as they were.
fn open_calls_refusal(open: usize, unfinished: usize) -> Response {
    let body = json!({
        "error": "conflict",
        "message": format!("the portal has {open} open call(s) and {unfinished} not yet finished in Bitrix24; they are finished through this portal, so it can be deleted once they end (or with ?force=true, leaving them open in Bitrix24)"),
        "fields": [{ "field": "open_calls", "message": format!("{open} open, {unfinished} not finished in Bitrix24") }],
        "open_calls": open,
        "unfinished_in_bitrix24": unfinished,
    });
    let mut resp = (StatusCode::CONFLICT, Json(body)).into_response();
    resp.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(OPEN_CALLS_RETRY_AFTER_S));
    resp
}

async fn get_settings(State(state): State<AppState>, Path(raw): Path<String>) -> Result<Json<PortalSettings>, ApiError> {
    Ok(Json(load(&state, &raw).await?.settings))
}

async fn put_settings(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    ApiJson(settings): ApiJson<PortalSettings>,
) -> Result<Json<PortalSettings>, ApiError> {
    let pid = id(&raw, "portal")?;
    check_settings(&settings)?;
    let stored = settings.clone();
    if !state.store.run(move |s| s.put_settings(pid, &stored)).await? {
        return Err(ApiError::NotFound("portal"));
    }
    reload(&state).await?;
    tracing::info!(portal = pid, active = settings.active, "portal settings saved");
    Ok(Json(settings))
}

async fn list_mappings(State(state): State<AppState>, Path(raw): Path<String>) -> Result<Json<Vec<Mapping>>, ApiError> {
    let pid = load(&state, &raw).await?.id;
    Ok(Json(state.store.run(move |s| s.list_mappings(pid)).await?))
}

async fn show_mapping(State(state): State<AppState>, Path((raw, mid)): Path<(String, String)>) -> Result<Json<Mapping>, ApiError> {
    let pid = load(&state, &raw).await?.id;
    let mid = id(&mid, "mapping")?;
    let all = state.store.run(move |s| s.list_mappings(pid)).await?;
    all.into_iter().find(|m| m.id == mid).map(Json).ok_or(ApiError::NotFound("mapping"))
}

async fn create_mapping(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    ApiJson(input): ApiJson<MappingInput>,
) -> Result<(StatusCode, Json<Mapping>), ApiError> {
    let pid = load(&state, &raw).await?.id;
    let m = check_mapping(&input)?;
    let created = state.store.run(move |s| s.insert_mapping(pid, &m)).await?;
    reload(&state).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

async fn update_mapping(
    State(state): State<AppState>,
    Path((raw, mid)): Path<(String, String)>,
    ApiJson(input): ApiJson<MappingInput>,
) -> Result<Json<Mapping>, ApiError> {
    let pid = load(&state, &raw).await?.id;
    let mid = id(&mid, "mapping")?;
    let m = check_mapping(&input)?;
    let updated = state.store.run(move |s| s.update_mapping(pid, mid, &m)).await?.ok_or(ApiError::NotFound("mapping"))?;
    reload(&state).await?;
    Ok(Json(updated))
}

async fn delete_mapping(State(state): State<AppState>, Path((raw, mid)): Path<(String, String)>) -> Result<StatusCode, ApiError> {
    let pid = load(&state, &raw).await?.id;
    let mid = id(&mid, "mapping")?;
    if !state.store.run(move |s| s.delete_mapping(pid, mid)).await? {
        return Err(ApiError::NotFound("mapping"));
    }
    reload(&state).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_lines(State(state): State<AppState>, Path(raw): Path<String>) -> Result<Json<Vec<Line>>, ApiError> {
    let pid = load(&state, &raw).await?.id;
    Ok(Json(state.store.run(move |s| s.list_lines(pid)).await?))
}

async fn upsert_line(State(state): State<AppState>, Path(raw): Path<String>, ApiJson(input): ApiJson<Line>) -> Result<(StatusCode, Json<Line>), ApiError> {
    let pid: PortalId = load(&state, &raw).await?.id;
    let line = check_line(&input)?;
    let stored = line.clone();
    state.store.run(move |s| s.upsert_line(pid, &stored)).await?;
    reload(&state).await?;
    Ok((StatusCode::CREATED, Json(line)))
}

async fn delete_line(State(state): State<AppState>, Path((raw, number)): Path<(String, String)>) -> Result<StatusCode, ApiError> {
    let pid = load(&state, &raw).await?.id;
    let number = crate::phone::normalize_number(&number).map_or(number, |n| n.to_string());
    if !state.store.run(move |s| s.delete_line(pid, &number)).await? {
        return Err(ApiError::NotFound("line"));
    }
    reload(&state).await?;
    Ok(StatusCode::NO_CONTENT)
}
