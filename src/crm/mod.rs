//! Bitrix24 for callgate: the durable outbox and its delivery, inbound events, the index sync,
//! over the `bitrix24` REST client crate (DESIGN.md §5).
//!
//! Delivery path: tracker effects -> `recorder` (group commits into the store's outbox, applying
//! `rules`: DESIGN.md §5 with the portal's settings) -> one `worker` per portal (`wake`:
//! started and woken on demand) that `plan`s `batch` requests (a finish only after its
//! register's CALL_ID is stored: every resend is safe) and sends them through the
//! [`Bitrix`] port (`port`: the REST client with the portal's webhook or OAuth token, `tokens`).
//! `fallback` replaces users Bitrix24 refuses by the direction's default responsible.
//! `reconcile` finishes calls a crash left open. Inbound: `events` (the endpoint's checks and
//! de-duplication), `install` (the proof an `ONAPPINSTALL` must bring), `processor` (click-to-call through `clicks` and `originate`, CRM changes),
//! `sync` and `lookup` (the personal-manager index from Bitrix24).
//!
//! The REST client itself (parameters, [`CrmClient`], [`CrmError`], typed methods and results,
//! the [`LeakyBucket`], OAuth refresh and the single-flight [`OAuthSession`](bitrix24::OAuthSession))
//! is the workspace crate `bitrix24` (crates/bitrix24), which knows nothing of callgate. The glue
//! that stays here: [`Tokens`] (each portal's way in, from its settings: webhook, or an OAuth
//! session whose rotated tokens the store keeps through [`bitrix24::TokenStore`]; moved portals),
//! the conversions between callgate's [`Secret`](crate::config::Secret) and the crate's, and the
//! request metrics (`callgate_crm_http_*`, [`observe_request`]).

pub mod clicks;
pub mod events;
pub mod install;
pub mod notices;
pub mod originate;
mod processor;
pub mod tokens;

mod fallback;
mod plan;
mod port;
mod reconcile;
mod recorder;
mod rules;
mod wake;
mod worker;
mod sync;
mod lookup;

// callgate's names for the crate's types (stable for the rest of callgate).
pub use bitrix24::{BatchCommand, BatchResult, ContactOrLead, Endpoint, FinishResult, Id, LeakyBucket, ListPage, ParamValue, Params, RegisterResult, Response, SearchEntity, Time, TokenCell, TokenSet, User};
pub use bitrix24::{Client as CrmClient, ClientBuilder as CrmClientBuilder, Error as CrmError};
pub use tokens::{AccessError, Tokens};

pub use plan::{Cmd, CallRef, MAX_BATCH};
pub use port::RestBitrix;
pub use reconcile::reconcile;
pub use recorder::run as run_recorder;
pub use rules::{iso8601_utc, utm_fields, Rules};
pub use wake::Workers;
pub use sync::{active_users, full_sync, replace_index, CrmKind, IndexSync, SyncError, SyncReport};
pub use lookup::LookupConfig;
pub use worker::{run as run_worker, Bitrix, CmdOutcome, SendFailure, SendFuture, WorkerConfig};

/// Wall-clock milliseconds since the UNIX epoch (the outbox's time base).
pub(crate) use crate::telemetry::unix_ms as now_ms;

/// The Bitrix24 HTTP client as callgate builds it: `User-Agent: callgate/<version>`, the request
/// metrics, and `configure` (timeouts, extra root CAs).
///
/// # Errors
/// As [`CrmClientBuilder::build`].
pub fn client(configure: impl FnOnce(CrmClientBuilder) -> CrmClientBuilder) -> Result<CrmClient, CrmError> {
    let builder = CrmClient::builder().user_agent(concat!("callgate/", env!("CARGO_PKG_VERSION"))).observer(std::sync::Arc::new(observe_request));
    configure(builder).build()
}

/// Counts one finished Bitrix24 request: `callgate_crm_http_requests_total{method, outcome}` and
/// `callgate_crm_http_request_seconds{method}`.
pub fn observe_request(o: &bitrix24::Observation<'_>) {
    let method = o.method.to_ascii_lowercase();
    metrics::counter!("callgate_crm_http_requests_total", "method" => method.clone(), "outcome" => o.outcome).increment(1);
    metrics::histogram!("callgate_crm_http_request_seconds", "method" => method).record(o.took.as_secs_f64());
}

/// callgate's [`Secret`](crate::config::Secret) as the crate's (a webhook URL, a token, the app's secret).
pub(crate) fn b24_secret(s: &crate::config::Secret) -> bitrix24::Secret {
    bitrix24::Secret::new(s.expose())
}

/// The crate's [`bitrix24::Secret`] as callgate's (tokens going to the store).
pub(crate) fn own_secret(s: &bitrix24::Secret) -> crate::config::Secret {
    crate::config::Secret::new(s.expose())
}
