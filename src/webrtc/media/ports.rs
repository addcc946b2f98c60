//! UDP port allocator for one configured range.
//!
//! A [`PortLease`] hands its port back when dropped, so a port is reusable only once whatever
//! owns the socket (our PBX leg, or the peer connection's driver) has let go of it. Free ports are
//! handed out in FIFO order, so a just-freed port is the last to be reused (late packets of an
//! old call do not land in a new one).

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;

/// A pool of ports (or of even/odd pairs when `step` is 2).
#[derive(Clone)]
pub(crate) struct PortPool {
    // The lock guards a short queue operation; never held across an await.
    inner: Arc<Mutex<Pool>>,
}

struct Pool {
    free: VecDeque<u16>,
    total: usize,
}

impl PortPool {
    /// `range` is inclusive; with `step` 2 only even base ports whose `+1` is in the range count.
    pub(crate) fn new(range: (u16, u16), step: u16) -> Result<Self, String> {
        let (lo, hi) = range;
        if lo == 0 || lo > hi {
            return Err(format!("`{lo}-{hi}` is not a range of non-zero ports"));
        }
        // An odd 65535 has no even port at or above it: no pair (and no overflow).
        let first = if step == 2 {
            lo.checked_add(lo % 2)
        } else {
            Some(lo)
        };
        let Some(first) = first else {
            return Err(format!("`{lo}-{hi}` holds no usable port"));
        };
        let free: VecDeque<u16> = (u32::from(first)..=u32::from(hi))
            .step_by(usize::from(step))
            .filter(|p| step == 1 || *p < u32::from(hi))
            .filter_map(|p| u16::try_from(p).ok())
            .collect();
        if free.is_empty() {
            return Err(format!("`{lo}-{hi}` holds no usable port"));
        }
        let total = free.len();
        Ok(Self {
            inner: Arc::new(Mutex::new(Pool { free, total })),
        })
    }

    /// Takes the next free port, if any.
    pub(crate) fn take(&self) -> Option<PortLease> {
        let port = self.inner.lock().free.pop_front()?;
        Some(PortLease {
            port,
            pool: self.clone(),
        })
    }

    /// Ports (or pairs) currently leased.
    pub(crate) fn in_use(&self) -> usize {
        let p = self.inner.lock();
        p.total - p.free.len()
    }

    /// Ports (or pairs) in the range.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.inner.lock().total
    }
}

/// One leased port; returned to its pool on drop.
pub(crate) struct PortLease {
    port: u16,
    pool: PortPool,
}

impl PortLease {
    pub(crate) fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        self.pool.inner.lock().free.push_back(self.port);
    }
}

impl std::fmt::Debug for PortLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PortLease({})", self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_steps() {
        let table: &[((u16, u16), u16, Option<usize>)] = &[
            ((40000, 40999), 1, Some(1000)),
            ((30000, 30999), 2, Some(500)),
            ((30001, 30004), 2, Some(1)), // only 30002/30003; 30004 has no +1
            ((30000, 30000), 2, None),
            ((5, 4), 1, None),
            ((0, 10), 1, None),
            ((65_535, 65_535), 2, None),
            ((65_534, 65_535), 2, Some(1)),
            ((65_535, 65_535), 1, Some(1)),
        ];
        for (range, step, want) in table {
            let got = PortPool::new(*range, *step).ok().map(|p| p.capacity());
            assert_eq!(got, *want, "{range:?} step {step}");
        }
    }

    #[test]
    fn leases_come_back_on_drop_and_reuse_is_fifo() {
        let pool = PortPool::new((30000, 30005), 2).unwrap();
        let a = pool.take().unwrap();
        let b = pool.take().unwrap();
        assert_eq!((a.port(), b.port()), (30000, 30002));
        assert_eq!(pool.in_use(), 2);
        drop(a);
        assert_eq!(pool.in_use(), 1);
        let c = pool.take().unwrap();
        assert_eq!(
            c.port(),
            30004,
            "a freed port goes to the back of the queue"
        );
        let d = pool.take().unwrap();
        assert_eq!(d.port(), 30000);
        assert!(pool.take().is_none(), "exhausted");
    }
}
