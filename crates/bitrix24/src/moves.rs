//! A portal that moved: a renamed portal answers HTTP 302 with the new address
//! ([`Error::Moved`](crate::Error::Moved); the client never follows it). Following it blindly
//! would send the request, and its credentials, wherever a `Location` points, so these pure
//! checks say when a move may be followed:
//!
//! * a webhook (the URL is the credential): only to another Bitrix24 cloud host
//!   ([`BITRIX24_CLOUD`]) with the very same `/rest/<user>/<code>/` path ([`webhook_move`]);
//! * an OAuth app: only when a token refresh at the OAuth server names the same `member_id` and a
//!   `client_endpoint` on exactly the host the `Location` names ([`moved_endpoint`];
//!   [`OAuthSession::refresh_after`](crate::OAuthSession::refresh_after) applies it).

use url::Url;

/// Bitrix24's cloud domains: a webhook is followed only to a host under one of them.
pub const BITRIX24_CLOUD: &[&str] = &[
    "bitrix24.com",
    "bitrix24.ru",
    "bitrix24.de",
    "bitrix24.eu",
    "bitrix24.es",
    "bitrix24.fr",
    "bitrix24.it",
    "bitrix24.pl",
    "bitrix24.uk",
    "bitrix24.in",
    "bitrix24.id",
    "bitrix24.vn",
    "bitrix24.jp",
    "bitrix24.cn",
    "bitrix24.tr",
    "bitrix24.com.br",
    "bitrix24.com.tr",
    "bitrix24.by",
    "bitrix24.kz",
    "bitrix24.ua",
    "bitrix24.site",
];

/// The webhook URL to follow a redirect of `current` to: `location` must be `https` on a host
/// under [`BITRIX24_CLOUD`] other than the current one, without user info or another port, and
/// carry the same `/rest/<user>/<code>/` prefix (the method part after it is dropped). Anything
/// else: `None`.
pub fn webhook_move(current: &str, location: &str) -> Option<String> {
    let cur = Url::parse(current.trim()).ok()?;
    let loc = Url::parse(location.trim()).ok()?;
    let host = loc.host_str()?.to_ascii_lowercase();
    let on_cloud = BITRIX24_CLOUD.iter().any(|d| {
        host.strip_suffix(d)
            .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1)
    });
    let prefix = cur.path();
    let same_hook =
        prefix.starts_with("/rest/") && prefix.ends_with('/') && loc.path().starts_with(prefix);
    let plain = loc.scheme() == "https"
        && loc.username().is_empty()
        && loc.password().is_none()
        && loc.port().is_none();
    (on_cloud && same_hook && plain && Some(host.as_str()) != cur.host_str())
        .then(|| format!("https://{host}{prefix}"))
}

/// True when `endpoint` is `<scheme>://<the location's host:port>/rest/`: an OAuth
/// `client_endpoint` on the host a redirect named.
pub fn moved_endpoint(endpoint: &str, location: &str) -> bool {
    let Ok(l) = Url::parse(location.trim()) else {
        return false;
    };
    rest_endpoint_on(endpoint, &l)
}

/// True when `endpoint` is `<the base's scheme://host:port>/rest/` (the only shape Bitrix24
/// hands out), so no answer can point calls at another host, port, scheme or path.
pub fn same_portal_endpoint(endpoint: &str, base: &str) -> bool {
    let Ok(b) = Url::parse(base.trim()) else {
        return false;
    };
    rest_endpoint_on(endpoint, &b)
}

fn rest_endpoint_on(endpoint: &str, on: &Url) -> bool {
    let Ok(e) = Url::parse(endpoint.trim()) else {
        return false;
    };
    e.path() == "/rest/"
        && e.query().is_none()
        && e.fragment().is_none()
        && e.username().is_empty()
        && e.password().is_none()
        && e.host_str().is_some()
        && e.host_str() == on.host_str()
        && e.port_or_known_default() == on.port_or_known_default()
        && e.scheme() == on.scheme()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_is_followed_only_to_the_same_hook_on_bitrix24s_cloud() {
        let cur = "https://old.bitrix24.ru/rest/1/code/";
        let loc = |l: &str| webhook_move(cur, l);
        assert_eq!(
            loc("https://new.bitrix24.ru/rest/1/code/batch.json").as_deref(),
            Some("https://new.bitrix24.ru/rest/1/code/")
        );
        assert_eq!(
            loc("https://new.bitrix24.com/rest/1/code/").as_deref(),
            Some("https://new.bitrix24.com/rest/1/code/")
        );
        assert_eq!(
            loc("https://attacker.example/rest/1/code/batch.json"),
            None,
            "off the cloud"
        );
        assert_eq!(
            loc("https://bitrix24.ru.attacker.example/rest/1/code/"),
            None
        );
        assert_eq!(
            loc("https://evilbitrix24.ru/rest/1/code/"),
            None,
            "not a subdomain"
        );
        assert_eq!(
            loc("http://new.bitrix24.ru/rest/1/code/"),
            None,
            "plain http"
        );
        assert_eq!(
            loc("https://new.bitrix24.ru:8443/rest/1/code/"),
            None,
            "another port"
        );
        assert_eq!(loc("https://u:p@new.bitrix24.ru/rest/1/code/"), None);
        assert_eq!(
            loc("https://new.bitrix24.ru/rest/9/other/"),
            None,
            "another webhook"
        );
        assert_eq!(
            loc("https://old.bitrix24.ru/rest/1/code/"),
            None,
            "the same host"
        );
    }

    #[test]
    fn only_the_portals_rest_path_on_its_own_origin_is_its_endpoint() {
        let base = "https://a.bitrix24.ru/rest/";
        assert!(same_portal_endpoint("https://a.bitrix24.ru/rest/", base));
        assert!(same_portal_endpoint(
            "https://A.Bitrix24.ru:443/rest/",
            base
        ));
        for bad in [
            "https://evil.example/rest/",
            "https://a.bitrix24.ru.evil.example/rest/",
            "https://a.bitrix24.ru/oauth/token/",
            "https://a.bitrix24.ru/rest/?x=1",
            "https://a.bitrix24.ru:8443/rest/",
            "http://a.bitrix24.ru/rest/",
            "https://u@a.bitrix24.ru/rest/",
            "",
        ] {
            assert!(!same_portal_endpoint(bad, base), "{bad}");
        }
        assert!(moved_endpoint(
            "https://new.bitrix24.ru/rest/",
            "https://new.bitrix24.ru/rest/batch.json"
        ));
        assert!(!moved_endpoint(
            "https://new.bitrix24.ru/rest/",
            "https://other.bitrix24.ru/rest/batch.json"
        ));
    }
}
