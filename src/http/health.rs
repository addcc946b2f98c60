//! `/live`, `/ready`, `/metrics`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{Map, Value};

use super::AppState;

/// The process is up.
pub(super) async fn live() -> &'static str {
    "ok"
}

/// Ready when every listener is bound and the store answers; the body lists the bound addresses
/// (`{"sip_udp": "127.0.0.1:40123", "http": ..., "ready": true}`) either way.
pub(super) async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let mut body: Map<String, Value> = state.addresses.read().iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    let store_ok = state.store.run(|s| s.ping()).await.is_ok();
    let ok = store_ok && !body.is_empty() && !state.shutdown.is_cancelled();
    body.insert("store".into(), Value::String(if store_ok { "ok" } else { "unreachable" }.into()));
    body.insert("ready".into(), Value::Bool(ok));
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Value::Object(body)))
}

/// Prometheus text format.
pub(super) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], state.metrics.render())
}
