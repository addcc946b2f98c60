//! Personal-manager decisions waiting for their call's first leg.
//!
//! The redirect listener decides before any leg exists; the decision is kept for
//! `routed_wait` and taken by the first incoming customer call that matches it: the same
//! portal and correlation value, else the same portal and caller (when the correlation values
//! do not contradict each other). Unclaimed decisions expire silently. Decisions arrive in time
//! order, so the queue is ordered by expiry.

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

/// The waiting decisions, oldest first.
#[derive(Debug, Default)]
pub(crate) struct RoutedQueue {
    waiting: VecDeque<RoutedDecision>,
}

impl RoutedQueue {
    pub(crate) fn push(&mut self, decision: RoutedDecision) {
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
