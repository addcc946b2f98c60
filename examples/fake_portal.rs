//! The tests' strict fake Bitrix24 (`tests/it/fake_b24`) as a standalone server, for the soak
//! script `benches/crm_soak.sh` (not part of CI). Binds 127.0.0.1:0, adds user 2 (the default
//! responsible for outgoing calls) beside the fake's users 1, 11, 12, 13, prints
//! `webhook <url>`, then reads commands from stdin, one per line:
//!
//! - `fault none|503|lose|stall|reset`: every REST request from now on answers 503
//!   `OVERLOAD_LIMIT`, is executed and its answer lost (connection reset), stalls 40 s before
//!   being executed (past callgate's default 30 s timeout), or is reset unexecuted; `none` heals.
//! - `report`: prints one JSON line: customer calls (distinct EXTERNAL_CALL_IDs), registered
//!   Bitrix24 calls, duplicates (customer calls with more than one CALL_ID), open calls,
//!   successful finishes, calls finished more than once, and the seconds from the last `fault
//!   none` to the last successful finish (the drain time).
//!
//! Run: `cargo run --release --example fake_portal`.

#[allow(dead_code, unused_imports, unreachable_pub)]
#[path = "../tests/it/fake_b24/mod.rs"]
mod fake_b24;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fake_b24::{FakeB24, Fault, User};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main]
async fn main() {
    let fake = FakeB24::spawn().await;
    fake.add_user(User::new(2, "Sales desk", None));
    println!("webhook {}", fake.webhook_url());
    let mut healed_at: Option<Instant> = None;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["fault", name] => {
                let fault = match *name {
                    "503" => Some(Fault::Overload503),
                    "lose" => Some(Fault::LoseAnswerReset),
                    "stall" => Some(Fault::Stall(Duration::from_secs(40))),
                    "reset" => Some(Fault::Reset),
                    _ => None,
                };
                if fault.is_none() {
                    healed_at = Some(Instant::now());
                }
                fake.set_fault_mode(fault);
                println!("ok fault {name}");
            }
            ["report"] => println!("{}", report(&fake, healed_at)),
            _ => println!("error unknown command {line:?}"),
        }
    }
}

fn report(fake: &FakeB24, healed_at: Option<Instant>) -> serde_json::Value {
    let calls = fake.registered();
    let mut per_customer_call: BTreeMap<String, usize> = BTreeMap::new();
    for c in &calls {
        *per_customer_call.entry(c.external_call_id.clone().unwrap_or_default()).or_default() += 1;
    }
    let mut finishes: BTreeMap<String, usize> = BTreeMap::new();
    let mut last_finish: Option<Instant> = None;
    for r in fake.requests() {
        let subs = if r.sub_calls.is_empty() { vec![r.clone()] } else { r.sub_calls.clone() };
        for s in subs.iter().filter(|s| s.method == "telephony.externalcall.finish" && s.ok()) {
            *finishes.entry(s.params["CALL_ID"].as_str().unwrap_or_default().to_owned()).or_default() += 1;
            last_finish = Some(last_finish.map_or(r.at, |t| t.max(r.at)));
        }
    }
    let drain = healed_at.zip(last_finish).map(|(h, f)| f.saturating_duration_since(h).as_secs_f64());
    json!({
        "customer_calls": per_customer_call.len(),
        "registered": calls.len(),
        "duplicates": per_customer_call.values().filter(|&&n| n > 1).count(),
        "open": fake.active_calls().len(),
        "finishes": finishes.values().sum::<usize>(),
        "finished_twice": finishes.values().filter(|&&n| n > 1).count(),
        "drain_s": drain,
    })
}
