//! callgate: a telephony gateway between a cloud PBX and Bitrix24 CRM.
//!
//! Data path, readable from the module names: SIP in (`sip::transport` -> `sip::core`) ->
//! `edge` (the front door) -> `routing` (personal-manager decisions) or `proxy` / `webrtc` (agent
//! legs) -> `calls` (pure call tracker) -> `crm` (durable outbox) -> Bitrix24. `directory` is
//! what the SIP side reads (portals, mappings, lines, the personal-manager index); `store`
//! persists settings, the index, calls and the outbox; `http` serves the admin API, the settings
//! page and Bitrix24 events; `app` builds every service from `config` and runs them.
//!
//! Layers, top to bottom. A module may use the modules below it, never one above it, so there
//! is no import cycle (`tests/it/layers.rs` reads every `crate::` path of `src/`, test code
//! aside, and fails on an arrow pointing up; a new module goes into this list):
//!
//! ```text
//! app        builds every service from the validated config, runs them, stops them
//! fuzzing    fuzz-target bodies (feature `fuzzing`: tests and fuzz/, never the release binary)
//! http       axum: admin API, settings page, Bitrix24 events, /metrics, /live, /ready
//! crm        Bitrix24: outbox delivery, inbound events, index sync, click-to-call
//! edge       the SIP front door: rate limits, draining, back-pressure, which role gets a message
//! webrtc     browser agents: registrar, media bridge (SDP stage), media anchor
//! proxy      stateful record-routing proxy: trust model, transactions, legs -> calls
//! routing    the decision: decide() -> Decision, for the SIP 302 and HTTP alike
//! calls      pure call tracker: events in, effects out, `now` a parameter; checkpoints
//! directory  portals, mappings, lines, the personal-manager index (an ArcSwap snapshot)
//! store      the Store trait and its SQLite implementation
//! settings   the operator's model (portals, settings, mappings, lines) and its validation
//! phone      phone number normalisation: a basic type
//! sip        sip::core (sans-IO parser, framing, transactions, digest), sip::transport (sockets)
//! tls        rustls set-up, the one crypto provider, development certificates
//! limit      per-source token buckets (SIP and HTTP)
//! telemetry  logging, metrics, the wall clock in unix ms
//! config     serde structs of the configuration file; imports nothing from the crate
//! ```
//!
//! Below all of them, as its own workspace crate: `bitrix24` (crates/bitrix24), the Bitrix24 REST
//! client (parameters, errors, typed methods, limiter, OAuth). It knows nothing of callgate, so
//! no arrow can point up from it; `crm` is its only user.
//!
//! A routing INVITE (the PBX asks who the caller's manager is): `sip::transport` (a UDP
//! datagram) -> `edge::Front` (rate limit, its Request-URI user is a portal's `routing_user`) ->
//! `routing::RedirectServer` (parsed by `sip::core`, caller normalised by `phone`, portal and
//! manager looked up in `directory`, [`routing::decide`]) -> a 302 back through `sip::transport`;
//! the decision goes to `calls`, which gives it to the call's first leg.
//!
//! A proxied call (the PBX rings an agent's phone): `sip::transport` -> `edge::Front` (gates, not
//! a routing request; a browser agent's SDP through the `webrtc` bridge) -> `proxy::Proxy`
//! (`trust` admits the PBX by `directory`, `target` finds the phone's registration,
//! `sip::core::transaction` state in `engine`, `observe` turns the leg into `calls` events) ->
//! `sip::transport` to the phone; `calls` turns the legs into effects -> `crm` records them in the
//! `store`'s outbox and delivers them to Bitrix24.

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
