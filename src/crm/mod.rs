//! Bitrix24: REST client, auth, rate limiter, batcher, durable outbox and inbound events
//! (DESIGN.md §5).
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
//! REST client layer (bitrix24-rest.md §1-§5), usable without the outbox:
//! * [`params`]: [`Params`], the ordered parameter tree; JSON body and PHP-bracket query
//!   (`batch` `cmd` strings, `$result[key][FIELD]` references kept literal).
//! * [`client`]: [`CrmClient`] (one `reqwest::Client`, no redirects, https or loopback http
//!   only) and [`Endpoint`] (webhook URL, or OAuth `client_endpoint` + token); `call` and `batch`.
//! * [`error`]: [`CrmError`], classified by `error` code, then description, then HTTP status;
//!   `retryable()`, `needs_token_refresh()`, `retry_after_hint()`.
//! * [`types`]: tolerant decoding of results (ids as int or string, `[]` for empty maps, …).
//! * [`limiter`]: [`LeakyBucket`], pure, `now` passed in.
//! * [`oauth`]: [`refresh`](oauth::refresh) at the OAuth server and [`TokenCell`] (one refresh in
//!   flight per portal).
//!
//! `client`, `oauth` do I/O; `params`, `error`, `types`, `limiter` are pure. This layer depends
//! only on `config::Secret` (and `tls::install_crypto_provider`); it never logs secrets.

pub mod client;
pub mod error;
pub mod clicks;
pub mod events;
pub mod install;
pub mod notices;
pub mod originate;
mod processor;
pub mod limiter;
pub mod oauth;
pub mod params;
pub mod types;
pub mod tokens;
#[cfg(test)]
mod tests;

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

pub use client::{BatchCommand, CrmClient, CrmClientBuilder, Endpoint, Response, Time};
pub use error::CrmError;
pub use limiter::LeakyBucket;
pub use oauth::{TokenCell, TokenSet};
pub use tokens::{AccessError, Tokens};
pub use params::{ParamValue, Params};
pub use types::{BatchResult, ContactOrLead, FinishResult, Id, ListPage, RegisterResult, SearchEntity, User};

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
