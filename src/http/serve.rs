//! Serving the router on the HTTP listener: HTTP/1.1 (and HTTPS, and the SIP WebSockets
//! upgraded from either) with hyper directly, so every connection has a timer.
//!
//! A connection's life:
//! 1. The accept loop waits for a free global slot, accepts, and takes a slot of the source
//!    (`conns.rs`); a source at its cap has the connection closed at once. Nothing else happens
//!    in the loop: the connection gets its own task.
//! 2. HTTPS: the handshake (`tls::TlsHandshaker`, bounded in count and time).
//! 3. hyper serves requests with a [`TokioTimer`]: the request's head must arrive within
//!    `header_read_timeout` of the moment the server waits for it (so a kept-alive connection
//!    waiting for its next request is closed after it too), and may be at most
//!    `max_header_bytes` long (431). A watchdog closes the connection when no byte has moved for
//!    `idle_timeout` while no request is being handled.
//! 4. A WebSocket upgrade takes the stream away from hyper; it keeps both slots until it closes.
//!
//! On `stop` the loop stops accepting, every connection finishes its request in progress and
//! closes, and [`serve`] returns once they have (WebSockets are the SIP side's to close).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::conns::{Activity, Conn, Slots, SourceSlot};
use crate::tls::TlsHandshaker;

/// How connections on the HTTP listener are bounded.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Open connections at most; the next waits in the kernel's backlog.
    pub max_connections: usize,
    /// Open connections at most per source (0: no cap); the next is closed at once.
    pub max_per_source: usize,
    /// Time to send a request's head, from when the server waits for it.
    pub header_read_timeout: Duration,
    /// No byte moved and no request in progress for this long: the connection is closed.
    pub idle_timeout: Duration,
    /// Largest request head buffered (at least 8192).
    pub max_header_bytes: usize,
}

/// What every connection task needs.
struct Shared {
    router: Router,
    limits: ConnLimits,
    tls: Option<TlsHandshaker>,
    stop: CancellationToken,
}

/// Serves `router` on `listener` (HTTPS when `tls` is given) until `stop` fires and the open
/// requests have finished.
///
/// # Errors
/// None today: a failed `accept` is logged and retried; the type leaves room for bind-time errors.
pub async fn serve(listener: TcpListener, tls: Option<Arc<rustls::ServerConfig>>, router: Router, limits: ConnLimits, stop: CancellationToken) -> std::io::Result<()> {
    let slots = Slots::new(limits.max_connections, limits.max_per_source);
    let shared = Arc::new(Shared { router, limits, tls: tls.map(TlsHandshaker::new), stop: stop.clone() });
    let conns = TaskTracker::new();
    while let Some((tcp, addr, global)) = accept(&listener, &slots, &stop).await {
        let Some(source) = slots.source(addr.ip()) else {
            metrics::counter!("callgate_http_connections_refused_total", "reason" => "per_source").increment(1);
            tracing::debug!(%addr, "http connection refused: its source is at http.max_connections_per_source");
            drop(tcp);
            continue;
        };
        conns.spawn(connection(Arc::clone(&shared), tcp, addr, global, source));
    }
    conns.close();
    conns.wait().await;
    Ok(())
}

/// The next connection with its global slot, or `None` once `stop` fired.
async fn accept(listener: &TcpListener, slots: &Slots, stop: &CancellationToken) -> Option<(TcpStream, SocketAddr, tokio::sync::OwnedSemaphorePermit)> {
    loop {
        let global = tokio::select! {
            () = stop.cancelled() => return None,
            p = slots.global() => p,
        };
        if slots.is_full() {
            metrics::counter!("callgate_http_connections_full_total").increment(1);
        }
        let accepted = tokio::select! {
            () = stop.cancelled() => return None,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((tcp, addr)) => return Some((tcp, canonical(addr), global)),
            Err(e) => {
                // Out of descriptors and the like: back off briefly instead of spinning.
                tracing::warn!(error = %e, "http accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// The peer as IPv4 when a dual-stack listener (`[::]`) shows an IPv4 client as `::ffff:a.b.c.d`:
/// trust (`trusted_pbx`), rate limits and connection caps are all written in IPv4 terms.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// One connection, from the handshake (HTTPS) to its close.
async fn connection(shared: Arc<Shared>, tcp: TcpStream, addr: SocketAddr, global: tokio::sync::OwnedSemaphorePermit, source: SourceSlot) {
    let activity = Activity::new(tokio::time::Instant::now().into_std());
    match &shared.tls {
        None => {
            let _ = tcp.set_nodelay(true);
            drive(&shared, Conn::new(tcp, Arc::clone(&activity), global, source), addr, activity).await;
        }
        Some(handshaker) => {
            let tls = tokio::select! {
                () = shared.stop.cancelled() => return,
                t = handshaker.handshake(tcp, addr) => t,
            };
            if let Some(tls) = tls {
                drive(&shared, Conn::new(tls, Arc::clone(&activity), global, source), addr, activity).await;
            }
        }
    }
}

/// Serves requests on `io` until the client closes, a timeout closes it, or `stop` fires (then
/// the request in progress finishes first).
async fn drive<T>(shared: &Shared, io: T, addr: SocketAddr, activity: Arc<Activity>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(shared.limits.header_read_timeout)
        .max_buf_size(shared.limits.max_header_bytes.max(8192))
        .keep_alive(true);
    let service = {
        // Requests carry the peer's address (`ConnectInfo`); the connection counts as busy
        // while one is handled.
        let (router, activity) = (shared.router.clone(), Arc::clone(&activity));
        hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let busy = activity.begin();
            req.extensions_mut().insert(ConnectInfo(addr));
            let router = router.clone();
            async move {
                let resp: Result<axum::response::Response, Infallible> = router.oneshot(req.map(axum::body::Body::new)).await;
                drop(busy);
                resp
            }
        })
    };
    let conn = http.serve_connection(TokioIo::new(io), service).with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let mut stopping = false;
    loop {
        let idle_at = activity.idle_deadline(shared.limits.idle_timeout);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    metrics::counter!("callgate_http_connections_closed_total", "reason" => close_reason(&e)).increment(1);
                    tracing::debug!(%addr, error = %e, "http connection ended");
                }
                return;
            }
            () = shared.stop.cancelled(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            () = sleep_until(idle_at) => {
                if activity.idle_deadline(shared.limits.idle_timeout).is_some_and(|d| d <= tokio::time::Instant::now().into_std()) {
                    metrics::counter!("callgate_http_connections_closed_total", "reason" => "idle").increment(1);
                    tracing::debug!(%addr, "http connection idle for http.idle_timeout; closed");
                    return;
                }
            }
        }
    }
}

/// Sleeps until `at`, or a while when there is no deadline (a request is being handled: the
/// watchdog looks again after it).
async fn sleep_until(at: Option<std::time::Instant>) {
    let at = at.map_or_else(|| tokio::time::Instant::now() + Duration::from_secs(1), tokio::time::Instant::from_std);
    tokio::time::sleep_until(at).await;
}

/// A bounded label for why hyper ended a connection.
fn close_reason(e: &hyper::Error) -> &'static str {
    if e.is_timeout() {
        "header_timeout"
    } else if e.is_parse_too_large() {
        "head_too_large"
    } else if e.is_parse() {
        "bad_request"
    } else {
        "error"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv4_client_of_a_dual_stack_listener_is_seen_as_ipv4() {
        let mapped: SocketAddr = "[::ffff:10.0.0.5]:5060".parse().unwrap();
        assert_eq!(canonical(mapped), "10.0.0.5:5060".parse::<SocketAddr>().unwrap());
        let v6: SocketAddr = "[2001:db8::1]:80".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }
}
