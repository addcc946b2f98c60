//! What the tracker asks the outside world to do: the Bitrix24 intents of DESIGN.md §5.
//!
//! Effects exist only for customer calls (incoming and outgoing); internal calls produce none.

use std::sync::Arc;

use serde::Serialize;

use super::record::{CallKind, CallRecord, ResponsibleReason};
use crate::settings::{PortalId, UserId};

/// A tracked call's id: assigned by the tracker, increasing. Serialised as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct CallId(pub u64);

/// One intent for the CRM outbox, drained with
/// [`Tracker::poll_effect`](super::Tracker::poll_effect).
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// A customer call became known (`telephony.externalcall.register`): emitted at its first
    /// offer.
    CallStarted {
        /// The call.
        call: CallId,
        /// Its portal.
        portal: PortalId,
        /// Incoming or outgoing.
        kind: CallKind,
        /// The customer's number.
        customer: Arc<str>,
        /// The called line, if known.
        line: Option<Arc<str>>,
        /// The user to register the call for.
        responsible: Option<UserId>,
        /// Why that user.
        reason: ResponsibleReason,
    },
    /// Mapped users whose leg started ringing, or who took the customer without ringing first
    /// (`telephony.externalcall.show`).
    Show {
        /// The call.
        call: CallId,
        /// Its portal.
        portal: PortalId,
        /// The users.
        users: Vec<UserId>,
    },
    /// Mapped users no longer ringing or talking: all their legs of the call have ended
    /// (`telephony.externalcall.hide`).
    Hide {
        /// The call.
        call: CallId,
        /// Its portal.
        portal: PortalId,
        /// The users.
        users: Vec<UserId>,
    },
    /// The customer call is over (`telephony.externalcall.finish`): exactly once per call.
    CallFinished(Arc<CallRecord>),
}
