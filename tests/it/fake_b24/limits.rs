//! Limits (bitrix24-rest.md §3, §10.3): the per-portal leaky bucket keyed by client IP, and the
//! optional per-(method, app|webhook) operating-time limit.
//!
//! Bucket semantics: every HTTP request to `/rest/` (a whole `batch` counts once) adds 1; the
//! level drains by `drain_per_s`; a request that would lift the level above `burst` is rejected
//! with 503 QUERY_LIMIT_EXCEEDED and does **not** add to the level, so 50 quick requests pass, the
//! 51st fails, and one more passes after 1/drain seconds.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::clock::Now;
use super::envelope::ApiError;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    level: f64,
    last: Instant,
}

/// Operating-limit settings: each call of a method is charged `cost` seconds; once the sum over
/// the last 10 minutes reaches `limit`, further calls of that method by that app/webhook get 429.
#[derive(Clone, Copy, Debug)]
pub struct OperatingLimit {
    pub limit: Duration,
    pub cost: Duration,
}

/// What a successful call reports in `time.operating*`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Operating {
    pub used: f64,
    pub reset_at: Option<i64>,
}

const WINDOW: f64 = 600.0;

#[derive(Debug)]
pub struct Limits {
    pub burst: u32,
    pub drain_per_s: f64,
    buckets: HashMap<IpAddr, Bucket>,
    /// 503 QUERY_LIMIT_EXCEEDED answered so far (bucket and injected).
    pub rejected: usize,
    pub operating: Option<OperatingLimit>,
    /// (method, owner) → charges (unix time, seconds).
    usage: HashMap<(String, String), Vec<(f64, f64)>>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            burst: 50,
            drain_per_s: 2.0,
            buckets: HashMap::new(),
            rejected: 0,
            operating: None,
            usage: HashMap::new(),
        }
    }
}

impl Limits {
    /// Counts one HTTP request; false = reject with 503.
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> bool {
        let (burst, drain) = (f64::from(self.burst), self.drain_per_s);
        let b = self.buckets.entry(ip).or_insert(Bucket {
            level: 0.0,
            last: now,
        });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.level = (b.level - elapsed * drain).max(0.0);
        b.last = now;
        if b.level + 1.0 > burst + 1e-9 {
            self.rejected += 1;
            return false;
        }
        b.level += 1.0;
        true
    }

    /// The current level for `ip` (after draining up to `now`).
    pub fn level(&self, ip: IpAddr, now: Instant) -> f64 {
        self.buckets.get(&ip).map_or(0.0, |b| {
            (b.level - now.saturating_duration_since(b.last).as_secs_f64() * self.drain_per_s)
                .max(0.0)
        })
    }

    pub fn empty_buckets(&mut self) {
        self.buckets.clear();
    }

    /// Charges a method call against the operating limit, or refuses it with 429.
    pub fn charge(&mut self, method: &str, owner: &str, now: Now) -> Result<Operating, ApiError> {
        let Some(cfg) = self.operating else {
            return Ok(Operating::default());
        };
        let entries = self
            .usage
            .entry((method.to_owned(), owner.to_owned()))
            .or_default();
        entries.retain(|(at, _)| now.unix - at < WINDOW);
        let used: f64 = entries.iter().map(|(_, s)| s).sum();
        if used >= cfg.limit.as_secs_f64() {
            return Err(ApiError::new(
                429,
                "OPERATION_TIME_LIMIT",
                "Method is blocked due to operation time limit.",
            ));
        }
        entries.push((now.unix, cfg.cost.as_secs_f64()));
        let oldest = entries.first().map_or(now.unix, |(at, _)| *at);
        Ok(Operating {
            used: used + cfg.cost.as_secs_f64(),
            reset_at: Some((oldest + WINDOW).ceil() as i64),
        })
    }
}
