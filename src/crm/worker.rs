//! One delivery worker per portal (DESIGN.md §5): takes the portal's due intents from the
//! outbox, plans a `batch` (`plan`), waits for the rate limiter, sends through the [`Bitrix`]
//! port, and records the outcome in one store transaction. Failures postpone (exponential
//! backoff, capped), never drop; only answers that can never succeed go to the dead-letter table.
//!
//! Cancel safety: an intent is deleted only after Bitrix24 answered it, so cancelling a round
//! mid-flight means at worst sending it again after a restart; a repeated finish answers "Call
//! is not found", which is taken as already done (exactly one finish reaches Bitrix24 successfully).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::plan::{plan, Cmd, Plan};
use super::rules::utm_fields;
use crate::routing::{Directory, PortalEntry};
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
    /// Longest wait between attempts.
    pub max_backoff: Duration,
    /// After a batch that was not full, wait this long before the next one, so intents pile
    /// up into few requests (10 calls/s then cost about one request per second).
    pub batch_interval: Duration,
}

/// Blocked intents (waiting for a register that never comes) give up after this many rounds.
const MAX_BLOCKED_ROUNDS: u32 = 60;

/// Runs the worker of `portal` until cancelled.
pub async fn run(portal: PortalId, store: StoreHandle, directory: Directory, bitrix: Arc<dyn Bitrix>, wake: Arc<Notify>, cfg: WorkerConfig, cancel: CancellationToken) {
    let mut w = Worker { portal, store, directory, bitrix, cfg, known: HashMap::new(), bucket: Bucket::new(cfg) };
    loop {
        // (how long to wait, whether a wake-up cuts the wait short)
        let (wait, wakeable) = match w.round().await {
            Ok(Round::Full) => (Duration::ZERO, true),
            // Accumulating after a partial batch: wake-ups do not cut this wait short.
            Ok(Round::Partial) => (cfg.batch_interval, false),
            Ok(Round::Idle) => (w.idle_wait().await, true),
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
}

struct Worker {
    portal: PortalId,
    store: StoreHandle,
    directory: Directory,
    bitrix: Arc<dyn Bitrix>,
    cfg: WorkerConfig,
    /// CALL_IDs by call key (cache of `crm_calls`).
    known: HashMap<String, String>,
    bucket: Bucket,
}

impl Worker {
    /// One delivery round.
    async fn round(&mut self) -> Result<Round, crate::store::StoreError> {
        let (portal, now) = (self.portal, super::now_ms());
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
        if let Err(at) = self.bucket.take(tokio::time::Instant::now()) {
            tokio::time::sleep_until(at).await;
            let _ = self.bucket.take(tokio::time::Instant::now());
        }
        let outcome = self.bitrix.send(&entry, &cmds).await;
        metrics::counter!("callgate_crm_requests_total").increment(1);
        match outcome {
            Ok(results) => self.record(&entry, &due, &cmds, results).await.map(|()| if full { Round::Full } else { Round::Partial }),
            Err(failure) => {
                if failure.rate_limited {
                    self.bucket.penalise(tokio::time::Instant::now());
                    metrics::counter!("callgate_crm_rate_limited_total").increment(1);
                }
                tracing::warn!(portal, error = %failure.message, "Bitrix24 request failed; will retry");
                let attempts = cmds.iter().flat_map(|c| &c.intents).filter_map(|id| due.iter().find(|i| i.id == *id)).map(|i| i.attempts).max().unwrap_or(0);
                let ids: Vec<i64> = cmds.iter().flat_map(|c| c.intents.clone()).collect();
                let next = super::now_ms() + backoff(attempts, self.cfg.max_backoff).as_millis() as u64;
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
        for i in due {
            if matches!(i.kind, IntentKind::Register | IntentKind::LeadUtm) || self.known.contains_key(&i.call_key) {
                continue;
            }
            let (portal, key) = (self.portal, i.call_key.clone());
            if let Some(call) = self.store.run(move |s| s.crm_call(portal, &key)).await? {
                if let Some(id) = call.b24_call_id {
                    self.known.insert(i.call_key.clone(), id);
                }
            }
        }
        Ok(())
    }

    async fn postpone_blocked(&self, due: &[Intent], blocked: &[i64]) -> Result<(), crate::store::StoreError> {
        if blocked.is_empty() {
            return Ok(());
        }
        let mut retry = Vec::new();
        let mut d = Delivered::default();
        for i in due.iter().filter(|i| blocked.contains(&i.id)) {
            if i.attempts >= MAX_BLOCKED_ROUNDS {
                d.dead.push((i.id, "the call was never registered".into()));
            } else {
                retry.push(i.id);
            }
        }
        let next = super::now_ms() + 1000;
        self.store.run(move |s| s.outbox_retry(&retry, next).and_then(|()| s.outbox_delivered(&d, next))).await
    }

    async fn record(&mut self, entry: &PortalEntry, due: &[Intent], cmds: &[Cmd], mut results: HashMap<String, CmdOutcome>) -> Result<(), crate::store::StoreError> {
        let mut d = Delivered::default();
        let mut retry = Vec::new();
        for cmd in cmds {
            match results.remove(&cmd.key) {
                Some(CmdOutcome::Ok(v)) => self.done(entry, due, cmd, &v, &mut d),
                Some(CmdOutcome::Err { call_not_found: true, .. }) if cmd.kind == IntentKind::Finish => {
                    d.done.extend(&cmd.intents);
                    d.finished.push((self.portal, cmd.call_key.clone()));
                }
                Some(CmdOutcome::Err { retryable: false, message, .. }) => {
                    tracing::error!(portal = self.portal, method = cmd.method, error = %message, "Bitrix24 refused an intent; kept in outbox_dead");
                    d.dead.extend(cmd.intents.iter().map(|id| (*id, message.clone())));
                }
                // Retryable, or no answer (a sub-call after a failed reference): next round.
                _ => retry.extend(&cmd.intents),
            }
        }
        let attempts = due.iter().filter(|i| retry.contains(&i.id)).map(|i| i.attempts).max().unwrap_or(0);
        let next = super::now_ms() + backoff(attempts, self.cfg.max_backoff).as_millis() as u64;
        let now = super::now_ms();
        self.store.run(move |s| s.outbox_delivered(&d, now).and_then(|()| s.outbox_retry(&retry, next))).await
    }

    fn done(&mut self, entry: &PortalEntry, due: &[Intent], cmd: &Cmd, v: &Value, d: &mut Delivered) {
        d.done.extend(&cmd.intents);
        match cmd.kind {
            IntentKind::Register => {
                let Some(call_id) = v["CALL_ID"].as_str() else { return };
                self.known.insert(cmd.call_key.clone(), call_id.to_owned());
                d.registered.push((self.portal, cmd.call_key.clone(), call_id.to_owned()));
                let lead = v["CRM_CREATED_LEAD"].as_u64().or_else(|| v["CRM_CREATED_LEAD"].as_str().and_then(|s| s.parse().ok()));
                let line = due.iter().find(|i| cmd.intents.contains(&i.id)).and_then(|i| i.payload["LINE_NUMBER"].as_str().map(str::to_owned));
                if let (Some(lead), Some(fields)) = (lead, utm_fields(entry, line.as_deref())) {
                    let payload = serde_json::json!({ "id": lead, "fields": fields });
                    d.follow_ups.push(NewIntent { portal: self.portal, call_key: cmd.call_key.clone(), kind: IntentKind::LeadUtm, payload, not_before_ms: 0 });
                }
            }
            IntentKind::Finish => {
                d.finished.push((self.portal, cmd.call_key.clone()));
                self.known.remove(&cmd.call_key);
            }
            _ => {}
        }
    }
}

/// 1 s, 2 s, 4 s ... up to `max`, with up to 20 % jitter so portals do not retry in step.
fn backoff(attempts: u32, max: Duration) -> Duration {
    let base = Duration::from_secs(1).saturating_mul(1u32 << attempts.min(10)).min(max);
    base + base.mul_f64(rand::random::<f64>() * 0.2)
}

/// The portal's request budget: a token bucket refilled at `rate_per_s` up to `burst`.
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: tokio::time::Instant,
}

impl Bucket {
    fn new(cfg: WorkerConfig) -> Self {
        let burst = f64::from(cfg.burst.max(1));
        Self { tokens: burst, rate: cfg.rate_per_s.max(0.01), burst, last: tokio::time::Instant::now() }
    }

    fn refill(&mut self, now: tokio::time::Instant) {
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.burst);
        self.last = now;
    }

    /// Takes one token, or says when one will be there.
    fn take(&mut self, now: tokio::time::Instant) -> Result<(), tokio::time::Instant> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(now + Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }

    /// Bitrix24 said QUERY_LIMIT_EXCEEDED: empty the bucket, so the next request waits.
    fn penalise(&mut self, now: tokio::time::Instant) {
        self.refill(now);
        self.tokens = (self.tokens.min(0.0)) - self.rate; // at least a second and a half of silence
    }
}
