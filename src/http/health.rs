//! `/live`, `/ready`, `/metrics`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde::Serialize;
use utoipa::ToSchema;

use crate::sip::transport::Listeners;

use super::AppState;

/// The process is up.
#[utoipa::path(get, path = "/live", tag = "health", summary = "Liveness: the process is up", security(()),
    responses((status = 200, description = "Up", body = String, content_type = "text/plain", example = "ok")))]
pub(super) async fn live() -> &'static str {
    "ok"
}

/// `/ready`'s body, whether ready or not.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"http": "127.0.0.1:8080", "http_scheme": "http", "sip_udp": "0.0.0.0:5060", "listeners": {"sip_udp": "running"}, "store": "ok", "ready": true}))]
pub(super) struct Ready {
    /// The bound addresses by listener (`http`, `sip_udp`, `sip_tcp`, `sip_tls`), and
    /// `http_scheme` (`http` or `https`).
    #[serde(flatten)]
    addresses: BTreeMap<String, String>,
    /// Each SIP listener loop's state: `running`, `degraded` (some of its UDP threads ended)
    /// or `stopped`.
    #[serde(skip_serializing_if = "Option::is_none")]
    listeners: Option<BTreeMap<String, String>>,
    /// `ok` or `unreachable`.
    #[schema(examples("ok", "unreachable"))]
    store: &'static str,
    /// Every listener bound and running, the store answering, no shutdown under way.
    ready: bool,
}

/// Ready when every listener is bound, every SIP listener loop still runs and the store answers;
/// the body lists the bound addresses and the loops' states (`{"sip_udp": "127.0.0.1:40123",
/// "http": ..., "listeners": {"sip_udp": "running", ...}, "store": "ok", "ready": true}`)
/// either way. A SIP listener whose loop ended (`"stopped"`, or `"degraded"` when some of its
/// UDP threads ended) makes it 503: the process no longer serves what it bound.
#[utoipa::path(get, path = "/ready", tag = "health", summary = "Readiness, with the bound addresses", security(()),
    responses((status = 200, description = "Ready", body = Ready), (status = 503, description = "Not ready (or shutting down)", body = Ready)))]
pub(super) async fn ready(State(state): State<AppState>, listeners: Option<Extension<Arc<Listeners>>>) -> (StatusCode, Json<Ready>) {
    let addresses = state.addresses.read().clone();
    let store_ok = state.store.run(|s| s.ping()).await.is_ok();
    let listening = listeners.as_ref().is_none_or(|l| l.all_running());
    let ready = store_ok && listening && !addresses.is_empty() && !state.shutdown.is_cancelled();
    let listeners = listeners.map(|Extension(l)| l.states().into_iter().map(|(name, s)| (name.to_owned(), s.as_str().to_owned())).collect());
    let store = if store_ok { "ok" } else { "unreachable" };
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Ready { addresses, listeners, store, ready }))
}

/// Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "health", summary = "Prometheus metrics", security(()),
    responses((status = 200, description = "The text exposition format", body = String, content_type = "text/plain; version=0.0.4")))]
pub(super) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}
