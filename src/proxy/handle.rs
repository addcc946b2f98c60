//! Request and response handling of the edge proxy: RFC 3261 §16 steps for a record-routing
//! proxy, on top of the transaction table ([`Engine`]).

use std::hash::BuildHasher;

use bytes::BytesMut;

use super::engine::{Engine, Io, Purpose};
use super::registrar::PendingRegister;
use super::target::{self, NextHop, Refusal};
use super::{observe, Proxy};
use crate::calls::{Direction, Side};
use crate::routing::{PortalEntry, Snapshot};
use crate::sip::core::{
    to_tag_for, write_forwarded_request, write_forwarded_response, write_response, Method, RequestEdit, SipMessage, Uri, Via,
};
use crate::sip::transport::{Peer, Transport};

impl Proxy {
    pub(super) fn request(&self, eng: &mut Engine, msg: &SipMessage, peer: Peer, snap: &Snapshot, io: &mut Io<'_>) {
        let Some(method) = msg.method() else { return };
        match method {
            Method::Ack => return self.ack(eng, msg, peer, io),
            Method::Cancel => return self.cancel(eng, msg, peer, snap, io),
            _ => {}
        }
        let key = server_key(eng, msg, method);
        if eng.servers.contains_key(&key) {
            self.metrics.retransmissions.increment(1);
            return eng.server_request(key, msg, io);
        }
        if msg.max_forwards() == Some(0) {
            return reply(msg, 483, "Too Many Hops", peer, io);
        }
        // A REGISTER is always a phone's (the PBX is the registrar), whatever its address.
        let pbx = if method == Method::Register { None } else { target::pbx_portal(snap, peer, msg, &eng.registrar) };
        let in_dialog = msg.to().and_then(|t| t.param(b"tag")).is_some();
        let hop = match target::by_route(msg, &self.local, peer.transport) {
            Some(hop) => hop,
            // A REGISTER for callgate itself (phones using it as their registrar) goes on to the
            // PBX like any agent's request; anything else without a user part is for us.
            None if method != Method::Register && self.is_for_us(msg) => return self.local_request(msg, method, peer, io),
            None if in_dialog => target::by_request_uri(msg, &self.local, peer.transport),
            None => match &pbx {
                Some(p) => target::to_extension(msg, p, &eng.registrar, self.flows.as_deref(), peer.transport),
                None => match target::agent_portal(snap, msg) {
                    Some(p) => target::to_pbx(msg, &p, peer.transport),
                    None => Err(Refusal { status: 404, reason: "Not Found" }),
                },
            },
        };
        let hop = match hop {
            Ok(hop) => hop,
            Err(r) => {
                self.metrics.refused.increment(1);
                tracing::debug!(?method, from = %peer.addr, status = r.status, "request refused");
                return reply(msg, r.status, r.reason, peer, io);
            }
        };
        let side = if pbx.is_some() { Side::Remote } else { Side::Agent };
        let portal = pbx.clone().or_else(|| target::agent_portal(snap, msg));
        let purpose = self.observe_request(msg, method, in_dialog, side, portal.as_deref(), peer, io);
        self.forward(eng, msg, method, key, hop, in_dialog, purpose, peer, io);
    }

    /// Reports what `msg` means to the tracker and says what its transaction is for.
    #[allow(clippy::too_many_arguments)]
    fn observe_request(&self, msg: &SipMessage, method: Method, in_dialog: bool, side: Side, portal: Option<&PortalEntry>, peer: Peer, io: &mut Io<'_>) -> Purpose {
        match (method, in_dialog) {
            (Method::Invite, false) => {
                let direction = if side == Side::Remote { Direction::FromPbx } else { Direction::FromAgent };
                if let Some(p) = portal {
                    io.events.extend(observe::offered(msg, p, direction));
                }
                Purpose::InitialInvite
            }
            (Method::Register, _) => match portal.and_then(|p| PendingRegister::from_request(p.portal.id, msg, peer)) {
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
    fn forward(&self, eng: &mut Engine, msg: &SipMessage, method: Method, key: u64, hop: NextHop, in_dialog: bool, purpose: Purpose, peer: Peer, io: &mut Io<'_>) {
        let branch = self.new_branch();
        let via = format!("SIP/2.0/{} {};branch={branch}", transport_name(hop.peer.transport), self.local.sent_by(hop.peer.transport));
        let rr = if method == Method::Invite && !in_dialog { self.local.record_route(peer, hop.peer) } else { Vec::new() };
        let rr_refs: Vec<&[u8]> = rr.iter().map(String::as_bytes).collect();
        let path = (method == Method::Register).then(|| self.local.route_uri(hop.peer.transport));
        let edit = RequestEdit {
            request_uri: hop.request_uri.as_deref().map(str::as_bytes),
            via: via.as_bytes(),
            record_route: &rr_refs,
            path: path.as_deref().map(str::as_bytes),
            pop_route: hop.pop_route,
        };
        let mut buf = BytesMut::with_capacity(msg.as_bytes().len() + 256);
        write_forwarded_request(msg, &edit, &mut buf);
        let Ok(fwd) = SipMessage::parse(buf.freeze()) else {
            self.metrics.refused.increment(1);
            return reply(msg, 500, "Server Internal Error", peer, io);
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

    /// ACK: for a non-2xx it belongs to our server transaction; for a 2xx it is end to end and
    /// follows the Route set statelessly.
    fn ack(&self, eng: &mut Engine, msg: &SipMessage, peer: Peer, io: &mut Io<'_>) {
        let key = server_key(eng, msg, Method::Invite);
        // The ACK for our 3xx-6xx ends the server transaction. An ACK for a 2xx goes on even
        // when it matches the INVITE's transaction (RFC 2543 peers, reused branches; RFC 6026
        // §7.1 hands it to the proxy core to forward).
        if eng.servers.get(&key).is_some_and(|s| s.final_status.is_some_and(|st| st >= 300)) {
            return eng.server_request(key, msg, io);
        }
        let hop = match target::by_route(msg, &self.local, peer.transport) {
            Some(Ok(hop)) => hop,
            Some(Err(_)) => return,
            None => match target::by_request_uri(msg, &self.local, peer.transport) {
                Ok(hop) => hop,
                Err(_) => return,
            },
        };
        // Stateless: the branch is derived from the received one, so a retransmitted ACK is
        // forwarded with the same branch (RFC 3261 §16.11).
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
    fn cancel(&self, eng: &mut Engine, msg: &SipMessage, peer: Peer, snap: &Snapshot, io: &mut Io<'_>) {
        let key = server_key(eng, msg, Method::Invite);
        let Some(s) = eng.servers.get(&key) else {
            return reply(msg, 481, "Call/Transaction Does Not Exist", peer, io);
        };
        reply(msg, 200, "OK", peer, io);
        if s.final_status.is_some() {
            return;
        }
        let client = s.client;
        let side = if target::pbx_portal(snap, peer, msg, &eng.registrar).is_some() { Side::Remote } else { Side::Agent };
        io.events.extend(observe::in_dialog(msg, Method::Cancel, side));
        if let Some(ckey) = client {
            eng.cancel(ckey, io);
        }
    }

    /// Requests addressed to callgate itself (OPTIONS pings, anything without a user part).
    fn local_request(&self, msg: &SipMessage, method: Method, peer: Peer, io: &mut Io<'_>) {
        match method {
            Method::Options => reply(msg, 200, "OK", peer, io),
            _ => reply(msg, 404, "Not Found", peer, io),
        }
    }

    fn is_for_us(&self, msg: &SipMessage) -> bool {
        let Some(uri) = msg.request_uri().and_then(Uri::parse) else { return false };
        uri.user.is_none() && self.local.is_ours(&uri)
    }

    pub(super) fn response(&self, eng: &mut Engine, msg: &SipMessage, io: &mut Io<'_>) {
        let Some(via) = msg.top_via() else { return };
        let is_cancel = msg.cseq().is_some_and(|c| c.method_kind() == Method::Cancel);
        let key = eng.client_key(via.branch.unwrap_or_default(), is_cancel);
        if eng.clients.contains_key(&key) {
            return eng.client_response(key, msg, io);
        }
        // No transaction (a 2xx retransmitted after it ended, or a stray): forward statelessly
        // if the top Via is ours, along the next Via.
        if !self.local.is_our_via(&via) {
            self.metrics.stray.increment(1);
            return;
        }
        let Some(next) = crate::sip::core::second_via(msg).and_then(Via::parse) else { return };
        let Some(to) = via_peer(&next) else { return };
        let mut buf = BytesMut::with_capacity(msg.as_bytes().len());
        write_forwarded_response(msg, &mut buf);
        io.out.send(to, buf.freeze());
    }

}

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

fn reply(msg: &SipMessage, status: u16, reason: &str, peer: Peer, io: &mut Io<'_>) {
    io.note_local_final(msg, peer, status);
    let mut buf = BytesMut::new();
    write_response(msg, status, reason, Some(&to_tag_for(msg)), &[], &mut buf);
    io.out.send(peer, buf.freeze());
}

/// Where a response goes along `via`: `received`/`rport` when present, else sent-by.
fn via_peer(via: &Via<'_>) -> Option<Peer> {
    let host = via.received.unwrap_or(via.host);
    let port = via.rport.flatten().or(via.port);
    let addr = crate::sip::core::socket_addr(host, port)?;
    let transport = if via.transport.eq_ignore_ascii_case(b"TCP") {
        Transport::Tcp
    } else if via.transport.eq_ignore_ascii_case(b"TLS") {
        Transport::Tls
    } else {
        Transport::Udp
    };
    Some(Peer { addr, transport })
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
