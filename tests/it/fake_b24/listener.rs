//! The listener: plain TCP, except that a handler can make its connection drop with RST instead
//! of answering (`Fault::Reset`), via the per-connection [`Conn`] it gets as `ConnectInfo`.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// Per-connection info; `reset()` makes the connection drop with RST instead of answering.
#[derive(Clone, Debug)]
pub struct Conn {
    pub peer: SocketAddr,
    reset: Arc<AtomicBool>,
}

impl Conn {
    pub fn reset(&self) {
        self.reset.store(true, Ordering::SeqCst);
    }
}

pub struct FakeListener(pub TcpListener);

pub struct FakeIo {
    stream: TcpStream,
    reset: Arc<AtomicBool>,
}

impl AsyncRead for FakeIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for FakeIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.reset.load(Ordering::SeqCst) {
            let _ = self.stream.set_zero_linger();
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

impl Listener for FakeListener {
    type Io = FakeIo;
    type Addr = Conn;

    async fn accept(&mut self) -> (FakeIo, Conn) {
        loop {
            if let Ok((stream, peer)) = self.0.accept().await {
                let reset = Arc::new(AtomicBool::new(false));
                let _ = stream.set_nodelay(true);
                return (
                    FakeIo {
                        stream,
                        reset: reset.clone(),
                    },
                    Conn { peer, reset },
                );
            }
        }
    }

    fn local_addr(&self) -> io::Result<Conn> {
        Ok(Conn {
            peer: self.0.local_addr()?,
            reset: Arc::default(),
        })
    }
}

impl Connected<IncomingStream<'_, FakeListener>> for Conn {
    fn connect_info(stream: IncomingStream<'_, FakeListener>) -> Self {
        stream.remote_addr().clone()
    }
}
