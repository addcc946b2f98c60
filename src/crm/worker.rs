//! One delivery worker per portal (DESIGN.md §5): takes the portal's due intents from the
//! outbox, plans a `batch` (`plan`), waits for the rate limiter, sends through the [`Bitrix`]
//! port, and records the outcome in one store transaction. Failures postpone (exponential
//! backoff from `crm.min_backoff` up to `crm.max_backoff`, with jitter), never drop; only answers
//! that can never succeed go to the dead-letter table.
//!
//! Idempotence (every resend is safe): an intent is deleted only after Bitrix24 answered it, so a
//! lost answer (timeout, reset, a proxy's 502) or a crash between send and store means sending it
//! again. A finish goes out only once its register's CALL_ID is stored (`plan`), so a resent
//! register always finds its call still open and Bitrix24 hands back the same CALL_ID (same
//! `EXTERNAL_CALL_ID`, user, number and type); a resent finish answers "Call is not found",
//! taken as done; show and hide are UI only. CALL_IDs are cached only after they are stored.
//!
//! Waiting: an intent whose call has no CALL_ID yet waits as long as the register is queued;
//! past `crm.delivery_horizon` it is overdue (gauge `callgate_crm_overdue_intents`, listed by
//! `GET /api/v1/calls?delivery=problems`) and still retried. A refused user is replaced by the
//! direction's default responsible (`fallback`). When the portal answers again after failures,
//! its postponed intents are due at once, so the backlog drains at the limiter's rate.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::fallback::{replace_user, Direction};
use super::plan::{plan, Cmd, Plan};
use super::LeakyBucket;
use super::rules::utm_fields;
use crate::directory::{Directory, PortalEntry};
use crate::settings::PortalId;
use crate::store::{Delivered, Intent, IntentKind, NewIntent, StoreHandle};

/// How one command of a batch ended.
#[derive(Debug, Clone)]
pub enum CmdOutcome {
    /// Done; the method's `result`.
    Ok(Value),
    /// Failed.
    Err {
        /// Worth trying again later.
        retryable: bool,
        /// "Call is not found" (the call is finished already).
        call_not_found: bool,
        /// "User is not found or is not active" (deactivated or deleted in Bitrix24).
        user_refused: bool,
        /// What Bitrix24 said.
        message: String,
    },
}

/// Why a whole request failed.
#[derive(Debug, Clone)]
pub struct SendFailure {
    /// QUERY_LIMIT_EXCEEDED: the limiter must back off.
    pub rate_limited: bool,
    /// What happened.
    pub message: String,
}

/// Future of a send.
pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<HashMap<String, CmdOutcome>, SendFailure>> + Send + 'a>>;

/// The port to Bitrix24 (the REST client in production, a script in tests).
pub trait Bitrix: Send + Sync + 'static {
    /// Sends `cmds` as one `batch` to `portal`; results by command key.
    fn send<'a>(&'a self, portal: &'a PortalEntry, cmds: &'a [Cmd]) -> SendFuture<'a>;
}

/// Worker knobs (`[crm]` config).
#[derive(Debug, Clone, Copy)]
pub struct WorkerConfig {
    /// Sustained requests per second to one portal.
    pub rate_per_s: f64,
    /// Requests allowed in a burst.
    pub burst: u32,
    /// First wait after a failed attempt (doubles per attempt).
    pub min_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// Undelivered this long after being queued: overdue (kept, retried, counted, listed).
    pub delivery_horizon: Duration,
    /// After a batch that was not full, wait this long before the next one, so intents pile
    /// up into few requests (10 calls/s then cost about one request per second).
    pub batch_interval: Duration,
}

/// How often a portal without credentials is looked at again.
const PARKED_RECHECK: Duration = Duration::from_secs(3);

/// How often the overdue gauge is refreshed (a COUNT over the outbox).
const OVERDUE_CHECK: Duration = Duration::from_secs(10);

/// Runs the worker of `portal` until cancelled.
pub async fn run(portal: PortalId, store: StoreHandle, directory: Directory, bitrix: Arc<dyn Bitrix>, wake: Arc<Notify>, cfg: WorkerConfig, cancel: CancellationToken) {
    let mut w = Worker { portal, store, directory, bitrix, cfg, known: HashMap::new(), bucket: LeakyBucket::new(cfg.rate_per_s, cfg.burst), parked: false, failing: false, overdue_checked: None };
    loop {
        // (how long to wait, whether a wake-up cuts the wait short)
        let (wait, wakeable) = match w.round().await {
            Ok(Round::Full) => (Duration::ZERO, true),
            // Accumulating after a partial batch: wake-ups do not cut this wait short.
            Ok(Round::Partial) => (cfg.batch_interval, false),
            Ok(Round::Idle) => (w.idle_wait().await, true),
            // Checked again every few seconds (settings changes are not signalled here).
            Ok(Round::Parked) => (PARKED_RECHECK, false),
            Err(e) => {
                tracing::warn!(portal, error = %e, "outbox round failed");
                (Duration::from_secs(1), true)
            }
        };
        if wait.is_zero() {
            if cancel.is_cancelled() {
                return;
            }
            continue;
        }
        if !wakeable {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            continue;
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// What a round did.
enum Round {
    /// Sent a full batch: more may be waiting.
    Full,
    /// Sent a batch that was not full.
    Partial,
    /// Nothing could be sent.
    Idle,
    /// The portal has no credentials: nothing can ever be sent until some are set, so its
    /// intents are not even read (with tens of thousands waiting, reading and postponing them
    /// round after round cost more CPU than the calls themselves).
    Parked,
}

struct Worker {
    portal: PortalId,
    store: StoreHandle,
    directory: Directory,
    bitrix: Arc<dyn Bitrix>,
    cfg: WorkerConfig,
    /// CALL_IDs by call key (cache of `crm_calls`).
    known: HashMap<String, String>,
    bucket: LeakyBucket,
    /// The portal had no credentials at the last round (said once in the log).
    parked: bool,
    /// The last request failed as a whole (the next success pulls the postponed intents forward).
    failing: bool,
    /// When the overdue gauge was last refreshed.
    overdue_checked: Option<tokio::time::Instant>,
}

impl Worker {
    /// One delivery round.
    async fn round(&mut self) -> Result<Round, crate::store::StoreError> {
        let (portal, now) = (self.portal, super::now_ms());
        let parked = self.directory.snapshot().portals.get(&portal).is_some_and(|e| e.portal.auth.is_none());
        if parked != self.parked {
            self.parked = parked;
            if parked {
                tracing::warn!(portal, "the portal has no Bitrix24 credentials: its calls wait in the outbox until some are set");
            } else {
                tracing::info!(portal, "the portal has Bitrix24 credentials again: delivering");
            }
        }
        if parked {
            return Ok(Round::Parked);
        }
        self.check_overdue().await;
        let due = self.store.run(move |s| s.outbox_due(portal, now, 200)).await?;
        if due.is_empty() {
            return Ok(Round::Idle);
        }
        self.learn_call_ids(&due).await?;
        let Plan { cmds, blocked } = plan(&due, &self.known);
        self.postpone_blocked(&due, &blocked).await?;
        if cmds.is_empty() {
            return Ok(Round::Idle);
        }
        let Some(entry) = self.directory.snapshot().portals.get(&portal).cloned() else {
            return Ok(Round::Idle); // portal deleted: its queue stays for the audit
        };
        let full = cmds.len() >= super::plan::MAX_BATCH;
        if let Err(at) = self.bucket.acquire(tokio::time::Instant::now().into_std()) {
            tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
            let _ = self.bucket.acquire(tokio::time::Instant::now().into_std());
        }
        let outcome = self.bitrix.send(&entry, &cmds).await;
        metrics::counter!("callgate_crm_requests_total").increment(1);
        match outcome {
            Ok(results) => {
                self.bucket.note_success();
                let recovered = std::mem::take(&mut self.failing);
                self.record(&entry, &due, &cmds, results, recovered).await.map(|()| if full || recovered { Round::Full } else { Round::Partial })
            }
            Err(failure) => {
                if failure.rate_limited {
                    self.bucket.penalise(tokio::time::Instant::now().into_std());
                    metrics::counter!("callgate_crm_rate_limited_total").increment(1);
                }
                if !self.failing {
                    tracing::warn!(portal, error = %failure.message, "Bitrix24 request failed; will retry");
                }
                self.failing = true;
                let ids: Vec<i64> = cmds.iter().flat_map(|c| c.intents.clone()).collect();
                let next = retry_at(due.as_slice(), &ids, &self.cfg);
                self.store.run(move |s| s.outbox_retry(&ids, next)).await?;
                Ok(Round::Idle)
            }
        }
    }

    /// Time until the next intent is due (capped; a wake-up cuts it short).
    async fn idle_wait(&self) -> Duration {
        let portal = self.portal;
        match self.store.run(move |s| s.outbox_next_due(portal)).await {
            Ok(Some(at)) => Duration::from_millis(at.saturating_sub(super::now_ms())).clamp(Duration::from_millis(5), Duration::from_secs(5)),
            _ => Duration::from_secs(5),
        }
    }

    async fn learn_call_ids(&mut self, due: &[Intent]) -> Result<(), crate::store::StoreError> {
        let mut missing: Vec<String> = due
            .iter()
            .filter(|i| !matches!(i.kind, IntentKind::Register | IntentKind::LeadUtm) && !self.known.contains_key(&i.call_key))
            .map(|i| i.call_key.clone())
            .collect();
        missing.sort_unstable();
        missing.dedup();
        if missing.is_empty() {
            return Ok(());
        }
        // One trip to the blocking pool for all of them.
        let portal = self.portal;
        let found = self
            .store
            .run(move |s| {
                let mut found = Vec::new();
                for key in missing {
                    if let Some(id) = s.crm_call(portal, &key)?.and_then(|c| c.b24_call_id) {
                        found.push((key, id));
                    }
                }
                Ok(found)
            })
            .await?;
        self.known.extend(found);
        Ok(())
    }

    /// Intents waiting for their call's CALL_ID: postponed (attempts unchanged) while the
    /// register is queued; kept in `outbox_dead` when no register will ever bring one (it was
    /// refused for good, or answered without a CALL_ID).
    async fn postpone_blocked(&self, due: &[Intent], blocked: &[i64]) -> Result<(), crate::store::StoreError> {
        if blocked.is_empty() {
            return Ok(());
        }
        let waiting: Vec<&Intent> = due.iter().filter(|i| blocked.contains(&i.id)).collect();
        let mut keys: Vec<String> = waiting.iter().filter(|i| !self.known.contains_key(&i.call_key)).map(|i| i.call_key.clone()).collect();
        keys.sort_unstable();
        keys.dedup();
        let portal = self.portal;
        let queued = self.store.run(move |s| s.registers_queued(portal, &keys)).await?;
        let now = super::now_ms();
        // Not before the register is tried again: waiting intents do not crowd the due window.
        let soon = now + u64::try_from(self.cfg.min_backoff.as_millis()).unwrap_or(1000);
        let mut d = Delivered::default();
        for i in waiting {
            let register_at = queued.iter().find(|(k, _)| *k == i.call_key).map(|(_, at)| *at);
            if self.known.contains_key(&i.call_key) || register_at.is_some() {
                d.postponed.push((i.id, soon.max(register_at.unwrap_or(0) + 1)));
            } else {
                tracing::error!(portal, call = %i.call_key, kind = i.kind.as_str(), "the call's register was refused for good; intent kept in outbox_dead");
                d.dead.push((i.id, "the call's register was refused (see its register in outbox_dead)".into()));
            }
        }
        self.store.run(move |s| s.outbox_delivered(&d, now)).await
    }

    /// Refreshes the overdue gauge (every [`OVERDUE_CHECK`], or half the horizon if shorter);
    /// warns while anything is overdue.
    async fn check_overdue(&mut self) {
        let now = tokio::time::Instant::now();
        let every = OVERDUE_CHECK.min(self.cfg.delivery_horizon / 2);
        if self.overdue_checked.is_some_and(|at| now.duration_since(at) < every) {
            return;
        }
        self.overdue_checked = Some(now);
        let before = super::now_ms().saturating_sub(u64::try_from(self.cfg.delivery_horizon.as_millis()).unwrap_or(u64::MAX));
        if let Ok(n) = self.store.run(move |s| s.outbox_older_than(before)).await {
            metrics::gauge!("callgate_crm_overdue_intents").set(n as f64);
            if n > 0 {
                tracing::warn!(intents = n, horizon = ?self.cfg.delivery_horizon, "Bitrix24 intents are overdue (kept and retried; GET /api/v1/calls?delivery=problems)");
            }
        }
    }

    async fn record(&mut self, entry: &PortalEntry, due: &[Intent], cmds: &[Cmd], mut results: HashMap<String, CmdOutcome>, recovered: bool) -> Result<(), crate::store::StoreError> {
        let mut d = Delivered::default();
        let mut retry = Vec::new();
        for cmd in cmds {
            match results.remove(&cmd.key) {
                Some(CmdOutcome::Ok(v)) => self.done(entry, due, cmd, &v, &mut d),
                Some(CmdOutcome::Err { call_not_found: true, .. }) if cmd.kind == IntentKind::Finish => {
                    d.done.extend(&cmd.intents);
                    d.finished.push((self.portal, cmd.call_key.clone()));
                }
                Some(CmdOutcome::Err { user_refused: true, message, .. }) if matches!(cmd.kind, IntentKind::Register | IntentKind::Finish) => {
                    self.user_refused(entry, due, cmd, message, &mut d).await?;
                }
                Some(CmdOutcome::Err { retryable: false, message, .. }) => {
                    tracing::error!(portal = self.portal, method = cmd.method, error = %message, "Bitrix24 refused an intent; kept in outbox_dead");
                    d.dead.extend(cmd.intents.iter().map(|id| (*id, message.clone())));
                }
                // Retryable, or no answer (a sub-call after a failed reference): next round.
                _ => retry.extend(&cmd.intents),
            }
        }
        let next = retry_at(due, &retry, &self.cfg);
        let now = super::now_ms();
        if recovered {
            d.pull_forward = Some(self.portal);
        }
        let registered = d.registered.clone();
        let finished = d.finished.clone();
        self.store.run(move |s| s.outbox_delivered(&d, now).and_then(|()| s.outbox_retry(&retry, next))).await?;
        // Cached only once stored: a finish never goes out on a CALL_ID a crash could forget.
        self.known.extend(registered.into_iter().map(|(_, key, id)| (key, id)));
        for (_, key) in finished {
            self.known.remove(&key);
        }
        Ok(())
    }

    /// "User is not found or is not active": the intent goes again at once with the direction's
    /// default responsible (noted on the call, counted, logged); with nobody to fall back to it
    /// is kept in `outbox_dead`.
    async fn user_refused(&self, entry: &PortalEntry, due: &[Intent], cmd: &Cmd, message: String, d: &mut Delivered) -> Result<(), crate::store::StoreError> {
        let direction = match cmd.kind {
            IntentKind::Register => Direction::of_register(&cmd.params),
            _ => {
                let (portal, key) = (self.portal, cmd.call_key.clone());
                let start = self.store.run(move |s| s.crm_call(portal, &key)).await?.map(|c| c.start).unwrap_or_default();
                Direction::of_start(&start)
            }
        };
        let now = super::now_ms();
        let Some(r) = replace_user(entry, cmd.kind, direction, &cmd.params, now) else {
            tracing::error!(portal = self.portal, method = cmd.method, user = %cmd.params["USER_ID"], error = %message, "Bitrix24 refused the user and there is no other default responsible; kept in outbox_dead");
            d.dead.extend(cmd.intents.iter().map(|id| (*id, message.clone())));
            return Ok(());
        };
        tracing::warn!(portal = self.portal, method = cmd.method, user = %cmd.params["USER_ID"], replaced_by = %r.payload["USER_ID"], "Bitrix24 refused the user (deactivated or deleted); sending with the default responsible");
        metrics::counter!("callgate_crm_user_fallback_total", "method" => cmd.method).increment(1);
        // The command's first intent carries the parameters; merged ones (hides) ride along.
        let first = cmd.intents.iter().copied().find(|id| due.iter().any(|i| i.id == *id && i.kind == cmd.kind));
        if let Some(id) = first {
            d.rewritten.push((id, r.payload));
        }
        d.notes.push((self.portal, cmd.call_key.clone(), r.note));
        Ok(())
    }

    fn done(&mut self, entry: &PortalEntry, due: &[Intent], cmd: &Cmd, v: &Value, d: &mut Delivered) {
        d.done.extend(&cmd.intents);
        match cmd.kind {
            IntentKind::Register => {
                let Some(call_id) = v["CALL_ID"].as_str() else { return };
                super::notices::note(self.portal, &cmd.call_key, cmd.method, v);
                d.registered.push((self.portal, cmd.call_key.clone(), call_id.to_owned()));
                let lead = v["CRM_CREATED_LEAD"].as_u64().or_else(|| v["CRM_CREATED_LEAD"].as_str().and_then(|s| s.parse().ok()));
                let line = due.iter().find(|i| cmd.intents.contains(&i.id)).and_then(|i| i.payload["LINE_NUMBER"].as_str().map(str::to_owned));
                if let (Some(lead), Some(fields)) = (lead, utm_fields(entry, line.as_deref())) {
                    let payload = serde_json::json!({ "id": lead, "fields": fields });
                    d.follow_ups.push(NewIntent { portal: self.portal, call_key: cmd.call_key.clone(), kind: IntentKind::LeadUtm, payload, not_before_ms: 0 });
                }
            }
            IntentKind::Finish => d.finished.push((self.portal, cmd.call_key.clone())),
            _ => {}
        }
    }
}

/// When intents `ids` of `due` are tried again (unix ms): after the backoff of the most-tried one.
fn retry_at(due: &[Intent], ids: &[i64], cfg: &WorkerConfig) -> u64 {
    let attempts = due.iter().filter(|i| ids.contains(&i.id)).map(|i| i.attempts).max().unwrap_or(0);
    super::now_ms() + backoff(attempts, cfg.min_backoff, cfg.max_backoff).as_millis() as u64
}

/// `min`, 2·`min`, 4·`min` ... up to `max`, plus up to 20 % jitter so portals (and intents
/// postponed together) do not retry in step.
fn backoff(attempts: u32, min: Duration, max: Duration) -> Duration {
    let base = min.saturating_mul(1u32 << attempts.min(16)).min(max);
    base + base.mul_f64(rand::random::<f64>() * 0.2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_minimum_up_to_the_cap_with_bounded_jitter() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(1));
        for (attempts, base) in [(0, 100), (1, 200), (3, 800), (4, 1000), (40, 1000)] {
            let got = backoff(attempts, min, max);
            let base = Duration::from_millis(base);
            assert!(got >= base && got <= base.mul_f64(1.2), "attempt {attempts}: {got:?}");
        }
    }
}
