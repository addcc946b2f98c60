//! Test helpers: a tracker driven on a simulated clock, offer builders and a compact rendering
//! of effects (`"started #1 incoming 79001234567 resp=Some(1) default_incoming"`, `"show #1 [11]"`,
//! `"hide #1 [11]"`, `"finished #1 200"`).

use std::sync::Arc;
use std::time::Duration;

use crate::calls::{
    CallRecord, Direction, Effect, Event, LegId, Millis, Offer, Policy, Side, Tracker,
    TrackerConfig,
};
use crate::settings::{AssignTo, PortalId, UserId};

pub(super) const PORTAL: PortalId = 7;
pub(super) const CUSTOMER: &str = "79001234567";
pub(super) const DEFAULT_IN: UserId = 1;
pub(super) const DEFAULT_OUT: UserId = 2;
/// Agents: extension and user.
pub(super) const A: (&str, Option<UserId>) = ("101", Some(11));
pub(super) const B: (&str, Option<UserId>) = ("102", Some(12));
pub(super) const C: (&str, Option<UserId>) = ("103", Some(13));

pub(super) fn policy() -> Policy {
    Policy {
        assign: AssignTo::First,
        min_talk: Duration::ZERO,
        default_incoming: Some(DEFAULT_IN),
        default_outgoing: Some(DEFAULT_OUT),
    }
}

fn offer(
    leg: &str,
    dir: Direction,
    agent: (&str, Option<UserId>),
    remote: &str,
    ext: bool,
) -> Offer {
    Offer {
        leg: leg.into(),
        portal: PORTAL,
        policy: policy(),
        direction: dir,
        agent_extension: agent.0.into(),
        agent_user: agent.1,
        remote: remote.into(),
        remote_is_extension: ext,
        correlation: None,
        replaces: None,
        referred_by: None,
        line: None,
    }
}

/// The PBX offers the customer's call to an agent.
pub(super) fn incoming(leg: &str, agent: (&str, Option<UserId>)) -> Offer {
    offer(leg, Direction::FromPbx, agent, CUSTOMER, false)
}

/// An agent dials a customer number.
pub(super) fn outgoing(leg: &str, agent: (&str, Option<UserId>), number: &str) -> Offer {
    offer(leg, Direction::FromAgent, agent, number, false)
}

/// An internal half: `agent` on this leg, `other` the extension at the far end.
pub(super) fn internal(
    leg: &str,
    dir: Direction,
    agent: (&str, Option<UserId>),
    other: &str,
) -> Offer {
    offer(leg, dir, agent, other, true)
}

pub(super) fn corr(value: &str, offer: Offer) -> Offer {
    Offer {
        correlation: Some(value.into()),
        ..offer
    }
}

pub(super) fn leg(id: &str) -> LegId {
    id.into()
}

/// A tracker on a simulated clock, with every effect collected.
pub(super) struct Harness {
    pub(super) t: Tracker,
    pub(super) now: Millis,
    effects: Vec<Effect>,
}

impl Harness {
    pub(super) fn new() -> Self {
        Self::with(TrackerConfig::default())
    }

    pub(super) fn with(cfg: TrackerConfig) -> Self {
        Self {
            t: Tracker::new(cfg),
            now: Millis(0),
            effects: Vec::new(),
        }
    }

    /// Advances to `ms`, firing each due timer at its own deadline (a punctual driver).
    pub(super) fn at(&mut self, ms: u64) -> &mut Self {
        assert!(ms >= self.now.0, "time goes forward");
        while let Some(due) = self.t.poll_timeout().filter(|d| d.0 <= ms) {
            self.now = due;
            self.t.handle_timeout(due);
            self.drain();
        }
        self.now = Millis(ms);
        self
    }

    pub(super) fn ev(&mut self, event: Event) -> &mut Self {
        self.t.handle(self.now, event);
        self.drain();
        self
    }

    fn drain(&mut self) {
        while let Some(e) = self.t.poll_effect() {
            self.effects.push(e);
        }
    }

    pub(super) fn offer(&mut self, offer: Offer) -> &mut Self {
        self.ev(Event::Offered(offer))
    }
    pub(super) fn ring(&mut self, id: &str) -> &mut Self {
        self.ev(Event::Ringing { leg: leg(id) })
    }
    pub(super) fn answer(&mut self, id: &str) -> &mut Self {
        self.ev(Event::Answered { leg: leg(id) })
    }
    pub(super) fn fail(&mut self, id: &str, status: u16) -> &mut Self {
        self.ev(Event::Failed {
            leg: leg(id),
            status,
        })
    }
    pub(super) fn cancel(&mut self, id: &str, by: Side) -> &mut Self {
        self.ev(Event::Cancelled { leg: leg(id), by })
    }
    pub(super) fn bye(&mut self, id: &str, by: Side) -> &mut Self {
        self.ev(Event::Ended { leg: leg(id), by })
    }
    pub(super) fn hold(&mut self, id: &str, held: bool) -> &mut Self {
        self.ev(Event::Hold { leg: leg(id), held })
    }
    pub(super) fn refer(&mut self, id: &str, target: &str, replaces: Option<&str>) -> &mut Self {
        let (target, replaces) = (target.into(), replaces.map(leg));
        self.ev(Event::Refer {
            leg: leg(id),
            by: Side::Agent,
            target,
            replaces,
        })
    }
    pub(super) fn accept(&mut self, id: &str) -> &mut Self {
        self.ev(Event::ReferAccepted { leg: leg(id) })
    }

    /// The effects since the last call, rendered.
    pub(super) fn take(&mut self) -> Vec<String> {
        self.effects.drain(..).map(|e| render(&e)).collect()
    }

    /// The single finished record (asserts there is exactly one).
    pub(super) fn record(&self) -> Arc<CallRecord> {
        let all: Vec<_> = self.t.finished().cloned().collect();
        assert_eq!(all.len(), 1, "exactly one finished call");
        all[0].clone()
    }
}

fn snake<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|j| j.as_str().map(String::from))
        .unwrap_or_default()
}

pub(super) fn render(e: &Effect) -> String {
    match e {
        Effect::CallStarted {
            call,
            kind,
            customer,
            responsible,
            reason,
            ..
        } => format!(
            "started #{} {} {customer} resp={responsible:?} {}",
            call.0,
            snake(kind),
            snake(reason)
        ),
        Effect::Show { call, users, .. } => format!("show #{} {users:?}", call.0),
        Effect::Hide { call, users, .. } => format!("hide #{} {users:?}", call.0),
        Effect::CallFinished(r) => {
            format!(
                "finished #{} {}",
                r.id.0,
                r.status_code.as_deref().unwrap_or("-")
            )
        }
    }
}

/// `(extension, user, started_at, ended_at, counted)` of a conversation.
pub(super) type Conv<'a> = (&'a str, Option<UserId>, u64, Option<u64>, bool);

/// Every conversation, as [`Conv`].
pub(super) fn convs(r: &CallRecord) -> Vec<Conv<'_>> {
    let c = r.conversations.iter();
    c.map(|c| {
        (
            &*c.extension,
            c.user,
            c.started_at.0,
            c.ended_at.map(|t| t.0),
            c.counted,
        )
    })
    .collect()
}

/// `(leg, end reason as JSON)` of every leg.
pub(super) fn ends(r: &CallRecord) -> Vec<(String, String)> {
    let l = r.legs.iter();
    l.map(|l| {
        (
            l.leg.0.to_string(),
            serde_json::to_string(&l.end_reason).unwrap_or_default(),
        )
    })
    .collect()
}

/// The talkers' extensions.
pub(super) fn talkers(r: &CallRecord) -> (Option<&str>, Option<&str>) {
    (
        r.first_talker.as_ref().map(|t| &*t.extension),
        r.last_talker.as_ref().map(|t| &*t.extension),
    )
}
