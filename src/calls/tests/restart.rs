//! Calls across a restart: a checkpoint taken from one tracker, written as JSON (as the store
//! keeps it) and restored into a fresh tracker, on a simulated clock. Restored calls emit no
//! second `started`; a BYE after the restart ends them with the full talk time, silence ends
//! them at their last evidence after `restore_wait`, as answered when they were.

use std::time::Duration;

use super::harness::*;
use crate::calls::{
    CallId, Event, Millis, Offer, Outcome, Policy, ResponsibleReason, SavedCall, Side, Tracker,
    TrackerConfig,
};
use crate::settings::AssignTo;

const LOST: &str = r#"{"reason":"lost"}"#;
const WAIT: u64 = 20 * 60 * 1000;

/// The crash: everything checkpointed so far goes through JSON into a new tracker started at
/// `at`, whose calls were last known up at `evidence`. Returns the new ids.
fn restart(old: &mut Harness, evidence: u64, at: u64) -> (Harness, Vec<CallId>) {
    let cp = old.t.take_checkpoint();
    let mut new = Harness::new();
    new.at(at);
    let ids = cp.saved.into_iter().map(|(_, saved)| {
        let saved = SavedCall::from_json(&saved.to_json()).expect("round trip");
        new.t.restore(new.now, saved, Millis(evidence)).expect("restored")
    });
    let ids = ids.collect();
    (new, ids)
}

#[test]
fn a_call_restored_mid_conversation_ends_by_its_bye_with_the_full_talk_time() {
    let mut h = Harness::new();
    h.offer(incoming("L1", A)).ring("L1");
    h.at(3_000).answer("L1");
    h.at(10_000);
    let (mut h, ids) = restart(&mut h, 10_000, 12_000);
    assert_eq!(ids, [CallId(1)]);
    assert_eq!(h.take(), Vec::<String>::new(), "no second register, no show");
    h.at(63_500).bye("L1", Side::Remote);
    h.at(70_000);
    assert_eq!(h.take(), ["hide #1 [11]", "finished #1 200"]);
    let r = h.record();
    assert_eq!(convs(&r), [("101", Some(11), 3_000, Some(63_500), true)]);
    assert_eq!(r.talk_seconds, 61, "60.5 s: the talk before and after the restart");
    assert_eq!(talkers(&r), (Some("101"), Some("101")));
    assert_eq!((r.responsible, r.responsible_reason), (Some(11), ResponsibleReason::FirstTalker));
    assert_eq!(ends(&r), [("L1".into(), r#"{"reason":"bye","by":"remote"}"#.into())]);
}

#[test]
fn a_restored_call_that_hears_nothing_ends_at_its_last_evidence_as_answered() {
    let mut h = Harness::new();
    h.offer(incoming("L1", A)).ring("L1");
    h.at(3_000).answer("L1");
    // Ring-all: a second agent still ringing at the crash.
    h.at(4_000).offer(corr("x", incoming("L2", B))).ring("L2");
    let (mut h, _) = restart(&mut h, 40_000, 45_000);
    h.at(184_000);
    assert_eq!(h.take(), ["hide #1 [12]"], "the ringing leg still times out (ring_timeout)");
    assert_eq!(h.t.poll_timeout(), Some(Millis(40_000 + WAIT)), "restore_wait after the evidence");
    h.at(40_000 + WAIT - 1);
    assert_eq!(h.take(), Vec::<String>::new(), "still waiting for a BYE");
    h.at(40_000 + WAIT);
    assert_eq!(h.take(), ["hide #1 [11]", "finished #1 200"]);
    let r = h.record();
    assert_eq!(r.outcome, Some(Outcome::Answered), "never as missed");
    assert_eq!(convs(&r), [("101", Some(11), 3_000, Some(40_000), true)]);
    assert_eq!(r.talk_seconds, 37, "up to the last evidence");
    assert_eq!(r.ended_at, Some(Millis(184_000)), "the ring timeout of L2 is the latest leg end");
    assert_eq!((r.responsible, r.responsible_reason), (Some(11), ResponsibleReason::FirstTalker));
    assert_eq!(ends(&r), [("L1".into(), LOST.into()), ("L2".into(), r#"{"reason":"timeout"}"#.into())]);
}

#[test]
fn an_in_dialog_request_after_the_restore_is_new_evidence() {
    let mut h = Harness::new();
    h.offer(incoming("L1", A));
    h.at(3_000).answer("L1");
    let (mut h, _) = restart(&mut h, 5_000, 6_000);
    // A session refresh (re-INVITE, no hold change) passes at 100 s: absorbed, but heard.
    h.at(100_000).hold("L1", false);
    assert_eq!(h.t.poll_timeout(), Some(Millis(100_000 + WAIT)));
    h.at(100_000 + WAIT);
    let r = h.record();
    assert_eq!((r.status_code.as_deref(), r.talk_seconds), (Some("200"), 97));
}

#[test]
fn a_blind_transfer_pending_at_the_crash_completes_after_the_restart() {
    let mut h = Harness::new();
    let last = |o: Offer| Offer { policy: Policy { assign: AssignTo::Last, ..policy() }, ..o };
    h.offer(last(incoming("L1", A))).ring("L1");
    h.at(2_000).answer("L1");
    h.at(30_000).refer("L1", "102", None);
    h.at(30_100).accept("L1");
    h.at(31_000).bye("L1", Side::Agent);
    let (mut h, _) = restart(&mut h, 31_500, 32_000);
    assert_eq!(h.t.poll_timeout(), Some(Millis(61_000)), "still waits transfer_wait");
    h.at(33_000).offer(Offer { referred_by: Some("101".into()), ..last(incoming("L2", B)) }).ring("L2");
    h.at(40_000).answer("L2");
    assert_eq!(h.t.poll_timeout(), Some(Millis(40_000 + WAIT)), "the new leg's events are evidence too");
    h.at(100_000).bye("L2", Side::Remote);
    h.at(102_000);
    assert_eq!(h.take(), ["show #1 [12]", "hide #1 [12]", "finished #1 200"]);
    let r = h.record();
    let expected = [("101", Some(11), 2_000, Some(31_000), true), ("102", Some(12), 40_000, Some(100_000), true)];
    assert_eq!(convs(&r), expected);
    assert_eq!(talkers(&r), (Some("101"), Some("102")));
    assert_eq!((r.responsible, r.talk_seconds), (Some(12), 89), "the last talker, both talks");
}

#[test]
fn a_routed_call_keeps_its_decision_and_the_users_shown_across_the_restart() {
    let mut h = Harness::new();
    h.ev(Event::Routed { portal: PORTAL, correlation: None, caller: CUSTOMER.into(), line: Some("74950000000".into()), manager: Some(12), extension: Some("102".into()) });
    h.offer(incoming("L1", B)).ring("L1");
    let (mut h, _) = restart(&mut h, 5_000, 6_000);
    h.at(7_000).fail("L1", 486);
    h.at(9_000);
    assert_eq!(h.take(), ["hide #1 [12]", "finished #1 304"], "the card shown before the crash is hidden");
    let r = h.record();
    assert_eq!((r.manager, r.line.as_deref(), r.routed_extension.as_deref()), (Some(12), Some("74950000000"), Some("102")));
}

#[test]
fn the_checkpoint_carries_only_changed_calls_and_names_those_gone() {
    let mut t = Tracker::new(TrackerConfig { linger: Duration::from_millis(100), ..TrackerConfig::default() });
    t.handle(Millis(0), Event::Offered(incoming("L1", A)));
    t.handle(Millis(0), Event::Offered(outgoing("L2", B, "79007654321")));
    let cp = t.take_checkpoint();
    assert_eq!(cp.saved.iter().map(|(id, _)| id.0).collect::<Vec<_>>(), [1, 2]);
    assert_eq!((cp.gone.len(), cp.open), (0, 2));
    assert!(t.take_checkpoint().saved.is_empty(), "nothing changed since");
    t.handle(Millis(1_000), Event::Answered { leg: leg("L1") });
    t.handle(Millis(1_000), Event::Failed { leg: leg("L2"), status: 486 });
    let cp = t.take_checkpoint();
    assert_eq!(cp.saved.iter().map(|(id, _)| id.0).collect::<Vec<_>>(), [1, 2]);
    t.handle_timeout(Millis(1_100));
    let cp = t.take_checkpoint();
    assert_eq!((cp.saved.len(), cp.gone, cp.open), (0, vec![CallId(2)], 1), "the finished call is gone");
}

#[test]
fn unusable_saved_state_is_refused_and_leaves_no_state() {
    let mut h = Harness::new();
    h.offer(incoming("L1", A));
    let cp = h.t.take_checkpoint();
    let json = cp.saved[0].1.to_json();
    assert!(SavedCall::from_json("{\"portal\":7}").is_err());
    let broken = json.replace("\"current\":null", "\"current\":5");
    let broken = SavedCall::from_json(&broken).expect("well-formed");
    let mut t = Tracker::new(TrackerConfig::default());
    assert_eq!(t.restore(Millis(0), broken, Millis(0)), None, "a leg index out of range");
    assert_eq!(t.active().count(), 0);
    let good = SavedCall::from_json(&json).expect("round trip");
    assert_eq!(t.restore(Millis(0), good.clone(), Millis(0)), Some(CallId(1)));
    assert_eq!(t.restore(Millis(0), good, Millis(0)), None, "its leg is already tracked");
    assert_eq!(t.active().count(), 1);
}

#[test]
fn a_challenge_held_back_at_the_restart_still_waits_for_its_retry() {
    let mut h = Harness::new();
    h.offer(outgoing("L1", A, "74951112233"));
    h.at(30).fail("L1", 407);
    let (mut h, _) = restart(&mut h, 40, 1_000);
    assert_eq!(h.t.poll_timeout(), Some(Millis(30 + 32_000)), "the retry wait goes on from the 407");
    h.at(1_100).offer(outgoing("L1", A, "74951112233")).answer("L1");
    h.at(11_100).bye("L1", Side::Agent);
    h.at(14_000);
    assert_eq!(h.take(), ["show #1 [11]", "hide #1 [11]", "finished #1 200"], "shown on the answer");
    assert_eq!(h.record().talk_seconds, 10);
}

#[test]
fn a_challenge_restored_without_a_retry_fails_with_its_status() {
    let mut h = Harness::new();
    h.offer(outgoing("L1", A, "74951112233"));
    h.at(30).fail("L1", 422);
    let (mut h, _) = restart(&mut h, 40, 1_000);
    h.at(40_000);
    assert_eq!(h.take(), ["finished #1 422"]);
    assert_eq!(h.record().ended_at, Some(Millis(30)));
}
