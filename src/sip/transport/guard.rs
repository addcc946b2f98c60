//! Supervision of the SIP listeners: nothing from the wire stops one.
//!
//! - [`Guarded`] wraps the handler every driver calls. A panic inside it (a bug reached by a
//!   message, a tick or a closed flow) is caught, logged with at most a short prefix of the
//!   message, counted in `callgate_listener_panics_total{listener}`, and the listener goes on
//!   with the next message. What the handler had put into the outbox before it panicked is
//!   thrown away: a half-handled message must not send half its effects.
//! - [`Listeners`] knows which listener loops run. Each loop (a UDP receive thread, the TCP
//!   and TLS accept loops, the SIP timer tick) holds an [`Alive`] while it runs; one that ends
//!   before SIP is cancelled (a panic outside the handler, a socket that broke) is logged,
//!   counted in `callgate_listener_stopped_total{listener}` and reported by `/ready` (503).
//!
//! The handler's state stays usable after a caught panic: the locks it holds are
//! `parking_lot` ones, which do not poison, and their guards are released while unwinding.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::{Outbox, Peer, SipHandler, Transport};

/// The listener name of the SIP timer tick.
pub const TIMERS: &str = "sip_timers";

/// How many bytes of a message a panic report shows (the request or status line's start).
const PREFIX: usize = 32;

/// The listener a message arrived on, as `/ready` and the metrics name it.
pub fn listener_name(transport: Transport) -> &'static str {
    match transport {
        Transport::Udp => "sip_udp",
        Transport::Tcp => "sip_tcp",
        Transport::Tls => "sip_tls",
        Transport::Ws | Transport::Wss => "sip_ws",
    }
}

/// What `/ready` says about one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerState {
    /// Every loop it started still runs.
    Running,
    /// Some of its loops ended (one of several UDP threads).
    Degraded,
    /// None of its loops runs.
    Stopped,
}

impl ListenerState {
    /// `running`, `degraded`, `stopped`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Degraded => "degraded",
            Self::Stopped => "stopped",
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Entry {
    started: usize,
    ended: usize,
    panics: u64,
}

/// The listener loops of one hub and the panics caught in them. Shared through `Arc`.
#[derive(Debug, Default)]
pub struct Listeners {
    // One lock for all entries: touched only when a loop starts or ends and on a caught panic,
    // never per message.
    entries: Mutex<BTreeMap<&'static str, Entry>>,
}

impl Listeners {
    /// A loop of `listener` starts; it counts as running until the returned token drops.
    /// `cancel` tells an expected end (SIP shutting down) from an unexpected one.
    pub fn start(self: &Arc<Self>, listener: &'static str, cancel: CancellationToken) -> Alive {
        self.entries.lock().entry(listener).or_default().started += 1;
        Alive { listeners: Arc::clone(self), listener, cancel }
    }

    /// Every listener with a loop of its own (not WebSocket flows: the HTTP listener runs them),
    /// with its state, by name.
    pub fn states(&self) -> Vec<(&'static str, ListenerState)> {
        self.entries.lock().iter().filter(|(_, e)| e.started > 0).map(|(name, e)| (*name, state_of(e))).collect()
    }

    /// Whether every listener that started is still running.
    pub fn all_running(&self) -> bool {
        self.entries.lock().values().all(|e| state_of(e) == ListenerState::Running)
    }

    /// Panics caught on `listener` so far (this hub only; the metric counts process-wide).
    pub fn panics(&self, listener: &str) -> u64 {
        self.entries.lock().get(listener).map_or(0, |e| e.panics)
    }

    fn record_panic(&self, listener: &'static str) {
        self.entries.lock().entry(listener).or_default().panics += 1;
        metrics::counter!("callgate_listener_panics_total", "listener" => listener).increment(1);
    }
}

fn state_of(e: &Entry) -> ListenerState {
    match (e.started, e.ended) {
        (s, end) if end == 0 || s == 0 => ListenerState::Running,
        (s, end) if end >= s => ListenerState::Stopped,
        _ => ListenerState::Degraded,
    }
}

/// Held by a running listener loop; dropping it (the loop returned or unwound) ends the loop's
/// part of its listener. Unexpected unless SIP was being cancelled.
#[derive(Debug)]
pub struct Alive {
    listeners: Arc<Listeners>,
    listener: &'static str,
    cancel: CancellationToken,
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.listeners.entries.lock().entry(self.listener).or_default().ended += 1;
        if !self.cancel.is_cancelled() {
            metrics::counter!("callgate_listener_stopped_total", "listener" => self.listener).increment(1);
            tracing::error!(listener = self.listener, panicking = std::thread::panicking(), "sip listener loop ended unexpectedly; /ready reports it");
        }
    }
}

/// The handler behind every driver, with panics caught (see the module doc).
pub struct Guarded {
    inner: Arc<dyn SipHandler>,
    listeners: Arc<Listeners>,
}

impl Guarded {
    /// `inner`, with the panics it raises caught and counted in `listeners`.
    pub fn new(inner: Arc<dyn SipHandler>, listeners: Arc<Listeners>) -> Self {
        Self { inner, listeners }
    }

    /// Runs `f`; on a panic, logs and counts it for `listener` and returns `false`.
    fn run(&self, listener: &'static str, peer: Option<Peer>, data: &[u8], f: impl FnOnce()) -> bool {
        let Err(panic) = catch_unwind(AssertUnwindSafe(f)) else { return true };
        self.listeners.record_panic(listener);
        let what = panic.downcast_ref::<&str>().copied().or_else(|| panic.downcast_ref::<String>().map(String::as_str)).unwrap_or("(no message)");
        let what: String = what.chars().take(200).collect();
        tracing::error!(listener, peer = ?peer.map(|p| p.addr), prefix = %prefix(data), panic = %what, "panic while handling a sip message; caught, the listener goes on");
        false
    }
}

/// The first [`PREFIX`] bytes of the first line, escaped: enough to tell the method or status,
/// never the headers (they hold callers' numbers and credentials).
fn prefix(data: &[u8]) -> String {
    let line = data.split(|&b| b == b'\r' || b == b'\n').next().unwrap_or_default();
    let cut = line.get(..PREFIX).unwrap_or(line);
    cut.escape_ascii().to_string()
}

impl SipHandler for Guarded {
    fn on_message(&self, data: Bytes, peer: Peer, now: Instant, out: &mut Outbox) {
        // The start of the message for a panic report, copied (not a reference count touched
        // per message on the redirect hot path).
        let mut head = [0u8; PREFIX];
        let n = data.len().min(PREFIX);
        head[..n].copy_from_slice(&data[..n]);
        if !self.run(listener_name(peer.transport), Some(peer), &head[..n], || self.inner.on_message(data, peer, now, out)) {
            out.clear();
        }
    }

    fn on_bad_frame(&self, head: &[u8], peer: Peer, reply: &mut BytesMut) {
        if !self.run(listener_name(peer.transport), Some(peer), head, || self.inner.on_bad_frame(head, peer, reply)) {
            reply.clear();
        }
    }

    fn on_tick(&self, now: Instant, out: &mut Outbox) {
        if !self.run(TIMERS, None, b"", || self.inner.on_tick(now, out)) {
            out.clear();
        }
    }

    fn on_closed(&self, peer: Peer, now: Instant, out: &mut Outbox) {
        if !self.run(listener_name(peer.transport), Some(peer), b"", || self.inner.on_closed(peer, now, out)) {
            out.clear();
        }
    }

    fn on_unreachable(&self, peer: Peer, now: Instant, out: &mut Outbox) {
        if !self.run(listener_name(peer.transport), Some(peer), b"", || self.inner.on_unreachable(peer, now, out)) {
            out.clear();
        }
    }

    fn tls_server_name(&self, addr: std::net::SocketAddr) -> Option<String> {
        let mut name = None;
        self.run(listener_name(Transport::Tls), None, b"", || name = self.inner.tls_server_name(addr));
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers "ok" to everything but a message starting with `PANIC`.
    struct Fragile;

    impl SipHandler for Fragile {
        fn on_message(&self, data: Bytes, _: Peer, _: Instant, out: &mut Outbox) {
            out.reply.extend_from_slice(b"partial");
            assert!(!data.starts_with(b"PANIC"), "a bug reached by a message");
            out.reply.clear();
            out.reply.extend_from_slice(b"ok");
        }
        fn on_bad_frame(&self, _: &[u8], _: Peer, _: &mut BytesMut) {}
        fn on_tick(&self, _: Instant, _: &mut Outbox) {
            panic!("tick bug");
        }
    }

    fn peer(transport: Transport) -> Peer {
        Peer { addr: "127.0.0.5:5060".parse().unwrap(), transport }
    }

    #[test]
    fn a_panicking_message_is_counted_its_output_dropped_and_the_next_one_answered() {
        let listeners = Arc::new(Listeners::default());
        let h = Guarded::new(Arc::new(Fragile), Arc::clone(&listeners));
        let mut out = Outbox::new();
        h.on_message(Bytes::from_static(b"PANIC sip:x SIP/2.0\r\nFrom: secret\r\n"), peer(Transport::Tcp), Instant::now(), &mut out);
        assert!(out.is_empty(), "nothing of the half-handled message is sent");
        out.clear();
        h.on_message(Bytes::from_static(b"OPTIONS sip:x SIP/2.0\r\n"), peer(Transport::Tcp), Instant::now(), &mut out);
        assert_eq!(&out.reply[..], b"ok");
        h.on_tick(Instant::now(), &mut out);
        assert_eq!((listeners.panics("sip_tcp"), listeners.panics(TIMERS), listeners.panics("sip_udp")), (1, 1, 0));
    }

    #[test]
    fn a_loop_that_ends_before_cancellation_marks_its_listener_stopped() {
        let listeners = Arc::new(Listeners::default());
        let cancel = CancellationToken::new();
        let udp = [listeners.start("sip_udp", cancel.clone()), listeners.start("sip_udp", cancel.clone())];
        let tcp = listeners.start("sip_tcp", cancel.clone());
        assert!(listeners.all_running());
        let [first, second] = udp;
        drop(first);
        assert_eq!(listeners.states(), [("sip_tcp", ListenerState::Running), ("sip_udp", ListenerState::Degraded)]);
        drop(second);
        assert!(!listeners.all_running());
        assert_eq!(listeners.states()[1], ("sip_udp", ListenerState::Stopped));
        cancel.cancel();
        drop(tcp);
        assert_eq!(listeners.states()[0], ("sip_tcp", ListenerState::Stopped), "an end in a shutdown is still an end");
    }

    #[test]
    fn the_panic_report_shows_only_the_start_of_the_first_line() {
        assert_eq!(prefix(b"INVITE sip:79161234567@pbx SIP/2.0\r\nAuthorization: x"), "INVITE sip:79161234567@pbx SIP/2");
        assert_eq!(prefix(b"\x00\xffA"), "\\x00\\xffA");
        assert_eq!(prefix(b""), "");
    }
}
