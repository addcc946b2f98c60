//! The proxy's transaction table: server and client transactions (the sans-IO machines of
//! `sip::core::transaction`) paired the way RFC 3261 §16 pairs them, their timers in one heap,
//! and the draining of their outputs into sends and tracker events.
//!
//! One owner: the table lives behind the proxy's single lock, so a response and its request's
//! retransmission never race. Nothing here blocks or awaits.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::observe;
use super::registrar::{PendingRegister, Registrar};
use super::LocalFinal;
use crate::calls::Event;
use crate::sip::core::transaction::{ClientInvite, ClientInviteState, ClientNonInvite, Output, ServerInvite, ServerNonInvite, Timers};
use crate::sip::core::{to_tag_for, write_cancel, write_forwarded_response, write_response, SipMessage};
use crate::sip::transport::{Outbox, Peer, Transport};

/// What a server transaction is for, so its responses can be observed.
#[derive(Debug)]
pub(crate) enum Purpose {
    /// An INVITE without To-tag: a new leg.
    InitialInvite,
    /// A REFER (its 2xx is "transfer accepted").
    Refer,
    /// A REGISTER relayed to the PBX (its 2xx is applied to the registrar).
    Register(PendingRegister),
    /// Anything else.
    Other,
}

pub(crate) enum ServerTx {
    Invite(ServerInvite),
    NonInvite(ServerNonInvite),
}

pub(crate) enum ClientTx {
    Invite(ClientInvite),
    NonInvite(ClientNonInvite),
}

pub(crate) struct ServerEntry {
    pub(crate) tx: ServerTx,
    pub(crate) peer: Peer,
    /// The request's bytes (parsed again only to build a local answer: a parsed message is
    /// about 1.4 KB and tens of thousands of transactions are live at a time).
    pub(crate) request: Bytes,
    pub(crate) client: Option<u64>,
    pub(crate) purpose: Purpose,
    /// The final status sent upstream, once there is one.
    pub(crate) final_status: Option<u16>,
}

pub(crate) struct ClientEntry {
    pub(crate) tx: ClientTx,
    pub(crate) target: Peer,
    pub(crate) server: Option<u64>,
    /// A provisional answer arrived (a CANCEL may be sent only after one, RFC 3261 §9.1).
    pub(crate) provisional: bool,
    /// The upstream side cancelled before any provisional answer: CANCEL on the first one.
    pub(crate) cancel_pending: bool,
    /// Timer C (RFC 3261 §16.6 item 11, INVITE only): when ringing has lasted too long.
    pub(crate) timer_c: Option<Instant>,
    /// Timer C fired once and a CANCEL went out; the next firing gives up with 408.
    pub(crate) timer_c_fired: bool,
}

/// Timer C: at least 3 minutes (RFC 3261 §16.6 item 11); restarted by every non-100 provisional.
const TIMER_C: Duration = Duration::from_secs(180);
/// After Timer C's CANCEL, how long the phone has to answer 487 before the PBX gets 408.
const TIMER_C_GRACE: Duration = Duration::from_secs(32);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TxRef {
    Server(u64),
    Client(u64),
    TimerC(u64),
}

/// Sends and tracker events produced while handling one message or tick.
pub(crate) struct Io<'a> {
    pub(crate) out: &'a mut Outbox,
    pub(crate) events: Vec<Event>,
    pub(crate) now: Instant,
    /// Initial INVITEs answered here with a final non-2xx, for the [`super::LocalFinalHook`]
    /// (told once the proxy's lock is released).
    pub(crate) local_finals: Vec<LocalFinal>,
}

impl<'a> Io<'a> {
    pub(crate) fn new(out: &'a mut Outbox, now: Instant) -> Self {
        Self { out, events: Vec::new(), now, local_finals: Vec::new() }
    }

    /// The proxy itself answered `req` (from `peer`) with `status`: noted when that is a final
    /// non-2xx to an initial INVITE (what was set up ahead of the proxy for it can go).
    pub(crate) fn note_local_final(&mut self, req: &SipMessage, peer: Peer, status: u16) {
        let initial_invite = req.method() == Some(crate::sip::core::Method::Invite) && req.to().is_some_and(|t| t.tag.is_none());
        let Some(call_id) = req.call_id().filter(|_| status >= 300 && initial_invite) else { return };
        let from_tag = req.from().and_then(|f| f.tag).map(Bytes::copy_from_slice);
        self.local_finals.push(LocalFinal { call_id: Bytes::copy_from_slice(call_id), from_tag, peer, status });
    }
}

/// All transactions of the proxy.
pub(crate) struct Engine {
    pub(crate) servers: HashMap<u64, ServerEntry>,
    pub(crate) clients: HashMap<u64, ClientEntry>,
    pub(crate) registrar: Registrar,
    pub(crate) timers: Timers,
    heap: BinaryHeap<Reverse<(Instant, TxRef)>>,
    /// Live server transactions per source address (see [`Engine::load_of`]).
    per_source: HashMap<std::net::IpAddr, u32>,
    /// Per-process random keys: a sender cannot craft colliding transaction keys.
    keys: RandomState,
}

impl Engine {
    pub(crate) fn new(timers: Timers) -> Self {
        Self { servers: HashMap::new(), clients: HashMap::new(), registrar: Registrar::default(), timers, heap: BinaryHeap::new(), per_source: HashMap::new(), keys: RandomState::new() }
    }

    /// The key of the client transaction with our branch `branch` (the CANCEL for an INVITE
    /// shares its branch, hence the flag).
    pub(crate) fn client_key(&self, branch: &[u8], cancel: bool) -> u64 {
        self.keys.hash_one((branch, cancel))
    }

    /// The key of a server transaction: `parts` is what RFC 3261 §17.2.3 matches on.
    pub(crate) fn server_key(&self, parts: impl std::hash::Hash) -> u64 {
        self.keys.hash_one(parts)
    }

    /// Starts a server transaction for `req` from `peer`.
    pub(crate) fn add_server(&mut self, key: u64, req: &SipMessage, peer: Peer, purpose: Purpose, now: Instant) {
        let reliable = peer.transport != Transport::Udp;
        let tx = if req.method() == Some(crate::sip::core::Method::Invite) {
            ServerTx::Invite(ServerInvite::new(req, reliable, self.timers, now))
        } else {
            ServerTx::NonInvite(ServerNonInvite::new(reliable, self.timers))
        };
        let old = self.servers.insert(key, ServerEntry { tx, peer, request: req.buffer().slice_ref(req.as_bytes()), client: None, purpose, final_status: None });
        *self.per_source.entry(peer.addr.ip()).or_default() += 1;
        if let Some(old) = old {
            self.release_source(old.peer);
        }
    }

    /// Starts a client transaction sending `fwd` to `target` on behalf of server `server`.
    pub(crate) fn add_client(&mut self, key: u64, fwd: &SipMessage, target: Peer, server: Option<u64>, io: &mut Io<'_>) {
        let reliable = target.transport != Transport::Udp;
        let invite = fwd.method() == Some(crate::sip::core::Method::Invite);
        let tx = if invite {
            ClientTx::Invite(ClientInvite::new(fwd, reliable, self.timers, io.now))
        } else {
            ClientTx::NonInvite(ClientNonInvite::new(fwd.buffer().clone(), reliable, self.timers, io.now))
        };
        let timer_c = invite.then(|| io.now + TIMER_C);
        if let Some(at) = timer_c {
            self.heap.push(Reverse((at, TxRef::TimerC(key))));
        }
        self.clients.insert(key, ClientEntry { tx, target, server, provisional: false, cancel_pending: false, timer_c, timer_c_fired: false });
        if let Some(s) = server.and_then(|s| self.servers.get_mut(&s)) {
            s.client = Some(key);
        }
        self.drain_client(key, io);
    }

    /// Sends `response` (already without our Via) upstream through server transaction `key`.
    pub(crate) fn respond(&mut self, key: u64, response: Bytes, status: u16, io: &mut Io<'_>) {
        let Some(s) = self.servers.get_mut(&key) else { return };
        let sent = match &mut s.tx {
            ServerTx::Invite(t) => t.send_response(io.now, response, status),
            ServerTx::NonInvite(t) => t.send_response(io.now, response, status),
        };
        if sent.is_ok() && status >= 200 && s.final_status.is_none() {
            s.final_status = Some(status);
        }
        self.drain_server(key, io);
    }

    /// A response built by the proxy itself (408, 503 ...) for server transaction `key`.
    pub(crate) fn respond_local(&mut self, key: u64, status: u16, reason: &str, io: &mut Io<'_>) {
        let Some(s) = self.servers.get(&key) else { return };
        let Ok(req) = SipMessage::parse(s.request.clone()) else { return };
        let mut buf = BytesMut::new();
        write_response(&req, status, reason, Some(&to_tag_for(&req)), &[], &mut buf);
        io.note_local_final(&req, s.peer, status);
        self.respond(key, buf.freeze(), status, io);
    }

    /// A retransmitted request (or an ACK for a non-2xx) for server transaction `key`.
    pub(crate) fn server_request(&mut self, key: u64, req: &SipMessage, io: &mut Io<'_>) {
        let Some(s) = self.servers.get_mut(&key) else { return };
        match &mut s.tx {
            ServerTx::Invite(t) => t.handle_request(io.now, req),
            ServerTx::NonInvite(t) => t.handle_request(io.now, req),
        }
        self.drain_server(key, io);
    }

    /// A response whose top Via branch names client transaction `key`.
    pub(crate) fn client_response(&mut self, key: u64, resp: &SipMessage, io: &mut Io<'_>) {
        let Some(c) = self.clients.get_mut(&key) else { return };
        match &mut c.tx {
            ClientTx::Invite(t) => t.handle_response(io.now, resp),
            ClientTx::NonInvite(t) => t.handle_response(io.now, resp),
        }
        let status = resp.status().unwrap_or(0);
        let mut cancel_now = false;
        if (100..200).contains(&status) {
            c.provisional = true;
            cancel_now = std::mem::take(&mut c.cancel_pending);
            if status > 100 && c.timer_c.is_some() && !c.timer_c_fired {
                let at = io.now + TIMER_C;
                c.timer_c = Some(at);
                self.heap.push(Reverse((at, TxRef::TimerC(key))));
            }
        }
        self.drain_client(key, io);
        if cancel_now {
            self.send_cancel(key, io);
        }
    }

    /// Cancels the INVITE of client transaction `key` (RFC 3261 §9.1): at once when a
    /// provisional answer arrived, else as soon as one does. Nothing once a final answer came.
    pub(crate) fn cancel(&mut self, key: u64, io: &mut Io<'_>) {
        let Some(c) = self.clients.get_mut(&key) else { return };
        let ClientTx::Invite(t) = &c.tx else { return };
        if !matches!(t.state(), ClientInviteState::Calling | ClientInviteState::Proceeding) {
            return;
        }
        if c.provisional {
            self.send_cancel(key, io);
        } else {
            c.cancel_pending = true;
        }
    }

    fn send_cancel(&mut self, key: u64, io: &mut Io<'_>) {
        let Some(c) = self.clients.get(&key) else { return };
        let ClientTx::Invite(t) = &c.tx else { return };
        if !matches!(t.state(), ClientInviteState::Calling | ClientInviteState::Proceeding) {
            return;
        }
        let Some(invite) = t.invite() else { return };
        let mut buf = BytesMut::new();
        write_cancel(&invite, &mut buf);
        let Ok(cancel) = SipMessage::parse(buf.freeze()) else { return };
        let branch = cancel.top_via().and_then(|v| v.branch).unwrap_or_default();
        let cancel_key = self.client_key(branch, true);
        let target = c.target;
        if !self.clients.contains_key(&cancel_key) {
            self.add_client(cancel_key, &cancel, target, None, io);
        }
    }

    /// Timer C fired for client transaction `key`: CANCEL the ringing phone; if it still has
    /// not answered `TIMER_C_GRACE` later, give the PBX 408 and forget the transaction.
    fn timer_c(&mut self, key: u64, io: &mut Io<'_>) {
        let Some(c) = self.clients.get_mut(&key) else { return };
        if c.timer_c.is_none_or(|at| at > io.now) {
            return; // restarted by a provisional answer, or not an INVITE
        }
        let ClientTx::Invite(t) = &c.tx else { return };
        if !matches!(t.state(), ClientInviteState::Calling | ClientInviteState::Proceeding) {
            c.timer_c = None;
            return;
        }
        if c.timer_c_fired {
            let server = c.server;
            self.clients.remove(&key);
            return self.client_timed_out(server, io);
        }
        c.timer_c_fired = true;
        let at = io.now + TIMER_C_GRACE;
        c.timer_c = Some(at);
        self.heap.push(Reverse((at, TxRef::TimerC(key))));
        self.send_cancel(key, io);
    }

    /// Fires every timer due at `io.now`.
    pub(crate) fn fire_timers(&mut self, io: &mut Io<'_>) {
        while let Some(Reverse((at, which))) = self.heap.peek().copied() {
            if at > io.now {
                break;
            }
            self.heap.pop();
            match which {
                TxRef::Server(k) => {
                    let Some(s) = self.servers.get_mut(&k) else { continue };
                    match &mut s.tx {
                        ServerTx::Invite(t) if t.poll_timeout().is_some_and(|d| d <= io.now) => t.handle_timeout(io.now),
                        ServerTx::NonInvite(t) if t.poll_timeout().is_some_and(|d| d <= io.now) => t.handle_timeout(io.now),
                        _ => continue,
                    }
                    self.drain_server(k, io);
                }
                TxRef::TimerC(k) => self.timer_c(k, io),
                TxRef::Client(k) => {
                    let Some(c) = self.clients.get_mut(&k) else { continue };
                    match &mut c.tx {
                        ClientTx::Invite(t) if t.poll_timeout().is_some_and(|d| d <= io.now) => t.handle_timeout(io.now),
                        ClientTx::NonInvite(t) if t.poll_timeout().is_some_and(|d| d <= io.now) => t.handle_timeout(io.now),
                        _ => continue,
                    }
                    self.drain_client(k, io);
                }
            }
        }
    }

    fn drain_server(&mut self, key: u64, io: &mut Io<'_>) {
        let Some(s) = self.servers.get_mut(&key) else { return };
        let mut terminated = false;
        loop {
            let output = match &mut s.tx {
                ServerTx::Invite(t) => t.poll_output(),
                ServerTx::NonInvite(t) => t.poll_output(),
            };
            match output {
                None => break,
                Some(Output::Transmit(b)) => io.out.send(s.peer, b),
                Some(Output::Terminated) => terminated = true,
                // An ACK matching the INVITE's branch after a 2xx: end to end, nothing to do
                // here (the 2xx ACK travels by Route, statelessly). Timer H: the UAC never
                // acknowledged our final response; the transaction just ends.
                Some(Output::Request(_) | Output::Timeout | Output::TransportError | Output::Response(_)) => {}
            }
        }
        let next = match &s.tx {
            ServerTx::Invite(t) => t.poll_timeout(),
            ServerTx::NonInvite(t) => t.poll_timeout(),
        };
        if terminated {
            if let Some(s) = self.servers.remove(&key) {
                self.release_source(s.peer);
            }
        } else if let Some(at) = next {
            self.heap.push(Reverse((at, TxRef::Server(key))));
        }
    }

    fn drain_client(&mut self, key: u64, io: &mut Io<'_>) {
        let mut terminated = false;
        loop {
            let Some(c) = self.clients.get_mut(&key) else { return };
            let output = match &mut c.tx {
                ClientTx::Invite(t) => t.poll_output(),
                ClientTx::NonInvite(t) => t.poll_output(),
            };
            let (target, server) = (c.target, c.server);
            match output {
                None => break,
                Some(Output::Transmit(b)) => io.out.send(target, b),
                Some(Output::Response(resp)) => self.pass_up(server, &resp, io),
                Some(Output::Timeout) => self.client_timed_out(server, io),
                // RFC 3261 §16.7 step 5 (via §8.1.3.1): a transport error is a 503, at once.
                Some(Output::TransportError) => self.give_up(server, 503, "Service Unavailable", io),
                Some(Output::Terminated) => terminated = true,
                Some(Output::Request(_)) => {}
            }
        }
        let Some(c) = self.clients.get(&key) else { return };
        let next = match &c.tx {
            ClientTx::Invite(t) => t.poll_timeout(),
            ClientTx::NonInvite(t) => t.poll_timeout(),
        };
        if terminated {
            self.clients.remove(&key);
        } else if let Some(at) = next {
            self.heap.push(Reverse((at, TxRef::Client(key))));
        }
    }

    /// A response from downstream: observe it, then forward it upstream without our Via.
    fn pass_up(&mut self, server: Option<u64>, resp: &SipMessage, io: &mut Io<'_>) {
        let Some(skey) = server else { return }; // our own CANCEL's answer: nothing to forward
        let Some(status) = resp.status() else { return };
        if let Some(s) = self.servers.get_mut(&skey) {
            match &s.purpose {
                Purpose::InitialInvite | Purpose::Refer => io.events.extend(observe::response(resp, matches!(s.purpose, Purpose::InitialInvite))),
                Purpose::Register(_) if (200..300).contains(&status) => {
                    if let Purpose::Register(reg) = std::mem::replace(&mut s.purpose, Purpose::Other) {
                        self.registrar.accepted(reg, resp, io.now);
                    }
                }
                _ => {}
            }
        }
        if status == 100 {
            return; // hop by hop: we sent our own
        }
        let mut buf = BytesMut::with_capacity(resp.as_bytes().len());
        write_forwarded_response(resp, &mut buf);
        self.respond(skey, buf.freeze(), status, io);
    }

    /// Timer B or F: no final answer from downstream. Upstream gets 408 (RFC 3261 §16.7 step 6).
    fn client_timed_out(&mut self, server: Option<u64>, io: &mut Io<'_>) {
        self.give_up(server, 408, "Request Timeout", io);
    }

    /// Upstream gets `status` for server transaction `server` (if it has no final answer yet),
    /// and the tracker a failed leg when it was a new leg.
    fn give_up(&mut self, server: Option<u64>, status: u16, reason: &str, io: &mut Io<'_>) {
        let Some(skey) = server else { return };
        let Some(s) = self.servers.get(&skey) else { return };
        if s.final_status.is_some() {
            return;
        }
        if matches!(s.purpose, Purpose::InitialInvite) {
            if let Some(leg) = SipMessage::parse(s.request.clone()).ok().as_ref().and_then(observe::leg_of) {
                io.events.push(Event::Failed { leg, status });
            }
        }
        self.respond_local(skey, status, reason, io);
    }

    /// The connection to `target` is gone for good (a browser agent's WebSocket closed): its
    /// transactions end, and an INVITE still ringing there gets 480 upstream.
    pub(crate) fn target_gone(&mut self, target: Peer, io: &mut Io<'_>) {
        let gone: Vec<(u64, Option<u64>)> = self.clients.iter().filter(|(_, c)| c.target == target).map(|(k, c)| (*k, c.server)).collect();
        for (key, server) in gone {
            self.clients.remove(&key);
            self.give_up(server, 480, "Temporarily Unavailable", io);
        }
    }

    /// The transport could not deliver to `target` (a connection could not be opened): every
    /// client transaction there still waiting for its first response ends with a transport
    /// error, and its server transaction gets 503 upstream at once.
    pub(crate) fn target_unreachable(&mut self, target: Peer, io: &mut Io<'_>) {
        let keys: Vec<u64> = self.clients.iter().filter(|(_, c)| c.target == target).map(|(k, _)| *k).collect();
        for key in keys {
            let Some(c) = self.clients.get_mut(&key) else { continue };
            match &mut c.tx {
                ClientTx::Invite(t) => t.handle_transport_error(),
                ClientTx::NonInvite(t) => t.handle_transport_error(),
            }
            self.drain_client(key, io);
        }
    }

    /// Live server transactions started by requests from `ip`.
    pub(crate) fn load_of(&self, ip: std::net::IpAddr) -> u32 {
        self.per_source.get(&ip).copied().unwrap_or(0)
    }

    fn release_source(&mut self, peer: Peer) {
        let ip = peer.addr.ip();
        if let Some(n) = self.per_source.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_source.remove(&ip);
            }
        }
    }

    /// Live transactions (server, client).
    pub(crate) fn counts(&self) -> (usize, usize) {
        (self.servers.len(), self.clients.len())
    }
}

#[cfg(test)]
mod local_final_tests {
    //! The [`super::super::LocalFinalHook`]: which answers the proxy makes itself are reported.

    use std::sync::Arc;

    use parking_lot::Mutex;

    use super::super::{Local, LocalFinal, LocalFinalHook, Proxy};
    use super::*;
    use crate::calls::{CallsHandle, TrackerConfig};
    use crate::directory::{Directory, PortalEntry};
    use crate::settings::{Mapping, Portal, PortalSettings};
    use crate::sip::transport::SipHandler;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<LocalFinal>>);

    impl LocalFinalHook for Recorder {
        fn local_final(&self, answer: &LocalFinal) {
            self.0.lock().push(answer.clone());
        }
    }

    const PBX: &str = "127.0.0.1:5080";

    fn proxy(hook: Arc<Recorder>) -> (Proxy, Instant) {
        let settings = PortalSettings { active: true, pbx_host: PBX.into(), ..PortalSettings::default() };
        let portal = Portal { id: 1, name: None, domain: "https://office.bitrix24.ru/".into(), auth: None, settings };
        let phone = Mapping { id: 1, user_id: 11, extension: "101".into(), use_for_personal_manager: true, contact: Some("sip:101@127.0.0.1:6001".into()) };
        let directory = Directory::default();
        directory.install_for_test(vec![PortalEntry::build(portal, vec![phone], Vec::new())]);
        let local = Local { udp: Some("127.0.0.1:5060".parse().unwrap()), tcp: None, tls: None, names: Vec::new() };
        let t0 = Instant::now();
        let calls = CallsHandle::new(TrackerConfig::default(), t0, 1_700_000_000_000);
        (Proxy::new(directory, local, calls, Timers::RFC3261).with_local_final_hook(hook), t0)
    }

    fn pbx() -> Peer {
        Peer { addr: PBX.parse().unwrap(), transport: Transport::Udp }
    }

    fn request(method: &str, call_id: &str, branch: &str, max_forwards: u8, to_tag: &str) -> Bytes {
        Bytes::from(format!(
            "{method} sip:101@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {PBX};branch={branch}\r\nMax-Forwards: {max_forwards}\r\n\
             From: <sip:79161234567@{PBX}>;tag=pbx-tag\r\nTo: <sip:101@127.0.0.1:5060>{to_tag}\r\nCall-ID: {call_id}\r\n\
             CSeq: 1 {method}\r\nContact: <sip:79161234567@{PBX}>\r\nContent-Length: 0\r\n\r\n"
        ))
    }

    #[test]
    fn refused_and_abandoned_initial_invites_are_reported_nothing_else() {
        let hook = Arc::new(Recorder::default());
        let (proxy, t0) = proxy(Arc::clone(&hook));
        let mut out = Outbox::new();
        // Refused at once: Max-Forwards 0.
        proxy.on_message(request("INVITE", "hop", "z9hG4bK-1", 0, ""), pbx(), t0, &mut out);
        let want = LocalFinal { call_id: Bytes::from_static(b"hop"), from_tag: Some(Bytes::from_static(b"pbx-tag")), peer: pbx(), status: 483 };
        assert_eq!(*hook.0.lock(), vec![want]);
        // Not initial INVITEs: a re-INVITE or an OPTIONS refused the same way are not reported.
        proxy.on_message(request("INVITE", "re", "z9hG4bK-2", 0, ";tag=agent"), pbx(), t0, &mut out);
        proxy.on_message(request("OPTIONS", "opt", "z9hG4bK-3", 0, ""), pbx(), t0, &mut out);
        assert_eq!(hook.0.lock().len(), 1);
        // Forwarded to the phone, which never answers: nothing until Timer B gives up (408).
        proxy.on_message(request("INVITE", "silent", "z9hG4bK-4", 70, ""), pbx(), t0, &mut out);
        proxy.on_tick(t0 + Duration::from_secs(31), &mut out);
        assert_eq!(hook.0.lock().len(), 1);
        proxy.on_tick(t0 + Duration::from_secs(33), &mut out);
        let last = hook.0.lock().last().cloned().unwrap();
        assert_eq!((&last.call_id[..], last.status, last.peer), (&b"silent"[..], 408, pbx()));
        // Reported once: the transaction has its final answer now.
        proxy.on_tick(t0 + Duration::from_secs(300), &mut out);
        assert_eq!(hook.0.lock().len(), 2);
    }
}
