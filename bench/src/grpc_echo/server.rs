//! The echo server: tonic's `server::Grpc` does the gRPC side of each call (framing, status,
//! trailers) and hyper's HTTP/2 server connection the rest, on the server's own tokio
//! runtime. It is the stack tonic's `transport::Server` is made of, put together here for two
//! things that server does not allow: it binds before serving (so tests get the port) and it
//! leaves `grpc-timeout` to us. tonic's server ends an expired call itself, as CANCELLED, at
//! the very moment the client gives up; a test could then not tell a reset the client (or a
//! proxy) sent from one the server made up. Here the server's own deadline fires only
//! [`DEADLINE_GRACE`] later, answers DEADLINE_EXCEEDED and is counted apart.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tonic::body::Body;
use tonic::server::Grpc;
use tonic::Status;

use super::calls::{CallState, Counters};
use super::methods::{self, Method, Options};
use super::{RawCodec, MAX_MESSAGE};

/// Streams one connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS); above the
/// 500 concurrent calls the tests make, so the echo server is never the one that queues.
const MAX_CONCURRENT_STREAMS: u32 = 1024;

/// How long after its `grpc-timeout` the server ends a call that the client did not reset.
pub const DEADLINE_GRACE: Duration = Duration::from_millis(500);

/// The pause after a failed accept (out of file descriptors, say) before the next one.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// How long the runtime gets to drop its tasks once the server has stopped.
const RUNTIME_STOP: Duration = Duration::from_millis(200);

/// How long `shutdown` waits for the server thread after aborting it.
const ABORT_WAIT: Duration = Duration::from_secs(5);

/// What the server has seen, summed over all connections since it started.
#[derive(Clone, Debug, Default)]
pub struct EchoStats {
    /// TCP connections accepted.
    pub connections: u64,
    /// Calls (HTTP/2 streams) that reached the service, any path.
    pub streams_started: u64,
    /// Calls whose response ended normally (trailers sent, or a trailers-only response).
    pub streams_completed: u64,
    /// Calls the client ended early: the handler dropped before its response was ready
    /// (hyper does that on RST_STREAM), a request stream that failed (RST_STREAM while
    /// reading), or a response body dropped before its trailers. Each call counts once.
    pub streams_cancelled: u64,
    /// Calls the server ended itself, DEADLINE_EXCEEDED, [`DEADLINE_GRACE`] after their
    /// `grpc-timeout` ran out with no reset from the client.
    pub deadlines_expired: u64,
    /// Request messages decoded.
    pub messages_received: u64,
    /// Reply messages handed to tonic for sending.
    pub messages_sent: u64,
    /// The raw `grpc-timeout` header of the last call that carried one.
    pub last_grpc_timeout: Option<String>,
    /// The request headers of the last call (what a proxy forwarded).
    pub last_request_headers: Option<HeaderMap>,
}

/// Cancels the call when dropped while still armed: the handler was dropped before it
/// produced a response, which hyper does when the client resets the stream.
struct PendingGuard(Option<Arc<CallState>>);

impl Drop for PendingGuard {
    fn drop(&mut self) {
        if let Some(call) = self.0.take() {
            call.cancel();
        }
    }
}

/// A running echo server.
pub struct EchoServer {
    /// Where it listens.
    pub addr: SocketAddr,
    counters: Arc<Counters>,
    /// Starts the graceful shutdown (GOAWAY, in-flight calls finish).
    graceful: Option<oneshot::Sender<()>>,
    /// Stops serving at once (connections dropped).
    abort: Option<oneshot::Sender<()>>,
    /// Told when the server thread has finished.
    done: mpsc::Receiver<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EchoServer {
    /// Binds `addr` ("127.0.0.1:0") and serves on a tokio runtime with `threads` workers.
    pub fn start(addr: &str, threads: usize) -> std::io::Result<EchoServer> {
        let addr: SocketAddr =
            addr.parse().map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{addr}: {e}")))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("grpc-echo")
            .enable_all()
            .build()?;
        let listener = rt.block_on(TcpListener::bind(addr))?;
        let addr = listener.local_addr()?;
        let counters = Arc::new(Counters::default());
        let (graceful_tx, graceful_rx) = oneshot::channel::<()>();
        let (abort_tx, abort_rx) = oneshot::channel::<()>();
        let (done_tx, done) = mpsc::channel();
        let shared = counters.clone();
        let thread = std::thread::Builder::new().name("grpc-echo-main".into()).spawn(move || {
            rt.block_on(async move {
                tokio::select! {
                    biased;
                    _ = abort_rx => {}
                    _ = serve(listener, shared, graceful_rx) => {}
                }
            });
            rt.shutdown_timeout(RUNTIME_STOP);
            let _ = done_tx.send(());
        })?;
        Ok(EchoServer {
            addr,
            counters,
            graceful: Some(graceful_tx),
            abort: Some(abort_tx),
            done,
            thread: Some(thread),
        })
    }

    /// Graceful shutdown: stops listening, has hyper send the two-phase GOAWAY on every
    /// connection and lets the calls in flight finish. Waits up to `within` for that, then
    /// drops whatever is left.
    pub fn shutdown(mut self, within: Duration) {
        self.stop(within);
    }

    /// What the server has seen so far.
    pub fn stats(&self) -> EchoStats {
        let c = &self.counters;
        let last = c.last.lock().unwrap_or_else(|e| e.into_inner()).clone();
        EchoStats {
            connections: c.connections.load(Ordering::Relaxed),
            streams_started: c.started.load(Ordering::Relaxed),
            streams_completed: c.completed.load(Ordering::Relaxed),
            streams_cancelled: c.cancelled.load(Ordering::Relaxed),
            deadlines_expired: c.expired.load(Ordering::Relaxed),
            messages_received: c.received.load(Ordering::Relaxed),
            messages_sent: c.sent.load(Ordering::Relaxed),
            last_grpc_timeout: last.0,
            last_request_headers: last.1,
        }
    }

    fn stop(&mut self, within: Duration) {
        let Some(thread) = self.thread.take() else { return };
        if let Some(tx) = self.graceful.take() {
            let _ = tx.send(());
        }
        if self.done.recv_timeout(within).is_err() {
            if let Some(tx) = self.abort.take() {
                let _ = tx.send(());
            }
            if self.done.recv_timeout(ABORT_WAIT).is_err() {
                log::warn!("grpc echo server on {} did not stop; its thread is left behind", self.addr);
                return;
            }
        }
        let _ = thread.join();
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop(Duration::ZERO);
    }
}

/// Accepts until `graceful` fires, then closes the listener, drains every connection
/// (GOAWAY, in-flight calls finish) and returns once all of them are closed.
async fn serve(listener: TcpListener, counters: Arc<Counters>, mut graceful: oneshot::Receiver<()>) {
    let (drain_tx, drain_rx) = watch::channel(false);
    let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new()).max_concurrent_streams(MAX_CONCURRENT_STREAMS);
    loop {
        tokio::select! {
            _ = &mut graceful => break,
            conn = listener.accept() => match conn {
                Ok((tcp, _)) => serve_connection(&h2, tcp, counters.clone(), drain_rx.clone()),
                Err(e) => {
                    log::debug!("grpc echo: accept: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    drop(listener);
    drop(drain_rx);
    let _ = drain_tx.send(true);
    // Every connection task holds a receiver; closed() is when the last one has ended.
    drain_tx.closed().await;
}

fn serve_connection(
    h2: &hyper::server::conn::http2::Builder<TokioExecutor>,
    tcp: TcpStream,
    counters: Arc<Counters>,
    mut drain: watch::Receiver<bool>,
) {
    counters.connections.fetch_add(1, Ordering::Relaxed);
    let _ = tcp.set_nodelay(true);
    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let counters = counters.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(counters, req.map(Body::new)).await) }
    });
    let conn = h2.serve_connection(TokioIo::new(tcp), service);
    tokio::spawn(async move {
        let mut conn = std::pin::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    log::debug!("grpc echo: connection: {e}");
                }
                return;
            }
            _ = drain.wait_for(|draining| *draining) => {}
        }
        conn.as_mut().graceful_shutdown();
        if let Err(e) = conn.await {
            log::debug!("grpc echo: connection while draining: {e}");
        }
    });
}

/// One call: counts it, routes it to its method, applies the server's deadline and adds the
/// `x-echo-*` headers and trailers.
async fn handle(counters: Arc<Counters>, req: http::Request<Body>) -> http::Response<Body> {
    counters.started.fetch_add(1, Ordering::Relaxed);
    let timeout = req.headers().get("grpc-timeout").map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let deadline = timeout.as_deref().and_then(parse_grpc_timeout);
    {
        let mut last = counters.last.lock().unwrap_or_else(|e| e.into_inner());
        if timeout.is_some() {
            last.0 = timeout;
        }
        last.1 = Some(req.headers().clone());
    }
    let call = CallState::new(counters);
    let echo: Vec<(HeaderName, HeaderValue)> = req
        .headers()
        .iter()
        .filter(|(k, _)| k.as_str().starts_with("x-echo-"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut pending = PendingGuard(Some(call.clone()));

    let work = dispatch(req, call.clone());
    let response = match deadline {
        None => work.await,
        Some(d) => match tokio::time::timeout(d.saturating_add(DEADLINE_GRACE), work).await {
            Ok(response) => response,
            Err(_) => {
                call.expire();
                Status::deadline_exceeded("deadline expired in the echo server").into_http()
            }
        },
    };
    pending.0 = None;

    let (mut parts, body) = response.into_parts();
    for (k, v) in &echo {
        parts.headers.append(k.clone(), v.clone());
    }
    http::Response::from_parts(parts, Body::new(TrackedBody::new(body, echo, call)))
}

/// Hands the call to tonic's `server::Grpc` with the handler for its method.
async fn dispatch(req: http::Request<Body>, call: Arc<CallState>) -> http::Response<Body> {
    let method = match Method::from_path(req.uri().path()) {
        Some(m) => m,
        None => return Status::unimplemented(format!("no method {}", req.uri().path())).into_http(),
    };
    let opts = match Options::from_headers(req.headers()) {
        Ok(opts) => opts,
        Err(status) => return status.into_http(),
    };
    let mut grpc = Grpc::new(RawCodec).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE);
    let handler = methods::Handler { opts, call };
    match method {
        Method::Unary => grpc.unary(handler, req).await,
        Method::ServerStream => grpc.server_streaming(handler, req).await,
        Method::ClientStream => grpc.client_streaming(handler, req).await,
        Method::Bidi => grpc.streaming(handler, req).await,
    }
}

/// A `grpc-timeout` value: at most 8 digits and a unit (H, M, S, m, u, n). Parsed here on
/// purpose rather than with `ringway::grpc::wire::parse_timeout`: this peer checks what the
/// proxy forwards, so it must not share the proxy's parser.
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let unit = value.bytes().last()?;
    let digits = value.get(..value.len() - 1)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The response body with the `x-echo-*` trailers added, which settles the call: completed
/// when the trailers go out, cancelled when hyper drops it before that (client reset).
struct TrackedBody {
    inner: Body,
    /// The `x-echo-*` request headers, appended to the trailers.
    echo: Vec<(HeaderName, HeaderValue)>,
    call: Arc<CallState>,
}

impl TrackedBody {
    fn new(inner: Body, echo: Vec<(HeaderName, HeaderValue)>, call: Arc<CallState>) -> TrackedBody {
        if inner.is_end_stream() {
            // Trailers-only: the whole response is the header block, already on its way.
            call.complete();
        }
        TrackedBody { inner, echo, call }
    }
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_trailers() {
                Ok(mut trailers) => {
                    for (k, v) in this.echo.drain(..) {
                        trailers.append(k, v);
                    }
                    this.call.complete();
                    Poll::Ready(Some(Ok(Frame::trailers(trailers))))
                }
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            Poll::Ready(None) => {
                this.call.complete();
                Poll::Ready(None)
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        // A no-op when the call already completed.
        self.call.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_values() {
        assert_eq!(parse_grpc_timeout("200m"), Some(Duration::from_millis(200)));
        assert_eq!(parse_grpc_timeout("199999u"), Some(Duration::from_micros(199_999)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "m", "123456789m", "12x", "-1S", "1.5S", "é"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }
}
