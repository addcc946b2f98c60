//! CRM methods (scope `crm`) on contacts, companies and leads: [`Get`], [`List`], [`LeadUpdate`].
//!
//! The legacy `crm.contact.*`, `crm.company.*`, `crm.lead.*` methods are deprecated in favour of
//! `crm.item.*` but work on every portal. Their ids and numbers come as strings (`"ID":"43"`);
//! the results here decode them leniently. A missing entity is an error with an empty code and
//! the description `Not found` ([`is_not_found`]).

use serde_json::Value;

use crate::methods::{method, Method};
use crate::{ContactOrLead, Error, ListPage, Params, Response};

/// A CRM entity kind that holds phone numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntityKind {
    /// `CONTACT`.
    Contact,
    /// `COMPANY`.
    Company,
    /// `LEAD`.
    Lead,
}

impl EntityKind {
    /// All three.
    pub const ALL: [Self; 3] = [Self::Contact, Self::Company, Self::Lead];

    /// `CONTACT`, `COMPANY`, `LEAD` in any case (`CRM_ENTITY_TYPE`, event names).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        Self::ALL
            .into_iter()
            .find(|k| k.code().eq_ignore_ascii_case(s))
    }

    /// `CONTACT`, `COMPANY`, `LEAD`.
    pub fn code(self) -> &'static str {
        match self {
            Self::Contact => "CONTACT",
            Self::Company => "COMPANY",
            Self::Lead => "LEAD",
        }
    }

    /// `crm.<kind>.get`.
    pub fn get_method(self) -> &'static str {
        match self {
            Self::Contact => "crm.contact.get",
            Self::Company => "crm.company.get",
            Self::Lead => "crm.lead.get",
        }
    }

    /// `crm.<kind>.list`.
    pub fn list_method(self) -> &'static str {
        match self {
            Self::Contact => "crm.contact.list",
            Self::Company => "crm.company.list",
            Self::Lead => "crm.lead.list",
        }
    }
}

/// True for the error a `crm.*.get` of a missing (or deleted) entity answers.
pub fn is_not_found(e: &Error) -> bool {
    matches!(e, Error::Api { description, .. } if description.trim().eq_ignore_ascii_case("Not found"))
}

/// `crm.<kind>.get`: one entity. Result: [`ContactOrLead`] (id, responsible user, phones); for
/// other fields call [`Client::call`](crate::Client::call) with [`Method::params`] and decode the
/// [`Response`] yourself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Get {
    /// Which kind.
    pub kind: EntityKind,
    /// Its id.
    pub id: u64,
}

impl Method for Get {
    type Output = ContactOrLead;

    fn name(&self) -> &'static str {
        self.kind.get_method()
    }

    fn params(&self) -> Params {
        Params::new().set("id", self.id)
    }

    fn decode(resp: Response) -> Result<ContactOrLead, Error> {
        resp.decode()
    }
}

/// `crm.<kind>.list`: one page of 50 entities from `start`. Result: the page's rows as JSON
/// (decode each with [`decode`](crate::decode), skipping the odd one), `total` and `next`.
///
/// Multi-fields such as `PHONE` come only when named in `select`; a `PHONE` filter matches the
/// stored text exactly, so search numbers with `telephony.externalCall.searchCrmEntities`.
#[derive(Debug, Clone, PartialEq)]
pub struct List {
    /// Which kind.
    pub kind: EntityKind,
    /// Fields to return (`ID`, `ASSIGNED_BY_ID`, `PHONE`); empty: Bitrix24's default.
    pub select: Vec<String>,
    /// `filter` (`{">ID": 10}`); empty: none.
    pub filter: Params,
    /// `order` (`{"ID": "ASC"}`); empty: none.
    pub order: Params,
    /// The offset (a multiple of 50; the previous page's `next`).
    pub start: u64,
}

impl List {
    /// The first page of `kind` with `select`, ordered by ascending `ID` (stable offsets).
    pub fn by_id<I, S>(kind: EntityKind, select: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            kind,
            select: select.into_iter().map(Into::into).collect(),
            filter: Params::new(),
            order: Params::new().set("ID", "ASC"),
            start: 0,
        }
    }
}

impl Method for List {
    type Output = ListPage<Value>;

    fn name(&self) -> &'static str {
        self.kind.list_method()
    }

    fn params(&self) -> Params {
        let mut p = Params::new();
        if !self.select.is_empty() {
            p = p.set_list("select", self.select.iter().map(String::as_str));
        }
        if !self.filter.is_empty() {
            p = p.set_map("filter", self.filter.clone());
        }
        if !self.order.is_empty() {
            p = p.set_map("order", self.order.clone());
        }
        p.set("start", self.start)
    }

    fn decode(resp: Response) -> Result<ListPage<Value>, Error> {
        resp.into_page()
    }
}

/// `crm.lead.update`: changes the given fields of a lead (unknown fields are ignored by
/// Bitrix24). Result: `true`.
#[derive(Debug, Clone, PartialEq)]
pub struct LeadUpdate {
    /// The lead.
    pub id: u64,
    /// Only the fields to change (`UTM_SOURCE`, `ASSIGNED_BY_ID`, …).
    pub fields: Params,
}

impl LeadUpdate {
    fn to_params(&self) -> Params {
        Params::new()
            .set("id", self.id)
            .set_map("fields", self.fields.clone())
    }
}

method!(LeadUpdate, "crm.lead.update", bool);
