//! cargo-fuzz target: `callgate::fuzzing::admin_json` (see src/fuzzing.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| callgate::fuzzing::admin_json(data));
