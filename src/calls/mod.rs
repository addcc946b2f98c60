//! The call tracker (DESIGN.md §3): a sans-IO state machine that turns signalling events from
//! every source (redirect listener, edge proxy, WebRTC B2BUA) into calls made of legs and
//! conversations, first and last talker, the outcome and the responsible user, and emits the
//! Bitrix24 intents of DESIGN.md §5 as [`Effect`]s.
//!
//! Shape (quinn-proto): [`Tracker::handle`] / [`Tracker::handle_timeout`] in, with `now` as a
//! [`Millis`] parameter; [`Tracker::poll_effect`] / [`Tracker::poll_timeout`] out. No I/O, no
//! clock, no logging, no tokio: the driver in `proxy/` owns the tracker and the timer.
//!
//! Model:
//! - a **leg** is one INVITE dialog between the PBX side and one agent ([`LegRecord`]);
//! - a **call** groups the legs that correlate (`correlate.rs`): incoming, outgoing or internal
//!   ([`CallKind`]); internal calls are recorded but produce no effects;
//! - a **conversation** is a period in which one agent leg has the customer
//!   (`conversation.rs`); transfers move the customer between legs (`transfer.rs`);
//! - a call whose legs have all ended finishes after `linger` (or `transfer_wait` while a blind
//!   transfer is pending) with its [`CallRecord`] (`outcome.rs`).
//!
//! Depends only on `settings` (ids and the assign rule).

mod call;
mod conversation;
mod correlate;
mod effect;
mod event;
mod leg;
mod lifecycle;
mod outcome;
mod record;
mod routed;
mod time;
mod tracker;
mod transfer;

#[cfg(test)]
mod tests;

pub use effect::{CallId, Effect};
pub use event::{Direction, Event, LegId, Offer, Policy, Side};
pub use leg::{EndReason, HoldPeriod, LegRecord, LegState, Role};
pub use record::{
    CallKind, CallRecord, Conversation, FailedReason, Outcome, ResponsibleReason, Talker,
};
pub use time::Millis;
pub use tracker::{Tracker, TrackerConfig};
