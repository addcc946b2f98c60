//! cargo-fuzz target: `callgate::fuzzing::b24_event` (see src/fuzzing.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| callgate::fuzzing::b24_event(data));
