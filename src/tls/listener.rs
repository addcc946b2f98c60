//! A TLS listener for `axum::serve` (HTTPS and WSS on the HTTP listener).
//!
//! The accept loop hands each TCP connection to its own handshake task and goes back to
//! accepting; finished handshakes arrive through a bounded queue. A semaphore caps handshakes in
//! flight, so a flood of half-open TLS connections costs at most [`super::MAX_HANDSHAKES`] tasks.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{HANDSHAKE_TIMEOUT, MAX_HANDSHAKES};

/// Finished handshakes waiting for the server to take them.
const READY_QUEUE: usize = 64;

/// An `axum::serve::Listener` yielding TLS streams.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `tcp` in `tasks` until `cancel` fires.
    ///
    /// # Errors
    /// The listener's local address cannot be read.
    pub fn spawn(
        tcp: TcpListener,
        config: Arc<rustls::ServerConfig>,
        tasks: &TaskTracker,
        cancel: CancellationToken,
    ) -> std::io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(READY_QUEUE);
        tasks.spawn(accept_loop(
            tcp,
            TlsAcceptor::from(config),
            tx,
            tasks.clone(),
            cancel,
        ));
        Ok(Self { ready, local })
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
    tasks: TaskTracker,
    cancel: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let permit = tokio::select! {
            () = cancel.cancelled() => return,
            p = Arc::clone(&slots).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let (stream, addr) = tokio::select! {
            () = cancel.cancelled() => return,
            r = tcp.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "https accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let (acceptor, tx, cancel) = (acceptor.clone(), tx.clone(), cancel.clone());
        tasks.spawn(async move {
            let _ = stream.set_nodelay(true);
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
            let done = tokio::select! {
                () = cancel.cancelled() => return,
                r = handshake => r,
            };
            drop(permit);
            match done {
                Ok(Ok(tls)) => {
                    tokio::select! {
                        () = cancel.cancelled() => {}
                        _ = tx.send((tls, addr)) => {}
                    }
                }
                Ok(Err(e)) => {
                    metrics::counter!("callgate_tls_handshake_failures_total", "listener" => "http").increment(1);
                    tracing::debug!(%addr, error = %e, "https handshake failed");
                }
                Err(_) => metrics::counter!("callgate_tls_handshake_failures_total", "listener" => "http").increment(1),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(x) => x,
            // The accept loop stopped (shutdown): nothing more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
