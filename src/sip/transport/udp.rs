//! UDP driver: blocking threads over one socket (see the module doc of `transport` for why),
//! moving datagrams in batches (`batch`).

use std::net::UdpSocket;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio_util::sync::CancellationToken;

use super::batch::{Batch, Outgoing};
use super::{Peer, SipHandler, Transport};

/// How often a blocked receive wakes up to look at the cancellation token and tick the handler.
const POLL: Duration = Duration::from_millis(100);

/// Running UDP receive threads.
pub struct UdpDriver {
    threads: Vec<JoinHandle<()>>,
}

impl UdpDriver {
    /// Starts `threads` receive threads on `socket`; datagrams larger than `max_message` are
    /// dropped and counted.
    ///
    /// # Errors
    /// The socket cannot be configured or cloned, or a thread cannot start.
    pub fn spawn(socket: UdpSocket, threads: usize, max_message: usize, handler: Arc<dyn SipHandler>, cancel: CancellationToken) -> std::io::Result<Self> {
        socket.set_read_timeout(Some(POLL))?;
        let socket = Arc::new(socket);
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let (sock, handler, cancel) = (Arc::clone(&socket), Arc::clone(&handler), cancel.clone());
            handles.push(std::thread::Builder::new().name(format!("sip-udp-{i}")).spawn(move || run(&sock, max_message, handler.as_ref(), &cancel))?);
        }
        Ok(Self { threads: handles })
    }

    /// Waits for the threads to notice cancellation (at most [`POLL`] after it).
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn run(sock: &UdpSocket, max_message: usize, handler: &dyn SipHandler, cancel: &CancellationToken) {
    let mut batch = Batch::new(max_message);
    let mut reply = BytesMut::with_capacity(2048);
    let mut out = Outgoing::new();
    let oversized = metrics::counter!("callgate_sip_dropped_total", "reason" => "oversized");
    let send_errors = metrics::counter!("callgate_sip_send_errors_total", "transport" => "udp");
    let mut last_tick = Instant::now();
    while !cancel.is_cancelled() {
        match batch.recv(sock) {
            Ok(n) => {
                let now = Instant::now();
                for i in 0..n {
                    let Some((data, len, addr)) = batch.get(i) else { continue };
                    if len > max_message {
                        oversized.increment(1);
                        tracing::debug!(%addr, bytes = len, "oversized datagram dropped");
                        continue;
                    }
                    reply.clear();
                    handler.on_message(Bytes::copy_from_slice(data), Peer { addr, transport: Transport::Udp }, now, &mut reply);
                    if !reply.is_empty() {
                        out.push(&reply, addr);
                    }
                }
                if !out.is_empty() {
                    send_errors.increment(out.flush(sock) as u64);
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted) => {}
            // ICMP port unreachable from an earlier send shows up here on Linux: not our problem.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(e) => {
                tracing::warn!(error = %e, "udp receive failed");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let now = Instant::now();
        if now.duration_since(last_tick) >= POLL {
            handler.on_tick(now);
            last_tick = now;
        }
    }
}
