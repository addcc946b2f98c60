//! The settings page at `/settings/` (issue 7): the operator's view of the portals, their settings
//! in the blocks of the original guide, the employee mappings, and the recent calls. `/` redirects
//! to it.
//!
//! Sources live in `src/ui/` (hand-written HTML, CSS and JS: no framework, no build step, no CDN)
//! and are embedded at compile time like the widget's (`widget.rs`). The page is public and holds
//! no data: everything comes from the admin API on the same origin with the admin token the
//! operator types (kept in the tab's sessionStorage). Labels in English and Russian (`i18n.js`).

use axum::http::header::{REFERRER_POLICY, X_FRAME_OPTIONS};
use axum::http::HeaderValue;
use axum::response::{Redirect, Response};
use axum::routing::get;
use axum::Router;

use super::asset::{asset, page};
use super::AppState;

const INDEX: &str = include_str!("../ui/index.html");
const APP: &str = include_str!("../ui/app.js");
const I18N: &str = include_str!("../ui/i18n.js");
const STYLE: &str = include_str!("../ui/style.css");

/// Scripts, styles and requests only to this origin; no inline code; never framed (the page
/// handles the admin token).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; \
                   form-action 'none'; frame-ancestors 'none'; base-uri 'none'";

/// `/` and `/settings` (redirect), `/settings/`, `/settings/index.html`, and the page's assets.
pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { Redirect::temporary("/settings/") }))
        .route(
            "/settings",
            get(|| async { Redirect::permanent("/settings/") }),
        )
        .route("/settings/", get(index))
        .route("/settings/index.html", get(index))
        .route(
            "/settings/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP) }),
        )
        .route(
            "/settings/i18n.js",
            get(|| async { asset("text/javascript; charset=utf-8", I18N) }),
        )
        .route(
            "/settings/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE) }),
        )
}

async fn index() -> Response {
    let mut resp = page(INDEX, CSP);
    let h = resp.headers_mut();
    h.insert(X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}

#[cfg(test)]
mod tests {
    use axum::http::header::{
        CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS,
    };

    use super::*;

    #[test]
    fn page_references_its_assets_and_stable_test_ids() {
        for asset in [r#"href="style.css""#, r#"src="i18n.js""#, r#"src="app.js""#] {
            assert!(INDEX.contains(asset), "{asset}");
        }
        assert!(
            !INDEX.contains("http://") && !INDEX.contains("https://cdn"),
            "no external resources"
        );
        assert!(
            !INDEX.contains("<script>") && !INDEX.contains(" style="),
            "nothing inline (the CSP forbids it)"
        );
        let ids = [
            "login-token",
            "login-submit",
            "login-error",
            "logout",
            "nav-settings",
            "nav-calls",
            "portal-picker",
            "portal-edit",
            "portal-add",
            "portal-empty",
            "cred-dialog",
            "cred-name",
            "cred-domain",
            "cred-kind",
            "cred-webhook",
            "cred-client-id",
            "cred-client-secret",
            "cred-save",
            "cred-cancel",
            "cred-delete",
            "block-credentials",
            "block-integration",
            "block-incoming",
            "block-outgoing",
            "block-other",
            "block-mappings",
            "block-lines",
            "line-add",
            "line-number",
            "line-utm_source",
            "line-save",
            "field-active",
            "active-note",
            "field-telephony_mode",
            "field-pbx_host",
            "field-sip_domains",
            "field-trusted_pbx",
            "field-correlation_header",
            "field-routing_user",
            "field-min_talk_seconds",
            "field-incoming.forward_to_personal_manager",
            "field-incoming.create_entity",
            "field-incoming.default_responsible",
            "error-incoming.default_responsible",
            "field-incoming.assign_responsible_to",
            "field-outgoing.create_entity",
            "field-outgoing.default_responsible",
            "error-outgoing.default_responsible",
            "field-other.calltracking",
            "utm-row",
            "utm-utm_source",
            "utm-utm_term",
            "field-other.chat_message",
            "settings-save",
            "settings-cancel",
            "save-status",
            "mapping-add",
            "mapping-import",
            "import-result",
            "mapping-form",
            "mapping-user",
            "mapping-extension",
            "mapping-pm",
            "mapping-contact",
            "mapping-save",
            "mappings-table",
            "calls-table",
            "calls-empty",
            "calls-refresh",
            "call-details",
        ];
        for id in ids {
            assert!(INDEX.contains(&format!(r#"data-testid="{id}""#)), "{id}");
        }
        // Every toggle and every required select carries a hint.
        for field in [
            "active",
            "telephony_mode",
            "incoming.forward_to_personal_manager",
            "incoming.create_entity",
            "incoming.default_responsible",
            "incoming.assign_responsible_to",
            "outgoing.create_entity",
            "outgoing.default_responsible",
            "other.calltracking",
            "other.chat_message",
        ] {
            assert!(
                INDEX.contains(&format!(r#"data-testid="hint-{field}""#)),
                "hint for {field}"
            );
        }
        assert!(
            APP.contains("sessionStorage") && APP.contains("authorization: `Bearer ${bearer}`"),
            "token in sessionStorage, sent as a header"
        );
        assert!(
            !APP.contains("localStorage.setItem(TOKEN_KEY"),
            "the token never outlives the tab"
        );
        assert!(!APP.contains(".innerHTML"), "API data goes in as text only");
    }

    #[test]
    fn every_string_key_used_by_the_page_is_in_both_languages() {
        let (en, ru) = I18N.split_once("\n  ru: {").expect("an ru block");
        let keys = |block: &str| -> std::collections::BTreeSet<String> {
            block
                .split([',', '\n', '{'])
                .filter_map(|part| part.trim().split_once(": "))
                .map(|(k, _)| k.trim().to_owned())
                .filter(|k| {
                    !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                })
                .collect()
        };
        let (en, ru) = (
            keys(en.split_once("en: {").expect("an en block").1),
            keys(ru),
        );
        assert!(en.len() > 150, "parsed the dictionary: {}", en.len());
        assert_eq!(
            en.symmetric_difference(&ru).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "keys in one language only"
        );
        let used = [
            "data-i18n=\"",
            "data-i18n-title=\"",
            "data-hint=\"",
            "data-i18n-placeholder=\"",
        ]
        .into_iter()
        .flat_map(|attr| INDEX.split(attr).skip(1));
        for key in used.map(|s| s.split('"').next().unwrap_or_default()) {
            assert!(
                en.contains(key),
                "{key} is used by index.html but not in i18n.js"
            );
        }
    }

    #[tokio::test]
    async fn assets_are_served_with_their_types_and_the_page_with_a_strict_csp() {
        let page = index().await;
        assert_eq!(page.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        assert!(page.headers()[CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("script-src 'self'"));
        assert_eq!(page.headers()[X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(page.headers()[CACHE_CONTROL], "no-cache");
        assert_eq!(
            asset("text/css; charset=utf-8", STYLE).headers()[CONTENT_TYPE],
            "text/css; charset=utf-8"
        );
    }
}
