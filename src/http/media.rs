//! `GET /api/v1/media`: the media anchor of browser agents' calls (WebRTC widget mode): open
//! sessions, ports and peer connections in use, and per call the RTP counters of both legs. For
//! operators (is audio flowing on this call?) and for tests, which read this gateway's own
//! figures (the Prometheus counters are process-wide).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::{ApiError, AppState};
use crate::webrtc::media::SessionStats;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/media", get(media))
}

#[derive(Serialize)]
struct Media {
    open_sessions: usize,
    ports_in_use: Ports,
    live_peer_connections: usize,
    calls: Vec<Call>,
}

#[derive(Serialize)]
struct Ports {
    webrtc: usize,
    rtp: usize,
}

#[derive(Serialize)]
struct Call {
    call_id: String,
    session: u64,
    stats: Option<SessionStats>,
}

/// 500 until the SIP side (and with it the anchor) has started (only in the moment after start-up).
async fn media(State(state): State<AppState>) -> Result<Json<Media>, ApiError> {
    let bridge = state.media.get().ok_or_else(|| ApiError::Internal(anyhow::anyhow!("the media anchor has not started")))?;
    let anchor = bridge.anchor();
    let (webrtc, rtp) = anchor.ports_in_use();
    let calls = bridge.calls().into_iter().map(|(call_id, s)| Call { call_id, session: s.0, stats: anchor.stats(s) }).collect();
    Ok(Json(Media { open_sessions: anchor.open_sessions(), ports_in_use: Ports { webrtc, rtp }, live_peer_connections: anchor.live_peer_connections(), calls }))
}
