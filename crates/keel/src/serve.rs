//! The listener: Keel accepts and serves its HTTP/1.1 connections itself, instead of
//! `axum::serve`, so that what one client can hold is bounded by exact numbers (issue 19,
//! finding 7; ADR 0025):
//!
//! - **Header-read timeout.** A request's headers must be complete within
//!   `KEEL_HTTP__HEADER_READ_TIMEOUT_MS` of the connection being ready for them (accepted, or
//!   the client's first byte after an idle keep-alive pause). A client that trickles headers
//!   one byte at a time (slowloris) is cut off at that time, whatever it sends.
//! - **Idle keep-alive timeout.** Between requests a connection may idle for
//!   `KEEL_HTTP__IDLE_TIMEOUT_MS`; then it is closed.
//! - **Connection cap.** At most `KEEL_HTTP__MAX_CONNECTIONS` connections are open; one
//!   accepted past the cap is closed at once, before a byte is read.
//!
//! No deadline runs while a request is being handled: the request timeout (a middleware)
//! bounds that, body included. A connection switched to another protocol (a 101 answer, for
//! WebSockets) leaves these deadlines behind. hyper's own header timer is not used: it also
//! starts when a keep-alive connection turns idle, so it cannot tell the two timeouts apart.
//!
//! Graceful shutdown: accepting stops, every connection finishes its request in flight and
//! closes; the caller bounds the wait by the shutdown grace period.

use std::{
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::ConnectInfo,
    http::{Request, Response, StatusCode},
};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use keel_http::metrics::Metrics;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, watch},
    time::{Instant, Sleep},
};
use tower::ServiceExt as _;

/// Exact bounds on what clients may hold, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// From the connection being ready for a request to its complete headers.
    pub header_read_timeout: Duration,
    /// How long a keep-alive connection may wait for its next request's first byte.
    pub idle_timeout: Duration,
    /// Connections open at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// Connections one client address (IPv6: its /64) may have open at once; trusted proxies
    /// are exempt (every client behind them shares their address).
    pub max_per_address: usize,
}

/// Open connections per client address, given back when a connection ends.
#[derive(Debug, Default)]
struct PerAddress(Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

/// One connection's place in [`PerAddress`].
struct AddressPlace {
    table: Arc<PerAddress>,
    key: std::net::IpAddr,
}

impl PerAddress {
    fn take(self: &Arc<Self>, addr: std::net::IpAddr, max: usize) -> Option<AddressPlace> {
        let key = keel_kernel::net::client_key(addr);
        let mut open = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let n = open.entry(key).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(AddressPlace {
            table: self.clone(),
            key,
        })
    }
}

impl Drop for AddressPlace {
    fn drop(&mut self) {
        let mut open = self.table.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Where a connection stands, shared by its I/O (which enforces the deadlines) and its
/// service (which knows when a request starts and when its response is done).
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a request's headers, which must be complete by the deadline.
    Head(Instant),
    /// A request is being handled or its response written: no deadline here.
    Busy,
    /// Between requests: the next request's first byte must arrive by the deadline.
    Idle(Instant),
    /// Handed to another protocol (HTTP 101): no HTTP deadline applies any more.
    Upgraded,
}

#[derive(Debug)]
struct Watch {
    phase: Phase,
    /// The task waiting to read, woken when the phase changes so it takes up the new deadline.
    reader: Option<Waker>,
}

#[derive(Debug, Clone)]
struct Shared(Arc<Mutex<Watch>>);

impl Shared {
    fn set(&self, phase: Phase) {
        let mut w = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        w.phase = phase;
        if let Some(waker) = w.reader.take() {
            waker.wake();
        }
    }

    /// The response is done: the connection idles until the next request (unless it was
    /// upgraded meanwhile).
    fn finish(&self, idle: Duration) {
        let mut w = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if matches!(w.phase, Phase::Busy) {
            w.phase = Phase::Idle(Instant::now() + idle);
            if let Some(waker) = w.reader.take() {
                waker.wake();
            }
        }
    }
}

/// The socket, with the deadlines of the connection's phase enforced on reads.
struct Guarded {
    io: TcpStream,
    watch: Shared,
    timer: Pin<Box<Sleep>>,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl AsyncRead for Guarded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let mut w = this.watch.0.lock().unwrap_or_else(PoisonError::into_inner);
                    // The next request has begun: its headers now have the header-read time.
                    if matches!(w.phase, Phase::Idle(_)) {
                        w.phase = Phase::Head(Instant::now() + this.limits.header_read_timeout);
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let phase = {
                    let mut w = this.watch.0.lock().unwrap_or_else(PoisonError::into_inner);
                    w.reader = Some(cx.waker().clone());
                    w.phase
                };
                let (deadline, counter, what) = match phase {
                    Phase::Head(at) => (
                        at,
                        &this.metrics.connections.header_timeouts,
                        "request headers not received within the header-read timeout",
                    ),
                    Phase::Idle(at) => (
                        at,
                        &this.metrics.connections.idle_timeouts,
                        "keep-alive connection idle past the idle timeout",
                    ),
                    Phase::Busy | Phase::Upgraded => return Poll::Pending,
                };
                if this.timer.deadline() != deadline {
                    this.timer.as_mut().reset(deadline);
                }
                if this.timer.as_mut().poll(cx).is_ready() {
                    bump(counter);
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// A response body that tells the connection when it is done (sent in full, or dropped).
struct Finishing {
    inner: Body,
    watch: Shared,
    idle: Duration,
}

impl HttpBody for Finishing {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Finishing {
    fn drop(&mut self) {
        self.watch.finish(self.idle);
    }
}

/// Accepts connections on `listener` and serves `router` on them within `limits`, until
/// `shutdown` resolves; then stops accepting and resolves once every connection has finished
/// its request in flight and closed. `metrics` counts the connections (`/metrics`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    trusted_proxies: Arc<[keel_kernel::net::Cidr]>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = Arc::new(PerAddress::default());
    // Graceful shutdown: the sender's value change tells every connection to finish; the
    // receivers they hold tell us when the last one has closed.
    let (stop_tx, stop_rx) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off for an exact pause
                    // instead of spinning on the error.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            bump(&metrics.connections.refused);
            tracing::warn!(
                max_connections = limits.max_connections,
                "connection refused: the open-connection cap is reached"
            );
            drop(stream);
            continue;
        };
        // One client must not hold the whole cap; a trusted proxy carries many clients.
        let place = if trusted_proxies
            .iter()
            .any(|c| c.contains(canonical(peer.ip())))
        {
            None
        } else if let Some(place) = per_address.take(peer.ip(), limits.max_per_address) {
            Some(place)
        } else {
            bump(&metrics.connections.refused);
            tracing::warn!(
                max_per_address = limits.max_per_address,
                "connection refused: the client address's open-connection cap is reached"
            );
            drop(stream);
            continue;
        };
        let (router, metrics, stop_rx) = (router.clone(), metrics.clone(), stop_rx.clone());
        tokio::spawn(async move {
            metrics.connections.open.fetch_add(1, Ordering::Relaxed);
            connection(stream, peer, router, limits, metrics.clone(), stop_rx).await;
            metrics.connections.open.fetch_sub(1, Ordering::Relaxed);
            drop(place);
            drop(permit);
        });
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(());
    stop_tx.closed().await;
}

/// An IPv4-mapped IPv6 peer is its IPv4 address (a dual-stack listener reports them so).
fn canonical(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
        std::net::IpAddr::V4(_) => ip,
    }
}

/// How long accepting pauses after the listener reported an error.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<()>,
) {
    let watch = Shared(Arc::new(Mutex::new(Watch {
        phase: Phase::Head(Instant::now() + limits.header_read_timeout),
        reader: None,
    })));
    let io = Guarded {
        io: stream,
        watch: watch.clone(),
        timer: Box::pin(tokio::time::sleep_until(
            Instant::now() + limits.header_read_timeout,
        )),
        limits,
        metrics,
    };
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        watch.set(Phase::Busy);
        // Handlers see the TCP peer as axum's `ConnectInfo`, as with `axum::serve`.
        req.extensions_mut().insert(ConnectInfo(peer));
        let (router, watch) = (router.clone(), watch.clone());
        async move {
            let res: Response<Body> = match router.oneshot(req.map(Body::new)).await {
                Ok(res) => res,
                Err(never) => match never {},
            };
            if res.status() == StatusCode::SWITCHING_PROTOCOLS {
                watch.set(Phase::Upgraded);
            }
            Ok::<_, Infallible>(res.map(|inner| {
                Body::new(Finishing {
                    inner,
                    watch,
                    idle: limits.idle_timeout,
                })
            }))
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            changed = stop.changed(), if !stopping => {
                stopping = true;
                let _ = changed;
                // Finish the request in flight, then close (an idle connection closes now).
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
