//! What the parser refuses never reaches the proxy logic: a 400 where RFC 3261 allows one to be
//! built, silence otherwise, and never a panic or a forwarded message.

use super::*;

fn invite_without(header_line: &str) -> Bytes {
    sip(&pbx_invite("101", "in-1@pbx", "z9hG4bK-pbx-1").replace(header_line, ""))
}

#[test]
fn garbage_is_dropped_without_an_answer() {
    // Arrange
    let h = Harness::new();

    // Act
    let binary = h.recv_bytes(
        PBX,
        Bytes::from_static(b"\x00\x01\x02 not SIP at all \xff\xfe"),
        0,
    );
    let half = h.recv_bytes(
        PBX,
        Bytes::from_static(b"INVITE sip:101@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP"),
        0,
    );

    // Assert
    assert!(binary.is_empty(), "{:?} {:?}", binary.reply, binary.lines());
    assert!(half.is_empty(), "{:?} {:?}", half.reply, half.lines());
    assert_eq!(h.proxy.transactions(), (0, 0));
}

#[test]
fn an_invite_without_call_id_is_dropped_since_no_answer_can_be_matched_to_it() {
    // Arrange
    let h = Harness::new();

    // Act
    let sent = h.recv_bytes(PBX, invite_without("Call-ID: in-1@pbx\n"), 0);

    // Assert: RFC 3261 §8.1.1 makes Call-ID mandatory in a response too, so none is built.
    assert!(sent.is_empty(), "{:?} {:?}", sent.reply, sent.lines());
    assert_eq!(h.proxy.transactions(), (0, 0));
}

#[test]
fn an_invite_with_a_cseq_for_another_method_gets_400_in_the_reply_and_is_not_forwarded() {
    // Arrange
    let h = Harness::new();
    let bad =
        sip(&pbx_invite("101", "in-1@pbx", "z9hG4bK-pbx-1")
            .replace("CSeq: 1 INVITE", "CSeq: 1 BYE"));

    // Act
    let sent = h.recv_bytes(PBX, bad, 0);

    // Assert
    assert!(sent.sends.is_empty(), "{:?}", sent.lines());
    let reply = SipMessage::parse(sent.reply.clone().freeze()).expect("the 400 parses");
    assert_eq!(reply.status(), Some(400));
    assert_eq!(
        header(&reply, HeaderName::CallId).as_deref(),
        Some("in-1@pbx")
    );
    assert_eq!(
        vias(&reply),
        ["SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-pbx-1"]
    );
    assert_eq!(h.proxy.transactions(), (0, 0));
}

#[test]
fn a_response_nobody_asked_for_is_dropped() {
    // Arrange
    let h = Harness::new();
    let stray = "SIP/2.0 200 OK\n\
         Via: SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bK-not-ours\n\
         From: <sip:a@10.9.9.9>;tag=1\n\
         To: <sip:b@10.9.9.9>;tag=2\n\
         Call-ID: stray@x\n\
         CSeq: 1 INVITE\n\
         Content-Length: 0\n\n";

    // Act
    let sent = h.recv(PHONE_101, stray, 0);

    // Assert
    assert!(sent.is_empty(), "{:?}", sent.lines());
}
