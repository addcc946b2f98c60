//! List-method plumbing shared by `crm.*.list` and `user.get` (bitrix24-rest.md §1.3, §7.3, §8.1):
//! filters with key prefixes, ordering, fixed 50-item pages with `total`/`next`, `select`.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::envelope::Output;
use super::params::Param;

pub const PAGE: usize = 50;

const OPS: &[&str] = &[
    ">=", "<=", "!=", "!@", "=%", "%=", "!%", ">", "<", "=", "!", "@", "%",
];

/// `">=DATE"` → (">=", "DATE").
fn split_op(key: &str) -> (&str, &str) {
    OPS.iter()
        .find_map(|op| key.strip_prefix(op).map(|f| (*op, f)))
        .unwrap_or(("", key))
}

/// True when `item` (a rendered row) satisfies every condition of `filter`.
pub fn matches(item: &Value, filter: &Param) -> bool {
    filter.entries().iter().all(|(key, want)| {
        let (op, field) = split_op(key);
        let field = item.as_object().and_then(|o| find_ci(o, field));
        condition(field, op, want)
    })
}

fn find_ci<'a>(o: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    o.get(key).or_else(|| {
        o.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

/// A missing or null field compares like an empty string (`!UF_PHONE_INNER: ""` = "has one").
static EMPTY: Value = Value::String(String::new());

/// The comparable values of a field: multi-fields give their VALUEs.
fn values(field: Option<&Value>) -> Vec<&Value> {
    match field {
        None | Some(Value::Null) => vec![&EMPTY],
        Some(Value::Array(a)) => a.iter().map(|v| v.get("VALUE").unwrap_or(v)).collect(),
        Some(v) => vec![v],
    }
}

fn condition(field: Option<&Value>, op: &str, want: &Param) -> bool {
    let have = values(field);
    let wants = want.items();
    let any_eq = || have.iter().any(|h| wants.iter().any(|w| equal(h, w)));
    match op {
        "" | "=" | "@" => any_eq(),
        "!" | "!=" | "!@" => !any_eq(),
        "%" => have.iter().any(|h| wants.iter().any(|w| contains(h, w))),
        "!%" => !have.iter().any(|h| wants.iter().any(|w| contains(h, w))),
        "=%" | "%=" => have.iter().any(|h| {
            wants
                .iter()
                .any(|w| like(&text(h), &w.text().unwrap_or_default()))
        }),
        _ => {
            let Some(w) = wants.first() else { return false };
            have.iter().any(|h| {
                let ord = compare(&text(h), &w.text().unwrap_or_default());
                match op {
                    ">" => ord == Ordering::Greater,
                    ">=" => ord != Ordering::Less,
                    "<" => ord == Ordering::Less,
                    _ => ord != Ordering::Greater,
                }
            })
        }
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "Y" } else { "N" }.to_owned(),
        other => other.to_string(),
    }
}

fn equal(have: &Value, want: &Param) -> bool {
    if let Value::Bool(b) = have {
        return want.flag() == Some(*b);
    }
    let w = want.text().unwrap_or_default();
    compare(&text(have), &w) == Ordering::Equal
}

fn contains(have: &Value, want: &Param) -> bool {
    let w = want.text().unwrap_or_default().to_lowercase();
    text(have).to_lowercase().contains(w.trim_matches('%'))
}

/// SQL LIKE with `%` wildcards, case-insensitive.
fn like(have: &str, pattern: &str) -> bool {
    let (have, pattern) = (have.to_lowercase(), pattern.to_lowercase());
    let parts: Vec<&str> = pattern.split('%').collect();
    if parts.len() == 1 {
        return have == pattern;
    }
    let mut rest = have.as_str();
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            continue;
        }
        match rest.find(part) {
            Some(0) => rest = &rest[part.len()..],
            Some(p) if i > 0 => rest = &rest[p + part.len()..],
            _ => return false,
        }
    }
    parts.last().is_some_and(|l| l.is_empty()) || rest.is_empty()
}

/// Numeric when both sides are numbers, else case-insensitive text.
pub fn compare(a: &str, b: &str) -> Ordering {
    match (a.trim().parse::<f64>(), b.trim().parse::<f64>()) {
        (Ok(x), Ok(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        _ => a.to_lowercase().cmp(&b.to_lowercase()),
    }
}

/// Sorts by `(field, descending)` keys in turn; missing values sort lowest.
pub fn sort(items: &mut [Value], keys: &[(String, bool)]) {
    items.sort_by(|a, b| {
        for (field, desc) in keys {
            let va = a.get(field).map(text).unwrap_or_default();
            let vb = b.get(field).map(text).unwrap_or_default();
            let ord = match (va.is_empty(), vb.is_empty()) {
                (true, false) => Ordering::Less,
                (false, true) => Ordering::Greater,
                _ => compare(&va, &vb),
            };
            let ord = if *desc { ord.reverse() } else { ord };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        Ordering::Equal
    });
}

/// `order` as a map `{"FIELD": "ASC|DESC"}`.
pub fn order_keys(order: Option<&Param>) -> Vec<(String, bool)> {
    let Some(order) = order else {
        return Vec::new();
    };
    order
        .entries()
        .into_iter()
        .map(|(k, v)| {
            (
                k.to_uppercase(),
                v.text().is_some_and(|d| d.eq_ignore_ascii_case("desc")),
            )
        })
        .collect()
}

/// One page starting at `start` (default 0; -1 = first page without a count).
pub fn page(items: Vec<Value>, start: Option<&Param>) -> Output {
    let start = start.and_then(Param::as_i64).unwrap_or(0);
    let total = items.len();
    if start < 0 {
        return Output {
            result: Value::Array(items.into_iter().take(PAGE).collect()),
            total: None,
            next: None,
        };
    }
    let from = (start as usize).min(total);
    let rows: Vec<Value> = items.into_iter().skip(from).take(PAGE).collect();
    let next = (from + PAGE < total).then_some((from + PAGE) as u64);
    Output {
        result: Value::Array(rows),
        total: Some(total as u64),
        next,
    }
}

/// Keeps the selected fields. Empty select keeps all but `multi` fields (which must be named
/// explicitly); `*` keeps the standard fields; `UF_*` keeps custom fields; `ID` always stays.
pub fn project(item: Value, select: &[String], multi: &[&str]) -> Value {
    let Value::Object(o) = item else { return item };
    let star = select.iter().any(|s| s == "*");
    let keep = |k: &str| {
        let named = select.iter().any(|s| s.eq_ignore_ascii_case(k));
        let uf = k.starts_with("UF_") && select.iter().any(|s| s == "UF_*");
        let default = !multi.contains(&k) && (select.is_empty() || star && !k.starts_with("UF_"));
        named || uf || default || k == "ID"
    };
    Value::Object(o.into_iter().filter(|(k, _)| keep(k)).collect())
}

/// `select` as upper-case strings.
pub fn select_list(p: Option<&Param>) -> Vec<String> {
    p.map(|s| {
        s.items()
            .iter()
            .filter_map(|v| v.text())
            .map(|t| t.to_uppercase())
            .collect()
    })
    .unwrap_or_default()
}
