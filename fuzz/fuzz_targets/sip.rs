//! cargo-fuzz target: `callgate::fuzzing::sip` (see src/fuzzing.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| callgate::fuzzing::sip(data));
