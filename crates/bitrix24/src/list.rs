//! Reading whole lists cheaply: [`Pager::read_all`] pages list methods (`crm.contact.list`,
//! `user.get`, …) through `batch`. The first pages of all lists travel in one request, which
//! tells every `total`; the remaining pages follow, up to 50 page commands per `batch`. N rows
//! cost about 1 + N / 2,500 requests instead of N / 50.
//!
//! Requests are paced by a [`LeakyBucket`] (pass less than the portal's 2 requests/s if other
//! work shares the portal) and retried on [`Error::retryable`] errors with a growing wait (at least
//! [`Error::retry_after_hint`]); after `QUERY_LIMIT_EXCEEDED` the bucket is penalised too.
//!
//! Offset paging over data that changes meanwhile may miss or repeat a row added or deleted
//! mid-read; callers that need exactness re-read or filter by `>ID`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::batch::MAX_BATCH_COMMANDS;
use crate::methods::Method;
use crate::{BatchCommand, BatchResult, Client, Endpoint, Error, LeakyBucket, Params};

/// Bitrix24's fixed list page size.
pub const PAGE: u64 = 50;
/// Tries of one request by default (the first and two retries).
pub const DEFAULT_ATTEMPTS: u32 = 3;
/// The first wait before a retry (doubled per retry).
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// One list to read completely: `method` with `params` (`start` is set per page).
#[derive(Debug, Clone, PartialEq)]
pub struct ListJob {
    /// Prefix of its batch command keys (`[A-Za-z0-9_]+`, not numeric).
    pub key: String,
    /// The list method.
    pub method: &'static str,
    /// Its parameters.
    pub params: Params,
}

impl ListJob {
    /// The job for a typed list method ([`crm::List`](crate::crm::List),
    /// [`user::UserGet`](crate::user::UserGet)); its `start` is replaced per page.
    pub fn of<M: Method>(key: impl Into<String>, method: &M) -> Self {
        Self {
            key: key.into(),
            method: method.name(),
            params: method.params(),
        }
    }

    fn page_key(&self, start: u64) -> String {
        format!("{}_{start}", self.key)
    }

    fn page(&self, start: u64) -> BatchCommand {
        BatchCommand::new(
            self.page_key(start),
            self.method,
            self.params.clone().set("start", start),
        )
    }
}

/// Paced, retried, counted requests to one portal.
#[derive(Debug)]
pub struct Pager<'a> {
    client: &'a Client,
    ep: &'a Endpoint,
    bucket: LeakyBucket,
    attempts: u32,
    made: usize,
}

impl<'a> Pager<'a> {
    /// Requests to `ep`, at most `rate_per_s` per second with bursts of `burst`.
    pub fn new(client: &'a Client, ep: &'a Endpoint, rate_per_s: f64, burst: u32) -> Self {
        Self {
            client,
            ep,
            bucket: LeakyBucket::new(rate_per_s, burst),
            attempts: DEFAULT_ATTEMPTS,
            made: 0,
        }
    }

    /// Tries per request (at least 1).
    #[must_use]
    pub fn attempts(mut self, n: u32) -> Self {
        self.attempts = n.max(1);
        self
    }

    /// HTTP requests made so far (retries count).
    pub fn requests(&self) -> usize {
        self.made
    }

    /// One `batch`, paced and retried.
    ///
    /// # Errors
    /// The last attempt's error, or the first that is not retryable.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the request (see [`Client::call`]).
    pub async fn batch(&mut self, cmds: &[BatchCommand]) -> Result<BatchResult, Error> {
        let mut attempt = 1;
        let mut backoff = FIRST_BACKOFF;
        loop {
            self.pace().await;
            self.made += 1;
            match self.client.batch(self.ep, cmds, false).await {
                Err(e) if e.retryable() && attempt < self.attempts => {
                    if matches!(e, Error::RateLimited) {
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

    /// Reads every page of each job. Returns the rows per job, in page order (rows stay JSON:
    /// decode them one by one, so that one odd row does not fail the read).
    ///
    /// # Errors
    /// The first error of a request (after retries) or of a page command; nothing is returned
    /// half-read.
    pub async fn read_all(&mut self, jobs: &[ListJob]) -> Result<Vec<Vec<Value>>, Error> {
        let first: Vec<BatchCommand> = jobs.iter().map(|j| j.page(0)).collect();
        let mut answer = self.batch(&first).await?;
        let mut pages: Vec<BTreeMap<u64, Vec<Value>>> = vec![BTreeMap::new(); jobs.len()];
        let mut rest = Vec::new();
        for (i, job) in jobs.iter().enumerate() {
            let key = job.page_key(0);
            let total = answer.result_total.get(&key).copied().unwrap_or(0);
            pages[i].insert(0, take_page(&mut answer, &key)?);
            rest.extend((PAGE..total).step_by(PAGE as usize).map(|start| (i, start)));
        }
        for chunk in rest.chunks(MAX_BATCH_COMMANDS) {
            let cmds: Vec<BatchCommand> = chunk
                .iter()
                .map(|&(i, start)| jobs[i].page(start))
                .collect();
            let mut answer = self.batch(&cmds).await?;
            for &(i, start) in chunk {
                pages[i].insert(start, take_page(&mut answer, &jobs[i].page_key(start))?);
            }
        }
        Ok(pages
            .into_iter()
            .map(|p| p.into_values().flatten().collect())
            .collect())
    }
}

/// The rows of page command `key` (a list arrives as an array, or as an object from PHP).
fn take_page(answer: &mut BatchResult, key: &str) -> Result<Vec<Value>, Error> {
    if let Some(e) = answer.result_error.remove(key) {
        return Err(e);
    }
    match answer.result.remove(key) {
        Some(Value::Array(rows)) => Ok(rows),
        Some(Value::Object(rows)) => Ok(rows.into_iter().map(|(_, v)| v).collect()),
        Some(_) => Ok(Vec::new()),
        None => Err(Error::decode(format!("the batch answer lacks `{key}`"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            Err(Error::Decode { .. })
        ));
    }

    #[test]
    fn page_commands_replace_start_and_keep_the_rest() {
        let job = ListJob::of(
            "contact",
            &crate::crm::List::by_id(crate::crm::EntityKind::Contact, ["ID", "PHONE"]),
        );
        let cmd = job.page(100);
        assert_eq!(cmd.key, "contact_100");
        assert_eq!(
            cmd.cmd_string(),
            "crm.contact.list?select[0]=ID&select[1]=PHONE&order[ID]=ASC&start=100"
        );
    }
}
