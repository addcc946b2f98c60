//! The one SIP listener's two roles (DESIGN.md §2): a request whose Request-URI user is a
//! portal's `routing_user` asks the redirect listener for a decision; everything else (agents'
//! and the PBX's calls, every response) goes through the edge proxy.
//!
//! The choice reads only the request line, so the redirect hot path keeps its single parse.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::Proxy;
use crate::routing::{Directory, RedirectServer};
use crate::sip::core::Uri;
use crate::sip::transport::{Outbox, Peer, SipHandler};

/// Redirect listener + proxy behind one [`SipHandler`].
pub struct Front {
    directory: Directory,
    redirect: Arc<RedirectServer>,
    proxy: Arc<Proxy>,
}

impl Front {
    /// Both roles on one listener.
    pub fn new(directory: Directory, redirect: Arc<RedirectServer>, proxy: Arc<Proxy>) -> Self {
        Self { directory, redirect, proxy }
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
    }
}
