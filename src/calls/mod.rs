//! The call tracker (DESIGN.md §3): a sans-IO state machine that turns signalling events from
//! every source (redirect listener, edge proxy, WebRTC B2BUA) into calls made of legs and
//! conversations, first and last talker, the outcome and the responsible user, and emits the
//! Bitrix24 intents of DESIGN.md §5 as [`Effect`]s.
//!
//! Shape (quinn-proto): [`Tracker::handle`] / [`Tracker::handle_timeout`] in, with `now` as a
//! [`Millis`] parameter; [`Tracker::poll_effect`] / [`Tracker::poll_timeout`] out. No I/O, no
//! clock, no logging, no tokio: `handle.rs` ([`CallsHandle`]) wraps it in one lock, maps driver
//! `Instant`s to wall-clock [`Millis`], and hands effects to the Bitrix24 outbox recorder.
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
//! Decisions worth knowing when reading a record:
//! - DURATION (`talk_seconds`) is the sum of the counted conversations in milliseconds, rounded
//!   **up** once to whole seconds (a counted conversation never shows as 0 s);
//! - a CANCEL ends its leg at once (`Hide` does not wait for the 487, which is absorbed);
//! - a 401/407/422 to an initial INVITE is held back for `retry_wait` (`leg.rs`): the INVITE sent
//!   again on the same Call-ID continues the same leg; without it the leg fails with that status;
//! - `Show` goes out when a mapped user's leg rings (or answers without ringing, or receives the
//!   customer by a transfer); `Hide` when none of that user's legs of the call is live any more;
//! - a consultation call merged into a customer call by an attended transfer disappears with
//!   its id: its legs become consultation legs of the customer call;
//! - the call keeps the [`Policy`] of its first offer.
//!
//! Restarts: open calls are checkpointed (`checkpoint.rs`: what is saved, how a restored call
//! ends) by a driver (`saver.rs`) that also restores them at start.
//!
//! The tracker depends only on `settings` (ids and the assign rule) and `config` (`[calls]`, the
//! one table of its defaults: `TrackerConfig::from(&CallsConfig)`); the drivers `handle.rs` and
//! `saver.rs` add tokio and the store.

mod call;
mod checkpoint;
mod conversation;
mod correlate;
mod effect;
mod event;
mod handle;
mod leg;
mod lifecycle;
mod outcome;
mod outlet;
mod record;
mod routed;
mod saver;
mod time;
mod tracker;
mod transfer;

#[cfg(test)]
mod tests;

pub use checkpoint::{Checkpoint, SavedCall};
pub use effect::{CallId, Effect};
pub use event::{is_withheld, Direction, Event, LegId, Offer, Policy, Side};
pub use handle::CallsHandle;
pub use leg::{EndReason, HoldPeriod, LegRecord, LegState, Role};
pub use saver::{restore_calls, run_saver, CallKeys, Restored, RestoredCall};
pub use record::{
    CallKind, CallRecord, Conversation, FailedReason, Outcome, ResponsibleReason, Talker,
};
pub use time::Millis;
pub use tracker::{Tracker, TrackerConfig};
