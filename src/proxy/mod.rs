//! The stateful, record-routing edge proxy between the PBX and the agents' phones (DESIGN.md
//! §2.2, RFC 3261 §16): INVITE, CANCEL, ACK, BYE, REGISTER (relayed with Path), in-dialog
//! requests by Route (re-INVITE, UPDATE, INFO, REFER, NOTIFY), INVITE with Replaces.
//!
//! Direction: a request from a portal's `pbx_host` is the PBX's (sent to the extension's
//! registered or static contact); any other is an agent's (sent to the PBX). Every leg's
//! signalling is turned into [`crate::calls::Event`]s for the call tracker.
//!
//! Shape: `handle` holds the RFC 3261 §16 steps, `engine` the transaction table (the sans-IO
//! machines of `sip::core::transaction`) and timers, `target` next-hop selection, `observe` the
//! tracker events, `registrar` the bindings learnt from relayed REGISTERs. One lock guards the
//! engine and the tracker feed, so events reach the tracker in the order messages were handled;
//! nothing inside it blocks or awaits.
//!
//! Depends on: `sip::core`, `sip::transport` (types only), `routing` (the directory),
//! `calls`. Never on sockets or tokio.

mod engine;
mod front;
mod handle;
mod observe;
mod registrar;
mod target;
#[cfg(test)]
mod tests;

use std::hash::RandomState;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;

pub use self::front::Front;
pub use self::target::FlowLocator;

use self::engine::{Engine, Io};
use crate::calls::CallsHandle;
use crate::routing::Directory;
use crate::sip::core::transaction::Timers;
use crate::sip::core::{SipMessage, Uri, Via};
use crate::sip::transport::{Outbox, Peer, SipHandler, Transport};

/// The proxy's own addresses: what goes into Via, Record-Route and Path, and how a Route value
/// or a Via is recognised as ours.
#[derive(Debug, Clone, Default)]
pub struct Local {
    /// The UDP listener.
    pub udp: Option<SocketAddr>,
    /// The TCP listener.
    pub tcp: Option<SocketAddr>,
}

impl Local {
    fn addr(&self, t: Transport) -> Option<SocketAddr> {
        match t {
            Transport::Udp => self.udp.or(self.tcp),
            // WebSocket flows have no SIP listener of their own: they name the TCP one.
            Transport::Tcp | Transport::Tls | Transport::Ws | Transport::Wss => self.tcp.or(self.udp),
        }
    }

    fn sent_by(&self, t: Transport) -> String {
        self.addr(t).map_or_else(|| "127.0.0.1".to_owned(), |a| a.to_string())
    }

    /// `sip:ADDR;lr` (with `transport=tcp` on streams), bracketed.
    fn route_uri(&self, t: Transport) -> String {
        match t {
            Transport::Udp => format!("<sip:{};lr>", self.sent_by(t)),
            Transport::Ws | Transport::Wss => format!("<sip:{};transport=ws;lr>", self.sent_by(t)),
            _ => format!("<sip:{};transport=tcp;lr>", self.sent_by(t)),
        }
    }

    /// The Record-Route value facing `peer`: on a WebSocket flow it carries the flow token in
    /// its user part (RFC 5626 §5.3 style), so in-dialog requests from the PBX, addressed to the
    /// browser's unresolvable `.invalid` Contact, find the connection again.
    fn route_uri_for(&self, peer: Peer) -> String {
        if peer.transport.is_websocket() {
            format!("<sip:{}@{};transport=ws;lr>", flow_token(peer.addr), self.sent_by(peer.transport))
        } else {
            self.route_uri(peer.transport)
        }
    }

    /// One Record-Route value, or two when the request changes transport (RFC 5658): the
    /// downstream-facing one first.
    fn record_route(&self, inbound: Peer, outbound: Peer) -> Vec<String> {
        // A WebSocket side shares the TCP address but not its `transport=`: always two values.
        let (i, o) = (inbound.transport, outbound.transport);
        let same_kind = i.is_websocket() == o.is_websocket();
        if !i.is_websocket() && !o.is_websocket() && (i == o || (same_kind && self.addr(i) == self.addr(o))) {
            vec![self.route_uri(o)]
        } else {
            vec![self.route_uri_for(outbound), self.route_uri_for(inbound)]
        }
    }

    fn is_ours(&self, uri: &Uri<'_>) -> bool {
        let Some(addr) = crate::sip::core::socket_addr(uri.host, uri.port) else { return false };
        self.udp == Some(addr) || self.tcp == Some(addr)
    }

    fn is_our_via(&self, via: &Via<'_>) -> bool {
        crate::sip::core::socket_addr(via.host, via.port).is_some_and(|a| self.udp == Some(a) || self.tcp == Some(a))
    }
}

/// The user part naming a WebSocket flow in our Record-Route: `cgf-` and the peer's address
/// bytes and port in hex (no characters a SIP user part would need escaped).
pub(crate) fn flow_token(addr: SocketAddr) -> String {
    let mut s = String::from("cgf-");
    match addr.ip() {
        std::net::IpAddr::V4(ip) => ip.octets().iter().for_each(|b| s.push_str(&format!("{b:02x}"))),
        std::net::IpAddr::V6(ip) => ip.octets().iter().for_each(|b| s.push_str(&format!("{b:02x}"))),
    }
    s.push_str(&format!("-{:04x}", addr.port()));
    s
}

/// The flow address in a user part made by [`flow_token`].
pub(crate) fn parse_flow_token(user: &[u8]) -> Option<SocketAddr> {
    let rest = user.strip_prefix(b"cgf-")?;
    let dash = rest.iter().position(|&b| b == b'-')?;
    let (ip_hex, port_hex) = (&rest[..dash], &rest[dash + 1..]);
    let bytes = hex::decode(ip_hex).ok()?;
    let port = u16::from_str_radix(std::str::from_utf8(port_hex).ok()?, 16).ok()?;
    let ip = match bytes.len() {
        4 => std::net::IpAddr::from(<[u8; 4]>::try_from(bytes.as_slice()).ok()?),
        16 => std::net::IpAddr::from(<[u8; 16]>::try_from(bytes.as_slice()).ok()?),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The proxy itself sent a final non-2xx answer to an initial INVITE: it refused it (483, 404,
/// 403 ...) or gave up on it (408 after Timer B or C, 480 when the target's flow closed, 500).
/// Whatever was set up for that call ahead of the proxy (a browser call's media session) can go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFinal {
    /// The INVITE's Call-ID.
    pub call_id: Bytes,
    /// The INVITE's From tag.
    pub from_tag: Option<Bytes>,
    /// Where the INVITE came from (and the answer went).
    pub peer: Peer,
    /// The status sent.
    pub status: u16,
}

/// Hears of every [`LocalFinal`], after the message or tick that caused it was handled and the
/// proxy's lock released. Must not block.
pub trait LocalFinalHook: Send + Sync {
    /// A final non-2xx answer for `answer.call_id` was sent by the proxy itself.
    fn local_final(&self, answer: &LocalFinal);
}

struct ProxyMetrics {
    forwarded: metrics::Counter,
    refused: metrics::Counter,
    retransmissions: metrics::Counter,
    stray: metrics::Counter,
    malformed: metrics::Counter,
}

impl ProxyMetrics {
    fn new() -> Self {
        Self {
            forwarded: metrics::counter!("callgate_proxy_forwarded_total"),
            refused: metrics::counter!("callgate_proxy_refused_total"),
            retransmissions: metrics::counter!("callgate_proxy_retransmissions_total"),
            stray: metrics::counter!("callgate_proxy_stray_responses_total"),
            malformed: metrics::counter!("callgate_sip_malformed_total", "transport" => "proxy"),
        }
    }
}

/// The edge proxy.
pub struct Proxy {
    directory: Directory,
    local: Local,
    calls: CallsHandle,
    /// The transaction table; also serialises the tracker feed (see the module doc).
    engine: Mutex<Engine>,
    keys: RandomState,
    salt: u64,
    next_branch: AtomicU64,
    metrics: ProxyMetrics,
    /// Browser agents' WebSocket flows (WebRTC widget), consulted before the registrar.
    flows: Option<std::sync::Arc<dyn FlowLocator>>,
    /// Told about every initial INVITE the proxy answered itself with a final non-2xx.
    local_final_hook: Option<std::sync::Arc<dyn LocalFinalHook>>,
}

impl Proxy {
    /// A proxy on `local`'s addresses, reading `directory`, reporting to `calls`.
    pub fn new(directory: Directory, local: Local, calls: CallsHandle, timers: Timers) -> Self {
        Self {
            directory,
            local,
            calls,
            engine: Mutex::new(Engine::new(timers)),
            keys: RandomState::new(),
            salt: rand::random(),
            next_branch: AtomicU64::new(1),
            metrics: ProxyMetrics::new(),
            flows: None,
            local_final_hook: None,
        }
    }

    /// `hook` hears of every initial INVITE the proxy answers itself with a final non-2xx
    /// (see [`LocalFinalHook`]).
    #[must_use]
    pub fn with_local_final_hook(mut self, hook: std::sync::Arc<dyn LocalFinalHook>) -> Self {
        self.local_final_hook = Some(hook);
        self
    }

    /// Routes requests for extensions registered over WebSocket to their flow (see
    /// [`FlowLocator`]).
    #[must_use]
    pub fn with_flows(mut self, flows: std::sync::Arc<dyn FlowLocator>) -> Self {
        self.flows = Some(flows);
        self
    }

    /// A browser agent's WebSocket flow `peer` closed: what was sent there and never answered
    /// ends (a ringing INVITE gets 480 upstream, the tracker a failed leg).
    pub fn flow_gone(&self, peer: Peer, now: Instant, out: &mut Outbox) {
        let mut eng = self.engine.lock();
        let mut io = Io::new(out, now);
        eng.target_gone(peer, &mut io);
        if !io.events.is_empty() {
            self.calls.feed(now, io.events.drain(..));
        }
        drop(eng);
        self.tell_local_finals(io.local_finals);
    }

    /// Live (server, client) transactions.
    pub fn transactions(&self) -> (usize, usize) {
        self.engine.lock().counts()
    }

    /// A fresh RFC 3261 branch, unique per process run.
    fn new_branch(&self) -> String {
        let n = self.next_branch.fetch_add(1, Ordering::Relaxed);
        format!("z9hG4bK-cg-{:x}-{n:x}", self.salt & 0xffff_ffff)
    }

    /// Handles a parsed message.
    pub fn handle(&self, msg: &SipMessage, peer: Peer, now: Instant, out: &mut Outbox) {
        let snap = self.directory.snapshot();
        let mut eng = self.engine.lock();
        let mut io = Io::new(out, now);
        if msg.is_request() {
            self.request(&mut eng, msg, peer, &snap, &mut io);
        } else {
            self.response(&mut eng, msg, &mut io);
        }
        if !io.events.is_empty() {
            self.calls.feed(now, io.events.drain(..));
        }
        drop(eng);
        self.tell_local_finals(io.local_finals);
    }

    /// Tells the [`LocalFinalHook`] (outside the lock: it may take locks of its own).
    fn tell_local_finals(&self, finals: Vec<LocalFinal>) {
        let Some(hook) = &self.local_final_hook else { return };
        for answer in &finals {
            hook.local_final(answer);
        }
    }
}

impl SipHandler for Proxy {
    fn on_message(&self, data: Bytes, peer: Peer, now: Instant, out: &mut Outbox) {
        match SipMessage::parse(data.clone()) {
            Ok(msg) => self.handle(&msg, peer, now, out),
            Err(e) => {
                self.metrics.malformed.increment(1);
                tracing::debug!(addr = %peer.addr, error = %e, "malformed SIP message");
                crate::sip::core::write_bad_request(&data, &e, &mut out.reply);
            }
        }
    }

    fn on_bad_frame(&self, head: &[u8], _peer: Peer, reply: &mut BytesMut) {
        crate::sip::core::write_bad_frame(head, reply);
    }

    fn on_tick(&self, now: Instant, out: &mut Outbox) {
        let mut eng = self.engine.lock();
        let mut io = Io::new(out, now);
        eng.fire_timers(&mut io);
        eng.registrar.expire(now);
        self.calls.feed(now, io.events.drain(..));
        self.calls.tick(now);
        drop(eng);
        self.tell_local_finals(io.local_finals);
    }
}
