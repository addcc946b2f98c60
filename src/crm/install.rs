//! `ONAPPINSTALL` for an OAuth portal (bitrix24-rest.md §2.2): anyone can POST one, so an install
//! is accepted only with proof that it is *this* application on *this* portal, and it never
//! silently replaces a working installation.
//!
//! Proof ([`Installer::install`]), in this order, cheapest first:
//! 1. `auth[client_endpoint]` is the portal's own REST endpoint (no network yet);
//! 2. `auth[refresh_token]` is refreshed at the portal's configured `oauth_server` with the
//!    configured `client_id`/`client_secret`: only tokens issued to this app refresh, and the
//!    refreshed pair (never the posted access token) is what gets stored;
//! 3. the OAuth server's answer names a `member_id` (an answer without one is no match) equal to
//!    `auth[member_id]`, and a `client_endpoint` on the portal's domain;
//! 4. `app.info` with the refreshed token names the configured client id (`CODE`).
//!
//! Replacement rules: no installation yet → stored. An installation under another `member_id` is
//! replaced only after the admin re-armed the portal (`POST /api/v1/portals/{id}/install/rearm`,
//! [`REARM_WINDOW`]). Same `member_id`: when the stored tokens still work, only the tokens are
//! updated and the stored `application_token` (the secret that authenticates events) is kept:
//! anyone who holds this app's tokens (every user of an app page gets them from
//! `BX24.getAuth()`) could otherwise choose it; when they no longer work (the app was deleted
//! and installed again), the whole installation is replaced.
//!
//! Cost bound: one verification per portal at a time and [`MAX_VERIFYING`] in all; more are
//! answered "busy" (the HTTP side says 503), so a flood of forged installs cannot queue
//! requests at the OAuth server. Nothing a refused install sent is kept, apart from the reason
//! in the portal's install status.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use bitrix24::app::AppInfo;

use super::tokens::{endpoint_on_portal, AccessError, Tokens};
use super::{b24_secret, own_secret, CrmError, Endpoint, TokenSet};
use crate::config::Secret;
use crate::directory::PortalEntry;
use crate::settings::{Auth, PortalId};
use crate::store::{PortalTokens, StoreError};

/// How long a re-arm lets an install replace an installation of another `member_id`.
pub const REARM_WINDOW: Duration = Duration::from_secs(15 * 60);
/// One verification (refresh + `app.info`) at most.
const VERIFY_TIMEOUT: Duration = Duration::from_secs(15);
/// Installs verified at once across all portals.
pub const MAX_VERIFYING: usize = 4;

/// Why an install was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// A required `auth[...]` field is missing.
    #[error("auth[{0}] is required")]
    Missing(&'static str),
    /// No proof that this is this app on this portal, or a working installation stands.
    #[error("the installation was refused: {0}")]
    Mismatch(&'static str),
    /// The OAuth server or the portal could not be asked (network, rate limit).
    #[error("the installation could not be verified: {0}")]
    Unverified(CrmError),
    /// Another install of this portal (or too many in all) is being verified.
    #[error("another installation is being verified; try again")]
    Busy,
    /// The store failed.
    #[error("storing the installation failed: {0}")]
    Store(#[from] StoreError),
}

/// What an accepted install did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Installed {
    /// The portal's first installation.
    New,
    /// Replaced an installation that no longer worked, or one the admin re-armed.
    Replaced,
    /// Same app and `member_id` over a working installation: new tokens, same `application_token`.
    TokensUpdated,
}

impl Installed {
    /// The word the events endpoint answers with.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "installed",
            Self::Replaced => "reinstalled",
            Self::TokensUpdated => "updated",
        }
    }
}

/// Where the app's events were last bound, or why they were not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum EventsBinding {
    /// `event.bind` was queued for this handler URL.
    Requested {
        /// The handler URL.
        handler: String,
        /// Unix seconds.
        at: u64,
    },
    /// Nothing was bound.
    NotBound {
        /// Why (names the config key to set).
        reason: String,
        /// Unix seconds.
        at: u64,
    },
}

/// The last refused install of a portal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Refusal {
    /// Unix seconds.
    pub at: u64,
    /// Why.
    pub reason: String,
}

/// One portal's install bookkeeping (in memory: a restart forgets a re-arm).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct InstallState {
    /// Unix seconds until which an install may replace the current installation.
    pub rearmed_until: Option<u64>,
    /// The last refused install.
    pub last_refused: Option<Refusal>,
    /// The app's events after the last accepted install.
    pub events: Option<EventsBinding>,
    #[serde(skip)]
    verifying: bool,
}

/// Verifies and stores installs; shared by the events endpoint and the admin API.
pub struct Installer {
    tokens: Arc<Tokens>,
    /// Per-portal state; short critical sections, never across an await.
    portals: Mutex<HashMap<PortalId, InstallState>>,
    verifying: Arc<Semaphore>,
}

/// The posted `auth[...]` fields (nothing here is trusted yet).
struct Offer<'a> {
    member_id: &'a str,
    application_token: &'a str,
    client_endpoint: &'a str,
    refresh_token: &'a str,
}

impl<'a> Offer<'a> {
    fn parse(auth: &'a BTreeMap<String, String>) -> Result<Self, InstallError> {
        let field = |k: &'static str| {
            auth.get(k)
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
                .ok_or(InstallError::Missing(k))
        };
        Ok(Self {
            member_id: field("member_id")?,
            application_token: field("application_token")?,
            client_endpoint: field("client_endpoint")?,
            refresh_token: field("refresh_token")?,
        })
    }
}

/// The portal's configured app.
struct App<'a> {
    client_id: &'a str,
    client_secret: &'a Secret,
    oauth_server: &'a str,
}

/// What to do with a proven install.
enum Decision {
    New,
    Replace { rearmed: bool },
    KeepToken(Secret),
}

/// Releases the portal's verification slot.
struct Slot<'a> {
    installer: &'a Installer,
    portal: PortalId,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(st) = self.installer.portals.lock().get_mut(&self.portal) {
            st.verifying = false;
        }
    }
}

impl Installer {
    /// An installer storing through `tokens`.
    pub fn new(tokens: Arc<Tokens>) -> Arc<Self> {
        Arc::new(Self {
            tokens,
            portals: Mutex::new(HashMap::new()),
            verifying: Arc::new(Semaphore::new(MAX_VERIFYING)),
        })
    }

    /// `ONAPPINSTALL` for an OAuth `portal` with the event's `auth[...]` (see the module doc).
    ///
    /// # Errors
    /// [`InstallError`]; the reason of a refusal is kept in [`Installer::state`].
    pub async fn install(
        &self,
        portal: &PortalEntry,
        auth: &BTreeMap<String, String>,
    ) -> Result<Installed, InstallError> {
        let pid = portal.portal.id;
        let outcome = self.verify_and_store(portal, auth).await;
        match &outcome {
            Ok(done) => tracing::info!(
                portal = pid,
                outcome = done.as_str(),
                "Bitrix24 app installation accepted"
            ),
            Err(e @ (InstallError::Mismatch(_) | InstallError::Unverified(_))) => {
                tracing::warn!(portal = pid, error = %e, "an ONAPPINSTALL was refused");
                self.with(pid, |st| {
                    st.last_refused = Some(Refusal {
                        at: now_s(),
                        reason: e.to_string(),
                    });
                });
            }
            Err(_) => {}
        }
        outcome
    }

    async fn verify_and_store(
        &self,
        portal: &PortalEntry,
        auth: &BTreeMap<String, String>,
    ) -> Result<Installed, InstallError> {
        let offer = Offer::parse(auth)?;
        let app = app_of(portal).ok_or(InstallError::Mismatch(
            "the portal is not set up as an OAuth app",
        ))?;
        let domain = portal.portal.domain.as_str();
        if !endpoint_on_portal(offer.client_endpoint, domain) {
            return Err(InstallError::Mismatch(
                "client_endpoint is not the portal's REST endpoint",
            ));
        }
        let _slot = self.slot(portal.portal.id)?;
        let fresh = tokio::time::timeout(VERIFY_TIMEOUT, self.prove(&app, domain, &offer))
            .await
            .map_err(|_| {
                InstallError::Unverified(CrmError::Network {
                    message: "the verification timed out".into(),
                })
            })??;
        let decision = self.decide(portal, &offer).await?;
        let rearmed = matches!(decision, Decision::Replace { rearmed: true });
        let (application_token, installed) = match decision {
            Decision::New => (Secret::new(offer.application_token), Installed::New),
            Decision::Replace { .. } => (Secret::new(offer.application_token), Installed::Replaced),
            Decision::KeepToken(kept) => {
                if !kept.ct_eq(offer.application_token.as_bytes()) {
                    tracing::warn!(portal = portal.portal.id, "an install over the working installation brought another application_token; the stored one is kept (re-arm the installation if this was a genuine reinstall)");
                }
                (kept, Installed::TokensUpdated)
            }
        };
        let stored = PortalTokens {
            portal: portal.portal.id,
            member_id: offer.member_id.to_owned(),
            application_token,
            client_endpoint: fresh.client_endpoint,
            access_token: own_secret(&fresh.access_token),
            refresh_token: own_secret(&fresh.refresh_token),
            expires_at_unix: fresh.expires_at_unix,
        };
        self.tokens.install(stored).await?;
        if rearmed {
            self.with(portal.portal.id, |st| st.rearmed_until = None);
        }
        Ok(installed)
    }

    /// Steps 2-4 of the module doc; the refreshed tokens on success.
    async fn prove(
        &self,
        app: &App<'_>,
        domain: &str,
        offer: &Offer<'_>,
    ) -> Result<TokenSet, InstallError> {
        let client = self.tokens.client();
        let refresh = bitrix24::Secret::new(offer.refresh_token);
        let fresh = bitrix24::oauth::refresh(client, app.oauth_server, app.client_id, &b24_secret(app.client_secret), &refresh)
            .await
            .map_err(|e| match e {
                e if e.retryable() => InstallError::Unverified(e),
                _ => InstallError::Mismatch("the OAuth server does not refresh these tokens for this application's client_id/client_secret"),
            })?;
        check_identity(&fresh, offer.member_id, domain)?;
        let ep =
            Endpoint::oauth(&fresh.client_endpoint, fresh.access_token.clone()).map_err(|_| {
                InstallError::Mismatch("the OAuth server's client_endpoint is not a usable URL")
            })?;
        match client.invoke(&ep, &AppInfo).await {
            Ok(info) if names_app(&info, app.client_id) => Ok(fresh),
            Ok(_) => Err(InstallError::Mismatch("app.info names another application")),
            Err(e) if e.retryable() => Err(InstallError::Unverified(e)),
            Err(_) => Err(InstallError::Mismatch(
                "the refreshed token does not work on the portal",
            )),
        }
    }

    /// The replacement rules of the module doc.
    async fn decide(
        &self,
        portal: &PortalEntry,
        offer: &Offer<'_>,
    ) -> Result<Decision, InstallError> {
        let pid = portal.portal.id;
        let Some(old) = self.tokens.installation(pid).await? else {
            return Ok(Decision::New);
        };
        let now = now_s();
        if self
            .state(pid)
            .rearmed_until
            .is_some_and(|until| until > now)
        {
            return Ok(Decision::Replace { rearmed: true });
        }
        if old.member_id != offer.member_id {
            return Err(InstallError::Mismatch(
                "the portal is installed under another member_id; re-arm the installation through the admin API to replace it",
            ));
        }
        if self.works(portal).await? {
            Ok(Decision::KeepToken(old.application_token))
        } else {
            Ok(Decision::Replace { rearmed: false })
        }
    }

    /// Whether the stored installation still works (`app.info`, refreshing once if expired).
    async fn works(&self, portal: &PortalEntry) -> Result<bool, InstallError> {
        let client = self.tokens.client();
        let got = self
            .tokens
            .call(portal, |ep| async move { client.invoke(&ep, &AppInfo).await })
            .await;
        match got {
            Ok(_) => Ok(true),
            Err(AccessError::Crm(e)) if e.retryable() => Err(InstallError::Unverified(e)),
            Err(AccessError::Store(m)) => {
                Err(InstallError::Unverified(CrmError::Network { message: m }))
            }
            Err(_) => Ok(false),
        }
    }

    /// Takes the portal's verification slot, or `Busy`.
    fn slot(&self, portal: PortalId) -> Result<Slot<'_>, InstallError> {
        let permit = Arc::clone(&self.verifying)
            .try_acquire_owned()
            .map_err(|_| InstallError::Busy)?;
        let mut portals = self.portals.lock();
        let st = portals.entry(portal).or_default();
        if st.verifying {
            return Err(InstallError::Busy);
        }
        st.verifying = true;
        Ok(Slot {
            installer: self,
            portal,
            _permit: permit,
        })
    }

    /// Lets the next verified install of `portal` replace its installation, for
    /// [`REARM_WINDOW`]; returns the deadline (unix seconds).
    pub fn rearm(&self, portal: PortalId) -> u64 {
        let until = now_s().saturating_add(REARM_WINDOW.as_secs());
        self.with(portal, |st| st.rearmed_until = Some(until));
        tracing::info!(portal, until, "Bitrix24 installation re-armed by the admin");
        until
    }

    /// Records what became of the app's events after an accepted install.
    pub fn events_bound(&self, portal: PortalId, binding: EventsBinding) {
        self.with(portal, |st| st.events = Some(binding));
    }

    /// The portal's bookkeeping (an expired re-arm shows as none).
    pub fn state(&self, portal: PortalId) -> InstallState {
        let mut st = self
            .portals
            .lock()
            .get(&portal)
            .cloned()
            .unwrap_or_default();
        st.rearmed_until = st.rearmed_until.filter(|until| *until > now_s());
        st
    }

    /// The stored installation (tokens never leave it through the admin API).
    ///
    /// # Errors
    /// The store failed.
    pub async fn installation(&self, portal: PortalId) -> Result<Option<PortalTokens>, StoreError> {
        self.tokens.installation(portal).await
    }

    fn with(&self, portal: PortalId, f: impl FnOnce(&mut InstallState)) {
        f(self.portals.lock().entry(portal).or_default());
    }
}

/// Step 3: the OAuth server's answer is about this member and this portal.
fn check_identity(fresh: &TokenSet, member_id: &str, domain: &str) -> Result<(), InstallError> {
    if fresh.member_id.is_empty() {
        return Err(InstallError::Mismatch(
            "the OAuth server's answer names no member_id",
        ));
    }
    if fresh.member_id != member_id {
        return Err(InstallError::Mismatch(
            "member_id differs from the OAuth server's",
        ));
    }
    if !endpoint_on_portal(&fresh.client_endpoint, domain) {
        return Err(InstallError::Mismatch(
            "the OAuth server names another portal's client_endpoint",
        ));
    }
    Ok(())
}

/// `app.info` names `client_id`: its `CODE` (documented), or a `client_id` field if present.
fn names_app(info: &Value, client_id: &str) -> bool {
    ["CODE", "client_id"]
        .iter()
        .any(|k| info[*k].as_str() == Some(client_id))
}

fn app_of(portal: &PortalEntry) -> Option<App<'_>> {
    match &portal.portal.auth {
        Some(Auth::OAuth {
            client_id,
            client_secret,
            oauth_server,
        }) => Some(App {
            client_id,
            client_secret,
            oauth_server,
        }),
        _ => None,
    }
}

fn now_s() -> u64 {
    super::now_ms() / 1000
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fresh(member: &str, endpoint: &str) -> TokenSet {
        TokenSet {
            access_token: bitrix24::Secret::new("a"),
            refresh_token: bitrix24::Secret::new("r"),
            expires_at_unix: 1,
            client_endpoint: endpoint.into(),
            member_id: member.into(),
        }
    }

    #[test]
    fn the_oauth_answer_must_name_this_member_and_this_portal() {
        let d = "https://a.bitrix24.ru/";
        let ep = "https://a.bitrix24.ru/rest/";
        assert!(check_identity(&fresh("m1", ep), "m1", d).is_ok());
        for (member, endpoint) in [("", ep), ("m2", ep), ("m1", "https://b.bitrix24.ru/rest/")] {
            assert!(
                matches!(
                    check_identity(&fresh(member, endpoint), "m1", d),
                    Err(InstallError::Mismatch(_))
                ),
                "{member} {endpoint}"
            );
        }
    }

    #[test]
    fn app_info_must_name_the_configured_client_id() {
        let id = "local.56017020f07e17.98523769";
        assert!(names_app(
            &json!({"ID": "7", "CODE": id, "VERSION": 1, "STATUS": "L"}),
            id
        ));
        assert!(!names_app(
            &json!({"ID": "7", "CODE": "local.other", "VERSION": 1}),
            id
        ));
        assert!(
            !names_app(&json!({"ID": "7", "VERSION": 1}), id),
            "no CODE is no match"
        );
        assert!(!names_app(&json!([]), id));
    }

    #[test]
    fn installs_missing_a_field_name_it() {
        let auth: BTreeMap<String, String> = [
            ("member_id", "m"),
            ("application_token", "t"),
            ("client_endpoint", "e"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        assert!(matches!(
            Offer::parse(&auth),
            Err(InstallError::Missing("refresh_token"))
        ));
        let mut no_member = auth.clone();
        no_member.insert("member_id".into(), "  ".into());
        assert!(matches!(
            Offer::parse(&no_member),
            Err(InstallError::Missing("member_id"))
        ));
    }

    fn installer() -> (Arc<Installer>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::SqliteStore::open(&dir.path().join("t.db")).unwrap();
        let store = crate::store::StoreHandle::new(Arc::new(store));
        let client = crate::crm::CrmClient::builder().build().unwrap();
        (Installer::new(Tokens::new(client, store)), dir)
    }

    #[test]
    fn one_verification_per_portal_and_a_few_in_all() {
        let (inst, _dir) = installer();
        let first = inst.slot(1).unwrap();
        assert!(
            matches!(inst.slot(1), Err(InstallError::Busy)),
            "one per portal"
        );
        let others: Vec<_> = (2..=MAX_VERIFYING as PortalId)
            .map(|p| inst.slot(p).unwrap())
            .collect();
        assert!(
            matches!(inst.slot(99), Err(InstallError::Busy)),
            "a few in all"
        );
        drop(first);
        assert!(inst.slot(1).is_ok(), "released on drop");
        drop(others);
    }

    #[test]
    fn a_rearm_shows_until_it_is_used_or_expires() {
        let (inst, _dir) = installer();
        assert_eq!(inst.state(1).rearmed_until, None);
        let until = inst.rearm(1);
        assert!(until >= now_s() + REARM_WINDOW.as_secs() - 1);
        assert_eq!(inst.state(1).rearmed_until, Some(until));
        assert_eq!(inst.state(2).rearmed_until, None, "per portal");
        inst.with(1, |st| st.rearmed_until = Some(now_s() - 1));
        assert_eq!(inst.state(1).rearmed_until, None, "expired");
    }
}
