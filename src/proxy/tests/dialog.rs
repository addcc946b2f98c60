//! A call from the PBX to extension 101 after the INVITE: provisional and final answers, ACKs
//! hop by hop and end to end, BYE through the Record-Route, CANCEL, and what the tracker made
//! of it.

use super::*;
use crate::calls::{CallKind, Outcome};

const CALL: &str = "in-1@pbx";

#[test]
fn ringing_and_busy_reach_the_pbx_and_the_busy_is_acked_hop_by_hop() {
    // Arrange
    let h = Harness::new();
    let invite = h.offer("101", CALL, PHONE_101);

    // Act
    let ringing = h.recv_bytes(PHONE_101, answer(&invite, 180, "Ringing", &[]), 100);
    let busy = h.recv_bytes(PHONE_101, answer(&invite, 486, "Busy Here", &[]), 200);
    let pbx_ack = h.recv(PBX, &pbx_ack_non_2xx("101", CALL, "z9hG4bK-pbx-1"), 250);
    let later = h.tick_through(300, 40_000, 100);

    // Assert
    assert_eq!(
        ringing.lines(),
        [(PBX.to_owned(), "SIP/2.0 180 Ringing".to_owned())]
    );
    assert_eq!(
        vias(ringing.one_to(PBX)),
        ["SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-pbx-1"],
        "our Via removed"
    );
    assert_eq!(busy.to(PBX).len(), 1, "{:?}", busy.lines());
    let to_pbx = busy.one_to(PBX);
    assert_eq!(to_pbx.status(), Some(486));
    assert_eq!(
        vias(to_pbx),
        ["SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-pbx-1"]
    );
    let ack = busy.one_to(PHONE_101);
    assert_eq!(text(ack.start_line()), "ACK sip:101@127.0.0.1:6001 SIP/2.0");
    assert_eq!(
        top_branch(ack),
        top_branch(&invite),
        "the ACK of a non-2xx belongs to the INVITE's transaction"
    );
    assert_eq!(header(ack, HeaderName::CSeq).as_deref(), Some("1 ACK"));
    assert_eq!(
        ack.to().and_then(|t| t.tag).map(text).as_deref(),
        Some(AGENT_TAG)
    );
    assert!(
        pbx_ack.is_empty(),
        "the PBX's ACK ends our server transaction: {:?}",
        pbx_ack.lines()
    );
    let resent: Vec<_> = later
        .iter()
        .filter(|(_, s)| !s.is_empty())
        .map(|(ms, s)| (*ms, s.lines()))
        .collect();
    assert!(
        resent.is_empty(),
        "the ACK stopped Timer G; nothing more goes out: {resent:?}"
    );
    assert_eq!(
        h.proxy.transactions(),
        (0, 0),
        "Timers D and I ended both transactions"
    );
}

#[test]
fn a_retransmitted_busy_is_acked_again_but_not_forwarded_again() {
    // Arrange
    let h = Harness::new();
    let invite = h.offer("101", CALL, PHONE_101);
    let busy = answer(&invite, 486, "Busy Here", &[]);
    h.recv_bytes(PHONE_101, busy.clone(), 200);

    // Act
    let again = h.recv_bytes(PHONE_101, busy, 700);

    // Assert
    assert_eq!(
        again.lines(),
        [(
            PHONE_101.to_owned(),
            "ACK sip:101@127.0.0.1:6001 SIP/2.0".to_owned()
        )]
    );
}

#[test]
fn an_answered_call_routes_the_ack_and_the_bye_through_our_record_route() {
    // Arrange
    let h = Harness::new();
    let invite = h.offer("101", CALL, PHONE_101);
    h.recv_bytes(PHONE_101, answer(&invite, 180, "Ringing", &[]), 100);

    // Act
    let ok = h.recv_bytes(PHONE_101, answer_200(&invite), 1_000);
    let ack = h.recv(
        PBX,
        &pbx_in_dialog("ACK", 1, CALL, "z9hG4bK-pbx-ack"),
        1_010,
    );
    let bye = h.recv(
        PBX,
        &pbx_in_dialog("BYE", 2, CALL, "z9hG4bK-pbx-bye"),
        5_000,
    );
    let bye_at_phone = bye.one_to(PHONE_101).clone();
    let bye_ok = h.recv_bytes(PHONE_101, answer(&bye_at_phone, 200, "OK", &[]), 5_010);

    // Assert
    assert_eq!(ok.lines(), [(PBX.to_owned(), "SIP/2.0 200 OK".to_owned())]);
    let ok = ok.one_to(PBX);
    assert_eq!(
        vias(ok),
        ["SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-pbx-1"]
    );
    assert_eq!(
        header(ok, HeaderName::RecordRoute),
        Some(dialog_route(PBX, PHONE_101, CALL))
    );
    assert_eq!(
        header(ok, HeaderName::Contact).as_deref(),
        Some("<sip:101@127.0.0.1:6001>")
    );

    assert_eq!(
        ack.lines(),
        [(
            PHONE_101.to_owned(),
            "ACK sip:101@127.0.0.1:6001 SIP/2.0".to_owned()
        )]
    );
    let ack = ack.one_to(PHONE_101);
    assert_eq!(
        header(ack, HeaderName::Route),
        None,
        "our Route value popped"
    );
    assert!(top_branch(ack).starts_with("z9hG4bK"));
    assert_ne!(
        top_branch(ack),
        top_branch(&invite),
        "the 2xx ACK is a transaction of its own"
    );
    assert_eq!(
        vias(ack)[1],
        "SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-pbx-ack"
    );
    assert_eq!(ack.max_forwards(), Some(69));

    assert_eq!(
        bye.lines(),
        [(
            PHONE_101.to_owned(),
            "BYE sip:101@127.0.0.1:6001 SIP/2.0".to_owned()
        )]
    );
    assert_eq!(header(&bye_at_phone, HeaderName::Route), None);
    assert_eq!(vias(&bye_at_phone).len(), 2);
    assert_eq!(
        bye_ok.lines(),
        [(PBX.to_owned(), "SIP/2.0 200 OK".to_owned())]
    );
    let bye_ok = bye_ok.one_to(PBX);
    assert_eq!(header(bye_ok, HeaderName::CSeq).as_deref(), Some("2 BYE"));
    assert_eq!(
        vias(bye_ok),
        ["SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-pbx-bye"]
    );
}

#[test]
fn a_retransmitted_ack_for_the_200_is_forwarded_with_the_same_branch() {
    // Arrange
    let h = Harness::new();
    let invite = h.offer("101", CALL, PHONE_101);
    h.recv_bytes(PHONE_101, answer_200(&invite), 1_000);
    let ack = pbx_in_dialog("ACK", 1, CALL, "z9hG4bK-pbx-ack");
    let first = h.recv(PBX, &ack, 1_010);

    // Act
    let again = h.recv(PBX, &ack, 1_510);

    // Assert (RFC 3261 §16.11: a stateless proxy forwards a retransmission identically)
    assert_eq!(
        top_branch(again.one_to(PHONE_101)),
        top_branch(first.one_to(PHONE_101))
    );
}

#[test]
fn an_ack_for_the_200_from_an_rfc2543_pbx_reaches_the_phone() {
    // Arrange: an RFC 2543 PBX: branches without the magic cookie, transactions matched by
    // Call-ID, From tag and CSeq number; its 2xx ACK has the INVITE's CSeq number.
    let h = Harness::new();
    let sent = h.recv(PBX, &pbx_invite("101", CALL, "old-1"), 0);
    let invite = sent.one_to(PHONE_101).clone();
    h.recv_bytes(PHONE_101, answer_200(&invite), 1_000);

    // Act
    let ack = h.recv(PBX, &pbx_in_dialog("ACK", 1, CALL, "old-2"), 1_010);

    // Assert
    assert_eq!(
        ack.lines(),
        [(
            PHONE_101.to_owned(),
            "ACK sip:101@127.0.0.1:6001 SIP/2.0".to_owned()
        )]
    );
}

#[test]
fn a_cancel_while_ringing_is_answered_and_sent_to_the_phone_on_the_invites_branch() {
    // Arrange
    let h = Harness::new();
    let invite = h.offer("101", CALL, PHONE_101);
    h.recv_bytes(PHONE_101, answer(&invite, 180, "Ringing", &[]), 100);

    // Act
    let cancel = h.recv(PBX, &pbx_cancel("101", CALL, "z9hG4bK-pbx-1"), 2_000);
    let cancel_at_phone = cancel.one_to(PHONE_101).clone();
    let cancel_ok = h.recv_bytes(PHONE_101, answer(&cancel_at_phone, 200, "OK", &[]), 2_010);
    let terminated = h.recv_bytes(
        PHONE_101,
        answer(&invite, 487, "Request Terminated", &[]),
        2_020,
    );

    // Assert
    assert_eq!(
        cancel.lines(),
        [
            (PBX.to_owned(), "SIP/2.0 200 OK".to_owned()),
            (
                PHONE_101.to_owned(),
                "CANCEL sip:101@127.0.0.1:6001 SIP/2.0".to_owned()
            ),
        ]
    );
    assert_eq!(
        status_and_cseq(cancel.one_to(PBX)),
        (Some(200), Some("1 CANCEL".to_owned()))
    );
    assert_eq!(top_branch(&cancel_at_phone), top_branch(&invite));
    assert_eq!(
        vias(&cancel_at_phone).len(),
        1,
        "a CANCEL carries only the INVITE's top Via"
    );
    assert_eq!(
        header(&cancel_at_phone, HeaderName::CSeq).as_deref(),
        Some("1 CANCEL")
    );
    assert!(
        cancel_ok.is_empty(),
        "the phone's 200 for our CANCEL stays here: {:?}",
        cancel_ok.lines()
    );
    assert_eq!(
        status_and_cseq(terminated.one_to(PBX)),
        (Some(487), Some("1 INVITE".to_owned()))
    );
    assert_eq!(
        text(terminated.one_to(PHONE_101).start_line()),
        "ACK sip:101@127.0.0.1:6001 SIP/2.0"
    );
}

#[test]
fn a_cancel_for_an_unknown_transaction_gets_481() {
    // Arrange
    let h = Harness::new();

    // Act
    let sent = h.recv(PBX, &pbx_cancel("101", CALL, "z9hG4bK-never-sent"), 0);

    // Assert
    assert_eq!(
        sent.lines(),
        [(
            PBX.to_owned(),
            "SIP/2.0 481 Call/Transaction Does Not Exist".to_owned()
        )]
    );
}

#[test]
fn an_answered_and_hung_up_call_is_recorded_as_answered_with_101_as_first_talker() {
    // Arrange
    let h = Harness::with_tracker(TrackerConfig {
        linger: Duration::from_millis(100),
        ..TrackerConfig::default()
    });
    let invite = h.offer("101", CALL, PHONE_101);
    h.recv_bytes(PHONE_101, answer(&invite, 180, "Ringing", &[]), 100);
    h.recv_bytes(PHONE_101, answer_200(&invite), 1_000);
    h.recv(
        PBX,
        &pbx_in_dialog("ACK", 1, CALL, "z9hG4bK-pbx-ack"),
        1_010,
    );
    let bye = h.recv(
        PBX,
        &pbx_in_dialog("BYE", 2, CALL, "z9hG4bK-pbx-bye"),
        5_000,
    );
    h.recv_bytes(
        PHONE_101,
        answer(bye.one_to(PHONE_101), 200, "OK", &[]),
        5_010,
    );

    // Act
    h.tick_through(5_100, 5_400, 100);

    // Assert
    let calls = h.calls.list(10);
    assert_eq!(calls.len(), 1, "{calls:#?}");
    let call = &calls[0];
    assert_eq!(call.kind, CallKind::Incoming);
    assert_eq!(call.portal, 1);
    assert_eq!(call.customer.as_ref(), CUSTOMER);
    assert_eq!(call.outcome, Some(Outcome::Answered), "{call:#?}");
    assert!(call.ended_at.is_some(), "finished: {call:#?}");
    let first = call.first_talker.as_ref().expect("a first talker");
    assert_eq!((first.extension.as_ref(), first.user), ("101", Some(11)));
    assert_eq!(call.talk_seconds, 4, "answered at 1.0 s, BYE at 5.0 s");
}

#[test]
fn a_retransmitted_invite_after_the_busy_gets_the_busy_again_and_nothing_reaches_the_phone() {
    // Arrange: the PBX's ACK for the 486 was lost.
    let h = Harness::new();
    let invite = h.offer("101", CALL, PHONE_101);
    h.recv_bytes(PHONE_101, answer(&invite, 486, "Busy Here", &[]), 200);

    // Act
    let again = h.recv(PBX, &pbx_invite("101", CALL, "z9hG4bK-pbx-1"), 600);

    // Assert
    assert_eq!(
        again.lines(),
        [(PBX.to_owned(), "SIP/2.0 486 Busy Here".to_owned())]
    );
}

#[test]
fn a_200_retransmitted_after_the_transactions_ended_is_dropped_not_forwarded_along_its_via() {
    // Arrange: answered and acknowledged; then Timers L and M (64·T1) end both transactions.
    let h = Harness::new();
    let invite = h.offer("101", CALL, PHONE_101);
    let ok = answer_200(&invite);
    h.recv_bytes(PHONE_101, ok.clone(), 1_000);
    h.recv(
        PBX,
        &pbx_in_dialog("ACK", 1, CALL, "z9hG4bK-pbx-ack"),
        1_010,
    );
    h.tick(33_100);
    assert_eq!(h.proxy.transactions(), (0, 0));

    // Act: the phone did not see the ACK and sends its 200 once more.
    let again = h.recv_bytes(PHONE_101, ok, 34_000);

    // Assert: a response nobody is waiting for goes nowhere (a Via is the sender's word; within
    // the 32 s of Timers L and M retransmissions were still relayed statefully).
    assert!(again.is_empty(), "{:?}", again.lines());
}

#[test]
fn a_bye_from_the_phone_reaches_the_pbx_along_the_record_route() {
    // Arrange
    let h = Harness::new();
    let invite = h.offer("101", CALL, PHONE_101);
    h.recv_bytes(PHONE_101, answer_200(&invite), 1_000);
    h.recv(
        PBX,
        &pbx_in_dialog("ACK", 1, CALL, "z9hG4bK-pbx-ack"),
        1_010,
    );
    // The phone's route set is the INVITE's Record-Route; its remote target the PBX's Contact.
    let route = dialog_route(PBX, PHONE_101, CALL);
    let bye = format!(
        "BYE sip:{CUSTOMER}@127.0.0.1:5080 SIP/2.0\n\
         Via: SIP/2.0/UDP 127.0.0.1:6001;branch=z9hG4bK-phone-bye\n\
         Route: {route}\n\
         Max-Forwards: 70\n\
         From: <sip:101@127.0.0.1:5060>;tag={AGENT_TAG}\n\
         To: \"Customer\" <sip:{CUSTOMER}@127.0.0.1:5080>;tag=pbx-tag\n\
         Call-ID: {CALL}\n\
         CSeq: 1 BYE\n\
         Content-Length: 0\n\n"
    );

    // Act
    let sent = h.recv(PHONE_101, &bye, 5_000);
    let at_pbx = sent.one_to(PBX).clone();
    let ok = h.recv_bytes(PBX, answer(&at_pbx, 200, "OK", &[]), 5_010);

    // Assert
    assert_eq!(
        sent.lines(),
        [(
            PBX.to_owned(),
            format!("BYE sip:{CUSTOMER}@127.0.0.1:5080 SIP/2.0")
        )]
    );
    assert_eq!(header(&at_pbx, HeaderName::Route), None);
    assert_eq!(
        ok.lines(),
        [(PHONE_101.to_owned(), "SIP/2.0 200 OK".to_owned())]
    );
    assert_eq!(
        vias(ok.one_to(PHONE_101)),
        ["SIP/2.0/UDP 127.0.0.1:6001;branch=z9hG4bK-phone-bye"]
    );
}

#[test]
fn a_cancel_before_any_provisional_answer_waits_for_one_before_reaching_the_phone() {
    // Arrange
    let h = Harness::new();
    let invite = h.offer("101", CALL, PHONE_101);

    // Act
    let cancel = h.recv(PBX, &pbx_cancel("101", CALL, "z9hG4bK-pbx-1"), 50);
    let ringing = h.recv_bytes(PHONE_101, answer(&invite, 180, "Ringing", &[]), 100);

    // Assert
    assert_eq!(
        cancel.lines(),
        [(PBX.to_owned(), "SIP/2.0 200 OK".to_owned())]
    );
    assert_eq!(
        text(ringing.one_to(PHONE_101).start_line()),
        "CANCEL sip:101@127.0.0.1:6001 SIP/2.0"
    );
}

#[test]
fn a_phone_ringing_for_more_than_three_minutes_is_cancelled_by_timer_c() {
    // Arrange
    let h = Harness::new();
    let invite = h.offer("101", CALL, PHONE_101);
    h.recv_bytes(PHONE_101, answer(&invite, 180, "Ringing", &[]), 100);

    // Act
    let ticks = h.tick_through(1_000, 300_000, 1_000);

    // Assert
    let cancels: Vec<u64> = ticks
        .iter()
        .filter(|(_, s)| {
            s.to(PHONE_101)
                .iter()
                .any(|m| m.method() == Some(crate::sip::core::Method::Cancel))
        })
        .map(|(ms, _)| *ms)
        .collect();
    assert!(
        cancels.first().is_some_and(|&ms| ms > 180_000),
        "a CANCEL after more than 3 minutes: {cancels:?}"
    );
}
