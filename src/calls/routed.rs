//! Personal-manager decisions waiting for their call's first leg.
//!
//! The redirect listener decides before any leg exists; the decision is kept for
//! `routed_wait` and taken by the first incoming customer call that matches it: the same
//! portal and correlation value, else the same portal and caller (when the correlation values
//! do not contradict each other). Unclaimed decisions expire silently. Decisions arrive in time
//! order, so the queue is ordered by expiry.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::event::Offer;
use super::time::Millis;
use crate::settings::{PortalId, UserId};

/// A remembered decision.
#[derive(Debug, Clone)]
pub(crate) struct RoutedDecision {
    pub(crate) expires: Millis,
    pub(crate) portal: PortalId,
    pub(crate) correlation: Option<Arc<str>>,
    pub(crate) caller: Arc<str>,
    pub(crate) line: Option<Arc<str>>,
    pub(crate) manager: Option<UserId>,
    pub(crate) extension: Option<Arc<str>>,
}

/// The waiting decisions, oldest first.
/// Waiting decisions, indexed so that a new leg finds its decision without a scan: the redirect
/// listener may leave tens of thousands waiting (one per look-up for `routed_wait`).
///
/// Decisions arrive in expiry order, so they live in a queue addressed by id (`id - base`): the
/// front expires first, a taken one leaves an empty slot behind.
#[derive(Debug, Default)]
pub(crate) struct RoutedQueue {
    /// Id of `slots[0]`.
    base: u64,
    slots: VecDeque<Option<RoutedDecision>>,
    live: usize,
    /// By portal and correlation value, oldest first.
    by_corr: HashMap<(PortalId, Arc<str>), VecDeque<u64>>,
    /// By portal and caller, oldest first (the newest is taken).
    by_caller: HashMap<(PortalId, Arc<str>), Vec<u64>>,
}

impl RoutedQueue {
    pub(crate) fn push(&mut self, decision: RoutedDecision) {
        let id = self.base + self.slots.len() as u64;
        if let Some(c) = &decision.correlation {
            self.by_corr.entry((decision.portal, Arc::clone(c))).or_default().push_back(id);
        }
        self.by_caller.entry((decision.portal, Arc::clone(&decision.caller))).or_default().push(id);
        self.slots.push_back(Some(decision));
        self.live += 1;
    }

    pub(crate) fn expire(&mut self, now: Millis) {
        while let Some(Some(d)) = self.slots.front() {
            if d.expires > now {
                break;
            }
            self.remove(self.base);
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<Millis> {
        self.slots.front().and_then(Option::as_ref).map(|d| d.expires)
    }

    pub(crate) fn len(&self) -> usize {
        self.live
    }

    fn get(&self, id: u64) -> Option<&RoutedDecision> {
        let at = usize::try_from(id.checked_sub(self.base)?).ok()?;
        self.slots.get(at)?.as_ref()
    }

    pub(crate) fn take(&mut self, now: Millis, offer: &Offer) -> Option<RoutedDecision> {
        let live = |d: &RoutedDecision| d.expires > now;
        let by_corr = offer.correlation.as_ref().and_then(|c| {
            let ids = self.by_corr.get(&(offer.portal, Arc::clone(c)))?;
            ids.iter().copied().find(|id| self.get(*id).is_some_and(live))
        });
        let by_caller = || {
            let ids = self.by_caller.get(&(offer.portal, Arc::clone(&offer.remote)))?;
            let conflict = |d: &RoutedDecision| matches!((&d.correlation, &offer.correlation), (Some(a), Some(b)) if a != b);
            ids.iter().rev().copied().find(|id| self.get(*id).is_some_and(|d| live(d) && !conflict(d)))
        };
        let id = by_corr.or_else(by_caller)?;
        self.remove(id)
    }

    /// Removes decision `id` from its slot and both indexes; drops empty slots at the front.
    fn remove(&mut self, id: u64) -> Option<RoutedDecision> {
        let at = usize::try_from(id.checked_sub(self.base)?).ok()?;
        let d = self.slots.get_mut(at)?.take()?;
        self.live -= 1;
        while matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
            self.base += 1;
        }
        if let Some(c) = &d.correlation {
            let key = (d.portal, Arc::clone(c));
            if let Some(ids) = self.by_corr.get_mut(&key) {
                ids.retain(|x| *x != id);
                if ids.is_empty() {
                    self.by_corr.remove(&key);
                }
            }
        }
        let key = (d.portal, Arc::clone(&d.caller));
        if let Some(ids) = self.by_caller.get_mut(&key) {
            ids.retain(|x| *x != id);
            if ids.is_empty() {
                self.by_caller.remove(&key);
            }
        }
        Some(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calls::{Direction, LegId, Policy};

    fn decision(expires: u64, corr: Option<&str>, caller: &str, manager: u64) -> RoutedDecision {
        RoutedDecision { expires: Millis(expires), portal: 1, correlation: corr.map(Arc::from), caller: Arc::from(caller), line: None, manager: Some(manager), extension: None }
    }

    fn offer(corr: Option<&str>, remote: &str) -> Offer {
        Offer {
            leg: LegId::from("leg"),
            portal: 1,
            policy: Policy::default(),
            direction: Direction::FromPbx,
            agent_extension: Arc::from("101"),
            agent_user: Some(11),
            remote: Arc::from(remote),
            remote_is_extension: false,
            correlation: corr.map(Arc::from),
            replaces: None,
            referred_by: None,
            line: None,
        }
    }

    #[test]
    fn correlation_wins_then_the_newest_decision_for_the_caller_without_a_contradicting_id() {
        let mut q = RoutedQueue::default();
        q.push(decision(100, Some("a"), "7916", 1));
        q.push(decision(100, None, "7916", 2));
        q.push(decision(100, Some("b"), "7916", 3));
        q.push(decision(100, None, "7916", 4));
        assert_eq!(q.take(Millis(10), &offer(Some("a"), "7999")).and_then(|d| d.manager), Some(1), "by correlation, whatever the caller");
        assert_eq!(q.take(Millis(10), &offer(Some("c"), "7916")).and_then(|d| d.manager), Some(4), "newest without a contradicting id");
        assert_eq!(q.take(Millis(10), &offer(None, "7916")).and_then(|d| d.manager), Some(3));
        assert_eq!(q.len(), 1);
        assert_eq!(q.take(Millis(200), &offer(None, "7916")).map(|d| d.manager), None, "expired decisions are never taken");
    }

    #[test]
    fn expiry_drops_decisions_in_order_and_skips_taken_ones() {
        let mut q = RoutedQueue::default();
        for i in 0..10_000u64 {
            q.push(decision(1_000 + i, Some(&format!("c{i}")), &format!("7{i}"), i));
        }
        assert!(q.take(Millis(0), &offer(Some("c5"), "x")).is_some());
        q.expire(Millis(1_000 + 4_999));
        assert_eq!(q.len(), 5_000, "10,000 - 1 taken - 4,999 expired");
        assert_eq!(q.next_deadline(), Some(Millis(6_000)));
        assert!(q.take(Millis(0), &offer(Some("c9999"), "x")).is_some());
        q.expire(Millis(u64::MAX));
        assert_eq!(q.len(), 0);
    }
}
