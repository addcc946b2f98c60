//! Per-source rate limit of the admin API and the Bitrix24 events endpoint (everything under
//! `/api/v1`): `429 Too Many Requests` with `Retry-After` beyond `http.rate_per_source`
//! (after `http.burst_per_source`).
//!
//! Requests carrying the valid admin token and requests from a PBX address some portal trusts
//! (its `trusted_pbx` networks or its `pbx_host`: the same trust as SIP, for the HTTP routing
//! endpoint) are not limited: the limit is against token guessing and floods from unknown
//! sources. Nothing else is exempt: with no `trusted_pbx` configured, loopback is limited like
//! any address (behind a local reverse proxy every client would otherwise be exempt). Requests
//! without a peer address (in-memory tests) pass.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use super::error::{ErrorBody, ErrorCode};
use super::AppState;
use crate::limit::{SourceLimiter, Verdict};

/// The limiter with what it needs to recognise the admin and trusted PBX addresses.
#[derive(Clone)]
pub(super) struct HttpGate {
    pub(super) state: AppState,
    pub(super) limiter: Arc<SourceLimiter>,
}

/// The middleware.
pub(super) async fn rate_limit(State(gate): State<HttpGate>, req: Request, next: Next) -> Response {
    let Some(ConnectInfo(addr)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied() else {
        return next.run(req).await;
    };
    if super::auth::token_ok(&gate.state, req.headers()) {
        return next.run(req).await;
    }
    let ip = addr.ip();
    let snap = gate.state.directory.snapshot();
    let now = tokio::time::Instant::now().into_std();
    gate.limiter.sweep(now);
    match gate
        .limiter
        .check(ip, now, Arc::as_ptr(&snap) as usize, || {
            snap.portals.values().any(|p| p.trusts(ip))
        }) {
        Verdict::Allow => next.run(req).await,
        Verdict::Refuse { retry_after_s } => too_many(retry_after_s),
        Verdict::Drop => too_many(60),
    }
}

fn too_many(retry_after_s: u32) -> Response {
    metrics::counter!("callgate_http_rate_limited_total").increment(1);
    let mut resp = ErrorBody::new(ErrorCode::RateLimited, "too many requests from this address; retry later").answer(StatusCode::TOO_MANY_REQUESTS);
    resp.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(retry_after_s));
    resp
}
