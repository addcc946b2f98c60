//! Real phones configured the way people configure them (issue 16): Debian's baresip and linphone driven
//! through their control interfaces, registering with Debian's Kamailio as the PBX's registrar
//! (digest auth, RFC 3327 Path) with callgate as their outbound proxy.
//!
//! - `pbx`: the Kamailio PBX driver (`tests/data/kamailio/pbx.cfg`).
//! - `baresip`: the baresip driver (config directory, ctrl_tcp commands and events, SIP trace).
//! - `nat`: a phone behind a NAT (a UDP NAT; TCP and TLS connections from the NAT's address).
//! - `office`: callgate + a portal + the PBX + a fake Bitrix24, and the trunk's customer (SIPp).
//! - `linphone`: the linphone-daemon driver; `linphone/stories.rs` its stories.
//! - `baresip_*`: the stories, each over UDP, TCP and TLS to callgate with the PBX on UDP (a plain
//!   `pbx_host` is UDP whatever the phone uses).

pub mod baresip;
pub mod nat;
pub mod office;
pub mod pbx;

mod baresip_calls;
mod baresip_register;
mod baresip_transfer;
pub mod linphone;
mod pbx_selftest;

