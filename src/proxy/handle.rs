//! Request and response handling of the edge proxy: RFC 3261 §16 steps for a record-routing
//! proxy, on top of the transaction table ([`Engine`]).

use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use super::engine::{Engine, Io, Purpose};
use super::registrar::PendingRegister;
use super::target::{self, NextHop, Refusal, RouteHead, FORBIDDEN, NO_DIALOG};
use super::trust::{self, AgentAuth, DigestOutcome, Sender, Token};
use super::{observe, Proxy};
use crate::calls::{Direction, Side};
use crate::directory::Snapshot;
use crate::settings::TelephonyMode;
use crate::sip::core::{to_tag_for, write_forwarded_request, write_response, HeaderName, Method, RequestEdit, SipMessage, Uri};
use crate::sip::transport::{Peer, Transport};

/// What the front door decided a message may do (see [`Proxy::admit`]). Opaque outside the
/// proxy: the front holds it while the media bridge looks at the message.
#[derive(Debug)]
pub struct Admitted(Step);

#[derive(Debug)]
enum Step {
    /// A retransmission of a request whose server transaction `key` is live.
    Retransmission(u64),
    /// A new request to forward to `hop`. `agent`: the extension a PBX request is for when the
    /// route says so (a Path-routed INVITE reaches the registration it names, whatever user
    /// part the phone's Contact has).
    Forward { key: u64, hop: NextHop, sender: Sender, in_dialog: bool, strip_routes: bool, agent: Option<String> },
    /// An ACK: for our own non-2xx (`Some(key)`), or a 2xx's end-to-end ACK going to `hop`.
    Ack { server: Option<u64>, hop: Option<NextHop> },
    /// A CANCEL of server transaction `key`, from its sender.
    Cancel { key: u64, side: Side },
    /// A request for callgate itself (OPTIONS ping).
    Local,
    /// A response for client transaction `key`, from the peer that transaction sent to.
    Response(u64),
}

/// Why a request is not admitted.
enum Refused {
    /// Answered with this status.
    Status(Refusal),
    /// Answered 407 with this `Proxy-Authenticate` value.
    Challenge(String),
    /// Dropped without an answer (ACKs, responses).
    Silently,
}

impl From<Refusal> for Refused {
    fn from(r: Refusal) -> Self {
        Self::Status(r)
    }
}

impl Proxy {
    /// The front door: what `msg` from `peer` may do, decided once by the trust model. A
    /// refused request is answered here (403, 407 or the like) and leaves no state behind.
    pub(super) fn admit_in(&self, eng: &Engine, msg: &SipMessage, peer: Peer, snap: &Snapshot, io: &mut Io<'_>) -> Option<Admitted> {
        let step = if msg.is_request() { self.admit_request(eng, msg, peer, snap, io.now) } else { self.admit_response(eng, msg, peer) };
        match step {
            Ok(step) => Some(Admitted(step)),
            Err(refused) => {
                self.metrics.refused.increment(1);
                match refused {
                    Refused::Status(r) => {
                        tracing::debug!(method = ?msg.method(), from = %peer.addr, status = r.status, "request refused");
                        reply(msg, r.status, r.reason, &[], peer, io);
                    }
                    Refused::Challenge(value) => reply(msg, 407, "Proxy Authentication Required", &[("Proxy-Authenticate", value.as_bytes())], peer, io),
                    Refused::Silently => {}
                }
                None
            }
        }
    }

    fn admit_response(&self, eng: &Engine, msg: &SipMessage, peer: Peer) -> Result<Step, Refused> {
        let via = msg.top_via().ok_or(Refused::Silently)?;
        let is_cancel = msg.cseq().is_some_and(|c| c.method_kind() == Method::Cancel);
        let key = eng.client_key(via.branch.unwrap_or_default(), is_cancel);
        // Only the peer the request went to may answer it; anything else is a stray (never
        // forwarded statelessly: a Via is the sender's word, not ours).
        match eng.clients.get(&key) {
            Some(c) if trust::same_flow(c.target, peer) => Ok(Step::Response(key)),
            _ => {
                self.metrics.stray.increment(1);
                Err(Refused::Silently)
            }
        }
    }

    fn admit_request(&self, eng: &Engine, msg: &SipMessage, peer: Peer, snap: &Snapshot, now: Instant) -> Result<Step, Refused> {
        let method = msg.method().ok_or(Refused::Silently)?;
        match method {
            Method::Ack => return self.admit_ack(eng, msg, peer, snap),
            Method::Cancel => return self.admit_cancel(eng, msg, peer, snap),
            _ => {}
        }
        let key = server_key(eng, msg, method);
        if let Some(s) = eng.servers.get(&key) {
            // Somebody else's branch and sent-by: not a retransmission of theirs to absorb.
            return if trust::same_flow(s.peer, peer) { Ok(Step::Retransmission(key)) } else { Err(Refused::Silently) };
        }
        if msg.max_forwards() == Some(0) {
            return Err(Refusal { status: 483, reason: "Too Many Hops" }.into());
        }
        let head = target::route_head(msg, &self.local, &self.route_key);
        if method == Method::Options && matches!(head, RouteHead::None) && self.is_for_us(msg) {
            return Ok(Step::Local);
        }
        let sender = trust::classify(snap, peer, msg, &eng.registrar, self.agents.as_deref());
        let in_dialog = msg.to().and_then(|t| t.param(b"tag")).is_some();
        match head {
            RouteHead::Ours { ours, token: Some(Ok(Token::Dialog { a, b })) } => {
                let other = if trust::is_end(a, peer, &sender) {
                    b
                } else if trust::is_end(b, peer, &sender) {
                    a
                } else {
                    return Err(FORBIDDEN.into());
                };
                let hop = target::to_other_end(msg, other, ours);
                Ok(Step::Forward { key, hop, sender, in_dialog, strip_routes: false, agent: None })
            }
            RouteHead::Ours { ours, token: Some(Ok(Token::Path { flow, portal, extension })) } => {
                // The PBX reaching a phone along the Path of a registration callgate relayed: over
                // the flow it registered on, for the extension it registered.
                let pbx = snap.portals.get(&portal).filter(|p| sender.is_pbx() && p.trusts(peer.addr.ip()));
                let Some(pbx) = pbx.filter(|_| !in_dialog) else { return Err(FORBIDDEN.into()) };
                let hop = NextHop { peer: flow, request_uri: None, pop_route: ours };
                Ok(Step::Forward { key, hop, sender: Sender::Pbx(Some(Arc::clone(pbx))), in_dialog, strip_routes: false, agent: Some(extension) })
            }
            RouteHead::Ours { token: Some(Err(())), .. } | RouteHead::Foreign => Err(FORBIDDEN.into()),
            RouteHead::Ours { ours, token: None } if !in_dialog => self.out_of_dialog(msg, method, key, sender, ours, snap, eng, now),
            RouteHead::None if !in_dialog => self.out_of_dialog(msg, method, key, sender, 0, snap, eng, now),
            // In a dialog callgate did not record-route: not ours to relay.
            RouteHead::Ours { .. } | RouteHead::None => Err(if matches!(sender, Sender::Unknown) { FORBIDDEN } else { NO_DIALOG }.into()),
        }
    }

    /// Where an out-of-dialog request goes, by who sent it: a REGISTER to its portal's PBX; the
    /// PBX's request to the extension; an agent's to its own portal's PBX; nobody's nowhere
    /// (403, or 407 when the From user has callgate-issued credentials).
    #[allow(clippy::too_many_arguments)]
    fn out_of_dialog(&self, msg: &SipMessage, method: Method, key: u64, sender: Sender, ours: usize, snap: &Snapshot, eng: &Engine, now: Instant) -> Result<Step, Refused> {
        if method == Method::Register {
            let portal = match &sender {
                Sender::Agent { portal, .. } => Some(Arc::clone(portal)),
                _ => single(trust::agent_candidates(snap, msg.to().map(|t| t.uri))),
            };
            let portal = portal.ok_or(FORBIDDEN)?;
            let hop = target::to_pbx(msg, &portal)?;
            let extension = msg.to().and_then(|t| t.uri.user).map(|u| String::from_utf8_lossy(u).into_owned()).unwrap_or_default();
            let sender = Sender::Agent { portal, extension, auth: AgentAuth::Registered };
            return Ok(Step::Forward { key, hop, sender, in_dialog: false, strip_routes: true, agent: None });
        }
        let sender = match sender {
            Sender::Unknown => self.digest(msg, snap, now)?,
            known => known,
        };
        match &sender {
            Sender::Pbx(Some(p)) => {
                let mut hop = target::to_extension(msg, p, &eng.registrar, self.agents.as_deref())?;
                hop.pop_route = ours;
                Ok(Step::Forward { key, hop, sender, in_dialog: false, strip_routes: false, agent: None })
            }
            Sender::Agent { portal, auth, .. } => {
                // A WebRTC portal's agents are browsers: a phone's call for it is nobody's.
                if portal.portal.settings.telephony_mode == TelephonyMode::Webrtc && *auth != AgentAuth::Browser {
                    return Err(FORBIDDEN.into());
                }
                let hop = target::to_pbx(msg, portal)?;
                Ok(Step::Forward { key, hop, sender, in_dialog: false, strip_routes: true, agent: None })
            }
            // The PBX's address shared by several portals, and no line of theirs named.
            Sender::Pbx(None) | Sender::Unknown => Err(FORBIDDEN.into()),
        }
    }

    /// An IP phone authenticating to callgate itself: its Proxy-Authorization checked against
    /// the credentials issued for its extension, or a challenge.
    fn digest(&self, msg: &SipMessage, snap: &Snapshot, now: Instant) -> Result<Sender, Refused> {
        let agents = self.agents.as_deref().ok_or(FORBIDDEN)?;
        let candidates = trust::agent_candidates(snap, msg.from().map(|f| f.uri));
        if candidates.is_empty() {
            return Err(FORBIDDEN.into());
        }
        match agents.authenticate(msg, &candidates, now) {
            DigestOutcome::Agent { portal, extension } => {
                let portal = snap.portals.get(&portal).cloned().ok_or(FORBIDDEN)?;
                Ok(Sender::Agent { portal, extension, auth: AgentAuth::Digest })
            }
            DigestOutcome::Challenge(value) => Err(Refused::Challenge(value)),
            DigestOutcome::Nobody => Err(FORBIDDEN.into()),
        }
    }

    /// ACK: for our non-2xx it belongs to our server transaction (from its sender only); for a
    /// 2xx it is end to end and goes, statelessly, to the other end of the dialog its Route
    /// names. Anything else is dropped.
    fn admit_ack(&self, eng: &Engine, msg: &SipMessage, peer: Peer, snap: &Snapshot) -> Result<Step, Refused> {
        let key = server_key(eng, msg, Method::Invite);
        // An ACK for a 2xx goes on even when it matches the INVITE's transaction (RFC 2543
        // peers, reused branches; RFC 6026 §7.1 hands it to the proxy core to forward).
        if let Some(s) = eng.servers.get(&key).filter(|s| s.final_status.is_some_and(|st| st >= 300)) {
            return if trust::same_flow(s.peer, peer) { Ok(Step::Ack { server: Some(key), hop: None }) } else { Err(Refused::Silently) };
        }
        let RouteHead::Ours { ours, token: Some(Ok(Token::Dialog { a, b })) } = target::route_head(msg, &self.local, &self.route_key) else {
            return Err(Refused::Silently);
        };
        let sender = trust::classify(snap, peer, msg, &eng.registrar, self.agents.as_deref());
        let other = if trust::is_end(a, peer, &sender) {
            b
        } else if trust::is_end(b, peer, &sender) {
            a
        } else {
            return Err(Refused::Silently);
        };
        Ok(Step::Ack { server: None, hop: Some(target::to_other_end(msg, other, ours)) })
    }

    /// CANCEL: only the sender of the INVITE may cancel it.
    fn admit_cancel(&self, eng: &Engine, msg: &SipMessage, peer: Peer, snap: &Snapshot) -> Result<Step, Refused> {
        let key = server_key(eng, msg, Method::Invite);
        let Some(s) = eng.servers.get(&key) else { return Err(NO_DIALOG.into()) };
        if !trust::same_flow(s.peer, peer) {
            return Err(FORBIDDEN.into());
        }
        let pbx = trust::classify(snap, peer, msg, &eng.registrar, self.agents.as_deref()).is_pbx();
        Ok(Step::Cancel { key, side: if pbx { Side::Remote } else { Side::Agent } })
    }

    /// Carries out what [`Self::admit_in`] decided: `msg` is what goes on, `sent` what the
    /// tracker is told (the same message, or its sender's original before the media bridge
    /// swapped its SDP).
    pub(super) fn handle_admitted(&self, eng: &mut Engine, msg: &SipMessage, sent: &SipMessage, peer: Peer, admitted: Admitted, io: &mut Io<'_>) {
        match admitted.0 {
            Step::Retransmission(key) => {
                self.metrics.retransmissions.increment(1);
                eng.server_request(key, msg, io);
            }
            Step::Forward { key, hop, sender, in_dialog, strip_routes, agent } => {
                let method = msg.method().unwrap_or(Method::Invite);
                let side = if sender.is_pbx() { Side::Remote } else { Side::Agent };
                let purpose = self.observe_request(sent, method, in_dialog, side, &sender, agent.as_deref(), peer, io);
                self.forward(eng, msg, method, key, hop, in_dialog, purpose, &sender, strip_routes, peer, io);
            }
            Step::Ack { server: Some(key), .. } => eng.server_request(key, msg, io),
            Step::Ack { server: None, hop: Some(hop) } => self.forward_ack(msg, &hop, io),
            Step::Ack { .. } => {}
            Step::Cancel { key, side } => self.cancel(eng, msg, key, side, peer, io),
            Step::Local => reply(msg, 200, "OK", &[], peer, io),
            Step::Response(key) => eng.client_response(key, msg, io),
        }
    }

    /// Reports what `msg` means to the tracker and says what its transaction is for.
    #[allow(clippy::too_many_arguments)]
    fn observe_request(&self, msg: &SipMessage, method: Method, in_dialog: bool, side: Side, sender: &Sender, agent: Option<&str>, peer: Peer, io: &mut Io<'_>) -> Purpose {
        match (method, in_dialog) {
            (Method::Invite, false) => {
                let direction = if side == Side::Remote { Direction::FromPbx } else { Direction::FromAgent };
                if let Some(p) = sender.portal() {
                    io.events.extend(observe::offered(msg, p, direction, agent));
                }
                Purpose::InitialInvite
            }
            (Method::Register, _) => match sender.portal().and_then(|p| PendingRegister::from_request(p.portal.id, msg, peer)) {
                Some(reg) => Purpose::Register(reg),
                None => Purpose::Other,
            },
            (Method::Refer, _) => {
                io.events.extend(observe::in_dialog(msg, method, side));
                Purpose::Refer
            }
            (_, true) => {
                io.events.extend(observe::in_dialog(msg, method, side));
                Purpose::Other
            }
            _ => Purpose::Other,
        }
    }

    /// Stateful forwarding: a server transaction upstream, a client transaction downstream.
    #[allow(clippy::too_many_arguments)]
    fn forward(&self, eng: &mut Engine, msg: &SipMessage, method: Method, key: u64, hop: NextHop, in_dialog: bool, purpose: Purpose, sender: &Sender, strip_routes: bool, peer: Peer, io: &mut Io<'_>) {
        // Bounded state: in all, and per source that is not a PBX (an agent's phone, or an office
        // of phones behind one address, needs far fewer).
        if eng.servers.len() >= MAX_TRANSACTIONS || (!sender.is_pbx() && eng.load_of(peer.addr.ip()) >= MAX_PER_SOURCE) {
            self.metrics.refused.increment(1);
            return reply(msg, 503, "Service Unavailable", &[("Retry-After", b"5")], peer, io);
        }
        let branch = self.new_branch();
        let via = format!("SIP/2.0/{} {};branch={branch}", transport_name(hop.peer.transport), self.local.sent_by(hop.peer.transport));
        // Every dialog-creating request is record-routed (a SUBSCRIBE's NOTIFYs, an out-of-dialog
        // REFER's, come back through callgate like a call's BYE).
        let rr = if matches!(method, Method::Invite | Method::Subscribe | Method::Refer) && !in_dialog {
            let user = self.route_key.dialog(peer, hop.peer, msg.call_id().unwrap_or_default());
            self.local.record_route(peer, hop.peer, &user, target::is_sips(msg))
        } else {
            Vec::new()
        };
        let rr_refs: Vec<&[u8]> = rr.iter().map(String::as_bytes).collect();
        let path = match (method, sender) {
            (Method::Register, Sender::Agent { portal, extension, .. }) => Some(self.local.route_uri(hop.peer.transport, &self.route_key.path(peer, portal.portal.id, extension))),
            _ => None,
        };
        let correlation = sender.portal().map(|p| p.portal.settings.correlation_header.clone()).unwrap_or_default();
        // Everyone but the PBX is held to the agents' rules (a dialog end that authenticated when
        // the dialog began is known only by its flow now).
        let agent = !sender.is_pbx();
        // A phone that answered callgate's own challenge keeps its answer here (RFC 3261 §22.3:
        // credentials for this proxy's realm go no further); its answer to the PBX goes on.
        let our_realm = match sender {
            Sender::Agent { portal, auth: AgentAuth::Digest, .. } => Some(crate::settings::realm_of(&portal.portal)),
            _ => None,
        };
        let ours = |value: &[u8]| our_realm.as_ref().is_some_and(|r| crate::sip::core::digest::Credentials::parse(value).is_some_and(|c| c.realm == r.as_bytes()));
        let strip = |name: HeaderName, raw: &[u8], value: &[u8]| {
            (strip_routes && matches!(name, HeaderName::Route | HeaderName::Path)) || (agent && trust::agent_may_not_send(name, raw, &correlation)) || (name == HeaderName::ProxyAuthorization && ours(value))
        };
        // RFC 3581: the sender's Via says where it was really received from.
        let stamped = msg.top_via().and_then(|v| v.stamped(peer.addr));
        let edit = RequestEdit {
            request_uri: hop.request_uri.as_deref().map(str::as_bytes),
            via: via.as_bytes(),
            top_via: stamped.as_deref().map(str::as_bytes),
            record_route: &rr_refs,
            path: path.as_deref().map(str::as_bytes),
            extra: if path.is_some() && !supports_path(msg) { SUPPORTED_PATH } else { &[] },
            pop_route: hop.pop_route,
            strip: Some(&strip),
        };
        let mut buf = BytesMut::with_capacity(msg.as_bytes().len() + 256);
        write_forwarded_request(msg, &edit, &mut buf);
        let Ok(fwd) = SipMessage::parse(buf.freeze()) else {
            self.metrics.refused.increment(1);
            return reply(msg, 500, "Server Internal Error", &[], peer, io);
        };
        eng.add_server(key, msg, peer, purpose, io.now);
        if method == Method::Invite {
            // RFC 3261 §16.2: a stateful proxy answers 100 at once (the PBX stops retransmitting).
            let mut trying = BytesMut::new();
            write_response(msg, 100, "Trying", None, &[], &mut trying);
            eng.respond(key, trying.freeze(), 100, io);
        }
        tracing::debug!(?method, from = %peer.addr, to = %hop.peer.addr, transport = ?hop.peer.transport, "forwarding");
        let client = eng.client_key(branch.as_bytes(), false);
        eng.add_client(client, &fwd, hop.peer, Some(key), io);
        self.metrics.forwarded.increment(1);
    }

    /// An ACK for a 2xx, forwarded statelessly: the branch is derived from the received one, so
    /// a retransmitted ACK goes on with the same branch (RFC 3261 §16.11).
    fn forward_ack(&self, msg: &SipMessage, hop: &NextHop, io: &mut Io<'_>) {
        let incoming = msg.top_via().and_then(|v| v.branch).unwrap_or_default();
        let branch = format!("z9hG4bK-cgs-{:016x}", self.keys.hash_one(incoming));
        let via = format!("SIP/2.0/{} {};branch={branch}", transport_name(hop.peer.transport), self.local.sent_by(hop.peer.transport));
        let edit = RequestEdit { request_uri: hop.request_uri.as_deref().map(str::as_bytes), via: via.as_bytes(), pop_route: hop.pop_route, ..Default::default() };
        let mut buf = BytesMut::with_capacity(msg.as_bytes().len() + 128);
        write_forwarded_request(msg, &edit, &mut buf);
        io.out.send(hop.peer, buf.freeze());
    }

    /// CANCEL: answered 200 here; sent on to the INVITE's branch while it has no final answer
    /// (after its first provisional answer, RFC 3261 §9.1).
    fn cancel(&self, eng: &mut Engine, msg: &SipMessage, key: u64, side: Side, peer: Peer, io: &mut Io<'_>) {
        let Some(s) = eng.servers.get(&key) else {
            return reply(msg, 481, "Call/Transaction Does Not Exist", &[], peer, io);
        };
        reply(msg, 200, "OK", &[], peer, io);
        if s.final_status.is_some() {
            return;
        }
        let client = s.client;
        io.events.extend(observe::in_dialog(msg, Method::Cancel, side));
        if let Some(ckey) = client {
            eng.cancel(ckey, io);
        }
    }

    fn is_for_us(&self, msg: &SipMessage) -> bool {
        let Some(uri) = msg.request_uri().and_then(Uri::parse) else { return false };
        uri.user.is_none() && self.local.is_ours(&uri)
    }
}

/// What a relayed REGISTER says when its phone did not: callgate inserted the Path and relies on
/// it, so the registrar must not refuse it for want of the phone's support (RFC 3327 §5: a
/// strict registrar answers 420 Bad Extension; Kamailio's default `path_mode`).
const SUPPORTED_PATH: &[(&[u8], &[u8])] = &[(b"Supported", b"path")];

/// Whether `msg` lists the `path` option tag in a Supported header.
fn supports_path(msg: &SipMessage) -> bool {
    msg.values(HeaderName::Supported).any(|t| t.trim_ascii().eq_ignore_ascii_case(b"path"))
}

/// The only element, if there is exactly one.
fn single<T>(mut v: Vec<T>) -> Option<T> {
    (v.len() == 1).then(|| v.pop()).flatten()
}

/// Live server transactions at most: past this a new request is answered 503 (memory stays
/// bounded whatever arrives).
pub(crate) const MAX_TRANSACTIONS: usize = 200_000;
/// Live server transactions at most per source address that is not a PBX's.
pub(crate) const MAX_PER_SOURCE: u32 = 1_000;

/// The server transaction key (RFC 3261 §17.2.3): top Via branch, sent-by and method (ACK and
/// CANCEL match their INVITE); RFC 2543 peers without a magic-cookie branch by Call-ID, From
/// tag and CSeq number.
fn server_key(eng: &Engine, msg: &SipMessage, method: Method) -> u64 {
    let via = msg.top_via();
    let branch = via.as_ref().and_then(|v| v.branch).unwrap_or_default();
    let sent_by = via.as_ref().map(|v| (v.host, v.port));
    let kind: &[u8] = match method {
        Method::Invite | Method::Ack => b"INVITE",
        _ => msg.method_raw().unwrap_or_default(),
    };
    if branch.starts_with(b"z9hG4bK") {
        eng.server_key((branch, sent_by, kind))
    } else {
        eng.server_key((msg.call_id(), msg.from().and_then(|f| f.tag), msg.cseq().map(|c| c.seq), kind))
    }
}

fn reply(msg: &SipMessage, status: u16, reason: &str, headers: &[(&str, &[u8])], peer: Peer, io: &mut Io<'_>) {
    io.note_local_final(msg, peer, status);
    let mut buf = BytesMut::new();
    write_response(msg, status, reason, Some(&to_tag_for(msg)), headers, &mut buf);
    io.out.send(peer, buf.freeze());
}

pub(super) fn transport_name(t: Transport) -> &'static str {
    match t {
        Transport::Udp => "UDP",
        Transport::Tcp => "TCP",
        Transport::Tls => "TLS",
        Transport::Ws => "WS",
        Transport::Wss => "WSS",
    }
}

impl Admitted {
    /// A BYE callgate sends itself for a vanished browser agent (see [`Proxy::hang_up_for`]).
    pub(super) fn hang_up(key: u64, hop: NextHop) -> Self {
        Self(Step::Forward { key, hop, sender: Sender::Unknown, in_dialog: true, strip_routes: false, agent: None })
    }
}
