//! `/live`, `/ready`, `/metrics`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use serde_json::{Map, Value};

use crate::sip::transport::Listeners;

use super::AppState;

/// The process is up.
pub(super) async fn live() -> &'static str {
    "ok"
}

/// Ready when every listener is bound, every SIP listener loop still runs and the store answers;
/// the body lists the bound addresses and the loops' states (`{"sip_udp": "127.0.0.1:40123",
/// "http": ..., "listeners": {"sip_udp": "running", ...}, "store": "ok", "ready": true}`)
/// either way. A SIP listener whose loop ended (`"stopped"`, or `"degraded"` when some of its
/// UDP threads ended) makes it 503: the process no longer serves what it bound.
pub(super) async fn ready(State(state): State<AppState>, listeners: Option<Extension<Arc<Listeners>>>) -> impl IntoResponse {
    let mut body: Map<String, Value> = state.addresses.read().iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    let store_ok = state.store.run(|s| s.ping()).await.is_ok();
    let listening = listeners.as_ref().is_none_or(|l| l.all_running());
    let ok = store_ok && listening && !body.is_empty() && !state.shutdown.is_cancelled();
    if let Some(Extension(listeners)) = listeners {
        let states = listeners.states().into_iter().map(|(name, s)| (name.to_owned(), Value::String(s.as_str().into())));
        body.insert("listeners".into(), Value::Object(states.collect()));
    }
    body.insert("store".into(), Value::String(if store_ok { "ok" } else { "unreachable" }.into()));
    body.insert("ready".into(), Value::Bool(ok));
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Value::Object(body)))
}

/// Prometheus text format.
pub(super) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}
