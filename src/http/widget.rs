//! The browser softphone page for WebRTC-widget agents at `/widget/` (issue 6, part 5): a static
//! page with JsSIP that registers at this listener's `GET /sip` with the credentials the admin API
//! issued. No secret is in the page; the agent types the password.
//!
//! Sources live in `src/webrtc/widget/` and are embedded at compile time, so the binary needs no files
//! at run time and cargo needs no node: `index.html` and `app.js` are hand-written, and
//! `vendor/jssip.min.js` is JsSIP from npm (pinned in `src/webrtc/widget/package-lock.json`) bundled by
//! `src/webrtc/widget/vendor.mjs` and committed with its license header (JsSIP's npm package ships no
//! dist file). Public (no admin token), like the page of any softphone.

use axum::extract::State;
use axum::http::HeaderValue;
use axum::response::{Redirect, Response};
use axum::routing::get;
use axum::Router;

use super::asset::{asset, page, page_under};
use super::AppState;

const INDEX: &str = include_str!("../webrtc/widget/index.html");
const APP: &str = include_str!("../webrtc/widget/app.js");
const JSSIP: &str = include_str!("../webrtc/widget/vendor/jssip.min.js");

/// Scripts only from this origin, WebSocket to any (the form lets the agent pick the URL). The
/// page may be framed only by itself and the portals' Bitrix24 pages ([`frame_ancestors`]): an
/// agent's softphone framed by another site could be clickjacked into answering or transferring.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self' ws: wss:; \
                   media-src 'self' blob: mediastream:; img-src 'self' data:; form-action 'none'; base-uri 'none'";

/// `/widget` (redirects), `/widget/`, `/widget/index.html`, `/widget/app.js`, `/widget/jssip.min.js`.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/widget", get(|| async { Redirect::permanent("/widget/") }))
        .route("/widget/", get(index))
        .route("/widget/index.html", get(index))
        .route("/widget/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP) }))
        .route("/widget/jssip.min.js", get(|| async { asset("text/javascript; charset=utf-8", JSSIP) }))
}

async fn index(State(state): State<AppState>) -> Response {
    let domains: Vec<String> = state.directory.snapshot().portals.values().map(|p| p.portal.domain.clone()).collect();
    let policy = format!("{CSP}; {}", frame_ancestors(domains.iter().map(String::as_str)));
    match HeaderValue::from_str(&policy) {
        Ok(csp) => page_under(INDEX, csp),
        Err(_) => page(INDEX, "default-src 'none'; frame-ancestors 'none'"),
    }
}

/// `frame-ancestors 'self' https://<portal host> ...` from the portals' normalised domains
/// (`https://host[:port]/`); anything else is left out (it must not be able to add directives).
fn frame_ancestors<'a>(domains: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::from("frame-ancestors 'self'");
    for d in domains {
        let origin = d.trim_end_matches('/');
        let host = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://")).unwrap_or("");
        let plain = !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
        if plain {
            out.push(' ');
            out.push_str(origin);
        }
    }
    out
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

    #[test]
    fn only_the_portals_may_frame_the_page() {
        let fa = frame_ancestors(["https://office.bitrix24.ru/", "https://evil.example; script-src *", "office.example", "https://b24.example.com:8443/"].into_iter());
        assert_eq!(fa, "frame-ancestors 'self' https://office.bitrix24.ru https://b24.example.com:8443");
        assert!(!CSP.contains("frame-ancestors"), "set per request");
        assert!(APP.contains("sameOriginWs(params.get('ws'))"), "the ws prefill is checked");
    }
}
