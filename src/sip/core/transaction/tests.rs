//! Transaction tests: every machine driven by a simulated clock (`t0` plus exact durations),
//! asserting RFC 3261 / RFC 6026 timer values to the nanosecond, plus `build_ack`.

mod ack;
mod client_invite;
mod client_non_invite;
mod server_invite;
mod server_non_invite;
mod util;
