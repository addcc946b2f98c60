//! The one SIP listener's two roles (DESIGN.md §2): a request whose Request-URI user is a
//! portal's `routing_user` asks the redirect listener for a decision; everything else (agents'
//! and the PBX's calls, every response) goes through the edge proxy.
//!
//! The choice reads only the request line, so the redirect hot path keeps its single parse.
//!
//! Messages over a WebSocket flow (browser agents, WebRTC widget) never reach the redirect
//! listener: the browser agents' registrar answers their REGISTERs and admits their other
//! requests ([`crate::webrtc::Registrar::on_websocket`]); what it lets through goes to the
//! proxy. A closed flow ends its registrations.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::Proxy;
use crate::routing::{Directory, RedirectServer};
use crate::sip::core::{write_bad_request, SipMessage, Uri};
use crate::sip::transport::{Outbox, Peer, SipHandler};

/// Redirect listener + proxy behind one [`SipHandler`].
pub struct Front {
    directory: Directory,
    redirect: Arc<RedirectServer>,
    proxy: Arc<Proxy>,
    websocket: Option<Arc<crate::webrtc::Registrar>>,
}

impl Front {
    /// Both roles on one listener.
    pub fn new(directory: Directory, redirect: Arc<RedirectServer>, proxy: Arc<Proxy>) -> Self {
        Self { directory, redirect, proxy, websocket: None }
    }

    /// Browser agents over WebSocket are registered by `registrar` (without it, WebSocket
    /// messages go to the proxy like any other).
    #[must_use]
    pub fn with_websocket(mut self, registrar: Arc<crate::webrtc::Registrar>) -> Self {
        self.websocket = Some(registrar);
        self
    }

    /// A message over a WebSocket flow: parsed once, then the registrar, then the proxy.
    fn on_websocket(&self, registrar: &crate::webrtc::Registrar, data: Bytes, peer: Peer, now: Instant, out: &mut Outbox) {
        match SipMessage::parse(data.clone()) {
            Ok(msg) => {
                if !registrar.on_websocket(&msg, peer, now, out) {
                    self.proxy.handle(&msg, peer, now, out);
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
    fn for_redirect(&self, data: &[u8]) -> bool {
        if data.starts_with(b"SIP/") {
            return false;
        }
        // The Request-URI is the second token of the request line; only its user part matters.
        let line = data.get(..memchr::memchr(b'\n', data).unwrap_or(data.len())).unwrap_or_default();
        let Some(user) = line.split(|&b| b == b' ').nth(1).and_then(Uri::user_of) else { return false };
        let snap = self.directory.snapshot();
        snap.portals.is_empty() || snap.portals.values().any(|p| p.portal.settings.routing_user.as_bytes() == user)
    }
}

impl SipHandler for Front {
    fn on_message(&self, data: Bytes, peer: Peer, now: Instant, out: &mut Outbox) {
        if let (true, Some(registrar)) = (peer.transport.is_websocket(), &self.websocket) {
            return self.on_websocket(registrar, data, peer, now, out);
        }
        if self.for_redirect(&data) {
            self.redirect.on_message(data, peer, now, out);
        } else {
            self.proxy.on_message(data, peer, now, out);
        }
    }

    fn on_bad_frame(&self, head: &[u8], peer: Peer, reply: &mut BytesMut) {
        self.proxy.on_bad_frame(head, peer, reply);
    }

    fn on_tick(&self, now: Instant, out: &mut Outbox) {
        self.redirect.on_tick(now, out);
        self.proxy.on_tick(now, out);
        if let Some(registrar) = &self.websocket {
            registrar.expire(now);
        }
    }

    fn on_closed(&self, peer: Peer, _now: Instant, _out: &mut Outbox) {
        if let Some(registrar) = &self.websocket {
            let gone = registrar.flow_closed(peer);
            if !gone.is_empty() {
                tracing::debug!(addr = %peer.addr, registrations = gone.len(), "websocket closed; its registrations end");
            }
        }
    }
}
