//! Where to call each portal, and with which token: [`Tokens`] holds one [`TokenCell`] per OAuth
//! portal (loaded from the store on first use, filled by `ONAPPINSTALL`) and runs calls through
//! [`Tokens::call`], which refreshes the access token once on `expired_token`/`invalid_token`
//! and retries the call once.
//!
//! Single flight: all callers of a portal share its cell, so concurrent calls that hit the same
//! expired token wait for one refresh ([`TokenCell::refreshed_after`]). The rotated pair is
//! written to the store *inside* that refresh, before any waiter sees it (the cell's
//! `on_rotated` hook is synchronous, and the store is behind the blocking pool, so the write
//! happens at the end of the refresh future instead): a restart never comes back with a refresh
//! token the OAuth server has already replaced.
//!
//! The refresh answer is the OAuth server's word, but its `client_endpoint` is still checked
//! against the portal's domain before it is used or stored ([`endpoint_on_portal`]): an answer
//! naming another host keeps the stored endpoint (the tokens, already rotated, are stored).
//!
//! A portal that moved to a new address answers 302 (bitrix24-rest.md §1.6; the client never
//! follows redirects, [`CrmError::Moved`]). It is followed only when that cannot send a call,
//! or a token, anywhere else:
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

use dashmap::DashMap;

use super::client::{CrmClient, Endpoint};
use super::error::CrmError;
use super::oauth::{self, TokenCell, TokenSet};
use crate::config::Secret;
use crate::directory::PortalEntry;
use crate::settings::{normalize_domain, Auth, PortalId};
use crate::store::{PortalTokens, StoreError, StoreHandle};

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
    /// Cells of OAuth portals loaded so far. Holds handles only; no guard lives across an await.
    cells: DashMap<PortalId, Arc<TokenCell>>,
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
            cells: DashMap::new(),
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
        let (client_id, client_secret, oauth_server) = match &portal.portal.auth {
            Some(Auth::Webhook { url }) => return self.call_webhook(portal, url, op).await,
            Some(Auth::OAuth {
                client_id,
                client_secret,
                oauth_server,
            }) => (client_id, client_secret, oauth_server),
            None => return Err(AccessError::NoCredentials),
        };
        let (id, domain) = (portal.portal.id, portal.portal.domain.as_str());
        let cell = self.cell(id).await?.ok_or(AccessError::NotInstalled)?;
        let tokens = cell.current().await;
        let app = Client {
            id: client_id,
            secret: client_secret,
            oauth_server,
        };
        let refresh = |moved_to: Option<String>| {
            let cell = &cell;
            let stale = tokens.access_token.clone();
            async move {
                let refresh = |current: TokenSet| self.refresh_and_persist(id, domain, current, app, moved_to.as_deref());
                cell.refreshed_after(&stale, refresh, |_| metrics::counter!("callgate_crm_token_refreshes_total").increment(1))
                    .await
                    .map_err(|e| refused(id, e))
            }
        };
        match op(Endpoint::oauth(
            &tokens.client_endpoint,
            tokens.access_token.clone(),
        )?)
        .await
        {
            Err(e) if e.needs_token_refresh() => {
                let fresh = refresh(None).await?;
                Ok(op(Endpoint::oauth(&fresh.client_endpoint, fresh.access_token)?).await?)
            }
            Err(CrmError::Moved { location }) => {
                let quiet = self.unconfirmed_moves.get(&id).is_some_and(|at| at.elapsed() < UNCONFIRMED_MOVE_QUIET);
                if quiet {
                    moved_outcome("refused");
                    return Err(CrmError::Moved { location }.into());
                }
                let fresh = refresh(Some(location.clone())).await?;
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
                Ok(op(Endpoint::oauth(&fresh.client_endpoint, fresh.access_token)?).await?)
            }
            other => Ok(other?),
        }
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
        match op(Endpoint::webhook(&current)?).await {
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
                Ok(op(Endpoint::webhook(&new)?).await?)
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
        let cell = self.cells.get(&t.portal).map(|c| Arc::clone(&c));
        if let Some(cell) = cell {
            cell.replace(set).await;
        }
        let now = super::now_ms();
        let stored = self.store.run(move |s| s.put_portal_tokens(&t, now)).await;
        if stored.is_err() {
            // Not stored: forget the cell so the next call reloads what the store holds.
            self.cells.remove(&portal);
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

    /// Forgets a portal's cell (deleted, or its installation replaced outside this registry).
    pub fn forget(&self, portal: PortalId) {
        self.cells.remove(&portal);
    }

    /// The portal's cell, loaded from the store on first use; `None` when not installed.
    async fn cell(&self, portal: PortalId) -> Result<Option<Arc<TokenCell>>, StoreError> {
        if let Some(c) = self.cells.get(&portal) {
            return Ok(Some(Arc::clone(&c)));
        }
        let Some(stored) = self.store.run(move |s| s.portal_tokens(portal)).await? else {
            return Ok(None);
        };
        // Another task may have loaded it meanwhile: the first one in wins, so all share one cell.
        let cell = self
            .cells
            .entry(portal)
            .or_insert_with(|| Arc::new(TokenCell::new(token_set(&stored))));
        Ok(Some(Arc::clone(&cell)))
    }

    /// One refresh at the OAuth server, then the rotated pair written to the store (retried a
    /// few times: the old refresh token is already spent).
    async fn refresh_and_persist(
        &self,
        portal: PortalId,
        domain: &str,
        current: TokenSet,
        app: Client<'_>,
        moved_to: Option<&str>,
    ) -> Result<TokenSet, CrmError> {
        let fresh = oauth::refresh(
            &self.client,
            app.oauth_server,
            app.id,
            app.secret,
            &current.refresh_token,
        )
        .await?;
        let stored = checked_refresh(portal, domain, current, fresh, moved_to);
        for attempt in 1..=5u32 {
            let t = stored.clone();
            let now = super::now_ms();
            match self
                .store
                .run(move |s| {
                    s.rotate_portal_tokens(
                        portal,
                        &t.access_token,
                        &t.refresh_token,
                        t.expires_at_unix,
                        &t.client_endpoint,
                        now,
                    )
                })
                .await
            {
                Ok(_) => break,
                Err(e) if attempt < 5 => {
                    tracing::warn!(portal, error = %e, attempt, "storing the refreshed Bitrix24 tokens failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100) * attempt).await;
                }
                Err(e) => {
                    tracing::error!(portal, error = %e, "storing the refreshed Bitrix24 tokens failed; they are used in memory, a restart needs a reinstall")
                }
            }
        }
        tracing::info!(portal, "Bitrix24 access token refreshed");
        Ok(stored)
    }
}

/// The configured app a refresh speaks for.
#[derive(Clone, Copy)]
struct Client<'a> {
    id: &'a str,
    secret: &'a Secret,
    oauth_server: &'a str,
}

/// The refreshed set as it may be used: the identity (`member_id`, `client_endpoint`) stays the
/// installation's unless the answer names the same portal; the rotated tokens are always taken
/// (the old refresh token is spent).
///
/// `moved_to`: the `Location` of a portal that answered with a redirect. The answer's endpoint
/// is then also taken when it is on that very host and the answer names the installation's own
/// `member_id` (the OAuth server vouches that this portal lives there now).
fn checked_refresh(portal: PortalId, domain: &str, current: TokenSet, fresh: TokenSet, moved_to: Option<&str>) -> TokenSet {
    let same_member = !current.member_id.is_empty() && fresh.member_id == current.member_id;
    let moved = moved_to.is_some_and(|loc| same_member && moved_endpoint(&fresh.client_endpoint, loc));
    let endpoint = if moved || endpoint_on_portal(&fresh.client_endpoint, domain) {
        fresh.client_endpoint
    } else {
        if !fresh.client_endpoint.is_empty() {
            tracing::warn!(portal, "the OAuth server's refresh answer names a client_endpoint off the portal's domain; the stored endpoint is kept");
        }
        current.client_endpoint
    };
    if !fresh.member_id.is_empty() && fresh.member_id != current.member_id {
        tracing::warn!(
            portal,
            "the OAuth server's refresh answer names another member_id; the installation's is kept"
        );
    }
    TokenSet {
        client_endpoint: endpoint,
        member_id: current.member_id,
        ..fresh
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

/// Bitrix24's cloud domains: a webhook is followed only to a host under one of them.
pub const BITRIX24_CLOUD: &[&str] = &[
    "bitrix24.com", "bitrix24.ru", "bitrix24.de", "bitrix24.eu", "bitrix24.es", "bitrix24.fr", "bitrix24.it", "bitrix24.pl",
    "bitrix24.uk", "bitrix24.in", "bitrix24.id", "bitrix24.vn", "bitrix24.jp", "bitrix24.cn", "bitrix24.tr", "bitrix24.com.br",
    "bitrix24.com.tr", "bitrix24.by", "bitrix24.kz", "bitrix24.ua", "bitrix24.site",
];

fn moved_outcome(outcome: &'static str) {
    metrics::counter!("callgate_crm_portal_moved_total", "outcome" => outcome).increment(1);
}

/// True when `endpoint` is `<scheme>://<the Location's host:port>/rest/` (pure).
pub(crate) fn moved_endpoint(endpoint: &str, location: &str) -> bool {
    let (Ok(e), Ok(l)) = (url::Url::parse(endpoint.trim()), url::Url::parse(location.trim())) else {
        return false;
    };
    e.path() == "/rest/"
        && e.query().is_none()
        && e.username().is_empty()
        && e.host_str().is_some()
        && e.host_str() == l.host_str()
        && e.port_or_known_default() == l.port_or_known_default()
        && e.scheme() == l.scheme()
}

/// The webhook URL to follow a redirect of `current` to (pure): `location` must be `https` on a
/// host under [`BITRIX24_CLOUD`], without user info or another port, and carry the same
/// `/rest/<user>/<code>/` prefix (the method part after it is dropped). Anything else: `None`.
pub fn webhook_move(current: &str, location: &str) -> Option<String> {
    let cur = url::Url::parse(current.trim()).ok()?;
    let loc = url::Url::parse(location.trim()).ok()?;
    let host = loc.host_str()?.to_ascii_lowercase();
    let on_cloud = BITRIX24_CLOUD.iter().any(|d| host.strip_suffix(d).is_some_and(|rest| rest.ends_with('.') && rest.len() > 1));
    let prefix = cur.path();
    let same_hook = prefix.starts_with("/rest/") && prefix.ends_with('/') && loc.path().starts_with(prefix);
    let plain = loc.scheme() == "https" && loc.username().is_empty() && loc.password().is_none() && loc.port().is_none();
    (on_cloud && same_hook && plain && Some(host.as_str()) != cur.host_str()).then(|| format!("https://{host}{prefix}"))
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
        access_token: t.access_token.clone(),
        refresh_token: t.refresh_token.clone(),
        expires_at_unix: t.expires_at_unix,
        client_endpoint: t.client_endpoint.clone(),
        member_id: t.member_id.clone(),
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

    #[test]
    fn a_webhook_is_followed_only_to_the_same_hook_on_bitrix24s_cloud() {
        let cur = "https://old.bitrix24.ru/rest/1/code/";
        let loc = |l: &str| webhook_move(cur, l);
        assert_eq!(
            loc("https://new.bitrix24.ru/rest/1/code/batch.json").as_deref(),
            Some("https://new.bitrix24.ru/rest/1/code/")
        );
        assert_eq!(loc("https://new.bitrix24.com/rest/1/code/").as_deref(), Some("https://new.bitrix24.com/rest/1/code/"));
        assert_eq!(loc("https://attacker.example/rest/1/code/batch.json"), None, "off the cloud");
        assert_eq!(loc("https://bitrix24.ru.attacker.example/rest/1/code/"), None);
        assert_eq!(loc("https://evilbitrix24.ru/rest/1/code/"), None, "not a subdomain");
        assert_eq!(loc("http://new.bitrix24.ru/rest/1/code/"), None, "plain http");
        assert_eq!(loc("https://new.bitrix24.ru:8443/rest/1/code/"), None, "another port");
        assert_eq!(loc("https://u:p@new.bitrix24.ru/rest/1/code/"), None);
        assert_eq!(loc("https://new.bitrix24.ru/rest/9/other/"), None, "another webhook");
        assert_eq!(loc("https://old.bitrix24.ru/rest/1/code/"), None, "the same host");
    }

    #[test]
    fn a_move_is_taken_only_for_the_same_member_on_the_locations_host() {
        let cur = set("https://old.bitrix24.ru/rest/", "m1", "a");
        let loc = Some("https://new.bitrix24.ru/rest/batch.json");
        let got = checked_refresh(1, "https://old.bitrix24.ru/", cur.clone(), set("https://new.bitrix24.ru/rest/", "m1", "b"), loc);
        assert_eq!(got.client_endpoint, "https://new.bitrix24.ru/rest/");
        let other_member = checked_refresh(1, "https://old.bitrix24.ru/", cur.clone(), set("https://new.bitrix24.ru/rest/", "m2", "b"), loc);
        assert_eq!(other_member.client_endpoint, "https://old.bitrix24.ru/rest/");
        let other_host = checked_refresh(1, "https://old.bitrix24.ru/", cur.clone(), set("https://evil.example/rest/", "m1", "b"), loc);
        assert_eq!(other_host.client_endpoint, "https://old.bitrix24.ru/rest/");
        let no_redirect = checked_refresh(1, "https://old.bitrix24.ru/", cur, set("https://new.bitrix24.ru/rest/", "m1", "b"), None);
        assert_eq!(no_redirect.client_endpoint, "https://old.bitrix24.ru/rest/");
    }

    #[test]
    fn a_refresh_naming_another_host_or_member_keeps_the_installations_identity() {
        let d = "https://a.bitrix24.ru/";
        let current = set("https://a.bitrix24.ru/rest/", "m1", "old");
        let evil = set("https://evil.example/rest/", "m2", "new");
        let got = checked_refresh(1, d, current.clone(), evil, None);
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
        assert_eq!(checked_refresh(1, d, current, same.clone(), None), same);
    }
}
