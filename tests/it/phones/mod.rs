//! Real phones configured the way people configure them (issue 16): Debian's baresip driven
//! through its control interface, registering with Debian's Kamailio as the PBX's registrar
//! (digest auth, RFC 3327 Path) with callgate as their outbound proxy.
//!
//! - `pbx`: the Kamailio PBX driver (`tests/data/kamailio/pbx.cfg`).
//! - `baresip`: the baresip driver (config directory, ctrl_tcp commands and events, SIP trace).
//! - `nat`: a NAT in front of a phone (UDP and TCP).
//! - `office`: callgate + a portal + the PBX + a fake Bitrix24, and the trunk's customer (SIPp).
//! - `baresip_*`: the stories, each over UDP, TCP and TLS to callgate with the PBX on UDP.

pub mod baresip;
pub mod nat;
pub mod office;
pub mod pbx;

mod baresip_calls;
mod baresip_register;
mod baresip_transfer;
mod pbx_selftest;

use baresip::Transport;

/// What a portal's `pbx_host` adds after the PBX's address for phones on `t`: the PBX is on
/// UDP whatever the phone uses, which the operator says with `;transport=udp` (without it
/// callgate uses the phone's transport toward the PBX).
pub fn pbx_params(t: Transport) -> &'static str {
    match t {
        Transport::Udp => "",
        Transport::Tcp | Transport::Tls => ";transport=udp",
    }
}
