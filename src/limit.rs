//! Per-source rate limits: a token bucket per source IP address (SIP and HTTP).
//!
//! Cheap enough for the SIP hot path (the redirect listener decides >10,000 calls/s): a check is
//! one sharded hash look-up and a few float operations under the shard's lock; nothing is
//! allocated except the first time a source is seen. Whether a source is trusted (a PBX address)
//! is computed only when its bucket is created or the caller's `epoch` changes (the routing
//! directory's snapshot: a settings change), never per message.
//!
//! Overload behaviour (the caller turns a [`Verdict`] into an answer):
//! - within the rate, plus a burst: [`Verdict::Allow`];
//! - over it by up to one more burst: [`Verdict::Refuse`] (SIP 503 / HTTP 429 with Retry-After);
//!   a refused message still costs a token, so a source that keeps sending digs itself deeper;
//! - further over: [`Verdict::Drop`] (no answer at all: a flood must not make us a reflector).
//!
//! Memory is bounded: at most `max_sources` buckets; sources seen once the table is full share
//! one overflow bucket (a spoofed-source flood cannot grow the table, and trusted addresses,
//! which have their buckets from before the flood, keep theirs). [`SourceLimiter::sweep`] drops
//! buckets idle long enough to be full again.
//!
//! Depends on nothing else in the crate; no clock reads (callers pass `now`).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use parking_lot::Mutex;

/// A token bucket's shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens per second; 0 means unlimited.
    pub per_s: f64,
    /// Bucket size.
    pub burst: f64,
}

impl Rate {
    /// `per_s` messages per second after a burst of `burst`.
    pub fn new(per_s: f64, burst: u32) -> Self {
        Self {
            per_s,
            burst: f64::from(burst.max(1)),
        }
    }

    /// No limit.
    pub fn unlimited() -> Self {
        Self {
            per_s: 0.0,
            burst: 1.0,
        }
    }

    fn is_unlimited(&self) -> bool {
        self.per_s <= 0.0
    }

    /// How long a full bucket takes to refill from empty.
    fn refill_time(&self) -> Duration {
        if self.is_unlimited() {
            return Duration::ZERO;
        }
        Duration::from_secs_f64((self.burst * 2.0 / self.per_s).min(3600.0))
    }
}

/// What to do with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the limit.
    Allow,
    /// Over the limit: answer "try later" (SIP 503, HTTP 429) with this Retry-After.
    Refuse {
        /// Seconds until the source is within its limit again (at least 1).
        retry_after_s: u32,
    },
    /// Far over the limit: drop without an answer.
    Drop,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// May go down to `-burst` (refused messages cost a token too).
    tokens: f64,
    last: Instant,
    trusted: bool,
    epoch: usize,
}

impl Bucket {
    fn new(rate: &Rate, now: Instant, trusted: bool, epoch: usize) -> Self {
        Self {
            tokens: rate.burst,
            last: now,
            trusted,
            epoch,
        }
    }

    fn take(&mut self, rate: &Rate, now: Instant) -> Verdict {
        if rate.is_unlimited() {
            return Verdict::Allow;
        }
        // Threads may pass slightly older `now`s: never refill backwards.
        if let Some(elapsed) = now.checked_duration_since(self.last) {
            self.tokens = (self.tokens + elapsed.as_secs_f64() * rate.per_s).min(rate.burst);
            self.last = now;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Verdict::Allow
        } else if self.tokens > -rate.burst {
            self.tokens -= 1.0;
            let wait = ((1.0 - self.tokens) / rate.per_s).ceil().clamp(1.0, 3600.0);
            // Truncation is intended: `wait` is a whole number between 1 and 3600.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Verdict::Refuse {
                retry_after_s: wait as u32,
            }
        } else {
            Verdict::Drop
        }
    }
}

/// Token buckets by source address, with a separate rate for trusted sources.
pub struct SourceLimiter {
    buckets: DashMap<IpAddr, Bucket, foldhash::fast::RandomState>,
    normal: Rate,
    trusted: Rate,
    max_sources: usize,
    /// Shared by sources first seen while the table is full. The lock is held for the few float
    /// operations of one check, never across anything else.
    overflow: Mutex<Bucket>,
    /// When [`Self::sweep`] last ran (it runs at most every few seconds).
    swept: Mutex<Instant>,
}

impl std::fmt::Debug for SourceLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceLimiter")
            .field("normal", &self.normal)
            .field("trusted", &self.trusted)
            .field("sources", &self.buckets.len())
            .finish()
    }
}

/// How often [`SourceLimiter::sweep`] really scans.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

impl SourceLimiter {
    /// `normal` for unknown sources, `trusted` for trusted ones, at most `max_sources` buckets.
    pub fn new(normal: Rate, trusted: Rate, max_sources: usize, now: Instant) -> Self {
        Self {
            buckets: DashMap::default(),
            normal,
            trusted,
            max_sources: max_sources.max(1),
            overflow: Mutex::new(Bucket::new(&normal, now, false, 0)),
            swept: Mutex::new(now),
        }
    }

    /// Whether every source is unlimited (callers may skip the check entirely).
    pub fn is_off(&self) -> bool {
        self.normal.is_unlimited() && self.trusted.is_unlimited()
    }

    /// Takes a token for one message from `ip`. `trusted` is asked only when `ip` is new or
    /// `epoch` differs from the one its bucket was made under.
    pub fn check(
        &self,
        ip: IpAddr,
        now: Instant,
        epoch: usize,
        trusted: impl FnOnce() -> bool,
    ) -> Verdict {
        if let Some(mut b) = self.buckets.get_mut(&ip) {
            if b.epoch != epoch {
                b.trusted = trusted();
                b.epoch = epoch;
            }
            let rate = if b.trusted { self.trusted } else { self.normal };
            return b.take(&rate, now);
        }
        let is_trusted = trusted();
        let rate = if is_trusted {
            self.trusted
        } else {
            self.normal
        };
        if self.buckets.len() >= self.max_sources {
            if is_trusted {
                return Verdict::Allow;
            }
            metrics::counter!("callgate_rate_limit_overflow_total").increment(1);
            return self.overflow.lock().take(&rate, now);
        }
        let mut b = Bucket::new(&rate, now, is_trusted, epoch);
        let verdict = b.take(&rate, now);
        self.buckets.insert(ip, b);
        verdict
    }

    /// Forgets buckets idle long enough to be full again (at most one scan per few seconds).
    pub fn sweep(&self, now: Instant) {
        {
            let mut swept = self.swept.lock();
            if now.saturating_duration_since(*swept) < SWEEP_EVERY {
                return;
            }
            *swept = now;
        }
        let keep = self
            .normal
            .refill_time()
            .max(self.trusted.refill_time())
            .max(SWEEP_EVERY);
        self.buckets
            .retain(|_, b| now.saturating_duration_since(b.last) < keep);
    }

    /// Sources with a bucket.
    pub fn sources(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn a_burst_passes_then_refusals_then_drops_and_time_refills() {
        let t0 = Instant::now();
        let l = SourceLimiter::new(Rate::new(10.0, 5), Rate::unlimited(), 100, t0);
        let verdicts: Vec<Verdict> = (0..16).map(|_| l.check(ip(1), t0, 0, || false)).collect();
        assert!(verdicts[..5].iter().all(|v| *v == Verdict::Allow));
        assert!(
            verdicts[5..10]
                .iter()
                .all(|v| matches!(v, Verdict::Refuse { retry_after_s } if *retry_after_s >= 1)),
            "{verdicts:?}"
        );
        assert!(
            verdicts[10..].iter().all(|v| *v == Verdict::Drop),
            "{verdicts:?}"
        );
        // 1.1 s at 10/s pays the debt of 5 and gives 6 tokens back.
        let t1 = t0 + Duration::from_millis(1100);
        assert_eq!(l.check(ip(1), t1, 0, || false), Verdict::Allow);
        // Another source is unaffected.
        assert_eq!(l.check(ip(2), t0, 0, || false), Verdict::Allow);
    }

    #[test]
    fn trusted_sources_get_their_own_rate_and_trust_is_asked_again_on_a_new_epoch() {
        let t0 = Instant::now();
        let l = SourceLimiter::new(Rate::new(1.0, 1), Rate::new(1000.0, 1000), 100, t0);
        let mut asked = 0;
        for _ in 0..500 {
            assert_eq!(
                l.check(ip(1), t0, 7, || {
                    asked += 1;
                    true
                }),
                Verdict::Allow
            );
        }
        assert_eq!(asked, 1, "trust is cached per epoch");
        // Settings changed: no longer trusted, so the small bucket applies from now on.
        assert_eq!(
            l.check(ip(1), t0, 8, || false),
            Verdict::Allow,
            "the bucket still holds tokens"
        );
        assert!(matches!(
            l.check(ip(1), t0, 8, || false),
            Verdict::Refuse { .. } | Verdict::Drop
        ));
    }

    #[test]
    fn a_full_table_shares_one_overflow_bucket_but_lets_trusted_sources_through() {
        let t0 = Instant::now();
        let l = SourceLimiter::new(Rate::new(1.0, 2), Rate::unlimited(), 3, t0);
        for i in 0..3 {
            l.check(ip(i), t0, 0, || false);
        }
        let spoofed: Vec<Verdict> = (10..20).map(|i| l.check(ip(i), t0, 0, || false)).collect();
        assert_eq!(
            spoofed.iter().filter(|v| **v == Verdict::Allow).count(),
            2,
            "{spoofed:?}"
        );
        assert_eq!(l.sources(), 3);
        assert_eq!(l.check(ip(99), t0, 0, || true), Verdict::Allow);
    }

    #[test]
    fn the_sweep_forgets_idle_sources_only() {
        let t0 = Instant::now();
        let l = SourceLimiter::new(Rate::new(100.0, 10), Rate::unlimited(), 100, t0);
        l.check(ip(1), t0, 0, || false);
        let later = t0 + Duration::from_secs(6);
        l.check(ip(2), later, 0, || false);
        l.sweep(later);
        assert_eq!(l.sources(), 1);
    }

    #[test]
    fn unlimited_allows_everything() {
        let t0 = Instant::now();
        let l = SourceLimiter::new(Rate::unlimited(), Rate::unlimited(), 10, t0);
        assert!(l.is_off());
        assert!((0..10_000).all(|_| l.check(ip(1), t0, 0, || false) == Verdict::Allow));
    }
}
