//! Bitrix24 end to end: SIP in (the redirect listener and the proxy, SIPp as PBX and phones),
//! REST calls out to the strict fake Bitrix24 (`fake_b24`), asserting what reached it.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::common::phone_ip;
use crate::common::sipp::{free_addr, free_port, Sipp};
use crate::fake_b24::{FakeB24, Fault};
use crate::proxy::{Office, CUSTOMER};

pub(crate) async fn office(fake: &FakeB24) -> Office {
    // User 2 is the portal's default responsible for outgoing calls (user 1, the admin, for incoming).
    fake.add_user(crate::fake_b24::User::new(2, "Sales desk", None));
    Office::open_with("udp", Some(&fake.webhook_url()), |cfg| {
        cfg.crm.show_hide_window = Duration::from_millis(100);
        cfg.crm.max_backoff = Duration::from_secs(2);
        cfg.crm.request_timeout = Duration::from_secs(3);
    })
    .await
}

/// Waits (bounded: 30 s in 100 ms steps) until `n` calls are registered and finished.
pub(crate) async fn finished_calls(fake: &FakeB24, n: usize) -> Vec<crate::fake_b24::CallState> {
    for _ in 0..300 {
        let calls = fake.registered();
        if calls.len() >= n && calls.iter().all(|c| c.finished.is_some()) {
            return calls;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("expected {n} finished calls, have {:#?}", fake.registered());
}

/// Successful finishes per CALL_ID (a second one would be a duplicate report).
fn successful_finishes(fake: &FakeB24) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for c in fake.calls_of("telephony.externalcall.finish").into_iter().filter(|c| c.error.is_none()) {
        *m.entry(c.params["CALL_ID"].as_str().unwrap_or_default().to_owned()).or_insert(0) += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_call_is_registered_shown_and_finished_with_the_talker() {
    let fake = FakeB24::spawn().await;
    let o = office(&fake).await;
    let phone = o.phone("101", "agent-answer.xml", &[]);
    o.pbx_calls("101", "pbx-answered.xml", "b-answered", &[], vec![phone]).await;
    let calls = finished_calls(&fake, 1).await;
    let c = &calls[0];
    assert_eq!((c.user_id, c.call_type, c.phone_number.as_str(), c.crm_create), (1, 2, CUSTOMER, true), "{c:#?}");
    assert!(c.external_call_id.as_deref().is_some_and(|id| id.starts_with("callgate-")));
    assert_eq!(c.shows, [vec![11]]);
    let f = c.finished.as_ref().unwrap();
    assert_eq!((f.user_id, f.status_code.as_deref(), f.add_to_chat.as_deref()), (11, Some("200"), Some("1")), "{f:#?}");
    // The talker's card is hidden when the talk ends (left out when the finish, which hides
    // it anyway, goes in the same request); finish comes last.
    let order: Vec<String> = fake.calls().iter().map(|r| r.method.clone()).filter(|m| m != "telephony.externalcall.hide").collect();
    assert_eq!(order, ["telephony.externalcall.register", "telephony.externalcall.show", "telephony.externalcall.finish"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_call_goes_to_the_default_responsible_with_304() {
    let fake = FakeB24::spawn().await;
    let o = office(&fake).await;
    let phone = o.phone("101", "agent-ring.xml", &[]);
    o.pbx_calls("101", "pbx-cancel.xml", "b-missed", &[], vec![phone]).await;
    let calls = finished_calls(&fake, 1).await;
    let f = calls[0].finished.as_ref().unwrap();
    assert_eq!((f.user_id, f.status_code.as_deref(), f.duration), (1, Some("304"), 0), "{f:#?}");
    assert!(calls[0].missed);
    assert_eq!(calls[0].hides, [vec![11]], "the ringing card is hidden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_or_last_talker_setting_flips_the_finish_user_on_a_transferred_call() {
    let fake = FakeB24::spawn().await;
    let o = office(&fake).await;
    for (assign, xcid, want) in [("first", "b-first", 11), ("last", "b-last", 12)] {
        o.assign(assign).await;
        let a = o.phone("101", "agent-blind-transfer.xml", &[("target", "102")]);
        o.pbx_calls("101", "pbx-refer-target.xml", xcid, &[], vec![a]).await;
        let b = o.phone("102", "agent-answer.xml", &[]);
        o.pbx_calls("102", "pbx-transferred-leg.xml", xcid, &[("referrer", "101")], vec![b]).await;
        let n = if assign == "first" { 1 } else { 2 };
        let calls = finished_calls(&fake, n).await;
        let last = calls.iter().max_by_key(|c| c.start_unix).unwrap();
        assert_eq!(last.finished.as_ref().unwrap().user_id, want, "{assign}: {last:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outgoing_call_from_an_unmapped_extension_goes_to_the_default_outgoing_responsible() {
    let fake = FakeB24::spawn().await;
    let o = office(&fake).await;
    // Extension 199 has no mapping; its phone sits on an agent's address (not the PBX's). It is
    // an agent once the PBX (its registrar) accepted its registration through callgate: before
    // that its call is nobody's and refused.
    let at = free_addr(phone_ip("101"));
    let refused = Sipp::new("agent-dial.xml", &o.sip).at(at).key("ext", "199").key("dial", CUSTOMER).key("talk_ms", "300").run().await;
    assert_eq!(refused.successful, 0, "{}", refused.screen);
    let registrar = Sipp::new("pbx-registrar.xml", &o.sip).port(o.pbx).key("user", "199").key("password", "199-secret").key("realm", "pbx").key("granted", "600").spawn();
    let phone = Sipp::new("phone-register.xml", &o.sip).at(at).key("ext", "199").key("domain", "office.bitrix24.ru").key("expires", "600").key("granted", "600");
    phone.args(&["-au", "199", "-ap", "199-secret", "-auth_uri", "office.bitrix24.ru"]).run().await.assert_all_ok(1);
    let registrar = registrar.wait().await;
    assert_eq!(registrar.successful, 1, "{}", registrar.screen);
    let pbx = o.pbx_answers("pbx-uas-answer.xml");
    let phone = Sipp::new("agent-dial.xml", &o.sip).at(at).key("ext", "199").key("dial", CUSTOMER).key("talk_ms", "300").run().await;
    let pbx = pbx.wait().await;
    assert_eq!(pbx.successful, 1, "{}", pbx.screen);
    phone.assert_all_ok(1);
    let tracked = o.finished_where(|c| c["kind"] == "outgoing").await;
    assert_eq!(tracked["responsible"], 2, "{tracked:#}");
    let calls = finished_calls(&fake, 1).await;
    assert_eq!((calls[0].user_id, calls[0].call_type, calls[0].crm_create), (2, 1, false), "{:#?}", calls[0]);
    assert_eq!(calls[0].finished.as_ref().unwrap().user_id, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inactive_portal_gets_no_call_at_all() {
    let fake = FakeB24::spawn().await;
    let o = office(&fake).await;
    o.settings(|s| s["active"] = json!(false)).await;
    let phone = o.phone("101", "agent-answer.xml", &[]);
    o.pbx_calls("101", "pbx-answered.xml", "b-inactive", &[], vec![phone]).await;
    o.finished("b-inactive").await; // tracked all the same
    tokio::time::sleep(Duration::from_millis(1500)).await; // longer than the show/hide window and a worker round
    assert!(fake.requests().is_empty(), "{:#?}", fake.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routed_call_is_registered_to_the_manager_and_its_lead_gets_only_the_chosen_utm_tags() {
    let fake = FakeB24::spawn().await;
    let o = office(&fake).await;
    let line = "74951234567";
    let body = json!({ "number": line, "utm": { "utm_source": "google", "utm_medium": "cpc", "utm_campaign": "spring", "utm_content": "ad1", "utm_term": "sofa" } });
    assert_eq!(o.gw.api(Method::POST, &format!("/api/v1/portals/{}/lines", o.portal), Some(body)).await.0, 201);
    o.settings(|s| {
        s["other"]["calltracking"] = json!(true);
        s["other"]["utm_tags"] = json!(["utm_source", "utm_campaign"]);
    })
    .await;
    let csv = format!("{CUSTOMER},12\n");
    let resp = o.gw.client.post(format!("{}/api/v1/portals/{}/index", o.gw.base, o.portal)).bearer_auth(crate::common::TOKEN).header("content-type", "text/csv").body(csv).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    Sipp::new("pbx-route.xml", &o.sip).port(free_port()).key("caller", CUSTOMER).key("line", line).key("xcid", "b-routed").run().await.assert_all_ok(1);
    let phone = o.phone("102", "agent-answer.xml", &[]);
    o.pbx_calls("102", "pbx-answered.xml", "b-routed", &[], vec![phone]).await;
    let calls = finished_calls(&fake, 1).await;
    assert_eq!((calls[0].user_id, calls[0].line_number.as_deref()), (12, Some(line)), "registered to the personal manager: {:#?}", calls[0]);
    let lead = calls[0].created_lead.expect("CRM_CREATE made a lead");
    for _ in 0..100 {
        if fake.leads().iter().any(|l| l.id == lead && l.fields.keys().any(|k| k.starts_with("UTM_"))) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lead = fake.leads().into_iter().find(|l| l.id == lead).unwrap();
    let keys: Vec<&str> = lead.fields.keys().map(String::as_str).filter(|k| k.starts_with("UTM_")).collect();
    assert_eq!(keys, ["UTM_CAMPAIGN", "UTM_SOURCE"], "{lead:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_of_503s_delays_but_loses_nothing_and_finishes_each_call_once() {
    let fake = FakeB24::spawn().await;
    let o = office(&fake).await;
    fake.set_fault_mode(Some(Fault::Status503QueryLimit));
    let n = 200;
    let phone = Sipp::new("agent-answer.xml", &o.sip).at(o.phones["101"]).key("ext", "101").key("ring_ms", "10").calls(n).spawn();
    let pbx = Sipp::new("pbx-answered-load.xml", &o.sip).port(o.pbx).key("ext", "101").key("caller", CUSTOMER).key("xcid", "b-load").key("hold_ms", "10").calls(n).rate(50).run().await;
    pbx.assert_all_ok(n as u64);
    assert!(phone.wait().await.successful >= n as u64 - 1);
    assert!(fake.rejected() > 0, "the outage was seen");
    assert!(fake.registered().is_empty());
    fake.set_fault_mode(None);
    let calls = finished_calls(&fake, n).await;
    assert_eq!(calls.len(), n);
    let finishes = successful_finishes(&fake);
    assert_eq!(finishes.len(), n);
    assert!(finishes.values().all(|&k| k == 1), "{finishes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bitrix24_stalling_for_a_minute_delays_delivery_and_loses_nothing() {
    let fake = FakeB24::spawn().await;
    let o = office(&fake).await;
    // Every request hangs for a minute (the client gives up after 3 s and retries).
    fake.set_fault_mode(Some(Fault::Stall(Duration::from_secs(60))));
    let stall_started = std::time::Instant::now();
    let n = 200;
    let phone = Sipp::new("agent-answer.xml", &o.sip).at(o.phones["101"]).key("ext", "101").key("ring_ms", "10").calls(n).spawn();
    let pbx = Sipp::new("pbx-answered-load.xml", &o.sip).port(o.pbx).key("ext", "101").key("caller", CUSTOMER).key("xcid", "b-stall").key("hold_ms", "10").calls(n).rate(50).run().await;
    pbx.assert_all_ok(n as u64);
    assert!(phone.wait().await.successful >= n as u64 - 1);
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(stall_started.elapsed())).await;
    fake.set_fault_mode(None);
    // Stalled requests still complete on the fake after their minute; retries overlap them.
    let mut calls = Vec::new();
    for _ in 0..1200 {
        calls = fake.registered();
        if calls.len() >= n && calls.iter().all(|c| c.finished.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(calls.iter().filter(|c| c.finished.is_some()).count(), n, "all {n} calls registered and finished: {} registered", calls.len());
    let finishes = successful_finishes(&fake);
    assert!(finishes.values().all(|&k| k == 1), "{finishes:?}");
}

/// Benchmark (not part of the test run): `cargo test --release --test it -- --ignored --nocapture
/// crm_load_benchmark`. 10 calls/s for one portal for a minute: HTTP requests per second and per
/// call, and whether Bitrix24's limit was ever hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: a minute of load; prints figures"]
async fn crm_load_benchmark() {
    let fake = FakeB24::spawn().await;
    let o = Office::open_with("udp", Some(&fake.webhook_url()), |_| {}).await; // default [crm] settings
    let (n, rate) = (600usize, 10u32);
    let long = ["-timeout", "150s"]; // the last -timeout given wins
    let phone = Sipp::new("agent-answer.xml", &o.sip).at(o.phones["101"]).key("ext", "101").key("ring_ms", "500").calls(n).args(&long).spawn();
    let started = std::time::Instant::now();
    let pbx = Sipp::new("pbx-answered-load.xml", &o.sip).port(o.pbx).key("ext", "101").key("caller", CUSTOMER).key("xcid", "bench").key("hold_ms", "3000").calls(n).rate(rate).args(&long).run().await;
    pbx.assert_all_ok(n as u64);
    phone.wait().await;
    let calls = finished_calls(&fake, n).await;
    let elapsed = started.elapsed().as_secs_f64();
    let requests = fake.requests().len();
    let commands = fake.calls().len();
    println!(
        "crm load: {n} calls at {rate}/s -> {} registered and finished; {requests} HTTP requests ({commands} REST calls) in {elapsed:.1} s = {:.2} requests/s, {:.3} requests per call; QUERY_LIMIT_EXCEEDED {}",
        calls.len(),
        requests as f64 / elapsed,
        requests as f64 / n as f64,
        fake.rejected()
    );
    assert_eq!(fake.rejected(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ring_all_group_shows_the_card_to_all_and_hides_it_for_those_who_did_not_answer() {
    let fake = FakeB24::spawn().await;
    let o = office(&fake).await;
    let phones = vec![o.phone("101", "agent-ring.xml", &[]), o.phone("102", "agent-answer.xml", &[("ring_ms", "300")]), o.phone("103", "agent-ring.xml", &[])];
    let mut legs = Vec::new();
    for (ext, scenario) in [("101", "pbx-cancel.xml"), ("102", "pbx-answered.xml"), ("103", "pbx-cancel.xml")] {
        let s = Sipp::new(scenario, &o.sip).port(free_port()).key("ext", ext).key("caller", CUSTOMER).key("xcid", "b-group").key("hold_ms", "800");
        legs.push(tokio::spawn(s.run()));
    }
    for l in legs {
        l.await.unwrap().assert_all_ok(1);
    }
    for p in phones {
        p.wait().await.assert_all_ok(1);
    }
    let calls = finished_calls(&fake, 1).await;
    assert_eq!(calls.len(), 1, "one Bitrix24 call for the three legs: {calls:#?}");
    let shown: std::collections::BTreeSet<u64> = calls[0].shows.iter().flatten().copied().collect();
    let hidden: std::collections::BTreeSet<u64> = calls[0].hides.iter().flatten().copied().collect();
    assert_eq!(shown, [11, 12, 13].into());
    assert!(hidden.contains(&11) && hidden.contains(&13) && !calls[0].hides.iter().any(|h| h == &vec![12]), "{calls:#?}");
    assert!(calls[0].shows.iter().any(|s| s.len() > 1), "shows of one call travel together: {:?}", calls[0].shows);
    assert_eq!(calls[0].finished.as_ref().unwrap().user_id, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_rejected_outgoing_busy_and_internal_calls_are_reported_as_such() {
    let fake = FakeB24::spawn().await;
    let o = office(&fake).await;
    for (scenario, xcid) in [("agent-busy.xml", "b-busy"), ("agent-reject.xml", "b-reject")] {
        let phone = o.phone("101", scenario, &[]);
        o.pbx_calls("101", "pbx-failed.xml", xcid, &[], vec![phone]).await;
    }
    let pbx = o.pbx_answers("pbx-uas-busy.xml");
    o.agent_dials("102", "agent-dial-busy.xml", "79160000001", pbx).await;
    let pbx = o.pbx_answers("pbx-uas-answer.xml");
    o.agent_dials("101", "agent-dial.xml", "103", pbx).await; // internal: nothing goes to Bitrix24
    let calls = finished_calls(&fake, 3).await;
    let mut got: Vec<(u8, String, u64, Option<String>)> = calls.iter().map(|c| {
        let f = c.finished.as_ref().unwrap();
        (c.call_type, c.phone_number.clone(), f.user_id, f.status_code.clone())
    }).collect();
    got.sort();
    assert_eq!(got, [
        (1, "79160000001".to_owned(), 12, Some("486".to_owned())),
        (2, CUSTOMER.to_owned(), 1, Some("304".to_owned())),
        (2, CUSTOMER.to_owned(), 1, Some("304".to_owned())),
    ]);
    assert!(calls.iter().all(|c| c.phone_number != "103"), "no internal call reported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_of_an_active_portal_without_credentials_wait_and_are_delivered_once_credentials_are_set() {
    let fake = FakeB24::spawn().await;
    let o = Office::open_with("udp", None, |cfg| cfg.crm.show_hide_window = Duration::from_millis(100)).await;
    o.settings(|s| s["active"] = json!(true)).await;
    let phone = o.phone("101", "agent-answer.xml", &[]);
    o.pbx_calls("101", "pbx-answered.xml", "b-parked", &[], vec![phone]).await;
    o.finished("b-parked").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(fake.requests().is_empty(), "no credentials, no request: {:#?}", fake.requests());
    // The operator adds the webhook: the waiting call goes out (the worker looks again every 3 s).
    let path = format!("/api/v1/portals/{}", o.portal);
    let body = json!({ "domain": "office.bitrix24.ru", "auth": { "webhook_url": fake.webhook_url() } });
    let (status, answer) = o.gw.api(Method::PUT, &path, Some(body)).await;
    assert_eq!(status, 200, "{answer}");
    let calls = finished_calls(&fake, 1).await;
    assert_eq!(calls.len(), 1, "{calls:#?}");
    assert_eq!(successful_finishes(&fake).values().copied().collect::<Vec<_>>(), [1]);
}
