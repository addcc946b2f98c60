//! Persistence behind the [`Store`] trait; [`SqliteStore`] is the embedded default.
//!
//! The trait is synchronous (SQLite is), and async callers go through [`StoreHandle::run`], which
//! moves the work onto the blocking pool so no runtime thread waits on the disk. A PostgreSQL
//! implementation can follow the same trait (DESIGN.md §7). Depends on `settings` for the data
//! types only (and `config::Secret` for tokens).

mod agents;
mod checkpoints;
mod migrations;
mod outbox;
mod sqlite;
mod tokens;

use std::sync::Arc;

use crate::settings::{Auth, Line, Mapping, MappingInput, Portal, PortalId, PortalSettings};

pub use agents::AgentCredential;
pub use checkpoints::{CallCheckpoint, CheckpointWrite};
pub use outbox::{CrmCall, Delivered, DeliveryProblem, Intent, IntentKind, NewIntent, OutboxWrite};
pub use sqlite::SqliteStore;
pub use tokens::PortalTokens;

/// Store failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A unique constraint: `field` already has this value.
    #[error("{field} already exists")]
    Conflict {
        /// The JSON field name that clashed.
        field: &'static str,
    },
    /// The database failed.
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    /// Stored JSON did not decode (a bug or a hand-edited database).
    #[error("stored data is corrupt: {0}")]
    Corrupt(#[from] serde_json::Error),
    /// Opening or creating the database file failed.
    #[error("cannot open the store at {path}: {source}")]
    Open {
        /// Database path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The blocking task running the query panicked or was cancelled.
    #[error("store task failed")]
    Task,
}

/// New portal data, already validated.
#[derive(Debug, Clone)]
pub struct NewPortal {
    /// Display name.
    pub name: Option<String>,
    /// Normalised domain.
    pub domain: String,
    /// Auth, if given.
    pub auth: Option<Auth>,
}

/// Everything callgate persists.
pub trait Store: Send + Sync + 'static {
    /// Cheap liveness query for `/ready`.
    ///
    /// # Errors
    /// The database does not answer.
    fn ping(&self) -> Result<(), StoreError>;
    /// All portals, by id.
    ///
    /// # Errors
    /// Database failure.
    fn list_portals(&self) -> Result<Vec<Portal>, StoreError>;
    /// One portal.
    ///
    /// # Errors
    /// Database failure.
    fn get_portal(&self, id: PortalId) -> Result<Option<Portal>, StoreError>;
    /// Creates a portal with default settings.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] on a duplicate domain.
    fn insert_portal(&self, new: &NewPortal) -> Result<Portal, StoreError>;
    /// Replaces name, domain and auth; false when the portal does not exist.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] on a duplicate domain.
    fn update_portal(&self, id: PortalId, new: &NewPortal) -> Result<bool, StoreError>;
    /// Deletes a portal with its mappings, lines and index.
    ///
    /// # Errors
    /// Database failure.
    fn delete_portal(&self, id: PortalId) -> Result<bool, StoreError>;
    /// Replaces the settings; false when the portal does not exist.
    ///
    /// # Errors
    /// Database failure.
    fn put_settings(&self, id: PortalId, s: &PortalSettings) -> Result<bool, StoreError>;
    /// Mappings of a portal, by id.
    ///
    /// # Errors
    /// Database failure.
    fn list_mappings(&self, portal: PortalId) -> Result<Vec<Mapping>, StoreError>;
    /// Adds a mapping.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] on a duplicate extension or user.
    fn insert_mapping(&self, portal: PortalId, m: &MappingInput) -> Result<Mapping, StoreError>;
    /// Replaces a mapping; `None` when it does not exist.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] on a duplicate extension or user.
    fn update_mapping(&self, portal: PortalId, id: i64, m: &MappingInput) -> Result<Option<Mapping>, StoreError>;
    /// Deletes a mapping.
    ///
    /// # Errors
    /// Database failure.
    fn delete_mapping(&self, portal: PortalId, id: i64) -> Result<bool, StoreError>;
    /// Lines of a portal, by number.
    ///
    /// # Errors
    /// Database failure.
    fn list_lines(&self, portal: PortalId) -> Result<Vec<Line>, StoreError>;
    /// Adds or replaces a line.
    ///
    /// # Errors
    /// Database failure.
    fn upsert_line(&self, portal: PortalId, line: &Line) -> Result<(), StoreError>;
    /// Deletes a line.
    ///
    /// # Errors
    /// Database failure.
    fn delete_line(&self, portal: PortalId, number: &str) -> Result<bool, StoreError>;
    /// Adds or replaces personal-manager index rows (number -> user), in one transaction.
    ///
    /// # Errors
    /// Database failure.
    fn upsert_index(&self, portal: PortalId, rows: &[(u64, u64)]) -> Result<(), StoreError>;
    /// Removes index rows for these numbers.
    ///
    /// # Errors
    /// Database failure.
    fn remove_index(&self, portal: PortalId, numbers: &[u64]) -> Result<(), StoreError>;
    /// Removes every index row of a portal.
    ///
    /// # Errors
    /// Database failure.
    fn clear_index(&self, portal: PortalId) -> Result<(), StoreError>;
    /// The whole persisted index snapshot: (portal, number, user).
    ///
    /// # Errors
    /// Database failure.
    fn load_index(&self) -> Result<Vec<(PortalId, u64, u64)>, StoreError>;

    /// Records new calls and intents in one transaction (the outbox, DESIGN.md §5).
    ///
    /// # Errors
    /// The database failed; nothing was written.
    fn outbox_write(&self, w: &OutboxWrite, now_ms: u64) -> Result<(), StoreError>;

    /// Intents of `portal` due at `now_ms`, oldest first, `limit` at most.
    ///
    /// # Errors
    /// The database failed.
    fn outbox_due(&self, portal: PortalId, now_ms: u64, limit: usize) -> Result<Vec<Intent>, StoreError>;

    /// When the portal's next intent is due (unix ms), if any is queued.
    ///
    /// # Errors
    /// The database failed.
    fn outbox_next_due(&self, portal: PortalId) -> Result<Option<u64>, StoreError>;

    /// Records one delivery round in one transaction.
    ///
    /// # Errors
    /// The database failed; nothing was recorded (the round is repeated).
    fn outbox_delivered(&self, d: &Delivered, now_ms: u64) -> Result<(), StoreError>;

    /// Postpones intents after a failed attempt.
    ///
    /// # Errors
    /// The database failed.
    fn outbox_retry(&self, ids: &[i64], next_at_ms: u64) -> Result<(), StoreError>;

    /// One reported call.
    ///
    /// # Errors
    /// The database failed.
    fn crm_call(&self, portal: PortalId, call_key: &str) -> Result<Option<CrmCall>, StoreError>;

    /// Calls reported but never finished.
    ///
    /// # Errors
    /// The database failed.
    fn open_crm_calls(&self) -> Result<Vec<CrmCall>, StoreError>;

    /// Whether a finish for the call is queued.
    ///
    /// # Errors
    /// The database failed.
    fn finish_queued(&self, portal: PortalId, call_key: &str) -> Result<bool, StoreError>;

    /// Intents queued, all portals.
    ///
    /// # Errors
    /// The database failed.
    fn outbox_depth(&self) -> Result<usize, StoreError>;

    /// Which of `call_keys` of `portal` still have a register queued, with when it is tried next.
    ///
    /// # Errors
    /// The database failed.
    fn registers_queued(&self, portal: PortalId, call_keys: &[String]) -> Result<Vec<(String, u64)>, StoreError>;

    /// Intents queued since before `before_ms` (unix ms), all portals: the overdue ones.
    ///
    /// # Errors
    /// The database failed.
    fn outbox_older_than(&self, before_ms: u64) -> Result<usize, StoreError>;

    /// Calls whose delivery needs the operator's eye, newest first: intents queued since before
    /// `overdue_before_ms`, dead-lettered intents, or notes (a refused user replaced).
    ///
    /// # Errors
    /// The database failed.
    fn delivery_problems(&self, overdue_before_ms: u64, limit: usize) -> Result<Vec<DeliveryProblem>, StoreError>;

    /// An OAuth portal's installation (ONAPPINSTALL), if it happened.
    ///
    /// # Errors
    /// The database failed.
    fn portal_tokens(&self, portal: PortalId) -> Result<Option<PortalTokens>, StoreError>;

    /// The installation whose `member_id` this is.
    ///
    /// # Errors
    /// The database failed.
    fn portal_tokens_by_member(&self, member_id: &str) -> Result<Option<PortalTokens>, StoreError>;

    /// Stores an installation, replacing the portal's previous one.
    ///
    /// # Errors
    /// The database failed (e.g. the portal does not exist).
    fn put_portal_tokens(&self, t: &PortalTokens, now_ms: u64) -> Result<(), StoreError>;

    /// Replaces the token pair after a refresh, atomically; false when nothing is installed.
    ///
    /// # Errors
    /// The database failed; the stored pair is unchanged.
    fn rotate_portal_tokens(&self, portal: PortalId, access: &crate::config::Secret, refresh: &crate::config::Secret, expires_at_unix: u64, client_endpoint: &str, now_ms: u64) -> Result<bool, StoreError>;

    /// Stores a browser agent's credentials (HA1 only), replacing the mapping's previous ones.
    ///
    /// # Errors
    /// The database failed (e.g. the mapping does not exist).
    fn put_agent_credential(&self, c: &AgentCredential, now_ms: u64) -> Result<(), StoreError>;

    /// Revokes the credentials of mapping `mapping_id` of `portal`; false when there were none.
    ///
    /// # Errors
    /// The database failed.
    fn delete_agent_credential(&self, portal: PortalId, mapping_id: i64) -> Result<bool, StoreError>;

    /// Every browser agent's credentials.
    ///
    /// # Errors
    /// The database failed.
    fn list_agent_credentials(&self) -> Result<Vec<AgentCredential>, StoreError>;

    /// Writes one checkpoint of the open calls in one transaction.
    ///
    /// # Errors
    /// The database failed; nothing was written (the caller keeps the changes for the next one).
    fn checkpoint_calls(&self, w: &CheckpointWrite, now_ms: u64) -> Result<(), StoreError>;

    /// Every saved open call, and when the last checkpoint was written (unix ms).
    ///
    /// # Errors
    /// The database failed.
    fn call_checkpoints(&self) -> Result<(Vec<CallCheckpoint>, Option<u64>), StoreError>;
}

/// A cloneable handle for async code.
#[derive(Clone)]
pub struct StoreHandle(Arc<dyn Store>);

impl StoreHandle {
    /// Wraps a store.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self(store)
    }

    /// Runs `f` on the blocking pool.
    ///
    /// # Errors
    /// What `f` returns, or [`StoreError::Task`] when the task died.
    pub async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = Arc::clone(&self.0);
        tokio::task::spawn_blocking(move || f(store.as_ref())).await.map_err(|_| StoreError::Task)?
    }

    /// The store itself, for synchronous start-up code.
    pub fn inner(&self) -> &dyn Store {
        self.0.as_ref()
    }
}
