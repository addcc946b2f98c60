//! A client for the [Bitrix24](https://www.bitrix24.com/) REST API: webhook and OAuth portals,
//! typed telephony, CRM, user and event methods, `batch`, every error Bitrix24 answers classified
//! into one enum with retry advice, a client-side rate limiter, and OAuth token refresh that is
//! safe under concurrency.
//!
//! It knows Bitrix24 and nothing else: no SIP, no storage, no configuration format. What must
//! outlive the process (rotated OAuth tokens) goes through a trait the caller implements
//! ([`TokenStore`]).
//!
//! # Layers
//! * [`Params`]: the ordered parameter tree of one call; JSON body and the PHP-bracket query that
//!   `batch` command strings need (`$result[key][FIELD]` references kept literal).
//! * [`Client`] (one connection pool, shared by all portals; no redirects followed; https, or http
//!   to loopback only) and [`Endpoint`] (a webhook URL, or an OAuth `client_endpoint` plus access
//!   token): [`Client::call`] and [`Client::batch`] for any method, [`Client::invoke`] for a typed
//!   [`Method`] from [`telephony`], [`crm`], [`user`], [`event`], [`app`].
//! * [`Error`]: classified by `error` code, then description (telephony errors come without a
//!   code), then HTTP status; [`Error::retryable`], [`Error::needs_token_refresh`],
//!   [`Error::retry_after_hint`].
//! * [`types`]: tolerant decoding of PHP's JSON (ids as int or string, `[]` for empty maps, `{}`
//!   for dates, `"Y"`/`true`/`1` flags).
//! * [`LeakyBucket`]: the portal's request limit mirrored on the client side (pure: `now` passed
//!   in); [`list::Pager`] reads whole lists through `batch` under it.
//! * [`oauth`] and [`OAuthSession`]: token refresh at the OAuth server, one refresh in flight per
//!   portal, the rotated pair saved through [`TokenStore`] before anyone uses it.
//! * [`moves`]: when a portal's redirect to a new address may be followed.
//!
//! `client`, `oauth`, `session`, `list` do I/O (async, tokio); the rest is pure. Nothing here
//! retries or sleeps except [`list::Pager`]; secrets ([`Secret`]) never appear in `Debug`, errors
//! or logs.
//!
//! # Example: a webhook portal
//! ```no_run
//! use bitrix24::telephony::{CallType, CallUser, Finish, Register};
//! use bitrix24::{Client, Endpoint, Secret};
//!
//! # async fn run() -> Result<(), bitrix24::Error> {
//! let client = Client::builder().user_agent("my-pbx/1.0").build()?;
//! let portal = Endpoint::webhook(&Secret::new("https://example.bitrix24.com/rest/1/c0de/"))?;
//!
//! let mut call = Register::new(CallUser::Id(11), "+79161234567", CallType::Incoming);
//! call.external_call_id = Some("pbx-4711".into());
//! let registered = client.invoke(&portal, &call).await?;
//!
//! let mut end = Finish::new(registered.call_id, CallUser::Id(11), 95);
//! end.status_code = Some("200".into());
//! match client.invoke(&portal, &end).await {
//!     Ok(row) => println!("activity {:?}", row.crm_activity_id),
//!     Err(e) if e.retryable() => println!("try again in {:?}", e.retry_after_hint()),
//!     Err(e) => return Err(e),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Example: a `batch` with a reference
//! ```no_run
//! use bitrix24::telephony::{CallId, CallType, CallUser, Register, Show};
//! use bitrix24::{BatchCommand, Client, Endpoint};
//!
//! # async fn run(client: &Client, portal: &Endpoint) -> Result<(), bitrix24::Error> {
//! let reg = Register::new(CallUser::Id(11), "+79161234567", CallType::Incoming);
//! // `show` names the CALL_ID that `register` returns in the same request.
//! let show = Show { call_id: CallId::Ref("reg".into()), users: vec![11, 12] };
//! let mut answer = client.batch(portal, &[BatchCommand::of("reg", &reg), BatchCommand::of("show", &show)], true).await?;
//! let registered = answer.take::<Register>("reg").expect("ran")?;
//! println!("{}", registered.call_id);
//! # Ok(())
//! # }
//! ```
//!
//! # Example: an OAuth app, tokens kept by the caller
//! ```no_run
//! use bitrix24::crm::{EntityKind, Get};
//! use bitrix24::{Client, OAuthApp, OAuthSession, Secret, TokenSet, TokenStore, TokenStoreError};
//!
//! struct File(std::path::PathBuf);
//!
//! impl TokenStore for File {
//!     async fn save(&self, t: &TokenSet) -> Result<(), TokenStoreError> {
//!         let text = format!("{}\n{}\n{}\n", t.access_token.expose(), t.refresh_token.expose(), t.expires_at_unix);
//!         Ok(tokio::fs::write(&self.0, text).await?)
//!     }
//! }
//!
//! # async fn run(installed: TokenSet) -> Result<(), bitrix24::Error> {
//! let app = OAuthApp::new("local.abc.def", Secret::new("app secret"));
//! let session = OAuthSession::new(Client::new()?, installed, File("tokens.txt".into()));
//! // Refreshed once, for all concurrent callers, when the access token has expired.
//! let contact = session
//!     .call(&app, |ep| {
//!         let client = session.client();
//!         async move { client.invoke(&ep, &Get { kind: EntityKind::Contact, id: 42 }).await }
//!     })
//!     .await?;
//! println!("responsible: {:?}", contact.assigned_by_id);
//! # Ok(())
//! # }
//! ```
//!
//! # Tests
//! `cargo test -p bitrix24`: the parameter encodings, the error table, tolerant decoding, the
//! limiter with a simulated clock (pure), and the client, OAuth refresh and session against a
//! local HTTP stub on 127.0.0.1 (TLS with a throw-away CA made at test time).

#![warn(missing_docs)]

pub mod app;
mod batch;
mod client;
pub mod crm;
mod error;
pub mod event;
pub mod limiter;
pub mod list;
mod methods;
pub mod moves;
pub mod oauth;
mod params;
mod secret;
mod session;
pub mod telephony;
pub mod types;
pub mod user;

#[cfg(test)]
mod tests;

pub use batch::{check_batch, BatchCommand, MAX_BATCH_COMMANDS};
pub use client::{
    check_base_url, errors_inside, Client, ClientBuilder, Endpoint, Observation, Observer,
    Response, Time, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_BODY_BYTES, DEFAULT_REQUEST_TIMEOUT,
};
pub use error::{Error, LIMIT_BLOCK_BACKOFF, RATE_LIMIT_BACKOFF, TRANSIENT_BACKOFF};
pub use limiter::LeakyBucket;
pub use methods::Method;
pub use oauth::{TokenCell, TokenSet};
pub use params::{ParamValue, Params};
pub use secret::Secret;
pub use session::{vet_refresh, NoStore, OAuthApp, OAuthSession, TokenStore, TokenStoreError};
pub use types::{
    decode, BatchResult, ContactOrLead, FinishResult, Id, ListPage, RegisterResult, SearchEntity,
    User,
};
