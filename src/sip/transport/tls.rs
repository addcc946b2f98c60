//! SIP over TLS (RFC 3261 §26.2, `sips:` / `transport=tls`): the TCP driver over a rustls stream.
//!
//! Each accepted connection takes a slot (the TLS listener has its own `sip.max_tcp_connections`
//! slots), finishes its handshake within [`crate::tls::HANDSHAKE_TIMEOUT`] in its own task, then
//! runs the same Content-Length framing as TCP. The hub sends over these connections while they
//! last, and dials TLS itself (client side, `Hub::set_tls_client`) toward a peer it has no
//! connection to: a PBX whose `pbx_host` says `;transport=tls`. Without a client configuration
//! such a peer is unreachable (`SipHandler::on_unreachable`).

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

use super::tcp::connection;
use super::{Hub, Peer, Transport};

/// Accepts connections until the hub's token is cancelled; each connection (handshake included)
/// runs in `tasks`.
pub async fn serve_tls(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    hub: Arc<Hub>,
    tasks: TaskTracker,
) {
    let acceptor = TlsAcceptor::from(config);
    let slots = Arc::new(Semaphore::new(hub.limits().max_connections));
    let refused = metrics::counter!("callgate_sip_tls_refused_total");
    let _alive = hub.listeners().start("sip_tls", hub.cancel().clone());
    while let Some((stream, addr, permit)) = super::tcp::accept_next(&listener, &hub, &slots, &refused, "tls").await {
        let (hub, acceptor) = (Arc::clone(&hub), acceptor.clone());
        tasks.spawn(async move {
            let _ = stream.set_nodelay(true);
            let handshake = tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, acceptor.accept(stream));
            let tls = tokio::select! {
                () = hub.cancel().cancelled() => return,
                r = handshake => match r {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        metrics::counter!("callgate_tls_handshake_failures_total", "listener" => "sip").increment(1);
                        tracing::debug!(%addr, error = %e, "sip tls handshake failed");
                        return;
                    }
                    Err(_) => {
                        metrics::counter!("callgate_tls_handshake_failures_total", "listener" => "sip").increment(1);
                        return;
                    }
                },
            };
            let (tx, rx) = hub.register(addr);
            connection(tls, Peer { addr, transport: Transport::Tls }, rx, &hub).await;
            hub.unregister(addr, &tx);
            drop(permit);
        });
    }
}
