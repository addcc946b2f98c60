//! The record of a call: a snapshot while open ([`Call::view`]) and the final record with the
//! outcome, STATUS_CODE, FAILED_REASON and the responsible user ([`Call::finish`]).
//!
//! Decisions (DESIGN.md §3, §5):
//! - DURATION (`talk_seconds`) is the exact sum of the counted conversations in milliseconds,
//!   rounded **up** to whole seconds once (not per conversation): a counted conversation never
//!   reports 0 s, which Bitrix24 reports would show as a call without talk, and it matches how
//!   PBX billing rounds.
//! - Answered = at least one counted conversation: "200". Incoming otherwise: missed, "304",
//!   with the reason. Outgoing otherwise: the callee's answer: "486" busy, "603" declined,
//!   "480" no answer or timeout, "603-S" the agent cancelled, other codes as they came; talk
//!   that was too short to count gives "480" with `short_talk`.
//! - Internal calls: answered when a leg was answered, else the outgoing codes; no responsible.
//! - Responsible at the end: the first or last counted talker (incoming, per
//!   `assign_responsible_to`); the incoming default for an unmapped talker and for a missed call,
//!   **also when the call was routed to a personal manager** (the guide's rule: a missed call
//!   is the default responsible's to handle; the manager who was rung stays visible in
//!   `manager`, `routed_extension` and the legs); outgoing calls keep the user registered at
//!   start.

use super::call::Call;
use super::event::Side;
use super::leg::{EndReason, Leg};
use super::record::{
    CallKind, CallRecord, Conversation, FailedReason, Outcome, ResponsibleReason, Talker,
};
use crate::settings::{AssignTo, UserId};

/// Talkers and duration from the counted, closed conversations.
struct Talk {
    first: Option<Talker>,
    last: Option<Talker>,
    seconds: u64,
}

impl Talk {
    fn of(conversations: &[Conversation]) -> Self {
        let counted = || {
            conversations
                .iter()
                .filter(|c| c.counted && c.ended_at.is_some())
        };
        let talker = |c: &Conversation| Talker {
            extension: c.extension.clone(),
            user: c.user,
        };
        let ms: u64 = counted()
            .map(|c| {
                c.ended_at
                    .unwrap_or(c.started_at)
                    .0
                    .saturating_sub(c.started_at.0)
            })
            .sum();
        Self {
            first: counted().next().map(talker),
            last: counted().next_back().map(talker),
            seconds: ms.div_ceil(1000),
        }
    }
}

impl Call {
    /// A snapshot of the open call: outcome fields `None`, responsible as registered at start.
    pub(crate) fn view(&self) -> CallRecord {
        let talk = Talk::of(&self.conversations);
        CallRecord {
            id: self.id,
            portal: self.portal,
            kind: self.kind,
            customer: self.customer.clone(),
            line: self.line.clone(),
            correlation: self.correlation.clone(),
            manager: self.manager,
            routed_extension: self.routed_extension.clone(),
            started_at: self.started_at,
            answered_at: self.answered_at,
            ended_at: None,
            legs: self.legs.iter().map(|l| l.rec.clone()).collect(),
            conversations: self.conversations.clone(),
            first_talker: talk.first,
            last_talker: talk.last,
            talk_seconds: talk.seconds,
            outcome: None,
            status_code: None,
            failed_reason: None,
            responsible: self.responsible.0,
            responsible_reason: self.responsible.1,
        }
    }

    /// The final record (every leg has ended).
    pub(crate) fn finish(&self) -> CallRecord {
        let mut rec = self.view();
        rec.ended_at = self.legs.iter().filter_map(|l| l.rec.ended_at).max();
        let (outcome, status, failed) = self.outcome(rec.first_talker.is_some());
        let talker = match self.policy.assign {
            AssignTo::First => rec.first_talker.as_ref(),
            AssignTo::Last => rec.last_talker.as_ref(),
        };
        (rec.responsible, rec.responsible_reason) = self.final_responsible(talker);
        rec.outcome = Some(outcome);
        rec.status_code = Some(status);
        rec.failed_reason = failed;
        rec
    }

    fn outcome(&self, counted_talk: bool) -> (Outcome, String, Option<FailedReason>) {
        let answered_internal = self.kind == CallKind::Internal && self.answered_at.is_some();
        if counted_talk || answered_internal {
            return (Outcome::Answered, "200".into(), None);
        }
        if self.kind == CallKind::Incoming {
            return (Outcome::Missed, "304".into(), Some(self.missed_reason()));
        }
        let (status, reason) = self.not_answered_status();
        (Outcome::NotAnswered, status, Some(reason))
    }

    /// Why an incoming call was missed.
    fn missed_reason(&self) -> FailedReason {
        if !self.conversations.is_empty() {
            return FailedReason::ShortTalk;
        }
        let reasons = || self.legs.iter().filter_map(|l| l.rec.end_reason);
        if reasons().all(|r| r == EndReason::Busy) {
            return FailedReason::Busy;
        }
        if reasons().all(|r| matches!(r, EndReason::Busy | EndReason::Rejected)) {
            return FailedReason::Rejected;
        }
        match self.last_ended().and_then(|l| l.rec.end_reason) {
            Some(EndReason::Cancel { by: Side::Remote }) => FailedReason::CallerHungUp,
            Some(EndReason::Timeout) => FailedReason::Timeout,
            _ => FailedReason::NoAnswer,
        }
    }

    /// STATUS_CODE and reason of an outgoing (or internal) call nobody talked on.
    fn not_answered_status(&self) -> (String, FailedReason) {
        if !self.conversations.is_empty() {
            return ("480".into(), FailedReason::ShortTalk);
        }
        let (code, reason) = match self.last_ended().and_then(|l| l.rec.end_reason) {
            Some(EndReason::Busy) => ("486", FailedReason::Busy),
            Some(EndReason::Rejected) => ("603", FailedReason::Rejected),
            Some(EndReason::Timeout) => ("480", FailedReason::Timeout),
            Some(EndReason::Cancel { by: Side::Agent }) => ("603-S", FailedReason::AgentCancelled),
            Some(EndReason::Other { status }) => return (status.to_string(), FailedReason::Other),
            _ => ("480", FailedReason::NoAnswer),
        };
        (code.into(), reason)
    }

    /// The leg that ended last (the later one on a tie).
    fn last_ended(&self) -> Option<&Leg> {
        self.legs
            .iter()
            .filter(|l| l.rec.ended_at.is_some())
            .max_by_key(|l| l.rec.ended_at)
    }

    fn final_responsible(&self, talker: Option<&Talker>) -> (Option<UserId>, ResponsibleReason) {
        let default_incoming = self.policy.default_incoming;
        match (self.kind, talker) {
            (CallKind::Incoming, Some(Talker { user: Some(u), .. })) => {
                let reason = match self.policy.assign {
                    AssignTo::First => ResponsibleReason::FirstTalker,
                    AssignTo::Last => ResponsibleReason::LastTalker,
                };
                (Some(*u), reason)
            }
            (CallKind::Incoming, Some(_)) => (default_incoming, ResponsibleReason::UnmappedTalker),
            // The guide: a missed incoming call goes to the incoming default responsible, routed
            // or not. The manager who was rung stays on the record (`manager`, the legs).
            (CallKind::Incoming, None) => (default_incoming, ResponsibleReason::Missed),
            (CallKind::Outgoing, _) => self.responsible,
            (CallKind::Internal, _) => (None, ResponsibleReason::Internal),
        }
    }
}
