//! The personal-manager index from Bitrix24 (DESIGN.md §4 item 4): the full sync, on demand
//! (`POST /api/v1/portals/{id}/index/sync`) and once per active portal at start-up; the reading
//! of active users for the mapping import; the entry point for CRM change events.
//!
//! * [`full_sync`] pages `crm.contact.list`, `crm.company.list` and `crm.lead.list` (`select`
//!   ID, ASSIGNED_BY_ID, PHONE; 50 per page by `start`, ordered by ID) with the `bitrix24` crate's
//!   [`Pager`]: the first pages of all three travel in one `batch`, which tells every `total`; the
//!   other pages follow, up to 50 page commands per `batch`. N entities cost 1 + ⌈(N/50 - 3)/50⌉
//!   requests (~1 per 2,500 entities), paced at 1 request/s: half of the portal's 2 req/s
//!   budget, the outbox worker keeps the other half.
//! * [`IndexBuilder`] (pure) turns entities into number -> user rows: contact beats company beats
//!   lead; within one kind the oldest entity (lowest ID) wins, whatever order pages arrive in.
//!   Numbers are normalised with [`normalize_number`]; values that are not phone numbers, and
//!   phones of entities without a responsible user, are skipped and counted.
//! * [`replace_index`] swaps a portal's rows: the store first (the snapshot a restart loads), then
//!   memory.
//! * [`IndexSync`] is the running service: at most one sync per portal at a time, start-up syncs
//!   retried with backoff, the look-up on a miss ([`super::lookup`]) and
//!   [`IndexSync::refresh_entity`] for CRM change events.
//!
//! Offset paging over a CRM that changes meanwhile may miss or repeat an entity added or deleted
//! mid-sync; CRM events and the look-up on a miss close that gap. Errors: [`CrmError`] from the
//! fetches, [`SyncError`] from the service (which reaches portals through [`super::Tokens`]).

mod service;

use std::collections::HashMap;
use std::time::Duration;

use bitrix24::crm::{EntityKind, List};
use bitrix24::list::{ListJob, Pager, DEFAULT_ATTEMPTS};
use bitrix24::user::UserGet;
use bitrix24::{decode, ContactOrLead, User};
use serde::Serialize;
use serde_json::Value;

use super::{CrmClient, CrmError, Endpoint};
use crate::directory::Directory;
use crate::phone::normalize_number;
use crate::settings::{PortalId, UserId};
use crate::store::{StoreError, StoreHandle};

pub use service::{IndexSync, SyncError};

/// Requests per second and burst of one sync or import: half of the portal's budget.
const PACE: (f64, u32) = (1.0, 2);
/// Tries of one request on a retryable error (rate limit, 5xx, network).
const ATTEMPTS: u32 = DEFAULT_ATTEMPTS;
/// First and longest wait before a failed start-up sync is tried again.
const RETRY_MIN: Duration = Duration::from_secs(30);
const RETRY_MAX: Duration = Duration::from_secs(30 * 60);

/// A CRM entity kind that can own a phone number. The order is the precedence: a contact's
/// responsible user beats a company's, which beats a lead's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CrmKind {
    /// `CONTACT`.
    Contact,
    /// `COMPANY`.
    Company,
    /// `LEAD`.
    Lead,
}

impl CrmKind {
    /// All kinds, in precedence order.
    pub const ALL: [Self; 3] = [Self::Contact, Self::Company, Self::Lead];

    /// `CONTACT`, `COMPANY`, `LEAD` in any case (`CRM_ENTITY_TYPE`, event names).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        Self::ALL
            .into_iter()
            .find(|k| k.key().eq_ignore_ascii_case(s))
    }

    fn key(self) -> &'static str {
        match self {
            Self::Contact => "contact",
            Self::Company => "company",
            Self::Lead => "lead",
        }
    }

    /// The `bitrix24` crate's kind (its methods' names).
    pub fn entity(self) -> EntityKind {
        match self {
            Self::Contact => EntityKind::Contact,
            Self::Company => EntityKind::Company,
            Self::Lead => EntityKind::Lead,
        }
    }
}

/// What a full sync read and built. Serialises as the API answer (without the rows).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SyncReport {
    /// Distinct numbers in the new index.
    pub numbers: usize,
    /// Contacts read.
    pub contacts: usize,
    /// Companies read.
    pub companies: usize,
    /// Leads read.
    pub leads: usize,
    /// Phone values skipped: not a phone number, or the entity has no responsible user (and
    /// rows that did not decode).
    pub skipped: usize,
    /// HTTP requests made to Bitrix24 (a `batch` is one; retries count).
    pub requests: usize,
    /// Number -> user, sorted by number: what the caller installs with [`replace_index`].
    #[serde(skip)]
    pub rows: Vec<(u64, UserId)>,
}

/// Number -> responsible user with the precedence applied (pure).
#[derive(Debug, Default)]
pub(crate) struct IndexBuilder {
    /// The best claim so far per number: (kind, entity id, user); smaller wins.
    best: HashMap<u64, (CrmKind, u64, UserId)>,
    skipped: usize,
}

impl IndexBuilder {
    /// Adds the phones of one entity.
    pub(crate) fn add(&mut self, kind: CrmKind, entity: &ContactOrLead) {
        let Some(user) = entity.assigned_by_id else {
            self.skipped += entity.phones.len();
            return;
        };
        for phone in &entity.phones {
            let Some(number) = normalize_number(phone) else {
                self.skipped += 1;
                continue;
            };
            let claim = (kind, entity.id, user);
            self.best
                .entry(number.as_u64())
                .and_modify(|best| {
                    if (claim.0, claim.1) < (best.0, best.1) {
                        *best = claim;
                    }
                })
                .or_insert(claim);
        }
    }

    /// Adds one list row; a row that does not decode is skipped.
    fn add_row(&mut self, kind: CrmKind, row: Value) {
        match decode::<ContactOrLead>(row) {
            Ok(entity) => self.add(kind, &entity),
            Err(_) => self.skipped += 1,
        }
    }

    /// Phone values skipped so far.
    pub(crate) fn skipped(&self) -> usize {
        self.skipped
    }

    /// The rows, sorted by number.
    pub(crate) fn into_rows(self) -> Vec<(u64, UserId)> {
        let mut rows: Vec<_> = self.best.into_iter().map(|(n, (_, _, u))| (n, u)).collect();
        rows.sort_unstable();
        rows
    }
}

/// Reads every contact, company and lead of the portal at `ep` and builds its index rows.
/// Nothing is applied: install `rows` with [`replace_index`].
///
/// # Errors
/// The first [`CrmError`] of a request (after retries) or of a page command; nothing is returned
/// half-built.
///
/// # Cancel safety
/// Dropping the future abandons the sync; nothing was changed.
pub async fn full_sync(
    client: &CrmClient,
    ep: &Endpoint,
    portal: PortalId,
) -> Result<SyncReport, CrmError> {
    let mut req = pager(client, ep);
    let jobs = CrmKind::ALL.map(|k| ListJob::of(k.key(), &List::by_id(k.entity(), ["ID", "ASSIGNED_BY_ID", "PHONE"])));
    let lists = req.read_all(&jobs).await?;
    let mut builder = IndexBuilder::default();
    let mut read = [0usize; 3];
    for ((kind, rows), count) in CrmKind::ALL.into_iter().zip(lists).zip(&mut read) {
        *count = rows.len();
        for row in rows {
            builder.add_row(kind, row);
        }
    }
    let skipped = builder.skipped();
    let rows = builder.into_rows();
    tracing::debug!(
        portal,
        numbers = rows.len(),
        requests = req.requests(),
        "personal-manager index read from Bitrix24"
    );
    Ok(SyncReport {
        numbers: rows.len(),
        contacts: read[0],
        companies: read[1],
        leads: read[2],
        skipped,
        requests: req.requests(),
        rows,
    })
}

/// Every active user of the portal at `ep` (`user.get`, `FILTER[ACTIVE]`, all pages, sorted by
/// ID), and the requests made. Users that do not decode, or are not active after all, are left out.
///
/// # Errors
/// As [`full_sync`].
pub async fn active_users(
    client: &CrmClient,
    ep: &Endpoint,
) -> Result<(Vec<User>, usize), CrmError> {
    let mut req = pager(client, ep);
    let rows = req.read_all(&[ListJob::of("users", &UserGet::active())]).await?.pop().unwrap_or_default();
    let mut users: Vec<User> = rows
        .into_iter()
        .filter_map(|r| decode::<User>(r).ok())
        .filter(|u| u.active)
        .collect();
    users.sort_by_key(|u| u.id);
    users.dedup_by_key(|u| u.id);
    Ok((users, req.requests()))
}

/// Replaces every index row of `portal` with `rows`: the store first, then memory. Between the
/// two memory steps (a clear, then the inserts) a look-up may briefly miss.
///
/// # Errors
/// The store failed; memory is unchanged.
pub async fn replace_index(
    store: &StoreHandle,
    directory: &Directory,
    portal: PortalId,
    rows: Vec<(u64, UserId)>,
) -> Result<(), StoreError> {
    let rows = store
        .run(move |s| {
            s.clear_index(portal)?;
            s.upsert_index(portal, &rows)?;
            Ok(rows)
        })
        .await?;
    let index = directory.index();
    index.clear_portal(portal);
    index.insert_all(portal, &rows);
    Ok(())
}

/// The requests of one sync or import: paced at half the portal's budget, retried, counted.
fn pager<'a>(client: &'a CrmClient, ep: &'a Endpoint) -> Pager<'a> {
    Pager::new(client, ep, PACE.0, PACE.1).attempts(ATTEMPTS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(id: u64, user: Option<u64>, phones: &[&str]) -> ContactOrLead {
        ContactOrLead {
            id,
            assigned_by_id: user,
            phones: phones.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    #[test]
    fn contact_beats_company_beats_lead_whatever_the_order() {
        let mut b = IndexBuilder::default();
        b.add(
            CrmKind::Lead,
            &entity(
                2001,
                Some(3),
                &["+7 916 000-00-01", "89160000002", "79160000003"],
            ),
        );
        b.add(
            CrmKind::Company,
            &entity(3001, Some(2), &["79160000001", "+79160000002"]),
        );
        b.add(
            CrmKind::Contact,
            &entity(1001, Some(1), &["8 (916) 000-00-01"]),
        );
        assert_eq!(
            b.into_rows(),
            [
                (79_160_000_001, 1),
                (79_160_000_002, 2),
                (79_160_000_003, 3)
            ]
        );
    }

    #[test]
    fn within_a_kind_the_oldest_entity_wins() {
        let mut b = IndexBuilder::default();
        b.add(CrmKind::Contact, &entity(1005, Some(5), &["79160000001"]));
        b.add(CrmKind::Contact, &entity(1002, Some(2), &["79160000001"]));
        b.add(CrmKind::Contact, &entity(1009, Some(9), &["79160000001"]));
        assert_eq!(b.into_rows(), [(79_160_000_001, 2)]);
    }

    #[test]
    fn bad_phones_and_entities_without_a_manager_are_skipped_and_counted() {
        let mut b = IndexBuilder::default();
        b.add(
            CrmKind::Contact,
            &entity(1001, Some(1), &["abc", "101", "79160000001"]),
        );
        b.add(
            CrmKind::Lead,
            &entity(2001, None, &["79160000002", "79160000003"]),
        );
        b.add_row(CrmKind::Lead, serde_json::json!({"ID": "x"}));
        assert_eq!(b.skipped(), 5);
        assert_eq!(b.into_rows(), [(79_160_000_001, 1)]);
    }

    #[test]
    fn kinds_parse_in_any_case() {
        assert_eq!(CrmKind::parse("CONTACT"), Some(CrmKind::Contact));
        assert_eq!(CrmKind::parse(" company"), Some(CrmKind::Company));
        assert_eq!(CrmKind::parse("Lead"), Some(CrmKind::Lead));
        assert_eq!(CrmKind::parse("DEAL"), None);
    }
}
