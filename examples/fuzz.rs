//! The stable-Rust mutation fuzzer (see `src/fuzzing.rs`):
//!
//! ```sh
//! cargo run --release --example fuzz -- edge 10000000 [SEED] [FILE...]
//! cargo run --release --example fuzz -- sip 10000000 [SEED] [FILE...]
//! cargo run --release --example fuzz -- b24_event 1000000
//! cargo run --release --example fuzz -- admin_json 1000000
//! ```
//!
//! Extra seed files (e.g. `tests/data/rfc4475/*`) join the built-in seeds. Exits 0 when no input
//! panicked; a panic prints the input in hex and exits 101. With `FUZZ_KEEP_GOING=1` a panic is
//! counted and the run goes on (each distinct panic printed once); it exits 1 if any panicked.

use std::time::Instant;

use callgate::fuzzing::{edge_coverage, run, run_keep_going, Target};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: fuzz edge|sip|b24_event|admin_json INPUTS [SEED] [SEED_FILE...]";
    let target = args
        .first()
        .and_then(|t| Target::from_name(t))
        .expect(usage);
    let inputs: u64 = args
        .get(1)
        .and_then(|n| n.replace('_', "").parse().ok())
        .expect(usage);
    let seed: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0x5eed);
    let files: Vec<Vec<u8>> = args
        .iter()
        .skip(3)
        .map(|f| std::fs::read(f).unwrap_or_else(|e| panic!("{f}: {e}")))
        .collect();
    // Keep panics quiet except for the one that fails the run (printed by `run`).
    let started = Instant::now();
    let keep_going = std::env::var_os("FUZZ_KEEP_GOING").is_some_and(|v| v == "1");
    let stats = if keep_going {
        run_keep_going(target, files, inputs, seed, 8192)
    } else {
        run(target, files, inputs, seed, 8192)
    };
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{target:?}: {} inputs ({} MB, longest {} bytes) in {secs:.1} s ({:.0} inputs/s), seed {seed}: {} panicked",
        stats.inputs,
        stats.bytes / 1_000_000,
        stats.longest,
        stats.inputs as f64 / secs,
        stats.panics
    );
    if target == Target::Edge {
        let (registered, anchored) = edge_coverage();
        println!("edge: the browser agent registered in {registered} inputs; the bridge anchored media in {anchored}");
    }
    if stats.panics > 0 {
        std::process::exit(1);
    }
}
