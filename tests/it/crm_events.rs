//! Bitrix24 events and the OAuth app mode end to end, against the strict fake Bitrix24:
//! `POST /api/v1/bitrix24/events` (install, authentication, de-duplication, click-to-call, CRM
//! changes) and the outbox delivering through the installed app's `client_endpoint`.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::sipp::Sipp;
use crate::fake_b24::{AppInstall, EntityKind, FakeB24, Fault, User, Via};
use crate::proxy::{Office, CUSTOMER};

pub(crate) const CLIENT_ID: &str = "local.callgate.1";
const SECRET: &str = "app-secret";

/// An office (agents 101..103 = users 11..13) whose portal is the fake, set up as an OAuth app
/// and active; the app exists at the fake but is not installed at callgate yet.
async fn oauth_office(fake: &FakeB24) -> (Office, AppInstall, String) {
    oauth_office_with(fake, |_| {}).await
}

/// [`oauth_office`] with a further configuration `tweak`.
pub(crate) async fn oauth_office_with(
    fake: &FakeB24,
    tweak: impl FnOnce(&mut callgate::config::Config),
) -> (Office, AppInstall, String) {
    fake.add_user(User::new(2, "Sales desk", None));
    let o = Office::open_with("udp", None, |cfg| {
        cfg.crm.show_hide_window = Duration::from_millis(100);
        cfg.crm.max_backoff = Duration::from_secs(2);
        cfg.crm.request_timeout = Duration::from_secs(5);
        tweak(cfg);
    })
    .await;
    let app = fake.install_app(CLIENT_ID, SECRET);
    let body = json!({ "domain": fake.domain(), "auth": { "oauth": { "client_id": CLIENT_ID, "client_secret": SECRET, "oauth_server": fake.oauth_server() } } });
    let (status, answer) =
        o.gw.api(
            Method::PUT,
            &format!("/api/v1/portals/{}", o.portal),
            Some(body),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    o.settings(|s| s["active"] = json!(true)).await;
    let url = format!("{}/api/v1/bitrix24/events", o.gw.base);
    (o, app, url)
}

/// [`oauth_office`] with the app installed (ONAPPINSTALL delivered) and its events bound.
pub(crate) async fn installed(fake: &FakeB24) -> (Office, AppInstall, String) {
    let (o, app, url) = oauth_office(fake).await;
    assert_eq!(fake.emit_install(&url, &app).await, 200);
    wait_for("the app's events bound to callgate", || {
        fake.bindings()
            .iter()
            .any(|b| b.event == "ONEXTERNALCALLSTART" && b.handler == url)
    })
    .await;
    (o, app, url)
}

/// Polls `cond` every 50 ms for up to 20 s.
pub(crate) async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..400 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Waits until the fake delivered `event` to `url` and callgate answered 200.
async fn delivered(fake: &FakeB24, event: &str, url: &str) {
    wait_for(&format!("{event} delivered"), || {
        fake.deliveries()
            .iter()
            .any(|d| d.event == event && d.url == url && d.status.is_some())
    })
    .await;
    let d = fake
        .deliveries()
        .into_iter()
        .find(|d| d.event == event && d.url == url)
        .unwrap();
    assert_eq!(d.status, Some(200), "{d:#?}");
}

/// The form pairs of an event delivery (as Bitrix24's queue server sends them).
pub(crate) fn event_form(
    event: &str,
    data: &[(&str, &str)],
    ts: i64,
    auth: &[(String, String)],
) -> Vec<(String, String)> {
    let mut pairs = vec![
        ("event".to_owned(), event.to_owned()),
        ("event_handler_id".to_owned(), "7".to_owned()),
    ];
    pairs.extend(
        data.iter()
            .map(|(k, v)| (bracket("data", k), (*v).to_owned())),
    );
    pairs.push(("ts".to_owned(), ts.to_string()));
    pairs.extend(auth.iter().map(|(k, v)| (format!("auth[{k}]"), v.clone())));
    pairs
}

/// `data[FIELDS][ID]` from `FIELDS[ID]`.
fn bracket(prefix: &str, key: &str) -> String {
    match key.split_once('[') {
        Some((base, rest)) => format!("{prefix}[{base}][{rest}"),
        None => format!("{prefix}[{key}]"),
    }
}

pub(crate) async fn post(o: &Office, url: &str, pairs: &[(String, String)]) -> (u16, Value) {
    crate::common::json_of(o.gw.client.post(url).form(pairs).send().await.unwrap()).await
}

pub(crate) fn with_token(app: &AppInstall, fake: &FakeB24, token: &str) -> Vec<(String, String)> {
    let mut auth = fake.app_event_auth(app);
    for (k, v) in &mut auth {
        if k == "application_token" {
            *v = token.to_owned();
        }
    }
    auth
}

/// Waits (bounded) until `n` calls are registered at the fake and finished.
async fn finished_calls(fake: &FakeB24, n: usize) -> Vec<crate::fake_b24::CallState> {
    wait_for(&format!("{n} finished calls"), || {
        let calls = fake.registered();
        calls.len() >= n && calls.iter().all(|c| c.finished.is_some())
    })
    .await;
    fake.registered()
}

async fn route_user(o: &Office) -> Value {
    let (status, d) =
        o.gw.api(
            Method::GET,
            &format!("/api/v1/route?caller={CUSTOMER}"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{d}");
    d["user_id"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_installed_app_delivers_an_answered_call_through_its_client_endpoint() {
    let fake = FakeB24::spawn().await;
    let (o, _app, url) = installed(&fake).await;
    let bound: Vec<String> = fake
        .bindings()
        .iter()
        .filter(|b| b.handler == url)
        .map(|b| b.event.clone())
        .collect();
    assert!(
        bound.contains(&"ONCRMCONTACTUPDATE".to_owned()),
        "{bound:?}"
    );
    let phone = o.phone("101", "agent-answer.xml", &[]);
    o.pbx_calls("101", "pbx-answered.xml", "e-oauth", &[], vec![phone])
        .await;
    let calls = finished_calls(&fake, 1).await;
    assert_eq!(
        (calls[0].user_id, calls[0].call_type),
        (1, 2),
        "{:#?}",
        calls[0]
    );
    assert_eq!(calls[0].finished.as_ref().unwrap().user_id, 11);
    let batches: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "batch")
        .collect();
    assert!(!batches.is_empty());
    assert!(
        batches
            .iter()
            .all(|r| matches!(&r.via, Via::OAuth { token } if !token.is_empty())),
        "every delivery used the app's token: {batches:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_with_a_wrong_token_or_from_an_unknown_portal_are_refused_and_change_nothing() {
    let fake = FakeB24::spawn().await;
    let (o, app, url) = installed(&fake).await;
    let contact = fake.add_contact(CUSTOMER, 12).to_string();
    let wrong = with_token(&app, &fake, "not-the-token");
    let ts = fake.now_unix();
    let (status, body) = post(
        &o,
        &url,
        &event_form(
            "ONCRMCONTACTUPDATE",
            &[("FIELDS[ID]", &contact)],
            ts,
            &wrong,
        ),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let click = [
        ("CALL_ID", "externalCall.0123456789"),
        ("USER_ID", "11"),
        ("PHONE_NUMBER", CUSTOMER),
    ];
    assert_eq!(
        post(
            &o,
            &url,
            &event_form("ONEXTERNALCALLSTART", &click, ts, &wrong)
        )
        .await
        .0,
        403
    );
    let stranger = vec![
        ("member_id".to_owned(), "0000".to_owned()),
        ("domain".to_owned(), "other.bitrix24.ru".to_owned()),
        (
            "application_token".to_owned(),
            app.application_token.clone(),
        ),
    ];
    assert_eq!(
        post(
            &o,
            &url,
            &event_form(
                "ONCRMCONTACTUPDATE",
                &[("FIELDS[ID]", &contact)],
                ts,
                &stranger
            )
        )
        .await
        .0,
        403
    );
    // An install for a domain no OAuth portal has is refused too.
    let mut foreign = app.clone();
    foreign.domain = "other.bitrix24.ru".into();
    assert_eq!(fake.emit_install(&url, &foreign).await, 403);
    // Malformed deliveries: 400 naming the field.
    let (status, body) = post(
        &o,
        &url,
        &[("data[FIELDS][ID]".to_owned(), contact.clone())],
    )
    .await;
    assert_eq!(
        (status, body["fields"][0]["field"].as_str()),
        (400, Some("event")),
        "{body}"
    );
    let (status, body) = post(
        &o,
        &url,
        &[
            ("event".to_owned(), "ONCRMCONTACTUPDATE".to_owned()),
            ("ts".to_owned(), "soon".to_owned()),
        ],
    )
    .await;
    assert_eq!(
        (status, body["fields"][0]["field"].as_str()),
        (400, Some("ts")),
        "{body}"
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        fake.attempts_of("crm.contact.get").is_empty(),
        "nothing was processed"
    );
    assert_eq!(route_user(&o).await, Value::Null, "the index did not move");
    let metrics =
        o.gw.client
            .get(format!("{}/metrics", o.gw.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
    assert!(
        metrics.contains(
            r#"callgate_b24_events_total{event="ONCRMCONTACTUPDATE",outcome="forbidden"}"#
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_delivery_is_processed_once() {
    let fake = FakeB24::spawn().await;
    let (o, app, url) = installed(&fake).await;
    let contact = fake.add_contact(CUSTOMER, 12).to_string();
    let auth = fake.app_event_auth(&app);
    let form = event_form(
        "ONCRMCONTACTUPDATE",
        &[("FIELDS[ID]", &contact)],
        fake.now_unix(),
        &auth,
    );
    assert_eq!(
        post(&o, &url, &form).await,
        (200, json!({ "status": "queued" }))
    );
    assert_eq!(
        post(&o, &url, &form).await,
        (200, json!({ "status": "duplicate" }))
    );
    wait_for("the contact re-read", || {
        !fake.attempts_of("crm.contact.get").is_empty()
    })
    .await;
    wait_for("the index to follow the contact", || {
        let snapshot = fake.calls_of("telephony.externalcall.searchcrmentities");
        !snapshot.is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        fake.attempts_of("crm.contact.get").len(),
        1,
        "processed once"
    );
    assert_eq!(route_user(&o).await, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refreshed_once_while_twenty_intents_wait() {
    let fake = FakeB24::spawn().await;
    let (o, _app, _url) = installed(&fake).await;
    // The install itself refreshed once (its proof); count from here.
    let (refreshes, requests) = (fake.refresh_count(), fake.oauth_requests().len());
    fake.expire_access_tokens();
    // The refresh takes 2 s: every call of the load piles up behind it.
    fake.fail_next_oauth(1, Fault::Stall(Duration::from_secs(2)));
    let n = 20;
    let phone = Sipp::new("agent-answer.xml", &o.sip)
        .at(o.phones["101"])
        .key("ext", "101")
        .key("ring_ms", "10")
        .calls(n)
        .spawn();
    let pbx = Sipp::new("pbx-answered-load.xml", &o.sip)
        .port(o.pbx)
        .key("ext", "101")
        .key("caller", CUSTOMER)
        .key("xcid", "e-refresh")
        .key("hold_ms", "10")
        .calls(n)
        .rate(20)
        .run()
        .await;
    pbx.assert_all_ok(n as u64);
    assert!(phone.wait().await.successful >= n as u64 - 1);
    let calls = finished_calls(&fake, n).await;
    assert_eq!(calls.len(), n);
    assert_eq!(
        fake.refresh_count(),
        refreshes + 1,
        "one refresh for everyone"
    );
    let stored = fake.oauth_requests();
    assert_eq!(stored.len(), requests + 1, "{stored:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_refresh_keeps_the_intents_until_the_app_is_reinstalled() {
    let fake = FakeB24::spawn().await;
    let (o, _app, url) = installed(&fake).await;
    // callgate's refresh token stops working (180 days passed, or it was spent elsewhere).
    fake.invalidate_refresh_tokens();
    let requests = fake.oauth_requests().len();
    fake.expire_access_tokens();
    let phone = o.phone("101", "agent-answer.xml", &[]);
    o.pbx_calls("101", "pbx-answered.xml", "e-reinstall", &[], vec![phone])
        .await;
    wait_for("a refused refresh", || {
        fake.oauth_requests().len() > requests
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        fake.registered().is_empty(),
        "nothing delivered without a token"
    );
    // The admin reinstalls the app: new tokens, and the queued intents go out.
    let again = fake.issue_tokens(CLIENT_ID);
    assert_eq!(fake.emit_install(&url, &again).await, 200);
    let calls = finished_calls(&fake, 1).await;
    assert_eq!(
        calls[0].finished.as_ref().unwrap().user_id,
        11,
        "{:#?}",
        calls[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_to_call_rings_the_agent_is_not_registered_again_and_finishes_with_the_events_call_id(
) {
    let fake = FakeB24::spawn().await;
    let (o, _app, url) = installed(&fake).await;
    // The agent's phone: answers callgate's INVITE and accepts its REFER.
    let phone = o.phone("101", "agent-refer.xml", &[]);
    // Bitrix24 registers the call and fires ONEXTERNALCALLSTART to the bound handler.
    let call_id = fake.click_to_call(CLIENT_ID, 11, &format!("+{CUSTOMER}"), None);
    delivered(&fake, "ONEXTERNALCALLSTART", &url).await;
    let rang = phone.wait().await;
    assert!(
        rang.successful == 1 && rang.failed == 0,
        "{}\n{}",
        rang.screen,
        rang.errors
    );
    // The phone follows the REFER: it calls the number through callgate to the PBX.
    let pbx = o.pbx_answers("pbx-uas-answer.xml");
    o.agent_dials("101", "agent-dial.xml", CUSTOMER, pbx).await;
    wait_for("the click's call finished", || {
        fake.call_state(&call_id)
            .is_some_and(|c| c.finished.is_some())
    })
    .await;
    assert!(
        fake.calls_of("telephony.externalcall.register").is_empty(),
        "no second register: {:#?}",
        fake.calls()
    );
    let finishes = fake.calls_of("telephony.externalcall.finish");
    assert_eq!(finishes.len(), 1, "{finishes:#?}");
    assert_eq!(finishes[0].params["CALL_ID"], json!(call_id));
    let f = fake.call_state(&call_id).unwrap().finished.unwrap();
    assert_eq!(
        (f.user_id, f.status_code.as_deref()),
        (11, Some("200")),
        "{f:#?}"
    );
    assert_eq!(fake.registered().len(), 1, "only the click's call exists");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_by_a_user_without_an_extension_is_finished_at_once() {
    let fake = FakeB24::spawn().await;
    let (_o, _app, url) = installed(&fake).await;
    // User 2 has no mapping: nothing can ring, and an open call would capture the next one.
    let call_id = fake.click_to_call(CLIENT_ID, 2, CUSTOMER, None);
    delivered(&fake, "ONEXTERNALCALLSTART", &url).await;
    wait_for("the click's call finished", || {
        fake.call_state(&call_id)
            .is_some_and(|c| c.finished.is_some())
    })
    .await;
    let f = fake.call_state(&call_id).unwrap().finished.unwrap();
    assert_eq!(
        (f.user_id, f.duration, f.status_code.as_deref()),
        (2, 0, Some("603-S")),
        "{f:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crm_update_event_moves_the_personal_manager_for_the_next_call() {
    let fake = FakeB24::spawn().await;
    let (o, _app, url) = installed(&fake).await;
    let contact = fake.add_contact(CUSTOMER, 11);
    let csv = format!("{CUSTOMER},11\n");
    let resp =
        o.gw.client
            .post(format!("{}/api/v1/portals/{}/index", o.gw.base, o.portal))
            .bearer_auth(crate::common::TOKEN)
            .header("content-type", "text/csv")
            .body(csv)
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(route_user(&o).await, 11);
    // The responsible changes in the CRM; Bitrix24 tells the bound handler.
    fake.set_assigned(EntityKind::Contact, contact, 12);
    fake.fire_crm_update(EntityKind::Contact, contact);
    delivered(&fake, "ONCRMCONTACTUPDATE", &url).await;
    for _ in 0..200 {
        if route_user(&o).await == 12 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, d) =
        o.gw.api(
            Method::GET,
            &format!("/api/v1/route?caller={CUSTOMER}"),
            None,
        )
        .await;
    assert_eq!(
        (d["user_id"].clone(), d["target"].clone()),
        (json!(12), json!("102")),
        "{d}"
    );
}
