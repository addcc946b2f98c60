//! The browser agent leg (WebRTC widget mode) behind our own trait; the `webrtc` crate is imported
//! only here. Filled by the WebRTC issue.
//!
//! Part 1 (signalling, no media yet):
//! - `credentials`: per-agent SIP passwords callgate issues (only HA1 kept) and their
//!   in-memory cache.
//! - `registrar`: callgate as the registrar for browser agents over SIP-over-WebSocket
//!   (RFC 7118, `sip::transport::ws`): digest auth, bindings to the WebSocket flow, and
//!   [`crate::proxy::FlowLocator`] so the PBX's INVITE for a registered extension goes over
//!   that flow.
//!
//! Part 2: `bridge`, the media stage between the proxy and the PBX (SDP swapped in transit, the
//! calls' media anchored by `media`).
//!
//! Depends on `sip::core` (digest, messages), `sip::transport` (types), `directory` (portals),
//! `settings`, `store` (credential rows) and the proxy's traits it implements (`AgentDirectory`
//! alias `FlowLocator`, `LocalFinalHook`); `edge` calls it before the proxy.

pub mod bridge;
pub mod credentials;
pub mod media;
pub mod registrar;

pub use bridge::{Bridge, Rewrite};

/// The media bridge, once the SIP side has started it (the HTTP side is built first).
pub type BridgeSlot = std::sync::Arc<std::sync::OnceLock<std::sync::Arc<Bridge>>>;
pub use credentials::{Credentials, Issued};
pub use registrar::{RegisteredAgent, Registrar, RegistrarConfig};
