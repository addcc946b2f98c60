//! `decide()` latency percentiles (index look-up + decision), over 1,000,000 calls against an
//! index of 1,000,000 numbers. Prints p50/p99/p99.9/max; not a criterion bench because criterion
//! reports means, and the target is a p99.
//!
//!   cargo bench --bench decide_latency

mod common;

use std::time::Instant;

use callgate::phone::Number;
use callgate::routing::decide;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return; // `cargo test --benches` runs this without --bench: building it is the test
    }
    let n = 1_000_000u64;
    let (_dir, d) = common::directory(n);
    let snap = d.snapshot();
    let portal = snap.single().unwrap().clone();

    let mut samples = Vec::with_capacity(n as usize);
    let mut x = 88_172_645_463_325_252u64;
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let caller = Number::from_u64(79_000_000_000 + x % (n + n / 10)); // ~9% misses
        let t = Instant::now();
        let m = caller.and_then(|c| d.index().lookup(portal.portal.id, c.as_u64()));
        let r = decide(Some(&portal), caller, b"", m).reason();
        let dt = t.elapsed();
        std::hint::black_box(r);
        samples.push(dt.as_nanos() as u64);
    }
    samples.sort_unstable();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!("decide() over {n} calls, index of {n} numbers (ns): p50 {} p99 {} p99.9 {} max {}", pct(0.5), pct(0.99), pct(0.999), samples[samples.len() - 1]);
}
