//! SIP over WebSocket (RFC 7118): a driver for connections the HTTP listener upgraded (`GET
//! /sip`, subprotocol `sip`). One task per connection owns the socket, like `tcp`.
//!
//! Framing: every text or binary WebSocket message is one SIP message (RFC 7118 §5), so there is
//! nothing to resynchronise. A message the handler cannot parse is answered 400 (or dropped when
//! it cannot be answered) and the connection stays open. A message made of CRLFs only is an
//! RFC 5626 keep-alive (SIP.js sends them): a double CRLF gets a single CRLF back.
//!
//! Liveness: a WebSocket Ping goes out every `ping_every`; a connection that sent nothing at all
//! (not even the Pong browsers send by themselves) for `idle` is closed. A write that cannot
//! finish within `idle` closes it too, so one stuck browser holds one task and one bounded queue,
//! never more.
//!
//! When the connection ends for any reason, the hub forgets the flow and the handler hears
//! [`SipHandler::on_closed`]: a browser agent's registration (and later its call legs) ends
//! with its socket.
//!
//! [`SipHandler::on_closed`]: super::SipHandler::on_closed

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::{Hub, Outbox, Peer, Transport};

/// Limits of the WebSocket transport.
#[derive(Debug, Clone, Copy)]
pub struct WsLimits {
    /// Largest SIP message (one WebSocket message).
    pub max_message: usize,
    /// Open WebSocket connections at most; more are refused with HTTP 503 before upgrading.
    pub max_connections: usize,
    /// How often a Ping goes out.
    pub ping_every: Duration,
    /// A connection silent this long (no frame, no Pong) is closed.
    pub idle: Duration,
}

impl Default for WsLimits {
    fn default() -> Self {
        Self { max_message: 65_535, max_connections: 10_000, ping_every: Duration::from_secs(30), idle: Duration::from_secs(90) }
    }
}

/// What the HTTP listener needs to hand upgraded connections to SIP: the hub, the limits, and
/// the tracker every connection task runs in (so shutdown waits for them).
pub struct WsEndpoint {
    hub: Arc<Hub>,
    limits: WsLimits,
    slots: Arc<Semaphore>,
    tasks: TaskTracker,
    /// The HTTP listener serves TLS: every flow is `wss`.
    secure: bool,
}

impl std::fmt::Debug for WsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsEndpoint").field("limits", &self.limits).field("open", &self.hub.websocket_count()).finish_non_exhaustive()
    }
}

impl WsEndpoint {
    /// An endpoint feeding `hub`'s handler; connections run in `tasks`.
    pub fn new(hub: Arc<Hub>, limits: WsLimits, tasks: TaskTracker) -> Arc<Self> {
        Self::with_tls(hub, limits, tasks, false)
    }

    /// Like [`Self::new`]; `secure` when the HTTP listener serves TLS (flows are then `wss`).
    pub fn with_tls(hub: Arc<Hub>, limits: WsLimits, tasks: TaskTracker, secure: bool) -> Arc<Self> {
        Arc::new(Self { hub, slots: Arc::new(Semaphore::new(limits.max_connections)), limits, tasks, secure })
    }

    /// The limits in force (the upgrade applies `max_message`).
    pub fn limits(&self) -> WsLimits {
        self.limits
    }

    /// A connection slot, or `None` when `max_connections` are open (answer 503).
    pub fn admit(&self) -> Option<OwnedSemaphorePermit> {
        let permit = Arc::clone(&self.slots).try_acquire_owned().ok();
        if permit.is_none() {
            metrics::counter!("callgate_sip_ws_refused_total").increment(1);
        }
        permit
    }

    /// Serves an upgraded socket from `addr` in the endpoint's tracker until it closes, idles out
    /// or the hub is cancelled. `secure` (or an endpoint built [`Self::with_tls`]) marks a
    /// `wss://` connection.
    pub fn serve(self: &Arc<Self>, socket: WebSocket, addr: SocketAddr, secure: bool, permit: OwnedSemaphorePermit) {
        let me = Arc::clone(self);
        let secure = secure || self.secure;
        self.tasks.spawn(async move {
            serve_ws(socket, addr, secure, &me.hub, me.limits).await;
            drop(permit);
        });
    }
}

/// Serves one upgraded WebSocket as the SIP flow of `addr`: registers it with the hub, runs it,
/// then unregisters it and tells the handler the flow closed.
///
/// # Cancel safety
/// Not cancel safe: dropping the future skips [`super::SipHandler::on_closed`]. Run it to
/// completion; it returns soon after the hub's token is cancelled.
pub async fn serve_ws(socket: WebSocket, addr: SocketAddr, secure: bool, hub: &Arc<Hub>, limits: WsLimits) {
    let peer = Peer { addr, transport: if secure { Transport::Wss } else { Transport::Ws } };
    let (tx, rx) = hub.register_websocket(addr);
    metrics::gauge!("callgate_sip_ws_connections").increment(1.0);
    tracing::debug!(%addr, "sip websocket open");
    connection(socket, peer, rx, hub, limits).await;
    hub.unregister_websocket(addr, &tx);
    metrics::gauge!("callgate_sip_ws_connections").decrement(1.0);
    tracing::debug!(%addr, "sip websocket closed");
    let mut out = Outbox::new();
    hub.handler().on_closed(peer, Instant::now().into_std(), &mut out);
    for (to, data) in out.sends.drain(..) {
        hub.send(to, data);
    }
}

/// Why a connection loop stopped (for the log and the Close frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Closed,
    Idle,
    Shutdown,
    WriteFailed,
}

async fn connection(mut socket: WebSocket, peer: Peer, mut queued: mpsc::Receiver<Bytes>, hub: &Arc<Hub>, limits: WsLimits) {
    let mut ping = tokio::time::interval_at(Instant::now() + limits.ping_every, limits.ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();
    let mut out = Outbox::new();
    let end = 'conn: loop {
        // Each arm only decides; the socket is written after `select!` releases its borrow.
        let step = tokio::select! {
            () = hub.cancel().cancelled() => break 'conn End::Shutdown,
            msg = queued.recv() => match msg {
                Some(bytes) => vec![bytes],
                None => break End::Shutdown,
            },
            _ = ping.tick() => {
                if last_heard.elapsed() > limits.idle {
                    break End::Idle;
                }
                if !send(&mut socket, Message::Ping(Bytes::new()), limits.idle).await {
                    break End::WriteFailed;
                }
                continue;
            },
            frame = socket.recv() => match frame {
                Some(Ok(frame)) => {
                    last_heard = Instant::now();
                    match frame {
                        Message::Text(t) => on_frame(Bytes::from(t), peer, hub, limits, &mut out),
                        Message::Binary(b) => on_frame(b, peer, hub, limits, &mut out),
                        Message::Close(_) => break End::Closed,
                        Message::Ping(_) | Message::Pong(_) => continue, // Pongs are queued by the library
                    }
                }
                Some(Err(_)) | None => break End::Closed,
            },
        };
        for bytes in step {
            if !send(&mut socket, to_message(bytes), limits.idle).await {
                break 'conn End::WriteFailed;
            }
        }
    };
    if end != End::Closed {
        tracing::debug!(addr = %peer.addr, reason = ?end, "closing sip websocket");
        let reason = if end == End::Shutdown { "shutting down" } else { "idle" };
        let close = Message::Close(Some(CloseFrame { code: 1001, reason: Utf8Bytes::from_static(reason) }));
        // RFC 6455 §7.1.1: wait (briefly) for the peer's Close before dropping the TCP stream,
        // so the peer reads our Close instead of a reset.
        let _ = tokio::time::timeout(CLOSE_WAIT, async {
            if socket.send(close).await.is_ok() {
                while let Some(Ok(frame)) = socket.recv().await {
                    if matches!(frame, Message::Close(_)) {
                        break;
                    }
                }
            }
        })
        .await;
    }
}

/// How long a closing handshake may take.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Hands one WebSocket message to the handler; returns what goes back over this socket (the
/// reply and sends addressed to this peer). Other destinations go through the hub at once.
fn on_frame(data: Bytes, peer: Peer, hub: &Arc<Hub>, limits: WsLimits, out: &mut Outbox) -> Vec<Bytes> {
    if data.iter().all(|&b| b == b'\r' || b == b'\n') {
        // RFC 5626 §4.4.1 keep-alive inside the WebSocket (SIP.js `keepAliveInterval`).
        return if data.len() >= 4 { vec![Bytes::from_static(b"\r\n")] } else { Vec::new() };
    }
    if data.len() > limits.max_message {
        metrics::counter!("callgate_sip_dropped_total", "reason" => "oversized").increment(1);
        return Vec::new();
    }
    out.clear();
    hub.handler().on_message(data, peer, Instant::now().into_std(), out);
    let mut back = Vec::new();
    if !out.reply.is_empty() {
        back.push(out.reply.split().freeze());
    }
    for (to, bytes) in out.sends.drain(..) {
        if to == peer {
            back.push(bytes);
        } else {
            hub.send(to, bytes);
        }
    }
    back
}

/// SIP is text, but a message may carry non-UTF-8 bytes (a CP1251 display name): those go as
/// binary messages, which RFC 7118 §5 allows and JsSIP/SIP.js read.
fn to_message(bytes: Bytes) -> Message {
    match Utf8Bytes::try_from(bytes.clone()) {
        Ok(text) => Message::Text(text),
        Err(_) => Message::Binary(bytes),
    }
}

/// Writes one message; false when the write failed or did not finish within `limit`.
async fn send(socket: &mut WebSocket, msg: Message, limit: Duration) -> bool {
    matches!(tokio::time::timeout(limit, socket.send(msg)).await, Ok(Ok(())))
}
