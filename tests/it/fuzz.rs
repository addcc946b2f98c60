//! A short run of each fuzz target on every test run (the long runs are in the README): seeds,
//! then deterministic mutations; any panic fails the test with the input printed in hex.

use callgate::fuzzing::{run, Target};

/// The RFC 4475 torture messages join the SIP seeds.
fn rfc4475() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/rfc4475");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

#[test]
fn message_sequences_from_every_source_through_the_whole_front_door_never_panic() {
    let stats = run(Target::Edge, Vec::new(), 3_000, 4, 8192);
    assert_eq!(stats.inputs, 3_000);
}

#[test]
fn the_sip_framing_and_parser_survive_mutated_input() {
    let stats = run(Target::Sip, rfc4475(), 20_000, 1, 8192);
    assert_eq!(stats.inputs, 20_000);
}

#[test]
fn the_bitrix24_event_form_parser_survives_mutated_input() {
    run(Target::B24Event, Vec::new(), 50_000, 2, 4096);
}

#[test]
fn the_admin_json_validation_survives_mutated_input() {
    run(Target::AdminJson, Vec::new(), 20_000, 3, 4096);
}
