//! [`ServerNonInvite`]: the non-INVITE server transaction (RFC 3261 §17.2.2).
//!
//! Role: send the TU's responses to a received non-INVITE request, answer a retransmitted
//! request with the last response sent (absorbing it while none was), and after the final
//! response keep answering retransmissions until Timer J ends the transaction.
//!
//! No timer runs before the final response (the RFC defines none, and a non-INVITE server
//! transaction never sends `100 Trying` on its own, §17.2.2 / §16.2): bounding how long the TU
//! may take is the driver's policy.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use super::super::message::SipMessage;
use super::{check_status, deadline, is_due, Output, SendError, Timers};

/// The externally visible state of a [`ServerNonInvite`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerNonInviteState {
    /// No response sent yet; retransmitted requests are absorbed.
    Trying,
    /// A provisional response was sent; it is re-sent on retransmitted requests.
    Proceeding,
    /// The final response was sent; it is re-sent on retransmitted requests (Timer J).
    Completed,
    /// Over.
    Terminated,
}

/// The state with what it re-sends and the timer that belongs to it.
#[derive(Debug)]
enum Phase {
    Trying,
    Proceeding {
        provisional: Bytes,
    },
    Completed {
        response: Bytes,
        timer_j: Option<Instant>,
    },
    Terminated,
}

/// A non-INVITE server transaction. See the module docs for the state machine.
///
/// Drive it with [`Self::handle_request`], [`Self::send_response`] and
/// [`Self::handle_timeout`], and drain [`Self::poll_output`] after every such call.
#[derive(Debug)]
pub struct ServerNonInvite {
    reliable: bool,
    timers: Timers,
    phase: Phase,
    out: VecDeque<Output>,
}

impl ServerNonInvite {
    /// Creates the transaction for a received request (which the caller passes to the TU
    /// itself; nothing here needs it). `reliable` means a stream transport (Timer J = 0).
    #[must_use]
    pub fn new(reliable: bool, timers: Timers) -> Self {
        Self {
            reliable,
            timers,
            phase: Phase::Trying,
            out: VecDeque::with_capacity(2),
        }
    }

    /// Sends a response from the TU: `response` is the serialised response, `status` its
    /// code. A 1xx moves to Proceeding, a 200-699 to Completed (or straight to Terminated on a
    /// reliable transport). Then drain [`Self::poll_output`].
    ///
    /// # Errors
    /// [`SendError::Terminated`] after termination, [`SendError::FinalSent`] after a final
    /// response, [`SendError::BadStatus`] for a code outside `100..=699`. Nothing is sent then.
    pub fn send_response(
        &mut self,
        now: Instant,
        response: Bytes,
        status: u16,
    ) -> Result<(), SendError> {
        match self.phase {
            Phase::Terminated => return Err(SendError::Terminated),
            Phase::Completed { .. } => return Err(SendError::FinalSent),
            Phase::Trying | Phase::Proceeding { .. } => check_status(status)?,
        }
        self.out.push_back(Output::Transmit(response.clone()));
        if (100..=199).contains(&status) {
            self.phase = Phase::Proceeding {
                provisional: response,
            };
        } else if self.reliable {
            self.terminate();
        } else {
            let timer_j = deadline(now, self.timers.transaction_timeout());
            self.phase = Phase::Completed { response, timer_j };
        }
        Ok(())
    }

    /// Feeds a retransmission of the request the caller matched to this transaction
    /// (RFC 3261 §17.2.3). It re-sends the last response, if any. Then drain
    /// [`Self::poll_output`].
    pub fn handle_request(&mut self, _now: Instant, _request: &SipMessage) {
        match &self.phase {
            Phase::Proceeding {
                provisional: last, ..
            }
            | Phase::Completed { response: last, .. } => {
                self.out.push_back(Output::Transmit(last.clone()));
            }
            Phase::Trying | Phase::Terminated => {}
        }
    }

    /// Processes Timer J if due at `now` (call it when [`Self::poll_timeout`] is reached;
    /// calling it early or late is harmless). Then drain [`Self::poll_output`].
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Phase::Completed { timer_j, .. } = self.phase {
            if is_due(timer_j, now) {
                self.terminate();
            }
        }
    }

    /// Timer J's deadline in Completed, else `None`. Check it again after every call.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Completed { timer_j, .. } => timer_j,
            Phase::Trying | Phase::Proceeding { .. } | Phase::Terminated => None,
        }
    }

    /// The next thing for the driver to do, in order; `None` when there is nothing left.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// The current state.
    #[must_use]
    pub fn state(&self) -> ServerNonInviteState {
        match self.phase {
            Phase::Trying => ServerNonInviteState::Trying,
            Phase::Proceeding { .. } => ServerNonInviteState::Proceeding,
            Phase::Completed { .. } => ServerNonInviteState::Completed,
            Phase::Terminated => ServerNonInviteState::Terminated,
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
