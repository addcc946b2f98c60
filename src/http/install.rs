//! The Bitrix24 app installation of an OAuth portal, for the admin (token required):
//! `GET /api/v1/portals/{id}/install` (the stored installation without its tokens, the last
//! refused `ONAPPINSTALL` and why, where the app's events were bound or why they were not) and
//! `POST /api/v1/portals/{id}/install/rearm` (the next verified install within 15 minutes may
//! replace the current installation, even one of another `member_id` or with another
//! `application_token`; see `crm::install`).
//!
//! The installer reaches the handlers inside the `Extension<EventsHub>` layered on by `app`
//! (without it: 503). Answers: 404 unknown portal, 422 (`auth`) a portal that is not an OAuth
//! app.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::{json, Value};

use super::{ApiError, AppState};
use crate::crm::events::EventsHub;
use crate::settings::{Auth, Portal};

/// Token-protected routes.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/portals/{id}/install", get(status))
        .route("/portals/{id}/install/rearm", post(rearm))
}

type Hub = Option<Extension<EventsHub>>;

async fn status(State(state): State<AppState>, hub: Hub, Path(raw): Path<String>) -> Result<Response, ApiError> {
    let portal = oauth_portal(&state, &raw).await?;
    let Some(Extension(hub)) = hub else { return Ok(unavailable()) };
    let stored = hub.installer.installation(portal.id).await?;
    let st = hub.installer.state(portal.id);
    let body = json!({
        "installed": stored.is_some(),
        "member_id": stored.as_ref().map(|t| t.member_id.clone()),
        "client_endpoint": stored.as_ref().map(|t| t.client_endpoint.clone()),
        "access_expires_at": stored.as_ref().map(|t| t.expires_at_unix),
        "rearmed_until": st.rearmed_until,
        "last_refused": st.last_refused,
        "events": st.events,
    });
    Ok(Json(body).into_response())
}

async fn rearm(State(state): State<AppState>, hub: Hub, Path(raw): Path<String>) -> Result<Response, ApiError> {
    let portal = oauth_portal(&state, &raw).await?;
    let Some(Extension(hub)) = hub else { return Ok(unavailable()) };
    let until = hub.installer.rearm(portal.id);
    Ok(Json(json!({ "rearmed_until": until })).into_response())
}

/// The portal, which must be set up as an OAuth app.
async fn oauth_portal(state: &AppState, raw: &str) -> Result<Portal, ApiError> {
    let portal = super::portals::load(state, raw).await?;
    if !matches!(portal.auth, Some(Auth::OAuth { .. })) {
        return Err(ApiError::field("auth", "the portal is not set up as an OAuth app"));
    }
    Ok(portal)
}

fn unavailable() -> Response {
    let body: Value = json!({ "error": "unavailable", "message": "Bitrix24 events are not being processed", "fields": [] });
    (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
}
