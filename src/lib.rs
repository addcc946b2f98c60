//! callgate: a telephony gateway between a cloud PBX and Bitrix24 CRM.
//!
//! Data path, readable from the module names:
//! SIP in (`sip::transport` -> `sip::core`) -> `routing` (personal-manager decisions) and
//! `proxy` / `webrtc` (agent legs) -> `calls` (pure call tracker) -> `crm` (durable outbox) ->
//! Bitrix24. `store` persists settings, the index snapshot, calls and the outbox; `http` serves
//! the admin API, the settings page and Bitrix24 events; `config` and `telemetry` are set up by
//! `app`, which only wires things together.

pub mod app;
pub mod calls;
pub mod config;
pub mod crm;
pub mod directory;
pub mod edge;
#[doc(hidden)]
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod http;
pub mod limit;
pub mod phone;
pub mod proxy;
pub mod routing;
pub mod settings;
pub mod sip;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod webrtc;

pub use app::Gateway;
