//! The signalling events the tracker consumes, one per thing a SIP source saw (DESIGN.md §2).
//!
//! The edge proxy, the WebRTC B2BUA and the redirect listener all translate what they see into
//! these; the tracker never sees a SIP message. Numbers (`remote`, `caller`) are compared as
//! given, so sources pass them normalised the same way.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::settings::{AssignTo, PortalId, UserId};

/// A leg's identity: the SIP Call-ID of its INVITE dialog (one dialog between the PBX side and
/// one agent). Serialised as a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct LegId(pub Arc<str>);

impl From<&str> for LegId {
    fn from(call_id: &str) -> Self {
        Self(call_id.into())
    }
}

/// The portal settings that shape a call's outcome, captured from the call's first offer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Whether the first or the last talker becomes responsible on an answered incoming call.
    pub assign: AssignTo,
    /// Conversations shorter than this do not count (`min_talk_seconds`).
    pub min_talk: Duration,
    /// Responsible for incoming calls nobody else fits (`incoming.default_responsible`).
    pub default_incoming: Option<UserId>,
    /// Responsible for outgoing calls from unmapped extensions (`outgoing.default_responsible`).
    pub default_outgoing: Option<UserId>,
}

/// Who sent the initial INVITE of a leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The PBX called the agent.
    FromPbx,
    /// The agent's phone (or widget) called the PBX.
    FromAgent,
}

impl Direction {
    /// The side that sent the INVITE (and so may CANCEL it).
    #[must_use]
    pub fn initiator(self) -> Side {
        match self {
            Self::FromPbx => Side::Remote,
            Self::FromAgent => Side::Agent,
        }
    }
}

/// Which end of a leg sent a BYE, CANCEL or REFER.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The agent's phone or widget.
    Agent,
    /// The PBX side (the customer, or another agent through the PBX).
    Remote,
}

/// One thing a signalling source saw. Leg events for legs the tracker does not know are ignored
/// and counted ([`Tracker::ignored`](super::Tracker::ignored)).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The redirect listener took a personal-manager decision (before any leg). Remembered for
    /// `TrackerConfig::routed_wait`; the first incoming customer leg with the same correlation
    /// (else the same portal and caller) picks it up.
    Routed {
        /// The portal the decision was taken for.
        portal: PortalId,
        /// The portal's correlation header on the routing INVITE, if present.
        correlation: Option<Arc<str>>,
        /// The caller's number.
        caller: Arc<str>,
        /// The called line.
        line: Option<Arc<str>>,
        /// The personal manager the call was sent to, if any.
        manager: Option<UserId>,
        /// The manager's extension (the 302 Contact).
        extension: Option<Arc<str>>,
    },
    /// An initial INVITE passed through the proxy.
    Offered(Offer),
    /// A provisional 18x to the initial INVITE.
    Ringing {
        /// The leg.
        leg: LegId,
    },
    /// A 2xx to the initial INVITE.
    Answered {
        /// The leg.
        leg: LegId,
    },
    /// A final non-2xx to the initial INVITE (486, 603, 480, 408, 487 after CANCEL, ...).
    Failed {
        /// The leg.
        leg: LegId,
        /// The SIP status code.
        status: u16,
    },
    /// A CANCEL was seen (the 487 that follows arrives as a `Failed` and is absorbed).
    Cancelled {
        /// The leg.
        leg: LegId,
        /// Who cancelled.
        by: Side,
    },
    /// A BYE on an answered leg.
    Ended {
        /// The leg.
        leg: LegId,
        /// Who hung up.
        by: Side,
    },
    /// A re-INVITE putting the other side on hold (sendonly/inactive) or back (sendrecv).
    Hold {
        /// The leg.
        leg: LegId,
        /// On hold from now (`true`) or resumed (`false`).
        held: bool,
    },
    /// A REFER inside the leg's dialog.
    Refer {
        /// The leg.
        leg: LegId,
        /// Who sent the REFER.
        by: Side,
        /// The user part of Refer-To.
        target: Arc<str>,
        /// The Call-ID in Refer-To's `?Replaces=` (attended transfer).
        replaces: Option<LegId>,
    },
    /// A 2xx (202) to that REFER.
    ReferAccepted {
        /// The leg.
        leg: LegId,
    },
}

impl Event {
    /// The leg an in-dialog event is about; `None` for `Routed` and `Offered`.
    pub(crate) fn leg(&self) -> Option<&LegId> {
        match self {
            Self::Routed { .. } | Self::Offered(_) => None,
            Self::Ringing { leg }
            | Self::Answered { leg }
            | Self::Failed { leg, .. }
            | Self::Cancelled { leg, .. }
            | Self::Ended { leg, .. }
            | Self::Hold { leg, .. }
            | Self::Refer { leg, .. }
            | Self::ReferAccepted { leg } => Some(leg),
        }
    }
}

/// A number the caller withheld (`anonymous`, `Restricted`, an empty caller): it holds no digit
/// at all. Such a number identifies nobody: it never correlates two calls and Bitrix24 refuses
/// it ("Unsupported phone number format"), so the CRM rules register a placeholder instead.
pub fn is_withheld(number: &str) -> bool {
    !number.bytes().any(|b| b.is_ascii_digit())
}

/// An initial INVITE between the PBX side and one agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Offer {
    /// The new leg.
    pub leg: LegId,
    /// The portal the agent belongs to.
    pub portal: PortalId,
    /// The portal's settings at this moment (the call keeps its first offer's policy).
    pub policy: Policy,
    /// Who sent the INVITE.
    pub direction: Direction,
    /// The agent side of the leg.
    pub agent_extension: Arc<str>,
    /// The agent's Bitrix24 user; `None` for an unmapped extension.
    pub agent_user: Option<UserId>,
    /// The other party: the caller (`FromPbx`) or the dialled number (`FromAgent`).
    pub remote: Arc<str>,
    /// The other party is one of the portal's extensions: an internal leg.
    pub remote_is_extension: bool,
    /// The value of the portal's correlation header (e.g. `X-Call-Id`), if present.
    pub correlation: Option<Arc<str>>,
    /// INVITE with Replaces: the Call-ID it replaces.
    pub replaces: Option<LegId>,
    /// The user part of Referred-By.
    pub referred_by: Option<Arc<str>>,
    /// The called line, when the source knows it.
    pub line: Option<Arc<str>>,
}

impl Offer {
    /// The other party is a customer, not an extension.
    pub(crate) fn is_customer_leg(&self) -> bool {
        !self.remote_is_extension
    }
}
