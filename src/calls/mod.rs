//! The call tracker (DESIGN.md §3): a pure `step(state, event, now) -> (state, effects)` that
//! turns signalling events from every source into legs, conversations, first and last talker,
//! and the call outcome. No I/O, no clock. Filled by the call-tracking issue.
