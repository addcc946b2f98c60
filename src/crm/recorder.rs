//! The durable end of the call tracker: effects arrive on a bounded channel, are turned into
//! Bitrix24 intents by [`Rules`] with the portal's settings of that moment, and written to the
//! outbox in one SQLite transaction per group (a group commit: one fsync for every effect that
//! queued up meanwhile). Then the portals' delivery workers are woken (started if needed).
//!
//! Nothing is dropped here: a failed write is retried (with the effects kept) until the store
//! answers again. Meanwhile the channel fills; the tracker's side then keeps further effects in
//! order (its outlet's spill) and the SIP front door refuses new calls with 503, so back-pressure
//! reaches the PBX instead of effects being shed. The only loss window is memory itself (a
//! crash before the write), which the start-up reconciliation covers for calls already
//! registered.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::rules::Rules;
use super::wake::Workers;
use crate::calls::Effect;
use crate::directory::Directory;
use crate::settings::PortalId;
use crate::store::{OutboxWrite, StoreHandle};

/// Effects taken per write at most.
const GROUP: usize = 1024;

/// Runs until cancelled and the channel is drained.
pub async fn run(mut rx: mpsc::Receiver<Effect>, mut rules: Rules, store: StoreHandle, directory: Directory, workers: Arc<Workers>, cancel: CancellationToken) {
    let mut group = Vec::with_capacity(GROUP);
    loop {
        let first = tokio::select! {
            e = rx.recv() => e,
            () = cancel.cancelled() => { rx.close(); rx.recv().await }
        };
        let Some(first) = first else { return };
        group.clear();
        group.push(first);
        while group.len() < GROUP {
            match rx.try_recv() {
                Ok(e) => group.push(e),
                Err(_) => break,
            }
        }
        let now = super::now_ms();
        let snap = directory.snapshot();
        let mut write = OutboxWrite::default();
        for e in &group {
            rules.apply(e, snap.portals.get(&portal_of(e)).map(AsRef::as_ref), now, &mut write);
        }
        if write.intents.is_empty() && write.calls.is_empty() {
            continue;
        }
        // One wake per portal, not per intent (a group holds many intents of few portals).
        let mut portals: Vec<PortalId> = write.intents.iter().map(|i| i.portal).collect();
        portals.sort_unstable();
        portals.dedup();
        persist(&store, write, now).await;
        for p in portals {
            workers.wake(p);
        }
    }
}

/// Writes `w`, retrying until the store takes it (effects are never dropped).
async fn persist(store: &StoreHandle, w: OutboxWrite, now: u64) {
    let mut delay = Duration::from_millis(50);
    loop {
        let attempt = w.clone();
        match store.run(move |s| s.outbox_write(&attempt, now)).await {
            Ok(()) => {
                metrics::counter!("callgate_crm_intents_queued_total").increment(w.intents.len() as u64);
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "writing the Bitrix24 outbox failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

fn portal_of(e: &Effect) -> PortalId {
    match e {
        Effect::CallStarted { portal, .. } | Effect::Show { portal, .. } | Effect::Hide { portal, .. } => *portal,
        Effect::CallFinished(r) => r.portal,
    }
}
