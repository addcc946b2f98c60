//! [`LeakyBucket`]: the client side of Bitrix24's per-portal request limit.
//!
//! Bitrix24 counts +1 per HTTP request (a `batch` is one), drains the counter by Y per second and
//! rejects when it exceeds X (2/s and 50 on most plans, 5/s and 250 on Enterprise). We mirror that
//! with a smaller burst so we never trip it, and after a `QUERY_LIMIT_EXCEEDED` anyway (other apps
//! on the same egress IP share the portal's bucket) [`LeakyBucket::penalise`] overfills ours so
//! the next request waits at least 1 s, doubling on repeats up to [`MAX_PENALTY`].
//!
//! Pure: the caller passes `now` (use `tokio::time::Instant::now().into_std()` so paused time
//! works); nothing here sleeps or reads a clock. One bucket per portal (and egress address), owned by whoever sends to it.

use std::time::{Duration, Instant};

/// The first back-off after a `QUERY_LIMIT_EXCEEDED`.
pub const MIN_PENALTY: Duration = Duration::from_secs(1);
/// The longest back-off after repeated `QUERY_LIMIT_EXCEEDED`s.
pub const MAX_PENALTY: Duration = Duration::from_secs(32);

/// Float slack so that a request at exactly the promised retry instant is let through.
const EPSILON: f64 = 1e-9;

/// A leaky bucket: each request adds 1; the level drains at `rate_per_s`; a request is allowed
/// when `level + 1 <= burst`.
#[derive(Debug, Clone)]
pub struct LeakyBucket {
    rate_per_s: f64,
    burst: f64,
    level: f64,
    /// When `level` was last brought up to date.
    updated: Option<Instant>,
    /// Consecutive penalties without a success in between (for the exponential back-off).
    penalties: u32,
}

impl LeakyBucket {
    /// Our default for standard plans: 2/s, burst 40 (Bitrix24: 2/s, 50).
    pub const STANDARD: (f64, u32) = (2.0, 40);
    /// Our default for Enterprise: 5/s, burst 200 (Bitrix24: 5/s, 250).
    pub const ENTERPRISE: (f64, u32) = (5.0, 200);

    /// A bucket that starts empty.
    ///
    /// # Panics
    /// If `rate_per_s` is not a positive finite number or `burst` is 0.
    pub fn new(rate_per_s: f64, burst: u32) -> Self {
        assert!(
            rate_per_s.is_finite() && rate_per_s > 0.0,
            "rate_per_s must be > 0"
        );
        assert!(burst >= 1, "burst must be >= 1");
        Self {
            rate_per_s,
            burst: f64::from(burst),
            level: 0.0,
            updated: None,
            penalties: 0,
        }
    }

    /// Takes one request slot at `now`, or says when to try again.
    ///
    /// # Errors
    /// The instant at which a slot will be free (the bucket is unchanged).
    pub fn acquire(&mut self, now: Instant) -> Result<(), Instant> {
        self.drain(now);
        if self.level + 1.0 <= self.burst + EPSILON {
            self.level += 1.0;
            Ok(())
        } else {
            let wait_s = (self.level + 1.0 - self.burst) / self.rate_per_s;
            Err(now + secs_ceil(wait_s))
        }
    }

    /// After a `QUERY_LIMIT_EXCEEDED`: fill the bucket so the next slot opens no sooner than
    /// 1 s from `now`, doubling with every consecutive penalty (up to [`MAX_PENALTY`]).
    pub fn penalise(&mut self, now: Instant) {
        self.drain(now);
        let backoff = MIN_PENALTY
            .saturating_mul(1 << self.penalties.min(5))
            .min(MAX_PENALTY);
        self.penalties = self.penalties.saturating_add(1);
        // A slot opens when the level has drained to burst - 1.
        let level = self.burst - 1.0 + backoff.as_secs_f64() * self.rate_per_s;
        self.level = self.level.max(level);
    }

    /// A request went through without a limit error: reset the penalty streak.
    pub fn note_success(&mut self) {
        self.penalties = 0;
    }

    /// The level (requests "in the bucket") at `now`.
    pub fn level(&mut self, now: Instant) -> f64 {
        self.drain(now);
        self.level
    }

    fn drain(&mut self, now: Instant) {
        if let Some(prev) = self.updated {
            // An earlier `now` than last time (callers mixing clocks) drains nothing.
            let elapsed = now.saturating_duration_since(prev).as_secs_f64();
            self.level = (self.level - elapsed * self.rate_per_s).max(0.0);
        }
        if self.updated.is_none_or(|prev| now > prev) {
            self.updated = Some(now);
        }
    }
}

/// Seconds rounded up to the next nanosecond, so the retry instant is never early.
fn secs_ceil(s: f64) -> Duration {
    let nanos = (s * 1e9).ceil();
    Duration::from_nanos(if nanos <= 0.0 { 0 } else { nanos as u64 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn sustained_rate_is_never_refused() {
        let t0 = Instant::now();
        let mut b = LeakyBucket::new(2.0, 40);
        for i in 0..2_000 {
            assert_eq!(b.acquire(t0 + ms(500) * i), Ok(()), "request {i}");
        }
    }

    #[test]
    fn sustained_rate_after_a_full_burst_is_never_refused() {
        let t0 = Instant::now();
        let mut b = LeakyBucket::new(2.0, 40);
        for _ in 0..40 {
            b.acquire(t0).unwrap();
        }
        for i in 1..1_000 {
            assert_eq!(b.acquire(t0 + ms(500) * i), Ok(()), "request {i}");
        }
    }

    #[test]
    fn burst_then_refusal_with_the_exact_retry_instant() {
        let t0 = Instant::now();
        let mut b = LeakyBucket::new(2.0, 40);
        for i in 0..40 {
            assert_eq!(b.acquire(t0), Ok(()), "burst request {i}");
        }
        let retry = b.acquire(t0).unwrap_err();
        assert_eq!(retry, t0 + ms(500));
        // Refused again just before, allowed exactly at the promised instant.
        assert!(b.acquire(retry - Duration::from_nanos(1000)).is_err());
        assert_eq!(b.acquire(retry), Ok(()));
        assert_eq!(b.acquire(retry).unwrap_err(), retry + ms(500));
    }

    #[test]
    fn the_level_drains_to_zero_at_the_rate() {
        let t0 = Instant::now();
        let mut b = LeakyBucket::new(5.0, 10);
        for _ in 0..10 {
            b.acquire(t0).unwrap();
        }
        assert!((b.level(t0 + ms(1000)) - 5.0).abs() < 1e-9);
        assert_eq!(b.level(t0 + ms(5000)), 0.0);
        for _ in 0..10 {
            b.acquire(t0 + ms(5000)).unwrap();
        }
        assert!(b.acquire(t0 + ms(5000)).is_err());
    }

    #[test]
    fn penalty_backs_off_at_least_one_second_and_doubles() {
        let t0 = Instant::now();
        let mut b = LeakyBucket::new(2.0, 40);
        b.acquire(t0).unwrap();
        b.penalise(t0);
        assert_eq!(b.acquire(t0).unwrap_err(), t0 + ms(1000));
        assert_eq!(b.acquire(t0 + ms(1000)), Ok(()));

        let t1 = t0 + ms(1000);
        b.penalise(t1);
        assert_eq!(b.acquire(t1).unwrap_err(), t1 + ms(2000));
        b.note_success();
        let t2 = t1 + ms(2000);
        b.penalise(t2);
        assert_eq!(b.acquire(t2).unwrap_err(), t2 + ms(1000));
    }

    #[test]
    fn penalty_is_capped() {
        let t0 = Instant::now();
        let mut b = LeakyBucket::new(2.0, 40);
        for _ in 0..20 {
            b.penalise(t0);
        }
        assert_eq!(b.acquire(t0).unwrap_err(), t0 + MAX_PENALTY);
    }

    #[test]
    fn a_clock_going_backwards_drains_nothing() {
        let t0 = Instant::now() + ms(10_000);
        let mut b = LeakyBucket::new(1.0, 1);
        b.acquire(t0).unwrap();
        assert!(b.acquire(t0 - ms(5000)).is_err());
        assert_eq!(b.acquire(t0 + ms(1000)), Ok(()));
    }
}
