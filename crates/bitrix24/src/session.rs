//! [`OAuthSession`]: one portal's OAuth tokens in use. Calls go out with the current access
//! token; on `expired_token`/`invalid_token` the session refreshes once (single flight, through a
//! [`TokenCell`]) and the call is made once more with the new token. The rotated pair goes to the
//! caller's [`TokenStore`] inside the refresh, before any waiting caller sees it, so a restart
//! never comes back with a refresh token the OAuth server has already replaced.
//!
//! The refresh answer is the OAuth server's word, but its `client_endpoint` and `member_id` are
//! still vetted ([`vet_refresh`]): the installation's `member_id` is kept, and an endpoint on
//! another host, port, scheme or path is not taken (the rotated tokens always are: the old
//! refresh token is spent) unless the portal answered a redirect to exactly that host and the
//! answer names the same `member_id` (a renamed portal, [`crate::moves`]).
//!
//! The app's credentials ([`OAuthApp`]) are passed per call: they are configuration and may
//! change while the tokens, which are state, carry on.

use std::future::Future;

use crate::moves::{moved_endpoint, same_portal_endpoint};
use crate::oauth::{refresh, TokenCell, TokenSet, DEFAULT_OAUTH_SERVER};
use crate::{Client, Endpoint, Error, Secret};

/// The error a [`TokenStore`] reports.
pub type TokenStoreError = Box<dyn std::error::Error + Send + Sync>;

/// Where an [`OAuthSession`] persists rotated tokens (the caller's database, a file, …).
pub trait TokenStore: Send + Sync {
    /// Persists `tokens`, the pair a refresh just returned (after [`vet_refresh`]). Runs inside
    /// the refresh, before any caller sees the new pair. Retry inside if that makes sense: the
    /// old refresh token is already spent, so on an error the session logs it and uses the new
    /// pair in memory only.
    fn save(&self, tokens: &TokenSet) -> impl Future<Output = Result<(), TokenStoreError>> + Send;
}

/// A [`TokenStore`] that keeps nothing (tests, short-lived tools).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoStore;

impl TokenStore for NoStore {
    async fn save(&self, _tokens: &TokenSet) -> Result<(), TokenStoreError> {
        Ok(())
    }
}

/// An OAuth app's credentials (from the app's registration in Bitrix24).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthApp {
    /// `client_id` (`local.xxxxxxxx.yyyyyyyy` or a Market app's id).
    pub client_id: String,
    /// `client_secret`.
    pub client_secret: Secret,
    /// The OAuth server; empty means [`DEFAULT_OAUTH_SERVER`].
    pub oauth_server: String,
}

impl OAuthApp {
    /// An app using the default OAuth server.
    pub fn new(client_id: impl Into<String>, client_secret: Secret) -> Self {
        Self {
            client_id: client_id.into(),
            client_secret,
            oauth_server: DEFAULT_OAUTH_SERVER.to_owned(),
        }
    }
}

/// One portal's OAuth tokens in use, refreshed at most once at a time. Share it (`Arc`) among
/// everything that calls this portal.
#[derive(Debug)]
pub struct OAuthSession<S> {
    client: Client,
    cell: TokenCell,
    store: S,
}

impl<S: TokenStore> OAuthSession<S> {
    /// A session starting from `tokens` (from the install event or the caller's store).
    pub fn new(client: Client, tokens: TokenSet, store: S) -> Self {
        Self {
            client,
            cell: TokenCell::new(tokens),
            store,
        }
    }

    /// The HTTP client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The caller's store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The current tokens (waits while a refresh is in flight).
    pub async fn tokens(&self) -> TokenSet {
        self.cell.current().await
    }

    /// Replaces the tokens (a new install event brought fresh ones); waits for a refresh in
    /// flight, so that refresh cannot overwrite them afterwards. Not stored: the caller has them.
    pub async fn replace(&self, tokens: TokenSet) {
        self.cell.replace(tokens).await;
    }

    /// Runs `op` with the portal's endpoint; when it fails with an error that
    /// [needs a token refresh](Error::needs_token_refresh), refreshes once (single flight) and
    /// runs `op` once more with the new token.
    ///
    /// # Errors
    /// `op`'s error, the endpoint's ([`Error::InvalidUrl`]) or the refresh's ([`Error::Auth`] when
    /// the OAuth server refuses: the app must be reinstalled).
    pub async fn call<T, F, Fut>(&self, app: &OAuthApp, op: F) -> Result<T, Error>
    where
        F: Fn(Endpoint) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let tokens = self.tokens().await;
        match op(Endpoint::oauth(
            &tokens.client_endpoint,
            tokens.access_token.clone(),
        )?)
        .await
        {
            Err(e) if e.needs_token_refresh() => {
                let fresh = self.refresh_after(app, &tokens.access_token, None).await?;
                op(Endpoint::oauth(&fresh.client_endpoint, fresh.access_token)?).await
            }
            other => other,
        }
    }

    /// Tokens newer than `stale`: refreshes at the OAuth server unless another caller already
    /// did, vets the answer ([`vet_refresh`], with `moved_to` the `Location` of a redirect the
    /// portal answered, if that is why), and saves it in the [`TokenStore`] before anyone sees it.
    ///
    /// # Errors
    /// The refresh's error; callers that waited for that same attempt get the same error.
    ///
    /// # Cancel safety
    /// Cancelling a waiter is harmless; cancelling the caller that runs the refresh may lose the
    /// rotated pair (see [`refresh`]).
    pub async fn refresh_after(
        &self,
        app: &OAuthApp,
        stale: &Secret,
        moved_to: Option<&str>,
    ) -> Result<TokenSet, Error> {
        let refresh_fn = |current: TokenSet| async move {
            let fresh = refresh(
                &self.client,
                &app.oauth_server,
                &app.client_id,
                &app.client_secret,
                &current.refresh_token,
            )
            .await?;
            let vetted = vet_refresh(&current, fresh, moved_to);
            if let Err(e) = self.store.save(&vetted).await {
                tracing::error!(endpoint = %vetted.client_endpoint, error = %e, "storing the rotated Bitrix24 tokens failed; they are used in memory only");
            }
            Ok(vetted)
        };
        self.cell.refreshed_after(stale, refresh_fn, |_| {}).await
    }
}

/// The refreshed set as it may be used: the identity (`member_id`, `client_endpoint`) stays the
/// installation's unless the answer names the same portal; the rotated tokens are always taken.
///
/// `moved_to`: the `Location` of a portal that answered with a redirect. The answer's endpoint
/// is then also taken when it is on that very host and the answer names the installation's own
/// `member_id` (the OAuth server vouches that this portal lives there now).
pub fn vet_refresh(current: &TokenSet, fresh: TokenSet, moved_to: Option<&str>) -> TokenSet {
    let same_member = !current.member_id.is_empty() && fresh.member_id == current.member_id;
    let moved =
        moved_to.is_some_and(|loc| same_member && moved_endpoint(&fresh.client_endpoint, loc));
    let endpoint = if moved
        || same_portal_endpoint(&fresh.client_endpoint, &current.client_endpoint)
    {
        fresh.client_endpoint
    } else {
        if !fresh.client_endpoint.is_empty() {
            tracing::warn!(endpoint = %current.client_endpoint, "the OAuth server's refresh answer names a client_endpoint off the portal; the installation's is kept");
        }
        current.client_endpoint.clone()
    };
    if !fresh.member_id.is_empty() && fresh.member_id != current.member_id {
        tracing::warn!(endpoint = %current.client_endpoint, "the OAuth server's refresh answer names another member_id; the installation's is kept");
    }
    TokenSet {
        client_endpoint: endpoint,
        member_id: current.member_id.clone(),
        ..fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(endpoint: &str, member: &str, access: &str) -> TokenSet {
        TokenSet {
            access_token: Secret::new(access),
            refresh_token: Secret::new(format!("r-{access}")),
            expires_at_unix: 100,
            client_endpoint: endpoint.into(),
            member_id: member.into(),
        }
    }

    #[test]
    fn a_move_is_taken_only_for_the_same_member_on_the_locations_host() {
        let cur = set("https://old.bitrix24.ru/rest/", "m1", "a");
        let loc = Some("https://new.bitrix24.ru/rest/batch.json");
        let got = vet_refresh(&cur, set("https://new.bitrix24.ru/rest/", "m1", "b"), loc);
        assert_eq!(got.client_endpoint, "https://new.bitrix24.ru/rest/");
        let other_member = vet_refresh(&cur, set("https://new.bitrix24.ru/rest/", "m2", "b"), loc);
        assert_eq!(
            other_member.client_endpoint,
            "https://old.bitrix24.ru/rest/"
        );
        let other_host = vet_refresh(&cur, set("https://evil.example/rest/", "m1", "b"), loc);
        assert_eq!(other_host.client_endpoint, "https://old.bitrix24.ru/rest/");
        let no_redirect = vet_refresh(&cur, set("https://new.bitrix24.ru/rest/", "m1", "b"), None);
        assert_eq!(no_redirect.client_endpoint, "https://old.bitrix24.ru/rest/");
    }

    #[test]
    fn a_refresh_naming_another_host_or_member_keeps_the_installations_identity() {
        let current = set("https://a.bitrix24.ru/rest/", "m1", "old");
        let evil = set("https://evil.example/rest/", "m2", "new");
        let got = vet_refresh(&current, evil, None);
        assert_eq!(
            (
                got.client_endpoint.as_str(),
                got.member_id.as_str(),
                got.access_token.expose()
            ),
            ("https://a.bitrix24.ru/rest/", "m1", "new"),
            "the rotated tokens are taken, the identity is not"
        );
        let same = set("https://a.bitrix24.ru/rest/", "m1", "new");
        assert_eq!(vet_refresh(&current, same.clone(), None), same);
    }
}
