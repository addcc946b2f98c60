//! Sending to any destination, on any transport (what a proxy needs; the redirect server only
//! ever replies in place).
//!
//! UDP goes out through the listening socket, so peers see the address they sent to. TCP goes
//! over the connection to that address: the one the peer opened, or one the hub opens on first
//! use (RFC 3261 §18: a response travels back over the connection its request came on). Each
//! connection task owns its stream and drains a bounded queue; a full queue drops the message and
//! counts it (SIP transactions retransmit or time out; memory does not grow).
//!
//! TLS connections share the TCP map (the peer's address names the connection) but are never
//! dialled: a send to a TLS peer without a connection is dropped and counted.
//!
//! WebSocket flows (RFC 7118) are kept apart from TCP: they are reachable only while the peer's
//! connection lasts, so a send to a WebSocket peer with no connection is dropped, never dialled.

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::guard::{Guarded, Listeners, TIMERS};
use super::tcp::{connection, TcpLimits};
use super::{Outbox, Peer, SipHandler, Transport};

/// Frames queued per TCP connection at most.
pub(super) const STREAM_QUEUE: usize = 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The shared sender. Cheap to clone through `Arc`.
pub struct Hub {
    udp: OnceLock<Arc<UdpSocket>>,
    streams: DashMap<SocketAddr, mpsc::Sender<Bytes>>,
    websockets: DashMap<SocketAddr, mpsc::Sender<Bytes>>,
    handler: Arc<dyn SipHandler>,
    listeners: Arc<Listeners>,
    limits: TcpLimits,
    rt: tokio::runtime::Handle,
    tasks: TaskTracker,
    cancel: CancellationToken,
}

impl Hub {
    /// A hub whose outbound TCP connections feed what they read to `handler`. Must be called
    /// inside a tokio runtime (connections are spawned on it, also from the UDP threads).
    /// Every driver calls `handler` through [`Guarded`]: its panics are caught and counted.
    pub fn new(handler: Arc<dyn SipHandler>, limits: TcpLimits, tasks: TaskTracker, cancel: CancellationToken) -> Arc<Self> {
        let rt = tokio::runtime::Handle::current();
        let listeners = Arc::new(Listeners::default());
        let handler: Arc<dyn SipHandler> = Arc::new(Guarded::new(handler, Arc::clone(&listeners)));
        Arc::new(Self { udp: OnceLock::new(), streams: DashMap::new(), websockets: DashMap::new(), handler, listeners, limits, rt, tasks, cancel })
    }

    /// The listener loops of this hub and the panics caught in them (what `/ready` reports).
    pub fn listeners(&self) -> &Arc<Listeners> {
        &self.listeners
    }

    /// The socket UDP messages leave from (the UDP listener's).
    pub fn set_udp(&self, sock: Arc<UdpSocket>) {
        let _ = self.udp.set(sock);
    }

    /// The handler every transport feeds (panics caught, see [`Guarded`]).
    pub fn handler(&self) -> &Arc<dyn SipHandler> {
        &self.handler
    }

    /// Sends `data` to `to`; failures are counted, never returned (the transaction layer
    /// retransmits or times out).
    pub fn send(self: &Arc<Self>, to: Peer, data: Bytes) {
        match to.transport {
            Transport::Udp => match self.udp.get() {
                Some(sock) => {
                    if sock.send_to(&data, to.addr).is_err() {
                        metrics::counter!("callgate_sip_send_errors_total", "transport" => "udp").increment(1);
                    }
                }
                None => metrics::counter!("callgate_sip_send_errors_total", "transport" => "udp").increment(1),
            },
            Transport::Tcp => self.send_stream(to.addr, data),
            Transport::Tls => self.send_tls(to.addr, data),
            Transport::Ws | Transport::Wss => self.send_websocket(to.addr, data),
        }
    }

    fn send_websocket(&self, addr: SocketAddr, data: Bytes) {
        let sent = self.websockets.get(&addr).map(|tx| tx.clone()).is_some_and(|tx| tx.try_send(data).is_ok());
        if !sent {
            metrics::counter!("callgate_sip_send_errors_total", "transport" => "ws").increment(1);
        }
    }

    /// Registers an accepted WebSocket flow: messages for `addr` over WS now go to the queue.
    pub(super) fn register_websocket(&self, addr: SocketAddr) -> (mpsc::Sender<Bytes>, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        self.websockets.insert(addr, tx.clone());
        (tx, rx)
    }

    /// Forgets a closed WebSocket flow (unless another one to `addr` replaced it).
    pub(super) fn unregister_websocket(&self, addr: SocketAddr, tx: &mpsc::Sender<Bytes>) {
        self.websockets.remove_if(&addr, |_, t| t.same_channel(tx));
    }

    /// Open WebSocket flows.
    pub fn websocket_count(&self) -> usize {
        self.websockets.len()
    }

    fn send_stream(self: &Arc<Self>, addr: SocketAddr, data: Bytes) {
        let tx = match self.streams.get(&addr) {
            Some(tx) => tx.clone(),
            None => self.connect(addr),
        };
        if tx.try_send(data).is_err() {
            metrics::counter!("callgate_sip_send_errors_total", "transport" => "tcp").increment(1);
        }
    }

    /// Over an open TLS connection only: callgate has no client certificate setup to dial one.
    fn send_tls(&self, addr: SocketAddr, data: Bytes) {
        let sent = self.streams.get(&addr).map(|tx| tx.clone()).is_some_and(|tx| tx.try_send(data).is_ok());
        if !sent {
            metrics::counter!("callgate_sip_send_errors_total", "transport" => "tls").increment(1);
        }
    }

    /// Registers an accepted connection: messages for `addr` now go to the returned queue.
    pub(super) fn register(&self, addr: SocketAddr) -> (mpsc::Sender<Bytes>, mpsc::Receiver<Bytes>) {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        self.streams.insert(addr, tx.clone());
        (tx, rx)
    }

    /// Forgets a closed connection, unless another one to `addr` has replaced it meanwhile.
    pub(super) fn unregister(&self, addr: SocketAddr, tx: &mpsc::Sender<Bytes>) {
        self.streams.remove_if(&addr, |_, t| t.same_channel(tx));
    }

    /// Opens a connection to `addr` in the background; messages queue meanwhile.
    fn connect(self: &Arc<Self>, addr: SocketAddr) -> mpsc::Sender<Bytes> {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        self.streams.insert(addr, tx.clone());
        let (hub, mine) = (Arc::clone(self), tx.clone());
        self.tasks.spawn_on(
            async move {
                let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await;
                match stream {
                    Ok(Ok(stream)) => {
                        let _ = stream.set_nodelay(true);
                        let peer = Peer { addr, transport: Transport::Tcp };
                        connection(stream, peer, rx, &hub).await;
                    }
                    _ => {
                        metrics::counter!("callgate_sip_connect_errors_total").increment(1);
                        tracing::debug!(%addr, "tcp connect failed");
                    }
                }
                hub.unregister(addr, &mine);
            },
            &self.rt,
        );
        tx
    }

    /// Ticks the handler every `every` until cancelled, sending what the ticks produce (SIP
    /// timers fire at most `every` late; T1 is 500 ms).
    pub async fn tick(self: Arc<Self>, every: Duration) {
        let _alive = self.listeners.start(TIMERS, self.cancel.clone());
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut out = Outbox::new();
        loop {
            tokio::select! {
                () = self.cancel.cancelled() => return,
                _ = interval.tick() => {
                    out.clear();
                    self.handler.on_tick(tokio::time::Instant::now().into_std(), &mut out);
                    for (to, data) in out.sends.drain(..) {
                        self.send(to, data);
                    }
                }
            }
        }
    }

    pub(super) fn limits(&self) -> TcpLimits {
        self.limits
    }

    pub(super) fn cancel(&self) -> &CancellationToken {
        &self.cancel
    }
}
