//! TCP driver: one task per connection, Content-Length framing from `sip::core`. Each task owns
//! its stream: it reads frames for the handler and writes both the handler's in-place replies
//! and whatever the [`Hub`] queues for this peer.
//!
//! Deadlines, so a peer cannot hold a connection slot by going quiet half-way:
//! - every write must finish within `write_timeout` (a peer that stops reading, a zero TCP
//!   window, loses its connection);
//! - a frame must be complete within `frame_timeout` of its first byte (a peer trickling a
//!   header a byte at a time, or never sending the body it announced, is closed);
//! - a connection silent for `idle` is closed.
//!
//! The accept loops hold an [`Alive`](super::Alive) while they run: one that ends other than by
//! cancellation (its socket broke) shows in `/ready`.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::{Hub, Outbox, Peer, Transport};
use crate::sip::core::{frame_stream, Frame};

/// Limits of the TCP listener.
#[derive(Debug, Clone, Copy)]
pub struct TcpLimits {
    /// Largest message (headers + body).
    pub max_message: usize,
    /// Open connections at most; more are closed at once.
    pub max_connections: usize,
    /// A connection silent this long is closed.
    pub idle: Duration,
    /// A write (a reply, a forwarded message) not finished within this closes the connection.
    pub write_timeout: Duration,
    /// A frame not complete this long after its first byte closes the connection.
    pub frame_timeout: Duration,
}

impl Default for TcpLimits {
    fn default() -> Self {
        Self {
            max_message: 65_535,
            max_connections: 4096,
            idle: Duration::from_secs(300),
            write_timeout: Duration::from_secs(10),
            frame_timeout: Duration::from_secs(30),
        }
    }
}

/// The next accepted connection with its slot, or `None` once the hub's token is cancelled or
/// the listening socket is gone. A failed accept is logged and retried after 20 ms (too many
/// open files, a connection reset before it was accepted); a connection beyond the slots is
/// closed at once and counted in `refused` (overload is visible, memory does not grow).
pub(super) async fn accept_next(
    listener: &TcpListener,
    hub: &Hub,
    slots: &Arc<Semaphore>,
    refused: &metrics::Counter,
    what: &'static str,
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr, tokio::sync::OwnedSemaphorePermit)> {
    loop {
        let (stream, addr) = tokio::select! {
            () = hub.cancel().cancelled() => return None,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EBADF | libc::ENOTSOCK | libc::EINVAL)) => {
                    tracing::error!(error = %e, transport = what, "the listening socket is gone; no more connections");
                    return None;
                }
                Err(e) => {
                    tracing::warn!(error = %e, transport = what, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        match Arc::clone(slots).try_acquire_owned() {
            Ok(permit) => return Some((stream, addr, permit)),
            Err(_) => refused.increment(1),
        }
    }
}

/// Accepts connections until the hub's token is cancelled; each connection runs in `tasks`.
pub async fn serve_tcp(listener: TcpListener, hub: Arc<Hub>, tasks: TaskTracker) {
    let slots = Arc::new(Semaphore::new(hub.limits().max_connections));
    let refused = metrics::counter!("callgate_sip_tcp_refused_total");
    let _alive = hub.listeners().start("sip_tcp", hub.cancel().clone());
    while let Some((stream, addr, permit)) = accept_next(&listener, &hub, &slots, &refused, "tcp").await {
        let hub = Arc::clone(&hub);
        tasks.spawn(async move {
            let _ = stream.set_nodelay(true);
            let (tx, rx) = hub.register(addr);
            connection(stream, Peer { addr, transport: Transport::Tcp }, rx, &hub).await;
            hub.unregister(addr, &tx);
            drop(permit);
        });
    }
}

/// Serves one connection until it closes, fails framing, misses a deadline (see the module doc)
/// or the hub is cancelled. `stream` is a TCP stream or a TLS stream over one (the same framing
/// runs over both).
pub(super) async fn connection<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, peer: Peer, mut queued: mpsc::Receiver<Bytes>, hub: &Arc<Hub>) {
    let limits = hub.limits();
    let mut buf = BytesMut::with_capacity(4096);
    let mut out = Outbox::new();
    // When the first byte of the frame still incomplete in `buf` arrived.
    let mut partial_since: Option<Instant> = None;
    loop {
        match drain_frames(&mut buf, &mut stream, peer, hub, &mut out).await {
            Err(()) => return,
            Ok(progressed) if progressed || buf.is_empty() => partial_since = None,
            Ok(_) => {}
        }
        if !buf.is_empty() && partial_since.is_none() {
            partial_since = Some(Instant::now());
        }
        if buf.capacity() - buf.len() < 2048 {
            buf.reserve(4096);
        }
        let (deadline, partial) = read_deadline(partial_since, limits);
        tokio::select! {
            () = hub.cancel().cancelled() => return,
            msg = queued.recv() => match msg {
                Some(bytes) => if write(&mut stream, &bytes, peer, limits).await.is_err() { return },
                None => return,
            },
            r = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)) => match r {
                Ok(Ok(0) | Err(_)) => return,
                Ok(Ok(_)) => {}
                Err(_) => {
                    if partial {
                        metrics::counter!("callgate_sip_frame_timeouts_total", "transport" => transport_label(peer)).increment(1);
                        tracing::debug!(addr = %peer.addr, buffered = buf.len(), "sip frame not completed in time; closing");
                    }
                    return;
                }
            },
        }
    }
}

/// When the next read must have come: `idle` from now, or sooner when a frame is half-way
/// (then `true`: missing it is a frame timeout, not idleness).
fn read_deadline(partial_since: Option<Instant>, limits: TcpLimits) -> (Instant, bool) {
    let now = Instant::now();
    let idle = now.checked_add(limits.idle).unwrap_or(now);
    match partial_since.and_then(|t| t.checked_add(limits.frame_timeout)) {
        Some(frame) if frame < idle => (frame, true),
        _ => (idle, false),
    }
}

fn transport_label(peer: Peer) -> &'static str {
    if peer.transport == Transport::Tls {
        "tls"
    } else {
        "tcp"
    }
}

/// Writes `data` within `write_timeout`; `Err` means the connection must close (the write
/// failed, or the peer stopped reading).
async fn write<S: AsyncWrite + Unpin>(stream: &mut S, data: &[u8], peer: Peer, limits: TcpLimits) -> Result<(), ()> {
    match tokio::time::timeout(limits.write_timeout, stream.write_all(data)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(()),
        Err(_) => {
            metrics::counter!("callgate_sip_write_timeouts_total", "transport" => transport_label(peer)).increment(1);
            tracing::debug!(addr = %peer.addr, "sip write did not finish in time; closing");
            Err(())
        }
    }
}

/// Hands every complete frame in `buf` to the handler and sends what it produced. `Ok(true)`
/// when at least one frame (or keep-alive) was taken from `buf`; `Err` means the connection must
/// close (write failed or framing broke).
async fn drain_frames<S: AsyncWrite + Unpin>(buf: &mut BytesMut, stream: &mut S, peer: Peer, hub: &Arc<Hub>, out: &mut Outbox) -> Result<bool, ()> {
    let limits = hub.limits();
    let mut progressed = false;
    loop {
        match frame_stream(buf, limits.max_message) {
            Ok(Frame::Complete(n)) => {
                progressed = true;
                let msg = buf.split_to(n).freeze();
                out.clear();
                hub.handler().on_message(msg, peer, Instant::now().into_std(), out);
                if !out.reply.is_empty() {
                    write(stream, &out.reply, peer, limits).await?;
                }
                for (to, data) in out.sends.drain(..) {
                    if to == peer {
                        write(stream, &data, peer, limits).await?;
                    } else {
                        hub.send(to, data);
                    }
                }
            }
            Ok(Frame::KeepAlive(n)) => {
                progressed = true;
                let _ = buf.split_to(n);
                // RFC 5626 §4.4.1: a double-CRLF ping gets a single-CRLF pong.
                if n >= 4 {
                    write(stream, b"\r\n", peer, limits).await?;
                }
            }
            Ok(Frame::Incomplete) => return Ok(progressed),
            Err(e) => {
                metrics::counter!("callgate_sip_malformed_total", "transport" => "tcp").increment(1);
                tracing::debug!(addr = %peer.addr, error = %e, "tcp framing failed; closing");
                out.clear();
                hub.handler().on_bad_frame(buf, peer, &mut out.reply);
                if !out.reply.is_empty() {
                    let _ = write(stream, &out.reply, peer, limits).await;
                }
                let _ = tokio::time::timeout(limits.write_timeout, stream.shutdown()).await;
                return Err(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant as StdInstant;

    use tokio::io::DuplexStream;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::sip::transport::SipHandler;

    /// Answers every message with a 1 KiB response (more than the test pipe holds).
    struct Answers;

    impl SipHandler for Answers {
        fn on_message(&self, _: Bytes, _: Peer, _: StdInstant, out: &mut Outbox) {
            out.reply.extend_from_slice(&reply());
        }
        fn on_bad_frame(&self, _: &[u8], _: Peer, _: &mut BytesMut) {}
        fn on_tick(&self, _: StdInstant, _: &mut Outbox) {}
    }

    fn reply() -> Vec<u8> {
        let mut r = b"SIP/2.0 200 OK\r\nX-Pad: ".to_vec();
        r.resize(1020, b'x');
        r.extend_from_slice(b"\r\n\r\n");
        r
    }

    const OPTIONS: &[u8] = b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nCall-ID: a\r\nContent-Length: 0\r\n\r\n";

    /// A connection task over a 256-byte pipe; the test holds the peer's end.
    fn start(limits: TcpLimits) -> (DuplexStream, tokio::task::JoinHandle<()>) {
        let hub = Hub::new(Arc::new(Answers), limits, TaskTracker::new(), CancellationToken::new());
        let (peer_end, ours) = tokio::io::duplex(256);
        let (_tx, rx) = mpsc::channel(8);
        let peer = Peer { addr: "127.0.0.5:5070".parse().unwrap(), transport: Transport::Tcp };
        let task = tokio::spawn(async move {
            let _keep = _tx;
            connection(ours, peer, rx, &hub).await;
        });
        (peer_end, task)
    }

    async fn answered(peer: &mut DuplexStream, request: &[u8]) {
        peer.write_all(request).await.unwrap();
        let mut got = vec![0; reply().len()];
        peer.read_exact(&mut got).await.unwrap();
        assert_eq!(got, reply());
    }

    /// Idle is an hour: a connection that closes within a test's bounded wait was closed by
    /// one of the two deadlines.
    fn limits() -> TcpLimits {
        TcpLimits { idle: Duration::from_secs(3600), write_timeout: Duration::from_millis(300), frame_timeout: Duration::from_secs(2), ..TcpLimits::default() }
    }

    /// The connection task ended within 10 s (bounded wait).
    async fn closed(task: tokio::task::JoinHandle<()>) {
        tokio::time::timeout(Duration::from_secs(10), task).await.expect("the connection was closed").unwrap();
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_loses_its_connection_at_the_write_deadline() {
        let (mut peer, task) = start(limits());
        answered(&mut peer, OPTIONS).await;
        // Asks again, never reads: the 1 KiB answer cannot be written.
        peer.write_all(OPTIONS).await.unwrap();
        closed(task).await;
    }

    #[tokio::test]
    async fn a_frame_trickled_past_the_frame_deadline_closes_the_connection() {
        let (mut peer, task) = start(limits());
        // A frame that takes a while (well within the deadline) is answered.
        let (head, tail) = OPTIONS.split_at(20);
        peer.write_all(head).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        answered(&mut peer, tail).await;
        // A header that never ends.
        peer.write_all(b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.5").await.unwrap();
        closed(task).await;
        let mut rest = Vec::new();
        assert_eq!(peer.read_to_end(&mut rest).await.unwrap(), 0, "nothing answered to the unfinished frame");
    }
}
