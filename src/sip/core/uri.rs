//! [`Uri`]: a zero-copy view of a SIP, SIPS, tel or other URI (RFC 3261 §19.1, RFC 3966).
//!
//! Role: split a URI into scheme, user, host, port, parameters and headers without copying or
//! decoding (`%xx` escapes are kept as sent; compare escaped forms or decode where needed).
//!
//! Rules worth knowing:
//! - The user part ends at the first `@`, so it may hold `;`, `?`, `/` (RFC 4475 §3.1.1.2,
//!   §3.1.1.9); a password (`user:pw@`) is dropped from `user`.
//! - URI parameter values may contain `:` (`;gr=urn:uuid:...`): parameters run to `?`.
//! - An IPv6 host keeps its brackets (`[2001:db8::1]`).
//! - A URI never contains whitespace; one that does is refused (RFC 4475 §3.1.2.8, §3.1.2.14).
//! - Schemes other than `sip`/`sips`/`tel` are kept opaque: `host` is everything after `:`.

use memchr::memchr;

use super::scan::{find_param, has_lws, is_host_char, parse_port, split_once, Cursor};

/// A parsed URI; every field borrows from the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uri<'a> {
    /// `sip`, `sips`, `tel`, ... as written (compare case-insensitively).
    pub scheme: &'a [u8],
    /// The user part (SIP: before `@`, without the password; tel: the number).
    pub user: Option<&'a [u8]>,
    /// Host name, IPv4 address or bracketed IPv6 reference. Empty for `tel`; the opaque
    /// scheme-specific part for unknown schemes.
    pub host: &'a [u8],
    /// Explicit port, if any.
    pub port: Option<u16>,
    /// URI parameters without the leading `;` (`transport=tcp;lr`).
    pub params: &'a [u8],
    /// URI headers without the leading `?` (`Replaces=...`).
    pub headers: &'a [u8],
    /// The whole URI as given.
    pub raw: &'a [u8],
}

impl<'a> Uri<'a> {
    /// Parses `raw` (no surrounding `<>` or whitespace). Returns `None` when the scheme is not
    /// `ALPHA *(ALPHA / DIGIT / "+" / "-" / ".")`, the rest is empty, the URI holds whitespace,
    /// or a SIP URI's host or port is malformed.
    #[must_use]
    pub fn parse(raw: &'a [u8]) -> Option<Self> {
        let (scheme, rest) = split_once(raw, b':')?;
        if !valid_scheme(scheme) || rest.is_empty() || has_lws(raw) {
            return None;
        }
        let opaque = Self {
            scheme,
            user: None,
            host: rest,
            port: None,
            params: &[],
            headers: &[],
            raw,
        };
        if scheme.eq_ignore_ascii_case(b"sip") || scheme.eq_ignore_ascii_case(b"sips") {
            parse_sip(opaque, rest)
        } else if scheme.eq_ignore_ascii_case(b"tel") {
            Some(parse_tel(opaque, rest))
        } else {
            Some(opaque)
        }
    }

    /// The user part alone, without parsing the host part: equals `Uri::parse(raw)?.user` for a
    /// URI that parses (as a validated message's Request-URI does). The redirect hot path needs
    /// only this, several times per request.
    #[must_use]
    pub fn user_of(raw: &'a [u8]) -> Option<&'a [u8]> {
        let (scheme, rest) = split_once(raw, b':')?;
        if scheme.eq_ignore_ascii_case(b"sip") || scheme.eq_ignore_ascii_case(b"sips") {
            let (userinfo, _) = split_once(rest, b'@')?;
            let user = split_once(userinfo, b':').map_or(userinfo, |(user, _password)| user);
            (!user.is_empty()).then_some(user)
        } else {
            Self::parse(raw)?.user
        }
    }

    /// A URI parameter by case-insensitive name; `Some(b"")` for a flag such as `lr`.
    #[must_use]
    pub fn param(&self, name: &[u8]) -> Option<&'a [u8]> {
        find_param(self.params, name)
    }

    /// Whether the scheme is `sip` or `sips` (any case).
    #[must_use]
    pub fn is_sip(&self) -> bool {
        self.scheme.eq_ignore_ascii_case(b"sip") || self.scheme.eq_ignore_ascii_case(b"sips")
    }
}

fn valid_scheme(s: &[u8]) -> bool {
    matches!(s.first(), Some(b) if b.is_ascii_alphabetic())
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// `[userinfo "@"] hostport *(";" param) ["?" headers]`.
fn parse_sip<'a>(mut uri: Uri<'a>, rest: &'a [u8]) -> Option<Uri<'a>> {
    let hostpart = match split_once(rest, b'@') {
        Some((userinfo, hostpart)) => {
            let user = split_once(userinfo, b':').map_or(userinfo, |(user, _password)| user);
            uri.user = (!user.is_empty()).then_some(user);
            hostpart
        }
        None => rest,
    };
    let mut c = Cursor::new(hostpart);
    uri.host = host(&mut c)?;
    if c.eat(b':') {
        uri.port = Some(parse_port(c.take_while(|b| b.is_ascii_digit()))?);
    }
    let tail = c.rest();
    let (params, headers) = split_once(tail, b'?').unwrap_or((tail, &[]));
    match params {
        [] => {}
        [b';', p @ ..] => uri.params = p,
        _ => return None,
    }
    uri.headers = headers;
    Some(uri)
}

/// A host name / IPv4 address, or an IPv6 reference with its brackets.
pub(super) fn host<'a>(c: &mut Cursor<'a>) -> Option<&'a [u8]> {
    let start = c.rest();
    if c.peek() == Some(b'[') {
        let close = memchr(b']', start)?;
        let inner = start.get(1..close)?;
        let ok = !inner.is_empty()
            && inner
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        let reference = start.get(..close.checked_add(1)?)?;
        *c = Cursor::new(start.get(reference.len()..)?);
        return ok.then_some(reference);
    }
    let h = c.take_while(is_host_char);
    (!h.is_empty()).then_some(h)
}

/// `tel:+1-201-555-0123;phone-context=...`: the number goes to `user`.
fn parse_tel<'a>(mut uri: Uri<'a>, rest: &'a [u8]) -> Uri<'a> {
    let (number, params) = split_once(rest, b';').unwrap_or((rest, &[]));
    uri.user = Some(number);
    uri.host = &[];
    uri.params = params;
    uri
}

/// A host that is an IP literal (IPv6 with or without brackets) and a port (5060 when absent)
/// as a socket address; `None` for a host name (never resolved here). For URIs and Via sent-by.
#[must_use]
pub fn socket_addr(host: &[u8], port: Option<u16>) -> Option<std::net::SocketAddr> {
    let host = std::str::from_utf8(host).ok()?;
    let ip: std::net::IpAddr = host.trim_start_matches('[').trim_end_matches(']').parse().ok()?;
    Some(std::net::SocketAddr::new(ip, port.unwrap_or(5060)))
}

#[cfg(test)]
mod tests {
    use super::Uri;

    #[test]
    fn the_user_part_alone_equals_the_full_parse() {
        let cases: &[&[u8]] = &[
            b"sip:alice@example.com",
            b"sip:pm-route@127.0.0.1:5060;transport=udp",
            b"SIPS:+79161234567;isub=1@pbx.example.com",
            b"sip:alice:secret@[2001:db8::1]:5061",
            b"sip:example.com",
            b"sip:@example.com",
            b"tel:+7-916-123-45-67",
            b"urn:service:sos",
        ];
        for raw in cases {
            assert_eq!(Uri::user_of(raw), Uri::parse(raw).and_then(|u| u.user), "{}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn sip_uris_split_into_their_parts() {
        // (input, user, host, port, params, headers)
        type Row = (
            &'static [u8],
            Option<&'static [u8]>,
            &'static [u8],
            Option<u16>,
            &'static [u8],
            &'static [u8],
        );
        let rows: &[Row] = &[
            (
                b"sip:alice@example.com",
                Some(b"alice"),
                b"example.com",
                None,
                b"",
                b"",
            ),
            (
                b"sips:bob:secret@10.0.0.1:5061;transport=tcp",
                Some(b"bob"),
                b"10.0.0.1",
                Some(5061),
                b"transport=tcp",
                b"",
            ),
            (
                b"sip:pbx.example.com;lr",
                None,
                b"pbx.example.com",
                None,
                b"lr",
                b"",
            ),
            (
                b"sip:101@[2001:db8::1]:5060;gr=urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
                Some(b"101"),
                b"[2001:db8::1]",
                Some(5060),
                b"gr=urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
                b"",
            ),
            (
                b"sip:user;par=u%40example.net@example.com",
                Some(b"user;par=u%40example.net"),
                b"example.com",
                None,
                b"",
                b"",
            ),
            (
                b"sip:user@example.com?Route=%3Csip:example.com%3E",
                Some(b"user"),
                b"example.com",
                None,
                b"",
                b"Route=%3Csip:example.com%3E",
            ),
            (
                b"SIP:john.doe@pbx",
                Some(b"john.doe"),
                b"pbx",
                None,
                b"",
                b"",
            ),
        ];
        for &(raw, user, host, port, params, headers) in rows {
            let u = Uri::parse(raw).unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(raw)));
            assert_eq!(
                (u.user, u.host, u.port, u.params, u.headers),
                (user, host, port, params, headers)
            );
            assert_eq!(u.raw, raw);
        }
    }

    #[test]
    fn params_with_colons_are_found_by_name() {
        let u = Uri::parse(b"sip:a@b;gr=urn:uuid:1234;LR;maddr=239.255.255.1").unwrap();
        assert_eq!(u.param(b"gr"), Some(&b"urn:uuid:1234"[..]));
        assert_eq!(u.param(b"lr"), Some(&b""[..]));
        assert_eq!(u.param(b"maddr"), Some(&b"239.255.255.1"[..]));
        assert_eq!(u.param(b"transport"), None);
    }

    #[test]
    fn tel_and_unknown_schemes_are_kept() {
        let t = Uri::parse(b"tel:+74951234567;phone-context=example.ru").unwrap();
        assert_eq!(
            (t.user, t.host, t.param(b"phone-context")),
            (
                Some(&b"+74951234567"[..]),
                &b""[..],
                Some(&b"example.ru"[..])
            )
        );
        let h = Uri::parse(b"soap.beep://192.0.2.103:3002").unwrap();
        assert_eq!(
            (h.scheme, h.host, h.user),
            (&b"soap.beep"[..], &b"//192.0.2.103:3002"[..], None)
        );
        assert!(Uri::parse(b"nobodyKnowsThisScheme:totallyopaquecontent").is_some());
    }

    #[test]
    fn malformed_uris_are_refused() {
        let bad: &[&[u8]] = &[
            b"",
            b"sip:",
            b":x",
            b"<sip:a@b>",
            b"sip:a@b c",
            b" sip:a@b",
            b"sip:a@b\r\n",
            b"sip:a@",
            b"sip:a@b:99999",
            b"sip:a@b:x",
            b"sip:a@[::1",
            b"sip:a@[zz]",
            b"sip:a@b>x",
            b"1sip:a@b",
            b"sip:a@b:5060x",
        ];
        for raw in bad {
            assert_eq!(Uri::parse(raw), None, "{}", String::from_utf8_lossy(raw));
        }
    }
}
