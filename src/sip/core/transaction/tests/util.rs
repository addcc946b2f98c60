//! Test support: fixtures and `Sim`, a driver with a simulated clock that fires each machine's
//! timers exactly at `poll_timeout()` and logs every output with its offset from `t0`.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::super::super::{write_response, Method, SipMessage};
use super::super::{ClientInvite, ClientNonInvite, Output, ServerInvite, ServerNonInvite};

/// An INVITE with a two-value top Via line, a second Via line and two Route lines.
pub(super) const INVITE: &[u8] = b"INVITE sip:74951234567@carrier.example SIP/2.0\r\n\
Via: SIP/2.0/UDP gw.example:5060;branch=z9hG4bKtx1;rport, SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKup\r\n\
Via: SIP/2.0/TCP 10.0.0.3;branch=z9hG4bKup2\r\n\
Route: <sip:edge1.example;lr>\r\n\
Route: <sip:edge2.example;lr>, <sip:edge3.example;lr>\r\n\
Max-Forwards: 69\r\n\
From: \"Alice\" <sip:alice@gw.example>;tag=from1\r\n\
To: <sip:74951234567@carrier.example>\r\n\
Call-ID: call-1@gw.example\r\n\
CSeq: 314 INVITE\r\n\
Contact: <sip:alice@gw.example>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\r\nv=0\n";

/// A non-INVITE request (BYE) for the non-INVITE machines.
pub(super) const BYE: &[u8] = b"BYE sip:bob@carrier.example SIP/2.0\r\n\
Via: SIP/2.0/UDP gw.example:5060;branch=z9hG4bKbye1\r\n\
Max-Forwards: 70\r\n\
From: <sip:alice@gw.example>;tag=from1\r\n\
To: <sip:bob@carrier.example>;tag=to1\r\n\
Call-ID: call-1@gw.example\r\n\
CSeq: 315 BYE\r\n\
Content-Length: 0\r\n\r\n";

pub(super) fn parse(raw: &[u8]) -> SipMessage {
    SipMessage::parse(Bytes::copy_from_slice(raw)).expect("fixture parses")
}

pub(super) fn invite() -> SipMessage {
    parse(INVITE)
}

pub(super) fn bye() -> SipMessage {
    parse(BYE)
}

/// A response to `req` with `code`, tagged `to_tag`, parsed back.
pub(super) fn respond(req: &SipMessage, code: u16, to_tag: Option<&[u8]>) -> SipMessage {
    let mut out = BytesMut::new();
    write_response(req, code, "Reason", to_tag, &[], &mut out);
    SipMessage::parse(out.freeze()).expect("response parses")
}

/// The bytes of `respond(...)`, for `send_response`.
pub(super) fn response_bytes(req: &SipMessage, code: u16) -> Bytes {
    Bytes::copy_from_slice(respond(req, code, Some(b"uas1")).as_bytes())
}

/// The simulated clock's origin: the only clock read in the transaction tests (`Instant` has
/// no other constructor); every later instant is `t0 + Duration`.
pub(super) fn t0() -> Instant {
    Instant::now()
}

pub(super) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// An output, simplified for `assert_eq!`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ev {
    Transmit(Bytes),
    Response(u16),
    Request(Method),
    Timeout,
    TransportError,
    Terminated,
}

impl From<Output> for Ev {
    fn from(out: Output) -> Self {
        match out {
            Output::Transmit(bytes) => Self::Transmit(bytes),
            Output::Response(msg) => Self::Response(msg.status().expect("a response")),
            Output::Request(msg) => Self::Request(msg.method().expect("a request")),
            Output::Timeout => Self::Timeout,
            Output::TransportError => Self::TransportError,
            Output::Terminated => Self::Terminated,
        }
    }
}

/// The timer/output half of the API, common to the four machines.
pub(super) trait Machine {
    fn handle_timeout(&mut self, now: Instant);
    fn poll_timeout(&self) -> Option<Instant>;
    fn poll_output(&mut self) -> Option<Output>;
}

macro_rules! machine {
    ($($t:ty),*) => {$(
        impl Machine for $t {
            fn handle_timeout(&mut self, now: Instant) { <$t>::handle_timeout(self, now) }
            fn poll_timeout(&self) -> Option<Instant> { <$t>::poll_timeout(self) }
            fn poll_output(&mut self) -> Option<Output> { <$t>::poll_output(self) }
        }
    )*};
}
machine!(ClientInvite, ClientNonInvite, ServerInvite, ServerNonInvite);

/// A machine plus a simulated clock and the log of everything it emitted.
pub(super) struct Sim<M> {
    pub(super) m: M,
    pub(super) t0: Instant,
    /// Simulated time of the last event or timer processed.
    now: Duration,
    log: Vec<(Duration, Ev)>,
}

impl<M: Machine> Sim<M> {
    /// Wraps a machine created at `t0` and drains what `new` queued (logged at 0).
    pub(super) fn new(t0: Instant, m: M) -> Self {
        let mut sim = Self {
            m,
            t0,
            now: Duration::ZERO,
            log: Vec::new(),
        };
        sim.drain();
        sim
    }

    pub(super) fn at(&self, d: Duration) -> Instant {
        self.t0 + d
    }

    fn drain(&mut self) {
        while let Some(out) = self.m.poll_output() {
            self.log.push((self.now, out.into()));
        }
    }

    /// Fires every timer due up to and including `t0 + until`, exactly at its deadline.
    pub(super) fn run_until(&mut self, until: Duration) {
        for _ in 0..10_000 {
            let Some(at) = self.m.poll_timeout() else {
                break;
            };
            let offset = at.duration_since(self.t0);
            if offset > until {
                break;
            }
            assert!(
                offset >= self.now,
                "timer in the past: {offset:?} < {:?}",
                self.now
            );
            self.now = offset;
            self.m.handle_timeout(at);
            self.drain();
        }
        self.now = self.now.max(until);
    }

    /// Runs the timers up to `d`, then applies `event` at `t0 + d` and drains.
    pub(super) fn event(&mut self, d: Duration, event: impl FnOnce(&mut M, Instant)) {
        self.run_until(d);
        event(&mut self.m, self.t0 + d);
        self.drain();
    }

    /// Takes the log so far.
    pub(super) fn take(&mut self) -> Vec<(Duration, Ev)> {
        std::mem::take(&mut self.log)
    }
}

/// The offsets of the transmissions in `log`.
pub(super) fn transmit_times(log: &[(Duration, Ev)]) -> Vec<Duration> {
    log.iter()
        .filter(|(_, ev)| matches!(ev, Ev::Transmit(_)))
        .map(|(t, _)| *t)
        .collect()
}

/// The non-transmit outputs in `log`.
pub(super) fn events(log: &[(Duration, Ev)]) -> Vec<(Duration, Ev)> {
    log.iter()
        .filter(|(_, ev)| !matches!(ev, Ev::Transmit(_)))
        .cloned()
        .collect()
}
