//! The personal-manager index from Bitrix24 (DESIGN.md §4 item 4): the full sync, on demand
//! (`POST /api/v1/portals/{id}/index/sync`) and once per active portal at start-up; the reading
//! of active users for the mapping import; the entry point for CRM change events.
//!
//! * [`full_sync`] pages `crm.contact.list`, `crm.company.list` and `crm.lead.list` (`select`
//!   ID, ASSIGNED_BY_ID, PHONE; 50 per page by `start`, ordered by ID; bitrix24-rest.md §7.3).
//!   The first pages of all three travel in one `batch`, which tells every `total`; the other
//!   pages follow, up to 50 page commands per `batch`. N entities cost 1 + ⌈(N/50 - 3)/50⌉
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

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use super::client::{BatchCommand, CrmClient, Endpoint, MAX_BATCH_COMMANDS};
use super::error::CrmError;
use super::limiter::LeakyBucket;
use super::params::Params;
use super::types::{decode, BatchResult, ContactOrLead, User};
use crate::routing::number::normalize_number;
use crate::routing::Directory;
use crate::settings::{PortalId, UserId};
use crate::store::{StoreError, StoreHandle};

pub use service::{IndexSync, SyncError};

/// Bitrix24's fixed list page size.
const PAGE: u64 = 50;
/// Requests per second and burst of one sync or import: half of the portal's budget.
const PACE: (f64, u32) = (1.0, 2);
/// Tries of one request on a retryable error (rate limit, 5xx, network).
const ATTEMPTS: u32 = 3;
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

    fn list_method(self) -> &'static str {
        match self {
            Self::Contact => "crm.contact.list",
            Self::Company => "crm.company.list",
            Self::Lead => "crm.lead.list",
        }
    }

    fn get_method(self) -> &'static str {
        match self {
            Self::Contact => "crm.contact.get",
            Self::Company => "crm.company.get",
            Self::Lead => "crm.lead.get",
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
    let mut req = Requests::new(client, ep);
    let params = Params::new()
        .set_list("select", ["ID", "ASSIGNED_BY_ID", "PHONE"])
        .set_map("order", Params::new().set("ID", "ASC"));
    let jobs = CrmKind::ALL.map(|k| ListJob {
        key: k.key(),
        method: k.list_method(),
        params: params.clone(),
    });
    let lists = fetch_lists(&mut req, &jobs).await?;
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
        requests = req.made,
        "personal-manager index read from Bitrix24"
    );
    Ok(SyncReport {
        numbers: rows.len(),
        contacts: read[0],
        companies: read[1],
        leads: read[2],
        skipped,
        requests: req.made,
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
    let mut req = Requests::new(client, ep);
    let params = Params::new()
        .set_map("FILTER", Params::new().set("ACTIVE", "true"))
        .set("sort", "ID")
        .set("order", "ASC");
    let job = ListJob {
        key: "users",
        method: "user.get",
        params,
    };
    let rows = fetch_lists(&mut req, std::slice::from_ref(&job))
        .await?
        .pop()
        .unwrap_or_default();
    let mut users: Vec<User> = rows
        .into_iter()
        .filter_map(|r| decode::<User>(r).ok())
        .filter(|u| u.active)
        .collect();
    users.sort_by_key(|u| u.id);
    users.dedup_by_key(|u| u.id);
    Ok((users, req.made))
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

/// One list to read completely: `method` with `params` (`start` is added per page).
struct ListJob<'a> {
    /// Prefix of its batch command keys.
    key: &'a str,
    method: &'a str,
    params: Params,
}

/// The requests of one sync or import: paced, retried, counted.
struct Requests<'a> {
    client: &'a CrmClient,
    ep: &'a Endpoint,
    bucket: LeakyBucket,
    made: usize,
}

impl<'a> Requests<'a> {
    fn new(client: &'a CrmClient, ep: &'a Endpoint) -> Self {
        Self {
            client,
            ep,
            bucket: LeakyBucket::new(PACE.0, PACE.1),
            made: 0,
        }
    }

    async fn batch(&mut self, cmds: &[BatchCommand]) -> Result<BatchResult, CrmError> {
        let mut attempt = 1;
        let mut backoff = Duration::from_secs(1);
        loop {
            self.pace().await;
            self.made += 1;
            match self.client.batch(self.ep, cmds, false).await {
                Err(e) if e.retryable() && attempt < ATTEMPTS => {
                    if matches!(e, CrmError::RateLimited) {
                        self.bucket.penalise(tokio::time::Instant::now().into_std());
                    }
                    tokio::time::sleep(e.retry_after_hint().unwrap_or(backoff).max(backoff)).await;
                    backoff *= 2;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn pace(&mut self) {
        while let Err(at) = self.bucket.acquire(tokio::time::Instant::now().into_std()) {
            tokio::time::sleep_until(at.into()).await;
        }
    }
}

/// Reads every page of each job: the first pages of all jobs in one batch (they tell `total`),
/// then the remaining pages, up to 50 per batch. Returns the rows per job, in page order.
async fn fetch_lists(
    req: &mut Requests<'_>,
    jobs: &[ListJob<'_>],
) -> Result<Vec<Vec<Value>>, CrmError> {
    let first: Vec<BatchCommand> = jobs.iter().map(|j| page_cmd(j, 0)).collect();
    let mut answer = req.batch(&first).await?;
    let mut pages: Vec<BTreeMap<u64, Vec<Value>>> = vec![BTreeMap::new(); jobs.len()];
    let mut rest = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        let key = page_key(job.key, 0);
        let total = answer.result_total.get(&key).copied().unwrap_or(0);
        pages[i].insert(0, take_page(&mut answer, &key)?);
        rest.extend((PAGE..total).step_by(PAGE as usize).map(|start| (i, start)));
    }
    for chunk in rest.chunks(MAX_BATCH_COMMANDS) {
        let cmds: Vec<BatchCommand> = chunk
            .iter()
            .map(|&(i, start)| page_cmd(&jobs[i], start))
            .collect();
        let mut answer = req.batch(&cmds).await?;
        for &(i, start) in chunk {
            pages[i].insert(
                start,
                take_page(&mut answer, &page_key(jobs[i].key, start))?,
            );
        }
    }
    Ok(pages
        .into_iter()
        .map(|p| p.into_values().flatten().collect())
        .collect())
}

fn page_key(prefix: &str, start: u64) -> String {
    format!("{prefix}_{start}")
}

fn page_cmd(job: &ListJob<'_>, start: u64) -> BatchCommand {
    BatchCommand::new(
        page_key(job.key, start),
        job.method,
        job.params.clone().set("start", start),
    )
}

/// The rows of page command `key` (a list arrives as an array, or as an object from PHP).
fn take_page(answer: &mut BatchResult, key: &str) -> Result<Vec<Value>, CrmError> {
    if let Some(e) = answer.result_error.remove(key) {
        return Err(e);
    }
    match answer.result.remove(key) {
        Some(Value::Array(rows)) => Ok(rows),
        Some(Value::Object(rows)) => Ok(rows.into_iter().map(|(_, v)| v).collect()),
        Some(_) => Ok(Vec::new()),
        None => Err(CrmError::decode(format!("the batch answer lacks `{key}`"))),
    }
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

    #[test]
    fn page_answers_arrive_as_arrays_or_php_objects_and_errors_win() {
        let raw = serde_json::json!({
            "result": {"a_0": [{"ID": "1"}], "b_0": {"0": {"ID": "2"}}, "c_0": []},
            "result_error": {"d_0": {"error": "insufficient_scope", "error_description": "no crm"}},
            "result_total": {"a_0": 1}
        });
        let mut answer = BatchResult::decode(&raw, |_| "crm.contact.list".into()).unwrap();
        assert_eq!(take_page(&mut answer, "a_0").unwrap().len(), 1);
        assert_eq!(take_page(&mut answer, "b_0").unwrap().len(), 1);
        assert!(take_page(&mut answer, "c_0").unwrap().is_empty());
        assert!(take_page(&mut answer, "d_0").is_err());
        assert!(matches!(
            take_page(&mut answer, "e_0"),
            Err(CrmError::Decode { .. })
        ));
    }
}
