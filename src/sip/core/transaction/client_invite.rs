//! [`ClientInvite`]: the INVITE client transaction (RFC 3261 §17.1.1, with the RFC 6026
//! Accepted state).
//!
//! Role: send an INVITE, retransmit it over unreliable transports (Timer A), give up after
//! Timer B, ACK a 3xx-6xx final response itself (hop by hop, [`build_ack`]) and absorb its
//! retransmissions, and pass every 2xx up to the TU (a proxy forwards each of them; the TU
//! ACKs a 2xx end to end).
//!
//! Timer B deliberately runs in Calling only, as RFC 3261 §17.1.1.2 says ("if the client
//! transaction is still in the Calling state when timer B fires"). Once a provisional
//! response arrived the transaction waits for a final response indefinitely: a call may ring
//! longer than 32 s. Guarding Proceeding is the TU's job (a proxy's Timer C, §16.6 item 11,
//! followed by a CANCEL).

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use super::super::message::SipMessage;
use super::{build_ack, deadline, earliest, is_due, wire_bytes, Backoff, Output, Timers};

/// The externally visible state of a [`ClientInvite`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientInviteState {
    /// The INVITE was sent; no response yet (Timers A and B run).
    Calling,
    /// A provisional response arrived; waiting for a final one (no timer).
    Proceeding,
    /// A 3xx-6xx arrived and was ACKed; absorbing its retransmissions (Timer D).
    Completed,
    /// A 2xx arrived; further 2xx are passed up too (Timer M, RFC 6026).
    Accepted,
    /// Over.
    Terminated,
}

/// The state with the timers that belong to it.
#[derive(Debug)]
enum Phase {
    Calling {
        timer_a: Option<Backoff>,
        timer_b: Option<Instant>,
    },
    Proceeding,
    Completed {
        ack: Bytes,
        timer_d: Option<Instant>,
    },
    Accepted {
        timer_m: Option<Instant>,
    },
    Terminated,
}

/// An INVITE client transaction. See the module docs for the state machine.
///
/// Drive it with [`Self::handle_response`] and [`Self::handle_timeout`], and drain
/// [`Self::poll_output`] after construction and after every `handle_*` call.
#[derive(Debug)]
pub struct ClientInvite {
    /// The INVITE as sent. Only its bytes are kept (a parsed message is about 1.4 KB and a
    /// busy proxy holds tens of thousands of these); it is parsed again in the rare cases that
    /// need it: the ACK for a non-2xx, a CANCEL.
    request: Bytes,
    reliable: bool,
    timers: Timers,
    phase: Phase,
    out: VecDeque<Output>,
}

impl ClientInvite {
    /// Starts the transaction: the INVITE's bytes are queued for transmission right away
    /// (drain [`Self::poll_output`]). `invite` is the request exactly as it goes on the wire;
    /// it is kept to build the ACK for a non-2xx final response. `reliable` means a stream
    /// transport (no Timer A, Timer D = 0).
    #[must_use]
    pub fn new(invite: &SipMessage, reliable: bool, timers: Timers, now: Instant) -> Self {
        let request = wire_bytes(invite);
        let mut out = VecDeque::with_capacity(2);
        out.push_back(Output::Transmit(request.clone()));
        Self {
            request,
            reliable,
            timers,
            phase: Phase::Calling {
                timer_a: Backoff::start(now, timers.t1, reliable),
                timer_b: deadline(now, timers.transaction_timeout()),
            },
            out,
        }
    }

    /// Feeds a response the caller matched to this transaction (top-Via branch and CSeq
    /// method INVITE, RFC 3261 §17.1.3). Requests are ignored. Then drain
    /// [`Self::poll_output`].
    pub fn handle_response(&mut self, now: Instant, response: &SipMessage) {
        let Some(status) = response.status() else {
            return;
        };
        match (&self.phase, status) {
            (Phase::Calling { .. } | Phase::Proceeding, 100..=199) => {
                self.phase = Phase::Proceeding;
                self.pass_up(response);
            }
            (Phase::Calling { .. } | Phase::Proceeding, 200..=299) => {
                let timer_m = deadline(now, self.timers.transaction_timeout());
                self.phase = Phase::Accepted { timer_m };
                self.pass_up(response);
            }
            // RFC 6026 §8.4: every further 2xx (a retransmission, or another fork's) goes up.
            (Phase::Accepted { .. }, 200..=299) => self.pass_up(response),
            (Phase::Calling { .. } | Phase::Proceeding, 300..=699) => self.complete(now, response),
            (Phase::Completed { ack, .. }, 300..=699) => {
                // A retransmitted final response: our ACK was lost. Not passed up again.
                self.out.push_back(Output::Transmit(ack.clone()));
            }
            _ => {}
        }
    }

    /// Processes the timers due at `now` (call it when [`Self::poll_timeout`] is reached;
    /// calling it early or late is harmless). Then drain [`Self::poll_output`].
    pub fn handle_timeout(&mut self, now: Instant) {
        match &mut self.phase {
            Phase::Calling { timer_b, .. } if is_due(*timer_b, now) => {
                self.out.push_back(Output::Timeout);
                self.terminate();
            }
            Phase::Calling { timer_a, .. } => {
                // Timer A: retransmit, then double the interval (no cap for INVITE).
                if let Some(a) = timer_a.filter(|a| a.at <= now) {
                    *timer_a = Backoff::restart(now, a.interval.saturating_mul(2));
                    self.out.push_back(Output::Transmit(self.request.clone()));
                }
            }
            Phase::Completed { timer_d, .. } if is_due(*timer_d, now) => self.terminate(),
            Phase::Accepted { timer_m } if is_due(*timer_m, now) => self.terminate(),
            _ => {}
        }
    }

    /// The transport reports that the INVITE could not be delivered (RFC 3261 §17.1.4: the
    /// connection to the peer could not be opened). Only in Calling, before any response: once
    /// one came, the peer has the request. Then drain [`Self::poll_output`].
    pub fn handle_transport_error(&mut self) {
        if matches!(self.phase, Phase::Calling { .. }) {
            self.out.push_back(Output::TransportError);
            self.terminate();
        }
    }

    /// The earliest armed timer, or `None` when none is (Proceeding, Terminated). Check it
    /// again after every `handle_*` call: transitions arm and disarm timers.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Calling { timer_a, timer_b } => earliest(*timer_a, *timer_b),
            Phase::Completed { timer_d, .. } => *timer_d,
            Phase::Accepted { timer_m } => *timer_m,
            Phase::Proceeding | Phase::Terminated => None,
        }
    }

    /// The next thing for the driver to do, in order; `None` when there is nothing left.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The current state.
    #[must_use]
    pub fn state(&self) -> ClientInviteState {
        match self.phase {
            Phase::Calling { .. } => ClientInviteState::Calling,
            Phase::Proceeding => ClientInviteState::Proceeding,
            Phase::Completed { .. } => ClientInviteState::Completed,
            Phase::Accepted { .. } => ClientInviteState::Accepted,
            Phase::Terminated => ClientInviteState::Terminated,
        }
    }

    /// Whether the transaction is over (its [`Output::Terminated`] may still be queued).
    #[must_use]
    pub fn is_terminated(&self) -> bool {
        matches!(self.phase, Phase::Terminated)
    }

    /// The INVITE this transaction sends (for CANCEL construction, §9.1), parsed again from
    /// its bytes; `None` only if they no longer parse (they did when `new` was called).
    #[must_use]
    pub fn invite(&self) -> Option<SipMessage> {
        SipMessage::parse(self.request.clone()).ok()
    }

    /// A 3xx-6xx in Calling or Proceeding: ACK it, pass it up, linger for Timer D.
    fn complete(&mut self, now: Instant, response: &SipMessage) {
        let Some(invite) = self.invite() else {
            // Unreachable in practice (the bytes parsed before); without an ACK the peer
            // retransmits and times out, which is still correct.
            self.pass_up(response);
            return self.terminate();
        };
        let ack = build_ack(&invite, response);
        self.out.push_back(Output::Transmit(ack.clone()));
        self.pass_up(response);
        if self.reliable {
            self.terminate();
        } else {
            let timer_d = deadline(now, self.timers.timer_d());
            self.phase = Phase::Completed { ack, timer_d };
        }
    }

    fn pass_up(&mut self, response: &SipMessage) {
        self.out
            .push_back(Output::Response(Box::new(response.clone())));
    }

    fn terminate(&mut self) {
        if !self.is_terminated() {
            self.phase = Phase::Terminated;
            self.out.push_back(Output::Terminated);
        }
    }
}
