//! Who may send what through the edge proxy (README, "Who may send what"): the one place where
//! a SIP message's sender is decided. Every request that reaches the proxy is from exactly one of
//! - a portal's **PBX**: its source IP is in the portal's `trusted_pbx` networks or is the
//!   `pbx_host` address (when several portals share that address, the line in the Request-URI,
//!   To or Diversion says which portal);
//! - an **authenticated agent**: a browser agent on its registered WebSocket flow; an IP phone on
//!   the flow of a live registration the PBX accepted through callgate; a phone at the static
//!   contact of its mapping; or an IP phone that answered callgate's own digest challenge with
//!   credentials issued for its extension;
//! - **nobody**: refused (403, or 407 where a digest phone may still authenticate), no state.
//!
//! Responses are not classified here: one is taken only by the client transaction whose branch
//! it names, and only from the address and transport that transaction sent to (`handle`).
//!
//! Routing headers are honoured only when callgate wrote them. Its Record-Route and Path values
//! carry a signed token in their user part ([`RouteKey`]): for a dialog, both of its ends (the
//! flows callgate received the INVITE from and sent it to) bound to the Call-ID; for a
//! registration, the phone's flow, portal and extension. An in-dialog request goes to the other
//! end the token names, never to an address the message itself chose.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ring::hmac;

use crate::directory::{PortalEntry, Snapshot};
use crate::phone::normalize_number;
use crate::settings::{PortalId, TelephonyMode};
use crate::sip::core::{HeaderName, NameAddr, SipMessage, Uri};
use crate::sip::transport::{Peer, Transport};

use super::registrar::Registrar;

/// How an agent proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AgentAuth {
    /// A browser agent on the WebSocket flow it registered (digest) with callgate.
    Browser,
    /// An IP phone on the flow of a registration the PBX accepted through callgate.
    Registered,
    /// An IP phone at the static contact of its mapping.
    StaticContact,
    /// An IP phone that answered callgate's digest challenge (credentials issued per extension).
    Digest,
}

/// The sender of a request, as far as the trust model is concerned.
#[derive(Debug, Clone)]
pub(crate) enum Sender {
    /// A portal's PBX. `None` when the address is shared by several portals and the message
    /// names none of their lines (fine in a dialog, where the token decides; refused otherwise).
    Pbx(Option<Arc<PortalEntry>>),
    /// An authenticated agent of `portal`.
    Agent { portal: Arc<PortalEntry>, extension: String, auth: AgentAuth },
    /// Nobody callgate knows.
    Unknown,
}

impl Sender {
    pub(crate) fn is_pbx(&self) -> bool {
        matches!(self, Self::Pbx(_))
    }

    /// The portal the message belongs to, when the sender decides it.
    pub(crate) fn portal(&self) -> Option<&Arc<PortalEntry>> {
        match self {
            Self::Pbx(p) => p.as_ref(),
            Self::Agent { portal, .. } => Some(portal),
            Self::Unknown => None,
        }
    }
}

/// What the directory of browser agents and issued credentials (the WebRTC registrar) answers
/// the proxy.
pub trait AgentDirectory: Send + Sync + 'static {
    /// The flow (WebSocket peer) and Contact URI of `extension`'s live browser registration.
    fn locate(&self, portal: PortalId, extension: &str) -> Option<(Peer, String)>;
    /// The portal of the browser agent `user` registered on flow `peer`, if it is one.
    fn browser_agent(&self, peer: Peer, user: &[u8]) -> Option<PortalId>;
    /// Checks the Proxy-Authorization of an IP phone's request against the credentials issued
    /// for its extension.
    fn authenticate(&self, msg: &SipMessage, candidates: &[Arc<PortalEntry>], now: std::time::Instant) -> DigestOutcome;
}

/// The result of [`AgentDirectory::authenticate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DigestOutcome {
    /// Authenticated as `extension` of `portal`.
    Agent { portal: PortalId, extension: String },
    /// Send this `Proxy-Authenticate` value with a 407.
    Challenge(String),
    /// No credentials exist for this request's user: nobody.
    Nobody,
}

/// Classifies the sender of request `msg` from `peer` (see the module doc). `agents` is absent
/// only in tests without browser agents.
pub(crate) fn classify(snap: &Snapshot, peer: Peer, msg: &SipMessage, registrar: &Registrar, agents: Option<&dyn AgentDirectory>) -> Sender {
    let from_user = msg.from().and_then(|f| f.uri.user).unwrap_or_default();
    if peer.transport.is_websocket() {
        let portal = agents.and_then(|a| a.browser_agent(peer, from_user)).and_then(|id| snap.portals.get(&id));
        return match portal {
            Some(p) => Sender::Agent { portal: Arc::clone(p), extension: String::from_utf8_lossy(from_user).into_owned(), auth: AgentAuth::Browser },
            None => Sender::Unknown,
        };
    }
    if let Some((portal, ext)) = registrar.agent_of(peer, from_user) {
        if let Some(p) = snap.portals.get(&portal) {
            return Sender::Agent { portal: Arc::clone(p), extension: ext, auth: AgentAuth::Registered };
        }
    }
    if let Some((p, ext)) = static_agent(snap, peer, from_user) {
        return Sender::Agent { portal: p, extension: ext, auth: AgentAuth::StaticContact };
    }
    let pbx: Vec<&Arc<PortalEntry>> = snap.portals.values().filter(|p| p.trusts(peer.addr.ip())).collect();
    match pbx.as_slice() {
        [] => Sender::Unknown,
        [one] => Sender::Pbx(Some(Arc::clone(one))),
        several => Sender::Pbx(by_line(snap, msg, several)),
    }
}

/// The mapping whose static contact is `peer`: the exact address; or the contact's host, for the
/// mapping of the From user (a phone connects over a stream from an ephemeral port, or sends
/// from a second socket). Several mappings at one address are told apart by the From user; a tie
/// is nobody's.
fn static_agent(snap: &Snapshot, peer: Peer, from_user: &[u8]) -> Option<(Arc<PortalEntry>, String)> {
    let mut found: Option<(PortalId, &str)> = None;
    let mut ties = 0;
    for (portal, addr, ext) in snap.contacts_by_ip.get(&peer.addr.ip()).into_iter().flatten() {
        if *addr != peer.addr && ext.as_bytes() != from_user {
            continue;
        }
        let better = found.is_none_or(|(_, e)| e.as_bytes() != from_user && ext.as_bytes() == from_user);
        if better {
            ties = 0;
            found = Some((*portal, ext.as_str()));
        } else if found.is_some_and(|(_, e)| (e.as_bytes() == from_user) == (ext.as_bytes() == from_user)) {
            ties += 1;
        }
    }
    let (portal, ext) = found.filter(|_| ties == 0)?;
    Some((Arc::clone(snap.portals.get(&portal)?), ext.to_owned()))
}

/// Of several portals sharing one PBX address, the one owning a line the message names: the
/// Request-URI user, the To user, then each Diversion user.
fn by_line(snap: &Snapshot, msg: &SipMessage, candidates: &[&Arc<PortalEntry>]) -> Option<Arc<PortalEntry>> {
    let ruri = msg.request_uri().and_then(Uri::parse).and_then(|u| u.user);
    let to = msg.to().and_then(|t| t.uri.user);
    let diversions = msg.values(HeaderName::Diversion).flat_map(crate::sip::core::comma_values).filter_map(|v| NameAddr::parse(v.trim_ascii())).filter_map(|n| n.uri.user);
    ruri.into_iter().chain(to).chain(diversions).find_map(|user| {
        let number = normalize_number(std::str::from_utf8(user).ok()?)?;
        let id = snap.by_line.get(&number.as_u64())?;
        candidates.iter().find(|p| p.portal.id == *id).map(|p| Arc::clone(p))
    })
}

/// The portal a REGISTER (or a digest phone's request) from an unknown source is for: the IP-mode
/// portals mapping the To (From) user as an extension; several are told apart by the URI's host
/// (the portal's Bitrix24 host, its PBX's host or one of its `sip_domains`). An extension no portal maps (the PBX knows
/// more phones than the mapping) belongs to the portal whose host the URI names, or to the only
/// IP-mode portal. Never a guess: a tie is refused.
pub(crate) fn agent_candidates(snap: &Snapshot, uri: Option<Uri<'_>>) -> Vec<Arc<PortalEntry>> {
    let Some(uri) = uri else { return Vec::new() };
    let Some(user) = uri.user.and_then(|u| std::str::from_utf8(u).ok()) else { return Vec::new() };
    let ip: Vec<&Arc<PortalEntry>> = snap.portals.values().filter(|p| p.portal.settings.telephony_mode == TelephonyMode::Ip).collect();
    let mapped: Vec<&Arc<PortalEntry>> = ip.iter().copied().filter(|p| p.by_extension.contains_key(user)).collect();
    let pool = if mapped.is_empty() { ip } else { mapped };
    if pool.len() <= 1 {
        return pool.into_iter().cloned().collect();
    }
    pool.into_iter().filter(|p| host_matches(p, &uri)).cloned().collect()
}

fn host_matches(p: &PortalEntry, uri: &Uri<'_>) -> bool {
    let realm = crate::settings::realm_of(&p.portal);
    uri.host.eq_ignore_ascii_case(realm.as_bytes()) || p.is_own_domain(uri.host, uri.port) || (!p.pbx_host_name().is_empty() && uri.host.eq_ignore_ascii_case(p.pbx_host_name().as_bytes()))
}

/// The headers an agent may not pass on (RFC 3325's trust boundary and then some): asserted
/// identities, diversion history, auto-answer hints and the portal's correlation header (the
/// PBX's call id). Their Route values are the proxy's business (popped or removed there).
pub(crate) fn agent_may_not_send(name: HeaderName, raw: &[u8], correlation: &str) -> bool {
    const NAMED: [&[u8]; 6] = [b"P-Preferred-Identity", b"Remote-Party-ID", b"Call-Info", b"Alert-Info", b"Answer-Mode", b"Priv-Answer-Mode"];
    matches!(name, HeaderName::PAssertedIdentity | HeaderName::Diversion)
        || NAMED.iter().any(|n| n.eq_ignore_ascii_case(raw))
        || raw.eq_ignore_ascii_case(correlation.as_bytes())
}

// ---------------------------------------------------------------------------------------------
// Signed route tokens.

/// Bytes of the MAC kept in a token (128 bits).
const MAC_LEN: usize = 16;

/// The key behind callgate's Record-Route and Path tokens (HMAC-SHA256, truncated to 128 bits).
/// Kept in the data folder, so dialogs survive a restart.
pub struct RouteKey(hmac::Key);

impl std::fmt::Debug for RouteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RouteKey(..)")
    }
}

/// What a token of ours in a Route value says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Token {
    /// A dialog record-routed by callgate: the two flows it joins.
    Dialog { a: Peer, b: Peer },
    /// A registration relayed by callgate (its Path): the phone's flow.
    Path { flow: Peer, portal: PortalId, extension: String },
}

impl RouteKey {
    /// A key from 32 secret bytes.
    #[must_use]
    pub fn new(secret: &[u8; 32]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    fn mac(&self, parts: &[&[u8]]) -> String {
        let mut ctx = hmac::Context::with_key(&self.0);
        for p in parts {
            ctx.update(&(p.len() as u64).to_be_bytes());
            ctx.update(p);
        }
        hex::encode(ctx.sign().as_ref().get(..MAC_LEN).unwrap_or_default())
    }

    /// The user part of the Record-Route of a dialog between `a` and `b` with `call_id`.
    pub(crate) fn dialog(&self, a: Peer, b: Peer, call_id: &[u8]) -> String {
        let (a, b) = (peer_text(a), peer_text(b));
        let mac = self.mac(&[b"rr", a.as_bytes(), b.as_bytes(), call_id]);
        format!("cgr.{a}.{b}.{mac}")
    }

    /// The user part of the Path of `extension`'s registration from `flow`.
    pub(crate) fn path(&self, flow: Peer, portal: PortalId, extension: &str) -> String {
        let (f, p, e) = (peer_text(flow), format!("{portal:x}"), hex::encode(extension));
        let mac = self.mac(&[b"path", f.as_bytes(), p.as_bytes(), e.as_bytes()]);
        format!("cgp.{f}.{p}.{e}.{mac}")
    }

    /// What `user` (the user part of a Route value naming callgate) says, checked against the
    /// request's `call_id`. `Err` for anything that looks like a token but is not one of ours.
    pub(crate) fn verify(&self, user: &[u8], call_id: &[u8]) -> Result<Token, ()> {
        let text = std::str::from_utf8(user).map_err(drop)?;
        let parts: Vec<&str> = text.split('.').collect();
        let ok = |mac: &str, expect: String| bool::from(subtle::ConstantTimeEq::ct_eq(mac.as_bytes(), expect.as_bytes()));
        match parts.as_slice() {
            ["cgr", a, b, mac] if ok(mac, self.mac(&[b"rr", a.as_bytes(), b.as_bytes(), call_id])) => {
                Ok(Token::Dialog { a: parse_peer(a).ok_or(())?, b: parse_peer(b).ok_or(())? })
            }
            ["cgp", f, p, e, mac] if ok(mac, self.mac(&[b"path", f.as_bytes(), p.as_bytes(), e.as_bytes()])) => {
                let flow = parse_peer(f).ok_or(())?;
                let portal = PortalId::from_str_radix(p, 16).map_err(drop)?;
                let extension = String::from_utf8(hex::decode(e).map_err(drop)?).map_err(drop)?;
                Ok(Token::Path { flow, portal, extension })
            }
            _ => Err(()),
        }
    }
}

/// `u7f0000011f90`: transport letter, the address's bytes and the port, in hex.
fn peer_text(p: Peer) -> String {
    let t = match p.transport {
        Transport::Udp => 'u',
        Transport::Tcp => 't',
        Transport::Tls => 's',
        Transport::Ws | Transport::Wss => 'w',
    };
    let ip = match p.addr.ip() {
        IpAddr::V4(ip) => hex::encode(ip.octets()),
        IpAddr::V6(ip) => hex::encode(ip.octets()),
    };
    format!("{t}{ip}{:04x}", p.addr.port())
}

fn parse_peer(s: &str) -> Option<Peer> {
    let (t, rest) = s.split_at_checked(1)?;
    let transport = match t {
        "u" => Transport::Udp,
        "t" => Transport::Tcp,
        "s" => Transport::Tls,
        "w" => Transport::Ws,
        _ => return None,
    };
    let (ip_hex, port_hex) = rest.split_at_checked(rest.len().checked_sub(4)?)?;
    let bytes = hex::decode(ip_hex).ok()?;
    let ip = match bytes.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(bytes.as_slice()).ok()?),
        16 => IpAddr::from(<[u8; 16]>::try_from(bytes.as_slice()).ok()?),
        _ => return None,
    };
    let port = u16::from_str_radix(port_hex, 16).ok()?;
    Some(Peer { addr: SocketAddr::new(ip, port), transport })
}

/// Whether a message from `sender` (classified as `class`) comes from the dialog end `end`: the
/// same flow; on a stream the same host (a phone or PBX reconnects from another port); or the
/// PBX from another of its trusted addresses when `end` is trusted by the same portal too.
pub(crate) fn is_end(end: Peer, sender: Peer, class: &Sender) -> bool {
    let same_kind = end.transport == sender.transport || (end.transport.is_websocket() && sender.transport.is_websocket());
    if end.addr == sender.addr && same_kind {
        return true;
    }
    if same_kind && !sender.transport.is_websocket() && sender.transport != Transport::Udp && end.addr.ip() == sender.addr.ip() {
        return true;
    }
    match class {
        Sender::Pbx(Some(p)) => p.trusts(end.addr.ip()) && !sender.transport.is_websocket() && !end.transport.is_websocket(),
        _ => false,
    }
}

/// Whether two peers are one flow (address, and transport up to ws/wss).
pub(crate) fn same_flow(a: Peer, b: Peer) -> bool {
    a.addr == b.addr && (a.transport == b.transport || (a.transport.is_websocket() && b.transport.is_websocket()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(s: &str, transport: Transport) -> Peer {
        Peer { addr: s.parse().unwrap(), transport }
    }

    #[test]
    fn dialog_tokens_verify_only_with_their_call_id_and_key() {
        let key = RouteKey::new(&[7; 32]);
        let (a, b) = (peer("127.0.0.2:5060", Transport::Udp), peer("[::1]:5080", Transport::Tcp));
        let user = key.dialog(a, b, b"call-1");
        assert!(user.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'.'), "{user}");
        assert_eq!(key.verify(user.as_bytes(), b"call-1"), Ok(Token::Dialog { a, b }));
        assert_eq!(key.verify(user.as_bytes(), b"call-2"), Err(()), "another dialog");
        assert_eq!(RouteKey::new(&[8; 32]).verify(user.as_bytes(), b"call-1"), Err(()), "another key");
        let forged = user.replacen("u7f000002", "u7f000005", 1);
        assert_eq!(key.verify(forged.as_bytes(), b"call-1"), Err(()), "another end");
        for garbage in ["", "cgr", "cgr.x.y.z", "cgp.u7f.1.31.00", "cgf-7f000001-13c4"] {
            assert_eq!(key.verify(garbage.as_bytes(), b"call-1"), Err(()), "{garbage}");
        }
    }

    #[test]
    fn path_tokens_carry_flow_portal_and_extension() {
        let key = RouteKey::new(&[1; 32]);
        let flow = peer("127.0.0.3:40000", Transport::Tcp);
        let user = key.path(flow, 42, "101-x");
        assert_eq!(key.verify(user.as_bytes(), b"any"), Ok(Token::Path { flow, portal: 42, extension: "101-x".into() }));
        let other = user.replacen(".2a.", ".2b.", 1);
        assert_eq!(key.verify(other.as_bytes(), b"any"), Err(()), "another portal");
    }

    #[test]
    fn dialog_ends_are_the_flows_or_their_hosts_on_streams() {
        let end = peer("127.0.0.2:5060", Transport::Udp);
        assert!(is_end(end, end, &Sender::Unknown));
        assert!(!is_end(end, peer("127.0.0.2:5062", Transport::Udp), &Sender::Unknown), "UDP: the exact flow");
        assert!(!is_end(end, peer("127.0.0.5:5060", Transport::Udp), &Sender::Unknown));
        assert!(!is_end(end, peer("127.0.0.2:5060", Transport::Tcp), &Sender::Unknown), "another transport");
        let tcp = peer("127.0.0.2:40000", Transport::Tcp);
        assert!(is_end(tcp, peer("127.0.0.2:40001", Transport::Tcp), &Sender::Unknown), "a reconnected stream");
        let ws = peer("127.0.0.1:40000", Transport::Ws);
        assert!(is_end(ws, peer("127.0.0.1:40000", Transport::Wss), &Sender::Unknown));
        assert!(!is_end(ws, peer("127.0.0.1:40001", Transport::Ws), &Sender::Unknown), "another browser");
    }
}
