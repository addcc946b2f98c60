//! [`Tracker`]: the sans-IO call tracker, in the quinn-proto shape: `handle(now, event)` and
//! `handle_timeout(now)` feed it, `poll_effect()` and `poll_timeout()` drain it.
//!
//! It owns every open call, an index from leg (Call-ID) to call, one timer set (ring timeouts,
//! linger and transfer waits), the routing decisions waiting for their call and a bounded list of
//! finished records. A driver calls `handle`/`handle_timeout`, then drains `poll_effect` until
//! `None` and sleeps until `poll_timeout`.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use super::call::{Call, Effects};
use super::checkpoint::{Checkpoint, Dirty, SavedCall};
use super::correlate::Open;
use super::effect::{CallId, Effect};
use super::event::{Direction, Event, LegId, Offer};
use super::record::{CallKind, CallRecord};
use super::routed::{RoutedDecision, RoutedQueue};
use super::time::Millis;
use crate::config::CallsConfig;

/// Timers and limits of the tracker. Its defaults are `[calls]`'s ([`CallsConfig::default`], the
/// one table of them), built with `TrackerConfig::from(&cfg.calls)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackerConfig {
    /// How long a call with no live leg waits for a new leg before it finishes (`calls.linger`).
    pub linger: Duration,
    /// How long a call waits for the new leg of an accepted blind transfer (`calls.transfer_wait`).
    pub transfer_wait: Duration,
    /// How long a routing decision waits for its call's first leg (`calls.routed_wait`).
    pub routed_wait: Duration,
    /// How recent a call must be to take a leg by customer number, and how close the two halves
    /// of an internal call must be offered (`calls.correlation_window`).
    pub correlation_window: Duration,
    /// A leg offered or ringing this long ends as a timeout (`calls.ring_timeout`).
    pub ring_timeout: Duration,
    /// How many finished records are kept for the admin API (`calls.keep_finished`).
    pub keep_finished: usize,
    /// A call restored after a restart that sees no in-dialog event for this long after its
    /// last evidence ends at that evidence (`calls.restore_wait`; `checkpoint.rs`).
    pub restore_wait: Duration,
    /// How long a 401/407/422 to an initial INVITE waits for the INVITE's retry on the same
    /// Call-ID before it ends the leg (`RETRY_WAIT`, 32 s).
    pub retry_wait: Duration,
}

/// [`TrackerConfig::retry_wait`]: 32 s, 64·T1 (Timer B/H). The sender retries as soon as it has
/// the answer, and the answer's retransmissions stop within Timer H of 32 s, so a sender that has
/// not retried by then never will. A protocol constant, not a setting.
pub(crate) const RETRY_WAIT: Duration = Duration::from_secs(32);

impl Default for TrackerConfig {
    fn default() -> Self {
        Self::from(&CallsConfig::default())
    }
}

impl From<&CallsConfig> for TrackerConfig {
    fn from(c: &CallsConfig) -> Self {
        Self {
            linger: c.linger,
            transfer_wait: c.transfer_wait,
            routed_wait: c.routed_wait,
            correlation_window: c.correlation_window,
            ring_timeout: c.ring_timeout,
            keep_finished: c.keep_finished,
            restore_wait: c.restore_wait,
            retry_wait: RETRY_WAIT,
        }
    }
}

/// The call tracker. See the module docs of [`calls`](super) for the model.
#[derive(Debug)]
pub struct Tracker {
    cfg: TrackerConfig,
    next_id: u64,
    calls: BTreeMap<CallId, Call>,
    legs: HashMap<LegId, CallId>,
    timers: BTreeSet<(Millis, CallId)>,
    routed: RoutedQueue,
    finished: VecDeque<Arc<CallRecord>>,
    effects: Effects,
    ignored: u64,
    /// Calls changed or gone since the last checkpoint.
    dirty: Dirty,
}

impl Tracker {
    /// An empty tracker. Call ids start at 1.
    #[must_use]
    pub fn new(cfg: TrackerConfig) -> Self {
        Self {
            cfg,
            next_id: 1,
            calls: BTreeMap::new(),
            legs: HashMap::new(),
            timers: BTreeSet::new(),
            routed: RoutedQueue::default(),
            finished: VecDeque::new(),
            effects: VecDeque::new(),
            ignored: 0,
            dirty: Dirty::default(),
        }
    }

    /// Feeds one signalling event seen at `now`. Drain [`poll_effect`](Self::poll_effect)
    /// afterwards and re-read [`poll_timeout`](Self::poll_timeout). Events about unknown legs
    /// (and repeated offers of a known leg, other than the retry after a held-back 401/407/422)
    /// are ignored and counted in [`ignored`](Self::ignored).
    pub fn handle(&mut self, now: Millis, event: Event) {
        match event {
            Event::Routed {
                portal,
                correlation,
                caller,
                line,
                manager,
                extension,
            } => {
                let expires = now.after(self.cfg.routed_wait);
                let decision = RoutedDecision {
                    expires,
                    portal,
                    correlation,
                    caller,
                    line,
                    manager,
                    extension,
                };
                self.routed.push(decision);
            }
            Event::Offered(offer) => self.offer(now, &offer),
            other => self.leg_event(now, other),
        }
    }

    /// Runs every timer due at `now`: ring timeouts, finished lingers and transfer waits,
    /// expired routing decisions. Harmless when nothing is due.
    pub fn handle_timeout(&mut self, now: Millis) {
        self.routed.expire(now);
        while let Some(&(at, id)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            let Some(call) = self.calls.get_mut(&id) else {
                continue;
            };
            call.scheduled = None;
            if let Some(evidence) = call.restored.filter(|e| e.after(self.cfg.restore_wait) <= now) {
                call.end_unheard(evidence, &mut self.effects);
                self.finish(id);
                continue;
            }
            call.expire_retries(now, self.cfg.retry_wait, &mut self.effects);
            call.expire_rings(now, self.cfg.ring_timeout, &mut self.effects);
            call.refresh_idle(now);
            let due = call.finish_at(self.cfg.linger, self.cfg.transfer_wait);
            if due.is_some_and(|t| t <= now) {
                self.finish(id);
            } else {
                self.settle(now, id);
            }
        }
    }

    /// The next instant [`handle_timeout`](Self::handle_timeout) has work, if any.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Millis> {
        let call = self.timers.first().map(|&(at, _)| at);
        call.into_iter().chain(self.routed.next_deadline()).min()
    }

    /// The next effect to carry out, oldest first; `None` when drained.
    #[must_use]
    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// Snapshots of the open calls (including those lingering), oldest first.
    pub fn active(&self) -> impl Iterator<Item = CallRecord> + '_ {
        self.calls.values().map(Call::view)
    }

    /// Finished records, newest first, at most `keep_finished`.
    pub fn finished(&self) -> impl Iterator<Item = &Arc<CallRecord>> {
        self.finished.iter()
    }

    /// One call, open (a snapshot) or finished (while still kept).
    #[must_use]
    pub fn get(&self, id: CallId) -> Option<Arc<CallRecord>> {
        match self.calls.get(&id) {
            Some(call) => Some(Arc::new(call.view())),
            None => self.finished.iter().find(|r| r.id == id).cloned(),
        }
    }

    /// How many events were ignored: leg events about unknown legs, repeated offers.
    #[must_use]
    pub fn ignored(&self) -> u64 {
        self.ignored
    }

    /// Routing decisions still waiting for their call.
    #[must_use]
    pub fn waiting_decisions(&self) -> usize {
        self.routed.len()
    }

    /// What changed since the last checkpoint (see `checkpoint.rs`): the state of every call
    /// changed since, and the calls gone since. Taking it clears the dirty set.
    pub fn take_checkpoint(&mut self) -> Checkpoint {
        let changed = std::mem::take(&mut self.dirty.changed);
        let saved = changed.into_iter().filter_map(|id| Some((id, self.calls.get(&id)?.save())));
        Checkpoint {
            saved: saved.collect(),
            gone: self.dirty.gone.drain(..).collect(),
            open: self.calls.len(),
        }
    }

    /// Takes back a call saved by an earlier run, under a new id, up as of `evidence` (see
    /// `checkpoint.rs`). No effect is emitted: Bitrix24 already knows the call. `None` when
    /// the saved form is inconsistent or one of its legs is already known.
    pub fn restore(&mut self, now: Millis, saved: SavedCall, evidence: Millis) -> Option<CallId> {
        let id = CallId(self.next_id);
        let call = Call::restore(id, saved, evidence)?;
        if call.legs.iter().any(|l| self.legs.contains_key(&l.rec.leg)) {
            return None;
        }
        self.next_id += 1;
        for leg in &call.legs {
            self.legs.insert(leg.rec.leg.clone(), id);
        }
        self.calls.insert(id, call);
        self.settle(now, id);
        Some(id)
    }

    fn offer(&mut self, now: Millis, offer: &Offer) {
        if self.legs.contains_key(&offer.leg) {
            return self.offer_again(now, offer);
        }
        let open = Open {
            calls: &self.calls,
            legs: &self.legs,
            now,
            window: self.cfg.correlation_window,
        };
        let found = open.find(offer);
        let id = found.unwrap_or_else(|| self.create(now, offer));
        self.absorb_replaced(id, offer);
        if found.is_some() {
            if let Some(call) = self.calls.get_mut(&id) {
                call.add_leg(now, offer);
                if let Some(evidence) = call.restored.as_mut() {
                    *evidence = (*evidence).max(now);
                }
            }
        }
        self.legs.insert(offer.leg.clone(), id);
        self.settle(now, id);
    }

    /// An initial INVITE on a leg already known: the retry of a held-back challenge continues
    /// that leg; anything else is ignored.
    fn offer_again(&mut self, now: Millis, offer: &Offer) {
        let located = self.locate(&offer.leg);
        let retried = located.and_then(|(id, idx)| Some((id, idx, self.calls.get_mut(&id)?)));
        let Some((id, idx, call)) = retried else {
            self.ignored += 1;
            return;
        };
        if !call.on_retry(idx, offer) {
            self.ignored += 1;
            return;
        }
        if let Some(evidence) = call.restored.as_mut() {
            *evidence = (*evidence).max(now);
        }
        self.settle(now, id);
    }

    /// An INVITE with Replaces naming a leg of an internal call (the consultation of an attended
    /// transfer) brings that call into the call the new leg joined.
    fn absorb_replaced(&mut self, id: CallId, offer: &Offer) {
        let Some(other) = offer
            .replaces
            .as_ref()
            .and_then(|x| self.legs.get(x).copied())
        else {
            return;
        };
        let consultation = |c: &Call| c.kind == CallKind::Internal && c.portal == offer.portal;
        if self.calls.get(&other).is_some_and(consultation) {
            self.absorb(id, other);
        }
    }

    fn create(&mut self, now: Millis, offer: &Offer) -> CallId {
        let id = CallId(self.next_id);
        self.next_id += 1;
        let incoming = offer.is_customer_leg() && offer.direction == Direction::FromPbx;
        let routed = if incoming {
            self.routed.take(now, offer)
        } else {
            None
        };
        let call = Call::new(id, now, offer, routed, &mut self.effects);
        self.calls.insert(id, call);
        id
    }

    fn leg_event(&mut self, now: Millis, event: Event) {
        let Some((id, idx)) = event.leg().and_then(|leg| self.locate(leg)) else {
            self.ignored += 1;
            return;
        };
        if let Event::ReferAccepted { .. } = event {
            let id = self.refer_accepted(id, idx);
            self.settle(now, id);
            return;
        }
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        if let Some(evidence) = call.restored.as_mut() {
            *evidence = (*evidence).max(now);
        }
        let fx = &mut self.effects;
        match event {
            Event::Ringing { .. } => call.on_ringing(now, idx, fx),
            Event::Answered { .. } => call.on_answered(now, idx, fx),
            Event::Failed { status, .. } => call.on_failed(now, idx, status, fx),
            Event::Cancelled { by, .. } => call.on_cancelled(now, idx, by, fx),
            Event::Ended { by, .. } => call.on_ended(now, idx, by, fx),
            Event::Hold { held, .. } => call.on_hold(now, idx, held),
            Event::Refer {
                target, replaces, ..
            } => call.on_refer(idx, target, replaces),
            Event::Routed { .. } | Event::Offered(_) | Event::ReferAccepted { .. } => false,
        };
        self.settle(now, id);
    }

    fn locate(&self, leg: &LegId) -> Option<(CallId, usize)> {
        let id = *self.legs.get(leg)?;
        Some((id, self.calls.get(&id)?.index_of(leg)?))
    }

    /// An accepted REFER: merges the consultation call named by its Replaces, then sets up the
    /// transfer. Returns the call the leg now belongs to.
    fn refer_accepted(&mut self, id: CallId, idx: usize) -> CallId {
        let Some(call) = self.calls.get_mut(&id) else {
            return id;
        };
        let Some(replaces) = call.mark_refer_accepted(idx) else {
            return id;
        };
        let leg = call.legs[idx].rec.leg.clone();
        let other = replaces.as_ref().and_then(|x| self.legs.get(x).copied());
        let into = other.map_or(id, |other| self.merge(id, other));
        if let Some(call) = self.calls.get_mut(&into) {
            if let Some(r) = call.index_of(&leg) {
                call.start_transfer(r);
            }
        }
        into
    }

    /// Merges whichever of two calls is internal into the other; returns the survivor.
    fn merge(&mut self, a: CallId, b: CallId) -> CallId {
        let internal = |id| {
            self.calls
                .get(&id)
                .is_some_and(|c: &Call| c.kind == CallKind::Internal)
        };
        match (internal(a), internal(b)) {
            _ if a == b => a,
            (true, false) => {
                self.absorb(b, a);
                b
            }
            (_, true) => {
                self.absorb(a, b);
                a
            }
            (false, false) => a,
        }
    }

    /// Moves every leg of call `from` into call `into`; `from` disappears without a record.
    fn absorb(&mut self, into: CallId, from: CallId) {
        if into == from || !self.calls.contains_key(&into) {
            return;
        }
        let Some(mut gone) = self.calls.remove(&from) else {
            return;
        };
        self.dirty.mark_gone(from);
        if let Some(at) = gone.scheduled {
            self.timers.remove(&(at, from));
        }
        for leg in &gone.legs {
            self.legs.insert(leg.rec.leg.clone(), into);
        }
        if let Some(call) = self.calls.get_mut(&into) {
            call.legs.append(&mut gone.legs);
        }
    }

    /// Re-files the call's deadline after a change.
    fn settle(&mut self, now: Millis, id: CallId) {
        let Some(call) = self.calls.get_mut(&id) else {
            return;
        };
        self.dirty.changed.insert(id);
        call.refresh_idle(now);
        let finish = call.finish_at(self.cfg.linger, self.cfg.transfer_wait);
        let unheard = call.restored.map(|e| e.after(self.cfg.restore_wait));
        let due = finish
            .into_iter()
            .chain(call.ring_deadline(self.cfg.ring_timeout))
            .chain(call.retry_deadline(self.cfg.retry_wait))
            .chain(unheard)
            .min();
        if due == call.scheduled {
            return;
        }
        if let Some(old) = call.scheduled {
            self.timers.remove(&(old, id));
        }
        if let Some(at) = due {
            self.timers.insert((at, id));
        }
        call.scheduled = due;
    }

    /// Closes the call: its record goes to the finished list and, for customer calls, out as
    /// `CallFinished`.
    fn finish(&mut self, id: CallId) {
        let Some(call) = self.calls.remove(&id) else {
            return;
        };
        if let Some(at) = call.scheduled {
            self.timers.remove(&(at, id));
        }
        for leg in &call.legs {
            self.legs.remove(&leg.rec.leg);
        }
        self.dirty.mark_gone(id);
        let record = Arc::new(call.finish());
        call.emit(&mut self.effects, Effect::CallFinished(record.clone()));
        self.finished.push_front(record);
        self.finished.truncate(self.cfg.keep_finished);
    }
}
