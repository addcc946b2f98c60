//! External lines (bitrix24-rest.md §5.7, §10.5 item 21): `telephony.externalLine.add/get/
//! update/delete`, per app (or webhook). `register` auto-creates unknown LINE_NUMBERs.

use serde_json::{json, Value};

use super::auth::Caller;
use super::envelope::ApiError;
use super::params::Param;
use super::telephony::Telephony;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// `Owner::key()` of the app or webhook the line belongs to.
    pub owner: String,
    pub id: u64,
    pub number: String,
    pub name: String,
    pub crm_auto_create: bool,
}

impl Line {
    fn to_json(&self) -> Value {
        json!({
            "NUMBER": self.number,
            "NAME": self.name,
            "CRM_AUTO_CREATE": if self.crm_auto_create { "Y" } else { "N" },
        })
    }
}

/// The owner's line with this number, created (NAME = number, CRM_AUTO_CREATE=Y) if unknown.
pub fn ensure<'a>(tel: &'a mut Telephony, owner: &str, number: &str) -> &'a Line {
    if let Some(i) = tel
        .lines
        .iter()
        .position(|l| l.owner == owner && l.number == number)
    {
        return &tel.lines[i];
    }
    let id = tel.next();
    tel.lines.push(Line {
        owner: owner.to_owned(),
        id,
        number: number.to_owned(),
        name: number.to_owned(),
        crm_auto_create: true,
    });
    tel.lines.last().expect("just pushed")
}

fn number(p: &Param) -> Result<String, ApiError> {
    p.get("NUMBER")
        .and_then(Param::nonempty)
        .ok_or_else(|| ApiError::legacy("NUMBER should not be empty"))
}

fn position(tel: &Telephony, owner: &str, number: &str) -> Result<usize, ApiError> {
    tel.lines
        .iter()
        .position(|l| l.owner == owner && l.number == number)
        .ok_or_else(|| ApiError::legacy(format!("Could not find line with number {number}")))
}

/// `telephony.externalLine.add` → `{"ID": n}`.
pub fn add(tel: &mut Telephony, caller: &Caller, p: &Param) -> Result<Value, ApiError> {
    let number = number(p)?;
    let owner = caller.owner.key();
    if tel
        .lines
        .iter()
        .any(|l| l.owner == owner && l.number == number)
    {
        return Err(ApiError::legacy("Line already exists"));
    }
    let id = tel.next();
    tel.lines.push(Line {
        owner,
        id,
        name: p.get("NAME").and_then(Param::text).unwrap_or_default(),
        number,
        crm_auto_create: p
            .get("CRM_AUTO_CREATE")
            .and_then(Param::flag)
            .unwrap_or(true),
    });
    Ok(json!({ "ID": id }))
}

/// `telephony.externalLine.get` → the caller's lines.
pub fn get(tel: &Telephony, caller: &Caller) -> Value {
    let owner = caller.owner.key();
    Value::Array(
        tel.lines
            .iter()
            .filter(|l| l.owner == owner)
            .map(Line::to_json)
            .collect(),
    )
}

/// `telephony.externalLine.update` → `{"ID": "n"}` (a string here).
pub fn update(tel: &mut Telephony, caller: &Caller, p: &Param) -> Result<Value, ApiError> {
    let number = number(p)?;
    let name = p.get("NAME").and_then(Param::text);
    let auto = p.get("CRM_AUTO_CREATE").and_then(Param::flag);
    let i = position(tel, &caller.owner.key(), &number)?;
    if name.is_none() && auto.is_none() {
        return Err(ApiError::legacy("There are no fields to update"));
    }
    let line = &mut tel.lines[i];
    if let Some(n) = name {
        line.name = n;
    }
    if let Some(a) = auto {
        line.crm_auto_create = a;
    }
    Ok(json!({ "ID": line.id.to_string() }))
}

/// `telephony.externalLine.delete` → `[]`.
pub fn delete(tel: &mut Telephony, caller: &Caller, p: &Param) -> Result<Value, ApiError> {
    let number = number(p)?;
    let i = position(tel, &caller.owner.key(), &number)?;
    tel.lines.remove(i);
    Ok(json!([]))
}
