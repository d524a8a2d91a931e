//! gRPC peers for the tests: the PyPI `grpcio` server and client of `tests/py/grpc_peer.py`,
//! and a raw HTTP/2 call (the `h2` crate) for checks that need the frames themselves, such as
//! "this reply was trailers-only". The tonic peers live in `ringway_bench::grpc_echo`.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::HeaderMap;

use super::ChildGuard;

const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/grpc_peer.py");

/// How long a raw HTTP/2 call may take in all.
const H2_CALL_LIMIT: Duration = Duration::from_secs(10);

/// Starts `tests/py/grpc_peer.py server` and returns it with its port. It exits when its
/// stdin closes (the guard drops the child) or when killed by the guard.
pub fn python_grpc_server() -> (ChildGuard, u16) {
    use std::io::BufRead;
    let mut child = Command::new("python3")
        .args([PEER, "server"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs (see README: pip install -r tests/py/requirements.txt)");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port = line
        .strip_prefix("PORT ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("python grpc server printed {line:?} (is grpcio installed?)"));
    (ChildGuard(child), port)
}

/// Runs `grpc_peer.py client <addr> <case>`: `Ok(details)` when it printed "OK details",
/// otherwise `Err` with what it printed.
pub fn python_grpc_client(addr: SocketAddr, case: &str) -> Result<String, String> {
    let out = Command::new("timeout")
        .args(["60", "python3", PEER, "client", &addr.to_string(), case])
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("").to_string();
    match last.strip_prefix("OK ") {
        Some(details) if out.status.success() => Ok(details.to_string()),
        _ => Err(format!("{last} (exit {:?}); stderr: {}", out.status.code(), String::from_utf8_lossy(&out.stderr))),
    }
}

/// A gRPC response as the frames carried it.
#[derive(Debug)]
pub struct RawResponse {
    pub headers: HeaderMap,
    /// The response HEADERS frame ended the stream: a trailers-only reply.
    pub trailers_only: bool,
    /// The length-prefixed messages of the DATA frames.
    pub messages: Vec<Bytes>,
    pub trailers: Option<HeaderMap>,
}

/// The 5-byte gRPC prefix (uncompressed) and `msg`.
pub fn grpc_frame(msg: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + msg.len());
    b.put_u8(0);
    b.put_u32(msg.len() as u32);
    b.put_slice(msg);
    b.freeze()
}

/// One call over a fresh cleartext HTTP/2 connection with the `h2` crate: request `headers`
/// besides the gRPC ones, `msgs` as DATA, then END_STREAM.
pub fn h2_call(addr: SocketAddr, path: &str, headers: &[(&str, &str)], msgs: &[&[u8]]) -> Result<RawResponse, String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    let call = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        let (client, conn) = h2::client::handshake(tcp).await.map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        let mut client = client.ready().await.map_err(|e| format!("ready: {e}"))?;
        let mut req = http::Request::post(format!("http://{addr}{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(()).map_err(|e| e.to_string())?;
        let (response, mut send) = client.send_request(req, false).map_err(|e| format!("send: {e}"))?;
        let mut body = BytesMut::new();
        for m in msgs {
            body.extend_from_slice(&grpc_frame(m));
        }
        send.send_data(body.freeze(), true).map_err(|e| format!("send data: {e}"))?;
        let (parts, mut recv) = response.await.map_err(|e| format!("response: {e}"))?.into_parts();
        let trailers_only = recv.is_end_stream();
        let mut data = BytesMut::new();
        while let Some(chunk) = recv.data().await {
            let chunk = chunk.map_err(|e| format!("data: {e}"))?;
            let _ = recv.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        let trailers = recv.trailers().await.map_err(|e| format!("trailers: {e}"))?;
        let mut messages = Vec::new();
        while data.len() >= 5 {
            let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
            if data.len() < 5 + len {
                return Err(format!("truncated gRPC message: {} of {len} bytes", data.len() - 5));
            }
            data.advance(5);
            messages.push(data.split_to(len).freeze());
        }
        Ok(RawResponse { headers: parts.headers, trailers_only, messages, trailers })
    };
    rt.block_on(async { tokio::time::timeout(H2_CALL_LIMIT, call).await.map_err(|_| "h2 call timed out".to_string())? })
}

/// A gRPC call as a raw client writes it on `stream`: HEADERS for `path` (POST, http, `te:
/// trailers`) with `metadata`, then `message` in one DATA frame with END_STREAM (`message`
/// is sent as it is: frame it with [`grpc_frame`] first). No preface.
pub fn raw_request(stream: u32, path: &str, metadata: &[(&str, &str)], message: &[u8]) -> BytesMut {
    use ringway::grpc::h2::frame::{self, StreamId};
    use ringway::grpc::h2::hpack::{Encoder, Field};
    let mut fields: Vec<(&[u8], &[u8])> = vec![
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", path.as_bytes()),
        (b":authority", b"x"),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
    ];
    fields.extend(metadata.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
    let mut block = BytesMut::new();
    Encoder::new().encode(fields.iter().map(|(n, v)| Field { name: n, value: v, never_indexed: false }), &mut block);
    let mut out = BytesMut::new();
    frame::headers::encode(StreamId::new(stream), &block, false, 16_384, &mut out);
    frame::data::encode(StreamId::new(stream), message, true, &mut out);
    out
}
