//! [`CallRecord`]: what the tracker knows about one call, as `GET /api/v1/calls` shows it and as
//! the `CallFinished` effect carries it to `telephony.externalcall.finish`.
//!
//! Open calls are shown with the fields decided at the end (`outcome`, `status_code`,
//! `failed_reason`, `ended_at`) still `null`; `responsible` is then the one registered at start.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::effect::CallId;
use super::event::LegId;
use super::leg::LegRecord;
use super::time::Millis;
use crate::settings::{PortalId, UserId};

/// What kind of call this is (DESIGN.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallKind {
    /// The PBX offered a customer's call to an agent.
    Incoming,
    /// An agent dialled a number that is not an extension.
    Outgoing,
    /// Extension to extension: recorded, never sent to Bitrix24.
    Internal,
}

/// An agent who talked with the customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Talker {
    /// The agent's extension.
    pub extension: Arc<str>,
    /// The agent's user; `None` for an unmapped extension.
    #[schema(value_type = Option<u64>)]
    pub user: Option<UserId>,
}

/// A period in which one agent leg was connected to the customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Conversation {
    /// The agent's leg.
    pub leg: LegId,
    /// The agent's extension.
    pub extension: Arc<str>,
    /// The agent's user.
    #[schema(value_type = Option<u64>)]
    pub user: Option<UserId>,
    /// When the customer was connected to this leg.
    pub started_at: Millis,
    /// When the leg ended or the customer moved on; `None` while going on.
    pub ended_at: Option<Millis>,
    /// At least `min_talk_seconds` long. Decided when the conversation ends (`false` before);
    /// uncounted conversations are ignored for the talkers and the duration.
    pub counted: bool,
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// At least one counted conversation (internal calls: a leg was answered).
    Answered,
    /// An incoming call without a counted conversation (STATUS_CODE 304).
    Missed,
    /// An outgoing or internal call without a counted conversation.
    NotAnswered,
}

/// Why a call without a counted conversation ended so (FAILED_REASON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailedReason {
    /// Nobody answered (and no more specific reason applies).
    NoAnswer,
    /// Every agent leg was busy (incoming), or the callee was busy (outgoing).
    Busy,
    /// Agents rejected (603) or were busy, at least one rejected; the callee declined (outgoing).
    Rejected,
    /// The caller (or the PBX) cancelled while the agents' phones were ringing.
    CallerHungUp,
    /// The calling agent cancelled (outgoing, 603-S).
    AgentCancelled,
    /// 408/480, or no answer within the ring timeout.
    Timeout,
    /// Talk happened but every conversation was shorter than `min_talk_seconds`.
    ShortTalk,
    /// Another final status (outgoing: it is the status code).
    Other,
}

/// Why `responsible` is who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ResponsibleReason {
    /// The routed personal manager (incoming, at start).
    PersonalManager,
    /// `incoming.default_responsible` (incoming, at start, no routed manager).
    DefaultIncoming,
    /// The calling agent's user (outgoing).
    CallingAgent,
    /// `outgoing.default_responsible` (outgoing from an unmapped extension).
    DefaultOutgoing,
    /// The first counted talker (incoming answered, assign = first).
    FirstTalker,
    /// The last counted talker (incoming answered, assign = last).
    LastTalker,
    /// The talker's extension is unmapped: the incoming default.
    UnmappedTalker,
    /// Missed: the incoming default, whether or not the call was routed to a personal manager
    /// (`manager` still names the manager who was rung).
    Missed,
    /// Internal calls have no responsible.
    Internal,
}

/// Everything known about one call.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CallRecord {
    /// Tracker-assigned id.
    pub id: CallId,
    /// The portal.
    #[schema(value_type = i64)]
    pub portal: PortalId,
    /// Incoming, outgoing or internal.
    pub kind: CallKind,
    /// The customer's number (internal: the other extension of the first leg).
    pub customer: Arc<str>,
    /// The called line.
    pub line: Option<Arc<str>>,
    /// The PBX's correlation value (first leg that carried one).
    pub correlation: Option<Arc<str>>,
    /// The personal manager of a routing decision the call picked up.
    #[schema(value_type = Option<u64>)]
    pub manager: Option<UserId>,
    /// The extension that routing decision sent the call to.
    pub routed_extension: Option<Arc<str>>,
    /// First offer.
    pub started_at: Millis,
    /// First conversation (internal: first answer).
    pub answered_at: Option<Millis>,
    /// Last leg end; `None` while open.
    pub ended_at: Option<Millis>,
    /// Every leg, in offer order.
    pub legs: Vec<LegRecord>,
    /// Every conversation, in order.
    pub conversations: Vec<Conversation>,
    /// The agent of the earliest counted conversation.
    pub first_talker: Option<Talker>,
    /// The agent of the latest counted conversation.
    pub last_talker: Option<Talker>,
    /// DURATION: the counted conversations' total, rounded up to whole seconds.
    pub talk_seconds: u64,
    /// How it ended; `None` while open.
    pub outcome: Option<Outcome>,
    /// STATUS_CODE for `finish` ("200", "304", "486", "603", "480", "603-S", ...).
    pub status_code: Option<String>,
    /// FAILED_REASON when there was no counted conversation.
    pub failed_reason: Option<FailedReason>,
    /// USER_ID: at start while open, the final one once finished.
    #[schema(value_type = Option<u64>)]
    pub responsible: Option<UserId>,
    /// Why.
    pub responsible_reason: ResponsibleReason,
}
