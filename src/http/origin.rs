//! Which web pages may open a SIP WebSocket at `GET /sip`.
//!
//! A browser sends `Origin` with every WebSocket handshake and lets any page open one to any
//! host: without a check, a page on any site an agent visits could open a flow to callgate from
//! the agent's browser. So `/sip` accepts a handshake only from:
//! - callgate's own origin (the widget at `/widget/`): the `Origin`'s host and port equal the
//!   request's `Host` (the scheme is not compared, so a TLS-terminating proxy in front does not
//!   break the widget);
//! - an origin listed in `http.allowed_origins` (compared without case; `*` allows any);
//! - a client that sends no `Origin` at all. Those are not browsers (SIP softphones, JsSIP in
//!   node, scripts), and any non-browser can write whatever `Origin` it likes, so refusing them
//!   would protect nothing: the policy is against drive-by pages, and every flow still has to
//!   authenticate with SIP digest before it may send a request.
//!
//! Everything else gets 403 before the upgrade; `Origin: null` (sandboxed frames, files) counts
//! as foreign unless `null` is listed.

use axum::http::header::{HOST, ORIGIN};
use axum::http::HeaderMap;

/// The allowed origins.
#[derive(Debug, Clone, Default)]
pub(crate) struct OriginPolicy {
    /// Lower-case, without a trailing slash.
    allowed: Vec<String>,
    any: bool,
}

impl OriginPolicy {
    /// From `http.allowed_origins`.
    pub(crate) fn new(allowed: &[String]) -> Self {
        Self {
            any: allowed.iter().any(|o| o.trim() == "*"),
            allowed: allowed.iter().map(|o| normalise(o).to_owned()).filter(|o| o.as_str() != "*").collect(),
        }
    }

    /// Whether a WebSocket handshake with these headers may proceed.
    pub(crate) fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(ORIGIN) else { return true };
        let Ok(origin) = origin.to_str() else { return false };
        let origin = normalise(origin);
        if self.any || self.allowed.contains(&origin) {
            return true;
        }
        let host = headers.get(HOST).and_then(|h| h.to_str().ok()).map(str::trim);
        same_origin(&origin, host)
    }
}

fn normalise(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// `http(s)://HOST` where HOST is the request's `Host` (any case).
fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let Some(host) = host.filter(|h| !h.is_empty()) else { return false };
    let authority = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
    authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HOST, host.parse().unwrap());
        if let Some(o) = origin {
            h.insert(ORIGIN, o.parse().unwrap());
        }
        h
    }

    #[test]
    fn by_default_only_callgates_own_pages_and_clients_without_origin_may_connect() {
        let p = OriginPolicy::new(&[]);
        assert!(p.allows(&headers(Some("https://gw.example.com"), "gw.example.com")));
        assert!(p.allows(&headers(Some("http://GW.example.com:8080"), "gw.example.com:8080")));
        assert!(p.allows(&headers(None, "gw.example.com")), "not a browser");
        assert!(!p.allows(&headers(Some("https://evil.example"), "gw.example.com")));
        assert!(!p.allows(&headers(Some("https://gw.example.com.evil.example"), "gw.example.com")));
        assert!(!p.allows(&headers(Some("https://gw.example.com:8443"), "gw.example.com")), "another port is another origin");
        assert!(!p.allows(&headers(Some("null"), "gw.example.com")));
        assert!(!p.allows(&headers(Some("ftp://gw.example.com"), "gw.example.com")));
    }

    #[test]
    fn listed_origins_and_the_wildcard_are_allowed() {
        let p = OriginPolicy::new(&["https://Phone.example.com/".to_owned()]);
        assert!(p.allows(&headers(Some("https://phone.example.com"), "gw.example.com")));
        assert!(!p.allows(&headers(Some("http://phone.example.com"), "gw.example.com")));
        assert!(OriginPolicy::new(&["*".to_owned()]).allows(&headers(Some("https://evil.example"), "gw.example.com")));
    }
}
