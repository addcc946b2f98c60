//! Conversations: which agent leg the customer is connected to, and when that changes.
//!
//! Rules (DESIGN.md §3):
//! - an answered leg takes the customer when nobody has them, when it replaces the leg that has
//!   them (INVITE with Replaces), or when it is a customer leg offered after the current
//!   conversation began (a PBX-side transfer). Ring-all legs offered before the answer never
//!   steal the customer from the first leg that answered;
//! - when the leg with the customer ends, the customer moves to an attended-transfer target
//!   (REFER with Replaces), or, when the agent hung up, to another agent's answered leg of the
//!   same call (PBX-side attended transfer); otherwise the conversation simply ends;
//! - a conversation shorter than `policy.min_talk` is kept but not counted.

use super::call::{Call, Effects};
use super::event::Side;
use super::leg::Role;
use super::record::{CallKind, Conversation};
use super::time::Millis;

impl Call {
    /// A 2xx to the initial INVITE.
    pub(crate) fn on_answered(&mut self, now: Millis, idx: usize, fx: &mut Effects) -> bool {
        if !self.legs[idx].answer(now) {
            return false;
        }
        if self.kind == CallKind::Internal {
            self.answered_at.get_or_insert(now);
            return true;
        }
        self.show(idx, fx);
        let replaced = self.replaced_live_leg(idx);
        if let Some(r) = replaced {
            self.legs[r].replaced = true;
        }
        let takes = match self.current {
            None => true,
            Some(c) => replaced == Some(c) || self.offered_during_conversation(idx),
        };
        if takes {
            self.take_conversation(now, idx, fx);
        }
        true
    }

    /// A customer leg offered after the current conversation started.
    fn offered_during_conversation(&self, idx: usize) -> bool {
        let leg = &self.legs[idx];
        let started = self.conversations.last().map(|c| c.started_at);
        leg.rec.role == Role::Customer && started.is_some_and(|s| leg.rec.offered_at >= s)
    }

    /// The live leg this leg's INVITE replaced, if any.
    fn replaced_live_leg(&self, idx: usize) -> Option<usize> {
        let target = self.legs[idx].replaces.as_ref()?;
        self.index_of(target)
            .filter(|&r| r != idx && self.legs[r].is_live())
    }

    /// Connects the customer to leg `idx`, ending the conversation on any other leg (that leg
    /// then ends as `transferred`).
    pub(crate) fn take_conversation(&mut self, now: Millis, idx: usize, fx: &mut Effects) {
        if let Some(c) = self.current {
            if c == idx {
                return;
            }
            self.end_conversation(now);
            self.legs[c].handed_off = true;
        }
        let leg = &mut self.legs[idx];
        leg.rec.role = Role::Customer;
        self.conversations.push(Conversation {
            leg: leg.rec.leg.clone(),
            extension: leg.rec.extension.clone(),
            user: leg.rec.user,
            started_at: now,
            ended_at: None,
            counted: false,
        });
        self.current = Some(idx);
        self.answered_at.get_or_insert(now);
        self.show(idx, fx);
    }

    /// Closes the open conversation, if any, deciding whether it counts.
    pub(crate) fn end_conversation(&mut self, now: Millis) {
        if self.current.take().is_none() {
            return;
        }
        let min_talk = self.policy.min_talk;
        if let Some(conv) = self.conversations.last_mut() {
            conv.ended_at = Some(now);
            conv.counted = now.since(conv.started_at) >= min_talk;
        }
    }

    /// The leg `from` that had the customer ended: moves the customer on if a transfer says
    /// where. Returns whether the customer moved (or will, when the target answers).
    pub(crate) fn hand_over(
        &mut self,
        now: Millis,
        from: usize,
        by: Side,
        fx: &mut Effects,
    ) -> bool {
        if let Some(h) = self.handoff.filter(|h| h.from == from) {
            self.handoff = None;
            if self.legs[h.to].is_live() {
                self.legs[h.to].rec.role = Role::Customer;
                if self.legs[h.to].is_up() {
                    self.take_conversation(now, h.to, fx);
                }
                return true;
            }
        }
        if by != Side::Agent || self.legs[from].refer.is_some() || self.transfer.is_some() {
            return false;
        }
        match self.other_agents_answered_leg(from) {
            Some(to) => {
                self.take_conversation(now, to, fx);
                true
            }
            None => false,
        }
    }

    /// The most recently answered live leg of another extension (a PBX-side attended transfer
    /// completes when the transferring agent hangs up).
    fn other_agents_answered_leg(&self, from: usize) -> Option<usize> {
        let ext = &self.legs[from].rec.extension;
        let candidates = self.legs.iter().enumerate();
        let up = candidates.filter(|(i, l)| *i != from && l.is_up() && l.rec.extension != *ext);
        up.max_by_key(|(_, l)| l.rec.answered_at).map(|(i, _)| i)
    }
}
