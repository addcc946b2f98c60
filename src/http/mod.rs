//! The HTTP listener (axum): admin API under `/api/v1`, `/live`, `/ready`, `/metrics`.
//! SIP over WebSocket for browser agents at `GET /sip` (RFC 7118, `agents.rs`). The settings
//! page at `/settings/` (`ui.rs`).
//!
//! [`router`] is a pure function of [`AppState`], so tests can drive it in memory or over a real
//! socket. Handlers are thin: validate (`settings`), persist (`store`), then tell the routing
//! directory to reload. Errors are [`ApiError`]s, logged once in `error.rs`.
//!
//! Every route but the static pages is registered with its `#[utoipa::path]` (`utoipa_axum`'s
//! `routes!`): the OpenAPI document at `/api/v1/openapi.json` is generated from those and from
//! the types the handlers take and answer (`openapi.rs`).

mod agents;
mod asset;
mod auth;
mod calls;
mod conns;
mod error;
mod events;
#[cfg(feature = "fuzzing")]
mod fuzz;
mod health;
mod install;
mod json;
mod media;
mod limit;
mod openapi;
mod origin;
mod portals;
mod route;
mod serve;
mod sync;
mod ui;
mod widget;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use parking_lot::RwLock;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::Secret;
use crate::store::StoreHandle;

pub use error::ApiError;
#[doc(hidden)]
#[cfg(feature = "fuzzing")]
pub use fuzz::{fuzz_admin_json, fuzz_event_form};
pub use json::ApiJson;
pub use serve::{serve, ConnLimits};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// Persistence.
    pub store: StoreHandle,
    /// The admin bearer token.
    pub token: Arc<Secret>,
    /// Bound addresses, filled once everything is bound; `/ready` shows them.
    pub addresses: Arc<RwLock<BTreeMap<String, String>>>,
    /// Prometheus rendering.
    pub metrics: PrometheusHandle,
    /// Routing directory to reload after settings change.
    pub directory: crate::directory::Directory,
    /// Recent routing decisions (audit).
    pub decisions: Arc<crate::routing::DecisionLog>,
    /// The call tracker (`/api/v1/calls`).
    pub calls: crate::calls::CallsHandle,
    /// Cancelled when shutdown starts (`/ready` turns 503).
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The media bridge of browser agents' calls (`/api/v1/media`), set once SIP has started.
    pub media: crate::webrtc::BridgeSlot,
    /// `crm.delivery_horizon`: intents queued longer are overdue (`/api/v1/calls?delivery=problems`).
    pub delivery_horizon: Duration,
}

/// Limits for the whole router.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Largest body.
    pub body_limit: usize,
    /// Per-request time limit.
    pub timeout: Duration,
    /// Requests per source address under `/api/v1` (unknown sources without the admin token).
    pub per_source: crate::limit::Rate,
    /// Origins whose pages may open `GET /sip` besides callgate's own (`origin.rs`).
    pub allowed_origins: Vec<String>,
}

/// Builds the router.
pub fn router(state: AppState, limits: HttpLimits) -> Router {
    let (documented, api) = documented_routes(&state, &limits).split_for_parts();
    documented
        .merge(widget::routes())
        .merge(ui::routes())
        .layer(axum::Extension(openapi::Document::new(api)))
        .layer(axum::Extension(Arc::new(origin::OriginPolicy::new(&limits.allowed_origins))))
        .layer(middleware::from_fn(count_requests))
        .layer(DefaultBodyLimit::max(limits.body_limit))
        .layer(TimeoutLayer::with_status_code(axum::http::StatusCode::REQUEST_TIMEOUT, limits.timeout))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let path = req.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str);
            tracing::info_span!("http", method = %req.method(), path)
        }))
        .with_state(state)
}

/// The admin API, health and `/sip`, each route with its OpenAPI description.
fn documented_routes(state: &AppState, limits: &HttpLimits) -> OpenApiRouter<AppState> {
    let api = portals::routes()
        .merge(route::admin_routes())
        .merge(calls::routes())
        .merge(media::routes())
        .merge(sync::routes())
        .merge(agents::routes())
        .merge(install::routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_token))
        .merge(route::public_routes())
        .merge(events::routes())
        .routes(routes!(openapi::serve));
    let limiter = crate::limit::SourceLimiter::new(limits.per_source, crate::limit::Rate::unlimited(), 65_536, std::time::Instant::now());
    let api = if limiter.is_off() {
        api
    } else {
        let gate = limit::HttpGate { state: state.clone(), limiter: Arc::new(limiter) };
        api.route_layer(middleware::from_fn_with_state(gate, limit::rate_limit))
    };
    OpenApiRouter::with_openapi(openapi::root())
        .nest("/api/v1", api)
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .routes(routes!(health::metrics))
        .routes(routes!(agents::sip_websocket))
}

/// Counts requests by route template and status (never by raw path: ids would explode labels).
async fn count_requests(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().to_string();
    let resp = next.run(req).await;
    metrics::counter!("callgate_http_requests_total", "method" => method, "route" => route, "status" => resp.status().as_u16().to_string()).increment(1);
    resp
}
