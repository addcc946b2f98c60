//! The browser softphone page for WebRTC-widget agents at `/widget/` (issue 6, part 5): a static
//! page with JsSIP that registers at this listener's `GET /sip` with the credentials the admin API
//! issued. No secret is in the page; the agent types the password.
//!
//! Sources live in `src/webrtc/widget/` and are embedded at compile time, so the binary needs no files
//! at run time and cargo needs no node: `index.html` and `app.js` are hand-written, and
//! `vendor/jssip.min.js` is JsSIP from npm (pinned in `src/webrtc/widget/package-lock.json`) bundled by
//! `src/webrtc/widget/vendor.mjs` and committed with its license header (JsSIP's npm package ships no
//! dist file). Public (no admin token), like the page of any softphone.

use axum::response::{Redirect, Response};
use axum::routing::get;
use axum::Router;

use super::asset::{asset, page};
use super::AppState;

const INDEX: &str = include_str!("../webrtc/widget/index.html");
const APP: &str = include_str!("../webrtc/widget/app.js");
const JSSIP: &str = include_str!("../webrtc/widget/vendor/jssip.min.js");

/// Scripts only from this origin, WebSocket to any (the form lets the agent pick the URL).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self' ws: wss:; \
                   media-src 'self' blob: mediastream:; img-src 'self' data:; form-action 'none'; frame-ancestors *; base-uri 'none'";

/// `/widget` (redirects), `/widget/`, `/widget/index.html`, `/widget/app.js`, `/widget/jssip.min.js`.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/widget", get(|| async { Redirect::permanent("/widget/") }))
        .route("/widget/", get(index))
        .route("/widget/index.html", get(index))
        .route("/widget/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP) }))
        .route("/widget/jssip.min.js", get(|| async { asset("text/javascript; charset=utf-8", JSSIP) }))
}

async fn index() -> Response {
    page(INDEX, CSP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_references_embedded_assets_and_stable_test_ids() {
        assert!(INDEX.contains(r#"src="jssip.min.js""#) && INDEX.contains(r#"src="app.js""#));
        for id in ["login-extension", "login-password", "login-ws-url", "login-submit", "status", "caller", "answer", "hangup", "hold", "transfer"] {
            assert!(INDEX.contains(&format!(r#"data-testid="{id}""#)), "{id}");
        }
        assert!(JSSIP.starts_with("/*!\n * JsSIP ") && JSSIP.contains("MIT"), "license header kept");
        assert!(APP.contains("JsSIP.UA"));
    }
}
