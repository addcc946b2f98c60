//! [`IndexSync`]: the personal-manager index service of the running gateway. At most one
//! full sync per portal at a time (a second one is [`SyncError::Busy`]); one start-up sync per
//! active portal with credentials, retried with backoff; the look-up task on index misses
//! (`crm::lookup`); [`IndexSync::refresh_entity`] for CRM change events; the periodic re-sync
//! of webhook portals ([`IndexSync::resync_webhook_portals`]). Portals are called
//! through the gateway's one [`Tokens`] registry, so OAuth refreshes stay single flight.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{active_users, full_sync, replace_index, CrmKind, SyncReport, RETRY_MAX, RETRY_MIN};
use bitrix24::crm::{is_not_found, Get};

use crate::crm::lookup::{self, LookupConfig};
use crate::crm::tokens::{AccessError, Tokens};
use crate::crm::{CrmError, User};
use crate::directory::{Directory, PortalEntry};
use crate::phone::normalize_number;
use crate::settings::{Auth, PortalId};
use crate::store::{StoreError, StoreHandle};

/// Why the index service could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// A sync of this portal is running already.
    #[error("a sync of this portal is already running")]
    Busy,
    /// The portal is not (or no longer) configured.
    #[error("no such portal")]
    UnknownPortal,
    /// Calling the portal failed: no credentials, app not installed, or Bitrix24 failed or
    /// refused.
    #[error(transparent)]
    Access(#[from] AccessError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Shutdown stopped it.
    #[error("stopped by shutdown")]
    Cancelled,
}

impl From<CrmError> for SyncError {
    fn from(e: CrmError) -> Self {
        Self::Access(AccessError::Crm(e))
    }
}

impl SyncError {
    /// The portal cannot be called at all (no credentials, OAuth app not installed): trying
    /// again will not help until an admin acts.
    pub fn no_credentials(&self) -> bool {
        matches!(
            self,
            Self::Access(AccessError::NoCredentials | AccessError::NotInstalled)
        )
    }
}

/// The personal-manager index service of the running gateway (a handle: share it in an `Arc`).
/// Calls portals through the gateway's one [`Tokens`] registry, so OAuth refreshes stay single
/// flight.
pub struct IndexSync {
    tokens: Arc<Tokens>,
    store: StoreHandle,
    directory: Directory,
    /// Portals with a sync running. The lock guards one insert or remove, never an `.await`.
    running: parking_lot::Mutex<HashSet<PortalId>>,
    tasks: TaskTracker,
    cancel: CancellationToken,
    /// Numbers to look up again whatever the de-duplication says (CRM change events).
    refresh: mpsc::Sender<(PortalId, u64)>,
}

impl IndexSync {
    /// Starts the index side of the gateway in `tasks` until `cancel`: the look-up task (fed by
    /// `directory`'s index misses) and one background sync per active portal with credentials.
    pub fn start(
        tokens: Arc<Tokens>,
        store: &StoreHandle,
        directory: &Directory,
        tasks: &TaskTracker,
        cancel: &CancellationToken,
    ) -> Arc<Self> {
        let lcfg = LookupConfig::default();
        let (miss_tx, misses) = mpsc::channel(lcfg.queue);
        let (refresh, refreshes) = mpsc::channel(lcfg.queue);
        directory.set_miss_queue(miss_tx);
        let ctx = lookup::Ctx {
            tokens: Arc::clone(&tokens),
            store: store.clone(),
            directory: directory.clone(),
        };
        tasks.spawn(lookup::run(misses, refreshes, ctx, lcfg, cancel.clone()));
        let sync = Arc::new(Self {
            tokens,
            store: store.clone(),
            directory: directory.clone(),
            running: parking_lot::Mutex::new(HashSet::new()),
            tasks: tasks.clone(),
            cancel: cancel.clone(),
            refresh,
        });
        sync.sync_active_portals();
        sync
    }

    /// Starts a full sync of `portal` in the background and hands back its outcome. The sync
    /// goes on if the handle is dropped (an HTTP caller that timed out).
    ///
    /// # Errors
    /// [`SyncError::UnknownPortal`], [`SyncError::Access`] (no credentials), [`SyncError::Busy`];
    /// the handle yields the sync's own errors.
    pub fn start_sync(
        self: &Arc<Self>,
        portal: PortalId,
    ) -> Result<JoinHandle<Result<SyncReport, SyncError>>, SyncError> {
        let entry = self.entry(portal)?;
        let guard = Running::claim(self, portal).ok_or(SyncError::Busy)?;
        let this = Arc::clone(self);
        Ok(self.tasks.spawn(async move {
            let _guard = guard;
            let client = this.tokens.client();
            let read =
                this.tokens.call(
                    &entry,
                    |ep| async move { full_sync(client, &ep, portal).await },
                );
            let mut report = tokio::select! {
                r = read => r?,
                () = this.cancel.cancelled() => return Err(SyncError::Cancelled),
            };
            // Not cancelled from here on: store and memory must end up alike.
            replace_index(
                &this.store,
                &this.directory,
                portal,
                std::mem::take(&mut report.rows),
            )
            .await?;
            let r = &report;
            tracing::info!(
                portal,
                numbers = r.numbers,
                contacts = r.contacts,
                companies = r.companies,
                leads = r.leads,
                skipped = r.skipped,
                requests = r.requests,
                "personal-manager index synced from Bitrix24"
            );
            Ok(report)
        }))
    }

    /// The portal's active users (for the mapping import) and the requests made.
    ///
    /// # Errors
    /// [`SyncError::UnknownPortal`], [`SyncError::Access`].
    pub async fn active_users(&self, portal: PortalId) -> Result<(Vec<User>, usize), SyncError> {
        let entry = self.entry(portal)?;
        let client = self.tokens.client();
        Ok(self
            .tokens
            .call(&entry, |ep| async move { active_users(client, &ep).await })
            .await?)
    }

    /// For CRM change events (`ONCRM{CONTACT,COMPANY,LEAD}{ADD,UPDATE}`, which carry only the
    /// id): reads the entity (one request) and queues its phone numbers for a fresh look-up
    /// (`searchCrmEntities`, batched and rate-limited with the misses), which applies the
    /// precedence over every entity owning each number, and drops rows no entity claims any
    /// more. Returns how many numbers were queued. A deleted entity ("Not found") queues
    /// nothing: its numbers stay until the next full sync.
    ///
    /// # Errors
    /// [`SyncError::UnknownPortal`], [`SyncError::Access`].
    pub async fn refresh_entity(
        &self,
        portal: PortalId,
        kind: CrmKind,
        id: u64,
    ) -> Result<usize, SyncError> {
        let entry = self.entry(portal)?;
        let client = self.tokens.client();
        let get = Get { kind: kind.entity(), id };
        let read = self.tokens.call(&entry, |ep| async move { client.invoke(&ep, &get).await });
        let entity = match read.await {
            Ok(entity) => entity,
            Err(AccessError::Crm(e)) if is_not_found(&e) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let numbers: Vec<u64> = entity
            .phones
            .iter()
            .filter_map(|p| normalize_number(p))
            .map(|n| n.as_u64())
            .collect();
        Ok(self.refresh_numbers(portal, &numbers))
    }

    /// Queues `numbers` (normalised) of `portal` for a fresh look-up, bypassing the
    /// de-duplication of misses. Never waits: when the queue is full the rest is dropped
    /// (counted). Returns how many were queued.
    pub fn refresh_numbers(&self, portal: PortalId, numbers: &[u64]) -> usize {
        let queued = numbers
            .iter()
            .take_while(|&&n| self.refresh.try_send((portal, n)).is_ok())
            .count();
        if queued < numbers.len() {
            metrics::counter!("callgate_pm_lookup_queue_total", "outcome" => "dropped")
                .increment((numbers.len() - queued) as u64);
        }
        queued
    }

    /// The portal as routing sees it, with a fast "no credentials" answer.
    fn entry(&self, portal: PortalId) -> Result<Arc<PortalEntry>, SyncError> {
        let entry = self
            .directory
            .snapshot()
            .portals
            .get(&portal)
            .cloned()
            .ok_or(SyncError::UnknownPortal)?;
        if entry.portal.auth.is_none() {
            return Err(AccessError::NoCredentials.into());
        }
        Ok(entry)
    }

    /// Re-syncs the index of every active webhook portal every `every` (0: never), in a task
    /// of its own until shutdown. Webhook portals get no CRM events, so without this their
    /// index would only age; OAuth apps are kept fresh by their events (online and offline).
    /// A portal already syncing is skipped for this round; a failed round waits for the next.
    pub fn resync_webhook_portals(self: &Arc<Self>, every: Duration) {
        if every.is_zero() {
            return;
        }
        let this = Arc::clone(self);
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = this.cancel.cancelled() => return,
                }
                this.resync_round().await;
            }
        });
    }

    /// One round of [`Self::resync_webhook_portals`]: the portals one after the other (each
    /// sync is paced at half the portal's budget already; in parallel they would not be
    /// faster per portal, only burstier for the process).
    async fn resync_round(self: &Arc<Self>) {
        let due: Vec<PortalId> = self
            .directory
            .snapshot()
            .portals
            .iter()
            .filter(|(_, e)| e.portal.settings.active && matches!(e.portal.auth, Some(Auth::Webhook { .. })))
            .map(|(id, _)| *id)
            .collect();
        for portal in due {
            let outcome = match self.start_sync(portal) {
                Ok(handle) => handle.await.unwrap_or(Err(SyncError::Cancelled)),
                Err(e) => Err(e),
            };
            let label = match &outcome {
                Ok(_) => "ok",
                Err(SyncError::Busy) => "busy",
                Err(SyncError::Cancelled) => return,
                Err(e) => {
                    tracing::warn!(portal, error = %e, "periodic re-sync of the personal-manager index failed; next round tries again");
                    "failed"
                }
            };
            metrics::counter!("callgate_pm_resync_total", "outcome" => label).increment(1);
        }
    }

    fn sync_active_portals(self: &Arc<Self>) {
        for (id, entry) in &self.directory.snapshot().portals {
            if entry.portal.settings.active && entry.portal.auth.is_some() {
                self.tasks.spawn(Arc::clone(self).sync_at_start(*id));
            }
        }
    }

    /// One start-up sync, tried again with backoff until it succeeds, the portal goes away or
    /// cannot be called at all, or another sync of it starts.
    async fn sync_at_start(self: Arc<Self>, portal: PortalId) {
        let mut wait = RETRY_MIN;
        loop {
            let outcome = match self.start_sync(portal) {
                Ok(handle) => handle.await.unwrap_or(Err(SyncError::Cancelled)),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(_) | Err(SyncError::Busy | SyncError::Cancelled | SyncError::UnknownPortal) => {
                    return
                }
                Err(e) if e.no_credentials() => return,
                Err(e) => {
                    tracing::warn!(portal, error = %e, retry_in = ?wait, "start-up sync of the personal-manager index failed")
                }
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.cancel.cancelled() => return,
            }
            wait = (wait * 2).min(RETRY_MAX);
        }
    }
}

/// A portal's place in [`IndexSync::running`], given back on drop (also when cancelled).
struct Running {
    sync: Arc<IndexSync>,
    portal: PortalId,
}

impl Running {
    fn claim(sync: &Arc<IndexSync>, portal: PortalId) -> Option<Self> {
        sync.running.lock().insert(portal).then(|| Self {
            sync: Arc::clone(sync),
            portal,
        })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.sync.running.lock().remove(&self.portal);
    }
}
