//! `GET /api/v1/calls` and `/api/v1/calls/{id}`: tracked calls with their legs, conversations,
//! first and last talker, and the responsible chosen with its reason (DESIGN.md §6).
//! `GET /api/v1/calls?delivery=problems`: the calls whose Bitrix24 delivery needs the operator's
//! eye, from the store (they outlive the tracker's memory and restarts): overdue intents,
//! intents Bitrix24 refused for good, refused users replaced by the default responsible.

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
    delivery: Option<DeliveryFilter>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum DeliveryFilter {
    Problems,
}

/// Open calls first, newest first, then finished ones; `limit` defaults to 100 (at most 10,000).
/// With `delivery=problems`: the store's calls with delivery trouble, newest first.
async fn list(State(state): State<AppState>, query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = q.limit.unwrap_or(100).min(10_000);
    if let Some(DeliveryFilter::Problems) = q.delivery {
        let before = crate::telemetry::unix_ms().saturating_sub(u64::try_from(state.delivery_horizon.as_millis()).unwrap_or(u64::MAX));
        let found = state.store.run(move |s| s.delivery_problems(before, limit)).await.map_err(ApiError::from)?;
        return Ok(Json(found).into_response());
    }
    // A copy taken under the tracker's lock: milliseconds even at the limit.
    let calls: Vec<CallRecord> = state.calls.list(limit);
    Ok(Json(calls).into_response())
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
