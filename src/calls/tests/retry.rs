//! A challenged INVITE and its retry on the same Call-ID: 401/407 (RFC 3261 §22.2) and 422
//! (RFC 4028 §6) are held back for `retry_wait`; the retry continues the same leg, one call;
//! without a retry the leg fails with that status, at the time it came.

use super::harness::*;
use crate::calls::{CallKind, FailedReason, LegState, Millis, Offer, Outcome, Side};

const NUMBER: &str = "74951112233";
/// `TrackerConfig::default().retry_wait`, in ms.
const RETRY_WAIT: u64 = 32_000;
const LINGER: u64 = 2_000;

/// The agent dials, the PBX answers `status`, the phone sends the INVITE again 40 ms later,
/// the callee rings and answers, 60 s of talk.
fn challenged_then_answered(status: u16) -> Harness {
    let mut h = Harness::new();
    h.offer(outgoing("L1", A, NUMBER));
    h.at(30).fail("L1", status);
    h.at(70).offer(outgoing("L1", A, NUMBER));
    h.at(1_000).ring("L1");
    h.at(5_000).answer("L1");
    h.at(65_000).bye("L1", Side::Agent);
    h.at(65_000 + LINGER);
    h
}

fn assert_one_answered_call(h: &mut Harness, status: u16) {
    let started = "started #1 outgoing 74951112233 resp=Some(11) calling_agent";
    assert_eq!(h.take(), [started, "show #1 [11]", "hide #1 [11]", "finished #1 200"], "{status}");
    let r = h.record();
    assert_eq!((r.kind, r.outcome, r.status_code.as_deref()), (CallKind::Outgoing, Some(Outcome::Answered), Some("200")), "{status}");
    assert_eq!((r.talk_seconds, r.legs.len()), (60, 1), "{status}: one leg, the talk counted");
    assert_eq!((r.legs[0].offered_at, r.legs[0].answered_at), (Millis(0), Some(Millis(5_000))), "{status}: the leg from the first INVITE");
    assert_eq!(h.t.ignored(), 0, "{status}: the retry was no repeated offer to ignore");
}

#[test]
fn an_outgoing_call_the_pbx_challenges_with_407_is_one_answered_call() {
    let mut h = challenged_then_answered(407);
    assert_one_answered_call(&mut h, 407);
}

#[test]
fn an_outgoing_call_the_pbx_challenges_with_401_is_one_answered_call() {
    let mut h = challenged_then_answered(401);
    assert_one_answered_call(&mut h, 401);
}

#[test]
fn an_outgoing_call_refused_422_session_interval_too_small_then_retried_is_one_answered_call() {
    let mut h = challenged_then_answered(422);
    assert_one_answered_call(&mut h, 422);
}

#[test]
fn a_challenge_without_a_retry_fails_the_leg_with_407_when_it_came() {
    let mut h = Harness::new();
    h.offer(outgoing("L1", A, NUMBER));
    h.at(30).fail("L1", 407);
    h.at(30 + RETRY_WAIT - 1);
    assert_eq!(h.take(), ["started #1 outgoing 74951112233 resp=Some(11) calling_agent"], "held back");
    let open = h.t.active().next().expect("still open");
    assert_eq!(open.legs[0].state, LegState::Offered, "waiting for the retry");
    h.at(30 + RETRY_WAIT + LINGER);
    assert_eq!(h.take(), ["finished #1 407"]);
    let r = h.record();
    assert_eq!((r.outcome, r.failed_reason), (Some(Outcome::NotAnswered), Some(FailedReason::Other)));
    assert_eq!(ends(&r), [("L1".into(), r#"{"reason":"other","status":407}"#.into())]);
    assert_eq!(r.ended_at, Some(Millis(30)), "ended when the 407 came, not when the wait ran out");
}

#[test]
fn a_second_challenge_for_the_retry_waits_again() {
    // A stale nonce: the retry is challenged too, and retried once more.
    let mut h = Harness::new();
    h.offer(outgoing("L1", A, NUMBER));
    h.at(30).fail("L1", 407);
    h.at(60).offer(outgoing("L1", A, NUMBER));
    h.at(30_000).fail("L1", 407);
    h.at(30_000 + RETRY_WAIT - 1).offer(outgoing("L1", A, NUMBER)).answer("L1");
    h.at(30_000 + RETRY_WAIT + 9_999).bye("L1", Side::Remote);
    h.at(80_000);
    assert_eq!(h.take().last().map(String::as_str), Some("finished #1 200"));
    assert_eq!(h.record().talk_seconds, 10);
}

#[test]
fn an_incoming_call_the_phone_challenges_continues_on_the_pbxs_retry() {
    let mut h = Harness::new();
    h.offer(incoming("L1", A));
    h.at(20).fail("L1", 401);
    h.at(50).offer(incoming("L1", A)).ring("L1");
    h.at(3_000).answer("L1");
    h.at(13_000).bye("L1", Side::Remote);
    h.at(13_000 + LINGER);
    assert_eq!(h.take(), ["started #1 incoming 79001234567 resp=Some(1) default_incoming", "show #1 [11]", "hide #1 [11]", "finished #1 200"]);
    let r = h.record();
    assert_eq!((r.talk_seconds, r.legs.len(), r.responsible), (10, 1, Some(11)));
}

#[test]
fn other_final_statuses_end_the_leg_at_once_and_a_later_invite_is_ignored() {
    let mut h = Harness::new();
    h.offer(outgoing("L1", A, NUMBER));
    h.at(30).fail("L1", 486);
    h.at(60).offer(outgoing("L1", A, NUMBER)).answer("L1");
    h.at(60 + LINGER);
    assert_eq!(h.take().last().map(String::as_str), Some("finished #1 486"));
    assert_eq!(h.t.ignored(), 1, "the second INVITE (its answer is absorbed by the ended leg)");
}

#[test]
fn an_invite_on_the_same_call_id_for_another_agent_or_direction_is_no_retry() {
    let mut h = Harness::new();
    h.offer(outgoing("L1", A, NUMBER));
    h.at(30).fail("L1", 407);
    h.at(40).offer(outgoing("L1", B, NUMBER));
    let pbx_side = Offer { remote: NUMBER.into(), ..incoming("L1", A) };
    h.at(50).offer(pbx_side);
    assert_eq!(h.t.ignored(), 2);
    h.at(30 + RETRY_WAIT + LINGER);
    assert_eq!(h.take().last().map(String::as_str), Some("finished #1 407"), "still held back, then failed");
}

#[test]
fn the_ring_timeout_still_ends_a_leg_that_keeps_being_challenged() {
    let mut h = Harness::new();
    h.offer(outgoing("L1", A, NUMBER));
    for n in 0..8 {
        let at = 1_000 + n * 25_000;
        h.at(at).fail("L1", 407);
        h.at(at + 100).offer(outgoing("L1", A, NUMBER));
    }
    h.at(180_000 + LINGER);
    assert_eq!(h.take().last().map(String::as_str), Some("finished #1 480"), "ring_timeout from the first INVITE");
    assert_eq!(ends(&h.record()), [("L1".into(), r#"{"reason":"timeout"}"#.into())]);
}
