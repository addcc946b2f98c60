//! Agent registrations learnt from REGISTERs relayed to the PBX (RFC 3327 Path): when the PBX
//! accepts one (2xx), the binding extension -> contact, and the flow it came over, is kept until
//! it expires. The PBX stays the registrar of record; this table only lets callgate reach a
//! phone when the PBX sends `INVITE sip:EXT@callgate` without using the Path.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::settings::PortalId;
use crate::sip::core::{HeaderName, SipMessage};
use crate::sip::transport::Peer;

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

/// Bindings by portal and extension.
#[derive(Debug, Default)]
pub(crate) struct Registrar {
    bindings: HashMap<(PortalId, String), Binding>,
}

impl Registrar {
    /// The live binding of `extension`, if any.
    pub(crate) fn lookup(&self, portal: PortalId, extension: &str) -> Option<&Binding> {
        self.bindings.get(&(portal, extension.to_owned()))
    }

    /// The PBX accepted `reg` at `now`: store it, or remove it (expires 0, or `*`).
    pub(crate) fn accepted(&mut self, reg: PendingRegister, now: Instant) {
        let key = (reg.portal, reg.extension);
        match reg.contact {
            Some(contact) if !reg.expires.is_zero() && contact != "*" => {
                self.bindings.insert(key, Binding { contact, peer: reg.peer, expires: now + reg.expires });
            }
            _ => {
                self.bindings.remove(&key);
            }
        }
    }

    /// Whether `peer` is the flow of a registered phone.
    pub(crate) fn is_phone(&self, peer: Peer) -> bool {
        self.bindings.values().any(|b| b.peer == peer)
    }

    /// Drops expired bindings.
    pub(crate) fn expire(&mut self, now: Instant) {
        self.bindings.retain(|_, b| b.expires > now);
    }
}
