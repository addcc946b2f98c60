//! TCP driver: one task per connection, Content-Length framing from `sip::core`.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Peer, SipHandler, Transport};
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

/// Accepts connections until cancelled; each connection runs in `tasks`.
pub async fn serve_tcp(listener: TcpListener, limits: TcpLimits, handler: Arc<dyn SipHandler>, cancel: CancellationToken, tasks: TaskTracker) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refused = metrics::counter!("callgate_sip_tcp_refused_total");
    loop {
        let (stream, addr) = tokio::select! {
            () = cancel.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "tcp accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            refused.increment(1);
            continue; // dropping the stream closes it: overload is visible, memory does not grow
        };
        let (handler, cancel) = (Arc::clone(&handler), cancel.clone());
        tasks.spawn(async move {
            let _ = stream.set_nodelay(true);
            connection(stream, Peer { addr, transport: Transport::Tcp }, limits, handler.as_ref(), &cancel).await;
            drop(permit);
        });
    }
}

async fn connection(mut stream: TcpStream, peer: Peer, limits: TcpLimits, handler: &dyn SipHandler, cancel: &CancellationToken) {
    let mut buf = BytesMut::with_capacity(4096);
    let mut reply = BytesMut::with_capacity(2048);
    loop {
        // Drain every complete frame already buffered.
        loop {
            match frame_stream(&buf, limits.max_message) {
                Ok(Frame::Complete(n)) => {
                    let msg = buf.split_to(n).freeze();
                    reply.clear();
                    handler.on_message(msg, peer, tokio::time::Instant::now().into_std(), &mut reply);
                    if !reply.is_empty() && stream.write_all(&reply).await.is_err() {
                        return;
                    }
                }
                Ok(Frame::KeepAlive(n)) => {
                    let _ = buf.split_to(n);
                    // RFC 5626 §4.4.1: a double-CRLF ping gets a single-CRLF pong.
                    if n >= 4 && stream.write_all(b"\r\n").await.is_err() {
                        return;
                    }
                }
                Ok(Frame::Incomplete) => break,
                Err(e) => {
                    metrics::counter!("callgate_sip_malformed_total", "transport" => "tcp").increment(1);
                    tracing::debug!(addr = %peer.addr, error = %e, "tcp framing failed; closing");
                    reply.clear();
                    handler.on_bad_frame(&buf, peer, &mut reply);
                    if !reply.is_empty() {
                        let _ = stream.write_all(&reply).await;
                    }
                    let _ = stream.shutdown().await;
                    return;
                }
            }
        }
        if buf.capacity() - buf.len() < 2048 {
            buf.reserve(4096);
        }
        let read = tokio::select! {
            () = cancel.cancelled() => return,
            r = tokio::time::timeout(limits.idle, stream.read_buf(&mut buf)) => r,
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(_)) => {}
        }
    }
}
