//! Who may hold an HTTP connection, and for how long.
//!
//! - [`Slots`]: at most `http.max_connections` connections at once (the accept loop waits for a
//!   free slot, so the rest wait in the kernel's backlog), and at most
//!   `http.max_connections_per_source` from one source ([`crate::limit::source_prefix`]: an IPv4
//!   address, an IPv6 /64). A connection beyond its source's cap is closed at once and counted
//!   (`callgate_http_connections_refused_total`), so one host can never take the slots of others.
//! - [`Conn`]: the stream of one accepted connection. It holds both slots until it is dropped,
//!   which for a SIP WebSocket is when the WebSocket closes (the upgraded stream is this one), and
//!   it notes when a byte last moved, for the idle watchdog in `serve.rs`.
//!
//! The per-source table holds one entry per source with an open connection: bounded by
//! `max_connections`.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The global and per-source connection caps of one listener.
pub(crate) struct Slots {
    global: Arc<Semaphore>,
    per_source: Arc<PerSource>,
}

impl Slots {
    /// `max` connections at once, `per_source` from one source (0: no per-source cap).
    pub(crate) fn new(max: usize, per_source: usize) -> Self {
        Self {
            global: Arc::new(Semaphore::new(max.max(1))),
            per_source: Arc::new(PerSource { max: per_source, open: Mutex::new(HashMap::new()) }),
        }
    }

    /// Waits for a free global slot (call before accepting).
    pub(crate) async fn global(&self) -> OwnedSemaphorePermit {
        match Arc::clone(&self.global).acquire_owned().await {
            Ok(p) => p,
            Err(_) => std::future::pending().await, // the semaphore is never closed
        }
    }

    /// Whether every global slot is taken (for the "full" metric).
    pub(crate) fn is_full(&self) -> bool {
        self.global.available_permits() == 0
    }

    /// A slot for one more connection from `ip`, or `None` when its source is at its cap.
    pub(crate) fn source(&self, ip: IpAddr) -> Option<SourceSlot> {
        PerSource::admit(&self.per_source, ip)
    }

    /// Open connections from `ip`'s source.
    #[cfg(test)]
    fn open_from(&self, ip: IpAddr) -> usize {
        self.per_source.open.lock().get(&crate::limit::source_prefix(ip)).copied().unwrap_or(0)
    }
}

/// Open connections by source. The lock is held for one map update, never across anything else.
struct PerSource {
    max: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl PerSource {
    fn admit(this: &Arc<Self>, ip: IpAddr) -> Option<SourceSlot> {
        if this.max == 0 {
            return Some(SourceSlot { owner: None, key: ip });
        }
        let key = crate::limit::source_prefix(ip);
        let mut open = this.open.lock();
        let n = open.entry(key).or_insert(0);
        if *n >= this.max {
            return None;
        }
        *n += 1;
        Some(SourceSlot { owner: Some(Arc::clone(this)), key })
    }

    fn release(&self, key: IpAddr) {
        let mut open = self.open.lock();
        if let Some(n) = open.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&key);
            }
        }
    }
}

/// One connection's place in its source's count; given back on drop.
pub(crate) struct SourceSlot {
    owner: Option<Arc<PerSource>>,
    key: IpAddr,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        if let Some(owner) = &self.owner {
            owner.release(self.key);
        }
    }
}

/// When bytes last moved on a connection and whether a request is being handled, shared between
/// the stream, the service and the connection's watchdog.
#[derive(Debug)]
pub(crate) struct Activity {
    start: Instant,
    /// Milliseconds after `start` when a byte last moved.
    last_ms: AtomicU64,
    /// Requests being handled (hyper answers one at a time per HTTP/1 connection).
    busy: AtomicUsize,
}

impl Activity {
    pub(crate) fn new(now: Instant) -> Arc<Self> {
        Arc::new(Self { start: now, last_ms: AtomicU64::new(0), busy: AtomicUsize::new(0) })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// When the connection counts as idle for `idle` (if nothing moves meanwhile); `None` while
    /// a request is being handled (the request timeout governs that).
    pub(crate) fn idle_deadline(&self, idle: Duration) -> Option<Instant> {
        if self.busy.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        Some(last + idle)
    }

    /// Marks a request as being handled until the guard drops.
    pub(crate) fn begin(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::Relaxed);
        Busy(Arc::clone(self))
    }
}

/// A request being handled on a connection.
pub(crate) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream holding its connection's slots and noting its activity.
pub(crate) struct Conn<T> {
    io: T,
    activity: Arc<Activity>,
    _global: OwnedSemaphorePermit,
    _source: SourceSlot,
}

impl<T> Conn<T> {
    pub(crate) fn new(io: T, activity: Arc<Activity>, global: OwnedSemaphorePermit, source: SourceSlot) -> Self {
        Self { io, activity, _global: global, _source: source }
    }
}

/// Notes activity when a poll made progress.
fn noted<R>(activity: &Activity, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
    if matches!(poll, Poll::Ready(Ok(_))) {
        activity.touch();
    }
    poll
}

impl<T: AsyncRead + Unpin> AsyncRead for Conn<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Conn<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        noted(&this.activity, Pin::new(&mut this.io).poll_write(cx, buf))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        noted(&this.activity, Pin::new(&mut this.io).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_source_at_its_cap_is_refused_while_others_and_its_ipv6_neighbours_are_counted_apart() {
        let slots = Slots::new(100, 2);
        let attacker: IpAddr = "127.0.0.5".parse().unwrap();
        let held: Vec<_> = (0..2).map(|_| slots.source(attacker).expect("under the cap")).collect();
        assert!(slots.source(attacker).is_none(), "a third from the same source");
        let other = slots.source("127.0.0.1".parse().unwrap());
        assert!(other.is_some(), "another source is unaffected");
        // One /64 is one source; the next /64 is another.
        let a = slots.source("2001:db8::1".parse().unwrap());
        let b = slots.source("2001:db8::2".parse().unwrap());
        assert!(a.is_some() && b.is_some());
        assert!(slots.source("2001:db8::3".parse().unwrap()).is_none());
        let c = slots.source("2001:db8:0:1::3".parse().unwrap());
        assert!(c.is_some());
        // Closing one frees its place; the table forgets sources with nothing open.
        drop(held);
        assert_eq!(slots.open_from(attacker), 0);
        assert!(slots.source(attacker).is_some());
        assert_eq!(slots.per_source.open.lock().len(), 3, "127.0.0.1, two /64s; the attacker's entry is gone again");
    }

    #[test]
    fn zero_turns_the_per_source_cap_off() {
        let slots = Slots::new(100, 0);
        let ip: IpAddr = "127.0.0.5".parse().unwrap();
        let held: Vec<_> = (0..1000).map(|_| slots.source(ip).expect("no cap")).collect();
        assert_eq!(held.len(), 1000);
        assert!(slots.per_source.open.lock().is_empty());
    }

    #[test]
    fn a_connection_is_idle_only_while_no_request_is_handled() {
        let t0 = Instant::now();
        let activity = Activity::new(t0);
        let idle = Duration::from_secs(60);
        assert_eq!(activity.idle_deadline(idle), Some(t0 + idle));
        let busy = activity.begin();
        assert_eq!(activity.idle_deadline(idle), None);
        drop(busy);
        assert!(activity.idle_deadline(idle).is_some_and(|d| d >= t0 + idle));
    }
}
