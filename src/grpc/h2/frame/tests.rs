use bytes::BytesMut;

use super::*;

/// Raw flag bits, for building frames by hand (the codec itself reads them through the
/// per-type newtypes).
mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

fn head(kind: u8, flags: u8, stream: u32, len: usize) -> Head {
    Head::new(kind, Flags::from_bits(flags), StreamId(stream), len)
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> (Head, Vec<u8>) {
    (head(kind, flags, stream, payload.len()), payload.to_vec())
}

#[test]
fn head_round_trips_and_ignores_the_reserved_bit() {
    let h = head(kind::HEADERS, flag::END_HEADERS | flag::END_STREAM, 0x7fff_fff1, 0x12_3456);
    let b = h.to_bytes();
    assert_eq!(b, [0x12, 0x34, 0x56, 0x01, 0x05, 0x7f, 0xff, 0xff, 0xf1]);
    assert_eq!(Head::parse(&b), Some(h));
    let mut r = b;
    r[5] |= 0x80;
    assert_eq!(Head::parse(&r).unwrap().stream, StreamId(0x7fff_fff1), "reserved bit ignored");
    assert_eq!(Head::parse(&b[..8]), None);
}

#[test]
fn cut_waits_for_whole_frames_and_checks_size_first() {
    let mut buf = BytesMut::new();
    data::encode(StreamId(1), b"hello", true, &mut buf);
    ping::encode(ping::Ping { ack: false, data: *b"12345678" }, &mut buf);
    let mut partial = BytesMut::from(&buf[..12]);
    assert_eq!(cut(&mut partial, 16384), Ok(None));
    let (h, f) = cut(&mut buf, 16384).unwrap().unwrap();
    assert_eq!((h.kind, h.stream, &f[HEAD_LEN..]), (kind::DATA, StreamId(1), &b"hello"[..]));
    let (h, _) = cut(&mut buf, 16384).unwrap().unwrap();
    assert_eq!(h.kind, kind::PING);
    assert!(buf.is_empty());

    // Only the header is needed to refuse a frame over the limit.
    let mut big = BytesMut::from(&head(kind::DATA, 0, 3, 20000).to_bytes()[..]);
    assert!(matches!(cut(&mut big, 16384), Err(FrameError::Stream(StreamId(3), Reason::FRAME_SIZE_ERROR, _))));
    let mut big = BytesMut::from(&head(kind::HEADERS, 0, 3, 20000).to_bytes()[..]);
    assert!(matches!(cut(&mut big, 16384), Err(FrameError::Connection(Reason::FRAME_SIZE_ERROR, _))));
}

#[test]
fn data_strips_padding_and_counts_it_for_flow_control() {
    let (h, p) = frame(kind::DATA, flag::PADDED | flag::END_STREAM, 5, &[3, b'a', b'b', 0, 0, 0]);
    let d = data::parse(&h, &p).unwrap();
    assert_eq!(&p[d.data.clone()], b"ab");
    assert_eq!(d.flow_len, 6);
    assert!(d.end_stream);
    // Pad length must be less than the payload.
    let (h, p) = frame(kind::DATA, flag::PADDED, 5, &[5, 1, 2, 3, 4]);
    assert!(matches!(data::parse(&h, &p), Err(FrameError::Connection(Reason::PROTOCOL_ERROR, _))));
    let (h, p) = frame(kind::DATA, 0, 0, b"x");
    assert!(matches!(data::parse(&h, &p), Err(FrameError::Connection(Reason::PROTOCOL_ERROR, _))));
}

#[test]
fn headers_parse_priority_and_padding() {
    let mut payload = vec![2u8]; // pad length
    payload.extend_from_slice(&[0x80, 0, 0, 3, 15]); // exclusive dependency on 3, weight 16
    payload.extend_from_slice(b"\x82\x86");
    payload.extend_from_slice(&[0, 0]);
    let (h, p) = frame(kind::HEADERS, flag::PADDED | flag::PRIORITY | flag::END_HEADERS, 5, &payload);
    let hd = headers::parse(&h, &p).unwrap();
    assert_eq!(&p[hd.fragment.clone()], b"\x82\x86");
    assert_eq!(hd.depends_on, Some(StreamId(3)));
    assert!(hd.end_headers && !hd.end_stream);
    // Depending on itself is a stream error, raised by the side once the block is decoded
    // (HPACK must see every block): the frame layer reports the dependency as it is.
    let (h, p) = frame(kind::HEADERS, flag::PRIORITY, 5, &[0, 0, 0, 5, 1]);
    assert_eq!(headers::parse(&h, &p).unwrap().depends_on, Some(StreamId(5)));
}

#[test]
fn header_blocks_split_into_continuations_at_the_frame_size() {
    let block: Vec<u8> = (0..40u8).collect();
    let mut out = BytesMut::new();
    headers::encode(StreamId(7), &block, true, 16, &mut out);
    let mut frames = vec![];
    while let Some((h, f)) = cut(&mut out, 16384).unwrap() {
        frames.push((h, f[HEAD_LEN..].to_vec()));
    }
    let kinds: Vec<(u8, u8, usize)> = frames.iter().map(|(h, p)| (h.kind, h.flags.bits(), p.len())).collect();
    assert_eq!(
        kinds,
        [
            (kind::HEADERS, flag::END_STREAM, 16),
            (kind::CONTINUATION, 0, 16),
            (kind::CONTINUATION, flag::END_HEADERS, 8)
        ]
    );
    let joined: Vec<u8> = frames.iter().flat_map(|(_, p)| p.clone()).collect();
    assert_eq!(joined, block);
    // An empty block (empty trailers are legal) is one HEADERS with END_HEADERS.
    let mut out = BytesMut::new();
    headers::encode(StreamId(9), b"", true, 16, &mut out);
    assert_eq!(&out[..], &head(kind::HEADERS, flag::END_STREAM | flag::END_HEADERS, 9, 0).to_bytes());
}

#[test]
fn a_head_written_in_place_matches_the_encoded_frame() {
    let block: Vec<u8> = (0..40u8).collect();
    for end_stream in [false, true] {
        let mut expected = BytesMut::new();
        headers::encode(StreamId(5), &block, end_stream, 16384, &mut expected);
        let mut frame = vec![0xee; HEAD_LEN];
        frame.extend_from_slice(&block);
        headers::head_in_place(StreamId(5), end_stream, &mut frame);
        assert_eq!(frame, &expected[..], "end_stream {end_stream}");
    }
}

#[test]
fn fixed_length_frames_are_checked() {
    let (h, p) = frame(kind::RST_STREAM, 0, 1, &[0, 0, 0, 8]);
    assert_eq!(rst_stream::parse(&h, &p), Ok(Reason::CANCEL));
    let (h, p) = frame(kind::RST_STREAM, 0, 1, &[0, 0, 8]);
    assert!(matches!(rst_stream::parse(&h, &p), Err(FrameError::Connection(Reason::FRAME_SIZE_ERROR, _))));
    let (h, p) = frame(kind::RST_STREAM, 0, 0, &[0, 0, 0, 8]);
    assert!(matches!(rst_stream::parse(&h, &p), Err(FrameError::Connection(Reason::PROTOCOL_ERROR, _))));

    let (h, p) = frame(kind::PING, 0, 0, b"1234567");
    assert!(matches!(ping::parse(&h, &p), Err(FrameError::Connection(Reason::FRAME_SIZE_ERROR, _))));
    let (h, p) = frame(kind::PING, 0, 1, b"12345678");
    assert!(matches!(ping::parse(&h, &p), Err(FrameError::Connection(Reason::PROTOCOL_ERROR, _))));

    let (h, p) = frame(kind::PRIORITY, 0, 3, &[0, 0, 0, 1]);
    assert!(matches!(priority::parse(&h, &p), Err(FrameError::Stream(StreamId(3), Reason::FRAME_SIZE_ERROR, _))));

    let (h, p) = frame(kind::WINDOW_UPDATE, 0, 3, &[0, 0, 0, 0]);
    assert!(matches!(window_update::parse(&h, &p), Err(FrameError::Stream(StreamId(3), Reason::PROTOCOL_ERROR, _))));
    let (h, p) = frame(kind::WINDOW_UPDATE, 0, 0, &[0, 0, 0, 0]);
    assert!(matches!(window_update::parse(&h, &p), Err(FrameError::Connection(Reason::PROTOCOL_ERROR, _))));
    let (h, p) = frame(kind::WINDOW_UPDATE, 0, 0, &[0x80, 0, 1, 0]);
    assert_eq!(window_update::parse(&h, &p), Ok(256), "reserved bit ignored");
}

#[test]
fn every_frame_type_round_trips() {
    let mut b = BytesMut::new();
    priority::encode(StreamId(3), priority::Priority { depends_on: StreamId(1), exclusive: true, weight: 7 }, &mut b);
    rst_stream::encode(StreamId(3), Reason::CANCEL, &mut b);
    ping::encode(ping::Ping { ack: true, data: *b"abcdefgh" }, &mut b);
    goaway::encode(StreamId(41), Reason::ENHANCE_YOUR_CALM, b"calm", &mut b);
    window_update::encode(StreamId(0), 1 << 20, &mut b);
    push_promise::encode(StreamId(3), StreamId(4), b"\x82", &mut b);
    continuation::encode(StreamId(3), b"\x86", true, &mut b);
    let s = settings::Settings {
        header_table_size: Some(0),
        enable_push: Some(false),
        max_concurrent_streams: Some(100),
        initial_window_size: Some(1 << 20),
        max_frame_size: Some(1 << 14),
        max_header_list_size: Some(16384),
    };
    settings::encode(&s, &mut b);
    settings::encode_ack(&mut b);

    let mut next = || {
        let (h, f) = cut(&mut b, 1 << 14).unwrap().unwrap();
        (h, f[HEAD_LEN..].to_vec())
    };
    let (h, p) = next();
    assert_eq!(
        priority::parse(&h, &p).unwrap(),
        priority::Priority { depends_on: StreamId(1), exclusive: true, weight: 7 }
    );
    let (h, p) = next();
    assert_eq!(rst_stream::parse(&h, &p), Ok(Reason::CANCEL));
    let (h, p) = next();
    assert_eq!(ping::parse(&h, &p), Ok(ping::Ping { ack: true, data: *b"abcdefgh" }));
    let (h, p) = next();
    let g = goaway::parse(&h, &p).unwrap();
    assert_eq!((g.last_stream, g.reason, &p[g.debug]), (StreamId(41), Reason::ENHANCE_YOUR_CALM, &b"calm"[..]));
    let (h, p) = next();
    assert_eq!((h.stream, window_update::parse(&h, &p)), (StreamId(0), Ok(1 << 20)));
    let (h, p) = next();
    let pp = push_promise::parse(&h, &p).unwrap();
    assert_eq!((pp.promised, &p[pp.fragment], pp.end_headers), (StreamId(4), &b"\x82"[..], true));
    let (h, p) = next();
    let c = continuation::parse(&h, &p).unwrap();
    assert_eq!((&p[c.fragment], c.end_headers), (&b"\x86"[..], true));
    let (h, p) = next();
    assert_eq!(settings::parse(&h, &p, 32), Ok(settings::Frame::Settings(s)));
    let (h, p) = next();
    assert_eq!(settings::parse(&h, &p, 32), Ok(settings::Frame::Ack));
}

#[test]
fn settings_values_are_validated() {
    let one = |id: u16, v: u32| {
        let mut p = id.to_be_bytes().to_vec();
        p.extend_from_slice(&v.to_be_bytes());
        let (h, p) = frame(kind::SETTINGS, 0, 0, &p);
        settings::parse(&h, &p, 32)
    };
    assert!(matches!(one(settings::ENABLE_PUSH, 2), Err(FrameError::Connection(Reason::PROTOCOL_ERROR, _))));
    assert!(matches!(
        one(settings::INITIAL_WINDOW_SIZE, 1 << 31),
        Err(FrameError::Connection(Reason::FLOW_CONTROL_ERROR, _))
    ));
    assert!(matches!(one(settings::MAX_FRAME_SIZE, 16383), Err(FrameError::Connection(Reason::PROTOCOL_ERROR, _))));
    assert!(matches!(one(settings::MAX_FRAME_SIZE, 1 << 24), Err(FrameError::Connection(Reason::PROTOCOL_ERROR, _))));
    assert_eq!(one(0x99, 7), Ok(settings::Frame::Settings(Default::default())), "unknown ids are ignored");
    let (h, p) = frame(kind::SETTINGS, flag::ACK, 0, &[0; 6]);
    assert!(matches!(settings::parse(&h, &p, 32), Err(FrameError::Connection(Reason::FRAME_SIZE_ERROR, _))));
    let (h, p) = frame(kind::SETTINGS, 0, 0, &[0; 7]);
    assert!(matches!(settings::parse(&h, &p, 32), Err(FrameError::Connection(Reason::FRAME_SIZE_ERROR, _))));
    let (h, p) = frame(kind::SETTINGS, 0, 0, &[0; 6 * 33]);
    assert!(matches!(settings::parse(&h, &p, 32), Err(FrameError::Connection(Reason::ENHANCE_YOUR_CALM, _))));
}

#[test]
fn continuation_rules_and_flood_limits() {
    use crate::grpc::h2::block::{Assembler, BlockLimits};
    let limits = BlockLimits { max_block: 64, max_continuations: 2 };
    let mut a = Assembler::default();
    assert!(a.start(StreamId(1), true, false, BytesMut::from(&b"ab"[..]), limits).unwrap().is_none());
    assert_eq!(a.in_progress(), Some(StreamId(1)));
    assert!(matches!(
        a.continuation(StreamId(3), true, b"x", limits),
        Err(FrameError::Connection(Reason::PROTOCOL_ERROR, _))
    ));
    assert!(a.continuation(StreamId(1), false, b"cd", limits).unwrap().is_none());
    let b = a.continuation(StreamId(1), true, b"ef", limits).unwrap().unwrap();
    assert_eq!((b.stream, b.end_stream, &b.block[..]), (StreamId(1), true, &b"abcdef"[..]));
    assert_eq!(a.in_progress(), None);

    // Flood: more CONTINUATION frames than allowed.
    a.start(StreamId(3), false, false, BytesMut::new(), limits).unwrap();
    a.continuation(StreamId(3), false, b"", limits).unwrap();
    a.continuation(StreamId(3), false, b"", limits).unwrap();
    assert!(matches!(
        a.continuation(StreamId(3), false, b"", limits),
        Err(FrameError::Connection(Reason::ENHANCE_YOUR_CALM, _))
    ));
    // Raw block over the limit.
    let mut a = Assembler::default();
    a.start(StreamId(5), false, false, BytesMut::from(&[0u8; 60][..]), limits).unwrap();
    assert!(matches!(
        a.continuation(StreamId(5), true, &[0; 8], limits),
        Err(FrameError::Connection(Reason::ENHANCE_YOUR_CALM, _))
    ));
    assert!(matches!(
        Assembler::default().continuation(StreamId(5), true, b"", limits),
        Err(FrameError::Connection(Reason::PROTOCOL_ERROR, _))
    ));
}

#[test]
fn a_head_reads_like_a_trace() {
    assert_eq!(format!("{:?}", head(kind::DATA, flag::END_STREAM, 3, 5)), "DATA stream=3 len=5 END_STREAM");
    let h = head(kind::HEADERS, flag::END_HEADERS | flag::END_STREAM, 1, 12);
    assert_eq!(format!("{h:?}"), "HEADERS stream=1 len=12 END_STREAM | END_HEADERS");
    assert_eq!(format!("{:?}", head(kind::PING, flag::ACK, 0, 8)), "PING stream=0 len=8 ACK");
    assert_eq!(format!("{:?}", head(kind::RST_STREAM, 0, 7, 4)), "RST_STREAM stream=7 len=4");
    assert_eq!(format!("{:?}", head(0x42, 0x3, 0, 0)), "UNKNOWN stream=0 len=0 flags=0x3");
}

#[test]
fn headers_in_finds_each_opened_stream_after_the_preface_and_stops_at_a_cut_frame() {
    let mut b = BytesMut::new();
    b.extend_from_slice(PREFACE);
    settings::encode(&settings::Settings::default(), &mut b);
    headers::encode(StreamId(1), &[0x82; 40], false, 16, &mut b); // split by CONTINUATION
    data::encode(StreamId(1), &[7; 100], true, &mut b);
    window_update::encode(StreamId(3), 5, &mut b);
    headers::encode(StreamId(5), &[0x82; 3], true, 16_384, &mut b);
    assert_eq!(headers_in(&b), vec![StreamId(1), StreamId(5)]);
    assert_eq!(headers_in(&b[PREFACE.len()..]), vec![StreamId(1), StreamId(5)]);
    // A frame cut short ends the walk; nothing after it is guessed at.
    let mut cut = b[..b.len() - 1].to_vec();
    assert_eq!(headers_in(&cut), vec![StreamId(1)]);
    cut.clear();
    assert!(headers_in(&cut).is_empty());
}
