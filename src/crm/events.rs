//! Inbound Bitrix24 events (bitrix24-rest.md §6, §7.5; DESIGN.md §5, click-to-call row).
//!
//! Path of an event: `http::events` parses and authenticates it, then [`EventInbox::offer`]
//! drops repeats ([`Dedup`]: same event and key within 5 minutes) and queues it on a bounded
//! channel (full: the HTTP side answers 503, counted); the [`EventProcessor`] task works the
//! queue: binds the app's events after an install, records click-to-calls, re-reads changed
//! CRM entities and hands their numbers to the personal-manager look-up ([`IndexSync`]).
//!
//! Click-to-call: Bitrix24 registered the call before firing `ONEXTERNALCALLSTART`. The event
//! becomes a [`PendingClick`] in the shared [`ClickToCalls`] map (2 minutes); the outbox rules
//! take it when the tracker reports that agent's outgoing call to that number, so the call is
//! not registered again and show/hide/finish use the event's CALL_ID. A click never placed is
//! finished when it expires (an open call would capture the next one, §11.1). Origination itself
//! goes through the optional [`Originate`] port.
//!
//! Installation (`ONAPPINSTALL`) is handled synchronously by [`install`]: the tokens are checked
//! against the portal (`app.info` on the `client_endpoint`, which must be on the portal's domain)
//! before they are stored, since anyone can POST an install.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::client::BatchCommand;
use super::params::Params;
use super::tokens::{AccessError, Tokens};
use super::types::ContactOrLead;
use super::wake::Workers;
use super::{CrmError, CrmKind, IndexSync};
use crate::config::Secret;
use crate::routing::number::normalize_number;
use crate::routing::{Directory, PortalEntry};
use crate::settings::{normalize_domain, Auth, PortalId, UserId};
use crate::store::{CrmCall, IntentKind, NewIntent, OutboxWrite, PortalTokens, StoreHandle};

/// Events queued for processing at most (then the endpoint answers 503).
pub const QUEUE: usize = 1024;
/// Repeats of an event within this window are ignored.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(300);
/// How long a click-to-call waits for the agent's outgoing call.
pub const CLICK_TTL_MS: u64 = 120_000;
/// Keys remembered by the de-duplication at most.
const DEDUP_CAP: usize = 100_000;
/// Events the app binds on install.
pub const BOUND_EVENTS: &[&str] = &[
    "ONEXTERNALCALLSTART",
    "ONCRMCONTACTADD",
    "ONCRMCONTACTUPDATE",
    "ONCRMCONTACTDELETE",
    "ONCRMCOMPANYADD",
    "ONCRMCOMPANYUPDATE",
    "ONCRMCOMPANYDELETE",
    "ONCRMLEADADD",
    "ONCRMLEADUPDATE",
    "ONCRMLEADDELETE",
];

/// An authenticated event on its way to the processor. `data` keys are the PHP bracket paths
/// inside `data[...]`: `data[FIELDS][ID]` is `FIELDS[ID]`, `data[CALL_ID]` is `CALL_ID`.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundEvent {
    /// The portal it proved to come from.
    pub portal: PortalId,
    /// Upper-cased event name.
    pub name: String,
    /// `data[...]`, all strings.
    pub data: BTreeMap<String, String>,
    /// `ts` (Bitrix24's unix time).
    pub ts: Option<i64>,
    /// For `ONAPPINSTALL`: the URL the install reached, to bind the app's events to.
    pub handler_url: Option<String>,
}

/// What an event asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// `ONAPPINSTALL`.
    Install,
    /// `ONEXTERNALCALLSTART`.
    ClickToCall,
    /// `ONCRM{CONTACT,COMPANY,LEAD}{ADD,UPDATE,DELETE}`; `true` for a delete.
    Crm(CrmKind, bool),
    /// Anything else: acknowledged, not processed.
    Other,
}

/// Classifies an (upper-case) event name.
pub fn classify(name: &str) -> EventKind {
    match name {
        "ONAPPINSTALL" => return EventKind::Install,
        "ONEXTERNALCALLSTART" => return EventKind::ClickToCall,
        _ => {}
    }
    let Some(rest) = name.strip_prefix("ONCRM") else { return EventKind::Other };
    for (action, deleted) in [("ADD", false), ("UPDATE", false), ("DELETE", true)] {
        if let Some(kind) = rest.strip_suffix(action).and_then(CrmKind::parse) {
            return EventKind::Crm(kind, deleted);
        }
    }
    EventKind::Other
}

fn get_method(kind: CrmKind) -> &'static str {
    match kind {
        CrmKind::Contact => "crm.contact.get",
        CrmKind::Company => "crm.company.get",
        CrmKind::Lead => "crm.lead.get",
    }
}

/// The idempotency key of an event: CALL_ID for call events, entity id + `ts` for CRM events.
pub fn dedup_key(name: &str, data: &BTreeMap<String, String>, ts: Option<i64>) -> Option<String> {
    match classify(name) {
        EventKind::ClickToCall => data.get("CALL_ID").map(|id| format!("{name} {id}")),
        EventKind::Crm(..) => data.get("FIELDS[ID]").map(|id| format!("{name} {id} {}", ts.unwrap_or_default())),
        EventKind::Install | EventKind::Other => None,
    }
}

/// Keys seen within the window (pure: `now` is passed in). Bounded: past [`DEDUP_CAP`] keys the
/// oldest are forgotten first.
#[derive(Debug)]
pub struct Dedup {
    window: Duration,
    seen: HashMap<(PortalId, String), Instant>,
    /// Insertion order, to expire from the front.
    order: VecDeque<(Instant, (PortalId, String))>,
}

impl Dedup {
    /// Repeats within `window` are duplicates.
    pub fn new(window: Duration) -> Self {
        Self { window, seen: HashMap::new(), order: VecDeque::new() }
    }

    /// True (and remembered) when `key` was not seen within the window.
    pub fn first(&mut self, portal: PortalId, key: &str, now: Instant) -> bool {
        self.expire(now);
        let k = (portal, key.to_owned());
        if self.seen.get(&k).is_some_and(|at| now.duration_since(*at) < self.window) {
            return false;
        }
        self.seen.insert(k.clone(), now);
        self.order.push_back((now, k));
        true
    }

    /// Forgets `key` (its event could not be queued: a redelivery must not count as a repeat).
    pub fn forget(&mut self, portal: PortalId, key: &str) {
        self.seen.remove(&(portal, key.to_owned()));
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.order.front() {
            if now.duration_since(*at) < self.window && self.order.len() < DEDUP_CAP {
                break;
            }
            let Some((at, k)) = self.order.pop_front() else { break };
            if self.seen.get(&k) == Some(&at) {
                self.seen.remove(&k);
            }
        }
    }
}

/// What [`EventInbox::offer`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    /// Queued for processing.
    Queued,
    /// A repeat within the window: ignored.
    Duplicate,
    /// The queue is full: shed.
    Full,
}

/// The sending half of the event queue plus the de-duplication (shared by HTTP handlers).
#[derive(Debug)]
pub struct EventInbox {
    tx: mpsc::Sender<InboundEvent>,
    /// Short critical sections, never across an await.
    dedup: Mutex<Dedup>,
}

impl EventInbox {
    /// An inbox of `capacity` events and the receiving half for [`EventProcessor::run`].
    pub fn new(capacity: usize) -> (Arc<Self>, mpsc::Receiver<InboundEvent>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Arc::new(Self { tx, dedup: Mutex::new(Dedup::new(DEDUP_WINDOW)) }), rx)
    }

    /// De-duplicates and queues `ev` without waiting.
    pub fn offer(&self, ev: InboundEvent, now: Instant) -> Offered {
        let key = dedup_key(&ev.name, &ev.data, ev.ts);
        let portal = ev.portal;
        if let Some(k) = &key {
            if !self.dedup.lock().first(portal, k, now) {
                return Offered::Duplicate;
            }
        }
        match self.tx.try_send(ev) {
            Ok(()) => Offered::Queued,
            Err(_) => {
                if let Some(k) = &key {
                    self.dedup.lock().forget(portal, k);
                }
                Offered::Full
            }
        }
    }
}

/// What the HTTP endpoint needs from the CRM side (handed to the router as an extension).
#[derive(Clone)]
pub struct EventsHub {
    /// The queue to the processor.
    pub inbox: Arc<EventInbox>,
    /// Endpoints and tokens (installations).
    pub tokens: Arc<Tokens>,
}

/// A click-to-call waiting for the agent's outgoing call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingClick {
    /// The portal.
    pub portal: PortalId,
    /// Bitrix24's CALL_ID (already registered).
    pub call_id: String,
    /// Who clicked.
    pub user: UserId,
    /// Their extension.
    pub extension: String,
    /// The normalised number to call.
    pub number: u64,
    /// Unix ms after which the click is finished as not placed.
    pub expires_at_ms: u64,
    /// STATUS_CODE of that finish (`603-S` unless origination learnt better).
    pub unplaced_status: String,
}

/// Pending click-to-calls, shared by the event processor (adds, expires) and the outbox rules
/// (take the one an outgoing call matches). A handful at a time: a vector under a short lock.
#[derive(Debug, Default)]
pub struct ClickToCalls {
    pending: Mutex<Vec<PendingClick>>,
}

impl ClickToCalls {
    /// Adds `click`; false when its CALL_ID is already pending.
    pub fn add(&self, click: PendingClick) -> bool {
        let mut p = self.pending.lock();
        if p.iter().any(|c| c.portal == click.portal && c.call_id == click.call_id) {
            return false;
        }
        p.push(click);
        true
    }

    /// Takes the oldest live click of `user` to `number` in `portal`.
    pub fn take(&self, portal: PortalId, user: UserId, number: u64, now_ms: u64) -> Option<PendingClick> {
        let mut p = self.pending.lock();
        let i = p.iter().position(|c| c.portal == portal && c.user == user && c.number == number && c.expires_at_ms > now_ms)?;
        Some(p.remove(i))
    }

    /// Removes and returns the clicks expired at `now_ms`.
    pub fn take_expired(&self, now_ms: u64) -> Vec<PendingClick> {
        let mut p = self.pending.lock();
        let (gone, live): (Vec<_>, Vec<_>) = p.drain(..).partition(|c| c.expires_at_ms <= now_ms);
        *p = live;
        gone
    }

    /// Records how origination failed (the STATUS_CODE of the finish at expiry).
    pub fn set_unplaced_status(&self, portal: PortalId, call_id: &str, status: &str) {
        if let Some(c) = self.pending.lock().iter_mut().find(|c| c.portal == portal && c.call_id == call_id) {
            status.clone_into(&mut c.unplaced_status);
        }
    }

    /// Clicks pending.
    pub fn len(&self) -> usize {
        self.pending.lock().len()
    }

    /// True when none is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Future of an origination.
pub type OriginateFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Places a click-to-call: rings the agent, then has the agent's phone call `number` via the PBX.
pub trait Originate: Send + Sync + 'static {
    /// Originates `click` for `portal`; `Err` carries a SIP status code (`486`, `603`, `480`)
    /// or a reason.
    fn originate<'a>(&'a self, portal: &'a PortalEntry, click: &'a PendingClick) -> OriginateFuture<'a>;
}

/// Why an install was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InstallError {
    /// A required `auth[...]` field is missing.
    #[error("auth[{0}] is required")]
    Missing(&'static str),
    /// The tokens do not belong to this portal.
    #[error("the installation does not match the portal: {0}")]
    Mismatch(&'static str),
    /// The portal could not be asked (network, rate limit).
    #[error("the portal could not verify the installation: {0}")]
    Unverified(CrmError),
    /// The store failed.
    #[error("storing the installation failed: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// `ONAPPINSTALL` for an OAuth `portal`: checks that the `client_endpoint` is on the portal's
/// domain and that its access token works there for this `member_id` (`app.info`), then stores
/// the installation (replacing any earlier one) and puts its tokens in force.
///
/// # Errors
/// [`InstallError`].
pub async fn install(tokens: &Tokens, portal: &PortalEntry, auth: &BTreeMap<String, String>) -> Result<(), InstallError> {
    let field = |k: &'static str| auth.get(k).map(|v| v.trim()).filter(|v| !v.is_empty()).ok_or(InstallError::Missing(k));
    let (member_id, app_token, endpoint) = (field("member_id")?, field("application_token")?, field("client_endpoint")?);
    let (access, refresh) = (field("access_token")?, field("refresh_token")?);
    if normalize_domain(endpoint).ok().as_deref() != Some(portal.portal.domain.as_str()) {
        return Err(InstallError::Mismatch("client_endpoint is not on the portal's domain"));
    }
    let ep = super::Endpoint::oauth(endpoint, Secret::new(access)).map_err(|_| InstallError::Mismatch("client_endpoint is not a usable URL"))?;
    let info = tokio::time::timeout(Duration::from_secs(10), tokens.client().call(&ep, "app.info", &Params::new())).await;
    let info = info.map_err(|_| InstallError::Unverified(CrmError::Network { message: "app.info timed out".into() }))?;
    match info {
        Ok(r) if r.result["member_id"].as_str().is_none_or(|m| m == member_id) => {}
        Ok(_) => return Err(InstallError::Mismatch("member_id differs from the portal's")),
        Err(e) if e.retryable() => return Err(InstallError::Unverified(e)),
        Err(_) => return Err(InstallError::Mismatch("the access token does not work on the portal")),
    }
    let now_s = super::now_ms() / 1000;
    let expires = auth.get("expires").and_then(|v| v.parse().ok());
    let expires_in = auth.get("expires_in").and_then(|v| v.parse::<u64>().ok()).unwrap_or(3600);
    let t = PortalTokens {
        portal: portal.portal.id,
        member_id: member_id.to_owned(),
        application_token: Secret::new(app_token),
        client_endpoint: endpoint.to_owned(),
        access_token: Secret::new(access),
        refresh_token: Secret::new(refresh),
        expires_at_unix: expires.unwrap_or(now_s + expires_in),
    };
    tokens.install(t).await?;
    tracing::info!(portal = portal.portal.id, "Bitrix24 app installed: tokens stored");
    Ok(())
}

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
    /// Runs until cancelled or the inbox is gone. Originations run as tracked tasks of their own.
    pub async fn run(self, mut rx: mpsc::Receiver<InboundEvent>, tasks: tokio_util::task::TaskTracker, cancel: CancellationToken) {
        let this = Arc::new(self);
        let mut sweep = tokio::time::interval(Duration::from_secs(2));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut entities = EntityMemory::default();
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                ev = rx.recv() => match ev {
                    Some(ev) => Arc::clone(&this).handle(ev, &mut entities, &tasks).await,
                    None => return,
                },
                _ = sweep.tick() => this.finish_expired().await,
            }
        }
    }

    async fn handle(self: Arc<Self>, ev: InboundEvent, entities: &mut EntityMemory, tasks: &tokio_util::task::TaskTracker) {
        let Some(portal) = self.directory.snapshot().portals.get(&ev.portal).cloned() else { return };
        let kind = classify(&ev.name);
        let outcome = match kind {
            EventKind::Install => self.bind_events(&portal, ev.handler_url.as_deref()).await,
            EventKind::ClickToCall => self.click(&portal, &ev, tasks).await,
            EventKind::Crm(kind, deleted) => self.crm_change(&portal, kind, deleted, &ev, entities).await,
            EventKind::Other => "ignored",
        };
        metrics::counter!("callgate_b24_events_processed_total", "kind" => kind_label(kind), "outcome" => outcome).increment(1);
    }

    /// Binds [`BOUND_EVENTS`] to `url` in one batch (already bound ones answer an error,
    /// which is fine).
    async fn bind_events(&self, portal: &PortalEntry, url: Option<&str>) -> &'static str {
        let Some(url) = url else { return "ignored" };
        let cmds: Vec<BatchCommand> =
            BOUND_EVENTS.iter().enumerate().map(|(i, e)| BatchCommand::new(format!("bind{i}"), "event.bind", Params::new().set("event", *e).set("handler", url))).collect();
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

    async fn click(&self, portal: &Arc<PortalEntry>, ev: &InboundEvent, tasks: &tokio_util::task::TaskTracker) -> &'static str {
        let pid = portal.portal.id;
        let text = |k: &str| ev.data.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let Some(call_id) = text("CALL_ID") else { return "malformed" };
        let Some(user) = text("USER_ID").and_then(|u| u.parse::<UserId>().ok()) else { return "malformed" };
        if !portal.portal.settings.active {
            tracing::info!(portal = pid, "click-to-call ignored: the integration is not active");
            return "inactive";
        }
        let number = text("PHONE_NUMBER_INTERNATIONAL").or(text("PHONE_NUMBER")).and_then(normalize_number);
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
        if !self.clicks.add(click.clone()) {
            return "duplicate";
        }
        tracing::info!(portal = pid, user, extension = %click.extension, "click-to-call pending");
        if let Some(o) = &self.originate {
            let (o, portal, clicks) = (Arc::clone(o), Arc::clone(portal), Arc::clone(&self.clicks));
            tasks.spawn(async move {
                if let Err(status) = o.originate(&portal, &click).await {
                    tracing::warn!(portal = click.portal, extension = %click.extension, %status, "click-to-call origination failed");
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
            let chat = snap.portals.get(&c.portal).is_none_or(|p| p.portal.settings.other.chat_message);
            let key = format!("click-{}", c.call_id);
            let start = json!({ "kind": "outgoing", "customer": c.number.to_string(), "responsible": c.user, "click_to_call": true, "started_at": now });
            w.calls.push(CrmCall { portal: c.portal, call_key: key.clone(), external_call_id: String::new(), b24_call_id: Some(c.call_id.clone()), finished: false, start });
            let payload = json!({ "USER_ID": c.user, "DURATION": 0, "STATUS_CODE": c.unplaced_status, "ADD_TO_CHAT": u8::from(chat), "FAILED_REASON": "click_to_call_not_placed" });
            w.intents.push(NewIntent { portal: c.portal, call_key: key, kind: IntentKind::Finish, payload, not_before_ms: now });
        }
        let written = self.store.run(move |s| s.outbox_write(&w, now)).await;
        match written {
            Ok(()) => clicks.iter().for_each(|c| self.workers.wake(c.portal)),
            Err(e) => tracing::error!(error = %e, calls = clicks.len(), "queuing the finish of unplaced click-to-calls failed"),
        }
    }

    /// A changed entity: its numbers, now and as last seen, are looked up again (the look-up
    /// applies contact → company → lead precedence and drops rows nobody claims any more).
    async fn crm_change(&self, portal: &PortalEntry, kind: CrmKind, deleted: bool, ev: &InboundEvent, mem: &mut EntityMemory) -> &'static str {
        let pid = portal.portal.id;
        let Some(id) = ev.data.get("FIELDS[ID]").and_then(|v| v.trim().parse::<u64>().ok()) else { return "malformed" };
        let now: Vec<u64> = if deleted {
            Vec::new()
        } else {
            match self.fetch(portal, kind, id).await {
                Ok(found) => found.map(|e| e.phones.iter().filter_map(|p| normalize_number(p)).map(|n| n.as_u64()).collect()).unwrap_or_default(),
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
        tracing::debug!(portal = pid, ?kind, id, numbers = numbers.len(), queued, "CRM change: numbers queued for a fresh look-up");
        "refreshed"
    }

    /// `crm.{kind}.get`; `None` when Bitrix24 says it does not exist. Transient failures are
    /// retried twice.
    async fn fetch(&self, portal: &PortalEntry, kind: CrmKind, id: u64) -> Result<Option<ContactOrLead>, AccessError> {
        let client = self.tokens.client();
        let mut attempt = 0;
        loop {
            let got = self.tokens.call(portal, |ep| async move { client.call(&ep, get_method(kind), &Params::new().set("id", id)).await });
            match got.await {
                Ok(r) => return r.decode::<ContactOrLead>().map(Some).map_err(AccessError::from),
                Err(AccessError::Crm(CrmError::Api { description, .. })) if description.trim().eq_ignore_ascii_case("Not found") => return Ok(None),
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
        self.numbers.insert((portal, kind, id), numbers).unwrap_or_default()
    }
}

fn unplaced(portal: PortalId, call_id: &str, user: UserId) -> PendingClick {
    PendingClick { portal, call_id: call_id.to_owned(), user, extension: String::new(), number: 0, expires_at_ms: 0, unplaced_status: "603-S".into() }
}

fn kind_label(k: EventKind) -> &'static str {
    match k {
        EventKind::Install => "install",
        EventKind::ClickToCall => "click_to_call",
        EventKind::Crm(..) => "crm",
        EventKind::Other => "other",
    }
}

/// Whether `portal` is configured as an OAuth app.
pub fn is_oauth(portal: &PortalEntry) -> bool {
    matches!(portal.portal.auth, Some(Auth::OAuth { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn events_are_classified_by_name() {
        assert_eq!(classify("ONAPPINSTALL"), EventKind::Install);
        assert_eq!(classify("ONEXTERNALCALLSTART"), EventKind::ClickToCall);
        assert_eq!(classify("ONCRMCONTACTUPDATE"), EventKind::Crm(CrmKind::Contact, false));
        assert_eq!(classify("ONCRMCOMPANYADD"), EventKind::Crm(CrmKind::Company, false));
        assert_eq!(classify("ONCRMLEADDELETE"), EventKind::Crm(CrmKind::Lead, true));
        assert_eq!(classify("ONCRMDEALUPDATE"), EventKind::Other);
        assert_eq!(classify("ONCRMCONTACT"), EventKind::Other);
    }

    #[test]
    fn keys_are_call_id_or_entity_and_ts() {
        let click = data(&[("CALL_ID", "externalCall.1"), ("USER_ID", "11")]);
        assert_eq!(dedup_key("ONEXTERNALCALLSTART", &click, Some(5)).as_deref(), Some("ONEXTERNALCALLSTART externalCall.1"));
        let crm = data(&[("FIELDS[ID]", "1001")]);
        assert_eq!(dedup_key("ONCRMCONTACTUPDATE", &crm, Some(7)).as_deref(), Some("ONCRMCONTACTUPDATE 1001 7"));
        assert_ne!(dedup_key("ONCRMCONTACTUPDATE", &crm, Some(8)), dedup_key("ONCRMCONTACTUPDATE", &crm, Some(7)));
        assert_eq!(dedup_key("ONAPPINSTALL", &crm, Some(7)), None);
    }

    #[test]
    fn repeats_within_the_window_are_duplicates_and_forgotten_keys_are_not() {
        let t0 = Instant::now();
        let mut d = Dedup::new(Duration::from_secs(300));
        assert!(d.first(1, "k", t0));
        assert!(!d.first(1, "k", t0 + Duration::from_secs(299)));
        assert!(d.first(2, "k", t0), "per portal");
        assert!(d.first(1, "k", t0 + Duration::from_secs(301)), "the window passed");
        d.forget(1, "k");
        assert!(d.first(1, "k", t0 + Duration::from_secs(302)));
        assert!(d.seen.len() <= 2 && d.order.len() <= 3);
    }

    #[test]
    fn a_full_inbox_sheds_and_forgets_the_key() {
        let (inbox, mut rx) = EventInbox::new(1);
        let ev = |id: &str| InboundEvent { portal: 1, name: "ONEXTERNALCALLSTART".into(), data: data(&[("CALL_ID", id)]), ts: None, handler_url: None };
        let now = Instant::now();
        assert_eq!(inbox.offer(ev("a"), now), Offered::Queued);
        assert_eq!(inbox.offer(ev("a"), now), Offered::Duplicate);
        assert_eq!(inbox.offer(ev("b"), now), Offered::Full);
        rx.try_recv().unwrap();
        assert_eq!(inbox.offer(ev("b"), now), Offered::Queued, "a shed event is not a repeat");
    }

    #[test]
    fn clicks_match_by_portal_user_and_number_until_they_expire() {
        let c = ClickToCalls::default();
        let click = |id: &str, at| PendingClick { portal: 1, call_id: id.into(), user: 11, extension: "101".into(), number: 79_161_234_567, expires_at_ms: at, unplaced_status: "603-S".into() };
        assert!(c.add(click("A", 1000)));
        assert!(!c.add(click("A", 1000)), "one per CALL_ID");
        assert!(c.add(click("B", 500)));
        assert_eq!(c.take(2, 11, 79_161_234_567, 0), None);
        assert_eq!(c.take(1, 12, 79_161_234_567, 0), None);
        assert_eq!(c.take(1, 11, 79_161_234_567, 600).map(|p| p.call_id), Some("A".into()), "B expired");
        c.set_unplaced_status(1, "B", "486");
        let gone = c.take_expired(600);
        assert_eq!(gone.iter().map(|p| (p.call_id.as_str(), p.unplaced_status.as_str())).collect::<Vec<_>>(), [("B", "486")]);
        assert!(c.is_empty());
    }
}
