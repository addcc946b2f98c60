//! The asynchronous look-up on an index miss (DESIGN.md §4 item 4): when routing finds no
//! manager for a caller of an active portal, the number comes here through a bounded queue
//! (`Directory::set_miss_queue`; the hot path only `try_send`s two integers, and only on a
//! miss), and `telephony.externalCall.searchCrmEntities` fills the index for the next call.
//!
//! * [`Planner`] is the pure core (`now` passed in): it de-duplicates numbers for
//!   [`LookupConfig::dedup`] (a number not found is not asked again either), keeps a short
//!   queue per portal, and releases at most one request per portal at a time, paced by a
//!   [`LeakyBucket`] (1 request/s, burst 2), each a `batch` of up to
//!   [`LookupConfig::max_batch`] searches: at most ~5 look-ups per second per portal.
//! * [`run`] is the driver: one tracked task, requests in a `JoinSet` it owns, stops on the
//!   token.
//! * A found number gets the responsible user of its best entity, with the full sync's
//!   precedence (contact, then company, then lead; the lowest id within a kind), rather than
//!   Bitrix24's own order (contacts, leads, companies). A number with no owner left is removed
//!   from the index (that matters for refreshes after CRM events).
//!
//! Everything here is a cache fill: a full queue, a failed request or an unknown portal drop the
//! number (counted in `callgate_pm_lookup_queue_total` / `callgate_pm_lookups_total`), and the
//! next call from it simply misses again after the de-duplication window.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use bitrix24::telephony::SearchCrmEntities;

use super::sync::CrmKind;
use super::tokens::Tokens;
use super::{BatchCommand, LeakyBucket, SearchEntity};
use crate::directory::Directory;
use crate::settings::{PortalId, UserId};
use crate::store::StoreHandle;

/// Look-up knobs (defaults; not in the config file).
#[derive(Debug, Clone, Copy)]
pub struct LookupConfig {
    /// Capacity of each queue into the task (misses, refreshes).
    pub queue: usize,
    /// How long a number is not looked up again.
    pub dedup: Duration,
    /// Numbers remembered for de-duplication at most (all portals).
    pub max_recent: usize,
    /// Numbers waiting per portal at most.
    pub max_pending: usize,
    /// Searches per request (`batch`).
    pub max_batch: usize,
    /// Requests per second per portal, and burst.
    pub rate_per_s: f64,
    /// Burst of requests per portal.
    pub burst: u32,
}

impl Default for LookupConfig {
    fn default() -> Self {
        Self {
            queue: 1024,
            dedup: Duration::from_secs(300),
            max_recent: 100_000,
            max_pending: 256,
            max_batch: 5,
            rate_per_s: 1.0,
            burst: 2,
        }
    }
}

/// What became of an offered number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Offer {
    /// Waiting for its request.
    Queued,
    /// Looked up recently, or waiting already.
    Duplicate,
    /// No room: dropped.
    Full,
}

impl Offer {
    fn label(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Duplicate => "duplicate",
            Self::Full => "full",
        }
    }
}

/// The pure core: which numbers go to Bitrix24, when.
#[derive(Debug)]
pub(crate) struct Planner {
    cfg: LookupConfig,
    /// Until when a number is not offered again, by portal and number.
    recent: HashMap<(PortalId, u64), Instant>,
    queues: HashMap<PortalId, Queue>,
}

#[derive(Debug)]
struct Queue {
    pending: Vec<u64>,
    /// A request of this portal is in flight.
    busy: bool,
    bucket: LeakyBucket,
    /// When the bucket has room again (set after it refused).
    not_before: Option<Instant>,
}

impl Planner {
    pub(crate) fn new(cfg: LookupConfig) -> Self {
        Self {
            cfg,
            recent: HashMap::new(),
            queues: HashMap::new(),
        }
    }

    /// Offers a number; `force` (a refresh) skips the de-duplication window.
    pub(crate) fn offer(
        &mut self,
        portal: PortalId,
        number: u64,
        force: bool,
        now: Instant,
    ) -> Offer {
        let key = (portal, number);
        if !force && self.recent.get(&key).is_some_and(|until| *until > now) {
            return Offer::Duplicate;
        }
        if !self.recent.contains_key(&key) && self.recent.len() >= self.cfg.max_recent {
            self.recent.retain(|_, until| *until > now);
            if self.recent.len() >= self.cfg.max_recent {
                return Offer::Full;
            }
        }
        let cfg = &self.cfg;
        let q = self.queues.entry(portal).or_insert_with(|| Queue {
            pending: Vec::new(),
            busy: false,
            bucket: LeakyBucket::new(cfg.rate_per_s, cfg.burst),
            not_before: None,
        });
        if q.pending.contains(&number) {
            return Offer::Duplicate;
        }
        if q.pending.len() >= cfg.max_pending {
            return Offer::Full;
        }
        q.pending.push(number);
        self.recent.insert(key, now + cfg.dedup);
        Offer::Queued
    }

    /// The next request to make: a portal and up to `max_batch` numbers. The portal stays busy
    /// until [`Planner::done`].
    pub(crate) fn poll_batch(&mut self, now: Instant) -> Option<(PortalId, Vec<u64>)> {
        for (&portal, q) in &mut self.queues {
            if q.busy || q.pending.is_empty() || q.not_before.is_some_and(|t| t > now) {
                continue;
            }
            if let Err(at) = q.bucket.acquire(now) {
                q.not_before = Some(at);
                continue;
            }
            q.not_before = None;
            q.busy = true;
            let n = q.pending.len().min(self.cfg.max_batch);
            return Some((portal, q.pending.drain(..n).collect()));
        }
        None
    }

    /// The portal's request ended (whatever its outcome).
    pub(crate) fn done(&mut self, portal: PortalId) {
        if let Some(q) = self.queues.get_mut(&portal) {
            q.busy = false;
        }
    }

    /// When [`Planner::poll_batch`] may have something that it did not have now.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.queues
            .values()
            .filter(|q| !q.busy && !q.pending.is_empty())
            .filter_map(|q| q.not_before)
            .min()
    }
}

/// What the look-up requests need.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub(crate) tokens: Arc<Tokens>,
    pub(crate) store: StoreHandle,
    pub(crate) directory: Directory,
}

/// Runs the look-ups until `cancel`: `misses` from routing, `refreshes` (never de-duplicated)
/// from CRM change events.
///
/// # Cancel safety
/// On cancel, requests in flight are aborted; what they would have filled is simply not filled.
pub(crate) async fn run(
    mut misses: mpsc::Receiver<(PortalId, u64)>,
    mut refreshes: mpsc::Receiver<(PortalId, u64)>,
    ctx: Ctx,
    cfg: LookupConfig,
    cancel: CancellationToken,
) {
    let mut planner = Planner::new(cfg);
    let mut inflight = JoinSet::new();
    let mut portal_of = HashMap::new();
    loop {
        while let Some((portal, numbers)) =
            planner.poll_batch(tokio::time::Instant::now().into_std())
        {
            let ctx = ctx.clone();
            let handle = inflight.spawn(async move { look_up(&ctx, portal, numbers).await });
            portal_of.insert(handle.id(), portal);
        }
        let wake = planner.poll_timeout();
        let offer = |planner: &mut Planner, (portal, number): (PortalId, u64), force: bool| {
            let outcome = planner.offer(
                portal,
                number,
                force,
                tokio::time::Instant::now().into_std(),
            );
            metrics::counter!("callgate_pm_lookup_queue_total", "outcome" => outcome.label())
                .increment(1);
        };
        tokio::select! {
            () = cancel.cancelled() => break,
            Some(miss) = misses.recv() => offer(&mut planner, miss, false),
            Some(refresh) = refreshes.recv() => offer(&mut planner, refresh, true),
            Some(ended) = inflight.join_next_with_id() => {
                let id = ended.map_or_else(|e| e.id(), |(id, ())| id);
                if let Some(portal) = portal_of.remove(&id) {
                    planner.done(portal);
                }
            }
            () = tokio::time::sleep_until(wake.map_or_else(tokio::time::Instant::now, Into::into)), if wake.is_some() => {}
            else => break,
        }
    }
    inflight.shutdown().await;
}

/// One request: searches the numbers and fills (or clears) their index rows, store first.
async fn look_up(ctx: &Ctx, portal: PortalId, numbers: Vec<u64>) {
    let outcome = |label: &'static str, n: usize| {
        metrics::counter!("callgate_pm_lookups_total", "outcome" => label).increment(n as u64)
    };
    let Some(entry) = ctx.directory.snapshot().portals.get(&portal).cloned() else {
        return outcome("failed", numbers.len());
    };
    let key = |i: usize| format!("n{i}");
    let cmds: Vec<BatchCommand> = numbers
        .iter()
        .enumerate()
        .map(|(i, n)| BatchCommand::of(key(i), &SearchCrmEntities { phone_number: format!("+{n}") }))
        .collect();
    let client = ctx.tokens.client();
    let answer = ctx.tokens.call(&entry, |ep| {
        let cmds = &cmds;
        async move { client.batch(&ep, cmds, false).await }
    });
    let mut answer = match answer.await {
        Ok(a) => a,
        Err(e) => {
            tracing::debug!(portal, error = %e, "personal-manager look-up failed");
            return outcome("failed", numbers.len());
        }
    };
    let (mut found, mut gone, mut failed) = (Vec::new(), Vec::new(), 0);
    for (i, &number) in numbers.iter().enumerate() {
        match answer.take::<SearchCrmEntities>(&key(i)) {
            Some(Ok(entities)) => match responsible(&entities) {
                Some(user) => found.push((number, user)),
                None => gone.push(number),
            },
            _ => failed += 1,
        }
    }
    outcome("filled", found.len());
    outcome("not_found", gone.len());
    outcome("failed", failed);
    gone.retain(|n| ctx.directory.index().lookup(portal, *n).is_some());
    if found.is_empty() && gone.is_empty() {
        return;
    }
    let stored = ctx
        .store
        .run(move |s| {
            s.upsert_index(portal, &found)?;
            s.remove_index(portal, &gone)?;
            Ok((found, gone))
        })
        .await;
    match stored {
        Ok((found, gone)) => {
            ctx.directory.index().insert_all(portal, &found);
            ctx.directory.index().remove_all(portal, &gone);
            tracing::debug!(
                portal,
                filled = found.len(),
                removed = gone.len(),
                "personal-manager index updated by look-up"
            );
        }
        Err(e) => tracing::warn!(portal, error = %e, "storing looked-up personal managers failed"),
    }
}

/// The responsible user of the best entity: precedence by kind, then the lowest id.
fn responsible(entities: &[SearchEntity]) -> Option<UserId> {
    entities
        .iter()
        .filter_map(|e| {
            Some((
                (CrmKind::parse(&e.crm_entity_type)?, e.crm_entity_id),
                e.responsible()?,
            ))
        })
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, user)| user)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> LookupConfig {
        LookupConfig {
            max_pending: 3,
            max_batch: 2,
            ..LookupConfig::default()
        }
    }

    #[test]
    fn a_number_is_looked_up_once_per_window_unless_forced() {
        let t0 = Instant::now();
        let mut p = Planner::new(cfg());
        assert_eq!(p.offer(1, 79_160_000_001, false, t0), Offer::Queued);
        assert_eq!(p.offer(1, 79_160_000_001, false, t0), Offer::Duplicate);
        assert_eq!(p.poll_batch(t0), Some((1, vec![79_160_000_001])));
        p.done(1);
        let later = t0 + Duration::from_secs(10);
        assert_eq!(
            p.offer(1, 79_160_000_001, false, later),
            Offer::Duplicate,
            "within the window"
        );
        assert_eq!(
            p.offer(2, 79_160_000_001, false, later),
            Offer::Queued,
            "per portal"
        );
        assert_eq!(
            p.offer(1, 79_160_000_001, true, later),
            Offer::Queued,
            "a refresh is never de-duplicated"
        );
        let after = later + Duration::from_secs(301); // the refresh restarted the window
        p.poll_batch(after);
        p.poll_batch(after);
        p.done(1);
        p.done(2);
        assert_eq!(
            p.offer(1, 79_160_000_001, false, after),
            Offer::Queued,
            "the window is over"
        );
    }

    #[test]
    fn one_request_per_portal_at_a_time_paced_by_its_bucket() {
        let t0 = Instant::now();
        let mut p = Planner::new(cfg());
        for n in 1..=3 {
            assert_eq!(p.offer(1, 79_160_000_000 + n, false, t0), Offer::Queued);
        }
        assert_eq!(
            p.offer(1, 79_160_000_009, false, t0),
            Offer::Full,
            "the portal's queue is full"
        );
        assert_eq!(p.poll_batch(t0).map(|(_, n)| n.len()), Some(2));
        assert_eq!(p.poll_batch(t0), None, "busy");
        p.done(1);
        assert_eq!(
            p.poll_batch(t0).map(|(_, n)| n.len()),
            Some(1),
            "the burst allows a second"
        );
        p.done(1);
        for n in 4..=5 {
            p.offer(1, 79_160_000_000 + n, false, t0);
        }
        assert_eq!(p.poll_batch(t0), None, "the bucket is empty");
        let at = p.poll_timeout().expect("a wake-up");
        assert!(
            at > t0 && at <= t0 + Duration::from_secs(1),
            "{:?}",
            at - t0
        );
        assert_eq!(p.poll_batch(at).map(|(_, n)| n.len()), Some(2));
    }

    #[test]
    fn the_de_duplication_memory_is_bounded() {
        let t0 = Instant::now();
        let mut p = Planner::new(LookupConfig {
            max_recent: 2,
            max_pending: 10,
            ..cfg()
        });
        assert_eq!(p.offer(1, 79_160_000_001, false, t0), Offer::Queued);
        assert_eq!(p.offer(1, 79_160_000_002, false, t0), Offer::Queued);
        assert_eq!(p.offer(1, 79_160_000_003, false, t0), Offer::Full);
        let after = t0 + Duration::from_secs(301);
        assert_eq!(
            p.offer(1, 79_160_000_003, false, after),
            Offer::Queued,
            "expired entries make room"
        );
    }

    #[test]
    fn the_best_entity_decides_not_the_portals_order() {
        let e = |kind: &str, id: u64, user: Option<u64>| SearchEntity {
            crm_entity_type: kind.into(),
            crm_entity_id: id,
            assigned_by_id: user,
            name: None,
            assigned_by: None,
        };
        assert_eq!(
            responsible(&[e("LEAD", 2001, Some(3)), e("COMPANY", 3001, Some(2))]),
            Some(2)
        );
        assert_eq!(
            responsible(&[
                e("CONTACT", 1009, Some(9)),
                e("LEAD", 2001, Some(3)),
                e("CONTACT", 1002, Some(1))
            ]),
            Some(1)
        );
        assert_eq!(
            responsible(&[e("CONTACT", 1001, None), e("LEAD", 2001, Some(3))]),
            Some(3),
            "an entity without a manager is passed over"
        );
        assert_eq!(responsible(&[e("DEAL", 1, Some(4))]), None);
        assert_eq!(responsible(&[]), None);
    }
}
