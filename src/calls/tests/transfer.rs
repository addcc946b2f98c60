//! Transfers: blind (REFER), attended (consultation + REFER with Replaces, or the PBX's INVITE
//! with Replaces), PBX-side (a new leg for the same call), and chains of them.

use std::sync::Arc;

use super::harness::*;
use crate::calls::{
    CallId, CallRecord, Direction, HoldPeriod, Millis, Offer, ResponsibleReason, Role, Side,
};
use crate::settings::AssignTo;

const TRANSFERRED: &str = r#"{"reason":"transferred"}"#;
const REPLACED: &str = r#"{"reason":"replaced"}"#;
const BYE_REMOTE: &str = r#"{"reason":"bye","by":"remote"}"#;

#[test]
fn blind_transfer_moves_the_customer_from_a_to_b() {
    let mut h = Harness::new();
    h.offer(incoming("L1", A)).ring("L1");
    h.at(2_000).answer("L1");
    h.at(30_000).refer("L1", "102", None);
    h.at(30_100).accept("L1");
    h.at(31_000).bye("L1", Side::Agent);
    assert_eq!(
        h.t.poll_timeout(),
        Some(Millis(61_000)),
        "waits transfer_wait, not linger"
    );
    h.at(33_000)
        .offer(Offer {
            referred_by: Some("101".into()),
            ..incoming("L2", B)
        })
        .ring("L2");
    h.at(40_000).answer("L2");
    h.at(100_000).bye("L2", Side::Remote);
    h.at(102_000);
    assert_eq!(
        h.take(),
        [
            "started #1 incoming 79001234567 resp=Some(1) default_incoming",
            "show #1 [11]",
            "hide #1 [11]",
            "show #1 [12]",
            "hide #1 [12]",
            "finished #1 200",
        ]
    );
    let r = h.record();
    let expected = [
        ("101", Some(11), 2_000, Some(31_000), true),
        ("102", Some(12), 40_000, Some(100_000), true),
    ];
    assert_eq!(convs(&r), expected);
    assert_eq!(r.talk_seconds, 89);
    assert_eq!(talkers(&r), (Some("101"), Some("102")));
    assert_eq!(
        ends(&r),
        [
            ("L1".into(), TRANSFERRED.into()),
            ("L2".into(), BYE_REMOTE.into())
        ]
    );
    assert_eq!(
        (r.responsible, r.responsible_reason),
        (Some(11), ResponsibleReason::FirstTalker)
    );
}

/// A answers, consults B (internal legs L2 = A->PBX, L3 = PBX->B), then transfers with
/// `REFER Refer-To: 102?Replaces=L2` on the customer's leg.
#[test]
fn attended_transfer_merges_the_consultation_and_moves_the_customer_to_b() {
    let mut h = Harness::new();
    h.offer(incoming("L1", A)).ring("L1");
    h.at(1_000).answer("L1");
    h.at(19_000).hold("L1", true);
    h.at(20_000)
        .offer(internal("L2", Direction::FromAgent, A, "102"));
    h.offer(internal("L3", Direction::FromPbx, B, "101"))
        .ring("L3");
    assert_eq!(
        h.t.active().count(),
        2,
        "the consultation is a separate internal call for now"
    );
    h.at(25_000).answer("L3").answer("L2");
    h.at(40_000).refer("L1", "102", Some("L2")).accept("L1");
    assert_eq!(h.t.active().count(), 1, "merged into the customer call");
    assert_eq!(h.t.get(CallId(2)), None);
    h.at(40_500).bye("L1", Side::Remote);
    h.at(40_600).bye("L2", Side::Remote);
    h.at(100_000).bye("L3", Side::Remote);
    h.at(102_000);
    assert_eq!(
        h.take(),
        [
            "started #1 incoming 79001234567 resp=Some(1) default_incoming",
            "show #1 [11]",
            "show #1 [12]",
            "hide #1 [11]",
            "hide #1 [12]",
            "finished #1 200",
        ]
    );
    let r = h.record();
    let expected = [
        ("101", Some(11), 1_000, Some(40_500), true),
        ("102", Some(12), 40_500, Some(100_000), true),
    ];
    assert_eq!(
        convs(&r),
        expected,
        "the consultation talk (25 s - 40.5 s) is no conversation"
    );
    let want = [("L1", TRANSFERRED), ("L2", REPLACED), ("L3", BYE_REMOTE)];
    assert_eq!(ends(&r), want.map(|(l, e)| (l.to_string(), e.to_string())));
    assert_eq!(r.legs[1].role, Role::Consultation);
    assert_eq!(
        r.legs[2].role,
        Role::Customer,
        "B's leg carries the customer after the transfer"
    );
    assert_eq!(
        r.legs[0].holds,
        [HoldPeriod {
            from: Millis(19_000),
            to: Some(Millis(40_500))
        }]
    );
    assert_eq!(
        (talkers(&r), r.talk_seconds),
        ((Some("101"), Some("102")), 99)
    );
    assert_eq!(
        h.t.finished().count(),
        1,
        "the consultation never finishes on its own"
    );
}

/// The PBX completes the transfer itself: a new INVITE to B replacing the consultation leg L3,
/// carrying the customer call's correlation header.
#[test]
fn attended_transfer_by_invite_with_replaces_hands_the_customer_to_the_new_leg() {
    let mut h = Harness::new();
    h.offer(corr("X1", incoming("L1", A))).ring("L1");
    h.at(1_000).answer("L1");
    h.at(20_000)
        .offer(internal("L2", Direction::FromAgent, A, "102"));
    h.offer(internal("L3", Direction::FromPbx, B, "101"));
    h.at(22_000).answer("L3").answer("L2");
    let l4 = Offer {
        replaces: Some(leg("L3")),
        ..corr("X1", incoming("L4", B))
    };
    h.at(30_000).offer(l4);
    h.at(30_100).answer("L4");
    h.at(30_200).bye("L3", Side::Agent);
    h.at(30_300).bye("L1", Side::Remote);
    h.at(30_400).bye("L2", Side::Remote);
    h.at(90_000).bye("L4", Side::Remote);
    h.at(92_000);
    assert_eq!(
        h.take(),
        [
            "started #1 incoming 79001234567 resp=Some(1) default_incoming",
            "show #1 [11]",
            "show #1 [12]",
            "hide #1 [11]",
            "hide #1 [12]",
            "finished #1 200",
        ]
    );
    let r = h.record();
    let expected = [
        ("101", Some(11), 1_000, Some(30_100), true),
        ("102", Some(12), 30_100, Some(90_000), true),
    ];
    assert_eq!(convs(&r), expected);
    assert_eq!(r.legs.len(), 4, "L1, L4 and the merged L2, L3");
    let reason_of = |id: &str| {
        let l = r.legs.iter().find(|l| &*l.leg.0 == id).expect("leg");
        serde_json::to_string(&l.end_reason).unwrap_or_default()
    };
    assert_eq!(reason_of("L1"), TRANSFERRED, "lost the customer while up");
    assert_eq!(reason_of("L3"), REPLACED);
    assert_eq!(reason_of("L2"), BYE_REMOTE);
    assert_eq!(reason_of("L4"), BYE_REMOTE);
}

#[test]
fn pbx_side_transfer_moves_the_conversation_when_the_new_leg_answers() {
    let mut h = Harness::new();
    h.offer(corr("X1", incoming("L1", A))).ring("L1");
    h.at(1_000).answer("L1");
    h.at(30_000).offer(corr("X1", incoming("L2", B))).ring("L2");
    h.at(35_000).answer("L2");
    h.at(35_500).bye("L1", Side::Remote);
    h.at(60_000).bye("L2", Side::Agent);
    h.at(62_000);
    assert_eq!(
        h.take(),
        [
            "started #1 incoming 79001234567 resp=Some(1) default_incoming",
            "show #1 [11]",
            "show #1 [12]",
            "hide #1 [11]",
            "hide #1 [12]",
            "finished #1 200",
        ]
    );
    let r = h.record();
    let expected = [
        ("101", Some(11), 1_000, Some(35_000), true),
        ("102", Some(12), 35_000, Some(60_000), true),
    ];
    assert_eq!(convs(&r), expected);
    assert_eq!(ends(&r)[0].1, TRANSFERRED);
}

/// A -> B by REFER with Referred-By; B -> C by REFER, C's leg found by the transfer target
/// (the PBX presents B's extension as the caller, no Referred-By).
fn chain(assign: AssignTo) -> (Arc<CallRecord>, Vec<String>) {
    let mut h = Harness::new();
    let mut first = incoming("L1", A);
    first.policy.assign = assign;
    h.offer(first).ring("L1");
    h.at(1_000).answer("L1");
    h.at(10_000).refer("L1", "102", None).accept("L1");
    h.at(10_500).bye("L1", Side::Agent);
    h.at(12_000).offer(Offer {
        referred_by: Some("101".into()),
        ..incoming("L2", B)
    });
    h.at(15_000).answer("L2");
    h.at(40_000).refer("L2", "103", None).accept("L2");
    h.at(40_200)
        .offer(internal("L3", Direction::FromPbx, C, "102"));
    h.at(40_300).bye("L2", Side::Agent);
    h.at(45_000).ring("L3").answer("L3");
    h.at(75_000).bye("L3", Side::Remote);
    h.at(77_000);
    let fx = h.take();
    (h.record(), fx)
}

#[test]
fn chain_of_blind_transfers_has_first_a_and_last_c() {
    let (first, fx) = chain(AssignTo::First);
    let expected = [
        ("101", Some(11), 1_000, Some(10_500), true),
        ("102", Some(12), 15_000, Some(40_300), true),
        ("103", Some(13), 45_000, Some(75_000), true),
    ];
    assert_eq!(convs(&first), expected);
    assert_eq!(talkers(&first), (Some("101"), Some("103")));
    assert_eq!(first.talk_seconds, 9 + 26 + 30);
    assert_eq!(
        (first.responsible, first.responsible_reason),
        (Some(11), ResponsibleReason::FirstTalker)
    );
    assert_eq!(
        fx,
        [
            "started #1 incoming 79001234567 resp=Some(1) default_incoming",
            "show #1 [11]",
            "hide #1 [11]",
            "show #1 [12]",
            "hide #1 [12]",
            "show #1 [13]",
            "hide #1 [13]",
            "finished #1 200",
        ]
    );
    let (last, _) = chain(AssignTo::Last);
    assert_eq!(
        (last.responsible, last.responsible_reason),
        (Some(13), ResponsibleReason::LastTalker)
    );
    assert_eq!(ends(&last)[1].1, TRANSFERRED);
}

#[test]
fn blind_transfer_nobody_picks_up_finishes_after_transfer_wait() {
    let mut h = Harness::new();
    h.offer(incoming("L1", A)).answer("L1");
    h.at(5_000).refer("L1", "102", None).accept("L1");
    h.at(6_000).bye("L1", Side::Remote);
    h.at(35_999);
    assert_eq!(h.t.finished().count(), 0);
    h.at(36_000);
    let r = h.record();
    assert_eq!(
        (r.ended_at, r.status_code.as_deref()),
        (Some(Millis(6_000)), Some("200"))
    );
    assert_eq!(ends(&r)[0].1, TRANSFERRED);
}

/// The PBX runs the attended transfer (feature code): it calls B with A's extension as the
/// caller and the customer call's correlation; when A hangs up, the customer is B's.
#[test]
fn pbx_attended_transfer_completes_when_the_agent_hangs_up() {
    let mut h = Harness::new();
    h.offer(corr("X1", incoming("L1", A))).ring("L1");
    h.at(1_000).answer("L1");
    let consult = corr("X1", internal("L2", Direction::FromPbx, B, "101"));
    h.at(20_000).offer(consult).ring("L2");
    h.at(25_000).answer("L2");
    h.at(40_000).bye("L1", Side::Agent);
    h.at(90_000).bye("L2", Side::Remote);
    h.at(92_000);
    assert_eq!(
        h.take(),
        [
            "started #1 incoming 79001234567 resp=Some(1) default_incoming",
            "show #1 [11]",
            "show #1 [12]",
            "hide #1 [11]",
            "hide #1 [12]",
            "finished #1 200",
        ]
    );
    let r = h.record();
    let expected = [
        ("101", Some(11), 1_000, Some(40_000), true),
        ("102", Some(12), 40_000, Some(90_000), true),
    ];
    assert_eq!(
        convs(&r),
        expected,
        "B's consultation (25 s - 40 s) does not count"
    );
    assert_eq!(ends(&r)[0].1, TRANSFERRED);
}

#[test]
fn customer_hanging_up_during_a_consultation_ends_the_conversation() {
    let mut h = Harness::new();
    h.offer(corr("X1", incoming("L1", A))).answer("L1");
    h.at(20_000)
        .offer(corr("X1", internal("L2", Direction::FromPbx, B, "101")));
    h.at(25_000).answer("L2");
    h.at(40_000).bye("L1", Side::Remote);
    h.at(50_000).bye("L2", Side::Agent);
    h.at(52_000);
    let r = h.record();
    assert_eq!(convs(&r), [("101", Some(11), 0, Some(40_000), true)]);
    assert_eq!(ends(&r)[0].1, BYE_REMOTE);
}
