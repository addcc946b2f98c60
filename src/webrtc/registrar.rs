//! The registrar for browser agents (WebRTC widget, DESIGN.md §2.3): a REGISTER arriving over a
//! WebSocket flow is answered here, never relayed to the PBX.
//!
//! - The portal is the one whose realm (host of its domain) is the host of the To URI
//!   (`sip:101@office.bitrix24.ru`); it must be in `telephony_mode` `webrtc`.
//! - Authentication is Digest MD5 with `qop=auth` (what JsSIP and SIP.js do), against the HA1
//!   callgate issued for the extension ([`super::credentials`]). Nonces are stateless
//!   (`sip::core::digest::NonceKey`, a per-process key); a nonce older than `nonce_max_age`, or
//!   one this process did not mint, gets `stale=true` when the digest was otherwise right.
//!   Each nonce's `nc` must grow (a replayed Authorization is refused), which the bounded
//!   `nonces` table below checks.
//! - A wrong password, an unknown extension and an extension without credentials all get the
//!   same fresh 401, so the answers do not tell which extensions exist.
//! - Bindings: one per (portal, extension), to the flow the REGISTER came over (RFC 5626 style:
//!   the `.invalid` Contact host is never resolved); a newer registration replaces it. They end
//!   with `Expires: 0`, at expiry, when the flow closes, or when the credentials are rotated or
//!   revoked.
//! - Other requests over a WebSocket pass on to the proxy only from a flow with a binding for
//!   their From user; anything else gets 403 (an unregistered page cannot call through the PBX).
//!
//! Sans-IO apart from the one lock: `now` is a parameter, answers go into the caller's
//! [`Outbox`]. Lock: one `Mutex<State>` for bindings and nonce counts, held for map operations
//! only (never across I/O or an `.await`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::credentials::Credentials;
use crate::directory::{Directory, PortalEntry};
use crate::proxy::{AgentDirectory, DigestOutcome};
use crate::settings::{realm_of, PortalId, TelephonyMode};
use crate::sip::core::digest::{self, NonceCheck, NonceKey};
use crate::sip::core::{comma_values, to_tag_for, write_response, HeaderName, Method, NameAddr, SipMessage};
use crate::sip::transport::{Outbox, Peer, Transport};

/// Registrar policy.
#[derive(Debug, Clone, Copy)]
pub struct RegistrarConfig {
    /// A nonce older than this is stale.
    pub nonce_max_age: Duration,
    /// Shorter registrations get 423 Interval Too Brief.
    pub min_expires: u32,
    /// Longer registrations are granted this.
    pub max_expires: u32,
    /// What a REGISTER without any expiry asks for.
    pub default_expires: u32,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        Self { nonce_max_age: Duration::from_secs(300), min_expires: 60, max_expires: 3600, default_expires: 600 }
    }
}

/// One live registration.
#[derive(Debug, Clone)]
struct Binding {
    /// The Contact URI (the Request-URI of requests sent to the browser).
    contact: String,
    /// The Contact's parameters without `expires` (`+sip.instance`, `reg-id` ...), echoed.
    params: String,
    /// The WebSocket flow.
    peer: Peer,
    expires: Instant,
    user_agent: Option<String>,
}

/// A live registration as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct RegisteredAgent {
    /// The extension.
    pub extension: String,
    /// The Contact URI the browser registered.
    pub contact: String,
    /// `ws` or `wss`.
    pub transport: &'static str,
    /// The browser's address as the HTTP listener saw it.
    pub remote: String,
    /// Seconds until the registration expires.
    pub expires_in: u64,
    /// The browser's `User-Agent`, if it sent one.
    pub user_agent: Option<String>,
}

/// One nonce in use by one agent: the highest `nc` seen with it.
#[derive(Debug, Clone)]
struct NonceUse {
    nonce: Vec<u8>,
    nc: u32,
    issued_at: u64,
}

/// Nonces remembered per agent (oldest dropped first): a browser uses one at a time.
const NONCES_PER_AGENT: usize = 8;

#[derive(Debug, Default)]
struct State {
    bindings: HashMap<(PortalId, String), Binding>,
    nonces: HashMap<(PortalId, String), Vec<NonceUse>>,
    next_sweep: Option<Instant>,
}

impl State {
    /// Records `nc` for `nonce`; false when it does not grow (a replay).
    fn count(&mut self, key: &(PortalId, String), nonce: &[u8], nc: u32, issued_at: u64, oldest: u64) -> bool {
        let uses = self.nonces.entry(key.clone()).or_default();
        uses.retain(|u| u.issued_at >= oldest);
        if let Some(u) = uses.iter_mut().find(|u| u.nonce == nonce) {
            if nc <= u.nc {
                return false;
            }
            u.nc = nc;
            return true;
        }
        if uses.len() >= NONCES_PER_AGENT {
            uses.remove(0);
        }
        uses.push(NonceUse { nonce: nonce.to_vec(), nc, issued_at });
        true
    }
}

/// A response decided for a REGISTER (or a refused request).
#[derive(Debug)]
struct Answer {
    status: u16,
    reason: &'static str,
    headers: Vec<(&'static str, String)>,
}

impl Answer {
    fn plain(status: u16, reason: &'static str) -> Self {
        Self { status, reason, headers: Vec::new() }
    }

    fn write(&self, req: &SipMessage, out: &mut Outbox) {
        let headers: Vec<(&str, &[u8])> = self.headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
        write_response(req, self.status, self.reason, Some(&to_tag_for(req)), &headers, &mut out.reply);
    }
}

struct Metrics {
    registered: metrics::Counter,
    challenged: metrics::Counter,
    failed: metrics::Counter,
    refused: metrics::Counter,
    bindings: metrics::Gauge,
}

/// The browser agents' registrar. Shared as `Arc<Registrar>` by the SIP front, the proxy (as
/// its [`AgentDirectory`]) and the admin API.
pub struct Registrar {
    directory: Directory,
    credentials: Arc<Credentials>,
    key: NonceKey,
    /// Origin of the nonce clock (seconds since it): nonces die with the process anyway.
    epoch: Instant,
    cfg: RegistrarConfig,
    state: Mutex<State>,
    metrics: Metrics,
}

impl std::fmt::Debug for Registrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registrar").field("cfg", &self.cfg).field("bindings", &self.state.lock().bindings.len()).finish_non_exhaustive()
    }
}

impl Registrar {
    /// A registrar for the portals of `directory`, checking against `credentials`, minting
    /// nonces with `secret` (32 random bytes per process) on a clock that starts at `epoch`.
    pub fn new(directory: Directory, credentials: Arc<Credentials>, cfg: RegistrarConfig, secret: &[u8; 32], epoch: Instant) -> Self {
        let metrics = Metrics {
            registered: metrics::counter!("callgate_webrtc_register_total", "outcome" => "ok"),
            challenged: metrics::counter!("callgate_webrtc_register_total", "outcome" => "challenged"),
            failed: metrics::counter!("callgate_webrtc_register_total", "outcome" => "auth_failed"),
            refused: metrics::counter!("callgate_webrtc_requests_refused_total"),
            bindings: metrics::gauge!("callgate_webrtc_registrations"),
        };
        Self { directory, credentials, key: NonceKey::new(secret), epoch, cfg, state: Mutex::new(State::default()), metrics }
    }

    /// The issued credentials this registrar checks (the admin API updates them).
    pub fn credentials(&self) -> &Arc<Credentials> {
        &self.credentials
    }

    /// Handles a message that arrived over a WebSocket flow. Returns true when it was dealt with
    /// here (REGISTER answered; a request from an unregistered flow refused 403, or an ACK
    /// dropped); false when it goes on to the proxy (responses, requests of a registered agent).
    pub fn on_websocket(&self, msg: &SipMessage, peer: Peer, now: Instant, out: &mut Outbox) -> bool {
        let Some(method) = msg.method() else {
            // A response: only a flow that holds a registration can be answering something
            // callgate sent (the proxy then matches it to its transaction by branch and flow).
            let registered = self.state.lock().bindings.values().any(|b| b.peer == peer);
            if !registered {
                self.metrics.refused.increment(1);
            }
            return !registered;
        };
        if method == Method::Register {
            self.register(msg, peer, now).write(msg, out);
            return true;
        }
        if self.is_registered_flow(peer, msg) {
            return false;
        }
        self.metrics.refused.increment(1);
        tracing::debug!(addr = %peer.addr, ?method, "request from an unregistered websocket flow refused");
        if method != Method::Ack {
            Answer::plain(403, "Forbidden").write(msg, out);
        }
        true
    }

    /// Whether `peer` holds a registration for the From user of `msg`.
    fn is_registered_flow(&self, peer: Peer, msg: &SipMessage) -> bool {
        let Some(user) = msg.from().and_then(|f| f.uri.user) else { return false };
        self.state.lock().bindings.iter().any(|((_, ext), b)| b.peer == peer && ext.as_bytes() == user)
    }

    fn secs(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_secs()
    }

    fn register(&self, msg: &SipMessage, peer: Peer, now: Instant) -> Answer {
        let snap = self.directory.snapshot();
        let Some(to) = msg.to() else { return Answer::plain(400, "Bad Request") };
        let Some(ext) = to.uri.user.and_then(|u| std::str::from_utf8(u).ok()) else { return Answer::plain(404, "Not Found") };
        let Some(portal) = snap.portals.values().find(|p| realm_of(&p.portal).as_bytes().eq_ignore_ascii_case(to.uri.host)) else {
            return Answer::plain(404, "Not Found");
        };
        if portal.portal.settings.telephony_mode != TelephonyMode::Webrtc {
            return Answer::plain(403, "Forbidden");
        }
        let realm = realm_of(&portal.portal);
        let key = (portal.portal.id, ext.to_owned());
        match self.authenticate(msg, portal, &key, &realm, now) {
            Ok(()) => self.bind(msg, key, peer, now),
            Err(answer) => answer,
        }
    }

    /// Checks the Authorization of a REGISTER for `key`; the 401/403/400 to send otherwise.
    fn authenticate(&self, msg: &SipMessage, portal: &PortalEntry, key: &(PortalId, String), realm: &str, now: Instant) -> Result<(), Answer> {
        let now_secs = self.secs(now);
        let creds = msg.headers(HeaderName::Authorization).filter_map(digest::Credentials::parse).find(|c| c.realm == realm.as_bytes());
        let Some(c) = creds else {
            self.metrics.challenged.increment(1);
            return Err(self.challenge(realm, now_secs, false));
        };
        if c.username != key.1.as_bytes() {
            self.metrics.failed.increment(1);
            return Err(Answer::plain(403, "Forbidden"));
        }
        if msg.request_uri() != Some(c.uri) {
            self.metrics.failed.increment(1);
            return Err(Answer::plain(400, "Bad Request"));
        }
        let mapping = portal.by_extension.get(&key.1).map(|m| m.id);
        let secret = self.credentials.get(key.0, &key.1).filter(|s| Some(s.mapping_id) == mapping && s.realm == realm);
        let verified = secret.is_some_and(|s| c.verify(b"REGISTER", &s.ha1).is_ok());
        // qop=auth is required: without `nc` a replayed header could not be told apart.
        let (true, Some(nc)) = (verified, c.nc_value()) else {
            self.metrics.failed.increment(1);
            tracing::debug!(portal = key.0, extension = %key.1, "websocket REGISTER: digest refused");
            return Err(self.challenge(realm, now_secs, false));
        };
        let max_age = self.cfg.nonce_max_age.as_secs();
        let fresh = match self.key.check(realm.as_bytes(), c.nonce, now_secs, max_age) {
            NonceCheck::Fresh { issued_at } => self.state.lock().count(key, c.nonce, nc, issued_at, now_secs.saturating_sub(max_age)),
            NonceCheck::Stale | NonceCheck::Invalid => false,
        };
        if !fresh {
            self.metrics.challenged.increment(1);
            return Err(self.challenge(realm, now_secs, true));
        }
        Ok(())
    }

    fn challenge(&self, realm: &str, now_secs: u64, stale: bool) -> Answer {
        let nonce = self.key.mint(realm.as_bytes(), now_secs, rand::random());
        Answer { status: 401, reason: "Unauthorized", headers: vec![("WWW-Authenticate", digest::challenge(realm, &nonce, stale))] }
    }

    /// Applies an authenticated REGISTER's Contact (RFC 3261 §10.3 steps 6-8, one binding).
    fn bind(&self, msg: &SipMessage, key: (PortalId, String), peer: Peer, now: Instant) -> Answer {
        let secs = |v: &[u8]| std::str::from_utf8(v.trim_ascii()).ok()?.parse::<u64>().ok();
        let header_expires = msg.header(HeaderName::Expires).and_then(secs);
        let first = msg.values(HeaderName::Contact).flat_map(comma_values).map(<[u8]>::trim_ascii).next();
        let mut state = self.state.lock();
        let Some(raw) = first else {
            // A query: the current binding, if any.
            return ok_with(state.bindings.get(&key), now);
        };
        if raw == b"*" {
            if header_expires != Some(0) {
                return Answer::plain(400, "Bad Request");
            }
            state.bindings.remove(&key);
            self.metrics.bindings.set(state.bindings.len() as f64);
            return ok_with(None, now);
        }
        let Some(contact) = NameAddr::parse(raw) else { return Answer::plain(400, "Bad Request") };
        let requested = contact.param(b"expires").and_then(secs).or(header_expires).unwrap_or(u64::from(self.cfg.default_expires));
        let uri = String::from_utf8_lossy(contact.uri.raw).into_owned();
        if requested == 0 {
            if state.bindings.get(&key).is_some_and(|b| b.contact == uri || b.peer == peer) {
                state.bindings.remove(&key);
            }
            self.metrics.bindings.set(state.bindings.len() as f64);
            tracing::debug!(portal = key.0, extension = %key.1, "browser agent unregistered");
            return ok_with(None, now);
        }
        if requested < u64::from(self.cfg.min_expires) {
            return Answer { status: 423, reason: "Interval Too Brief", headers: vec![("Min-Expires", self.cfg.min_expires.to_string())] };
        }
        let granted = requested.min(u64::from(self.cfg.max_expires));
        let params = String::from_utf8_lossy(contact.params)
            .split(';')
            .map(str::trim)
            .filter(|p| !p.is_empty() && !p.split('=').next().is_some_and(|n| n.trim().eq_ignore_ascii_case("expires")))
            .fold(String::new(), |acc, p| acc + ";" + p);
        let user_agent = msg.header(HeaderName::UserAgent).map(|v| String::from_utf8_lossy(v).into_owned());
        let binding = Binding { contact: uri, params, peer, expires: now + Duration::from_secs(granted), user_agent };
        tracing::debug!(portal = key.0, extension = %key.1, addr = %peer.addr, granted, "browser agent registered");
        state.bindings.insert(key.clone(), binding);
        self.metrics.registered.increment(1);
        self.metrics.bindings.set(state.bindings.len() as f64);
        ok_with(state.bindings.get(&key), now)
    }

    /// The flow `peer` closed: its registrations end. Returns the (portal, extension) pairs
    /// that were bound to it.
    pub fn flow_closed(&self, peer: Peer) -> Vec<(PortalId, String)> {
        let mut state = self.state.lock();
        let gone: Vec<_> = state.bindings.iter().filter(|(_, b)| b.peer == peer).map(|(k, _)| k.clone()).collect();
        for k in &gone {
            state.bindings.remove(k);
        }
        self.metrics.bindings.set(state.bindings.len() as f64);
        gone
    }

    /// Ends `extension`'s registration (its credentials were rotated or revoked).
    pub fn unbind(&self, portal: PortalId, extension: &str) {
        let mut state = self.state.lock();
        state.bindings.remove(&(portal, extension.to_owned()));
        state.nonces.remove(&(portal, extension.to_owned()));
        self.metrics.bindings.set(state.bindings.len() as f64);
    }

    /// Drops expired bindings and nonce counts (at most once a second, whatever the tick).
    pub fn expire(&self, now: Instant) {
        let mut state = self.state.lock();
        if state.next_sweep.is_some_and(|at| now < at) {
            return;
        }
        state.next_sweep = Some(now + Duration::from_secs(1));
        state.bindings.retain(|_, b| b.expires > now);
        let oldest = self.secs(now).saturating_sub(self.cfg.nonce_max_age.as_secs());
        state.nonces.retain(|_, uses| {
            uses.retain(|u| u.issued_at >= oldest);
            !uses.is_empty()
        });
        self.metrics.bindings.set(state.bindings.len() as f64);
    }

    /// The live registrations of `portal`, by extension.
    pub fn registered(&self, portal: PortalId, now: Instant) -> Vec<RegisteredAgent> {
        let state = self.state.lock();
        let mut out: Vec<_> = state
            .bindings
            .iter()
            .filter(|((p, _), b)| *p == portal && b.expires > now)
            .map(|((_, ext), b)| RegisteredAgent {
                extension: ext.clone(),
                contact: b.contact.clone(),
                transport: if b.peer.transport == Transport::Wss { "wss" } else { "ws" },
                remote: b.peer.addr.to_string(),
                expires_in: b.expires.saturating_duration_since(now).as_secs(),
                user_agent: b.user_agent.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.extension.cmp(&b.extension));
        out
    }
}

/// 200 OK listing `binding` (with the time it has left) or no Contact at all.
fn ok_with(binding: Option<&Binding>, now: Instant) -> Answer {
    let headers = binding
        .map(|b| {
            let left = b.expires.saturating_duration_since(now).as_secs();
            vec![("Contact", format!("<{}>{};expires={left}", b.contact, b.params))]
        })
        .unwrap_or_default();
    Answer { status: 200, reason: "OK", headers }
}

impl AgentDirectory for Registrar {
    fn locate(&self, portal: PortalId, extension: &str) -> Option<(Peer, String)> {
        let state = self.state.lock();
        state.bindings.get(&(portal, extension.to_owned())).map(|b| (b.peer, b.contact.clone()))
    }

    fn browser_agent(&self, peer: Peer, user: &[u8]) -> Option<PortalId> {
        self.state.lock().bindings.iter().find(|((_, ext), b)| b.peer == peer && ext.as_bytes() == user).map(|((portal, _), _)| *portal)
    }

    fn authenticate(&self, msg: &SipMessage, candidates: &[Arc<PortalEntry>], now: Instant) -> DigestOutcome {
        self.authenticate_phone(msg, candidates, now)
    }
}

impl Registrar {
    /// An IP phone's request to callgate itself (no registration, no static contact): its
    /// `Proxy-Authorization` against the credentials issued for its From user in one of the
    /// `candidates` portals (told apart by realm), with the same nonce and `nc` rules as the
    /// browser agents' REGISTER.
    fn authenticate_phone(&self, msg: &SipMessage, candidates: &[Arc<PortalEntry>], now: Instant) -> DigestOutcome {
        let Some(user) = msg.from().and_then(|f| f.uri.user).and_then(|u| std::str::from_utf8(u).ok()) else { return DigestOutcome::Nobody };
        let issued: Vec<(&Arc<PortalEntry>, String)> = candidates
            .iter()
            .filter_map(|p| {
                let realm = realm_of(&p.portal);
                let mapping = p.by_extension.get(user)?.id;
                self.credentials.get(p.portal.id, user).filter(|s| s.mapping_id == mapping && s.realm == realm).map(|_| (p, realm))
            })
            .collect();
        let now_secs = self.secs(now);
        let creds = msg.headers(HeaderName::ProxyAuthorization).filter_map(digest::Credentials::parse).find_map(|c| issued.iter().find(|(_, r)| c.realm == r.as_bytes()).map(|(p, r)| (c, *p, r)));
        let Some((c, portal, realm)) = creds else {
            // One portal to challenge for, or nobody (a tie is never guessed).
            return match issued.as_slice() {
                [(_, realm)] => {
                    self.metrics.challenged.increment(1);
                    DigestOutcome::Challenge(self.challenge_value(realm, now_secs, false))
                }
                _ => DigestOutcome::Nobody,
            };
        };
        let key = (portal.portal.id, user.to_owned());
        let secret = self.credentials.get(key.0, &key.1);
        let method = msg.method_raw().unwrap_or_default();
        let verified = c.username == user.as_bytes() && msg.request_uri() == Some(c.uri) && secret.is_some_and(|s| c.verify(method, &s.ha1).is_ok());
        let (true, Some(nc)) = (verified, c.nc_value()) else {
            self.metrics.failed.increment(1);
            return DigestOutcome::Challenge(self.challenge_value(realm, now_secs, false));
        };
        let max_age = self.cfg.nonce_max_age.as_secs();
        let fresh = match self.key.check(realm.as_bytes(), c.nonce, now_secs, max_age) {
            NonceCheck::Fresh { issued_at } => self.state.lock().count(&key, c.nonce, nc, issued_at, now_secs.saturating_sub(max_age)),
            NonceCheck::Stale | NonceCheck::Invalid => false,
        };
        if !fresh {
            self.metrics.challenged.increment(1);
            return DigestOutcome::Challenge(self.challenge_value(realm, now_secs, true));
        }
        DigestOutcome::Agent { portal: key.0, extension: key.1 }
    }

    fn challenge_value(&self, realm: &str, now_secs: u64, stale: bool) -> String {
        let nonce = self.key.mint(realm.as_bytes(), now_secs, rand::random());
        digest::challenge(realm, &nonce, stale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{Mapping, Portal, PortalSettings};
    use crate::sip::core::digest::Challenge;
    use bytes::Bytes;

    const PASSWORD: &str = "correct-horse-battery-st";

    struct Fixture {
        reg: Registrar,
        t0: Instant,
        peer: Peer,
        directory: Directory,
    }

    fn portal(id: PortalId, domain: &str, mode: TelephonyMode, exts: &[(i64, &str)]) -> PortalEntry {
        let settings = PortalSettings { telephony_mode: mode, ..PortalSettings::default() };
        let p = Portal { id, name: None, domain: domain.into(), auth: None, settings };
        let mappings =
            exts.iter().map(|&(mid, e)| Mapping { id: mid, user_id: mid as u64, extension: e.into(), use_for_personal_manager: true, contact: None }).collect();
        PortalEntry::build(p, mappings, Vec::new())
    }

    fn fixture() -> Fixture {
        let directory = Directory::default();
        let office = portal(1, "https://office.example/", TelephonyMode::Webrtc, &[(10, "101"), (11, "102")]);
        let ip = portal(2, "https://phones.example/", TelephonyMode::Ip, &[(20, "101")]);
        let row = |p: &PortalEntry, mid: i64, ext: &str| crate::store::AgentCredential {
            portal: p.portal.id,
            mapping_id: mid,
            extension: ext.into(),
            realm: realm_of(&p.portal),
            ha1: digest::ha1(ext.as_bytes(), realm_of(&p.portal).as_bytes(), PASSWORD.as_bytes()).as_str().to_owned(),
        };
        let creds = Arc::new(Credentials::new(vec![row(&office, 10, "101"), row(&ip, 20, "101")]));
        directory.install_for_test(vec![office, ip]);
        let t0 = Instant::now();
        let reg = Registrar::new(directory.clone(), creds, RegistrarConfig::default(), &[9; 32], t0);
        let peer = Peer { addr: "127.0.0.1:40001".parse().unwrap(), transport: Transport::Ws };
        Fixture { reg, t0, peer, directory }
    }

    fn register(ext: &str, host: &str, auth: Option<&str>, expires: u32, cseq: u32) -> SipMessage {
        let auth = auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
        let text = format!(
            "REGISTER sip:{host} SIP/2.0\r\nVia: SIP/2.0/WSS df7jal23ls0d.invalid;branch=z9hG4bK{cseq}\r\nMax-Forwards: 69\r\n\
             To: <sip:{ext}@{host}>\r\nFrom: <sip:{ext}@{host}>;tag=a73kszlfl\r\nCall-ID: reg-1\r\nCSeq: {cseq} REGISTER\r\n\
             Contact: <sip:k3a9@df7jal23ls0d.invalid;transport=ws>;+sip.ice;reg-id=1;+sip.instance=\"<urn:uuid:4e1b>\";expires={expires}\r\n\
             {auth}User-Agent: JsSIP 3.13.8\r\nContent-Length: 0\r\n\r\n"
        );
        SipMessage::parse(Bytes::from(text)).unwrap()
    }

    /// Runs one message through the registrar; the answer, parsed.
    fn send(f: &Fixture, msg: &SipMessage, peer: Peer, at: Duration) -> Option<SipMessage> {
        let mut out = Outbox::new();
        assert!(f.reg.on_websocket(msg, peer, f.t0 + at, &mut out) || out.reply.is_empty());
        (!out.reply.is_empty()).then(|| SipMessage::parse(out.reply.split().freeze()).unwrap())
    }

    fn challenge_of(resp: &SipMessage) -> (String, String, bool) {
        let c = Challenge::parse(resp.header(HeaderName::WwwAuthenticate).unwrap()).unwrap();
        assert!(c.offers_auth());
        (String::from_utf8(c.realm.to_vec()).unwrap(), String::from_utf8(c.nonce.to_vec()).unwrap(), c.stale)
    }

    fn auth(ext: &str, realm: &str, nonce: &str, password: &str, nc: u32) -> String {
        digest::authorization(ext, realm, nonce, &format!("sip:{realm}"), "REGISTER", password, Some((nc, "0a4f113b")))
    }

    /// The first challenge, then a REGISTER answering it with `password` and `nc`.
    fn login(f: &Fixture, password: &str, nc: u32, at: Duration) -> SipMessage {
        let first = send(f, &register("101", "office.example", None, 600, 1), f.peer, at).unwrap();
        assert_eq!(first.status(), Some(401));
        let (realm, nonce, stale) = challenge_of(&first);
        assert_eq!((realm.as_str(), stale), ("office.example", false));
        let a = auth("101", &realm, &nonce, password, nc);
        send(f, &register("101", "office.example", Some(&a), 600, 2), f.peer, at).unwrap()
    }

    #[test]
    fn a_register_without_credentials_is_challenged_for_the_portal_realm() {
        let f = fixture();
        let resp = send(&f, &register("101", "office.example", None, 600, 1), f.peer, Duration::ZERO).unwrap();
        assert_eq!(resp.status(), Some(401));
        let (realm, nonce, stale) = challenge_of(&resp);
        assert_eq!((realm.as_str(), nonce.len(), stale), ("office.example", 64, false));
        assert!(resp.to().unwrap().tag.is_some());
        assert!(f.reg.locate(1, "101").is_none());
    }

    #[test]
    fn the_right_digest_binds_the_extension_to_the_flow() {
        let f = fixture();
        let ok = login(&f, PASSWORD, 1, Duration::ZERO);
        assert_eq!(ok.status(), Some(200));
        let contact = ok.contact().unwrap();
        assert_eq!(contact.uri.raw, b"sip:k3a9@df7jal23ls0d.invalid;transport=ws");
        assert_eq!(contact.param(b"expires"), Some(&b"600"[..]));
        assert_eq!(contact.param(b"reg-id"), Some(&b"1"[..]));
        assert_eq!(f.reg.locate(1, "101"), Some((f.peer, "sip:k3a9@df7jal23ls0d.invalid;transport=ws".to_owned())));
        let listed = f.reg.registered(1, f.t0 + Duration::from_secs(100));
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].expires_in, listed[0].transport, listed[0].user_agent.as_deref()), (500, "ws", Some("JsSIP 3.13.8")));
        assert!(f.reg.registered(2, f.t0).is_empty());
    }

    #[test]
    fn a_wrong_password_is_challenged_again_without_stale() {
        let f = fixture();
        let resp = login(&f, "wrong-password", 1, Duration::ZERO);
        assert_eq!(resp.status(), Some(401));
        assert!(!challenge_of(&resp).2);
        assert!(f.reg.locate(1, "101").is_none());
    }

    #[test]
    fn an_extension_without_credentials_looks_like_a_wrong_password() {
        let f = fixture();
        let first = send(&f, &register("102", "office.example", None, 600, 1), f.peer, Duration::ZERO).unwrap();
        let (realm, nonce, _) = challenge_of(&first);
        let a = auth("102", &realm, &nonce, PASSWORD, 1);
        let resp = send(&f, &register("102", "office.example", Some(&a), 600, 2), f.peer, Duration::ZERO).unwrap();
        assert_eq!(resp.status(), Some(401));
        assert!(!challenge_of(&resp).2);
    }

    #[test]
    fn an_old_nonce_is_stale_and_a_new_one_works() {
        let f = fixture();
        let first = send(&f, &register("101", "office.example", None, 600, 1), f.peer, Duration::ZERO).unwrap();
        let (realm, nonce, _) = challenge_of(&first);
        let late = Duration::from_secs(301);
        let resp = send(&f, &register("101", "office.example", Some(&auth("101", &realm, &nonce, PASSWORD, 1)), 600, 2), f.peer, late).unwrap();
        assert_eq!(resp.status(), Some(401));
        let (_, fresh, stale) = challenge_of(&resp);
        assert!(stale);
        let ok = send(&f, &register("101", "office.example", Some(&auth("101", &realm, &fresh, PASSWORD, 1)), 600, 3), f.peer, late).unwrap();
        assert_eq!(ok.status(), Some(200));
    }

    #[test]
    fn a_forged_nonce_is_stale_and_a_replay_is_refused() {
        let f = fixture();
        let forged = "00000000000000000000000000000001ffffffffffffffffffffffffffffffff";
        let resp =
            send(&f, &register("101", "office.example", Some(&auth("101", "office.example", forged, PASSWORD, 1)), 600, 1), f.peer, Duration::ZERO).unwrap();
        assert_eq!(resp.status(), Some(401));
        let (_, nonce, stale) = challenge_of(&resp);
        assert!(stale);
        let a = auth("101", "office.example", &nonce, PASSWORD, 1);
        assert_eq!(send(&f, &register("101", "office.example", Some(&a), 600, 2), f.peer, Duration::ZERO).unwrap().status(), Some(200));
        // The same header again (same nonce, same nc): a replay.
        let replay = send(&f, &register("101", "office.example", Some(&a), 600, 2), f.peer, Duration::from_secs(1)).unwrap();
        assert_eq!((replay.status(), challenge_of(&replay).2), (Some(401), true));
        // The browser's next refresh counts on.
        let next = auth("101", "office.example", &nonce, PASSWORD, 2);
        assert_eq!(send(&f, &register("101", "office.example", Some(&next), 600, 3), f.peer, Duration::from_secs(2)).unwrap().status(), Some(200));
    }

    #[test]
    fn expiry_zero_a_closed_flow_and_time_end_the_binding() {
        let f = fixture();
        assert_eq!(login(&f, PASSWORD, 1, Duration::ZERO).status(), Some(200));
        let (_, nonce, _) = challenge_of(&send(&f, &register("101", "office.example", None, 600, 5), f.peer, Duration::ZERO).unwrap());
        let zero = register("101", "office.example", Some(&auth("101", "office.example", &nonce, PASSWORD, 1)), 0, 6);
        let resp = send(&f, &zero, f.peer, Duration::ZERO).unwrap();
        assert_eq!((resp.status(), resp.contact()), (Some(200), None));
        assert!(f.reg.locate(1, "101").is_none());

        assert_eq!(login(&f, PASSWORD, 1, Duration::ZERO).status(), Some(200));
        let other = Peer { addr: "127.0.0.1:40002".parse().unwrap(), transport: Transport::Ws };
        assert!(f.reg.flow_closed(other).is_empty());
        assert_eq!(f.reg.flow_closed(f.peer), vec![(1, "101".to_owned())]);
        assert!(f.reg.locate(1, "101").is_none());

        assert_eq!(login(&f, PASSWORD, 1, Duration::ZERO).status(), Some(200));
        f.reg.expire(f.t0 + Duration::from_secs(599));
        assert!(f.reg.locate(1, "101").is_some());
        f.reg.expire(f.t0 + Duration::from_secs(601));
        assert!(f.reg.locate(1, "101").is_none());
    }

    #[test]
    fn expiry_is_bounded() {
        let f = fixture();
        let (_, nonce, _) = challenge_of(&send(&f, &register("101", "office.example", None, 600, 1), f.peer, Duration::ZERO).unwrap());
        let brief =
            send(&f, &register("101", "office.example", Some(&auth("101", "office.example", &nonce, PASSWORD, 1)), 30, 2), f.peer, Duration::ZERO).unwrap();
        assert_eq!((brief.status(), brief.header_by_name(b"Min-Expires")), (Some(423), Some(&b"60"[..])));
        let long =
            send(&f, &register("101", "office.example", Some(&auth("101", "office.example", &nonce, PASSWORD, 2)), 86_400, 3), f.peer, Duration::ZERO).unwrap();
        assert_eq!(long.contact().unwrap().param(b"expires"), Some(&b"3600"[..]));
    }

    #[test]
    fn unknown_domains_and_ip_mode_portals_are_refused() {
        let f = fixture();
        assert_eq!(send(&f, &register("101", "nowhere.example", None, 600, 1), f.peer, Duration::ZERO).unwrap().status(), Some(404));
        assert_eq!(send(&f, &register("101", "phones.example", None, 600, 1), f.peer, Duration::ZERO).unwrap().status(), Some(403));
    }

    #[test]
    fn a_deleted_mapping_or_revoked_credential_no_longer_authenticates() {
        let f = fixture();
        f.directory.install_for_test(vec![portal(1, "https://office.example/", TelephonyMode::Webrtc, &[(12, "101")])]);
        assert_eq!(login(&f, PASSWORD, 1, Duration::ZERO).status(), Some(401), "a re-created mapping has another id");
        let f = fixture();
        assert_eq!(login(&f, PASSWORD, 1, Duration::ZERO).status(), Some(200));
        f.reg.credentials().remove(1, 10);
        f.reg.unbind(1, "101");
        assert!(f.reg.locate(1, "101").is_none());
        assert_eq!(login(&f, PASSWORD, 1, Duration::ZERO).status(), Some(401));
    }

    #[test]
    fn only_a_registered_flow_may_send_requests_for_its_extension() {
        let f = fixture();
        let invite = |from: &str| {
            let text = format!(
                "INVITE sip:79161234567@office.example SIP/2.0\r\nVia: SIP/2.0/WSS x.invalid;branch=z9hG4bKi1\r\nMax-Forwards: 70\r\n\
                 To: <sip:79161234567@office.example>\r\nFrom: <sip:{from}@office.example>;tag=f\r\nCall-ID: i1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
            );
            SipMessage::parse(Bytes::from(text)).unwrap()
        };
        assert_eq!(send(&f, &invite("101"), f.peer, Duration::ZERO).unwrap().status(), Some(403));
        assert_eq!(login(&f, PASSWORD, 1, Duration::ZERO).status(), Some(200));
        let mut out = Outbox::new();
        assert!(!f.reg.on_websocket(&invite("101"), f.peer, f.t0, &mut out), "goes on to the proxy");
        assert!(f.reg.on_websocket(&invite("102"), f.peer, f.t0, &mut out), "another extension's From");
        let other = Peer { addr: "127.0.0.1:40002".parse().unwrap(), transport: Transport::Ws };
        assert!(f.reg.on_websocket(&invite("101"), other, f.t0, &mut out), "another flow");
        let response = SipMessage::parse(Bytes::from_static(b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKx\r\nTo: <sip:a@b>;tag=1\r\nFrom: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")).unwrap();
        // Responses: only from a flow holding a registration (an unregistered socket cannot
        // inject answers into the proxy's transactions); the proxy then matches branch and flow.
        let mut out = Outbox::new();
        assert!(f.reg.on_websocket(&response, other, f.t0, &mut out), "dropped from an unregistered flow");
        assert!(!f.reg.on_websocket(&response, f.peer, f.t0, &mut out), "goes on from a registered one");
        assert!(out.reply.is_empty() && out.sends.is_empty(), "a dropped response is not answered");
    }
}
