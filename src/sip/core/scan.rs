//! Byte-level scanning helpers shared by every parser in this module.
//!
//! Role: character classes (RFC 3261 §25.1 `token`, LWS), trimming, a slice cursor, quote-aware
//! splitting of comma lists and `;` parameter lists, and strict decimal parsing.
//!
//! Invariants: nothing here indexes a slice directly, unwraps, or does unchecked arithmetic, so no
//! input can make these helpers panic. Everything works on `&[u8]`: UTF-8 is never required.
//! Depends only on `memchr`. The tiny helpers are `#[inline]`: they run per byte or per
//! parameter, and inlining them measurably speeds up Via/From/To parsing.

use memchr::{memchr, memchr2, memchr3};

/// RFC 3261 `token` character: alphanumerics and ``-.!%*_+`'~``.
#[inline]
pub(super) fn is_token_char(b: u8) -> bool {
    TOKEN.get(usize::from(b)).copied().unwrap_or(false)
}

/// Lookup table behind [`is_token_char`] (header names and parameters are scanned a lot).
const TOKEN: [bool; 256] = token_table();

#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)] // i < 256: compile time only
const fn token_table() -> [bool; 256] {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
            );
        i += 1;
    }
    table
}

/// Linear whitespace as it appears on the wire: SP, HTAB and the CR/LF of folded lines.
#[inline]
pub(super) const fn is_lws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Characters of a host name or IPv4 address (the `_` is not RFC but is seen in the wild).
#[inline]
pub(super) fn is_host_char(b: u8) -> bool {
    HOST.get(usize::from(b)).copied().unwrap_or(false)
}

/// Lookup table behind [`is_host_char`].
const HOST: [bool; 256] = host_table();

#[allow(clippy::indexing_slicing, clippy::arithmetic_side_effects)] // i < 256: compile time only
const fn host_table() -> [bool; 256] {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_');
        i += 1;
    }
    table
}

/// Whether `s` holds any LWS byte. All four are below 0x21, so eight bytes at a time are
/// tested for a byte below 0x21 first; only such a word is looked at byte by byte.
#[inline]
pub(super) fn has_lws(s: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let mut rest = s;
    while let Some((word, tail)) = rest.split_first_chunk::<8>() {
        let x = u64::from_le_bytes(*word);
        // Classic "has a byte less than n" (n = 0x21): no false negatives.
        let below = x.wrapping_sub(ONES.wrapping_mul(0x21)) & !x & ONES.wrapping_mul(0x80);
        if below != 0 && word.iter().any(|&b| is_lws(b)) {
            return true;
        }
        rest = tail;
    }
    rest.iter().any(|&b| is_lws(b))
}

/// A non-empty run of token characters.
#[inline]
pub(super) fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_token_char(b))
}

/// Strips LWS (including folded line breaks) from both ends.
#[inline]
pub(super) fn trim_lws(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_lws(*first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_lws(*last) {
            break;
        }
        s = rest;
    }
    s
}

/// Position of the first `b`. Short inputs (most URI and parameter pieces) are scanned
/// directly: below a few dozen bytes that beats `memchr`'s dispatch overhead.
#[inline]
pub(super) fn find_byte(b: u8, s: &[u8]) -> Option<usize> {
    if s.len() < 32 {
        s.iter().position(|&x| x == b)
    } else {
        memchr(b, s)
    }
}

/// Splits at the first `b`, dropping it: `a;b` -> (`a`, `b`).
#[inline]
pub(super) fn split_once(s: &[u8], b: u8) -> Option<(&[u8], &[u8])> {
    let (head, tail) = s.split_at_checked(find_byte(b, s)?)?;
    Some((head, tail.get(1..)?))
}

/// Parses a non-empty all-digit string (leading zeros allowed) that fits a `u32`.
#[inline]
pub(super) fn parse_u32(s: &[u8]) -> Option<u32> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u32, |acc, &b| {
        let digit = u32::from(b.checked_sub(b'0').filter(|d| *d <= 9)?);
        acc.checked_mul(10)?.checked_add(digit)
    })
}

/// A `delta-seconds` value (`Expires`, a Contact's `expires`, `Retry-After`, `Session-Expires`,
/// `Min-SE`): all digits after trimming LWS, any length, saturating at `u32::MAX` as RFC 3261
/// §25.1 asks ("a value larger than 2**32-1 ... is taken as 2**32-1"). `None` when not decimal.
/// Callers clamp it further to their own bounds before adding it to a time.
pub fn delta_seconds(value: &[u8]) -> Option<u32> {
    let digits = trim_lws(value);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(parse_u32(digits).unwrap_or(u32::MAX))
}

/// Parses a port number (all digits, at most 65535).
pub(super) fn parse_port(s: &[u8]) -> Option<u16> {
    parse_u32(s).and_then(|n| u16::try_from(n).ok())
}

/// Position of the first `target` that is outside a quoted string and outside `<...>`.
/// `target` is a separator such as `,` or `;` (not `"` or `<`).
///
/// Quoted strings honour backslash escapes (`quoted-pair`), so `"a\",b"` holds no comma. An
/// unterminated quote or `<` hides everything after it. Jumps with `memchr` between the bytes
/// that matter, so plain text costs no per-byte branching.
pub(super) fn find_unquoted(s: &[u8], target: u8) -> Option<usize> {
    let mut pos = 0usize;
    loop {
        let i = pos.checked_add(memchr3(target, b'"', b'<', s.get(pos..)?)?)?;
        pos = match s.get(i)? {
            b'"' if target != b'"' => quoted_end(s, i)?,
            b'<' if target != b'<' => i.checked_add(memchr(b'>', s.get(i..)?)?)?.checked_add(1)?,
            _ => return Some(i),
        };
    }
}

/// Index just after the quoted string opening at `open`, or `None` if it is unterminated.
fn quoted_end(s: &[u8], open: usize) -> Option<usize> {
    let mut pos = open.checked_add(1)?;
    loop {
        let i = pos.checked_add(memchr2(b'"', b'\\', s.get(pos..)?)?)?;
        if s.get(i)? == &b'"' {
            return i.checked_add(1);
        }
        pos = i.checked_add(2)?; // skip the escaped byte
    }
}

/// Iterator over the comma-separated values of a list header (Via, Contact, Route, ...),
/// each trimmed. Commas inside quoted strings or `<...>` do not split. Empty values are
/// yielded (as empty slices) so that validators can refuse `a,,b`.
#[derive(Debug, Clone)]
pub struct CommaValues<'a> {
    rest: Option<&'a [u8]>,
}

/// Splits a list header value at top-level commas; see [`CommaValues`].
#[must_use]
pub fn comma_values(value: &[u8]) -> CommaValues<'_> {
    CommaValues { rest: Some(value) }
}

impl<'a> Iterator for CommaValues<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.rest.take()?;
        match find_unquoted(rest, b',').and_then(|i| rest.split_at_checked(i)) {
            Some((head, tail)) => {
                self.rest = tail.get(1..);
                Some(trim_lws(head))
            }
            None => Some(trim_lws(rest)),
        }
    }
}

/// One `name[=value]` parameter, both parts trimmed. A quoted value keeps its quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Param<'a> {
    pub(super) name: &'a [u8],
    pub(super) value: Option<&'a [u8]>,
}

/// Iterator over a `;`-separated parameter section given *without* its leading `;`
/// (`tag=abc;lr;q=0.5`). Semicolons inside quoted strings do not split.
#[derive(Debug, Clone)]
pub(super) struct Params<'a> {
    rest: Option<&'a [u8]>,
}

/// Starts a [`Params`] iteration; an empty (all-LWS) section yields nothing.
pub(super) fn params(section: &[u8]) -> Params<'_> {
    let section = trim_lws(section);
    Params {
        rest: (!section.is_empty()).then_some(section),
    }
}

impl<'a> Iterator for Params<'a> {
    type Item = Param<'a>;

    fn next(&mut self) -> Option<Param<'a>> {
        let rest = self.rest.take()?;
        let piece = match find_unquoted(rest, b';').and_then(|i| rest.split_at_checked(i)) {
            Some((head, tail)) => {
                self.rest = tail.get(1..);
                head
            }
            None => rest,
        };
        Some(match split_once(piece, b'=') {
            Some((name, value)) => Param {
                name: trim_lws(name),
                value: Some(trim_lws(value)),
            },
            None => Param {
                name: trim_lws(piece),
                value: None,
            },
        })
    }
}

/// Finds a parameter by case-insensitive name. A flag parameter (`lr`) yields `Some(b"")`.
pub(super) fn find_param<'a>(section: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    params(section)
        .find(|p| p.name.eq_ignore_ascii_case(name))
        .map(|p| p.value.unwrap_or_default())
}

/// Strict check of one header parameter (Via params, name-addr header params): a token name,
/// and a value, when present, that is a complete quoted string or a non-empty run without
/// whitespace or quotes. An empty parameter (from `;;` or a trailing `;`) is refused
/// (RFC 4475 §3.1.2.1).
fn param_valid(p: &Param<'_>) -> bool {
    is_token(p.name)
        && p.value.is_none_or(|v| match v.first() {
            Some(b'"') => quoted_whole(v),
            Some(_) => v.iter().all(|&b| !is_lws(b) && b != b'"'),
            None => false,
        })
}

/// The first value of each wanted parameter, in the order asked for.
pub(super) type Found<'a, const N: usize> = [Option<&'a [u8]>; N];

/// The parameter section of a header after its main part (`after` starts right after the URI,
/// `>` or sent-by): blank, or `;` followed by valid parameters (see [`param_valid`]). Returns
/// the section without its `;`, and the first value of each `wanted` name (`Some(b"")` for a
/// flag), all in one pass. `None` if anything is malformed, a lone trailing `;` included.
pub(super) fn header_params<'a, const N: usize>(
    after: &'a [u8],
    wanted: [&[u8]; N],
) -> Option<(&'a [u8], Found<'a, N>)> {
    let mut found = [None; N];
    let section = match trim_lws(after) {
        [] => return Some((&[], found)),
        [b';', section @ ..] => trim_lws(section),
        _ => return None,
    };
    if section.is_empty() {
        return None;
    }
    for p in params(section) {
        if !param_valid(&p) {
            return None;
        }
        for (slot, name) in found.iter_mut().zip(wanted) {
            if slot.is_none() && p.name.eq_ignore_ascii_case(name) {
                *slot = Some(p.value.unwrap_or_default());
            }
        }
    }
    Some((section, found))
}

/// True when `v` is exactly one quoted string.
fn quoted_whole(v: &[u8]) -> bool {
    let mut c = Cursor::new(v);
    c.quoted().is_some() && c.is_empty()
}

/// A forward-only cursor over a byte slice. All moves are bounds-checked by construction:
/// the cursor only ever holds the unread tail.
#[derive(Debug, Clone, Copy)]
pub(super) struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(super) const fn new(s: &'a [u8]) -> Self {
        Self { rest: s }
    }

    /// The unread tail.
    pub(super) const fn rest(&self) -> &'a [u8] {
        self.rest
    }

    pub(super) const fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    #[inline]
    pub(super) fn peek(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// Consumes `b` if it is next.
    #[inline]
    pub(super) fn eat(&mut self, b: u8) -> bool {
        match self.rest {
            [first, tail @ ..] if *first == b => {
                self.rest = tail;
                true
            }
            _ => false,
        }
    }

    /// Consumes the longest prefix whose bytes satisfy `f`.
    #[inline]
    pub(super) fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let n = self
            .rest
            .iter()
            .position(|&b| !f(b))
            .unwrap_or(self.rest.len());
        let (head, tail) = self.rest.split_at_checked(n).unwrap_or((self.rest, &[]));
        self.rest = tail;
        head
    }

    /// Skips LWS; returns whether anything was skipped.
    #[inline]
    pub(super) fn skip_lws(&mut self) -> bool {
        !self.take_while(is_lws).is_empty()
    }

    /// Consumes a non-empty token.
    #[inline]
    pub(super) fn token(&mut self) -> Option<&'a [u8]> {
        let t = self.take_while(is_token_char);
        (!t.is_empty()).then_some(t)
    }

    /// Consumes a quoted string and returns its content without the quotes (escapes kept
    /// as-is: zero-copy). `None`, with the cursor unmoved, if it is unterminated.
    pub(super) fn quoted(&mut self) -> Option<&'a [u8]> {
        let body = self.rest.strip_prefix(b"\"")?;
        let mut escaped = false;
        let end = body.iter().position(|&b| {
            let close = !escaped && b == b'"';
            escaped = !escaped && b == b'\\';
            close
        })?;
        let (inner, tail) = body.split_at_checked(end)?;
        self.rest = tail.get(1..)?;
        Some(inner)
    }
}

/// The value of the first `Via` header (full or compact name) of a raw message, found by a line
/// scan without indexing the other headers: enough to match an ACK to its INVITE's transaction
/// (RFC 3261 §17.2.3). `None` when there is none before the empty line, or when that header line
/// is folded (the caller then parses the whole message).
#[must_use]
pub fn raw_top_via(msg: &[u8]) -> Option<&[u8]> {
    let mut rest = msg.get(memchr(b'\n', msg)?.checked_add(1)?..)?;
    loop {
        let end = memchr(b'\n', rest).unwrap_or(rest.len());
        let line = rest.get(..end)?;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            return None;
        }
        rest = rest.get(end.checked_add(1)?..).unwrap_or_default();
        let Some(colon) = memchr(b':', line) else { continue };
        let name = trim_lws(line.get(..colon)?);
        if name.eq_ignore_ascii_case(b"via") || name.eq_ignore_ascii_case(b"v") {
            if matches!(rest.first(), Some(b' ' | b'\t')) {
                return None; // folded: let the full parser handle it
            }
            return Some(trim_lws(line.get(colon.checked_add(1)?..)?));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn has_lws_finds_every_lws_byte_at_every_position() {
        for len in 0..20 {
            for at in 0..len {
                for lws in [b' ', b'\t', b'\r', b'\n'] {
                    let mut s = vec![b'a'; len];
                    s[at] = lws;
                    assert!(has_lws(&s), "{len} {at} {lws}");
                    s[at] = 0x80 | lws;
                    assert!(!has_lws(&s), "{len} {at} {lws} high");
                }
            }
            let mut s: Vec<u8> = (0..len as u8).map(|i| 0x21 + i).collect();
            assert!(!has_lws(&s));
            if let Some(b) = s.first_mut() {
                *b = 0;
                assert!(!has_lws(&s), "NUL is not LWS");
            }
        }
    }

    #[test]
    fn trim_lws_strips_folding_on_both_ends() {
        assert_eq!(trim_lws(b" \r\n\t a b \r\n "), b"a b");
        assert_eq!(trim_lws(b" \r\n"), b"");
        assert_eq!(trim_lws(b""), b"");
    }

    #[test]
    fn delta_seconds_saturate_at_u32_max_and_refuse_what_is_not_decimal() {
        let cases: &[(&[u8], Option<u32>)] = &[
            (b"3600", Some(3600)),
            (b" 0 ", Some(0)),
            (b"4294967295", Some(u32::MAX)),
            (b"4294967296", Some(u32::MAX)),
            (b"18446744073709551615", Some(u32::MAX)),
            (b"99999999999999999999999999999999999999999", Some(u32::MAX)),
            (b"-1", None),
            (b"1e9", None),
            (b"", None),
        ];
        for (input, want) in cases {
            assert_eq!(delta_seconds(input), *want, "{}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn parse_u32_is_strict_and_checked() {
        let cases: &[(&[u8], Option<u32>)] = &[
            (b"0", Some(0)),
            (b"0009", Some(9)),
            (b"4294967295", Some(u32::MAX)),
            (b"4294967296", None),
            (b"36893488147419103232", None),
            (b"", None),
            (b"-1", None),
            (b"1a", None),
            (b" 1", None),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse_u32(input),
                *want,
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn comma_values_respect_quotes_and_angle_brackets() {
        let v: Vec<&[u8]> =
            comma_values(b"\"Bell, A\" <sip:a@b;x=1,2>;q=1 , <sip:c@d>,,sip:e@f").collect();
        assert_eq!(
            v,
            [
                &b"\"Bell, A\" <sip:a@b;x=1,2>;q=1"[..],
                b"<sip:c@d>",
                b"",
                b"sip:e@f"
            ]
        );
    }

    #[test]
    fn params_split_trim_and_keep_quotes() {
        let p: Vec<Param<'_>> = params(b" tag = 1 ;lr; x=\"a;b\" ").collect();
        assert_eq!(p.len(), 3);
        assert_eq!((p[0].name, p[0].value), (&b"tag"[..], Some(&b"1"[..])));
        assert_eq!((p[1].name, p[1].value), (&b"lr"[..], None));
        assert_eq!(p[2].value, Some(&b"\"a;b\""[..]));
        assert_eq!(find_param(b"a=1;LR", b"lr"), Some(&b""[..]));
    }

    #[test]
    fn header_params_validate_and_find_in_one_pass() {
        let ok = header_params(
            b" ; tag=1 ;lr;x=\"a b\";gr=urn:uuid:f81d4fae;TAG=2",
            [b"tag", b"lr", b"q"],
        );
        let (section, [tag, lr, q]) = ok.unwrap();
        assert_eq!(section, b"tag=1 ;lr;x=\"a b\";gr=urn:uuid:f81d4fae;TAG=2");
        assert_eq!((tag, lr, q), (Some(&b"1"[..]), Some(&b""[..]), None));
        assert_eq!(header_params(b"  ", [b"tag"]), Some((&b""[..], [None])));
        let bad: &[&[u8]] = &[
            b";",
            b"x",
            b";;",
            b";a=1;",
            b";a=\"open",
            b";a=",
            b";a b=1",
            b"; =1",
        ];
        for raw in bad {
            assert_eq!(
                header_params(raw, [b"a"]),
                None,
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[test]
    fn find_unquoted_skips_quotes_escapes_and_angles() {
        assert_eq!(find_unquoted(b"a,b", b','), Some(1));
        assert_eq!(find_unquoted(b"\"x,\\\",y\" <s:a,b>, c", b','), Some(16));
        assert_eq!(find_unquoted(b"\"unterminated, x", b','), None);
        assert_eq!(find_unquoted(b"<unclosed, x", b','), None);
        assert_eq!(find_unquoted(b"\"\\", b','), None);
        assert_eq!(find_unquoted(b"", b','), None);
    }

    #[test]
    fn cursor_quoted_handles_escapes_and_unterminated() {
        let mut c = Cursor::new(b"\"J \\\\\\\"\" <x>");
        assert_eq!(c.quoted(), Some(&b"J \\\\\\\""[..]));
        assert_eq!(c.rest(), b" <x>");
        let mut c = Cursor::new(b"\"never closed\\\"");
        assert_eq!(c.quoted(), None);
        assert_eq!(c.rest(), b"\"never closed\\\"");
    }
}

