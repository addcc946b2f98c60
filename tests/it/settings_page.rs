//! The settings page (issue 7) in headless Debian Chromium, driven by `playwright-core` from
//! `tests/browser/settings*.mjs`, against a real gateway on 127.0.0.1: the operator's whole path
//! through the page, each step checked again through the admin API while the page stays open.
//!
//! Needs `/usr/bin/chromium` (or `$CHROMIUM`), `node` and `npm ci --prefix tests/browser`
//! (`scripts/test.sh` installs them); missing ones FAIL the test with what to install.
//! Screenshots (`settings-*.png`) and the page logs go to `target/browser-artifacts/`. The harness
//! that runs the scripts is `common/node.rs`.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::node::{artifacts, preflight, NodeRun};
use crate::common::TestGateway;
use crate::fake_b24::FakeB24;
use crate::proxy::Office;

/// One step of a node script, browser start included (the scripts stop themselves after 2 min).
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// `tests/browser/<name>` in step mode, Chromium checked first.
fn script(name: &'static str, env: &[(&str, String)]) -> NodeRun {
    NodeRun::spawn(name, &preflight(), env, STEP_TIMEOUT)
}

async fn get(gw: &TestGateway, path: &str) -> Value {
    let (status, body) = gw.api(Method::GET, path, None).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_configures_a_portal_on_the_settings_page() {
    preflight();
    let fake = FakeB24::spawn().await;
    let gw = TestGateway::spawn().await;
    let mut page = script(
        "settings.mjs",
        &[
            ("CALLGATE_URL", gw.base.clone()),
            ("WEBHOOK_URL", fake.webhook_url()),
            ("WEBHOOK_SECRET", "webhookcode".to_owned()),
        ],
    );

    // Credentials added on the page: stored, secret masked in every answer.
    let id = page.expect("portal").await["id"]
        .as_i64()
        .expect("the page names the portal");
    let portal = get(&gw, &format!("/api/v1/portals/{id}")).await;
    assert_eq!(portal["name"], "Main office", "{portal}");
    assert_eq!(portal["domain"], "https://office.bitrix24.ru/", "{portal}");
    assert_eq!(
        portal["auth"]["webhook_url"],
        format!("{}/rest/1/***/", fake.base()),
        "{portal}"
    );
    assert_eq!(portal["active"], false, "{portal}");
    page.say("portal-checked").await;

    // Activation without default responsibles was refused as a whole: nothing of it was stored.
    let errors = page.expect("errors").await;
    assert_eq!(
        errors["incoming"], "Is required to activate the integration",
        "{errors}"
    );
    let settings = get(&gw, &format!("/api/v1/portals/{id}/settings")).await;
    assert_eq!(
        (settings["active"].as_bool(), settings["pbx_host"].as_str()),
        (Some(false), Some("")),
        "{settings}"
    );
    page.say("errors-checked").await;

    // Every setting as the operator filled it in.
    page.expect("saved").await;
    let settings = get(&gw, &format!("/api/v1/portals/{id}/settings")).await;
    assert_eq!(
        settings,
        json!({
            "active": true, "telephony_mode": "webrtc",
            "incoming": {"forward_to_personal_manager": false, "create_entity": false, "default_responsible": 11, "assign_responsible_to": "last"},
            "outgoing": {"create_entity": true, "default_responsible": 12},
            "other": {"calltracking": true, "utm_tags": ["utm_source", "utm_medium", "utm_campaign"], "chat_message": false},
            "min_talk_seconds": 5, "trusted_pbx": ["127.0.0.1", "10.20.0.0/16"], "pbx_host": "127.0.0.1:5090",
            "sip_domains": ["pbx.office.example"], "correlation_header": "X-Pbx-Call", "routing_user": "route-me", "internal_max_digits": 4
        })
    );
    assert_eq!(
        get(&gw, &format!("/api/v1/portals/{id}")).await["active"],
        true
    );
    page.say("saved-checked").await;

    // Added, edited and deleted by hand, then imported from the fake's users (11, 12, 13 have
    // extensions 101-103; 12 was mapped by hand; the admin, user 1, has none).
    let shown = page.expect("mappings").await;
    let mappings = get(&gw, &format!("/api/v1/portals/{id}/mappings")).await;
    let stored: BTreeSet<(u64, String, bool)> = mappings
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["user_id"].as_u64().unwrap(),
                m["extension"].as_str().unwrap().to_owned(),
                m["use_for_personal_manager"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        stored,
        [
            (11, "101".into(), true),
            (12, "102".into(), true),
            (13, "103".into(), true)
        ]
        .into(),
        "{mappings:#}"
    );
    assert_eq!(
        shown["rows"],
        json!([
            ["11", "101", "yes"],
            ["12", "102", "yes"],
            ["13", "103", "yes"]
        ])
    );
    assert!(
        !fake.calls_of("user.get").is_empty(),
        "the import asked Bitrix24 for its users"
    );
    page.say("mappings-checked").await;

    // Lines: the number normalised to E.164 digits, the edited tags, the deleted line gone.
    assert_eq!(page.expect("lines").await["rows"], 1);
    let lines = get(&gw, &format!("/api/v1/portals/{id}/lines")).await;
    assert_eq!(
        lines,
        json!([{"number": "74951234567", "utm": {"utm_source": "yandex", "utm_campaign": "spring"}}])
    );
    page.say("lines-checked").await;

    // Renamed through the gear without retyping the webhook: the stored secret still works.
    let done = page.expect("credentials").await;
    let portals = get(&gw, "/api/v1/portals").await;
    assert_eq!(
        portals.as_array().unwrap().len(),
        1,
        "the second portal was deleted: {portals:#}"
    );
    assert_eq!(
        (portals[0]["id"].as_i64(), portals[0]["name"].as_str()),
        (Some(id), Some("Head office")),
        "{portals:#}"
    );
    assert_eq!(
        portals[0]["auth"]["webhook_url"],
        format!("{}/rest/1/***/", fake.base())
    );
    let (status, _) = gw
        .api(
            Method::GET,
            &format!("/api/v1/portals/{}", done["deleted"]),
            None,
        )
        .await;
    assert_eq!(status, 404);
    fake.clear_requests();
    let (status, body) = gw
        .api(
            Method::POST,
            &format!("/api/v1/portals/{id}/mappings/import"),
            None,
        )
        .await;
    assert_eq!(
        (status, body["created"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{body}"
    );
    assert!(
        !fake.calls_of("user.get").is_empty(),
        "the kept webhook reached the fake"
    );
    page.say("credentials-checked").await;

    page.finish().await;
    for block in [
        "credentials",
        "integration",
        "incoming",
        "outgoing",
        "other",
        "mappings",
        "lines",
        "hint",
        "errors-incoming",
    ] {
        let png = artifacts().join(format!("settings-{block}.png"));
        assert!(
            png.metadata().map_or(0, |m| m.len()) > 1000,
            "screenshot {}",
            png.display()
        );
    }
}

/// Russian labels (`navigator.language` ru-RU), and the calls view with an answered call the
/// SIPp PBX and phone made through the edge proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_calls_view_shows_a_tracked_call_in_russian() {
    preflight();
    let o = Office::open("udp").await;
    let phone = o.phone("101", "agent-answer.xml", &[]);
    o.pbx_calls(
        "101",
        "pbx-answered.xml",
        "x-settings-page",
        &[],
        vec![phone],
    )
    .await;
    let call = o.finished("x-settings-page").await;
    assert_eq!(
        (
            call["first_talker"]["extension"].as_str(),
            call["responsible"].as_u64()
        ),
        (Some("101"), Some(11)),
        "{call:#}"
    );

    let mut page = script(
        "settings-calls.mjs",
        &[
            ("CALLGATE_URL", o.gw.base.clone()),
            ("LOCALE", "ru-RU".to_owned()),
            ("CALL_ID", call["id"].to_string()),
            ("LEGS", call["legs"].as_array().unwrap().len().to_string()),
        ],
    );
    let shown = page.expect("call").await;
    assert_eq!(shown["legs"], json!(["101"]), "{shown}");
    assert_eq!(shown["first"], "доб. 101 · пользователь 11", "{shown}");
    assert_eq!(shown["last"], "доб. 101 · пользователь 11", "{shown}");
    assert_eq!(
        shown["responsible"],
        json!(["пользователь 11", "первый разговаривавший"]),
        "{shown}"
    );
    assert_eq!(shown["outcome"], "отвечен (200)", "{shown}");
    assert_eq!(
        shown["detailLegs"].as_u64(),
        Some(call["legs"].as_array().unwrap().len() as u64),
        "{shown}"
    );
    assert_eq!(
        shown["detailConversations"].as_u64(),
        Some(call["conversations"].as_array().unwrap().len() as u64),
        "{shown}"
    );
    page.say("call-checked").await;
    page.finish().await;
    // The refused activation and the cancelled edits left the settings as they were.
    let settings = get(&o.gw, &format!("/api/v1/portals/{}/settings", o.portal)).await;
    assert_eq!(
        (
            settings["active"].as_bool(),
            settings["incoming"]["default_responsible"].as_u64()
        ),
        (Some(false), Some(1)),
        "{settings}"
    );
    for shot in ["ru", "ru-errors", "calls", "call-details"] {
        let png = artifacts().join(format!("settings-{shot}.png"));
        assert!(
            png.metadata().map_or(0, |m| m.len()) > 1000,
            "screenshot {}",
            png.display()
        );
    }
}

#[tokio::test]
async fn the_page_and_its_assets_are_served_and_slash_leads_to_it() {
    let gw = TestGateway::spawn().await;
    for (path, ty, needle) in [
        ("/settings/", "text/html", "data-testid=\"login-token\""),
        ("/settings/app.js", "text/javascript", "sessionStorage"),
        ("/settings/i18n.js", "text/javascript", "Интеграция активна"),
        ("/settings/style.css", "text/css", ".hint .tip"),
    ] {
        let resp = gw
            .client
            .get(format!("{}{path}", gw.base))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(ty),
            "{path}"
        );
        assert_eq!(
            resp.headers()["x-content-type-options"],
            "nosniff",
            "{path}"
        );
        assert!(resp.text().await.unwrap().contains(needle), "{path}");
    }
    let page = gw
        .client
        .get(format!("{}/settings/", gw.base))
        .send()
        .await
        .unwrap();
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'")
            && csp.contains("connect-src 'self'")
            && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (from, to) in [("/", "/settings/"), ("/settings", "/settings/")] {
        let resp = plain
            .get(format!("{}{from}", gw.base))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_redirection(), "{from}: {}", resp.status());
        assert_eq!(resp.headers()["location"], to, "{from}");
    }
    // The page is public; the data behind it is not.
    let (status, _) = gw.call(Method::GET, "/api/v1/portals", None, None).await;
    assert_eq!(status, 401);
}
