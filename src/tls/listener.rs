//! TLS handshakes for HTTPS (and WSS) on the HTTP listener.
//!
//! The HTTP server (`http::serve`) accepts a TCP connection, counts it against its caps, and
//! runs the handshake in that connection's own task, so one slow or silent client never holds up
//! the accept loop. At most [`super::MAX_HANDSHAKES`] handshakes run at once (a flood of half-open
//! TLS connections costs at most that many rustls states), and a client that has not finished,
//! waiting for its turn included, within [`super::HANDSHAKE_TIMEOUT`] is dropped.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::{HANDSHAKE_TIMEOUT, MAX_HANDSHAKES};

/// Runs the server side of TLS handshakes for one listener.
#[derive(Clone)]
pub struct TlsHandshaker {
    acceptor: TlsAcceptor,
    slots: Arc<Semaphore>,
}

impl TlsHandshaker {
    /// Handshakes with `config`.
    pub fn new(config: Arc<rustls::ServerConfig>) -> Self {
        Self { acceptor: TlsAcceptor::from(config), slots: Arc::new(Semaphore::new(MAX_HANDSHAKES)) }
    }

    /// The TLS stream, or `None` when the handshake failed or took too long (counted in
    /// `callgate_tls_handshake_failures_total{listener="http"}`).
    pub async fn handshake(&self, tcp: TcpStream, addr: SocketAddr) -> Option<TlsStream<TcpStream>> {
        let _ = tcp.set_nodelay(true);
        let done = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
            let _turn = self.slots.acquire().await.ok()?;
            Some(self.acceptor.accept(tcp).await)
        })
        .await;
        match done {
            Ok(Some(Ok(tls))) => Some(tls),
            Ok(Some(Err(e))) => {
                metrics::counter!("callgate_tls_handshake_failures_total", "listener" => "http").increment(1);
                tracing::debug!(%addr, error = %e, "https handshake failed");
                None
            }
            Ok(None) | Err(_) => {
                metrics::counter!("callgate_tls_handshake_failures_total", "listener" => "http").increment(1);
                None
            }
        }
    }
}
