//! Self-tests: CRM methods, user.get and events.

use serde_json::json;

use super::{answer, client, form, has, json_call, pairs_of, receiver};
use crate::fake_b24::{EntityKind, FakeB24};

#[tokio::test]
async fn user_get_pages_by_fifty_and_filters_by_extension() {
    let fake = FakeB24::spawn().await;
    for id in 100..160 {
        fake.add_user(crate::fake_b24::User::new(id, "Bulk", None));
    }
    let (_, page1) = form(&fake, "user.get", &[]).await;
    assert_eq!(
        (
            page1["result"].as_array().unwrap().len(),
            page1["total"].as_u64(),
            page1["next"].as_u64()
        ),
        (50, Some(64), Some(50))
    );
    let (_, page2) = form(&fake, "user.get", &[("start", "50")]).await;
    assert_eq!(page2["result"].as_array().unwrap().len(), 14);
    assert!(page2.get("next").is_none());

    let (_, body) = form(&fake, "user.get", &[("FILTER[UF_PHONE_INNER]", "102")]).await;
    assert_eq!(body["result"], json!([fake.users()[2].to_json()]));
    assert_eq!(
        (
            body["result"][0]["ID"].as_str(),
            &body["result"][0]["ACTIVE"]
        ),
        (Some("12"), &json!(true))
    );
    fake.set_user_active(13, false);
    let (_, body) = json_call(&fake, "user.get", json!({"filter": {"ACTIVE": true, "!UF_PHONE_INNER": ""}, "sort": "UF_PHONE_INNER", "order": "DESC"})).await;
    let ids: Vec<&str> = body["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["ID"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["12", "11"]);
}

#[tokio::test]
async fn emit_event_posts_form_encoded_data_and_auth() {
    let fake = FakeB24::spawn().await;
    let (url, mut rx) = receiver().await;
    let status = fake
        .emit_event(
            &url,
            "ONCRMLEADUPDATE",
            &[("FIELDS[ID]", "2001")],
            &[("application_token", "tok"), ("domain", "portal.test")],
        )
        .await;
    assert_eq!(status, 200);
    let (ct, body) = rx.recv().await.expect("delivered");
    assert_eq!(ct, "application/x-www-form-urlencoded");
    let pairs = pairs_of(&body);
    assert!(
        has(&pairs, "event", "ONCRMLEADUPDATE") && has(&pairs, "data[FIELDS][ID]", "2001"),
        "{body}"
    );
    assert!(
        has(&pairs, "auth[application_token]", "tok") && pairs.iter().any(|(k, _)| k == "ts"),
        "{body}"
    );
}

#[tokio::test]
async fn bound_handlers_get_lead_updates_and_click_to_call() {
    let fake = FakeB24::spawn().await;
    let app = fake.install_app("local.app.2", "s");
    let (url, _rx) = receiver().await;
    let bind = |event: &str| {
        let q = [
            ("auth", app.access_token.as_str()),
            ("event", event),
            ("handler", url.as_str()),
        ];
        client()
            .post(format!("{}event.bind", app.client_endpoint))
            .form(&q)
            .send()
    };
    assert_eq!(answer(bind("OnCrmLeadUpdate").await.unwrap()).await.0, 200);
    assert_eq!(
        answer(bind("ONEXTERNALCALLSTART").await.unwrap()).await.0,
        200
    );
    assert_eq!(
        answer(bind("ONEXTERNALCALLSTART").await.unwrap()).await.1["error_description"],
        "Handler already binded"
    );

    let lead = fake.add_lead("79001110000", 11);
    form(
        &fake,
        "crm.lead.update",
        &[("id", &lead.to_string()), ("fields[UTM_TERM]", "t")],
    )
    .await;
    let call_id = fake.click_to_call("local.app.2", 12, "+79001110000", Some("74951234567"));
    let got = fake.wait_deliveries(2).await;
    let update = got
        .iter()
        .find(|d| d.event == "ONCRMLEADUPDATE")
        .expect("lead update");
    assert!(has(&update.pairs, "data[FIELDS][ID]", &lead.to_string()));
    assert!(has(
        &update.pairs,
        "auth[application_token]",
        &app.application_token
    ));
    let start = got
        .iter()
        .find(|d| d.event == "ONEXTERNALCALLSTART")
        .expect("click-to-call");
    assert!(
        has(&start.pairs, "data[CALL_ID]", &call_id) && has(&start.pairs, "data[USER_ID]", "12")
    );
    assert!(has(&start.pairs, "data[CRM_ENTITY_TYPE]", "LEAD") && start.status == Some(200));
    assert_eq!(
        fake.entity(EntityKind::Lead, lead).unwrap().updates.len(),
        1
    );
}

#[tokio::test]
async fn offline_events_keep_the_latest_state_per_object_until_fetched() {
    let fake = FakeB24::spawn().await;
    let app = fake.install_app("local.app.3", "s");
    let call = |method: &str, extra: &[(&str, &str)]| {
        let mut pairs = vec![("auth", app.access_token.clone())];
        pairs.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        client()
            .post(format!("{}{method}", app.client_endpoint))
            .form(&pairs)
            .send()
    };
    let (status, _) = answer(
        call(
            "event.bind",
            &[("event", "ONCRMLEADUPDATE"), ("event_type", "offline")],
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let (a, b) = (
        fake.add_lead("1", 11).to_string(),
        fake.add_lead("2", 11).to_string(),
    );
    for id in [&a, &a, &b] {
        answer(
            call("crm.lead.update", &[("id", id), ("fields[COMMENTS]", "x")])
                .await
                .unwrap(),
        )
        .await;
    }
    let (_, body) = answer(call("event.offline.get", &[]).await.unwrap()).await;
    let events = body["result"]["events"].as_array().expect("events");
    let ids: Vec<&str> = events
        .iter()
        .map(|e| e["EVENT_DATA"]["FIELDS"]["ID"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![a.as_str(), b.as_str()], "one entry per lead");
    let (_, body) = answer(call("event.offline.get", &[]).await.unwrap()).await;
    assert_eq!(body["result"]["events"], json!([]), "clear=1 removed them");
}

#[tokio::test]
async fn offline_events_taken_with_clear_0_come_back_under_their_process_id_until_cleared() {
    let fake = FakeB24::spawn().await;
    let app = fake.install_app("local.app.4", "s");
    let call = |method: &str, extra: &[(&str, &str)]| {
        let mut pairs = vec![("auth", app.access_token.clone())];
        pairs.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        client()
            .post(format!("{}{method}", app.client_endpoint))
            .form(&pairs)
            .send()
    };
    let bind = [("event", "ONCRMLEADUPDATE"), ("event_type", "offline")];
    assert_eq!(answer(call("event.bind", &bind).await.unwrap()).await.0, 200);
    let lead = fake.add_lead("1", 11).to_string();
    answer(call("crm.lead.update", &[("id", &lead), ("fields[COMMENTS]", "x")]).await.unwrap()).await;
    let (_, body) = answer(call("event.offline.get", &[("clear", "0")]).await.unwrap()).await;
    let pid = body["result"]["process_id"].as_str().expect("a process_id with clear=0").to_owned();
    assert_eq!(body["result"]["events"].as_array().map(Vec::len), Some(1), "{body}");
    let (_, body) = answer(call("event.offline.get", &[("clear", "0")]).await.unwrap()).await;
    assert_eq!(body["result"]["events"], json!([]), "taken by the first reader");
    let (_, body) = answer(call("event.offline.get", &[("clear", "0"), ("process_id", &pid)]).await.unwrap()).await;
    assert_eq!(body["result"]["events"].as_array().map(Vec::len), Some(1), "the same again under its process_id");
    assert_eq!(body["result"]["process_id"], json!(pid));
    let (status, _) = answer(call("event.offline.clear", &[("process_id", &pid)]).await.unwrap()).await;
    assert_eq!(status, 200);
    let (_, body) = answer(call("event.offline.get", &[("clear", "0"), ("process_id", &pid)]).await.unwrap()).await;
    assert_eq!(body["result"]["events"], json!([]), "cleared");
    assert_eq!(fake.offline_queue(), vec![]);
}

#[tokio::test]
async fn lead_update_sets_utm_fields_and_ignores_unknown_ones() {
    let fake = FakeB24::spawn().await;
    let lead = fake.add_lead("+79001234567", 11);
    let id = lead.to_string();
    let pairs = [
        ("id", id.as_str()),
        ("fields[UTM_SOURCE]", "google"),
        ("fields[UTM_CAMPAIGN]", "spring"),
        ("fields[BOGUS]", "x"),
    ];
    let (status, body) = form(&fake, "crm.lead.update", &pairs).await;
    assert_eq!((status, &body["result"]), (200, &json!(true)), "{body}");
    let stored = &fake.leads()[0];
    assert_eq!(
        (
            stored.utm("UTM_SOURCE"),
            stored.utm("UTM_CAMPAIGN"),
            stored.field("BOGUS")
        ),
        (Some("google"), Some("spring"), None)
    );

    let (_, body) = form(&fake, "crm.lead.get", &[("id", id.as_str())]).await;
    assert_eq!(
        (
            body["result"]["ID"].as_str(),
            body["result"]["UTM_SOURCE"].as_str()
        ),
        (Some(id.as_str()), Some("google"))
    );
    assert_eq!(body["result"]["PHONE"][0]["VALUE"], "+79001234567");
    let (_, body) = form(
        &fake,
        "crm.lead.update",
        &[("id", "1"), ("fields[UTM_SOURCE]", "x")],
    )
    .await;
    assert_eq!(body, json!({"error": "", "error_description": "Not found"}));
}

#[tokio::test]
async fn crm_lookups_mix_int_and_string_ids_and_answer_empty_arrays() {
    let fake = FakeB24::spawn().await;
    let lead = fake.add_lead("+79001234567", 11);
    let (_, body) = json_call(
        &fake,
        "crm.duplicate.findbycomm",
        json!({"type": "PHONE", "values": ["89001234567"]}),
    )
    .await;
    assert_eq!(body["result"], json!({"LEAD": [lead]}));
    let (_, body) = json_call(
        &fake,
        "crm.duplicate.findbycomm",
        json!({"type": "PHONE", "values": ["111"]}),
    )
    .await;
    assert_eq!(body["result"], json!([]), "no hits is an empty PHP array");
    let (_, body) = json_call(
        &fake,
        "crm.duplicate.findbycomm",
        json!({"type": "PHONE", "values": "111"}),
    )
    .await;
    assert_eq!(
        body["error_description"],
        "Communication values is not defined."
    );

    let (_, body) = form(
        &fake,
        "telephony.externalcall.searchcrmentities",
        &[("PHONE_NUMBER", "79001234567")],
    )
    .await;
    let hit = &body["result"][0];
    assert_eq!(
        (
            hit["CRM_ENTITY_ID"].as_u64(),
            hit["ASSIGNED_BY_ID"].as_u64()
        ),
        (Some(lead), Some(11))
    );
    assert_eq!(
        (
            hit["ASSIGNED_BY"]["ID"].as_str(),
            hit["ASSIGNED_BY"]["USER_PHONE_INNER"].as_str()
        ),
        (Some("11"), Some("101"))
    );
    let (_, body) = form(
        &fake,
        "crm.lead.list",
        &[("filter[PHONE]", "+79001234567"), ("select[]", "ID")],
    )
    .await;
    assert_eq!(
        (&body["result"], body["total"].as_u64()),
        (&json!([{"ID": lead.to_string()}]), Some(1))
    );
}

#[tokio::test]
async fn im_notify_validates_and_records_notifications() {
    let fake = FakeB24::spawn().await;
    let (status, body) = form(&fake, "im.notify.system.add", &[("MESSAGE", "hi")]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("USER_ID_EMPTY"))
    );
    let (_, body) = form(
        &fake,
        "im.notify.system.add",
        &[("USER_ID", "11"), ("MESSAGE", "  ")],
    )
    .await;
    assert_eq!(body["error"], "MESSAGE_EMPTY");
    let ok = [("USER_ID", "11"), ("MESSAGE", "Missed call from VIP")];
    let (status, body) = form(&fake, "im.notify.system.add", &ok).await;
    assert!(status == 200 && body["result"].is_u64(), "{body}");
    assert_eq!(
        fake.notifications(),
        vec![(11, "Missed call from VIP".to_owned())]
    );
}

#[tokio::test]
async fn app_info_is_the_documented_shape_and_a_refresh_token_of_another_app_is_refused() {
    let fake = FakeB24::spawn().await;
    let ours = fake.install_app("local.ours.1", "s1");
    let theirs = fake.install_app("local.theirs.2", "s2");
    let info = |token: String| {
        let url = format!("{}app.info", ours.client_endpoint);
        async move {
            answer(
                client()
                    .get(url)
                    .query(&[("auth", token)])
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    let (status, body) = info(ours.access_token.clone()).await;
    assert_eq!(status, 200, "{body}");
    let r = &body["result"];
    assert_eq!(r["CODE"], "local.ours.1");
    assert!(r["ID"].is_string(), "ID is a string: {r}");
    assert!(
        r.get("member_id").is_none(),
        "app.info names no member_id: {r}"
    );
    assert_eq!(
        info(theirs.access_token.clone()).await.1["result"]["CODE"],
        "local.theirs.2"
    );
    // The OAuth server refreshes a token only for the app it was issued to.
    let refresh = |client_id: &str, secret: &str, token: &str| {
        let q = [
            ("grant_type", "refresh_token".to_owned()),
            ("client_id", client_id.to_owned()),
            ("client_secret", secret.to_owned()),
            ("refresh_token", token.to_owned()),
        ];
        client().get(fake.oauth_token_url()).query(&q).send()
    };
    let (status, body) = answer(
        refresh("local.ours.1", "s1", &theirs.refresh_token)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    fake.invalidate_refresh_tokens();
    let (status, body) = answer(
        refresh("local.ours.1", "s1", &ours.refresh_token)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "invalidated"
    );
    let fresh = fake.issue_tokens("local.ours.1");
    fake.set_token_answer_member_id(false);
    let (status, body) = answer(
        refresh("local.ours.1", "s1", &fresh.refresh_token)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("member_id").is_none());
}
