//! linphone-cli 5.1 phones behind callgate, set up as their users set them up: the SIP domain is
//! the PBX's host name (`pbx.office.example`, listed in the portal's `sip_domains`), callgate is
//! the outbound proxy, the credentials are the PBX's. The PBX is Debian's Kamailio
//! (`crate::phones::pbx`: registrar with digest auth and Path, 407 on the phones' calls), or the
//! project's scripted SIPp PBX where a story needs a PBX that handles REFER. The PBX is on UDP
//! whatever transport the phone uses to reach callgate.
//!
//! Each story asserts what the phones saw (call states, audio both ways from oRTP's counters),
//! what the PBX or the customer saw, what callgate's tracker made of it (`GET /api/v1/calls`) and
//! what the fake Bitrix24 was told.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use super::{AudioStats, Linphone, Setup, Transport};
use crate::common::sipp::{free_port, Sipp, SippChild, SippRun};
use crate::common::{phone_ip, TestGateway, PBX_IP};
use crate::fake_b24::{CallState, FakeB24};
use crate::phones::pbx::{password, Pbx, PBX_DOMAIN, PBX_REALM};

/// A customer calling in, and the number agents dial out to.
const CUSTOMER: &str = "79161234567";
/// Extensions and their Bitrix24 users.
const EXTENSIONS: [(&str, u64); 3] = [("101", 11), ("102", 12), ("103", 13)];

/// Who plays the PBX.
enum PbxSide {
    /// Debian's Kamailio (registrar, proxy to the customer's trunk).
    Kamailio(Pbx),
    /// SIPp scenarios run on 127.0.0.1:`port`, one at a time (registrar, REFER handling).
    Scripted { port: u16 },
}

/// callgate (with its TLS listener, certificate from a test CA) in front of the PBX, with one
/// active portal reporting to a fake Bitrix24; extensions 101..=103 are mapped with no static
/// contact (their phones register).
struct Office {
    gw: TestGateway,
    pbx: PbxSide,
    fake: FakeB24,
    portal: i64,
    /// The CA callgate's TLS certificate chains to (linphone's `root_ca`).
    ca: std::path::PathBuf,
}

impl Office {
    /// With Kamailio as the PBX.
    async fn open() -> Self {
        Self::with(PbxSide::Kamailio(Pbx::start().await)).await
    }

    /// With the scripted SIPp PBX.
    async fn scripted() -> Self {
        Self::with(PbxSide::Scripted { port: free_port() }).await
    }

    async fn with(pbx: PbxSide) -> Self {
        let fake = FakeB24::spawn().await;
        let dir = tempfile::tempdir().unwrap();
        callgate::tls::write_dev_pki(dir.path(), &["localhost".into(), "127.0.0.1".into()]).unwrap();
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        let mut gw = TestGateway::spawn_on(dir.path(), |cfg| {
            cfg.calls.linger = Duration::from_millis(300);
            cfg.crm.show_hide_window = Duration::from_millis(100);
            cfg.sip.tls = "127.0.0.1:0".into();
            cfg.sip.tls_cert = cert.display().to_string();
            cfg.sip.tls_key = key.display().to_string();
        })
        .await;
        gw.keep_dir(dir);
        let (status, body) = gw.api(Method::POST, "/api/v1/portals", Some(json!({ "domain": "office.bitrix24.ru", "auth": { "webhook_url": fake.webhook_url() } }))).await;
        assert_eq!(status, 201, "{body}");
        let portal = body["id"].as_i64().unwrap();
        let pbx_host = match &pbx {
            PbxSide::Kamailio(k) => k.addr,
            PbxSide::Scripted { port } => SocketAddr::new(PBX_IP, *port),
        };
        let settings = json!({ "active": true, "pbx_host": pbx_host.to_string(), "sip_domains": [PBX_DOMAIN],
                               "incoming": { "default_responsible": 1 }, "outgoing": { "default_responsible": 2 } });
        let (status, body) = gw.api(Method::PUT, &format!("/api/v1/portals/{portal}/settings"), Some(settings)).await;
        assert_eq!(status, 200, "{body}");
        for (ext, user) in EXTENSIONS {
            let m = json!({ "user_id": user, "extension": ext, "use_for_personal_manager": true, "contact": null });
            let (status, body) = gw.api(Method::POST, &format!("/api/v1/portals/{portal}/mappings"), Some(m)).await;
            assert_eq!(status, 201, "{body}");
        }
        let ca = gw.data.join("ca.pem");
        Self { gw, pbx, fake, portal, ca }
    }

    fn kamailio(&self) -> &Pbx {
        match &self.pbx {
            PbxSide::Kamailio(k) => k,
            PbxSide::Scripted { .. } => panic!("this story needs Kamailio"),
        }
    }

    fn scripted_port(&self) -> u16 {
        match &self.pbx {
            PbxSide::Scripted { port } => *port,
            PbxSide::Kamailio(_) => panic!("this story needs the scripted PBX"),
        }
    }

    /// Changes the portal's settings with `edit`.
    async fn settings(&self, edit: impl FnOnce(&mut Value)) {
        let path = format!("/api/v1/portals/{}/settings", self.portal);
        let mut settings = self.gw.api(Method::GET, &path, None).await.1;
        edit(&mut settings);
        let (status, body) = self.gw.api(Method::PUT, &path, Some(settings)).await;
        assert_eq!(status, 200, "{body}");
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
    /// callgate as outbound proxy, the PBX's password (and, over TLS, the CA to check callgate's
    /// certificate with).
    fn setup(&self, ext: &str, t: Transport) -> Setup {
        let mut s = Setup::new(ext, phone_ip(ext), t, self.proxy(t), PBX_DOMAIN, &password(ext));
        s.realm = PBX_REALM.to_owned();
        if t == Transport::Tls {
            s.root_ca = Some(self.ca.clone());
        }
        s
    }

    /// Starts `ext`'s phone (`setup`) and waits until the PBX accepted its registration through
    /// callgate: Kamailio stored the phone's Contact with a Path naming callgate's listener for
    /// the phone's transport; or the scripted registrar (which challenges once, checks the
    /// digest and logs Contact and Path) finished its one registration.
    async fn start_registered(&self, setup: Setup) -> Linphone {
        let (ext, t) = (setup.ext.clone(), setup.transport);
        let registrar = match &self.pbx {
            PbxSide::Scripted { port } => Some(
                Sipp::new("pbx-registrar.xml", &self.proxy(Transport::Udp).to_string()).port(*port).key("user", &ext).key("password", &password(&ext)).key("realm", PBX_REALM).key("granted", "600").spawn(),
            ),
            PbxSide::Kamailio(_) => None,
        };
        let phone = Linphone::start(setup).await;
        phone.wait_registered().await;
        let (contact, path) = match (&self.pbx, registrar) {
            (PbxSide::Kamailio(k), _) => k.registration(&ext).await.unwrap_or_else(|| panic!("the PBX has no registration of {ext}:\n{}", k.log())),
            (_, Some(r)) => {
                let run = r.wait().await;
                assert!(run.successful == 1 && run.failed == 0, "the scripted registrar:\n{}\n{}", run.screen, run.errors);
                (logged(&run.logs, "contact"), logged(&run.logs, "path"))
            }
            _ => unreachable!(),
        };
        // The Path is how the PBX reaches callgate: its UDP face, whatever the phone uses.
        assert!(path.contains(&self.proxy(Transport::Udp).to_string()) && !path.contains("transport="), "{ext} registered through callgate, Path for the PBX on UDP: contact={contact} path={path}");
        if let PbxSide::Kamailio(k) = &self.pbx {
            assert!(!k.log().contains("(tcp)") && !k.log().contains("(tls)"), "the PBX is reached over UDP only, whatever the phone uses:\n{}", k.log());
        }
        // The phone's own Contact: over UDP its address; over a stream its listening address, or
        // (once linphone learnt it from received/rport) its connection's.
        let own = match t {
            Transport::Udp => contact.contains(&format!("sip:{ext}@{}", phone.sip)),
            _ => contact.contains(&format!("sip:{ext}@")) && contact.contains(&format!("transport={}", t.param())),
        };
        assert!(own, "the PBX has the phone's own Contact: {contact}");
        phone
    }

    /// [`Self::start_registered`] with the usual set-up of `ext` over `t`.
    async fn registered(&self, ext: &str, t: Transport) -> Linphone {
        self.start_registered(self.setup(ext, t)).await
    }

    /// The customer's side of Kamailio's trunk (127.0.0.1:[`Pbx::trunk`]): a SIPp running
    /// `scenario` against the PBX, echoing the RTP it gets (`-rtp_echo`), so what a phone hears
    /// is what it sent, having gone there and back.
    fn customer(&self, scenario: &str, keys: &[(&str, &str)]) -> Sipp {
        let pbx = self.kamailio();
        let mut s = Sipp::new(scenario, &pbx.addr.to_string()).at(pbx.trunk).args(&["-mp", &free_port().to_string(), "-rtp_echo"]);
        for (k, v) in keys {
            s = s.key(k, v);
        }
        s
    }

    /// The scripted PBX running `scenario` from `port` on 127.0.0.1 toward callgate's UDP
    /// listener, echoing RTP.
    fn scripted_pbx(&self, scenario: &str, port: u16, keys: &[(&str, &str)]) -> Sipp {
        let mut s = Sipp::new(scenario, &self.proxy(Transport::Udp).to_string()).port(port).args(&["-mp", &free_port().to_string(), "-rtp_echo"]);
        for (k, v) in keys {
            s = s.key(k, v);
        }
        s
    }

    /// The finished call (tracker) matching `pred`, waited for (bounded: 10 s).
    async fn finished(&self, pred: impl Fn(&Value) -> bool) -> Value {
        self.gw.finished_call(pred).await
    }

    /// The calls the fake Bitrix24 registered, once `n` of them are finished (bounded: 15 s in
    /// 100 ms steps).
    async fn reported(&self, n: usize) -> Vec<CallState> {
        for _ in 0..150 {
            let calls = self.fake.registered();
            if calls.iter().filter(|c| c.finished.is_some()).count() >= n {
                return calls;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("expected {n} finished calls in Bitrix24, have {:#?}", self.fake.registered());
    }

    /// Every call the tracker knows, open or finished.
    async fn calls(&self) -> Vec<Value> {
        let (status, calls) = self.gw.api(Method::GET, "/api/v1/calls?limit=1000", None).await;
        assert_eq!(status, 200, "{calls}");
        calls.as_array().unwrap().clone()
    }
}

/// The value a scripted registrar logged as `name=value` (`contact=<sip:...> path=<sip:...>`).
fn logged(logs: &str, name: &str) -> String {
    let at = logs.rfind(&format!("{name}=")).unwrap_or_else(|| panic!("{name} logged: {logs}"));
    logs[at + name.len() + 1..].split_whitespace().next().unwrap_or_default().to_owned()
}

/// The audio streams of `phone` that carried sound both ways: at least `min` packets sent and
/// received (20 ms packets: 50 a second).
fn two_way(phone: &Linphone, min: u64) -> Vec<AudioStats> {
    phone.audio().into_iter().filter(|a| a.sent >= min && a.received >= min).collect()
}

/// Asserts `phone` had at least one stream with audio both ways (`min` packets each).
fn assert_two_way(phone: &Linphone, min: u64) {
    assert!(!two_way(phone, min).is_empty(), "{}: audio both ways, at least {min} packets: {:?}\n{}", phone.setup.ext, phone.audio(), phone.log_tail(40));
}

/// Waits until `phone`'s call `id` to the SIPp UAS `far_end` is up, and hands back the SIPp run
/// to wait for later; if that SIPp ends first (it could not bind its port, say), fails with
/// its screen rather than with a timeout.
async fn when_up(phone: &Linphone, id: u32, far_end: SippChild) -> tokio::task::JoinHandle<SippRun> {
    let mut run = tokio::spawn(far_end.wait());
    tokio::select! {
        _ = phone.wait_event(Some(id), "LinphoneCallStreamsRunning") => run,
        ended = &mut run => {
            let r = ended.unwrap();
            panic!("{}: the far end's SIPp ended before the call was up:\n{}\n{}\nphone:\n{}", phone.setup.ext, r.screen, r.errors, phone.log_tail(60));
        }
    }
}

/// `call` was answered and talked by `ext` only, with `user` responsible.
fn answered_by(call: &Value, ext: &str, user: u64) {
    assert_eq!((call["outcome"].as_str(), call["status_code"].as_str()), (Some("answered"), Some("200")), "{call:#}");
    assert_eq!((call["first_talker"]["extension"].as_str(), call["last_talker"]["extension"].as_str()), (Some(ext), Some(ext)), "{call:#}");
    assert_eq!(call["responsible"], user, "{call:#}");
}

/// The legs of `call` as (extension, end reason).
fn legs(call: &Value) -> Vec<(String, String)> {
    call["legs"].as_array().unwrap().iter().map(|l| (l["extension"].as_str().unwrap_or("none").to_owned(), l["end_reason"]["reason"].as_str().unwrap_or("none").to_owned())).collect()
}

/// The extension of `call`'s `which` talker (`first_talker`, `last_talker`).
fn talker(call: &Value, which: &str) -> String {
    call[which]["extension"].as_str().unwrap_or("none").to_owned()
}

/// The Bitrix24 call finished by `user` with status 200 and at least `min_secs` talked.
fn finished_for(reported: &[CallState], user: u64, min_secs: u64) -> &CallState {
    let call = reported.iter().find(|c| c.finished.is_some()).unwrap_or_else(|| panic!("a finished call: {reported:#?}"));
    let finish = call.finished.as_ref().unwrap();
    assert_eq!((finish.user_id, finish.call_failed_code.as_str()), (user, "200"), "{call:#?}");
    assert!(finish.duration >= min_secs, "at least {min_secs} s talked: {call:#?}");
    call
}

// ---- Registration.

/// linphone registers `sip:101@pbx.office.example` through callgate, its outbound proxy: the
/// PBX challenges it (401), the retry with the PBX's password is accepted, and the PBX stores
/// the phone's own Contact with callgate's Path for the phone's transport. A registration is
/// no call.
async fn registers_through_callgate(t: Transport) {
    let o = Office::open().await;
    let _phone = o.registered("101", t).await;
    let pbx = o.kamailio();
    assert!(pbx.wait_log(&["PBX got REGISTER", "(udp)"], Duration::from_secs(1)).await.is_some(), "the PBX got the REGISTER over UDP:\n{}", pbx.log());
    assert!(o.calls().await.is_empty(), "a registration is no call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linphone_registers_in_the_pbx_domain_through_callgate_over_udp() {
    registers_through_callgate(Transport::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linphone_registers_in_the_pbx_domain_through_callgate_over_tcp() {
    registers_through_callgate(Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linphone_registers_in_the_pbx_domain_through_callgate_over_tls() {
    registers_through_callgate(Transport::Tls).await;
}

// ---- An incoming call along the Path.

/// The customer calls 101 at the PBX; the PBX sends the call to 101's registered Contact along
/// the Path callgate put in the registration; linphone rings, is answered, and the audio goes
/// both ways until the customer hangs up. callgate tracks one answered incoming call talked by
/// 101, and Bitrix24 gets it for user 11: the card shown to 11 while 101 rang, the call
/// finished by 11 with its duration.
async fn takes_a_call_along_the_path(t: Transport) {
    let o = Office::open().await;
    let phone = o.registered("101", t).await;
    let xcid = format!("lp-in-{t:?}");
    let customer = o.customer("pbx-answered.xml", &[("ext", "101"), ("caller", CUSTOMER), ("xcid", &xcid), ("hold_ms", "3000")]).spawn();
    let id = phone.incoming().await;
    phone.answer(id).await;
    customer.wait().await.assert_all_ok(1);
    phone.wait_event(Some(id), "LinphoneCallReleased").await;
    assert!(o.kamailio().log().contains("PBX calls 101"), "the PBX looked 101 up:\n{}", o.kamailio().log());
    assert_two_way(&phone, 50);

    let call = o.finished(|c| c["correlation"] == xcid.as_str()).await;
    assert_eq!((call["kind"].as_str(), call["customer"].as_str()), (Some("incoming"), Some(CUSTOMER)), "{call:#}");
    answered_by(&call, "101", 11);
    let reported = o.reported(1).await;
    assert_eq!(reported.len(), 1, "{reported:#?}");
    let b24 = finished_for(&reported, 11, 2);
    assert_eq!((b24.phone_number.as_str(), b24.call_type), (CUSTOMER, 2), "{b24:#?}");
    assert_eq!(b24.shows, [vec![11]], "the card was shown to 11 while 101 rang: {b24:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linphone_takes_a_call_the_pbx_routes_along_the_path_over_udp() {
    takes_a_call_along_the_path(Transport::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linphone_takes_a_call_the_pbx_routes_along_the_path_over_tcp() {
    takes_a_call_along_the_path(Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linphone_takes_a_call_the_pbx_routes_along_the_path_over_tls() {
    takes_a_call_along_the_path(Transport::Tls).await;
}

// ---- An outgoing call the PBX challenges.

/// linphone calls a customer: callgate passes the INVITE to the PBX, which challenges it with
/// 407 (as Asterisk and FreeSWITCH do by default); linphone sends it again with the PBX's
/// credentials, the PBX puts it through to the customer, they talk about 3 s with audio both
/// ways and linphone hangs up. That is one answered outgoing call with its real duration, for
/// user 11, in callgate and in Bitrix24: the 407 is no failed call.
async fn calls_out_through_the_challenge(t: Transport) {
    let o = Office::open().await;
    let phone = o.registered("101", t).await;
    let customer = o.customer("pbx-uas-answer.xml", &[]).spawn();
    let id = phone.call(CUSTOMER).await;
    let customer = when_up(&phone, id, customer).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    phone.hang_up(id).await;
    customer.await.unwrap().assert_all_ok(1);
    assert!(phone.log().contains("SIP/2.0 407"), "the PBX challenged the INVITE:\n{}", phone.log_tail(60));
    assert_two_way(&phone, 50);

    let call = o.finished(|c| c["kind"] == "outgoing").await;
    assert_eq!(call["customer"], CUSTOMER, "{call:#}");
    answered_by(&call, "101", 11);
    assert!((2..=6).contains(&call["talk_seconds"].as_u64().unwrap_or(0)), "about 3 s talked: {call:#}");
    assert_eq!(o.calls().await.len(), 1, "the challenge is no call of its own");
    let reported = o.reported(1).await;
    let b24 = finished_for(&reported, 11, 2);
    assert_eq!((b24.phone_number.as_str(), b24.call_type), (CUSTOMER, 1), "{b24:#?}");
    assert!(b24.finished.as_ref().unwrap().duration <= 6, "about 3 s talked: {b24:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linphone_calls_out_through_the_pbx_challenge_over_udp() {
    calls_out_through_the_challenge(Transport::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linphone_calls_out_through_the_pbx_challenge_over_tcp() {
    calls_out_through_the_challenge(Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linphone_calls_out_through_the_pbx_challenge_over_tls() {
    calls_out_through_the_challenge(Transport::Tls).await;
}

// ---- Hold and resume.

/// 101 answers the customer, puts the call on hold (re-INVITE, a=sendonly) and takes it off
/// hold (a=sendrecv); the customer saw both offers; the customer hangs up. One conversation,
/// one hold with its start and end on 101's leg, audio both ways after the resume.
async fn holds_and_resumes(t: Transport) {
    let o = Office::open().await;
    let phone = o.registered("101", t).await;
    let xcid = format!("lp-hold-{t:?}");
    let customer = o.customer("customer-held.xml", &[("ext", "101"), ("caller", CUSTOMER), ("xcid", &xcid)]).spawn();
    let id = phone.incoming().await;
    phone.answer(id).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    phone.hold(id).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    phone.resume(id).await;
    let run = customer.wait().await; // hangs up 3 s after the last re-INVITE
    run.assert_all_ok(1);
    phone.wait_event(Some(id), "LinphoneCallReleased").await;
    assert!(run.logs.contains("re-INVITE offer a=sendonly answered a=recvonly") && run.logs.contains("answered a=sendrecv"), "the customer was held and resumed: {}", run.logs);
    let through_pbx = o.kamailio().log().matches(&format!("PBX got INVITE sip:{CUSTOMER}@")).count();
    assert_eq!(through_pbx, 2, "both re-INVITEs went to the PBX, which record-routed the call:\n{}", o.kamailio().log());
    assert_two_way(&phone, 50);

    let call = o.finished(|c| c["correlation"] == xcid.as_str()).await;
    answered_by(&call, "101", 11);
    assert_eq!(call["conversations"].as_array().unwrap().len(), 1, "{call:#}");
    let holds = call["legs"][0]["holds"].as_array().unwrap();
    assert_eq!(holds.len(), 1, "{call:#}");
    assert!(!holds[0]["from"].is_null() && !holds[0]["to"].is_null(), "the hold ended: {call:#}");
    finished_for(&o.reported(1).await, 11, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linphone_holds_and_resumes_a_call_over_udp() {
    holds_and_resumes(Transport::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linphone_holds_and_resumes_a_call_over_tcp() {
    holds_and_resumes(Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linphone_holds_and_resumes_a_call_over_tls() {
    holds_and_resumes(Transport::Tls).await;
}

// ---- Transfers (the scripted PBX: it handles the REFER and places the new leg).

/// The PBX's call for 101 (`pbx-refer-accepted.xml`: it accepts the REFER and reports the
/// transfer done; linphone then hangs up) is answered; 101 transfers it blind to 102 (`Refer-To:
/// sip:102@pbx.office.example`); the PBX calls 102 with the same correlation and `Referred-By:
/// 101`; 102 answers and talks until the PBX hangs up. One answered call: first talker 101, last
/// talker 102, 101's leg transferred; with `assign_responsible_to = last` it is 12's, in callgate
/// and in Bitrix24.
async fn blind_transfer(t: Transport) {
    let o = Office::scripted().await;
    o.settings(|s| s["incoming"]["assign_responsible_to"] = json!("last")).await;
    let (a, b) = (o.registered("101", t).await, o.registered("102", t).await);
    let xcid = format!("lp-blind-{t:?}");
    let pbx = o.scripted_port();
    let leg_a = o.scripted_pbx("pbx-refer-accepted.xml", pbx, &[("ext", "101"), ("caller", CUSTOMER), ("xcid", &xcid)]).spawn();
    let id = a.incoming().await;
    a.answer(id).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    a.transfer(id, "102").await;
    let run = leg_a.wait().await;
    run.assert_all_ok(1);
    assert!(run.logs.contains("Refer-To: <sip:102@pbx.office.example>") || run.logs.contains("Refer-To: sip:102@pbx.office.example"), "{}", run.logs);
    a.wait_event(Some(id), "LinphoneCallReleased").await;

    let leg_b = o.scripted_pbx("pbx-transferred-leg.xml", pbx, &[("ext", "102"), ("caller", CUSTOMER), ("xcid", &xcid), ("referrer", "101"), ("hold_ms", "2000")]).spawn();
    let id_b = b.incoming().await;
    b.answer(id_b).await;
    leg_b.wait().await.assert_all_ok(1);
    b.wait_event(Some(id_b), "LinphoneCallReleased").await;
    assert_two_way(&a, 25);
    assert_two_way(&b, 50);

    let call = o.finished(|c| c["correlation"] == xcid.as_str()).await;
    assert_eq!(call["outcome"], "answered", "{call:#}");
    assert_eq!((talker(&call, "first_talker"), talker(&call, "last_talker")), ("101".into(), "102".into()), "{call:#}");
    assert_eq!(legs(&call), [("101".to_owned(), "transferred".to_owned()), ("102".to_owned(), "bye".to_owned())], "{call:#}");
    assert_eq!(call["responsible"], 12, "{call:#}");
    finished_for(&o.reported(1).await, 12, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linphone_transfers_a_call_blind_over_udp() {
    blind_transfer(Transport::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linphone_transfers_a_call_blind_over_tcp() {
    blind_transfer(Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linphone_transfers_a_call_blind_over_tls() {
    blind_transfer(Transport::Tls).await;
}

/// Attended transfer, as a receptionist does it: 101 answers the customer (the PBX's leg,
/// `pbx-refer-accepted.xml`), holds it, calls 102 (through callgate to the PBX, which answers
/// and, as the PBX's other leg `pbx-answered.xml`, rings 102, who answers), then transfers the
/// customer to that call (REFER with `Replaces` naming the consultation). The PBX bridges the
/// customer to 102, who talks until the PBX hangs up. One answered customer call, 101 then 102,
/// 101's leg transferred, the consultation merged into it (no internal call of its own); with
/// `assign_responsible_to = last` it is 12's, in callgate and in Bitrix24.
async fn attended_transfer(t: Transport) {
    let o = Office::scripted().await;
    o.settings(|s| s["incoming"]["assign_responsible_to"] = json!("last")).await;
    let (a, b) = (o.registered("101", t).await, o.registered("102", t).await);
    let xcid = format!("lp-att-{t:?}");
    let customer = o.scripted_pbx("pbx-refer-accepted.xml", free_port(), &[("ext", "101"), ("caller", CUSTOMER), ("xcid", &xcid)]).spawn();
    let with_customer = a.incoming().await;
    a.answer(with_customer).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.hold(with_customer).await;

    // The consultation: 101 -> PBX (which answers) and PBX -> 102 (who answers).
    let pbx_answers = o.scripted_pbx("pbx-uas-answer.xml", o.scripted_port(), &[]).spawn();
    let consult = a.call("102").await;
    let pbx_answers = when_up(&a, consult, pbx_answers).await;
    let to_b = o.scripted_pbx("pbx-answered.xml", free_port(), &[("ext", "102"), ("caller", "101"), ("xcid", &format!("{xcid}-consult")), ("hold_ms", "5000")]).spawn();
    let mut to_b = tokio::spawn(to_b.wait());
    // Should the PBX's call to 102 end before 102 rings, its SIPp says why.
    let with_a = tokio::select! {
        id = b.incoming() => id,
        run = &mut to_b => {
            let run = run.unwrap();
            panic!("the PBX's call to 102 ended before it rang:\n{}\n{}", run.screen, run.errors)
        }
    };
    b.answer(with_a).await;
    tokio::time::sleep(Duration::from_millis(800)).await;

    a.transfer_to_call(with_customer, consult).await;
    let run = customer.wait().await;
    run.assert_all_ok(1);
    assert!(run.logs.contains("Replaces="), "an attended transfer's Refer-To names the consultation: {}", run.logs);
    a.wait_event(Some(with_customer), "LinphoneCallReleased").await;
    if a.state(consult).await.is_some_and(|s| s != "LinphoneCallReleased" && s != "LinphoneCallEnd") {
        a.hang_up(consult).await;
    }
    pbx_answers.await.unwrap().assert_all_ok(1);
    to_b.await.unwrap().assert_all_ok(1);
    b.wait_event(Some(with_a), "LinphoneCallReleased").await;
    assert_two_way(&b, 100);

    let call = o.finished(|c| c["correlation"] == xcid.as_str()).await;
    assert_eq!(call["outcome"], "answered", "{call:#}");
    assert_eq!((talker(&call, "first_talker"), talker(&call, "last_talker")), ("101".into(), "102".into()), "{call:#}");
    assert!(legs(&call).contains(&("101".to_owned(), "transferred".to_owned())), "{call:#}");
    assert_eq!(call["responsible"], 12, "{call:#}");
    let calls = o.calls().await;
    assert!(!calls.iter().any(|c| c["kind"] == "internal"), "the consultation was merged into the customer call: {calls:#?}");
    let reported = o.reported(1).await;
    let customer_call = reported.iter().find(|c| c.phone_number == CUSTOMER).unwrap_or_else(|| panic!("{reported:#?}"));
    finished_for(std::slice::from_ref(customer_call), 12, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linphone_transfers_a_call_attended_over_udp() {
    attended_transfer(Transport::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linphone_transfers_a_call_attended_over_tcp() {
    attended_transfer(Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linphone_transfers_a_call_attended_over_tls() {
    attended_transfer(Transport::Tls).await;
}

// ---- A session timer.

/// linphone asks for a 20 s session timer (RFC 4028, refresher = itself) and calls a customer
/// through the PBX (`pbx-uas-refreshed.xml`, which answers every refresh); the call lasts 23 s,
/// so linphone refreshes the session twice with a re-INVITE offering a=sendrecv again, then hangs
/// up. The refreshes are no holds: one conversation, no hold on the leg, about 23 s talked in
/// callgate and in Bitrix24. (20 s keeps the story short; linphone refreshes at half of any
/// interval, so a phone's usual 1800 s would take 15 minutes.)
async fn outlives_the_session_timer(t: Transport) {
    let o = Office::scripted().await;
    let mut setup = o.setup("101", t);
    setup.session_expires = Some(20);
    let phone = o.start_registered(setup).await;
    let pbx = o.scripted_pbx("pbx-uas-refreshed.xml", o.scripted_port(), &[]).args(&["-recv_timeout", "15000", "-timeout", "60s"]).spawn();
    let id = phone.call(CUSTOMER).await;
    let pbx = when_up(&phone, id, pbx).await;
    tokio::time::sleep(Duration::from_secs(23)).await;
    assert_eq!(phone.state(id).await.as_deref(), Some("LinphoneCallStreamsRunning"), "the call is still up");
    phone.hang_up(id).await;
    let run = pbx.await.unwrap();
    run.assert_all_ok(1);
    let refreshes = run.logs.matches("refresh ").count();
    assert!(refreshes >= 2, "linphone refreshed the session twice: {}", run.logs);
    assert!(!run.logs.contains("sendonly") && !run.logs.contains("inactive"), "no refresh offered a hold: {}", run.logs);
    assert_two_way(&phone, 500);

    let call = o.finished(|c| c["kind"] == "outgoing").await;
    answered_by(&call, "101", 11);
    assert_eq!(call["conversations"].as_array().unwrap().len(), 1, "{call:#}");
    assert_eq!(call["legs"][0]["holds"], json!([]), "a session refresh is no hold: {call:#}");
    assert!(call["talk_seconds"].as_u64().unwrap_or(0) >= 20, "{call:#}");
    finished_for(&o.reported(1).await, 11, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linphone_outlives_the_session_timer_without_a_false_hold_over_udp() {
    outlives_the_session_timer(Transport::Udp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linphone_outlives_the_session_timer_without_a_false_hold_over_tcp() {
    outlives_the_session_timer(Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linphone_outlives_the_session_timer_without_a_false_hold_over_tls() {
    outlives_the_session_timer(Transport::Tls).await;
}

// ---- Behind a NAT.

/// A phone behind a NAT, over TCP or TLS: linphone's connection to callgate comes from
/// 127.0.0.1 (an ephemeral port) while its Via and Contact name 127.0.0.2 and its listening
/// port, an address the connection is not from. The PBX stores that Contact with callgate's
/// Path; the customer's call along the Path reaches the phone over the connection it registered
/// on (no new connection to the Contact), is answered with audio both ways, and is reported for
/// 11. (Over UDP linphone cannot be put behind a NAT on loopback: it sends in-dialog requests
/// straight to callgate's Record-Route, so a relay in front of it would have to rewrite SIP.)
async fn takes_a_call_behind_a_nat(t: Transport) {
    let o = Office::open().await;
    let phone = o.registered("101", t).await;
    let (_, path) = o.kamailio().registration("101").await.unwrap();
    assert!(path.contains(".t7f000001") || path.contains(".s7f000001"), "the Path's flow token names the connection from 127.0.0.1: {path}");
    let registered_on = channel_of(&phone.log(), "SIP/2.0 200 OK", "REGISTER").expect("the REGISTER's 200 in the log");

    let xcid = format!("lp-nat-{t:?}");
    let customer = o.customer("pbx-answered.xml", &[("ext", "101"), ("caller", CUSTOMER), ("xcid", &xcid), ("hold_ms", "2000")]).spawn();
    let id = phone.incoming().await;
    phone.answer(id).await;
    customer.wait().await.assert_all_ok(1);
    phone.wait_event(Some(id), "LinphoneCallReleased").await;
    let invited_on = channel_of(&phone.log(), "INVITE sip:101@", "INVITE").expect("the INVITE in the log");
    assert_eq!(invited_on, registered_on, "the INVITE came over the registration's connection:\n{}", phone.log_tail(200));
    assert_two_way(&phone, 50);
    answered_by(&o.finished(|c| c["correlation"] == xcid.as_str()).await, "101", 11);
    finished_for(&o.reported(1).await, 11, 1);
}

/// The belle-sip channel (`channel [0x...]`) on which linphone received the first message whose
/// start line begins with `start` and whose CSeq method is `method`.
fn channel_of(log: &str, start: &str, method: &str) -> Option<String> {
    let lines: Vec<&str> = log.lines().collect();
    lines.iter().enumerate().find_map(|(i, l)| {
        let channel = l.split("channel [").nth(1)?.split(']').next()?;
        if !l.contains("]: received [") {
            return None;
        }
        let message = lines.get(i + 1..(i + 15).min(lines.len()))?;
        let is_it = message.first()?.starts_with(start) && message.iter().any(|m| m.starts_with("CSeq:") && m.ends_with(method));
        is_it.then(|| channel.to_owned())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linphone_behind_a_nat_takes_a_call_over_its_tcp_connection() {
    takes_a_call_behind_a_nat(Transport::Tcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linphone_behind_a_nat_takes_a_call_over_its_tls_connection() {
    takes_a_call_behind_a_nat(Transport::Tls).await;
}
