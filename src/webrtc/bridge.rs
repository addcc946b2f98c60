//! Media anchoring for browser agents (WebRTC widget mode, DESIGN.md §2.3): the SDP bodies of
//! the calls between the PBX and a browser agent are swapped in transit, so the PBX only ever
//! sees plain RTP/AVP at callgate's address and the browser only ICE-lite + DTLS-SRTP at
//! callgate's address ([`MediaAnchor`] relays the G.711 between the two).
//!
//! Shape: the signalling stays with the edge proxy (one dialog per leg, record-routed, the
//! browser's flow found again by the token in our Record-Route), like Kamailio in front of
//! rtpengine. This stage sits in front of the proxy: [`Bridge::plan`] looks at every message
//! to or from a browser agent after the proxy admitted it and before the proxy handles it, and
//! [`Bridge::finish`] returns it with the other side's SDP. Per Call-ID it keeps which offer waits for an answer, the rewritten bodies (a
//! retransmitted INVITE or 200 from the PBX gets the same SDP without a second media
//! operation), and what it takes to hang up for a browser that vanished
//! ([`Bridge::flow_closed`], [`Bridge::session_gone`] build the BYE the browser would have sent).
//!
//! Who gets media (hostile by default):
//! - a session opens only for an initial INVITE with SDP from a browser agent's flow (the
//!   registrar admitted it) or from a WebRTC portal's PBX (its `pbx_host` address or a
//!   `trusted_pbx` network) for one of that portal's registered browser agents;
//! - it closes on BYE, CANCEL, a final non-2xx from the other side, the browser's flow closing
//!   (a browser's own call whose flow closed while its session was set up is refused then),
//!   the anchor losing the browser or finding the session idle, and on every final non-2xx the
//!   proxy answers itself ([`LocalFinalHook`]: 483, 404, 408, 480 ...), so a refused INVITE
//!   leaves no session behind;
//! - a dialog is the Call-ID, the caller's From tag and its two sides (the browser's flow, the
//!   PBX's address): a BYE, CANCEL, re-INVITE or response from anyone else for a known Call-ID
//!   does not touch the media.
//!
//! The stage itself never waits: [`Bridge::plan`] decides at once what a message needs. Most
//! need no media operation (a BYE, a provisional answer, a retransmission whose rewrite is
//! cached) and are [`Plan::Now`]; an offer or an answer the media anchor must see is
//! [`Plan::Media`], a [`MediaWork`] that owns everything it needs. The SIP thread hands it to the
//! media runtime through the bounded mailbox (`mailbox.rs`) and goes on; the media runtime runs
//! it ([`MediaWork::run`], bounded by [`super::plan::MEDIA_TIMEOUT`]) and [`Bridge::finish`] records its result
//! and gives the rewritten message back, which then re-enters the proxy. Nothing here runs under
//! the proxy's lock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use parking_lot::Mutex;

use super::media::{MediaAnchor, MediaError, SessionId};
use super::plan::{MediaDone, MediaWork, NewCall, Op, Pending, Plan, Rewrite};
use super::Registrar;
use crate::directory::{Directory, PortalEntry};
use crate::proxy::{FlowLocator, LocalFinal, LocalFinalHook};
use crate::settings::TelephonyMode;
use crate::sip::core::{HeaderName, Method, SipMessage, Uri};
use crate::sip::transport::Peer;

/// Who may act on a dialog (copied out of the map so no lock is held while checking).
struct Party {
    browser: Peer,
    pbx_ip: Option<IpAddr>,
    caller_tag: Option<Box<[u8]>>,
}

impl Party {
    fn of(d: &Dialog) -> Self {
        Self { browser: d.browser, pbx_ip: d.pbx_ip, caller_tag: d.caller_tag.clone() }
    }
}

/// A browser agent's dialog with media anchored here.
struct Dialog {
    session: SessionId,
    /// The browser's WebSocket flow.
    browser: Peer,
    /// Where the initial INVITE came from (the PBX, or the browser's flow): only the proxy's
    /// refusal of that INVITE ends the media ([`LocalFinalHook`]).
    creator: Peer,
    /// The caller's From tag: every request and response of the dialog carries it (in From or
    /// To). Together with the Call-ID and the two sides below it names the dialog.
    caller_tag: Option<Box<[u8]>>,
    /// The PBX side's address: the INVITE's source for the PBX's calls; for the browser's, the
    /// first message from the PBX side. Besides it, any WebRTC portal's PBX address (its
    /// `pbx_host` or a `trusted_pbx` network) is the PBX side.
    pbx_ip: Option<IpAddr>,
    /// The offer waiting for an answer, and its CSeq.
    pending: Option<(u32, Pending)>,
    /// Rewritten bodies by (CSeq, request?, from the browser?): retransmissions reuse them.
    rewritten: Vec<((u32, bool, bool), Bytes)>,
    /// The highest CSeq the browser used in this dialog (its BYE goes one above).
    browser_cseq: u32,
    /// Headers of the BYE the browser would send, once the dialog is confirmed.
    bye: Option<ByeTemplate>,
    /// The PBX's Contact (the remote target for the browser's requests).
    pbx_contact: Option<String>,
}

/// What a BYE on the browser's behalf needs.
#[derive(Debug, Clone)]
struct ByeTemplate {
    call_id: String,
    /// The browser's side (its tag): our From.
    local: String,
    /// The PBX's side (its tag): our To.
    remote: String,
}

/// The stage in front of the proxy for browser agents' calls.
pub struct Bridge {
    anchor: MediaAnchor,
    registrar: Arc<Registrar>,
    directory: Directory,
    dialogs: Mutex<HashMap<Box<[u8]>, Dialog>>,
    /// Where closing a session spawns (it may be called from a UDP receive thread).
    rt: tokio::runtime::Handle,
    next_branch: AtomicU64,
}

impl Bridge {
    /// A stage using `anchor` for media, `registrar` to know which extension is a browser.
    /// Must be called inside a tokio runtime (closing a session spawns on it).
    pub fn new(anchor: MediaAnchor, registrar: Arc<Registrar>, directory: Directory) -> Self {
        Self {
            anchor,
            registrar,
            directory,
            dialogs: Mutex::new(HashMap::new()),
            rt: tokio::runtime::Handle::current(),
            next_branch: AtomicU64::new(1),
        }
    }

    /// The media anchor (stats for the admin API).
    pub fn anchor(&self) -> &MediaAnchor {
        &self.anchor
    }

    /// The calls with media anchored now: (Call-ID, session), sorted by Call-ID.
    pub fn calls(&self) -> Vec<(String, SessionId)> {
        let mut v: Vec<_> = self.dialogs.lock().iter().map(|(k, d)| (text(k), d.session)).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Looks at `msg` from `peer` before the proxy does, without waiting for anything: what to
    /// do now, or the media operation that must come first.
    ///
    /// A message for an anchored Call-ID acts on its media only when it comes from one of the
    /// dialog's two sides (the browser's flow, the PBX's address) and carries the caller's tag;
    /// anything else is passed on untouched (the proxy decides what to do with it) and counted.
    pub fn plan(&self, msg: &SipMessage, peer: Peer) -> Plan {
        let from_browser = peer.transport.is_websocket();
        let Some(call_id) = msg.call_id() else { return Rewrite::Pass.into() };
        let Some(cseq) = msg.cseq() else { return Rewrite::Pass.into() };
        let party = self.dialogs.lock().get(call_id).map(Party::of);
        let Some(party) = party else { return self.maybe_new_call(msg, call_id, cseq.seq, peer) };
        if !self.is_party(&party, msg, peer) {
            metrics::counter!("callgate_media_foreign_sip_total").increment(1);
            tracing::debug!(call_id = %String::from_utf8_lossy(call_id), addr = %peer.addr, "SIP for an anchored call from outside it; its media is left alone");
            return Rewrite::Pass.into();
        }
        if !from_browser && party.pbx_ip.is_none() {
            if let Some(d) = self.dialogs.lock().get_mut(call_id) {
                d.pbx_ip.get_or_insert(peer.addr.ip());
            }
        }
        if msg.is_request() {
            let Some(method) = msg.method() else { return Rewrite::Pass.into() };
            return self.in_dialog_request(msg, method, call_id, cseq.seq, from_browser);
        }
        if cseq.method_kind() != Method::Invite {
            return Rewrite::Pass.into();
        }
        self.invite_response(msg, call_id, cseq.seq, from_browser)
    }

    /// A message for a Call-ID with no media here: a new call when it is an initial INVITE with
    /// SDP from a browser agent's flow, or from a WebRTC portal's PBX for one of its browser
    /// agents.
    fn maybe_new_call(&self, msg: &SipMessage, call_id: &[u8], cseq: u32, peer: Peer) -> Plan {
        let Some(method) = msg.method() else { return Rewrite::Pass.into() };
        let in_dialog = msg.to().and_then(|t| t.tag).is_some();
        if method != Method::Invite || in_dialog || msg.body().is_empty() {
            return Rewrite::Pass.into();
        }
        let call = if peer.transport.is_websocket() {
            NewCall { browser: peer, creator: peer, pbx_ip: None, kind: Pending::BrowserOffer }
        } else {
            let Some(flow) = self.browser_target(msg, peer) else { return Rewrite::Pass.into() };
            NewCall { browser: flow, creator: peer, pbx_ip: Some(peer.addr.ip()), kind: Pending::PbxOffer }
        };
        let label = String::from_utf8_lossy(call_id).into_owned();
        let caller_tag = msg.from().and_then(|f| f.tag).map(Box::from);
        let pbx_contact = (call.kind == Pending::PbxOffer).then(|| msg.contact().map(|c| text(c.uri.raw))).flatten();
        let op = Op::Open { label, cseq, call, caller_tag, pbx_contact };
        Plan::Media(MediaWork { call_id: call_id.into(), body: body_of(msg), op })
    }

    /// Whether `msg` from `peer` belongs to the dialog of `party`: the caller's tag in From or
    /// To, and from the browser's own flow or the PBX side (see `Dialog::pbx_ip`).
    fn is_party(&self, party: &Party, msg: &SipMessage, peer: Peer) -> bool {
        let tag = party.caller_tag.as_deref();
        let tagged = msg.from().and_then(|f| f.tag) == tag || msg.to().and_then(|t| t.tag) == tag;
        let ip = peer.addr.ip();
        let side = if peer.transport.is_websocket() {
            peer == party.browser
        } else {
            // A PBX may answer or hang up from another node of its own (another `trusted_pbx`
            // address): any WebRTC portal's PBX address is the PBX side.
            party.pbx_ip.is_some_and(|p| same_host(p, ip)) || self.is_webrtc_pbx(ip)
        };
        tagged && side
    }

    /// Whether `ip` is the PBX of a WebRTC-mode portal.
    fn is_webrtc_pbx(&self, ip: IpAddr) -> bool {
        let snap = self.directory.snapshot();
        snap.portals.values().any(|p| p.portal.settings.telephony_mode == TelephonyMode::Webrtc && is_pbx_of(p, ip))
    }

    /// The browser flow an initial INVITE from `peer` is for: `peer` is the PBX of a WebRTC-mode
    /// portal, and the Request-URI user is an extension of that portal registered over
    /// WebSocket. Anyone else gets no media session (whatever the proxy then does with it).
    fn browser_target(&self, msg: &SipMessage, peer: Peer) -> Option<Peer> {
        let ruri = msg.request_uri().and_then(Uri::parse)?;
        let ext = std::str::from_utf8(ruri.user?).ok()?;
        let snap = self.directory.snapshot();
        snap.portals
            .values()
            .filter(|p| p.portal.settings.telephony_mode == TelephonyMode::Webrtc && is_pbx_of(p, peer.addr.ip()))
            .find_map(|p| self.registrar.locate(p.portal.id, ext))
            .map(|(peer, _)| peer)
    }

    /// Records what a media operation gave ([`MediaWork::run`]) and says what becomes of its
    /// message `msg` (the one [`Self::plan`] saw): forwarded with the other side's SDP, refused
    /// (no media possible), or forwarded as it is.
    pub fn finish(&self, done: MediaDone, msg: &SipMessage) -> Rewrite {
        let MediaDone { work, result } = done;
        let call_id = &work.call_id[..];
        match (work.op, result) {
            (Op::Open { label, .. }, Err(e)) => refuse(&e, &label),
            (Op::Open { label, cseq, call, caller_tag, pbx_contact }, Ok((session, sdp))) => {
                let Some(session) = session else { return Rewrite::Pass };
                self.opened(msg, call_id, NewDialog { label, cseq, call, caller_tag, pbx_contact, session, body: Bytes::from(sdp) })
            }
            (Op::Reoffer { cseq, from_browser, .. }, Ok((_, sdp))) => {
                let kind = if from_browser { Pending::BrowserReoffer } else { Pending::PbxReoffer };
                let body = Bytes::from(sdp);
                if let Some(d) = self.dialogs.lock().get_mut(call_id) {
                    d.pending = Some((cseq, kind));
                    d.rewritten.push(((cseq, true, from_browser), body.clone()));
                }
                replace(msg, &body)
            }
            // The media cannot follow this offer: refuse it, the call stays as it was.
            (Op::Reoffer { .. }, Err(e)) => {
                tracing::warn!(call_id = %String::from_utf8_lossy(call_id), error = %e, "re-offer refused");
                Rewrite::Refuse { status: 488, reason: "Not Acceptable Here" }
            }
            (Op::Answer { pending, key, .. }, Ok((_, sdp))) => {
                let body = Bytes::from(sdp);
                if let Some(d) = self.dialogs.lock().get_mut(call_id) {
                    d.rewritten.push((key, body.clone()));
                    if d.pending == Some(pending) {
                        d.pending = None;
                    }
                }
                replace(msg, &body)
            }
            (Op::Answer { .. }, Err(e)) => {
                // Answered without usable media: the call goes on (the tracker still sees
                // it), silent; said loudly in the log and the counter.
                metrics::counter!("callgate_media_answer_errors_total").increment(1);
                tracing::warn!(call_id = %String::from_utf8_lossy(call_id), error = %e, "answer SDP not usable; forwarded as is");
                Rewrite::Pass
            }
        }
    }

    /// A new session is open for `msg`: its dialog is recorded, unless the browser's flow
    /// closed (or lost its registration) while the session was being set up: then the session
    /// closes again and the INVITE is refused, so nothing is anchored for a browser that is gone.
    fn opened(&self, msg: &SipMessage, call_id: &[u8], new: NewDialog) -> Rewrite {
        let NewDialog { label, cseq, call, caller_tag, pbx_contact, session, body } = new;
        let kind = call.kind;
        let browser_user = msg.from().and_then(|f| f.uri.user).unwrap_or_default();
        if kind == Pending::BrowserOffer && self.registrar.browser_agent(call.browser, browser_user).is_none() {
            self.close(session);
            tracing::debug!(call_id = %label, session = session.0, "the browser left while its call's media was set up; released");
            return Rewrite::Refuse { status: 480, reason: "Temporarily Unavailable" };
        }
        let dialog = Dialog {
            session,
            browser: call.browser,
            creator: call.creator,
            caller_tag,
            pbx_ip: call.pbx_ip,
            pending: Some((cseq, kind)),
            rewritten: vec![((cseq, true, kind == Pending::BrowserOffer), body.clone())],
            browser_cseq: if kind == Pending::BrowserOffer { cseq } else { 0 },
            bye: None,
            pbx_contact,
        };
        let previous = self.dialogs.lock().insert(call_id.into(), dialog);
        if let Some(old) = previous {
            // Not expected (one Call-ID's messages wait for each other's media work); never
            // leak a session if it happens.
            self.close(old.session);
        }
        tracing::debug!(call_id = %label, session = session.0, ?kind, "media anchored");
        replace(msg, &body)
    }

    fn in_dialog_request(&self, msg: &SipMessage, method: Method, call_id: &[u8], cseq: u32, from_browser: bool) -> Plan {
        if from_browser {
            if let Some(d) = self.dialogs.lock().get_mut(call_id) {
                d.browser_cseq = d.browser_cseq.max(cseq);
            }
        }
        match method {
            Method::Bye => {
                self.end(call_id, "bye");
                Rewrite::Pass.into()
            }
            // The PBX gives up on the browser before it answered (the INVITE will get 487).
            Method::Cancel => {
                let initial = self.dialogs.lock().get(call_id).is_some_and(|d| d.bye.is_none());
                if initial {
                    self.end(call_id, "cancel");
                }
                Rewrite::Pass.into()
            }
            Method::Invite if !msg.body().is_empty() => {
                if let Some(body) = self.cached(call_id, (cseq, true, from_browser)) {
                    return replace(msg, &body).into();
                }
                let Some(session) = self.dialogs.lock().get(call_id).map(|d| d.session) else { return Rewrite::Pass.into() };
                Plan::Media(MediaWork { call_id: call_id.into(), body: body_of(msg), op: Op::Reoffer { session, cseq, from_browser } })
            }
            _ => Rewrite::Pass.into(),
        }
    }

    fn invite_response(&self, msg: &SipMessage, call_id: &[u8], cseq: u32, from_browser: bool) -> Plan {
        let status = msg.status().unwrap_or(0);
        let key = (cseq, false, from_browser);
        if status < 200 {
            // Early SDP in an unreliable provisional answer is a preview (RFC 3261 §13.3.1.1):
            // the 2xx carries the answer, so the other side gets the provisional without it.
            let early_sdp = status > 100 && !msg.body().is_empty();
            return if early_sdp { Rewrite::Replace(Box::new(with_body(msg, b""))) } else { Rewrite::Pass }.into();
        }
        // Only the side the offer went to answers it.
        let pending = self.dialogs.lock().get(call_id).and_then(|d| d.pending).filter(|(c, _)| *c == cseq);
        if pending.is_some_and(|(_, kind)| kind.browser_answers() != from_browser) {
            return Rewrite::Pass.into();
        }
        if status >= 300 {
            let initial = self.dialogs.lock().get(call_id).is_some_and(|d| d.bye.is_none() && d.pending.is_some_and(|(c, _)| c == cseq));
            if initial {
                self.end(call_id, "rejected");
            } else if let Some(d) = self.dialogs.lock().get_mut(call_id) {
                d.pending = None;
            }
            return Rewrite::Pass.into();
        }
        self.confirm(msg, call_id, from_browser);
        if msg.body().is_empty() {
            return Rewrite::Pass.into();
        }
        if let Some(body) = self.cached(call_id, key) {
            return replace(msg, &body).into();
        }
        let (session, pending) = match self.dialogs.lock().get(call_id) {
            Some(d) => (d.session, d.pending),
            None => return Rewrite::Pass.into(),
        };
        let Some(pending) = pending.filter(|(c, _)| *c == cseq) else { return Rewrite::Pass.into() };
        if pending.1.browser_answers() != from_browser {
            return Rewrite::Pass.into();
        }
        Plan::Media(MediaWork { call_id: call_id.into(), body: body_of(msg), op: Op::Answer { session, pending, key } })
    }

    /// A 2xx to an INVITE: the dialog is confirmed; remember how to hang up for the browser.
    fn confirm(&self, msg: &SipMessage, call_id: &[u8], from_browser: bool) {
        let mut dialogs = self.dialogs.lock();
        let Some(d) = dialogs.get_mut(call_id) else { return };
        if d.bye.is_some() {
            return;
        }
        let (Some(from), Some(to)) = (msg.header(HeaderName::From), msg.header(HeaderName::To)) else { return };
        // The browser answered the PBX's INVITE: it is the To side. Else it called: From side.
        let browser_is_uas = from_browser;
        let (local, remote) = if browser_is_uas { (to, from) } else { (from, to) };
        if !browser_is_uas {
            d.pbx_contact = msg.contact().map(|c| text(c.uri.raw));
        }
        d.bye = Some(ByeTemplate { call_id: text(call_id), local: text(local), remote: text(remote) });
    }

    fn cached(&self, call_id: &[u8], key: (u32, bool, bool)) -> Option<Bytes> {
        self.dialogs.lock().get(call_id).and_then(|d| d.rewritten.iter().find(|(k, _)| *k == key).map(|(_, b)| b.clone()))
    }

    /// The call's media ends (BYE, CANCEL, rejection).
    fn end(&self, call_id: &[u8], why: &'static str) {
        if let Some(d) = self.dialogs.lock().remove(call_id) {
            self.close(d.session);
            tracing::debug!(call_id = %String::from_utf8_lossy(call_id), session = d.session.0, why, "media released");
        }
    }

    /// The browser's flow `peer` closed: its calls' media ends, and for each confirmed call the
    /// BYE the browser would have sent is returned, to be handled as if it came over `peer`
    /// (the proxy forwards it to the PBX and the tracker sees the agent hang up).
    pub fn flow_closed(&self, peer: Peer) -> Vec<SipMessage> {
        let gone: Vec<Box<[u8]>> = self.dialogs.lock().iter().filter(|(_, d)| d.browser == peer).map(|(k, _)| k.clone()).collect();
        gone.iter().filter_map(|k| self.hang_up(k, "websocket closed")).collect()
    }

    /// The media anchor lost the browser of `session` (ICE consent, DTLS close): like
    /// [`Self::flow_closed`] for that one call; returns the BYE and the flow it comes "from".
    pub fn session_gone(&self, session: SessionId) -> Option<(SipMessage, Peer)> {
        let (key, peer) = self.dialogs.lock().iter().find(|(_, d)| d.session == session).map(|(k, d)| (k.clone(), d.browser))?;
        self.hang_up(&key, "browser media gone").map(|bye| (bye, peer))
    }

    fn hang_up(&self, call_id: &[u8], why: &'static str) -> Option<SipMessage> {
        let d = self.dialogs.lock().remove(call_id)?;
        self.close(d.session);
        tracing::info!(call_id = %String::from_utf8_lossy(call_id), why, "browser agent gone; hanging up for it");
        metrics::counter!("callgate_media_browser_gone_total").increment(1);
        let (bye, target) = (d.bye?, d.pbx_contact?);
        let n = self.next_branch.fetch_add(1, Ordering::Relaxed);
        let text = format!(
            "BYE {target} SIP/2.0\r\nVia: SIP/2.0/WSS callgate-gone.invalid;branch=z9hG4bK-cg-gone-{n:x}\r\nMax-Forwards: 70\r\n\
             From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {} BYE\r\nReason: SIP;cause=200;text=\"{why}\"\r\nContent-Length: 0\r\n\r\n",
            bye.local,
            bye.remote,
            bye.call_id,
            d.browser_cseq.max(1) + 1,
        );
        SipMessage::parse(Bytes::from(text)).ok()
    }

    /// Closes a media session from any thread (closing spawns on the runtime).
    fn close(&self, session: SessionId) {
        let _rt = self.rt.enter();
        self.anchor.close(session);
    }
}

/// The proxy refused (or gave up on) an initial INVITE: when it is the one that set up a call
/// here (same Call-ID, From tag and source) and that call was never answered, its media goes.
/// Nothing else is touched: the same Call-ID refused for another source, or a re-INVITE.
impl LocalFinalHook for Bridge {
    fn local_final(&self, answer: &LocalFinal) {
        let gone = {
            let mut dialogs = self.dialogs.lock();
            let ours = dialogs.get(&answer.call_id[..]).is_some_and(|d| {
                d.bye.is_none() && d.creator == answer.peer && d.caller_tag.as_deref() == answer.from_tag.as_deref()
            });
            if ours {
                dialogs.remove(&answer.call_id[..])
            } else {
                None
            }
        };
        if let Some(d) = gone {
            self.close(d.session);
            metrics::counter!("callgate_media_released_on_local_answer_total").increment(1);
            tracing::debug!(call_id = %String::from_utf8_lossy(&answer.call_id), session = d.session.0, status = answer.status, "media released: the proxy answered the INVITE itself");
        }
    }
}

/// Whether `ip` may act as `p`'s PBX: its `pbx_host` address or a `trusted_pbx` network.
fn is_pbx_of(p: &PortalEntry, ip: IpAddr) -> bool {
    p.pbx_addr.is_some_and(|a| same_host(a.ip(), ip)) || p.trusts(ip)
}

/// The same host (an IPv4-mapped IPv6 address equals its IPv4 form).
fn same_host(a: IpAddr, b: IpAddr) -> bool {
    a.to_canonical() == b.to_canonical()
}

fn refuse(e: &MediaError, call: &str) -> Rewrite {
    tracing::warn!(call_id = %call, error = %e, "no media for this call; refused");
    metrics::counter!("callgate_media_refused_total").increment(1);
    match e {
        MediaError::NoCommonCodec | MediaError::BadSdp(_) => Rewrite::Refuse { status: 488, reason: "Not Acceptable Here" },
        _ => Rewrite::Refuse { status: 503, reason: "Service Unavailable" },
    }
}

/// A new call's session and what its dialog records.
struct NewDialog {
    label: String,
    cseq: u32,
    call: NewCall,
    caller_tag: Option<Box<[u8]>>,
    pbx_contact: Option<String>,
    session: SessionId,
    body: Bytes,
}

/// The message's body as its own buffer (a slice of the message's, no copy).
fn body_of(msg: &SipMessage) -> Bytes {
    msg.buffer().slice_ref(msg.body())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn replace(msg: &SipMessage, body: &[u8]) -> Rewrite {
    Rewrite::Replace(Box::new(with_body(msg, body)))
}

/// `msg` with `body` (SDP, or nothing) instead of its own, Content-Type and Content-Length
/// rewritten to match; every other header as it was.
pub(crate) fn with_body(msg: &SipMessage, body: &[u8]) -> SipMessage {
    let mut out = BytesMut::with_capacity(msg.as_bytes().len() + body.len());
    out.put_slice(msg.start_line());
    out.put_slice(b"\r\n");
    for (name, raw, value) in msg.header_lines() {
        if matches!(name, HeaderName::ContentLength | HeaderName::ContentType) {
            continue;
        }
        out.put_slice(raw);
        out.put_slice(b": ");
        out.put_slice(value);
        out.put_slice(b"\r\n");
    }
    if !body.is_empty() {
        out.put_slice(b"Content-Type: application/sdp\r\n");
    }
    out.put_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    out.put_slice(body);
    SipMessage::parse(out.freeze()).expect("a message rebuilt from a parsed one parses")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_body_swaps_sdp_and_lengths_keeping_other_headers() {
        let raw = "INVITE sip:101@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK1\r\nFrom: <sip:7916@pbx>;tag=a\r\n\
                   To: <sip:101@pbx>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\nc: application/sdp\r\nl: 3\r\n\r\nabc";
        let msg = SipMessage::parse(Bytes::from(raw)).unwrap();
        let out = with_body(&msg, b"v=0\r\n");
        assert_eq!(out.body(), b"v=0\r\n");
        assert_eq!(out.content_length(), Some(5));
        assert_eq!(out.header(HeaderName::ContentType), Some(&b"application/sdp"[..]));
        assert_eq!(out.call_id(), Some(&b"c1"[..]));
        assert_eq!(out.headers(HeaderName::ContentLength).count(), 1);
        let empty = with_body(&msg, b"");
        assert!(empty.body().is_empty());
        assert_eq!(empty.header(HeaderName::ContentType), None);
    }
}
