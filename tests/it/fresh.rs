//! Fresh and complete, against the strict fake Bitrix24: events missed while callgate was
//! unreachable come back from the offline queue (once), webhook portals' index is re-synced
//! periodically, a moved portal is followed only when Bitrix24 vouches for the new address,
//! errors inside a 200 reach the call view, and a portal with open calls cannot be deleted.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::sipp::Sipp;
use crate::crm_events::{oauth_office_with, wait_for};
use crate::fake_b24::{AppInstall, EntityKind, FakeB24, Fault};
use crate::proxy::{Office, CUSTOMER};

/// An OAuth office with the app installed, reading offline events every 200 ms.
async fn installed(fake: &FakeB24) -> (Office, AppInstall, String) {
    let (o, app, url) = oauth_office_with(fake, |cfg| {
        cfg.crm.offline_events_interval = Duration::from_millis(200);
    })
    .await;
    assert_eq!(fake.emit_install(&url, &app).await, 200);
    wait_for("the app's events bound online and offline", || {
        let b = fake.bindings();
        let online = b.iter().any(|b| b.event == "ONCRMCONTACTUPDATE" && b.handler == url && !b.offline);
        let offline = b.iter().any(|b| b.event == "ONCRMCONTACTUPDATE" && b.offline);
        online && offline
    })
    .await;
    (o, app, url)
}

/// Puts `CUSTOMER -> user 11` into the index by upload.
async fn index_customer_to_11(o: &Office) {
    let resp =
        o.gw.client
            .post(format!("{}/api/v1/portals/{}/index", o.gw.base, o.portal))
            .bearer_auth(crate::common::TOKEN)
            .header("content-type", "text/csv")
            .body(format!("{CUSTOMER},11\n"))
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), 200);
}

async fn route_user(o: &Office) -> Value {
    let (status, d) = o.gw.api(Method::GET, &format!("/api/v1/route?caller={CUSTOMER}"), None).await;
    assert_eq!(status, 200, "{d}");
    d["user_id"].clone()
}

/// Polls the route (bounded: 20 s) until it names `user`.
async fn route_becomes(o: &Office, user: u64) {
    for _ in 0..400 {
        if route_user(o).await == user {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the route never named user {user}; it names {}", route_user(o).await);
}

fn contact_reads(fake: &FakeB24, id: u64) -> usize {
    fake.calls_of("crm.contact.get")
        .iter()
        .filter(|c| c.params["id"] == json!(id.to_string()) || c.params["id"] == json!(id))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_missed_while_the_handler_was_down_comes_back_from_the_offline_queue() {
    let fake = FakeB24::spawn().await;
    let (o, _app, url) = installed(&fake).await;
    let contact = fake.add_contact(CUSTOMER, 11);
    index_customer_to_11(&o).await;
    assert_eq!(route_user(&o).await, 11);
    // callgate unreachable: Bitrix24's online delivery fails and is never retried.
    fake.set_handlers_down(true);
    fake.set_assigned(EntityKind::Contact, contact, 12);
    fake.fire_crm_update(EntityKind::Contact, contact);
    wait_for("the online delivery failed", || {
        fake.deliveries().iter().any(|d| d.event == "ONCRMCONTACTUPDATE" && d.url == url && d.status.is_none())
    })
    .await;
    // The offline queue brings it back: the manager moves, and the queue is cleared.
    route_becomes(&o, 12).await;
    wait_for("the offline queue cleared", || fake.offline_queue().is_empty()).await;
    assert_eq!(contact_reads(&fake, contact), 1, "processed exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_delivered_both_online_and_offline_is_processed_once() {
    let fake = FakeB24::spawn().await;
    let (o, _app, url) = installed(&fake).await;
    let contact = fake.add_contact(CUSTOMER, 11);
    index_customer_to_11(&o).await;
    fake.set_assigned(EntityKind::Contact, contact, 12);
    fake.fire_crm_update(EntityKind::Contact, contact);
    wait_for("the online delivery answered", || {
        fake.deliveries().iter().any(|d| d.event == "ONCRMCONTACTUPDATE" && d.url == url && d.status == Some(200))
    })
    .await;
    route_becomes(&o, 12).await;
    // The offline copy was read (with clear=0) and cleared after being offered.
    wait_for("the offline copy read and cleared", || {
        fake.offline_queue().is_empty() && !fake.calls_of("event.offline.clear").is_empty()
    })
    .await;
    let reads = fake.calls_of("event.offline.get");
    assert!(reads.iter().all(|r| r.params["clear"] == json!(0) || r.params["clear"] == json!("0")), "{reads:#?}");
    assert_eq!(contact_reads(&fake, contact), 1, "the online and the offline copy are one event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_click_missed_while_down_is_finished_from_the_offline_queue_without_ringing() {
    let fake = FakeB24::spawn().await;
    let (o, _app, url) = installed(&fake).await;
    // The agent's phone: anything callgate sends it arrives here.
    let phone = tokio::net::UdpSocket::bind(o.phones["101"]).await.unwrap();
    fake.set_handlers_down(true);
    // Clicked 10 minutes ago while callgate was down: the agent has long given up.
    fake.set_offline_backdate(Duration::from_secs(600));
    let stale = fake.click_to_call(crate::crm_events::CLIENT_ID, 11, CUSTOMER, None);
    wait_for("the online delivery failed", || {
        fake.deliveries().iter().any(|d| d.event == "ONEXTERNALCALLSTART" && d.url == url && d.status.is_none())
    })
    .await;
    wait_for("the stale click's call finished", || fake.call_state(&stale).is_some_and(|c| c.finished.is_some())).await;
    let f = fake.call_state(&stale).unwrap().finished.unwrap();
    assert_eq!((f.user_id, f.duration, f.status_code.as_deref()), (11, 0, Some("603-S")), "{f:#?}");
    wait_for("the offline queue cleared", || fake.offline_queue().is_empty()).await;
    let mut buf = [0u8; 2048];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), phone.recv_from(&mut buf)).await.is_err(),
        "the agent's phone was not rung"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_portals_index_is_re_synced_periodically() {
    let fake = FakeB24::spawn().await;
    let o = Office::open_with("udp", Some(&fake.webhook_url()), |cfg| {
        cfg.crm.request_timeout = Duration::from_secs(3);
        cfg.crm.webhook_resync_interval = Duration::from_millis(300);
    })
    .await;
    let count = || async {
        o.gw.api(Method::GET, &format!("/api/v1/portals/{}/index", o.portal), None).await.1["count"].as_u64().unwrap()
    };
    // The portal was created after start-up: nothing but the periodic re-sync reads the CRM.
    fake.add_contact("79161110001", 11);
    let mut seen = 0;
    for _ in 0..200 {
        seen = count().await;
        if seen == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, 1, "the first round read the contact");
    fake.add_contact("79161110002", 12);
    for _ in 0..200 {
        seen = count().await;
        if seen == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, 2, "a later round read the new contact");
    assert!(fake.calls_of("crm.contact.list").len() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_portals_are_not_re_synced_when_the_interval_is_zero() {
    let fake = FakeB24::spawn().await;
    let o = Office::open_with("udp", Some(&fake.webhook_url()), |cfg| {
        cfg.crm.webhook_resync_interval = Duration::ZERO;
    })
    .await;
    fake.add_contact("79161110001", 11);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(fake.calls_of("crm.contact.list").is_empty());
    let (_, d) = o.gw.api(Method::GET, &format!("/api/v1/portals/{}/index", o.portal), None).await;
    assert_eq!(d["count"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_oauth_portal_is_followed_only_when_the_oauth_server_names_the_same_member_there() {
    // Legitimate: the portal was renamed; the OAuth server names the new endpoint, same member.
    let fake = FakeB24::spawn().await;
    let (o, _app, _url) = installed(&fake).await;
    let install = format!("/api/v1/portals/{}/install", o.portal);
    let old = o.gw.api(Method::GET, &install, None).await.1["client_endpoint"].clone();
    let new_base = fake.move_portal().await;
    let (status, report) = o.gw.api(Method::POST, &format!("/api/v1/portals/{}/index/sync", o.portal), None).await;
    assert_eq!(status, 200, "{report}");
    let stored = o.gw.api(Method::GET, &install, None).await.1["client_endpoint"].clone();
    assert_ne!(stored, old);
    assert_eq!(stored, json!(format!("{new_base}rest/")), "the new address is stored");
    let (_, view) = o.gw.api(Method::GET, &format!("/api/v1/portals/{}", o.portal), None).await;
    let new_host = new_base.trim_start_matches("http://").trim_end_matches('/');
    assert!(view["domain"].as_str().is_some_and(|d| d.contains(new_host)), "the portal's domain follows: {view}");
    let refreshes = fake.refresh_count();
    let (status, _) = o.gw.api(Method::POST, &format!("/api/v1/portals/{}/index/sync", o.portal), None).await;
    assert_eq!(status, 200);
    assert_eq!(fake.refresh_count(), refreshes, "the stored address is used directly");

    // Attack: a redirect the OAuth server does not confirm for this member is not followed.
    let fake = FakeB24::spawn().await;
    let (o, _app, _url) = installed(&fake).await;
    let old = o.gw.api(Method::GET, &install_of(&o), None).await.1["client_endpoint"].clone();
    fake.set_member_id("another-portal");
    let refreshes = fake.refresh_count();
    fake.move_portal().await;
    fake.clear_requests();
    let (status, _) = o.gw.api(Method::POST, &format!("/api/v1/portals/{}/index/sync", o.portal), None).await;
    assert_ne!(status, 200);
    let (status, _) = o.gw.api(Method::POST, &format!("/api/v1/portals/{}/index/sync", o.portal), None).await;
    assert_ne!(status, 200);
    assert_eq!(fake.refresh_count(), refreshes + 1, "an unconfirmed move is checked once, not on every request");
    assert_eq!(o.gw.api(Method::GET, &install_of(&o), None).await.1["client_endpoint"], old, "nothing stored");
    assert!(fake.requests().is_empty(), "no request reached the new address");
}

fn install_of(o: &Office) -> String {
    format!("/api/v1/portals/{}/install", o.portal)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_redirected_off_bitrix24s_cloud_is_not_followed() {
    let fake = FakeB24::spawn().await;
    let o = Office::open_with("udp", Some(&fake.webhook_url()), |cfg| cfg.crm.request_timeout = Duration::from_secs(3)).await;
    let sync = format!("/api/v1/portals/{}/index/sync", o.portal);
    let (status, _) = o.gw.api(Method::POST, &sync, None).await;
    assert_eq!(status, 200, "the legitimate path works before the move");
    // The old address now redirects to a host that is not Bitrix24's cloud (here: another
    // loopback port): the webhook URL (the credential) must not go there.
    fake.move_portal().await;
    fake.clear_requests();
    let (status, body) = o.gw.api(Method::POST, &sync, None).await;
    assert_ne!(status, 200, "{body}");
    assert!(fake.requests().is_empty(), "no request reached the redirect's target");
    let (_, portal) = o.gw.api(Method::GET, &format!("/api/v1/portals/{}", o.portal), None).await;
    assert_eq!(portal["domain"], "https://office.bitrix24.ru/", "{portal}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lead_creation_error_inside_a_200_is_shown_on_the_call_and_the_call_still_registered() {
    let fake = FakeB24::spawn().await;
    fake.set_lead_creation_error(Some("Lead creation is disabled for local users"));
    let o = Office::open_with("udp", Some(&fake.webhook_url()), |cfg| {
        cfg.crm.request_timeout = Duration::from_secs(3);
        cfg.crm.max_backoff = Duration::from_secs(2);
    })
    .await;
    let phone = o.phone("101", "agent-answer.xml", &[]);
    o.pbx_calls("101", "pbx-answered.xml", "fresh-lead", &[], vec![phone]).await;
    let call = o.finished("fresh-lead").await;
    wait_for("the call registered and finished at Bitrix24", || {
        let calls = fake.registered();
        calls.len() == 1 && calls[0].finished.is_some()
    })
    .await;
    assert_eq!(fake.registered()[0].created_lead, None);
    let path = format!("/api/v1/calls/{}", call["id"]);
    let mut view = Value::Null;
    for _ in 0..200 {
        view = o.gw.api(Method::GET, &path, None).await.1;
        if view.get("bitrix24_notices").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        view["bitrix24_notices"],
        json!([{"method": "telephony.externalcall.register", "field": "LEAD_CREATION_ERROR", "message": "Lead creation is disabled for local users"}]),
        "{view}"
    );
    let metrics = o.gw.client.get(format!("{}/metrics", o.gw.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("callgate_b24_errors_in_success_total"), "counted");

    // Beside it, a call whose register carries no error shows no notices.
    fake.set_lead_creation_error(None);
    let phone = o.phone("101", "agent-answer.xml", &[]);
    o.pbx_calls("101", "pbx-answered.xml", "fresh-lead-ok", &[("caller", "79160000042")], vec![phone]).await;
    let ok = o.finished("fresh-lead-ok").await;
    wait_for("the second call finished at Bitrix24", || fake.registered().iter().filter(|c| c.finished.is_some()).count() == 2).await;
    let view = o.gw.api(Method::GET, &format!("/api/v1/calls/{}", ok["id"]), None).await.1;
    assert!(view.get("bitrix24_notices").is_none(), "{view}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_with_an_open_call_cannot_be_deleted_until_the_call_ends() {
    let fake = FakeB24::spawn().await;
    let o = Office::open_with("udp", Some(&fake.webhook_url()), |cfg| cfg.crm.request_timeout = Duration::from_secs(3)).await;
    let phone = o.phone("101", "agent-answer.xml", &[]);
    let pbx = Sipp::new("pbx-answered.xml", &o.sip)
        .port(o.pbx)
        .key("ext", "101")
        .key("caller", CUSTOMER)
        .key("xcid", "fresh-open")
        .key("hold_ms", "4000")
        .spawn();
    let mut open = false;
    for _ in 0..200 {
        let (_, calls) = o.gw.api(Method::GET, "/api/v1/calls", None).await;
        open = calls.as_array().is_some_and(|a| a.iter().any(|c| c["ended_at"].is_null() && !c["answered_at"].is_null()));
        if open {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(open, "the call is answered and open");
    let path = format!("/api/v1/portals/{}", o.portal);
    let resp = o.gw.client.delete(format!("{}{path}", o.gw.base)).bearer_auth(crate::common::TOKEN).send().await.unwrap();
    assert_eq!(resp.status(), 409);
    assert!(resp.headers().get("retry-after").is_some());
    let body: Value = resp.json().await.unwrap();
    assert_eq!((body["error"].clone(), body["open_calls"].clone()), (json!("conflict"), json!(1)), "{body}");
    assert_eq!(o.gw.api(Method::GET, &path, None).await.0, 200, "the portal is untouched");

    pbx.wait().await.assert_all_ok(1);
    phone.wait().await.assert_all_ok(1);
    o.finished("fresh-open").await;
    wait_for("the call finished at Bitrix24", || fake.registered().first().is_some_and(|c| c.finished.is_some())).await;
    let (status, body) = o.gw.api(Method::DELETE, &path, None).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(o.gw.api(Method::GET, &path, None).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_whose_ended_call_is_not_finished_in_bitrix24_yet_needs_force_to_be_deleted() {
    let fake = FakeB24::spawn().await;
    let o = Office::open_with("udp", Some(&fake.webhook_url()), |cfg| {
        cfg.crm.request_timeout = Duration::from_secs(3);
        cfg.crm.max_backoff = Duration::from_secs(1);
    })
    .await;
    // Bitrix24 answers 503 to everything: the call ends here but cannot be finished there.
    fake.set_fault_mode(Some(Fault::Overload503));
    let phone = o.phone("101", "agent-answer.xml", &[]);
    o.pbx_calls("101", "pbx-answered.xml", "fresh-unfinished", &[], vec![phone]).await;
    o.finished("fresh-unfinished").await;
    let path = format!("/api/v1/portals/{}", o.portal);
    let (status, body) = o.gw.api(Method::DELETE, &path, None).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!((body["open_calls"].clone(), body["unfinished_in_bitrix24"].clone()), (json!(0), json!(1)), "{body}");
    assert_eq!(o.gw.api(Method::GET, &path, None).await.0, 200, "the portal is untouched");
    let (status, body) = o.gw.api(Method::DELETE, &format!("{path}?force=nope"), None).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = o.gw.api(Method::DELETE, &format!("{path}?force=true"), None).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(o.gw.api(Method::GET, &path, None).await.0, 404);
}
