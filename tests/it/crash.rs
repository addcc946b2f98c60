//! Crash safety of the Bitrix24 side with the real binary: SIGKILL in the middle of a load,
//! restart on the same data, and every call Bitrix24 saw registered is finished exactly once.

use std::process::Stdio;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::binary::{command, http_address, KillOnDrop};
use crate::common::phone_ip;
use crate::common::sipp::{free_addr, free_port, Sipp};
use crate::common::TOKEN;
use crate::fake_b24::FakeB24;

struct Running {
    child: KillOnDrop,
    base: String,
    sip: String,
    _logs: std::thread::JoinHandle<Vec<String>>,
}

async fn start(data: &std::path::Path) -> Running {
    let mut cmd = command(data);
    cmd.env("CALLGATE__ADMIN__TOKEN", TOKEN)
        .env("CALLGATE__CALLS__LINGER", "300ms")
        .env("CALLGATE__CRM__MAX_BACKOFF", "2s")
        .env("CALLGATE__CRM__SHOW_HIDE_WINDOW", "100ms")
        .env("CALLGATE__LOG__LEVEL", "warn,callgate::app=info")
        .arg("run")
        .stderr(Stdio::piped());
    let mut child = KillOnDrop(cmd.spawn().unwrap());
    let (addr, logs) = http_address(child.0.stderr.take().unwrap());
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    let mut ready = Value::Null;
    for _ in 0..200 {
        if let Ok(r) = client.get(format!("{base}/ready")).send().await {
            if r.status() == 200 {
                ready = r.json().await.unwrap();
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sip = ready["sip_udp"].as_str().expect("ready with a SIP address").to_owned();
    Running { child, base, sip, _logs: logs }
}

async fn api(base: &str, method: Method, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new().request(method, format!("{base}{path}")).bearer_auth(TOKEN).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_sigkill_mid_load_every_registered_call_is_finished_exactly_once() {
    crate::common::init_tracing();
    let fake = FakeB24::spawn().await;
    fake.add_user(crate::fake_b24::User::new(2, "Sales desk", None));
    let dir = tempfile::tempdir().unwrap();
    let mut gw = start(dir.path()).await;
    let (pbx, phone) = (free_port(), free_addr(phone_ip("101")));
    let (status, portal) = api(&gw.base, Method::POST, "/api/v1/portals", json!({ "domain": "crash.bitrix24.ru", "auth": { "webhook_url": fake.webhook_url() } })).await;
    assert_eq!(status, 201, "{portal}");
    let id = portal["id"].as_i64().unwrap();
    let settings = json!({ "active": true, "pbx_host": format!("127.0.0.1:{pbx}"), "incoming": { "default_responsible": 1 }, "outgoing": { "default_responsible": 2 } });
    assert_eq!(api(&gw.base, Method::PUT, &format!("/api/v1/portals/{id}/settings"), settings).await.0, 200);
    let mapping = json!({ "user_id": 11, "extension": "101", "contact": format!("sip:101@{phone}") });
    assert_eq!(api(&gw.base, Method::POST, &format!("/api/v1/portals/{id}/mappings"), mapping).await.0, 201);

    // 500 calls at 50/s, each talking 2 s: about a hundred are up at any moment.
    let n = 500;
    let phone = Sipp::new("agent-answer.xml", &gw.sip).at(phone).key("ext", "101").key("ring_ms", "10").calls(n).spawn();
    let pbx_run = Sipp::new("pbx-answered-load.xml", &gw.sip).port(pbx).key("ext", "101").key("caller", crate::proxy::CUSTOMER).key("xcid", "crash").key("hold_ms", "2000").calls(n).rate(50).spawn();
    for _ in 0..300 {
        if fake.registered().len() >= 150 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(fake.registered().len() >= 150, "registered before the kill: {}", fake.registered().len());
    gw.child.0.kill().unwrap(); // SIGKILL
    let _ = gw.child.0.wait();
    drop((phone, pbx_run));
    let open_at_kill = fake.active_calls().len();
    assert!(open_at_kill > 0, "the kill happened with calls open");

    let gw = start(dir.path()).await;
    // The settings survived the kill (SQLite, synchronous=FULL).
    let (status, after) = api(&gw.base, Method::GET, &format!("/api/v1/portals/{id}/settings"), Value::Null).await;
    assert_eq!(status, 200, "{after}");
    assert_eq!((after["active"].as_bool(), after["pbx_host"].as_str()), (Some(true), Some(format!("127.0.0.1:{pbx}").as_str())), "{after}");
    let (_, mappings) = api(&gw.base, Method::GET, &format!("/api/v1/portals/{id}/mappings"), Value::Null).await;
    assert!(!mappings.as_array().is_some_and(Vec::is_empty), "{mappings}");
    let mut calls = fake.registered();
    for _ in 0..600 {
        calls = fake.registered();
        if calls.iter().all(|c| c.finished.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let unfinished: Vec<&str> = calls.iter().filter(|c| c.finished.is_none()).map(|c| c.call_id.as_str()).collect();
    assert!(unfinished.is_empty(), "{} of {} registered calls never finished", unfinished.len(), calls.len());
    let mut per_call = std::collections::BTreeMap::new();
    for f in fake.calls_of("telephony.externalcall.finish") {
        *per_call.entry(f.params["CALL_ID"].as_str().unwrap_or_default().to_owned()).or_insert(0usize) += 1;
    }
    assert_eq!(per_call.len(), calls.len());
    assert!(per_call.values().all(|&k| k == 1), "a call finished twice: {per_call:?}");
    let reconciled = calls.iter().filter(|c| c.finished.as_ref().and_then(|f| f.failed_reason.as_deref()) == Some("call_state_lost")).count();
    assert!(reconciled > 0, "calls open at the kill were finished as call_state_lost ({open_at_kill} were open)");
    eprintln!("registered {}, open at the kill {open_at_kill}, reconciled {reconciled}", calls.len());
}
