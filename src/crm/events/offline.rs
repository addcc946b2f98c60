//! Offline events (bitrix24-rest.md §6.1, §7.6): Bitrix24 never retries an online delivery, so
//! an event sent while callgate was down, restarting or unreachable is lost. An installed OAuth
//! app therefore also binds [`BOUND_EVENTS`] with `event_type=offline` (no handler URL: Bitrix24
//! keeps the latest state per object in a queue), and [`OfflineEvents`] reads that queue at
//! start and every `crm.offline_events_interval`.
//!
//! Each page is read with `clear=0`: Bitrix24 marks the events with a `process_id` instead of
//! deleting them. The events go into the same [`EventInbox`] as online ones (same parsing into
//! `data[...]` keys, same de-duplication: an event that also arrived online within the window is
//! processed once), and only when all of a page is queued is it cleared with
//! `event.offline.clear`. A page that could not be queued (inbox full) or cleared keeps its
//! `process_id`, which the next read names again, so Bitrix24 hands the same events back: none
//! is lost to callgate's own back-pressure or a failed request.
//!
//! A click-to-call older than a click's lifetime (2 minutes) is not rung any more: its Bitrix24
//! call is finished at once as not placed, like a click nobody can ring.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{classify, is_oauth, EventInbox, EventKind, InboundEvent, Offered, BOUND_EVENTS, CLICK_TTL_MS};
use bitrix24::event::{Bind, OfflineClear, OfflineGet};

use crate::crm::tokens::{AccessError, Tokens};
use crate::crm::BatchCommand;
use crate::directory::{Directory, PortalEntry};
use crate::settings::PortalId;

/// Events read per `event.offline.get` (Bitrix24's default and maximum page).
const PAGE: u32 = 50;
/// Pages read per portal per round at most (the rest waits for the next round).
const MAX_PAGES: usize = 20;

pub use bitrix24::event::{read_page, OfflineEvent, OfflinePage};

/// What one round did for one portal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drained {
    /// Events handed to the inbox (new ones).
    pub queued: usize,
    /// Events the inbox had seen already (online delivery within the window).
    pub duplicates: usize,
    /// True when a page had to be left for the next round (inbox full).
    pub held: bool,
}

/// The offline-event reader of the running gateway.
pub struct OfflineEvents {
    tokens: Arc<Tokens>,
    directory: Directory,
    inbox: Arc<EventInbox>,
    /// Per portal, the `process_id` of a page read but not cleared: named in the next read.
    /// Short critical sections, never across an await.
    pending: Mutex<HashMap<PortalId, String>>,
    /// Per portal, the installation (a digest of its `application_token`, which a reinstall
    /// changes, and Bitrix24 drops an app's bindings on reinstall) whose offline events were
    /// bound in this process's life.
    bound: Mutex<HashMap<PortalId, u64>>,
}

impl OfflineEvents {
    /// A reader feeding `inbox`.
    pub fn new(tokens: Arc<Tokens>, directory: Directory, inbox: Arc<EventInbox>) -> Arc<Self> {
        Arc::new(Self {
            tokens,
            directory,
            inbox,
            pending: Mutex::new(HashMap::new()),
            bound: Mutex::new(HashMap::new()),
        })
    }

    /// Reads every installed app's queue now and then every `every` (0: never), in `tasks`
    /// until `cancel`.
    pub fn start(self: &Arc<Self>, every: Duration, tasks: &TaskTracker, cancel: &CancellationToken) {
        if every.is_zero() {
            return;
        }
        let (this, cancel) = (Arc::clone(self), cancel.clone());
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = cancel.cancelled() => return,
                }
                tokio::select! {
                    () = this.round() => {}
                    () = cancel.cancelled() => return,
                }
            }
        });
    }

    /// One round over the active OAuth portals with an installation.
    pub async fn round(&self) {
        let portals: Vec<Arc<PortalEntry>> = self
            .directory
            .snapshot()
            .portals
            .values()
            .filter(|p| p.portal.settings.active && is_oauth(p))
            .cloned()
            .collect();
        for portal in portals {
            let pid = portal.portal.id;
            let Ok(Some(installed)) = self.tokens.installation(pid).await else {
                continue;
            };
            if let Err(e) = self.drain(&portal, digest(installed.application_token.expose())).await {
                metrics::counter!("callgate_b24_offline_reads_total", "outcome" => "failed").increment(1);
                tracing::warn!(portal = pid, error = %e, "reading the Bitrix24 offline event queue failed; the next round tries again");
            }
        }
    }

    /// Binds the offline events (once per installation and process), then reads and clears
    /// pages until the queue is empty, a page is held back, or [`MAX_PAGES`].
    ///
    /// # Errors
    /// Calling the portal failed.
    async fn drain(&self, portal: &PortalEntry, installation: u64) -> Result<Drained, AccessError> {
        let pid = portal.portal.id;
        if self.bound.lock().get(&pid) != Some(&installation) {
            self.bind(portal).await?;
            self.bound.lock().insert(pid, installation);
        }
        let mut total = Drained::default();
        for _ in 0..MAX_PAGES {
            let pending = self.pending.lock().get(&pid).cloned();
            let page = self.read(portal, pending.as_deref()).await?;
            let Some(process_id) = page.process_id.clone() else {
                break;
            };
            self.pending.lock().insert(pid, process_id.clone());
            let n = page.events.len();
            let done = self.offer(pid, page);
            total.queued += done.queued;
            total.duplicates += done.duplicates;
            if done.held {
                total.held = true;
                tracing::warn!(portal = pid, "the event queue is full: offline events stay at Bitrix24 for the next round");
                break;
            }
            if n > 0 {
                self.clear(portal, &process_id).await?;
            }
            self.pending.lock().remove(&pid);
            if n < PAGE as usize {
                break;
            }
        }
        if total.queued + total.duplicates > 0 {
            tracing::info!(portal = pid, queued = total.queued, duplicates = total.duplicates, "Bitrix24 offline events recovered");
        }
        metrics::counter!("callgate_b24_offline_events_total", "outcome" => "queued").increment(total.queued as u64);
        metrics::counter!("callgate_b24_offline_events_total", "outcome" => "duplicate").increment(total.duplicates as u64);
        Ok(total)
    }

    /// Hands a page's events to the inbox, in order; stops at the first that does not fit.
    fn offer(&self, portal: PortalId, page: OfflinePage) -> Drained {
        let mut d = Drained::default();
        let now_s = (crate::crm::now_ms() / 1000) as i64;
        for mut ev in page.events {
            match classify(&ev.name) {
                EventKind::Install => continue,
                EventKind::ClickToCall if stale_click(ev.ts, now_s) => {
                    tracing::info!(portal, call_id = ev.data.get("CALL_ID").map(String::as_str), "a click-to-call older than its lifetime came from the offline queue: finished without ringing anyone");
                    unplaceable(&mut ev.data);
                }
                _ => {}
            }
            let inbound = InboundEvent { portal, name: ev.name, data: ev.data, ts: ev.ts, handler_url: None };
            match self.inbox.offer(inbound, Instant::now()) {
                Offered::Queued => d.queued += 1,
                Offered::Duplicate => d.duplicates += 1,
                Offered::Full => {
                    d.held = true;
                    return d;
                }
            }
        }
        d
    }

    /// `event.bind` with `event_type=offline` for [`BOUND_EVENTS`], in one batch; already
    /// bound ones answer an error, which is fine.
    async fn bind(&self, portal: &PortalEntry) -> Result<(), AccessError> {
        let cmds: Vec<BatchCommand> = BOUND_EVENTS
            .iter()
            .enumerate()
            .map(|(i, e)| BatchCommand::of(format!("off{i}"), &Bind::offline(*e)))
            .collect();
        let client = self.tokens.client();
        let r = self
            .tokens
            .call(portal, |ep| {
                let cmds = &cmds;
                async move { client.batch(&ep, cmds, false).await }
            })
            .await?;
        tracing::info!(portal = portal.portal.id, bound = r.result.len(), already = r.result_error.len(), "Bitrix24 offline events bound");
        Ok(())
    }

    async fn read(&self, portal: &PortalEntry, process_id: Option<&str>) -> Result<OfflinePage, AccessError> {
        let get = OfflineGet { clear: false, limit: PAGE, process_id: process_id.map(str::to_owned) };
        let client = self.tokens.client();
        let page = self.tokens.call(portal, |ep| {
            let get = &get;
            async move { client.invoke(&ep, get).await }
        });
        page.await
    }

    async fn clear(&self, portal: &PortalEntry, process_id: &str) -> Result<(), AccessError> {
        let clear = OfflineClear { process_id: process_id.to_owned() };
        let client = self.tokens.client();
        self.tokens
            .call(portal, |ep| {
                let clear = &clear;
                async move { client.invoke(&ep, clear).await }
            })
            .await?;
        Ok(())
    }
}

/// A digest of an installation's secret that tells installations apart without keeping it.
fn digest(secret: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    secret.hash(&mut h);
    h.finish()
}

/// A click-to-call older than the time a click waits for its call: the agent clicked while
/// callgate was down and has long given up; ringing the phone now would surprise them.
fn stale_click(ts: Option<i64>, now_s: i64) -> bool {
    ts.is_some_and(|ts| now_s.saturating_sub(ts) > (CLICK_TTL_MS / 1000) as i64)
}

/// Makes a click unplaceable (no number to call): the processor then finishes its Bitrix24 call
/// at once as not placed (603-S), as it does for any click it cannot ring, so the open call does
/// not capture the customer's next one.
fn unplaceable(data: &mut BTreeMap<String, String>) {
    data.remove("PHONE_NUMBER");
    data.remove("PHONE_NUMBER_INTERNATIONAL");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clicks_older_than_their_lifetime_are_stale() {
        assert!(!stale_click(Some(1000), 1000 + 120));
        assert!(stale_click(Some(1000), 1000 + 121));
        assert!(!stale_click(None, 1_000_000), "no time: treated like an online click");
        let mut data: BTreeMap<String, String> =
            [("CALL_ID", "c"), ("USER_ID", "11"), ("PHONE_NUMBER", "8916"), ("PHONE_NUMBER_INTERNATIONAL", "+7916")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
        unplaceable(&mut data);
        assert_eq!(data.keys().map(String::as_str).collect::<Vec<_>>(), ["CALL_ID", "USER_ID"]);
    }
}
