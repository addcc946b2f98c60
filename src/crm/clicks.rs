//! Pending click-to-calls (DESIGN.md §5, click-to-call row; bitrix24-rest.md §6.2): Bitrix24
//! registered the call before firing `ONEXTERNALCALLSTART`, so the click waits here (2 minutes)
//! for the agent's outgoing call to that number. The outbox rules take it when the tracker
//! reports that call (no second register; show/hide/finish use the click's CALL_ID); the event
//! processor finishes the clicks that expire unplaced. [`Originate`] is the port that rings the
//! agent (`originate::SipOriginator` in production).
//!
//! Bounded: at most [`MAX_PENDING_PER_PORTAL`] clicks per portal and [`MAX_PENDING`] in all (a
//! click lives 2 minutes); beyond that a click is refused ([`Added::Full`]) and the processor
//! finishes it at once, so one portal's burst cannot grow memory or crowd out the others.

use std::future::Future;
use std::pin::Pin;

use parking_lot::Mutex;

use crate::directory::PortalEntry;
use crate::settings::{PortalId, UserId};

/// A click-to-call waiting for the agent's outgoing call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingClick {
    /// The portal.
    pub portal: PortalId,
    /// Bitrix24's CALL_ID (already registered).
    pub call_id: String,
    /// Who clicked.
    pub user: UserId,
    /// Their extension.
    pub extension: String,
    /// The normalised number to call.
    pub number: u64,
    /// Unix ms after which the click is finished as not placed.
    pub expires_at_ms: u64,
    /// STATUS_CODE of that finish (`603-S` unless origination learnt better).
    pub unplaced_status: String,
}

/// Clicks pending at most, all portals together.
pub const MAX_PENDING: usize = 4096;
/// Clicks pending at most per portal.
pub const MAX_PENDING_PER_PORTAL: usize = 256;

/// What [`ClickToCalls::add`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// Now pending.
    Pending,
    /// Its CALL_ID is already pending.
    Duplicate,
    /// The portal (or everyone) has as many pending as allowed.
    Full,
}

/// Pending click-to-calls, shared by the event processor (adds, expires) and the outbox rules
/// (take the one an outgoing call matches). A handful at a time: a vector under a short lock.
#[derive(Debug, Default)]
pub struct ClickToCalls {
    pending: Mutex<Vec<PendingClick>>,
}

impl ClickToCalls {
    /// Adds `click` unless its CALL_ID is already pending or the bounds are reached.
    pub fn add(&self, click: PendingClick) -> Added {
        let mut p = self.pending.lock();
        if p.iter()
            .any(|c| c.portal == click.portal && c.call_id == click.call_id)
        {
            return Added::Duplicate;
        }
        let of_portal = p.iter().filter(|c| c.portal == click.portal).count();
        if p.len() >= MAX_PENDING || of_portal >= MAX_PENDING_PER_PORTAL {
            return Added::Full;
        }
        p.push(click);
        Added::Pending
    }

    /// Takes the oldest live click of `user` to `number` in `portal`.
    pub fn take(
        &self,
        portal: PortalId,
        user: UserId,
        number: u64,
        now_ms: u64,
    ) -> Option<PendingClick> {
        let mut p = self.pending.lock();
        let i = p.iter().position(|c| {
            c.portal == portal && c.user == user && c.number == number && c.expires_at_ms > now_ms
        })?;
        Some(p.remove(i))
    }

    /// Removes and returns the clicks expired at `now_ms`.
    pub fn take_expired(&self, now_ms: u64) -> Vec<PendingClick> {
        let mut p = self.pending.lock();
        let (gone, live): (Vec<_>, Vec<_>) = p.drain(..).partition(|c| c.expires_at_ms <= now_ms);
        *p = live;
        gone
    }

    /// Records how origination failed (the STATUS_CODE of the finish at expiry).
    pub fn set_unplaced_status(&self, portal: PortalId, call_id: &str, status: &str) {
        if let Some(c) = self
            .pending
            .lock()
            .iter_mut()
            .find(|c| c.portal == portal && c.call_id == call_id)
        {
            status.clone_into(&mut c.unplaced_status);
        }
    }

    /// Clicks pending.
    pub fn len(&self) -> usize {
        self.pending.lock().len()
    }

    /// True when none is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Future of an origination.
pub type OriginateFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Places a click-to-call: rings the agent, then has the agent's phone call `number` via the PBX.
pub trait Originate: Send + Sync + 'static {
    /// Originates `click` for `portal`; `Err` carries a SIP status code (`486`, `603`, `480`)
    /// or a reason.
    fn originate<'a>(
        &'a self,
        portal: &'a PortalEntry,
        click: &'a PendingClick,
    ) -> OriginateFuture<'a>;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::{IntentKind, OutboxWrite};

    #[test]
    fn an_outgoing_call_matching_a_click_takes_its_call_id_instead_of_a_register() {
        use crate::calls::{CallId, CallKind, Effect, ResponsibleReason};
        use crate::settings::{Mapping, Portal, PortalSettings};
        let settings = PortalSettings {
            active: true,
            ..PortalSettings::default()
        };
        let portal = Portal {
            id: 1,
            name: None,
            domain: "https://a.bitrix24.ru/".into(),
            auth: None,
            settings,
        };
        let mapping = Mapping {
            id: 1,
            user_id: 11,
            extension: "101".into(),
            use_for_personal_manager: true,
            contact: None,
        };
        let entry = PortalEntry::build(portal, vec![mapping], Vec::new());
        let clicks = Arc::new(ClickToCalls::default());
        clicks.add(PendingClick {
            portal: 1,
            call_id: "externalCall.7".into(),
            user: 11,
            extension: "101".into(),
            number: 79_161_234_567,
            expires_at_ms: 10_000,
            unplaced_status: "603-S".into(),
        });
        let mut rules = super::super::Rules::new(1, 0).with_click_to_calls(Arc::clone(&clicks));
        let started = |call, customer: &str| Effect::CallStarted {
            call: CallId(call),
            portal: 1,
            kind: CallKind::Outgoing,
            customer: Arc::from(customer),
            line: None,
            responsible: Some(11),
            reason: ResponsibleReason::CallingAgent,
        };
        let mut out = OutboxWrite::default();
        rules.apply(
            &started(1, "+7 916 123-45-67"),
            Some(&entry),
            5_000,
            &mut out,
        );
        assert_eq!(out.calls[0].b24_call_id.as_deref(), Some("externalCall.7"));
        assert!(out.intents.is_empty(), "no register: {:?}", out.intents);
        assert!(clicks.is_empty(), "taken");
        let mut out = OutboxWrite::default();
        rules.apply(&started(2, "79161234567"), Some(&entry), 5_000, &mut out);
        assert_eq!(
            (out.calls[0].b24_call_id.as_deref(), out.intents[0].kind),
            (None, IntentKind::Register),
            "a second call registers"
        );
    }

    #[test]
    fn clicks_match_by_portal_user_and_number_until_they_expire() {
        let c = ClickToCalls::default();
        let click = |id: &str, at| PendingClick {
            portal: 1,
            call_id: id.into(),
            user: 11,
            extension: "101".into(),
            number: 79_161_234_567,
            expires_at_ms: at,
            unplaced_status: "603-S".into(),
        };
        assert_eq!(c.add(click("A", 1000)), Added::Pending);
        assert_eq!(c.add(click("A", 1000)), Added::Duplicate, "one per CALL_ID");
        assert_eq!(c.add(click("B", 500)), Added::Pending);
        assert_eq!(c.take(2, 11, 79_161_234_567, 0), None);
        assert_eq!(c.take(1, 12, 79_161_234_567, 0), None);
        assert_eq!(
            c.take(1, 11, 79_161_234_567, 600).map(|p| p.call_id),
            Some("A".into()),
            "B expired"
        );
        c.set_unplaced_status(1, "B", "486");
        let gone = c.take_expired(600);
        assert_eq!(
            gone.iter()
                .map(|p| (p.call_id.as_str(), p.unplaced_status.as_str()))
                .collect::<Vec<_>>(),
            [("B", "486")]
        );
        assert!(c.is_empty());
    }

    #[test]
    fn pending_clicks_are_bounded_per_portal_and_in_all() {
        let c = ClickToCalls::default();
        let click = |portal, i: usize| PendingClick {
            portal,
            call_id: format!("externalCall.{i}"),
            user: 11,
            extension: "101".into(),
            number: 79_161_234_567,
            expires_at_ms: 1000,
            unplaced_status: "603-S".into(),
        };
        for i in 0..MAX_PENDING_PER_PORTAL {
            assert_eq!(c.add(click(1, i)), Added::Pending);
        }
        assert_eq!(
            c.add(click(1, MAX_PENDING_PER_PORTAL)),
            Added::Full,
            "portal 1 is full"
        );
        assert_eq!(
            c.add(click(2, 0)),
            Added::Pending,
            "another portal still adds"
        );
        let mut portal = 3;
        while c.len() < MAX_PENDING {
            for i in 0..MAX_PENDING_PER_PORTAL.min(MAX_PENDING - c.len()) {
                assert_eq!(c.add(click(portal, i)), Added::Pending);
            }
            portal += 1;
        }
        assert_eq!(c.add(click(portal, 0)), Added::Full, "everyone is full");
        assert_eq!(c.take_expired(1000).len(), MAX_PENDING);
        assert_eq!(
            c.add(click(1, 0)),
            Added::Pending,
            "room again after expiry"
        );
    }
}
