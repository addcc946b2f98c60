//! Portal domain and Bitrix24 URL normalisation.

use std::net::IpAddr;

use url::{Host, Url};

use super::model::Portal;

/// Why a domain or URL was refused (the message is shown to the operator).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DomainError {
    /// Nothing given.
    #[error("is required")]
    Empty,
    /// Not parseable as a host or URL.
    #[error("is not a valid portal address")]
    Invalid,
    /// A scheme other than http(s).
    #[error("must be an https:// address")]
    Scheme,
    /// User name or password in the address.
    #[error("must not contain a user name or password")]
    Credentials,
    /// A host that is not a valid DNS name.
    #[error("`{0}` is not a valid host name")]
    Host(String),
    /// `http://` to anything but loopback.
    #[error("must use https:// (http:// is accepted only for 127.0.0.1 and localhost)")]
    PlainHttp,
    /// A webhook URL without the `/rest/<user>/<token>/` path.
    #[error("must look like https://portal/rest/<user id>/<token>/")]
    WebhookPath,
}

/// The digest realm of a portal: the host of its normalised domain (`https://host[:port]/`),
/// lower case. Also the host part of the agents' SIP URIs (`sip:101@host`): browser agents'
/// credentials and the digest challenges of IP phones are issued in it.
pub fn realm_of(portal: &Portal) -> String {
    Url::parse(&portal.domain).ok().and_then(|u| u.host_str().map(str::to_ascii_lowercase)).unwrap_or_else(|| portal.domain.clone())
}

/// Normalises a portal domain to `https://host[:port]/`: scheme optional and case-insensitive,
/// host lowercased, path/query dropped. `comagic.bitrix24.ru`, `https://comagic.bitrix24.ru/` and
/// `HTTP://Comagic.Bitrix24.ru/path` all become `https://comagic.bitrix24.ru/`.
///
/// # Errors
/// Empty input, a non-http(s) scheme, credentials in the address, an invalid host.
pub fn normalize_domain(input: &str) -> Result<String, DomainError> {
    let text = input.trim();
    if text.is_empty() {
        return Err(DomainError::Empty);
    }
    let with_scheme = if text.contains("://") { text.to_owned() } else { format!("https://{text}") };
    let url = Url::parse(&with_scheme).map_err(|_| DomainError::Invalid)?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(DomainError::Scheme);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(DomainError::Credentials);
    }
    let host = checked_host(&url)?;
    Ok(match url.port() {
        Some(port) if port != 443 => format!("https://{host}:{port}/"),
        _ => format!("https://{host}/"),
    })
}

/// Validates an incoming-webhook URL (`https://portal/rest/<user id>/<token>/`) and returns it with
/// a trailing slash. `http://` is accepted only for loopback (tests point it at a local fake).
///
/// # Errors
/// Bad scheme, host or path.
pub fn normalize_webhook_url(input: &str) -> Result<String, DomainError> {
    let url = checked_base_url(input)?;
    let segs: Vec<&str> = url.path().trim_matches('/').split('/').collect();
    let ok = segs.len() == 3
        && segs[0] == "rest"
        && !segs[1].is_empty()
        && segs[1].bytes().all(|b| b.is_ascii_digit())
        && !segs[2].is_empty()
        && segs[2].bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok || url.query().is_some() || url.fragment().is_some() {
        return Err(DomainError::WebhookPath);
    }
    Ok(format!("{}://{}/rest/{}/{}/", url.scheme(), authority(&url), segs[1], segs[2]))
}

/// Validates an absolute base URL (OAuth server, client endpoint): https, or http on loopback.
///
/// # Errors
/// Bad scheme or host.
pub fn checked_base_url(input: &str) -> Result<Url, DomainError> {
    let text = input.trim();
    if text.is_empty() {
        return Err(DomainError::Empty);
    }
    let url = Url::parse(text).map_err(|_| DomainError::Invalid)?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(DomainError::Credentials);
    }
    checked_host(&url)?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(DomainError::PlainHttp),
        _ => Err(DomainError::Scheme),
    }
}

fn authority(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        Some(Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

fn checked_host(url: &Url) -> Result<String, DomainError> {
    match url.host() {
        Some(Host::Ipv4(ip)) => Ok(IpAddr::V4(ip).to_string()),
        Some(Host::Ipv6(ip)) => Ok(format!("[{ip}]")),
        Some(Host::Domain(d)) if valid_dns_name(d) => Ok(d.to_ascii_lowercase()),
        Some(Host::Domain(d)) => Err(DomainError::Host(d.chars().take(80).collect())),
        None => Err(DomainError::Invalid),
    }
}

/// RFC 1123 host name with at least two labels (or `localhost`); labels 1-63 chars of letters,
/// digits and inner hyphens; the last label not all digits.
fn valid_dns_name(d: &str) -> bool {
    if d == "localhost" {
        return true;
    }
    let labels: Vec<&str> = d.trim_end_matches('.').split('.').collect();
    let label_ok = |l: &&str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    d.len() <= 253
        && labels.len() >= 2
        && labels.iter().all(label_ok)
        && !labels.last().is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_normalise_to_https_host_slash() {
        for input in [
            "comagic.bitrix24.ru",
            "https://comagic.bitrix24.ru/",
            "HTTP://Comagic.Bitrix24.ru/path",
            "  comagic.bitrix24.ru/  ",
            "https://comagic.bitrix24.ru:443/crm/?x=1",
            "Comagic.Bitrix24.RU",
        ] {
            assert_eq!(normalize_domain(input).as_deref(), Ok("https://comagic.bitrix24.ru/"), "{input}");
        }
        assert_eq!(normalize_domain("b24.example.com:8443").as_deref(), Ok("https://b24.example.com:8443/"));
        assert_eq!(normalize_domain("портал.рф").as_deref(), Ok("https://xn--80awhdgm.xn--p1ai/"));
    }

    #[test]
    fn invalid_domains_are_refused() {
        for input in [
            "",
            "   ",
            "ftp://comagic.bitrix24.ru",
            "https://",
            "exa mple.ru",
            "-bad-.ru",
            "nodot",
            "under_score.ru",
            "https://user:pw@comagic.bitrix24.ru/",
            "comagic..bitrix24.ru",
        ] {
            assert!(normalize_domain(input).is_err(), "{input} accepted");
        }
    }

    #[test]
    fn webhook_urls() {
        assert_eq!(
            normalize_webhook_url("https://Comagic.bitrix24.ru/rest/1/abc123").as_deref(),
            Ok("https://comagic.bitrix24.ru/rest/1/abc123/")
        );
        assert_eq!(
            normalize_webhook_url("http://127.0.0.1:4000/rest/7/tok/").as_deref(),
            Ok("http://127.0.0.1:4000/rest/7/tok/")
        );
        assert_eq!(normalize_webhook_url("http://comagic.bitrix24.ru/rest/1/abc/"), Err(DomainError::PlainHttp));
        assert_eq!(normalize_webhook_url("https://comagic.bitrix24.ru/rest/x/abc/"), Err(DomainError::WebhookPath));
        assert_eq!(normalize_webhook_url("https://comagic.bitrix24.ru/api/1/abc/"), Err(DomainError::WebhookPath));
        assert_eq!(normalize_webhook_url("https://comagic.bitrix24.ru/rest/1/"), Err(DomainError::WebhookPath));
    }
}
