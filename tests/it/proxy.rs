//! The edge proxy with SIPp playing the PBX and the agents' phones (scenarios in `tests/sipp/`),
//! each story asserting what the call tracker made of it through `GET /api/v1/calls`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::sipp::{free_addr, free_port, Sipp, SippChild};
use crate::common::{phone_ip, TestGateway, PBX_IP};

/// A gateway with one portal whose PBX is a SIPp on 127.0.0.1:`pbx` and whose agents
/// 101..=103 (users 11..=13) are SIPp phones on their own addresses (127.0.0.2..=4), reached
/// through static contacts.
pub(crate) struct Office {
    pub(crate) gw: TestGateway,
    pub(crate) sip: String,
    /// The PBX's port on 127.0.0.1 (its `pbx_host`).
    pub(crate) pbx: u16,
    /// Each extension's phone: the address of its static contact.
    pub(crate) phones: BTreeMap<&'static str, SocketAddr>,
    pub(crate) portal: i64,
}

pub(crate) const CUSTOMER: &str = "79161234567";
const EXTENSIONS: [(&str, u64); 3] = [("101", 11), ("102", 12), ("103", 13)];

impl Office {
    pub(crate) async fn open(transport: &str) -> Self {
        Self::open_with(transport, None, |_| {}).await
    }

    /// Like [`Self::open`]; with a `webhook` the portal gets those credentials and is active.
    pub(crate) async fn open_with(transport: &str, webhook: Option<&str>, tweak: impl FnOnce(&mut callgate::config::Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut gw = TestGateway::spawn_on(dir.path(), |cfg| {
            cfg.calls.linger = Duration::from_millis(300);
            tweak(cfg);
        })
        .await;
        gw.keep_dir(dir);
        let key = if transport == "tcp" { "sip_tcp" } else { "sip_udp" };
        let sip = gw.addresses[key].clone();
        let pbx = free_port();
        let body = match webhook {
            Some(url) => json!({ "domain": "office.bitrix24.ru", "auth": { "webhook_url": url } }),
            None => json!({ "domain": "office.bitrix24.ru" }),
        };
        let (status, created) = gw.api(Method::POST, "/api/v1/portals", Some(body)).await;
        assert_eq!(status, 201, "{created}");
        let id = created["id"].as_i64().unwrap();
        let mut settings = gw.api(Method::GET, &format!("/api/v1/portals/{id}/settings"), None).await.1;
        // The PBX is on the office's transport: callgate reaches it the way pbx_host says.
        let pbx_transport = if transport == "tcp" { ";transport=tcp" } else { "" };
        settings["pbx_host"] = json!(format!("{PBX_IP}:{pbx}{pbx_transport}"));
        settings["trusted_pbx"] = json!([PBX_IP.to_string()]);
        settings["incoming"]["default_responsible"] = json!(1);
        settings["outgoing"]["default_responsible"] = json!(2);
        settings["active"] = json!(webhook.is_some());
        let (status, body) = gw.api(Method::PUT, &format!("/api/v1/portals/{id}/settings"), Some(settings)).await;
        assert_eq!(status, 200, "{body}");
        let mut phones = BTreeMap::new();
        for (ext, user) in EXTENSIONS {
            let addr = free_addr(phone_ip(ext));
            let contact = if transport == "tcp" { format!("sip:{ext}@{addr};transport=tcp") } else { format!("sip:{ext}@{addr}") };
            let m = json!({ "user_id": user, "extension": ext, "use_for_personal_manager": true, "contact": contact });
            let (status, body) = gw.api(Method::POST, &format!("/api/v1/portals/{id}/mappings"), Some(m)).await;
            assert_eq!(status, 201, "{body}");
            phones.insert(ext, addr);
        }
        Self { gw, sip, pbx, phones, portal: id }
    }

    /// Changes the portal's settings with `edit`.
    pub(crate) async fn settings(&self, edit: impl FnOnce(&mut Value)) {
        let path = format!("/api/v1/portals/{}/settings", self.portal);
        let mut settings = self.gw.api(Method::GET, &path, None).await.1;
        edit(&mut settings);
        let (status, body) = self.gw.api(Method::PUT, &path, Some(settings)).await;
        assert_eq!(status, 200, "{body}");
    }

    /// Sets (or, with `None`, removes) the static contact of `ext`'s mapping.
    pub(crate) async fn set_contact(&self, ext: &str, contact: Option<&str>) {
        let path = format!("/api/v1/portals/{}/mappings", self.portal);
        let (_, mappings) = self.gw.api(Method::GET, &path, None).await;
        let mut m = mappings.as_array().unwrap().iter().find(|m| m["extension"] == ext).expect("a mapping for the extension").clone();
        m["contact"] = json!(contact);
        let id = m["id"].as_i64().unwrap();
        let object = m.as_object_mut().unwrap();
        object.retain(|k, _| ["user_id", "extension", "use_for_personal_manager", "contact"].contains(&k.as_str()));
        let (status, body) = self.gw.api(Method::PUT, &format!("{path}/{id}"), Some(m)).await;
        assert_eq!(status, 200, "{body}");
    }

    /// An agent phone waiting for one call. Every scenario key gets a default (SIPp refuses
    /// a scenario naming a key it was not given); `keys` override them.
    pub(crate) fn phone(&self, ext: &str, scenario: &str, keys: &[(&str, &str)]) -> SippChild {
        let mut all: BTreeMap<&str, &str> = [("ext", ext), ("ring_ms", "200"), ("talk_ms", "500"), ("hold_ms", "300"), ("consult_ms", "500"), ("dial", CUSTOMER)].into();
        all.extend(keys.iter().copied());
        let mut s = Sipp::new(scenario, &self.sip).at(self.phones[ext]);
        for (k, v) in all {
            s = s.key(k, v);
        }
        s.spawn()
    }

    /// The PBX placing one call leg to `ext` through callgate; the phones it involves must
    /// finish their scenario too.
    pub(crate) async fn pbx_calls(&self, ext: &str, scenario: &str, xcid: &str, keys: &[(&str, &str)], phones: Vec<SippChild>) {
        let mut all: BTreeMap<&str, &str> = [("ext", ext), ("caller", CUSTOMER), ("xcid", xcid), ("hold_ms", "300")].into();
        all.extend(keys.iter().copied());
        let mut s = Sipp::new(scenario, &self.sip).port(self.pbx);
        for (k, v) in all {
            s = s.key(k, v);
        }
        let pbx = s.run().await;
        let mut phone_runs = Vec::new();
        for p in phones {
            phone_runs.push(p.wait().await);
        }
        for (i, run) in phone_runs.iter().enumerate() {
            assert!(run.successful == 1 && run.failed == 0, "phone {i} of {scenario}:\n{}\n{}\nPBX:\n{}", run.screen, run.errors, pbx.screen);
        }
        pbx.assert_all_ok(1);
    }

    /// The PBX answering (or refusing) one call an agent places through callgate.
    pub(crate) fn pbx_answers(&self, scenario: &str) -> SippChild {
        Sipp::new(scenario, &self.sip).port(self.pbx).key("ring_ms", "200").key("talk_ms", "500").spawn()
    }

    /// An agent's phone placing one call through callgate, to `dial`.
    pub(crate) async fn agent_dials(&self, ext: &str, scenario: &str, dial: &str, pbx: SippChild) {
        let phone = Sipp::new(scenario, &self.sip).at(self.phones[ext]).key("ext", ext).key("dial", dial).key("talk_ms", "300").key("ring_ms", "200").run().await;
        let pbx = pbx.wait().await;
        assert!(pbx.successful == 1 && pbx.failed == 0, "PBX side of {scenario}:\n{}\n{}\nphone:\n{}", pbx.screen, pbx.errors, phone.screen);
        phone.assert_all_ok(1);
    }

    /// The finished call whose correlation is `xcid`, waited for (bounded: 10 s in 50 ms steps).
    pub(crate) async fn finished(&self, xcid: &str) -> Value {
        self.finished_where(|c| c["correlation"] == xcid).await
    }

    /// The first finished call matching `pred`, waited for (bounded: 10 s in 50 ms steps).
    pub(crate) async fn finished_where(&self, pred: impl Fn(&Value) -> bool) -> Value {
        self.gw.finished_call(pred).await
    }

    pub(crate) async fn assign(&self, to: &str) {
        self.settings(|s| s["incoming"]["assign_responsible_to"] = json!(to)).await;
    }
}

fn talker(call: &Value, which: &str) -> String {
    call[which]["extension"].as_str().unwrap_or("none").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_call_has_one_conversation_with_the_agent() {
    let o = Office::open("udp").await;
    let phone = o.phone("101", "agent-answer.xml", &[]);
    o.pbx_calls("101", "pbx-answered.xml", "x-answered", &[], vec![phone]).await;
    let call = o.finished("x-answered").await;
    assert_eq!(call["kind"], "incoming", "{call:#}");
    assert_eq!(call["customer"], CUSTOMER);
    assert_eq!(call["outcome"], "answered");
    assert_eq!(call["status_code"], "200");
    assert_eq!((talker(&call, "first_talker"), talker(&call, "last_talker")), ("101".into(), "101".into()));
    assert_eq!(call["responsible"], 11);
    assert_eq!(call["conversations"].as_array().unwrap().len(), 1);
}

fn legs(call: &Value) -> Vec<(String, String)> {
    call["legs"].as_array().unwrap().iter().map(|l| (l["extension"].as_str().unwrap().to_owned(), l["end_reason"]["reason"].as_str().unwrap_or("none").to_owned())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_cancelled_while_ringing_is_missed_and_goes_to_the_default_responsible() {
    let o = Office::open("udp").await;
    let phone = o.phone("101", "agent-ring.xml", &[]);
    o.pbx_calls("101", "pbx-cancel.xml", "x-missed", &[], vec![phone]).await;
    let call = o.finished("x-missed").await;
    assert_eq!((call["outcome"].as_str(), call["status_code"].as_str()), (Some("missed"), Some("304")), "{call:#}");
    assert_eq!(call["failed_reason"], "caller_hung_up");
    assert_eq!(call["responsible"], 1);
    assert_eq!(legs(&call), [("101".to_owned(), "cancel".to_owned())]);
    assert!(call["first_talker"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_and_rejected_agents_make_a_missed_call_with_the_reason() {
    let o = Office::open("udp").await;
    for (scenario, xcid, reason, end) in [("agent-busy.xml", "x-busy", "busy", "busy"), ("agent-reject.xml", "x-reject", "rejected", "rejected")] {
        let phone = o.phone("101", scenario, &[]);
        o.pbx_calls("101", "pbx-failed.xml", xcid, &[], vec![phone]).await;
        let call = o.finished(xcid).await;
        assert_eq!((call["outcome"].as_str(), call["status_code"].as_str()), (Some("missed"), Some("304")), "{call:#}");
        assert_eq!(call["failed_reason"], reason);
        assert_eq!(legs(&call), [("101".to_owned(), end.to_owned())]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blind_transfer_moves_the_customer_to_the_target_agent() {
    let o = Office::open("udp").await;
    let a = o.phone("101", "agent-blind-transfer.xml", &[("target", "102")]);
    o.pbx_calls("101", "pbx-refer-target.xml", "x-blind", &[], vec![a]).await;
    let b = o.phone("102", "agent-answer.xml", &[]);
    o.pbx_calls("102", "pbx-transferred-leg.xml", "x-blind", &[("referrer", "101")], vec![b]).await;
    let call = o.finished("x-blind").await;
    assert_eq!(call["outcome"], "answered", "{call:#}");
    assert_eq!((talker(&call, "first_talker"), talker(&call, "last_talker")), ("101".into(), "102".into()));
    assert_eq!(legs(&call), [("101".to_owned(), "transferred".to_owned()), ("102".to_owned(), "bye".to_owned())]);
    assert_eq!(call["responsible"], 11, "assign_responsible_to = first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_transfers_ends_with_the_last_talker_responsible_when_so_set() {
    let o = Office::open("udp").await;
    o.assign("last").await;
    let a = o.phone("101", "agent-blind-transfer.xml", &[("target", "102")]);
    o.pbx_calls("101", "pbx-refer-target.xml", "x-chain", &[], vec![a]).await;
    let b = o.phone("102", "agent-blind-transfer.xml", &[("target", "103")]);
    o.pbx_calls("102", "pbx-refer-target.xml", "x-chain", &[], vec![b]).await;
    let c = o.phone("103", "agent-answer.xml", &[]);
    o.pbx_calls("103", "pbx-transferred-leg.xml", "x-chain", &[("referrer", "102")], vec![c]).await;
    let call = o.finished("x-chain").await;
    assert_eq!((talker(&call, "first_talker"), talker(&call, "last_talker")), ("101".into(), "103".into()), "{call:#}");
    assert_eq!(call["conversations"].as_array().unwrap().len(), 3);
    assert_eq!(call["responsible"], 13);
    assert_eq!(call["responsible_reason"], "last_talker");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_ring_all_group_the_agent_who_answers_talks_and_the_others_are_cancelled() {
    let o = Office::open("udp").await;
    let phones = vec![o.phone("101", "agent-ring.xml", &[]), o.phone("102", "agent-answer.xml", &[("ring_ms", "100")]), o.phone("103", "agent-ring.xml", &[])];
    // The PBX forks from three ports of its address (one SIPp per leg), as a B2BUA does.
    let legs_done = async {
        let mut runs = Vec::new();
        for (ext, scenario) in [("101", "pbx-cancel.xml"), ("102", "pbx-answered.xml"), ("103", "pbx-cancel.xml")] {
            let s = Sipp::new(scenario, &o.sip).port(free_port()).key("ext", ext).key("caller", CUSTOMER).key("xcid", "x-group").key("hold_ms", "800");
            runs.push(tokio::spawn(s.run()));
        }
        for r in runs {
            r.await.unwrap().assert_all_ok(1);
        }
    };
    legs_done.await;
    for p in phones {
        p.wait().await.assert_all_ok(1);
    }
    let call = o.finished("x-group").await;
    assert_eq!(call["outcome"], "answered", "{call:#}");
    assert_eq!((talker(&call, "first_talker"), talker(&call, "last_talker")), ("102".into(), "102".into()));
    let mut l = legs(&call);
    l.sort();
    assert_eq!(l, [("101".to_owned(), "cancel".to_owned()), ("102".to_owned(), "bye".to_owned()), ("103".to_owned(), "cancel".to_owned())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outgoing_call_is_recognised_answered_or_busy() {
    let o = Office::open("udp").await;
    let pbx = o.pbx_answers("pbx-uas-answer.xml");
    o.agent_dials("101", "agent-dial.xml", CUSTOMER, pbx).await;
    let call = o.finished_where(|c| c["kind"] == "outgoing" && c["outcome"] == "answered").await;
    assert_eq!((call["customer"].as_str(), call["status_code"].as_str()), (Some(CUSTOMER), Some("200")), "{call:#}");
    assert_eq!(call["responsible"], 11);

    let pbx = o.pbx_answers("pbx-uas-busy.xml");
    o.agent_dials("102", "agent-dial-busy.xml", "8(916)765-43-21", pbx).await;
    let call = o.finished_where(|c| c["kind"] == "outgoing" && c["status_code"] == "486").await;
    assert_eq!(call["customer"], "79167654321", "the dialled number is normalised: {call:#}");
    assert_eq!(call["responsible"], 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_calling_an_agent_is_an_internal_call() {
    let o = Office::open("udp").await;
    let pbx = o.pbx_answers("pbx-uas-answer.xml");
    o.agent_dials("101", "agent-dial.xml", "102", pbx).await;
    let call = o.finished_where(|c| c["kind"] == "internal").await;
    assert!(call["responsible"].is_null(), "{call:#}");
    let (_, calls) = o.gw.api(Method::GET, "/api/v1/calls", None).await;
    assert!(calls.as_array().unwrap().iter().all(|c| c["kind"] == "internal"), "no customer call: {calls:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_call_works_over_tcp_too() {
    let o = Office::open("tcp").await;
    let phone = Sipp::new("agent-answer.xml", &o.sip).at(o.phones["101"]).key("ext", "101").key("ring_ms", "100").args(&["-t", "t1"]).spawn();
    let pbx = Sipp::new("pbx-answered.xml", &o.sip).port(o.pbx).key("ext", "101").key("caller", CUSTOMER).key("xcid", "x-tcp").key("hold_ms", "300").args(&["-t", "t1"]).run().await;
    let phone = phone.wait().await;
    assert!(phone.successful == 1, "phone:\n{}\n{}", phone.screen, phone.errors);
    pbx.assert_all_ok(1);
    let call = o.finished("x-tcp").await;
    assert_eq!((call["outcome"].as_str(), talker(&call, "last_talker")), (Some("answered"), "101".into()), "{call:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attended_transfer_hands_the_customer_to_the_consulted_agent() {
    let o = Office::open("udp").await;
    let a = o.phone("101", "agent-attended-transfer.xml", &[("target", "102"), ("replaces_callid", "consult-att%40127.0.0.1"), ("consult_ms", "2000")]);
    let b = o.phone("102", "agent-answer.xml", &[]);
    // The customer's leg to A: the PBX accepts A's hold and REFER, then hangs up on A.
    let customer = async {
        let s = Sipp::new("pbx-refer-target.xml", &o.sip).port(free_port()).key("ext", "101").key("caller", CUSTOMER).key("xcid", "x-attended");
        s.run().await.assert_all_ok(1);
        a.wait().await.assert_all_ok(1);
    };
    // A's consultation with B, both halves through callgate: A -> PBX (A's second line: another
    // port of A's address, with A's extension and a known Call-ID) ...
    let pbx_side = o.pbx_answers("pbx-uas-answer.xml");
    let consult_a = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let s = Sipp::new("agent-dial.xml", &o.sip).at(free_addr(phone_ip("101"))).key("ext", "101").key("dial", "102").key("talk_ms", "4000");
        s.args(&["-cid_str", "consult-att@127.0.0.1"]).run().await.assert_all_ok(1);
        pbx_side.wait().await.assert_all_ok(1);
    };
    // ... and PBX -> B, which the PBX bridges to the customer once A's REFER replaces A -> PBX.
    let consult_b = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let s = Sipp::new("pbx-answered.xml", &o.sip).port(free_port()).key("ext", "102").key("caller", "101").key("xcid", "x-consultation").key("hold_ms", "5000");
        s.run().await.assert_all_ok(1);
        b.wait().await.assert_all_ok(1);
    };
    tokio::join!(customer, consult_a, consult_b);
    let call = o.finished("x-attended").await;
    assert_eq!(call["outcome"], "answered", "{call:#}");
    assert_eq!((talker(&call, "first_talker"), talker(&call, "last_talker")), ("101".into(), "102".into()));
    let reasons = legs(&call);
    assert!(reasons.contains(&("101".to_owned(), "transferred".to_owned())), "{reasons:?}");
    let (_, calls) = o.gw.api(Method::GET, "/api/v1/calls", None).await;
    assert!(!calls.as_array().unwrap().iter().any(|c| c["kind"] == "internal"), "the consultation was merged into the customer call: {calls:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invite_with_replaces_from_the_pbx_moves_the_conversation() {
    let o = Office::open("udp").await;
    let first_leg = "pickup-a@127.0.0.1";
    let a = o.phone("101", "agent-answer.xml", &[]);
    let b = o.phone("102", "agent-answer.xml", &[]);
    let leg_a = async {
        let s = Sipp::new("pbx-answered.xml", &o.sip).port(o.pbx).key("ext", "101").key("caller", CUSTOMER).key("xcid", "x-pickup").key("hold_ms", "2500");
        s.args(&["-cid_str", first_leg]).run().await.assert_all_ok(1);
        a.wait().await.assert_all_ok(1);
    };
    let leg_b = async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        let s = Sipp::new("pbx-replaces.xml", &o.sip).port(free_port()).key("ext", "102").key("caller", CUSTOMER).key("xcid", "x-pickup");
        s.key("replaces_callid", first_leg).key("hold_ms", "3500").run().await.assert_all_ok(1);
        b.wait().await.assert_all_ok(1);
    };
    tokio::join!(leg_a, leg_b);
    let call = o.finished("x-pickup").await;
    assert_eq!((talker(&call, "first_talker"), talker(&call, "last_talker")), ("101".into(), "102".into()), "{call:#}");
    assert_eq!(legs(&call), [("101".to_owned(), "replaced".to_owned()), ("102".to_owned(), "bye".to_owned())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_and_unhold_keep_one_conversation_and_are_recorded() {
    let o = Office::open("udp").await;
    let phone = o.phone("101", "agent-hold.xml", &[("hold_ms", "300")]);
    o.pbx_calls("101", "pbx-answered-reinvite.xml", "x-hold", &[("reinvites", "2"), ("hold_ms", "500")], vec![phone]).await;
    let call = o.finished("x-hold").await;
    assert_eq!(call["conversations"].as_array().unwrap().len(), 1, "{call:#}");
    let holds = call["legs"][0]["holds"].as_array().unwrap();
    assert_eq!(holds.len(), 1, "{call:#}");
    assert!(!holds[0]["from"].is_null() && !holds[0]["to"].is_null());
}
