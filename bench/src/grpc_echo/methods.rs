//! The four echo methods and the `x-*` request metadata that steers them (see the table in
//! [`super`]). Each handler is one `Handler` value implementing the tonic server trait for
//! its method shape; tonic's `server::Grpc` does the framing around it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use tokio::time::Sleep;
use tokio_stream::Stream;
use tonic::server::{ClientStreamingService, ServerStreamingService, StreamingService, UnaryService};
use tonic::{Code, Request, Response, Status, Streaming};

use super::calls::CallState;
use super::{pattern, MAX_COUNT, MAX_MESSAGE, MAX_STREAM_MESSAGES, SERVICE};

/// Longest `x-delay-ms` / `x-interval-ms` honoured.
const MAX_DELAY: Duration = Duration::from_secs(60);

/// How long a request stream may stay silent before the server gives up on it.
const STREAM_IDLE: Duration = Duration::from_secs(30);

/// ServerStream's message count without `x-count`.
const DEFAULT_COUNT: u64 = 3;

/// The method a request path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Method {
    Unary,
    ServerStream,
    ClientStream,
    Bidi,
}

impl Method {
    pub(super) fn from_path(path: &str) -> Option<Method> {
        let name = path.strip_prefix('/')?.strip_prefix(SERVICE)?.strip_prefix('/')?;
        match name {
            "Unary" => Some(Method::Unary),
            "ServerStream" => Some(Method::ServerStream),
            "ClientStream" => Some(Method::ClientStream),
            "Bidi" => Some(Method::Bidi),
            _ => None,
        }
    }
}

/// The `x-*` request metadata, parsed once per call.
#[derive(Clone, Debug, Default)]
pub(super) struct Options {
    /// `x-delay-ms`: wait before replying.
    delay: Option<Duration>,
    /// `x-status` + `x-message`: end with this status instead of the reply.
    status: Option<(Code, String)>,
    /// `x-count`, when given (ServerStream).
    count: Option<u64>,
    /// `x-interval-ms`: pause between ServerStream messages.
    interval: Option<Duration>,
    /// `x-reply: count` (ClientStream).
    reply_count: bool,
    /// `x-size`: reply with `pattern(size)` instead of the echo.
    size: Option<usize>,
}

impl Options {
    pub(super) fn from_headers(headers: &HeaderMap) -> Result<Options, Status> {
        fn text<'a>(headers: &'a HeaderMap, key: &str) -> Result<Option<&'a str>, Status> {
            headers
                .get(key)
                .map(|v| v.to_str().map_err(|_| Status::invalid_argument(format!("{key} is not ASCII"))))
                .transpose()
        }
        fn number(headers: &HeaderMap, key: &str, max: u64) -> Result<Option<u64>, Status> {
            match text(headers, key)? {
                None => Ok(None),
                Some(s) => match s.trim().parse::<u64>() {
                    Ok(n) if n <= max => Ok(Some(n)),
                    _ => Err(Status::invalid_argument(format!("{key}: {s:?} is not a number up to {max}"))),
                },
            }
        }
        let max_ms = MAX_DELAY.as_millis() as u64;
        let status = match number(headers, "x-status", 16)? {
            None => None,
            Some(code) => Some((Code::from_i32(code as i32), text(headers, "x-message")?.unwrap_or("").to_string())),
        };
        Ok(Options {
            delay: number(headers, "x-delay-ms", max_ms)?.map(Duration::from_millis),
            status,
            count: number(headers, "x-count", MAX_COUNT)?,
            interval: number(headers, "x-interval-ms", max_ms)?.map(Duration::from_millis),
            reply_count: text(headers, "x-reply")? == Some("count"),
            size: number(headers, "x-size", MAX_MESSAGE as u64)?.map(|n| n as usize),
        })
    }

    async fn delay(&self) {
        if let Some(d) = self.delay {
            tokio::time::sleep(d).await;
        }
    }

    fn status(&self) -> Option<Status> {
        self.status.as_ref().map(|(code, message)| Status::new(*code, message.clone()))
    }

    /// The reply to `msg`: the message itself, or the `x-size` pattern.
    fn reply(&self, msg: Bytes) -> Bytes {
        match self.size {
            Some(n) => pattern(n),
            None => msg,
        }
    }
}

/// One call's handler: its options and its fate. tonic calls it once per call.
pub(super) struct Handler {
    pub(super) opts: Options,
    pub(super) call: Arc<CallState>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl Handler {
    fn parts(&self) -> (Options, Arc<CallState>) {
        (self.opts.clone(), self.call.clone())
    }
}

impl UnaryService<Bytes> for Handler {
    type Response = Bytes;
    type Future = BoxFuture<Result<Response<Bytes>, Status>>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let (opts, call) = self.parts();
        Box::pin(async move {
            call.received(1);
            opts.delay().await;
            if let Some(status) = opts.status() {
                return Err(status);
            }
            call.sent(1);
            Ok(Response::new(opts.reply(request.into_inner())))
        })
    }
}

impl ServerStreamingService<Bytes> for Handler {
    type Response = Bytes;
    type ResponseStream = Repeat;
    type Future = BoxFuture<Result<Response<Repeat>, Status>>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let (opts, call) = self.parts();
        Box::pin(async move {
            call.received(1);
            opts.delay().await;
            let then = opts.status();
            if let (Some(status), None) = (&then, opts.count) {
                return Err(status.clone());
            }
            let msg = opts.reply(request.into_inner());
            let left = opts.count.unwrap_or(DEFAULT_COUNT);
            Ok(Response::new(Repeat { msg, left, interval: opts.interval, sleep: None, then, call }))
        })
    }
}

impl ClientStreamingService<Bytes> for Handler {
    type Response = Bytes;
    type Future = BoxFuture<Result<Response<Bytes>, Status>>;

    fn call(&mut self, request: Request<Streaming<Bytes>>) -> Self::Future {
        let (opts, call) = self.parts();
        Box::pin(async move {
            let mut stream = request.into_inner();
            let mut all = BytesMut::new();
            let mut n: usize = 0;
            while let Some(msg) = next_message(&mut stream, &call).await? {
                n += 1;
                if n > MAX_STREAM_MESSAGES || all.len() + msg.len() > MAX_MESSAGE {
                    return Err(Status::resource_exhausted("request stream too long"));
                }
                all.extend_from_slice(&msg);
            }
            opts.delay().await;
            if let Some(status) = opts.status() {
                return Err(status);
            }
            let reply = if opts.reply_count { Bytes::from(n.to_string()) } else { all.freeze() };
            call.sent(1);
            Ok(Response::new(opts.reply(reply)))
        })
    }
}

impl StreamingService<Bytes> for Handler {
    type Response = Bytes;
    type ResponseStream = Echoing;
    type Future = BoxFuture<Result<Response<Echoing>, Status>>;

    fn call(&mut self, request: Request<Streaming<Bytes>>) -> Self::Future {
        let (opts, call) = self.parts();
        Box::pin(async move {
            let mut stream = request.into_inner();
            opts.delay().await;
            if let Some(status) = opts.status() {
                let mut n = 0;
                while next_message(&mut stream, &call).await?.is_some() {
                    n += 1;
                    if n > MAX_STREAM_MESSAGES {
                        return Err(Status::resource_exhausted("request stream too long"));
                    }
                }
                return Err(status);
            }
            Ok(Response::new(Echoing { stream, opts, call, idle: None, seen: 0 }))
        })
    }
}

/// The next request message, bounded by [`STREAM_IDLE`]; a stream error (the client reset
/// the stream) cancels the call.
async fn next_message(stream: &mut Streaming<Bytes>, call: &CallState) -> Result<Option<Bytes>, Status> {
    match tokio::time::timeout(STREAM_IDLE, stream.message()).await {
        Err(_) => Err(Status::deadline_exceeded("request stream idle too long")),
        Ok(Ok(Some(msg))) => {
            call.received(1);
            Ok(Some(msg))
        }
        Ok(Ok(None)) => Ok(None),
        Ok(Err(status)) => {
            call.cancel();
            Err(status)
        }
    }
}

/// ServerStream's reply: `msg` `left` more times, `interval` apart, then `then` if set.
pub(super) struct Repeat {
    msg: Bytes,
    left: u64,
    interval: Option<Duration>,
    /// The pause before the next message (none before the first).
    sleep: Option<Pin<Box<Sleep>>>,
    /// The status to end with after the messages (`x-status` with `x-count`).
    then: Option<Status>,
    call: Arc<CallState>,
}

impl Stream for Repeat {
    type Item = Result<Bytes, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.left == 0 {
            return Poll::Ready(this.then.take().map(Err));
        }
        if let Some(sleep) = this.sleep.as_mut() {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.sleep = None;
        }
        this.left -= 1;
        if let (Some(d), true) = (this.interval, this.left > 0) {
            this.sleep = Some(Box::pin(tokio::time::sleep(d)));
        }
        this.call.sent(1);
        Poll::Ready(Some(Ok(this.msg.clone())))
    }
}

/// Bidi's reply: each request message (or its `x-size` pattern) as it arrives.
pub(super) struct Echoing {
    stream: Streaming<Bytes>,
    opts: Options,
    call: Arc<CallState>,
    /// Ends the call when the request stream stays silent for [`STREAM_IDLE`].
    idle: Option<Pin<Box<Sleep>>>,
    /// Request messages echoed so far.
    seen: usize,
}

impl Stream for Echoing {
    type Item = Result<Bytes, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match Pin::new(&mut this.stream).poll_next(cx) {
            Poll::Ready(Some(Ok(msg))) => {
                this.idle = None;
                this.seen += 1;
                if this.seen > MAX_STREAM_MESSAGES {
                    return Poll::Ready(Some(Err(Status::resource_exhausted("request stream too long"))));
                }
                this.call.received(1);
                this.call.sent(1);
                Poll::Ready(Some(Ok(this.opts.reply(msg))))
            }
            Poll::Ready(Some(Err(status))) => {
                this.call.cancel();
                Poll::Ready(Some(Err(status)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let idle = this.idle.get_or_insert_with(|| Box::pin(tokio::time::sleep(STREAM_IDLE)));
                match idle.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        Poll::Ready(Some(Err(Status::deadline_exceeded("request stream idle too long"))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}
