//! `GET /api/v1/media`: the media anchor of browser agents' calls (WebRTC widget mode): open
//! sessions, ports and peer connections in use, and per call the RTP counters of both legs. For
//! operators (is audio flowing on this call?) and for tests, which read this gateway's own
//! figures (the Prometheus counters are process-wide).

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::ErrorBody;
use super::{ApiError, AppState};
use crate::webrtc::media::SessionStats;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(media))
}

/// The media anchor of browser agents' calls.
#[derive(Serialize, ToSchema)]
struct Media {
    /// Media sessions open.
    open_sessions: usize,
    /// UDP ports in use.
    ports_in_use: MediaPorts,
    /// WebRTC peer connections not yet released.
    live_peer_connections: usize,
    /// Per call, its session and RTP counters.
    calls: Vec<MediaCall>,
}

/// UDP ports in use, by side.
#[derive(Serialize, ToSchema)]
struct MediaPorts {
    /// Towards browsers.
    webrtc: usize,
    /// Towards the PBX.
    rtp: usize,
}

/// One call's media.
#[derive(Serialize, ToSchema)]
struct MediaCall {
    /// The SIP Call-ID of the browser's call.
    call_id: String,
    /// The anchor's session.
    session: u64,
    /// The session's counters, while it is open.
    stats: Option<SessionStats>,
}

/// 500 until the SIP side (and with it the anchor) has started (only in the moment after start-up).
#[utoipa::path(get, path = "/media", tag = "agents", summary = "The media anchor of browser agents' calls: open sessions, ports and peer connections in use, RTP counters per call",
    responses((status = 200, description = "Media", body = Media), (status = 500, description = "The media anchor has not started", body = ErrorBody)))]
async fn media(State(state): State<AppState>) -> Result<Json<Media>, ApiError> {
    let bridge = state.media.get().ok_or_else(|| ApiError::Internal(anyhow::anyhow!("the media anchor has not started")))?;
    let anchor = bridge.anchor();
    let (webrtc, rtp) = anchor.ports_in_use();
    let calls = bridge.calls().into_iter().map(|(call_id, s)| MediaCall { call_id, session: s.0, stats: anchor.stats(s) }).collect();
    Ok(Json(Media { open_sessions: anchor.open_sessions(), ports_in_use: MediaPorts { webrtc, rtp }, live_peer_connections: anchor.live_peer_connections(), calls }))
}
