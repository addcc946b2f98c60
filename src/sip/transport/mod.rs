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
//! - `tls`: SIP over TLS, the `tcp` driver over a rustls stream (handshake in the connection's
//!   task, within a time limit).
//!
//! - `ws`: SIP over WebSocket (RFC 7118) on the HTTP listener: one SIP message per WebSocket
//!   message, a task per connection like `tcp`, pings for liveness, and
//!   [`SipHandler::on_closed`] when the socket goes (a browser agent's flow ends with it).
//!
//! - `hub`: sends to any destination: UDP through the listening socket (so replies come from the
//!   address peers know), TCP and TLS over the connection to that peer, opened on demand (TLS
//!   only with a client configuration). A proxy forwards between transports, so both drivers
//!   hand what they cannot send themselves to it. A connection that cannot be opened is
//!   reported to the handler ([`SipHandler::on_unreachable`]).
//!
//! - `guard`: supervision. Every driver calls the handler through [`Guarded`], so a panic in
//!   it is caught and counted and the listener goes on; each listener loop holds an [`Alive`],
//!   so one that ends anyway shows in [`Listeners`] (and `/ready`).
//!
//! Handlers receive whole messages (datagrams or frames) and the peer; they put the reply to that
//! peer and any messages for other destinations into an [`Outbox`]. They never block.

mod batch;
mod guard;
mod hub;
mod tcp;
mod tls;
mod udp;
mod ws;

use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

pub use guard::{listener_name, Alive, Guarded, ListenerState, Listeners, TIMERS};
pub use hub::Hub;
pub use tcp::{serve_tcp, TcpLimits};
pub use tls::serve_tls;
pub use udp::UdpDriver;
pub use ws::{serve_ws, WsEndpoint, WsLimits};

/// Transport a message arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
    /// SIP over WebSocket (RFC 7118), on the HTTP listener.
    Ws,
    /// SIP over secure WebSocket (RFC 7118).
    Wss,
}

impl Transport {
    /// WebSocket flows: reachable only over the connection the peer opened (never dialled).
    pub fn is_websocket(self) -> bool {
        matches!(self, Self::Ws | Self::Wss)
    }
}

/// Where a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    /// Source address.
    pub addr: SocketAddr,
    /// Transport.
    pub transport: Transport,
}

/// What a handler wants sent after one message or tick.
#[derive(Debug, Default)]
pub struct Outbox {
    /// The reply to the peer the message came from (written in place: the redirect hot path).
    pub reply: BytesMut,
    /// Messages for any destination, sent in order after `reply`.
    pub sends: Vec<(Peer, Bytes)>,
}

impl Outbox {
    /// An empty outbox with room for a typical reply.
    pub fn new() -> Self {
        Self { reply: BytesMut::with_capacity(2048), sends: Vec::new() }
    }

    /// Queues `data` for `to`.
    pub fn send(&mut self, to: Peer, data: Bytes) {
        self.sends.push((to, data));
    }

    /// Empties both parts.
    pub fn clear(&mut self) {
        self.reply.clear();
        self.sends.clear();
    }

    /// Nothing to send.
    pub fn is_empty(&self) -> bool {
        self.reply.is_empty() && self.sends.is_empty()
    }
}

/// The business seam between transports and SIP logic (the redirect server and the proxy).
pub trait SipHandler: Send + Sync + 'static {
    /// One complete message from `peer` (not yet parsed). The reply to `peer`, if any, goes into
    /// `out.reply`; messages for other destinations into `out.sends`. `out` arrives empty.
    fn on_message(&self, data: Bytes, peer: Peer, now: Instant, out: &mut Outbox);

    /// A stream message whose framing failed (bad or missing Content-Length): `head` is what was
    /// buffered; write a 400 into `reply` when one can be built. The connection is closed after.
    fn on_bad_frame(&self, head: &[u8], peer: Peer, reply: &mut BytesMut);

    /// Called at least every few hundred milliseconds: expire state, fire timers (retransmissions
    /// go into `out.sends`).
    fn on_tick(&self, now: Instant, out: &mut Outbox);

    /// A connection-oriented flow (a WebSocket today) closed: forget what was bound to it
    /// (registrations) and end what depended on it (later: the agent's call legs). Messages for
    /// other destinations go into `out`. The default does nothing.
    fn on_closed(&self, peer: Peer, now: Instant, out: &mut Outbox) {
        let _ = (peer, now, out);
    }

    /// Messages for `peer` could not be delivered: a TCP or TLS connection to it could not be
    /// opened (refused, timed out, the TLS handshake failed), or a TLS peer has no connection
    /// left and callgate cannot dial it. What waits for an answer from there should fail now
    /// (RFC 3261 §17.1.4). Messages for other destinations go into `out`. The default does
    /// nothing.
    fn on_unreachable(&self, peer: Peer, now: Instant, out: &mut Outbox) {
        let _ = (peer, now, out);
    }

    /// The name to check a TLS server's certificate against when callgate dials `addr` (a
    /// PBX's `pbx_host` name); `None`: its IP address.
    fn tls_server_name(&self, addr: SocketAddr) -> Option<String> {
        let _ = addr;
        None
    }
}
