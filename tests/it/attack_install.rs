//! Attacks on the Bitrix24 app installation (the review's F9 and F18) against the strict fake
//! Bitrix24: an `ONAPPINSTALL` is accepted only with proof that it is this app on this portal,
//! never silently replaces a working installation, and binds the app's events only to the
//! configured URL. Every test also runs the legitimate install and shows that forged events
//! with the attacker's `application_token` are refused while Bitrix24's own are accepted.
//!
//! The attacker posts from 127.0.0.5; Bitrix24 (the fake) is on 127.0.0.1.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::crm_events::{
    event_form, installed, oauth_office_with, post, wait_for, with_token, CLIENT_ID,
};
use crate::fake_b24::{AppInstall, FakeB24};
use crate::proxy::{Office, CUSTOMER};

const ATTACKER: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5));

/// An HTTP client sending from the attacker's address.
fn attacker() -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ATTACKER)
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// The `auth[...]` of an ONAPPINSTALL for `app`, with `edit` applied.
fn install_auth(
    fake: &FakeB24,
    app: &AppInstall,
    edit: impl FnOnce(&mut Vec<(String, String)>),
) -> Vec<(String, String)> {
    let mut auth = fake.app_event_auth(app);
    edit(&mut auth);
    auth
}

fn set(auth: &mut Vec<(String, String)>, key: &str, value: &str) {
    auth.retain(|(k, _)| k != key);
    auth.push((key.to_owned(), value.to_owned()));
}

/// POSTs an ONAPPINSTALL from the attacker's address, with extra request headers.
async fn install_from(
    url: &str,
    fake: &FakeB24,
    auth: &[(String, String)],
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let data = [
        ("VERSION", "1"),
        ("ACTIVE", "Y"),
        ("INSTALLED", "Y"),
        ("LANGUAGE_ID", "ru"),
    ];
    let form = event_form("ONAPPINSTALL", &data, fake.now_unix(), auth);
    let mut req = attacker().post(url).form(&form);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    crate::common::json_of(req.send().await.unwrap()).await
}

/// `GET /api/v1/portals/{id}/install`.
async fn install_status(o: &Office) -> Value {
    let (status, body) =
        o.gw.api(
            Method::GET,
            &format!("/api/v1/portals/{}/install", o.portal),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// A CRM change event with `token` as its application_token: the HTTP status.
async fn crm_event(
    o: &Office,
    url: &str,
    fake: &FakeB24,
    app: &AppInstall,
    token: &str,
    entity: &str,
) -> u16 {
    let auth = with_token(app, fake, token);
    let form = event_form(
        "ONCRMCONTACTUPDATE",
        &[("FIELDS[ID]", entity)],
        fake.now_unix(),
        &auth,
    );
    post(o, url, &form).await.0
}

/// Forged events with `forged` are refused, Bitrix24's own (`real`) are accepted.
async fn only_the_real_token_is_accepted(
    o: &Office,
    url: &str,
    fake: &FakeB24,
    app: &AppInstall,
    forged: &str,
    real: &str,
) {
    let contact = fake.add_contact(CUSTOMER, 12).to_string();
    assert_eq!(
        crm_event(o, url, fake, app, forged, &contact).await,
        403,
        "a forged event is refused"
    );
    let click = [
        ("CALL_ID", "externalCall.f00d"),
        ("USER_ID", "11"),
        ("PHONE_NUMBER", CUSTOMER),
    ];
    let forged_click = event_form(
        "ONEXTERNALCALLSTART",
        &click,
        fake.now_unix(),
        &with_token(app, fake, forged),
    );
    assert_eq!(
        post(o, url, &forged_click).await.0,
        403,
        "a forged click-to-call is refused"
    );
    assert_eq!(
        crm_event(o, url, fake, app, real, &contact).await,
        200,
        "Bitrix24's event is accepted"
    );
    wait_for("the real event processed", || {
        !fake.attempts_of("crm.contact.get").is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installs_without_proof_of_this_app_on_this_portal_are_refused_and_the_real_app_installs() {
    let fake = FakeB24::spawn().await;
    let (o, _first, url) = oauth_office_with(&fake, |_| {}).await;
    // Another app on the same portal: its tokens are valid there, but not this app's.
    let evil = fake.install_app("local.evil.9", "evil-secret");
    let (status, body) = install_from(&url, &fake, &install_auth(&fake, &evil, |_| {}), &[]).await;
    assert_eq!(status, 403, "another app's tokens: {body}");
    // This app's real tokens, but a member_id the OAuth server does not name.
    let real = fake.issue_tokens(CLIENT_ID);
    let (status, body) = install_from(
        &url,
        &fake,
        &install_auth(&fake, &real, |a| set(a, "member_id", "feedface")),
        &[],
    )
    .await;
    assert_eq!(status, 403, "a foreign member_id: {body}");
    // No member_id at all in the event: 400 naming it (nothing was sent anywhere).
    let requests = fake.oauth_requests().len();
    let real = fake.issue_tokens(CLIENT_ID);
    let (status, body) = install_from(
        &url,
        &fake,
        &install_auth(&fake, &real, |a| a.retain(|(k, _)| k != "member_id")),
        &[],
    )
    .await;
    assert_eq!(
        (status, body["fields"][0]["field"].as_str()),
        (400, Some("auth[member_id]")),
        "{body}"
    );
    // A client_endpoint off the portal: refused before any request leaves callgate.
    let off = |a: &mut Vec<(String, String)>| set(a, "client_endpoint", "http://127.0.0.6:9/rest/");
    let (status, body) = install_from(&url, &fake, &install_auth(&fake, &real, off), &[]).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        fake.oauth_requests().len(),
        requests,
        "no request for an install refused on its face"
    );
    // An OAuth answer without member_id is no match.
    fake.set_token_answer_member_id(false);
    let (status, body) = install_from(&url, &fake, &install_auth(&fake, &real, |_| {}), &[]).await;
    assert_eq!(status, 403, "no member_id in the OAuth answer: {body}");
    fake.set_token_answer_member_id(true);
    // app.info naming another application (CODE) is no match.
    fake.set_app_info_code(Some("local.evil.9"));
    let real = fake.issue_tokens(CLIENT_ID);
    let (status, body) = install_from(&url, &fake, &install_auth(&fake, &real, |_| {}), &[]).await;
    assert_eq!(status, 403, "a foreign CODE: {body}");
    fake.set_app_info_code(None);
    let st = install_status(&o).await;
    assert_eq!(
        st["installed"], false,
        "no refused install left an installation: {st}"
    );
    assert!(
        st["last_refused"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("app.info")),
        "{st}"
    );
    assert!(fake.bindings().is_empty(), "nothing was bound");
    // The real install: this app's tokens, the configured secret, Bitrix24's member_id.
    let real = fake.issue_tokens(CLIENT_ID);
    assert_eq!(fake.emit_install(&url, &real).await, 200);
    let st = install_status(&o).await;
    assert_eq!(
        (st["installed"].as_bool(), st["member_id"].as_str()),
        (Some(true), Some(fake.member_id().as_str())),
        "{st}"
    );
    // What is stored are the refreshed tokens: the posted access token is not the one in use.
    // The fake records a request once it has answered it: wait for the batch itself too.
    wait_for("the app's events bound", || {
        fake.bindings().iter().any(|b| b.handler == url) && fake.requests().iter().any(|r| r.method == "batch")
    })
    .await;
    let bind = fake
        .requests()
        .into_iter()
        .find(|r| r.method == "batch")
        .expect("the event.bind batch");
    assert!(
        matches!(&bind.via, crate::fake_b24::Via::OAuth { token } if !token.is_empty() && *token != real.access_token),
        "{:?}",
        bind.via
    );
    only_the_real_token_is_accepted(
        &o,
        &url,
        &fake,
        &real,
        &evil.application_token,
        &real.application_token,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_or_rival_install_never_replaces_a_working_installation_until_the_admin_rearms()
{
    let fake = FakeB24::spawn().await;
    let (o, app, url) = installed(&fake).await;
    // The captured install, replayed: its refresh token is spent.
    let (status, body) = install_from(&url, &fake, &install_auth(&fake, &app, |_| {}), &[]).await;
    assert_eq!(status, 403, "a replay: {body}");
    // Someone holding this app's tokens (any user of an app page has them) picks the token.
    let held = fake.issue_tokens(CLIENT_ID);
    let chosen = |a: &mut Vec<(String, String)>| set(a, "application_token", "chosen-by-attacker");
    let (status, body) = install_from(&url, &fake, &install_auth(&fake, &held, chosen), &[]).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("updated")),
        "tokens only: {body}"
    );
    only_the_real_token_is_accepted(
        &o,
        &url,
        &fake,
        &app,
        "chosen-by-attacker",
        &app.application_token,
    )
    .await;
    // The OAuth server now names another member for this portal: no silent replacement.
    fake.set_member_id("0f0f0f0f");
    let other = fake.issue_tokens(CLIENT_ID);
    let (status, body) = install_from(&url, &fake, &install_auth(&fake, &other, |_| {}), &[]).await;
    assert_eq!(
        status, 403,
        "another member over a working installation: {body}"
    );
    let st = install_status(&o).await;
    assert_ne!(st["member_id"].as_str(), Some("0f0f0f0f"), "{st}");
    assert!(
        st["last_refused"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("re-arm")),
        "{st}"
    );
    // Re-arming needs the admin token.
    let rearm = format!("/api/v1/portals/{}/install/rearm", o.portal);
    assert_eq!(o.gw.call(Method::POST, &rearm, None, None).await.0, 401);
    assert_eq!(
        o.gw.call(
            Method::POST,
            &rearm,
            None,
            Some("not-the-admin-token-at-all")
        )
        .await
        .0,
        401
    );
    let (status, body) = o.gw.api(Method::POST, &rearm, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body["rearmed_until"]
            .as_u64()
            .is_some_and(|t| t > fake.now_unix() as u64),
        "{body}"
    );
    // The admin's reinstall, verified like any other, now replaces the installation.
    let again = fake.issue_tokens(CLIENT_ID);
    let mut new_token = again.clone();
    new_token.application_token = "reinstalled-app-token".into();
    assert_eq!(fake.emit_install(&url, &new_token).await, 200);
    let st = install_status(&o).await;
    assert_eq!(
        (st["member_id"].as_str(), st["rearmed_until"].as_u64()),
        (Some("0f0f0f0f"), None),
        "used up: {st}"
    );
    let contact = fake.add_contact("79160000001", 12).to_string();
    assert_eq!(
        crm_event(
            &o,
            &url,
            &fake,
            &new_token,
            &app.application_token,
            &contact
        )
        .await,
        403,
        "the old token is gone"
    );
    assert_eq!(
        crm_event(
            &o,
            &url,
            &fake,
            &new_token,
            "reinstalled-app-token",
            &contact
        )
        .await,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_are_bound_to_the_configured_url_never_to_forwarded_headers() {
    let fake = FakeB24::spawn().await;
    let public = "https://callgate.example.com/cg";
    let (o, app, url) = oauth_office_with(&fake, |cfg| cfg.http.public_url = public.into()).await;
    let forwarded = [
        ("x-forwarded-host", "attacker.example"),
        ("x-forwarded-proto", "https"),
        ("host", "attacker.example"),
    ];
    let (status, body) =
        install_from(&url, &fake, &install_auth(&fake, &app, |_| {}), &forwarded).await;
    assert_eq!(status, 200, "the install itself is genuine: {body}");
    let want = format!("{public}/api/v1/bitrix24/events");
    wait_for("the app's events bound", || fake.bindings().len() >= 10).await;
    let handlers: Vec<String> = fake.bindings().iter().map(|b| b.handler.clone()).collect();
    assert!(handlers.iter().all(|h| *h == want), "{handlers:?}");
    let st = install_status(&o).await;
    assert_eq!(
        (
            st["events"]["state"].as_str(),
            st["events"]["handler"].as_str()
        ),
        (Some("requested"), Some(want.as_str())),
        "{st}"
    );
    // Without http.public_url: the listener's own bound address, whatever the headers say.
    let fake2 = FakeB24::spawn().await;
    let (o2, app2, url2) = oauth_office_with(&fake2, |_| {}).await;
    let (status, body) = install_from(
        &url2,
        &fake2,
        &install_auth(&fake2, &app2, |_| {}),
        &forwarded,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    wait_for("the app's events bound", || fake2.bindings().len() >= 10).await;
    let own = format!("{}/api/v1/bitrix24/events", o2.gw.base);
    let handlers: Vec<String> = fake2.bindings().iter().map(|b| b.handler.clone()).collect();
    assert!(
        handlers
            .iter()
            .all(|h| *h == own && !h.contains("attacker")),
        "{handlers:?}"
    );
    // Bitrix24 delivers to that handler, and callgate accepts it.
    let contact = fake2.add_contact(CUSTOMER, 12).to_string();
    assert_eq!(
        crm_event(&o2, &url2, &fake2, &app2, "forged", &contact).await,
        403
    );
    assert_eq!(
        crm_event(&o2, &url2, &fake2, &app2, &app2.application_token, &contact).await,
        200
    );
}
