//! Real phones configured the way people configure them (issue 16): Debian's baresip driven
//! through its control interface, registering with Debian's Kamailio as the PBX's registrar
//! (digest auth, RFC 3327 Path) with callgate as their outbound proxy.
//!
//! - `pbx`: the Kamailio PBX driver (`tests/data/kamailio/pbx.cfg`).

pub mod pbx;

mod pbx_selftest;
