//! Initial INVITEs: where they go, how they are rewritten, what the proxy answers itself, and
//! the client transaction's timers.

use super::*;

#[test]
fn an_invite_from_the_pbx_is_forwarded_to_the_extensions_contact_with_our_via_and_record_route() {
    // Arrange
    let h = Harness::new();

    // Act
    let sent = h.recv(PBX, &pbx_invite("101", "in-1@pbx", "z9hG4bK-pbx-1"), 0);

    // Assert
    assert_eq!(
        sent.lines(),
        [
            (PBX.to_owned(), "SIP/2.0 100 Trying".to_owned()),
            (
                PHONE_101.to_owned(),
                "INVITE sip:101@127.0.0.1:6001 SIP/2.0".to_owned()
            ),
        ]
    );
    let trying = sent.one_to(PBX);
    assert_eq!(
        vias(trying),
        ["SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-pbx-1"]
    );
    assert_eq!(
        header(trying, HeaderName::CSeq).as_deref(),
        Some("1 INVITE")
    );
    let fwd = sent.one_to(PHONE_101);
    let via = vias(fwd);
    assert_eq!(via.len(), 2, "{via:?}");
    assert!(
        via[0].starts_with("SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK"),
        "{via:?}"
    );
    assert_eq!(via[1], "SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-pbx-1");
    assert_ne!(top_branch(fwd), "z9hG4bK-pbx-1", "a branch of our own");
    assert_eq!(
        header(fwd, HeaderName::RecordRoute),
        Some(dialog_route(PBX, PHONE_101, "in-1@pbx"))
    );
    assert_eq!(fwd.max_forwards(), Some(69));
    assert_eq!(header(fwd, HeaderName::CallId).as_deref(), Some("in-1@pbx"));
    assert_eq!(
        fwd.header_by_name(b"X-Call-Id"),
        Some(&b"pbx-77"[..]),
        "unknown headers pass through"
    );
    assert_eq!(h.proxy.transactions(), (1, 1));
}

#[test]
fn a_retransmitted_invite_is_not_forwarded_again() {
    // Arrange
    let h = Harness::new();
    let invite = pbx_invite("101", "in-1@pbx", "z9hG4bK-pbx-1");
    h.recv(PBX, &invite, 0);

    // Act
    let again = h.recv(PBX, &invite, 400);

    // Assert: at most the 100 again, to the PBX; nothing to the phone.
    assert!(again.to(PHONE_101).is_empty(), "{:?}", again.lines());
    assert!(
        again
            .sends
            .iter()
            .all(|(a, m)| *a == addr(PBX) && m.status() == Some(100)),
        "{:?}",
        again.lines()
    );
    assert!(again.reply.is_empty());
    assert_eq!(h.proxy.transactions(), (1, 1));
}

#[test]
fn an_unanswered_invite_is_retransmitted_on_timer_a_and_the_pbx_gets_408_at_32_s() {
    // Arrange
    let h = Harness::new();
    let first = h.offer("101", "in-1@pbx", PHONE_101);

    // Act: the driver ticks every 100 ms for a little over 64·T1.
    let ticks = h.tick_through(100, 32_400, 100);

    // Assert
    let resent: Vec<u64> = ticks
        .iter()
        .filter(|(_, s)| !s.to(PHONE_101).is_empty())
        .map(|(ms, _)| *ms)
        .collect();
    assert_eq!(
        resent,
        [500, 1_500, 3_500, 7_500, 15_500, 31_500],
        "Timer A: T1, doubling, until Timer B"
    );
    for (ms, s) in ticks.iter().filter(|(ms, _)| resent.contains(ms)) {
        let again = s.one_to(PHONE_101);
        assert_eq!(
            again.as_bytes(),
            first.as_bytes(),
            "at {ms} ms the same INVITE, byte for byte"
        );
    }
    let to_pbx: Vec<(u64, Option<u16>)> = ticks
        .iter()
        .flat_map(|(ms, s)| s.to(PBX).into_iter().map(move |m| (*ms, m.status())))
        .collect();
    assert_eq!(to_pbx.first(), Some(&(32_000, Some(408))), "{to_pbx:?}");
    let timeout = ticks
        .iter()
        .find(|(ms, _)| *ms == 32_000)
        .map(|(_, s)| s.one_to(PBX))
        .expect("a tick at 32 s");
    assert_eq!(
        text(timeout.reason().unwrap_or_default()),
        "Request Timeout"
    );
    assert_eq!(
        vias(timeout),
        ["SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-pbx-1"]
    );
    assert!(
        timeout.to().and_then(|t| t.tag).is_some(),
        "a final answer carries a To-tag"
    );
}

#[test]
fn an_invite_with_max_forwards_0_gets_483_and_is_not_forwarded() {
    // Arrange
    let h = Harness::new();
    let invite = pbx_invite("101", "in-1@pbx", "z9hG4bK-pbx-1")
        .replace("Max-Forwards: 70", "Max-Forwards: 0");

    // Act
    let sent = h.recv(PBX, &invite, 0);

    // Assert
    assert_eq!(
        sent.lines(),
        [(PBX.to_owned(), "SIP/2.0 483 Too Many Hops".to_owned())]
    );
    assert_eq!(h.proxy.transactions(), (0, 0));
}

#[test]
fn an_invite_for_an_unknown_extension_gets_404() {
    // Arrange
    let h = Harness::new();

    // Act
    let sent = h.recv(PBX, &pbx_invite("999", "in-1@pbx", "z9hG4bK-pbx-1"), 0);

    // Assert
    assert_eq!(
        sent.lines(),
        [(PBX.to_owned(), "SIP/2.0 404 Not Found".to_owned())]
    );
    assert_eq!(
        status_and_cseq(sent.one_to(PBX)),
        (Some(404), Some("1 INVITE".to_owned()))
    );
}

#[test]
fn an_invite_for_an_extension_without_contact_or_registration_gets_480() {
    // Arrange
    let h = Harness::new();

    // Act
    let sent = h.recv(PBX, &pbx_invite("102", "in-1@pbx", "z9hG4bK-pbx-1"), 0);

    // Assert
    assert_eq!(
        sent.lines(),
        [(
            PBX.to_owned(),
            "SIP/2.0 480 Temporarily Unavailable".to_owned()
        )]
    );
}

#[test]
fn an_agents_invite_for_a_customer_number_goes_to_the_pbx() {
    // Arrange
    let h = Harness::new();
    let invite = format!(
        "INVITE sip:{CUSTOMER}@127.0.0.1:5060 SIP/2.0\n\
         Via: SIP/2.0/UDP 127.0.0.1:6001;branch=z9hG4bK-phone-1\n\
         Max-Forwards: 70\n\
         From: <sip:101@127.0.0.1:5060>;tag=phone-tag\n\
         To: <sip:{CUSTOMER}@127.0.0.1:5060>\n\
         Call-ID: out-1@phone\n\
         CSeq: 1 INVITE\n\
         Contact: <sip:101@127.0.0.1:6001>\n\
         Content-Length: 0\n\n"
    );

    // Act
    let sent = h.recv(PHONE_101, &invite, 0);

    // Assert
    assert_eq!(
        sent.lines(),
        [
            (PHONE_101.to_owned(), "SIP/2.0 100 Trying".to_owned()),
            (
                PBX.to_owned(),
                format!("INVITE sip:{CUSTOMER}@127.0.0.1:5080 SIP/2.0")
            ),
        ]
    );
    let fwd = sent.one_to(PBX);
    assert!(top_branch(fwd).starts_with("z9hG4bK"));
    assert_eq!(
        vias(fwd)[1],
        "SIP/2.0/UDP 127.0.0.1:6001;branch=z9hG4bK-phone-1"
    );
    assert_eq!(
        header(fwd, HeaderName::RecordRoute),
        Some(dialog_route(PHONE_101, PBX, "out-1@phone"))
    );
    assert_eq!(fwd.max_forwards(), Some(69));
}

#[test]
fn options_to_callgate_itself_is_answered_200_locally() {
    // Arrange
    let h = Harness::new();
    let options = "OPTIONS sip:127.0.0.1:5060 SIP/2.0\n\
         Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-ping-1\n\
         Max-Forwards: 70\n\
         From: <sip:ping@127.0.0.1:5080>;tag=ping\n\
         To: <sip:127.0.0.1:5060>\n\
         Call-ID: ping-1@pbx\n\
         CSeq: 7 OPTIONS\n\
         Content-Length: 0\n\n";

    // Act
    let sent = h.recv(PBX, options, 0);

    // Assert
    assert_eq!(
        sent.lines(),
        [(PBX.to_owned(), "SIP/2.0 200 OK".to_owned())]
    );
    assert_eq!(
        header(sent.one_to(PBX), HeaderName::CSeq).as_deref(),
        Some("7 OPTIONS")
    );
    assert_eq!(h.proxy.transactions(), (0, 0));
}

/// Phone 101's call out, INVITE number `cseq` on branch `branch`, with `extra` headers.
fn phone_invite(cseq: u32, branch: &str, extra: &str) -> String {
    format!(
        "INVITE sip:{CUSTOMER}@127.0.0.1:5060 SIP/2.0\n\
         Via: SIP/2.0/UDP 127.0.0.1:6001;branch={branch}\n\
         Max-Forwards: 70\n\
         From: <sip:101@127.0.0.1:5060>;tag=phone-tag\n\
         To: <sip:{CUSTOMER}@127.0.0.1:5060>\n\
         Call-ID: out-auth@phone\n\
         CSeq: {cseq} INVITE\n\
         Contact: <sip:101@127.0.0.1:6001>\n\
         {extra}Content-Length: 0\n\n"
    )
}

#[test]
fn a_phones_invite_sent_again_after_the_pbxs_407_is_the_same_leg_of_one_answered_call() {
    // Arrange: the PBX challenges the phone's INVITE; the phone ACKs the 407 hop by hop.
    let h = Harness::with_tracker(TrackerConfig { linger: Duration::from_millis(100), ..TrackerConfig::default() });
    let first = h.recv(PHONE_101, &phone_invite(1, "z9hG4bK-phone-1", ""), 0);
    let to_pbx = first.one_to(PBX).clone();
    let challenge = answer(&to_pbx, 407, "Proxy Authentication Required", &[("Proxy-Authenticate", b"Digest realm=\"pbx\", nonce=\"n1\"")]);
    let relayed = h.recv_bytes(PBX, challenge, 20);
    assert_eq!(status_and_cseq(relayed.one_to(PHONE_101)), (Some(407), Some("1 INVITE".into())));
    let ack = phone_invite(1, "z9hG4bK-phone-1", "").replace("INVITE sip:", "ACK sip:").replace("CSeq: 1 INVITE", "CSeq: 1 ACK").replace("To: <sip:79161234567@127.0.0.1:5060>", &format!("To: <sip:{CUSTOMER}@127.0.0.1:5060>;tag={AGENT_TAG}"));
    assert!(h.recv(PHONE_101, &ack, 25).to(PBX).is_empty(), "the 407's ACK stays with callgate");

    // Act: the INVITE again, same Call-ID and From tag, CSeq 2, a new branch, credentials.
    let retry = h.recv(PHONE_101, &phone_invite(2, "z9hG4bK-phone-2", "Proxy-Authorization: Digest username=\"101\", realm=\"pbx\", nonce=\"n1\"\n"), 40);
    let retried = retry.one_to(PBX).clone();
    assert_eq!(header(&retried, HeaderName::CSeq).as_deref(), Some("2 INVITE"), "a new transaction, relayed");
    assert!(retried.header_by_name(b"Proxy-Authorization").is_some(), "the PBX's credentials pass through");
    h.recv_bytes(PBX, answer(&retried, 180, "Ringing", &[]), 100);
    h.recv_bytes(PBX, answer_200(&retried), 1_000);
    h.tick_through(1_100, 1_200, 100);

    // Assert: one call, its one leg answered (not failed with 407 and a second offer ignored).
    let calls = h.calls.list(10);
    assert_eq!(calls.len(), 1, "{calls:#?}");
    let leg = &calls[0].legs[0];
    assert_eq!((calls[0].legs.len(), leg.state, leg.end_reason), (1, crate::calls::LegState::Answered, None), "{calls:#?}");
    assert_eq!(calls[0].kind, crate::calls::CallKind::Outgoing);
}
