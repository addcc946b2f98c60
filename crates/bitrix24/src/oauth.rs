//! OAuth tokens of a Bitrix24 app: [`refresh`] asks the OAuth server for a new pair, [`TokenCell`]
//! holds one portal's pair and makes sure at most one refresh is in flight.
//!
//! The OAuth server is `https://oauth.bitrix.info/` (never the portal: the client secret must not
//! go there). An access token lives one hour, a refresh token 180 days; every refresh returns a
//! *new* refresh token and spends the old one. Bitrix24 asks apps to refresh on `expired_token`
//! rather than on a timer.
//!
//! Why single-flight: two concurrent refreshes with the same refresh token leave one caller
//! holding a token the server has already replaced. [`TokenCell::refreshed_after`] holds a
//! `tokio::sync::Mutex` across the refresh (the one place in this crate where a lock is held over
//! `.await`, on purpose): callers that saw the same stale access token queue behind it and get the
//! new pair, or the same error, without refreshing again.
//!
//! Persisting the rotated refresh token is the caller's job: the `on_rotated` hook runs while
//! the lock is still held, before any waiter sees the new pair ([`OAuthSession`](crate::OAuthSession)
//! does it through a [`TokenStore`](crate::TokenStore)). Tokens are [`Secret`]s and are never
//! logged; the refresh URL (it carries the client secret) never appears in errors.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Deserialize;
use serde_json::Value;
use url::Url;

use crate::client::check_base_url;
use crate::error::{classify_raw, RawAnswer};
use crate::{Client, Error, Id, Secret};

/// The OAuth server when the portal settings name none.
pub const DEFAULT_OAUTH_SERVER: &str = "https://oauth.bitrix.info/";
/// The access-token lifetime assumed when the answer states none (Bitrix24's: one hour).
const DEFAULT_EXPIRES_IN: u64 = 3600;

/// One portal's OAuth state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSet {
    /// Sent as `auth` with every call.
    pub access_token: Secret,
    /// Used once, for the next refresh; each refresh returns a new one.
    pub refresh_token: Secret,
    /// Unix time when `access_token` expires.
    pub expires_at_unix: u64,
    /// `https://portal/rest/`.
    pub client_endpoint: String,
    /// The portal's id at Bitrix24.
    pub member_id: String,
}

impl TokenSet {
    /// True when the access token expires within `margin_s` seconds of `now_unix` (for a
    /// proactive refresh; Bitrix24 recommends refreshing on `expired_token` instead).
    pub fn expires_within(&self, now_unix: u64, margin_s: u64) -> bool {
        self.expires_at_unix <= now_unix.saturating_add(margin_s)
    }
}

/// Exchanges `refresh_token` for a new [`TokenSet`] at `{oauth_server}oauth/token/` (GET; an empty
/// `oauth_server` means [`DEFAULT_OAUTH_SERVER`]).
///
/// # Errors
/// [`Error::Auth`] for every error the OAuth server states (`invalid_grant`: re-authorise;
/// `invalid_client`, `wrong_client` even with HTTP 200, …) unless it is a transient one
/// (rate limit, 5xx); transport errors as [`Client::call`].
///
/// # Cancel safety
/// Dropping the future may leave a refresh done at the server whose answer is lost: the old
/// refresh token may then be invalid. Do not cancel it casually.
pub async fn refresh(
    http: &Client,
    oauth_server: &str,
    client_id: &str,
    client_secret: &Secret,
    refresh_token: &Secret,
) -> Result<TokenSet, Error> {
    let url = refresh_url(oauth_server, client_id, client_secret, refresh_token)?;
    let raw = http.get_raw(url.clone()).await?;
    let outcome = parse_token_answer(&raw, &url, unix_now());
    tracing::debug!(
        oauth_server = %url.origin().ascii_serialization(),
        outcome = outcome.as_ref().map_or_else(Error::kind, |_| "ok"),
        "bitrix24 token refresh"
    );
    outcome
}

/// The refresh URL: `GET {server}oauth/token/?grant_type=refresh_token&client_id&client_secret&refresh_token`.
pub(crate) fn refresh_url(
    oauth_server: &str,
    client_id: &str,
    client_secret: &Secret,
    refresh_token: &Secret,
) -> Result<Url, Error> {
    let server = if oauth_server.trim().is_empty() {
        DEFAULT_OAUTH_SERVER
    } else {
        oauth_server
    };
    let mut url = check_base_url(server)?
        .join("oauth/token/")
        .map_err(|e| Error::InvalidUrl {
            reason: e.to_string(),
        })?;
    url.query_pairs_mut()
        .append_pair("grant_type", "refresh_token")
        .append_pair("client_id", client_id)
        .append_pair("client_secret", client_secret.expose())
        .append_pair("refresh_token", refresh_token.expose());
    Ok(url)
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    refresh_token: String,
    #[serde(default)]
    expires: Option<Value>,
    #[serde(default)]
    expires_in: Option<Value>,
    client_endpoint: String,
    #[serde(default)]
    member_id: String,
}

/// Classifies the OAuth server's answer (pure; `now_unix` only for an answer without `expires`).
pub(crate) fn parse_token_answer(
    raw: &RawAnswer,
    url: &Url,
    now_unix: u64,
) -> Result<TokenSet, Error> {
    let obj = classify_raw(raw, url, "oauth/token").map_err(|e| match e {
        // Every stated OAuth error needs a human (re-authorise, fix the app), unless transient.
        Error::Api {
            code, description, ..
        } => Error::Auth { code, description },
        Error::ExpiredToken | Error::InvalidToken | Error::MethodNotFound { .. } => Error::Auth {
            code: error_field(raw, "error"),
            description: error_field(raw, "error_description"),
        },
        other => other,
    })?;
    let t: TokenAnswer = crate::types::decode(Value::Object(obj))?;
    if t.access_token.is_empty() || t.refresh_token.is_empty() {
        return Err(Error::decode("the token answer has an empty token"));
    }
    let num = |v: &Option<Value>| {
        v.as_ref()
            .and_then(|v| crate::types::decode::<Id>(v.clone()).ok())
    };
    let expires_at_unix = match (num(&t.expires), num(&t.expires_in)) {
        (Some(at), _) => at.0,
        (None, Some(secs)) => now_unix.saturating_add(secs.0),
        (None, None) => now_unix.saturating_add(DEFAULT_EXPIRES_IN),
    };
    Ok(TokenSet {
        access_token: Secret::new(t.access_token),
        refresh_token: Secret::new(t.refresh_token),
        expires_at_unix,
        client_endpoint: t.client_endpoint,
        member_id: t.member_id,
    })
}

fn error_field(raw: &RawAnswer, key: &str) -> String {
    serde_json::from_slice::<Value>(&raw.body)
        .ok()
        .and_then(|v| v.get(key).and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// One portal's [`TokenSet`], refreshed at most once at a time.
#[derive(Debug)]
pub struct TokenCell {
    /// Held across the refresh `.await` so that refreshes are serialised (see the module doc).
    state: tokio::sync::Mutex<State>,
    /// Refresh attempts finished so far; read before queueing, to recognise "an attempt finished
    /// while I waited".
    attempts: AtomicU64,
}

#[derive(Debug)]
struct State {
    tokens: TokenSet,
    /// The last attempt's error, shared with the callers that were waiting for it.
    last_error: Option<Error>,
}

impl TokenCell {
    /// A cell holding `tokens`.
    pub fn new(tokens: TokenSet) -> Self {
        Self {
            state: tokio::sync::Mutex::new(State {
                tokens,
                last_error: None,
            }),
            attempts: AtomicU64::new(0),
        }
    }

    /// The current tokens (waits while a refresh is in flight).
    pub async fn current(&self) -> TokenSet {
        self.state.lock().await.tokens.clone()
    }

    /// Replaces the tokens (e.g. a new install event delivered fresh ones).
    pub async fn replace(&self, tokens: TokenSet) {
        let mut st = self.state.lock().await;
        st.tokens = tokens;
        st.last_error = None;
    }

    /// Called after a call failed with `stale_access_token` ([`Error::needs_token_refresh`]):
    /// returns tokens newer than that one, refreshing with `refresh_fn(current)` only if nobody
    /// else already did. `on_rotated(new)` runs once per successful refresh, before any caller
    /// sees the new tokens (persist the new refresh token there).
    ///
    /// # Errors
    /// The refresh's error; callers that waited for that same attempt get the same error
    /// instead of refreshing again.
    ///
    /// # Cancel safety
    /// Cancelling a waiter is harmless; cancelling the caller that runs `refresh_fn` cancels the
    /// refresh (see [`refresh`]).
    pub async fn refreshed_after<F, Fut, R>(
        &self,
        stale_access_token: &Secret,
        refresh_fn: F,
        on_rotated: R,
    ) -> Result<TokenSet, Error>
    where
        F: FnOnce(TokenSet) -> Fut,
        Fut: Future<Output = Result<TokenSet, Error>>,
        R: FnOnce(&TokenSet),
    {
        let seen_attempts = self.attempts.load(Ordering::Acquire);
        let mut st = self.state.lock().await;
        if st.tokens.access_token != *stale_access_token {
            return Ok(st.tokens.clone());
        }
        if self.attempts.load(Ordering::Acquire) != seen_attempts {
            if let Some(err) = &st.last_error {
                return Err(err.clone());
            }
        }
        let outcome = refresh_fn(st.tokens.clone()).await;
        self.attempts.fetch_add(1, Ordering::AcqRel);
        match outcome {
            Ok(tokens) => {
                on_rotated(&tokens);
                st.tokens = tokens.clone();
                st.last_error = None;
                Ok(tokens)
            }
            Err(e) => {
                st.last_error = Some(e.clone());
                Err(e)
            }
        }
    }
}
