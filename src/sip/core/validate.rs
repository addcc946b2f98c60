//! Semantic checks run by `SipMessage::parse` after indexing.
//!
//! Role: decide whether a structurally indexed message is acceptable, following RFC 3261 and
//! the RFC 4475 torture tests (every §3.1.2 message is refused; see the `tests::rfc4475`
//! module). Only the headers the core reads are checked: mandatory ones, the top Via, From,
//! To, Contact and Max-Forwards. A Date outside GMT (RFC 4475 §3.1.2.12) is accepted: callgate
//! never reads Date, and refusing a customer's call over it would help nobody. Unknown headers are never judged.
//! Content-Length and the body length were already checked by `parse.rs` while framing the body.
//!
//! Order matters only for which error is reported first: start line, mandatory and duplicate
//! headers, CSeq, Via, From, To, Contact, Max-Forwards.

use super::error::ParseError;
use super::header::HeaderName;
use super::message::{Learned, SipMessage, UserTagSpans};
use super::method::CSeq;
use super::name_addr::NameAddr;
use super::parse::check_version;
use super::scan::parse_u32;
use super::uri::Uri;

/// RFC 3261 §8.1.1 mandatory headers (Max-Forwards aside: RFC 2543 peers omit it and a
/// missing one is treated as 70 by proxies).
const MANDATORY: [HeaderName; 5] = [
    HeaderName::To,
    HeaderName::From,
    HeaderName::CSeq,
    HeaderName::CallId,
    HeaderName::Via,
];

/// Headers that must appear once (RFC 4475 §3.3.8).
const SINGLE: [HeaderName; 5] = [
    HeaderName::To,
    HeaderName::From,
    HeaderName::CSeq,
    HeaderName::CallId,
    HeaderName::MaxForwards,
];

/// Runs every check; see the module docs. Returns what the From and To checks parsed.
pub(super) fn validate(msg: &SipMessage) -> Result<Learned, ParseError> {
    request_line(msg)?;
    for name in MANDATORY {
        if msg.header(name).is_none() {
            return Err(ParseError::MissingHeader(name.as_str()));
        }
    }
    for name in SINGLE {
        if msg.table.count(name) > 1 {
            return Err(ParseError::DuplicateHeader(name.as_str()));
        }
    }
    cseq(msg)?;
    msg.top_via().ok_or(ParseError::BadVia)?;
    let from = msg.from().ok_or(ParseError::BadHeaderValue("From"))?;
    let to = msg.to().ok_or(ParseError::BadHeaderValue("To"))?;
    contacts(msg)?;
    max_forwards(msg)?;
    Ok(Learned {
        from: Some(UserTagSpans::of(&msg.buf, &from)),
        to: Some(UserTagSpans::of(&msg.buf, &to)),
    })
}

/// `Method SP Request-URI SP SIP/2.0` with exactly one SP each (RFC 4475 §3.1.2.9, §3.1.2.10);
/// the URI must parse, hold no SP (§3.1.2.8) and, for SIP, no headers (§3.1.2.11).
fn request_line(msg: &SipMessage) -> Result<(), ParseError> {
    let (Some(method), Some(uri), Some(version)) =
        (msg.method_raw(), msg.request_uri(), msg.request_version())
    else {
        return Ok(()); // a response: its status line was fully checked while indexing
    };
    check_version(version)?;
    let exact = method
        .len()
        .saturating_add(uri.len())
        .saturating_add(version.len())
        .saturating_add(2);
    if msg.start_line().len() != exact {
        return Err(ParseError::BadStartLine);
    }
    let parsed = Uri::parse(uri).ok_or(ParseError::BadRequestUri)?;
    if parsed.is_sip() && !parsed.headers.is_empty() {
        return Err(ParseError::BadRequestUri);
    }
    Ok(())
}

/// CSeq parses and, on a request, names the request method (RFC 4475 §3.1.2.17, §3.1.2.18).
fn cseq(msg: &SipMessage) -> Result<(), ParseError> {
    let cseq = msg
        .header(HeaderName::CSeq)
        .and_then(CSeq::parse)
        .ok_or(ParseError::BadCSeq)?;
    match msg.method_raw() {
        Some(method) if method != cseq.method => Err(ParseError::CSeqMismatch),
        _ => Ok(()),
    }
}

/// Every Contact value is `*` or a valid name-addr (RFC 4475 §3.1.2.13).
fn contacts(msg: &SipMessage) -> Result<(), ParseError> {
    let bad = msg
        .values(HeaderName::Contact)
        .any(|v| v != b"*" && NameAddr::parse(v).is_none());
    if bad {
        return Err(ParseError::BadHeaderValue("Contact"));
    }
    Ok(())
}

/// Max-Forwards, if present, is `1*DIGIT` in 0..=255 (RFC 3261 §20.22, RFC 4475 §3.1.2.4).
fn max_forwards(msg: &SipMessage) -> Result<(), ParseError> {
    match msg.header(HeaderName::MaxForwards) {
        Some(v) if parse_u32(v).is_none_or(|n| n > 255) => {
            Err(ParseError::BadHeaderValue("Max-Forwards"))
        }
        _ => Ok(()),
    }
}

