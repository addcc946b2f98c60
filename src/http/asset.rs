//! Responses for the pages embedded in the binary (`ui.rs`, `widget.rs`): a static asset with its
//! type, and an HTML page under its Content-Security-Policy.

use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};

/// A static body; `no-cache` so a new build's page is picked up at once (the files are small).
pub(super) fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}

/// The HTML page `body` as an [`asset`], under the Content-Security-Policy `csp`.
pub(super) fn page(body: &'static str, csp: &'static str) -> Response {
    page_under(body, HeaderValue::from_static(csp))
}

/// [`page`] with a policy made per request.
pub(super) fn page_under(body: &'static str, csp: HeaderValue) -> Response {
    let mut resp = asset("text/html; charset=utf-8", body);
    resp.headers_mut().insert(CONTENT_SECURITY_POLICY, csp);
    resp
}
