//! linphone-cli 5.1 phones behind callgate, with Debian's Kamailio as the office PBX
//! (`super::super::pbx`): each phone's SIP domain is the PBX's host name and callgate is its
//! outbound proxy. Each story asserts what the phone saw, what the PBX saw, what callgate's
//! tracker made of it (`GET /api/v1/calls`) and what the fake Bitrix24 was told.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use super::{Linphone, Setup, Transport};
use crate::common::{phone_ip, TestGateway};
use crate::fake_b24::FakeB24;
use crate::phones::pbx::{password, Pbx, PBX_DOMAIN, PBX_REALM};

/// A customer calling in, and the number agents dial out to.
const CUSTOMER: &str = "79161234567";
/// Extensions and their Bitrix24 users.
const EXTENSIONS: [(&str, u64); 3] = [("101", 11), ("102", 12), ("103", 13)];

/// callgate in front of a Kamailio PBX, with one active portal reporting to a fake Bitrix24;
/// extensions 101..=103 are mapped with no static contact (their phones register).
struct Office {
    gw: TestGateway,
    pbx: Pbx,
    fake: FakeB24,
    portal: i64,
}

impl Office {
    async fn open() -> Self {
        let pbx = Pbx::start().await;
        let fake = FakeB24::spawn().await;
        let dir = tempfile::tempdir().unwrap();
        let mut gw = TestGateway::spawn_on(dir.path(), |cfg| {
            cfg.calls.linger = Duration::from_millis(300);
            cfg.crm.show_hide_window = Duration::from_millis(100);
        })
        .await;
        gw.keep_dir(dir);
        let (status, body) = gw.api(Method::POST, "/api/v1/portals", Some(json!({ "domain": "office.bitrix24.ru", "auth": { "webhook_url": fake.webhook_url() } }))).await;
        assert_eq!(status, 201, "{body}");
        let portal = body["id"].as_i64().unwrap();
        let settings = json!({ "active": true, "pbx_host": pbx.addr.to_string(), "incoming": { "default_responsible": 1 }, "outgoing": { "default_responsible": 2 } });
        let (status, body) = gw.api(Method::PUT, &format!("/api/v1/portals/{portal}/settings"), Some(settings)).await;
        assert_eq!(status, 200, "{body}");
        for (ext, user) in EXTENSIONS {
            let m = json!({ "user_id": user, "extension": ext, "use_for_personal_manager": true, "contact": null });
            let (status, body) = gw.api(Method::POST, &format!("/api/v1/portals/{portal}/mappings"), Some(m)).await;
            assert_eq!(status, 201, "{body}");
        }
        Self { gw, pbx, fake, portal }
    }

    /// callgate's listener for `t`.
    fn proxy(&self, t: Transport) -> SocketAddr {
        let key = match t {
            Transport::Udp => "sip_udp",
            Transport::Tcp => "sip_tcp",
            Transport::Tls => "sip_tls",
        };
        self.gw.addresses[key].parse().unwrap()
    }

    /// Extension `ext`'s phone over `t`, as its user sets it up: domain `pbx.office.example`,
    /// callgate as outbound proxy, the PBX's password.
    fn setup(&self, ext: &str, t: Transport) -> Setup {
        let mut s = Setup::new(ext, phone_ip(ext), t, self.proxy(t), PBX_DOMAIN, &password(ext));
        s.realm = PBX_REALM.to_owned();
        s
    }

    /// Starts `ext`'s phone over `t` and waits until the PBX has its registration (through
    /// callgate: the Path the PBX stored is callgate's).
    async fn registered(&self, ext: &str, t: Transport) -> Linphone {
        let phone = Linphone::start(self.setup(ext, t)).await;
        phone.wait_registered().await;
        let (contact, path) = self.pbx.registration(ext).await.unwrap_or_else(|| panic!("the PBX has no registration of {ext}:\n{}", self.pbx.log()));
        assert!(path.contains(&self.proxy(Transport::Udp).to_string()), "{ext} registered through callgate: contact={contact} path={path}");
        phone
    }

    /// Every call the tracker knows, open or finished.
    async fn calls(&self) -> Vec<Value> {
        let (status, calls) = self.gw.api(Method::GET, "/api/v1/calls?limit=1000", None).await;
        assert_eq!(status, 200, "{calls}");
        calls.as_array().unwrap().clone()
    }
}

/// linphone registers `sip:101@pbx.office.example` through callgate (its outbound proxy): the
/// PBX challenges it (401), the retry with the PBX's password is accepted, and the PBX stores
/// the phone's own Contact with callgate's Path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linphone_registers_in_the_pbx_domain_through_callgate_over_udp() {
    let o = Office::open().await;
    let phone = o.registered("101", Transport::Udp).await;
    let (contact, _) = o.pbx.registration("101").await.unwrap();
    assert!(contact.contains(&format!("sip:101@{}", phone.sip)), "the PBX has the phone's Contact: {contact}");
    assert!(o.calls().await.is_empty(), "a registration is no call");
}
