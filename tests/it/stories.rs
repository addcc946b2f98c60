//! Stories of agents that callgate must tell apart from everyone else, end to end with SIPp on
//! the test topology (`common`: the PBX on 127.0.0.1, phones on 127.0.0.2..=4, the attacker on
//! 127.0.0.5): a phone registering with the PBX through callgate, whose PBX challenges it; an IP
//! phone with credentials issued by callgate; two portals on one PBX address, both with
//! extension 101. Each asserts what the tracker (`GET /api/v1/calls`) and, where a portal has a
//! Bitrix24, what each fake Bitrix24 got.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::sipp::{free_addr, free_port, Sipp, SippChild, SippRun};
use crate::common::{phone_ip, TestGateway, ATTACKER_IP, PBX_IP};
use crate::fake_b24::{CallState, FakeB24};
use crate::proxy::{Office, CUSTOMER};

/// The portal's host, the domain phones register in and callgate's realm.
const DOMAIN: &str = "office.bitrix24.ru";
/// The PBX's own digest realm and its password for extension 101.
const PBX_REALM: &str = "pbx.office.example";
const PBX_PASSWORD: &str = "101-pbx-secret";

/// The PBX's call for `ext` must be refused with `status` by callgate itself; it comes from the
/// PBX's own port (nothing else listens there meanwhile).
async fn pbx_call_refused(o: &Office, ext: &str, status: &str) {
    Sipp::new("uac-status.xml", &o.sip).port(o.pbx).service(ext).rows(&[&[CUSTOMER, status]]).run().await.assert_all_ok(1);
}

/// The PBX as 101's registrar, challenging the next REGISTER and granting `granted` seconds.
fn registrar(o: &Office, granted: &str) -> SippChild {
    Sipp::new("pbx-registrar.xml", &o.sip).port(o.pbx).key("user", "101").key("password", PBX_PASSWORD).key("realm", PBX_REALM).key("granted", granted).spawn()
}

/// `phone` registers 101 through callgate (asking `expires`), the PBX challenges it and then
/// grants `granted` seconds. The PBX's run, whose log names the Contact and Path it was given.
async fn register(o: &Office, phone: SocketAddr, expires: &str, granted: &str) -> SippRun {
    let pbx = registrar(o, granted);
    let run = Sipp::new("phone-register.xml", &o.sip).at(phone).key("ext", "101").key("domain", DOMAIN).key("expires", expires).key("granted", granted);
    let run = run.args(&["-au", "101", "-ap", PBX_PASSWORD, "-auth_uri", DOMAIN]).run().await;
    let pbx = pbx.wait().await;
    assert!(pbx.successful == 1 && pbx.failed == 0, "PBX registrar:\n{}\n{}\nphone:\n{}", pbx.screen, pbx.errors, run.screen);
    run.assert_all_ok(1);
    pbx
}

/// The digest-uri of a phone's call to the customer through callgate: its Request-URI without
/// `sip:` (SIPp's default is callgate's address, which no real phone sends).
fn dialled(o: &Office) -> String {
    format!("{CUSTOMER}@{}", o.sip)
}

/// The `name=value` the PBX registrar logged (`contact=<sip:...> path=<sip:...;lr>`).
fn logged<'a>(run: &'a SippRun, name: &str) -> &'a str {
    let at = run.logs.rfind(&format!("{name}=")).unwrap_or_else(|| panic!("{name} logged: {}", run.logs));
    run.logs[at + name.len() + 1..].split_whitespace().next().unwrap_or_default()
}

/// The PBX calling a phone with `scenario` (`keys` added to the usual ones); both must finish.
async fn pbx_calls(o: &Office, phone: SocketAddr, scenario: &str, xcid: &str, keys: &[(&str, &str)]) {
    let answering = Sipp::new("agent-answer.xml", &o.sip).at(phone).key("ext", "101").key("ring_ms", "100").spawn();
    let mut pbx = Sipp::new(scenario, &o.sip).port(o.pbx).key("ext", "101").key("caller", CUSTOMER).key("xcid", xcid).key("hold_ms", "300");
    for (k, v) in keys {
        pbx = pbx.key(k, v);
    }
    let pbx = pbx.run().await;
    let answering = answering.wait().await;
    assert!(answering.successful == 1 && answering.failed == 0, "phone:\n{}\n{}\nPBX:\n{}\n{}", answering.screen, answering.errors, pbx.screen, pbx.errors);
    pbx.assert_all_ok(1);
}

/// Every call the tracker knows, open or finished.
async fn all_calls(gw: &TestGateway) -> Vec<Value> {
    let (status, calls) = gw.api(Method::GET, "/api/v1/calls?limit=1000", None).await;
    assert_eq!(status, 200, "{calls}");
    calls.as_array().unwrap().clone()
}

/// `call` was answered and talked by `ext` only, with `user` responsible.
fn answered_by(call: &Value, ext: &str, user: u64) {
    assert_eq!((call["outcome"].as_str(), call["status_code"].as_str()), (Some("answered"), Some("200")), "{call:#}");
    assert_eq!((call["first_talker"]["extension"].as_str(), call["last_talker"]["extension"].as_str()), (Some(ext), Some(ext)), "{call:#}");
    assert_eq!(call["responsible"], user, "{call:#}");
}

/// A phone with no static contact registers with the PBX through callgate (the PBX challenges it
/// with 401 and checks its digest; a wrong password from elsewhere gets 403 and no binding),
/// then calls out and takes the PBX's calls, both `INVITE sip:101@callgate` and the RFC 3327 way
/// along the Path; once it unregisters, it is unreachable again. Only the registration made it
/// reachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_the_pbx_challenges_registers_through_callgate_then_calls_out_and_takes_calls() {
    let o = Office::open("udp").await;
    o.set_contact("101", None).await;
    let phone = o.phones["101"]; // 127.0.0.2, which no mapping names any more

    // Not registered, no static contact: the PBX's call gets 480 from callgate, and is no call.
    pbx_call_refused(&o, "101", "480").await;
    assert!(all_calls(&o.gw).await.is_empty(), "a refused INVITE leaves no call behind");

    // Someone on another address who knows the extension but not the PBX's password: the PBX
    // refuses the REGISTER (403), so there is no binding and 101 stays unreachable.
    let pbx = registrar(&o, "600");
    let intruder = Sipp::new("phone-register-refused.xml", &o.sip).at(free_addr(ATTACKER_IP)).key("ext", "101").key("domain", DOMAIN).key("expires", "3600");
    intruder.args(&["-au", "101", "-ap", "a-guess", "-auth_uri", DOMAIN]).run().await.assert_all_ok(1);
    let pbx = pbx.wait().await;
    assert!(pbx.successful == 1 && pbx.logs.contains("refused"), "the PBX refused it:\n{}\n{}", pbx.screen, pbx.logs);
    pbx_call_refused(&o, "101", "480").await;

    let pbx = register(&o, phone, "3600", "600").await;
    let contact = logged(&pbx, "contact").trim_start_matches('<').trim_end_matches('>').to_owned();
    let path = logged(&pbx, "path").to_owned();
    assert_eq!(contact, format!("sip:101@{phone}"), "the PBX got the phone's own Contact");

    // It calls a customer through callgate; the PBX answers.
    let pbx = o.pbx_answers("pbx-uas-answer.xml");
    let dial = Sipp::new("agent-dial.xml", &o.sip).at(phone).key("ext", "101").key("dial", CUSTOMER).key("talk_ms", "300").run().await;
    let pbx = pbx.wait().await;
    assert!(pbx.successful == 1 && pbx.failed == 0, "PBX:\n{}\n{}\nphone:\n{}", pbx.screen, pbx.errors, dial.screen);
    dial.assert_all_ok(1);
    let out = o.finished_where(|c| c["kind"] == "outgoing").await;
    assert_eq!((out["customer"].as_str(), out["outcome"].as_str(), out["status_code"].as_str()), (Some(CUSTOMER), Some("answered"), Some("200")), "{out:#}");
    assert_eq!(out["responsible"], 11, "{out:#}");

    // The PBX calls 101 at callgate: callgate finds the registration.
    pbx_calls(&o, phone, "pbx-answered.xml", "reg-in-1", &[]).await;
    answered_by(&o.finished("reg-in-1").await, "101", 11);
    // The PBX calls the registered Contact along the Path callgate put in the REGISTER.
    pbx_calls(&o, phone, "pbx-answered-path.xml", "reg-in-2", &[("contact", &contact), ("path", &path)]).await;
    answered_by(&o.finished("reg-in-2").await, "101", 11);
    let calls = all_calls(&o.gw).await;
    assert_eq!(calls.len(), 3, "one outgoing and two incoming calls, the registrations are no calls: {calls:#?}");

    // Unregistered (Expires 0, the PBX grants 0): unreachable again.
    register(&o, phone, "0", "0").await;
    pbx_call_refused(&o, "101", "480").await;
}

/// The PBX authenticates the phones' calls too (as Asterisk and most PBXs do): it answers a
/// phone's INVITE with a digest challenge, the phone sends it again (same Call-ID, CSeq 2) with
/// its credentials, and the PBX answers. That is one answered outgoing call: the challenge is no
/// call of its own, and the conversation after it is not lost. Asterisk and FreeSWITCH challenge
/// with 407 (Proxy-Authenticate), others with 401; both, and what reaches Bitrix24.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outgoing_call_the_pbx_challenges_is_one_answered_call() {
    for challenge in ["407", "401"] {
        let fake = FakeB24::spawn().await;
        let o = crate::crm::office(&fake).await;
        let pbx = Sipp::new("pbx-uas-challenge.xml", &o.sip).port(o.pbx).key("user", "101").key("password", PBX_PASSWORD).key("realm", PBX_REALM).key("challenge", challenge).spawn();
        let dial = Sipp::new("agent-dial-auth.xml", &o.sip).at(o.phones["101"]).key("ext", "101").key("domain", DOMAIN).key("dial", CUSTOMER).key("talk_ms", "1200");
        let dial = dial.args(&["-au", "101", "-ap", PBX_PASSWORD, "-auth_uri", &dialled(&o)]).run().await;
        let pbx = pbx.wait().await;
        assert!(pbx.successful == 1 && pbx.failed == 0, "{challenge}: PBX:\n{}\n{}\nphone:\n{}", pbx.screen, pbx.errors, dial.screen);
        dial.assert_all_ok(1);
        answered_outgoing_once(&o, &fake, challenge).await;
    }
}

/// The one outgoing call of `o`: answered, talked by 101, reported once to `fake` as answered
/// with its talk time (the phone talks 1.2 s: DURATION is at least 1).
async fn answered_outgoing_once(o: &Office, fake: &FakeB24, story: &str) {
    let out = o.finished_where(|c| c["kind"] == "outgoing").await;
    assert_eq!((out["outcome"].as_str(), out["status_code"].as_str()), (Some("answered"), Some("200")), "{story}: {out:#}");
    assert_eq!((out["first_talker"]["extension"].as_str(), out["responsible"].as_u64()), (Some("101"), Some(11)), "{story}: {out:#}");
    assert_eq!(out["legs"].as_array().map(Vec::len), Some(1), "{story}: one leg, from the first INVITE to the BYE: {out:#}");
    assert!(out["talk_seconds"].as_u64() >= Some(1), "{story}: {out:#}");
    let calls = all_calls(&o.gw).await;
    assert_eq!(calls.len(), 1, "{story}: the refused INVITE is no call of its own: {calls:#?}");
    let reported = crate::crm::finished_calls(fake, 1).await;
    assert_eq!(reported.len(), 1, "{story}: {reported:#?}");
    let finish = reported[0].finished.as_ref().expect("finished");
    assert_eq!((finish.status_code.as_deref(), finish.duration), (Some("200"), out["talk_seconds"].as_u64().unwrap()), "{story}: {finish:#?}");
}

/// A phone asks for a session timer shorter than the PBX allows (RFC 4028): the PBX answers 422
/// Session Interval Too Small with its Min-SE, the phone sends the INVITE again on the same
/// Call-ID with that interval, and the PBX answers. One answered call, like a challenge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outgoing_call_retried_after_422_session_interval_too_small_is_one_answered_call() {
    let fake = FakeB24::spawn().await;
    let o = crate::crm::office(&fake).await;
    let pbx = Sipp::new("pbx-uas-interval-too-small.xml", &o.sip).port(o.pbx).spawn();
    let dial = Sipp::new("agent-dial-session-timer.xml", &o.sip).at(o.phones["101"]).key("ext", "101").key("dial", CUSTOMER).key("talk_ms", "1200").run().await;
    let pbx = pbx.wait().await;
    assert!(pbx.successful == 1 && pbx.failed == 0, "PBX:\n{}\n{}\nphone:\n{}", pbx.screen, pbx.errors, dial.screen);
    dial.assert_all_ok(1);
    answered_outgoing_once(&o, &fake, "422").await;
}

// ---- Stories that need the edge trust model (the proxy admits only the PBX and authenticated
// agents); written to assert the right behaviour, ignored until that model lands.

/// Extension 102's phone (127.0.0.3) neither registers nor has a static contact: it holds
/// credentials that callgate issued. Its INVITE is challenged with 407 by callgate and goes to the
/// PBX once it answers the challenge. Someone who knows the extension but not the password is
/// challenged again, never reaches the PBX, and leaves no call behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ip_phone_with_credentials_from_callgate_answers_its_challenge_and_calls_out() {
    let o = Office::open("udp").await;
    o.set_contact("102", None).await;
    let (status, creds) = o.gw.api(Method::POST, &format!("/api/v1/portals/{}/agents/102/credentials", o.portal), None).await;
    assert_eq!(status, 201, "credentials for an IP phone: {creds}");
    assert_eq!((creds["username"].as_str(), creds["realm"].as_str()), (Some("102"), Some(DOMAIN)), "{creds}");
    let password = creds["password"].as_str().unwrap().to_owned();
    // The PBX is ready for one call: if the attacker's got through, the attacker's scenario
    // would get its 200 and fail.
    let pbx = o.pbx_answers("pbx-uas-answer.xml");
    let dial = |at: SocketAddr, scenario: &str, password: &str| {
        let s = Sipp::new(scenario, &o.sip).at(at).key("ext", "102").key("domain", DOMAIN).key("dial", CUSTOMER).key("talk_ms", "300");
        s.args(&["-au", "102", "-ap", password, "-auth_uri", &dialled(&o)])
    };

    dial(free_addr(ATTACKER_IP), "agent-dial-auth-refused.xml", "not-the-password").run().await.assert_all_ok(1);
    assert!(all_calls(&o.gw).await.is_empty(), "a refused INVITE leaves no call behind");

    dial(free_addr(phone_ip("102")), "agent-dial-auth.xml", &password).run().await.assert_all_ok(1);
    let pbx = pbx.wait().await;
    assert!(pbx.successful == 1 && pbx.failed == 0, "PBX:\n{}\n{}", pbx.screen, pbx.errors);
    let out = o.finished_where(|c| c["kind"] == "outgoing").await;
    assert_eq!((out["customer"].as_str(), out["outcome"].as_str()), (Some(CUSTOMER), Some("answered")), "{out:#}");
    assert_eq!(out["responsible"], 12, "{out:#}");
    assert_eq!(all_calls(&o.gw).await.len(), 1);
}

/// One portal of two sharing a PBX address: its own Bitrix24, line and phone for extension 101.
struct Tenant {
    portal: i64,
    fake: FakeB24,
    line: &'static str,
    phone: SocketAddr,
}

/// A gateway with two active portals on one PBX (127.0.0.1:`pbx`), each mapping 101 (user 11)
/// to its own phone (127.0.0.2 and 127.0.0.3) and owning one line.
async fn two_tenants() -> (TestGateway, u16, [Tenant; 2]) {
    let dir = tempfile::tempdir().unwrap();
    let mut gw = TestGateway::spawn_on(dir.path(), |cfg| {
        cfg.calls.linger = Duration::from_millis(300);
        cfg.crm.show_hide_window = Duration::from_millis(100);
    })
    .await;
    gw.keep_dir(dir);
    let pbx = free_port();
    let mut tenants = Vec::new();
    for (domain, line, phone) in [("a.bitrix24.ru", "74951110001", "127.0.0.2"), ("b.bitrix24.ru", "74951110002", "127.0.0.3")] {
        let fake = FakeB24::spawn().await;
        let (status, body) = gw.api(Method::POST, "/api/v1/portals", Some(json!({ "domain": domain, "auth": { "webhook_url": fake.webhook_url() } }))).await;
        assert_eq!(status, 201, "{body}");
        let portal = body["id"].as_i64().unwrap();
        let settings = json!({ "active": true, "pbx_host": format!("{PBX_IP}:{pbx}"), "trusted_pbx": [PBX_IP.to_string()],
                               "incoming": { "default_responsible": 1 }, "outgoing": { "default_responsible": 1 } });
        let (status, body) = gw.api(Method::PUT, &format!("/api/v1/portals/{portal}/settings"), Some(settings)).await;
        assert_eq!(status, 200, "{body}");
        let phone = free_addr(phone.parse().unwrap());
        let m = json!({ "user_id": 11, "extension": "101", "use_for_personal_manager": true, "contact": format!("sip:101@{phone}") });
        let (status, body) = gw.api(Method::POST, &format!("/api/v1/portals/{portal}/mappings"), Some(m)).await;
        assert_eq!(status, 201, "{body}");
        let (status, body) = gw.api(Method::POST, &format!("/api/v1/portals/{portal}/lines"), Some(json!({ "number": line }))).await;
        assert_eq!(status, 201, "{body}");
        tenants.push(Tenant { portal, fake, line, phone });
    }
    let [a, b]: [Tenant; 2] = tenants.try_into().ok().unwrap();
    (gw, pbx, [a, b])
}

/// The calls `fake` registered, once `n` of them are finished (bounded: 30 s in 100 ms steps).
async fn reported(fake: &FakeB24, n: usize) -> Vec<CallState> {
    for _ in 0..300 {
        let calls = fake.registered();
        if calls.iter().filter(|c| c.finished.is_some()).count() >= n {
            return calls;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("expected {n} finished calls, have {:#?}", fake.registered());
}

/// Two portals on one PBX address, both with extension 101: the PBX's call for 101 names the line
/// in To (tenant A) or in Diversion (tenant B), and rings only that portal's phone; each call is
/// tracked under its own portal and reported to its own Bitrix24 only. An agent's call out from
/// B's phone is B's too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_portals_on_one_pbx_address_each_get_only_their_own_calls() {
    let (gw, pbx, [a, b]) = two_tenants().await;
    let sip = gw.addresses["sip_udp"].clone();
    for (tenant, scenario, xcid) in [(&a, "pbx-line-to.xml", "tenant-a"), (&b, "pbx-line-diversion.xml", "tenant-b")] {
        // Only this tenant's phone listens: a call for the other's 101 would never be answered.
        let phone = Sipp::new("agent-answer.xml", &sip).at(tenant.phone).key("ext", "101").key("ring_ms", "100").spawn();
        let run = Sipp::new(scenario, &sip).port(pbx).key("ext", "101").key("line", tenant.line).key("caller", CUSTOMER).key("xcid", xcid).key("hold_ms", "300").run().await;
        let phone = phone.wait().await;
        assert!(phone.successful == 1 && phone.failed == 0, "{xcid}: phone:\n{}\n{}\nPBX:\n{}\n{}", phone.screen, phone.errors, run.screen, run.errors);
        run.assert_all_ok(1);
        let call = gw.finished_call(|c| c["correlation"] == xcid).await;
        assert_eq!((call["portal"].as_i64(), call["line"].as_str()), (Some(tenant.portal), Some(tenant.line)), "{xcid}: {call:#}");
        answered_by(&call, "101", 11);
    }
    // An agent's call: B's phone dials out; the PBX answers.
    let answering = Sipp::new("pbx-uas-answer.xml", &sip).port(pbx).spawn();
    Sipp::new("agent-dial.xml", &sip).at(b.phone).key("ext", "101").key("dial", CUSTOMER).key("talk_ms", "300").run().await.assert_all_ok(1);
    answering.wait().await.assert_all_ok(1);
    let out = gw.finished_call(|c| c["kind"] == "outgoing").await;
    assert_eq!(out["portal"].as_i64(), Some(b.portal), "the agent's own mapping picks the portal: {out:#}");

    let calls = all_calls(&gw).await;
    for tenant in [&a, &b] {
        let mine = calls.iter().filter(|c| c["portal"].as_i64() == Some(tenant.portal)).count();
        assert_eq!(mine, if tenant.portal == b.portal { 2 } else { 1 }, "calls of portal {}: {calls:#?}", tenant.portal);
    }
    let to_a = reported(&a.fake, 1).await;
    let to_b = reported(&b.fake, 2).await;
    assert_eq!(to_a.len(), 1, "A's Bitrix24 got A's call only: {to_a:#?}");
    assert_eq!((to_a[0].line_number.as_deref(), to_a[0].call_type), (Some(a.line), 2), "{to_a:#?}");
    assert_eq!(to_b.len(), 2, "B's Bitrix24 got B's two calls only: {to_b:#?}");
    assert!(to_b.iter().any(|c| c.line_number.as_deref() == Some(b.line) && c.call_type == 2), "{to_b:#?}");
    assert!(to_b.iter().any(|c| c.call_type == 1 && c.phone_number == CUSTOMER), "B's agent's outgoing call: {to_b:#?}");
    assert!(!to_b.iter().any(|c| c.line_number.as_deref() == Some(a.line)), "{to_b:#?}");
}
