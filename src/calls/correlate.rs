//! Which open call a new leg belongs to (DESIGN.md §2, "Correlating legs").
//!
//! Tried in order; the first rule that finds a call wins, otherwise the leg starts a new call:
//! 1. the same portal and correlation value (a customer leg never joins an internal call);
//! 2. its Replaces names a leg of an open call (unless that call is internal and the new leg
//!    is a customer leg: the later rules decide, and the tracker then merges the internal call
//!    into the call the leg joins or starts);
//! 3. its Referred-By is the extension of an agent of an open customer call of the portal that
//!    either has a blind transfer pending from that extension or has the same customer;
//! 4. a PBX leg to the target extension of a pending blind transfer;
//! 5. a PBX leg with the customer number of an open customer call of the portal that is recent
//!    (a live leg, a pending transfer, or activity within `correlation_window`) and whose
//!    correlation value does not contradict the leg's. An outgoing call qualifies only while the
//!    customer is connected or a transfer is pending (a PBX-side transfer of the outgoing call):
//!    a customer calling in while an agent is still dialling them is a call of its own;
//! 6. an internal leg pairs with the other half of an agent-to-agent call through the PBX
//!    (reversed extension pair, opposite direction, offered within `correlation_window`).
//!
//! Rules 3 and 5 never match on a withheld number (`anonymous`: two hidden callers are not one
//! customer).
//!
//! "Open" includes the linger period. Ties go to calls with a pending transfer, then to the
//! newest call. The scans are linear: open calls are the concurrent calls, a few thousand at most.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use super::call::Call;
use super::effect::CallId;
use super::event::{is_withheld, Direction, LegId, Offer};
use super::record::CallKind;
use super::time::Millis;

/// Where correlation looks: the open calls and the leg index.
pub(crate) struct Open<'a> {
    pub(crate) calls: &'a BTreeMap<CallId, Call>,
    pub(crate) legs: &'a HashMap<LegId, CallId>,
    pub(crate) now: Millis,
    pub(crate) window: Duration,
}

impl Open<'_> {
    /// The open call `offer` joins, if any.
    pub(crate) fn find(&self, offer: &Offer) -> Option<CallId> {
        self.by_correlation(offer)
            .or_else(|| self.by_replaces(offer))
            .or_else(|| self.by_referral(offer))
            .or_else(|| self.by_transfer_target(offer))
            .or_else(|| self.by_customer(offer))
            .or_else(|| self.by_pair(offer))
    }

    fn portal_calls<'b>(&'b self, offer: &'b Offer) -> impl Iterator<Item = &'b Call> + 'b {
        self.calls
            .values()
            .filter(move |c| c.portal == offer.portal)
    }

    fn customer_calls<'b>(&'b self, offer: &'b Offer) -> impl Iterator<Item = &'b Call> + 'b {
        self.portal_calls(offer).filter(|c| c.is_customer_call())
    }

    fn by_correlation(&self, offer: &Offer) -> Option<CallId> {
        let corr = offer.correlation.as_ref()?;
        let fits = |c: &&Call| {
            c.correlation.as_ref() == Some(corr)
                && (c.is_customer_call() || !offer.is_customer_leg())
        };
        self.portal_calls(offer).filter(fits).map(|c| c.id).max()
    }

    fn by_replaces(&self, offer: &Offer) -> Option<CallId> {
        let id = *self.legs.get(offer.replaces.as_ref()?)?;
        let call = self.calls.get(&id)?;
        let internal_to_customer = !call.is_customer_call() && offer.is_customer_leg();
        (call.portal == offer.portal && !internal_to_customer).then_some(id)
    }

    fn by_referral(&self, offer: &Offer) -> Option<CallId> {
        let by = offer.referred_by.as_deref()?;
        let fits = |c: &&Call| {
            c.transfer_from(by)
                || (same_customer(c, offer) && c.legs.iter().any(|l| &*l.rec.extension == by))
        };
        let best = self
            .customer_calls(offer)
            .filter(fits)
            .max_by_key(|c| (c.transfer_from(by), c.id));
        best.map(|c| c.id)
    }

    fn by_transfer_target(&self, offer: &Offer) -> Option<CallId> {
        if offer.direction != Direction::FromPbx {
            return None;
        }
        let target = &*offer.agent_extension;
        self.customer_calls(offer)
            .filter(|c| c.transfer_to(target))
            .map(|c| c.id)
            .max()
    }

    fn by_customer(&self, offer: &Offer) -> Option<CallId> {
        if offer.direction != Direction::FromPbx || !offer.is_customer_leg() {
            return None;
        }
        let contradicts =
            |c: &Call| matches!((&c.correlation, &offer.correlation), (Some(a), Some(b)) if a != b);
        let fits = |c: &&Call| {
            same_customer(c, offer)
                && !contradicts(c)
                && self.recent(c)
                && (c.kind == CallKind::Incoming || c.current.is_some() || c.transfer.is_some())
        };
        let best = self
            .customer_calls(offer)
            .filter(fits)
            .max_by_key(|c| (c.transfer.is_some(), c.id));
        best.map(|c| c.id)
    }

    fn recent(&self, call: &Call) -> bool {
        call.has_live_leg()
            || call.transfer.is_some()
            || self.now.since(call.last_activity()) <= self.window
    }

    fn by_pair(&self, offer: &Offer) -> Option<CallId> {
        if offer.is_customer_leg() {
            return None;
        }
        let fits = |c: &&Call| {
            let [half] = c.legs.as_slice() else {
                return false;
            };
            let h = &half.rec;
            c.kind == CallKind::Internal
                && half.is_live()
                && h.direction != offer.direction
                && h.extension == offer.remote
                && h.remote == offer.agent_extension
                && self.now.since(h.offered_at) <= self.window
        };
        self.portal_calls(offer).filter(fits).map(|c| c.id).max()
    }
}

/// The leg's far end is the call's customer, by a number that identifies someone.
fn same_customer(call: &Call, offer: &Offer) -> bool {
    call.customer == offer.remote && !is_withheld(&offer.remote)
}
