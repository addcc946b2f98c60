//! Token refresh against the stub, and the single-flight `TokenCell`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::stub::{Canned, Stub};
use crate::oauth::{refresh, refresh_url, DEFAULT_OAUTH_SERVER};
use crate::{Client, Error, Secret, TokenCell, TokenSet};

const TOKEN_OK: &str = r#"{"access_token":"n3w-access","client_endpoint":"https://portal.bitrix24.com/rest/",
  "domain":"oauth.bitrix.info","expires":1780319382,"expires_in":3600,"member_id":"a223c8",
  "refresh_token":"n3w-refresh","scope":"crm,entity,im,task","server_endpoint":"https://oauth.bitrix.info/rest/",
  "status":"F","user_id":67}"#;

fn tokens(access: &str, refresh: &str) -> TokenSet {
    TokenSet {
        access_token: Secret::new(access),
        refresh_token: Secret::new(refresh),
        expires_at_unix: 1_000,
        client_endpoint: "https://portal.bitrix24.com/rest/".into(),
        member_id: "a223c8".into(),
    }
}

#[tokio::test]
async fn refresh_gets_the_token_url_and_parses_the_answer() {
    let stub = Stub::start(vec![Canned::json(200, TOKEN_OK)]).await;
    let client = Client::new().unwrap();
    let got = refresh(
        &client,
        &stub.url("/"),
        "app.123",
        &Secret::new("cl i&ent"),
        &Secret::new("old-refresh"),
    )
    .await
    .unwrap();
    assert_eq!(
        got,
        TokenSet {
            access_token: Secret::new("n3w-access"),
            refresh_token: Secret::new("n3w-refresh"),
            expires_at_unix: 1_780_319_382,
            client_endpoint: "https://portal.bitrix24.com/rest/".into(),
            member_id: "a223c8".into(),
        }
    );
    let seen = &stub.seen()[0];
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("GET", "/oauth/token/")
    );
    assert_eq!(
        seen.query.as_deref(),
        Some("grant_type=refresh_token&client_id=app.123&client_secret=cl+i%26ent&refresh_token=old-refresh")
    );
}

#[test]
fn refresh_url_defaults_and_adds_the_slash() {
    let (secret, rt) = (Secret::new("s"), Secret::new("r"));
    let default = refresh_url("", "id", &secret, &rt).unwrap();
    assert!(default.as_str().starts_with(&format!(
        "{DEFAULT_OAUTH_SERVER}oauth/token/?grant_type=refresh_token"
    )));
    let no_slash = refresh_url("https://oauth.example.com", "id", &secret, &rt).unwrap();
    assert!(
        no_slash
            .as_str()
            .starts_with("https://oauth.example.com/oauth/token/?"),
        "{no_slash}"
    );
    assert!(matches!(
        refresh_url("http://oauth.example.com/", "id", &secret, &rt),
        Err(Error::InsecureUrl { .. })
    ));
}

#[tokio::test]
async fn oauth_server_errors_are_auth_errors_even_with_http_200() {
    let cases = [
        (
            400,
            r#"{"error":"invalid_grant","error_description":"Invalid grant"}"#,
            "invalid_grant",
        ),
        (
            401,
            r#"{"error":"invalid_client","error_description":"Invalid client"}"#,
            "invalid_client",
        ),
        (
            200,
            r#"{"error":"wrong_client","error_description":"Wrong client"}"#,
            "wrong_client",
        ),
        (
            400,
            r#"{"error":"invalid_request","error_description":"Invalid request"}"#,
            "invalid_request",
        ),
        (
            401,
            r#"{"error":"expired_token","error_description":"x"}"#,
            "expired_token",
        ),
        (
            200,
            r#"{"error":"NOT_INSTALLED","error_description":"Application not installed"}"#,
            "NOT_INSTALLED",
        ),
    ];
    let client = Client::new().unwrap();
    for (status, body, code) in cases {
        let stub = Stub::start(vec![Canned::json(status, body)]).await;
        let err = refresh(
            &client,
            &stub.url("/"),
            "id",
            &Secret::new("s3cret"),
            &Secret::new("r"),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(&err, Error::Auth { code: c, .. } if c == code),
            "{body}: {err:?}"
        );
        assert!(!err.retryable());
        assert!(!err.to_string().contains("s3cret"));
    }
}

#[tokio::test]
async fn transient_oauth_failures_stay_retryable() {
    let client = Client::new().unwrap();
    let stub = Stub::start(vec![Canned::html(502, "<html>Bad Gateway</html>")]).await;
    let err = refresh(
        &client,
        &stub.url("/"),
        "id",
        &Secret::new("s"),
        &Secret::new("r"),
    )
    .await
    .unwrap_err();
    assert!(err.retryable(), "{err:?}");
    let stub = Stub::start(vec![Canned::json(
        200,
        r#"{"access_token":"","refresh_token":"x","client_endpoint":"e"}"#,
    )])
    .await;
    let err = refresh(
        &client,
        &stub.url("/"),
        "id",
        &Secret::new("s"),
        &Secret::new("r"),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
}

#[tokio::test]
async fn an_answer_without_expires_uses_expires_in() {
    let body = r#"{"access_token":"a","refresh_token":"b","expires_in":"3600","client_endpoint":"https://p/rest/","member_id":"m"}"#;
    let stub = Stub::start(vec![Canned::json(200, body)]).await;
    let got = refresh(
        &Client::new().unwrap(),
        &stub.url("/"),
        "id",
        &Secret::new("s"),
        &Secret::new("r"),
    )
    .await
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        (now + 3590..=now + 3610).contains(&got.expires_at_unix),
        "{}",
        got.expires_at_unix
    );
}

/// 20 callers saw the same stale token: one refresh, everyone gets the new tokens, and the
/// rotation hook ran before anyone got them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_refresh() {
    let cell = Arc::new(TokenCell::new(tokens("stale", "r1")));
    let refreshes = Arc::new(AtomicUsize::new(0));
    let rotations = Arc::new(AtomicUsize::new(0));
    let persisted = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (cell, refreshes, rotations, persisted) = (
            cell.clone(),
            refreshes.clone(),
            rotations.clone(),
            persisted.clone(),
        );
        tasks.spawn(async move {
            let got = cell
                .refreshed_after(
                    &Secret::new("stale"),
                    |current| async move {
                        assert_eq!(current.refresh_token.expose(), "r1");
                        refreshes.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Ok(tokens("fresh", "r2"))
                    },
                    |_new| {
                        rotations.fetch_add(1, Ordering::SeqCst);
                        persisted.store(true, Ordering::SeqCst);
                    },
                )
                .await
                .unwrap();
            assert!(
                persisted.load(Ordering::SeqCst),
                "released before the rotation was persisted"
            );
            got
        });
    }
    while let Some(got) = tasks.join_next().await {
        assert_eq!(got.unwrap(), tokens("fresh", "r2"));
    }
    assert_eq!(refreshes.load(Ordering::SeqCst), 1);
    assert_eq!(rotations.load(Ordering::SeqCst), 1);
    assert_eq!(cell.current().await, tokens("fresh", "r2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_share_a_failed_refresh_and_a_later_caller_tries_again() {
    let cell = Arc::new(TokenCell::new(tokens("stale", "r1")));
    let attempts = Arc::new(AtomicUsize::new(0));
    let invalid_grant = Error::Auth {
        code: "invalid_grant".into(),
        description: "Invalid grant".into(),
    };
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (cell, attempts, err) = (cell.clone(), attempts.clone(), invalid_grant.clone());
        tasks.spawn(async move {
            let fail = |_| async move {
                attempts.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                Err(err)
            };
            cell.refreshed_after(&Secret::new("stale"), fail, |_| {
                panic!("no rotation on failure")
            })
            .await
        });
    }
    while let Some(got) = tasks.join_next().await {
        assert_eq!(got.unwrap(), Err(invalid_grant.clone()));
    }
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    assert_eq!(cell.current().await, tokens("stale", "r1"));

    // A new failure report (not one that was waiting) refreshes again.
    let got = cell
        .refreshed_after(
            &Secret::new("stale"),
            |_| async { Ok(tokens("fresh", "r2")) },
            |_| {},
        )
        .await;
    assert_eq!(got, Ok(tokens("fresh", "r2")));
}

#[tokio::test]
async fn an_already_replaced_token_is_returned_without_refreshing() {
    let cell = TokenCell::new(tokens("fresh", "r2"));
    let got = cell
        .refreshed_after(
            &Secret::new("older"),
            |_| async { panic!("must not refresh") },
            |_| panic!("no rotation"),
        )
        .await;
    assert_eq!(got, Ok(tokens("fresh", "r2")));
    cell.replace(tokens("reinstalled", "r9")).await;
    assert_eq!(cell.current().await.access_token.expose(), "reinstalled");
}

#[test]
fn expiry_margin() {
    let t = tokens("a", "r");
    assert!(!t.expires_within(900, 60));
    assert!(t.expires_within(940, 60));
    assert!(t.expires_within(2_000, 0));
}
