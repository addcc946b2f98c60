//! Bitrix24 failing while calls go on, with time compressed by config (backoff 100 ms doubling
//! to 1 s, request timeout 1 s): answers lost after the request was executed (connection reset,
//! a proxy's 502, a stall past the timeout), connections reset before execution, an outage
//! whose first answer after recovery is lost, and users deactivated in Bitrix24. Each ends with
//! exactly one CALL_ID per customer call, exactly one finish, none left open, and the right
//! USER_ID, STATUS_CODE and DURATION (SIPp as PBX and phones through the proxy, the strict fake).

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;

use crate::common::sipp::Sipp;
use crate::fake_b24::{CallState, FakeB24, Fault, User};
use crate::proxy::{Office, CUSTOMER};

/// Calls per test, and how long each talks (DURATION rounds up: 1.5 s is 2).
const CALLS: usize = 4;
const HOLD_MS: &str = "1500";
const TALK_SECONDS: u64 = 2;

async fn office(fake: &FakeB24) -> Office {
    office_with(fake, |_| {}).await
}

async fn office_with(fake: &FakeB24, tweak: impl FnOnce(&mut callgate::config::Config)) -> Office {
    // User 2 is the portal's default responsible for outgoing calls (user 1 for incoming).
    fake.add_user(User::new(2, "Sales desk", None));
    Office::open_with("udp", Some(&fake.webhook_url()), |cfg| {
        cfg.crm.show_hide_window = Duration::from_millis(100);
        cfg.crm.min_backoff = Duration::from_millis(100);
        cfg.crm.max_backoff = Duration::from_secs(1);
        cfg.crm.request_timeout = Duration::from_secs(1);
        cfg.crm.batch_interval = Duration::from_millis(200);
        tweak(cfg);
    })
    .await
}

/// `CALLS` customer calls from the PBX, each answered by 101 and talking `HOLD_MS`.
async fn answered_calls(o: &Office, xcid: &str) {
    let n = CALLS as u64;
    let phone = Sipp::new("agent-answer.xml", &o.sip).at(o.phones["101"]).key("ext", "101").key("ring_ms", "10").calls(CALLS).spawn();
    let pbx = Sipp::new("pbx-answered-load.xml", &o.sip).port(o.pbx).key("ext", "101").key("caller", CUSTOMER).key("xcid", xcid).key("hold_ms", HOLD_MS).calls(CALLS).rate(4).run().await;
    pbx.assert_all_ok(n);
    phone.wait().await.assert_all_ok(n);
}

/// Waits (bounded: 30 s in 100 ms steps) until `n` calls are registered and none is open, then
/// a little longer (late resends would show as extra calls or finishes), and returns them.
async fn settled(fake: &FakeB24, n: usize) -> Vec<CallState> {
    for _ in 0..300 {
        let calls = fake.registered();
        if calls.len() >= n && fake.active_calls().is_empty() {
            tokio::time::sleep(Duration::from_secs(3)).await;
            return fake.registered();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("expected {n} finished calls, have {:#?}", fake.registered());
}

/// Exactly one CALL_ID per customer call (EXTERNAL_CALL_ID), each finished exactly once, none
/// open, with the expected register user, finish user, STATUS_CODE and DURATION.
fn assert_exactly_once(fake: &FakeB24, calls: &[CallState], n: usize, register_user: u64, finish_user: u64, duration: u64) {
    let mut per_customer_call: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in calls {
        per_customer_call.entry(c.external_call_id.clone().unwrap_or_default()).or_default().push(c.call_id.clone());
    }
    assert_eq!(per_customer_call.len(), n, "one Bitrix24 call per customer call: {per_customer_call:#?}");
    assert!(per_customer_call.values().all(|ids| ids.len() == 1), "a second CALL_ID for a customer call: {per_customer_call:#?}");
    assert!(fake.active_calls().is_empty(), "left open: {:#?}", fake.active_calls());
    let mut finishes: BTreeMap<String, usize> = BTreeMap::new();
    for f in fake.calls_of("telephony.externalcall.finish") {
        *finishes.entry(f.params["CALL_ID"].as_str().unwrap_or_default().to_owned()).or_insert(0) += 1;
    }
    assert_eq!(finishes.len(), n, "{finishes:?}");
    assert!(finishes.values().all(|&k| k == 1), "a call finished twice: {finishes:?}");
    for c in calls {
        let f = c.finished.as_ref().expect("finished");
        let got = (c.user_id, f.user_id, f.status_code.as_deref(), f.duration);
        assert_eq!(got, (register_user, finish_user, Some("200"), duration), "{c:#?}");
    }
}

/// Every request executes (or not) with `fault` while the calls go on; then the portal heals.
async fn calls_through(fault: Fault, xcid: &str) -> FakeB24 {
    let fake = FakeB24::spawn().await;
    let o = office(&fake).await;
    fake.set_fault_mode(Some(fault));
    answered_calls(&o, xcid).await;
    // Several rounds of resends meet the fault after the last call ended.
    tokio::time::sleep(Duration::from_secs(2)).await;
    fake.set_fault_mode(None);
    let calls = settled(&fake, CALLS).await;
    assert_exactly_once(&fake, &calls, CALLS, 1, 11, TALK_SECONDS);
    drop(o);
    fake
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_lost_to_a_connection_reset_after_execution_create_no_second_call() {
    let fake = calls_through(Fault::LoseAnswerReset, "f-lost-reset").await;
    let resent = fake.calls_of("telephony.externalcall.register").len();
    assert!(resent > CALLS, "registers were executed again ({resent}) and Bitrix24 gave the same CALL_ID back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_lost_to_a_proxys_502_after_execution_create_no_second_call() {
    let fake = calls_through(Fault::LoseAnswer502, "f-lost-502").await;
    assert!(fake.calls_of("telephony.externalcall.register").len() > CALLS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_stalled_past_the_timeout_create_no_second_call() {
    // The fake executes each request 1.5 s after it came; callgate gave up after 1 s.
    calls_through(Fault::Stall(Duration::from_millis(1500)), "f-stall").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_reset_before_execution_delay_delivery_and_lose_nothing() {
    let fake = calls_through(Fault::Reset, "f-reset").await;
    assert!(fake.requests().iter().any(|r| r.fault == Some(Fault::Reset)), "the resets were seen");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_to_the_first_request_after_an_outage_creates_no_second_call() {
    // Register and finish of every call are both queued when the portal comes back; the first
    // request is executed and its answer lost. Had it carried registers and their finishes, the
    // resend would have registered the finished calls a second time.
    let fake = FakeB24::spawn().await;
    let o = office(&fake).await;
    fake.set_fault_mode(Some(Fault::Overload503));
    answered_calls(&o, "f-outage").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    fake.fail_next(1, Fault::LoseAnswerReset);
    fake.set_fault_mode(None);
    let calls = settled(&fake, CALLS).await;
    assert_exactly_once(&fake, &calls, CALLS, 1, 11, TALK_SECONDS);
    let lost: Vec<_> = fake.requests().into_iter().filter(|r| r.fault == Some(Fault::LoseAnswerReset)).collect();
    assert_eq!(lost.len(), 1);
    let methods: Vec<&str> = lost[0].sub_calls.iter().map(|s| s.method.as_str()).collect();
    assert!(methods.contains(&"telephony.externalcall.register") && !methods.contains(&"telephony.externalcall.finish"), "the lost request: {methods:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_deactivated_in_bitrix24_fall_back_to_the_directions_default_responsible() {
    let fake = FakeB24::spawn().await;
    let o = office(&fake).await;
    // The talker of the incoming calls (11) and the calling agent of the outgoing one (12) are
    // deactivated in Bitrix24 after callgate mapped them.
    fake.set_user_active(11, false);
    fake.set_user_active(12, false);
    answered_calls(&o, "f-user").await;
    let calls = settled(&fake, CALLS).await;
    // Incoming: registered to the default (1) as usual; the finish names the talker, refused,
    // so the incoming default takes it, with the real status and talk time.
    assert_exactly_once(&fake, &calls, CALLS, 1, 1, TALK_SECONDS);
    let pbx = o.pbx_answers("pbx-uas-answer.xml");
    o.agent_dials("102", "agent-dial.xml", "79160000002", pbx).await;
    let calls = settled(&fake, CALLS + 1).await;
    let out = calls.iter().find(|c| c.call_type == 1).expect("the outgoing call is delivered");
    let f = out.finished.as_ref().unwrap();
    assert_eq!((out.user_id, f.user_id, f.status_code.as_deref()), (2, 2, Some("200")), "the outgoing default (2) for register and finish: {out:#?}");
    // The operator is told: the calls view of delivery problems names both replacements.
    let (status, problems) = o.gw.api(Method::GET, "/api/v1/calls?delivery=problems", None).await;
    assert_eq!(status, 200, "{problems}");
    let notes: Vec<(u64, u64, String)> = problems
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["notes"].as_array().cloned().unwrap_or_default())
        .map(|n| (n["user_refused"].as_u64().unwrap(), n["replaced_by"].as_u64().unwrap(), n["method"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(notes.iter().filter(|n| *n == &(11, 1, "telephony.externalcall.finish".to_owned())).count(), CALLS, "{notes:?}");
    assert!(notes.contains(&(12, 2, "telephony.externalcall.register".to_owned())) && notes.contains(&(12, 2, "telephony.externalcall.finish".to_owned())), "{notes:?}");
    let metrics = o.gw.client.get(format!("{}/metrics", o.gw.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l.starts_with("callgate_crm_user_fallback_total")), "counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intents_past_the_delivery_horizon_are_kept_listed_and_delivered_once_the_portal_heals() {
    let fake = FakeB24::spawn().await;
    let o = office_with(&fake, |cfg| cfg.crm.delivery_horizon = Duration::from_secs(2)).await;
    fake.set_fault_mode(Some(Fault::Overload503));
    answered_calls(&o, "f-horizon").await;
    // Past the horizon the waiting intents (registers, and the finishes that wait for them) are
    // overdue: listed with the call, counted, never dropped.
    let mut problems = serde_json::Value::Null;
    for _ in 0..100 {
        problems = o.gw.api(Method::GET, "/api/v1/calls?delivery=problems", None).await.1;
        let overdue = |p: &serde_json::Value| p["queued"].as_array().is_some_and(|q| q.iter().any(|i| i["kind"] == "finish" && i["overdue"] == true));
        if problems.as_array().is_some_and(|a| a.len() == CALLS && a.iter().all(overdue)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listed = problems.as_array().expect("a list");
    assert_eq!(listed.len(), CALLS, "{problems:#}");
    assert!(listed.iter().all(|p| p["call_id"].is_null() && p["finished"] == false && p["dead"].as_array().is_some_and(Vec::is_empty)), "{problems:#}");
    let metrics = o.gw.client.get(format!("{}/metrics", o.gw.base)).send().await.unwrap().text().await.unwrap();
    // The gauge is process-wide (other tests' gateways set it too): only its presence is checked.
    assert!(metrics.lines().any(|l| l.starts_with("callgate_crm_overdue_intents ")), "the overdue gauge is exported");
    fake.set_fault_mode(None);
    let calls = settled(&fake, CALLS).await;
    assert_exactly_once(&fake, &calls, CALLS, 1, 11, TALK_SECONDS);
    let (_, after) = o.gw.api(Method::GET, "/api/v1/calls?delivery=problems", None).await;
    assert_eq!(after, serde_json::json!([]), "nothing left to look at once delivered");
}
