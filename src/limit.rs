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
//! A source is an IPv4 address or an IPv6 /64 ([`source_prefix`]): one host or one customer's
//! network, since an IPv6 host can pick any address in its /64 and a bucket per address would
//! give it 2^64 of them. A trusted IPv6 address gets its own bucket all the same (trust is per
//! address, and a PBX must not share its rate with strangers in its /64).
//!
//! Memory is bounded: at most `max_sources` buckets. When the table is full, buckets that have
//! refilled to their burst are forgotten first (losslessly: a new bucket starts full), at most
//! once per [`EVICT_EVERY`]; so a spoofed flood of one-message sources cannot keep the table
//! full. Only when every bucket is busy does a new source go to an overflow bucket shared with
//! its IPv4 /24 or IPv6 /48 (at most `max_sources / 8` of them, then one last shared bucket):
//! a flood from other networks never takes a newcomer's rate. Trusted addresses are never put in
//! an overflow bucket. [`SourceLimiter::sweep`] drops buckets idle long enough to be full again.
//!
//! Depends on nothing else in the crate; no clock reads (callers pass `now`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
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

    /// Whether the bucket has refilled to its burst by `now` (forgetting it then loses nothing).
    fn is_full(&self, rate: &Rate, now: Instant) -> bool {
        if rate.is_unlimited() {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * rate.per_s >= rate.burst
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

/// The key a source's bucket is kept under: an IPv4 address as it is (also when it comes as an
/// IPv4-mapped IPv6 address), an IPv6 address's /64.
pub fn source_prefix(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::MAX >> 64))),
        },
    }
}

/// The network a source shares an overflow bucket with: its IPv4 /24 or IPv6 /48.
fn overflow_prefix(ip: IpAddr) -> IpAddr {
    match source_prefix(ip) {
        IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from(u32::from(v4) & !0xff)),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::MAX >> 48))),
    }
}

type Buckets = DashMap<IpAddr, Bucket, foldhash::fast::RandomState>;

/// Token buckets by source, with a separate rate for trusted sources.
pub struct SourceLimiter {
    buckets: Buckets,
    normal: Rate,
    trusted: Rate,
    max_sources: usize,
    /// Buckets shared by the sources of one network, used while `buckets` is full of busy ones.
    overflow: Buckets,
    /// The last resort once `overflow` is full too. The lock is held for the few float
    /// operations of one check, never across anything else.
    last_resort: Mutex<Bucket>,
    /// When [`Self::sweep`] last ran (it runs at most every few seconds).
    swept: Mutex<Instant>,
    /// When the table was last scanned for full buckets because it was full.
    evicted: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for SourceLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceLimiter")
            .field("normal", &self.normal)
            .field("trusted", &self.trusted)
            .field("sources", &self.buckets.len())
            .field("overflow", &self.overflow.len())
            .finish()
    }
}

/// How often [`SourceLimiter::sweep`] really scans.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// How often a full table is scanned for buckets it can forget (a scan of 65,536 buckets took
/// 0.45-0.6 ms in a release build, so a flood of new sources costs at most about 0.6% of a core
/// in scans).
pub const EVICT_EVERY: Duration = Duration::from_millis(100);

impl SourceLimiter {
    /// `normal` for unknown sources, `trusted` for trusted ones, at most `max_sources` buckets.
    pub fn new(normal: Rate, trusted: Rate, max_sources: usize, now: Instant) -> Self {
        Self {
            buckets: DashMap::default(),
            normal,
            trusted,
            max_sources: max_sources.max(1),
            overflow: DashMap::default(),
            last_resort: Mutex::new(Bucket::new(&normal, now, false, 0)),
            swept: Mutex::new(now),
            evicted: Mutex::new(None),
        }
    }

    /// Whether every source is unlimited (callers may skip the check entirely).
    pub fn is_off(&self) -> bool {
        self.normal.is_unlimited() && self.trusted.is_unlimited()
    }

    fn rate(&self, trusted: bool) -> Rate {
        if trusted {
            self.trusted
        } else {
            self.normal
        }
    }

    /// Takes a token for one message from `ip`. `trusted` (whether `ip` is a trusted address)
    /// is asked only when `ip`'s source is new or `epoch` differs from the one its bucket was
    /// made under; and for IPv6 sources sharing their /64's bucket, on every message (a trusted
    /// address in that /64 gets its own bucket).
    pub fn check(
        &self,
        ip: IpAddr,
        now: Instant,
        epoch: usize,
        trusted: impl FnOnce() -> bool,
    ) -> Verdict {
        let key = source_prefix(ip);
        let mut trusted = Some(trusted);
        if key != ip {
            // A trusted IPv6 address's own bucket, if it has one.
            if let Some(v) = self.take_existing(ip, now, epoch, &mut trusted) {
                return v;
            }
        }
        if let Some(v) = self.take_existing(key, now, epoch, &mut trusted) {
            return v;
        }
        let is_trusted = trusted.take().is_some_and(|t| t());
        let key = if is_trusted { ip } else { key };
        self.take_new(key, ip, is_trusted, now, epoch)
    }

    /// The verdict from the bucket under `key`, if there is one. `trusted` is asked (and used
    /// up) on a new epoch, or for a shared IPv6 bucket; a shared bucket does not serve a trusted
    /// address (`None`: it gets its own).
    fn take_existing(
        &self,
        key: IpAddr,
        now: Instant,
        epoch: usize,
        trusted: &mut Option<impl FnOnce() -> bool>,
    ) -> Option<Verdict> {
        let mut b = self.buckets.get_mut(&key)?;
        let shared_v6 = key.is_ipv6() && source_prefix(key) == key;
        if b.epoch != epoch || (shared_v6 && !b.trusted) {
            let t = trusted.take().is_some_and(|t| t());
            if shared_v6 && t {
                return None;
            }
            b.trusted = t;
            b.epoch = epoch;
        }
        let rate = self.rate(b.trusted);
        Some(b.take(&rate, now))
    }

    /// A first message from a source without a bucket.
    fn take_new(&self, key: IpAddr, ip: IpAddr, is_trusted: bool, now: Instant, epoch: usize) -> Verdict {
        let rate = self.rate(is_trusted);
        if self.buckets.len() >= self.max_sources {
            self.evict_full(now);
        }
        if self.buckets.len() >= self.max_sources {
            if is_trusted {
                return Verdict::Allow;
            }
            return self.take_overflow(ip, now);
        }
        let mut b = Bucket::new(&rate, now, is_trusted, epoch);
        let verdict = b.take(&rate, now);
        self.buckets.insert(key, b);
        verdict
    }

    /// A new untrusted source while every bucket is busy: its network's overflow bucket.
    fn take_overflow(&self, ip: IpAddr, now: Instant) -> Verdict {
        let net = overflow_prefix(ip);
        if let Some(mut b) = self.overflow.get_mut(&net) {
            metrics::counter!("callgate_rate_limit_overflow_total", "bucket" => "network").increment(1);
            return b.take(&self.normal, now);
        }
        if self.overflow.len() < (self.max_sources / 8).max(1) {
            metrics::counter!("callgate_rate_limit_overflow_total", "bucket" => "network").increment(1);
            let mut b = Bucket::new(&self.normal, now, false, 0);
            let verdict = b.take(&self.normal, now);
            self.overflow.insert(net, b);
            return verdict;
        }
        metrics::counter!("callgate_rate_limit_overflow_total", "bucket" => "shared").increment(1);
        self.last_resort.lock().take(&self.normal, now)
    }

    /// Forgets every bucket that has refilled to its burst (a new one would be the same), at
    /// most once per [`EVICT_EVERY`].
    fn evict_full(&self, now: Instant) {
        {
            let mut last = self.evicted.lock();
            if last.is_some_and(|t| now.saturating_duration_since(t) < EVICT_EVERY) {
                return;
            }
            *last = Some(now);
        }
        let (normal, trusted) = (self.normal, self.trusted);
        let full = |b: &Bucket| b.is_full(if b.trusted { &trusted } else { &normal }, now);
        self.buckets.retain(|_, b| !full(b));
        self.overflow.retain(|_, b| !full(b));
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
        let idle = |b: &Bucket| now.saturating_duration_since(b.last) >= keep;
        self.buckets.retain(|_, b| !idle(b));
        self.overflow.retain(|_, b| !idle(b));
    }

    /// Sources with a bucket of their own.
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
    fn a_full_table_of_busy_sources_puts_newcomers_in_their_networks_overflow_bucket_but_lets_trusted_sources_through() {
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

    fn v6(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_sources_share_their_64_and_ipv4_mapped_ones_count_as_ipv4() {
        assert_eq!(source_prefix(v6("2001:db8:1:2:aaaa::1")), v6("2001:db8:1:2::"));
        assert_eq!(source_prefix(v6("::ffff:10.0.0.7")), ip(7));
        assert_eq!(source_prefix(ip(7)), ip(7));
        let t0 = Instant::now();
        let l = SourceLimiter::new(Rate::new(1.0, 2), Rate::unlimited(), 100, t0);
        // Two addresses in one /64 share a bucket: the second exhausts the first's burst.
        assert_eq!(l.check(v6("2001:db8:1:2::1"), t0, 0, || false), Verdict::Allow);
        assert_eq!(l.check(v6("2001:db8:1:2::2"), t0, 0, || false), Verdict::Allow);
        assert!(matches!(l.check(v6("2001:db8:1:2::3"), t0, 0, || false), Verdict::Refuse { .. }));
        // The neighbouring /64 and an IPv4 source are unaffected.
        assert_eq!(l.check(v6("2001:db8:1:3::1"), t0, 0, || false), Verdict::Allow);
        assert_eq!(l.check(ip(1), t0, 0, || false), Verdict::Allow);
        assert_eq!(l.sources(), 3);
    }

    #[test]
    fn a_trusted_ipv6_address_keeps_its_own_bucket_inside_a_busy_64() {
        let t0 = Instant::now();
        let pbx = v6("2001:db8::5");
        let l = SourceLimiter::new(Rate::new(1.0, 1), Rate::unlimited(), 100, t0);
        // A stranger in the PBX's /64 comes first and uses up the shared bucket.
        assert_eq!(l.check(v6("2001:db8::66"), t0, 0, || false), Verdict::Allow);
        assert!(matches!(l.check(v6("2001:db8::67"), t0, 0, || false), Verdict::Refuse { .. }));
        // The PBX is not limited with them.
        assert!((0..100).all(|_| l.check(pbx, t0, 0, || true) == Verdict::Allow));
        // And the strangers do not get the PBX's rate.
        assert!(matches!(l.check(v6("2001:db8::66"), t0, 0, || false), Verdict::Refuse { .. } | Verdict::Drop));
    }

    #[test]
    fn a_flood_of_one_message_sources_cannot_keep_the_table_full() {
        let t0 = Instant::now();
        let l = SourceLimiter::new(Rate::new(100.0, 10), Rate::unlimited(), 1000, t0);
        // 1,000 spoofed sources send one message each: the table is full.
        for i in 0..1000u32 {
            let a = IpAddr::from((0x0a00_0000 | (i * 997)).to_be_bytes());
            assert_eq!(l.check(a, t0, 0, || false), Verdict::Allow);
        }
        assert_eq!(l.sources(), 1000);
        // 20 ms later their buckets are full again: a newcomer gets its own bucket, whole burst.
        let t1 = t0 + Duration::from_millis(20);
        let phone = IpAddr::from([192, 0, 2, 10]);
        assert!((0..10).all(|_| l.check(phone, t1, 0, || false) == Verdict::Allow));
        assert!(l.sources() < 1000, "the full buckets were forgotten");
    }

    #[test]
    fn while_every_bucket_is_busy_a_flooding_network_does_not_take_a_newcomers_rate() {
        let t0 = Instant::now();
        let l = SourceLimiter::new(Rate::new(1.0, 5), Rate::unlimited(), 16, t0);
        for i in 0..16 {
            l.check(ip(i), t0, 0, || false);
        }
        // The attacker's network 10.0.0.0/24 floods from new addresses: its overflow bucket empties.
        let flood: Vec<Verdict> = (100..150).map(|i| l.check(ip(i), t0, 0, || false)).collect();
        assert_eq!(flood.iter().filter(|v| **v == Verdict::Allow).count(), 5, "{flood:?}");
        // A source from another network still gets its burst.
        let other = IpAddr::from([192, 0, 2, 10]);
        assert!((0..5).all(|_| l.check(other, t0, 0, || false) == Verdict::Allow));
        assert_eq!(l.sources(), 16, "the table itself did not grow");
    }
}
