//! `ServerInvite`: 100 Trying after 200 ms, provisional re-sends, Timer G/H until the ACK,
//! Timer I, RFC 6026 Accepted (Timer L), refused responses.

use std::time::Duration;

use bytes::Bytes;

use super::super::super::{Method, SipMessage};
use super::super::{build_ack, SendError, ServerInvite, ServerInviteState, Timers};
use super::util::{events, invite, ms, respond, response_bytes, t0, transmit_times, Ev, Sim};

fn start(reliable: bool) -> (Sim<ServerInvite>, SipMessage) {
    let t0 = t0();
    let inv = invite();
    let tx = ServerInvite::new(&inv, reliable, Timers::default(), t0);
    (Sim::new(t0, tx), inv)
}

/// The peer's ACK for a non-2xx final response to `inv` (same branch).
fn peer_ack(inv: &SipMessage) -> SipMessage {
    let ack = build_ack(inv, &respond(inv, 486, Some(b"uas1")));
    SipMessage::parse(ack).expect("ACK parses")
}

fn send(sim: &mut Sim<ServerInvite>, d: Duration, response: &Bytes, status: u16) {
    sim.event(d, |tx, now| {
        tx.send_response(now, response.clone(), status)
            .expect("response accepted");
    });
}

fn receive(sim: &mut Sim<ServerInvite>, d: Duration, request: &SipMessage) {
    sim.event(d, |tx, now| tx.handle_request(now, request));
}

#[test]
fn retransmitted_invite_resends_the_last_provisional() {
    let (mut sim, inv) = start(false);
    let ringing = response_bytes(&inv, 180);
    let progress = response_bytes(&inv, 183);
    send(&mut sim, ms(0), &ringing, 180);
    receive(&mut sim, ms(500), &inv);
    send(&mut sim, ms(600), &progress, 183);
    receive(&mut sim, ms(1_500), &inv);
    sim.run_until(ms(100_000)); // nothing else: no timer in Proceeding once the TU spoke
    assert_eq!(
        sim.take(),
        [
            (ms(0), Ev::Transmit(ringing.clone())),
            (ms(500), Ev::Transmit(ringing)),
            (ms(600), Ev::Transmit(progress.clone())),
            (ms(1_500), Ev::Transmit(progress)),
        ]
    );
    assert_eq!(sim.m.state(), ServerInviteState::Proceeding);
}

#[test]
fn silent_tu_gets_100_trying_after_200_ms_or_on_the_first_retransmission() {
    let (mut sim, inv) = start(false);
    assert_eq!(sim.m.poll_timeout(), Some(sim.at(ms(200))));
    receive(&mut sim, ms(500), &inv);
    let log = sim.take();
    assert_eq!(transmit_times(&log), [ms(200), ms(500)]);
    let Some((_, Ev::Transmit(trying))) = log.first() else {
        panic!("{log:?}")
    };
    let trying = SipMessage::parse(trying.clone()).expect("100 parses");
    assert_eq!(trying.status(), Some(100));
    assert_eq!(trying.to().and_then(|t| t.tag), None);
    assert_eq!(
        trying.top_via().and_then(|v| v.branch),
        Some(&b"z9hG4bKtx1"[..])
    );

    let (mut sim, inv) = start(false);
    receive(&mut sim, ms(150), &inv); // before the 200 ms: at once, and only once
    sim.run_until(ms(10_000));
    assert_eq!(transmit_times(&sim.take()), [ms(150)]);
}

#[test]
fn udp_non_2xx_is_retransmitted_on_timer_g_until_the_ack_then_timer_i() {
    let (mut sim, inv) = start(false);
    let busy = response_bytes(&inv, 486);
    send(&mut sim, ms(0), &busy, 486);
    assert_eq!(sim.m.state(), ServerInviteState::Completed);
    receive(&mut sim, ms(8_000), &inv); // a retransmitted INVITE re-sends the 486
    receive(&mut sim, ms(10_000), &peer_ack(&inv));
    assert_eq!(sim.m.state(), ServerInviteState::Confirmed);
    assert_eq!(sim.m.poll_timeout(), Some(sim.at(ms(15_000))));
    receive(&mut sim, ms(11_000), &peer_ack(&inv)); // absorbed
    receive(&mut sim, ms(12_000), &inv); // absorbed
    sim.run_until(ms(100_000));
    let log = sim.take();
    assert_eq!(
        transmit_times(&log),
        [0, 500, 1_500, 3_500, 7_500, 8_000].map(ms)
    );
    assert!(log
        .iter()
        .all(|(_, ev)| !matches!(ev, Ev::Transmit(_)) || *ev == Ev::Transmit(busy.clone())));
    assert_eq!(events(&log), [(ms(15_000), Ev::Terminated)]);
}

#[test]
fn udp_non_2xx_without_ack_times_out_on_timer_h() {
    let (mut sim, inv) = start(false);
    send(&mut sim, ms(0), &response_bytes(&inv, 486), 486);
    sim.run_until(ms(100_000));
    let log = sim.take();
    assert_eq!(
        transmit_times(&log),
        [0, 500, 1_500, 3_500, 7_500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500].map(ms)
    );
    assert_eq!(
        events(&log),
        [(ms(32_000), Ev::Timeout), (ms(32_000), Ev::Terminated)]
    );
}

#[test]
fn reliable_non_2xx_has_no_timer_g_and_terminates_on_the_ack() {
    let (mut sim, inv) = start(true);
    send(&mut sim, ms(0), &response_bytes(&inv, 486), 486);
    sim.run_until(ms(100_000));
    let log = sim.take();
    assert_eq!(transmit_times(&log), [ms(0)]);
    assert_eq!(
        events(&log),
        [(ms(32_000), Ev::Timeout), (ms(32_000), Ev::Terminated)]
    );

    let (mut sim, inv) = start(true);
    send(&mut sim, ms(0), &response_bytes(&inv, 486), 486);
    receive(&mut sim, ms(1_000), &peer_ack(&inv));
    let log = sim.take();
    assert_eq!(events(&log), [(ms(1_000), Ev::Terminated)]);
    assert_eq!(sim.m.poll_timeout(), None);
}

#[test]
fn accepted_absorbs_invites_passes_acks_up_and_ends_on_timer_l() {
    let (mut sim, inv) = start(false);
    let ok = response_bytes(&inv, 200);
    send(&mut sim, ms(100), &ok, 200);
    assert_eq!(sim.m.state(), ServerInviteState::Accepted);
    receive(&mut sim, ms(500), &inv); // absorbed: no output at all
    send(&mut sim, ms(600), &ok, 200); // the TU's own 2xx retransmission goes out

    // A 2xx ACK is a new transaction; the caller matched it here, so it goes up.
    let ack = peer_ack(&inv);
    receive(&mut sim, ms(700), &ack);
    receive(&mut sim, ms(800), &ack);
    sim.run_until(ms(100_000));
    assert_eq!(
        sim.take(),
        [
            (ms(100), Ev::Transmit(ok.clone())),
            (ms(600), Ev::Transmit(ok)),
            (ms(700), Ev::Request(Method::Ack)),
            (ms(800), Ev::Request(Method::Ack)),
            (ms(32_100), Ev::Terminated),
        ]
    );
}

#[test]
fn responses_are_refused_after_a_final_or_termination_or_with_a_bad_code() {
    let t0 = t0();
    let inv = invite();
    let mut tx = ServerInvite::new(&inv, true, Timers::default(), t0);
    let bytes = response_bytes(&inv, 180);
    assert_eq!(
        tx.send_response(t0, bytes.clone(), 99),
        Err(SendError::BadStatus { status: 99 })
    );
    assert_eq!(
        tx.send_response(t0, bytes.clone(), 700),
        Err(SendError::BadStatus { status: 700 })
    );
    assert_eq!(tx.poll_output().map(Ev::from), None);
    tx.send_response(t0, response_bytes(&inv, 200), 200)
        .expect("2xx");
    assert_eq!(
        tx.send_response(t0, bytes.clone(), 180),
        Err(SendError::FinalSent)
    );
    assert_eq!(
        tx.send_response(t0, bytes.clone(), 486),
        Err(SendError::FinalSent)
    );
    tx.handle_timeout(t0 + ms(32_000));
    assert!(tx.is_terminated());
    assert_eq!(
        tx.send_response(t0, bytes.clone(), 200),
        Err(SendError::Terminated)
    );

    let mut tx = ServerInvite::new(&inv, false, Timers::default(), t0);
    tx.send_response(t0, response_bytes(&inv, 486), 486)
        .expect("486");
    assert_eq!(
        tx.send_response(t0, bytes.clone(), 200),
        Err(SendError::FinalSent)
    );
    let outs: Vec<Ev> = std::iter::from_fn(|| tx.poll_output())
        .map(Ev::from)
        .collect();
    assert_eq!(outs, [Ev::Transmit(response_bytes(&inv, 486))]);
}
