//! UDP driver: blocking threads over one socket (see the module doc of `transport` for why),
//! moving datagrams in batches (`batch`).

use std::net::UdpSocket;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::batch::{Batch, Outgoing};
use super::{Hub, Outbox, Peer, Transport};

/// How often a blocked receive wakes up to look at the cancellation token.
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
    /// The hub sends through this socket too, and takes what these threads cannot send
    /// themselves (TCP destinations).
    pub fn spawn(socket: UdpSocket, threads: usize, max_message: usize, hub: &Arc<Hub>) -> std::io::Result<Self> {
        socket.set_read_timeout(Some(POLL))?;
        let socket = Arc::new(socket);
        hub.set_udp(Arc::clone(&socket));
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let (sock, hub) = (Arc::clone(&socket), Arc::clone(hub));
            let alive = hub.listeners().start("sip_udp", hub.cancel().clone());
            handles.push(std::thread::Builder::new().name(format!("sip-udp-{i}")).spawn(move || {
                // Held for the thread's life: however `run` ends, the hub hears of it.
                let _alive = alive;
                run(&sock, max_message, &hub);
            })?);
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

fn run(sock: &UdpSocket, max_message: usize, hub: &Arc<Hub>) {
    let handler = Arc::clone(hub.handler());
    let mut batch = Batch::new(max_message);
    let mut out = Outbox::new();
    let mut queue = Outgoing::new();
    let oversized = metrics::counter!("callgate_sip_dropped_total", "reason" => "oversized");
    let send_errors = metrics::counter!("callgate_sip_send_errors_total", "transport" => "udp");
    while !hub.cancel().is_cancelled() {
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
                    out.clear();
                    handler.on_message(Bytes::copy_from_slice(data), Peer { addr, transport: Transport::Udp }, now, &mut out);
                    if !out.reply.is_empty() {
                        queue.push(&out.reply, addr);
                    }
                    route_sends(&mut out, &mut queue, hub);
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted) => {}
            // ICMP port unreachable from an earlier send shows up here on Linux: not our problem.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            Err(e) if is_fatal(&e) => {
                tracing::error!(error = %e, "the sip udp socket is gone; this receive thread ends");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "udp receive failed");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if !queue.is_empty() {
            send_errors.increment(queue.flush(sock) as u64);
        }
    }
}

/// The socket itself is gone (closed or replaced under us): retrying cannot help, and a thread
/// spinning on it would hide from `/ready` that nothing is received any more.
fn is_fatal(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EBADF | libc::ENOTSOCK))
}

/// UDP sends join this thread's batch; the rest goes through the hub.
fn route_sends(out: &mut Outbox, queue: &mut Outgoing, hub: &Arc<Hub>) {
    for (to, data) in out.sends.drain(..) {
        match to.transport {
            Transport::Udp => queue.push(&data, to.addr),
            _ => hub.send(to, data),
        }
    }
}
