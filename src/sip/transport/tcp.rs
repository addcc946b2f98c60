//! TCP driver: one task per connection, Content-Length framing from `sip::core`. Each task owns
//! its stream: it reads frames for the handler and writes both the handler's in-place replies
//! and whatever the [`Hub`] queues for this peer.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
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
}

/// The next accepted connection with its slot, or `None` once the hub's token is cancelled. A
/// failed accept is logged and retried after 20 ms; a connection beyond the slots is closed at once
/// and counted in `refused` (overload is visible, memory does not grow).
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

/// Serves one connection until it closes, fails framing, idles out or the hub is cancelled.
/// `stream` is a TCP stream or a TLS stream over one (the same framing runs over both).
pub(super) async fn connection<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, peer: Peer, mut queued: mpsc::Receiver<Bytes>, hub: &Arc<Hub>) {
    let limits = hub.limits();
    let mut buf = BytesMut::with_capacity(4096);
    let mut out = Outbox::new();
    loop {
        if drain_frames(&mut buf, &mut stream, peer, hub, &mut out).await.is_err() {
            return;
        }
        if buf.capacity() - buf.len() < 2048 {
            buf.reserve(4096);
        }
        tokio::select! {
            () = hub.cancel().cancelled() => return,
            msg = queued.recv() => match msg {
                Some(bytes) => if stream.write_all(&bytes).await.is_err() { return },
                None => return,
            },
            r = tokio::time::timeout(limits.idle, stream.read_buf(&mut buf)) => match r {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                Ok(Ok(_)) => {}
            },
        }
    }
}

/// Hands every complete frame in `buf` to the handler and sends what it produced. `Err` means
/// the connection must close (write failed or framing broke).
async fn drain_frames<S: AsyncWrite + Unpin>(buf: &mut BytesMut, stream: &mut S, peer: Peer, hub: &Arc<Hub>, out: &mut Outbox) -> Result<(), ()> {
    let max = hub.limits().max_message;
    loop {
        match frame_stream(buf, max) {
            Ok(Frame::Complete(n)) => {
                let msg = buf.split_to(n).freeze();
                out.clear();
                hub.handler().on_message(msg, peer, tokio::time::Instant::now().into_std(), out);
                if !out.reply.is_empty() {
                    stream.write_all(&out.reply).await.map_err(drop)?;
                }
                for (to, data) in out.sends.drain(..) {
                    if to == peer {
                        stream.write_all(&data).await.map_err(drop)?;
                    } else {
                        hub.send(to, data);
                    }
                }
            }
            Ok(Frame::KeepAlive(n)) => {
                let _ = buf.split_to(n);
                // RFC 5626 §4.4.1: a double-CRLF ping gets a single-CRLF pong.
                if n >= 4 {
                    stream.write_all(b"\r\n").await.map_err(drop)?;
                }
            }
            Ok(Frame::Incomplete) => return Ok(()),
            Err(e) => {
                metrics::counter!("callgate_sip_malformed_total", "transport" => "tcp").increment(1);
                tracing::debug!(addr = %peer.addr, error = %e, "tcp framing failed; closing");
                out.clear();
                hub.handler().on_bad_frame(buf, peer, &mut out.reply);
                if !out.reply.is_empty() {
                    let _ = stream.write_all(&out.reply).await;
                }
                let _ = stream.shutdown().await;
                return Err(());
            }
        }
    }
}
