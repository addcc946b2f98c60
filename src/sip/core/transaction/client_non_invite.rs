//! [`ClientNonInvite`]: the non-INVITE client transaction (RFC 3261 §17.1.2).
//!
//! Role: send a non-INVITE request (BYE, CANCEL, OPTIONS, REGISTER, ...), retransmit it over
//! unreliable transports (Timer E: T1 doubling, capped at T2; every T2 once a provisional
//! response arrived), give up after Timer F, pass provisional and final responses up, and
//! absorb retransmitted final responses for Timer K.
//!
//! The request is taken as bytes (not a parsed message): unlike the INVITE transaction, nothing
//! is ever derived from it, so the caller need not parse what it just serialised.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use super::super::message::SipMessage;
use super::{deadline, earliest, is_due, Backoff, Output, Timers};

/// The externally visible state of a [`ClientNonInvite`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientNonInviteState {
    /// The request was sent; no response yet (Timers E and F run).
    Trying,
    /// A provisional response arrived (Timer E now fires every T2; Timer F still runs).
    Proceeding,
    /// A final response arrived; absorbing its retransmissions (Timer K).
    Completed,
    /// Over.
    Terminated,
}

/// The state with the timers that belong to it.
#[derive(Debug)]
enum Phase {
    /// Trying (`proceeding == false`) and Proceeding share their timers: entering Proceeding
    /// keeps Timer E's current deadline and only changes its next interval.
    Waiting {
        proceeding: bool,
        timer_e: Option<Backoff>,
        timer_f: Option<Instant>,
    },
    Completed {
        timer_k: Option<Instant>,
    },
    Terminated,
}

/// A non-INVITE client transaction. See the module docs for the state machine.
///
/// Drive it with [`Self::handle_response`] and [`Self::handle_timeout`], and drain
/// [`Self::poll_output`] after construction and after every `handle_*` call.
#[derive(Debug)]
pub struct ClientNonInvite {
    request: Bytes,
    reliable: bool,
    timers: Timers,
    phase: Phase,
    out: VecDeque<Output>,
}

impl ClientNonInvite {
    /// Starts the transaction: `request` (the serialised request as it goes on the wire) is
    /// queued for transmission right away (drain [`Self::poll_output`]). `reliable` means a
    /// stream transport (no Timer E, Timer K = 0).
    #[must_use]
    pub fn new(request: Bytes, reliable: bool, timers: Timers, now: Instant) -> Self {
        let mut out = VecDeque::with_capacity(2);
        out.push_back(Output::Transmit(request.clone()));
        Self {
            request,
            reliable,
            timers,
            phase: Phase::Waiting {
                proceeding: false,
                timer_e: Backoff::start(now, timers.t1, reliable),
                timer_f: deadline(now, timers.transaction_timeout()),
            },
            out,
        }
    }

    /// Feeds a response the caller matched to this transaction (top-Via branch and CSeq
    /// method, RFC 3261 §17.1.3). Requests are ignored. Then drain [`Self::poll_output`].
    pub fn handle_response(&mut self, now: Instant, response: &SipMessage) {
        let Some(status) = response.status() else {
            return;
        };
        let Phase::Waiting { proceeding, .. } = &mut self.phase else {
            // Completed: a retransmitted final response, absorbed. Terminated: ignored.
            return;
        };
        if (100..=199).contains(&status) {
            *proceeding = true;
        } else {
            self.phase = if self.reliable {
                Phase::Terminated
            } else {
                let timer_k = deadline(now, self.timers.t4);
                Phase::Completed { timer_k }
            };
        }
        self.out
            .push_back(Output::Response(Box::new(response.clone())));
        if self.is_terminated() {
            self.out.push_back(Output::Terminated);
        }
    }

    /// Processes the timers due at `now` (call it when [`Self::poll_timeout`] is reached;
    /// calling it early or late is harmless). Then drain [`Self::poll_output`].
    pub fn handle_timeout(&mut self, now: Instant) {
        match &mut self.phase {
            Phase::Waiting { timer_f, .. } if is_due(*timer_f, now) => {
                self.out.push_back(Output::Timeout);
                self.terminate();
            }
            Phase::Waiting {
                proceeding,
                timer_e,
                ..
            } => {
                // Timer E: retransmit; the gap doubles up to T2, and is T2 in Proceeding.
                if let Some(e) = timer_e.filter(|e| e.at <= now) {
                    let next = if *proceeding {
                        self.timers.t2
                    } else {
                        e.interval.saturating_mul(2).min(self.timers.t2)
                    };
                    *timer_e = Backoff::restart(now, next);
                    self.out.push_back(Output::Transmit(self.request.clone()));
                }
            }
            Phase::Completed { timer_k } if is_due(*timer_k, now) => self.terminate(),
            Phase::Completed { .. } | Phase::Terminated => {}
        }
    }

    /// The transport reports that the request could not be delivered (RFC 3261 §17.1.4: the
    /// connection to the peer could not be opened). Only in Trying, before any response: once
    /// one came, the peer has the request. Then drain [`Self::poll_output`].
    pub fn handle_transport_error(&mut self) {
        if matches!(self.phase, Phase::Waiting { proceeding: false, .. }) {
            self.out.push_back(Output::TransportError);
            self.terminate();
        }
    }

    /// The earliest armed timer, or `None` when none is. Check it again after every
    /// `handle_*` call: transitions arm and disarm timers.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Waiting {
                timer_e, timer_f, ..
            } => earliest(*timer_e, *timer_f),
            Phase::Completed { timer_k } => *timer_k,
            Phase::Terminated => None,
        }
    }

    /// The next thing for the driver to do, in order; `None` when there is nothing left.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The current state.
    #[must_use]
    pub fn state(&self) -> ClientNonInviteState {
        match self.phase {
            Phase::Waiting {
                proceeding: false, ..
            } => ClientNonInviteState::Trying,
            Phase::Waiting { .. } => ClientNonInviteState::Proceeding,
            Phase::Completed { .. } => ClientNonInviteState::Completed,
            Phase::Terminated => ClientNonInviteState::Terminated,
        }
    }

    /// Whether the transaction is over (its [`Output::Terminated`] may still be queued).
    #[must_use]
    pub fn is_terminated(&self) -> bool {
        matches!(self.phase, Phase::Terminated)
    }

    fn terminate(&mut self) {
        if !self.is_terminated() {
            self.phase = Phase::Terminated;
            self.out.push_back(Output::Terminated);
        }
    }
}
