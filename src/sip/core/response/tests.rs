//! `write_response` / `to_tag_for` tests: output re-parses, Via order, To-tag rules,
//! stateless retransmission handling.

use bytes::{Bytes, BytesMut};

use super::super::{to_tag_for, write_response, HeaderName, ParseError, SipMessage};

const INVITE: &[u8] = b"INVITE sip:pm-route@gw.example SIP/2.0\r\n\
Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKaaa;rport\r\n\
v: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKbbb ,\r\n SIP/2.0/TCP [2001:db8::3];branch=z9hG4bKccc\r\n\
Max-Forwards: 69\r\n\
f: \"\xC8\xE2\xE0\xED\" <sip:74951234567@pbx.example>;tag=from1\r\n\
t: <sip:pm-route@gw.example>\r\n\
i: call-1@10.0.0.1\r\n\
CSeq: 314 INVITE\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\r\nv=0\n";

fn parse(b: &[u8]) -> SipMessage {
    SipMessage::parse(Bytes::copy_from_slice(b)).expect("valid")
}

/// Replaces the first occurrence of `from` (which must occur).
fn replace(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = hay
        .windows(from.len())
        .position(|w| w == from)
        .expect("pattern present");
    [&hay[..at], to, &hay[at + from.len()..]].concat()
}

fn respond(
    req: &SipMessage,
    code: u16,
    to_tag: Option<&[u8]>,
    extra: &[(&str, &[u8])],
) -> SipMessage {
    let mut out = BytesMut::new();
    write_response(req, code, "Moved Temporarily", to_tag, extra, &mut out);
    SipMessage::parse(out.freeze()).expect("response re-parses")
}

#[test]
fn response_reparses_and_keeps_via_order() {
    let req = parse(INVITE);
    let tag = to_tag_for(&req);
    let resp = respond(
        &req,
        302,
        Some(&tag),
        &[("Contact", b"<sip:101@pbx.example>")],
    );
    assert_eq!(
        (resp.status(), resp.reason()),
        (Some(302), Some(&b"Moved Temporarily"[..]))
    );
    let req_vias: Vec<&[u8]> = req.values(HeaderName::Via).collect();
    let resp_vias: Vec<&[u8]> = resp.values(HeaderName::Via).collect();
    assert_eq!(resp_vias.len(), 3);
    assert_eq!(resp_vias[0], req_vias[0]);
    assert_eq!(resp_vias[1], req_vias[1]);
    assert_eq!(resp_vias[2], req_vias[2]);
    assert_eq!(resp.call_id(), req.call_id());
    assert_eq!(resp.cseq(), req.cseq());
    assert_eq!(resp.from(), req.from());
    assert_eq!(resp.to().and_then(|t| t.tag), Some(&tag[..]));
    assert_eq!(resp.contact().and_then(|c| c.uri.user), Some(&b"101"[..]));
    assert_eq!((resp.content_length(), resp.body()), (Some(0), &b""[..]));
    assert!(resp.header(HeaderName::ContentType).is_none());
    // Full names only, folding removed.
    assert!(resp
        .as_bytes()
        .windows(4)
        .all(|w| w != b"\r\n v" && w != b"\r\n S"));
    assert!(resp.header_lines().all(|(_, raw, _)| raw.len() > 1));
}

#[test]
fn to_tag_is_added_only_when_absent() {
    let req = parse(&replace(
        INVITE,
        b"@gw.example>\r\n",
        b"@gw.example>;tag=existing\r\n",
    ));
    let resp = respond(&req, 200, Some(b"new"), &[]);
    assert_eq!(resp.to().and_then(|t| t.tag), Some(&b"existing"[..]));
    assert_eq!(resp.headers(HeaderName::To).count(), 1);
    // No tag given (100 Trying): none is added.
    let resp = respond(&parse(INVITE), 100, None, &[]);
    assert_eq!(resp.to().and_then(|t| t.tag), None);
}

#[test]
fn retransmission_gets_the_same_tag_and_bytes() {
    let first = parse(INVITE);
    let again = parse(INVITE);
    assert_eq!(to_tag_for(&first), to_tag_for(&again));
    let tag = to_tag_for(&first);
    assert!(tag.iter().all(u8::is_ascii_hexdigit));
    let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
    write_response(&first, 302, "Moved Temporarily", Some(&tag), &[], &mut a);
    write_response(
        &again,
        302,
        "Moved Temporarily",
        Some(&to_tag_for(&again)),
        &[],
        &mut b,
    );
    assert_eq!(a, b);
    // Another transaction (new branch) or another call gets another tag.
    let other = parse(&replace(INVITE, b"z9hG4bKaaa", b"z9hG4bKzzz"));
    assert_ne!(to_tag_for(&other), tag);
}

#[test]
fn works_for_a_request_missing_headers_and_sanitises_input() {
    let broken = b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: only\r\n\r\n";
    assert_eq!(
        SipMessage::parse(Bytes::from_static(broken)).map(|_| ()),
        Err(ParseError::MissingHeader("To"))
    );
    let req = SipMessage::parse_unvalidated(Bytes::from_static(broken)).expect("indexable");
    let mut out = BytesMut::new();
    let reason = ParseError::MissingHeader("To").to_string();
    write_response(
        &req,
        400,
        &reason,
        Some(b"t"),
        &[("X-Evil", b"a\r\nInjected: 1")],
        &mut out,
    );
    let text = String::from_utf8_lossy(&out).into_owned();
    assert_eq!(
        text,
        "SIP/2.0 400 Missing To\r\nCall-ID: only\r\nX-Evil: a  Injected: 1\r\nContent-Length: 0\r\n\r\n"
    );
    let mut out = BytesMut::new();
    write_response(&parse(INVITE), 65535, "a\nb", None, &[], &mut out);
    assert!(out.starts_with(b"SIP/2.0 65535 a b\r\n"));
    let mut out = BytesMut::new();
    write_response(&parse(INVITE), 7, "", None, &[], &mut out);
    assert!(out.starts_with(b"SIP/2.0 7 \r\n"));
}

#[test]
fn a_stray_cr_in_an_unfolded_request_is_still_replaced() {
    let unfolded = replace(
        INVITE,
        b" ,\r\n SIP/2.0/TCP [2001:db8::3];branch=z9hG4bKccc",
        b"",
    );
    for (call_id, want) in [
        (&b"i: call-1@10.0.0.1"[..], &b"Call-ID: call-1@10.0.0.1\r\n"[..]),
        (b"i: call\r-1@10.0.0.1", b"Call-ID: call -1@10.0.0.1\r\n"),
    ] {
        let req = parse(&replace(&unfolded, b"i: call-1@10.0.0.1", call_id));
        let mut out = BytesMut::new();
        write_response(&req, 302, "Moved Temporarily", None, &[], &mut out);
        assert!(out.windows(want.len()).any(|w| w == want));
        let lone_cr = out
            .windows(2)
            .any(|w| w[0] == b'\r' && w[1] != b'\n');
        assert!(!lone_cr, "{}", String::from_utf8_lossy(&out));
    }
}
