//! The HTTP listener: accepts connections under caps and timeouts, serves
//! the router on each, and shuts down gracefully.
//!
//! Per connection: a place from the [`ConnLimiter`] (per address and in
//! total, refused sockets are closed at once), hyper's header-read timeout
//! (`http.header_timeout_secs`: a request's headers, counted from the
//! connection's start or the previous response, so it is also the idle
//! keep-alive limit and what ends slowloris), and [`IdleStream`]
//! (`http.idle_timeout_secs`: no byte either way for that long ends the
//! connection, also after a WebSocket upgrade). On shutdown no connection is
//! accepted, idle ones close, and in-flight requests finish.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::config::HttpConfig;
use crate::net::{ConnLimiter, RateLog};
use crate::tls::ServerTls;

/// A request that came over TLS (an extension the handlers can look for).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Https;

/// Serves `app` on `listener` until `shutdown` resolves, then waits for the
/// connections in flight. With `tls`, each connection is HTTPS: its
/// handshake must finish within the header timeout.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    http: &HttpConfig,
    tls: Option<Arc<ServerTls>>,
    shutdown: impl Future<Output = ()>,
) {
    let name = if tls.is_some() { "https" } else { "http" };
    let limiter = ConnLimiter::new(name, http.max_connections, http.max_connections_per_ip);
    let header_timeout = Duration::from_secs(http.header_timeout_secs);
    let idle_timeout = Duration::from_secs(http.idle_timeout_secs);
    let header_log = Arc::new(RateLog::default());
    let idle_log = Arc::new(RateLog::default());
    let tls_log = Arc::new(RateLog::default());
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    let (close_tx, close_rx) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (socket, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors, mostly: let some connections end.
                    tracing::warn!("{name} accept: {e}");
                    crate::ticks::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(guard) = limiter.admit(peer.ip(), std::time::Instant::now()) else {
            continue;
        };
        let _ = socket.set_nodelay(true);
        let stream = IdleStream::new(socket, idle_timeout, peer, idle_log.clone());
        let app = app.clone();
        let https = tls.is_some();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            if https {
                req.extensions_mut().insert(Https);
            }
            app.clone().call(req)
        });
        let conn = Conn {
            name,
            builder: builder.clone(),
            close: close_rx.clone(),
            header_log: header_log.clone(),
            header_timeout,
            peer,
        };
        let acceptor = tls.as_ref().map(|t| t.http());
        let tls_log = tls_log.clone();
        tokio::spawn(async move {
            let _guard = guard;
            match acceptor {
                None => conn.run(stream, service).await,
                Some(acceptor) => {
                    match crate::ticks::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => conn.run(s, service).await,
                        Ok(Err(e)) => {
                            if let Some(n) = tls_log.hit(std::time::Instant::now()) {
                                tracing::info!(%peer, closed = n, "https connection closed: TLS handshake failed: {e}");
                            }
                        }
                        Err(_) => {
                            if let Some(n) = tls_log.hit(std::time::Instant::now()) {
                                tracing::info!(%peer, closed = n, "https connection closed: no TLS handshake within {header_timeout:?}");
                            }
                        }
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = close_tx.send(true);
    drop(close_rx);
    // Every connection task holds a receiver until it ends.
    close_tx.closed().await;
}

/// One accepted connection's settings.
struct Conn {
    /// The listener's name (`http`, `https`).
    name: &'static str,
    builder: hyper::server::conn::http1::Builder,
    close: tokio::sync::watch::Receiver<bool>,
    header_log: Arc<RateLog>,
    header_timeout: Duration,
    peer: SocketAddr,
}

impl Conn {
    /// Serves requests on `io` until it ends or the server shuts down.
    async fn run<I, S>(mut self, io: I, service: S)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: hyper::service::Service<hyper::Request<Incoming>, Response = axum::response::Response>
            + Send
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let conn = self
            .builder
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        tokio::pin!(conn);
        let close = &mut self.close;
        let result = tokio::select! {
            r = conn.as_mut() => r,
            _ = async { close.wait_for(|c| *c).await.is_ok() } => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        let peer = self.peer;
        match result {
            Err(e) if e.is_timeout() => {
                crate::metrics::metrics().limit_hit(self.name, "header_timeout");
                if let Some(n) = self.header_log.hit(std::time::Instant::now()) {
                    tracing::info!(%peer, closed = n, "http connection closed: no complete request headers within {:?}", self.header_timeout);
                }
            }
            Err(e) => tracing::debug!(%peer, "http connection ended: {e}"),
            Ok(()) => {}
        }
    }
}

/// A socket that fails with `TimedOut` once nothing was read or written for
/// `idle` while the server waits on it (a request handler reading the body
/// sees the error, so the time-out is logged here).
struct IdleStream {
    inner: TcpStream,
    idle: Duration,
    last: Instant,
    timer: Pin<Box<Sleep>>,
    peer: SocketAddr,
    log: Arc<RateLog>,
    logged: bool,
}

impl IdleStream {
    fn new(inner: TcpStream, idle: Duration, peer: SocketAddr, log: Arc<RateLog>) -> Self {
        let now = Instant::now();
        IdleStream {
            inner,
            idle,
            last: now,
            timer: Box::pin(crate::ticks::sleep_until(now + idle)),
            peer,
            log,
            logged: false,
        }
    }

    /// Notes traffic when `r` is ready; when it is not, the idle check.
    fn after<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.last = Instant::now();
                Poll::Ready(r)
            }
            Poll::Pending => self.poll_idle(cx).map(Err),
        }
    }

    /// Called when the socket is not ready: `Ready(Err)` once idle too long.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let deadline = self.last + self.idle;
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        match self.timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                if !std::mem::replace(&mut self.logged, true) {
                    crate::metrics::metrics().limit_hit("http", "idle_timeout");
                    if let Some(n) = self.log.hit(std::time::Instant::now()) {
                        tracing::info!(peer = %self.peer, closed = n, "http connection closed: no traffic for {:?}", self.idle);
                    }
                }
                Poll::Ready(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection idle too long",
                ))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for IdleStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.after(cx, r)
    }
}

impl AsyncWrite for IdleStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.after(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.after(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
