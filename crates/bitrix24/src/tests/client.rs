//! `Client` against the local stub: what it sends, and how it reads each kind of answer.

use std::time::Duration;

use serde_json::json;

use super::stub::{Canned, Stub};
use crate::{
    BatchCommand, Client, Endpoint, Error, Params, RegisterResult, Response, Secret, Time, User,
};

const REGISTER_OK: &str = r#"{"result":{"CALL_ID":"externalCall.716f1cb73def9700a23842adf9c4c568.1773130779",
  "CRM_CREATED_LEAD":null,"CRM_CREATED_ENTITIES":[],"CRM_ENTITY_TYPE":"CONTACT","CRM_ENTITY_ID":797},
  "time":{"start":1773130778.12,"finish":1773130779.12,"duration":1.0,"processing":0.9,
  "date_start":"2026-03-10T11:19:38+03:00","date_finish":"2026-03-10T11:19:39+03:00",
  "operating_reset_at":1773131378,"operating":0.22}}"#;

fn client() -> Client {
    Client::builder()
        .request_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

fn webhook(stub: &Stub) -> Endpoint {
    Endpoint::webhook(&Secret::new(stub.url("/rest/1/s3cr3tcode"))).unwrap()
}

fn register_params() -> Params {
    Params::new()
        .set("USER_ID", 5)
        .set("PHONE_NUMBER", "+74951234567")
        .set("TYPE", 2)
        .set("SHOW", 0)
}

#[tokio::test]
async fn webhook_call_posts_json_to_method_url_and_decodes() {
    let stub = Stub::start(vec![Canned::json(200, REGISTER_OK)]).await;
    let resp = client()
        .call(
            &webhook(&stub),
            "telephony.externalcall.register",
            &register_params(),
        )
        .await
        .unwrap();

    let seen = stub.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(
        seen[0].path,
        "/rest/1/s3cr3tcode/telephony.externalcall.register.json"
    );
    assert_eq!(seen[0].query, None);
    assert_eq!(seen[0].content_type.as_deref(), Some("application/json"));
    assert_eq!(
        String::from_utf8(seen[0].body.clone()).unwrap(),
        r#"{"USER_ID":5,"PHONE_NUMBER":"+74951234567","TYPE":2,"SHOW":0}"#
    );
    assert_eq!(
        resp.time,
        Some(Time {
            operating: 0.22,
            operating_reset_at: 1_773_131_378
        })
    );
    let reg: RegisterResult = resp.decode().unwrap();
    assert_eq!(reg.crm_entity_id, Some(797));
}

#[tokio::test]
async fn oauth_call_sends_the_token_as_auth_in_the_body() {
    let body = r#"{"result":[{"ID":"1","ACTIVE":true,"NAME":"Anna","UF_PHONE_INNER":"101"}],"total":51,"next":50}"#;
    let stub = Stub::start(vec![Canned::json(200, body)]).await;
    let ep = Endpoint::oauth(&stub.url("/rest/"), Secret::new("acc3ss")).unwrap();
    let params = Params::new()
        .set_map("FILTER", Params::new().set("ACTIVE", "true"))
        .set("auth", "spoofed");
    let resp: Response = client().call(&ep, "user.get", &params).await.unwrap();

    let seen = &stub.seen()[0];
    assert_eq!(seen.path, "/rest/user.get.json");
    assert_eq!(
        seen.json(),
        json!({"FILTER": {"ACTIVE": "true"}, "auth": "acc3ss"})
    );
    let page = resp.into_page::<User>().unwrap();
    assert_eq!(
        (page.items.len(), page.total, page.next),
        (1, Some(51), Some(50))
    );
}

#[tokio::test]
async fn empty_error_code_is_classified_by_description() {
    let body = r#"{"error":"","error_description":"Call is not found (call should be registered prior to finishing"}"#;
    let stub = Stub::start(vec![Canned::json(400, body)]).await;
    let err = client()
        .call(
            &webhook(&stub),
            "telephony.externalcall.finish",
            &Params::new().set("CALL_ID", "x"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::CallNotFound { .. }), "{err:?}");
}

#[tokio::test]
async fn query_limit_503_is_rate_limited_and_retryable() {
    let body = r#"{"error":"QUERY_LIMIT_EXCEEDED","error_description":"Too many requests"}"#;
    let stub = Stub::start(vec![Canned::json(503, body)]).await;
    let err = client()
        .call(&webhook(&stub), "user.get", &Params::new())
        .await
        .unwrap_err();
    assert_eq!(err, Error::RateLimited);
    assert!(err.retryable());
    assert_eq!(err.retry_after_hint(), Some(Duration::from_secs(1)));
}

#[tokio::test]
async fn html_502_is_an_http_error_with_a_snippet() {
    let page = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>";
    let stub = Stub::start(vec![Canned::html(502, page)]).await;
    let err = client()
        .call(&webhook(&stub), "user.get", &Params::new())
        .await
        .unwrap_err();
    let Error::Http {
        status,
        body_snippet,
    } = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(*status, 502);
    assert!(body_snippet.contains("502 Bad Gateway"), "{body_snippet}");
    assert!(err.retryable());
}

#[tokio::test]
async fn a_stalled_answer_times_out_as_a_network_error_without_the_url() {
    let stub = Stub::start(vec![
        Canned::json(200, REGISTER_OK).after(Duration::from_secs(10))
    ])
    .await;
    let client = Client::builder()
        .request_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let err = client
        .call(&webhook(&stub), "user.get", &Params::new())
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    let Error::Network { message } = &err else {
        panic!("{err:?}")
    };
    assert!(message.contains("timed out"), "{message}");
    assert!(!err.to_string().contains("s3cr3tcode"), "{err}");
    assert!(err.retryable());
}

#[tokio::test]
async fn a_302_is_reported_not_followed() {
    let stub = Stub::start(vec![
        Canned::redirect("https://new-portal.bitrix24.ru/rest/1/s3cr3tcode/user.get.json"),
        Canned::json(200, r#"{"result":true}"#),
    ])
    .await;
    let err = client()
        .call(&webhook(&stub), "user.get", &Params::new())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::Moved {
            location: "https://new-portal.bitrix24.ru/rest/1/s3cr3tcode/user.get.json".into()
        }
    );
    assert!(!err.to_string().contains("s3cr3tcode"));
    assert_eq!(stub.seen().len(), 1, "the redirect must not be followed");
}

#[tokio::test]
async fn a_relative_location_is_made_absolute() {
    let stub = Stub::start(vec![Canned::redirect("/moved/")]).await;
    let err = client()
        .call(&webhook(&stub), "user.get", &Params::new())
        .await
        .unwrap_err();
    assert_eq!(
        err,
        Error::Moved {
            location: stub.url("/moved/")
        }
    );
}

#[tokio::test]
async fn an_error_inside_http_200_is_still_an_error() {
    let stub = Stub::start(vec![Canned::json(
        200,
        r#"{"error":"expired_token","error_description":"The access token provided has expired."}"#,
    )])
    .await;
    let ep = Endpoint::oauth(&stub.url("/rest/"), Secret::new("old")).unwrap();
    let err = client()
        .call(&ep, "user.get", &Params::new())
        .await
        .unwrap_err();
    assert!(err.needs_token_refresh());
}

#[tokio::test]
async fn a_json_answer_without_result_is_a_decode_error() {
    let stub = Stub::start(vec![Canned::json(200, r#"{"time":{}}"#)]).await;
    let err = client()
        .call(&webhook(&stub), "user.get", &Params::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
}

#[tokio::test]
async fn an_oversized_answer_is_refused() {
    let big = format!(r#"{{"result":"{}"}}"#, "x".repeat(10_000));
    let stub = Stub::start(vec![Canned::json(200, &big)]).await;
    let client = Client::builder().max_body_bytes(1_000).build().unwrap();
    let err = client
        .call(&webhook(&stub), "user.get", &Params::new())
        .await
        .unwrap_err();
    assert_eq!(err, Error::TooLarge { limit_bytes: 1_000 });
}

#[tokio::test]
async fn batch_sends_cmd_strings_with_literal_references() {
    let answer = r#"{"result":{"result":{"reg":{"CALL_ID":"externalCall.abc.1"}},
        "result_error":{"fin":{"error":"","error_description":"User is not found or is not active"}},
        "result_total":[],"result_next":[],"result_time":[]},"time":{"start":1.0}}"#;
    let stub = Stub::start(vec![Canned::json(200, answer)]).await;
    let ep = Endpoint::oauth(&stub.url("/rest"), Secret::new("tok")).unwrap();
    let cmds = [
        BatchCommand::new("reg", "telephony.externalcall.register", register_params()),
        BatchCommand::new(
            "fin",
            "telephony.externalcall.finish",
            Params::new()
                .set("CALL_ID", Params::reference("reg", "CALL_ID"))
                .set("USER_ID", 5)
                .set("STATUS_CODE", "603-S"),
        ),
        BatchCommand::new("ping", "app.info", Params::new()),
    ];
    let result = client().batch(&ep, &cmds, true).await.unwrap();

    let seen = &stub.seen()[0];
    assert_eq!(seen.path, "/rest/batch.json");
    assert_eq!(
        seen.json(),
        json!({
            "halt": 1,
            "cmd": {
                "reg": "telephony.externalcall.register?USER_ID=5&PHONE_NUMBER=%2B74951234567&TYPE=2&SHOW=0",
                "fin": "telephony.externalcall.finish?CALL_ID=$result[reg][CALL_ID]&USER_ID=5&STATUS_CODE=603-S",
                "ping": "app.info"
            },
            "auth": "tok"
        })
    );
    assert_eq!(result.result["reg"]["CALL_ID"], "externalCall.abc.1");
    assert_eq!(result.result_error["fin"], Error::UserNotFound);
}

#[tokio::test]
async fn invalid_batches_are_refused_before_sending() {
    let stub = Stub::start(vec![Canned::json(200, r#"{"result":{}}"#)]).await;
    let ep = webhook(&stub);
    let c = client();
    let many: Vec<_> = (0..51)
        .map(|i| BatchCommand::new(format!("c{i}"), "user.get", Params::new()))
        .collect();
    assert_eq!(
        c.batch(&ep, &many, false).await.unwrap_err(),
        Error::BatchTooLarge {
            commands: 51,
            max: 50
        }
    );
    for key in ["0", "12", "", "a b", "a]", "dup"] {
        let mut cmds = vec![BatchCommand::new(key, "user.get", Params::new())];
        if key == "dup" {
            cmds.push(BatchCommand::new("dup", "user.get", Params::new()));
        }
        let err = c.batch(&ep, &cmds, false).await.unwrap_err();
        assert!(
            matches!(err, Error::InvalidBatchKey { .. }),
            "{key:?}: {err:?}"
        );
    }
    let nested = [BatchCommand::new("b", "batch", Params::new())];
    assert!(matches!(
        c.batch(&ep, &nested, false).await,
        Err(Error::InvalidMethod { .. })
    ));
    assert!(c.batch(&ep, &many[..50], false).await.is_ok());
    assert_eq!(stub.seen().len(), 1, "only the valid batch was sent");
    assert!(c.batch(&ep, &[], false).await.unwrap().result.is_empty());
    assert_eq!(stub.seen().len(), 1, "an empty batch sends nothing");
}

#[tokio::test]
async fn bad_method_names_are_refused() {
    let stub = Stub::start(vec![Canned::json(200, r#"{"result":true}"#)]).await;
    for m in ["", "../admin", "user.get?x=1", ".hidden", "user/get"] {
        let err = client()
            .call(&webhook(&stub), m, &Params::new())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidMethod { .. }), "{m:?}: {err:?}");
    }
    assert!(stub.seen().is_empty());
}

#[test]
fn plain_http_is_only_for_loopback() {
    for ok in [
        "http://127.0.0.1:9/rest/1/x/",
        "http://localhost/rest/",
        "http://[::1]:8080/rest/",
        "https://b24.example.com/rest/",
    ] {
        assert!(Endpoint::oauth(ok, Secret::new("t")).is_ok(), "{ok}");
    }
    let err = Endpoint::webhook(&Secret::new("http://portal.bitrix24.ru/rest/1/s3cr3tcode/"))
        .unwrap_err();
    assert_eq!(
        err,
        Error::InsecureUrl {
            host: "portal.bitrix24.ru".into()
        }
    );
    assert!(!err.to_string().contains("s3cr3tcode"));
    for bad in [
        "ftp://h/rest/",
        "not a url",
        "https://h/rest/?a=1",
        "https://h/rest/#f",
        "/rest/",
    ] {
        let err = Endpoint::oauth(bad, Secret::new("t")).unwrap_err();
        assert!(matches!(err, Error::InvalidUrl { .. }), "{bad}: {err:?}");
    }
}

#[test]
fn base_urls_get_a_trailing_slash_and_debug_hides_secrets() {
    let ep = Endpoint::webhook(&Secret::new("https://b24.example.com/rest/1/s3cr3tcode")).unwrap();
    assert_eq!(
        ep.method_url("telephony.externalcall.register")
            .unwrap()
            .as_str(),
        "https://b24.example.com/rest/1/s3cr3tcode/telephony.externalcall.register.json"
    );
    let debug = format!("{ep:?}");
    assert!(
        debug.contains("https://b24.example.com") && !debug.contains("s3cr3tcode"),
        "{debug}"
    );
    let oauth = Endpoint::oauth("https://b24.example.com/rest/", Secret::new("acc3ss")).unwrap();
    assert!(!format!("{oauth:?}").contains("acc3ss"));
    let rotated = oauth.with_access_token(Secret::new("n3w"));
    assert_eq!(rotated.access_token().map(Secret::expose), Some("n3w"));
    assert_eq!(
        ep.with_access_token(Secret::new("n3w")).access_token(),
        None
    );
}

#[tokio::test]
async fn connection_refused_is_a_network_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let ep = Endpoint::webhook(&Secret::new(format!("http://{addr}/rest/1/s3cr3tcode/"))).unwrap();
    let err = client()
        .call(&ep, "user.get", &Params::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Network { .. }), "{err:?}");
    assert!(!err.to_string().contains("s3cr3tcode"), "{err}");
}

#[tokio::test]
async fn https_to_a_plain_http_server_fails_the_handshake() {
    let stub = Stub::start(vec![Canned::json(200, r#"{"result":true}"#)]).await;
    let ep = Endpoint::oauth(&format!("https://{}/rest/", stub.addr), Secret::new("t")).unwrap();
    let err = client()
        .call(&ep, "user.get", &Params::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Network { .. }), "{err:?}");
}

#[test]
fn a_root_ca_without_certificates_is_refused() {
    let err = Client::builder()
        .with_root_ca("not a pem")
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::ClientBuild { .. }), "{err:?}");
}
