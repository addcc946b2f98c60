//! Sending to any destination, on any transport (what a proxy needs; the redirect server only
//! ever replies in place).
//!
//! UDP goes out through the listening socket, so peers see the address they sent to. TCP goes
//! over the connection to that address: the one the peer opened, or one the hub opens on first
//! use (RFC 3261 §18: a response travels back over the connection its request came on). Each
//! connection task owns its stream and drains a bounded queue; a full queue drops the message and
//! counts it (SIP transactions retransmit or time out; memory does not grow).
//!
//! TLS connections share the TCP map (the peer's address names the connection). With a client
//! configuration ([`Hub::set_tls_client`]: a PBX whose `pbx_host` says `;transport=tls`) the hub
//! dials TLS like TCP, checking the server's certificate against the name the handler gives
//! ([`SipHandler::tls_server_name`]) or the peer's IP address; without one, a send to a TLS
//! peer without a connection is dropped and counted.
//!
//! A connection that cannot be opened (refused, timed out, a failed handshake), or a TLS peer
//! with no connection that cannot be dialled, is reported to the handler
//! ([`SipHandler::on_unreachable`]) from a task of its own, so the transactions waiting there
//! end at once (RFC 3261 §17.1.4) and never inside a send.
//!
//! WebSocket flows (RFC 7118) are kept apart from TCP: they are reachable only while the peer's
//! connection lasts, so a send to a WebSocket peer with no connection is dropped, never dialled.

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use rustls::pki_types::ServerName;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::guard::{Guarded, Listeners, TIMERS};
use super::tcp::{connection, TcpLimits};
use super::{Outbox, Peer, SipHandler, Transport};

/// A connection the hub opened.
enum Stream {
    Tcp(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
}

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
    /// How TLS connections are dialled (none: TLS is never dialled).
    tls_client: OnceLock<Arc<rustls::ClientConfig>>,
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
        Arc::new(Self { udp: OnceLock::new(), streams: DashMap::new(), websockets: DashMap::new(), handler, listeners, limits, tls_client: OnceLock::new(), rt, tasks, cancel })
    }

    /// The listener loops of this hub and the panics caught in them (what `/ready` reports).
    pub fn listeners(&self) -> &Arc<Listeners> {
        &self.listeners
    }

    /// The socket UDP messages leave from (the UDP listener's).
    pub fn set_udp(&self, sock: Arc<UdpSocket>) {
        let _ = self.udp.set(sock);
    }

    /// Lets the hub dial TLS with `config` (verifying servers against its roots).
    pub fn set_tls_client(&self, config: Arc<rustls::ClientConfig>) {
        let _ = self.tls_client.set(config);
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
            Transport::Tcp | Transport::Tls => self.send_stream(to, data),
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

    /// Over the connection to `to.addr`: the open one, else one dialled now (TLS only with a
    /// client configuration; otherwise the peer is unreachable).
    fn send_stream(self: &Arc<Self>, to: Peer, data: Bytes) {
        let open = self.streams.get(&to.addr).map(|tx| tx.clone());
        let tx = match open {
            Some(tx) => tx,
            None if to.transport == Transport::Tcp || self.tls_client.get().is_some() => self.connect(to),
            None => {
                metrics::counter!("callgate_sip_send_errors_total", "transport" => "tls").increment(1);
                return self.report_unreachable(to);
            }
        };
        if tx.try_send(data).is_err() {
            let label = if to.transport == Transport::Tls { "tls" } else { "tcp" };
            metrics::counter!("callgate_sip_send_errors_total", "transport" => label).increment(1);
        }
    }

    /// Tells the handler, from a task of its own, that `peer` cannot be reached; sends what it
    /// answers (503s upstream).
    fn report_unreachable(self: &Arc<Self>, peer: Peer) {
        let hub = Arc::clone(self);
        self.tasks.spawn_on(
            async move {
                let mut out = Outbox::new();
                hub.handler.on_unreachable(peer, tokio::time::Instant::now().into_std(), &mut out);
                for (to, data) in out.sends.drain(..) {
                    hub.send(to, data);
                }
            },
            &self.rt,
        );
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

    /// Opens a connection to `to` (TCP, or TLS over it) in the background; messages queue
    /// meanwhile. One that cannot be opened makes `to` unreachable (see the module doc).
    fn connect(self: &Arc<Self>, to: Peer) -> mpsc::Sender<Bytes> {
        let (tx, rx) = mpsc::channel(STREAM_QUEUE);
        self.streams.insert(to.addr, tx.clone());
        let (hub, mine) = (Arc::clone(self), tx.clone());
        self.tasks.spawn_on(
            async move {
                let opened = tokio::select! {
                    () = hub.cancel.cancelled() => return hub.unregister(to.addr, &mine),
                    opened = tokio::time::timeout(CONNECT_TIMEOUT, hub.open(to)) => opened,
                };
                match opened {
                    Ok(Ok(Stream::Tcp(stream))) => connection(stream, to, rx, &hub).await,
                    Ok(Ok(Stream::Tls(stream))) => connection(*stream, to, rx, &hub).await,
                    Ok(Err(e)) => hub.connect_failed(to, &mine, &e.to_string()),
                    Err(_) => hub.connect_failed(to, &mine, "timed out"),
                }
                hub.unregister(to.addr, &mine);
            },
            &self.rt,
        );
        tx
    }

    /// A TCP connection to `to.addr`, with the TLS handshake done when `to` is a TLS peer.
    async fn open(&self, to: Peer) -> std::io::Result<Stream> {
        let stream = tokio::net::TcpStream::connect(to.addr).await?;
        let _ = stream.set_nodelay(true);
        if to.transport != Transport::Tls {
            return Ok(Stream::Tcp(stream));
        }
        let config = self.tls_client.get().cloned().ok_or_else(|| std::io::Error::other("no tls client configuration"))?;
        let name = match self.handler.tls_server_name(to.addr) {
            Some(name) => ServerName::try_from(name).map_err(std::io::Error::other)?,
            None => ServerName::IpAddress(to.addr.ip().into()),
        };
        let tls = tokio_rustls::TlsConnector::from(config).connect(name, stream).await?;
        Ok(Stream::Tls(Box::new(tls)))
    }

    /// The connection to `to` could not be opened: forgotten (the next send dials again), and
    /// what waits for an answer from there fails now.
    fn connect_failed(self: &Arc<Self>, to: Peer, mine: &mpsc::Sender<Bytes>, why: &str) {
        let label = if to.transport == Transport::Tls { "tls" } else { "tcp" };
        metrics::counter!("callgate_sip_connect_errors_total").increment(1);
        tracing::debug!(addr = %to.addr, transport = label, error = why, "sip connect failed");
        self.unregister(to.addr, mine);
        self.report_unreachable(to);
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
