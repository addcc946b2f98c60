//! `build_ack`: the RFC 3261 §17.1.1.3 ACK, re-parsed and checked header by header.

use bytes::Bytes;

use super::super::super::{HeaderName, SipMessage};
use super::super::build_ack;
use super::util::{invite, parse, respond, INVITE};

#[test]
fn ack_for_486_copies_invite_headers_and_the_responses_to_tag() {
    let inv = invite();
    let busy = respond(&inv, 486, Some(b"uas1"));
    let ack = SipMessage::parse(build_ack(&inv, &busy)).expect("ACK parses");

    assert_eq!(
        ack.start_line(),
        b"ACK sip:74951234567@carrier.example SIP/2.0"
    );
    assert_eq!(ack.request_uri(), inv.request_uri());
    let vias: Vec<_> = ack.values(HeaderName::Via).collect();
    assert_eq!(
        vias,
        [&b"SIP/2.0/UDP gw.example:5060;branch=z9hG4bKtx1;rport"[..]]
    );
    assert_eq!(
        ack.top_via().and_then(|v| v.branch),
        inv.top_via().and_then(|v| v.branch)
    );
    assert_eq!(ack.header(HeaderName::From), inv.header(HeaderName::From));
    assert_eq!(ack.header(HeaderName::To), busy.header(HeaderName::To));
    assert_eq!(ack.to().and_then(|t| t.tag), Some(&b"uas1"[..]));
    assert_eq!(ack.call_id(), Some(&b"call-1@gw.example"[..]));
    let cseq = ack.cseq().expect("CSeq");
    assert_eq!((cseq.seq, cseq.method), (314, &b"ACK"[..]));
    let routes: Vec<_> = ack.headers(HeaderName::Route).collect();
    assert_eq!(
        routes,
        [
            &b"<sip:edge1.example;lr>"[..],
            b"<sip:edge2.example;lr>, <sip:edge3.example;lr>"
        ]
    );
    assert_eq!(ack.max_forwards(), Some(70));
    assert_eq!(ack.content_length(), Some(0));
    assert!(ack.body().is_empty());
    // Nothing else: no Contact, Content-Type or second Via line.
    assert_eq!(ack.header_lines().count(), 9);
}

#[test]
fn ack_unfolds_folded_values_and_works_without_routes() {
    let text = String::from_utf8(INVITE.to_vec()).expect("ascii");
    let text = text
        .replace("Route: <sip:edge1.example;lr>\r\n", "")
        .replace(
            "Route: <sip:edge2.example;lr>, <sip:edge3.example;lr>\r\n",
            "",
        )
        .replace("From: \"Alice\" ", "From: \"Alice\"\r\n ");
    let inv = parse(text.as_bytes());
    let busy = respond(&inv, 603, Some(b"uas9"));
    let raw: Bytes = build_ack(&inv, &busy);
    assert!(
        !raw.windows(3).any(|w| w == b"\r\n "),
        "folded line left in the ACK"
    );
    let ack = SipMessage::parse(raw).expect("ACK parses");
    assert_eq!(ack.headers(HeaderName::Route).count(), 0);
    assert_eq!(ack.from().and_then(|f| f.tag), Some(&b"from1"[..]));
    assert_eq!(ack.to().and_then(|t| t.tag), Some(&b"uas9"[..]));
    assert_eq!(ack.header_lines().count(), 7);
}
