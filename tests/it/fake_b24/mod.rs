//! A strict fake Bitrix24 portal + OAuth server on 127.0.0.1:0 (bitrix24-rest.md §10).
//!
//! URLs (PORT = the bound port):
//! - `base()`            = `http://127.0.0.1:PORT` (no trailing slash)
//! - `webhook_url()`     = `http://127.0.0.1:PORT/rest/1/webhookcode/` (append `<method>[.json]`)
//! - `client_endpoint()` = `http://127.0.0.1:PORT/rest/` (OAuth calls: `<client_endpoint><method>`
//!   with `auth=<token>` / `access_token=<token>` / `Authorization: Bearer <token>`)
//! - `oauth_server()`    = `http://127.0.0.1:PORT/` — what goes into the portal's
//!   `oauth_server` setting (like `https://oauth.bitrix.info/`); the client calls
//!   `oauth_token_url()` = `http://127.0.0.1:PORT/oauth/token/` (also without the trailing slash),
//!   GET query or POST form, `grant_type=refresh_token&client_id=..&client_secret=..&refresh_token=..`.
//!
//! Module map: `server` (HTTP, pipeline), `listener` (resettable connections), `state` (portal state, method table), `params` (PHP
//! bracket params), `envelope`, `clock`, `limits`, `faults`, `auth`, `batch`, `telephony`
//! (register/show/hide), `finish` (finish/attachRecord), `lines`, `crm`, `query` (list
//! plumbing), `users` (user.get, im.notify), `events`, `record`; `api` holds the assertion and
//! seeding half of the `FakeB24` methods.
//!
//! Self-tests: `tests/it/fake_b24_selftest.rs`, which includes `selftest/*.rs` by path.
//!
//! Time: the fake's clock is real time plus an offset; `advance()` moves it (bucket draining,
//! token expiry, the 30-minute dedup window) and `pause_clock()` freezes it, so tests never sleep.

mod api;
mod auth;
mod batch;
mod clock;
mod crm;
mod envelope;
mod events;
mod faults;
mod finish;
mod limits;
mod lines;
mod listener;
mod params;
mod query;
mod record;
mod server;
mod state;
mod telephony;
mod users;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

// The types tests name; re-exported even while no test uses some of them yet.
#[allow(unused_imports)]
pub use crm::{Company, Contact, CrmEntity, EntityKind, Lead};
#[allow(unused_imports)]
pub use envelope::ApiError;
#[allow(unused_imports)]
pub use events::{Binding, Delivered};
#[allow(unused_imports)]
pub use faults::Fault;
#[allow(unused_imports)]
pub use lines::Line;
#[allow(unused_imports)]
pub use record::{Recorded, Via};
#[allow(unused_imports)]
pub use telephony::{CallState, FinishParams, RecordFile};
#[allow(unused_imports)]
pub use users::{Notification, User};

use auth::{random_hex, Caller, Endpoints, Issued, Owner};
use limits::OperatingLimit;
use listener::{Conn, FakeListener};
use params::Param;
use server::Inner;
use state::State;

/// What installing an app yields (the ONAPPINSTALL `auth[...]` values).
#[derive(Clone, Debug)]
pub struct AppInstall {
    pub client_id: String,
    pub client_secret: String,
    pub access_token: String,
    pub refresh_token: String,
    pub member_id: String,
    pub application_token: String,
    /// `http://127.0.0.1:PORT/rest/`
    pub client_endpoint: String,
    pub server_endpoint: String,
    /// `127.0.0.1:PORT`
    pub domain: String,
    pub expires_in: u64,
    pub expires: i64,
    pub scope: String,
    pub user_id: u64,
}

struct ServerTask(JoinHandle<()>);

impl Drop for ServerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The handle: cheap to clone; the server stops when the last clone drops.
#[derive(Clone)]
pub struct FakeB24 {
    inner: Arc<Inner>,
    _task: Arc<ServerTask>,
}

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

impl FakeB24 {
    /// Binds 127.0.0.1:0. Defaults: bucket 50 / 2 per s; users 1 (admin), 11, 12, 13
    /// (UF_PHONE_INNER 101, 102, 103; active; TIMEMAN_STATUS OPENED); webhook user 1 code
    /// "webhookcode" with scopes telephony, crm, user, im; no apps until `install_app`.
    pub async fn spawn() -> Self {
        callgate::tls::install_crypto_provider();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fake Bitrix24 binds");
        let addr = listener.local_addr().expect("bound address");
        let endpoints = Endpoints {
            base: format!("http://{addr}/"),
            domain: addr.to_string(),
            member_id: random_hex(),
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .no_proxy()
            .build()
            .expect("fake's HTTP client");
        let inner = Arc::new(Inner {
            state: Mutex::new(State::new(endpoints)),
            http,
            delivered: Notify::new(),
        });
        let app = Router::new()
            .fallback(server::handle)
            .layer(DefaultBodyLimit::max(64 << 20))
            .with_state(inner.clone());
        let task = tokio::spawn(async move {
            let service = app.into_make_service_with_connect_info::<Conn>();
            let _ = axum::serve(FakeListener(listener), service).await;
        });
        Self {
            inner,
            _task: Arc::new(ServerTask(task)),
        }
    }

    /// The portal moves to a new address (a second listener on 127.0.0.1, same state): REST
    /// requests to the old one answer 302 to the new one from now on, the OAuth server (which
    /// stays where it is) names the new `client_endpoint`, events carry the new domain.
    /// Returns the new base URL.
    pub async fn move_portal(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("the moved portal binds");
        let addr = listener.local_addr().expect("bound address");
        let app = Router::new()
            .fallback(server::handle)
            .layer(DefaultBodyLimit::max(64 << 20))
            .with_state(self.inner.clone());
        // Lives as long as the test's runtime.
        tokio::spawn(async move {
            let service = app.into_make_service_with_connect_info::<Conn>();
            let _ = axum::serve(FakeListener(listener), service).await;
        });
        self.with(|s| {
            let old = std::mem::replace(&mut s.endpoints.domain, addr.to_string());
            s.knobs.moved_from.push(old);
            s.endpoints.base = format!("http://{addr}/");
            s.endpoints.base.clone()
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.inner.lock())
    }

    // ---- URLs -----------------------------------------------------------------------------

    /// `http://127.0.0.1:PORT`
    pub fn base(&self) -> String {
        self.with(|s| s.endpoints.base.trim_end_matches('/').to_owned())
    }

    /// `http://127.0.0.1:PORT/rest/1/webhookcode/`
    pub fn webhook_url(&self) -> String {
        format!("{}/rest/1/webhookcode/", self.base())
    }

    /// `http://127.0.0.1:PORT/rest/`
    pub fn client_endpoint(&self) -> String {
        format!("{}/rest/", self.base())
    }

    /// `http://127.0.0.1:PORT/` (the `oauth_server` setting; the client appends `oauth/token/`).
    pub fn oauth_server(&self) -> String {
        format!("{}/", self.base())
    }

    /// `http://127.0.0.1:PORT/oauth/token/`
    pub fn oauth_token_url(&self) -> String {
        format!("{}/oauth/token/", self.base())
    }

    /// `127.0.0.1:PORT` (what events carry in `auth[domain]`).
    pub fn domain(&self) -> String {
        self.with(|s| s.endpoints.domain.clone())
    }

    pub fn member_id(&self) -> String {
        self.with(|s| s.endpoints.member_id.clone())
    }

    // ---- auth -----------------------------------------------------------------------------

    /// Registers an app (scopes telephony, crm, user, im; user 1) and issues its first tokens.
    pub fn install_app(&self, client_id: &str, client_secret: &str) -> AppInstall {
        self.install_app_with_scopes(client_id, client_secret, auth::DEFAULT_SCOPES)
    }

    pub fn install_app_with_scopes(
        &self,
        client_id: &str,
        client_secret: &str,
        scopes: &[&str],
    ) -> AppInstall {
        self.with(|s| {
            s.auth
                .register_app(client_id, client_secret, auth::owned(scopes));
            let now = s.now();
            let issued = s.auth.issue(client_id, 1, now);
            app_install(s, client_id, &issued)
        })
    }

    /// A fresh token pair for an installed app (as if the user re-authorised).
    pub fn issue_tokens(&self, client_id: &str) -> AppInstall {
        self.with(|s| {
            let now = s.now();
            let issued = s.auth.issue(client_id, 1, now);
            app_install(s, client_id, &issued)
        })
    }

    /// An authorization code (valid 30 s on the fake clock) for `grant_type=authorization_code`.
    pub fn authorization_code(&self, client_id: &str) -> String {
        self.with(|s| {
            let now = s.now();
            s.auth.issue_code(client_id, 1, now)
        })
    }

    /// Lifetime of access tokens issued from now on (default 1 h).
    pub fn set_token_ttl(&self, d: Duration) {
        self.with(|s| s.auth.token_ttl = d);
    }

    /// Every access token issued so far expires now (→ 401 expired_token).
    pub fn expire_access_tokens(&self) {
        self.with(|s| {
            let now = s.now();
            s.auth.expire_all(now);
        });
    }

    /// Every access token issued so far becomes unknown (→ 401 invalid_token).
    pub fn revoke_access_tokens(&self) {
        self.with(|s| s.auth.revoke_all());
    }

    /// Strict (default): a refresh token is invalid once used.
    pub fn set_strict_refresh_rotation(&self, strict: bool) {
        self.with(|s| s.auth.strict_rotation = strict);
    }

    /// Every refresh token issued so far stops working (invalid_grant), as after 180 days.
    pub fn invalidate_refresh_tokens(&self) {
        self.with(|s| s.auth.invalidate_refresh_tokens());
    }

    /// Whether token answers name `member_id` (default true, as Bitrix24 always does).
    pub fn set_token_answer_member_id(&self, on: bool) {
        self.with(|s| s.auth.answer_member_id = on);
    }

    /// The portal gets a new `member_id` (as if it were created again under the same address):
    /// token answers and events name it from now on.
    pub fn set_member_id(&self, member_id: &str) {
        self.with(|s| s.endpoints.member_id = member_id.to_owned());
    }

    /// Successful refresh_token grants so far.
    pub fn refresh_count(&self) -> usize {
        self.with(|s| s.auth.refresh_count)
    }

    /// Every request to the OAuth token server (method "oauth.token").
    pub fn oauth_requests(&self) -> Vec<Recorded> {
        self.with(|s| s.oauth_log.clone())
    }

    /// Adds an incoming webhook; returns its URL (`.../rest/<user>/<code>/`).
    pub fn add_webhook(&self, user_id: u64, code: &str, scopes: &[&str]) -> String {
        self.with(|s| {
            s.auth.webhooks.retain(|w| w.code != code);
            s.auth.webhooks.push(auth::Webhook {
                user_id,
                code: code.to_owned(),
                scopes: auth::owned(scopes),
            });
        });
        format!("{}/rest/{user_id}/{code}/", self.base())
    }

    /// Deletes (or expires) a webhook: its calls get 401 INVALID_CREDENTIALS.
    pub fn remove_webhook(&self, code: &str) {
        self.with(|s| s.auth.webhooks.retain(|w| w.code != code));
    }

    // ---- clock ----------------------------------------------------------------------------

    /// Moves the fake clock forward (drains the bucket, ages tokens and calls).
    pub fn advance(&self, d: Duration) {
        self.with(|s| s.clock.advance(d));
    }

    /// Freezes the fake clock: only `advance` moves it until `resume_clock`.
    pub fn pause_clock(&self) {
        self.with(|s| s.clock.pause());
    }

    pub fn resume_clock(&self) {
        self.with(|s| s.clock.resume());
    }

    /// The fake's current unix time (seconds).
    pub fn now_unix(&self) -> i64 {
        self.with(|s| s.now().unix_secs())
    }

    /// An ISO-8601 date (portal offset +03:00) for `secs_from_now` on the fake clock.
    pub fn iso_date(&self, secs_from_now: i64) -> String {
        self.with(|s| clock::iso(s.now().unix_secs() + secs_from_now, s.knobs.tz_offset))
    }
}

fn app_install(s: &State, client_id: &str, t: &Issued) -> AppInstall {
    let app = s.auth.app(client_id).expect("app is installed");
    AppInstall {
        client_id: client_id.to_owned(),
        client_secret: app.client_secret.clone(),
        access_token: t.access_token.clone(),
        refresh_token: t.refresh_token.clone(),
        member_id: s.endpoints.member_id.clone(),
        application_token: app.application_token.clone(),
        client_endpoint: s.endpoints.client_endpoint(),
        server_endpoint: s.endpoints.server_endpoint(),
        domain: s.endpoints.domain.clone(),
        expires_in: t.expires_in,
        expires: t.expires,
        scope: t.scope.clone(),
        user_id: t.user_id,
    }
}

impl FakeB24 {
    // ---- limits and faults ----------------------------------------------------------------

    /// Leaky bucket: reject when a request would lift the level above `burst`; drains
    /// `drain_per_s` per second (default 50 / 2; Enterprise 250 / 5).
    pub fn set_bucket(&self, burst: u32, drain_per_s: f64) {
        self.with(|s| {
            s.limits.burst = burst;
            s.limits.drain_per_s = drain_per_s;
        });
    }

    /// Empties every bucket at once.
    pub fn empty_bucket(&self) {
        self.with(|s| s.limits.empty_buckets());
    }

    /// The bucket level of 127.0.0.1 now.
    pub fn bucket_level(&self) -> f64 {
        self.with(|s| {
            let now = s.now();
            s.limits.level(LOCALHOST, now.mono)
        })
    }

    /// Operating limit: each method call costs `cost`; at `limit` per 10 min per (method,
    /// app|webhook) the method answers 429 OPERATION_TIME_LIMIT.
    pub fn set_operating_limit(&self, limit: Duration, cost: Duration) {
        self.with(|s| s.limits.operating = Some(OperatingLimit { limit, cost }));
    }

    pub fn clear_operating_limit(&self) {
        self.with(|s| s.limits.operating = None);
    }

    /// 503 QUERY_LIMIT_EXCEEDED answered so far (bucket and injected).
    pub fn rejected(&self) -> usize {
        self.with(|s| s.limits.rejected)
    }

    /// The next `n` REST requests get `fault`.
    pub fn fail_next(&self, n: usize, fault: Fault) {
        self.with(|s| s.faults.push(n, fault));
    }

    /// Every REST request gets `fault` until cleared with `None` (one-shot faults go first).
    pub fn set_fault_mode(&self, fault: Option<Fault>) {
        self.with(|s| s.faults.mode = fault);
    }

    /// One-shot faults still queued.
    pub fn pending_faults(&self) -> usize {
        self.with(|s| s.faults.pending())
    }

    /// The next `n` OAuth token requests get `fault`.
    pub fn fail_next_oauth(&self, n: usize, fault: Fault) {
        self.with(|s| s.faults.push_oauth(n, fault));
    }

    pub fn set_oauth_fault_mode(&self, fault: Option<Fault>) {
        self.with(|s| s.faults.oauth_mode = fault);
    }

    // ---- behaviour switches ---------------------------------------------------------------

    /// Print empty error codes as `code` (e.g. "ERROR_CORE", as documented); None = "" (observed).
    pub fn set_empty_error_code(&self, code: Option<&str>) {
        self.with(|s| s.knobs.empty_code_as = code.map(str::to_owned));
    }

    /// 403 WRONG_AUTH_TYPE for telephony register/finish/externalLine.* via webhooks.
    pub fn set_app_only_telephony(&self, on: bool) {
        self.with(|s| s.knobs.app_only_telephony = on);
    }

    /// Whether finish without ADD_TO_CHAT posts a chat message (default true, as documented).
    pub fn set_add_to_chat_default(&self, on: bool) {
        self.with(|s| s.knobs.add_to_chat_default = on);
    }

    /// Register answers `LEAD_CREATION_ERROR: msg` (HTTP 200) instead of creating leads.
    pub fn set_lead_creation_error(&self, msg: Option<&str>) {
        self.with(|s| s.knobs.lead_creation_error = msg.map(str::to_owned));
    }

    /// Unresolvable batch `$result[..]` references become "" (default: left literal).
    pub fn set_unresolved_refs_empty(&self, on: bool) {
        self.with(|s| s.knobs.unresolved_refs_empty = on);
    }

    /// App event deliveries carry access tokens (default); false = "done by automation".
    pub fn set_event_tokens(&self, on: bool) {
        self.with(|s| s.knobs.event_tokens = on);
    }

    /// `app.info` answers `code` as CODE instead of the calling app's client_id (a portal that
    /// speaks for another app); None = the real answer.
    pub fn set_app_info_code(&self, code: Option<&str>) {
        self.with(|s| s.knobs.app_code = code.map(str::to_owned));
    }

    /// Delay before each automatic event delivery (e.g. > 15 s to test staleness handling).
    pub fn set_delivery_delay(&self, d: Duration) {
        self.with(|s| s.knobs.delivery_delay = d);
    }
}

impl FakeB24 {
    fn app_caller(s: &State, client_id: &str) -> Caller {
        let app = s.auth.app(client_id).expect("app is installed");
        Caller {
            owner: Owner::App {
                client_id: app.client_id.clone(),
                app_id: app.id,
                name: app.name.clone(),
            },
            user_id: app.user_id,
            scopes: app.scopes.clone(),
        }
    }

    fn param_map(pairs: &[(&str, String)]) -> Param {
        let mut p = Param::map();
        for (k, v) in pairs {
            p.set(k, Param::Str(v.clone()));
        }
        p
    }
}
