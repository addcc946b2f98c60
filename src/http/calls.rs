//! `GET /api/v1/calls` and `/api/v1/calls/{id}`: tracked calls with their legs, conversations,
//! first and last talker, and the responsible chosen with its reason (DESIGN.md §6).
//! `GET /api/v1/calls?delivery=problems`: the calls whose Bitrix24 delivery needs the operator's
//! eye, from the store (they outlive the tracker's memory and restarts): overdue intents,
//! intents Bitrix24 refused for good, refused users replaced by the default responsible.

use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::calls::{CallId, CallRecord};
use crate::crm::notices::Notice;
use crate::store::DeliveryProblem;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(one))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// How many; 100 by default, at most 10,000.
    #[param(maximum = 10000)]
    limit: Option<usize>,
    /// `problems`: instead of tracked calls, the calls (from the store) whose Bitrix24 delivery
    /// needs a look: overdue or refused intents, refused users replaced by the default responsible.
    #[param(inline)]
    delivery: Option<DeliveryFilter>,
}

/// Which calls `GET /calls` lists instead of the tracked ones.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum DeliveryFilter {
    /// Calls with delivery trouble.
    Problems,
}

/// `GET /calls`: tracked calls, or with `delivery=problems` the calls with delivery trouble.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
enum CallList {
    /// Tracked calls.
    Tracked(Vec<CallRecord>),
    /// `delivery=problems`.
    Problems(Vec<DeliveryProblem>),
}

/// One call as `GET /calls/{id}` shows it.
#[derive(Serialize, ToSchema)]
struct CallView {
    #[serde(flatten)]
    call: CallRecord,
    /// Only when present: errors Bitrix24 reported inside a successful answer for this call
    /// (`LEAD_CREATION_ERROR`: registered, but no lead was created).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    bitrix24_notices: Vec<Notice>,
}

/// Open calls first, newest first, then finished ones; `limit` defaults to 100 (at most 10,000).
/// With `delivery=problems`: the store's calls with delivery trouble, newest first.
#[utoipa::path(get, path = "/calls", tag = "calls", summary = "Tracked calls: open ones first (newest first), then finished ones", params(ListQuery),
    responses(
        (status = 200, description = "Calls; with `delivery=problems` the calls whose delivery needs a look", body = CallList),
        (status = 400, description = "Bad query", body = ErrorBody),
    ))]
async fn list(State(state): State<AppState>, query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>) -> Result<Json<CallList>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let limit = q.limit.unwrap_or(100).min(10_000);
    if let Some(DeliveryFilter::Problems) = q.delivery {
        let before = crate::telemetry::unix_ms().saturating_sub(u64::try_from(state.delivery_horizon.as_millis()).unwrap_or(u64::MAX));
        let found = state.store.run(move |s| s.delivery_problems(before, limit)).await.map_err(ApiError::from)?;
        return Ok(Json(CallList::Problems(found)));
    }
    // A copy taken under the tracker's lock: milliseconds even at the limit.
    Ok(Json(CallList::Tracked(state.calls.list(limit))))
}

/// One call; with `bitrix24_notices` when Bitrix24 reported errors inside a successful answer
/// for it (`LEAD_CREATION_ERROR`: registered, but no lead was created).
#[utoipa::path(get, path = "/calls/{id}", tag = "calls", summary = "One tracked call, open or finished", params(("id" = u64, Path, description = "The call's id")),
    responses((status = 200, description = "The call", body = CallView), (status = 404, description = "No such call", body = ErrorBody)))]
async fn one(State(state): State<AppState>, Path(raw): Path<String>) -> Result<Json<CallView>, ApiError> {
    let id: u64 = raw.parse().map_err(|_| ApiError::NotFound("call"))?;
    let call = state.calls.get(CallId(id)).ok_or(ApiError::NotFound("call"))?;
    let bitrix24_notices = crate::crm::notices::for_call(call.portal, id);
    Ok(Json(CallView { call, bitrix24_notices }))
}
