//! Crash safety of the Bitrix24 side with the real binary: SIGKILL in the middle of a load,
//! restart on the same data, and every call Bitrix24 saw registered is finished exactly once.
//! Calls survive the restart: the restarted binary listens on the same SIP port with the same
//! route key, takes the open calls back from their checkpoints, and finishes them with what
//! really happened (the BYE after the restart, or the last evidence before the crash).

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

/// The binary on `sip` (UDP) with extra `CALLGATE__…` settings.
async fn start_with(data: &std::path::Path, sip: &str, env: &[(&str, &str)]) -> Running {
    let mut cmd = command(data);
    cmd.env("CALLGATE__SIP__UDP", sip)
        .env("CALLGATE__ADMIN__TOKEN", TOKEN)
        .env("CALLGATE__CALLS__LINGER", "300ms")
        .env("CALLGATE__CRM__MAX_BACKOFF", "2s")
        .env("CALLGATE__CRM__SHOW_HIDE_WINDOW", "100ms")
        .env("CALLGATE__LOG__LEVEL", "warn,callgate::app=info")
        .envs(env.iter().copied())
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
    let quick = [("CALLGATE__CALLS__RESTORE_WAIT", "3s")];
    let mut gw = start_with(dir.path(), "127.0.0.1:0", &quick).await;
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

    let gw = start_with(dir.path(), "127.0.0.1:0", &quick).await;
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
    // Calls open at the kill come back from their checkpoints (those started within the last
    // checkpoint interval are finished as call_state_lost).
    let reconciled = calls.iter().filter(|c| c.finished.as_ref().and_then(|f| f.failed_reason.as_deref()) == Some("call_state_lost")).count();
    let not_200 = calls.iter().filter(|c| c.finished.as_ref().and_then(|f| f.status_code.as_deref()) != Some("200")).count();
    eprintln!("registered {}, open at the kill {open_at_kill}, reconciled {reconciled}, not 200 {not_200}", calls.len());
}

/// A portal on the fake Bitrix24 with the PBX on 127.0.0.1 and agent 101 (user 11) on its phone.
struct Office {
    pbx: u16,
    phone: std::net::SocketAddr,
}

async fn office(base: &str, fake: &FakeB24) -> Office {
    let (pbx, phone) = (free_port(), free_addr(phone_ip("101")));
    let (status, portal) = api(base, Method::POST, "/api/v1/portals", json!({ "domain": "restart.bitrix24.ru", "auth": { "webhook_url": fake.webhook_url() } })).await;
    assert_eq!(status, 201, "{portal}");
    let id = portal["id"].as_i64().unwrap();
    let settings = json!({ "active": true, "pbx_host": format!("127.0.0.1:{pbx}"), "incoming": { "default_responsible": 1 }, "outgoing": { "default_responsible": 2 } });
    assert_eq!(api(base, Method::PUT, &format!("/api/v1/portals/{id}/settings"), settings).await.0, 200);
    let mapping = json!({ "user_id": 11, "extension": "101", "contact": format!("sip:101@{phone}") });
    assert_eq!(api(base, Method::POST, &format!("/api/v1/portals/{id}/mappings"), mapping).await.0, 201);
    Office { pbx, phone }
}

/// `n` calls from the PBX to agent 101, who answers at once; the PBX hangs up after `hold_ms`.
fn place_calls(sip: &str, office: &Office, n: usize, hold_ms: u64) -> (crate::common::sipp::SippChild, crate::common::sipp::SippChild) {
    let phone = Sipp::new("agent-answer.xml", sip).at(office.phone).key("ext", "101").key("ring_ms", "10").calls(n).spawn();
    let hold = hold_ms.to_string();
    let pbx = Sipp::new("pbx-answered-load.xml", sip).port(office.pbx).key("ext", "101").key("caller", crate::proxy::CUSTOMER).key("xcid", "restart").key("hold_ms", &hold).calls(n).rate(10).spawn();
    (phone, pbx)
}

/// Waits until callgate shows `n` open calls answered; returns their answer times (unix ms).
async fn answered(base: &str, n: usize) -> Vec<u64> {
    for _ in 0..100 {
        let (_, calls) = api(base, Method::GET, "/api/v1/calls", Value::Null).await;
        let up: Vec<u64> = calls.as_array().into_iter().flatten().filter(|c| c["ended_at"].is_null()).filter_map(|c| c["answered_at"].as_u64()).collect();
        if up.len() >= n {
            return up;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{n} calls were not answered in time");
}

/// Waits until Bitrix24 has `n` calls, all finished; then checks that each was registered once
/// and finished once, as answered by user 11, with a DURATION inside `talk` (seconds).
async fn finished_once_as_answered(fake: &FakeB24, n: usize, talk: std::ops::RangeInclusive<u64>) {
    let mut calls = fake.registered();
    for _ in 0..300 {
        calls = fake.registered();
        if calls.len() >= n && calls.iter().all(|c| c.finished.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(calls.len(), n, "one Bitrix24 call per call");
    assert_eq!(fake.calls_of("telephony.externalcall.register").len(), n, "one register per call, none repeated after the restart");
    let finishes = fake.calls_of("telephony.externalcall.finish");
    assert_eq!(finishes.len(), n, "one finish per call");
    let durations: Vec<u64> = calls.iter().filter_map(|c| c.finished.as_ref().map(|f| f.duration)).collect();
    eprintln!("DURATION of the {n} calls: {durations:?}, expected within {talk:?}");
    for c in &calls {
        let f = c.finished.as_ref().unwrap_or_else(|| panic!("{} never finished", c.call_id));
        assert_eq!(c.registrations, 1, "{}", c.call_id);
        assert_eq!((f.status_code.as_deref(), f.user_id, f.failed_reason.as_deref()), (Some("200"), 11, None), "{}: answered by 101, never missed", c.call_id);
        assert!(talk.contains(&f.duration), "{}: DURATION {} not in {talk:?}", c.call_id, f.duration);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_up_at_a_sigkill_end_by_the_pbx_bye_after_the_restart_as_answered_with_the_full_talk() {
    stop_mid_conversation_then_the_pbx_hangs_up(libc::SIGKILL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_up_past_the_shutdown_grace_are_taken_back_by_the_next_start() {
    stop_mid_conversation_then_the_pbx_hangs_up(libc::SIGTERM).await;
}

/// 10 calls talking 6 s each; callgate gets `signal` about 2 s into the talk (SIGTERM: the
/// 1 s grace runs out with the calls up) and is started again on the same data and port.
async fn stop_mid_conversation_then_the_pbx_hangs_up(signal: i32) {
    crate::common::init_tracing();
    let fake = FakeB24::spawn().await;
    fake.add_user(crate::fake_b24::User::new(2, "Sales desk", None));
    let dir = tempfile::tempdir().unwrap();
    let sip = format!("127.0.0.1:{}", free_port());
    let env = [("CALLGATE__CALLS__RESTORE_WAIT", "60s"), ("CALLGATE__SHUTDOWN__GRACE", "1s")];
    let mut gw = start_with(dir.path(), &sip, &env).await;
    let office = office(&gw.base, &fake).await;

    let (n, hold_ms) = (10, 6_000);
    let (phone, pbx) = place_calls(&sip, &office, n, hold_ms);
    answered(&gw.base, n).await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    unsafe { libc::kill(gw.child.0.id() as i32, signal) };
    let status = tokio::task::spawn_blocking(move || gw.child.0.wait().unwrap()).await.unwrap();
    if signal == libc::SIGTERM {
        assert_eq!(status.code(), Some(0), "a clean stop after the grace period");
    }
    let _gw = start_with(dir.path(), &sip, &env).await;

    // The BYEs pass through the restarted callgate (Record-Route signed with route.key) and
    // get their 200 from the phone.
    pbx.wait().await.assert_all_ok(n as u64);
    phone.wait().await.assert_all_ok(n as u64);
    let real = hold_ms / 1000;
    finished_once_as_answered(&fake, n, real.saturating_sub(2)..=real + 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_that_end_while_callgate_is_down_are_finished_once_as_answered_up_to_the_crash() {
    crate::common::init_tracing();
    let fake = FakeB24::spawn().await;
    fake.add_user(crate::fake_b24::User::new(2, "Sales desk", None));
    let dir = tempfile::tempdir().unwrap();
    let sip = format!("127.0.0.1:{}", free_port());
    let env = [("CALLGATE__CALLS__RESTORE_WAIT", "3s")];
    let mut gw = start_with(dir.path(), &sip, &env).await;
    let office = office(&gw.base, &fake).await;

    let n = 10;
    let (phone, pbx) = place_calls(&sip, &office, n, 60_000);
    let answers = answered(&gw.base, n).await;
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let crash = u64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()).unwrap();
    gw.child.0.kill().unwrap(); // SIGKILL
    let _ = gw.child.0.wait();
    // The calls end while callgate is down: their BYEs are lost with it.
    drop((phone, pbx));
    let _gw = start_with(dir.path(), &sip, &env).await;

    // Talk up to the crash: the last checkpoint is at most a second older, DURATION rounds up.
    let (first, last) = (answers.iter().min().copied().unwrap(), answers.iter().max().copied().unwrap());
    let (shortest, longest) = ((crash - last) / 1000, (crash - first).div_ceil(1000));
    finished_once_as_answered(&fake, n, shortest.saturating_sub(2)..=longest + 1).await;
}
