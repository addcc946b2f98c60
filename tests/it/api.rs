//! The admin API over real HTTP on 127.0.0.1:0.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{fields, TestGateway, TOKEN};

fn full_settings() -> Value {
    json!({
        "active": true,
        "telephony_mode": "webrtc",
        "incoming": {"forward_to_personal_manager": false, "create_entity": false, "default_responsible": 7, "assign_responsible_to": "last"},
        "outgoing": {"create_entity": true, "default_responsible": 9},
        "other": {"calltracking": true, "utm_tags": ["utm_source", "utm_term"], "chat_message": false},
        "min_talk_seconds": 5,
        "trusted_pbx": ["10.0.0.0/24", "192.0.2.7", "2001:db8::1"],
        "pbx_host": "10.0.0.2:5070;transport=tcp",
        "sip_domains": ["pbx.comagic.example", "10.0.0.2"],
        "correlation_header": "X-PBX-Call",
        "routing_user": "manager-lookup",
        "internal_max_digits": 5
    })
}

#[tokio::test]
async fn every_settings_field_round_trips_and_survives_a_restart() {
    let gw = TestGateway::spawn().await;
    let (status, created) = gw
        .api(Method::POST, "/api/v1/portals", Some(json!({"name": "Main", "domain": "comagic.bitrix24.ru", "auth": {"webhook_url": "https://comagic.bitrix24.ru/rest/1/abc123/"}})))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_i64().unwrap();
    let settings_path = format!("/api/v1/portals/{id}/settings");

    let (status, saved) = gw.api(Method::PUT, &settings_path, Some(full_settings())).await;
    assert_eq!(status, 200, "{saved}");
    assert_eq!(saved, full_settings());
    let (_, mapping) = gw
        .api(Method::POST, &format!("/api/v1/portals/{id}/mappings"), Some(json!({"user_id": 7, "extension": "101", "use_for_personal_manager": false, "contact": "sip:101@10.0.0.5:5060"})))
        .await;
    let (status, line) = gw
        .api(Method::POST, &format!("/api/v1/portals/{id}/lines"), Some(json!({"number": "+7 (495) 123-45-67", "utm": {"utm_source": "google", "utm_campaign": "spring"}})))
        .await;
    assert_eq!(status, 201, "{line}");
    assert_eq!(line["number"], "74951234567");

    let (_, got) = gw.api(Method::GET, &settings_path, None).await;
    assert_eq!(got, full_settings());

    // Same data directory, new process state.
    let dir = gw.stop().await.expect("owns its data directory");
    let gw = TestGateway::spawn_on(dir.path(), |_| {}).await;
    let (_, got) = gw.api(Method::GET, &settings_path, None).await;
    assert_eq!(got, full_settings(), "settings after restart");
    let (_, portal) = gw.api(Method::GET, &format!("/api/v1/portals/{id}"), None).await;
    assert_eq!(portal["name"], "Main");
    assert_eq!(portal["domain"], "https://comagic.bitrix24.ru/");
    assert_eq!(portal["active"], true);
    assert_eq!(portal["auth"]["webhook_url"], "https://comagic.bitrix24.ru/rest/1/***/");
    let (_, mappings) = gw.api(Method::GET, &format!("/api/v1/portals/{id}/mappings"), None).await;
    assert_eq!(mappings, json!([mapping]));
    let (_, lines) = gw.api(Method::GET, &format!("/api/v1/portals/{id}/lines"), None).await;
    assert_eq!(lines, json!([{"number": "74951234567", "utm": {"utm_source": "google", "utm_campaign": "spring"}}]));
    gw.stop().await;
    drop(dir);
}

#[tokio::test]
async fn settings_defaults_are_off_and_partial_documents_take_defaults() {
    let gw = TestGateway::spawn().await;
    let id = gw.portal("a.bitrix24.ru").await;
    let (_, s) = gw.api(Method::GET, &format!("/api/v1/portals/{id}/settings"), None).await;
    assert_eq!(s["active"], false, "integration is off by default");
    assert_eq!(s["telephony_mode"], "ip");
    assert_eq!(s["incoming"]["default_responsible"], Value::Null);
    let (status, s) = gw.api(Method::PUT, &format!("/api/v1/portals/{id}/settings"), Some(json!({"min_talk_seconds": 3}))).await;
    assert_eq!(status, 200);
    assert_eq!(s["min_talk_seconds"], 3);
    assert_eq!(s["routing_user"], "pm-route");
}

#[tokio::test]
async fn requests_without_a_valid_token_get_401() {
    let gw = TestGateway::spawn().await;
    for token in [None, Some("wrong-token-wrong-token"), Some(""), Some(&TOKEN[..TOKEN.len() - 1])] {
        let (status, body) = gw.call(Method::GET, "/api/v1/portals", None, token).await;
        assert_eq!(status, 401, "token {token:?}");
        assert_eq!(body["error"], "unauthorized");
    }
    let (status, _) = gw.call(Method::POST, "/api/v1/portals", Some(json!({"domain": "x.bitrix24.ru"})), None).await;
    assert_eq!(status, 401);
    let (status, _) = gw.call(Method::GET, "/api/v1/portals", None, Some(TOKEN)).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn invalid_input_gets_422_naming_the_field() {
    let gw = TestGateway::spawn().await;
    let id = gw.portal("a.bitrix24.ru").await;
    let path = format!("/api/v1/portals/{id}/settings");
    let cases = [
        (json!({"telephony_mode": "fax"}), "telephony_mode"),
        (json!({"incoming": {"assign_responsible_to": "middle"}}), "incoming.assign_responsible_to"),
        (json!({"incoming": {"unknown_toggle": true}}), "incoming.unknown_toggle"),
        (json!({"colour": "red"}), "colour"),
        (json!({"other": {"utm_tags": ["utm_source", "utm_bogus"]}}), "other.utm_tags[1]"),
        (json!({"other": {"utm_tags": ["utm_source", "utm_source"]}}), "other.utm_tags[1]"),
        (json!({"trusted_pbx": ["127.0.0.1", "not-an-ip"]}), "trusted_pbx[1]"),
        (json!({"pbx_host": "no-port"}), "pbx_host"),
        (json!({"min_talk_seconds": "five"}), "min_talk_seconds"),
        (json!({"incoming": {"default_responsible": 0}}), "incoming.default_responsible"),
    ];
    for (body, field) in cases {
        let (status, resp) = gw.api(Method::PUT, &path, Some(body.clone())).await;
        assert_eq!(status, 422, "{body} -> {resp}");
        assert_eq!(resp["error"], "validation_failed");
        assert_eq!(fields(&resp), [field], "{body}");
        assert!(!resp["fields"][0]["message"].as_str().unwrap().is_empty());
    }
    let (status, resp) = gw.api(Method::POST, &format!("/api/v1/portals/{id}/mappings"), Some(json!({"user_id": 0, "extension": ""}))).await;
    assert_eq!(status, 422);
    assert_eq!(fields(&resp), ["user_id", "extension"]);
    let (status, resp) = gw.api(Method::POST, &format!("/api/v1/portals/{id}/lines"), Some(json!({"number": "abc"}))).await;
    assert_eq!((status, fields(&resp)), (422, vec!["number".to_owned()]));
    let (status, resp) = gw.api(Method::POST, "/api/v1/portals", Some(json!({"domain": "a.bitrix24.ru", "auth": {"webhook_url": "http://evil.example.com/rest/1/x/"}}))).await;
    assert_eq!((status, fields(&resp)), (422, vec!["auth.webhook_url".to_owned()]));
    // Malformed JSON is a 400, not a 422.
    let resp = gw.client.put(format!("{}{path}", gw.base)).bearer_auth(TOKEN).header("content-type", "application/json").body("{").send().await.unwrap();
    assert_eq!(resp.status(), 400);
    // Nothing invalid was stored.
    let (_, s) = gw.api(Method::GET, &path, None).await;
    assert_eq!(s["telephony_mode"], "ip");
}

#[tokio::test]
async fn activation_is_refused_without_both_default_responsibles() {
    let gw = TestGateway::spawn().await;
    let id = gw.portal("a.bitrix24.ru").await;
    let path = format!("/api/v1/portals/{id}/settings");
    let (status, resp) = gw.api(Method::PUT, &path, Some(json!({"active": true}))).await;
    assert_eq!(status, 422);
    assert_eq!(fields(&resp), ["incoming.default_responsible", "outgoing.default_responsible"]);
    let (status, resp) = gw.api(Method::PUT, &path, Some(json!({"active": true, "incoming": {"default_responsible": 3}}))).await;
    assert_eq!((status, fields(&resp)), (422, vec!["outgoing.default_responsible".to_owned()]));
    let (_, s) = gw.api(Method::GET, &path, None).await;
    assert_eq!(s["active"], false, "refused activation stored nothing");
    // Saving while inactive needs no responsibles.
    let (status, _) = gw.api(Method::PUT, &path, Some(json!({"active": false, "min_talk_seconds": 2}))).await;
    assert_eq!(status, 200);
    let (status, s) = gw
        .api(Method::PUT, &path, Some(json!({"active": true, "incoming": {"default_responsible": 3}, "outgoing": {"default_responsible": 4}})))
        .await;
    assert_eq!((status, &s["active"]), (200, &json!(true)));
}

#[tokio::test]
async fn domains_are_normalised_and_invalid_ones_refused() {
    let gw = TestGateway::spawn().await;
    for spelling in ["comagic.bitrix24.ru", "https://comagic.bitrix24.ru/", "HTTP://Comagic.Bitrix24.ru/path"] {
        let (status, body) = gw.api(Method::POST, "/api/v1/portals", Some(json!({"domain": spelling}))).await;
        assert_eq!(status, 201, "{spelling}: {body}");
        assert_eq!(body["domain"], "https://comagic.bitrix24.ru/", "{spelling}");
        let id = body["id"].as_i64().unwrap();
        // The same portal twice is a conflict, whatever the spelling.
        let (status, dup) = gw.api(Method::POST, "/api/v1/portals", Some(json!({"domain": "COMAGIC.bitrix24.ru"}))).await;
        assert_eq!((status, fields(&dup)), (409, vec!["domain".to_owned()]));
        let (status, _) = gw.api(Method::DELETE, &format!("/api/v1/portals/{id}"), None).await;
        assert_eq!(status, 204);
    }
    for bad in ["", "not a domain", "ftp://comagic.bitrix24.ru", "https://", "-x-.ru", "nodot", "https://u:p@comagic.bitrix24.ru/"] {
        let (status, body) = gw.api(Method::POST, "/api/v1/portals", Some(json!({"domain": bad}))).await;
        assert_eq!((status, fields(&body)), (422, vec!["domain".to_owned()]), "{bad:?}");
    }
    let (status, body) = gw.api(Method::POST, "/api/v1/portals", Some(json!({"name": "x"}))).await;
    assert_eq!((status, fields(&body)), (422, vec!["domain".to_owned()]), "missing domain");
    let (_, list) = gw.api(Method::GET, "/api/v1/portals", None).await;
    assert_eq!(list, json!([]));
}

#[tokio::test]
async fn portals_can_be_edited_and_secrets_stay_write_only() {
    let gw = TestGateway::spawn().await;
    let (_, p) = gw
        .api(Method::POST, "/api/v1/portals", Some(json!({"domain": "a.bitrix24.ru", "auth": {"oauth": {"client_id": "local.abc.123", "client_secret": "s3cr3t-value"}}})))
        .await;
    let id = p["id"].as_i64().unwrap();
    assert_eq!(p["auth"]["oauth"]["client_secret"], "***");
    assert_eq!(p["auth"]["oauth"]["oauth_server"], "https://oauth.bitrix.info/");
    let text = gw.client.get(format!("{}/api/v1/portals", gw.base)).bearer_auth(TOKEN).send().await.unwrap().text().await.unwrap();
    assert!(!text.contains("s3cr3t-value"));
    // Edit the name and domain, sending the masked auth back: the secret is kept.
    let (status, edited) = gw.api(Method::PUT, &format!("/api/v1/portals/{id}"), Some(json!({"name": "Renamed", "domain": "b.bitrix24.ru", "auth": p["auth"]}))).await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!((edited["name"].as_str(), edited["domain"].as_str()), (Some("Renamed"), Some("https://b.bitrix24.ru/")));
    assert_eq!(edited["auth"]["oauth"]["client_id"], "local.abc.123");
    // A masked secret without a stored one is refused.
    let (status, resp) = gw.api(Method::POST, "/api/v1/portals", Some(json!({"domain": "c.bitrix24.ru", "auth": {"oauth": {"client_id": "x", "client_secret": "***"}}}))).await;
    assert_eq!((status, fields(&resp)), (422, vec!["auth.oauth.client_secret".to_owned()]));
    let (status, _) = gw.api(Method::GET, "/api/v1/portals/999", None).await;
    assert_eq!(status, 404);
    let (status, _) = gw.api(Method::GET, "/api/v1/portals/abc", None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn mappings_and_lines_crud() {
    let gw = TestGateway::spawn().await;
    let id = gw.portal("a.bitrix24.ru").await;
    let base = format!("/api/v1/portals/{id}/mappings");
    let (status, m) = gw.api(Method::POST, &base, Some(json!({"user_id": 5, "extension": "101"}))).await;
    assert_eq!(status, 201);
    assert_eq!(m["use_for_personal_manager"], true, "defaults to true");
    assert_eq!(m["contact"], Value::Null);
    let mid = m["id"].as_i64().unwrap();
    let (status, dup) = gw.api(Method::POST, &base, Some(json!({"user_id": 6, "extension": "101"}))).await;
    assert_eq!((status, fields(&dup)), (409, vec!["extension".to_owned()]));
    let (status, m2) = gw.api(Method::PUT, &format!("{base}/{mid}"), Some(json!({"user_id": 5, "extension": "102", "use_for_personal_manager": false}))).await;
    assert_eq!(status, 200);
    assert_eq!((m2["extension"].as_str(), m2["use_for_personal_manager"].as_bool()), (Some("102"), Some(false)));
    let (status, _) = gw.api(Method::PUT, &format!("{base}/999"), Some(json!({"user_id": 5, "extension": "103"}))).await;
    assert_eq!(status, 404);
    let (status, _) = gw.api(Method::DELETE, &format!("{base}/{mid}"), None).await;
    assert_eq!(status, 204);
    let (_, all) = gw.api(Method::GET, &base, None).await;
    assert_eq!(all, json!([]));

    let lines = format!("/api/v1/portals/{id}/lines");
    gw.api(Method::POST, &lines, Some(json!({"number": "84951234567"}))).await;
    let (status, _) = gw.api(Method::POST, &lines, Some(json!({"number": "+74951234567", "utm": {"utm_source": "yandex"}}))).await;
    assert_eq!(status, 201);
    let (_, all) = gw.api(Method::GET, &lines, None).await;
    assert_eq!(all, json!([{"number": "74951234567", "utm": {"utm_source": "yandex"}}]), "upsert by normalised number");
    let (status, _) = gw.api(Method::DELETE, &format!("{lines}/+7%20495%20123-45-67"), None).await;
    assert_eq!(status, 204);
    let (status, _) = gw.api(Method::DELETE, &format!("{lines}/74951234567"), None).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn health_metrics_and_openapi() {
    let gw = TestGateway::spawn().await;
    let (status, live) = gw.call(Method::GET, "/live", None, None).await;
    assert_eq!((status, live), (200, json!("ok")));
    let (status, ready) = gw.call(Method::GET, "/ready", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(ready["ready"], true);
    assert_eq!(ready["http"].as_str(), Some(gw.base.trim_start_matches("http://")));
    assert!(ready["sip_udp"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_ne!(ready["sip_udp"], "127.0.0.1:0");
    gw.call(Method::GET, "/api/v1/portals", None, None).await;
    let metrics = gw.client.get(format!("{}/metrics", gw.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("callgate_http_requests_total"), "{metrics}");
    assert!(metrics.contains(r#"route="/api/v1/portals""#));
    assert!(!metrics.contains(TOKEN));
    let (status, doc) = gw.call(Method::GET, "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    for path in ["/api/v1/portals", "/api/v1/portals/{id}", "/api/v1/portals/{id}/settings", "/api/v1/portals/{id}/mappings", "/api/v1/portals/{id}/mappings/{mapping_id}", "/api/v1/portals/{id}/lines", "/api/v1/portals/{id}/lines/{number}", "/api/v1/portals/{id}/index", "/api/v1/portals/{id}/index/sync", "/api/v1/portals/{id}/mappings/import", "/api/v1/route", "/api/v1/decisions", "/api/v1/calls", "/api/v1/calls/{id}", "/api/v1/bitrix24/events", "/api/v1/openapi.json", "/live", "/ready", "/metrics"] {
        assert!(doc["paths"][path].is_object(), "{path} missing from OpenAPI");
    }
    let settings = &doc["components"]["schemas"]["PortalSettings"]["properties"];
    assert_eq!((&settings["sip_domains"]["maxItems"], &settings["pbx_host"]["default"]), (&json!(16), &json!("")), "the served document is the generated one");
}

#[tokio::test]
async fn calls_need_the_token_and_unknown_ids_are_404() {
    let gw = TestGateway::spawn().await;
    assert_eq!(gw.call(Method::GET, "/api/v1/calls", None, None).await.0, 401);
    let (status, calls) = gw.api(Method::GET, "/api/v1/calls", None).await;
    assert_eq!((status, calls), (200, json!([])));
    assert_eq!(gw.api(Method::GET, "/api/v1/calls/42", None).await.0, 404);
    assert_eq!(gw.api(Method::GET, "/api/v1/calls/nope", None).await.0, 404);
    assert_eq!(gw.api(Method::GET, "/api/v1/calls?limit=-1", None).await.0, 400);
}
