//! The personal-manager index and the employee mappings from Bitrix24, against the strict fake:
//! the full sync (on demand and at start-up), the look-up on a miss, the mapping import.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::sipp::Sipp;
use crate::common::{fields, TestGateway, TOKEN};
use crate::fake_b24::{FakeB24, Fault, User};
use crate::proxy::Office;

const SEARCH: &str = "telephony.externalCall.searchCrmEntities";

/// A portal on `fake` with users 11, 12, 13 mapped to extensions 101, 102, 103.
async fn office(fake: &FakeB24) -> Office {
    fake.add_user(User::new(2, "Sales desk", None));
    Office::open_with("udp", Some(&fake.webhook_url()), |cfg| {
        cfg.crm.request_timeout = Duration::from_secs(3)
    })
    .await
}

async fn post(gw: &TestGateway, portal: i64, what: &str) -> (u16, Value) {
    gw.api(
        Method::POST,
        &format!("/api/v1/portals/{portal}/{what}"),
        None,
    )
    .await
}

async fn route(gw: &TestGateway, caller: &str) -> Value {
    let (status, d) = gw
        .api(Method::GET, &format!("/api/v1/route?caller={caller}"), None)
        .await;
    assert_eq!(status, 200, "{d}");
    d
}

async fn index_count(gw: &TestGateway, portal: i64) -> u64 {
    gw.api(
        Method::GET,
        &format!("/api/v1/portals/{portal}/index"),
        None,
    )
    .await
    .1["count"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sync_puts_contacts_before_companies_before_leads_and_the_redirect_follows_it() {
    let fake = FakeB24::spawn().await;
    for i in 0..118 {
        fake.add_contact(&format!("7917000{i:04}"), 11);
    }
    fake.add_contact("+7 916 555-00-01", 12);
    fake.add_contact("unknown", 11); // not a phone number: skipped
    fake.add_company("79165550001", 13);
    fake.add_company("8 (916) 555-00-02", 13);
    fake.add_lead("79165550001", 11);
    fake.add_lead("79165550002", 12);
    fake.add_lead("+79165550003", 12);
    let o = office(&fake).await;
    fake.clear_requests();

    let (status, report) = post(&o.gw, o.portal, "index/sync").await;

    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report,
        json!({"numbers": 121, "contacts": 120, "companies": 2, "leads": 3, "skipped": 1, "requests": 2})
    );
    // One batch with the first page of each list (it tells the totals), one with the two
    // remaining contact pages: 1 + ⌈remaining pages / 50⌉, far under 4.
    let requests = fake.requests();
    assert_eq!(
        requests
            .iter()
            .map(|r| r.method.as_str())
            .collect::<Vec<_>>(),
        ["batch", "batch"]
    );
    assert_eq!(requests[1].sub_calls.len(), 2);
    assert_eq!(index_count(&o.gw, o.portal).await, 121);
    // Contact over company and lead; company over lead; a lead alone.
    for (caller, user, ext) in [
        ("79165550001", 12, "102"),
        ("79165550002", 13, "103"),
        ("79165550003", 12, "102"),
        ("79170000117", 11, "101"),
    ] {
        let d = route(&o.gw, caller).await;
        assert_eq!(
            (
                d["decision"].as_str(),
                d["user_id"].as_u64(),
                d["target"].as_str()
            ),
            (Some("redirect"), Some(user), Some(ext)),
            "{caller}: {d}"
        );
    }
    Sipp::new("uac-redirect.xml", &o.sip)
        .rows(&[&["79165550001", "102"], &["89165550002", "103"]])
        .calls(2)
        .run()
        .await
        .assert_all_ok(2);
    assert!(
        fake.calls_of(SEARCH).is_empty(),
        "every number was in the index"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_is_looked_up_once_and_the_next_call_is_routed() {
    let fake = FakeB24::spawn().await;
    fake.add_lead("+7 916 777-00-01", 11);
    fake.add_company("79167770001", 13); // Bitrix24 lists leads first; the company wins here
    let o = office(&fake).await;

    let first = route(&o.gw, "79167770001").await;
    assert_eq!(
        (first["decision"].as_str(), first["reason"].as_str()),
        (Some("no_decision"), Some("not_in_index")),
        "{first}"
    );
    let mut routed = None;
    for _ in 0..100 {
        let d = route(&o.gw, "79167770001").await;
        if d["decision"] == "redirect" {
            routed = Some(d);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let d = routed.expect("the look-up filled the index within 5 s");
    assert_eq!(
        (d["user_id"].as_u64(), d["target"].as_str()),
        (Some(13), Some("103")),
        "{d}"
    );
    Sipp::new("uac-redirect.xml", &o.sip)
        .rows(&[&["79167770001", "103"]])
        .run()
        .await
        .assert_all_ok(1);
    let searches = fake.calls_of(SEARCH);
    assert_eq!(
        searches.len(),
        1,
        "one look-up, however often the number missed: {searches:#?}"
    );
    assert_eq!(searches[0].params["PHONE_NUMBER"], "+79167770001");
    assert_eq!(index_count(&o.gw, o.portal).await, 1, "stored too");
    // A number no entity owns is asked once and then left alone.
    route(&o.gw, "79160000404").await;
    for _ in 0..100 {
        if fake.calls_of(SEARCH).len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(route(&o.gw, "79160000404").await["reason"], "not_in_index");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.calls_of(SEARCH).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mapping_import_maps_free_extensions_and_says_why_it_skipped_the_others() {
    let fake = FakeB24::spawn().await;
    fake.add_user(User::new(21, "Galina", Some("104")));
    fake.add_user(User::new(22, "Dmitry", Some("101"))); // user 11's extension
    fake.add_user(User::new(23, "Elena", None));
    fake.add_user(User::new(24, "Fyodor", Some("105")));
    fake.set_user_active(24, false);
    for i in 0..50 {
        fake.add_user(User::new(100 + i, "Agent", Some(&format!("2{i:02}"))));
    }
    let o = office(&fake).await;
    fake.clear_requests();

    let (status, body) = post(&o.gw, o.portal, "mappings/import").await;

    assert_eq!(status, 200, "{body}");
    let created = body["created"].as_array().unwrap();
    assert_eq!(created.len(), 51, "{body:#}");
    assert_eq!(
        (
            created[0]["user_id"].as_u64(),
            created[0]["extension"].as_str()
        ),
        (Some(21), Some("104"))
    );
    assert_eq!(
        (
            &created[0]["use_for_personal_manager"],
            &created[0]["contact"]
        ),
        (&json!(true), &Value::Null)
    );
    let skipped: Vec<(u64, &str)> = body["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["user_id"].as_u64().unwrap(),
                s["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        skipped,
        [
            (1, "no extension"),
            (2, "no extension"),
            (11, "already mapped"),
            (12, "already mapped"),
            (13, "already mapped"),
            (22, "extension taken"),
            (23, "no extension")
        ]
    );
    assert_eq!(
        fake.requests().len(),
        2,
        "58 active users: two pages, two requests"
    );
    let (_, mappings) =
        o.gw.api(
            Method::GET,
            &format!("/api/v1/portals/{}/mappings", o.portal),
            None,
        )
        .await;
    assert_eq!(mappings.as_array().unwrap().len(), 54);
    // The directory was reloaded: the new mapping routes at once.
    let resp =
        o.gw.client
            .post(format!("{}/api/v1/portals/{}/index", o.gw.base, o.portal))
            .bearer_auth(TOKEN)
            .body("79168880001,21\n")
            .send()
            .await
            .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(route(&o.gw, "79168880001").await["target"], "104");
    // Importing again creates nothing.
    let (_, again) = post(&o.gw, o.portal, "mappings/import").await;
    assert_eq!(again["created"], json!([]));
    assert_eq!(again["skipped"].as_array().unwrap().len(), 58);
}

#[tokio::test]
async fn sync_and_import_need_the_token_a_portal_and_its_credentials() {
    let gw = TestGateway::spawn().await;
    let id = gw.portal("nocreds.bitrix24.ru").await;
    for what in ["index/sync", "mappings/import"] {
        let (status, body) = post(&gw, id, what).await;
        assert_eq!(status, 422, "{what}: {body}");
        assert_eq!(fields(&body), ["auth"]);
        assert_eq!(post(&gw, 999, what).await.0, 404, "{what}");
        assert_eq!(
            gw.call(
                Method::POST,
                &format!("/api/v1/portals/{id}/{what}"),
                None,
                None
            )
            .await
            .0,
            401,
            "{what}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sync_meanwhile_is_409_and_a_refusal_by_bitrix24_is_502() {
    let fake = FakeB24::spawn().await;
    fake.add_contact("79165550001", 12);
    let o = office(&fake).await;
    fake.fail_next(1, Fault::Stall(Duration::from_millis(1500)));
    let url = format!("{}/api/v1/portals/{}/index/sync", o.gw.base, o.portal);
    let client = o.gw.client.clone();
    let first = tokio::spawn(async move {
        client
            .post(url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    tokio::time::sleep(Duration::from_millis(300)).await; // the first one is stalled in the fake

    let (status, body) = post(&o.gw, o.portal, "index/sync").await;

    assert_eq!(status, 409, "{body}");
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(index_count(&o.gw, o.portal).await, 1);
    fake.remove_webhook("webhookcode");
    let (status, body) = post(&o.gw, o.portal, "index/sync").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(
        (body["error"].as_str(), body["bitrix24_error"].as_str()),
        (Some("bad_gateway"), Some("auth")),
        "{body}"
    );
    assert_eq!(
        index_count(&o.gw, o.portal).await,
        1,
        "a failed sync changes nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_is_warm_and_syncs_active_portals_in_the_background() {
    let fake = FakeB24::spawn().await;
    fake.add_contact("79165550001", 12);
    let Office { gw, portal, .. } = office(&fake).await;
    assert_eq!(post(&gw, portal, "index/sync").await.0, 200);
    let dir = gw.stop().await.expect("the office's data directory");
    fake.add_contact("79165550009", 13); // changed while callgate was down

    let mut gw = TestGateway::spawn_on(dir.path(), |cfg| {
        cfg.crm.request_timeout = Duration::from_secs(3)
    })
    .await;
    gw.keep_dir(dir);

    assert!(
        index_count(&gw, portal).await >= 1,
        "the stored index is loaded at start"
    );
    for _ in 0..100 {
        if index_count(&gw, portal).await == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        index_count(&gw, portal).await,
        2,
        "the start-up sync brought the new contact"
    );
    assert_eq!(route(&gw, "79165550009").await["target"], "103");
    assert!(fake.calls_of(SEARCH).is_empty());
}
