#![allow(unreachable_pub, dead_code)]
//! The integration test binary (one binary, so the crate links once). Modules by capability.

mod abuse;
mod attack_sip;
mod attack_http;
mod api;
mod attack_install;
mod attack_media;
mod binary;
mod browser;
mod common;
mod crash;
mod crm;
mod crm_events;
mod crm_sync;
mod fake_b24;
mod fake_b24_selftest;
mod faults;
mod fuzz;
mod media;
mod proxy;
mod redirect;
mod tls;
mod settings_page;
mod shutdown;
mod stories;
mod ws;
