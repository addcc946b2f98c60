//! [`NameAddr`]: the value of From, To, Contact, Route, Refer-To, P-Asserted-Identity, ...
//! (RFC 3261 §20.10, §25.1 `name-addr / addr-spec`), zero-copy.
//!
//! Three shapes are accepted:
//! - `"Quoted Display" <uri> ;params` (quotes stripped, backslash escapes kept as-is);
//! - `Token Display <uri> ;params` or `<uri> ;params` (no space needed before `<`);
//! - bare `uri ;params`, where everything after the first `;` belongs to the *header*, not the
//!   URI (RFC 3261 §20), so a bare URI may not contain `?` or `,`.
//!
//! Tolerance: display names are bytes, never decoded, so CP1251/KOI8 names pass; unquoted
//! display names may also hold bytes >= 0x80 (seen on Russian PBXs). Strictness: an unterminated
//! quote, spaces inside `<...>`, an unquoted display name with non-token characters, or empty
//! parameters (`;;`) are refused, as RFC 4475 §3.1.2.6, .13, .14, .15 and .1 ask.

use memchr::memchr;

use super::scan::{find_param, header_params, is_lws, is_token_char, split_once, trim_lws, Cursor};
use super::uri::Uri;

/// A parsed name-addr or addr-spec with its header parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// The display name: raw bytes, may be non-UTF-8; quotes stripped, escapes kept.
    pub display: Option<&'a [u8]>,
    /// The address.
    pub uri: Uri<'a>,
    /// The `tag` header parameter, if present.
    pub tag: Option<&'a [u8]>,
    /// The header parameters without the leading `;` (`tag=1;expires=60`), trimmed.
    pub params: &'a [u8],
}

impl<'a> NameAddr<'a> {
    /// Parses one value (split a Contact list with `comma_values` first). `None` when the value
    /// is malformed as described in the module docs.
    #[must_use]
    pub fn parse(raw: &'a [u8]) -> Option<Self> {
        let raw = trim_lws(raw);
        let (display, after_display) = if raw.first() == Some(&b'"') {
            let mut c = Cursor::new(raw);
            let display = c.quoted()?;
            c.skip_lws();
            (Some(display), c.rest())
        } else if let Some(lt) = memchr(b'<', raw) {
            let (display, rest) = raw.split_at_checked(lt)?;
            let display = trim_lws(display);
            if !display.iter().all(|&b| is_display_char(b)) {
                return None;
            }
            ((!display.is_empty()).then_some(display), rest)
        } else {
            return bare(raw);
        };
        let inner = after_display.strip_prefix(b"<")?;
        let (uri_raw, after) = split_once(inner, b'>')?;
        let uri = Uri::parse(uri_raw)?;
        Self::finish(display, uri, after)
    }

    /// The URI's user part alone: equals `NameAddr::parse(raw)?.uri.user` for a value that
    /// parses (as a validated message's From does), without validating the display name, the
    /// host part or the parameters. The redirect hot path needs only the caller's user.
    #[must_use]
    pub fn user_of(raw: &'a [u8]) -> Option<&'a [u8]> {
        let raw = trim_lws(raw);
        let uri_raw = if raw.first() == Some(&b'"') {
            let mut c = Cursor::new(raw);
            c.quoted()?;
            c.skip_lws();
            split_once(c.rest().strip_prefix(b"<")?, b'>')?.0
        } else if let Some(lt) = memchr(b'<', raw) {
            split_once(raw.get(lt.checked_add(1)?..)?, b'>')?.0
        } else {
            trim_lws(raw.get(..memchr(b';', raw).unwrap_or(raw.len()))?)
        };
        Uri::user_of(uri_raw)
    }

    /// Validates the header parameters that follow the URI (`after` starts with `;` or is
    /// blank) and assembles the value.
    fn finish(display: Option<&'a [u8]>, uri: Uri<'a>, after: &'a [u8]) -> Option<Self> {
        let (params, [tag]) = header_params(after, [b"tag"])?;
        Some(Self {
            display,
            uri,
            tag,
            params,
        })
    }

    /// A header parameter by case-insensitive name (`expires`, `q`, `+sip.instance`);
    /// `Some(b"")` for a flag.
    #[must_use]
    pub fn param(&self, name: &[u8]) -> Option<&'a [u8]> {
        find_param(self.params, name)
    }
}

/// Unquoted display names: tokens separated by LWS; bytes >= 0x80 tolerated (see module docs).
fn is_display_char(b: u8) -> bool {
    is_token_char(b) || is_lws(b) || b >= 0x80
}

/// `addr-spec *(;param)`: the URI ends at the first `;`.
fn bare(raw: &[u8]) -> Option<NameAddr<'_>> {
    let end = memchr(b';', raw).unwrap_or(raw.len());
    let (uri_raw, after) = raw.split_at_checked(end)?;
    let uri_raw = trim_lws(uri_raw);
    if memchr(b'?', uri_raw).is_some() || memchr(b',', uri_raw).is_some() {
        return None;
    }
    NameAddr::finish(None, Uri::parse(uri_raw)?, after)
}

#[cfg(test)]
mod tests {
    use super::NameAddr;

    fn parse(raw: &[u8]) -> NameAddr<'_> {
        NameAddr::parse(raw).unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(raw)))
    }

    #[test]
    fn the_user_part_alone_equals_the_full_parse() {
        let cases: &[&[u8]] = &[
            b"<sip:79161234567@pbx>;tag=1",
            b"\"Ivanov <sales>\" <sip:+7916@pbx;user=phone>;tag=x",
            b"Bob <sips:bob:pw@[::1]:5061>",
            b"sip:alice@example.com;tag=2",
            b" tel:+79161234567 ",
            b"<sip:pbx.example.com>",
        ];
        for raw in cases {
            assert_eq!(NameAddr::user_of(raw), NameAddr::parse(raw).and_then(|n| n.uri.user), "{}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn the_three_shapes_parse() {
        // (input, display, user, host, tag, params)
        type Row = (
            &'static [u8],
            Option<&'static [u8]>,
            &'static [u8],
            &'static [u8],
            Option<&'static [u8]>,
            &'static [u8],
        );
        let rows: &[Row] = &[
            (
                b"\"Alice A.\" <sip:alice@a.example>;tag=1928",
                Some(b"Alice A."),
                b"alice",
                b"a.example",
                Some(b"1928"),
                b"tag=1928",
            ),
            (
                b"Bob <sip:bob@b.example>",
                Some(b"Bob"),
                b"bob",
                b"b.example",
                None,
                b"",
            ),
            (
                b"caller<sip:caller@example.com>;tag=323",
                Some(b"caller"),
                b"caller",
                b"example.com",
                Some(b"323"),
                b"tag=323",
            ),
            (b"<sip:x@y>", None, b"x", b"y", None, b""),
            (
                b"sip:j.user@example.com;tag=43251j3j324",
                None,
                b"j.user",
                b"example.com",
                Some(b"43251j3j324"),
                b"tag=43251j3j324",
            ),
            (
                b" sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n ",
                None,
                b"vivekg",
                b"chair-dnrc.example.com",
                Some(b"1918181833n"),
                b"tag    = 1918181833n",
            ),
        ];
        for &(raw, display, user, host, tag, params) in rows {
            let n = parse(raw);
            assert_eq!(
                (n.display, n.uri.user, n.uri.host, n.tag, n.params),
                (display, Some(user), host, tag, params)
            );
        }
    }

    #[test]
    fn bare_uri_params_belong_to_the_header() {
        let n = parse(b"sip:+19725552222@gw1.example.net;unknownparam");
        assert_eq!((n.uri.params, n.params), (&b""[..], &b"unknownparam"[..]));
        let n = parse(b"<sip:+19725552222@gw1.example.net;unknownparam>");
        assert_eq!((n.uri.params, n.params), (&b"unknownparam"[..], &b""[..]));
    }

    #[test]
    fn cp1251_display_names_are_kept_as_bytes() {
        // "Иван" in CP1251, quoted and unquoted.
        let n = parse(b"\"\xC8\xE2\xE0\xED\" <sip:101@pbx.local>;tag=a");
        assert_eq!(n.display, Some(&b"\xC8\xE2\xE0\xED"[..]));
        let n = parse(b"\xC8\xE2\xE0\xED \xCF. <sip:101@pbx.local>");
        assert_eq!(n.display, Some(&b"\xC8\xE2\xE0\xED \xCF."[..]));
    }

    #[test]
    fn gruu_contact_with_colons_in_uri_params() {
        let n = parse(b"<sip:101@10.0.0.5:5060;ob;gr=urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>;expires=60;+sip.instance=\"<urn:uuid:f81d4fae>\"");
        assert_eq!(
            n.uri.param(b"gr"),
            Some(&b"urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6"[..])
        );
        assert_eq!(n.uri.port, Some(5060));
        assert_eq!(n.param(b"expires"), Some(&b"60"[..]));
        assert_eq!(
            n.param(b"+sip.instance"),
            Some(&b"\"<urn:uuid:f81d4fae>\""[..])
        );
    }

    #[test]
    fn escapes_and_folding_inside_values() {
        let n = parse(
            b"\"J Rosenberg \\\\\\\"\"       <sip:jdrosen@example.com>\r\n  ;\r\n  tag = 98asjd8",
        );
        assert_eq!(n.display, Some(&b"J Rosenberg \\\\\\\""[..]));
        assert_eq!(n.tag, Some(&b"98asjd8"[..]));
    }

    #[test]
    fn malformed_values_are_refused() {
        let bad: &[&[u8]] = &[
            b"\"Mr. J. User <sip:j.user@example.com>", // unterminated quote
            b"\"Watson, Thomas\" < sip:t.watson@example.org >", // spaces in <>
            b"Bell, Alexander <sip:a.g.bell@example.com>;tag=43", // non-token display
            b"sip:user@example.com?Route=%3Csip:sip.example.com%3E", // bare URI with headers
            b"\"Joe\" <sip:joe@example.org>;;;;",      // empty params
            b"<sip:a@b>;tag=1;",
            b"<sip:a@b>;",
            b"sip:a@b ; ",
            b"<sip:a@b> junk",
            b"<sip:a@b",
            b"*",
            b"",
            b"\"x\" sip:a@b",
        ];
        for raw in bad {
            assert_eq!(
                NameAddr::parse(raw),
                None,
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }
}
