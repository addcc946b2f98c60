//! The worker behind `POST /api/v1/bitrix24/events`, fed by
//! [`EventInbox`](super::events::EventInbox): binds the app's events after an install, records
//! click-to-calls (and starts their origination), finishes the clicks nobody placed, and re-reads
//! changed CRM entities so the personal-manager look-up ([`IndexSync`]) re-checks their numbers.
//! Two tasks: CRM changes queue (bounded; full: dropped and counted) for a task of their own, so
//! a mass edit in the CRM never delays a click-to-call.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::clicks::{Added, ClickToCalls, Originate, PendingClick};
use super::events::{classify, EventKind, InboundEvent, BOUND_EVENTS, CLICK_TTL_MS, QUEUE};
use super::tokens::{AccessError, Tokens};
use super::wake::Workers;
use super::{BatchCommand, ContactOrLead, CrmKind, IndexSync};
use crate::directory::{Directory, PortalEntry};
use crate::phone::normalize_number;
use bitrix24::crm::{is_not_found, Get};
use bitrix24::event::Bind;
use crate::settings::{PortalId, UserId};
use crate::store::{CrmCall, IntentKind, NewIntent, OutboxWrite, StoreHandle};

/// Works the event queue (one task).
pub struct EventProcessor {
    /// Persistence (index rows, click-to-call finishes).
    pub store: StoreHandle,
    /// Portals and the personal-manager index.
    pub directory: Directory,
    /// Endpoints and tokens.
    pub tokens: Arc<Tokens>,
    /// Delivery workers, woken after queuing a finish.
    pub workers: Arc<Workers>,
    /// The personal-manager index service (its look-up applies the precedence).
    pub index: Arc<IndexSync>,
    /// Shared with the outbox rules.
    pub clicks: Arc<ClickToCalls>,
    /// Places click-to-calls; `None`: the agent dials by hand (the click still maps).
    pub originate: Option<Arc<dyn Originate>>,
}

impl EventProcessor {
    /// Runs until cancelled or the inbox is gone. CRM changes (a network read each, and a mass
    /// edit sends one event per entity) go to a second task through a bounded queue, so they
    /// never hold up a click-to-call; originations run as tracked tasks of their own.
    pub async fn run(
        self,
        mut rx: mpsc::Receiver<InboundEvent>,
        tasks: tokio_util::task::TaskTracker,
        cancel: CancellationToken,
    ) {
        let this = Arc::new(self);
        let (crm_tx, crm_rx) = mpsc::channel(QUEUE);
        tasks.spawn(Arc::clone(&this).crm_changes(crm_rx, cancel.clone()));
        let mut sweep = tokio::time::interval(Duration::from_secs(2));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                ev = rx.recv() => match ev {
                    Some(ev) if matches!(classify(&ev.name), EventKind::Crm(..)) => {
                        if crm_tx.try_send(ev).is_err() {
                            counted(EventKind::Crm(CrmKind::Contact, false), "shed");
                            tracing::warn!("CRM change events are arriving faster than they can be read; one was dropped (the next full sync repairs the index)");
                        }
                    }
                    Some(ev) => this.handle(ev, &tasks, &cancel).await,
                    None => return,
                },
                _ = sweep.tick() => this.finish_expired().await,
            }
        }
    }

    /// The CRM change task: one entity read at a time.
    async fn crm_changes(
        self: Arc<Self>,
        mut rx: mpsc::Receiver<InboundEvent>,
        cancel: CancellationToken,
    ) {
        let mut entities = EntityMemory::default();
        loop {
            let ev = tokio::select! {
                () = cancel.cancelled() => return,
                ev = rx.recv() => match ev { Some(ev) => ev, None => return },
            };
            let Some(portal) = self.directory.snapshot().portals.get(&ev.portal).cloned() else {
                continue;
            };
            let kind = classify(&ev.name);
            if let EventKind::Crm(crm, deleted) = kind {
                counted(
                    kind,
                    self.crm_change(&portal, crm, deleted, &ev, &mut entities)
                        .await,
                );
            }
        }
    }

    async fn handle(
        &self,
        ev: InboundEvent,
        tasks: &tokio_util::task::TaskTracker,
        cancel: &CancellationToken,
    ) {
        let Some(portal) = self.directory.snapshot().portals.get(&ev.portal).cloned() else {
            return;
        };
        let kind = classify(&ev.name);
        let outcome = match kind {
            EventKind::Install => self.bind_events(&portal, ev.handler_url.as_deref()).await,
            EventKind::ClickToCall => self.click(&portal, &ev, tasks, cancel).await,
            EventKind::Crm(..) | EventKind::Other => "ignored",
        };
        counted(kind, outcome);
    }

    /// Binds [`BOUND_EVENTS`] to `url` in one batch (already bound ones answer an error,
    /// which is fine).
    async fn bind_events(&self, portal: &PortalEntry, url: Option<&str>) -> &'static str {
        let Some(url) = url else { return "ignored" };
        let cmds: Vec<BatchCommand> = BOUND_EVENTS.iter().enumerate().map(|(i, e)| BatchCommand::of(format!("bind{i}"), &Bind::online(*e, url))).collect();
        let client = self.tokens.client();
        let done = self.tokens.call(portal, |ep| {
            let cmds = &cmds;
            async move { client.batch(&ep, cmds, false).await }
        });
        match done.await {
            Ok(r) => {
                tracing::info!(portal = portal.portal.id, bound = r.result.len(), already = r.result_error.len(), %url, "Bitrix24 events bound");
                "bound"
            }
            Err(e) => {
                tracing::warn!(portal = portal.portal.id, error = %e, "binding the Bitrix24 events failed; bind them by hand or reinstall");
                "failed"
            }
        }
    }

    /// Records the click and starts its origination (a task of its own: ringing the agent takes
    /// up to the answer timeout).
    async fn click(
        &self,
        portal: &Arc<PortalEntry>,
        ev: &InboundEvent,
        tasks: &tokio_util::task::TaskTracker,
        cancel: &CancellationToken,
    ) -> &'static str {
        let pid = portal.portal.id;
        let text = |k: &str| ev.data.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let Some(call_id) = text("CALL_ID") else {
            return "malformed";
        };
        let Some(user) = text("USER_ID").and_then(|u| u.parse::<UserId>().ok()) else {
            return "malformed";
        };
        if !portal.portal.settings.active {
            tracing::info!(
                portal = pid,
                "click-to-call ignored: the integration is not active"
            );
            return "inactive";
        }
        let number = text("PHONE_NUMBER_INTERNATIONAL")
            .or(text("PHONE_NUMBER"))
            .and_then(normalize_number);
        let Some((number, mapping)) = number.zip(portal.by_user.get(&user)) else {
            tracing::warn!(portal = pid, user, "click-to-call cannot be placed: no extension mapped to the user, or no usable number; finishing it");
            self.finish_clicks(vec![unplaced(pid, call_id, user)]).await;
            return "unplaceable";
        };
        let click = PendingClick {
            portal: pid,
            call_id: call_id.to_owned(),
            user,
            extension: mapping.extension.clone(),
            number: number.as_u64(),
            expires_at_ms: super::now_ms() + CLICK_TTL_MS,
            unplaced_status: "603-S".into(),
        };
        match self.clicks.add(click.clone()) {
            Added::Pending => {}
            Added::Duplicate => return "duplicate",
            Added::Full => {
                tracing::warn!(
                    portal = pid,
                    user,
                    "click-to-call refused: too many clicks are pending; finishing it"
                );
                self.finish_clicks(vec![unplaced(pid, call_id, user)]).await;
                return "shed";
            }
        }
        tracing::info!(portal = pid, user, extension = %click.extension, "click-to-call pending");
        if let Some(o) = &self.originate {
            let (o, portal, clicks, cancel) = (
                Arc::clone(o),
                Arc::clone(portal),
                Arc::clone(&self.clicks),
                cancel.clone(),
            );
            tasks.spawn(async move {
                let outcome = tokio::select! {
                    r = o.originate(&portal, &click) => r,
                    () = cancel.cancelled() => Err("603-S".to_owned()),
                };
                if let Err(status) = outcome {
                    clicks.set_unplaced_status(click.portal, &click.call_id, &status);
                }
            });
        }
        "pending"
    }

    /// Finishes expired clicks (the agent never placed the call).
    async fn finish_expired(&self) {
        let gone = self.clicks.take_expired(super::now_ms());
        if !gone.is_empty() {
            metrics::counter!("callgate_click_to_call_expired_total").increment(gone.len() as u64);
            self.finish_clicks(gone).await;
        }
    }

    async fn finish_clicks(&self, clicks: Vec<PendingClick>) {
        let now = super::now_ms();
        let snap = self.directory.snapshot();
        let mut w = OutboxWrite::default();
        for c in &clicks {
            let chat = snap
                .portals
                .get(&c.portal)
                .is_none_or(|p| p.portal.settings.other.chat_message);
            let key = format!("click-{}", c.call_id);
            let start = json!({ "kind": "outgoing", "customer": c.number.to_string(), "responsible": c.user, "click_to_call": true, "started_at": now });
            w.calls.push(CrmCall {
                portal: c.portal,
                call_key: key.clone(),
                external_call_id: String::new(),
                b24_call_id: Some(c.call_id.clone()),
                finished: false,
                start,
            });
            let payload = json!({ "USER_ID": c.user, "DURATION": 0, "STATUS_CODE": c.unplaced_status, "ADD_TO_CHAT": u8::from(chat), "FAILED_REASON": "click_to_call_not_placed" });
            w.intents.push(NewIntent {
                portal: c.portal,
                call_key: key,
                kind: IntentKind::Finish,
                payload,
                not_before_ms: now,
            });
        }
        let written = self.store.run(move |s| s.outbox_write(&w, now)).await;
        match written {
            Ok(()) => clicks.iter().for_each(|c| self.workers.wake(c.portal)),
            Err(e) => {
                tracing::error!(error = %e, calls = clicks.len(), "queuing the finish of unplaced click-to-calls failed")
            }
        }
    }

    /// A changed entity: its numbers, now and as last seen, are looked up again (the look-up
    /// applies contact → company → lead precedence and drops rows nobody claims any more).
    async fn crm_change(
        &self,
        portal: &PortalEntry,
        kind: CrmKind,
        deleted: bool,
        ev: &InboundEvent,
        mem: &mut EntityMemory,
    ) -> &'static str {
        let pid = portal.portal.id;
        let Some(id) = ev
            .data
            .get("FIELDS[ID]")
            .and_then(|v| v.trim().parse::<u64>().ok())
        else {
            return "malformed";
        };
        let now: Vec<u64> = if deleted {
            Vec::new()
        } else {
            match self.fetch(portal, kind, id).await {
                Ok(found) => found
                    .map(|e| {
                        e.phones
                            .iter()
                            .filter_map(|p| normalize_number(p))
                            .map(|n| n.as_u64())
                            .collect()
                    })
                    .unwrap_or_default(),
                Err(e) => {
                    tracing::warn!(portal = pid, ?kind, id, error = %e, "re-reading a changed CRM entity failed; the index keeps its rows");
                    return "failed";
                }
            }
        };
        let mut numbers = mem.replace(pid, kind, id, now.clone());
        numbers.extend(now);
        numbers.sort_unstable();
        numbers.dedup();
        let queued = self.index.refresh_numbers(pid, &numbers);
        tracing::debug!(
            portal = pid,
            ?kind,
            id,
            numbers = numbers.len(),
            queued,
            "CRM change: numbers queued for a fresh look-up"
        );
        "refreshed"
    }

    /// `crm.{kind}.get`; `None` when Bitrix24 says it does not exist. Transient failures are
    /// retried twice.
    async fn fetch(
        &self,
        portal: &PortalEntry,
        kind: CrmKind,
        id: u64,
    ) -> Result<Option<ContactOrLead>, AccessError> {
        let client = self.tokens.client();
        let mut attempt = 0;
        loop {
            let get = Get { kind: kind.entity(), id };
            let got = self.tokens.call(portal, |ep| async move { client.invoke(&ep, &get).await });
            match got.await {
                Ok(entity) => return Ok(Some(entity)),
                Err(AccessError::Crm(e)) if is_not_found(&e) => return Ok(None),
                Err(AccessError::Crm(e)) if e.retryable() && attempt < 2 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_secs(attempt)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Numbers each entity had when last seen through an event, so that numbers it loses (or all
/// of them, when it is deleted: Bitrix24 sends only the id) are looked up again. Bounded:
/// forgotten wholesale past 100 000 entities (a lost number then lingers until the next sync).
#[derive(Debug, Default)]
struct EntityMemory {
    numbers: HashMap<(PortalId, CrmKind, u64), Vec<u64>>,
}

impl EntityMemory {
    /// Records `numbers` for the entity and returns what it had before.
    fn replace(&mut self, portal: PortalId, kind: CrmKind, id: u64, numbers: Vec<u64>) -> Vec<u64> {
        if self.numbers.len() >= 100_000 {
            self.numbers.clear();
        }
        if numbers.is_empty() {
            return self.numbers.remove(&(portal, kind, id)).unwrap_or_default();
        }
        self.numbers
            .insert((portal, kind, id), numbers)
            .unwrap_or_default()
    }
}

fn unplaced(portal: PortalId, call_id: &str, user: UserId) -> PendingClick {
    PendingClick {
        portal,
        call_id: call_id.to_owned(),
        user,
        extension: String::new(),
        number: 0,
        expires_at_ms: 0,
        unplaced_status: "603-S".into(),
    }
}

fn counted(kind: EventKind, outcome: &'static str) {
    metrics::counter!("callgate_b24_events_processed_total", "kind" => kind_label(kind), "outcome" => outcome).increment(1);
}

fn kind_label(k: EventKind) -> &'static str {
    match k {
        EventKind::Install => "install",
        EventKind::ClickToCall => "click_to_call",
        EventKind::Crm(..) => "crm",
        EventKind::Other => "other",
    }
}

