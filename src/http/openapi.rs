//! `GET /api/v1/openapi.json`: the admin API's OpenAPI 3.1 document (hand-written in
//! `openapi.json`; a test checks that it lists every route the router serves).

use axum::http::header;
use axum::response::IntoResponse;

/// The document text.
pub(crate) const DOCUMENT: &str = include_str!("openapi.json");

pub(super) async fn document() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}
