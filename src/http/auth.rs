//! Bearer-token check for the admin API (constant-time compare).

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;

use super::{ApiError, AppState};

/// Lets the request through only with `Authorization: Bearer <admin.token>`.
///
/// # Errors
/// [`ApiError::Unauthorized`] otherwise.
pub(super) async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Result<Response, ApiError> {
    if token_ok(&state, req.headers()) {
        Ok(next.run(req).await)
    } else {
        metrics::counter!("callgate_admin_auth_failures_total").increment(1);
        Err(ApiError::Unauthorized)
    }
}

/// True when the request carries the admin token.
pub(super) fn token_ok(state: &AppState, headers: &HeaderMap) -> bool {
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    presented.is_some_and(|t| !state.token.is_empty() && state.token.ct_eq(t.as_bytes()))
}
