//! Checkpoints: what of an open call survives a restart, and how a restored call ends.
//!
//! [`SavedCall`] is everything of a [`Call`] that decides its Bitrix24 finish: legs (with their
//! answer and end times, REFERs and hand-off flags), conversations and who has the customer, a
//! pending transfer, the routing decision the call took (manager, extension, line), the users
//! shown the call, the responsible registered at start and the policy, and a challenge held back
//! while its retry is awaited (`leg.rs`; after a restart the wait goes on from the saved time).
//! It round-trips through JSON; the store keeps it as text and knows nothing of its shape.
//!
//! The tracker marks a call dirty whenever it changes ([`Dirty`]); the driver takes the dirty
//! set ([`Tracker::take_checkpoint`](super::Tracker::take_checkpoint)) on its own schedule and
//! writes it in one transaction, so the SIP path never waits on the disk.
//!
//! A restored call carries its **last evidence**: the last moment callgate knew it was up (the
//! last checkpoint written before the crash or stop, later any in-dialog event on one of its
//! legs). A BYE after the restart ends it as usual, with the full talk time. Without one within
//! `restore_wait` of the last evidence, every live leg ends *at the last evidence* (answered
//! legs as [`EndReason::Lost`], ringing ones as timeouts) and the call finishes with what is
//! known: an answered call stays answered, with its talker and the talk time up to then.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::call::{Call, Effects, Handoff, Transfer};
use super::effect::CallId;
use super::event::{LegId, Policy};
use super::leg::{Challenge, EndReason, Leg, LegRecord, Refer};
use super::record::{CallKind, Conversation, ResponsibleReason};
use super::time::Millis;
use crate::settings::{PortalId, UserId};

/// Calls changed or gone since the last checkpoint was taken.
#[derive(Debug, Default)]
pub(crate) struct Dirty {
    pub(crate) changed: BTreeSet<CallId>,
    pub(crate) gone: VecDeque<CallId>,
}

/// Gone calls remembered at most between two checkpoints. Only a tracker nobody checkpoints
/// (tests, benches) reaches it; a row whose delete is forgotten is dropped or finished silently
/// at the next restore (its finish is queued or delivered by then).
const MAX_GONE: usize = 65_536;

impl Dirty {
    pub(crate) fn mark_gone(&mut self, id: CallId) {
        self.changed.remove(&id);
        if self.gone.len() >= MAX_GONE {
            self.gone.pop_front();
        }
        self.gone.push_back(id);
    }
}

/// What to write: the current state of every call changed since the last one, and the calls
/// that finished (or were merged into another) since.
#[derive(Debug, Default)]
pub struct Checkpoint {
    /// Open calls whose state changed.
    pub saved: Vec<(CallId, SavedCall)>,
    /// Calls no longer open.
    pub gone: Vec<CallId>,
    /// Calls open now.
    pub open: usize,
}

/// The persistent form of one open call. Opaque outside the tracker: serialise it with
/// [`SavedCall::to_json`], read it back with [`SavedCall::from_json`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedCall {
    portal: PortalId,
    kind: CallKind,
    customer: Arc<str>,
    line: Option<Arc<str>>,
    correlation: Option<Arc<str>>,
    manager: Option<UserId>,
    routed_extension: Option<Arc<str>>,
    started_at: Millis,
    answered_at: Option<Millis>,
    policy: Policy,
    legs: Vec<SavedLeg>,
    conversations: Vec<Conversation>,
    current: Option<usize>,
    /// A pending blind transfer: (from extension, target).
    transfer: Option<(Arc<str>, Arc<str>)>,
    /// An attended hand-off: (from leg, to leg).
    handoff: Option<(usize, usize)>,
    shown: Vec<UserId>,
    responsible: (Option<UserId>, ResponsibleReason),
    idle_since: Option<Millis>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SavedLeg {
    rec: LegRecord,
    replaces: Option<LegId>,
    /// A REFER seen on the leg: (target, replaces, accepted).
    refer: Option<(Arc<str>, Option<LegId>, bool)>,
    replaced: bool,
    handed_off: bool,
    /// A 401/407/422 waiting for its retry (absent in rows written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    challenged: Option<Challenge>,
}

impl SavedCall {
    /// The portal the call belongs to.
    #[must_use]
    pub fn portal(&self) -> PortalId {
        self.portal
    }

    /// JSON text for the store.
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads what [`Self::to_json`] wrote.
    ///
    /// # Errors
    /// The text is not a saved call (a hand-edited or corrupt row).
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        let saved: Self = serde_json::from_str(text)?;
        Ok(saved)
    }

    /// Leg indices stay within the legs (a corrupt row must not panic the tracker later).
    fn consistent(&self) -> bool {
        let n = self.legs.len();
        let ok = |i: usize| i < n;
        n > 0 && self.current.is_none_or(ok) && self.handoff.is_none_or(|(a, b)| ok(a) && ok(b))
    }
}

impl Call {
    /// The call's persistent form.
    pub(crate) fn save(&self) -> SavedCall {
        SavedCall {
            portal: self.portal,
            kind: self.kind,
            customer: self.customer.clone(),
            line: self.line.clone(),
            correlation: self.correlation.clone(),
            manager: self.manager,
            routed_extension: self.routed_extension.clone(),
            started_at: self.started_at,
            answered_at: self.answered_at,
            policy: self.policy.clone(),
            legs: self.legs.iter().map(save_leg).collect(),
            conversations: self.conversations.clone(),
            current: self.current,
            transfer: self.transfer.as_ref().map(|t| (t.from_extension.clone(), t.target.clone())),
            handoff: self.handoff.map(|h| (h.from, h.to)),
            shown: self.shown.iter().copied().collect(),
            responsible: self.responsible,
            idle_since: self.idle_since,
        }
    }

    /// A call rebuilt from its saved form under a new id, up as of `evidence`. `None` when the
    /// saved form is inconsistent.
    pub(crate) fn restore(id: CallId, saved: SavedCall, evidence: Millis) -> Option<Self> {
        if !saved.consistent() {
            return None;
        }
        let s = saved;
        Some(Self {
            id,
            portal: s.portal,
            kind: s.kind,
            customer: s.customer,
            line: s.line,
            correlation: s.correlation,
            manager: s.manager,
            routed_extension: s.routed_extension,
            started_at: s.started_at,
            answered_at: s.answered_at,
            policy: s.policy,
            legs: s.legs.into_iter().map(restore_leg).collect(),
            conversations: s.conversations,
            current: s.current,
            transfer: s.transfer.map(|(from_extension, target)| Transfer { from_extension, target }),
            handoff: s.handoff.map(|(from, to)| Handoff { from, to }),
            shown: s.shown.into_iter().collect(),
            responsible: s.responsible,
            idle_since: s.idle_since,
            scheduled: None,
            restored: Some(evidence),
        })
    }

    /// A restored call heard nothing for `restore_wait`: it ends at its last evidence `at`.
    /// The conversation in progress closes then (counted as usual), answered legs end as
    /// [`EndReason::Lost`], ringing ones as timeouts, and the users still shown are hidden.
    pub(crate) fn end_unheard(&mut self, at: Millis, fx: &mut Effects) {
        self.end_conversation(at);
        self.transfer = None;
        self.handoff = None;
        for idx in 0..self.legs.len() {
            let leg = &mut self.legs[idx];
            if !leg.is_live() {
                continue;
            }
            let reason = if leg.is_up() { EndReason::Lost } else { EndReason::Timeout };
            let end = leg.rec.offered_at.max(at);
            leg.end(end, reason);
            self.hide_if_gone(idx, fx);
        }
        self.idle_since = Some(at);
        self.restored = None;
    }
}

fn save_leg(leg: &Leg) -> SavedLeg {
    SavedLeg {
        rec: leg.rec.clone(),
        replaces: leg.replaces.clone(),
        refer: leg.refer.as_ref().map(|r| (r.target.clone(), r.replaces.clone(), r.accepted)),
        replaced: leg.replaced,
        handed_off: leg.handed_off,
        challenged: leg.challenged,
    }
}

fn restore_leg(s: SavedLeg) -> Leg {
    Leg {
        rec: s.rec,
        replaces: s.replaces,
        refer: s.refer.map(|(target, replaces, accepted)| Refer { target, replaces, accepted }),
        replaced: s.replaced,
        handed_off: s.handed_off,
        challenged: s.challenged,
    }
}
