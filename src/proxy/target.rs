//! Where a request goes next (RFC 3261 §16.4-16.5 for a record-routing edge proxy) and which
//! portal and side it belongs to. Pure: the directory snapshot and registrar are read, not
//! changed.

use std::net::SocketAddr;
use std::sync::Arc;

use super::registrar::Registrar;
use super::Local;
use crate::routing::{PortalEntry, Snapshot};
use crate::sip::core::{first_value, HeaderName, NameAddr, SipMessage, Uri};
use crate::sip::transport::{Peer, Transport};

/// Where a request is sent and how it is rewritten.
#[derive(Debug, Clone)]
pub(crate) struct NextHop {
    pub(crate) peer: Peer,
    /// New Request-URI, if it changes.
    pub(crate) request_uri: Option<String>,
    /// Leading Route values naming us, to be removed.
    pub(crate) pop_route: usize,
}

/// A request the proxy answers itself instead of forwarding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) status: u16,
    pub(crate) reason: &'static str,
}

const NOT_FOUND: Refusal = Refusal { status: 404, reason: "Not Found" };
const UNAVAILABLE: Refusal = Refusal { status: 480, reason: "Temporarily Unavailable" };
const NO_ROUTE: Refusal = Refusal { status: 502, reason: "Bad Gateway" };

/// Whether the request came from a portal's PBX: its source (or, on a stream, its top Via
/// sent-by, since the PBX connects from an ephemeral port) is the portal's `pbx_host`; or it
/// comes from another port of the PBX's IP address that is not a known phone (PBXs send from
/// several ports: one per trunk, per worker).
pub(crate) fn pbx_portal(snap: &Snapshot, peer: Peer, msg: &SipMessage, registrar: &Registrar) -> Option<Arc<PortalEntry>> {
    if peer.transport.is_websocket() {
        return None; // a browser agent's flow, never the PBX (whatever its address)
    }
    let via = msg.top_via().and_then(|v| crate::sip::core::socket_addr(v.host, v.port));
    let exact = |a: SocketAddr| a == peer.addr || (peer.transport != Transport::Udp && Some(a) == via);
    let same_host = |p: &PortalEntry, a: SocketAddr| a.ip() == peer.addr.ip() && !p.agent_addrs.contains(&peer.addr) && !registrar.is_phone(peer);
    let portals = || snap.portals.values();
    portals()
        .find(|p| p.pbx_addr.is_some_and(exact))
        .or_else(|| portals().find(|p| p.pbx_addr.is_some_and(|a| same_host(p, a))))
        .cloned()
}

/// The portal of an agent's request: the one mapping the From user as an extension, else the
/// only portal.
pub(crate) fn agent_portal(snap: &Snapshot, msg: &SipMessage) -> Option<Arc<PortalEntry>> {
    let user = msg.from().and_then(|f| f.uri.user).and_then(|u| std::str::from_utf8(u).ok());
    user.and_then(|u| snap.portals.values().find(|p| p.by_extension.contains_key(u)).cloned()).or_else(|| snap.single().cloned())
}

/// Next hop of a request that carries a Route set headed by us (in-dialog, or a PBX that keeps
/// a Path): the next Route value, else the Request-URI.
pub(crate) fn by_route(msg: &SipMessage, local: &Local, transport: Transport) -> Option<Result<NextHop, Refusal>> {
    let first = first_value(msg, HeaderName::Route)?;
    let uri = NameAddr::parse(first).map(|n| n.uri)?;
    if !local.is_ours(&uri) {
        return None;
    }
    // One value names us, or two after a transport change (RFC 5658 double Record-Route).
    let mut routes = msg.values(HeaderName::Route).flat_map(crate::sip::core::comma_values).map(<[u8]>::trim_ascii).peekable();
    let mut ours = 0;
    let mut flow = None;
    while let Some(n) = routes.peek().and_then(|v| NameAddr::parse(v)).filter(|n| local.is_ours(&n.uri)) {
        flow = flow.or_else(|| n.uri.user.and_then(super::parse_flow_token));
        routes.next();
        ours += 1;
    }
    // Toward a browser agent (a request from the other side of a route naming its WebSocket
    // flow): over that flow, whatever the Request-URI (the browser's `.invalid` Contact) says.
    if let (Some(addr), false) = (flow, transport.is_websocket()) {
        // The hub sends over the connection by address, ws:// or wss:// alike.
        return Some(Ok(NextHop { peer: Peer { addr, transport: Transport::Ws }, request_uri: None, pop_route: ours }));
    }
    let next = routes.next().and_then(NameAddr::parse).map(|n| n.uri).or_else(|| msg.request_uri().and_then(Uri::parse));
    let hop = next.and_then(|u| uri_peer(&u, transport)).map(|peer| NextHop { peer, request_uri: None, pop_route: ours });
    Some(hop.ok_or(NO_ROUTE))
}

/// Next hop of an in-dialog request that does not route through us: its Request-URI, unless
/// that is us (then the dialog is unknown here).
pub(crate) fn by_request_uri(msg: &SipMessage, local: &Local, transport: Transport) -> Result<NextHop, Refusal> {
    let uri = msg.request_uri().and_then(Uri::parse).ok_or(NO_ROUTE)?;
    if local.is_ours(&uri) {
        return Err(Refusal { status: 481, reason: "Call/Transaction Does Not Exist" });
    }
    let peer = uri_peer(&uri, transport).ok_or(NO_ROUTE)?;
    Ok(NextHop { peer, request_uri: None, pop_route: 0 })
}

/// Browser agents' registrations over WebSocket (WebRTC widget), kept by
/// `webrtc::Registrar`: the proxy only asks where an extension's flow is.
pub trait FlowLocator: Send + Sync + 'static {
    /// The flow (WebSocket peer) and Contact URI of `extension`'s live registration, if any.
    fn locate(&self, portal: crate::settings::PortalId, extension: &str) -> Option<(Peer, String)>;
}

/// Next hop of an out-of-dialog request from the PBX: the extension's browser flow, else its
/// registered contact, else its static contact from the mapping.
pub(crate) fn to_extension(msg: &SipMessage, portal: &PortalEntry, registrar: &Registrar, flows: Option<&dyn FlowLocator>, transport: Transport) -> Result<NextHop, Refusal> {
    let ruri = msg.request_uri().and_then(Uri::parse).ok_or(NOT_FOUND)?;
    let ext = ruri.user.and_then(|u| std::str::from_utf8(u).ok()).ok_or(NOT_FOUND)?;
    if let Some((peer, contact)) = flows.and_then(|f| f.locate(portal.portal.id, ext)) {
        return Ok(NextHop { peer, request_uri: Some(contact), pop_route: 0 });
    }
    if let Some(b) = registrar.lookup(portal.portal.id, ext) {
        return Ok(NextHop { peer: b.peer, request_uri: Some(b.contact.clone()), pop_route: 0 });
    }
    let mapping = portal.by_extension.get(ext).ok_or(NOT_FOUND)?;
    let contact = mapping.contact.as_deref().ok_or(UNAVAILABLE)?;
    let uri = Uri::parse(contact.trim_start_matches('<').trim_end_matches('>').as_bytes()).ok_or(UNAVAILABLE)?;
    let peer = uri_peer(&uri, transport).ok_or(UNAVAILABLE)?;
    Ok(NextHop { peer, request_uri: Some(String::from_utf8_lossy(uri.raw).into_owned()), pop_route: 0 })
}

/// Next hop of an out-of-dialog request from an agent: the portal's PBX, Request-URI host
/// rewritten to it.
pub(crate) fn to_pbx(msg: &SipMessage, portal: &PortalEntry, transport: Transport) -> Result<NextHop, Refusal> {
    let addr = portal.pbx_addr.ok_or(NO_ROUTE)?;
    let transport = not_websocket(transport);
    let user = msg.request_uri().and_then(Uri::parse).and_then(|u| u.user).map(|u| String::from_utf8_lossy(u).into_owned());
    let host = &portal.portal.settings.pbx_host;
    let request_uri = Some(user.map_or_else(|| format!("sip:{host}"), |u| format!("sip:{u}@{host}")));
    Ok(NextHop { peer: Peer { addr, transport }, request_uri, pop_route: 0 })
}

/// Where a SIP URI points: an IP literal host (names are not resolved on the SIP path), port
/// 5060 by default, `transport=` parameter else the given one.
pub(crate) fn uri_peer(uri: &Uri<'_>, default: Transport) -> Option<Peer> {
    let addr = crate::sip::core::socket_addr(uri.host, uri.port)?;
    let default = not_websocket(default);
    let transport = match uri.param(b"transport") {
        Some(t) if t.eq_ignore_ascii_case(b"tcp") => Transport::Tcp,
        Some(t) if t.eq_ignore_ascii_case(b"tls") => Transport::Tls,
        Some(t) if t.eq_ignore_ascii_case(b"udp") => Transport::Udp,
        _ => default,
    };
    Some(Peer { addr, transport })
}

/// The transport to reach a SIP address with when a request came in on `inbound`: WebSocket
/// flows cannot be dialled, so what arrives over one goes on over UDP.
fn not_websocket(inbound: Transport) -> Transport {
    if inbound.is_websocket() {
        Transport::Udp
    } else {
        inbound
    }
}

