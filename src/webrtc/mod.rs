//! The browser agent leg (WebRTC widget mode) behind our own trait; the `webrtc` crate is imported
//! only here.
//!
//! Signalling:
//! - `credentials`: per-agent SIP passwords callgate issues (only HA1 kept) and their
//!   in-memory cache.
//! - `registrar`: callgate as the registrar for browser agents over SIP-over-WebSocket
//!   (RFC 7118, `sip::transport::ws`): digest auth, bindings to the WebSocket flow, and
//!   [`crate::proxy::FlowLocator`] so the PBX's INVITE for a registered extension goes over
//!   that flow.
//!
//! Media:
//! - `bridge`: the SDP stage in front of the proxy for browser agents' calls; it decides at once
//!   and never waits ([`Bridge::plan`]); `plan`: what it decides, and the media operation it may
//!   need ([`MediaWork`]);
//! - `mailbox`: the bounded mailbox that carries the media operations off the SIP threads to the
//!   media runtime and the rewritten messages back to the front door;
//! - `media`: the media anchor itself (ICE-lite + DTLS-SRTP on one side, plain RTP on the other).
//!
//! Depends on `sip::core` (digest, messages), `sip::transport` (types), `directory` (portals),
//! `settings`, `store` (credential rows) and the proxy's `FlowLocator`, `LocalFinalHook` and
//! `Admitted` types; `edge` calls it before the proxy.

pub mod bridge;
pub mod credentials;
pub mod mailbox;
pub mod media;
pub mod plan;
pub mod registrar;

pub use bridge::Bridge;
pub use plan::{MediaDone, MediaWork, Plan, Rewrite};
pub use mailbox::{MediaGate, MediaInbox, MediaMailbox};

/// The media bridge, once the SIP side has started it (the HTTP side is built first).
pub type BridgeSlot = std::sync::Arc<std::sync::OnceLock<std::sync::Arc<Bridge>>>;
pub use credentials::{Credentials, Issued};
pub use registrar::{RegisteredAgent, Registrar, RegistrarConfig};
