//! `OAuthSession` against the stub (portal and OAuth server on one 127.0.0.1 port): a stale token
//! is refreshed once, the rotated pair reaches the `TokenStore` before the call is made again,
//! and a refused refresh is an `Auth` error with nothing stored.

use std::sync::Arc;

use parking_lot::Mutex;

use super::stub::{Canned, Stub};
use crate::crm::{EntityKind, Get};
use crate::{Client, Error, OAuthApp, OAuthSession, Secret, TokenSet, TokenStore, TokenStoreError};

/// Records what it was asked to save, and how many requests the stub had seen by then.
struct Recorder {
    stub: Arc<Stub>,
    saved: Mutex<Vec<(TokenSet, usize)>>,
}

impl TokenStore for Arc<Recorder> {
    async fn save(&self, tokens: &TokenSet) -> Result<(), TokenStoreError> {
        self.saved
            .lock()
            .push((tokens.clone(), self.stub.seen().len()));
        Ok(())
    }
}

fn installed(stub: &Stub) -> TokenSet {
    TokenSet {
        access_token: Secret::new("old-access"),
        refresh_token: Secret::new("old-refresh"),
        expires_at_unix: 1,
        client_endpoint: stub.url("/rest/"),
        member_id: "m1".into(),
    }
}

fn token_answer(stub_url: &str, member: &str) -> String {
    format!(
        r#"{{"access_token":"new-access","refresh_token":"new-refresh","expires":1780319382,"client_endpoint":"{stub_url}/rest/","member_id":"{member}"}}"#
    )
}

fn app(stub: &Stub) -> OAuthApp {
    OAuthApp {
        client_id: "local.app".into(),
        client_secret: Secret::new("app-secret"),
        oauth_server: stub.url("/"),
    }
}

const CONTACT: &str =
    r#"{"result":{"ID":"42","ASSIGNED_BY_ID":"7","PHONE":[{"VALUE":"+79161234567"}]}}"#;

async fn session_with(
    answers: impl FnOnce(&str) -> Vec<Canned>,
) -> (Arc<Stub>, Arc<Recorder>, OAuthSession<Arc<Recorder>>) {
    // The stub's address is needed in the answers: start it, then load them.
    let stub = Arc::new(Stub::start(vec![Canned::json(200, "{}")]).await);
    stub.set_answers(answers(&stub.url("")));
    let rec = Arc::new(Recorder {
        stub: Arc::clone(&stub),
        saved: Mutex::new(Vec::new()),
    });
    let session = OAuthSession::new(Client::new().unwrap(), installed(&stub), Arc::clone(&rec));
    (stub, rec, session)
}

#[tokio::test]
async fn an_expired_token_is_refreshed_once_stored_first_and_the_call_made_again() {
    let (stub, rec, session) = session_with(|base| {
        vec![
            Canned::json(401, r#"{"error":"expired_token","error_description":"The access token provided has expired."}"#),
            Canned::json(200, &token_answer(base, "m1")),
            Canned::json(200, CONTACT),
        ]
    })
    .await;
    let app = app(&stub);
    let contact = session
        .call(&app, |ep| {
            let client = session.client();
            async move {
                client
                    .invoke(
                        &ep,
                        &Get {
                            kind: EntityKind::Contact,
                            id: 42,
                        },
                    )
                    .await
            }
        })
        .await
        .unwrap();
    assert_eq!((contact.id, contact.assigned_by_id), (42, Some(7)));

    let seen = stub.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].json()["auth"], "old-access");
    assert_eq!(
        (seen[1].method.as_str(), seen[1].path.as_str()),
        ("GET", "/oauth/token/")
    );
    assert!(seen[1]
        .query
        .as_deref()
        .unwrap_or_default()
        .contains("refresh_token=old-refresh"));
    assert_eq!(
        seen[2].json()["auth"],
        "new-access",
        "called again with the new token"
    );
    let saved = rec.saved.lock().clone();
    assert_eq!(saved.len(), 1);
    assert_eq!(saved[0].0.refresh_token.expose(), "new-refresh");
    assert_eq!(saved[0].1, 2, "stored before the call was made again");
    assert_eq!(session.tokens().await.access_token.expose(), "new-access");
}

#[tokio::test]
async fn a_refused_refresh_is_an_auth_error_and_nothing_is_stored() {
    let (stub, rec, session) = session_with(|_| {
        vec![
            Canned::json(
                401,
                r#"{"error":"expired_token","error_description":"expired"}"#,
            ),
            Canned::json(
                400,
                r#"{"error":"invalid_grant","error_description":"Invalid grant"}"#,
            ),
        ]
    })
    .await;
    let err = session
        .call(&app(&stub), |ep| {
            let client = session.client();
            async move {
                client
                    .invoke(
                        &ep,
                        &Get {
                            kind: EntityKind::Lead,
                            id: 1,
                        },
                    )
                    .await
            }
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Auth { code, .. } if code == "invalid_grant"),
        "{err:?}"
    );
    assert!(rec.saved.lock().is_empty());
    assert_eq!(session.tokens().await.access_token.expose(), "old-access");
    assert_eq!(
        stub.seen().len(),
        2,
        "no second call after a refused refresh"
    );
}

#[tokio::test]
async fn a_refresh_naming_another_portal_keeps_the_installations_endpoint_and_member() {
    let (stub, rec, session) = session_with(|_| {
        vec![
            Canned::json(401, r#"{"error":"invalid_token","error_description":"Unable to get application by token"}"#),
            Canned::json(200, &token_answer("https://evil.example", "m2")),
            Canned::json(200, CONTACT),
        ]
    })
    .await;
    session
        .call(&app(&stub), |ep| {
            let client = session.client();
            async move {
                client
                    .invoke(
                        &ep,
                        &Get {
                            kind: EntityKind::Contact,
                            id: 42,
                        },
                    )
                    .await
            }
        })
        .await
        .unwrap();
    let saved = rec.saved.lock()[0].0.clone();
    assert_eq!(
        (saved.client_endpoint, saved.member_id),
        (stub.url("/rest/"), "m1".to_owned())
    );
    assert_eq!(
        saved.access_token.expose(),
        "new-access",
        "the rotated tokens are taken"
    );
    assert_eq!(
        stub.seen()[2].path,
        "/rest/crm.contact.get.json",
        "still the portal's own address"
    );
}
