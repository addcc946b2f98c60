//! [`Millis`], the only notion of time inside the tracker.
//!
//! The driver reads the wall clock and passes it in with every call; nothing in `calls/` reads a
//! clock. Records therefore carry wall-clock times (what the admin API shows) and tests choose
//! the time. Callers must pass non-decreasing values.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Milliseconds since the UNIX epoch. Serialised as a plain number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(transparent)]
pub struct Millis(pub u64);

impl Millis {
    /// `self + d`, saturating at `u64::MAX`.
    #[must_use]
    pub fn after(self, d: Duration) -> Self {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self(self.0.saturating_add(ms))
    }

    /// The time from `earlier` to `self`; zero when `earlier` is not earlier.
    #[must_use]
    pub fn since(self, earlier: Self) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}
