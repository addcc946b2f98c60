//! Internal calls: extension to extension through the PBX.

use super::harness::*;
use crate::calls::{CallKind, Direction, Outcome, ResponsibleReason, Side};

#[test]
fn internal_call_is_recorded_as_one_call_without_any_effect() {
    let mut h = Harness::new();
    h.offer(internal("L1", Direction::FromAgent, A, "102"));
    h.offer(internal("L2", Direction::FromPbx, B, "101"))
        .ring("L2")
        .ring("L1");
    h.at(3_000).answer("L2").answer("L1");
    h.at(10_000).hold("L1", true);
    h.at(20_000).bye("L1", Side::Agent).bye("L2", Side::Remote);
    h.at(60_000);
    assert_eq!(h.take(), Vec::<String>::new(), "no Bitrix24 effects at all");
    let r = h.record();
    assert_eq!((r.kind, &*r.customer), (CallKind::Internal, "102"));
    assert_eq!(r.legs.len(), 2, "both halves are one call");
    assert_eq!(
        (r.outcome, r.status_code.as_deref()),
        (Some(Outcome::Answered), Some("200"))
    );
    assert!(r.conversations.is_empty());
    assert_eq!(
        (r.responsible, r.responsible_reason),
        (None, ResponsibleReason::Internal)
    );
}

#[test]
fn internal_halves_pair_only_within_the_correlation_window() {
    let mut h = Harness::new();
    h.offer(internal("L1", Direction::FromAgent, A, "102"));
    h.at(61_000)
        .offer(internal("L2", Direction::FromPbx, B, "101"));
    assert_eq!(h.t.active().count(), 2);
}

#[test]
fn unanswered_internal_call_keeps_the_callee_status() {
    let mut h = Harness::new();
    h.offer(internal("L1", Direction::FromAgent, A, "102"));
    h.offer(internal("L2", Direction::FromPbx, B, "101"));
    h.at(1_000).fail("L2", 486).fail("L1", 486);
    h.at(3_000);
    assert!(h.take().is_empty());
    let r = h.record();
    assert_eq!(
        (r.outcome, r.status_code.as_deref()),
        (Some(Outcome::NotAnswered), Some("486"))
    );
}
