//! Per-leg signalling on an open call: ringing, failure, cancel, hang-up, hold and ring timeouts.
//!
//! Every handler returns whether it changed anything; events that do not fit the leg's state
//! (a 487 after the CANCEL that already ended the leg, a BYE on a leg never answered) are
//! absorbed. A CANCEL ends the leg at once, so `Hide` goes out without waiting for the 487.
//! A 401/407/422 is held back for the INVITE's retry on the same Call-ID (`leg.rs`).

use std::time::Duration;

use super::call::{Call, Effects};
use super::event::{Offer, Side};
use super::leg::EndReason;
use super::time::Millis;

impl Call {
    /// 18x: the leg rings; its user is shown the call.
    pub(crate) fn on_ringing(&mut self, now: Millis, idx: usize, fx: &mut Effects) -> bool {
        if !self.legs[idx].ring(now) {
            return false;
        }
        self.show(idx, fx);
        true
    }

    /// A final non-2xx: the leg ends unanswered, unless it is a challenge (401, 407) or a 422
    /// its sender answers by sending the INVITE again: that waits for the retry.
    pub(crate) fn on_failed(
        &mut self,
        now: Millis,
        idx: usize,
        status: u16,
        fx: &mut Effects,
    ) -> bool {
        if self.legs[idx].challenge(now, status) {
            return true;
        }
        let reason = EndReason::from_status(status, self.legs[idx].rec.direction);
        self.end_unanswered(now, idx, reason, fx)
    }

    /// The initial INVITE again on a known leg: the retry of a held-back challenge carries on
    /// the same leg. Anything else (a second offer of a leg that is not waiting for one) changes
    /// nothing.
    pub(crate) fn on_retry(&mut self, idx: usize, offer: &Offer) -> bool {
        self.legs[idx].retry(offer)
    }

    /// Held-back challenges whose retry did not come within `wait` end their legs with that
    /// status, at the time it came.
    pub(crate) fn expire_retries(&mut self, now: Millis, wait: Duration, fx: &mut Effects) {
        for idx in 0..self.legs.len() {
            let Some(c) = self.legs[idx].challenged.filter(|c| c.at.after(wait) <= now) else {
                continue;
            };
            let reason = EndReason::from_status(c.status, self.legs[idx].rec.direction);
            self.end_unanswered(c.at, idx, reason, fx);
        }
    }

    /// A CANCEL: the leg ends unanswered.
    pub(crate) fn on_cancelled(
        &mut self,
        now: Millis,
        idx: usize,
        by: Side,
        fx: &mut Effects,
    ) -> bool {
        self.end_unanswered(now, idx, EndReason::Cancel { by }, fx)
    }

    /// Legs offered or ringing for `ring_timeout` end as timeouts.
    pub(crate) fn expire_rings(&mut self, now: Millis, ring_timeout: Duration, fx: &mut Effects) {
        for idx in 0..self.legs.len() {
            let leg = &self.legs[idx];
            if leg.is_pending() && leg.rec.offered_at.after(ring_timeout) <= now {
                self.end_unanswered(now, idx, EndReason::Timeout, fx);
            }
        }
    }

    fn end_unanswered(
        &mut self,
        now: Millis,
        idx: usize,
        reason: EndReason,
        fx: &mut Effects,
    ) -> bool {
        if !self.legs[idx].is_pending() {
            return false;
        }
        self.legs[idx].end(now, reason);
        self.hide_if_gone(idx, fx);
        true
    }

    /// A BYE on an answered leg. If the leg held the customer, the conversation ends and may
    /// move on (attended hand-off, PBX-side transfer); the end reason says what happened.
    pub(crate) fn on_ended(&mut self, now: Millis, idx: usize, by: Side, fx: &mut Effects) -> bool {
        if !self.legs[idx].is_up() {
            return false;
        }
        let mut moved = false;
        if self.current == Some(idx) {
            self.end_conversation(now);
            moved = self.hand_over(now, idx, by, fx);
        }
        let leg = &self.legs[idx];
        let reason = if leg.replaced {
            EndReason::Replaced
        } else if moved || leg.handed_off || leg.refer_accepted() {
            EndReason::Transferred
        } else {
            EndReason::Bye { by }
        };
        self.legs[idx].end(now, reason);
        self.hide_if_gone(idx, fx);
        true
    }

    /// A hold or resume re-INVITE on an answered leg.
    pub(crate) fn on_hold(&mut self, now: Millis, idx: usize, held: bool) -> bool {
        self.legs[idx].hold(now, held)
    }
}
