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
use axum::{Extension, Json};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ErrorBody, ErrorCode};
use super::openapi::PortalPath;
use super::{ApiError, AppState};
use crate::crm::events::EventsHub;
use crate::crm::install::{EventsBinding, Refusal};
use crate::settings::{Auth, Portal};

/// Token-protected routes.
pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(status)).routes(routes!(rearm))
}

type Hub = Option<Extension<EventsHub>>;

/// An OAuth portal's app installation, without its tokens.
#[derive(Serialize, ToSchema)]
struct InstallStatus {
    /// An installation is stored.
    installed: bool,
    /// The portal's id at Bitrix24 (`auth[member_id]`).
    member_id: Option<String>,
    /// `https://portal/rest/`.
    client_endpoint: Option<String>,
    /// Unix seconds when the stored access token expires.
    access_expires_at: Option<u64>,
    /// Unix seconds until which the next verified install may replace this one (`install/rearm`).
    rearmed_until: Option<u64>,
    /// The last refused `ONAPPINSTALL` and why.
    last_refused: Option<Refusal>,
    /// Where the app's events were bound after the last accepted install, or why not.
    events: Option<EventsBinding>,
}

/// Until when an install may replace the current one.
#[derive(Serialize, ToSchema)]
struct Rearmed {
    /// Unix seconds.
    rearmed_until: u64,
}

#[utoipa::path(get, path = "/portals/{id}/install", tag = "bitrix24", summary = "The Bitrix24 app installation of an OAuth portal",
    description = "The stored installation (never its tokens), the last refused ONAPPINSTALL and why, and where the app's events were bound (or why not).",
    params(PortalPath),
    responses(
        (status = 200, description = "Status", body = InstallStatus),
        (status = 404, description = "No such portal", body = ErrorBody),
        (status = 422, description = "The portal is not set up as an OAuth app (`fields`: `auth`)", body = ErrorBody),
        (status = 503, description = "Bitrix24 events are not being processed", body = ErrorBody),
    ))]
async fn status(State(state): State<AppState>, hub: Hub, Path(raw): Path<String>) -> Result<Response, ApiError> {
    let portal = oauth_portal(&state, &raw).await?;
    let Some(Extension(hub)) = hub else { return Ok(unavailable()) };
    let stored = hub.installer.installation(portal.id).await?;
    let st = hub.installer.state(portal.id);
    let body = InstallStatus {
        installed: stored.is_some(),
        member_id: stored.as_ref().map(|t| t.member_id.clone()),
        client_endpoint: stored.as_ref().map(|t| t.client_endpoint.clone()),
        access_expires_at: stored.as_ref().map(|t| t.expires_at_unix),
        rearmed_until: st.rearmed_until,
        last_refused: st.last_refused,
        events: st.events,
    };
    Ok(Json(body).into_response())
}

#[utoipa::path(post, path = "/portals/{id}/install/rearm", tag = "bitrix24", summary = "Re-arm the installation",
    description = "For 15 minutes the next verified ONAPPINSTALL may replace the current installation (another member_id, a new application_token). Kept in memory only. No request body.",
    params(PortalPath),
    responses(
        (status = 200, description = "Re-armed", body = Rearmed),
        (status = 404, description = "No such portal", body = ErrorBody),
        (status = 422, description = "The portal is not set up as an OAuth app (`fields`: `auth`)", body = ErrorBody),
        (status = 503, description = "Bitrix24 events are not being processed", body = ErrorBody),
    ))]
async fn rearm(State(state): State<AppState>, hub: Hub, Path(raw): Path<String>) -> Result<Response, ApiError> {
    let portal = oauth_portal(&state, &raw).await?;
    let Some(Extension(hub)) = hub else { return Ok(unavailable()) };
    let until = hub.installer.rearm(portal.id);
    Ok(Json(Rearmed { rearmed_until: until }).into_response())
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
    ErrorBody::new(ErrorCode::Unavailable, "Bitrix24 events are not being processed").answer(StatusCode::SERVICE_UNAVAILABLE)
}
