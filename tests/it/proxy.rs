//! The edge proxy with SIPp playing the PBX and the agents' phones (scenarios in `tests/sipp/`),
//! each story asserting what the call tracker made of it through `GET /api/v1/calls`.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::sipp::{free_port, Sipp, SippChild};
use crate::common::TestGateway;

/// A gateway with one portal whose PBX is a SIPp on `pbx` and whose agents 101..=103 (users
/// 11..=13) are SIPp phones on their own ports, reached through static contacts.
struct Office {
    gw: TestGateway,
    sip: String,
    pbx: u16,
    phones: BTreeMap<&'static str, u16>,
}

const CUSTOMER: &str = "79161234567";
const EXTENSIONS: [(&str, u64); 3] = [("101", 11), ("102", 12), ("103", 13)];

impl Office {
    async fn open(transport: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut gw = TestGateway::spawn_on(dir.path(), |cfg| {
            cfg.calls.linger = Duration::from_millis(300);
        })
        .await;
        gw.keep_dir(dir);
        let key = if transport == "tcp" { "sip_tcp" } else { "sip_udp" };
        let sip = gw.addresses[key].clone();
        let pbx = free_port();
        let id = gw.portal("office.bitrix24.ru").await;
        let mut settings = gw.api(Method::GET, &format!("/api/v1/portals/{id}/settings"), None).await.1;
        settings["pbx_host"] = json!(format!("127.0.0.1:{pbx}"));
        settings["incoming"]["default_responsible"] = json!(1);
        settings["outgoing"]["default_responsible"] = json!(2);
        let (status, body) = gw.api(Method::PUT, &format!("/api/v1/portals/{id}/settings"), Some(settings)).await;
        assert_eq!(status, 200, "{body}");
        let mut phones = BTreeMap::new();
        for (ext, user) in EXTENSIONS {
            let port = free_port();
            let contact = if transport == "tcp" { format!("sip:{ext}@127.0.0.1:{port};transport=tcp") } else { format!("sip:{ext}@127.0.0.1:{port}") };
            let m = json!({ "user_id": user, "extension": ext, "use_for_personal_manager": true, "contact": contact });
            let (status, body) = gw.api(Method::POST, &format!("/api/v1/portals/{id}/mappings"), Some(m)).await;
            assert_eq!(status, 201, "{body}");
            phones.insert(ext, port);
        }
        Self { gw, sip, pbx, phones }
    }

    /// An agent phone waiting for one call. Every scenario key gets a default (SIPp refuses
    /// a scenario naming a key it was not given); `keys` override them.
    fn phone(&self, ext: &str, scenario: &str, keys: &[(&str, &str)]) -> SippChild {
        let mut all: BTreeMap<&str, &str> = [("ext", ext), ("ring_ms", "200"), ("talk_ms", "500"), ("hold_ms", "300"), ("consult_ms", "500"), ("dial", CUSTOMER)].into();
        all.extend(keys.iter().copied());
        let mut s = Sipp::new(scenario, &self.sip).port(self.phones[ext]);
        for (k, v) in all {
            s = s.key(k, v);
        }
        s.spawn()
    }

    /// The PBX placing one call leg to `ext` through callgate; the phones it involves must
    /// finish their scenario too.
    async fn pbx_calls(&self, ext: &str, scenario: &str, xcid: &str, keys: &[(&str, &str)], phones: Vec<SippChild>) {
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

    /// The finished call whose correlation is `xcid`, waited for (bounded: 10 s in 50 ms steps).
    async fn finished(&self, xcid: &str) -> Value {
        for _ in 0..200 {
            let (status, calls) = self.gw.api(Method::GET, "/api/v1/calls?limit=1000", None).await;
            assert_eq!(status, 200);
            if let Some(c) = calls.as_array().unwrap().iter().find(|c| c["correlation"] == xcid && !c["ended_at"].is_null()) {
                return c.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (_, calls) = self.gw.api(Method::GET, "/api/v1/calls?limit=1000", None).await;
        panic!("no finished call {xcid}; calls: {calls:#}");
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
