//! Agent registrations learnt from REGISTERs relayed to the PBX (RFC 3327 Path): when the PBX
//! accepts one (2xx), the binding extension -> contact, and the flow it came over, is kept until
//! it expires. The PBX stays the registrar of record; this table only lets callgate reach a
//! phone when the PBX sends `INVITE sip:EXT@callgate` without using the Path, and tells the
//! trust model which flows are registered phones (and whose).
//!
//! Bounded: a binding lives at most [`MAX_BINDING`] whatever the PBX grants, and at most
//! [`MAX_BINDINGS`] are kept (beyond, a new extension's binding is not learnt; the PBX's answer
//! still reaches the phone).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::settings::PortalId;
use crate::sip::core::{HeaderName, SipMessage};
use crate::sip::transport::Peer;

/// The longest a learnt binding lives (the PBX may grant more; the phone re-registers sooner).
pub(crate) const MAX_BINDING: Duration = Duration::from_secs(86_400);
/// Bindings kept at most.
pub(crate) const MAX_BINDINGS: usize = 100_000;

/// One registered phone.
#[derive(Debug, Clone)]
pub(crate) struct Binding {
    /// The Contact URI it registered (the Request-URI of requests sent to it).
    pub(crate) contact: String,
    /// The address and transport it registered from (its flow: the way back through NAT).
    pub(crate) peer: Peer,
    expires: Instant,
}

/// A REGISTER on its way to the PBX, applied when the PBX answers 2xx.
#[derive(Debug, Clone)]
pub(crate) struct PendingRegister {
    portal: PortalId,
    extension: String,
    contact: Option<String>,
    expires: Duration,
    peer: Peer,
}

impl PendingRegister {
    /// What `req` (a REGISTER from `peer`) asks for; `None` without an extension in To.
    pub(crate) fn from_request(portal: PortalId, req: &SipMessage, peer: Peer) -> Option<Self> {
        let extension = req.to().and_then(|t| t.uri.user).and_then(|u| std::str::from_utf8(u).ok())?.to_owned();
        let contact = req.contact();
        let expires_param = contact.as_ref().and_then(|c| c.param(b"expires"));
        let expires = expires_param.or_else(|| req.header(HeaderName::Expires)).and_then(|v| std::str::from_utf8(v.trim_ascii()).ok()?.parse::<u64>().ok()).unwrap_or(3600);
        let contact = contact.filter(|c| !c.uri.raw.is_empty()).map(|c| String::from_utf8_lossy(c.uri.raw).into_owned());
        Some(Self { portal, extension, contact, expires: Duration::from_secs(expires), peer })
    }
}

/// What the registrar's 2xx grants `contact`: its Contact entry's `expires`, else `Expires:`.
fn granted_expiry(resp: &SipMessage, contact: &str) -> Option<Duration> {
    let secs = |v: &[u8]| std::str::from_utf8(v.trim_ascii()).ok()?.parse::<u64>().ok();
    let ours = resp
        .values(HeaderName::Contact)
        .flat_map(crate::sip::core::comma_values)
        .filter_map(|v| crate::sip::core::NameAddr::parse(v.trim_ascii()))
        .find(|n| n.uri.raw == contact.as_bytes())
        .and_then(|n| n.param(b"expires").and_then(secs));
    ours.or_else(|| resp.header(HeaderName::Expires).and_then(secs)).map(Duration::from_secs)
}

/// Bindings by portal and extension.
#[derive(Debug, Default)]
pub(crate) struct Registrar {
    bindings: HashMap<(PortalId, String), Binding>,
    /// Bindings per flow: every request asks "is this source a phone, and whose?" (answered
    /// without a scan).
    flows: HashMap<Peer, Vec<(PortalId, String)>>,
    /// The earliest expiry: the periodic sweep does nothing before it.
    next_expiry: Option<Instant>,
}

impl Registrar {
    /// The live binding of `extension`, if any.
    pub(crate) fn lookup(&self, portal: PortalId, extension: &str) -> Option<&Binding> {
        self.bindings.get(&(portal, extension.to_owned()))
    }

    /// The PBX accepted `reg` with the 2xx `resp` at `now`: store the binding for as long as
    /// the PBX granted (the `expires` of our contact in its answer, else its Expires header,
    /// else what was asked, RFC 3261 §10.2.4), or remove it (expires 0, or `*`).
    pub(crate) fn accepted(&mut self, reg: PendingRegister, resp: &SipMessage, now: Instant) {
        let key = (reg.portal, reg.extension);
        let granted = reg.contact.as_deref().and_then(|c| granted_expiry(resp, c)).unwrap_or(reg.expires).min(MAX_BINDING);
        let full = self.bindings.len() >= MAX_BINDINGS && !self.bindings.contains_key(&key);
        let old = match (reg.contact, now.checked_add(granted)) {
            (Some(contact), Some(expires)) if !granted.is_zero() && contact != "*" && !full => {
                self.next_expiry = Some(self.next_expiry.map_or(expires, |e| e.min(expires)));
                self.flows.entry(reg.peer).or_default().push(key.clone());
                self.bindings.insert(key.clone(), Binding { contact, peer: reg.peer, expires })
            }
            _ => self.bindings.remove(&key),
        };
        if let Some(old) = old {
            self.forget_flow(old.peer, &key);
        }
    }

    /// The registered phone on flow `peer`: (portal, extension), the one whose extension is
    /// `user` when the flow registered several, else the only one.
    pub(crate) fn agent_of(&self, peer: Peer, user: &[u8]) -> Option<(PortalId, String)> {
        let keys = self.flows.get(&peer)?;
        keys.iter().find(|(_, ext)| ext.as_bytes() == user).or_else(|| (keys.len() == 1).then(|| keys.first()).flatten()).cloned()
    }

    /// Drops expired bindings (a full pass only once the earliest expiry has come).
    pub(crate) fn expire(&mut self, now: Instant) {
        if self.next_expiry.is_none_or(|e| e > now) {
            return;
        }
        let mut gone = Vec::new();
        self.bindings.retain(|k, b| {
            let live = b.expires > now;
            if !live {
                gone.push((b.peer, k.clone()));
            }
            live
        });
        for (peer, key) in gone {
            self.forget_flow(peer, &key);
        }
        self.next_expiry = self.bindings.values().map(|b| b.expires).min();
    }

    fn forget_flow(&mut self, peer: Peer, key: &(PortalId, String)) {
        if let Some(keys) = self.flows.get_mut(&peer) {
            if let Some(i) = keys.iter().position(|k| k == key) {
                keys.swap_remove(i);
            }
            if keys.is_empty() {
                self.flows.remove(&peer);
            }
        }
    }
}
