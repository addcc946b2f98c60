//! [`ServerInvite`]: the INVITE server transaction (RFC 3261 §17.2.1, with the RFC 6026
//! Accepted state).
//!
//! Role: send the TU's responses to a received INVITE, answer a retransmitted INVITE with the
//! last provisional response, retransmit a 3xx-6xx final response over unreliable transports
//! (Timer G) until the hop-by-hop ACK arrives (absorbed here) or Timer H gives up, and after a
//! 2xx absorb INVITE retransmissions while passing ACKs up to the TU (Timer L).
//!
//! 100 Trying: RFC 3261 §17.2.1 makes the transaction send one unless the TU answers within
//! 200 ms. The machine does exactly that: if the TU has sent nothing after [`TRYING_DELAY`], or
//! a retransmitted INVITE arrives first, it transmits a `100 Trying` built from the INVITE.
//! A TU that wants a 100 immediately simply sends it with [`ServerInvite::send_response`].
//!
//! Retransmitting a 2xx is the TU's job (the UAS core's own timer, or a proxy forwarding the
//! downstream retransmissions); this machine transmits every 2xx it is given while Accepted.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::super::message::SipMessage;
use super::super::method::Method;
use super::super::response::write_response;
use super::{check_status, deadline, earliest, is_due, Backoff, Output, SendError, Timers};

/// How long the machine waits for the TU's first response before sending `100 Trying` itself
/// (RFC 3261 §17.2.1).
pub const TRYING_DELAY: Duration = Duration::from_millis(200);

/// The externally visible state of a [`ServerInvite`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerInviteState {
    /// No final response yet.
    Proceeding,
    /// A 3xx-6xx was sent; waiting for the ACK (Timers G and H).
    Completed,
    /// The ACK arrived; absorbing ACK retransmissions (Timer I).
    Confirmed,
    /// A 2xx was sent; absorbing INVITE retransmissions, passing ACKs up (Timer L, RFC 6026).
    Accepted,
    /// Over.
    Terminated,
}

/// The state with the timers that belong to it.
#[derive(Debug)]
enum Phase {
    Proceeding {
        /// The last provisional response sent, re-sent on a retransmitted INVITE.
        provisional: Option<Bytes>,
        /// When to send `100 Trying` if the TU stays silent.
        timer_trying: Option<Instant>,
    },
    Completed {
        response: Bytes,
        timer_g: Option<Backoff>,
        timer_h: Option<Instant>,
    },
    Confirmed {
        timer_i: Option<Instant>,
    },
    Accepted {
        timer_l: Option<Instant>,
    },
    Terminated,
}

/// An INVITE server transaction. See the module docs for the state machine.
///
/// Drive it with [`Self::handle_request`], [`Self::send_response`] and
/// [`Self::handle_timeout`], and drain [`Self::poll_output`] after every such call.
#[derive(Debug)]
pub struct ServerInvite {
    /// `100 Trying` for this INVITE, built up front so that sending it needs no request.
    trying: Bytes,
    reliable: bool,
    timers: Timers,
    phase: Phase,
    out: VecDeque<Output>,
}

impl ServerInvite {
    /// Creates the transaction for a received `invite` (which the caller passes to the TU
    /// itself). Nothing is queued yet; `100 Trying` follows after [`TRYING_DELAY`] unless the
    /// TU responds first. `reliable` means a stream transport (no Timer G, Timer I = 0).
    #[must_use]
    pub fn new(invite: &SipMessage, reliable: bool, timers: Timers, now: Instant) -> Self {
        let mut trying = BytesMut::new();
        write_response(invite, 100, "Trying", None, &[], &mut trying);
        Self {
            trying: trying.freeze(),
            reliable,
            timers,
            phase: Phase::Proceeding {
                provisional: None,
                timer_trying: deadline(now, TRYING_DELAY),
            },
            out: VecDeque::with_capacity(2),
        }
    }

    /// Sends a response from the TU: `response` is the serialised response, `status` its
    /// code. A 1xx is remembered for retransmitted INVITEs; a 3xx-6xx moves to Completed; a
    /// 2xx moves to Accepted, where further 2xx (retransmissions) are still sent. Then drain
    /// [`Self::poll_output`].
    ///
    /// # Errors
    /// [`SendError::Terminated`] after termination, [`SendError::FinalSent`] for anything
    /// but a 2xx after a 2xx, or anything after a 3xx-6xx, [`SendError::BadStatus`] for a
    /// code outside `100..=699`. Nothing is sent then.
    pub fn send_response(
        &mut self,
        now: Instant,
        response: Bytes,
        status: u16,
    ) -> Result<(), SendError> {
        if self.is_terminated() {
            return Err(SendError::Terminated);
        }
        check_status(status)?;
        match (&mut self.phase, status) {
            (
                Phase::Proceeding {
                    provisional,
                    timer_trying,
                },
                100..=199,
            ) => {
                *provisional = Some(response.clone());
                *timer_trying = None;
            }
            (Phase::Proceeding { .. }, 200..=299) => {
                let timer_l = deadline(now, self.timers.transaction_timeout());
                self.phase = Phase::Accepted { timer_l };
            }
            (Phase::Proceeding { .. }, _) => {
                self.phase = Phase::Completed {
                    response: response.clone(),
                    timer_g: Backoff::start(now, self.timers.t1, self.reliable),
                    timer_h: deadline(now, self.timers.transaction_timeout()),
                };
            }
            (Phase::Accepted { .. }, 200..=299) => {}
            _ => return Err(SendError::FinalSent),
        }
        self.out.push_back(Output::Transmit(response));
        Ok(())
    }

    /// Feeds a request the caller matched to this transaction (RFC 3261 §17.2.3: a
    /// retransmitted INVITE, or the ACK, which carries the INVITE's branch for a non-2xx and
    /// is matched by the caller for a 2xx). Other methods are ignored. Then drain
    /// [`Self::poll_output`].
    ///
    /// A retransmitted INVITE re-sends the last provisional (or `100 Trying` if none was sent
    /// yet) in Proceeding and the final response in Completed; it is absorbed otherwise. An
    /// ACK moves Completed to Confirmed, is passed up as [`Output::Request`] in Accepted, and
    /// is absorbed otherwise.
    pub fn handle_request(&mut self, now: Instant, request: &SipMessage) {
        match (request.method(), &mut self.phase) {
            (
                Some(Method::Invite),
                Phase::Proceeding {
                    provisional,
                    timer_trying,
                },
            ) => {
                *timer_trying = None;
                let last = provisional.get_or_insert_with(|| self.trying.clone());
                self.out.push_back(Output::Transmit(last.clone()));
            }
            (Some(Method::Invite), Phase::Completed { response, .. }) => {
                self.out.push_back(Output::Transmit(response.clone()));
            }
            (Some(Method::Ack), Phase::Completed { .. }) => {
                if self.reliable {
                    self.terminate();
                } else {
                    let timer_i = deadline(now, self.timers.t4);
                    self.phase = Phase::Confirmed { timer_i };
                }
            }
            (Some(Method::Ack), Phase::Accepted { .. }) => {
                self.out
                    .push_back(Output::Request(Box::new(request.clone())));
            }
            _ => {}
        }
    }

    /// Processes the timers due at `now` (call it when [`Self::poll_timeout`] is reached;
    /// calling it early or late is harmless). Then drain [`Self::poll_output`].
    pub fn handle_timeout(&mut self, now: Instant) {
        match &mut self.phase {
            Phase::Proceeding {
                provisional,
                timer_trying,
            } if is_due(*timer_trying, now) => {
                *timer_trying = None;
                *provisional = Some(self.trying.clone());
                self.out.push_back(Output::Transmit(self.trying.clone()));
            }
            Phase::Completed { timer_h, .. } if is_due(*timer_h, now) => {
                self.out.push_back(Output::Timeout);
                self.terminate();
            }
            Phase::Completed {
                response, timer_g, ..
            } => {
                // Timer G: retransmit the final response; the gap doubles up to T2.
                if let Some(g) = timer_g.filter(|g| g.at <= now) {
                    let next = g.interval.saturating_mul(2).min(self.timers.t2);
                    *timer_g = Backoff::restart(now, next);
                    self.out.push_back(Output::Transmit(response.clone()));
                }
            }
            Phase::Confirmed { timer_i } if is_due(*timer_i, now) => self.terminate(),
            Phase::Accepted { timer_l } if is_due(*timer_l, now) => self.terminate(),
            _ => {}
        }
    }

    /// The earliest armed timer, or `None` when none is. Check it again after every call:
    /// transitions arm and disarm timers.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Proceeding { timer_trying, .. } => *timer_trying,
            Phase::Completed {
                timer_g, timer_h, ..
            } => earliest(*timer_g, *timer_h),
            Phase::Confirmed { timer_i } => *timer_i,
            Phase::Accepted { timer_l } => *timer_l,
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
    pub fn state(&self) -> ServerInviteState {
        match self.phase {
            Phase::Proceeding { .. } => ServerInviteState::Proceeding,
            Phase::Completed { .. } => ServerInviteState::Completed,
            Phase::Confirmed { .. } => ServerInviteState::Confirmed,
            Phase::Accepted { .. } => ServerInviteState::Accepted,
            Phase::Terminated => ServerInviteState::Terminated,
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
