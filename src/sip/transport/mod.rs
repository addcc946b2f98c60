//! SIP transports: thin drivers that move bytes between sockets and a [`SipHandler`].
//!
//! - `udp`: dedicated OS threads doing blocking, batched receives and sends (`recvmmsg` /
//!   `sendmmsg`, in `batch`) on one socket. A stateless redirect costs a few microseconds, so
//!   per-packet overhead matters more than anything here: a blocking thread avoids the epoll
//!   round trip and task wake-up of an async driver (measured in `benches/`, see the README).
//!   Cancellation is observed through a short read timeout (`SO_RCVTIMEO`).
//! - `tcp`: tokio tasks, one per connection, with Content-Length framing from `sip::core`; a
//!   connection with broken framing is answered 400 where possible and closed, since a stream
//!   cannot resynchronise.
//!
//! Handlers receive whole messages (datagrams or frames) and the peer; they write at most one
//! reply to that peer into the buffer they are given. They never block.

mod batch;
mod tcp;
mod udp;

use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

pub use tcp::{serve_tcp, TcpLimits};
pub use udp::UdpDriver;

/// Transport a message arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
}

/// Where a message came from.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// Source address.
    pub addr: SocketAddr,
    /// Transport.
    pub transport: Transport,
}

/// The business seam between transports and SIP logic (the redirect server, later the proxy).
pub trait SipHandler: Send + Sync + 'static {
    /// One complete message from `peer` (not yet parsed). Writes the reply to `peer`, if any,
    /// into `reply` (which arrives empty).
    fn on_message(&self, data: Bytes, peer: Peer, now: Instant, reply: &mut BytesMut);

    /// A stream message whose framing failed (bad or missing Content-Length): `head` is what was
    /// buffered; write a 400 into `reply` when one can be built. The connection is closed after.
    fn on_bad_frame(&self, head: &[u8], peer: Peer, reply: &mut BytesMut);

    /// Called at least every few hundred milliseconds: expire state.
    fn on_tick(&self, now: Instant);
}
