//! SIP: `core` is the sans-IO protocol core (parsing, framing, responses; no tokio), `transport`
//! the thin UDP/TCP drivers that move bytes between sockets and the core.

pub mod core;
pub mod transport;
