//! Time: linger, ring timeout, routed decisions expiring, `poll_timeout`, and events the tracker
//! must ignore.

use super::harness::*;
use crate::calls::{CallId, Event, FailedReason, Millis, Side, TrackerConfig};

#[test]
fn a_new_leg_within_linger_joins_and_the_call_finishes_exactly_once() {
    let mut h = Harness::new();
    h.offer(incoming("L1", A));
    h.at(1_000).fail("L1", 486);
    assert_eq!(h.t.poll_timeout(), Some(Millis(3_000)));
    h.at(2_500).offer(incoming("L2", B)).ring("L2");
    assert_eq!(
        h.t.poll_timeout(),
        Some(Millis(182_500)),
        "the new leg's ring timeout"
    );
    h.at(4_000).answer("L2");
    h.at(20_000).bye("L2", Side::Remote);
    h.at(100_000);
    h.handle_timeout_again();
    assert_eq!(
        h.take(),
        [
            "started #1 incoming 79001234567 resp=Some(1) default_incoming",
            "show #1 [12]",
            "hide #1 [12]",
            "finished #1 200",
        ]
    );
    let r = h.record();
    assert_eq!((r.legs.len(), r.ended_at), (2, Some(Millis(20_000))));
    assert_eq!(h.t.poll_timeout(), None);

    h.at(101_000).offer(incoming("L3", A));
    let again = "started #2 incoming 79001234567 resp=Some(1) default_incoming";
    assert_eq!(
        h.take(),
        [again],
        "after it finished, the same customer starts a new call"
    );
}

impl Harness {
    fn handle_timeout_again(&mut self) {
        self.t.handle_timeout(self.now);
        assert!(self.t.poll_effect().is_none());
    }
}

#[test]
fn a_leg_ringing_past_ring_timeout_ends_as_timeout() {
    let mut h = Harness::new();
    h.offer(incoming("L1", A)).ring("L1");
    assert_eq!(h.t.poll_timeout(), Some(Millis(180_000)));
    h.at(180_000);
    assert_eq!(h.t.poll_timeout(), Some(Millis(182_000)), "then linger");
    h.at(182_000);
    let started = "started #1 incoming 79001234567 resp=Some(1) default_incoming";
    assert_eq!(
        h.take(),
        [started, "show #1 [11]", "hide #1 [11]", "finished #1 304"]
    );
    let r = h.record();
    assert_eq!(r.failed_reason, Some(FailedReason::Timeout));
    assert_eq!(ends(&r)[0].1, r#"{"reason":"timeout"}"#);
}

#[test]
fn poll_timeout_reports_the_earliest_deadline() {
    let mut h = Harness::with(TrackerConfig {
        keep_finished: 1,
        ..TrackerConfig::default()
    });
    assert_eq!(h.t.poll_timeout(), None);
    h.ev(Event::Routed {
        portal: PORTAL,
        correlation: None,
        caller: "70000000000".into(),
        line: None,
        manager: Some(50),
        extension: None,
    });
    assert_eq!(h.t.poll_timeout(), Some(Millis(60_000)), "routed_wait");
    h.at(1_000).offer(incoming("L1", A));
    assert_eq!(
        h.t.poll_timeout(),
        Some(Millis(60_000)),
        "earlier than the ring timeout"
    );
    h.at(60_000);
    assert_eq!(h.t.waiting_decisions(), 0, "expired silently");
    assert_eq!(
        h.t.poll_timeout(),
        Some(Millis(181_000)),
        "ring timeout of L1"
    );
    h.at(61_000).answer("L1");
    assert_eq!(h.t.poll_timeout(), None, "an answered call has no deadline");
    h.at(62_000)
        .refer("L1", "102", None)
        .accept("L1")
        .bye("L1", Side::Agent);
    assert_eq!(h.t.poll_timeout(), Some(Millis(92_000)), "transfer_wait");
    h.at(92_000);
    assert_eq!(h.t.poll_timeout(), None);
    h.at(93_000).offer(incoming("L2", A)).fail("L2", 486);
    assert_eq!(h.t.poll_timeout(), Some(Millis(95_000)), "linger");
    h.at(95_000);
    assert_eq!(
        h.t.finished().map(|r| r.id).collect::<Vec<_>>(),
        [CallId(2)],
        "keep_finished bounds the list"
    );
    assert_eq!(h.t.get(CallId(1)), None);
}

#[test]
fn events_about_unknown_legs_are_ignored_and_counted() {
    let mut h = Harness::new();
    let nope = || leg("nope");
    h.ring("nope")
        .answer("nope")
        .fail("nope", 486)
        .cancel("nope", Side::Remote);
    h.bye("nope", Side::Agent)
        .hold("nope", true)
        .refer("nope", "102", None)
        .accept("nope");
    h.ev(Event::Ended {
        leg: nope(),
        by: Side::Remote,
    });
    assert_eq!(h.t.ignored(), 9);
    assert!(h.take().is_empty());
    assert_eq!((h.t.active().count(), h.t.poll_timeout()), (0, None));

    h.offer(incoming("L1", A)).offer(incoming("L1", B));
    assert_eq!(h.t.ignored(), 10, "a repeated offer of a known leg");
    h.at(1_000).fail("L1", 486);
    h.at(3_000).answer("L1");
    assert_eq!(
        h.t.ignored(),
        11,
        "the call has finished: its legs are unknown now"
    );
    assert_eq!(h.take().len(), 2);
}
