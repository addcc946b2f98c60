//! Where a request goes next (RFC 3261 §16.4-16.5 for a record-routing edge proxy) and which
//! portal and side it belongs to. Pure: the directory snapshot and registrar are read, not
//! changed.

use super::registrar::Registrar;
use super::trust::{AgentDirectory, RouteKey, Token};
use super::Local;
use crate::directory::PortalEntry;
use crate::settings::PbxTransport;
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

pub(crate) const FORBIDDEN: Refusal = Refusal { status: 403, reason: "Forbidden" };
pub(crate) const NO_DIALOG: Refusal = Refusal { status: 481, reason: "Call/Transaction Does Not Exist" };
const NOT_FOUND: Refusal = Refusal { status: 404, reason: "Not Found" };
const UNAVAILABLE: Refusal = Refusal { status: 480, reason: "Temporarily Unavailable" };

/// The Route set of a request, as far as callgate is concerned.
#[derive(Debug)]
pub(crate) enum RouteHead {
    /// No Route value.
    None,
    /// Leading values name callgate (`ours` of them); `token` is what their user part says.
    Ours { ours: usize, token: Option<Result<Token, ()>> },
    /// The first value names somebody else.
    Foreign,
}

/// Reads the Route set: how many leading values name us (one, or two after a transport change,
/// RFC 5658) and the token in their user part, checked against the request's Call-ID.
pub(crate) fn route_head(msg: &SipMessage, local: &Local, key: &RouteKey) -> RouteHead {
    let Some(first) = first_value(msg, HeaderName::Route) else { return RouteHead::None };
    if !NameAddr::parse(first).is_some_and(|n| local.is_ours(&n.uri)) {
        return RouteHead::Foreign;
    }
    let call_id = msg.call_id().unwrap_or_default();
    let mut ours = 0;
    let mut token = None;
    let values = msg.values(HeaderName::Route).flat_map(crate::sip::core::comma_values).map(<[u8]>::trim_ascii);
    for n in values.map_while(|v| NameAddr::parse(v).filter(|n| local.is_ours(&n.uri))) {
        ours += 1;
        if let Some(user) = n.uri.user {
            let t = key.verify(user, call_id);
            // Two values of one dialog carry the same token; a mismatch is a forgery.
            token = match token {
                None => Some(t),
                Some(Ok(prev)) if t.as_ref() == Ok(&prev) => Some(Ok(prev)),
                Some(_) => Some(Err(())),
            };
        }
    }
    RouteHead::Ours { ours, token }
}

/// Next hop of an in-dialog request (its Route names a dialog callgate record-routed) sent by
/// one end of the dialog: `other`, the other end. The Request-URI (the remote target) is kept;
/// its address is used only when it is the other end's host over UDP (a phone's Contact port),
/// so the message never chooses where it goes.
pub(crate) fn to_other_end(msg: &SipMessage, other: Peer, pop_route: usize) -> NextHop {
    // Route values after ours: the other end record-routed too (a proxy in front of the PBX),
    // so the next hop is that proxy, the flow the dialog came over, even when the remote target
    // is on the same host (a PBX and its proxy on one machine).
    if msg.values(HeaderName::Route).flat_map(crate::sip::core::comma_values).count() > pop_route {
        return NextHop { peer: other, request_uri: None, pop_route };
    }
    let ruri = msg.request_uri().and_then(Uri::parse).and_then(|u| uri_peer(&u, other.transport));
    // Over a stream the phone's own connection is the way (RFC 5626, 5923): never a new one to
    // its listening port. Over UDP the Contact's port may differ from the source's.
    let peer = match ruri {
        Some(p) if other.transport == Transport::Udp && p.addr.ip() == other.addr.ip() && p.transport == other.transport => p,
        _ => other,
    };
    NextHop { peer, request_uri: None, pop_route }
}

/// Next hop of an out-of-dialog request from the PBX: the extension's browser flow, else its
/// registered contact, else its static contact from the mapping (over the transport its URI
/// names, UDP without one: RFC 3263 §4.1, whatever the PBX used).
pub(crate) fn to_extension(msg: &SipMessage, portal: &PortalEntry, registrar: &Registrar, flows: Option<&dyn AgentDirectory>) -> Result<NextHop, Refusal> {
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
    let peer = uri_peer(&uri, Transport::Udp).ok_or(UNAVAILABLE)?;
    Ok(NextHop { peer, request_uri: Some(String::from_utf8_lossy(uri.raw).into_owned()), pop_route: 0 })
}

/// Next hop of an out-of-dialog request from an agent: the portal's PBX over the transport its
/// `pbx_host` names (the operator's choice, whatever the agent used), whatever host the
/// Request-URI names. A Request-URI in one of the portal's own SIP domains (`sip_domains`, the
/// PBX's host: a phone configured with the PBX's name as its domain and callgate as outbound
/// proxy) goes on as the phone wrote it (its digest answers were computed over it); any other
/// host (callgate's address, a stranger's domain) is rewritten to `pbx_host`, so the PBX is
/// never asked to relay elsewhere.
pub(crate) fn to_pbx(msg: &SipMessage, portal: &PortalEntry) -> Result<NextHop, Refusal> {
    let addr = portal.pbx_addr.ok_or(UNAVAILABLE)?;
    let transport = match portal.pbx_transport {
        PbxTransport::Udp => Transport::Udp,
        PbxTransport::Tcp => Transport::Tcp,
        PbxTransport::Tls => Transport::Tls,
    };
    let ruri = msg.request_uri().and_then(Uri::parse);
    let request_uri = match ruri {
        Some(u) if portal.is_own_domain(u.host, u.port) => None,
        _ => {
            let user = ruri.and_then(|u| u.user).map(|u| String::from_utf8_lossy(u).into_owned());
            let host = portal.portal.settings.pbx_host_port();
            Some(user.map_or_else(|| format!("sip:{host}"), |u| format!("sip:{u}@{host}")))
        }
    };
    Ok(NextHop { peer: Peer { addr, transport }, request_uri, pop_route: 0 })
}

/// Whether the Request-URI is a SIPS URI (then callgate's Record-Route toward a TLS side is one
/// too, RFC 3261 §16.6 step 4).
pub(crate) fn is_sips(msg: &SipMessage) -> bool {
    msg.request_uri().and_then(Uri::parse).is_some_and(|u| u.scheme.eq_ignore_ascii_case(b"sips"))
}

/// Where a SIP URI points: an IP literal host (names are not resolved on the SIP path), port
/// 5060 by default, `transport=` parameter else the given one.
pub(crate) fn uri_peer(uri: &Uri<'_>, default: Transport) -> Option<Peer> {
    let addr = crate::sip::core::socket_addr(uri.host, uri.port)?;
    let default = if uri.scheme.eq_ignore_ascii_case(b"sips") { Transport::Tls } else { not_websocket(default) };
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

