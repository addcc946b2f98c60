//! Back-pressure on the way to the outbox recorder, through [`CallsHandle`]: a recorder that
//! stops reading loses nothing (every effect arrives once, in the order the tracker made it),
//! and the gate for new calls closes while the path is full and opens when it drains.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::harness::*;
use crate::calls::{CallsHandle, Effect, Event, Side, Tracker, TrackerConfig};

/// One answered call on its own leg: offer, ring, answer, hang-up (customer numbers differ, so
/// calls never correlate).
fn story(n: u32) -> Vec<Event> {
    let id = format!("L{n}");
    let mut offer = incoming(&id, A);
    offer.remote = format!("7900{n:07}").into();
    vec![
        Event::Offered(offer),
        Event::Ringing { leg: leg(&id) },
        Event::Answered { leg: leg(&id) },
        Event::Ended { leg: leg(&id), by: Side::Remote },
    ]
}

fn rendered(effects: &[Effect]) -> Vec<String> {
    effects.iter().map(render).collect()
}

#[test]
fn a_stalled_recorder_delays_effects_but_loses_none_and_closes_the_gate_meanwhile() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let (tx, mut rx) = mpsc::channel(16);
    let calls = CallsHandle::with_sink(TrackerConfig::default(), t0, 0, Some(tx));
    let mut reference = Tracker::new(TrackerConfig::default());
    assert!(calls.accepting_calls());

    // The recorder reads nothing while 40 calls run their whole course (160 events, about
    // 5 effects per call against 16 slots).
    let mut gate_closed_at = None;
    for n in 0..40 {
        for e in story(n) {
            let ms = u64::from(n) * 10;
            calls.feed(at(ms), [e.clone()]);
            reference.handle(crate::calls::Millis(ms), e);
        }
        if gate_closed_at.is_none() && !calls.accepting_calls() {
            gate_closed_at = Some(n);
        }
    }
    calls.tick(at(10_000));
    reference.handle_timeout(crate::calls::Millis(10_000));
    let closed = gate_closed_at.expect("the gate closed while the recorder was stalled");
    assert!(closed < 5, "closed after call {closed}: when fewer than 4 of 16 slots were free");
    assert!(calls.spilled_effects() > 100, "kept, not shed: {}", calls.spilled_effects());

    // The recorder comes back: it reads, the tick moves the spill up.
    let mut got = Vec::new();
    for round in 0..1_000u64 {
        while let Ok(e) = rx.try_recv() {
            got.push(e);
        }
        if calls.spilled_effects() == 0 && rx.is_empty() {
            break;
        }
        calls.tick(at(10_000 + round));
    }
    let mut want = Vec::new();
    while let Some(e) = reference.poll_effect() {
        want.push(e);
    }
    assert_eq!(want.len(), 40 * 4, "started, show, hide, finished per call");
    assert_eq!(rendered(&got), rendered(&want), "every effect once, in the tracker's order");
    assert!(calls.accepting_calls(), "open again once drained");
}

#[test]
fn without_a_recorder_every_call_is_accepted() {
    let calls = CallsHandle::new(TrackerConfig::default(), Instant::now(), 0);
    assert!(calls.accepting_calls());
    assert_eq!(calls.spilled_effects(), 0);
}
