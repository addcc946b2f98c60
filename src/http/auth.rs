//! Bearer-token check for the admin API (constant-time compare).

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;

use super::{ApiError, AppState};

/// Lets the request through only with `Authorization: Bearer <admin.token>`.
///
/// # Errors
/// [`ApiError::Unauthorized`] otherwise.
pub(super) async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Result<Response, ApiError> {
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim);
    match presented {
        Some(token) if !state.token.is_empty() && state.token.ct_eq(token.as_bytes()) => Ok(next.run(req).await),
        _ => {
            metrics::counter!("callgate_admin_auth_failures_total").increment(1);
            Err(ApiError::Unauthorized)
        }
    }
}
