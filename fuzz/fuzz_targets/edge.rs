//! cargo-fuzz target: `callgate::fuzzing::edge` (see src/fuzzing/edge.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| callgate::fuzzing::edge(data));
