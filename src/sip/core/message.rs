//! [`SipMessage`]: a received SIP message, indexed in place.
//!
//! Role: own the wire bytes (`bytes::Bytes`, shared with the transport, never copied) plus an
//! inline index of byte ranges (start line, headers, body), and answer typed questions (Call-ID,
//! CSeq, top Via, From/To/Contact) by parsing the indexed value on demand. Nothing here
//! allocates: the index is a fixed array and accessors return sub-slices of the buffer.
//!
//! Parsing and validation live in `parse.rs` and `validate.rs`; this file is the read side.

use std::fmt;

use bytes::Bytes;

use super::error::ParseError;
use super::header::HeaderName;
use super::method::{CSeq, Method};
use super::name_addr::NameAddr;
use super::parse;
use super::scan::{comma_values, parse_u32, CommaValues};
use super::table::{HeaderEntry, HeaderTable, Span};
use super::via::Via;

/// Largest message `SipMessage::parse` accepts, in bytes (the largest UDP payload; offsets are
/// stored as `u32` but this keeps memory bounded per message).
pub const MAX_MESSAGE: usize = 65_535;

/// What the start line said.
#[derive(Debug, Clone, Copy)]
pub(super) enum StartLine {
    Request {
        method: Method,
        method_raw: Span,
        uri: Span,
        version: Span,
    },
    Response {
        status: u16,
        reason: Span,
    },
}

/// A parsed SIP request or response. Cheap to clone (the buffer is reference-counted); about
/// 1.4 KB inline because of the header index.
#[derive(Clone)]
pub struct SipMessage {
    pub(super) buf: Bytes,
    /// The message inside `buf`: leading CRLFs and trailing datagram bytes excluded.
    pub(super) message: Span,
    pub(super) start_line: Span,
    pub(super) kind: StartLine,
    pub(super) table: HeaderTable,
    pub(super) body: Span,
    /// From and To as `validate` read them (empty for an unvalidated message).
    pub(super) learned: Learned,
    /// No header value holds a CR or LF (nothing folded, no stray CR): values can be copied
    /// into a response as they are.
    pub(super) plain_values: bool,
}

/// The user part and tag of From or To, as spans of the buffer.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct UserTagSpans {
    pub(super) user: Option<Span>,
    pub(super) tag: Option<Span>,
}

/// What validation parsed anyway, kept so that readers of a validated message need not parse
/// From and To again (the redirect hot path reads both several times).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Learned {
    /// `None` when not validated.
    pub(super) from: Option<UserTagSpans>,
    pub(super) to: Option<UserTagSpans>,
}

impl UserTagSpans {
    pub(super) fn of(buf: &[u8], addr: &NameAddr<'_>) -> Self {
        Self {
            user: addr.uri.user.map(|u| Span::of(buf, u)),
            tag: addr.tag.map(|t| Span::of(buf, t)),
        }
    }

    fn get<'a>(&self, buf: &'a [u8]) -> UserTag<'a> {
        UserTag {
            user: self.user.map(|s| s.get(buf)),
            tag: self.tag.map(|s| s.get(buf)),
        }
    }
}

/// The URI user part and the `tag` parameter of a From or To value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserTag<'a> {
    /// The user part of the URI.
    pub user: Option<&'a [u8]>,
    /// The `tag` header parameter.
    pub tag: Option<&'a [u8]>,
}

impl<'a> From<NameAddr<'a>> for UserTag<'a> {
    fn from(addr: NameAddr<'a>) -> Self {
        Self {
            user: addr.uri.user,
            tag: addr.tag,
        }
    }
}

impl SipMessage {
    /// Parses and validates one complete message: a datagram, or a frame cut by
    /// [`frame_stream`](super::framing::frame_stream). Never requires UTF-8 and never panics.
    ///
    /// Accepted: leading CR/LF, CRLF or bare-LF line ends, folded headers, compact names,
    /// `Name : value`. A request needs `METHOD SP Request-URI SP SIP/2.0` exactly, a response
    /// `SIP/2.0 SP 3DIGIT SP reason` (reason may be empty). Both need To, From, CSeq, Call-ID and
    /// Via (not Max-Forwards). With Content-Length the body is cut to it (extra datagram bytes
    /// are ignored); without it the body is the rest of the buffer.
    ///
    /// Also refused, following RFC 4475: a repeated To/From/CSeq/Call-ID/Max-Forwards, a CSeq
    /// that does not fit `u32` or names another method than the request, a top Via, From, To
    /// or Contact that does not parse, Max-Forwards above 255, a non-GMT Date, a Request-URI
    /// that does not parse or is a SIP URI with `?headers`, a bad or repeated Content-Length,
    /// a body shorter than Content-Length. Unknown headers are never judged.
    ///
    /// # Errors
    /// A [`ParseError`] naming the first problem found; its `Display` is the reason phrase for
    /// the 400 (505, 513) answer. See [`Self::parse_unvalidated`] to still read such a message.
    pub fn parse(buf: Bytes) -> Result<Self, ParseError> {
        parse::parse(buf, true)
    }

    /// [`Self::parse`], giving the buffer back with the error, for callers that answer a
    /// refused message from its raw bytes (no second reference to keep meanwhile).
    ///
    /// # Errors
    /// As [`Self::parse`], with the buffer.
    pub fn parse_or_return(buf: Bytes) -> Result<Self, (ParseError, Bytes)> {
        parse::parse_keeping(buf, true)
    }

    /// Indexes a message, checking only what the index needs (size, start-line shape, header
    /// line syntax, header count). Meant for answering a message `parse` refused: the 400 must
    /// still copy its Via, From, To, Call-ID and CSeq. Body framing errors fall back to "the
    /// rest of the buffer".
    ///
    /// # Errors
    /// [`ParseError::Empty`], `TooLarge`, `BadStartLine`, `BadStatus`, `BadVersion` (responses),
    /// `BadHeader`, `UnterminatedHeaders`, `TooManyHeaders`.
    pub fn parse_unvalidated(buf: Bytes) -> Result<Self, ParseError> {
        parse::parse(buf, false)
    }

    /// The message bytes (without leading keep-alive CRLFs or trailing datagram bytes).
    pub fn as_bytes(&self) -> &[u8] {
        self.message.get(&self.buf)
    }

    /// The buffer the message was parsed from, for zero-copy slicing (`Bytes::slice_ref`).
    pub fn buffer(&self) -> &Bytes {
        &self.buf
    }

    /// The start line, without its line end.
    pub fn start_line(&self) -> &[u8] {
        self.start_line.get(&self.buf)
    }

    /// True for a request, false for a response.
    pub fn is_request(&self) -> bool {
        matches!(self.kind, StartLine::Request { .. })
    }

    /// The request method (`None` for a response).
    pub fn method(&self) -> Option<Method> {
        match self.kind {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// The request method as written, for [`Method::Other`].
    pub fn method_raw(&self) -> Option<&[u8]> {
        match self.kind {
            StartLine::Request { method_raw, .. } => Some(method_raw.get(&self.buf)),
            StartLine::Response { .. } => None,
        }
    }

    /// The Request-URI, raw (parse it with [`Uri::parse`](super::uri::Uri::parse)).
    pub fn request_uri(&self) -> Option<&[u8]> {
        match self.kind {
            StartLine::Request { uri, .. } => Some(uri.get(&self.buf)),
            StartLine::Response { .. } => None,
        }
    }

    /// The SIP version of a request line as written (`SIP/2.0`); responses are always 2.0.
    pub(super) fn request_version(&self) -> Option<&[u8]> {
        match self.kind {
            StartLine::Request { version, .. } => Some(version.get(&self.buf)),
            StartLine::Response { .. } => None,
        }
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        match self.kind {
            StartLine::Response { status, .. } => Some(status),
            StartLine::Request { .. } => None,
        }
    }

    /// The reason phrase of a response (raw bytes, may be empty or non-UTF-8).
    pub fn reason(&self) -> Option<&[u8]> {
        match self.kind {
            StartLine::Response { reason, .. } => Some(reason.get(&self.buf)),
            StartLine::Request { .. } => None,
        }
    }

    fn value(&self, entry: &HeaderEntry) -> &[u8] {
        entry.value.get(&self.buf)
    }

    /// The value of the first header with this name: trimmed, a whole line (a list header such
    /// as Via may hold several comma-separated values; see [`Self::values`]), folded line breaks
    /// kept inside. For [`HeaderName::Other`] this is the first unknown header of any name: use
    /// [`Self::header_by_name`] instead.
    pub fn header(&self, name: HeaderName) -> Option<&[u8]> {
        self.table.first(name).map(|e| self.value(e))
    }

    /// The values of all header lines with this name, in message order.
    pub fn headers(&self, name: HeaderName) -> impl Iterator<Item = &[u8]> + '_ {
        self.table
            .entries()
            .iter()
            .filter(move |e| e.name == name)
            .map(|e| self.value(e))
    }

    /// All comma-separated values of a list header (Via, Contact, Route, Record-Route, ...)
    /// across its lines, in order. Do not use it on headers whose values contain commas
    /// (Date, WWW-Authenticate, ...).
    pub fn values(&self, name: HeaderName) -> impl Iterator<Item = &[u8]> + '_ {
        self.headers(name)
            .flat_map(comma_values as fn(&[u8]) -> CommaValues<'_>)
    }

    /// The first header with this name, compared case-insensitively; known names and compact
    /// forms resolve to their [`HeaderName`] (`b"i"` finds `Call-ID`), so this also works for
    /// `X-` headers.
    pub fn header_by_name(&self, name: &[u8]) -> Option<&[u8]> {
        let kind = HeaderName::from_bytes(name);
        let entry = self
            .table
            .entries()
            .iter()
            .find(|e| self.is_named(e, kind, name))?;
        Some(self.value(entry))
    }

    /// All header lines with this name (see [`Self::header_by_name`]).
    pub fn headers_by_name<'s>(&'s self, name: &'s [u8]) -> impl Iterator<Item = &'s [u8]> + 's {
        let kind = HeaderName::from_bytes(name);
        self.table
            .entries()
            .iter()
            .filter(move |e| self.is_named(e, kind, name))
            .map(|e| self.value(e))
    }

    /// Known names compare by enum; unknown ones by their text, case-insensitively.
    fn is_named(&self, entry: &HeaderEntry, kind: HeaderName, name: &[u8]) -> bool {
        entry.name == kind
            && (kind != HeaderName::Other
                || entry.raw_name.get(&self.buf).eq_ignore_ascii_case(name))
    }

    /// Every header line as `(name, name as written, value)`, in message order.
    pub fn header_lines(&self) -> impl Iterator<Item = (HeaderName, &[u8], &[u8])> + '_ {
        self.table
            .entries()
            .iter()
            .map(|e| (e.name, e.raw_name.get(&self.buf), self.value(e)))
    }

    /// The Call-ID.
    pub fn call_id(&self) -> Option<&[u8]> {
        self.header(HeaderName::CallId)
    }

    /// The parsed CSeq.
    pub fn cseq(&self) -> Option<CSeq<'_>> {
        self.header(HeaderName::CSeq).and_then(CSeq::parse)
    }

    /// The first value of the first Via line (the one a response goes back to).
    pub fn top_via(&self) -> Option<Via<'_>> {
        self.header(HeaderName::Via).and_then(Via::parse)
    }

    /// The parsed From.
    pub fn from(&self) -> Option<NameAddr<'_>> {
        self.header(HeaderName::From).and_then(NameAddr::parse)
    }

    /// The parsed To.
    pub fn to(&self) -> Option<NameAddr<'_>> {
        self.header(HeaderName::To).and_then(NameAddr::parse)
    }

    /// From's URI user and tag: `None` when From is missing or does not parse. Equals
    /// `self.from()` reduced to those two, without parsing again on a validated message.
    pub fn from_user_tag(&self) -> Option<UserTag<'_>> {
        match &self.learned.from {
            Some(spans) => Some(spans.get(&self.buf)),
            None => self.from().map(UserTag::from),
        }
    }

    /// To's URI user and tag: `None` when To is missing or does not parse (see
    /// [`Self::from_user_tag`]).
    pub fn to_user_tag(&self) -> Option<UserTag<'_>> {
        match &self.learned.to {
            Some(spans) => Some(spans.get(&self.buf)),
            None => self.to().map(UserTag::from),
        }
    }

    /// Whether no header value of this message holds a CR or LF (see `response.rs`).
    pub(super) fn plain_values(&self) -> bool {
        self.plain_values
    }

    /// The first Contact value (`None` for `Contact: *` or no Contact).
    pub fn contact(&self) -> Option<NameAddr<'_>> {
        self.values(HeaderName::Contact)
            .next()
            .and_then(NameAddr::parse)
    }

    /// Max-Forwards as a number (`None` if absent or not decimal).
    pub fn max_forwards(&self) -> Option<u32> {
        self.header(HeaderName::MaxForwards).and_then(parse_u32)
    }

    /// Content-Length as a number (`None` if absent or not decimal).
    pub fn content_length(&self) -> Option<usize> {
        self.header(HeaderName::ContentLength)
            .and_then(parse_u32)
            .and_then(|n| usize::try_from(n).ok())
    }

    /// The body (empty if none).
    pub fn body(&self) -> &[u8] {
        self.body.get(&self.buf)
    }
}

impl fmt::Debug for SipMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SipMessage")
            .field("start_line", &String::from_utf8_lossy(self.start_line()))
            .field("headers", &self.table.entries().len())
            .field("body_len", &self.body().len())
            .finish()
    }
}

#[cfg(test)]
mod tests;
