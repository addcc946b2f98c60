//! Transfers by REFER (DESIGN.md §3): blind (Refer-To an extension) and attended (Refer-To with
//! Replaces naming the consultation dialog).
//!
//! - Blind: once the REFER is accepted, the call holds a pending [`Transfer`]; the next leg that
//!   correlates to the call takes it (and becomes a customer leg). While it is pending the call
//!   waits `transfer_wait` instead of `linger` after its last leg ends.
//! - Attended: the consultation call (internal until now) is merged into the customer call by
//!   the tracker; the leg with the customer is then handed off to the consultation partner (the
//!   consulted agent's leg) when it ends. Without a known partner it falls back to blind.
//!
//! The leg the REFER was sent on ends as `transferred`; the leg named in Replaces as `replaced`.

use super::call::{Call, Handoff, Transfer};
use super::event::LegId;
use super::leg::Refer;
use std::sync::Arc;

impl Call {
    /// A REFER on an answered leg (a new REFER supersedes an unaccepted one). Who sent it does
    /// not matter: either way the customer is meant to move.
    pub(crate) fn on_refer(
        &mut self,
        idx: usize,
        target: Arc<str>,
        replaces: Option<LegId>,
    ) -> bool {
        let leg = &mut self.legs[idx];
        if !leg.is_up() || leg.refer_accepted() {
            return false;
        }
        leg.refer = Some(Refer {
            target,
            replaces,
            accepted: false,
        });
        true
    }

    /// Marks the REFER on leg `idx` accepted; returns its Replaces, or `None` when there was
    /// no REFER waiting (the event is then absorbed).
    pub(crate) fn mark_refer_accepted(&mut self, idx: usize) -> Option<Option<LegId>> {
        let refer = self.legs[idx].refer.as_mut().filter(|r| !r.accepted)?;
        refer.accepted = true;
        Some(refer.replaces.clone())
    }

    /// Sets up the transfer of an accepted REFER on leg `r` of this call (after the tracker
    /// merged the consultation call in, if any).
    pub(crate) fn start_transfer(&mut self, r: usize) {
        let Some(refer) = self.legs[r].refer.clone() else {
            return;
        };
        if let Some(p) = refer.replaces.as_ref().and_then(|x| self.index_of(x)) {
            self.legs[p].replaced = true;
            if self.attend(r, p) {
                return;
            }
        }
        self.transfer = Some(Transfer {
            from_extension: self.legs[r].rec.extension.clone(),
            target: refer.target,
        });
    }

    /// Attended: of the REFER's leg `r` and the replaced leg `p`, one has the customer; the
    /// other is the transferring agent's consultation leg, whose partner gets the customer.
    fn attend(&mut self, r: usize, p: usize) -> bool {
        let Some(c) = self.current else { return false };
        let k = match c {
            c if c == r => p,
            c if c == p => r,
            _ => return false,
        };
        match self.partner(k, c) {
            Some(to) => {
                self.handoff = Some(Handoff { from: c, to });
                true
            }
            None => false,
        }
    }

    /// The other half of consultation leg `k`: the consulted agent's live leg.
    fn partner(&self, k: usize, c: usize) -> Option<usize> {
        let consult = &self.legs[k].rec;
        let others = || {
            let all = self.legs.iter().enumerate();
            all.filter(move |(j, l)| *j != k && *j != c && l.is_live())
        };
        let by_ext = others().find(|(_, l)| l.rec.extension == consult.remote);
        let by_remote = || others().find(|(_, l)| l.rec.remote == consult.extension);
        by_ext.or_else(by_remote).map(|(j, _)| j)
    }

    /// A blind transfer from `extension` is pending.
    pub(crate) fn transfer_from(&self, extension: &str) -> bool {
        self.transfer
            .as_ref()
            .is_some_and(|t| &*t.from_extension == extension)
    }

    /// A blind transfer to `extension` is pending.
    pub(crate) fn transfer_to(&self, extension: &str) -> bool {
        self.transfer
            .as_ref()
            .is_some_and(|t| &*t.target == extension)
    }
}
