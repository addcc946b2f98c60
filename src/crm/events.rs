//! Inbound Bitrix24 events (bitrix24-rest.md §6, §7.5; DESIGN.md §5, click-to-call row).
//!
//! Path of an event: `http::events` parses and authenticates it, then [`EventInbox::offer`]
//! drops repeats ([`Dedup`]: same event and key within 5 minutes) and queues it on a bounded
//! channel (full: the HTTP side answers 503, counted); the [`EventProcessor`] task works the
//! queue: binds the app's events after an install, records click-to-calls, re-reads changed
//! CRM entities and hands their numbers to the personal-manager look-up ([`IndexSync`](super::IndexSync)).
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
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::params::Params;
use super::tokens::Tokens;
use super::{CrmError, CrmKind};
use crate::config::Secret;
use crate::routing::PortalEntry;
use crate::settings::{normalize_domain, Auth, PortalId};
use crate::store::PortalTokens;

pub use super::clicks::{ClickToCalls, Originate, OriginateFuture, PendingClick};
pub use super::processor::EventProcessor;

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
    let Some(rest) = name.strip_prefix("ONCRM") else {
        return EventKind::Other;
    };
    for (action, deleted) in [("ADD", false), ("UPDATE", false), ("DELETE", true)] {
        if let Some(kind) = rest.strip_suffix(action).and_then(CrmKind::parse) {
            return EventKind::Crm(kind, deleted);
        }
    }
    EventKind::Other
}

/// The idempotency key of an event: CALL_ID for call events, entity id + `ts` for CRM events.
pub fn dedup_key(name: &str, data: &BTreeMap<String, String>, ts: Option<i64>) -> Option<String> {
    match classify(name) {
        EventKind::ClickToCall => data.get("CALL_ID").map(|id| format!("{name} {id}")),
        EventKind::Crm(..) => data
            .get("FIELDS[ID]")
            .map(|id| format!("{name} {id} {}", ts.unwrap_or_default())),
        EventKind::Install | EventKind::Other => None,
    }
}

/// Keys seen within the window (pure: `now` is passed in). Bounded: past `DEDUP_CAP` keys the
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
        Self {
            window,
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// True (and remembered) when `key` was not seen within the window.
    pub fn first(&mut self, portal: PortalId, key: &str, now: Instant) -> bool {
        self.expire(now);
        let k = (portal, key.to_owned());
        if self
            .seen
            .get(&k)
            .is_some_and(|at| now.duration_since(*at) < self.window)
        {
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
            let Some((at, k)) = self.order.pop_front() else {
                break;
            };
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
        (
            Arc::new(Self {
                tx,
                dedup: Mutex::new(Dedup::new(DEDUP_WINDOW)),
            }),
            rx,
        )
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
pub async fn install(
    tokens: &Tokens,
    portal: &PortalEntry,
    auth: &BTreeMap<String, String>,
) -> Result<(), InstallError> {
    let field = |k: &'static str| {
        auth.get(k)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
            .ok_or(InstallError::Missing(k))
    };
    let (member_id, app_token, endpoint) = (
        field("member_id")?,
        field("application_token")?,
        field("client_endpoint")?,
    );
    let (access, refresh) = (field("access_token")?, field("refresh_token")?);
    if normalize_domain(endpoint).ok().as_deref() != Some(portal.portal.domain.as_str()) {
        return Err(InstallError::Mismatch(
            "client_endpoint is not on the portal's domain",
        ));
    }
    let ep = super::Endpoint::oauth(endpoint, Secret::new(access))
        .map_err(|_| InstallError::Mismatch("client_endpoint is not a usable URL"))?;
    let info = tokio::time::timeout(
        Duration::from_secs(10),
        tokens.client().call(&ep, "app.info", &Params::new()),
    )
    .await;
    let info = info.map_err(|_| {
        InstallError::Unverified(CrmError::Network {
            message: "app.info timed out".into(),
        })
    })?;
    match info {
        Ok(r)
            if r.result["member_id"]
                .as_str()
                .is_none_or(|m| m == member_id) => {}
        Ok(_) => {
            return Err(InstallError::Mismatch(
                "member_id differs from the portal's",
            ))
        }
        Err(e) if e.retryable() => return Err(InstallError::Unverified(e)),
        Err(_) => {
            return Err(InstallError::Mismatch(
                "the access token does not work on the portal",
            ))
        }
    }
    let expires_at_unix = install_expiry(
        auth.get("expires").map(String::as_str),
        auth.get("expires_in").map(String::as_str),
        super::now_ms() / 1000,
    );
    let t = PortalTokens {
        portal: portal.portal.id,
        member_id: member_id.to_owned(),
        application_token: Secret::new(app_token),
        client_endpoint: endpoint.to_owned(),
        access_token: Secret::new(access),
        refresh_token: Secret::new(refresh),
        expires_at_unix,
    };
    tokens.install(t).await?;
    tracing::info!(
        portal = portal.portal.id,
        "Bitrix24 app installed: tokens stored"
    );
    Ok(())
}

/// When an installation's access token expires: `expires` (unix seconds) as given, else
/// `now_s + expires_in` (an hour when absent), saturating: the numbers come from the request.
fn install_expiry(expires: Option<&str>, expires_in: Option<&str>, now_s: u64) -> u64 {
    let expires_in = expires_in.and_then(|v| v.parse::<u64>().ok()).unwrap_or(3600);
    expires.and_then(|v| v.parse().ok()).unwrap_or_else(|| now_s.saturating_add(expires_in))
}

/// Whether `portal` is configured as an OAuth app.
pub fn is_oauth(portal: &PortalEntry) -> bool {
    matches!(portal.portal.auth, Some(Auth::OAuth { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn events_are_classified_by_name() {
        assert_eq!(classify("ONAPPINSTALL"), EventKind::Install);
        assert_eq!(classify("ONEXTERNALCALLSTART"), EventKind::ClickToCall);
        assert_eq!(
            classify("ONCRMCONTACTUPDATE"),
            EventKind::Crm(CrmKind::Contact, false)
        );
        assert_eq!(
            classify("ONCRMCOMPANYADD"),
            EventKind::Crm(CrmKind::Company, false)
        );
        assert_eq!(
            classify("ONCRMLEADDELETE"),
            EventKind::Crm(CrmKind::Lead, true)
        );
        assert_eq!(classify("ONCRMDEALUPDATE"), EventKind::Other);
        assert_eq!(classify("ONCRMCONTACT"), EventKind::Other);
    }

    #[test]
    fn keys_are_call_id_or_entity_and_ts() {
        let click = data(&[("CALL_ID", "externalCall.1"), ("USER_ID", "11")]);
        assert_eq!(
            dedup_key("ONEXTERNALCALLSTART", &click, Some(5)).as_deref(),
            Some("ONEXTERNALCALLSTART externalCall.1")
        );
        let crm = data(&[("FIELDS[ID]", "1001")]);
        assert_eq!(
            dedup_key("ONCRMCONTACTUPDATE", &crm, Some(7)).as_deref(),
            Some("ONCRMCONTACTUPDATE 1001 7")
        );
        assert_ne!(
            dedup_key("ONCRMCONTACTUPDATE", &crm, Some(8)),
            dedup_key("ONCRMCONTACTUPDATE", &crm, Some(7))
        );
        assert_eq!(dedup_key("ONAPPINSTALL", &crm, Some(7)), None);
    }

    #[test]
    fn repeats_within_the_window_are_duplicates_and_forgotten_keys_are_not() {
        let t0 = Instant::now();
        let mut d = Dedup::new(Duration::from_secs(300));
        assert!(d.first(1, "k", t0));
        assert!(!d.first(1, "k", t0 + Duration::from_secs(299)));
        assert!(d.first(2, "k", t0), "per portal");
        assert!(
            d.first(1, "k", t0 + Duration::from_secs(301)),
            "the window passed"
        );
        d.forget(1, "k");
        assert!(d.first(1, "k", t0 + Duration::from_secs(302)));
        assert!(d.seen.len() <= 2 && d.order.len() <= 3);
    }

    #[test]
    fn a_full_inbox_sheds_and_forgets_the_key() {
        let (inbox, mut rx) = EventInbox::new(1);
        let ev = |id: &str| InboundEvent {
            portal: 1,
            name: "ONEXTERNALCALLSTART".into(),
            data: data(&[("CALL_ID", id)]),
            ts: None,
            handler_url: None,
        };
        let now = Instant::now();
        assert_eq!(inbox.offer(ev("a"), now), Offered::Queued);
        assert_eq!(inbox.offer(ev("a"), now), Offered::Duplicate);
        assert_eq!(inbox.offer(ev("b"), now), Offered::Full);
        rx.try_recv().unwrap();
        assert_eq!(
            inbox.offer(ev("b"), now),
            Offered::Queued,
            "a shed event is not a repeat"
        );
    }

    #[test]
    fn an_installation_expiry_from_absurd_numbers_saturates() {
        let now = 1_780_000_000;
        assert_eq!(install_expiry(None, Some("3600"), now), now + 3600);
        assert_eq!(install_expiry(Some("1780003600"), Some("1"), now), 1_780_003_600);
        assert_eq!(install_expiry(None, Some("18446744073709551615"), now), u64::MAX);
        assert_eq!(install_expiry(None, Some("99999999999999999999999"), now), now + 3600, "not a u64: the default");
        assert_eq!(install_expiry(None, None, u64::MAX), u64::MAX);
    }
}
