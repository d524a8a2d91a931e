//! A blocking tonic client for the echo service, easy to call from `#[test]` functions: it
//! owns a small tokio runtime and one `Channel` (one HTTP/2 connection, h2c prior knowledge).

use std::str::FromStr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::PathAndQuery;
use tokio_stream::{Stream, StreamExt};
use tonic::client::Grpc;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, BinaryMetadataKey, BinaryMetadataValue, MetadataMap};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};

use super::{path, RawCodec, MAX_MESSAGE, MAX_STREAM_MESSAGES};

/// How long `connect` may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The deadline of calls made without one (so no test waits forever).
const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

/// The `x-delay-ms` that `cancel_after` asks for: far longer than any cancel delay.
const CANCEL_DELAY_MS: &str = "30000";

/// What a call got back.
#[derive(Debug)]
pub struct Reply {
    /// The response headers (initial metadata).
    pub headers: MetadataMap,
    pub messages: Vec<Bytes>,
    /// The trailers, without the reserved `grpc-status`/`grpc-message` entries.
    pub trailers: MetadataMap,
}

/// A tonic client on one HTTP/2 connection with its own runtime.
pub struct EchoClient {
    rt: tokio::runtime::Runtime,
    grpc: Grpc<Channel>,
}

impl EchoClient {
    /// Connects to `addr` over cleartext HTTP/2 (prior knowledge, no upgrade).
    pub fn connect(addr: std::net::SocketAddr) -> Result<EchoClient, tonic::transport::Error> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("grpc-echo-client")
            .enable_all()
            .build()
            .expect("a one-thread tokio runtime builds");
        let endpoint =
            Endpoint::from_shared(format!("http://{addr}"))?.connect_timeout(CONNECT_TIMEOUT).tcp_nodelay(true);
        let channel = rt.block_on(endpoint.connect())?;
        let grpc = Grpc::new(channel).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE);
        Ok(EchoClient { rt, grpc })
    }

    /// The general call: sends `msgs` to `method` ("Unary", ..., or a full path), half-closes,
    /// and collects everything that comes back. `metadata` values of `-bin` keys are raw bytes
    /// (tonic base64-encodes them). `timeout` is sent as `grpc-timeout` and enforced here over
    /// the whole call; running out is DEADLINE_EXCEEDED.
    pub fn call(
        &self,
        method: &str,
        msgs: Vec<Bytes>,
        metadata: &[(&str, &str)],
        timeout: Option<Duration>,
    ) -> Result<Reply, Status> {
        let request = request(tokio_stream::iter(msgs), metadata, timeout)?;
        let grpc = self.grpc.clone();
        let path = path_of(method)?;
        self.rt.block_on(with_deadline(timeout, collect(grpc, path, request)))
    }

    /// A unary-shaped call to `method`: one message each way. Returns the response headers,
    /// the reply and the trailers.
    pub fn unary(
        &self,
        method: &str,
        msg: Bytes,
        metadata: &[(&str, &str)],
        timeout: Option<Duration>,
    ) -> Result<(MetadataMap, Bytes, MetadataMap), Status> {
        let mut reply = self.call(method, vec![msg], metadata, timeout)?;
        if reply.messages.len() != 1 {
            return Err(Status::internal(format!("expected one reply message, got {}", reply.messages.len())));
        }
        let msg = reply.messages.pop().unwrap_or_default();
        Ok((reply.headers, msg, reply.trailers))
    }

    /// `ServerStream`: all reply messages.
    pub fn server_stream(
        &self,
        msg: Bytes,
        metadata: &[(&str, &str)],
        timeout: Option<Duration>,
    ) -> Result<Vec<Bytes>, Status> {
        Ok(self.call("ServerStream", vec![msg], metadata, timeout)?.messages)
    }

    /// `ClientStream`: the one reply.
    pub fn client_stream(
        &self,
        msgs: Vec<Bytes>,
        metadata: &[(&str, &str)],
        timeout: Option<Duration>,
    ) -> Result<Bytes, Status> {
        let mut reply = self.call("ClientStream", msgs, metadata, timeout)?;
        match reply.messages.len() {
            1 => Ok(reply.messages.pop().unwrap_or_default()),
            n => Err(Status::internal(format!("expected one reply message, got {n}"))),
        }
    }

    /// `Bidi`: all reply messages (the requests are all sent first, then the half-close).
    pub fn bidi(
        &self,
        msgs: Vec<Bytes>,
        metadata: &[(&str, &str)],
        timeout: Option<Duration>,
    ) -> Result<Vec<Bytes>, Status> {
        Ok(self.call("Bidi", msgs, metadata, timeout)?.messages)
    }

    /// Starts a call to `method` with a long `x-delay-ms` and cancels it after `after`: the
    /// call future is dropped and, for request streams (which are left open), tonic's
    /// cancellation handle resets the stream. Returns once it is dropped.
    pub fn cancel_after(&self, method: &str, after: Duration) {
        let Ok(path) = path_of(method) else { return };
        let msgs = tokio_stream::iter(vec![Bytes::from_static(b"cancel me")]);
        // ClientStream and Bidi keep their request stream open, so the server is still
        // reading when the client goes away.
        let open = !matches!(method, "Unary" | "ServerStream");
        let body: std::pin::Pin<Box<dyn Stream<Item = Bytes> + Send>> =
            if open { Box::pin(msgs.chain(tokio_stream::pending())) } else { Box::pin(msgs) };
        let Ok(mut request) = request(body, &[("x-delay-ms", CANCEL_DELAY_MS)], None) else { return };
        let handle = request.cancellation_handle();
        let grpc = self.grpc.clone();
        self.rt.block_on(async move {
            let _ = tokio::time::timeout(after, collect(grpc, path, request)).await;
            handle.cancel();
        });
    }

    /// Runs `n` unary calls at once on this one connection, each with its own `payload`-byte
    /// message, and returns how many came back with their own bytes.
    pub fn concurrent_unary(&self, n: usize, payload: usize) -> usize {
        let Ok(path) = path_of("Unary") else { return 0 };
        self.rt.block_on(async {
            let mut calls = tokio::task::JoinSet::new();
            for i in 0..n {
                let grpc = self.grpc.clone();
                let path = path.clone();
                calls.spawn(async move {
                    let msg = numbered(i, payload);
                    let Ok(request) = request(tokio_stream::once(msg.clone()), &[], Some(DEFAULT_DEADLINE)) else {
                        return false;
                    };
                    match with_deadline(Some(DEFAULT_DEADLINE), collect(grpc, path, request)).await {
                        Ok(reply) => reply.messages.len() == 1 && reply.messages[0] == msg,
                        Err(_) => false,
                    }
                });
            }
            let mut ok = 0;
            // Bounded: every call carries DEFAULT_DEADLINE, and there are `n` of them.
            while let Some(done) = calls.join_next().await {
                ok += usize::from(matches!(done, Ok(true)));
            }
            ok
        })
    }
}

/// `payload` bytes (at least enough for the number) that start with "<i>:" and are unique to `i`.
fn numbered(i: usize, payload: usize) -> Bytes {
    let mut msg = format!("{i}:").into_bytes();
    let fill = payload.saturating_sub(msg.len());
    msg.extend((0..fill).map(|k| b'a' + ((i + k) % 26) as u8));
    Bytes::from(msg)
}

fn path_of(method: &str) -> Result<PathAndQuery, Status> {
    PathAndQuery::from_str(&path(method)).map_err(|e| Status::invalid_argument(format!("method {method:?}: {e}")))
}

/// A request carrying `metadata` and, when given, the `grpc-timeout` header.
fn request<S>(body: S, metadata: &[(&str, &str)], timeout: Option<Duration>) -> Result<Request<S>, Status> {
    let mut request = Request::new(body);
    let md = request.metadata_mut();
    for (key, value) in metadata {
        let bad = |e: &dyn std::fmt::Display| Status::invalid_argument(format!("metadata {key:?}: {e}"));
        if key.ends_with("-bin") {
            let k = BinaryMetadataKey::from_bytes(key.as_bytes()).map_err(|e| bad(&e))?;
            md.append_bin(k, BinaryMetadataValue::from_bytes(value.as_bytes()));
        } else {
            let k = AsciiMetadataKey::from_bytes(key.as_bytes()).map_err(|e| bad(&e))?;
            let v = AsciiMetadataValue::try_from(*value).map_err(|e| bad(&e))?;
            md.append(k, v);
        }
    }
    if let Some(t) = timeout {
        request.set_timeout(t);
    }
    Ok(request)
}

/// Makes the call and reads the whole response.
async fn collect<S>(mut grpc: Grpc<Channel>, path: PathAndQuery, request: Request<S>) -> Result<Reply, Status>
where
    S: Stream<Item = Bytes> + Send + 'static,
{
    grpc.ready().await.map_err(|e| Status::unavailable(format!("channel not ready: {e}")))?;
    let response = grpc.streaming(request, path, RawCodec).await?;
    let headers = response.metadata().clone();
    let mut stream = response.into_inner();
    let mut messages = Vec::new();
    while let Some(msg) = stream.message().await? {
        if messages.len() >= MAX_STREAM_MESSAGES {
            return Err(Status::resource_exhausted("reply stream too long"));
        }
        messages.push(msg);
    }
    let trailers = stream.trailers().await?.unwrap_or_default();
    Ok(Reply { headers, messages, trailers })
}

/// Runs `call` under the client-side deadline `timeout` (or [`DEFAULT_DEADLINE`]). tonic's
/// channel enforces `grpc-timeout` only until the response headers, and reports it as
/// CANCELLED "Timeout expired"; gRPC calls that DEADLINE_EXCEEDED, so this does too.
async fn with_deadline<F>(timeout: Option<Duration>, call: F) -> Result<Reply, Status>
where
    F: std::future::Future<Output = Result<Reply, Status>>,
{
    let start = Instant::now();
    let limit = timeout.unwrap_or(DEFAULT_DEADLINE);
    match tokio::time::timeout(limit, call).await {
        Err(_) => Err(Status::deadline_exceeded("deadline exceeded (client)")),
        Ok(Err(status)) if timeout.is_some() && status.code() == Code::Cancelled && start.elapsed() >= limit => {
            Err(Status::deadline_exceeded(format!("deadline exceeded ({})", status.message())))
        }
        Ok(result) => result,
    }
}
