//! Sans-IO SIP transactions: the four RFC 3261 §17 state machines, with the RFC 6026
//! "Accepted" state, plus the hop-by-hop ACK for a non-2xx final response.
//!
//! Role: each machine is a plain struct driven quinn-proto style. Feed it events
//! (`handle_response` / `handle_request` / `send_response`, and `handle_timeout(now)` when
//! `poll_timeout()` is reached), then drain `poll_output()` until `None` after *every* call
//! (including `new`). The driver owns sockets and scheduling: it sleeps until the earliest
//! `poll_timeout()` of all its transactions, sends [`Output::Transmit`] to the transaction's
//! peer and hands [`Output::Response`] / [`Output::Request`] to the transaction user (TU).
//! Matching messages to a transaction (top-Via branch + sent-by + method, RFC 3261 §17.1.3 /
//! §17.2.3) is the caller's job; a machine trusts that what it is given belongs to it.
//!
//! May depend on: `bytes` and the parent `sip::core` parser/writer. Never: a clock
//! (`now: Instant` is always passed in), sockets, tokio, logging.
//!
//! Invariants: no panics, no indexing, checked `Instant` arithmetic (a deadline that would
//! overflow is simply never reached), every timer belongs to the state it is armed in (the
//! timers live inside the private state enum, so a stale timer cannot fire in a later state),
//! [`Output::Terminated`] is emitted exactly once, and nothing is emitted after it.
//! `reliable` means a stream transport (TCP, TLS, WS): no retransmission timers run and the
//! "linger" timers D, I, J and K are zero.
//!
//! Allocation: unlike the parser, a transaction allocates (its output queue, one `Box` per
//! message passed up, the ACK and `100 Trying` it builds); it lives for seconds, not per packet.
//!
//! State diagrams (T1 = 500 ms, T2 = 4 s, T4 = 5 s by default; see [`Timers`]):
//! ```text
//! ClientInvite (§17.1.1, RFC 6026 §8.4)         Timer A: retransmit, T1 doubling, no cap
//!   Calling --1xx--> Proceeding --1xx--> Proceeding     (1xx go up; Timer B stops, see file)
//!   Calling --Timer B--> Timeout, Terminated
//!   Calling --transport error--> TransportError, Terminated
//!   Calling|Proceeding --300-699--> Completed --Timer D--> Terminated
//!       (ACK sent, response up once; a retransmitted final re-sends the ACK)
//!   Calling|Proceeding --2xx--> Accepted --Timer M--> Terminated  (every 2xx up, no ACK)
//! ClientNonInvite (§17.1.2)       Timer E: retransmit, T1 doubling capped at T2; T2 in Proceeding
//!   Trying --1xx--> Proceeding
//!   Trying|Proceeding --200-699--> Completed --Timer K--> Terminated
//!   Trying|Proceeding --Timer F--> Timeout, Terminated
//!   Trying --transport error--> TransportError, Terminated
//! ServerInvite (§17.2.1, RFC 6026 §7.1)     Timer G: retransmit the final, T1 doubling to T2
//!   Proceeding --TU 1xx--> Proceeding    (100 Trying from the machine after 200 ms of silence)
//!   Proceeding --TU 300-699--> Completed --ACK--> Confirmed --Timer I--> Terminated
//!   Completed --Timer H--> Timeout, Terminated
//!   Proceeding --TU 2xx--> Accepted --Timer L--> Terminated
//!       (INVITE retransmissions absorbed, ACKs up, further TU 2xx sent)
//! ServerNonInvite (§17.2.2)
//!   Trying --TU 1xx--> Proceeding
//!   Trying|Proceeding --TU 200-699--> Completed --Timer J--> Terminated
//!   a retransmitted request re-sends the last response (absorbed in Trying)
//! ```
//! Timers B, F, H, L, M = 64·T1; D = max(32 s, 64·T1) unreliable, 0 reliable; I, K = T4
//! unreliable, 0 reliable; J = 64·T1 unreliable, 0 reliable.

mod ack;
mod client_invite;
mod client_non_invite;
mod server_invite;
mod server_non_invite;

#[cfg(test)]
mod tests;

use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::message::SipMessage;

pub use self::ack::build_ack;
pub use self::client_invite::{ClientInvite, ClientInviteState};
pub use self::client_non_invite::{ClientNonInvite, ClientNonInviteState};
pub use self::server_invite::{ServerInvite, ServerInviteState, TRYING_DELAY};
pub use self::server_non_invite::{ServerNonInvite, ServerNonInviteState};

/// The RFC 3261 timer base values (§17.1.1.1, Table 4). All other timers derive from them.
///
/// Keep them non-zero: a zero T1 makes every retransmission and time-out due at once (the
/// machines stay correct, but the driver would spin on `poll_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// Round-trip time estimate: the first retransmission interval (default 500 ms).
    pub t1: Duration,
    /// Maximum retransmission interval for non-INVITE requests and INVITE responses (4 s).
    pub t2: Duration,
    /// Maximum time a message stays in the network (5 s): Timers I and K on UDP.
    pub t4: Duration,
}

impl Timers {
    /// The RFC 3261 defaults: T1 = 500 ms, T2 = 4 s, T4 = 5 s.
    pub const RFC3261: Self = Self {
        t1: Duration::from_millis(500),
        t2: Duration::from_secs(4),
        t4: Duration::from_secs(5),
    };

    /// 64·T1 (32 s by default): Timers B, F, H, L, M, and J on unreliable transports.
    #[must_use]
    pub fn transaction_timeout(&self) -> Duration {
        self.t1.saturating_mul(64)
    }

    /// Timer D on unreliable transports: at least 32 s (RFC 3261 Table 4), and at least
    /// 64·T1 so that it outlives every retransmission of the final response (Timer H).
    #[must_use]
    pub fn timer_d(&self) -> Duration {
        self.transaction_timeout().max(Duration::from_secs(32))
    }
}

impl Default for Timers {
    fn default() -> Self {
        Self::RFC3261
    }
}

/// What a transaction asks its driver to do. Drain with `poll_output()` after every call.
#[derive(Debug, Clone)]
pub enum Output {
    /// Send these bytes to the transaction's peer: the request or a retransmission of it, the
    /// ACK for a non-2xx final response, or a (re)transmitted response.
    Transmit(Bytes),
    /// Client transactions: a response for the TU (provisional, 2xx, or the first copy of a
    /// 3xx-6xx final). Boxed because a parsed message carries its header index inline.
    Response(Box<SipMessage>),
    /// Server INVITE transaction in the Accepted state: an ACK for the 2xx, for the TU.
    Request(Box<SipMessage>),
    /// Timer B, F or H fired: no (final) response, or no ACK, arrived in time. For a client
    /// transaction the TU treats it as a 408 (RFC 3261 §8.1.3.1). `Terminated` follows.
    Timeout,
    /// Client transactions: the transport could not deliver the request (a connection to the
    /// peer could not be opened, RFC 3261 §17.1.4). The TU treats it as a 503 (§8.1.3.1,
    /// §16.7 step 5 for a proxy). `Terminated` follows.
    TransportError,
    /// The transaction is over: the driver may drop it. Emitted exactly once, last.
    Terminated,
}

/// Why a server transaction refused a response from the TU.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The transaction has terminated; the response was not sent.
    Terminated,
    /// A final response was already sent; only a further 2xx is allowed after a 2xx to an
    /// INVITE (RFC 6026 Accepted state).
    FinalSent,
    /// The status code is outside `100..=699`.
    BadStatus {
        /// The code the TU passed.
        status: u16,
    },
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Terminated => f.write_str("transaction terminated"),
            Self::FinalSent => f.write_str("final response already sent"),
            Self::BadStatus { status } => write!(f, "status code {status} outside 100..=699"),
        }
    }
}

impl std::error::Error for SendError {}

/// A retransmission timer (A, E, G): when it fires next and the interval that led there.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    at: Instant,
    interval: Duration,
}

impl Backoff {
    /// Armed only on unreliable transports; `None` also when the deadline would overflow.
    fn start(now: Instant, interval: Duration, reliable: bool) -> Option<Self> {
        if reliable {
            return None;
        }
        Some(Self {
            at: now.checked_add(interval)?,
            interval,
        })
    }

    /// Re-arms after firing at `now`, with `interval` as the next gap. Counting from `now`
    /// (not from the old deadline) means a late driver gets one retransmission, not a burst.
    fn restart(now: Instant, interval: Duration) -> Option<Self> {
        Self::start(now, interval, false)
    }
}

/// `now + d`, or `None` (never) when that overflows `Instant`.
fn deadline(now: Instant, d: Duration) -> Option<Instant> {
    now.checked_add(d)
}

/// Whether an optional deadline has been reached.
fn is_due(at: Option<Instant>, now: Instant) -> bool {
    at.is_some_and(|at| at <= now)
}

/// The earliest of a retransmission timer and a plain deadline.
fn earliest(backoff: Option<Backoff>, at: Option<Instant>) -> Option<Instant> {
    match (backoff.map(|b| b.at), at) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Checks a TU-supplied status code.
fn check_status(status: u16) -> Result<(), SendError> {
    if (100..=699).contains(&status) {
        Ok(())
    } else {
        Err(SendError::BadStatus { status })
    }
}

/// The message bytes as a zero-copy `Bytes` (without leading CRLFs or trailing datagram data).
fn wire_bytes(msg: &SipMessage) -> Bytes {
    msg.buffer().slice_ref(msg.as_bytes())
}
