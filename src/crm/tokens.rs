//! Where to call each portal, and with which token: [`Tokens`] holds one
//! [`OAuthSession`](bitrix24::OAuthSession) per OAuth portal (loaded from the store on first use,
//! filled by `ONAPPINSTALL`) and runs calls through [`Tokens::call`], which refreshes the access
//! token once on `expired_token`/`invalid_token` and retries the call once.
//!
//! Single flight: all callers of a portal share its session, so concurrent calls that hit the
//! same expired token wait for one refresh. The rotated pair is written to the store through
//! [`PortalStore`] (callgate's [`TokenStore`]) *inside* that refresh, before any waiter sees it:
//! a restart never comes back with a refresh token the OAuth server has already replaced.
//!
//! The refresh answer is the OAuth server's word, but the session still vets its
//! `client_endpoint` and `member_id` against the installation's ([`bitrix24::vet_refresh`]): an
//! answer naming another host keeps the stored endpoint (the tokens, already rotated, are stored).
//! At install, [`endpoint_on_portal`] checks the endpoint against the portal's configured domain.
//!
//! A portal that moved to a new address answers 302 (the client never follows redirects,
//! [`CrmError::Moved`]). It is followed only when that cannot send a call, or a token, anywhere
//! else ([`bitrix24::moves`]):
//! * an OAuth app: a token refresh at the configured OAuth server must name the *same*
//!   `member_id` and a `client_endpoint` on exactly the host the `Location` names; then that
//!   endpoint is stored with the tokens (and its domain as the portal's) and the call is made
//!   once more there. Otherwise nothing changes and the call fails as `Moved` (logged, counted).
//! * a webhook (the URL is the credential): only to another Bitrix24 cloud host
//!   ([`BITRIX24_CLOUD`]) with the very same `/rest/<user>/<code>/` path ([`webhook_move`]);
//!   the new URL is stored as the portal's webhook and used from then on.
//!
//! A refused refresh (`invalid_grant`: the refresh token expired after 180 days or the app was
//! reinstalled elsewhere) cannot heal by itself: it is logged as an error telling the admin to
//! reinstall the app, and callers keep retrying with their own backoff.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bitrix24::moves::moved_endpoint;
use bitrix24::{OAuthApp, OAuthSession, TokenStore, TokenStoreError};
use dashmap::DashMap;

use super::{b24_secret, own_secret, CrmClient, CrmError, Endpoint, TokenSet};
use crate::config::Secret;
use crate::directory::PortalEntry;
use crate::settings::{normalize_domain, Auth, PortalId};
use crate::store::{PortalTokens, StoreError, StoreHandle};

pub use bitrix24::moves::{webhook_move, BITRIX24_CLOUD};

/// One OAuth portal's session, its rotated tokens kept in the store.
type Session = OAuthSession<PortalStore>;

/// Why a portal could not be called.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// The portal has no credentials at all.
    #[error("the portal has no Bitrix24 credentials")]
    NoCredentials,
    /// An OAuth portal whose app was not installed yet (no ONAPPINSTALL received).
    #[error("the Bitrix24 app is not installed on this portal yet (no ONAPPINSTALL received)")]
    NotInstalled,
    /// The OAuth server refused to refresh: the app must be reinstalled.
    #[error("the token refresh was refused ({0}); reinstall the Bitrix24 app on the portal")]
    Reinstall(CrmError),
    /// The call (or a transient refresh failure) failed.
    #[error(transparent)]
    Crm(#[from] CrmError),
    /// The store failed while loading the tokens.
    #[error("loading the portal's tokens failed: {0}")]
    Store(String),
}

impl AccessError {
    /// QUERY_LIMIT_EXCEEDED: the caller must slow down.
    pub fn rate_limited(&self) -> bool {
        matches!(self, Self::Crm(CrmError::RateLimited))
    }
}

impl From<StoreError> for AccessError {
    fn from(e: StoreError) -> Self {
        Self::Store(e.to_string())
    }
}

/// Every portal's way in. Cheap to share (`Arc`).
pub struct Tokens {
    client: CrmClient,
    store: StoreHandle,
    /// Sessions of OAuth portals loaded so far. Holds handles only; no guard lives across an await.
    sessions: DashMap<PortalId, Arc<Session>>,
    /// Webhook portals that moved: (the configured URL, the one followed). Applies while the
    /// portal's configured URL is still the old one (the stored settings are updated too, and
    /// win once the directory reloads them).
    moved: DashMap<PortalId, (String, Secret)>,
    /// OAuth portals whose last redirect the OAuth server did not confirm, and when: further
    /// redirects within [`UNCONFIRMED_MOVE_QUIET`] fail at once instead of refreshing again (each
    /// refresh rotates the tokens, and Bitrix24 may block an app that refreshes too often).
    unconfirmed_moves: DashMap<PortalId, std::time::Instant>,
}

/// How long an unconfirmed redirect of an OAuth portal is not checked again.
const UNCONFIRMED_MOVE_QUIET: Duration = Duration::from_secs(600);

impl Tokens {
    /// A registry calling through `client`, persisting to `store`.
    pub fn new(client: CrmClient, store: StoreHandle) -> Arc<Self> {
        Arc::new(Self {
            client,
            store,
            sessions: DashMap::new(),
            moved: DashMap::new(),
            unconfirmed_moves: DashMap::new(),
        })
    }

    /// The shared HTTP client.
    pub fn client(&self) -> &CrmClient {
        &self.client
    }

    /// Runs `op` against `portal`'s endpoint; for an OAuth portal whose token is stale, refreshes
    /// once (single flight) and runs `op` once more with the new token.
    ///
    /// # Errors
    /// [`AccessError`]: no credentials, not installed, a refused refresh, or `op`'s error.
    pub async fn call<T, F, Fut>(&self, portal: &PortalEntry, op: F) -> Result<T, AccessError>
    where
        F: Fn(Endpoint) -> Fut,
        Fut: Future<Output = Result<T, CrmError>>,
    {
        let app = match &portal.portal.auth {
            Some(Auth::Webhook { url }) => return self.call_webhook(portal, url, op).await,
            Some(Auth::OAuth { client_id, client_secret, oauth_server }) => {
                OAuthApp { client_id: client_id.clone(), client_secret: b24_secret(client_secret), oauth_server: oauth_server.clone() }
            }
            None => return Err(AccessError::NoCredentials),
        };
        let id = portal.portal.id;
        let session = self.session(id).await?.ok_or(AccessError::NotInstalled)?;
        let tokens = session.tokens().await;
        match op(Endpoint::oauth(&tokens.client_endpoint, tokens.access_token.clone())?).await {
            Err(e) if e.needs_token_refresh() => {
                let fresh = session.refresh_after(&app, &tokens.access_token, None).await.map_err(|e| refused(id, e))?;
                Ok(op(Endpoint::oauth(&fresh.client_endpoint, fresh.access_token)?).await?)
            }
            Err(CrmError::Moved { location }) => {
                let fresh = self.confirm_move(portal, &session, &app, &tokens, location).await?;
                Ok(op(Endpoint::oauth(&fresh.client_endpoint, fresh.access_token)?).await?)
            }
            other => Ok(other?),
        }
    }

    /// An OAuth portal answered a redirect to `location`: a refresh at the OAuth server must
    /// confirm it (same `member_id`, an endpoint on that host); then the new address is stored
    /// and the fresh tokens returned. An unconfirmed redirect is not checked again for
    /// [`UNCONFIRMED_MOVE_QUIET`].
    async fn confirm_move(&self, portal: &PortalEntry, session: &Session, app: &OAuthApp, tokens: &TokenSet, location: String) -> Result<TokenSet, AccessError> {
        let id = portal.portal.id;
        let quiet = self.unconfirmed_moves.get(&id).is_some_and(|at| at.elapsed() < UNCONFIRMED_MOVE_QUIET);
        if quiet {
            moved_outcome("refused");
            return Err(CrmError::Moved { location }.into());
        }
        let fresh = session.refresh_after(app, &tokens.access_token, Some(&location)).await.map_err(|e| refused(id, e))?;
        if fresh.client_endpoint == tokens.client_endpoint || !moved_endpoint(&fresh.client_endpoint, &location) {
            self.unconfirmed_moves.insert(id, std::time::Instant::now());
            moved_outcome("refused");
            tracing::error!(portal = id, "the portal answers with a redirect, but the OAuth server does not confirm the new address for this member_id; not followed (reinstall the app if the portal was renamed)");
            return Err(CrmError::Moved { location }.into());
        }
        self.unconfirmed_moves.remove(&id);
        moved_outcome("followed");
        tracing::warn!(portal = id, endpoint = %fresh.client_endpoint, "the portal moved to a new address (confirmed by the OAuth server for the same member_id); following it and storing it");
        if let Ok(domain) = normalize_domain(&fresh.client_endpoint) {
            self.store_portal(portal, domain, portal.portal.auth.clone()).await;
        }
        Ok(fresh)
    }

    /// A webhook portal's call; a 302 to the same webhook on another Bitrix24 cloud host is
    /// followed once and remembered (and stored).
    async fn call_webhook<T, F, Fut>(&self, portal: &PortalEntry, url: &Secret, op: F) -> Result<T, AccessError>
    where
        F: Fn(Endpoint) -> Fut,
        Fut: Future<Output = Result<T, CrmError>>,
    {
        let id = portal.portal.id;
        let current = self
            .moved
            .get(&id)
            .filter(|m| m.0 == url.expose())
            .map_or_else(|| url.clone(), |m| m.1.clone());
        match op(Endpoint::webhook(&b24_secret(&current))?).await {
            Err(CrmError::Moved { location }) => {
                let Some(new) = webhook_move(current.expose(), &location) else {
                    moved_outcome("refused");
                    tracing::error!(portal = id, error = %CrmError::Moved { location: location.clone() }, "the webhook answers with a redirect off Bitrix24's cloud or to another webhook path; not followed (update the portal's webhook URL)");
                    return Err(CrmError::Moved { location }.into());
                };
                moved_outcome("followed");
                let new = Secret::new(new);
                tracing::warn!(portal = id, error = %CrmError::Moved { location }, "the portal moved to another Bitrix24 address; following it and storing the webhook URL");
                self.moved.insert(id, (url.expose().to_owned(), new.clone()));
                let domain = normalize_domain(new.expose()).unwrap_or_else(|_| portal.portal.domain.clone());
                self.store_portal(portal, domain, Some(Auth::Webhook { url: new.clone() })).await;
                Ok(op(Endpoint::webhook(&b24_secret(&new))?).await?)
            }
            other => Ok(other?),
        }
    }

    /// Stores a moved portal's new domain (and webhook URL): the settings, the install check
    /// and a restart then know the new address. A failure is logged (the move is still followed
    /// in memory, and found again after a restart).
    async fn store_portal(&self, portal: &PortalEntry, domain: String, auth: Option<Auth>) {
        let p = &portal.portal;
        let new = crate::store::NewPortal { name: p.name.clone(), domain, auth };
        let id = p.id;
        if let Err(e) = self.store.run(move |s| s.update_portal(id, &new)).await {
            tracing::error!(portal = id, error = %e, "storing the portal's new address failed");
        }
    }

    /// Stores a new installation and puts its tokens in force at once.
    ///
    /// # Errors
    /// The store failed (the install must then be repeated).
    pub async fn install(&self, t: PortalTokens) -> Result<(), StoreError> {
        let (set, portal) = (token_set(&t), t.portal);
        // In memory first: waits for a refresh in flight, so that refresh cannot overwrite the
        // new installation afterwards.
        let session = self.sessions.get(&t.portal).map(|s| Arc::clone(&s));
        if let Some(session) = session {
            session.replace(set).await;
        }
        let now = super::now_ms();
        let stored = self.store.run(move |s| s.put_portal_tokens(&t, now)).await;
        if stored.is_err() {
            // Not stored: forget the session so the next call reloads what the store holds.
            self.sessions.remove(&portal);
        }
        stored
    }

    /// The portal's stored installation, if any (straight from the store).
    ///
    /// # Errors
    /// The store failed.
    pub async fn installation(&self, portal: PortalId) -> Result<Option<PortalTokens>, StoreError> {
        self.store.run(move |s| s.portal_tokens(portal)).await
    }

    /// Forgets a portal's session (deleted, or its installation replaced outside this registry).
    pub fn forget(&self, portal: PortalId) {
        self.sessions.remove(&portal);
    }

    /// The portal's session, loaded from the store on first use; `None` when not installed.
    async fn session(&self, portal: PortalId) -> Result<Option<Arc<Session>>, StoreError> {
        if let Some(s) = self.sessions.get(&portal) {
            return Ok(Some(Arc::clone(&s)));
        }
        let Some(stored) = self.store.run(move |s| s.portal_tokens(portal)).await? else {
            return Ok(None);
        };
        // Another task may have loaded it meanwhile: the first one in wins, so all share one session.
        let session = self.sessions.entry(portal).or_insert_with(|| {
            let store = PortalStore { store: self.store.clone(), portal };
            Arc::new(OAuthSession::new(self.client.clone(), token_set(&stored), store))
        });
        Ok(Some(Arc::clone(&session)))
    }
}

/// Where an OAuth portal's rotated tokens go: its row in the store (callgate's [`TokenStore`]).
pub struct PortalStore {
    store: StoreHandle,
    portal: PortalId,
}

/// Tries of writing a rotated pair (the old refresh token is already spent).
const STORE_ATTEMPTS: u32 = 5;

impl TokenStore for PortalStore {
    async fn save(&self, t: &TokenSet) -> Result<(), TokenStoreError> {
        let portal = self.portal;
        metrics::counter!("callgate_crm_token_refreshes_total").increment(1);
        let mut attempt = 1;
        loop {
            let (access, refresh, expires, endpoint) = (own_secret(&t.access_token), own_secret(&t.refresh_token), t.expires_at_unix, t.client_endpoint.clone());
            let now = super::now_ms();
            match self.store.run(move |s| s.rotate_portal_tokens(portal, &access, &refresh, expires, &endpoint, now)).await {
                Ok(_) => {
                    tracing::info!(portal, "Bitrix24 access token refreshed");
                    return Ok(());
                }
                Err(e) if attempt < STORE_ATTEMPTS => {
                    tracing::warn!(portal, error = %e, attempt, "storing the refreshed Bitrix24 tokens failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100) * attempt).await;
                    attempt += 1;
                }
                Err(e) => return Err(format!("portal {portal}: {e}; a restart needs a reinstall of the app").into()),
            }
        }
    }
}

/// True when `endpoint` is `http(s)://<the portal's host[:port]>/rest/` (the only shape
/// Bitrix24 hands out), so no answer can point calls at another host or path.
pub(crate) fn endpoint_on_portal(endpoint: &str, portal_domain: &str) -> bool {
    let Ok(url) = url::Url::parse(endpoint.trim()) else {
        return false;
    };
    url.path() == "/rest/"
        && url.query().is_none()
        && url.fragment().is_none()
        && normalize_domain(endpoint).ok().as_deref() == Some(portal_domain)
}

fn moved_outcome(outcome: &'static str) {
    metrics::counter!("callgate_crm_portal_moved_total", "outcome" => outcome).increment(1);
}

/// A refresh failure: `Auth` (`invalid_grant`, `invalid_client`, ...) needs a human.
fn refused(portal: PortalId, e: CrmError) -> AccessError {
    match e {
        CrmError::Auth { .. } => {
            tracing::error!(portal, error = %e, "Bitrix24 refused to refresh the app's token: reinstall the app on the portal (its ONAPPINSTALL brings new tokens); deliveries keep retrying until then");
            metrics::counter!("callgate_crm_token_refresh_refused_total").increment(1);
            AccessError::Reinstall(e)
        }
        other => AccessError::Crm(other),
    }
}

fn token_set(t: &PortalTokens) -> TokenSet {
    TokenSet {
        access_token: b24_secret(&t.access_token),
        refresh_token: b24_secret(&t.refresh_token),
        expires_at_unix: t.expires_at_unix,
        client_endpoint: t.client_endpoint.clone(),
        member_id: t.member_id.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_portals_rest_path_is_its_endpoint() {
        let d = "https://a.bitrix24.ru/";
        assert!(endpoint_on_portal("https://a.bitrix24.ru/rest/", d));
        assert!(endpoint_on_portal("https://A.Bitrix24.ru:443/rest/", d));
        for bad in [
            "https://evil.example/rest/",
            "https://a.bitrix24.ru.evil.example/rest/",
            "https://a.bitrix24.ru/oauth/token/",
            "https://a.bitrix24.ru/rest/?x=1",
            "https://a.bitrix24.ru:8443/rest/",
            "",
        ] {
            assert!(!endpoint_on_portal(bad, d), "{bad}");
        }
    }
}
