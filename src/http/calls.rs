//! `GET /api/v1/calls` and `/api/v1/calls/{id}`: tracked calls with their legs, conversations,
//! first and last talker, and the responsible chosen with its reason (DESIGN.md §6).

use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

use super::{ApiError, AppState};
use crate::calls::{CallId, CallRecord};

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/calls", get(list)).route("/calls/{id}", get(one))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<usize>,
}

/// Open calls first, newest first, then finished ones; `limit` defaults to 100 (at most 10,000).
async fn list(State(state): State<AppState>, query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>) -> Result<Json<Vec<CallRecord>>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = q.limit.unwrap_or(100).min(10_000);
    // A copy taken under the tracker's lock: milliseconds even at the limit.
    Ok(Json(state.calls.list(limit)))
}

/// One call; with `bitrix24_notices` when Bitrix24 reported errors inside a successful answer
/// for it (`LEAD_CREATION_ERROR`: registered, but no lead was created).
async fn one(State(state): State<AppState>, Path(raw): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    let id: u64 = raw.parse().map_err(|_| ApiError::NotFound("call"))?;
    let call = state.calls.get(CallId(id)).ok_or(ApiError::NotFound("call"))?;
    let notices = crate::crm::notices::for_call(call.portal, id);
    let mut view = serde_json::to_value(&call).map_err(|e| ApiError::Internal(e.into()))?;
    if let (false, Some(obj)) = (notices.is_empty(), view.as_object_mut()) {
        obj.insert("bitrix24_notices".into(), serde_json::json!(notices));
    }
    Ok(Json(view))
}
