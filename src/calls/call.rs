//! `Call`: one open call: its legs, conversations, pending transfer, the users shown in
//! Bitrix24, and when it goes idle. Per-leg event handling, conversations, transfers and the
//! final record are further `impl Call` blocks in `lifecycle.rs`, `conversation.rs`,
//! `transfer.rs` and `outcome.rs`.
//!
//! Invariants: leg indices are stable (legs are only appended); `current` is the index of the
//! leg holding the customer and, when set, the last conversation is open and belongs to it;
//! internal calls emit no effects.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use super::effect::{CallId, Effect};
use super::event::{Direction, LegId, Offer, Policy};
use super::leg::{Leg, Role};
use super::record::{CallKind, Conversation, ResponsibleReason};
use super::routed::RoutedDecision;
use super::time::Millis;
use crate::settings::{PortalId, UserId};

/// The effect queue shared by the tracker and its calls.
pub(crate) type Effects = VecDeque<Effect>;

/// A blind transfer accepted by the PBX and not yet picked up by a new leg.
#[derive(Debug, Clone)]
pub(crate) struct Transfer {
    /// The transferring agent's extension (expected in the new leg's Referred-By).
    pub(crate) from_extension: Arc<str>,
    /// Refer-To's user part (expected as the new leg's agent).
    pub(crate) target: Arc<str>,
}

/// An attended transfer: when leg `from` ends, the customer continues on leg `to`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Handoff {
    pub(crate) from: usize,
    pub(crate) to: usize,
}

/// One open call.
#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) id: CallId,
    pub(crate) portal: PortalId,
    pub(crate) kind: CallKind,
    pub(crate) customer: Arc<str>,
    pub(crate) line: Option<Arc<str>>,
    pub(crate) correlation: Option<Arc<str>>,
    pub(crate) manager: Option<UserId>,
    pub(crate) routed_extension: Option<Arc<str>>,
    pub(crate) started_at: Millis,
    pub(crate) answered_at: Option<Millis>,
    pub(crate) policy: Policy,
    pub(crate) legs: Vec<Leg>,
    pub(crate) conversations: Vec<Conversation>,
    pub(crate) current: Option<usize>,
    pub(crate) transfer: Option<Transfer>,
    pub(crate) handoff: Option<Handoff>,
    pub(crate) shown: BTreeSet<UserId>,
    /// Responsible registered at start.
    pub(crate) responsible: (Option<UserId>, ResponsibleReason),
    /// Since when the call has had no live leg.
    pub(crate) idle_since: Option<Millis>,
    /// The deadline this call is filed under in the tracker's timer set.
    pub(crate) scheduled: Option<Millis>,
    /// Restored from a checkpoint after a restart: the last evidence that it was still up
    /// (`checkpoint.rs`); `None` for calls of this run.
    pub(crate) restored: Option<Millis>,
}

impl Call {
    /// A call created by its first offer; emits `CallStarted` for customer calls.
    pub(crate) fn new(
        id: CallId,
        now: Millis,
        offer: &Offer,
        routed: Option<RoutedDecision>,
        fx: &mut Effects,
    ) -> Self {
        let kind = match (offer.remote_is_extension, offer.direction) {
            (true, _) => CallKind::Internal,
            (false, Direction::FromPbx) => CallKind::Incoming,
            (false, Direction::FromAgent) => CallKind::Outgoing,
        };
        let (manager, routed_extension, routed_line) = match routed {
            Some(r) => (r.manager, r.extension, r.line),
            None => (None, None, None),
        };
        let first_role = if kind == CallKind::Internal {
            Role::Consultation
        } else {
            Role::Customer
        };
        let mut call = Self {
            id,
            portal: offer.portal,
            kind,
            customer: offer.remote.clone(),
            line: offer.line.clone().or(routed_line),
            correlation: offer.correlation.clone(),
            manager,
            routed_extension,
            started_at: now,
            answered_at: None,
            policy: offer.policy.clone(),
            legs: vec![Leg::new(now, offer, first_role)],
            conversations: Vec::new(),
            current: None,
            transfer: None,
            handoff: None,
            shown: BTreeSet::new(),
            responsible: (None, ResponsibleReason::Internal),
            idle_since: None,
            scheduled: None,
            restored: None,
        };
        call.responsible = call.starting_responsible(offer.agent_user);
        call.emit_started(fx);
        call
    }

    fn starting_responsible(&self, agent: Option<UserId>) -> (Option<UserId>, ResponsibleReason) {
        match (self.kind, self.manager, agent) {
            (CallKind::Incoming, Some(m), _) => (Some(m), ResponsibleReason::PersonalManager),
            (CallKind::Incoming, None, _) => (
                self.policy.default_incoming,
                ResponsibleReason::DefaultIncoming,
            ),
            (CallKind::Outgoing, _, Some(u)) => (Some(u), ResponsibleReason::CallingAgent),
            (CallKind::Outgoing, _, None) => (
                self.policy.default_outgoing,
                ResponsibleReason::DefaultOutgoing,
            ),
            (CallKind::Internal, _, _) => (None, ResponsibleReason::Internal),
        }
    }

    fn emit_started(&self, fx: &mut Effects) {
        self.emit(
            fx,
            Effect::CallStarted {
                call: self.id,
                portal: self.portal,
                kind: self.kind,
                customer: self.customer.clone(),
                line: self.line.clone(),
                responsible: self.responsible.0,
                reason: self.responsible.1,
            },
        );
    }

    /// Queues `effect` unless this is an internal call.
    pub(crate) fn emit(&self, fx: &mut Effects, effect: Effect) {
        if self.kind != CallKind::Internal {
            fx.push_back(effect);
        }
    }

    /// A customer (incoming or outgoing) call.
    pub(crate) fn is_customer_call(&self) -> bool {
        self.kind != CallKind::Internal
    }

    /// Adds a leg that correlated to this call. A pending blind transfer is taken by it.
    pub(crate) fn add_leg(&mut self, now: Millis, offer: &Offer) {
        let took_transfer = self.transfer.take().is_some();
        let replaces_customer = offer
            .replaces
            .as_ref()
            .and_then(|r| self.index_of(r))
            .is_some_and(|i| self.current == Some(i) || self.legs[i].rec.role == Role::Customer);
        let role = if offer.is_customer_leg() || took_transfer || replaces_customer {
            Role::Customer
        } else {
            Role::Consultation
        };
        if self.correlation.is_none() {
            self.correlation = offer.correlation.clone();
        }
        self.legs.push(Leg::new(now, offer, role));
    }

    pub(crate) fn index_of(&self, leg: &LegId) -> Option<usize> {
        self.legs.iter().position(|l| l.rec.leg == *leg)
    }

    /// Some leg is not ended yet.
    pub(crate) fn has_live_leg(&self) -> bool {
        self.legs.iter().any(Leg::is_live)
    }

    /// The latest offer or leg end: how recent the call is for number correlation.
    pub(crate) fn last_activity(&self) -> Millis {
        let times = self
            .legs
            .iter()
            .flat_map(|l| [Some(l.rec.offered_at), l.rec.ended_at]);
        times.flatten().max().unwrap_or(self.started_at)
    }

    /// Shows the call to the leg's user, once per user.
    pub(crate) fn show(&mut self, idx: usize, fx: &mut Effects) {
        let Some(user) = self.legs[idx].rec.user else {
            return;
        };
        if self.is_customer_call() && self.shown.insert(user) {
            let (call, portal) = (self.id, self.portal);
            self.emit(
                fx,
                Effect::Show {
                    call,
                    portal,
                    users: vec![user],
                },
            );
        }
    }

    /// Hides the call from the leg's user once none of that user's legs is live.
    pub(crate) fn hide_if_gone(&mut self, idx: usize, fx: &mut Effects) {
        let Some(user) = self.legs[idx].rec.user else {
            return;
        };
        let still = self
            .legs
            .iter()
            .any(|l| l.is_live() && l.rec.user == Some(user));
        if !still && self.shown.remove(&user) {
            let (call, portal) = (self.id, self.portal);
            self.emit(
                fx,
                Effect::Hide {
                    call,
                    portal,
                    users: vec![user],
                },
            );
        }
    }

    /// Records when the call went idle (no live leg); clears it when a leg is live again.
    pub(crate) fn refresh_idle(&mut self, now: Millis) {
        if self.has_live_leg() {
            self.idle_since = None;
        } else if self.idle_since.is_none() {
            self.idle_since = Some(now);
        }
    }

    /// When an idle call finishes: after `linger`, or `transfer_wait` while a blind transfer
    /// is pending (whichever is longer).
    pub(crate) fn finish_at(&self, linger: Duration, transfer_wait: Duration) -> Option<Millis> {
        let wait = if self.transfer.is_some() {
            linger.max(transfer_wait)
        } else {
            linger
        };
        self.idle_since.map(|t| t.after(wait))
    }

    /// The earliest end of a held-back challenge (`leg.rs`) whose retry has not come.
    pub(crate) fn retry_deadline(&self, wait: Duration) -> Option<Millis> {
        self.legs.iter().filter_map(|l| l.retry_deadline(wait)).min()
    }

    /// The earliest ring timeout among legs still waiting for an answer.
    pub(crate) fn ring_deadline(&self, ring_timeout: Duration) -> Option<Millis> {
        let pending = self.legs.iter().filter(|l| l.is_pending());
        pending.map(|l| l.rec.offered_at.after(ring_timeout)).min()
    }
}
