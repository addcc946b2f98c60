//! Outgoing calls: the agent dials a customer number.

use super::harness::*;
use crate::calls::{CallKind, FailedReason, Offer, Outcome, ResponsibleReason, Side};

const NUMBER: &str = "74951112233";

#[test]
fn outgoing_answered_call_belongs_to_the_calling_agent() {
    let mut h = Harness::new();
    h.offer(outgoing("L1", A, NUMBER)).ring("L1");
    h.at(5_000).answer("L1");
    h.at(65_000).bye("L1", Side::Agent);
    h.at(67_000);
    assert_eq!(
        h.take(),
        [
            "started #1 outgoing 74951112233 resp=Some(11) calling_agent",
            "show #1 [11]",
            "hide #1 [11]",
            "finished #1 200",
        ]
    );
    let r = h.record();
    assert_eq!(
        (r.kind, &*r.customer, r.outcome),
        (CallKind::Outgoing, NUMBER, Some(Outcome::Answered))
    );
    assert_eq!((r.talk_seconds, r.responsible), (60, Some(11)));
    assert_eq!(r.responsible_reason, ResponsibleReason::CallingAgent);
}

#[test]
fn outgoing_to_a_busy_number_keeps_486() {
    let mut h = Harness::new();
    h.offer(outgoing("L1", A, NUMBER)).ring("L1");
    h.at(3_000).fail("L1", 486);
    h.at(5_000);
    let started = "started #1 outgoing 74951112233 resp=Some(11) calling_agent";
    assert_eq!(
        h.take(),
        [started, "show #1 [11]", "hide #1 [11]", "finished #1 486"]
    );
    let r = h.record();
    assert_eq!(
        (r.outcome, r.failed_reason),
        (Some(Outcome::NotAnswered), Some(FailedReason::Busy))
    );
    assert_eq!(
        (r.responsible, r.responsible_reason),
        (Some(11), ResponsibleReason::CallingAgent)
    );
}

#[test]
fn outgoing_cancelled_by_the_agent_is_603_s() {
    let mut h = Harness::new();
    h.offer(outgoing("L1", A, NUMBER)).ring("L1");
    h.at(20_000).cancel("L1", Side::Agent);
    h.at(20_050).fail("L1", 487);
    h.at(22_000);
    assert_eq!(h.take()[3], "finished #1 603-S");
    let r = h.record();
    assert_eq!(r.failed_reason, Some(FailedReason::AgentCancelled));
    assert_eq!(ends(&r)[0].1, r#"{"reason":"cancel","by":"agent"}"#);
}

#[test]
fn outgoing_final_statuses_map_to_their_codes() {
    let cases = [
        (603, "603", FailedReason::Rejected),
        (480, "480", FailedReason::Timeout),
        (408, "480", FailedReason::Timeout),
        (487, "603-S", FailedReason::AgentCancelled),
        (404, "404", FailedReason::Other),
    ];
    for (status, code, reason) in cases {
        let mut h = Harness::new();
        h.offer(outgoing("L1", A, NUMBER));
        h.at(1_000).fail("L1", status);
        h.at(3_000);
        let r = h.record();
        assert_eq!(
            (r.status_code.as_deref(), r.failed_reason),
            (Some(code), Some(reason)),
            "{status}"
        );
    }
}

#[test]
fn outgoing_from_an_unmapped_extension_uses_the_outgoing_default() {
    let mut h = Harness::new();
    h.offer(outgoing("L1", ("109", None), NUMBER)).answer("L1");
    h.at(10_000).bye("L1", Side::Remote);
    h.at(12_000);
    let started = "started #1 outgoing 74951112233 resp=Some(2) default_outgoing";
    assert_eq!(h.take(), [started, "finished #1 200"]);
    let r = h.record();
    assert_eq!(
        (r.responsible, r.responsible_reason),
        (Some(DEFAULT_OUT), ResponsibleReason::DefaultOutgoing)
    );
}

#[test]
fn blind_transfer_of_an_outgoing_call_stays_the_calling_agents() {
    let mut h = Harness::new();
    h.offer(outgoing("L1", A, NUMBER)).answer("L1");
    h.at(10_000)
        .refer("L1", "102", None)
        .accept("L1")
        .bye("L1", Side::Agent);
    let to_b = Offer {
        remote: NUMBER.into(),
        ..incoming("L2", B)
    };
    h.at(11_000).offer(to_b).answer("L2");
    h.at(41_000).bye("L2", Side::Remote);
    h.at(43_000);
    let r = h.record();
    assert_eq!(r.kind, CallKind::Outgoing);
    assert_eq!(talkers(&r), (Some("101"), Some("102")));
    assert_eq!((r.talk_seconds, r.responsible), (40, Some(11)));
}

#[test]
fn a_customer_calling_in_while_being_dialled_starts_a_call_of_its_own() {
    let mut h = Harness::new();
    h.offer(outgoing("L1", A, NUMBER)).ring("L1");
    let inbound = Offer {
        remote: NUMBER.into(),
        ..incoming("L2", B)
    };
    h.at(1_000).offer(inbound);
    assert_eq!(h.t.active().count(), 2);
    assert_eq!(
        h.take()[2],
        "started #2 incoming 74951112233 resp=Some(1) default_incoming"
    );
}
