//! The SIP front door: every message from every SIP listener (UDP, TCP, TLS, WebSocket) enters
//! here ([`Front`], the transports' one [`SipHandler`]) and is handed to one role (DESIGN.md §2):
//! a request whose Request-URI user is a portal's `routing_user` asks the redirect listener
//! (`routing`) for a decision; everything else (agents' and the PBX's calls, every response)
//! goes through the edge proxy (`proxy`), browser agents' messages through the WebRTC registrar
//! and media bridge (`webrtc`) first.
//!
//! The choice reads only the request line, so the redirect hot path keeps its single parse.
//!
//! Messages over a WebSocket flow (browser agents, WebRTC widget) never reach the redirect
//! listener: the browser agents' registrar answers their REGISTERs and admits their other
//! requests ([`crate::webrtc::Registrar::on_websocket`]); what it lets through goes to the
//! proxy. A closed flow ends its registrations.
//!
//! STUN Binding requests on the UDP port (RFC 5626 §8.4 keep-alives of phones using SIP outbound)
//! are answered here, after the rate limit, with the sender's address (`sip::core::stun`);
//! anything else STUN-like is dropped without an answer or a trace in the proxy.
//!
//! Three gates come before every role, each costing nothing on the hot path beyond a hash
//! look-up and a flag read:
//! - **per-source rate limit** ([`crate::limit::SourceLimiter`], trusted PBX addresses with
//!   their own higher rate): over the limit a request gets `503` + `Retry-After`, far over it
//!   (a flood) nothing; responses and ACKs over the limit are dropped;
//! - **draining** (graceful shutdown): a new call (an INVITE without a To tag) gets `503` +
//!   `Retry-After`; in-dialog requests (ACK, BYE, re-INVITE) and responses still flow, so open
//!   calls can end normally;
//! - **back-pressure**: while the path from the call tracker to the Bitrix24 outbox is nearly
//!   full ([`CallsHandle::accepting_calls`]), a new call is refused the same way (counted in
//!   `callgate_sip_refused_overload_total`), so the calls already accepted keep their room and
//!   none of their effects is dropped. Routing requests are not calls and still get answers.
//!
//! Who may send what (the trust model) is the proxy's own admission (`proxy::trust`); this
//! module only picks the role. It sits above `routing`, `proxy` and `webrtc` and is the only
//! module that knows all three.
//!
//! **Media never blocks SIP.** A browser agent's call needs the media stage
//! ([`crate::webrtc::Bridge`]) between the trust decision and the proxy. The front asks the
//! proxy to admit the message first (a refused message never creates media state), then asks
//! the stage what it needs: when that is a media operation (an offer or answer the anchor must
//! see), the message, its admission and the operation go into the bounded media mailbox
//! ([`crate::webrtc::MediaMailbox`]) and this thread returns at once. The media runtime runs the
//! operation and hands the result back ([`Front`]'s [`Resume`] impl): the stage records it and
//! the rewritten message re-enters the proxy under the admission made before, observed as its
//! sender sent it. A full mailbox answers the INVITE `503` + `Retry-After` at once (counted in
//! `callgate_sip_refused_media_busy_total`); a response that finds it full is dropped (counted in
//! `callgate_media_answers_shed_total`; its sender retransmits over UDP). Messages of a call
//! whose media work is in flight wait behind it in order, and retransmissions are absorbed
//! (`mailbox.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::calls::CallsHandle;
use crate::directory::{Directory, Snapshot};
use crate::limit::{SourceLimiter, Verdict};
use crate::proxy::Proxy;
use crate::routing::RedirectServer;
use crate::sip::core::{stun, to_tag_for, write_bad_request, write_response, SipMessage, Uri};
use crate::sip::transport::{Outbox, Peer, SipHandler, Transport};
use crate::webrtc::mailbox::{Finished, Job, Resume, Submitted};
use crate::webrtc::{Bridge, MediaMailbox, Plan, Rewrite};

/// Why a new call is refused: its metric and the Retry-After of its 503.
#[derive(Clone, Copy)]
enum Refusal {
    /// Graceful shutdown: the PBX should try another node.
    Draining,
    /// The outbox path is full: a short wait usually suffices.
    Overload,
    /// The media mailbox is full (browser calls' media set-ups): a short wait usually suffices.
    MediaBusy,
}

impl Refusal {
    fn retry_after(self) -> &'static [u8] {
        match self {
            Self::Draining => b"30",
            Self::Overload | Self::MediaBusy => b"5",
        }
    }

    fn count(self) {
        match self {
            Self::Draining => metrics::counter!("callgate_sip_refused_draining_total").increment(1),
            Self::Overload => metrics::counter!("callgate_sip_refused_overload_total").increment(1),
            Self::MediaBusy => metrics::counter!("callgate_sip_refused_media_busy_total").increment(1),
        }
    }
}

/// Redirect listener + proxy behind one [`SipHandler`].
pub struct Front {
    directory: Directory,
    redirect: Arc<RedirectServer>,
    proxy: Arc<Proxy>,
    websocket: Option<Arc<crate::webrtc::Registrar>>,
    limiter: Option<Arc<SourceLimiter>>,
    draining: Arc<AtomicBool>,
    /// The call tracker whose outbox path may refuse new calls (none: never refused).
    calls: Option<CallsHandle>,
    /// Media anchoring for browser agents' calls (WebRTC widget mode).
    media: Option<MediaStage>,
}

/// The media stage and the mailbox its operations go through.
struct MediaStage {
    bridge: Arc<Bridge>,
    mailbox: MediaMailbox,
}

impl Front {
    /// Both roles on one listener.
    pub fn new(directory: Directory, redirect: Arc<RedirectServer>, proxy: Arc<Proxy>) -> Self {
        Self { directory, redirect, proxy, websocket: None, limiter: None, draining: Arc::new(AtomicBool::new(false)), calls: None, media: None }
    }

    /// Per-source rate limits on every message (none without this).
    #[must_use]
    pub fn with_limiter(mut self, limiter: Arc<SourceLimiter>) -> Self {
        self.limiter = (!limiter.is_off()).then_some(limiter);
        self
    }

    /// New calls are refused with 503 once `draining` is set (graceful shutdown).
    #[must_use]
    pub fn with_draining(mut self, draining: Arc<AtomicBool>) -> Self {
        self.draining = draining;
        self
    }

    /// New calls are refused with 503 while `calls` says its outbox path is full.
    #[must_use]
    pub fn with_call_gate(mut self, calls: CallsHandle) -> Self {
        self.calls = Some(calls);
        self
    }

    /// Back-pressure: a new call (not a routing request) while the outbox path is full is
    /// answered 503; returns whether it was.
    fn refused_for_overload(&self, snap: &Snapshot, data: &Bytes, out: &mut Outbox) -> bool {
        let full = self.calls.as_ref().is_some_and(|c| !c.accepting_calls());
        full && !Self::for_redirect(snap, data) && refuse_new_call(data, Refusal::Overload, out)
    }

    /// The rate limit: `false` when the message must go no further (a 503 may be in `out`).
    fn admit(&self, limiter: &SourceLimiter, snap: &Arc<Snapshot>, data: &Bytes, peer: Peer, now: Instant, out: &mut Outbox) -> bool {
        let ip = peer.addr.ip();
        let epoch = Arc::as_ptr(snap) as usize;
        match limiter.check(ip, now, epoch, || snap.portals.values().any(|p| p.trusts(ip))) {
            Verdict::Allow => true,
            Verdict::Refuse { retry_after_s } => {
                metrics::counter!("callgate_sip_rate_limited_total", "action" => "503").increment(1);
                // The refusal path only (at most about a burst per second per source).
                refuse_request(data, retry_after_s.to_string().as_bytes(), out);
                false
            }
            Verdict::Drop => {
                metrics::counter!("callgate_sip_rate_limited_total", "action" => "drop").increment(1);
                false
            }
        }
    }

    /// Browser agents over WebSocket are registered by `registrar` (without it, WebSocket
    /// messages go to the proxy like any other).
    #[must_use]
    pub fn with_websocket(mut self, registrar: Arc<crate::webrtc::Registrar>) -> Self {
        self.websocket = Some(registrar);
        self
    }

    /// Browser agents' calls get their media anchored by `bridge` (SDP swapped in transit); its
    /// media operations go through `mailbox` to the media runtime, which hands them back to
    /// [`Resume::media_done`].
    #[must_use]
    pub fn with_media(mut self, bridge: Arc<Bridge>, mailbox: MediaMailbox) -> Self {
        self.media = Some(MediaStage { bridge, mailbox });
        self
    }

    /// A parsed message for the proxy. With the media stage: it waits when its call has media
    /// work in flight; else it goes through [`Self::through_media`].
    fn to_proxy(&self, msg: &SipMessage, peer: Peer, now: Instant, out: &mut Outbox) {
        let Some(media) = &self.media else { return self.proxy.handle(msg, peer, now, out) };
        if !media.mailbox.waits(msg, peer) {
            self.through_media(media, msg, peer, now, out);
        }
    }

    /// Admitted by the trust model first, then through the media stage (so media is set up only
    /// for what the proxy will relay): at once when it needs no media operation, else queued
    /// for the media runtime (or refused at once when the mailbox is full).
    fn through_media(&self, media: &MediaStage, msg: &SipMessage, peer: Peer, now: Instant, out: &mut Outbox) {
        let Some(admitted) = self.proxy.admit(msg, peer, now, out) else { return };
        match media.bridge.plan(msg, peer) {
            Plan::Now(rewrite) => self.carry_out(rewrite, msg, peer, admitted, now, out),
            Plan::Media(work) => match media.mailbox.submit(Job::new(work, msg.clone(), peer, admitted)) {
                Submitted::Sent | Submitted::Waits => {}
                Submitted::Full(job) => shed(&job, out),
            },
        }
    }

    /// What the media stage made of `sent` (as its sender sent it), carried out by the proxy
    /// under the admission made before.
    fn carry_out(&self, rewrite: Rewrite, sent: &SipMessage, peer: Peer, admitted: crate::proxy::Admitted, now: Instant, out: &mut Outbox) {
        match rewrite {
            Rewrite::Pass => self.proxy.handle_as(sent, sent, peer, admitted, now, out),
            // Forwarded with the other side's SDP; observed as sent (a hold is what a side offered).
            Rewrite::Replace(m) => self.proxy.handle_as(&m, sent, peer, admitted, now, out),
            Rewrite::Refuse { status, reason } => {
                let mut answer = BytesMut::new();
                write_response(sent, status, reason, Some(&to_tag_for(sent)), &[], &mut answer);
                out.send(peer, answer.freeze());
            }
        }
    }

    /// The media anchor lost a browser (ICE consent, DTLS closed): its call is hung up as if
    /// the browser had sent BYE.
    pub fn media_gone(&self, session: crate::webrtc::media::SessionId, now: Instant, out: &mut Outbox) {
        let Some(media) = &self.media else { return };
        if let Some((bye, peer)) = media.bridge.session_gone(session) {
            self.proxy.hang_up_for(&bye, peer, now, out);
        }
    }

    /// A message over a WebSocket flow: parsed once, then the registrar, then the proxy.
    fn on_websocket(&self, registrar: &crate::webrtc::Registrar, data: Bytes, peer: Peer, now: Instant, out: &mut Outbox) {
        match SipMessage::parse(data.clone()) {
            Ok(msg) => {
                if !registrar.on_websocket(&msg, peer, now, out) {
                    self.to_proxy(&msg, peer, now, out);
                }
            }
            Err(e) => {
                metrics::counter!("callgate_sip_malformed_total", "transport" => "ws").increment(1);
                tracing::debug!(addr = %peer.addr, error = %e, "malformed SIP message over websocket");
                write_bad_request(&data, &e, &mut out.reply);
            }
        }
    }

    /// Whether `data` is a request to a routing user (or has no portal at all to proxy for).
    fn for_redirect(snap: &Snapshot, data: &[u8]) -> bool {
        if data.starts_with(b"SIP/") {
            return false;
        }
        // The Request-URI is the second token of the request line; only its user part matters.
        let line = data.get(..memchr::memchr(b'\n', data).unwrap_or(data.len())).unwrap_or_default();
        let Some(user) = line.split(|&b| b == b' ').nth(1).and_then(Uri::user_of) else { return false };
        snap.portals.is_empty() || snap.portals.values().any(|p| p.portal.settings.routing_user.as_bytes() == user)
    }
}

impl SipHandler for Front {
    fn on_message(&self, data: Bytes, peer: Peer, now: Instant, out: &mut Outbox) {
        let snap = self.directory.snapshot_guard();
        if let Some(limiter) = &self.limiter {
            if !self.admit(limiter, &snap, &data, peer, now, out) {
                return;
            }
        }
        if peer.transport == Transport::Udp && stun::looks_like_stun(&data) {
            return answer_stun(&data, peer, out);
        }
        if self.draining.load(Ordering::Relaxed) && refuse_new_call(&data, Refusal::Draining, out) {
            return;
        }
        if self.refused_for_overload(&snap, &data, out) {
            return;
        }
        if let (true, Some(registrar)) = (peer.transport.is_websocket(), &self.websocket) {
            return self.on_websocket(registrar, data, peer, now, out);
        }
        if Self::for_redirect(&snap, &data) {
            self.redirect.on_message_in(&snap, data, peer, now, out);
        } else if let Some(msg) = self.media.as_ref().and_then(|_| SipMessage::parse(data.clone()).ok()) {
            self.to_proxy(&msg, peer, now, out);
        } else {
            self.proxy.on_message(data, peer, now, out);
        }
    }

    fn on_bad_frame(&self, head: &[u8], peer: Peer, reply: &mut BytesMut) {
        self.proxy.on_bad_frame(head, peer, reply);
    }

    fn on_tick(&self, now: Instant, out: &mut Outbox) {
        if let Some(limiter) = &self.limiter {
            limiter.sweep(now);
        }
        self.redirect.on_tick(now, out);
        self.proxy.on_tick(now, out);
        if let Some(registrar) = &self.websocket {
            registrar.expire(now);
        }
    }

    fn on_unreachable(&self, peer: Peer, now: Instant, out: &mut Outbox) {
        tracing::debug!(addr = %peer.addr, transport = ?peer.transport, "sip peer unreachable; its pending requests get 503");
        self.proxy.unreachable(peer, now, out);
    }

    /// A PBX dialled over TLS is checked against the host name of its `pbx_host`, when that
    /// names one (an IP address is checked as such).
    fn tls_server_name(&self, addr: std::net::SocketAddr) -> Option<String> {
        let snap = self.directory.snapshot();
        let portal = snap.portals.values().find(|p| p.pbx_addr == Some(addr) && p.pbx_transport == crate::settings::PbxTransport::Tls)?;
        let host_port = portal.portal.settings.pbx_host_port();
        let host = host_port.rsplit_once(':').map_or(host_port, |(h, _)| h);
        let host = host.trim_start_matches('[').trim_end_matches(']');
        (host.parse::<std::net::IpAddr>().is_err()).then(|| host.to_owned())
    }

    fn on_closed(&self, peer: Peer, now: Instant, out: &mut Outbox) {
        if let Some(registrar) = &self.websocket {
            let gone = registrar.flow_closed(peer);
            if !gone.is_empty() {
                tracing::debug!(addr = %peer.addr, registrations = gone.len(), "websocket closed; its registrations end");
            }
        }
        if !peer.transport.is_websocket() {
            return;
        }
        // A browser that vanished ends its legs: what still rings there gets 480, and each
        // answered call is hung up with the BYE the browser would have sent.
        self.proxy.flow_gone(peer, now, out);
        if let Some(media) = &self.media {
            for bye in media.bridge.flow_closed(peer) {
                self.proxy.hang_up_for(&bye, peer, now, out);
            }
        }
    }
}

/// The media runtime finished a message's media work: the stage records it, the message
/// re-enters the proxy under its earlier admission, then the messages of its call that waited
/// meanwhile take their turn (the first one that needs media work of its own holds the rest).
impl Resume for Front {
    fn media_done(&self, finished: Finished, now: Instant, out: &mut Outbox) {
        let Some(media) = &self.media else { return };
        let Finished { done, msg, peer, admitted } = finished;
        let call_id: Box<[u8]> = done.call_id().into();
        let rewrite = media.bridge.finish(done, &msg);
        media.mailbox.finished(&call_id);
        self.carry_out(rewrite, &msg, peer, admitted, now, out);
        while let Some((next, from)) = media.mailbox.next_waiting(&call_id) {
            self.through_media(media, &next, from, now, out);
        }
    }
}

/// No room in the media mailbox: an INVITE (new call or re-offer) is answered `503` +
/// `Retry-After` at once; a response is dropped (its sender retransmits it over UDP). Either
/// way nothing was set up for it, and it is counted.
fn shed(job: &Job, out: &mut Outbox) {
    let msg = job.msg();
    if msg.is_request() {
        Refusal::MediaBusy.count();
        let mut answer = BytesMut::new();
        write_response(msg, 503, "Service Unavailable", Some(&to_tag_for(msg)), &[("Retry-After", Refusal::MediaBusy.retry_after())], &mut answer);
        out.send(job.peer(), answer.freeze());
    } else {
        metrics::counter!("callgate_media_answers_shed_total").increment(1);
        tracing::warn!(addr = %job.peer().addr, status = msg.status(), "media mailbox full: an answer SDP dropped (its sender retransmits over UDP)");
    }
}

/// A STUN datagram on the SIP UDP port: a well-formed Binding request (an RFC 5626 keep-alive)
/// is answered with the sender's address; anything else STUN-like is dropped, unanswered.
fn answer_stun(data: &[u8], peer: Peer, out: &mut Outbox) {
    match stun::binding_response(data, peer.addr) {
        Some(answer) => {
            metrics::counter!("callgate_sip_stun_total", "outcome" => "answered").increment(1);
            out.reply.extend_from_slice(&answer);
        }
        None => metrics::counter!("callgate_sip_stun_total", "outcome" => "dropped").increment(1),
    }
}

/// Answers a request (not an ACK) `503 Service Unavailable` with `Retry-After: secs`; drops
/// anything else. Parses only on this refusal path.
fn refuse_request(data: &Bytes, retry_after: &[u8], out: &mut Outbox) {
    if data.starts_with(b"SIP/") || data.starts_with(b"ACK ") {
        return;
    }
    if let Ok(msg) = SipMessage::parse(data.clone()) {
        write_response(&msg, 503, "Service Unavailable", Some(&to_tag_for(&msg)), &[("Retry-After", retry_after)], &mut out.reply);
    }
}

/// While draining or overloaded: a new call (INVITE without a To tag) is answered 503 and goes
/// no further. Returns whether it was one.
fn refuse_new_call(data: &Bytes, why: Refusal, out: &mut Outbox) -> bool {
    if !data.starts_with(b"INVITE ") {
        return false;
    }
    let Ok(msg) = SipMessage::parse(data.clone()) else { return false };
    if msg.to().is_some_and(|to| to.tag.is_some()) {
        return false; // a re-INVITE inside an open call
    }
    why.count();
    write_response(&msg, 503, "Service Unavailable", Some(&to_tag_for(&msg)), &[("Retry-After", why.retry_after())], &mut out.reply);
    true
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;
    use crate::calls::{Direction, Event, LegId, Offer, Policy, TrackerConfig};
    use crate::directory::PortalEntry;
    use crate::routing::{DecisionLog, RedirectConfig};
    use crate::settings::{Mapping, Portal, PortalSettings};
    use crate::sip::core::transaction::Timers;
    use crate::sip::transport::Transport;

    const PBX: &str = "127.0.0.1:5080";

    fn udp(s: &str) -> Peer {
        Peer { addr: s.parse::<SocketAddr>().expect("an address"), transport: Transport::Udp }
    }

    fn office() -> PortalEntry {
        let settings = PortalSettings { active: true, pbx_host: PBX.into(), ..PortalSettings::default() };
        let portal = Portal { id: 1, name: None, domain: "https://office.bitrix24.ru/".into(), auth: None, settings };
        let m = Mapping { id: 1, user_id: 11, extension: "101".into(), use_for_personal_manager: true, contact: Some("sip:101@127.0.0.1:6001".into()) };
        PortalEntry::build(portal, vec![m], Vec::new())
    }

    /// A front door for the office whose tracker sends effects into a channel of `slots`.
    fn front(slots: usize) -> (Front, CallsHandle, tokio::sync::mpsc::Receiver<crate::calls::Effect>, Instant) {
        let t0 = Instant::now();
        let directory = Directory::default();
        directory.install_for_test(vec![office()]);
        let (tx, rx) = tokio::sync::mpsc::channel(slots);
        let calls = CallsHandle::with_sink(TrackerConfig::default(), t0, 0, Some(tx));
        let local = crate::proxy::Local { udp: Some("127.0.0.1:5060".parse().expect("an address")), tcp: None, tls: None, names: Vec::new() };
        let proxy = Proxy::new(directory.clone(), local, calls.clone(), Timers::RFC3261);
        let redirect = RedirectServer::new(directory.clone(), RedirectConfig { no_decision_code: 404, max_remembered: 100 }, Arc::new(DecisionLog::new(10)));
        let front = Front::new(directory, Arc::new(redirect), Arc::new(proxy)).with_call_gate(calls.clone());
        (front, calls, rx, t0)
    }

    fn invite(user: &str, call_id: &str) -> Bytes {
        let text = format!(
            "INVITE sip:{user}@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {PBX};branch=z9hG4bK-{call_id}\r\nMax-Forwards: 70\r\n\
             From: <sip:79161234567@{PBX}>;tag=pbx\r\nTo: <sip:{user}@127.0.0.1:5060>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n\
             Contact: <sip:79161234567@{PBX}>\r\nContent-Length: 0\r\n\r\n"
        );
        Bytes::from(text)
    }

    /// An offer fed straight to the tracker: one `CallStarted` effect into the channel.
    fn other_call(n: u32) -> Event {
        Event::Offered(Offer {
            leg: LegId::from(format!("other-{n}").as_str()),
            portal: 1,
            policy: Policy::default(),
            direction: Direction::FromPbx,
            agent_extension: "101".into(),
            agent_user: Some(11),
            remote: format!("7900{n:07}").into(),
            remote_is_extension: false,
            correlation: None,
            replaces: None,
            referred_by: None,
            line: None,
        })
    }

    fn deliver(front: &Front, data: Bytes, now: Instant) -> Outbox {
        let mut out = Outbox::new();
        front.on_message(data, udp(PBX), now, &mut out);
        out
    }

    #[test]
    fn a_full_outbox_path_refuses_new_calls_with_503_and_reopens_when_drained() {
        let (front, calls, mut rx, t0) = front(8);
        // The recorder is stalled: 8 calls' starts fill the channel (the gate closes below 2 free).
        for n in 0..8 {
            calls.feed(t0, [other_call(n)]);
        }
        assert!(!calls.accepting_calls());

        // Attack on the queue (or just load): a new call is refused and leaves no state.
        let out = deliver(&front, invite("101", "new-1"), t0);
        let reply = String::from_utf8_lossy(&out.reply);
        assert!(reply.starts_with("SIP/2.0 503 "), "{reply}");
        assert!(reply.contains("Retry-After: 5\r\n"), "{reply}");
        assert!(out.sends.is_empty(), "not relayed to the agent");
        assert_eq!(calls.list(100).len(), 8, "no call was created for it");

        // A routing request is not a call: the redirect listener still answers it.
        let out = deliver(&front, invite("pm-route", "route-1"), t0);
        let answered = [&out.reply[..]].into_iter().chain(out.sends.iter().map(|(_, b)| &b[..])).map(String::from_utf8_lossy).collect::<Vec<_>>().join("");
        assert!(!answered.contains("503") && answered.contains("SIP/2.0 404"), "{answered}");

        // The recorder catches up: the same call goes through.
        while rx.try_recv().is_ok() {}
        calls.tick(t0 + Duration::from_millis(50));
        assert!(calls.accepting_calls());
        let out = deliver(&front, invite("101", "new-2"), t0 + Duration::from_millis(60));
        assert!(out.sends.iter().any(|(p, b)| p.addr.port() == 6001 && b.starts_with(b"INVITE ")), "relayed to 101's phone");
        assert_eq!(calls.list(100).len(), 9);
    }
}
