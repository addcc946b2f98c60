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
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{classify, is_oauth, EventInbox, EventKind, InboundEvent, Offered, BOUND_EVENTS, CLICK_TTL_MS};
use crate::crm::client::BatchCommand;
use crate::crm::params::Params;
use crate::crm::tokens::{AccessError, Tokens};
use crate::directory::{Directory, PortalEntry};
use crate::settings::PortalId;

/// Events read per `event.offline.get` (Bitrix24's default and maximum page).
const PAGE: usize = 50;
/// Pages read per portal per round at most (the rest waits for the next round).
const MAX_PAGES: usize = 20;

/// One offline event as [`read_page`] understood it.
#[derive(Debug, Clone, PartialEq)]
pub struct OfflineEvent {
    /// Upper-cased `EVENT_NAME`.
    pub name: String,
    /// `EVENT_DATA` flattened to PHP bracket keys (`FIELDS[ID]`), as an online delivery's
    /// `data[...]`.
    pub data: BTreeMap<String, String>,
    /// `TIMESTAMP_X` as unix time: when Bitrix24 raised it (an online delivery's `ts`).
    pub ts: Option<i64>,
}

/// One answer of `event.offline.get`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OfflinePage {
    /// The mark Bitrix24 put on the events (null with `clear=1`).
    pub process_id: Option<String>,
    /// The events, oldest first.
    pub events: Vec<OfflineEvent>,
}

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
            if n < PAGE {
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
            .map(|(i, e)| BatchCommand::new(format!("off{i}"), "event.bind", Params::new().set("event", *e).set("event_type", "offline")))
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
        let params = Params::new().set("clear", 0).set("limit", PAGE as u64).set_opt("process_id", process_id.map(str::to_owned));
        let client = self.tokens.client();
        let answer = self
            .tokens
            .call(portal, |ep| {
                let params = &params;
                async move { client.call(&ep, "event.offline.get", params).await }
            })
            .await?;
        Ok(read_page(&answer.result))
    }

    async fn clear(&self, portal: &PortalEntry, process_id: &str) -> Result<(), AccessError> {
        let params = Params::new().set("process_id", process_id.to_owned());
        let client = self.tokens.client();
        self.tokens
            .call(portal, |ep| {
                let params = &params;
                async move { client.call(&ep, "event.offline.clear", params).await }
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

/// Parses an `event.offline.get` result (pure). Lenient like every Bitrix24 answer: a missing or
/// `false` `EVENT_DATA` is no data, numbers become strings, an event without a name is skipped.
pub fn read_page(result: &Value) -> OfflinePage {
    let process_id = result
        .get("process_id")
        .and_then(|v| match v {
            Value::String(s) if !s.is_empty() => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
    let events = result
        .get("events")
        .and_then(Value::as_array)
        .map(|evs| evs.iter().filter_map(read_event).collect())
        .unwrap_or_default();
    OfflinePage { process_id, events }
}

fn read_event(e: &Value) -> Option<OfflineEvent> {
    let name = e.get("EVENT_NAME")?.as_str()?.trim().to_ascii_uppercase();
    if name.is_empty() {
        return None;
    }
    let mut data = BTreeMap::new();
    if let Some(d) = e.get("EVENT_DATA") {
        flatten("", d, &mut data);
    }
    let ts = e.get("TIMESTAMP_X").and_then(Value::as_str).and_then(iso_unix);
    Some(OfflineEvent { name, data, ts })
}

/// `{"FIELDS":{"ID":"5"}}` → `FIELDS[ID]` = `5` (the keys an online delivery's `data[...]` gives).
fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    let key = |k: &str| if prefix.is_empty() { k.to_owned() } else { format!("{prefix}[{k}]") };
    match v {
        Value::Object(m) => m.iter().for_each(|(k, v)| flatten(&key(k), v, out)),
        Value::Array(a) => a.iter().enumerate().for_each(|(i, v)| flatten(&key(&i.to_string()), v, out)),
        Value::String(s) if !prefix.is_empty() => {
            out.insert(prefix.to_owned(), s.clone());
        }
        Value::Number(n) if !prefix.is_empty() => {
            out.insert(prefix.to_owned(), n.to_string());
        }
        Value::Bool(b) if !prefix.is_empty() => {
            out.insert(prefix.to_owned(), if *b { "Y".into() } else { "N".into() });
        }
        _ => {}
    }
}

/// `2024-07-18T12:32:31+02:00` → unix seconds; `None` for anything else.
fn iso_unix(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, rest) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    if rest.len() < 8 {
        return None;
    }
    let (time, zone) = rest.split_at(8);
    let mut t = time.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    let offset = match zone {
        "" | "Z" => 0,
        z => {
            let sign = match z.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (oh, om) = z[1..].split_once(':')?;
            sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60)
        }
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    Some(days_from_civil(y, m, day) * 86_400 + hh * 3600 + mm * 60 + ss - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_page_becomes_events_with_online_style_keys_and_ts() {
        let page = read_page(&json!({"process_id": "abc", "events": [
            {"ID": "1", "TIMESTAMP_X": "2024-07-18T12:32:31+02:00", "EVENT_NAME": "onCrmContactUpdate",
             "EVENT_DATA": {"FIELDS": {"ID": 5}}, "EVENT_ADDITIONAL": {"user_id": "1"}, "MESSAGE_ID": "1"},
            {"ID": "2", "EVENT_NAME": "ONEXTERNALCALLSTART", "EVENT_DATA": {"CALL_ID": "externalCall.x", "USER_ID": "11"}},
            {"ID": "3", "EVENT_NAME": "", "EVENT_DATA": false},
            {"ID": "4", "EVENT_NAME": "ONCRMLEADDELETE", "EVENT_DATA": false},
        ]}));
        assert_eq!(page.process_id.as_deref(), Some("abc"));
        assert_eq!(page.events.len(), 3, "the nameless one is skipped");
        let e = &page.events[0];
        assert_eq!(e.name, "ONCRMCONTACTUPDATE");
        assert_eq!(e.data.get("FIELDS[ID]").map(String::as_str), Some("5"));
        assert_eq!(e.ts, Some(1_721_298_751));
        assert_eq!(page.events[1].data.get("CALL_ID").map(String::as_str), Some("externalCall.x"));
        assert!(page.events[2].data.is_empty());
        assert_eq!(read_page(&json!({"process_id": null, "events": []})), OfflinePage::default());
        assert_eq!(read_page(&json!([])), OfflinePage::default(), "PHP's empty array");
    }

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

    #[test]
    fn iso_dates_with_offsets_become_unix_time() {
        assert_eq!(iso_unix("1970-01-01T00:00:00+00:00"), Some(0));
        assert_eq!(iso_unix("2026-03-10T11:19:38+03:00"), Some(1_773_130_778));
        assert_eq!(iso_unix("2026-03-10T08:19:38Z"), Some(1_773_130_778));
        assert_eq!(iso_unix("2026-13-10T08:19:38Z"), None);
        assert_eq!(iso_unix("yesterday"), None);
        assert_eq!(iso_unix("2026-03-10T08:19"), None);
    }
}
