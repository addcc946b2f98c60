//! [`Params`]: the ordered parameter tree of one REST call, and its two wire forms.
//!
//! * JSON body ([`Params`] implements `Serialize`): what [`Client::call`](crate::Client::call)
//!   POSTs. Key order is kept.
//! * PHP-bracket query string ([`Params::to_query`]): `USER_ID[0]=11&USER_ID[1]=12&fields[UTM_SOURCE]=google`,
//!   what goes inside `batch` `cmd` strings. Values are
//!   percent-encoded (space as `%20`, never `+`), bracket structure is literal. Since the batch body
//!   is JSON, the server URL-decodes a `cmd` string exactly once, so single encoding is right.
//!
//! A [`ParamValue::Reference`] (`Params::reference("reg", "CALL_ID")`) is written literally as
//! `$result[reg][CALL_ID]`, unencoded, so Bitrix24 substitutes an earlier sub-call's result
//! (a bare key would be passed through as text, and the sub-call would fail).
//!
//! This module is pure: no I/O, no dependency on the rest of the crate.

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

/// One parameter value.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    /// A string.
    Str(String),
    /// An integer (ids, flags 0/1, durations).
    Int(i64),
    /// A floating-point number (`COST`).
    Float(f64),
    /// A list: `KEY[0]=…&KEY[1]=…` / a JSON array.
    List(Vec<Self>),
    /// A nested map: `KEY[SUB]=…` / a JSON object.
    Map(Params),
    /// A `batch` reference `$result[key][path…]`, written literally.
    Reference {
        /// The earlier command's key.
        key: String,
        /// Field path inside its result (`["CALL_ID"]`, `["0", "ID"]`).
        path: Vec<String>,
    },
}

impl ParamValue {
    /// A JSON value as a parameter value (see [`Params::from_json`]); `None` for `null`.
    pub fn from_json(v: &serde_json::Value) -> Option<Self> {
        use serde_json::Value;
        Some(match v {
            Value::Null => return None,
            Value::Bool(b) => Self::Int(i64::from(*b)),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Self::Int(i),
                None => Self::Float(n.as_f64().unwrap_or_default()),
            },
            Value::String(s) => Self::Str(s.clone()),
            Value::Array(a) => Self::List(a.iter().filter_map(Self::from_json).collect()),
            Value::Object(_) => Self::Map(Params::from_json(v)),
        })
    }

    /// `$result[key][path0][path1]…`.
    pub fn reference_text(key: &str, path: &[String]) -> String {
        let mut s = format!("$result[{key}]");
        for p in path {
            s.push('[');
            s.push_str(p);
            s.push(']');
        }
        s
    }
}

impl From<&str> for ParamValue {
    fn from(v: &str) -> Self {
        Self::Str(v.to_owned())
    }
}
impl From<String> for ParamValue {
    fn from(v: String) -> Self {
        Self::Str(v)
    }
}
impl From<&String> for ParamValue {
    fn from(v: &String) -> Self {
        Self::Str(v.clone())
    }
}
impl From<f64> for ParamValue {
    fn from(v: f64) -> Self {
        Self::Float(v)
    }
}
impl From<Params> for ParamValue {
    fn from(v: Params) -> Self {
        Self::Map(v)
    }
}
impl<T: Into<Self>> From<Vec<T>> for ParamValue {
    fn from(v: Vec<T>) -> Self {
        Self::List(v.into_iter().map(Into::into).collect())
    }
}

macro_rules! int_from {
    ($($t:ty),*) => {$(
        impl From<$t> for ParamValue {
            fn from(v: $t) -> Self {
                Self::Int(i64::from(v))
            }
        }
    )*};
}
int_from!(i8, i16, i32, i64, u8, u16, u32);

impl From<u64> for ParamValue {
    /// Ids above `i64::MAX` do not occur in Bitrix24; they saturate rather than wrap.
    fn from(v: u64) -> Self {
        Self::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

/// An ordered map of parameter names to values. Setting an existing key replaces its value in
/// place (the key keeps its position).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Params {
    entries: Vec<(String, ParamValue)>,
}

impl Params {
    /// No parameters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value` (builder form).
    #[must_use]
    pub fn set(mut self, key: impl Into<String>, value: impl Into<ParamValue>) -> Self {
        self.insert(key, value);
        self
    }

    /// Sets `key` to a list (`USER_ID[0]=11&USER_ID[1]=12`).
    #[must_use]
    pub fn set_list<I>(self, key: impl Into<String>, items: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<ParamValue>,
    {
        let list = ParamValue::List(items.into_iter().map(Into::into).collect());
        self.set(key, list)
    }

    /// Sets `key` to a nested map (`fields[UTM_SOURCE]=google`).
    #[must_use]
    pub fn set_map(self, key: impl Into<String>, map: Self) -> Self {
        self.set(key, ParamValue::Map(map))
    }

    /// Sets `key` to `value` when it is `Some`.
    #[must_use]
    pub fn set_opt(self, key: impl Into<String>, value: Option<impl Into<ParamValue>>) -> Self {
        match value {
            Some(v) => self.set(key, v),
            None => self,
        }
    }

    /// Sets `key` to `value` (in-place form).
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<ParamValue>) {
        let key = key.into();
        let value = value.into();
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.entries.push((key, value)),
        }
    }

    /// A `batch` reference to field `field` of the result of command `key`:
    /// `$result[key][field]`.
    pub fn reference(key: impl Into<String>, field: impl Into<String>) -> ParamValue {
        ParamValue::Reference {
            key: key.into(),
            path: vec![field.into()],
        }
    }

    /// A `batch` reference with a longer path, e.g. `$result[users][0][ID]`.
    pub fn reference_path<I>(key: impl Into<String>, path: I) -> ParamValue
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        ParamValue::Reference {
            key: key.into(),
            path: path.into_iter().map(Into::into).collect(),
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&ParamValue> {
        self.entries.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ParamValue)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of top-level keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Parameters from a JSON object (e.g. stored as JSON by the caller): numbers stay numbers,
    /// booleans become `0`/`1`, arrays lists, objects maps; `null`s are left out. Anything but an
    /// object gives no parameters.
    pub fn from_json(v: &serde_json::Value) -> Self {
        let mut p = Self::new();
        if let serde_json::Value::Object(m) = v {
            for (k, v) in m {
                if let Some(pv) = ParamValue::from_json(v) {
                    p.insert(k.clone(), pv);
                }
            }
        }
        p
    }

    /// The JSON value (note: `serde_json::Value` objects are sorted; serialise `Params` directly
    /// when order matters).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// The PHP-bracket query string, percent-encoded, without a leading `?`. Empty lists and maps
    /// produce nothing (PHP cannot express them in a query string).
    pub fn to_query(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.entries {
            let mut name = String::new();
            encode_into(&mut name, k);
            write_query(&mut out, &name, v);
        }
        out
    }
}

impl<K: Into<String>, V: Into<ParamValue>> FromIterator<(K, V)> for Params {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut p = Self::new();
        for (k, v) in iter {
            p.insert(k, v);
        }
        p
    }
}

fn write_query(out: &mut String, name: &str, value: &ParamValue) {
    match value {
        ParamValue::Str(s) => {
            start_pair(out, name);
            encode_into(out, s);
        }
        ParamValue::Int(i) => {
            start_pair(out, name);
            out.push_str(&i.to_string());
        }
        ParamValue::Float(f) => {
            start_pair(out, name);
            encode_into(out, &float_text(*f));
        }
        ParamValue::Reference { key, path } => {
            start_pair(out, name);
            out.push_str(&ParamValue::reference_text(key, path));
        }
        ParamValue::List(items) => {
            for (i, item) in items.iter().enumerate() {
                write_query(out, &format!("{name}[{i}]"), item);
            }
        }
        ParamValue::Map(map) => {
            for (k, v) in &map.entries {
                let mut sub = format!("{name}[");
                encode_into(&mut sub, k);
                sub.push(']');
                write_query(out, &sub, v);
            }
        }
    }
}

/// `&name=` (no `&` at the start).
fn start_pair(out: &mut String, name: &str) {
    if !out.is_empty() {
        out.push('&');
    }
    out.push_str(name);
    out.push('=');
}

/// Finite floats as Rust prints them (`1.5`, `0`); NaN/inf (never valid) as an empty value.
fn float_text(f: f64) -> String {
    if f.is_finite() {
        f.to_string()
    } else {
        String::new()
    }
}

/// RFC 3986 percent-encoding: unreserved characters stay, everything else becomes `%XX`.
fn encode_into(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

impl Serialize for Params {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.entries.len()))?;
        for (k, v) in &self.entries {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl Serialize for ParamValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Str(v) => s.serialize_str(v),
            Self::Int(v) => s.serialize_i64(*v),
            Self::Float(v) => s.serialize_f64(*v),
            Self::List(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Self::Map(map) => map.serialize(s),
            Self::Reference { key, path } => s.serialize_str(&Self::reference_text(key, path)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_replaces_in_place_and_keeps_order() {
        let p = Params::new()
            .set("CALL_ID", "x")
            .set("USER_ID", 5)
            .set_list("USER_ID", [11, 12])
            .set("SHOW", 0);
        let keys: Vec<_> = p.iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["CALL_ID", "USER_ID", "SHOW"]);
        assert_eq!(
            p.get("USER_ID"),
            Some(&ParamValue::List(vec![11.into(), 12.into()]))
        );
    }

    #[test]
    fn query_uses_php_brackets_and_percent_encoding() {
        let p = Params::new().set_list("USER_ID", [11, 12]).set_map(
            "fields",
            Params::new()
                .set("UTM_SOURCE", "google")
                .set("TITLE", "a b&c=d/é"),
        );
        assert_eq!(
            p.to_query(),
            "USER_ID[0]=11&USER_ID[1]=12&fields[UTM_SOURCE]=google&fields[TITLE]=a%20b%26c%3Dd%2F%C3%A9"
        );
    }

    #[test]
    fn query_nests_lists_of_maps() {
        let phone = Params::new()
            .set("VALUE", "+7 495")
            .set("VALUE_TYPE", "WORK");
        let p = Params::new().set_map(
            "fields",
            Params::new().set("PHONE", vec![ParamValue::Map(phone)]),
        );
        assert_eq!(
            p.to_query(),
            "fields[PHONE][0][VALUE]=%2B7%20495&fields[PHONE][0][VALUE_TYPE]=WORK"
        );
    }

    #[test]
    fn references_stay_literal_in_query_and_json() {
        let p = Params::new()
            .set("CALL_ID", Params::reference("reg", "CALL_ID"))
            .set("USER_ID", 5)
            .set("X", Params::reference_path("users", ["0", "ID"]));
        assert_eq!(
            p.to_query(),
            "CALL_ID=$result[reg][CALL_ID]&USER_ID=5&X=$result[users][0][ID]"
        );
        let body = serde_json::to_string(&p).unwrap();
        assert_eq!(
            body,
            r#"{"CALL_ID":"$result[reg][CALL_ID]","USER_ID":5,"X":"$result[users][0][ID]"}"#
        );
    }

    #[test]
    fn json_body_keeps_order_and_types() {
        let p = Params::new()
            .set("PHONE_NUMBER", "+74951234567")
            .set("TYPE", 2)
            .set("COST", 1.5)
            .set_list("values", ["a"])
            .set_map("fields", Params::new().set("UTM_TERM", "t"));
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"PHONE_NUMBER":"+74951234567","TYPE":2,"COST":1.5,"values":["a"],"fields":{"UTM_TERM":"t"}}"#
        );
        assert_eq!(p.to_json()["fields"]["UTM_TERM"], "t");
    }

    #[test]
    fn empty_and_special_values_in_query() {
        let p = Params::new()
            .set_list("EMPTY", Vec::<i64>::new())
            .set("S", "")
            .set("F", 0.0)
            .set("N", -3)
            .set("ключ", "~ok-._");
        assert_eq!(p.to_query(), "S=&F=0&N=-3&%D0%BA%D0%BB%D1%8E%D1%87=~ok-._");
        assert_eq!(Params::new().to_query(), "");
    }

    #[test]
    fn set_opt_skips_none() {
        let p = Params::new()
            .set_opt("A", Some(1))
            .set_opt("B", None::<i64>);
        assert_eq!(p.len(), 1);
        assert!(p.get("B").is_none());
    }
}
