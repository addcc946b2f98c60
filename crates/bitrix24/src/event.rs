//! Events (`event.bind`, offline events): Bitrix24 tells an app about changes either online (a
//! form-encoded POST to a handler URL, never retried) or offline (kept in a queue per app, latest
//! state per object, read with `event.offline.get`). Offline events survive the handler being down
//! or behind NAT; they need an admin's install of an OAuth app.
//!
//! [`read_page`] turns an `event.offline.get` result into [`OfflineEvent`]s whose data has the
//! same PHP bracket keys an online delivery's `data[...]` has (`FIELDS[ID]`), so both paths can
//! share one parser.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::methods::{method, Method};
use crate::{Error, Params, Response};

/// `event.bind` (app context only): subscribes the app to `event`. Result: `true`; binding an
/// already bound pair fails (harmless).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// `ONEXTERNALCALLSTART`, `ONCRMCONTACTUPDATE`, … (any case).
    pub event: String,
    /// Online: the handler URL. Offline: `None`.
    pub handler: Option<String>,
}

impl Bind {
    /// Online delivery of `event` to `handler`.
    pub fn online(event: impl Into<String>, handler: impl Into<String>) -> Self {
        Self {
            event: event.into(),
            handler: Some(handler.into()),
        }
    }

    /// Offline: `event` goes to the app's queue ([`OfflineGet`]).
    pub fn offline(event: impl Into<String>) -> Self {
        Self {
            event: event.into(),
            handler: None,
        }
    }

    fn to_params(&self) -> Params {
        let p = Params::new().set("event", self.event.as_str());
        match &self.handler {
            Some(url) => p.set("handler", url.as_str()),
            None => p.set("event_type", "offline"),
        }
    }
}

method!(Bind, "event.bind", bool);

/// `event.offline.get`: up to `limit` queued events. With `clear = false` Bitrix24 marks them with
/// a `process_id` instead of deleting them: clear them with [`OfflineClear`] once handled, and
/// name the `process_id` again to get the same events back after a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineGet {
    /// Delete the events as they are read (Bitrix24's default).
    pub clear: bool,
    /// Events per answer (Bitrix24's default and maximum: 50).
    pub limit: u32,
    /// Read the events of this earlier mark again.
    pub process_id: Option<String>,
}

impl Default for OfflineGet {
    fn default() -> Self {
        Self {
            clear: true,
            limit: 50,
            process_id: None,
        }
    }
}

impl OfflineGet {
    /// The method's name.
    pub const METHOD: &'static str = "event.offline.get";
}

impl Method for OfflineGet {
    type Output = OfflinePage;

    fn name(&self) -> &'static str {
        Self::METHOD
    }

    fn params(&self) -> Params {
        Params::new()
            .set("clear", u8::from(self.clear))
            .set("limit", self.limit)
            .set_opt("process_id", self.process_id.clone())
    }

    fn decode(resp: Response) -> Result<OfflinePage, Error> {
        Ok(read_page(&resp.result))
    }
}

/// `event.offline.clear`: deletes the events marked with `process_id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineClear {
    /// The mark of an [`OfflineGet`] answer.
    pub process_id: String,
}

impl OfflineClear {
    fn to_params(&self) -> Params {
        Params::new().set("process_id", self.process_id.as_str())
    }
}

method!(OfflineClear, "event.offline.clear", Value);

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

/// Parses an `event.offline.get` result (pure). Lenient like every Bitrix24 answer: a missing or
/// `false` `EVENT_DATA` is no data, numbers become strings, an event without a name is skipped.
pub fn read_page(result: &Value) -> OfflinePage {
    let process_id = result.get("process_id").and_then(|v| match v {
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
    let ts = e
        .get("TIMESTAMP_X")
        .and_then(Value::as_str)
        .and_then(iso_unix);
    Some(OfflineEvent { name, data, ts })
}

/// `{"FIELDS":{"ID":"5"}}` → `FIELDS[ID]` = `5` (the keys an online delivery's `data[...]` gives).
fn flatten(prefix: &str, v: &Value, out: &mut BTreeMap<String, String>) {
    let key = |k: &str| {
        if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}[{k}]")
        }
    };
    match v {
        Value::Object(m) => m.iter().for_each(|(k, v)| flatten(&key(k), v, out)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, v)| flatten(&key(&i.to_string()), v, out)),
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
        assert_eq!(
            page.events[1].data.get("CALL_ID").map(String::as_str),
            Some("externalCall.x")
        );
        assert!(page.events[2].data.is_empty());
        assert_eq!(
            read_page(&json!({"process_id": null, "events": []})),
            OfflinePage::default()
        );
        assert_eq!(
            read_page(&json!([])),
            OfflinePage::default(),
            "PHP's empty array"
        );
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
