//! Validation of settings input; every error names its JSON field path.

use std::net::IpAddr;

use serde::Serialize;

use super::domain::{checked_base_url, normalize_domain, normalize_webhook_url};
use super::model::*;
use crate::config::Secret;
use crate::phone::normalize_number;

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// JSON path: `domain`, `incoming.default_responsible`, `trusted_pbx[1]`.
    pub field: String,
    /// What is wrong, for the operator.
    pub message: String,
}

/// All invalid fields of one input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldErrors(pub Vec<FieldError>);

impl FieldErrors {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError { field: field.into(), message: message.into() });
    }

    /// A single error.
    pub fn one(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut e = Self::default();
        e.add(field, message);
        e
    }

    fn into_result<T>(self, value: T) -> Result<T, Self> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

const DEFAULT_OAUTH_SERVER: &str = "https://oauth.bitrix.info/";

/// `internal_max_digits` at most: the shortest subscriber numbers have 7 digits.
const MAX_INTERNAL_DIGITS: u8 = 6;

/// Checks a portal input; `existing` supplies the stored secret when the input omits or masks it.
///
/// # Errors
/// Every invalid field.
pub fn portal_from_input(input: &PortalInput, existing: Option<&Portal>) -> Result<(Option<String>, String, Option<Auth>), FieldErrors> {
    let mut errs = FieldErrors::default();
    let name = input.name.as_deref().map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned);
    if name.as_ref().is_some_and(|n| n.chars().count() > 100) {
        errs.add("name", "must be at most 100 characters");
    }
    let domain = normalize_domain(&input.domain).unwrap_or_else(|e| {
        errs.add("domain", format!("domain {e}"));
        String::new()
    });
    let kept = existing.and_then(|p| p.auth.clone());
    let auth = match &input.auth {
        None => kept,
        Some(a) => auth_from_input(a, kept.as_ref(), &mut errs),
    };
    errs.into_result((name, domain, auth))
}

fn auth_from_input(a: &AuthInput, kept: Option<&Auth>, errs: &mut FieldErrors) -> Option<Auth> {
    match (&a.webhook_url, &a.oauth) {
        (Some(_), Some(_)) | (None, None) => {
            errs.add("auth", "give exactly one of webhook_url or oauth");
            None
        }
        (Some(url), None) => {
            if let Some(Auth::Webhook { url: old }) = kept {
                if *url == mask_webhook(old.expose()) {
                    return kept.cloned();
                }
            }
            match normalize_webhook_url(url) {
                Ok(u) => Some(Auth::Webhook { url: Secret::new(u) }),
                Err(e) => {
                    errs.add("auth.webhook_url", format!("webhook URL {e}"));
                    None
                }
            }
        }
        (None, Some(o)) => oauth_from_input(o, kept, errs),
    }
}

fn oauth_from_input(o: &OAuthInput, kept: Option<&Auth>, errs: &mut FieldErrors) -> Option<Auth> {
    let id = o.client_id.trim();
    if id.is_empty() || id.len() > 200 || id.chars().any(char::is_whitespace) {
        errs.add("auth.oauth.client_id", "is required (e.g. local.65a1b2c3d4e5f6.12345678)");
    }
    let secret = match kept {
        Some(Auth::OAuth { client_secret, .. }) if o.client_secret == MASK => client_secret.clone(),
        _ if o.client_secret.trim().is_empty() || o.client_secret == MASK => {
            errs.add("auth.oauth.client_secret", "is required");
            Secret::default()
        }
        _ => Secret::new(o.client_secret.trim()),
    };
    let server = o.oauth_server.as_deref().unwrap_or(DEFAULT_OAUTH_SERVER);
    let server = match checked_base_url(server) {
        Ok(u) => u.to_string(),
        Err(e) => {
            errs.add("auth.oauth.oauth_server", format!("OAuth server {e}"));
            String::new()
        }
    };
    Some(Auth::OAuth { client_id: id.to_owned(), client_secret: secret, oauth_server: server })
}

/// Checks settings; an active portal needs both default responsibles.
///
/// # Errors
/// Every invalid field.
pub fn check_settings(s: &PortalSettings) -> Result<(), FieldErrors> {
    let mut errs = FieldErrors::default();
    if s.active {
        if s.incoming.default_responsible.is_none() {
            errs.add("incoming.default_responsible", "is required to activate the integration");
        }
        if s.outgoing.default_responsible.is_none() {
            errs.add("outgoing.default_responsible", "is required to activate the integration");
        }
    }
    for (field, v) in [("incoming.default_responsible", s.incoming.default_responsible), ("outgoing.default_responsible", s.outgoing.default_responsible)] {
        if v == Some(0) {
            errs.add(field, "must be a Bitrix24 user id (a positive number)");
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, tag) in s.other.utm_tags.iter().enumerate() {
        if !seen.insert(tag) {
            errs.add(format!("other.utm_tags[{i}]"), "is listed twice");
        }
    }
    if s.min_talk_seconds > 3600 {
        errs.add("min_talk_seconds", "must be at most 3600");
    }
    if s.internal_max_digits > MAX_INTERNAL_DIGITS {
        errs.add("internal_max_digits", format!("must be at most {MAX_INTERNAL_DIGITS} (longer numbers are customers')"));
    }
    check_network(s, &mut errs);
    errs.into_result(())
}

fn check_network(s: &PortalSettings, errs: &mut FieldErrors) {
    for (i, entry) in s.trusted_pbx.iter().enumerate() {
        if parse_cidr(entry).is_none() {
            errs.add(format!("trusted_pbx[{i}]"), format!("`{}` is not an IP address or CIDR block", clip(entry)));
        }
    }
    let (host_port, transport) = split_pbx_host(&s.pbx_host);
    if !s.pbx_host.is_empty() && !valid_host_port(host_port) {
        errs.add("pbx_host", "must be host:port, e.g. 10.0.0.2:5060");
    } else if let Err(param) = transport {
        errs.add("pbx_host", format!("`;{}` is not a transport: add ;transport=udp, ;transport=tcp or ;transport=tls (once) after host:port", clip(param.trim())));
    }
    if s.sip_domains.len() > MAX_SIP_DOMAINS {
        errs.add("sip_domains", format!("at most {MAX_SIP_DOMAINS} domains"));
    }
    for (i, d) in s.sip_domains.iter().enumerate() {
        if !valid_domain(d) {
            errs.add(format!("sip_domains[{i}]"), format!("`{}` is not a host name such as pbx.example.com", clip(d)));
        }
    }
    if s.correlation_header.is_empty() || s.correlation_header.len() > 64 || !s.correlation_header.bytes().all(is_token_char) {
        errs.add("correlation_header", "must be a SIP header name such as X-Call-Id");
    }
    if s.routing_user.is_empty() || s.routing_user.len() > 64 || !s.routing_user.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b)) {
        errs.add("routing_user", "must be a SIP user name such as pm-route");
    }
}

/// Domains a portal may list in `sip_domains`.
const MAX_SIP_DOMAINS: usize = 16;

/// A DNS host name (letters, digits, `-`, dot-separated labels of 1-63, at most 253 in all) or
/// an IP literal: what a phone may name as its SIP domain.
fn valid_domain(d: &str) -> bool {
    if d.parse::<IpAddr>().is_ok() {
        return true;
    }
    let label = |l: &str| (1..=63).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') && !l.starts_with('-') && !l.ends_with('-');
    (1..=253).contains(&d.len()) && d.split('.').all(label)
}

/// Parses `10.0.0.1` or `10.0.0.0/24` (IPv4 or IPv6) into (network, prefix length).
pub fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let s = s.trim();
    let (ip, len) = match s.split_once('/') {
        Some((ip, len)) => (ip.parse::<IpAddr>().ok()?, len.parse::<u8>().ok()?),
        None => {
            let ip = s.parse::<IpAddr>().ok()?;
            (ip, if ip.is_ipv4() { 32 } else { 128 })
        }
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((ip, len))
}

fn valid_host_port(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else { return false };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    port.parse::<u16>().is_ok_and(|p| p > 0)
        && !host.is_empty()
        && (host.parse::<IpAddr>().is_ok() || host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'))
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

fn clip(s: &str) -> String {
    s.chars().take(60).collect()
}

/// Checks a mapping input and returns it trimmed.
///
/// # Errors
/// Every invalid field.
pub fn check_mapping(m: &MappingInput) -> Result<MappingInput, FieldErrors> {
    let mut errs = FieldErrors::default();
    if m.user_id == 0 {
        errs.add("user_id", "must be a Bitrix24 user id (a positive number)");
    }
    let ext = m.extension.trim().to_owned();
    if ext.is_empty() || ext.len() > 32 || !ext.bytes().all(|b| b.is_ascii_alphanumeric() || b"*#+_.-".contains(&b)) {
        errs.add("extension", "must be 1-32 characters: digits, letters, * # + _ . -");
    }
    let contact = m.contact.as_deref().map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned);
    if let Some(c) = &contact {
        if !valid_sip_uri(c) {
            errs.add("contact", "must be a SIP URI such as sip:101@10.0.0.5:5060");
        }
    }
    errs.into_result(MappingInput { extension: ext, contact, ..m.clone() })
}

fn valid_sip_uri(c: &str) -> bool {
    let rest = c.strip_prefix("sip:").or_else(|| c.strip_prefix("sips:"));
    rest.is_some_and(|r| {
        let hostpart = r.rsplit_once('@').map_or(r, |(_, h)| h);
        let host = hostpart.split([';', '?']).next().unwrap_or("");
        !host.is_empty() && !r.contains(char::is_whitespace) && !r.contains(['<', '>', '"'])
    })
}

/// Checks a line and returns it with its number normalised.
///
/// # Errors
/// Every invalid field.
pub fn check_line(l: &Line) -> Result<Line, FieldErrors> {
    let mut errs = FieldErrors::default();
    let number = match normalize_number(&l.number) {
        Some(n) => n.to_string(),
        None => {
            errs.add("number", "must be a phone number such as +7 495 123-45-67");
            String::new()
        }
    };
    if let Some(utm) = &l.utm {
        for (tag, value) in utm {
            let key = serde_json::to_value(tag).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
            if value.trim().is_empty() || value.chars().count() > 255 {
                errs.add(format!("utm.{key}"), "must be 1-255 characters");
            }
        }
    }
    errs.into_result(Line { number, utm: l.utm.clone() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activation_needs_both_default_responsibles() {
        let mut s = PortalSettings { active: true, ..Default::default() };
        let e = check_settings(&s).unwrap_err();
        let fields: Vec<_> = e.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["incoming.default_responsible", "outgoing.default_responsible"]);
        s.incoming.default_responsible = Some(1);
        s.outgoing.default_responsible = Some(2);
        assert!(check_settings(&s).is_ok());
        s.active = false;
        s.incoming.default_responsible = None;
        assert!(check_settings(&s).is_ok(), "saving while inactive needs nothing");
    }

    #[test]
    fn network_fields_are_checked_with_their_index() {
        let s = PortalSettings {
            trusted_pbx: vec!["10.0.0.0/8".into(), "nope".into(), "::1".into(), "10.0.0.1/33".into()],
            pbx_host: "pbx".into(),
            sip_domains: vec!["pbx.example.com".into(), "bad domain".into(), "10.0.0.2".into(), "-x.example".into()],
            correlation_header: "X Call".into(),
            routing_user: "".into(),
            ..Default::default()
        };
        let e = check_settings(&s).unwrap_err();
        let fields: Vec<_> = e.0.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["trusted_pbx[1]", "trusted_pbx[3]", "pbx_host", "sip_domains[1]", "sip_domains[3]", "correlation_header", "routing_user"]);
    }

    #[test]
    fn pbx_host_may_name_a_transport_and_nothing_else() {
        for (host, transport) in [("10.0.0.2:5060", PbxTransport::Udp), ("10.0.0.2:5060;transport=tcp", PbxTransport::Tcp), ("pbx.example.com:5061;Transport=TLS", PbxTransport::Tls), ("[::1]:5060;transport=udp", PbxTransport::Udp)] {
            let s = PortalSettings { pbx_host: host.into(), ..Default::default() };
            assert!(check_settings(&s).is_ok(), "{host}");
            assert_eq!(s.pbx_transport(), transport, "{host}");
            assert_eq!(s.pbx_host_port(), host.split(';').next().unwrap());
        }
        for bad in ["10.0.0.2:5060;transport=sctp", "10.0.0.2:5060;lr", "10.0.0.2:5060;transport=tcp;transport=udp", "10.0.0.2:5060;transport="] {
            let s = PortalSettings { pbx_host: bad.into(), ..Default::default() };
            let e = check_settings(&s).unwrap_err();
            assert_eq!((e.0.len(), e.0[0].field.as_str()), (1, "pbx_host"), "{bad}");
            assert!(e.0[0].message.contains("transport"), "{}", e.0[0].message);
        }
        let s = PortalSettings { pbx_host: "pbx;transport=tcp".into(), ..Default::default() };
        assert!(check_settings(&s).unwrap_err().0[0].message.contains("host:port"));
    }

    #[test]
    fn internal_max_digits_is_bounded_and_defaults_to_four() {
        let mut s = PortalSettings::default();
        assert_eq!(s.internal_max_digits, 4);
        assert!(s.is_internal_number("*97") && s.is_internal_number("105") && !s.is_internal_number("79161234567"));
        s.internal_max_digits = 7;
        let fields: Vec<_> = check_settings(&s).unwrap_err().0.into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["internal_max_digits"]);
        s.internal_max_digits = 6;
        assert!(check_settings(&s).is_ok());
        let old: PortalSettings = serde_json::from_str(r#"{"min_talk_seconds": 3}"#).unwrap();
        assert_eq!(old.internal_max_digits, 4, "stored settings without the field get the default");
    }

    #[test]
    fn masked_secrets_keep_the_stored_value() {
        let stored = Portal {
            id: 1,
            name: None,
            domain: "https://a.bitrix24.ru/".into(),
            auth: Some(Auth::Webhook { url: Secret::new("https://a.bitrix24.ru/rest/1/secret77/") }),
            settings: Default::default(),
        };
        let shown = stored.auth.as_ref().unwrap().masked();
        assert_eq!(shown.webhook_url.as_deref(), Some("https://a.bitrix24.ru/rest/1/***/"));
        let input = PortalInput { name: None, domain: "a.bitrix24.ru".into(), auth: Some(shown) };
        let (_, _, auth) = portal_from_input(&input, Some(&stored)).unwrap();
        assert_eq!(auth, stored.auth);
    }

    #[test]
    fn mapping_checks() {
        let ok = MappingInput { user_id: 5, extension: " 101 ".into(), use_for_personal_manager: true, contact: Some("sip:101@10.0.0.5:5060".into()) };
        assert_eq!(check_mapping(&ok).unwrap().extension, "101");
        let bad = MappingInput { user_id: 0, extension: "1 01".into(), use_for_personal_manager: true, contact: Some("http://x".into()) };
        let fields: Vec<_> = check_mapping(&bad).unwrap_err().0.into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["user_id", "extension", "contact"]);
    }
}
