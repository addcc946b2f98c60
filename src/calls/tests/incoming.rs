//! Incoming customer calls: answered, missed in its variants, ring-all, hold, min talk,
//! unmapped talkers and routing decisions.

use std::time::Duration;

use super::harness::*;
use crate::calls::{
    CallId, CallKind, Event, FailedReason, HoldPeriod, LegState, Millis, Offer, Outcome,
    ResponsibleReason, Side,
};
use crate::settings::AssignTo;

#[test]
fn answered_call_is_registered_shown_hidden_and_finished_with_the_talker() {
    let mut h = Harness::new();
    h.offer(incoming("L1", A)).ring("L1");
    h.at(3_000).answer("L1");
    h.at(63_500).bye("L1", Side::Remote);
    assert_eq!(
        h.take(),
        [
            "started #1 incoming 79001234567 resp=Some(1) default_incoming",
            "show #1 [11]",
            "hide #1 [11]",
        ]
    );
    assert_eq!(h.t.poll_timeout(), Some(Millis(65_500)), "linger");
    h.at(65_500);
    assert_eq!(h.take(), ["finished #1 200"]);

    let r = h.record();
    assert_eq!((r.kind, &*r.customer), (CallKind::Incoming, CUSTOMER));
    assert_eq!(
        (r.outcome, r.failed_reason),
        (Some(Outcome::Answered), None)
    );
    assert_eq!(convs(&r), [("101", Some(11), 3_000, Some(63_500), true)]);
    assert_eq!(r.talk_seconds, 61, "60.5 s rounds up");
    assert_eq!(talkers(&r), (Some("101"), Some("101")));
    assert_eq!(
        (r.responsible, r.responsible_reason),
        (Some(11), ResponsibleReason::FirstTalker)
    );
    assert_eq!(
        (r.started_at, r.answered_at, r.ended_at),
        (Millis(0), Some(Millis(3_000)), Some(Millis(63_500)))
    );
    let l = &r.legs[0];
    assert_eq!(
        (l.state, l.ringing_at, l.answered_at),
        (LegState::Ended, Some(Millis(0)), Some(Millis(3_000)))
    );
    assert_eq!(
        ends(&r),
        [("L1".into(), r#"{"reason":"bye","by":"remote"}"#.into())]
    );
    assert_eq!(h.t.active().count(), 0);
    assert_eq!(h.t.get(CallId(1)).as_deref(), Some(&*r));
}

#[test]
fn caller_hanging_up_while_ringing_is_a_missed_call() {
    let mut h = Harness::new();
    h.offer(incoming("L1", A)).ring("L1");
    h.at(10_000).cancel("L1", Side::Remote);
    h.at(10_010).fail("L1", 487);
    h.at(20_000);
    assert_eq!(
        h.take(),
        [
            "started #1 incoming 79001234567 resp=Some(1) default_incoming",
            "show #1 [11]",
            "hide #1 [11]",
            "finished #1 304",
        ]
    );
    let r = h.record();
    assert_eq!(
        r.ended_at,
        Some(Millis(10_000)),
        "the CANCEL ends the leg; the 487 is absorbed"
    );
    assert_eq!(
        (r.outcome, r.failed_reason),
        (Some(Outcome::Missed), Some(FailedReason::CallerHungUp))
    );
    assert_eq!(
        (r.responsible, r.responsible_reason),
        (Some(DEFAULT_IN), ResponsibleReason::Missed)
    );
    assert_eq!(
        (r.talk_seconds, r.first_talker.clone(), r.answered_at),
        (0, None, None)
    );
    assert_eq!(
        ends(&r),
        [("L1".into(), r#"{"reason":"cancel","by":"remote"}"#.into())]
    );
    assert_eq!(
        h.t.ignored(),
        0,
        "a 487 after CANCEL is normal, not an unknown leg"
    );
}

#[test]
fn busy_agent_gives_a_missed_call_with_reason_busy() {
    let mut h = Harness::new();
    h.offer(incoming("L1", A));
    h.at(1_000).fail("L1", 486);
    h.at(3_000);
    let started = "started #1 incoming 79001234567 resp=Some(1) default_incoming";
    assert_eq!(
        h.take(),
        [started, "finished #1 304"],
        "never rang: no show, no hide"
    );
    let r = h.record();
    assert_eq!(
        (r.outcome, r.failed_reason),
        (Some(Outcome::Missed), Some(FailedReason::Busy))
    );
    assert_eq!(ends(&r), [("L1".into(), r#"{"reason":"busy"}"#.into())]);
}

#[test]
fn rejected_call_gives_a_missed_call_with_reason_rejected() {
    let mut h = Harness::new();
    h.offer(incoming("L1", A)).ring("L1");
    h.at(4_000).fail("L1", 603);
    h.at(6_000);
    let started = "started #1 incoming 79001234567 resp=Some(1) default_incoming";
    assert_eq!(
        h.take(),
        [started, "show #1 [11]", "hide #1 [11]", "finished #1 304"]
    );
    let r = h.record();
    assert_eq!(
        (r.outcome, r.failed_reason),
        (Some(Outcome::Missed), Some(FailedReason::Rejected))
    );
    assert_eq!(ends(&r), [("L1".into(), r#"{"reason":"rejected"}"#.into())]);
}

#[test]
fn ring_all_shows_every_ringing_agent_and_hides_those_who_did_not_answer() {
    let mut h = Harness::new();
    for (id, agent) in [("L1", A), ("L2", B), ("L3", C)] {
        h.offer(corr("Q1", incoming(id, agent))).ring(id);
    }
    h.at(5_000).answer("L2");
    h.at(5_010)
        .cancel("L1", Side::Remote)
        .cancel("L3", Side::Remote);
    h.at(5_020).fail("L1", 487).fail("L3", 487);
    h.at(6_000).answer("L1");
    h.at(60_000).bye("L2", Side::Agent);
    h.at(62_000);
    assert_eq!(
        h.take(),
        [
            "started #1 incoming 79001234567 resp=Some(1) default_incoming",
            "show #1 [11]",
            "show #1 [12]",
            "show #1 [13]",
            "hide #1 [11]",
            "hide #1 [13]",
            "hide #1 [12]",
            "finished #1 200",
        ]
    );
    let r = h.record();
    assert_eq!(r.legs.len(), 3, "one call for the three legs");
    assert_eq!(r.correlation.as_deref(), Some("Q1"));
    assert_eq!(convs(&r), [("102", Some(12), 5_000, Some(60_000), true)]);
    assert_eq!(
        (r.responsible, r.responsible_reason),
        (Some(12), ResponsibleReason::FirstTalker)
    );
    assert_eq!(ends(&r)[2].1, r#"{"reason":"cancel","by":"remote"}"#);
}

#[test]
fn hold_keeps_the_conversation_and_records_hold_periods() {
    let mut h = Harness::new();
    h.offer(incoming("L1", A)).ring("L1");
    h.at(1_000).answer("L1");
    h.at(10_000).hold("L1", true);
    h.at(15_000).hold("L1", true);
    h.at(20_000).hold("L1", false);
    h.at(30_000).hold("L1", true);
    h.at(40_000).bye("L1", Side::Agent);
    h.at(42_000);
    let r = h.record();
    let holds = [
        HoldPeriod {
            from: Millis(10_000),
            to: Some(Millis(20_000)),
        },
        HoldPeriod {
            from: Millis(30_000),
            to: Some(Millis(40_000)),
        },
    ];
    assert_eq!(
        r.legs[0].holds, holds,
        "a repeated hold changes nothing; the end closes a hold"
    );
    assert_eq!(convs(&r), [("101", Some(11), 1_000, Some(40_000), true)]);
    assert_eq!(r.talk_seconds, 39);
}

fn min_talk_5s(offer: Offer) -> Offer {
    let mut offer = offer;
    offer.policy.min_talk = Duration::from_secs(5);
    offer
}

#[test]
fn talk_shorter_than_min_talk_is_a_missed_call() {
    let mut h = Harness::new();
    h.offer(min_talk_5s(incoming("L1", A))).ring("L1");
    h.at(2_000).answer("L1");
    h.at(5_000).bye("L1", Side::Remote);
    h.at(7_000);
    assert_eq!(h.take()[3], "finished #1 304");
    let r = h.record();
    assert_eq!(convs(&r), [("101", Some(11), 2_000, Some(5_000), false)]);
    assert_eq!(
        (r.outcome, r.failed_reason),
        (Some(Outcome::Missed), Some(FailedReason::ShortTalk))
    );
    assert_eq!((r.talk_seconds, r.first_talker.clone()), (0, None));
    assert_eq!(
        (r.responsible, r.responsible_reason),
        (Some(DEFAULT_IN), ResponsibleReason::Missed)
    );
}

#[test]
fn first_talker_skips_a_conversation_shorter_than_min_talk() {
    let mut h = Harness::new();
    h.offer(min_talk_5s(corr("X1", incoming("L1", A))))
        .ring("L1");
    h.at(1_000).answer("L1");
    h.at(4_000)
        .offer(min_talk_5s(corr("X1", incoming("L2", B))))
        .answer("L2");
    h.at(4_100).bye("L1", Side::Remote);
    h.at(30_000).bye("L2", Side::Remote);
    h.at(32_000);
    let r = h.record();
    let expected = [
        ("101", Some(11), 1_000, Some(4_000), false),
        ("102", Some(12), 4_000, Some(30_000), true),
    ];
    assert_eq!(convs(&r), expected);
    assert_eq!(talkers(&r), (Some("102"), Some("102")));
    assert_eq!((r.talk_seconds, r.responsible), (26, Some(12)));
}

#[test]
fn unmapped_talker_makes_the_default_responsible() {
    let mut h = Harness::new();
    h.offer(incoming("L1", ("109", None))).ring("L1");
    h.at(1_000).answer("L1");
    h.at(11_000).bye("L1", Side::Agent);
    h.at(13_000);
    let started = "started #1 incoming 79001234567 resp=Some(1) default_incoming";
    assert_eq!(
        h.take(),
        [started, "finished #1 200"],
        "an unmapped user is never shown"
    );
    let r = h.record();
    assert_eq!(talkers(&r), (Some("109"), Some("109")));
    assert_eq!(r.first_talker.as_ref().map(|t| t.user), Some(None));
    assert_eq!(
        (r.responsible, r.responsible_reason),
        (Some(DEFAULT_IN), ResponsibleReason::UnmappedTalker)
    );
}

fn routed(correlation: Option<&str>, manager: Option<u64>) -> Event {
    Event::Routed {
        portal: PORTAL,
        correlation: correlation.map(Into::into),
        caller: CUSTOMER.into(),
        line: Some("74950000000".into()),
        manager,
        extension: Some("101".into()),
    }
}

#[test]
fn routed_decision_registers_the_manager_and_a_miss_goes_to_the_incoming_default() {
    let mut h = Harness::new();
    h.ev(routed(Some("R1"), Some(50)));
    assert_eq!(h.t.waiting_decisions(), 1);
    h.at(500).offer(corr("R1", incoming("L1", A))).ring("L1");
    assert_eq!(h.t.waiting_decisions(), 0, "picked up");
    h.at(20_000).cancel("L1", Side::Remote);
    h.at(22_000);
    let started = "started #1 incoming 79001234567 resp=Some(50) personal_manager";
    assert_eq!(
        h.take(),
        [started, "show #1 [11]", "hide #1 [11]", "finished #1 304"]
    );
    let r = h.record();
    assert_eq!(
        (r.manager, r.routed_extension.as_deref()),
        (Some(50), Some("101"))
    );
    assert_eq!(
        r.line.as_deref(),
        Some("74950000000"),
        "the line comes from the decision"
    );
    assert_eq!(
        (r.responsible, r.responsible_reason),
        (Some(DEFAULT_IN), ResponsibleReason::Missed),
        "the guide: a missed incoming call is the incoming default responsible's, routed or not"
    );
    assert_eq!(
        (&*r.legs[0].extension, r.legs[0].user),
        ("101", Some(11)),
        "the leg that rang stays on the record"
    );
}

#[test]
fn routed_call_missed_by_a_busy_manager_while_open_shows_the_manager_then_the_default() {
    let mut h = Harness::new();
    h.ev(routed(Some("R2"), Some(11)));
    h.at(100).offer(corr("R2", incoming("L1", A)));
    let open = h.t.get(CallId(1)).expect("open call");
    assert_eq!(
        (open.responsible, open.responsible_reason, open.manager),
        (Some(11), ResponsibleReason::PersonalManager, Some(11)),
        "while it rings, the view shows who it was registered to"
    );
    h.at(2_000).fail("L1", 486);
    h.at(5_000);
    let r = h.record();
    assert_eq!((r.outcome, r.failed_reason), (Some(Outcome::Missed), Some(FailedReason::Busy)));
    assert_eq!(
        (r.responsible, r.responsible_reason, r.manager),
        (Some(DEFAULT_IN), ResponsibleReason::Missed, Some(11))
    );
    assert_eq!(r.routed_extension.as_deref(), Some("101"));
}

#[test]
fn routed_decision_is_matched_by_caller_and_the_talker_wins_when_answered() {
    let mut h = Harness::new();
    let mut offer = incoming("L1", B);
    offer.policy.assign = AssignTo::Last;
    h.ev(routed(None, Some(50)));
    h.at(300).offer(offer).answer("L1");
    h.at(10_300).bye("L1", Side::Remote);
    h.at(12_300);
    assert_eq!(
        h.take()[0],
        "started #1 incoming 79001234567 resp=Some(50) personal_manager"
    );
    let r = h.record();
    assert_eq!(
        (r.responsible, r.responsible_reason),
        (Some(12), ResponsibleReason::LastTalker)
    );
}

#[test]
fn record_serializes_as_snake_case_json() {
    let mut h = Harness::new();
    h.offer(incoming("L1", A)).ring("L1");
    h.at(1_000).answer("L1");
    h.at(2_000).bye("L1", Side::Agent);
    h.at(4_000);
    let json = serde_json::to_value(&*h.record()).expect("serializes");
    assert_eq!(json["id"], 1);
    assert_eq!(json["kind"], "incoming");
    assert_eq!(json["started_at"], 0);
    assert_eq!(json["outcome"], "answered");
    assert_eq!(json["status_code"], "200");
    assert_eq!(json["responsible_reason"], "first_talker");
    assert_eq!(json["legs"][0]["leg"], "L1");
    assert_eq!(json["legs"][0]["direction"], "from_pbx");
    assert_eq!(json["legs"][0]["role"], "customer");
    assert_eq!(
        json["legs"][0]["end_reason"],
        serde_json::json!({"reason": "bye", "by": "agent"})
    );
    assert_eq!(json["conversations"][0]["counted"], true);
    assert_eq!(
        json["first_talker"],
        serde_json::json!({"extension": "101", "user": 11})
    );
}

#[test]
fn two_withheld_callers_at_once_are_two_calls_while_a_known_number_correlates() {
    let mut h = Harness::new();
    let mut first = incoming("L1", A);
    first.remote = "anonymous".into();
    let mut second = incoming("L2", B);
    second.remote = "anonymous".into();
    h.offer(first).ring("L1");
    h.at(500).offer(second).ring("L2");
    let started: Vec<String> = h.take().into_iter().filter(|e| e.starts_with("started")).collect();
    assert_eq!(
        started,
        [
            "started #1 incoming anonymous resp=Some(1) default_incoming",
            "started #2 incoming anonymous resp=Some(1) default_incoming"
        ],
        "a hidden number identifies nobody"
    );
    h.at(600).offer(incoming("L3", C));
    h.at(700).offer(incoming("L4", A));
    let started: Vec<String> = h.take().into_iter().filter(|e| e.starts_with("started")).collect();
    assert_eq!(started, ["started #3 incoming 79001234567 resp=Some(1) default_incoming"], "the same known caller is one call");
}
