//! `ClientNonInvite`: Timer E (capped at T2, every T2 in Proceeding), F, K.

use std::time::Duration;

use bytes::Bytes;

use super::super::super::SipMessage;
use super::super::{ClientNonInvite, ClientNonInviteState, Timers};
use super::util::{bye, events, ms, respond, t0, transmit_times, Ev, Sim, BYE};

fn start(reliable: bool) -> (Sim<ClientNonInvite>, SipMessage) {
    let t0 = t0();
    let tx = ClientNonInvite::new(Bytes::from_static(BYE), reliable, Timers::default(), t0);
    (Sim::new(t0, tx), bye())
}

fn respond_at(sim: &mut Sim<ClientNonInvite>, d: Duration, resp: &SipMessage) {
    sim.event(d, |tx, now| tx.handle_response(now, resp));
}

#[test]
fn udp_without_response_doubles_timer_e_up_to_t2_and_times_out_at_64_t1() {
    let (mut sim, _) = start(false);
    sim.run_until(ms(100_000));
    let log = sim.take();
    assert_eq!(
        transmit_times(&log),
        [0, 500, 1_500, 3_500, 7_500, 11_500, 15_500, 19_500, 23_500, 27_500, 31_500].map(ms)
    );
    for (_, ev) in &log {
        if let Ev::Transmit(bytes) = ev {
            assert_eq!(bytes.as_ref(), BYE);
        }
    }
    assert_eq!(
        events(&log),
        [(ms(32_000), Ev::Timeout), (ms(32_000), Ev::Terminated)]
    );
    assert_eq!(sim.m.state(), ClientNonInviteState::Terminated);
}

#[test]
fn proceeding_retransmits_every_t2_and_still_times_out() {
    let (mut sim, req) = start(false);
    respond_at(&mut sim, ms(700), &respond(&req, 100, None));
    assert_eq!(sim.m.state(), ClientNonInviteState::Proceeding);
    respond_at(&mut sim, ms(800), &respond(&req, 183, Some(b"uas1")));
    sim.run_until(ms(100_000));
    let log = sim.take();
    // E keeps its Trying deadline (1.5 s), then fires every T2.
    assert_eq!(
        transmit_times(&log),
        [0, 500, 1_500, 5_500, 9_500, 13_500, 17_500, 21_500, 25_500, 29_500].map(ms)
    );
    assert_eq!(
        events(&log),
        [
            (ms(700), Ev::Response(100)),
            (ms(800), Ev::Response(183)),
            (ms(32_000), Ev::Timeout),
            (ms(32_000), Ev::Terminated),
        ]
    );
}

#[test]
fn udp_final_completes_absorbs_retransmissions_and_lingers_for_t4() {
    let (mut sim, req) = start(false);
    let ok = respond(&req, 200, Some(b"uas1"));
    respond_at(&mut sim, ms(1_000), &ok);
    assert_eq!(sim.m.state(), ClientNonInviteState::Completed);
    assert_eq!(sim.m.poll_timeout(), Some(sim.at(ms(6_000))));
    respond_at(&mut sim, ms(2_000), &ok);
    respond_at(&mut sim, ms(2_100), &respond(&req, 100, None));
    sim.run_until(ms(100_000));
    let log = sim.take();
    assert_eq!(transmit_times(&log), [ms(0), ms(500)]);
    assert_eq!(
        events(&log),
        [(ms(1_000), Ev::Response(200)), (ms(6_000), Ev::Terminated)]
    );
}

#[test]
fn reliable_sends_once_times_out_at_64_t1_and_final_terminates_at_once() {
    let (mut sim, _) = start(true);
    sim.run_until(ms(100_000));
    let log = sim.take();
    assert_eq!(transmit_times(&log), [ms(0)]);
    assert_eq!(
        events(&log),
        [(ms(32_000), Ev::Timeout), (ms(32_000), Ev::Terminated)]
    );

    let (mut sim, req) = start(true);
    respond_at(&mut sim, ms(50), &respond(&req, 481, Some(b"uas1")));
    respond_at(&mut sim, ms(60), &respond(&req, 481, Some(b"uas1")));
    let log = sim.take();
    assert_eq!(
        events(&log),
        [(ms(50), Ev::Response(481)), (ms(50), Ev::Terminated)]
    );
    assert_eq!(sim.m.poll_timeout(), None);
}

#[test]
fn a_transport_error_in_trying_ends_it_at_once_not_after_a_response() {
    let (mut sim, req) = start(true);
    sim.event(ms(5), |tx, _| tx.handle_transport_error());
    assert_eq!(sim.m.state(), ClientNonInviteState::Terminated);
    assert_eq!(events(&sim.take()), [(ms(5), Ev::TransportError), (ms(5), Ev::Terminated)]);
    let (mut sim, _) = start(false);
    respond_at(&mut sim, ms(10), &respond(&req, 100, None));
    sim.event(ms(20), |tx, _| tx.handle_transport_error());
    assert_eq!(sim.m.state(), ClientNonInviteState::Proceeding);
}
