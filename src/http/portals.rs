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
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ErrorBody, ErrorCode};
use super::openapi::PortalPath;
use super::{ApiError, ApiJson, AppState};
use crate::settings::{
    check_line, check_mapping, check_settings, portal_from_input, Line, Mapping, MappingInput, Portal, PortalId, PortalInput, PortalSettings,
    PortalView,
};
use crate::store::NewPortal;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(show, update, remove))
        .routes(routes!(get_settings, put_settings))
        .routes(routes!(list_mappings, create_mapping))
        .routes(routes!(show_mapping, update_mapping, delete_mapping))
        .routes(routes!(list_lines, upsert_line))
        .routes(routes!(delete_line))
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

#[utoipa::path(get, path = "/portals", tag = "portals", summary = "List portals", responses((status = 200, description = "Every portal, secrets masked", body = Vec<PortalView>)))]
async fn list(State(state): State<AppState>) -> Result<Json<Vec<PortalView>>, ApiError> {
    let portals = state.store.run(|s| s.list_portals()).await?;
    Ok(Json(portals.iter().map(PortalView::from).collect()))
}

#[utoipa::path(post, path = "/portals", tag = "portals", summary = "Add portal credentials",
    request_body = PortalInput,
    responses(
        (status = 201, description = "Added", body = PortalView),
        (status = 400, description = "Malformed JSON or not `application/json`", body = ErrorBody),
        (status = 409, description = "A portal with this domain exists (`fields`: `domain`)", body = ErrorBody),
        (status = 422, description = "Invalid fields, each named by its JSON path", body = ErrorBody),
    ))]
async fn create(State(state): State<AppState>, ApiJson(input): ApiJson<PortalInput>) -> Result<(StatusCode, Json<PortalView>), ApiError> {
    let (name, domain, auth) = portal_from_input(&input, None)?;
    let new = NewPortal { name, domain, auth };
    let portal = state.store.run(move |s| s.insert_portal(&new)).await?;
    reload(&state).await?;
    tracing::info!(portal = portal.id, domain = %portal.domain, "portal added");
    Ok((StatusCode::CREATED, Json(PortalView::from(&portal))))
}

#[utoipa::path(get, path = "/portals/{id}", tag = "portals", summary = "Show a portal", params(PortalPath),
    responses((status = 200, description = "The portal, secrets masked", body = PortalView), (status = 404, description = "No such portal", body = ErrorBody)))]
async fn show(State(state): State<AppState>, Path(raw): Path<String>) -> Result<Json<PortalView>, ApiError> {
    Ok(Json(PortalView::from(&load(&state, &raw).await?)))
}

#[utoipa::path(put, path = "/portals/{id}", tag = "portals", summary = "Edit name, domain, auth (auth omitted or masked keeps the secret)", params(PortalPath),
    request_body = PortalInput,
    responses(
        (status = 200, description = "Saved", body = PortalView),
        (status = 400, description = "Malformed JSON or not `application/json`", body = ErrorBody),
        (status = 404, description = "No such portal", body = ErrorBody),
        (status = 409, description = "Another portal has this domain", body = ErrorBody),
        (status = 422, description = "Invalid fields, each named by its JSON path", body = ErrorBody),
    ))]
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

#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct RemoveQuery {
    /// Delete even with open calls (they are left open in Bitrix24).
    #[serde(default)]
    force: bool,
}

#[utoipa::path(delete, path = "/portals/{id}", tag = "portals", summary = "Delete a portal with its settings, mappings, lines and index", params(PortalPath, RemoveQuery),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 404, description = "No such portal", body = ErrorBody),
        (status = 409, description = "Calls of the portal are still open (`open_calls`, `unfinished_in_bitrix24`, `Retry-After`): nothing deleted; delete again once they end", body = ErrorBody),
    ))]
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
    let message = format!("the portal has {open} open call(s) and {unfinished} not yet finished in Bitrix24; they are finished through this portal, so it can be deleted once they end (or with ?force=true, leaving them open in Bitrix24)");
    let fields = vec![crate::settings::FieldError { field: "open_calls".into(), message: format!("{open} open, {unfinished} not finished in Bitrix24") }];
    let body = ErrorBody { fields, open_calls: Some(open), unfinished_in_bitrix24: Some(unfinished), ..ErrorBody::new(ErrorCode::Conflict, message) };
    let mut resp = body.answer(StatusCode::CONFLICT);
    resp.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(OPEN_CALLS_RETRY_AFTER_S));
    resp
}

#[utoipa::path(get, path = "/portals/{id}/settings", tag = "portals", summary = "Show settings", params(PortalPath),
    responses((status = 200, description = "The settings", body = PortalSettings), (status = 404, description = "No such portal", body = ErrorBody)))]
async fn get_settings(State(state): State<AppState>, Path(raw): Path<String>) -> Result<Json<PortalSettings>, ApiError> {
    Ok(Json(load(&state, &raw).await?.settings))
}

#[utoipa::path(put, path = "/portals/{id}/settings", tag = "portals", summary = "Replace settings (missing fields take their defaults)", params(PortalPath),
    request_body = PortalSettings,
    responses(
        (status = 200, description = "Saved", body = PortalSettings),
        (status = 400, description = "Malformed JSON or not `application/json`", body = ErrorBody),
        (status = 404, description = "No such portal", body = ErrorBody),
        (status = 422, description = "Invalid fields, each named by its JSON path (`trusted_pbx[1]`, `incoming.default_responsible`)", body = ErrorBody),
    ))]
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

#[utoipa::path(get, path = "/portals/{id}/mappings", tag = "mappings", summary = "List employee mappings", params(PortalPath),
    responses((status = 200, description = "The mappings", body = Vec<Mapping>), (status = 404, description = "No such portal", body = ErrorBody)))]
async fn list_mappings(State(state): State<AppState>, Path(raw): Path<String>) -> Result<Json<Vec<Mapping>>, ApiError> {
    let pid = load(&state, &raw).await?.id;
    Ok(Json(state.store.run(move |s| s.list_mappings(pid)).await?))
}

#[utoipa::path(get, path = "/portals/{id}/mappings/{mapping_id}", tag = "mappings", summary = "Show a mapping", params(PortalPath, ("mapping_id" = i64, Path, description = "Mapping id")),
    responses((status = 200, description = "The mapping", body = Mapping), (status = 404, description = "No such portal or mapping", body = ErrorBody)))]
async fn show_mapping(State(state): State<AppState>, Path((raw, mid)): Path<(String, String)>) -> Result<Json<Mapping>, ApiError> {
    let pid = load(&state, &raw).await?.id;
    let mid = id(&mid, "mapping")?;
    let all = state.store.run(move |s| s.list_mappings(pid)).await?;
    all.into_iter().find(|m| m.id == mid).map(Json).ok_or(ApiError::NotFound("mapping"))
}

#[utoipa::path(post, path = "/portals/{id}/mappings", tag = "mappings", summary = "Add a mapping", params(PortalPath),
    request_body = MappingInput,
    responses(
        (status = 201, description = "Added", body = Mapping),
        (status = 400, description = "Malformed JSON or not `application/json`", body = ErrorBody),
        (status = 404, description = "No such portal", body = ErrorBody),
        (status = 409, description = "The user or the extension is mapped already (`fields`)", body = ErrorBody),
        (status = 422, description = "Invalid fields", body = ErrorBody),
    ))]
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

#[utoipa::path(put, path = "/portals/{id}/mappings/{mapping_id}", tag = "mappings", summary = "Replace a mapping", params(PortalPath, ("mapping_id" = i64, Path, description = "Mapping id")),
    request_body = MappingInput,
    responses(
        (status = 200, description = "Saved", body = Mapping),
        (status = 400, description = "Malformed JSON or not `application/json`", body = ErrorBody),
        (status = 404, description = "No such portal or mapping", body = ErrorBody),
        (status = 409, description = "Another mapping has the user or the extension (`fields`)", body = ErrorBody),
        (status = 422, description = "Invalid fields", body = ErrorBody),
    ))]
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

#[utoipa::path(delete, path = "/portals/{id}/mappings/{mapping_id}", tag = "mappings", summary = "Delete a mapping", params(PortalPath, ("mapping_id" = i64, Path, description = "Mapping id")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such portal or mapping", body = ErrorBody)))]
async fn delete_mapping(State(state): State<AppState>, Path((raw, mid)): Path<(String, String)>) -> Result<StatusCode, ApiError> {
    let pid = load(&state, &raw).await?.id;
    let mid = id(&mid, "mapping")?;
    if !state.store.run(move |s| s.delete_mapping(pid, mid)).await? {
        return Err(ApiError::NotFound("mapping"));
    }
    reload(&state).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/portals/{id}/lines", tag = "lines", summary = "List lines", params(PortalPath),
    responses((status = 200, description = "The lines", body = Vec<Line>), (status = 404, description = "No such portal", body = ErrorBody)))]
async fn list_lines(State(state): State<AppState>, Path(raw): Path<String>) -> Result<Json<Vec<Line>>, ApiError> {
    let pid = load(&state, &raw).await?.id;
    Ok(Json(state.store.run(move |s| s.list_lines(pid)).await?))
}

#[utoipa::path(post, path = "/portals/{id}/lines", tag = "lines", summary = "Add or replace a line (by its normalised number)", params(PortalPath),
    request_body = Line,
    responses(
        (status = 201, description = "Stored, the number normalised", body = Line),
        (status = 400, description = "Malformed JSON or not `application/json`", body = ErrorBody),
        (status = 404, description = "No such portal", body = ErrorBody),
        (status = 422, description = "Invalid fields (`number`, `utm.utm_source`)", body = ErrorBody),
    ))]
async fn upsert_line(State(state): State<AppState>, Path(raw): Path<String>, ApiJson(input): ApiJson<Line>) -> Result<(StatusCode, Json<Line>), ApiError> {
    let pid: PortalId = load(&state, &raw).await?.id;
    let line = check_line(&input)?;
    let stored = line.clone();
    state.store.run(move |s| s.upsert_line(pid, &stored)).await?;
    reload(&state).await?;
    Ok((StatusCode::CREATED, Json(line)))
}

#[utoipa::path(delete, path = "/portals/{id}/lines/{number}", tag = "lines", summary = "Delete a line", params(PortalPath, ("number" = String, Path, description = "The line's number in any common spelling")),
    responses((status = 204, description = "Deleted"), (status = 404, description = "No such portal or line", body = ErrorBody)))]
async fn delete_line(State(state): State<AppState>, Path((raw, number)): Path<(String, String)>) -> Result<StatusCode, ApiError> {
    let pid = load(&state, &raw).await?.id;
    let number = crate::phone::normalize_number(&number).map_or(number, |n| n.to_string());
    if !state.store.run(move |s| s.delete_line(pid, &number)).await? {
        return Err(ApiError::NotFound("line"));
    }
    reload(&state).await?;
    Ok(StatusCode::NO_CONTENT)
}
