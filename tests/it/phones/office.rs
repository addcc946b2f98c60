//! The office the phone stories run in: callgate in-process (SIP on UDP, TCP and TLS, a
//! development CA for TLS), one active portal with a fake Bitrix24 whose PBX is a Kamailio
//! ([`super::pbx::Pbx`]) on 127.0.0.1, its SIP domain the PBX's host name, a line, and the
//! extensions 101 -> user 11, 102 -> user 12, 103 -> user 13 with no static contacts: phones are
//! reachable only through their registrations.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use super::baresip::{Baresip, Phone, Transport};
use super::nat::{UdpNat, LAN_IP};
use super::pbx::{Pbx, PBX_DOMAIN, TRUNK_IP};
use crate::common::sipp::{free_port_on, Sipp, SippChild};
use crate::common::{phone_ip, TestGateway, PBX_IP};
use crate::fake_b24::{CallState, FakeB24};

/// The customer calling in and being called, on the PBX's trunk.
pub const CUSTOMER: &str = "79161234567";
/// The portal's line (a number the customer dials).
pub const LINE: &str = "74951110001";
/// Extension -> Bitrix24 user.
pub const EXTENSIONS: [(&str, u64); 3] = [("101", 11), ("102", 12), ("103", 13)];

/// callgate, its portal, the Kamailio PBX and the portal's fake Bitrix24.
pub struct Office {
    pub gw: TestGateway,
    pub pbx: Pbx,
    pub fake: FakeB24,
    pub portal: i64,
    /// The CA file callgate's TLS certificate chains to (a phone's `sip_cafile`).
    pub ca: PathBuf,
    _tls: tempfile::TempDir,
}

impl Office {
    /// An office whose PBX is on UDP (`pbx_host` names no transport).
    pub async fn open() -> Self {
        let tls = tempfile::tempdir().unwrap();
        let ca = write_pki(tls.path());
        let dir = tempfile::tempdir().unwrap();
        let certs = tls.path().to_path_buf();
        let mut gw = TestGateway::spawn_on(dir.path(), |cfg| {
            cfg.calls.linger = Duration::from_millis(300);
            cfg.sip.tls = "127.0.0.1:0".into();
            cfg.sip.tls_cert = certs.join("cert.pem").display().to_string();
            cfg.sip.tls_key = certs.join("key.pem").display().to_string();
        })
        .await;
        gw.keep_dir(dir);
        let pbx = Pbx::start().await;
        let fake = FakeB24::spawn().await;
        let portal = open_portal(&gw, &fake, &pbx.addr.to_string()).await;
        Self { gw, pbx, fake, portal, ca, _tls: tls }
    }

    /// callgate's SIP listener for `t`.
    pub fn sip(&self, t: Transport) -> SocketAddr {
        let key = match t {
            Transport::Udp => "sip_udp",
            Transport::Tcp => "sip_tcp",
            Transport::Tls => "sip_tls",
        };
        self.gw.addresses[key].parse().unwrap()
    }

    /// `ext`'s phone as an operator sets it up: on its own address, the PBX's domain, callgate
    /// as outbound proxy over `t`.
    pub fn phone(&self, ext: &str, t: Transport) -> Phone {
        let mut phone = Phone::new(ext, phone_ip(ext), t, self.sip(t));
        phone.ca = Some(self.ca.clone());
        phone
    }

    /// Starts `ext`'s phone over `t` and waits until it is registered.
    pub async fn registered_phone(&self, ext: &str, t: Transport) -> Baresip {
        let phone = Baresip::start(self.phone(ext, t)).await;
        phone.registered().await;
        phone
    }

    /// Starts `ext`'s phone over `t` behind a NAT (see `nat`) and waits until it is registered;
    /// the phone and the one peer it may exchange SIP with (the NAT's inside address over UDP,
    /// callgate's listener over its own connection otherwise).
    pub async fn registered_phone_behind_nat(&self, ext: &str, t: Transport) -> (Baresip, SocketAddr) {
        let mut setup = self.phone(ext, t);
        setup.ip = LAN_IP;
        setup.source_ip = phone_ip(ext);
        let (phone, peer) = if t == Transport::Udp {
            let nat = UdpNat::start(phone_ip(ext), self.sip(t)).await;
            let inside = nat.inside;
            setup.outbound = inside;
            (Baresip::start_behind(setup, Some(nat)).await, inside)
        } else {
            (Baresip::start(setup).await, self.sip(t))
        };
        phone.registered().await;
        (phone, peer)
    }

    /// The customer calling `ext` through the PBX (`trunk-calls.xml`, RTP echoed), with the
    /// PBX's call id `xcid` and up to two extra header lines.
    pub fn customer_calls(&self, ext: &str, xcid: &str, extra: [&str; 2]) -> SippChild {
        let extra1 = if extra[0].is_empty() { "X-Leg: first" } else { extra[0] };
        let extra2 = if extra[1].is_empty() { "X-Leg: first" } else { extra[1] };
        Sipp::new("trunk-calls.xml", &self.pbx.addr.to_string())
            .at(self.pbx.trunk)
            .key("ext", ext)
            .key("caller", CUSTOMER)
            .key("xcid", xcid)
            .key("extra1", extra1)
            .key("extra2", extra2)
            .args(&["-rtp_echo", "-mp", &media_port(), "-trace_logs"])
            .spawn()
    }

    /// The customer answering one call from the PBX's trunk (`pbx-uas-media.xml`, RTP echoed).
    pub fn customer_answers(&self) -> SippChild {
        Sipp::new("pbx-uas-media.xml", &self.pbx.addr.to_string())
            .at(self.pbx.trunk)
            .args(&["-rtp_echo", "-mp", &media_port(), "-trace_logs"])
            .spawn()
    }

    /// The finished call matching `pred` in `GET /api/v1/calls` (bounded: 10 s).
    pub async fn finished(&self, pred: impl Fn(&Value) -> bool) -> Value {
        self.gw.finished_call(pred).await
    }

    /// Every call the tracker knows.
    pub async fn calls(&self) -> Vec<Value> {
        let (status, calls) = self.gw.api(Method::GET, "/api/v1/calls?limit=1000", None).await;
        assert_eq!(status, 200, "{calls}");
        calls.as_array().unwrap().clone()
    }

    /// The calls the fake Bitrix24 registered, once `n` are finished (bounded: 15 s).
    pub async fn reported(&self, n: usize) -> Vec<CallState> {
        for _ in 0..150 {
            let calls = self.fake.registered();
            if calls.iter().filter(|c| c.finished.is_some()).count() >= n {
                return calls;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("expected {n} finished calls in Bitrix24, have {:#?}", self.fake.registered());
    }

    /// Changes the portal's settings with `edit`.
    pub async fn settings(&self, edit: impl FnOnce(&mut Value)) {
        let path = format!("/api/v1/portals/{}/settings", self.portal);
        let mut settings = self.gw.api(Method::GET, &path, None).await.1;
        edit(&mut settings);
        let (status, body) = self.gw.api(Method::PUT, &path, Some(settings)).await;
        assert_eq!(status, 200, "{body}");
    }
}

/// A free port on the trunk's address for a customer's RTP (`-mp`: SIPp's default, 6000, would
/// be shared by parallel tests).
pub fn media_port() -> String {
    free_port_on(TRUNK_IP).to_string()
}

/// A development CA and a certificate for 127.0.0.1 in `dir` (cert.pem, key.pem); the CA's file.
fn write_pki(dir: &std::path::Path) -> PathBuf {
    let pki = callgate::tls::dev_pki(&["localhost".into(), "127.0.0.1".into()]).unwrap();
    std::fs::write(dir.join("cert.pem"), &pki.cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &pki.key_pem).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    ca
}

/// The active portal: PBX `pbx_host`, trusted 127.0.0.1, its SIP domain, a line, the mappings.
async fn open_portal(gw: &TestGateway, fake: &FakeB24, pbx_host: &str) -> i64 {
    let body = json!({ "domain": "office.bitrix24.ru", "auth": { "webhook_url": fake.webhook_url() } });
    let (status, created) = gw.api(Method::POST, "/api/v1/portals", Some(body)).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    let path = format!("/api/v1/portals/{id}/settings");
    let mut settings = gw.api(Method::GET, &path, None).await.1;
    settings["pbx_host"] = json!(pbx_host);
    settings["trusted_pbx"] = json!([PBX_IP.to_string()]);
    settings["sip_domains"] = json!([PBX_DOMAIN]);
    settings["incoming"]["default_responsible"] = json!(1);
    settings["outgoing"]["default_responsible"] = json!(1);
    settings["active"] = json!(true);
    let (status, body) = gw.api(Method::PUT, &path, Some(settings)).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = gw.api(Method::POST, &format!("/api/v1/portals/{id}/lines"), Some(json!({ "number": LINE }))).await;
    assert_eq!(status, 201, "{body}");
    for (ext, user) in EXTENSIONS {
        let m = json!({ "user_id": user, "extension": ext, "use_for_personal_manager": false, "contact": null });
        let (status, body) = gw.api(Method::POST, &format!("/api/v1/portals/{id}/mappings"), Some(m)).await;
        assert_eq!(status, 201, "{body}");
    }
    id
}
