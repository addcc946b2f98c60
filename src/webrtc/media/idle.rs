//! Sessions nobody uses: the rule behind [`MediaAnchor::expire_idle`](super::MediaAnchor::expire_idle).
//!
//! A session is idle when its browser leg never reached ICE and it showed no sign of life for
//! `idle_timeout`: no SDP operation (offer, answer, re-offer) and no RTP accepted from either
//! side (foreign packets, which the PBX leg drops, do not count: spraying the port range must not
//! keep a session alive).
//!
//! Why this shape:
//! - Once ICE is up, the browser's consent checks say whether it lives (`consent_timeout`,
//!   [`super::MediaEvent::BrowserGone`]), so a call on hold that sends no RTP at all (`inactive`)
//!   is never idle.
//! - A ringing call has no ICE and usually no RTP, but SIP ends it: the proxy's Timer C (3 min,
//!   then 32 s for the CANCEL) or a final answer, which releases the session. The default
//!   `idle_timeout` (5 min) is longer than both and than `calls.ring_timeout` (3 min), so it only
//!   ever catches sessions whose signalling went missing: an INVITE the proxy never answered, a
//!   browser that answered and never connected.
//!
//! No clock is read per packet: the sweep compares a session's activity count with what it saw
//! last time and keeps the time of the last change.

use std::time::{Duration, Instant};

/// The idle clock of one session, advanced only by the sweep.
#[derive(Debug, Default)]
pub(crate) struct IdleWatch {
    /// The activity count seen last, and since when it has not changed.
    last: Option<(u64, Instant)>,
}

impl IdleWatch {
    /// `activity` grows with every sign of life; `connected`: ICE is (or was) up. Whether the
    /// session has been idle for at least `limit` at `now` (the first look starts the clock).
    pub(crate) fn is_idle(
        &mut self,
        activity: u64,
        connected: bool,
        now: Instant,
        limit: Duration,
    ) -> bool {
        if connected {
            return false;
        }
        match self.last {
            Some((seen, since)) if seen == activity => {
                now.saturating_duration_since(since) >= limit
            }
            _ => {
                self.last = Some((activity, now));
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(300);

    #[test]
    fn idle_only_after_the_limit_without_activity() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut w = IdleWatch::default();
        assert!(
            !w.is_idle(0, false, at(0), LIMIT),
            "the first look starts the clock"
        );
        assert!(!w.is_idle(0, false, at(299), LIMIT));
        // Activity (an answer, an RTP packet) restarts it.
        assert!(!w.is_idle(1, false, at(299), LIMIT));
        assert!(!w.is_idle(1, false, at(598), LIMIT));
        assert!(w.is_idle(1, false, at(599), LIMIT));
    }

    #[test]
    fn a_connected_session_is_never_idle_and_time_going_back_is_harmless() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut w = IdleWatch::default();
        assert!(!w.is_idle(0, true, t0, LIMIT));
        assert!(
            !w.is_idle(0, true, t0 + Duration::from_secs(86_400), LIMIT),
            "held calls stay"
        );
        assert!(!w.is_idle(5, false, t0, LIMIT));
        assert!(
            !w.is_idle(5, false, t0 - Duration::from_secs(10), LIMIT),
            "no underflow"
        );
    }
}
