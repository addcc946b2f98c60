//! CRM (bitrix24-rest.md §7, §10.6): contacts, leads, companies; `crm.*.get/list/update`,
//! `crm.duplicate.findbycomm` and `telephony.externalCall.searchCrmEntities` (§5.6).
//!
//! PHP quirks kept: IDs are strings in entity rows and ints in findbycomm/searchCrmEntities,
//! `PHONE` is a multi-field array and must be selected explicitly in lists, findbycomm with no
//! hits is `[]`, legacy errors have `error: ""`. Each kind has its own id range (contacts from
//! 1001, leads 2001, companies 3001) so a client mixing them up gets "Not found".

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::clock::{iso, Now};
use super::envelope::{ApiError, Output};
use super::events;
use super::params::Param;
use super::query;
use super::state::State;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntityKind {
    Contact,
    Lead,
    Company,
}

impl EntityKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Contact => "CONTACT",
            Self::Lead => "LEAD",
            Self::Company => "COMPANY",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "CONTACT" => Some(Self::Contact),
            "LEAD" => Some(Self::Lead),
            "COMPANY" => Some(Self::Company),
            _ => None,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A CRM entity. `fields` holds the other stored fields (UTM_*, COMMENTS, SOURCE_DESCRIPTION,
/// OPPORTUNITY, UF_CRM_*), as set by `crm.*.update`.
#[derive(Clone, Debug)]
pub struct CrmEntity {
    pub kind: EntityKind,
    pub id: u64,
    pub title: String,
    pub name: String,
    pub last_name: String,
    pub phones: Vec<String>,
    pub assigned_by_id: u64,
    pub source_id: String,
    pub status_id: String,
    pub fields: BTreeMap<String, String>,
    /// The CALL_ID of the register call that created it (finish reassigns only these).
    pub created_by_call: Option<String>,
    pub created_unix: i64,
    /// The `fields` object of every update call, in order.
    pub updates: Vec<Value>,
}

pub type Lead = CrmEntity;
pub type Contact = CrmEntity;
pub type Company = CrmEntity;

const UTM: &[&str] = &[
    "UTM_SOURCE",
    "UTM_MEDIUM",
    "UTM_CAMPAIGN",
    "UTM_CONTENT",
    "UTM_TERM",
];
const EXTRA: &[&str] = &[
    "COMMENTS",
    "SOURCE_DESCRIPTION",
    "OPPORTUNITY",
    "CURRENCY_ID",
];

impl CrmEntity {
    /// A UTM field (`"UTM_SOURCE"`), if set.
    pub fn utm(&self, key: &str) -> Option<&str> {
        self.fields
            .get(&key.to_ascii_uppercase())
            .map(String::as_str)
    }

    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    /// The display name searchCrmEntities reports.
    fn display_name(&self) -> String {
        match self.kind {
            EntityKind::Contact => format!("{} {}", self.name, self.last_name)
                .trim()
                .to_owned(),
            _ => self.title.clone(),
        }
    }

    /// The `crm.*.get` row: string ids, `PHONE` multi-field (absent when empty).
    pub fn to_json(&self, tz: i32) -> Value {
        let date = iso(self.created_unix, tz);
        let mut v = json!({
            "ID": self.id.to_string(), "ASSIGNED_BY_ID": self.assigned_by_id.to_string(),
            "CREATED_BY_ID": "1", "MODIFY_BY_ID": "1", "DATE_CREATE": date, "DATE_MODIFY": date,
            "OPENED": "Y", "HAS_PHONE": if self.phones.is_empty() { "N" } else { "Y" },
            "HAS_EMAIL": "N", "COMMENTS": null, "SOURCE_DESCRIPTION": null,
        });
        let kind_fields = match self.kind {
            EntityKind::Contact => {
                json!({"NAME": self.name, "LAST_NAME": self.last_name, "SECOND_NAME": null,
                "TYPE_ID": "CLIENT", "SOURCE_ID": self.source_id, "LEAD_ID": null, "COMPANY_ID": null})
            }
            EntityKind::Lead => {
                json!({"TITLE": self.title, "NAME": self.name, "LAST_NAME": self.last_name,
                "STATUS_ID": self.status_id, "STATUS_SEMANTIC_ID": "P", "SOURCE_ID": self.source_id,
                "IS_RETURN_CUSTOMER": "N", "CONTACT_ID": null, "COMPANY_ID": null, "OPPORTUNITY": "0.00",
                "CURRENCY_ID": "RUB"})
            }
            EntityKind::Company => {
                json!({"TITLE": self.title, "COMPANY_TYPE": "CUSTOMER", "LEAD_ID": null})
            }
        };
        merge(&mut v, kind_fields);
        for k in UTM {
            v[*k] = Value::Null;
        }
        for (k, val) in &self.fields {
            v[k.as_str()] = json!(val);
        }
        if !self.phones.is_empty() {
            v["PHONE"] = Value::Array(self.phones.iter().enumerate().map(|(i, p)| {
                json!({"ID": (self.id * 10 + i as u64).to_string(), "VALUE_TYPE": "WORK", "VALUE": p, "TYPE_ID": "PHONE"})
            }).collect());
        }
        v
    }
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, from) {
        a.extend(b);
    }
}

#[derive(Debug)]
pub struct Crm {
    pub entities: Vec<CrmEntity>,
    next: [u64; 3],
}

impl Default for Crm {
    fn default() -> Self {
        Self {
            entities: Vec::new(),
            next: [1001, 2001, 3001],
        }
    }
}

impl Crm {
    pub fn add(&mut self, kind: EntityKind, phone: &str, assigned_by_id: u64, now: Now) -> u64 {
        let id = self.next[kind.index()];
        self.next[kind.index()] += 1;
        let title = format!("{} {}", kind.name().to_lowercase(), id);
        self.entities.push(CrmEntity {
            kind,
            id,
            title: title.clone(),
            name: title,
            last_name: String::new(),
            phones: if phone.is_empty() {
                vec![]
            } else {
                vec![phone.to_owned()]
            },
            assigned_by_id,
            source_id: "CALL".into(),
            status_id: "NEW".into(),
            fields: BTreeMap::new(),
            created_by_call: None,
            created_unix: now.unix_secs(),
            updates: Vec::new(),
        });
        id
    }

    pub fn find(&self, kind: EntityKind, id: u64) -> Option<&CrmEntity> {
        self.entities.iter().find(|e| e.kind == kind && e.id == id)
    }

    pub fn find_mut(&mut self, kind: EntityKind, id: u64) -> Option<&mut CrmEntity> {
        self.entities
            .iter_mut()
            .find(|e| e.kind == kind && e.id == id)
    }

    /// Entities whose phone normalises to `norm`: contacts, then leads, then companies.
    pub fn by_phone(&self, norm: &str) -> Vec<&CrmEntity> {
        let mut hits: Vec<&CrmEntity> = self
            .entities
            .iter()
            .filter(|e| e.phones.iter().any(|p| normalize_phone(p) == norm))
            .collect();
        hits.sort_by_key(|e| (e.kind.index(), e.id));
        hits
    }

    pub fn of_kind(&self, kind: EntityKind) -> Vec<CrmEntity> {
        self.entities
            .iter()
            .filter(|e| e.kind == kind)
            .cloned()
            .collect()
    }
}

/// Digits of a phone number with the extension cut off (`,`, `;`, `#`, `ext`, `доб`, `x`);
/// a Russian `8XXXXXXXXXX` becomes `7XXXXXXXXXX`.
pub fn normalize_phone(s: &str) -> String {
    let lower = s.to_lowercase();
    let cut = ["ext", "доб", "#", ",", ";", "x"]
        .iter()
        .filter_map(|m| lower.find(m))
        .min()
        .unwrap_or(lower.len());
    let digits: String = lower[..cut].chars().filter(char::is_ascii_digit).collect();
    if digits.len() == 11 && digits.starts_with('8') {
        return format!("7{}", &digits[1..]);
    }
    digits
}

fn entity_id(p: &Param) -> Result<u64, ApiError> {
    p.get_any(&["id", "ID", "Id"])
        .and_then(Param::as_u64)
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::legacy("ID is not defined or invalid."))
}

/// `crm.{contact,lead,company}.get`.
pub fn get(st: &State, kind: EntityKind, p: &Param) -> Result<Value, ApiError> {
    let id = entity_id(p)?;
    let e = st
        .crm
        .find(kind, id)
        .ok_or_else(|| ApiError::legacy("Not found"))?;
    Ok(e.to_json(st.knobs.tz_offset))
}

/// `crm.{contact,lead,company}.list`: filter (PHONE exact on the stored value), order, select
/// (PHONE only when named), start; 50 per page with total/next.
pub fn list(st: &State, kind: EntityKind, p: &Param) -> Result<Output, ApiError> {
    let filter = p
        .get_any(&["filter", "FILTER", "Filter"])
        .cloned()
        .unwrap_or_else(Param::map);
    let mut rows: Vec<Value> = st
        .crm
        .entities
        .iter()
        .filter(|e| e.kind == kind)
        .map(|e| e.to_json(st.knobs.tz_offset))
        .filter(|row| query::matches(row, &filter))
        .collect();
    let mut order = query::order_keys(p.get_any(&["order", "ORDER", "Order"]));
    order.push(("ID".into(), false));
    query::sort(&mut rows, &order);
    let select = query::select_list(p.get_any(&["select", "SELECT", "Select"]));
    let rows = rows
        .into_iter()
        .map(|r| query::project(r, &select, &["PHONE", "EMAIL", "WEB", "IM"]))
        .collect();
    Ok(query::page(rows, p.get_any(&["start", "START"])))
}

/// `crm.{contact,lead,company}.update`: known fields are stored, unknown ones ignored; fires
/// ONCRM<KIND>UPDATE; returns `true`.
pub fn update(st: &mut State, kind: EntityKind, p: &Param, now: Now) -> Result<Value, ApiError> {
    let id = entity_id(p)?;
    let fields = p
        .get_any(&["fields", "FIELDS", "Fields", "arFields"])
        .cloned()
        .unwrap_or_else(Param::map);
    let e = st
        .crm
        .find_mut(kind, id)
        .ok_or_else(|| ApiError::legacy("Not found"))?;
    for (key, v) in fields.entries() {
        apply_field(e, &key.to_ascii_uppercase(), v);
    }
    e.updates.push(fields.to_json());
    let event = format!("ONCRM{}UPDATE", kind.name());
    events::fire(
        st,
        &event,
        vec![("FIELDS[ID]".into(), id.to_string())],
        &format!("{}:{id}", kind.name()),
        now,
    );
    Ok(json!(true))
}

fn apply_field(e: &mut CrmEntity, key: &str, v: &Param) {
    let text = v.text().unwrap_or_default();
    match key {
        "TITLE" => e.title = text,
        "NAME" => e.name = text,
        "LAST_NAME" => e.last_name = text,
        "SOURCE_ID" => e.source_id = text,
        "STATUS_ID" => e.status_id = text,
        "ASSIGNED_BY_ID" => e.assigned_by_id = v.as_u64().unwrap_or(e.assigned_by_id),
        k if UTM.contains(&k) || EXTRA.contains(&k) || k.starts_with("UF_CRM_") => {
            if matches!(v, Param::Null) {
                e.fields.remove(k);
            } else {
                e.fields.insert(k.to_owned(), text);
            }
        }
        _ => {}
    }
}

/// `crm.duplicate.findbycomm` (§7.1).
pub fn find_by_comm(st: &State, p: &Param) -> Result<Value, ApiError> {
    let ty = p.get_any(&["type", "TYPE"]).and_then(Param::nonempty);
    let ty = ty
        .ok_or_else(|| ApiError::legacy("Communication type is not defined."))?
        .to_ascii_uppercase();
    if ty != "PHONE" && ty != "EMAIL" {
        return Err(ApiError::legacy(format!(
            "Communication type '{ty}' is not supported in current context."
        )));
    }
    let values = p.get_any(&["values", "VALUES"]).filter(|v| v.is_array());
    let values = values.ok_or_else(|| ApiError::legacy("Communication values is not defined."))?;
    let kinds = match p
        .get_any(&["entity_type", "ENTITY_TYPE"])
        .and_then(Param::nonempty)
    {
        None => vec![EntityKind::Lead, EntityKind::Contact, EntityKind::Company],
        Some(t) if t.eq_ignore_ascii_case("DEAL") => {
            return Err(ApiError::legacy(
                "Deal is not supported in current context.",
            ))
        }
        Some(t) => vec![EntityKind::parse(&t).ok_or_else(|| {
            ApiError::legacy(format!(
                "Entity type '{t}' is not supported in current context."
            ))
        })?],
    };
    let wanted: Vec<String> = values
        .items()
        .iter()
        .filter(|v| v.is_str())
        .filter_map(|v| v.nonempty())
        .take(20)
        .map(|v| normalize_phone(&v))
        .filter(|v| !v.is_empty() && ty == "PHONE")
        .collect();
    let mut out = Vec::new();
    for kind in kinds {
        let ids: Vec<u64> = st
            .crm
            .entities
            .iter()
            .filter(|e| {
                e.kind == kind
                    && e.phones
                        .iter()
                        .any(|ph| wanted.contains(&normalize_phone(ph)))
            })
            .map(|e| e.id)
            .take(20)
            .collect();
        if !ids.is_empty() {
            out.push((kind.name().to_owned(), json!(ids)));
        }
    }
    Ok(super::envelope::php_map(out))
}

/// `telephony.externalCall.searchCrmEntities` (§5.6): mixed int/string types on purpose.
pub fn search_crm_entities(st: &State, p: &Param) -> Result<Value, ApiError> {
    let phone = p.get("PHONE_NUMBER").and_then(Param::nonempty);
    let phone = phone.ok_or_else(|| ApiError::legacy("PHONE_NUMBER is empty"))?;
    let rows = st
        .crm
        .by_phone(&normalize_phone(&phone))
        .into_iter()
        .map(|e| {
            let user = st.users.get(e.assigned_by_id);
            json!({
                "CRM_ENTITY_TYPE": e.kind.name(),
                "CRM_ENTITY_ID": e.id,
                "ASSIGNED_BY_ID": e.assigned_by_id,
                "NAME": e.display_name(),
                "ASSIGNED_BY": {
                    "ID": e.assigned_by_id.to_string(),
                    "TIMEMAN_STATUS": user.map_or("UNAVAILABLE", |u| u.timeman_status.as_str()),
                    "USER_PHONE_INNER": user.and_then(|u| u.extension.clone()),
                    "WORK_PHONE": user.and_then(|u| u.work_phone.clone()),
                    "PERSONAL_PHONE": null,
                    "PERSONAL_MOBILE": user.and_then(|u| u.personal_mobile.clone()),
                }
            })
        });
    Ok(Value::Array(rows.collect()))
}
