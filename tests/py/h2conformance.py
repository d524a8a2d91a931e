#!/usr/bin/env python3
"""HTTP/2 server conformance suite: a Python stand-in for h2spec.

    h2conformance.py --host 127.0.0.1 --port P --path /svc/Method
                     [--timeout 1.0] [--case ID ...] [--json FILE]

It runs the 147 cases of h2spec 2.6.0 (the Go tool, github.com/summerwind/h2spec)
with its strict cases included (h2spec -S): the "generic", "http2" and "hpack" specs.
Each case keeps h2spec's id (spec/section/number, e.g. http2/5.1/8, where the section
is the RFC 7540 numbering h2spec uses), sends the same frames and applies the same
pass rule, so a run can be compared one to one with `h2spec -S -j report.xml`.
The code and the case descriptions are our own; the descriptions cite RFC 9113
(HTTP/2) and RFC 7541 (HPACK).

Why: h2spec is a Go binary that the registries our CI can reach do not carry, while
the PyPI packages `hyperframe` (frame encoding and decoding) and `hpack` (header
compression) are available. This file uses those two and the standard library only.

How a case runs, as in h2spec:
  * a fresh TCP connection per case; the client preface, a SETTINGS frame with
    INITIAL_WINDOW_SIZE 65535, then frames are read until both the server's SETTINGS
    (which is acknowledged) and the ACK of ours have arrived;
  * requests carry :method GET (POST where a case sends a body), :scheme http,
    :path from --path and :authority host:port; padding headers are x-dummyN with
    --max-header-length (4000) "x" characters;
  * every read waits at most --timeout seconds; a timeout ends the case (h2spec marks
    the connection finished), and no case runs longer than CASE_BUDGET timeouts;
  * DATA received is acknowledged with WINDOW_UPDATE frames once h2spec's view of the
    window (65535 per stream and for the connection) is used up;
  * verdicts: "stream error" cases pass on RST_STREAM or GOAWAY with an accepted code
    or on the connection closing; "connection error" cases on GOAWAY with an accepted
    code or on the connection closing; "accepts X" cases when the awaited frame comes
    (a HEADERS response on the stream, a PING or SETTINGS ACK, ...). The flow-control
    cases that need a response body are SKIPped when the response has no DATA.

Output: one "PASS|FAIL|SKIP <id> <description>" line per case (a FAIL is followed by an
indented "expected: ...; got: ..." line) and a summary line. Exit status 0 when no case
failed, 1 when one did, 2 on bad usage. Cleartext (h2c) only: no TLS.
"""

import argparse
import json
import socket
import struct
import sys
import time

import hpack
from hyperframe.exceptions import HyperframeError
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    PushPromiseFrame,
    RstStreamFrame,
    WindowUpdateFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DEFAULT_WINDOW = 65535  # RFC 9113 §6.9.2
DEFAULT_FRAME_SIZE = 16384  # RFC 9113 §4.2
DEFAULT_TABLE_SIZE = 4096  # RFC 7541 §4.2 / RFC 9113 §6.5.2
MAX_WINDOW = 2**31 - 1
CASE_BUDGET = 5  # a case gives up after this many --timeout periods in total
MAX_STREAMS_TRIED = 65536  # http2/5.1.2/1 is skipped above this advertised limit

# Frame types and flags (RFC 9113 §6).
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS = 0x0, 0x1, 0x2, 0x3, 0x4
PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0x5, 0x6, 0x7, 0x8, 0x9
UNKNOWN_TYPE = 0x16  # not a defined frame type
FRAME_NAMES = {
    DATA: "DATA", HEADERS: "HEADERS", PRIORITY: "PRIORITY", RST_STREAM: "RST_STREAM",
    SETTINGS: "SETTINGS", PUSH_PROMISE: "PUSH_PROMISE", PING: "PING", GOAWAY: "GOAWAY",
    WINDOW_UPDATE: "WINDOW_UPDATE", CONTINUATION: "CONTINUATION",
}
END_STREAM = ACK = 0x1
END_HEADERS, PADDED = 0x4, 0x8

# SETTINGS parameters (RFC 9113 §6.5.2).
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS = 0x1, 0x2, 0x3
INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = 0x4, 0x5, 0x6

# Error codes (RFC 9113 §7).
ERROR_NAMES = [
    "NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR",
    "SETTINGS_TIMEOUT", "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL",
    "COMPRESSION_ERROR", "CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY",
    "HTTP_1_1_REQUIRED",
]
NO_ERROR, PROTOCOL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM = 0x5, 0x6, 0x7
CANCEL, COMPRESSION_ERROR = 0x8, 0x9
UNKNOWN_ERROR = 0xFF  # not a defined error code


def error_name(code):
    return ERROR_NAMES[code] if code < len(ERROR_NAMES) else f"0x{code:x}"


# --- outcomes ------------------------------------------------------------------------------

class Failed(Exception):
    """The server did not do what the case requires."""

    def __init__(self, expected, got):
        super().__init__(f"expected: {expected}; got: {got}")
        self.expected = expected
        self.got = got


class Skipped(Exception):
    """The case cannot be run against this server (h2spec skips it too)."""


# --- wire helpers --------------------------------------------------------------------------

def raw_frame(ftype, flags, stream_id, payload):
    """A frame built by hand, for the deliberately malformed ones hyperframe refuses to
    build (stream 0 where a stream is required, wrong lengths, reserved bits)."""
    length = len(payload)
    header = struct.pack(">BHBBI", length >> 16, length & 0xFFFF, ftype, flags,
                         stream_id & 0xFFFFFFFF)
    return header + payload


def hpack_integer(value, prefix_bits, first_byte_flags=0):
    """An HPACK integer (RFC 7541 §5.1) with the given flag bits above the prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first_byte_flags | value])
    out = [first_byte_flags | limit]
    value -= limit
    while value >= 128:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


_HUFFMAN = hpack.Encoder().huffman_coder


def hpack_string(text, huffman):
    """An HPACK string literal (RFC 7541 §5.2), Huffman-coded or raw."""
    data = text.encode()
    if huffman:
        data = _HUFFMAN.encode(data)
    return hpack_integer(len(data), 7, 0x80 if huffman else 0) + data


def hpack_literal_new_name(kind, name, value, huffman):
    """A literal field line with a literal name (RFC 7541 §6.2): kind is 0x40 (with
    incremental indexing), 0x00 (without indexing) or 0x10 (never indexed)."""
    return bytes([kind]) + hpack_string(name, huffman) + hpack_string(value, huffman)


def table_size_update(size):
    """A dynamic table size update (RFC 7541 §6.3)."""
    return hpack_integer(size, 5, 0x20)


# --- configuration -------------------------------------------------------------------------

class Config:
    def __init__(self, host, port, path, timeout, max_header_len, verbose=False):
        self.host = host
        self.port = port
        self.path = path
        self.timeout = timeout
        self.max_header_len = max_header_len
        self.verbose = verbose  # trace frames on stderr
        # h2spec leaves the port out of :authority only for the scheme's default port.
        self.authority = host if port == 80 else f"{host}:{port}"

    def request(self, method="GET"):
        """The request pseudo-header fields every case starts from."""
        return [(":method", method), (":scheme", "http"), (":path", self.path),
                (":authority", self.authority)]

    def dummy_headers(self, count):
        """Large filler fields, used to make header blocks and CONTINUATIONs big."""
        return [(f"x-dummy{i}", "x" * self.max_header_len) for i in range(count)]


# --- events --------------------------------------------------------------------------------

FRAME, CLOSED, TIMEOUT, ERROR = "frame", "closed", "timeout", "error"


class Event:
    """Something read from the connection: a frame, its closing, a timeout or an error."""

    def __init__(self, kind, frame=None, ftype=None, flags=0, stream_id=0, length=0,
                 message=""):
        self.kind = kind
        self.frame = frame  # the hyperframe object, for frames
        self.ftype = ftype
        self.flags = flags
        self.stream_id = stream_id
        self.length = length
        self.message = message

    def is_frame(self, ftype):
        return self.kind == FRAME and self.ftype == ftype

    def has(self, flag):
        return bool(self.flags & flag)

    def error_code(self):
        return getattr(self.frame, "error_code", None)

    def __str__(self):
        if self.kind == CLOSED:
            return "connection closed"
        if self.kind == TIMEOUT:
            return "timeout"
        if self.kind == ERROR:
            return f"unreadable input ({self.message})"
        name = FRAME_NAMES.get(self.ftype, f"unknown type 0x{self.ftype:02x}")
        text = (f"{name} frame (stream {self.stream_id}, length {self.length}, "
                f"flags 0x{self.flags:02x}")
        if self.ftype in (GOAWAY, RST_STREAM):
            text += f", {error_name(self.frame.error_code)}"
        if self.ftype == GOAWAY:
            text += f", last stream {self.frame.last_stream_id}"
        if self.ftype == PING:
            text += f", data {self.frame.opaque_data.hex()}"
        return text + ")"


def trace(direction, what):
    print(f"      [{direction}] {what}", file=sys.stderr, flush=True)


def describe_bytes(data):
    """What a write carries, for --verbose: the preface or the frame headers."""
    parts = []
    rest = data
    if rest.startswith(PREFACE):
        parts.append("client preface")
        rest = rest[len(PREFACE):]
    while rest:
        length = int.from_bytes(rest[:3], "big")
        if len(rest) < 9 + length:
            return f"raw bytes {data!r}"  # not a sequence of frames
        name = FRAME_NAMES.get(rest[3], f"type 0x{rest[3]:02x}")
        stream_id = int.from_bytes(rest[5:9], "big") & 0x7FFFFFFF
        parts.append(f"{name} frame (stream {stream_id}, length {length}, "
                     f"flags 0x{rest[4]:02x})")
        rest = rest[9 + length:]
    return "; ".join(parts)


class _Closed(Exception):
    pass


class _Timeout(Exception):
    pass


# --- connection ----------------------------------------------------------------------------

class Conn:
    """One client connection: frame writers, a deadline-bound frame reader, and h2spec's
    handshake and window bookkeeping.

    Writes are queued and go out in one piece before the next read, so the frames a
    case sends before it waits reach the server together. (h2spec writes frame by
    frame, fast enough that they usually arrive together; queueing makes that
    deterministic against servers that answer early, e.g. when their backend is down.)
    Write errors are ignored (the peer may already have closed); what matters is what
    is read back."""

    def __init__(self, cfg, deadline):
        self.cfg = cfg
        self.trace = cfg.verbose
        self.deadline = deadline  # the whole case ends by then
        self.sock = socket.create_connection((cfg.host, cfg.port), timeout=cfg.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.pending = bytearray()  # queued writes
        self.done = False  # closed, timed out or unreadable: no more reads
        self.server_settings = {}
        self.encoder = hpack.Encoder()
        self.window = {0: DEFAULT_WINDOW}

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # writing

    def send(self, data):
        if self.trace:
            trace("send", describe_bytes(data))
        self.pending += data

    def flush(self):
        data, self.pending = bytes(self.pending), bytearray()
        if not data:
            return
        try:
            self.sock.settimeout(self.cfg.timeout)
            self.sock.sendall(data)
        except OSError:
            pass

    def send_frame(self, frame):
        self.send(frame.serialize())

    def encode(self, headers):
        """HPACK-encode a field list with this connection's encoder context."""
        return self.encoder.encode(headers)

    def headers(self, stream_id, block, end_stream=False, end_headers=True, pad_length=0,
                priority=None):
        """HEADERS; priority is (depends_on, weight, exclusive) or None."""
        flags = []
        if end_stream:
            flags.append("END_STREAM")
        if end_headers:
            flags.append("END_HEADERS")
        if pad_length:
            flags.append("PADDED")
        extra = {}
        if priority is not None:
            flags.append("PRIORITY")
            extra = dict(depends_on=priority[0], stream_weight=priority[1],
                         exclusive=priority[2])
        self.send_frame(HeadersFrame(stream_id, data=block, flags=flags,
                                     pad_length=pad_length, **extra))

    def request(self, stream_id, method="GET", end_stream=True, extra=(), **kwargs):
        """HEADERS carrying the common request fields plus `extra`."""
        block = self.encode(self.cfg.request(method) + list(extra))
        self.headers(stream_id, block, end_stream=end_stream, **kwargs)
        return block

    def continuation(self, stream_id, block, end_headers):
        flags = ["END_HEADERS"] if end_headers else []
        self.send_frame(ContinuationFrame(stream_id, data=block, flags=flags))

    def data(self, stream_id, payload, end_stream=False, pad_length=0):
        flags = ["END_STREAM"] if end_stream else []
        if pad_length:
            flags.append("PADDED")
        self.send_frame(DataFrame(stream_id, data=payload, flags=flags,
                                  pad_length=pad_length))

    def priority(self, stream_id, depends_on=0, weight=255, exclusive=False):
        self.send_frame(PriorityFrame(stream_id, depends_on=depends_on,
                                      stream_weight=weight, exclusive=exclusive))

    def rst_stream(self, stream_id, code):
        self.send_frame(RstStreamFrame(stream_id, error_code=code))

    def settings(self, *pairs):
        """SETTINGS with (identifier, value) pairs in order, repeats allowed."""
        payload = b"".join(struct.pack(">HI", ident, value) for ident, value in pairs)
        self.send(raw_frame(SETTINGS, 0, 0, payload))

    def settings_ack(self):
        self.send(raw_frame(SETTINGS, ACK, 0, b""))

    def ping(self, payload, ack=False):
        self.send_frame(PingFrame(0, opaque_data=payload, flags=["ACK"] if ack else []))

    def goaway(self, last_stream_id, code, debug=b""):
        self.send_frame(GoAwayFrame(0, last_stream_id=last_stream_id, error_code=code,
                                    additional_data=debug))

    def window_update(self, stream_id, increment):
        self.send_frame(WindowUpdateFrame(stream_id, window_increment=increment))

    def push_promise(self, stream_id, promised_stream_id, block):
        self.send_frame(PushPromiseFrame(stream_id, promised_stream_id=promised_stream_id,
                                         data=block, flags=["END_HEADERS"]))

    # reading

    def _fill(self, count, deadline, frame_start):
        self.flush()
        while len(self.buf) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Timeout()
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise _Timeout() from None
            except ConnectionResetError:
                raise _Closed() from None
            if not chunk:
                if frame_start and not self.buf:
                    raise _Closed()
                raise OSError("connection closed in the middle of a frame")
            self.buf += chunk

    def _take(self, count):
        out = bytes(self.buf[:count])
        del self.buf[:count]
        return out

    def read_event(self, deadline):
        """The next frame, or the reason there is none, by `deadline`."""
        deadline = min(deadline, self.deadline)
        try:
            self._fill(9, deadline, frame_start=True)
            header = self._take(9)
            length = int.from_bytes(header[:3], "big")
            self._fill(length, deadline, frame_start=False)
            body = self._take(length)
        except _Closed:
            return Event(CLOSED)
        except _Timeout:
            return Event(TIMEOUT)
        except OSError as exc:
            return Event(ERROR, message=str(exc))
        stream_id = int.from_bytes(header[5:9], "big") & 0x7FFFFFFF
        try:
            frame, _ = Frame.parse_frame_header(memoryview(header))
            frame.parse_body(memoryview(body))
        except (HyperframeError, ValueError, struct.error) as exc:
            return Event(ERROR, message=f"bad frame type 0x{header[3]:02x} on stream "
                                        f"{stream_id}: {exc}")
        return Event(FRAME, frame, header[3], header[4], stream_id, length)

    def wait_event(self):
        """h2spec's per-event wait: one read bounded by the timeout; anything but a
        frame finishes the connection. DATA is credited back as h2spec does."""
        event = self.read_event(time.monotonic() + self.cfg.timeout)
        if self.trace:
            trace("recv", event)
        if event.kind != FRAME:
            self.done = True
        elif event.ftype == DATA:
            self._credit(event.stream_id, event.length)
        return event

    def _credit(self, stream_id, length):
        for target in (stream_id, 0):
            window = self.window.get(target, DEFAULT_WINDOW) - length
            if window <= 0:
                increment = DEFAULT_WINDOW - window
                self.window_update(target, increment)
                window += increment
            self.window[target] = window

    def handshake(self):
        """Preface and SETTINGS both ways, within one timeout (RFC 9113 §3.4)."""
        self.send(PREFACE)
        self.settings((INITIAL_WINDOW_SIZE, DEFAULT_WINDOW))
        deadline = time.monotonic() + self.cfg.timeout
        got_settings = got_ack = False
        while not (got_settings and got_ack):
            event = self.read_event(deadline)
            if self.trace:
                trace("recv", event)
            if event.kind != FRAME:
                raise Failed("a completed handshake (server SETTINGS and SETTINGS ACK)",
                             event)
            if event.ftype != SETTINGS:
                continue
            if event.has(ACK):
                got_ack = True
            else:
                got_settings = True
                self.server_settings.update(event.frame.settings)
                self.settings_ack()

    def max_frame_size(self):
        return self.server_settings.get(MAX_FRAME_SIZE, DEFAULT_FRAME_SIZE)


# --- verdicts ------------------------------------------------------------------------------

def watch(conn, accept):
    """Read until an event satisfies `accept` or the connection is done. Returns the
    accepted event (or None) and the last other event, for the failure message."""
    last = None
    while not conn.done:
        event = conn.wait_event()
        if accept(event):
            return event, last
        if event.kind != TIMEOUT or last is None:
            last = event
    return None, last


def got(event):
    return str(event) if event is not None else "nothing (the connection had finished)"


def first_frame(conn, ftype, expected):
    """The first frame of a type; fail if none comes."""
    event, last = watch(conn, lambda ev: ev.is_frame(ftype))
    if event is None:
        raise Failed(expected, got(last))
    return event


def codes_text(codes):
    return "/".join(error_name(code) for code in codes)


def expect_connection_error(conn, *codes):
    """RFC 9113 §5.4.1: GOAWAY with one of `codes`, or the connection closing."""
    def accept(ev):
        return ev.kind == CLOSED or (ev.is_frame(GOAWAY) and ev.error_code() in codes)
    event, last = watch(conn, accept)
    if event is None:
        raise Failed(f"GOAWAY ({codes_text(codes)}) or connection closed", got(last))


def expect_stream_error(conn, *codes):
    """RFC 9113 §5.4.2: RST_STREAM or GOAWAY with one of `codes`, or the connection
    closing."""
    def accept(ev):
        return (ev.kind == CLOSED
                or ((ev.is_frame(RST_STREAM) or ev.is_frame(GOAWAY))
                    and ev.error_code() in codes))
    event, last = watch(conn, accept)
    if event is None:
        raise Failed(f"RST_STREAM or GOAWAY ({codes_text(codes)}) or connection closed",
                     got(last))


def expect_connection_close(conn):
    event, last = watch(conn, lambda ev: ev.kind == CLOSED)
    if event is None:
        raise Failed("connection closed", got(last))


def expect_stream_close(conn):
    """A response that ends its stream: END_STREAM on DATA or HEADERS, or RST_STREAM
    with NO_ERROR."""
    def accept(ev):
        return (((ev.is_frame(DATA) or ev.is_frame(HEADERS)) and ev.has(END_STREAM))
                or (ev.is_frame(RST_STREAM) and ev.error_code() == NO_ERROR))
    event, last = watch(conn, accept)
    if event is None:
        raise Failed("the stream closed (END_STREAM or RST_STREAM NO_ERROR)", got(last))


def expect_headers(conn, stream_id):
    """The first HEADERS frame is the response on `stream_id`."""
    expected = f"HEADERS frame on stream {stream_id}"
    event = first_frame(conn, HEADERS, expected)
    if event.stream_id != stream_id:
        raise Failed(expected, event)


def expect_settings_ack(conn):
    expected = "SETTINGS frame with ACK"
    event = first_frame(conn, SETTINGS, expected)
    if not event.has(ACK):
        raise Failed(expected, event)


def expect_ping_ack(conn, payload):
    """The first PING frame acknowledges ours, with the same payload (RFC 9113 §6.7)."""
    expected = f"PING frame with ACK and data {payload.hex()}"
    event = first_frame(conn, PING, expected)
    if not (event.has(ACK) and event.frame.opaque_data == payload):
        raise Failed(expected, event)


def expect_ping_ack_or_close(conn, payload):
    def accept(ev):
        return ev.kind == CLOSED or (ev.is_frame(PING) and ev.has(ACK)
                                     and ev.frame.opaque_data == payload)
    event, last = watch(conn, accept)
    if event is None:
        raise Failed(f"PING frame with ACK and data {payload.hex()} or connection closed",
                     got(last))


def expect_data_of_length(conn, length):
    expected = f"DATA frame of length {length}"
    event = first_frame(conn, DATA, expected)
    if event.length != length:
        raise Failed(expected, event)


def server_data_length(cfg, deadline):
    """The body length of a GET to --path, read on a separate connection; the
    flow-control cases need a response with DATA and are skipped otherwise."""
    conn = Conn(cfg, deadline)
    try:
        conn.handshake()
        conn.request(1)
        total = 0
        while not conn.done:
            event = conn.wait_event()
            if event.is_frame(DATA):
                total += event.length
            if (event.is_frame(DATA) or event.is_frame(HEADERS)) and event.has(END_STREAM):
                return total
        raise Failed("a complete response to learn its body length", event)
    finally:
        conn.close()


def need_response_body(cfg, conn, minimum):
    length = server_data_length(cfg, conn.deadline)
    if length < minimum:
        raise Skipped(f"the response to GET {cfg.path} has {length} bytes of DATA; "
                      f"this case needs at least {minimum}")


# --- cases ---------------------------------------------------------------------------------

class Case:
    def __init__(self, case_id, description, run):
        self.id = case_id
        self.description = description
        self.run = run


CASES = []


def case(case_id, description):
    """Register a case under h2spec's id, with our own one-line description."""
    def register(run):
        CASES.append(Case(case_id, description, run))
        return run
    return register


ZEROS = bytes(8)
H2SPEC = b"h2spec\0\0"
UNKNOWN_FRAME = raw_frame(UNKNOWN_TYPE, 0, 0, bytes(8))


# generic/1: starting HTTP/2

@case("generic/1/1", "server answers the client preface with SETTINGS (RFC 9113 §3.4)")
def _(cfg, conn):
    conn.send(PREFACE)
    conn.settings((INITIAL_WINDOW_SIZE, DEFAULT_WINDOW))
    event = conn.wait_event()
    if not (event.is_frame(SETTINGS) and not event.has(ACK)):
        raise Failed("SETTINGS frame without ACK as the first frame", event)


# generic/2: streams and multiplexing

@case("generic/2/1", "PRIORITY on an idle stream is accepted (RFC 9113 §5.1)")
def _(cfg, conn):
    conn.handshake()
    conn.priority(1)
    conn.ping(ZEROS)
    expect_ping_ack(conn, ZEROS)


@case("generic/2/2", "WINDOW_UPDATE on a half-closed (remote) stream is accepted "
                     "(RFC 9113 §5.1)")
def _(cfg, conn):
    conn.handshake()
    conn.settings((INITIAL_WINDOW_SIZE, 0))  # hold the response back
    conn.request(1)
    conn.window_update(1, 1)
    first_frame(conn, DATA, "DATA frame")


@case("generic/2/3", "PRIORITY on a half-closed (remote) stream is accepted "
                     "(RFC 9113 §5.1)")
def _(cfg, conn):
    conn.handshake()
    conn.settings((INITIAL_WINDOW_SIZE, 0))
    conn.request(1)
    conn.priority(1)
    conn.window_update(1, 1)
    first_frame(conn, DATA, "DATA frame")


@case("generic/2/4", "RST_STREAM on a half-closed (remote) stream is accepted "
                     "(RFC 9113 §5.1)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1)
    conn.rst_stream(1, CANCEL)
    conn.ping(ZEROS)
    expect_ping_ack_or_close(conn, ZEROS)


@case("generic/2/5", "PRIORITY on a closed stream is accepted (RFC 9113 §5.1)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1)
    expect_stream_close(conn)
    conn.priority(1)
    conn.ping(ZEROS)
    expect_ping_ack(conn, ZEROS)


# generic/3: frame definitions

@case("generic/3.1/1", "a request body in one DATA frame is accepted (RFC 9113 §6.1)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1, "POST", end_stream=False)
    conn.data(1, b"test", end_stream=True)
    expect_headers(conn, 1)


@case("generic/3.1/2", "a request body in two DATA frames is accepted (RFC 9113 §6.1)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1, "POST", end_stream=False)
    conn.data(1, b"test")
    conn.data(1, b"test", end_stream=True)
    expect_headers(conn, 1)


@case("generic/3.1/3", "a padded DATA frame is accepted (RFC 9113 §6.1)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1, "POST", end_stream=False)
    conn.data(1, b"test", end_stream=True, pad_length=5)
    expect_headers(conn, 1)


@case("generic/3.2/1", "a request in one HEADERS frame is answered (RFC 9113 §6.2)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1)
    expect_headers(conn, 1)


@case("generic/3.2/2", "a padded HEADERS frame is accepted (RFC 9113 §6.2)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1, pad_length=8)
    expect_headers(conn, 1)


@case("generic/3.2/3", "HEADERS with priority fields is accepted (RFC 9113 §6.2)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1, priority=(0, 255, False))
    expect_headers(conn, 1)


@case("generic/3.3/1", "PRIORITY with the lowest weight, then a request (RFC 9113 §6.3)")
def _(cfg, conn):
    conn.handshake()
    conn.priority(1, weight=0)
    conn.request(1)
    expect_headers(conn, 1)


@case("generic/3.3/2", "PRIORITY with the highest weight, then a request (RFC 9113 §6.3)")
def _(cfg, conn):
    conn.handshake()
    conn.priority(1, weight=255)
    conn.request(1)
    expect_headers(conn, 1)


@case("generic/3.3/3", "PRIORITY making stream 3 depend on stream 1 (RFC 9113 §6.3)")
def _(cfg, conn):
    conn.handshake()
    conn.priority(3, depends_on=1, weight=0)
    conn.request(1)
    expect_headers(conn, 1)


@case("generic/3.3/4", "PRIORITY with the exclusive bit (RFC 9113 §6.3)")
def _(cfg, conn):
    conn.handshake()
    conn.priority(1, weight=0, exclusive=True)
    conn.request(1)
    expect_headers(conn, 1)


@case("generic/3.3/5", "a request on stream 1 after PRIORITY for idle stream 3 is "
                       "answered (RFC 9113 §5.1.1, §6.3)")
def _(cfg, conn):
    conn.handshake()
    conn.priority(3)
    conn.request(1)
    expect_headers(conn, 1)


@case("generic/3.4/1", "RST_STREAM on an open stream is accepted (RFC 9113 §6.4)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1, end_stream=False)
    conn.rst_stream(1, CANCEL)
    conn.ping(ZEROS)
    expect_ping_ack_or_close(conn, ZEROS)


@case("generic/3.5/1", "SETTINGS carrying all six defined parameters is acknowledged "
                       "(RFC 9113 §6.5)")
def _(cfg, conn):
    conn.handshake()
    conn.settings((HEADER_TABLE_SIZE, 4096), (ENABLE_PUSH, 1),
                  (MAX_CONCURRENT_STREAMS, 100), (INITIAL_WINDOW_SIZE, 65535),
                  (MAX_FRAME_SIZE, 16384), (MAX_HEADER_LIST_SIZE, 100))
    expect_settings_ack(conn)


@case("generic/3.7/1", "PING is answered with a PING ACK (RFC 9113 §6.7)")
def _(cfg, conn):
    conn.handshake()
    conn.ping(H2SPEC)
    expect_ping_ack(conn, H2SPEC)


@case("generic/3.8/1", "GOAWAY from the client is accepted (RFC 9113 §6.8)")
def _(cfg, conn):
    conn.handshake()
    conn.goaway(0, NO_ERROR, b"h2spec")
    conn.ping(H2SPEC)
    expect_ping_ack_or_close(conn, H2SPEC)


@case("generic/3.9/1", "WINDOW_UPDATE for the connection is accepted (RFC 9113 §6.9)")
def _(cfg, conn):
    conn.handshake()
    conn.window_update(0, 1)
    conn.ping(ZEROS)
    expect_ping_ack(conn, ZEROS)


@case("generic/3.9/2", "WINDOW_UPDATE for stream 1 is accepted (RFC 9113 §6.9)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1)
    conn.window_update(1, 1)
    expect_headers(conn, 1)


@case("generic/3.10/1", "a header block split over HEADERS and one CONTINUATION "
                        "(RFC 9113 §6.10)")
def _(cfg, conn):
    conn.handshake()
    block = conn.encode(cfg.request())
    conn.headers(1, block[:5], end_stream=True, end_headers=False)
    conn.continuation(1, block[5:], end_headers=True)
    expect_headers(conn, 1)


@case("generic/3.10/2", "a header block split over HEADERS and two CONTINUATIONs "
                        "(RFC 9113 §6.10)")
def _(cfg, conn):
    conn.handshake()
    block = conn.encode(cfg.request())
    conn.headers(1, block[:5], end_stream=True, end_headers=False)
    conn.continuation(1, block[5:10], end_headers=False)
    conn.continuation(1, block[10:], end_headers=True)
    expect_headers(conn, 1)


# generic/4: HTTP message exchanges

@case("generic/4/1", "a GET request is answered (RFC 9113 §8.1)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1, "GET")
    expect_headers(conn, 1)


@case("generic/4/2", "a HEAD request is answered (RFC 9113 §8.1)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1, "HEAD")
    expect_headers(conn, 1)


@case("generic/4/3", "a POST request with a body is answered (RFC 9113 §8.1)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1, "POST", end_stream=False)
    conn.data(1, b"test", end_stream=True)
    expect_headers(conn, 1)


@case("generic/4/4", "a POST request with a body and trailers is answered "
                     "(RFC 9113 §8.1)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1, "POST", end_stream=False, extra=[("trailer", "x-test")])
    conn.data(1, b"test")
    conn.headers(1, conn.encode([("x-test", "ok")]), end_stream=True)
    expect_headers(conn, 1)


# generic/5: HPACK representations, appended to the common request fields

def send_with_representation(conn, tail=b"", head=b""):
    """A request whose encoded header block gets extra HPACK bytes around it."""
    block = head + conn.encode(conn.cfg.request()) + tail
    conn.headers(1, block, end_stream=True)


def hpack_accept_case(case_id, description, representation):
    @case(case_id, description)
    def _(cfg, conn):
        conn.handshake()
        send_with_representation(conn, tail=representation)
        expect_headers(conn, 1)


hpack_accept_case("generic/5/1", "indexed field line, static entry 58 user-agent "
                  "(RFC 7541 §6.1)", hpack_integer(58, 7, 0x80))
# h2spec's cases 2-13 are titled "indexed name" / "new name" and "with/without Huffman";
# the bytes it sends (reproduced here) always use a literal name, and the Huffman use
# follows the bytes, not the titles. The descriptions say what is actually sent.
LITERAL_KINDS = {0x40: ("with incremental indexing", "6.2.1"),
                 0x00: ("without indexing", "6.2.2"),
                 0x10: ("never indexed", "6.2.3")}
LITERAL_CASES = [  # case number, representation, field name, Huffman strings
    (2, 0x40, "user-agent", True), (3, 0x40, "user-agent", False),
    (4, 0x40, "x-test", False), (5, 0x40, "x-test", True),
    (6, 0x00, "user-agent", False), (7, 0x00, "user-agent", True),
    (8, 0x00, "x-test", False), (9, 0x00, "x-test", True),
    (10, 0x10, "user-agent", False), (11, 0x10, "user-agent", True),
    (12, 0x10, "x-test", True), (13, 0x10, "x-test", True),
]


def register_literal_cases():
    for number, kind, name, huffman in LITERAL_CASES:
        kind_text, section = LITERAL_KINDS[kind]
        hpack_accept_case(
            f"generic/5/{number}",
            f"literal field line {kind_text}, literal name {name}, "
            f"{'Huffman' if huffman else 'raw'} strings (RFC 7541 §{section})",
            hpack_literal_new_name(kind, name, "h2spec", huffman))


register_literal_cases()


@case("generic/5/14", "a dynamic table size update to 128 opens the block "
                      "(RFC 7541 §6.3)")
def _(cfg, conn):
    conn.handshake()
    conn.encoder.header_table_size = 128  # the encoder emits the update itself
    send_with_representation(conn)
    expect_headers(conn, 1)


@case("generic/5/15", "two dynamic table size updates (128, then 4096) open the block "
                      "(RFC 7541 §4.2)")
def _(cfg, conn):
    conn.handshake()
    send_with_representation(conn, head=table_size_update(128) + table_size_update(4096))
    expect_headers(conn, 1)


# http2/3.5: connection preface

@case("http2/3.5/1", "server connection preface is a SETTINGS frame (RFC 9113 §3.4)")
def _(cfg, conn):
    conn.send(PREFACE)
    conn.settings((INITIAL_WINDOW_SIZE, DEFAULT_WINDOW))
    event = conn.wait_event()
    if not (event.is_frame(SETTINGS) and not event.has(ACK)):
        raise Failed("SETTINGS frame without ACK as the first frame", event)


@case("http2/3.5/2", "an invalid client preface is a connection error (RFC 9113 §3.4)")
def _(cfg, conn):
    conn.send(b"INVALID CONNECTION PREFACE\r\n\r\n")
    expect_connection_error(conn, PROTOCOL_ERROR)


# http2/4: HTTP frames

@case("http2/4.1/1", "a frame of unknown type is ignored (RFC 9113 §4.1)")
def _(cfg, conn):
    conn.handshake()
    conn.send(UNKNOWN_FRAME)
    conn.ping(ZEROS)
    expect_ping_ack(conn, ZEROS)


@case("http2/4.1/2", "undefined flags on a PING are ignored (RFC 9113 §4.1)")
def _(cfg, conn):
    conn.handshake()
    conn.send(raw_frame(PING, 0x16, 0, ZEROS))
    first_frame(conn, PING, "PING frame")


@case("http2/4.1/3", "the reserved bit of the stream identifier is ignored "
                     "(RFC 9113 §4.1)")
def _(cfg, conn):
    conn.handshake()
    conn.send(raw_frame(PING, 0x16, 1 << 31, ZEROS))
    first_frame(conn, PING, "PING frame")


@case("http2/4.2/1", "a DATA frame of SETTINGS_MAX_FRAME_SIZE octets is accepted "
                     "(RFC 9113 §4.2)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1, "POST", end_stream=False)
    conn.data(1, b"x" * conn.max_frame_size(), end_stream=True)
    expect_headers(conn, 1)


@case("http2/4.2/2", "a DATA frame over SETTINGS_MAX_FRAME_SIZE is a FRAME_SIZE_ERROR "
                     "(RFC 9113 §4.2)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1, "POST", end_stream=False)
    conn.data(1, b"x" * (conn.max_frame_size() + 1), end_stream=True)
    expect_stream_error(conn, FRAME_SIZE_ERROR)


@case("http2/4.2/3", "a HEADERS frame over SETTINGS_MAX_FRAME_SIZE is a connection "
                     "FRAME_SIZE_ERROR (RFC 9113 §4.2)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1, extra=cfg.dummy_headers(5))
    expect_connection_error(conn, FRAME_SIZE_ERROR)


@case("http2/4.3/1", "an undecodable field block is a COMPRESSION_ERROR "
                     "(RFC 9113 §4.3)")
def _(cfg, conn):
    conn.handshake()
    # One byte: a literal field line whose name never comes.
    conn.send(raw_frame(HEADERS, END_STREAM | END_HEADERS, 1, b"\x40"))
    expect_connection_error(conn, COMPRESSION_ERROR)


def interrupted_block_with_priority(cfg, conn):
    conn.request(1, end_stream=False, end_headers=False)
    conn.priority(1)
    conn.continuation(1, conn.encode(cfg.dummy_headers(1)), end_headers=True)
    expect_connection_error(conn, PROTOCOL_ERROR)


def interrupted_block_with_headers(cfg, conn):
    conn.request(1, end_stream=False, end_headers=False)
    conn.request(3)
    conn.continuation(1, conn.encode(cfg.dummy_headers(1)), end_headers=True)
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2/4.3/2", "PRIORITY inside a field block is a connection PROTOCOL_ERROR "
                     "(RFC 9113 §4.3)")
def _(cfg, conn):
    conn.handshake()
    interrupted_block_with_priority(cfg, conn)


@case("http2/4.3/3", "HEADERS for another stream inside a field block is a connection "
                     "PROTOCOL_ERROR (RFC 9113 §4.3)")
def _(cfg, conn):
    conn.handshake()
    interrupted_block_with_headers(cfg, conn)


# http2/5.1: stream states

@case("http2/5.1/1", "idle stream: DATA is an error (RFC 9113 §5.1)")
def _(cfg, conn):
    conn.handshake()
    conn.data(1, b"test", end_stream=True)
    expect_stream_error(conn, PROTOCOL_ERROR, STREAM_CLOSED)


@case("http2/5.1/2", "idle stream: RST_STREAM is a connection PROTOCOL_ERROR "
                     "(RFC 9113 §5.1)")
def _(cfg, conn):
    conn.handshake()
    conn.rst_stream(1, CANCEL)
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2/5.1/3", "idle stream: WINDOW_UPDATE is a connection PROTOCOL_ERROR "
                     "(RFC 9113 §5.1)")
def _(cfg, conn):
    conn.handshake()
    conn.window_update(1, 100)
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2/5.1/4", "idle stream: CONTINUATION is a connection PROTOCOL_ERROR "
                     "(RFC 9113 §5.1)")
def _(cfg, conn):
    conn.handshake()
    conn.continuation(1, conn.encode(cfg.request()), end_headers=True)
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2/5.1/5", "half-closed (remote): DATA is a STREAM_CLOSED error "
                     "(RFC 9113 §5.1)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1)
    conn.data(1, b"test", end_stream=True)
    expect_stream_error(conn, STREAM_CLOSED)


@case("http2/5.1/6", "half-closed (remote): a second HEADERS is a STREAM_CLOSED error "
                     "(RFC 9113 §5.1)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1)
    conn.request(1)
    expect_stream_error(conn, STREAM_CLOSED)


@case("http2/5.1/7", "half-closed (remote): CONTINUATION is an error (RFC 9113 §5.1)")
def _(cfg, conn):
    conn.handshake()
    block = conn.request(1)
    conn.continuation(1, block, end_headers=True)
    expect_stream_error(conn, STREAM_CLOSED, PROTOCOL_ERROR)


@case("http2/5.1/8", "closed by our RST_STREAM: DATA is a STREAM_CLOSED error "
                     "(RFC 9113 §5.1)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1, end_stream=False)
    conn.rst_stream(1, CANCEL)
    conn.data(1, b"test", end_stream=True)
    expect_stream_error(conn, STREAM_CLOSED)


@case("http2/5.1/9", "closed by our RST_STREAM: HEADERS is a STREAM_CLOSED error "
                     "(RFC 9113 §5.1)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1, end_stream=False)
    conn.rst_stream(1, CANCEL)
    conn.request(1)
    expect_stream_error(conn, STREAM_CLOSED)


@case("http2/5.1/10", "closed by our RST_STREAM: CONTINUATION is an error "
                      "(RFC 9113 §5.1)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1, end_stream=False)
    conn.rst_stream(1, CANCEL)
    conn.continuation(1, conn.encode(cfg.dummy_headers(1)), end_headers=True)
    expect_stream_error(conn, STREAM_CLOSED, PROTOCOL_ERROR)


@case("http2/5.1/11", "closed stream: DATA is a STREAM_CLOSED error (RFC 9113 §5.1)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1)
    expect_stream_close(conn)
    conn.data(1, b"test", end_stream=True)
    expect_stream_error(conn, STREAM_CLOSED)


@case("http2/5.1/12", "closed stream: HEADERS is a connection STREAM_CLOSED error "
                      "(RFC 9113 §5.1)")
def _(cfg, conn):
    conn.handshake()
    block = conn.request(1)
    expect_stream_close(conn)
    conn.headers(1, block, end_stream=True)  # the same block again, as h2spec does
    expect_connection_error(conn, STREAM_CLOSED)


@case("http2/5.1/13", "closed stream: CONTINUATION is a connection error "
                      "(RFC 9113 §5.1)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1)
    expect_stream_close(conn)
    conn.continuation(1, conn.encode(cfg.dummy_headers(1)), end_headers=True)
    expect_connection_error(conn, STREAM_CLOSED, PROTOCOL_ERROR)


@case("http2/5.1.1/1", "a client stream with an even identifier is a connection "
                       "PROTOCOL_ERROR (RFC 9113 §5.1.1)")
def _(cfg, conn):
    conn.handshake()
    conn.request(2)
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2/5.1.1/2", "a stream identifier below an earlier one is a connection "
                       "PROTOCOL_ERROR (RFC 9113 §5.1.1)")
def _(cfg, conn):
    conn.handshake()
    conn.request(5)
    conn.request(3)
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2/5.1.2/1", "streams beyond SETTINGS_MAX_CONCURRENT_STREAMS are refused "
                       "(RFC 9113 §5.1.2)")
def _(cfg, conn):
    conn.handshake()
    limit = conn.server_settings.get(MAX_CONCURRENT_STREAMS)
    if limit is None:
        raise Skipped("the server sets no SETTINGS_MAX_CONCURRENT_STREAMS")
    if limit > MAX_STREAMS_TRIED:
        raise Skipped(f"SETTINGS_MAX_CONCURRENT_STREAMS is {limit}, too many to open")
    conn.settings((INITIAL_WINDOW_SIZE, 0))  # keep the streams open
    block = conn.encode(cfg.request())
    for stream_id in range(1, 2 * limit + 2, 2):  # limit + 1 streams
        conn.headers(stream_id, block, end_stream=True)
    expect_stream_error(conn, PROTOCOL_ERROR, REFUSED_STREAM)


# http2/5.3.1: stream dependencies

@case("http2/5.3.1/1", "HEADERS making a stream depend on itself is a PROTOCOL_ERROR "
                       "(RFC 9113 §5.3.1)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1, priority=(1, 255, False))
    expect_stream_error(conn, PROTOCOL_ERROR)


@case("http2/5.3.1/2", "PRIORITY making a stream depend on itself is a PROTOCOL_ERROR "
                       "(RFC 9113 §5.3.1)")
def _(cfg, conn):
    conn.handshake()
    conn.priority(1, depends_on=1)
    expect_stream_error(conn, PROTOCOL_ERROR)


# http2/5.4.1: connection error handling

BAD_PING = raw_frame(PING, 0, 3, ZEROS)  # PING must use stream 0


@case("http2/5.4.1/1", "after a connection error the server closes the connection "
                       "(RFC 9113 §5.4.1)")
def _(cfg, conn):
    conn.handshake()
    conn.send(BAD_PING)
    expect_connection_close(conn)


@case("http2/5.4.1/2", "[strict] a connection error is announced with GOAWAY "
                       "(RFC 9113 §5.4.1)")
def _(cfg, conn):
    conn.handshake()
    conn.send(BAD_PING)
    first_frame(conn, GOAWAY, "a GOAWAY frame (any error code)")


# http2/5.5: extending HTTP/2

@case("http2/5.5/1", "an unknown extension frame is ignored (RFC 9113 §5.5)")
def _(cfg, conn):
    conn.handshake()
    conn.send(UNKNOWN_FRAME)
    conn.ping(ZEROS)
    expect_ping_ack(conn, ZEROS)


@case("http2/5.5/2", "an unknown frame inside a field block is a connection "
                     "PROTOCOL_ERROR (RFC 9113 §5.5)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1, end_headers=False)
    conn.send(UNKNOWN_FRAME)
    expect_connection_error(conn, PROTOCOL_ERROR)


# http2/6.1: DATA

@case("http2/6.1/1", "DATA on stream 0 is a connection PROTOCOL_ERROR (RFC 9113 §6.1)")
def _(cfg, conn):
    conn.handshake()
    conn.send(raw_frame(DATA, END_STREAM, 0, b"test"))
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2/6.1/2", "DATA on a half-closed (remote) stream is a STREAM_CLOSED error "
                     "(RFC 9113 §6.1)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1, "POST")
    conn.data(1, b"test", end_stream=True)
    expect_stream_error(conn, STREAM_CLOSED)


@case("http2/6.1/3", "DATA whose padding is longer than the payload is a connection "
                     "PROTOCOL_ERROR (RFC 9113 §6.1)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1, "POST", end_stream=False, extra=[("content-length", "4")])
    # Pad length 6 in a five-octet payload.
    conn.send(raw_frame(DATA, END_STREAM | PADDED, 1, b"\x06Test"))
    expect_connection_error(conn, PROTOCOL_ERROR)


# http2/6.2: HEADERS

@case("http2/6.2/1", "PRIORITY before the field block ends is a connection "
                     "PROTOCOL_ERROR (RFC 9113 §6.2)")
def _(cfg, conn):
    conn.handshake()
    interrupted_block_with_priority(cfg, conn)


@case("http2/6.2/2", "HEADERS for another stream before the field block ends is a "
                     "connection PROTOCOL_ERROR (RFC 9113 §6.2)")
def _(cfg, conn):
    conn.handshake()
    interrupted_block_with_headers(cfg, conn)


@case("http2/6.2/3", "HEADERS on stream 0 is a connection PROTOCOL_ERROR "
                     "(RFC 9113 §6.2)")
def _(cfg, conn):
    conn.handshake()
    block = conn.encode(cfg.request())
    conn.send(raw_frame(HEADERS, END_STREAM | END_HEADERS, 0, block))
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2/6.2/4", "HEADERS whose padding is longer than the payload is a "
                     "PROTOCOL_ERROR (RFC 9113 §6.2)")
def _(cfg, conn):
    conn.handshake()
    block = conn.encode(cfg.request())
    payload = bytes([len(block) + 2]) + block  # pad length beyond the frame
    conn.send(raw_frame(HEADERS, END_STREAM | END_HEADERS | PADDED, 1, payload))
    expect_stream_error(conn, PROTOCOL_ERROR)


# http2/6.3: PRIORITY

@case("http2/6.3/1", "PRIORITY on stream 0 is a connection PROTOCOL_ERROR "
                     "(RFC 9113 §6.3)")
def _(cfg, conn):
    conn.handshake()
    conn.send(raw_frame(PRIORITY, 0, 0, struct.pack(">IB", 0, 255)))
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2/6.3/2", "PRIORITY of 4 octets is a FRAME_SIZE_ERROR (RFC 9113 §6.3)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1)
    conn.send(raw_frame(PRIORITY, 0, 1, b"\x80\x00\x00\x01"))
    expect_stream_error(conn, FRAME_SIZE_ERROR)


# http2/6.4: RST_STREAM

@case("http2/6.4/1", "RST_STREAM on stream 0 is a connection PROTOCOL_ERROR "
                     "(RFC 9113 §6.4)")
def _(cfg, conn):
    conn.handshake()
    conn.send(raw_frame(RST_STREAM, 0, 0, struct.pack(">I", CANCEL)))
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2/6.4/2", "RST_STREAM on an idle stream is a connection PROTOCOL_ERROR "
                     "(RFC 9113 §6.4)")
def _(cfg, conn):
    conn.handshake()
    conn.rst_stream(1, CANCEL)
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2/6.4/3", "RST_STREAM of 3 octets is a FRAME_SIZE_ERROR (RFC 9113 §6.4)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1)
    conn.send(raw_frame(RST_STREAM, 0, 1, b"\x00\x00\x00"))
    expect_stream_error(conn, FRAME_SIZE_ERROR)


# http2/6.5: SETTINGS

@case("http2/6.5/1", "a SETTINGS ACK with a payload is a connection FRAME_SIZE_ERROR "
                     "(RFC 9113 §6.5)")
def _(cfg, conn):
    conn.handshake()
    conn.send(raw_frame(SETTINGS, ACK, 0, b"\x00"))
    expect_connection_error(conn, FRAME_SIZE_ERROR)


@case("http2/6.5/2", "SETTINGS on stream 1 is a connection PROTOCOL_ERROR "
                     "(RFC 9113 §6.5)")
def _(cfg, conn):
    conn.handshake()
    conn.send(raw_frame(SETTINGS, 0, 1, struct.pack(">HI", MAX_CONCURRENT_STREAMS, 100)))
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2/6.5/3", "SETTINGS whose length is not a multiple of 6 is a "
                     "FRAME_SIZE_ERROR (RFC 9113 §6.5)")
def _(cfg, conn):
    conn.handshake()
    conn.send(raw_frame(SETTINGS, 0, 0, b"\x00\x03\x00"))
    expect_stream_error(conn, PROTOCOL_ERROR, FRAME_SIZE_ERROR)


@case("http2/6.5.2/1", "SETTINGS_ENABLE_PUSH of 2 is a connection PROTOCOL_ERROR "
                       "(RFC 9113 §6.5.2)")
def _(cfg, conn):
    conn.handshake()
    conn.settings((ENABLE_PUSH, 2))
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2/6.5.2/2", "SETTINGS_INITIAL_WINDOW_SIZE of 2^31 is a connection "
                       "FLOW_CONTROL_ERROR (RFC 9113 §6.5.2)")
def _(cfg, conn):
    conn.handshake()
    conn.settings((INITIAL_WINDOW_SIZE, MAX_WINDOW + 1))
    expect_connection_error(conn, FLOW_CONTROL_ERROR)


@case("http2/6.5.2/3", "SETTINGS_MAX_FRAME_SIZE of 16383 is a connection PROTOCOL_ERROR "
                       "(RFC 9113 §6.5.2)")
def _(cfg, conn):
    conn.handshake()
    conn.settings((MAX_FRAME_SIZE, DEFAULT_FRAME_SIZE - 1))
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2/6.5.2/4", "SETTINGS_MAX_FRAME_SIZE of 2^24 is a connection PROTOCOL_ERROR "
                       "(RFC 9113 §6.5.2)")
def _(cfg, conn):
    conn.handshake()
    conn.settings((MAX_FRAME_SIZE, 1 << 24))
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2/6.5.2/5", "an unknown SETTINGS identifier is ignored (RFC 9113 §6.5.2)")
def _(cfg, conn):
    conn.handshake()
    conn.settings((0xFF, 1))
    conn.ping(ZEROS)
    expect_ping_ack(conn, ZEROS)


@case("http2/6.5.3/1", "repeated SETTINGS_INITIAL_WINDOW_SIZE values apply in order, "
                       "the last one wins (RFC 9113 §6.5.3)")
def _(cfg, conn):
    need_response_body(cfg, conn, 1)
    conn.handshake()
    conn.settings((INITIAL_WINDOW_SIZE, 100), (INITIAL_WINDOW_SIZE, 1))
    expect_settings_ack(conn)
    conn.request(1)
    expect_data_of_length(conn, 1)


@case("http2/6.5.3/2", "SETTINGS is acknowledged (RFC 9113 §6.5.3)")
def _(cfg, conn):
    conn.handshake()
    conn.settings((ENABLE_PUSH, 0))
    expect_settings_ack(conn)


# http2/6.7: PING

@case("http2/6.7/1", "PING is answered with an ACK carrying the same data "
                     "(RFC 9113 §6.7)")
def _(cfg, conn):
    conn.handshake()
    conn.ping(H2SPEC)
    expect_ping_ack(conn, H2SPEC)


@case("http2/6.7/2", "a PING ACK is not answered (RFC 9113 §6.7)")
def _(cfg, conn):
    conn.handshake()
    conn.ping(b"invalid\0", ack=True)
    conn.ping(H2SPEC)
    expect_ping_ack(conn, H2SPEC)


@case("http2/6.7/3", "PING on stream 1 is a connection PROTOCOL_ERROR (RFC 9113 §6.7)")
def _(cfg, conn):
    conn.handshake()
    conn.send(raw_frame(PING, 0, 1, ZEROS))
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2/6.7/4", "PING of 6 octets is a connection FRAME_SIZE_ERROR "
                     "(RFC 9113 §6.7)")
def _(cfg, conn):
    conn.handshake()
    conn.send(raw_frame(PING, 0, 0, bytes(6)))
    expect_connection_error(conn, FRAME_SIZE_ERROR)


# http2/6.8: GOAWAY

@case("http2/6.8/1", "GOAWAY on stream 1 is a connection PROTOCOL_ERROR "
                     "(RFC 9113 §6.8)")
def _(cfg, conn):
    conn.handshake()
    conn.send(raw_frame(GOAWAY, 0, 1, bytes(8)))
    expect_connection_error(conn, PROTOCOL_ERROR)


# http2/6.9: WINDOW_UPDATE

@case("http2/6.9/1", "a connection WINDOW_UPDATE of 0 is a connection PROTOCOL_ERROR "
                     "(RFC 9113 §6.9)")
def _(cfg, conn):
    conn.handshake()
    conn.window_update(0, 0)
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2/6.9/2", "a stream WINDOW_UPDATE of 0 is a PROTOCOL_ERROR (RFC 9113 §6.9)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1, end_stream=False)
    conn.window_update(1, 0)
    expect_stream_error(conn, PROTOCOL_ERROR)


@case("http2/6.9/3", "WINDOW_UPDATE of 3 octets is a connection FRAME_SIZE_ERROR "
                     "(RFC 9113 §6.9)")
def _(cfg, conn):
    conn.handshake()
    conn.send(raw_frame(WINDOW_UPDATE, 0, 0, b"\x00\x00\x01"))
    expect_connection_error(conn, FRAME_SIZE_ERROR)


@case("http2/6.9.1/1", "with an initial window of 1 the response DATA is 1 octet "
                       "(RFC 9113 §6.9.1)")
def _(cfg, conn):
    need_response_body(cfg, conn, 1)
    conn.handshake()
    conn.settings((INITIAL_WINDOW_SIZE, 1))
    expect_settings_ack(conn)
    conn.request(1)
    expect_data_of_length(conn, 1)


@case("http2/6.9.1/2", "a connection window above 2^31-1 is a GOAWAY FLOW_CONTROL_ERROR "
                       "(RFC 9113 §6.9.1)")
def _(cfg, conn):
    conn.handshake()
    conn.window_update(0, MAX_WINDOW)
    conn.window_update(0, MAX_WINDOW)
    expected = "GOAWAY frame (FLOW_CONTROL_ERROR)"
    event = first_frame(conn, GOAWAY, expected)
    if event.error_code() != FLOW_CONTROL_ERROR:
        raise Failed(expected, event)


@case("http2/6.9.1/3", "a stream window above 2^31-1 is a RST_STREAM FLOW_CONTROL_ERROR "
                       "(RFC 9113 §6.9.1)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1, end_stream=False)
    conn.window_update(1, MAX_WINDOW)
    conn.window_update(1, MAX_WINDOW)
    expected = "RST_STREAM frame on stream 1 (FLOW_CONTROL_ERROR)"
    event = first_frame(conn, RST_STREAM, expected)
    if event.stream_id != 1 or event.error_code() != FLOW_CONTROL_ERROR:
        raise Failed(expected, event)


@case("http2/6.9.2/1", "raising SETTINGS_INITIAL_WINDOW_SIZE from 0 to 1 lets 1 octet "
                       "of an open stream through (RFC 9113 §6.9.2)")
def _(cfg, conn):
    need_response_body(cfg, conn, 1)
    conn.handshake()
    conn.settings((INITIAL_WINDOW_SIZE, 0))
    expect_settings_ack(conn)
    conn.request(1)
    conn.settings((INITIAL_WINDOW_SIZE, 1))
    expect_data_of_length(conn, 1)


@case("http2/6.9.2/2", "a SETTINGS change may make a stream window negative, and it is "
                       "tracked (RFC 9113 §6.9.2)")
def _(cfg, conn):
    need_response_body(cfg, conn, 5)
    conn.handshake()
    conn.settings((INITIAL_WINDOW_SIZE, 3))
    expect_settings_ack(conn)
    conn.request(1)
    first_frame(conn, DATA, "DATA frame")  # 3 octets: the window is now 0
    conn.settings((INITIAL_WINDOW_SIZE, 2))  # window -1
    expect_settings_ack(conn)
    conn.window_update(1, 2)  # window 1
    expect_data_of_length(conn, 1)


@case("http2/6.9.2/3", "SETTINGS_INITIAL_WINDOW_SIZE of 2^31 is a connection "
                       "FLOW_CONTROL_ERROR (RFC 9113 §6.9.2)")
def _(cfg, conn):
    conn.handshake()
    conn.send(raw_frame(SETTINGS, 0, 0, struct.pack(">HI", INITIAL_WINDOW_SIZE, 1 << 31)))
    expect_connection_error(conn, FLOW_CONTROL_ERROR)


# http2/6.10: CONTINUATION

@case("http2/6.10/1", "HEADERS followed by two CONTINUATIONs is accepted "
                      "(RFC 9113 §6.10)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1, end_headers=False)
    conn.continuation(1, conn.encode(cfg.dummy_headers(1)), end_headers=False)
    conn.continuation(1, conn.encode(cfg.dummy_headers(1)), end_headers=True)
    expect_headers(conn, 1)


@case("http2/6.10/2", "DATA after a CONTINUATION without END_HEADERS is a connection "
                      "PROTOCOL_ERROR (RFC 9113 §6.10)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1, "POST", end_stream=False, end_headers=False)
    conn.continuation(1, conn.encode(cfg.dummy_headers(1)), end_headers=False)
    conn.data(1, b"test", end_stream=True)
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2/6.10/3", "CONTINUATION on stream 0 is a connection PROTOCOL_ERROR "
                      "(RFC 9113 §6.10)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1, end_headers=False)
    block = conn.encode(cfg.dummy_headers(1))
    conn.send(raw_frame(CONTINUATION, END_HEADERS, 0, block))
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2/6.10/4", "CONTINUATION after HEADERS with END_HEADERS is a connection "
                      "PROTOCOL_ERROR (RFC 9113 §6.10)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1)
    conn.continuation(1, conn.encode(cfg.dummy_headers(1)), end_headers=True)
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2/6.10/5", "CONTINUATION after a CONTINUATION with END_HEADERS is a "
                      "connection PROTOCOL_ERROR (RFC 9113 §6.10)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1, end_headers=False)
    conn.continuation(1, conn.encode(cfg.dummy_headers(1)), end_headers=True)
    conn.continuation(1, conn.encode(cfg.dummy_headers(1)), end_headers=True)
    expect_connection_error(conn, PROTOCOL_ERROR)


@case("http2/6.10/6", "CONTINUATION after DATA is a connection PROTOCOL_ERROR "
                      "(RFC 9113 §6.10)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1, "POST", end_stream=False, end_headers=False)
    conn.data(1, b"test", end_stream=True)
    conn.continuation(1, conn.encode(cfg.dummy_headers(1)), end_headers=False)
    block = conn.encode(cfg.dummy_headers(1))
    conn.send(raw_frame(CONTINUATION, END_HEADERS, 0, block))
    expect_connection_error(conn, PROTOCOL_ERROR)


# http2/7: error codes

@case("http2/7/1", "GOAWAY with an unknown error code has no special effect "
                   "(RFC 9113 §7)")
def _(cfg, conn):
    conn.handshake()
    conn.goaway(0, UNKNOWN_ERROR)
    conn.ping(H2SPEC)
    expect_ping_ack_or_close(conn, H2SPEC)


@case("http2/7/2", "RST_STREAM with an unknown error code has no special effect "
                   "(RFC 9113 §7)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1, "POST", end_stream=False)
    conn.rst_stream(1, UNKNOWN_ERROR)
    conn.ping(ZEROS)
    expect_ping_ack_or_close(conn, ZEROS)


# http2/8: HTTP message exchanges

@case("http2/8.1/1", "trailers without END_STREAM are malformed: PROTOCOL_ERROR "
                     "(RFC 9113 §8.1)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1, "POST", end_stream=False)
    conn.data(1, b"test")
    conn.headers(1, conn.encode([("x-test", "ok")]), end_stream=False)
    expect_stream_error(conn, PROTOCOL_ERROR)


def malformed_request_case(case_id, description, fields):
    """A request whose field section is malformed: a PROTOCOL_ERROR stream error."""
    @case(case_id, description)
    def _(cfg, conn):
        conn.handshake()
        conn.headers(1, conn.encode(fields(cfg)), end_stream=True)
        expect_stream_error(conn, PROTOCOL_ERROR)


def without(cfg, name):
    return [field for field in cfg.request() if field[0] != name]


malformed_request_case(
    "http2/8.1.2/1", "an uppercase field name is malformed (RFC 9113 §8.2.1)",
    lambda cfg: cfg.request() + [("X-TEST", "ok")])
malformed_request_case(
    "http2/8.1.2.1/1", "an unknown pseudo-header field is malformed (RFC 9113 §8.3)",
    lambda cfg: cfg.request() + [(":test", "ok")])
malformed_request_case(
    "http2/8.1.2.1/2", "the response pseudo-header :status in a request is malformed "
    "(RFC 9113 §8.3)",
    lambda cfg: cfg.request() + [(":status", "200")])


@case("http2/8.1.2.1/3", "a pseudo-header field in trailers is malformed "
                         "(RFC 9113 §8.3)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1, "POST", end_stream=False)
    conn.data(1, b"test")
    conn.headers(1, conn.encode([(":method", "POST")]), end_stream=False)
    expect_stream_error(conn, PROTOCOL_ERROR)


malformed_request_case(
    "http2/8.1.2.1/4", "a pseudo-header field after a regular field is malformed "
    "(RFC 9113 §8.3)",
    lambda cfg: [("x-test", "ok")] + cfg.request())
malformed_request_case(
    "http2/8.1.2.2/1", "a connection-specific field (connection) is malformed "
    "(RFC 9113 §8.2.2)",
    lambda cfg: cfg.request() + [("connection", "keep-alive")])
malformed_request_case(
    "http2/8.1.2.2/2", "TE with a value other than \"trailers\" is malformed "
    "(RFC 9113 §8.2.2)",
    lambda cfg: cfg.request() + [("trailers", "test"), ("te", "trailers, deflate")])
malformed_request_case(
    "http2/8.1.2.3/1", "an empty :path is malformed (RFC 9113 §8.3.1)",
    lambda cfg: [(n, "" if n == ":path" else v) for n, v in cfg.request()])
# As h2spec does, this one also leaves :scheme out: only :path and :authority are sent.
malformed_request_case(
    "http2/8.1.2.3/2", "a request without :method (nor :scheme) is malformed "
    "(RFC 9113 §8.3.1)",
    lambda cfg: without(cfg, ":method")[1:])
malformed_request_case(
    "http2/8.1.2.3/3", "a request without :scheme is malformed (RFC 9113 §8.3.1)",
    lambda cfg: without(cfg, ":scheme"))
malformed_request_case(
    "http2/8.1.2.3/4", "a request without :path is malformed (RFC 9113 §8.3.1)",
    lambda cfg: without(cfg, ":path"))
malformed_request_case(
    "http2/8.1.2.3/5", "a repeated :method is malformed (RFC 9113 §8.3.1)",
    lambda cfg: cfg.request() + [(":method", "GET")])
malformed_request_case(
    "http2/8.1.2.3/6", "a repeated :scheme is malformed (RFC 9113 §8.3.1)",
    lambda cfg: cfg.request() + [(":scheme", "http")])
malformed_request_case(
    "http2/8.1.2.3/7", "a repeated :path is malformed (RFC 9113 §8.3.1)",
    lambda cfg: cfg.request() + [(":path", cfg.path)])


@case("http2/8.1.2.6/1", "content-length different from the DATA length is malformed "
                         "(RFC 9113 §8.1.1)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1, "POST", end_stream=False, extra=[("content-length", "1")])
    conn.data(1, b"test", end_stream=True)
    expect_stream_error(conn, PROTOCOL_ERROR)


@case("http2/8.1.2.6/2", "content-length different from the sum of DATA lengths is "
                         "malformed (RFC 9113 §8.1.1)")
def _(cfg, conn):
    conn.handshake()
    conn.request(1, "POST", end_stream=False, extra=[("content-length", "1")])
    conn.data(1, b"test")
    conn.data(1, b"test", end_stream=True)
    expect_stream_error(conn, PROTOCOL_ERROR)


@case("http2/8.2/1", "PUSH_PROMISE from a client is a connection PROTOCOL_ERROR "
                     "(RFC 9113 §8.4)")
def _(cfg, conn):
    conn.handshake()
    conn.push_promise(1, 3, conn.encode(cfg.request()))
    expect_connection_error(conn, PROTOCOL_ERROR)


# hpack: decoding errors must be connection COMPRESSION_ERRORs (RFC 9113 §4.3)

def hpack_error_case(case_id, description, tail=b"", head=None):
    @case(case_id, description)
    def _(cfg, conn):
        conn.handshake()
        send_with_representation(conn, tail=tail, head=head(conn) if head else b"")
        expect_connection_error(conn, COMPRESSION_ERROR)


# After the common fields the dynamic table holds 2 entries: the last index is 63.
hpack_error_case("hpack/2.3.3/1", "indexed field line with index 70, past both tables "
                 "(RFC 7541 §2.3.3)", tail=hpack_integer(70, 7, 0x80))
hpack_error_case("hpack/2.3.3/2", "literal field line naming index 70, past both tables "
                 "(RFC 7541 §2.3.3)", tail=hpack_integer(70, 6, 0x40) + b"\x00")
hpack_error_case("hpack/4.2/1", "a dynamic table size update after a field line "
                 "(RFC 7541 §4.2)", tail=table_size_update(1))
# Huffman-coded values for a literal x-test field (RFC 7541 §5.2) that a decoder must
# reject: padding longer than 7 bits, padding of 0-bits instead of 1-bits, and a string
# that contains the 30-bit EOS code.
_X_TEST = b"\x00" + hpack_string("x-test", True)
hpack_error_case("hpack/5.2/1", "Huffman string padded with more than 7 bits "
                 "(RFC 7541 §5.2)", tail=_X_TEST + b"\x84\x49\x50\x9f\xff")
hpack_error_case("hpack/5.2/2", "Huffman string padded with zero bits (RFC 7541 §5.2)",
                 tail=_X_TEST + b"\x83\x49\x50\x90")
hpack_error_case("hpack/5.2/3", "Huffman string containing the EOS symbol "
                 "(RFC 7541 §5.2)", tail=_X_TEST + b"\x87\x49\x51\xff\xff\xff\xfa\x7f")
hpack_error_case("hpack/6.1/1", "indexed field line with index 0 (RFC 7541 §6.1)",
                 tail=hpack_integer(0, 7, 0x80))
hpack_error_case(
    "hpack/6.3/1", "a table size update above SETTINGS_HEADER_TABLE_SIZE "
    "(RFC 7541 §6.3)",
    head=lambda conn: table_size_update(
        conn.server_settings.get(HEADER_TABLE_SIZE, DEFAULT_TABLE_SIZE) + 1))


# --- runner --------------------------------------------------------------------------------

def run_case(cfg, test):
    """Run one case on its own connection: returns (result, detail)."""
    deadline = time.monotonic() + CASE_BUDGET * cfg.timeout
    try:
        conn = Conn(cfg, deadline)
    except OSError as exc:
        return "FAIL", f"expected: a TCP connection to {cfg.host}:{cfg.port}; got: {exc}"
    try:
        test.run(cfg, conn)
        return "PASS", ""
    except Skipped as exc:
        return "SKIP", str(exc)
    except Failed as exc:
        return "FAIL", str(exc)
    except OSError as exc:
        return "FAIL", f"expected: a working connection; got: {exc}"
    finally:
        conn.close()


def selected(case_id, selectors):
    """h2spec-style selection: a spec ("http2"), a section and its subsections
    ("http2/6.5" also picks http2/6.5.2/1), or one case ("http2/6.5/1")."""
    if not selectors:
        return True
    spec, section, _ = case_id.split("/")
    for sel in selectors:
        parts = sel.strip("/").split("/")
        if parts[0] != spec:
            continue
        if len(parts) == 1:
            return True
        if len(parts) == 2 and (section == parts[1] or section.startswith(parts[1] + ".")):
            return True
        if len(parts) == 3 and case_id == "/".join(parts):
            return True
    return False


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="HTTP/2 server conformance cases after h2spec (cleartext h2c).")
    parser.add_argument("--host", default="127.0.0.1", help="server address")
    parser.add_argument("--port", type=int, help="server port (required to run cases)")
    parser.add_argument("--path", default="/", help=":path of the requests")
    parser.add_argument("--timeout", type=float, default=1.0,
                        help="seconds to wait for each awaited frame (default 1.0)")
    parser.add_argument("--max-header-length", type=int, default=4000,
                        help="length of the filler header values (h2spec's default 4000)")
    parser.add_argument("--case", action="extend", nargs="+", default=[], metavar="ID",
                        help="run only these cases, sections or specs "
                             "(e.g. http2/5.1/8, http2/6.5, hpack)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--verbose", action="store_true",
                        help="trace the frames sent and received on stderr")
    parser.add_argument("--list", action="store_true",
                        help="print the case ids and descriptions, run nothing")
    args = parser.parse_args(argv)
    if args.port is None and not args.list:
        parser.error("--port is required")
    if args.port is not None and not 0 < args.port < 65536:
        parser.error("--port must be in 1..65535")
    if not args.timeout > 0:
        parser.error("--timeout must be positive")
    if args.max_header_length < 0:
        parser.error("--max-header-length must not be negative")
    unknown = [sel for sel in args.case
               if not any(selected(c.id, [sel]) for c in CASES)]
    if unknown:
        parser.error(f"no case matches: {' '.join(unknown)}")
    return args


def main(argv=None):
    sys.stdout.reconfigure(errors="replace")  # "§" in the descriptions, any locale
    args = parse_args(argv)
    cases = [c for c in CASES if selected(c.id, args.case)]
    if args.list:
        for test in cases:
            print(f"{test.id} {test.description}")
        return 0

    cfg = Config(args.host, args.port, args.path, args.timeout, args.max_header_length,
                 args.verbose)
    results = []
    counts = {"PASS": 0, "SKIP": 0, "FAIL": 0}
    for test in cases:
        if cfg.verbose:
            trace("case", f"{test.id} {test.description}")
        result, detail = run_case(cfg, test)
        counts[result] += 1
        results.append({"id": test.id, "result": result, "detail": detail,
                        "description": test.description})
        print(f"{result} {test.id} {test.description}", flush=True)
        if result == "FAIL":
            print(f"    {detail}", flush=True)

    total = len(cases)
    print(f"{total} cases, {counts['PASS']} passed, {counts['SKIP']} skipped, "
          f"{counts['FAIL']} failed")
    if args.json:
        report = {"total": total, "passed": counts["PASS"], "skipped": counts["SKIP"],
                  "failed": counts["FAIL"], "cases": results}
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(report, out, indent=1)
            out.write("\n")
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
