//! `ServerNonInvite`: last-response re-sends and Timer J.

use std::time::Duration;

use bytes::Bytes;

use super::super::super::SipMessage;
use super::super::{SendError, ServerNonInvite, ServerNonInviteState, Timers};
use super::util::{bye, ms, response_bytes, t0, Ev, Sim};

fn start(reliable: bool) -> (Sim<ServerNonInvite>, SipMessage) {
    let t0 = t0();
    (
        Sim::new(t0, ServerNonInvite::new(reliable, Timers::default())),
        bye(),
    )
}

fn send(sim: &mut Sim<ServerNonInvite>, d: Duration, response: &Bytes, status: u16) {
    sim.event(d, |tx, now| {
        tx.send_response(now, response.clone(), status)
            .expect("response accepted");
    });
}

fn receive(sim: &mut Sim<ServerNonInvite>, d: Duration, request: &SipMessage) {
    sim.event(d, |tx, now| tx.handle_request(now, request));
}

#[test]
fn udp_retransmissions_get_the_last_response_until_timer_j() {
    let (mut sim, req) = start(false);
    let trying = response_bytes(&req, 100);
    let ok = response_bytes(&req, 200);
    receive(&mut sim, ms(100), &req); // Trying: absorbed
    send(&mut sim, ms(200), &trying, 100);
    assert_eq!(sim.m.state(), ServerNonInviteState::Proceeding);
    receive(&mut sim, ms(500), &req);
    send(&mut sim, ms(1_000), &ok, 200);
    assert_eq!(sim.m.state(), ServerNonInviteState::Completed);
    assert_eq!(sim.m.poll_timeout(), Some(sim.at(ms(33_000))));
    receive(&mut sim, ms(1_500), &req);
    receive(&mut sim, ms(32_999), &req);
    sim.run_until(ms(100_000));
    receive(&mut sim, ms(100_000), &req); // terminated: ignored
    assert_eq!(
        sim.take(),
        [
            (ms(200), Ev::Transmit(trying.clone())),
            (ms(500), Ev::Transmit(trying)),
            (ms(1_000), Ev::Transmit(ok.clone())),
            (ms(1_500), Ev::Transmit(ok.clone())),
            (ms(32_999), Ev::Transmit(ok)),
            (ms(33_000), Ev::Terminated),
        ]
    );
}

#[test]
fn reliable_final_terminates_at_once() {
    let (mut sim, req) = start(true);
    let ok = response_bytes(&req, 200);
    send(&mut sim, ms(300), &ok, 200);
    receive(&mut sim, ms(400), &req);
    assert_eq!(
        sim.take(),
        [
            (ms(300), Ev::Transmit(ok.clone())),
            (ms(300), Ev::Terminated)
        ]
    );
    assert_eq!(sim.m.poll_timeout(), None);
    let now = sim.at(ms(500));
    assert_eq!(
        sim.m.send_response(now, ok, 200),
        Err(SendError::Terminated)
    );
}

#[test]
fn responses_after_the_final_or_with_a_bad_code_are_refused() {
    let (mut sim, req) = start(false);
    let now = sim.at(ms(0));
    let ok = response_bytes(&req, 200);
    assert_eq!(
        sim.m.send_response(now, ok.clone(), 42),
        Err(SendError::BadStatus { status: 42 })
    );
    assert_eq!(sim.m.state(), ServerNonInviteState::Trying);
    sim.m.send_response(now, ok.clone(), 200).expect("final");
    assert_eq!(
        sim.m.send_response(now, ok.clone(), 200),
        Err(SendError::FinalSent)
    );
    assert_eq!(sim.m.send_response(now, ok, 100), Err(SendError::FinalSent));
}
