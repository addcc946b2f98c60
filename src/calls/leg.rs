//! One leg: a dialog between the PBX side and one agent, and its lifecycle
//! offered -> ringing -> answered -> ended, or offered/ringing -> ended (failed).
//!
//! [`LegRecord`] is what the admin API shows; `Leg` adds the bookkeeping the tracker needs
//! while the call is open (a pending REFER, what the leg replaces, a challenge held back).
//! Transitions that do not fit the current state return `false` and change nothing (a 487 after
//! a CANCEL, a second 180).
//!
//! A leg is its dialog's Call-ID, not one INVITE transaction: a 401/407 (digest challenge, RFC
//! 3261 §22.2) or 422 (Session Interval Too Small, RFC 4028 §6) to the initial INVITE is
//! answered by the same INVITE sent again on the same Call-ID, so such a status does not end the
//! leg at once. It is held back ([`Challenge`]) while the leg stays offered or ringing; the retry
//! ([`Leg::retry`]), or any later 18x/2xx, carries on the same leg, and only without one within
//! `TrackerConfig::retry_wait` does the leg end with that status, at the time it came.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::event::{Direction, LegId, Offer, Side};
use super::time::Millis;
use crate::settings::UserId;

/// Where a leg is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LegState {
    /// INVITE sent, no 18x yet.
    Offered,
    /// 18x seen.
    Ringing,
    /// 2xx seen, dialog up.
    Answered,
    /// Over (see the end reason).
    Ended,
}

/// Why a leg ended. Serialised as `{"reason": "bye", "by": "agent"}`, `{"reason": "busy"}`, ...
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum EndReason {
    /// A BYE on the answered leg.
    Bye {
        /// Who hung up.
        by: Side,
    },
    /// A CANCEL before the answer (or a 487 without a CANCEL seen: the INVITE's sender cancelled).
    Cancel {
        /// Who cancelled.
        by: Side,
    },
    /// 486 or 600.
    Busy,
    /// 603.
    Rejected,
    /// 408, 480, or no final answer within `TrackerConfig::ring_timeout`.
    Timeout,
    /// Another dialog replaced this one (INVITE with Replaces, or REFER with Replaces).
    Replaced,
    /// The leg handed the customer to another agent (blind or attended transfer, or a PBX-side
    /// transfer that moved the conversation away while the leg was up).
    Transferred,
    /// Any other final status.
    Other {
        /// The SIP status code.
        status: u16,
    },
    /// Restored after a restart and never heard of again within `calls.restore_wait`: ended at
    /// the last evidence that it was up (the BYE was lost or came while callgate was down).
    Lost,
}

impl EndReason {
    /// The end reason for a final non-2xx `status` on a leg of `direction`.
    #[must_use]
    pub fn from_status(status: u16, direction: Direction) -> Self {
        match status {
            486 | 600 => Self::Busy,
            603 => Self::Rejected,
            408 | 480 => Self::Timeout,
            487 => Self::Cancel {
                by: direction.initiator(),
            },
            _ => Self::Other { status },
        }
    }
}

/// What a leg is to the customer call it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The leg carries (or is meant to carry) the customer: answering it can start a conversation.
    Customer,
    /// Agent to agent (internal calls, attended-transfer consultations): no conversation until
    /// a transfer hands the customer to it.
    Consultation,
}

/// A hold period on an answered leg; `to` is `None` while still on hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HoldPeriod {
    /// When the hold began.
    pub from: Millis,
    /// When it ended (resume, or the leg's end).
    pub to: Option<Millis>,
}

/// One leg as recorded on a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LegRecord {
    /// The dialog's Call-ID.
    pub leg: LegId,
    /// The agent's extension.
    pub extension: Arc<str>,
    /// The agent's user; `None` for an unmapped extension.
    #[schema(value_type = Option<u64>)]
    pub user: Option<UserId>,
    /// Who sent the INVITE.
    pub direction: Direction,
    /// The other party (customer number or extension).
    pub remote: Arc<str>,
    /// Customer or consultation leg.
    pub role: Role,
    /// Lifecycle state.
    pub state: LegState,
    /// Why it ended, once ended.
    pub end_reason: Option<EndReason>,
    /// INVITE seen.
    pub offered_at: Millis,
    /// First 18x seen.
    pub ringing_at: Option<Millis>,
    /// 2xx seen.
    pub answered_at: Option<Millis>,
    /// Ended.
    pub ended_at: Option<Millis>,
    /// Hold periods, oldest first.
    pub holds: Vec<HoldPeriod>,
}

/// A REFER seen on a leg.
#[derive(Debug, Clone)]
pub(crate) struct Refer {
    pub(crate) target: Arc<str>,
    pub(crate) replaces: Option<LegId>,
    pub(crate) accepted: bool,
}

/// The final statuses after which the INVITE's sender sends it again on the same Call-ID: the
/// digest challenges 401 and 407 (RFC 3261 §22.2) and 422 Session Interval Too Small (RFC 4028 §6).
pub(crate) fn is_retried(status: u16) -> bool {
    matches!(status, 401 | 407 | 422)
}

/// A final 401, 407 or 422 to the leg's initial INVITE, held back until its retry comes (or
/// `TrackerConfig::retry_wait` passes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Challenge {
    /// The status.
    pub(crate) status: u16,
    /// When it came: the leg's end if no retry follows.
    pub(crate) at: Millis,
}

/// A leg plus the tracker's bookkeeping.
#[derive(Debug, Clone)]
pub(crate) struct Leg {
    pub(crate) rec: LegRecord,
    /// The INVITE's Replaces (resolved when this leg is answered).
    pub(crate) replaces: Option<LegId>,
    pub(crate) refer: Option<Refer>,
    /// Named by a Replaces that took effect: ends as `replaced`.
    pub(crate) replaced: bool,
    /// Lost the customer to another leg while up: ends as `transferred`.
    pub(crate) handed_off: bool,
    /// A 401/407/422 waiting for the INVITE's retry (only while offered or ringing).
    pub(crate) challenged: Option<Challenge>,
}

impl Leg {
    pub(crate) fn new(now: Millis, offer: &Offer, role: Role) -> Self {
        let rec = LegRecord {
            leg: offer.leg.clone(),
            extension: offer.agent_extension.clone(),
            user: offer.agent_user,
            direction: offer.direction,
            remote: offer.remote.clone(),
            role,
            state: LegState::Offered,
            end_reason: None,
            offered_at: now,
            ringing_at: None,
            answered_at: None,
            ended_at: None,
            holds: Vec::new(),
        };
        Self {
            rec,
            replaces: offer.replaces.clone(),
            refer: None,
            replaced: false,
            handed_off: false,
            challenged: None,
        }
    }

    /// Not ended.
    pub(crate) fn is_live(&self) -> bool {
        self.rec.state != LegState::Ended
    }

    /// Offered or ringing: waiting for a final answer.
    pub(crate) fn is_pending(&self) -> bool {
        matches!(self.rec.state, LegState::Offered | LegState::Ringing)
    }

    /// Answered and not ended.
    pub(crate) fn is_up(&self) -> bool {
        self.rec.state == LegState::Answered
    }

    pub(crate) fn refer_accepted(&self) -> bool {
        self.refer.as_ref().is_some_and(|r| r.accepted)
    }

    pub(crate) fn ring(&mut self, now: Millis) -> bool {
        if self.rec.state != LegState::Offered {
            return false;
        }
        self.rec.state = LegState::Ringing;
        self.rec.ringing_at = Some(now);
        self.challenged = None;
        true
    }

    pub(crate) fn answer(&mut self, now: Millis) -> bool {
        if !self.is_pending() {
            return false;
        }
        self.rec.state = LegState::Answered;
        self.rec.answered_at = Some(now);
        self.challenged = None;
        true
    }

    /// A 401/407/422 to the initial INVITE: held back until the retry (see the module doc).
    pub(crate) fn challenge(&mut self, now: Millis, status: u16) -> bool {
        if !self.is_pending() || !is_retried(status) {
            return false;
        }
        self.challenged = Some(Challenge { status, at: now });
        true
    }

    /// The INVITE sent again after a held-back challenge: the same sender for the same agent
    /// (anything else on this Call-ID is no retry of it). The leg carries on as it was.
    pub(crate) fn retry(&mut self, offer: &Offer) -> bool {
        let same = offer.direction == self.rec.direction && offer.agent_extension == self.rec.extension;
        if !same || !self.is_pending() || self.challenged.is_none() {
            return false;
        }
        self.challenged = None;
        true
    }

    /// When a held-back challenge becomes the leg's end, if one is waiting.
    pub(crate) fn retry_deadline(&self, wait: std::time::Duration) -> Option<Millis> {
        self.challenged.filter(|_| self.is_pending()).map(|c| c.at.after(wait))
    }

    /// Ends the leg (closing an open hold period).
    pub(crate) fn end(&mut self, now: Millis, reason: EndReason) {
        self.hold(now, false);
        self.challenged = None;
        self.rec.state = LegState::Ended;
        self.rec.end_reason = Some(reason);
        self.rec.ended_at = Some(now);
    }

    /// Opens or closes a hold period; repeated holds or resumes change nothing.
    pub(crate) fn hold(&mut self, now: Millis, held: bool) -> bool {
        if !self.is_up() {
            return false;
        }
        let open = self.rec.holds.last_mut().filter(|h| h.to.is_none());
        match (open, held) {
            (None, true) => self.rec.holds.push(HoldPeriod {
                from: now,
                to: None,
            }),
            (Some(h), false) => h.to = Some(now),
            _ => return false,
        }
        true
    }
}
