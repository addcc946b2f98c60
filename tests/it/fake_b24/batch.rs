//! `batch` (bitrix24-rest.md §4, §10.4 item 14): `cmd` map of `"method?query"` strings (the
//! query is URL-decoded once more after the outer decoding), `halt`, `$result[key][FIELD]`
//! substitution from earlier sub-results, at most 50 executed sub-calls, nested batch refused.
//! Always HTTP 200 with `result.{result,result_error,result_total,result_next,result_time}`,
//! each `[]` when empty and a JSON array when keyed 0..n-1.
//!
//! Substitution happens on the parsed sub-call parameters: a value that is exactly one reference
//! becomes the referenced value (any type); references inside longer strings are replaced by
//! text. Unresolvable references stay literal (or become "" with `unresolved_refs_empty`).

use std::time::Instant;

use serde_json::{json, Value};

use super::auth::Caller;
use super::clock::Now;
use super::envelope::{php_map, ApiError, Output, TimeInfo};
use super::limits::Operating;
use super::params::{parse_form, Param};
use super::record::{Recorded, Via};
use super::server::{call_method, Inner};

pub const MAX_COMMANDS: usize = 50;

const TABLES: &[&str] = &[
    "result_error",
    "result_total",
    "result_next",
    "result_time",
    "result",
];

#[derive(Default)]
struct Acc {
    result: Vec<(String, Value)>,
    result_error: Vec<(String, Value)>,
    result_total: Vec<(String, Value)>,
    result_next: Vec<(String, Value)>,
    result_time: Vec<(String, Value)>,
}

impl Acc {
    fn table(&self, name: &str) -> &[(String, Value)] {
        match name {
            "result" => &self.result,
            "result_error" => &self.result_error,
            "result_total" => &self.result_total,
            "result_next" => &self.result_next,
            _ => &self.result_time,
        }
    }

    fn resolve(&self, name: &str, path: &[String]) -> Option<&Value> {
        let (key, rest) = path.split_first()?;
        let mut v = self
            .table(name)
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)?;
        for seg in rest {
            v = match v {
                Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
                Value::Object(o) => o.get(seg)?,
                _ => return None,
            };
        }
        Some(v)
    }

    fn into_json(self) -> Value {
        json!({
            "result": php_map(self.result),
            "result_error": php_map(self.result_error),
            "result_total": php_map(self.result_total),
            "result_next": php_map(self.result_next),
            "result_time": php_map(self.result_time),
        })
    }
}

/// Runs a batch; returns the outer result and the recorded sub-calls.
pub async fn run(
    inner: &Inner,
    caller: &Caller,
    params: &Param,
    via: &Via,
) -> (Output, Vec<Recorded>) {
    let cmd = params.get("cmd").cloned().unwrap_or(Param::Null);
    let halt = params.get("halt").and_then(Param::flag).unwrap_or(false);
    let (tz, empty_refs) = {
        let st = inner.lock();
        (st.knobs.tz_offset, st.knobs.unresolved_refs_empty)
    };
    let mut acc = Acc::default();
    let mut subs = Vec::new();
    for (i, (key, command)) in cmd.entries().into_iter().enumerate() {
        let started = inner.now();
        let (method, sub_params, outcome) = if i >= MAX_COMMANDS {
            let err = ApiError::new(
                400,
                "ERROR_BATCH_LENGTH_EXCEEDED",
                "Max batch length exceeded",
            );
            (split_command(command).0, Param::map(), Err(err))
        } else {
            run_one(inner, caller, command, &acc, empty_refs).await
        };
        let failed = outcome.is_err();
        subs.push(record_sub(&key, &method, &sub_params, &outcome, via));
        push_outcome(&mut acc, &key, outcome, started, inner.now(), tz);
        if failed && halt {
            break;
        }
    }
    (Output::of(acc.into_json()), subs)
}

type Outcome = Result<(Output, Operating), ApiError>;

async fn run_one(
    inner: &Inner,
    caller: &Caller,
    command: &Param,
    acc: &Acc,
    empty_refs: bool,
) -> (String, Param, Outcome) {
    let (method, query) = split_command(command);
    let mut p = parse_form(&query);
    p.remove("auth");
    p.for_each_leaf_mut(&mut |leaf| {
        if let Param::Str(s) = leaf {
            if s.contains("$result") {
                *leaf = substitute(s, acc, empty_refs);
            }
        }
    });
    if method == "batch" {
        let err = ApiError::new(
            405,
            "ERROR_BATCH_METHOD_NOT_ALLOWED",
            "Method is not allowed for batch usage",
        );
        return (method, p, Err(err));
    }
    let outcome = call_method(inner, caller, &method, &p).await;
    (method, p, outcome)
}

/// `"Telephony.ExternalCall.Register.json?A=1"` → ("telephony.externalcall.register", "A=1").
fn split_command(command: &Param) -> (String, String) {
    let text = command.text().unwrap_or_default();
    let (m, q) = text.split_once('?').unwrap_or((&text, ""));
    let m = m.trim().to_lowercase();
    (
        m.strip_suffix(".json").unwrap_or(&m).to_owned(),
        q.to_owned(),
    )
}

fn push_outcome(acc: &mut Acc, key: &str, outcome: Outcome, start: Now, finish: Now, tz: i32) {
    match outcome {
        Ok((out, op)) => {
            let time = TimeInfo {
                start: start.unix,
                finish: finish.unix,
                operating: op.used,
                operating_reset_at: op.reset_at,
            };
            acc.result.push((key.to_owned(), out.result));
            if let Some(t) = out.total {
                acc.result_total.push((key.to_owned(), json!(t)));
            }
            if let Some(n) = out.next {
                acc.result_next.push((key.to_owned(), json!(n)));
            }
            acc.result_time.push((key.to_owned(), time.to_json(tz)));
        }
        Err(e) => acc.result_error.push((key.to_owned(), e.body(None))),
    }
}

fn record_sub(key: &str, method: &str, p: &Param, outcome: &Outcome, via: &Via) -> Recorded {
    let mut rec = Recorded::new(Instant::now(), method, p.to_json(), via.clone());
    rec.key = Some(key.to_owned());
    match outcome {
        Ok((out, _)) => {
            rec.status = 200;
            rec.result = Some(out.result.clone());
        }
        Err(e) => {
            rec.status = e.status;
            rec.error = Some(e.clone());
        }
    }
    rec
}

/// A parsed `$result[a][b]` reference: its byte length, table name and path.
fn parse_ref(s: &str) -> Option<(usize, &'static str, Vec<String>)> {
    let rest = s.strip_prefix('$')?;
    let name = TABLES.iter().find(|t| rest.starts_with(*t))?;
    let mut i = 1 + name.len();
    let mut path = Vec::new();
    while s[i..].starts_with('[') {
        let close = s[i..].find(']')?;
        path.push(s[i + 1..i + close].to_owned());
        i += close + 1;
    }
    (!path.is_empty()).then_some((i, *name, path))
}

fn substitute(s: &str, acc: &Acc, empty_refs: bool) -> Param {
    if let Some((len, name, path)) = parse_ref(s) {
        if len == s.len() {
            return match acc.resolve(name, &path) {
                Some(v) => Param::from_json(v),
                None if empty_refs => Param::Str(String::new()),
                None => Param::Str(s.to_owned()),
            };
        }
    }
    let mut out = String::new();
    let mut i = 0;
    while let Some(pos) = s[i..].find('$') {
        let at = i + pos;
        out.push_str(&s[i..at]);
        match parse_ref(&s[at..]) {
            Some((len, name, path)) => {
                match acc.resolve(name, &path) {
                    Some(v) => out.push_str(&Param::from_json(v).text().unwrap_or_default()),
                    None if empty_refs => {}
                    None => out.push_str(&s[at..at + len]),
                }
                i = at + len;
            }
            None => {
                out.push('$');
                i = at + 1;
            }
        }
    }
    out.push_str(&s[i..]);
    Param::Str(out)
}
