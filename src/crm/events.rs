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
//! Events missed while callgate was down: an installed app also binds them as offline events,
//! and [`OfflineEvents`] reads Bitrix24's queue at start and periodically into the same inbox
//! (so they are parsed, de-duplicated and processed exactly like online ones).
//!
//! Installation (`ONAPPINSTALL`) is handled synchronously by the [`Installer`]
//! (`super::install`): proof that the tokens are this app's on this portal before anything is
//! stored, since anyone can POST an install. The app's events are then bound to the handler URL
//! from configuration ([`EventsHub::handler_url`]), never to one a request names.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::mpsc;

use super::tokens::Tokens;
use super::CrmKind;
use crate::directory::PortalEntry;
use crate::settings::{Auth, PortalId};

pub use super::install::{InstallError, Installed, Installer};

mod offline;

pub use offline::{read_page, Drained, OfflineEvent, OfflineEvents, OfflinePage};

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
    /// For `ONAPPINSTALL`: the configured URL to bind the app's events to.
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

/// The path of the events endpoint, appended to the public URL.
pub const EVENTS_PATH: &str = "/api/v1/bitrix24/events";

/// What the HTTP endpoint needs from the CRM side (handed to the router as an extension).
#[derive(Clone)]
pub struct EventsHub {
    /// The queue to the processor.
    pub inbox: Arc<EventInbox>,
    /// Endpoints and tokens (installations).
    pub tokens: Arc<Tokens>,
    /// Verifies and stores installs.
    pub installer: Arc<Installer>,
    /// `http.public_url` without its trailing slash; empty when not configured.
    public_url: String,
}

impl EventsHub {
    /// A hub over `inbox` and `tokens`, binding events to the listener's own address until
    /// [`Self::with_public_url`] names one.
    pub fn new(inbox: Arc<EventInbox>, tokens: Arc<Tokens>) -> Self {
        Self {
            installer: Installer::new(Arc::clone(&tokens)),
            inbox,
            tokens,
            public_url: String::new(),
        }
    }

    /// Binds the app's events under `public_url` (the `http.public_url` setting; empty: none).
    #[must_use]
    pub fn with_public_url(mut self, public_url: &str) -> Self {
        public_url
            .trim()
            .trim_end_matches('/')
            .clone_into(&mut self.public_url);
        self
    }

    /// The URL the app's events are bound to (see [`handler_url`]).
    ///
    /// # Errors
    /// Why no URL can be given (names the setting to fix).
    pub fn handler_url(&self, listener: Option<&str>, scheme: &str) -> Result<String, String> {
        handler_url(&self.public_url, listener, scheme)
    }
}

/// `{public_url}/api/v1/bitrix24/events`; without a public URL, this listener's own bound
/// address (`listener`, with `scheme`): it comes from the socket, not from a request, so at
/// worst events do not arrive, and they never go elsewhere. A wildcard address (0.0.0.0, ::)
/// is not a URL anyone can reach: no URL then.
///
/// # Errors
/// Why no URL can be given (names the setting to fix).
pub fn handler_url(
    public_url: &str,
    listener: Option<&str>,
    scheme: &str,
) -> Result<String, String> {
    if !public_url.is_empty() {
        return Ok(format!("{public_url}{EVENTS_PATH}"));
    }
    let addr: std::net::SocketAddr = listener.and_then(|a| a.parse().ok()).ok_or_else(|| {
        "http.public_url is not set and the HTTP listener's address is unknown".to_owned()
    })?;
    if addr.ip().is_unspecified() {
        return Err(format!(
            "http.public_url is not set and the HTTP listener is bound to the wildcard address {addr}; set http.public_url to the URL Bitrix24 reaches callgate at"
        ));
    }
    let scheme = if scheme == "https" { "https" } else { "http" };
    Ok(format!("{scheme}://{addr}{EVENTS_PATH}"))
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
    fn the_handler_url_comes_from_configuration_or_the_bound_address() {
        assert_eq!(
            handler_url("https://gw.example.com/cg", Some("0.0.0.0:8080"), "http").as_deref(),
            Ok("https://gw.example.com/cg/api/v1/bitrix24/events")
        );
        assert_eq!(
            handler_url("", Some("203.0.113.5:8443"), "https").as_deref(),
            Ok("https://203.0.113.5:8443/api/v1/bitrix24/events")
        );
        let wildcard = handler_url("", Some("0.0.0.0:8080"), "http").unwrap_err();
        assert!(wildcard.contains("http.public_url"), "{wildcard}");
        assert!(handler_url("", Some("[::]:8080"), "http").is_err());
        assert!(handler_url("", None, "http").is_err());
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
}
