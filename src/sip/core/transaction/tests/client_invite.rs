//! `ClientInvite`: Timer A/B schedule, Proceeding, ACK for non-2xx (Timer D), Accepted
//! (Timer M), late drivers.

use std::time::Duration;

use bytes::Bytes;

use super::super::super::{HeaderName, SipMessage};
use super::super::{ClientInvite, ClientInviteState, Timers};
use super::util::{events, invite, ms, respond, t0, transmit_times, Ev, Sim};

fn start(reliable: bool) -> (Sim<ClientInvite>, SipMessage) {
    let t0 = t0();
    let inv = invite();
    let tx = ClientInvite::new(&inv, reliable, Timers::default(), t0);
    (Sim::new(t0, tx), inv)
}

fn respond_at(sim: &mut Sim<ClientInvite>, d: Duration, resp: &SipMessage) {
    sim.event(d, |tx, now| tx.handle_response(now, resp));
}

#[test]
fn udp_without_response_retransmits_on_timer_a_and_times_out_at_64_t1() {
    let (mut sim, inv) = start(false);
    sim.run_until(ms(100_000));
    let log = sim.take();
    assert_eq!(
        transmit_times(&log),
        [0, 500, 1_500, 3_500, 7_500, 15_500, 31_500].map(ms)
    );
    for (_, ev) in &log {
        if let Ev::Transmit(bytes) = ev {
            assert_eq!(bytes.as_ref(), inv.as_bytes());
        }
    }
    assert_eq!(
        events(&log),
        [(ms(32_000), Ev::Timeout), (ms(32_000), Ev::Terminated)]
    );
    assert!(sim.m.is_terminated());
    assert_eq!(sim.m.poll_timeout(), None);
}

#[test]
fn reliable_without_response_sends_once_and_times_out_at_64_t1() {
    let (mut sim, _) = start(true);
    assert_eq!(sim.m.poll_timeout(), Some(sim.at(ms(32_000))));
    sim.run_until(ms(100_000));
    let log = sim.take();
    assert_eq!(transmit_times(&log), [ms(0)]);
    assert_eq!(
        events(&log),
        [(ms(32_000), Ev::Timeout), (ms(32_000), Ev::Terminated)]
    );
}

#[test]
fn provisional_stops_retransmissions_and_timer_b() {
    let (mut sim, inv) = start(false);
    respond_at(&mut sim, ms(1_000), &respond(&inv, 180, Some(b"uas1")));
    assert_eq!(sim.m.state(), ClientInviteState::Proceeding);
    assert_eq!(sim.m.poll_timeout(), None);
    sim.run_until(ms(120_000)); // ringing longer than 64*T1 is fine
    let log = sim.take();
    assert_eq!(transmit_times(&log), [ms(0), ms(500)]);
    assert_eq!(events(&log), [(ms(1_000), Ev::Response(180))]);
    assert_eq!(sim.m.state(), ClientInviteState::Proceeding);
}

/// Asserts the ACK for `INVITE` and a 486 tagged `uas1`, header by header.
fn assert_ack(bytes: &Bytes) {
    let ack = SipMessage::parse(bytes.clone()).expect("ACK parses");
    assert_eq!(
        ack.start_line(),
        b"ACK sip:74951234567@carrier.example SIP/2.0"
    );
    let vias: Vec<_> = ack.values(HeaderName::Via).collect();
    assert_eq!(
        vias,
        [&b"SIP/2.0/UDP gw.example:5060;branch=z9hG4bKtx1;rport"[..]]
    );
    assert_eq!(ack.to().and_then(|t| t.tag), Some(&b"uas1"[..]));
    let cseq = ack.cseq().expect("CSeq");
    assert_eq!((cseq.seq, cseq.method), (314, &b"ACK"[..]));
    let routes: Vec<_> = ack.headers(HeaderName::Route).collect();
    assert_eq!(
        routes,
        [
            &b"<sip:edge1.example;lr>"[..],
            b"<sip:edge2.example;lr>, <sip:edge3.example;lr>"
        ]
    );
}

#[test]
fn udp_non_2xx_final_is_acked_passed_up_once_and_lingers_for_timer_d() {
    let (mut sim, inv) = start(false);
    respond_at(&mut sim, ms(1_000), &respond(&inv, 180, Some(b"uas1")));
    let busy = respond(&inv, 486, Some(b"uas1"));
    respond_at(&mut sim, ms(40_000), &busy);
    assert_eq!(sim.m.state(), ClientInviteState::Completed);
    let log = sim.take();
    assert_eq!(transmit_times(&log), [0, 500, 40_000].map(ms)); // INVITE, Timer A, ACK
    let Some((_, Ev::Transmit(ack))) = log.get(3) else {
        panic!("no ACK: {log:?}")
    };
    assert_ack(ack);
    assert_eq!(
        events(&log),
        [
            (ms(1_000), Ev::Response(180)),
            (ms(40_000), Ev::Response(486))
        ]
    );

    // The 486 is retransmitted (our ACK was lost): the ACK again, nothing up.
    respond_at(&mut sim, ms(41_000), &busy);
    respond_at(&mut sim, ms(43_000), &busy);
    sim.run_until(ms(200_000));
    let log = sim.take();
    assert_eq!(
        log,
        [
            (ms(41_000), Ev::Transmit(ack.clone())),
            (ms(43_000), Ev::Transmit(ack.clone())),
            (ms(72_000), Ev::Terminated),
        ]
    );
}

#[test]
fn reliable_non_2xx_final_is_acked_and_terminates_at_once() {
    let (mut sim, inv) = start(true);
    respond_at(&mut sim, ms(300), &respond(&inv, 486, Some(b"uas1")));
    let log = sim.take();
    let Some((_, Ev::Transmit(ack))) = log.get(1) else {
        panic!("no ACK: {log:?}")
    };
    assert_ack(ack);
    assert_eq!(
        events(&log),
        [(ms(300), Ev::Response(486)), (ms(300), Ev::Terminated)]
    );
    assert!(sim.m.is_terminated());
    assert_eq!(sim.m.poll_timeout(), None);
}

#[test]
fn final_in_calling_stops_timer_a_too() {
    let (mut sim, inv) = start(false);
    respond_at(&mut sim, ms(700), &respond(&inv, 603, Some(b"uas1")));
    sim.run_until(ms(100_000));
    let log = sim.take();
    assert_eq!(transmit_times(&log), [ms(0), ms(500), ms(700)]); // INVITE, A, ACK
    assert_eq!(
        events(&log),
        [(ms(700), Ev::Response(603)), (ms(32_700), Ev::Terminated)]
    );
}

#[test]
fn every_2xx_is_passed_up_without_ack_until_timer_m() {
    let (mut sim, inv) = start(false);
    let ok = respond(&inv, 200, Some(b"uas1"));
    respond_at(&mut sim, ms(2_000), &ok);
    assert_eq!(sim.m.state(), ClientInviteState::Accepted);
    respond_at(&mut sim, ms(2_500), &ok);
    let forked = respond(&inv, 200, Some(b"uas2"));
    respond_at(&mut sim, ms(3_000), &forked);
    // Anything but a 2xx is ignored in Accepted.
    respond_at(&mut sim, ms(3_100), &respond(&inv, 486, Some(b"uas3")));
    respond_at(&mut sim, ms(3_200), &respond(&inv, 180, Some(b"uas3")));
    sim.run_until(ms(100_000));
    let log = sim.take();
    assert_eq!(transmit_times(&log), [0, 500, 1_500].map(ms));
    assert_eq!(
        events(&log),
        [
            (ms(2_000), Ev::Response(200)),
            (ms(2_500), Ev::Response(200)),
            (ms(3_000), Ev::Response(200)),
            (ms(34_000), Ev::Terminated),
        ]
    );
}

#[test]
fn a_late_driver_gets_one_timeout_not_a_burst_and_an_early_one_nothing() {
    let t0 = t0();
    let inv = invite();
    let drained = |tx: &mut ClientInvite| std::iter::from_fn(|| tx.poll_output()).count();

    let mut tx = ClientInvite::new(&inv, false, Timers::default(), t0);
    assert_eq!(drained(&mut tx), 1);
    tx.handle_timeout(t0 + ms(40_000)); // A and B both overdue
    let outs: Vec<Ev> = std::iter::from_fn(|| tx.poll_output())
        .map(Ev::from)
        .collect();
    assert_eq!(outs, [Ev::Timeout, Ev::Terminated]);

    let mut tx = ClientInvite::new(&inv, false, Timers::default(), t0);
    assert_eq!(drained(&mut tx), 1);
    tx.handle_timeout(t0 + ms(499));
    assert_eq!(drained(&mut tx), 0);
    assert_eq!(tx.poll_timeout(), Some(t0 + ms(500)));
    tx.handle_timeout(t0 + ms(5_000)); // A overdue by 4.5 s: one retransmission, re-armed from now
    assert_eq!(drained(&mut tx), 1);
    assert_eq!(tx.poll_timeout(), Some(t0 + ms(6_000)));
}

#[test]
fn custom_t1_scales_every_timer() {
    let t0 = t0();
    let inv = invite();
    let timers = Timers {
        t1: ms(100),
        ..Timers::default()
    };
    let mut sim = Sim::new(t0, ClientInvite::new(&inv, false, timers, t0));
    sim.run_until(ms(100_000));
    let log = sim.take();
    assert_eq!(
        transmit_times(&log),
        [0, 100, 300, 700, 1_500, 3_100, 6_300].map(ms)
    );
    assert_eq!(events(&log).first(), Some(&(ms(6_400), Ev::Timeout)));
}

#[test]
fn responses_after_termination_and_requests_are_ignored() {
    let (mut sim, inv) = start(true);
    respond_at(&mut sim, ms(10), &respond(&inv, 404, Some(b"uas1")));
    sim.take();
    respond_at(&mut sim, ms(20), &respond(&inv, 404, Some(b"uas1")));
    respond_at(&mut sim, ms(30), &respond(&inv, 200, Some(b"uas1")));
    respond_at(&mut sim, ms(40), &inv);
    assert!(sim.take().is_empty());
    assert_eq!(sim.m.state(), ClientInviteState::Terminated);
}

#[test]
fn a_transport_error_in_calling_ends_it_at_once_and_later_ones_are_ignored() {
    let (mut sim, inv) = start(true);
    sim.event(ms(40), |tx, _| tx.handle_transport_error());
    assert_eq!(sim.m.state(), ClientInviteState::Terminated);
    assert_eq!(events(&sim.take()), [(ms(40), Ev::TransportError), (ms(40), Ev::Terminated)]);
    sim.event(ms(50), |tx, _| tx.handle_transport_error());
    assert!(sim.take().is_empty(), "nothing after Terminated");
    // Once the peer answered, it has the request: a later failure is not this INVITE's.
    let (mut sim, _) = start(true);
    respond_at(&mut sim, ms(10), &respond(&inv, 180, Some(b"uas1")));
    sim.event(ms(40), |tx, _| tx.handle_transport_error());
    assert_eq!(sim.m.state(), ClientInviteState::Proceeding);
    assert_eq!(events(&sim.take()), [(ms(10), Ev::Response(180))]);
}
