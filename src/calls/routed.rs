//! Personal-manager decisions waiting for their call's first leg.
//!
//! The redirect listener decides before any leg exists; the decision is kept for
//! `routed_wait` and taken by the first incoming customer call that matches it: the same
//! portal and correlation value, else the same portal and caller (when the correlation values
//! do not contradict each other). Unclaimed decisions expire silently. Decisions arrive in time
//! order, so the queue is ordered by expiry.
//!
//! At most [`MAX_WAITING`] decisions wait; past that the oldest goes first. A PBX asks just
//! before it dials, so a decision is claimed within milliseconds or never (a PBX whose calls do
//! not pass through the edge proxy): at 10,000 look-ups/s with nothing claiming them, an
//! unbounded queue held 600,000 decisions (about 60 MB) for `routed_wait`, and every new one was
//! written to memory long out of cache.

use std::collections::VecDeque;
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

/// Decisions waiting at most (the oldest is dropped first past it).
pub(crate) const MAX_WAITING: usize = 65_536;

/// The waiting decisions, oldest first.
#[derive(Debug, Default)]
pub(crate) struct RoutedQueue {
    waiting: VecDeque<RoutedDecision>,
}

impl RoutedQueue {
    pub(crate) fn push(&mut self, decision: RoutedDecision) {
        if self.waiting.len() >= MAX_WAITING {
            self.waiting.pop_front();
        }
        self.waiting.push_back(decision);
    }

    /// Drops decisions whose time is up.
    pub(crate) fn expire(&mut self, now: Millis) {
        while self.waiting.front().is_some_and(|d| d.expires <= now) {
            self.waiting.pop_front();
        }
    }

    pub(crate) fn next_deadline(&self) -> Option<Millis> {
        self.waiting.front().map(|d| d.expires)
    }

    pub(crate) fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Takes the decision for a new incoming call: by correlation first, then the newest one
    /// for the same caller.
    pub(crate) fn take(&mut self, now: Millis, offer: &Offer) -> Option<RoutedDecision> {
        let live = |d: &RoutedDecision| d.portal == offer.portal && d.expires > now;
        let same_corr =
            |d: &RoutedDecision| d.correlation.is_some() && d.correlation == offer.correlation;
        let by_corr = self.waiting.iter().position(|d| live(d) && same_corr(d));
        let by_caller = || {
            let conflict = |d: &RoutedDecision| match (&d.correlation, &offer.correlation) {
                (Some(a), Some(b)) => a != b,
                _ => false,
            };
            let fits = |d: &RoutedDecision| live(d) && d.caller == offer.remote && !conflict(d);
            self.waiting.iter().rposition(fits)
        };
        let at = by_corr.or_else(by_caller)?;
        self.waiting.remove(at)
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
    fn the_queue_keeps_the_newest_decisions_when_full() {
        let mut q = RoutedQueue::default();
        for i in 0..(MAX_WAITING as u64 + 10) {
            q.push(decision(1_000_000 + i, None, &format!("7900{i:07}"), i));
        }
        assert_eq!(q.len(), MAX_WAITING);
        assert!(q.take(Millis(0), &offer(None, "79000000005")).is_none(), "one of the oldest: dropped");
        let newest = format!("7900{:07}", MAX_WAITING + 9);
        assert_eq!(q.take(Millis(0), &offer(None, &newest)).and_then(|d| d.manager), Some(MAX_WAITING as u64 + 9));
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
