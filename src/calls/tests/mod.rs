//! Story tests of the call tracker: one story per test, exact assertions on the effects sequence
//! and on the record. Time is simulated (`Harness::at` fires every timer at its own deadline).

mod harness;

mod backpressure;
mod incoming;
mod internal;
mod outgoing;
mod restart;
mod retry;
mod timers;
mod transfer;
