//! Writing responses to a received request (RFC 3261 §8.2.6), and the stateless To-tag.
//!
//! Role: the redirect server's hot path (302/404/400, 100 Trying, 200 to OPTIONS) without
//! `format!` or intermediate `String`s: bytes go straight into a caller-owned, reused
//! `BytesMut`. Stateless-UAS support (RFC 3261 §8.2.7): [`to_tag_for`] derives the To-tag from
//! the request, so a retransmitted INVITE gets a byte-identical answer without any state.
//!
//! Invariants: header values are copied as received except that CR/LF become SP (unfolding;
//! it also makes header injection through `reason` or `extra_headers` impossible).

use bytes::{BufMut, BytesMut};
use memchr::memchr2;

use super::header::HeaderName;
use super::message::SipMessage;
use super::error::ParseError;

/// Writes a response to `req` into `out` (appending).
///
/// Copies every Via line in order, From, To (adding `;tag=<to_tag>` only when `to_tag` is given
/// and the To parses and has no tag yet), Call-ID and CSeq, then `extra_headers`
/// (`("Contact", b"<sip:101@pbx>")`), then `Content-Length: 0` and the empty line. Headers
/// missing from the request are skipped (so a 400 can be built from a message only
/// `SipMessage::parse_unvalidated` accepted); names are always written in full form. `code` is
/// written as given (callers pass 100..=699).
pub fn write_response(
    req: &SipMessage,
    code: u16,
    reason: &str,
    to_tag: Option<&[u8]>,
    extra_headers: &[(&str, &[u8])],
    out: &mut BytesMut,
) {
    let extra: usize = extra_headers
        .iter()
        .map(|(n, v)| n.len().saturating_add(v.len()).saturating_add(4))
        .sum();
    out.reserve(
        req.as_bytes()
            .len()
            .saturating_sub(req.body().len())
            .saturating_add(extra)
            .saturating_add(64),
    );
    out.put_slice(b"SIP/2.0 ");
    put_decimal(out, code);
    out.put_u8(b' ');
    put_unfolded(out, reason.as_bytes());
    out.put_slice(b"\r\n");
    // Values of a request without folding or stray CRs need no unfolding scan.
    let plain = req.plain_values();
    for via in req.headers(HeaderName::Via) {
        put_known(out, b"Via: ", via, plain);
    }
    if let Some(from) = req.header(HeaderName::From) {
        put_known(out, b"From: ", from, plain);
    }
    if let Some(to) = req.header(HeaderName::To) {
        // A tag only for a To that parses and has none yet.
        let has_tag = req.to_user_tag().is_none_or(|t| t.tag.is_some());
        put_to(out, to, to_tag.filter(|_| !has_tag), plain);
    }
    if let Some(call_id) = req.header(HeaderName::CallId) {
        put_known(out, b"Call-ID: ", call_id, plain);
    }
    if let Some(cseq) = req.header(HeaderName::CSeq) {
        put_known(out, b"CSeq: ", cseq, plain);
    }
    for (name, value) in extra_headers {
        put_header(out, name, value);
    }
    out.put_slice(b"Content-Length: 0\r\n\r\n");
}

/// A deterministic 16-hex-digit To-tag: FNV-1a over Call-ID, From tag and top Via branch.
/// Retransmissions (and the ACK/CANCEL of the same transaction) map to the same tag; different
/// calls almost surely do not.
#[must_use]
pub fn to_tag_for(req: &SipMessage) -> [u8; 16] {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    let from_tag = req.from_user_tag().and_then(|f| f.tag).unwrap_or_default();
    let branch = req.top_via().and_then(|v| v.branch).unwrap_or_default();
    let mut hash = OFFSET;
    for part in [req.call_id().unwrap_or_default(), from_tag, branch] {
        hash = fnv1a(hash, part);
        hash = fnv1a(hash, &[0xFF]); // separator: ("ab","c") and ("a","bc") differ
    }
    let mut tag = [0u8; 16];
    for slot in &mut tag {
        hash = hash.rotate_left(4);
        *slot = HEX.get((hash & 0xF) as usize).copied().unwrap_or(b'0');
    }
    tag
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(hash, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

/// `To: <value>[;tag=<to_tag>]`; the caller passes a tag only for a To that parses and has
/// none (a request inside a dialog already carries the tag its UAS chose).
fn put_to(out: &mut BytesMut, to: &[u8], to_tag: Option<&[u8]>, plain: bool) {
    out.put_slice(b"To: ");
    if plain {
        out.put_slice(to);
    } else {
        put_unfolded(out, to);
    }
    if let Some(tag) = to_tag {
        out.put_slice(b";tag=");
        put_unfolded(out, tag);
    }
    out.put_slice(b"\r\n");
}

/// A header whose name (with `: `) is one of ours, a constant: only the value is unfolded,
/// unless the caller knows it holds no CR or LF (`plain`).
fn put_known(out: &mut BytesMut, name_colon: &[u8], value: &[u8], plain: bool) {
    out.put_slice(name_colon);
    if plain {
        out.put_slice(value);
    } else {
        put_unfolded(out, value);
    }
    out.put_slice(b"\r\n");
}

fn put_header(out: &mut BytesMut, name: &str, value: &[u8]) {
    put_unfolded(out, name.as_bytes());
    out.put_slice(b": ");
    put_unfolded(out, value);
    out.put_slice(b"\r\n");
}

/// Copies `value`, turning each CR or LF into SP (see the module invariants): the one guard that
/// keeps a value callgate writes from starting a header or a body of its own.
pub(super) fn put_unfolded(out: &mut BytesMut, mut value: &[u8]) {
    while let Some(i) = memchr2(b'\r', b'\n', value) {
        let (clean, rest) = value.split_at_checked(i).unwrap_or((value, &[]));
        out.put_slice(clean);
        out.put_u8(b' ');
        value = rest.get(1..).unwrap_or_default();
    }
    out.put_slice(value);
}

/// Writes `n` in decimal without allocating.
fn put_decimal(out: &mut BytesMut, n: u16) {
    let mut digits = [b'0'; 5];
    let mut rest = n;
    for slot in digits.iter_mut().rev() {
        // `rest % 10` < 10, so the narrowing and the addition cannot overflow.
        *slot = b'0'.saturating_add((rest % 10) as u8);
        rest /= 10;
    }
    let skip = digits.iter().take(4).take_while(|&&d| d == b'0').count();
    out.put_slice(digits.get(skip..).unwrap_or(&digits));
}

#[cfg(test)]
mod tests;

/// Writes the answer to a request that [`SipMessage::parse`] refused with `err`: 400 (505 for
/// a wrong SIP version, 513 when too large) with the error as reason phrase, when the message
/// is a request that still carries Via, From, To, Call-ID and CSeq. Otherwise writes nothing:
/// such a message cannot be answered and is dropped (RFC 3261 §16.3 / RFC 4475 §3.1.2).
pub fn write_bad_request(raw: &[u8], err: &ParseError, out: &mut BytesMut) {
    // Copying on the error path only; the hot path never gets here.
    let Ok(msg) = SipMessage::parse_unvalidated(bytes::Bytes::copy_from_slice(raw)) else { return };
    let answerable = msg.is_request()
        && msg.method_raw().is_some_and(|m| m != b"ACK")
        && [HeaderName::Via, HeaderName::From, HeaderName::To, HeaderName::CallId, HeaderName::CSeq]
            .into_iter()
            .all(|h| msg.header(h).is_some());
    if answerable {
        let tag = to_tag_for(&msg);
        write_response(&msg, err.status_code(), &err.to_string(), Some(&tag), &[], out);
    }
}

/// The answer to a stream message whose framing failed (bad or missing Content-Length): 400
/// built from its header section only, since the body length is exactly what is in doubt. The
/// connection is closed after it.
pub fn write_bad_frame(head: &[u8], out: &mut BytesMut) {
    let end = memchr::memmem::find(head, b"\r\n\r\n").map_or(head.len(), |i| i.saturating_add(4));
    write_bad_request(head.get(..end).unwrap_or(head), &ParseError::BadContentLength, out);
}
