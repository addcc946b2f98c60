//! The fake's clock and ISO-8601 dates.
//!
//! Everything time-dependent in the fake (the leaky bucket, token expiry, the 30-minute
//! re-registration window, `time` blocks) reads this clock, so a test can move it forward
//! (`FakeB24::advance`) or freeze it (`FakeB24::pause_clock`) instead of sleeping.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A reading of the fake clock: a monotonic instant and the matching wall time (unix seconds).
#[derive(Clone, Copy, Debug)]
pub struct Now {
    pub mono: Instant,
    pub unix: f64,
}

impl Now {
    pub fn unix_secs(&self) -> i64 {
        self.unix.floor() as i64
    }
}

/// Real time plus a test-controlled offset; can be frozen. Time spent frozen is skipped, so
/// readings stay continuous and monotonic across pause/resume.
#[derive(Debug)]
pub struct Clock {
    real0: Instant,
    unix0: f64,
    offset: Duration,
    /// Real elapsed time when frozen.
    frozen: Option<Duration>,
    /// Real time spent frozen so far.
    skipped: Duration,
}

impl Default for Clock {
    fn default() -> Self {
        let unix0 = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Self {
            real0: Instant::now(),
            unix0,
            offset: Duration::ZERO,
            frozen: None,
            skipped: Duration::ZERO,
        }
    }
}

impl Clock {
    pub fn now(&self) -> Now {
        let real = self.frozen.unwrap_or_else(|| self.real0.elapsed());
        let elapsed = real.saturating_sub(self.skipped) + self.offset;
        Now {
            mono: self.real0 + elapsed,
            unix: self.unix0 + elapsed.as_secs_f64(),
        }
    }

    pub fn advance(&mut self, d: Duration) {
        self.offset += d;
    }

    /// Stops real time from moving the clock (only `advance` does, until `resume`).
    pub fn pause(&mut self) {
        if self.frozen.is_none() {
            self.frozen = Some(self.real0.elapsed());
        }
    }

    pub fn resume(&mut self) {
        if let Some(at) = self.frozen.take() {
            self.skipped += self.real0.elapsed().saturating_sub(at);
        }
    }
}

/// `2026-03-10T11:19:38+03:00` for a unix time shown at a fixed UTC offset (seconds).
pub fn iso(unix: i64, offset_secs: i32) -> String {
    let local = unix + i64::from(offset_secs);
    let (days, secs) = (local.div_euclid(86_400), local.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let sign = if offset_secs < 0 { '-' } else { '+' };
    let off = offset_secs.unsigned_abs();
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}{sign}{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60,
        off / 3600,
        off % 3600 / 60
    )
}

/// Parses ISO-8601 with a mandatory offset (`Z`, `+03:00`, `+0300`, `+03`); fractions allowed.
/// Returns unix seconds, or None for anything else (Bitrix: "CALL_START_DATE should be in the
/// ISO-8601 format").
pub fn parse_iso(s: &str) -> Option<i64> {
    let s = s.trim();
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        rest = &frac[n..];
    }
    let offset = parse_offset(rest)?;
    Some(days_from_civil(y, mo as u32, d as u32) * 86_400 + h * 3600 + mi * 60 + se - offset)
}

fn parse_offset(s: &str) -> Option<i64> {
    if s == "Z" || s == "z" {
        return Some(0);
    }
    let sign = match s.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits: String = s[1..].chars().filter(|c| *c != ':').collect();
    let colon_ok =
        s.len() == 3 || s.len() == 5 && !s.contains(':') || s.len() == 6 && s.as_bytes()[3] == b':';
    if !colon_ok || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let h: i64 = digits.get(0..2)?.parse().ok()?;
    let m: i64 = digits.get(2..4).map_or(Some(0), |t| t.parse().ok())?;
    (h <= 14 && m < 60).then_some(sign * (h * 3600 + m * 60))
}

/// Days since 1970-01-01 for a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}
