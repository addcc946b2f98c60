//! [`build_ack`]: the ACK a client INVITE transaction sends for a 3xx-6xx final response
//! (RFC 3261 §17.1.1.3).
//!
//! Role: this ACK is hop-by-hop and belongs to the INVITE transaction (same branch), so it is
//! built from the INVITE rather than by the TU. The ACK for a 2xx is a different animal (a new
//! transaction routed end to end by the dialog layer) and is not built here.
//!
//! Invariants: header values are copied as received except that CR/LF become SP (unfolding,
//! as `response.rs` does), so the output is always a well-formed message.

use std::fmt::Write as _;

use bytes::{BufMut, Bytes, BytesMut};

use super::super::header::HeaderName;
use super::super::message::SipMessage;
use super::super::response::put_unfolded;

/// Builds the ACK for a non-2xx final `response` to `invite`:
///
/// - Request-URI: the INVITE's; one Via: the INVITE's top Via value (same branch);
/// - From, Call-ID and the Route headers (in order) copied from the INVITE;
/// - To copied from the response (so it carries the UAS's tag);
/// - `CSeq: <INVITE's number> ACK`, `Max-Forwards: 70`, `Content-Length: 0`, no body.
///
/// A header missing from either message is skipped (never the case for messages that
/// `SipMessage::parse` accepted, which require Via, From, To, Call-ID and CSeq).
#[must_use]
pub fn build_ack(invite: &SipMessage, response: &SipMessage) -> Bytes {
    let mut out = BytesMut::with_capacity(invite.as_bytes().len().saturating_add(64));
    out.put_slice(b"ACK ");
    put_unfolded(&mut out, invite.request_uri().unwrap_or_default());
    out.put_slice(b" SIP/2.0\r\n");
    if let Some(via) = invite.top_via() {
        put_header(&mut out, HeaderName::Via, via.raw);
    }
    if let Some(from) = invite.header(HeaderName::From) {
        put_header(&mut out, HeaderName::From, from);
    }
    if let Some(to) = response.header(HeaderName::To) {
        put_header(&mut out, HeaderName::To, to);
    }
    if let Some(call_id) = invite.header(HeaderName::CallId) {
        put_header(&mut out, HeaderName::CallId, call_id);
    }
    if let Some(cseq) = invite.cseq() {
        // Writing into a BytesMut cannot fail: it grows as needed.
        let _ = write!(out, "CSeq: {} ACK\r\n", cseq.seq);
    }
    for route in invite.headers(HeaderName::Route) {
        put_header(&mut out, HeaderName::Route, route);
    }
    out.put_slice(b"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n");
    out.freeze()
}

fn put_header(out: &mut BytesMut, name: HeaderName, value: &[u8]) {
    out.put_slice(name.as_str().as_bytes());
    out.put_slice(b": ");
    put_unfolded(out, value);
    out.put_slice(b"\r\n");
}

