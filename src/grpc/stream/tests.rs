//! The stream state machine without sockets: two real connection cores (client side and
//! upstream side) stand in for the connections, and each test reads the frames the stream
//! queued on them.

use std::cell::{Cell, RefCell};
use std::future::Future;

use super::*;
use crate::grpc::conn::ControlLimits;
use crate::grpc::h2::frame::{self, kind, DataFlags, Head, HeadersFlags, StreamId, HEAD_LEN};
use crate::grpc::h2::hpack::Decoder;

/// The client connection: a core and a record of the stream ids it was told to forget.
struct Client {
    core: Core,
    forgotten: RefCell<Vec<StreamId>>,
    sweeper_woken: Cell<usize>,
    stats: Stats,
}

impl ClientEnd for Client {
    fn core(&self) -> &Core {
        &self.core
    }
    fn forget(&self, id: StreamId, _client_done: bool) {
        self.forgotten.borrow_mut().push(id);
    }
    fn wake_sweeper(&self) {
        self.sweeper_woken.set(self.sweeper_woken.get() + 1);
    }
    fn stats(&self) -> &Stats {
        &self.stats
    }
}

/// The upstream connection: allocates odd stream ids from 1, as a real one does.
struct Upstream {
    core: Core,
    next_id: Cell<StreamId>,
    forgotten: RefCell<Vec<StreamId>>,
}

impl UpstreamEnd for Upstream {
    fn core(&self) -> &Core {
        &self.core
    }
    fn register(&self, _stream: Rc<Stream>) -> StreamId {
        let id = self.next_id.get();
        self.next_id.set(id.next());
        id
    }
    fn forget(&self, id: StreamId) {
        self.forgotten.borrow_mut().push(id);
    }
}

/// Windows of 65,535 bytes both ways (the protocol default), a 1 MiB write queue.
fn pair() -> (Rc<Client>, Rc<Upstream>) {
    let core = |side| Core::new(side, 1 << 20, 65_535, 65_535, 4096, ControlLimits::upstream(), Rc::default());
    let client = Rc::new(Client {
        core: core(Side::Client),
        forgotten: RefCell::default(),
        sweeper_woken: Cell::new(0),
        stats: Stats::default(),
    });
    let up = Rc::new(Upstream {
        core: core(Side::Upstream),
        next_id: Cell::new(StreamId::new(1)),
        forgotten: RefCell::default(),
    });
    (client, up)
}

/// A frame as a test reads it.
#[derive(Debug)]
struct Seen {
    kind: u8,
    stream: u32,
    /// END_STREAM, on a DATA or HEADERS frame.
    end_stream: bool,
    payload: Vec<u8>,
}

/// Everything queued on `core` since the last call, frame by frame.
fn frames(core: &Core) -> Vec<Seen> {
    let mut items = Vec::new();
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    if core.out.queued_bytes() == 0 {
        return Vec::new();
    }
    let taken = std::pin::pin!(core.out.take_all(&mut items)).as_mut().poll(&mut cx);
    assert!(matches!(taken, std::task::Poll::Ready(true)));
    let mut wire = BytesMut::new();
    for i in items {
        wire.extend_from_slice(&i);
    }
    let mut out = Vec::new();
    while let Some((h, f)) = frame::cut(&mut wire, 1 << 24).unwrap() {
        let end_stream = match h.kind {
            kind::DATA => DataFlags::from(h.flags).is_end_stream(),
            kind::HEADERS => HeadersFlags::from(h.flags).is_end_stream(),
            _ => false,
        };
        out.push(Seen { kind: h.kind, stream: h.stream.get(), end_stream, payload: f[HEAD_LEN..].to_vec() });
    }
    assert!(wire.is_empty());
    out
}

fn list(fields: &[(&str, &str)]) -> HeaderList {
    let mut l = HeaderList::new();
    for (n, v) in fields {
        l.push(n.as_bytes(), v.as_bytes(), false);
    }
    l
}

fn request() -> HeaderList {
    list(&[(":method", "POST"), (":scheme", "http"), (":path", "/pkg.Echo/Unary"), ("te", "trailers")])
}

/// A DATA frame as the reader hands it over: the whole frame, head included.
fn data_frame(stream: u32, payload: &[u8], end: bool) -> (BytesMut, std::ops::Range<usize>, usize) {
    let mut b = BytesMut::new();
    let flags = DataFlags::empty().with(DataFlags::END_STREAM, end);
    Head::new(kind::DATA, flags, StreamId::new(stream), payload.len()).encode(&mut b);
    b.extend_from_slice(payload);
    (b, 0..payload.len(), payload.len())
}

fn decode(dec: &mut Decoder, block: &[u8]) -> Vec<(String, String)> {
    let mut l = HeaderList::new();
    dec.decode(block, 1 << 20, &mut l).unwrap();
    l.iter()
        .map(|f| (String::from_utf8_lossy(f.name).into_owned(), String::from_utf8_lossy(f.value).into_owned()))
        .collect()
}

/// A client stream 3 opened on the upstream (as its stream 1), request headers sent.
fn opened(client: &Rc<Client>, up: &Rc<Upstream>, end_stream: bool) -> Rc<Stream> {
    let s = Rc::new(Stream::new(client.clone(), StreamId::new(3), request(), end_stream, None, Rc::default(), 0));
    s.open_upstream(up.clone());
    s
}

#[test]
fn a_unary_call_goes_through_with_ids_rewritten_and_ends_on_both_connections() {
    let (client, up) = pair();
    let s = opened(&client, &up, false);
    let sent = frames(&up.core);
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].kind, sent[0].stream, sent[0].end_stream), (kind::HEADERS, 1, false));
    let mut up_dec = Decoder::new(4096);
    assert_eq!(decode(&mut up_dec, &sent[0].payload)[2], (":path".into(), "/pkg.Echo/Unary".into()));

    // The request message, with END_STREAM, goes to the upstream on its own stream id.
    let (f, d, n) = data_frame(3, b"hello", true);
    s.on_request_data(f, d, n, true).unwrap();
    let sent = frames(&up.core);
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].kind, sent[0].stream, sent[0].end_stream), (kind::DATA, 1, true));
    assert_eq!(sent[0].payload, b"hello");

    // Response headers, a message and trailers come back to the client on stream 3.
    s.on_response_headers(list(&[(":status", "200"), ("content-type", "application/grpc")]), false).unwrap();
    let (f, d, n) = data_frame(1, b"world", false);
    s.on_response_data(f, d, n, false).unwrap();
    assert!(client.forgotten.borrow().is_empty(), "the response is not over yet");
    s.on_response_headers(list(&[("grpc-status", "0")]), true).unwrap();
    let got = frames(&client.core);
    let shape: Vec<_> = got.iter().map(|f| (f.kind, f.stream, f.end_stream)).collect();
    assert_eq!(shape, [(kind::HEADERS, 3, false), (kind::DATA, 3, false), (kind::HEADERS, 3, true)]);
    assert_eq!(got[1].payload, b"world");
    let mut dec = Decoder::new(4096);
    assert_eq!(decode(&mut dec, &got[0].payload)[0], (":status".into(), "200".into()));
    assert_eq!(decode(&mut dec, &got[2].payload), [("grpc-status".to_string(), "0".to_string())]);

    // Both directions ended: the stream is forgotten on both connections, once.
    assert!(s.is_closed());
    assert_eq!(*client.forgotten.borrow(), [StreamId::new(3)]);
    assert_eq!(*up.forgotten.borrow(), [StreamId::new(1)]);
    s.reset(Some(Reason::CANCEL), Some(Reason::CANCEL));
    assert!(frames(&client.core).is_empty() && frames(&up.core).is_empty(), "a closed stream sends nothing");
}

#[test]
fn frames_in_the_wrong_state_are_refused_with_the_reason_the_rfc_gives() {
    let (client, up) = pair();
    let s = opened(&client, &up, true);
    // DATA after the client's END_STREAM: STREAM_CLOSED (RFC 9113 §5.1, half-closed remote).
    let (f, d, n) = data_frame(3, b"late", false);
    assert_eq!(s.on_request_data(f, d, n, false), Err(refused(Reason::STREAM_CLOSED, "DATA after END_STREAM")));
    assert_eq!(s.on_request_trailers(list(&[("x", "y")])).unwrap_err().reason, Reason::STREAM_CLOSED);

    // DATA from the upstream before its response headers: PROTOCOL_ERROR.
    let (f, d, n) = data_frame(1, b"early", false);
    assert_eq!(s.on_response_data(f, d, n, false).unwrap_err().reason, Reason::PROTOCOL_ERROR);
    // Response headers without :status, then trailers without END_STREAM: PROTOCOL_ERROR.
    let no_status = s.on_response_headers(list(&[("content-type", "application/grpc")]), false);
    assert_eq!(no_status.unwrap_err().why, "response without :status");
    s.on_response_headers(list(&[(":status", "200")]), false).unwrap();
    let open_trailers = s.on_response_headers(list(&[("grpc-status", "0")]), false);
    assert_eq!(open_trailers, Err(refused(Reason::PROTOCOL_ERROR, "trailers without END_STREAM")));
    let pseudo_in_trailers = s.on_response_headers(list(&[(":status", "200")]), true);
    assert_eq!(pseudo_in_trailers.unwrap_err().why, "pseudo-header in trailers");
    s.on_response_headers(list(&[("grpc-status", "0")]), true).unwrap();
    assert!(s.is_closed());
}

#[test]
fn a_refused_data_frame_gives_its_bytes_back_to_the_connection_window() {
    let (client, up) = pair();
    let s = opened(&client, &up, true);
    frames(&client.core);
    // 40,000 bytes is more than half the 65,535 connection window: given back at once.
    let body = vec![7u8; 40_000];
    let (f, d, n) = data_frame(3, &body, false);
    client.core.on_data_received(n, false).unwrap();
    assert!(s.on_request_data(f, d, n, false).is_err());
    let back = frames(&client.core);
    assert_eq!(back.len(), 1);
    assert_eq!((back[0].kind, back[0].stream), (kind::WINDOW_UPDATE, 0));
    assert_eq!(back[0].payload, 40_000u32.to_be_bytes());
}

#[test]
fn a_window_above_2_to_the_31_is_a_flow_control_error() {
    let (client, up) = pair();
    let s = opened(&client, &up, false);
    // 65,535 + (2^31 - 65,535) is the largest window allowed; one more byte is not.
    s.on_client_window(frame::MAX_WINDOW - 65_535).unwrap();
    let err = s.on_client_window(1).unwrap_err();
    assert_eq!(err, refused(Reason::FLOW_CONTROL_ERROR, "window above 2^31-1"));
    assert_eq!(s.on_upstream_window(frame::MAX_WINDOW).unwrap_err().reason, Reason::FLOW_CONTROL_ERROR);

    let s = opened(&client, &up, false);
    s.shift_send_window(Side::Upstream, -100).unwrap();
    s.shift_send_window(Side::Client, (frame::MAX_WINDOW - 65_535) as i64).unwrap();
    assert_eq!(s.shift_send_window(Side::Client, 1).unwrap_err().why, "stream window above 2^31-1");
}

#[test]
fn data_waits_for_the_receivers_window_and_resumes_when_it_opens() {
    let (client, up) = pair();
    let s = opened(&client, &up, true);
    frames(&up.core);
    s.on_response_headers(list(&[(":status", "200")]), false).unwrap();
    frames(&client.core);
    // The client's window for this stream shrinks to 4 bytes (SETTINGS delta).
    s.shift_send_window(Side::Client, 4 - 65_535).unwrap();
    let (f, d, n) = data_frame(1, b"0123456789", true);
    s.on_response_data(f, d, n, true).unwrap();
    let got = frames(&client.core);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].payload.as_slice(), got[0].end_stream), (&b"0123"[..], false), "only the window's worth");
    assert_eq!(client.sweeper_woken.get(), 1, "the stall clock started");
    assert!(matches!(s.due(Instant::now(), Duration::from_secs(30)), Due::Later(Some(_))));
    assert_eq!(s.due(Instant::now() + Duration::from_secs(31), Duration::from_secs(30)), Due::Stalled);

    // The window opens: the rest goes, END_STREAM on its last piece, and the stall clock stops.
    s.on_client_window(100).unwrap();
    let got = frames(&client.core);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].payload.as_slice(), got[0].end_stream), (&b"456789"[..], true));
    assert_eq!(s.due(Instant::now() + Duration::from_secs(31), Duration::from_secs(30)), Due::Later(None));
}

#[test]
fn a_deadline_makes_the_stream_due() {
    let (client, _) = pair();
    let at = Instant::now() + Duration::from_millis(50);
    let s = Rc::new(Stream::new(client, StreamId::new(3), request(), true, Some(at), Rc::default(), 0));
    assert_eq!(s.due(Instant::now(), Duration::from_secs(30)), Due::Later(Some(at)));
    assert_eq!(s.due(at, Duration::from_secs(30)), Due::Expired);
}

#[test]
fn a_proxy_failure_before_response_headers_is_trailers_only_and_cancels_the_upstream() {
    let (client, up) = pair();
    let s = opened(&client, &up, false);
    frames(&up.core);
    let err = crate::error::ErrorKind::UpstreamLost {
        endpoint: "10.0.0.9:50051".into(),
        cause: crate::error::LostCause::Closed,
        inflight: 1,
    };
    s.fail(&err.into());
    let got = frames(&client.core);
    let shape: Vec<_> = got.iter().map(|f| (f.kind, f.stream, f.end_stream)).collect();
    // Trailers-Only with END_STREAM, then RST_STREAM(NO_ERROR): the client was still sending.
    assert_eq!(shape, [(kind::HEADERS, 3, true), (kind::RST_STREAM, 3, false)]);
    let fields = decode(&mut Decoder::new(4096), &got[0].payload);
    assert!(fields.contains(&(":status".into(), "200".into())), "{fields:?}");
    assert!(fields.contains(&("grpc-status".into(), "14".into())), "{fields:?}");
    let msg = ("grpc-message".to_string(), "upstream connection closed: 10.0.0.9:50051".to_string());
    assert!(fields.contains(&msg), "{fields:?}");
    assert_eq!(got[1].payload, 0u32.to_be_bytes(), "NO_ERROR");
    let cancelled = frames(&up.core);
    assert_eq!((cancelled[0].kind, cancelled[0].stream), (kind::RST_STREAM, 1));
    assert_eq!(cancelled[0].payload, 8u32.to_be_bytes(), "CANCEL");
    assert_eq!(client.stats.protocols.grpc.errors.get(), 1);
    assert_eq!(
        (&*client.forgotten.borrow(), &*up.forgotten.borrow()),
        (&vec![StreamId::new(3)], &vec![StreamId::new(1)])
    );
}

#[test]
fn an_upstream_that_ends_early_still_delivers_its_trailers_then_stops_the_client() {
    let (client, up) = pair();
    let s = opened(&client, &up, false);
    s.on_response_headers(list(&[(":status", "200")]), false).unwrap();
    s.on_response_headers(list(&[("grpc-status", "0")]), true).unwrap();
    frames(&client.core);
    // RST_STREAM(NO_ERROR) after the trailers: the client, still sending, is told to stop.
    s.on_upstream_reset(Reason::NO_ERROR);
    let got = frames(&client.core);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].kind, got[0].stream), (kind::RST_STREAM, 3));
    assert_eq!(got[0].payload, 0u32.to_be_bytes());
    assert!(s.is_closed());

    // Any other reset reaches the client as it is.
    let (client, up) = pair();
    let s = opened(&client, &up, false);
    frames(&client.core);
    s.on_upstream_reset(Reason::REFUSED_STREAM);
    let got = frames(&client.core);
    assert_eq!((got[0].kind, got[0].payload.as_slice()), (kind::RST_STREAM, &7u32.to_be_bytes()[..]));
    assert!(frames(&up.core).iter().all(|f| f.kind != kind::RST_STREAM), "not echoed back upstream");
}
