//! Typed results of the REST methods, decoded tolerantly.
//!
//! PHP quirks handled here, once: ids arrive as ints or numeric strings ([`Id`]); empty maps
//! arrive as `[]`; maps with keys 0..n-1 arrive as arrays; booleans are `true`/`"Y"`/`1`; missing
//! values are `null`, `""` or `false`; dates may be `{}` (ignored). Unknown fields are ignored.
//! Decoding is pure: `serde_json::Value` in, struct or [`Error::Decode`] (with the JSON path of
//! the offending field) out.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{DeserializeOwned, Deserializer, Error as _};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Error;

/// Decodes a `result` value into `T`; the error names the JSON path that failed.
///
/// # Errors
/// [`Error::Decode`] when the value does not fit `T`.
pub fn decode<T: DeserializeOwned>(value: Value) -> Result<T, Error> {
    serde_path_to_error::deserialize(value).map_err(|e| Error::Decode {
        message: format!("at {}: {}", e.path(), e.inner()),
    })
}

/// A Bitrix24 id: accepts `42`, `"42"` and `" 42 "`; serialises as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Id(pub u64);

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<Id> for u64 {
    fn from(id: Id) -> Self {
        id.0
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        lenient_u64(&v).map(Id).ok_or_else(|| {
            D::Error::custom(format!("expected an id (int or numeric string), got {v}"))
        })
    }
}

/// A non-negative integer from an int, an integral float or a numeric string.
fn lenient_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < 1.8e19)
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Serde helpers for `#[serde(deserialize_with = …)]`.
pub(crate) mod lenient {
    use super::*;

    /// `null`, `""`, `false`, `[]` → `None`; otherwise an id (0 kept).
    pub(crate) fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        let v = Value::deserialize(d)?;
        if is_blank(&v) {
            return Ok(None);
        }
        lenient_u64(&v)
            .map(Some)
            .ok_or_else(|| D::Error::custom(format!("expected a number, got {v}")))
    }

    /// Like [`opt_u64`] but `0`/`"0"` also mean "none" (entity ids are positive; events send `"0"`).
    pub(crate) fn opt_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        Ok(opt_u64(d)?.filter(|id| *id != 0))
    }

    /// An id that must be present.
    pub(crate) fn id<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        Id::deserialize(d).map(u64::from)
    }

    /// `null`, `false`, `""` (after trimming) → `None`; numbers become their text.
    pub(crate) fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        let v = Value::deserialize(d)?;
        Ok(match v {
            Value::String(s) if !s.trim().is_empty() => Some(s),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        })
    }

    /// `true`/`false`, `"Y"`/`"N"`, `1`/`0`, `"1"`/`"0"`, `"true"`; anything else is `false`.
    pub(crate) fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        let v = Value::deserialize(d)?;
        Ok(match v {
            Value::Bool(b) => b,
            Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
            Value::String(s) => matches!(s.trim(), "Y" | "y" | "1" | "true" | "TRUE"),
            _ => false,
        })
    }

    /// A list that may come as an array, an object (PHP array with holes), `[]`, `null` or `false`.
    pub(crate) fn vec<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: DeserializeOwned,
    {
        let v = Value::deserialize(d)?;
        let items: Vec<Value> = match v {
            Value::Array(a) => a,
            Value::Object(o) => o.into_iter().map(|(_, v)| v).collect(),
            _ => Vec::new(),
        };
        items
            .into_iter()
            .map(|i| T::deserialize(i).map_err(D::Error::custom))
            .collect()
    }

    /// An object, or `None` for `[]`, `null`, `false`, `""`.
    pub(crate) fn opt_object<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: DeserializeOwned,
    {
        match Value::deserialize(d)? {
            v @ Value::Object(_) => T::deserialize(v).map(Some).map_err(D::Error::custom),
            _ => Ok(None),
        }
    }

    /// A string map that may come as `[]` (empty) or an object; non-string values become text.
    pub(crate) fn string_map<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, String>, D::Error> {
        let v = Value::deserialize(d)?;
        let Value::Object(o) = v else {
            return Ok(BTreeMap::new());
        };
        Ok(o.into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect())
    }

    pub(crate) fn is_blank(v: &Value) -> bool {
        match v {
            Value::Null | Value::Bool(false) => true,
            Value::String(s) => s.trim().is_empty(),
            Value::Array(a) => a.is_empty(),
            _ => false,
        }
    }
}

/// `telephony.externalcall.register` result.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RegisterResult {
    /// `externalCall.<hex>.<unix>`.
    #[serde(rename = "CALL_ID")]
    pub call_id: String,
    /// Lead created by this call, if any.
    #[serde(
        rename = "CRM_CREATED_LEAD",
        default,
        deserialize_with = "lenient::opt_id"
    )]
    pub crm_created_lead: Option<u64>,
    /// `CONTACT`/`COMPANY`/`LEAD`; `""` (nothing bound) becomes `None`.
    #[serde(
        rename = "CRM_ENTITY_TYPE",
        default,
        deserialize_with = "lenient::opt_string"
    )]
    pub crm_entity_type: Option<String>,
    /// Bound entity id; `null` becomes `None`.
    #[serde(
        rename = "CRM_ENTITY_ID",
        default,
        deserialize_with = "lenient::opt_id"
    )]
    pub crm_entity_id: Option<u64>,
    /// Entities created by this call.
    #[serde(
        rename = "CRM_CREATED_ENTITIES",
        default,
        deserialize_with = "lenient::vec"
    )]
    pub crm_created_entities: Vec<CreatedEntity>,
    /// Set when lead creation failed ("Lead creation is disabled for local users"); the call is
    /// registered anyway, with HTTP 200.
    #[serde(
        rename = "LEAD_CREATION_ERROR",
        default,
        deserialize_with = "lenient::opt_string"
    )]
    pub lead_creation_error: Option<String>,
}

impl RegisterResult {
    /// The lead created by this call: `CRM_CREATED_LEAD`, else the first `LEAD` in
    /// `CRM_CREATED_ENTITIES`.
    pub fn created_lead_id(&self) -> Option<u64> {
        self.crm_created_lead.or_else(|| {
            self.crm_created_entities
                .iter()
                .find(|e| e.entity_type.eq_ignore_ascii_case("LEAD"))
                .map(|e| e.entity_id)
        })
    }
}

/// One item of `CRM_CREATED_ENTITIES`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CreatedEntity {
    /// `LEAD`, `CONTACT`, `COMPANY`, `DEAL`.
    #[serde(rename = "ENTITY_TYPE")]
    pub entity_type: String,
    /// Its id.
    #[serde(rename = "ENTITY_ID", deserialize_with = "lenient::id")]
    pub entity_id: u64,
}

/// `telephony.externalcall.finish` result: the statistics row. `CALL_START_DATE` (often
/// `{}`) and `REST_APP_NAME` (often `false`) are deliberately not decoded.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FinishResult {
    /// The call.
    #[serde(rename = "CALL_ID")]
    pub call_id: String,
    /// Statistics row id.
    #[serde(rename = "ID", default, deserialize_with = "lenient::opt_id")]
    pub id: Option<u64>,
    /// Our `EXTERNAL_CALL_ID`, if sent.
    #[serde(
        rename = "EXTERNAL_CALL_ID",
        default,
        deserialize_with = "lenient::opt_string"
    )]
    pub external_call_id: Option<String>,
    /// The user who "ended" the call.
    #[serde(
        rename = "PORTAL_USER_ID",
        default,
        deserialize_with = "lenient::opt_id"
    )]
    pub portal_user_id: Option<u64>,
    /// Talk seconds as stored.
    #[serde(
        rename = "CALL_DURATION",
        default,
        deserialize_with = "lenient::opt_u64"
    )]
    pub call_duration: Option<u64>,
    /// 1 when DURATION > 0.
    #[serde(rename = "CALL_STATUS", default, deserialize_with = "lenient::opt_u64")]
    pub call_status: Option<u64>,
    /// `"200"`, `"304"`, `"603-S"`, …
    #[serde(
        rename = "CALL_FAILED_CODE",
        default,
        deserialize_with = "lenient::opt_string"
    )]
    pub call_failed_code: Option<String>,
    /// The CRM activity written for the call.
    #[serde(
        rename = "CRM_ACTIVITY_ID",
        default,
        deserialize_with = "lenient::opt_id"
    )]
    pub crm_activity_id: Option<u64>,
    /// Bound entity type.
    #[serde(
        rename = "CRM_ENTITY_TYPE",
        default,
        deserialize_with = "lenient::opt_string"
    )]
    pub crm_entity_type: Option<String>,
    /// Bound entity id.
    #[serde(
        rename = "CRM_ENTITY_ID",
        default,
        deserialize_with = "lenient::opt_id"
    )]
    pub crm_entity_id: Option<u64>,
    /// Non-fatal problems, e.g. `{"ACTIVITY_CREATION": "…"}`.
    #[serde(rename = "ERRORS", default, deserialize_with = "lenient::string_map")]
    pub errors: BTreeMap<String, String>,
}

/// One `telephony.externalCall.searchCrmEntities` item.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SearchEntity {
    /// `CONTACT`, `LEAD`, `COMPANY`.
    #[serde(rename = "CRM_ENTITY_TYPE")]
    pub crm_entity_type: String,
    /// Entity id.
    #[serde(rename = "CRM_ENTITY_ID", deserialize_with = "lenient::id")]
    pub crm_entity_id: u64,
    /// Responsible user (an int here).
    #[serde(
        rename = "ASSIGNED_BY_ID",
        default,
        deserialize_with = "lenient::opt_id"
    )]
    pub assigned_by_id: Option<u64>,
    /// Display name.
    #[serde(rename = "NAME", default, deserialize_with = "lenient::opt_string")]
    pub name: Option<String>,
    /// The responsible user's details.
    #[serde(
        rename = "ASSIGNED_BY",
        default,
        deserialize_with = "lenient::opt_object"
    )]
    pub assigned_by: Option<AssignedBy>,
}

impl SearchEntity {
    /// The responsible user: `ASSIGNED_BY_ID`, else `ASSIGNED_BY.ID`.
    pub fn responsible(&self) -> Option<u64> {
        self.assigned_by_id
            .or_else(|| self.assigned_by.as_ref().and_then(|a| a.id))
    }
}

/// `ASSIGNED_BY` of a [`SearchEntity`] (its `ID` is a string here).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AssignedBy {
    /// User id.
    #[serde(rename = "ID", default, deserialize_with = "lenient::opt_id")]
    pub id: Option<u64>,
    /// `OPENED`, `CLOSED`, `PAUSED`, `EXPIRED`, `UNAVAILABLE`, `NOT_INSTALLED`.
    #[serde(
        rename = "TIMEMAN_STATUS",
        default,
        deserialize_with = "lenient::opt_string"
    )]
    pub timeman_status: Option<String>,
    /// Extension.
    #[serde(
        rename = "USER_PHONE_INNER",
        default,
        deserialize_with = "lenient::opt_string"
    )]
    pub user_phone_inner: Option<String>,
    /// Work phone.
    #[serde(
        rename = "WORK_PHONE",
        default,
        deserialize_with = "lenient::opt_string"
    )]
    pub work_phone: Option<String>,
    /// Personal phone.
    #[serde(
        rename = "PERSONAL_PHONE",
        default,
        deserialize_with = "lenient::opt_string"
    )]
    pub personal_phone: Option<String>,
    /// Mobile.
    #[serde(
        rename = "PERSONAL_MOBILE",
        default,
        deserialize_with = "lenient::opt_string"
    )]
    pub personal_mobile: Option<String>,
}

/// One page of a list method: 50 items at most, `next` = the `start` of the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage<T> {
    /// The items.
    pub items: Vec<T>,
    /// `total` (absent with `start=-1`).
    pub total: Option<u64>,
    /// `next`, present only when there are more pages.
    pub next: Option<u64>,
}

impl<T: DeserializeOwned> ListPage<T> {
    /// Decodes `result` (an array, or an object/`[]` from PHP) plus the envelope's `total`/`next`.
    ///
    /// # Errors
    /// [`Error::Decode`] when an item does not fit `T` or `result` is not a list.
    pub fn decode(result: Value, total: Option<u64>, next: Option<u64>) -> Result<Self, Error> {
        let items = match result {
            Value::Array(a) => a,
            Value::Object(o) => o.into_iter().map(|(_, v)| v).collect(),
            Value::Null | Value::Bool(false) => Vec::new(),
            other => return Err(Error::decode(format!("expected a list, got {other}"))),
        };
        let items = items.into_iter().map(decode).collect::<Result<_, _>>()?;
        Ok(Self { items, total, next })
    }
}

/// A `user.get` item.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "UserRaw")]
pub struct User {
    /// User id.
    pub id: u64,
    /// `ACTIVE` (boolean in `user.get`, `"Y"` elsewhere); missing means `false`.
    pub active: bool,
    /// Extension (`UF_PHONE_INNER`), `None` when unset or empty.
    pub uf_phone_inner: Option<String>,
    /// `NAME LAST_NAME`, trimmed (may be empty).
    pub name: String,
}

#[derive(Deserialize)]
struct UserRaw {
    #[serde(rename = "ID", deserialize_with = "lenient::id")]
    id: u64,
    #[serde(rename = "ACTIVE", default, deserialize_with = "lenient::flag")]
    active: bool,
    #[serde(
        rename = "UF_PHONE_INNER",
        default,
        deserialize_with = "lenient::opt_string"
    )]
    uf_phone_inner: Option<String>,
    #[serde(rename = "NAME", default, deserialize_with = "lenient::opt_string")]
    name: Option<String>,
    #[serde(
        rename = "LAST_NAME",
        default,
        deserialize_with = "lenient::opt_string"
    )]
    last_name: Option<String>,
}

impl From<UserRaw> for User {
    fn from(r: UserRaw) -> Self {
        let name = [r.name, r.last_name]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" ");
        Self {
            id: r.id,
            active: r.active,
            uf_phone_inner: r.uf_phone_inner.map(|s| s.trim().to_owned()),
            name: name.trim().to_owned(),
        }
    }
}

/// A contact, lead or company from `crm.*.get` / `crm.*.list` (string ids, `PHONE` multi-field).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "ContactRaw")]
pub struct ContactOrLead {
    /// Entity id.
    pub id: u64,
    /// Responsible user.
    pub assigned_by_id: Option<u64>,
    /// `PHONE[].VALUE`, in order, empty values skipped.
    pub phones: Vec<String>,
}

#[derive(Deserialize)]
struct ContactRaw {
    #[serde(rename = "ID", deserialize_with = "lenient::id")]
    id: u64,
    #[serde(
        rename = "ASSIGNED_BY_ID",
        default,
        deserialize_with = "lenient::opt_id"
    )]
    assigned_by_id: Option<u64>,
    #[serde(rename = "PHONE", default, deserialize_with = "lenient::vec")]
    phone: Vec<MultiField>,
}

#[derive(Deserialize)]
struct MultiField {
    #[serde(rename = "VALUE", default, deserialize_with = "lenient::opt_string")]
    value: Option<String>,
}

impl From<ContactRaw> for ContactOrLead {
    fn from(r: ContactRaw) -> Self {
        Self {
            id: r.id,
            assigned_by_id: r.assigned_by_id,
            phones: r.phone.into_iter().filter_map(|f| f.value).collect(),
        }
    }
}

/// The `result` of a `batch` call: per command key, a result or an error.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchResult {
    /// Results of the sub-calls that succeeded.
    pub result: BTreeMap<String, Value>,
    /// Errors of the sub-calls that failed (classified with HTTP status 200, the status of the
    /// batch answer that carried them).
    pub result_error: BTreeMap<String, Error>,
    /// `total` of list sub-calls.
    pub result_total: BTreeMap<String, u64>,
    /// `next` of list sub-calls with more pages.
    pub result_next: BTreeMap<String, u64>,
}

impl BatchResult {
    /// Decodes the batch `result` object; `method_of(key)` names the method of a command (for
    /// [`Error::OperationLimit`] and [`Error::MethodNotFound`]).
    ///
    /// # Errors
    /// [`Error::Decode`] when a part has the wrong shape.
    pub fn decode(result: &Value, method_of: impl Fn(&str) -> String) -> Result<Self, Error> {
        if lenient::is_blank(result) {
            return Ok(Self::default());
        }
        let Value::Object(obj) = result else {
            return Err(Error::decode(format!(
                "batch result is not an object: {result}"
            )));
        };
        let part = |name: &str| php_map(obj.get(name).unwrap_or(&Value::Null), name);
        let mut out = Self::default();
        for (k, v) in part("result")? {
            out.result.insert(k, v.clone());
        }
        for (k, v) in part("result_error")? {
            let err = sub_error(v, &method_of(&k));
            out.result_error.insert(k, err);
        }
        for (name, map) in [
            ("result_total", &mut out.result_total),
            ("result_next", &mut out.result_next),
        ] {
            for (k, v) in part(name)? {
                let n = lenient_u64(v)
                    .ok_or_else(|| Error::decode(format!("{name}[{k}] is not a number: {v}")))?;
                map.insert(k, n);
            }
        }
        Ok(out)
    }

    /// The outcome of command `key`: `Some(Ok)`, `Some(Err)`, or `None` when it did not run
    /// (after a `halt`).
    pub fn get(&self, key: &str) -> Option<Result<&Value, &Error>> {
        if let Some(e) = self.result_error.get(key) {
            return Some(Err(e));
        }
        self.result.get(key).map(Ok)
    }
}

/// A PHP array as `(key, value)` pairs: an object, an array (keys 0..n-1) or `[]`/`null`.
fn php_map<'a>(v: &'a Value, name: &str) -> Result<Vec<(String, &'a Value)>, Error> {
    match v {
        Value::Object(o) => Ok(o.iter().map(|(k, v)| (k.clone(), v)).collect()),
        Value::Array(a) => Ok(a
            .iter()
            .enumerate()
            .map(|(i, v)| (i.to_string(), v))
            .collect()),
        Value::Null | Value::Bool(false) => Ok(Vec::new()),
        other => Err(Error::decode(format!("batch {name} is not a map: {other}"))),
    }
}

fn sub_error(v: &Value, method: &str) -> Error {
    let text = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    match v {
        Value::Object(_) => {
            Error::from_api_error(200, &text("error"), &text("error_description"), method)
        }
        Value::String(s) => Error::from_api_error(200, "", s, method),
        other => Error::from_api_error(200, "", &other.to_string(), method),
    }
}
