//! The per-portal delivery workers: started on first need (a portal with queued intents at
//! start-up, or the recorder queuing for a portal), then woken whenever something is queued, so
//! workers sleep instead of polling the store.

use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::worker::{run, Bitrix, WorkerConfig};
use crate::directory::Directory;
use crate::settings::PortalId;
use crate::store::StoreHandle;

/// Running workers by portal. Holds handles only (STYLE.md).
pub struct Workers {
    running: DashMap<PortalId, Arc<Notify>>,
    store: StoreHandle,
    directory: Directory,
    bitrix: Arc<dyn Bitrix>,
    cfg: WorkerConfig,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

impl Workers {
    /// Workers will run in `tasks` until `cancel`.
    pub fn new(store: StoreHandle, directory: Directory, bitrix: Arc<dyn Bitrix>, cfg: WorkerConfig, tasks: TaskTracker, cancel: CancellationToken) -> Arc<Self> {
        Arc::new(Self { running: DashMap::new(), store, directory, bitrix, cfg, tasks, cancel })
    }

    /// Starts the portal's worker if needed and wakes it.
    pub fn wake(&self, portal: PortalId) {
        let notify = match self.running.get(&portal) {
            Some(n) => Arc::clone(&n),
            None => self.start(portal),
        };
        notify.notify_one();
    }

    fn start(&self, portal: PortalId) -> Arc<Notify> {
        let entry = self.running.entry(portal).or_insert_with(|| {
            let notify = Arc::new(Notify::new());
            let (store, directory, bitrix, cancel) = (self.store.clone(), self.directory.clone(), Arc::clone(&self.bitrix), self.cancel.clone());
            self.tasks.spawn(run(portal, store, directory, bitrix, Arc::clone(&notify), self.cfg, cancel));
            notify
        });
        Arc::clone(&entry)
    }
}
