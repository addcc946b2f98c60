//! The stateful, record-routing edge proxy between the PBX and the agents' phones (DESIGN.md
//! §2.2, RFC 3261 §16): INVITE, CANCEL, ACK, BYE, REGISTER (relayed with Path), in-dialog
//! requests by Route (re-INVITE, UPDATE, INFO, REFER, NOTIFY), INVITE with Replaces.
//!
//! Who may send what is decided once per message by `trust` (README, "Who may send what"): a
//! request from a portal's PBX goes to the extension's registered or static contact; an
//! authenticated agent's goes to its own portal's PBX; an in-dialog request to the other end of
//! the dialog named by callgate's signed Record-Route; anything else is refused and leaves no
//! state. Every leg's signalling is turned into [`crate::calls::Event`]s for the call tracker.
//!
//! Shape: `trust` classifies senders and signs/verifies route tokens, `handle` holds the
//! admission and the RFC 3261 §16 steps, `engine` the transaction table (the sans-IO machines of
//! `sip::core::transaction`) and timers, `target` next-hop selection, `observe` the tracker
//! events, `registrar` the bindings learnt from relayed REGISTERs. One lock guards the
//! engine and the tracker feed, so events reach the tracker in the order messages were handled;
//! nothing inside it blocks or awaits.
//!
//! The front door (`edge`) hands it every message that is not a routing request. Depends on:
//! `sip::core`, `sip::transport` (types only), `directory`, `settings`, `phone`, `calls`; browser
//! agents only through its own [`AgentDirectory`] and [`LocalFinalHook`] traits, which `webrtc`
//! implements (so `webrtc` sits above it). Never on sockets or tokio.

mod engine;
mod handle;
mod hold;
mod observe;
mod registrar;
mod target;
#[cfg(test)]
mod tests;
mod trust;

use std::hash::RandomState;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;

pub use self::handle::Admitted;
pub use self::trust::{AgentDirectory, AgentDirectory as FlowLocator, DigestOutcome, RouteKey};

use self::engine::{Engine, Io};
use crate::calls::CallsHandle;
use crate::directory::Directory;
use crate::sip::core::transaction::Timers;
use crate::sip::core::{SipMessage, Uri};
use crate::sip::transport::{Outbox, Peer, SipHandler, Transport};

/// The proxy's own addresses: what goes into Via, Record-Route and Path, and how a Route value
/// or a Via is recognised as ours.
#[derive(Debug, Clone, Default)]
pub struct Local {
    /// The UDP listener.
    pub udp: Option<SocketAddr>,
    /// The TCP listener.
    pub tcp: Option<SocketAddr>,
    /// The TLS listener (`sip.tls`, when it has a certificate).
    pub tls: Option<SocketAddr>,
    /// Host names that are callgate too (`sip.names` and the DNS names of the TLS certificate),
    /// lowercase: a phone that verifies callgate's certificate names it so in its Route.
    pub names: Vec<String>,
}

impl Local {
    fn addr(&self, t: Transport) -> Option<SocketAddr> {
        match t {
            Transport::Udp => self.udp.or(self.tcp),
            // Without a TLS listener nothing better can be named (a TLS peer could not reach
            // callgate again; the README says to configure `sip.tls` for TLS peers).
            Transport::Tls => self.tls.or(self.tcp).or(self.udp),
            // WebSocket flows have no SIP listener of their own: they name the TCP one.
            Transport::Tcp | Transport::Ws | Transport::Wss => self.tcp.or(self.udp),
        }
    }

    fn sent_by(&self, t: Transport) -> String {
        self.addr(t).map_or_else(|| "127.0.0.1".to_owned(), |a| a.to_string())
    }

    /// `sip:USER@ADDR;lr` (with `transport=tcp` or `transport=tls` on streams, `transport=ws`
    /// toward a browser), bracketed; `user` is callgate's signed token.
    fn route_uri(&self, t: Transport, user: &str) -> String {
        self.route_uri_in(t, user, false)
    }

    /// [`Self::route_uri`]; with `sips` (the request's Request-URI is a SIPS URI, RFC 3261
    /// §16.6 step 4) a TLS side gets `sips:USER@ADDR;lr`.
    fn route_uri_in(&self, t: Transport, user: &str, sips: bool) -> String {
        let addr = self.sent_by(t);
        match t {
            Transport::Udp => format!("<sip:{user}@{addr};lr>"),
            Transport::Tcp => format!("<sip:{user}@{addr};transport=tcp;lr>"),
            Transport::Tls if sips => format!("<sips:{user}@{addr};lr>"),
            Transport::Tls => format!("<sip:{user}@{addr};transport=tls;lr>"),
            Transport::Ws | Transport::Wss => format!("<sip:{user}@{addr};transport=ws;lr>"),
        }
    }

    /// One Record-Route value, or two when the request changes transport (RFC 5658): the
    /// downstream-facing one first. Both carry the dialog's token `user`. Each side's value
    /// names the listener and transport that side reaches callgate on, so a transport change
    /// (a phone on TCP or TLS, the PBX on UDP) always gives two.
    fn record_route(&self, inbound: Peer, outbound: Peer, user: &str, sips: bool) -> Vec<String> {
        let (downstream, upstream) = (self.route_uri_in(outbound.transport, user, sips), self.route_uri_in(inbound.transport, user, sips));
        if downstream == upstream {
            vec![downstream]
        } else {
            vec![downstream, upstream]
        }
    }

    /// Whether `uri` names callgate: one of its listeners' addresses, or one of its host names
    /// with one of its listeners' ports (5060, or 5061 for `sips:`/`transport=tls`, when absent).
    fn is_ours(&self, uri: &Uri<'_>) -> bool {
        let listeners = [self.udp, self.tcp, self.tls];
        if let Some(addr) = crate::sip::core::socket_addr(uri.host, uri.port) {
            return listeners.contains(&Some(addr));
        }
        let named = self.names.iter().any(|n| uri.host.eq_ignore_ascii_case(n.as_bytes()));
        let tls = uri.scheme.eq_ignore_ascii_case(b"sips") || uri.param(b"transport").is_some_and(|t| t.eq_ignore_ascii_case(b"tls"));
        let port = uri.port.unwrap_or(if tls { 5061 } else { 5060 });
        named && listeners.iter().flatten().any(|a| a.port() == port)
    }
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
    metrics: ProxyMetrics,
    /// Browser agents' WebSocket flows and the credentials issued to agents (the WebRTC
    /// registrar).
    agents: Option<std::sync::Arc<dyn AgentDirectory>>,
    /// Signs and checks callgate's Record-Route and Path tokens.
    route_key: RouteKey,
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
            metrics: ProxyMetrics::new(),
            agents: None,
            route_key: RouteKey::new(&rand::random()),
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

    /// Browser agents (their flows) and agents' issued credentials (see [`AgentDirectory`]).
    #[must_use]
    pub fn with_agents(mut self, agents: std::sync::Arc<dyn AgentDirectory>) -> Self {
        self.agents = Some(agents);
        self
    }

    /// Route tokens signed with `key` (kept in the data folder, so dialogs outlive a restart);
    /// without it, a random key per process.
    #[must_use]
    pub fn with_route_key(mut self, key: RouteKey) -> Self {
        self.route_key = key;
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

    /// The transport could not reach `peer` (a TCP or TLS connection refused, timed out or
    /// failed its handshake; a TLS peer with no connection left): what was sent there and not
    /// yet answered gets 503 upstream at once (RFC 3261 §17.1.4), not a 408 after Timer B.
    pub fn unreachable(&self, peer: Peer, now: Instant, out: &mut Outbox) {
        let mut eng = self.engine.lock();
        let mut io = Io::new(out, now);
        eng.target_unreachable(peer, &mut io);
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

    /// A fresh RFC 3261 branch: 128 random bits, so nobody can guess a live transaction's.
    fn new_branch(&self) -> String {
        format!("z9hG4bK-cg-{:032x}", rand::random::<u128>())
    }

    /// Handles a parsed message: the trust decision, then what it allows.
    pub fn handle(&self, msg: &SipMessage, peer: Peer, now: Instant, out: &mut Outbox) {
        let snap = self.directory.snapshot();
        let mut eng = self.engine.lock();
        let mut io = Io::new(out, now);
        if let Some(admitted) = self.admit_in(&eng, msg, peer, &snap, &mut io) {
            self.handle_admitted(&mut eng, msg, msg, peer, admitted, &mut io);
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

    /// The trust decision alone (the front asks it before the media bridge sees a message):
    /// `None` when `msg` goes no further (a refusal may be in `out`).
    pub fn admit(&self, msg: &SipMessage, peer: Peer, now: Instant, out: &mut Outbox) -> Option<Admitted> {
        let snap = self.directory.snapshot();
        let eng = self.engine.lock();
        let mut io = Io::new(out, now);
        let admitted = self.admit_in(&eng, msg, peer, &snap, &mut io);
        drop(eng);
        self.tell_local_finals(io.local_finals);
        admitted
    }

    /// Carries out an earlier [`Self::admit`] for `msg` (the same message, or the media
    /// bridge's rewrite of it). `sent` is the message as its sender sent it: what the call
    /// tracker is told (a hold is read from the SDP a side offered, not from its rewrite).
    pub fn handle_as(&self, msg: &SipMessage, sent: &SipMessage, peer: Peer, admitted: Admitted, now: Instant, out: &mut Outbox) {
        let mut eng = self.engine.lock();
        let mut io = Io::new(out, now);
        self.handle_admitted(&mut eng, msg, sent, peer, admitted, &mut io);
        if !io.events.is_empty() {
            self.calls.feed(now, io.events.drain(..));
        }
        drop(eng);
        self.tell_local_finals(io.local_finals);
    }

    /// A BYE callgate itself sends for a browser agent that vanished (its flow closed, its media
    /// died): built by the media bridge from the dialog it saw, so it needs no admission; it goes
    /// to the PBX contact the bridge recorded, like the browser's own BYE would have.
    pub fn hang_up_for(&self, bye: &SipMessage, peer: Peer, now: Instant, out: &mut Outbox) {
        let Some(uri) = bye.request_uri().and_then(Uri::parse) else { return };
        let Some(to) = target::uri_peer(&uri, Transport::Udp) else { return };
        let mut eng = self.engine.lock();
        let mut io = Io::new(out, now);
        let key = eng.server_key((bye.call_id(), bye.cseq().map(|c| c.seq), "hang-up"));
        let hop = target::NextHop { peer: to, request_uri: None, pop_route: 0 };
        let admitted = Admitted::hang_up(key, hop);
        self.handle_admitted(&mut eng, bye, bye, peer, admitted, &mut io);
        if !io.events.is_empty() {
            self.calls.feed(now, io.events.drain(..));
        }
        drop(eng);
        self.tell_local_finals(io.local_finals);
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
