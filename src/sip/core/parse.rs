//! Building a [`SipMessage`] from bytes: start line, header index, body framing.
//!
//! Role: the structural pass. It locates things (one `memchr` per line for the LF, one for the
//! colon) and records their byte ranges; `validate.rs` then checks the semantics. Keeping the
//! two apart lets `SipMessage::parse_unvalidated` index a message that `parse` refuses, so the
//! 400 can still be built from its headers.
//!
//! Invariants: no allocation (the only owned data is the `Bytes` handed in), no panics, work
//! bounded by the input length.

use bytes::Bytes;
use memchr::memrchr;

use super::error::ParseError;
use super::header::HeaderName;
use super::lines::{split_line, HeaderLines, LineError};
use super::message::{Learned, SipMessage, StartLine, MAX_MESSAGE};
use super::method::Method;
use super::scan::{is_token, parse_u32, split_once};
use super::table::{HeaderEntry, HeaderTable, Span};
use super::validate;

/// See `SipMessage::parse` (`validate = true`) and `SipMessage::parse_unvalidated`.
pub(super) fn parse(buf: Bytes, validate: bool) -> Result<SipMessage, ParseError> {
    parse_keeping(buf, validate).map_err(|(e, _)| e)
}

/// [`parse`], handing the buffer back with the error (so a caller that answers 400 from the
/// raw bytes needs no second reference to them).
pub(super) fn parse_keeping(buf: Bytes, validate: bool) -> Result<SipMessage, (ParseError, Bytes)> {
    if buf.len() > MAX_MESSAGE {
        return Err((ParseError::TooLarge, buf));
    }
    // Built in place: the header table is ~1.3 KB, so it is filled where it will live rather
    // than assembled on the stack and moved.
    let mut msg = SipMessage {
        buf,
        message: Span::default(),
        start_line: Span::default(),
        kind: StartLine::Response {
            status: 0,
            reason: Span::default(),
        },
        table: HeaderTable::new(),
        body: Span::default(),
        learned: Learned::default(),
        plain_values: false,
    };
    match fill(&mut msg, validate) {
        Ok(()) => Ok(msg),
        Err(e) => Err((e, msg.buf)),
    }
}

/// Indexes (and with `validate`, checks) `msg.buf` into `msg`.
fn fill(msg: &mut SipMessage, validate: bool) -> Result<(), ParseError> {
    let bytes: &[u8] = &msg.buf;
    // RFC 3261 §7.5: CRLFs before the start line are ignored (stream keep-alives).
    let skip = bytes
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .ok_or(ParseError::Empty)?;
    let text = bytes.get(skip..).unwrap_or_default();
    let (line, section) = split_line(text).ok_or(ParseError::UnterminatedHeaders)?;
    msg.kind = start_line(bytes, line)?;
    msg.start_line = Span::of(bytes, line);
    let (body_start, folded, crlf_lines) = index_headers(bytes, section, &mut msg.table)?;
    let head = section
        .get(..section.len().saturating_sub(body_start.len()))
        .unwrap_or(section);
    // Every CR ends a line (a SIMD count, no per-CR step): values hold no CR or LF.
    msg.plain_values = !folded && memchr::memchr_iter(b'\r', head).count() == crlf_lines;
    let body = body(&msg.table, bytes, body_start, validate)?;
    let end = text
        .len()
        .saturating_sub(body_start.len())
        .saturating_add(body.len());
    msg.message = Span::of(bytes, text.get(..end).unwrap_or(text));
    msg.body = Span::of(bytes, body);
    if validate {
        msg.learned = validate::validate(msg)?;
    }
    Ok(())
}

/// Parses the start line shape. Requests are split leniently here (first SP, last SP) and
/// checked exactly in `validate` so that `parse_unvalidated` can still answer them.
fn start_line(base: &[u8], line: &[u8]) -> Result<StartLine, ParseError> {
    if line
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
    {
        return status_line(base, line);
    }
    let (method, rest) = split_once(line, b' ').ok_or(ParseError::BadStartLine)?;
    let rest = trim_sp(rest);
    let last_sp = memrchr(b' ', rest).ok_or(ParseError::BadStartLine)?;
    let (uri, version) = rest
        .split_at_checked(last_sp)
        .ok_or(ParseError::BadStartLine)?;
    let (uri, version) = (trim_sp(uri), version.get(1..).unwrap_or_default());
    if !is_token(method) || uri.is_empty() {
        return Err(ParseError::BadStartLine);
    }
    Ok(StartLine::Request {
        method: Method::from_bytes(method),
        method_raw: Span::of(base, method),
        uri: Span::of(base, uri),
        version: Span::of(base, version),
    })
}

/// `SIP/2.0 SP 3DIGIT SP reason` (a missing SP before an empty reason is tolerated).
fn status_line(base: &[u8], line: &[u8]) -> Result<StartLine, ParseError> {
    let (version, rest) = split_once(line, b' ').ok_or(ParseError::BadStartLine)?;
    check_version(version)?;
    let (code, reason) = match rest.split_at_checked(3) {
        Some((code, [])) => (code, &[][..]),
        Some((code, [b' ', reason @ ..])) => (code, reason),
        _ => return Err(ParseError::BadStatus),
    };
    let status = parse_u32(code)
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| (100..=699).contains(c))
        .ok_or(ParseError::BadStatus)?;
    Ok(StartLine::Response {
        status,
        reason: Span::of(base, reason),
    })
}

/// `SIP/2.0` (case-insensitive, RFC 3261 §7.1); another `SIP/x.y` is `BadVersion` (505).
pub(super) fn check_version(version: &[u8]) -> Result<(), ParseError> {
    if version.eq_ignore_ascii_case(b"SIP/2.0") {
        return Ok(());
    }
    let numbers = version
        .split_at_checked(4)
        .filter(|(prefix, _)| prefix.eq_ignore_ascii_case(b"SIP/"))
        .and_then(|(_, v)| split_once(v, b'.'));
    match numbers {
        Some((major, minor)) if parse_u32(major).is_some() && parse_u32(minor).is_some() => {
            Err(ParseError::BadVersion)
        }
        _ => Err(ParseError::BadStartLine),
    }
}

fn trim_sp(mut s: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' '] = s {
        s = rest;
    }
    s
}

/// Fills the table from the header section; returns the bytes after the empty line, whether
/// any header was folded and how many lines ended in CR LF.
fn index_headers<'a>(
    base: &'a [u8],
    section: &'a [u8],
    table: &mut HeaderTable,
) -> Result<(&'a [u8], bool, usize), ParseError> {
    let mut lines = HeaderLines::new(section, 2);
    for item in lines.by_ref() {
        let raw = item.map_err(|e| match e {
            LineError::Malformed { line } => ParseError::BadHeader { line },
            LineError::Unterminated => ParseError::UnterminatedHeaders,
        })?;
        table.push(HeaderEntry {
            name: HeaderName::from_bytes(raw.name),
            raw_name: Span::of(base, raw.name),
            value: Span::of(base, raw.value),
        })?;
    }
    let body = lines.body().ok_or(ParseError::UnterminatedHeaders)?;
    Ok((body, lines.folded(), lines.crlf_lines()))
}

/// The body: cut to Content-Length when there is one, else the rest of the buffer.
/// Without validation, any Content-Length problem falls back to the rest.
fn body<'a>(
    table: &HeaderTable,
    base: &'a [u8],
    rest: &'a [u8],
    validate: bool,
) -> Result<&'a [u8], ParseError> {
    let Some(entry) = table.first(HeaderName::ContentLength) else {
        return Ok(rest);
    };
    let declared = parse_u32(entry.value.get(base)).and_then(|n| usize::try_from(n).ok());
    if !validate {
        return Ok(declared.and_then(|n| rest.get(..n)).unwrap_or(rest));
    }
    // RFC 4475 §3.3.9: several Content-Length values make the framing unknowable.
    if table.count(HeaderName::ContentLength) > 1 {
        return Err(ParseError::BadContentLength);
    }
    let declared = declared.ok_or(ParseError::BadContentLength)?;
    rest.get(..declared).ok_or(ParseError::BodyTooShort)
}
