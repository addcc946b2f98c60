//! Self-tests of the fake Bitrix24 (tests/it/fake_b24): real HTTP with reqwest, no gateway.
//! Transport, auth, limits, batch and faults here; telephony and CRM/users/events in
//! `fake_b24/selftest/` (included by path, so the fake's folder holds all of its files).

#[path = "fake_b24/selftest/crm_events.rs"]
mod crm_events;
#[path = "fake_b24/selftest/telephony.rs"]
mod telephony;

use std::time::Duration;

use axum::http::HeaderMap;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::fake_b24::{FakeB24, Fault};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

async fn answer(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// A webhook call with a form body.
async fn form(fake: &FakeB24, method: &str, pairs: &[(&str, &str)]) -> (u16, Value) {
    let url = format!("{}{method}.json", fake.webhook_url());
    answer(client().post(url).form(pairs).send().await.expect("sent")).await
}

/// A webhook call with a JSON body.
async fn json_call(fake: &FakeB24, method: &str, body: Value) -> (u16, Value) {
    let url = format!("{}{method}", fake.webhook_url());
    answer(client().post(url).json(&body).send().await.expect("sent")).await
}

async fn register(fake: &FakeB24, user: &str, phone: &str, extra: &[(&str, &str)]) -> String {
    let mut pairs = vec![
        ("USER_ID", user),
        ("PHONE_NUMBER", phone),
        ("TYPE", "2"),
        ("SHOW", "0"),
    ];
    pairs.extend_from_slice(extra);
    let (status, body) = form(fake, "telephony.externalcall.register", &pairs).await;
    assert_eq!(status, 200, "{body}");
    body["result"]["CALL_ID"]
        .as_str()
        .expect("CALL_ID")
        .to_owned()
}

/// A tiny handler on 127.0.0.1:0 that hands over (content-type, body) of each POST.
async fn receiver() -> (String, mpsc::Receiver<(String, String)>) {
    let (tx, rx) = mpsc::channel(16);
    let app = Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: String| {
            let tx = tx.clone();
            async move {
                let ct = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let _ = tx.send((ct, body)).await;
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("receiver serves") });
    (url, rx)
}

fn pairs_of(body: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect()
}

fn has(pairs: &[(String, String)], k: &str, v: &str) -> bool {
    pairs.iter().any(|(pk, pv)| pk == k && pv == v)
}

#[tokio::test]
async fn success_has_result_and_time_and_errors_have_no_time() {
    let fake = FakeB24::spawn().await;
    let (status, body) = form(&fake, "user.get", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], 4);
    assert!(body.get("next").is_none(), "no next on the last page");
    let time = &body["time"];
    assert!(
        time["start"].is_f64() && time["finish"].is_f64() && time["duration"].is_f64(),
        "{time}"
    );
    assert!(
        time["date_start"].as_str().unwrap().ends_with("+03:00"),
        "{time}"
    );
    assert!(time["operating_reset_at"].is_i64(), "{time}");

    let (status, body) = form(&fake, "no.such.method", &[]).await;
    assert_eq!(status, 404);
    assert_eq!(
        body,
        json!({"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"})
    );
    assert_eq!(fake.requests().len(), 2);
    assert_eq!(fake.requests()[1].method, "no.such.method");
}

#[tokio::test]
async fn webhook_credentials_scopes_and_case_insensitive_methods() {
    let fake = FakeB24::spawn().await;
    let wrong = format!("{}/rest/1/nope/user.get.json", fake.base());
    let (status, body) = answer(client().get(wrong).send().await.unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("INVALID_CREDENTIALS")),
        "{body}"
    );
    assert!(body.get("time").is_none());

    let crm_only = fake.add_webhook(5, "crmonly", &["crm"]);
    let (status, body) = answer(
        client()
            .get(format!("{crm_only}user.get"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("insufficient_scope")),
        "{body}"
    );
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .ends_with("webhook token"));

    let (status, body) = form(
        &fake,
        "Telephony.ExternalCall.Register",
        &[
            ("USER_ID", "11"),
            ("PHONE_NUMBER", "+7 900 111-22-33"),
            ("TYPE", "2"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(fake.calls()[2].method, "telephony.externalcall.register");
    assert_eq!(
        fake.registered()[0].shows,
        vec![vec![11]],
        "SHOW defaults to 1"
    );
}

#[tokio::test]
async fn php_bracket_params_are_the_same_from_form_query_and_json() {
    let fake = FakeB24::spawn().await;
    let call_id = register(&fake, "11", "79001112233", &[]).await;
    let cid = call_id.as_str();

    let (s1, _) = form(
        &fake,
        "telephony.externalcall.show",
        &[("CALL_ID", cid), ("USER_ID[0]", "11"), ("USER_ID[1]", "12")],
    )
    .await;
    let url = format!("{}telephony.externalcall.show", fake.webhook_url());
    let query = [("CALL_ID", cid), ("USER_ID[]", "12"), ("USER_ID[]", "13")];
    let (s2, _) = answer(client().get(url).query(&query).send().await.unwrap()).await;
    let (s3, _) = json_call(
        &fake,
        "telephony.externalcall.show",
        json!({"CALL_ID": cid, "USER_ID": [13, 11]}),
    )
    .await;
    assert_eq!((s1, s2, s3), (200, 200, 200));
    assert_eq!(
        fake.registered()[0].shows,
        vec![vec![11, 12], vec![12, 13], vec![13, 11]]
    );
    let shows = fake.calls_of("telephony.externalcall.show");
    assert_eq!(
        shows[0].params["USER_ID"],
        json!(["11", "12"]),
        "form lists are recorded as arrays"
    );

    let (status, _) = form(
        &fake,
        "crm.lead.list",
        &[
            ("filter[>ID]", "0"),
            ("select[]", "ID"),
            ("select[]", "PHONE"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        fake.calls_of("crm.lead.list")[0].params["select"],
        json!(["ID", "PHONE"])
    );
}

#[tokio::test]
async fn the_bucket_rejects_the_51st_quick_request_and_recovers_after_draining() {
    let fake = FakeB24::spawn().await;
    fake.pause_clock();
    for i in 0..50 {
        let (status, _) = form(&fake, "scope", &[]).await;
        assert_eq!(status, 200, "request {i}");
    }
    let (status, body) = form(&fake, "scope", &[]).await;
    assert_eq!(status, 503);
    assert_eq!(
        body,
        json!({"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"})
    );
    assert_eq!(fake.rejected(), 1);

    fake.advance(Duration::from_millis(500));
    assert_eq!(
        form(&fake, "scope", &[]).await.0,
        200,
        "one slot drained at 2/s"
    );
    assert_eq!(form(&fake, "scope", &[]).await.0, 503);
    assert_eq!(fake.rejected(), 2);
}

#[tokio::test]
async fn a_batch_counts_once_and_links_register_to_finish() {
    let fake = FakeB24::spawn().await;
    fake.pause_clock();
    // A raw body: serde_json would sort "fin" before "reg"; the fake keeps the sent order.
    let raw = r#"{"halt": 0, "cmd": {
        "reg": "telephony.externalcall.register?USER_ID=11&PHONE_NUMBER=%2B79001112233&TYPE=2&SHOW=0&EXTERNAL_CALL_ID=pbx-1",
        "fin": "telephony.externalcall.finish?CALL_ID=$result[reg][CALL_ID]&USER_ID=12&DURATION=30&STATUS_CODE=200&ADD_TO_CHAT=0"}}"#;
    let req = client()
        .post(format!("{}batch", fake.webhook_url()))
        .header("content-type", "application/json")
        .body(raw);
    let (status, body) = answer(req.send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    let r = &body["result"];
    assert_eq!(r["result_error"], json!([]));
    assert_eq!(r["result"]["reg"]["CALL_ID"], r["result"]["fin"]["CALL_ID"]);
    assert_eq!(r["result"]["fin"]["CALL_START_DATE"], json!({}));
    assert!(r["result_time"]["fin"]["start"].is_f64());
    assert_eq!(fake.requests().len(), 1);
    assert_eq!(fake.calls().len(), 2);
    assert!(
        (fake.bucket_level() - 1.0).abs() < 1e-9,
        "a batch is one request"
    );
    let call = &fake.registered()[0];
    let fin = call.finished.as_ref().expect("finished");
    assert_eq!(
        (fin.user_id, fin.duration, fin.add_to_chat.as_deref()),
        (12, 30, Some("0"))
    );
    assert_eq!(
        fake.calls()[1].params["CALL_ID"],
        json!(call.call_id),
        "params after substitution"
    );
}

#[tokio::test]
async fn a_batch_refuses_commands_past_fifty_and_nested_batches() {
    let fake = FakeB24::spawn().await;
    let cmd: serde_json::Map<String, Value> = (0..52)
        .map(|i| (format!("c{i:02}"), json!("scope")))
        .collect();
    let (status, body) = json_call(&fake, "batch", json!({"cmd": cmd})).await;
    assert_eq!(status, 200);
    let errors = body["result"]["result_error"].as_object().expect("errors");
    assert_eq!(errors.len(), 2);
    assert_eq!(errors["c51"]["error"], "ERROR_BATCH_LENGTH_EXCEEDED");
    assert_eq!(body["result"]["result"].as_object().unwrap().len(), 50);

    let (_, body) = json_call(
        &fake,
        "batch",
        json!({"cmd": ["scope", "batch?cmd[a]=scope"]}),
    )
    .await;
    assert_eq!(
        body["result"]["result_error"]["1"]["error"],
        "ERROR_BATCH_METHOD_NOT_ALLOWED"
    );
    let (_, body) = json_call(&fake, "batch", json!({"cmd": ["scope", "profile"]})).await;
    assert!(
        body["result"]["result"].is_array(),
        "keys 0..n-1 give a JSON array: {body}"
    );
    assert_eq!(body["result"]["result_next"], json!([]));
}

#[tokio::test]
async fn injected_faults_answer_then_the_portal_recovers() {
    let fake = FakeB24::spawn().await;
    fake.fail_next(1, Fault::Status503QueryLimit);
    fake.fail_next(1, Fault::Html502);
    fake.fail_next(1, Fault::Reset);
    let (status, body) = form(&fake, "scope", &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("QUERY_LIMIT_EXCEEDED"))
    );
    let resp = client()
        .post(format!("{}scope", fake.webhook_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 502);
    assert!(resp.text().await.unwrap().contains("<html>"));
    let reset = client()
        .post(format!("{}scope", fake.webhook_url()))
        .send()
        .await;
    assert!(
        reset.is_err(),
        "the connection is dropped without an answer"
    );
    assert_eq!(form(&fake, "scope", &[]).await.0, 200);
    assert_eq!(fake.rejected(), 1);
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![503, 502, 0, 200]);
}

#[tokio::test]
async fn a_stall_outlasts_the_client_timeout_until_cleared() {
    let fake = FakeB24::spawn().await;
    fake.set_fault_mode(Some(Fault::Stall(Duration::from_secs(30))));
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = impatient
        .post(format!("{}scope", fake.webhook_url()))
        .send()
        .await
        .expect_err("times out");
    assert!(err.is_timeout(), "{err}");
    fake.set_fault_mode(None);
    assert_eq!(form(&fake, "scope", &[]).await.0, 200);
}

#[tokio::test]
async fn operating_limit_app_only_telephony_and_documented_error_codes_are_switchable() {
    let fake = FakeB24::spawn().await;
    fake.set_operating_limit(Duration::from_secs(2), Duration::from_secs(1));
    assert_eq!(form(&fake, "user.get", &[]).await.0, 200);
    let (_, body) = form(&fake, "user.get", &[]).await;
    assert_eq!(body["time"]["operating"], 2.0);
    let (status, body) = form(&fake, "user.get", &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("OPERATION_TIME_LIMIT"))
    );
    assert_eq!(
        form(&fake, "scope", &[]).await.0,
        200,
        "other methods keep working"
    );
    fake.clear_operating_limit();

    fake.set_app_only_telephony(true);
    let reg = [
        ("USER_ID", "11"),
        ("PHONE_NUMBER", "79001112233"),
        ("TYPE", "2"),
    ];
    let (status, body) = form(&fake, "telephony.externalcall.register", &reg).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("WRONG_AUTH_TYPE"))
    );
    fake.set_app_only_telephony(false);

    fake.set_empty_error_code(Some("ERROR_CORE"));
    let (_, body) = form(
        &fake,
        "telephony.externalcall.finish",
        &[("CALL_ID", "nope"), ("USER_ID", "11")],
    )
    .await;
    assert_eq!(body["error"], "ERROR_CORE");
}

#[tokio::test]
async fn token_errors_are_no_auth_invalid_and_expired() {
    let fake = FakeB24::spawn().await;
    let app = fake.install_app("local.app.1", "s3cret");
    let url = format!("{}profile", app.client_endpoint);
    let with_auth = |token: &str| client().get(&url).query(&[("auth", token)]).send();
    assert_eq!(
        answer(with_auth(&app.access_token).await.unwrap()).await.0,
        200
    );
    let bearer = client().get(&url).bearer_auth(&app.access_token).send();
    assert_eq!(
        answer(bearer.await.unwrap()).await.0,
        200,
        "Bearer works too"
    );
    let (status, body) = answer(client().get(&url).send().await.unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("NO_AUTH_FOUND"))
    );
    let (status, body) = answer(with_auth("garbage").await.unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_token"))
    );

    fake.expire_access_tokens();
    let (status, body) = answer(with_auth(&app.access_token).await.unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("expired_token"))
    );
    assert_eq!(
        body["error_description"],
        "The access token provided has expired"
    );
}

#[tokio::test]
async fn a_refresh_checks_the_client_and_rotates_the_refresh_token() {
    let fake = FakeB24::spawn().await;
    let app = fake.install_app("local.app.1", "s3cret");
    let refresh = |secret: &str, token: &str| {
        let q = [
            ("grant_type", "refresh_token"),
            ("client_id", "local.app.1"),
            ("client_secret", secret),
            ("refresh_token", token),
        ];
        client().get(fake.oauth_token_url()).query(&q).send()
    };
    let (status, body) = answer(refresh("wrong", &app.refresh_token).await.unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let (status, fresh) = answer(refresh("s3cret", &app.refresh_token).await.unwrap()).await;
    assert_eq!(status, 200, "{fresh}");
    assert_eq!(
        (
            fresh["client_endpoint"].as_str(),
            fresh["member_id"].as_str()
        ),
        (
            Some(app.client_endpoint.as_str()),
            Some(app.member_id.as_str())
        )
    );
    assert_eq!(fresh["expires_in"], 3600);
    assert_ne!(fresh["refresh_token"], app.refresh_token.as_str());
    let url = format!("{}profile", app.client_endpoint);
    let (status, _) = answer(
        client()
            .get(&url)
            .query(&[("auth", fresh["access_token"].as_str().unwrap())])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = answer(refresh("s3cret", &app.refresh_token).await.unwrap()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "the old refresh token is spent"
    );
    assert_eq!(fake.refresh_count(), 1);
    assert_eq!(fake.oauth_requests().len(), 3);
}
