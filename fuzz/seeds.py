#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target under fuzz/seeds/<target>/, from real peers'
encoders where there is one: Apache Thrift (PyPI `thrift`) for Framed binary and compact
calls and THeader frames, a hand-built Kitex TTHeader frame as tests/common/ttheader.rs
builds it, python-hyper's `hyperframe` and `hpack` for HTTP/2 frames and header blocks, and
the example config. Deterministic: running it again writes the same files.

Usage: python3 fuzz/seeds.py   (needs tests/py/requirements.txt and hyperframe, hpack)
"""

import os
import struct
import sys

from hpack import Encoder
from hyperframe.frame import (ContinuationFrame, DataFrame, GoAwayFrame, HeadersFrame, PingFrame,
                              PriorityFrame, RstStreamFrame, SettingsFrame, WindowUpdateFrame)
from thrift.protocol import TBinaryProtocol, TCompactProtocol
from thrift.Thrift import TMessageType
from thrift.transport import TTransport
from thrift.transport.THeaderTransport import THeaderTransport, THeaderClientType

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "seeds")


def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def thrift_message(proto_cls, name, seq, text, msg_type=TMessageType.CALL):
    buf = TTransport.TMemoryBuffer()
    p = proto_cls(buf)
    p.writeMessageBegin(name, msg_type, seq)
    p.writeStructBegin("args")
    p.writeFieldBegin("text", 11, 1)
    p.writeString(text)
    p.writeFieldEnd()
    p.writeFieldStop()
    p.writeStructEnd()
    p.writeMessageEnd()
    return buf.getvalue()


def framed(msg):
    return struct.pack(">I", len(msg)) + msg


def theader(proto_id, msg, seq):
    buf = TTransport.TMemoryBuffer()
    t = THeaderTransport(buf, [THeaderClientType.HEADERS], default_protocol=proto_id)
    t.set_header(b"isn", b"echo.svc")
    t.sequence_id = seq
    t.write(msg)
    t.flush()
    return buf.getvalue()


def ttheader(seq, str_kv, int_kv, payload):
    body = bytearray(b"\x00\x00")
    if str_kv:
        body += b"\x01" + struct.pack(">H", len(str_kv))
        for k, v in str_kv:
            body += struct.pack(">H", len(k)) + k + struct.pack(">H", len(v)) + v
    if int_kv:
        body += b"\x10" + struct.pack(">H", len(int_kv))
        for k, v in int_kv:
            body += struct.pack(">HH", k, len(v)) + v
    while len(body) % 4:
        body += b"\x00"
    meta = struct.pack(">HHiH", 0x1000, 0, seq, len(body) // 4)
    return struct.pack(">I", len(meta) + len(body) + len(payload)) + meta + bytes(body) + payload


def ttstream(sid, ftype, method, str_kv, payload):
    """A TTHeader Streaming frame (ref §3.1): flags 0x0002, protocol id 0x10, int keys 27 and 9."""
    f = bytearray(ttheader(sid, str_kv, [(27, ftype), (9, method)], payload))
    f[7] |= 0x02
    f[14] = 0x10
    return bytes(f)


def thrift_seeds():
    binary = thrift_message(TBinaryProtocol.TBinaryProtocol, "echo", 7, "hello")
    compact = thrift_message(TCompactProtocol.TCompactProtocol, "echo", 300, "hello")
    mux = thrift_message(TBinaryProtocol.TBinaryProtocol, "Echo:echo", 1, "x" * 40)
    oneway = thrift_message(TBinaryProtocol.TBinaryProtocol, "log", 9, "y", TMessageType.ONEWAY)
    reply = thrift_message(TCompactProtocol.TCompactProtocol, "echo", 2**31 - 1, "r", TMessageType.REPLY)
    frames = {
        "framed_binary": framed(binary),
        "framed_compact": framed(compact),
        "framed_multiplexed": framed(mux),
        "framed_oneway": framed(oneway),
        "framed_compact_reply": framed(reply),
        "theader_binary": theader(0, binary, 11),
        "theader_compact": theader(2, compact, 12),
        "ttheader_kitex": ttheader(5, [(b"isn", b"echo.svc"), (b"RPC_TRANSIT_k", b"v")],
                                   [(9, b"echo"), (6, b"echo.svc"), (12, b"250")], binary),
        "two_frames": framed(binary) + framed(compact),
        "ttstream_stream": ttstream(3, b"2", b"Echo", [(b"isn", b"svc"), (b"RPC_TRANSIT_k", b"v")], b"")
        + ttstream(3, b"3", b"Echo", [], b"\x0b\x00\x01\x00\x00\x00\x02hi\x00")
        + ttstream(3, b"4", b"Echo", [(b"biz-status", b"404")], b""),
        "ttstream_rst_exception": ttstream(5, b"5", b"Echo", [(b"ttscp", b"A,B")],
                                           thrift_message(TBinaryProtocol.TBinaryProtocol, "Echo", 5, "cancel",
                                                          TMessageType.EXCEPTION)),
        "unframed_binary": binary,
        "http1": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    }
    for name, data in frames.items():
        write("thrift_stream", name, data)
    for name, data in {"binary": binary, "compact": compact, "reply": reply, "mux": mux}.items():
        write("thrift_message", name, data)


REQUEST = [(":method", "POST"), (":scheme", "http"), (":path", "/ringway.test.Echo/Unary"),
           (":authority", "127.0.0.1"), ("content-type", "application/grpc"), ("te", "trailers"),
           ("grpc-timeout", "5S"), ("x-user", "seed")]
RESPONSE = [(":status", "200"), ("content-type", "application/grpc")]
TRAILERS = [("grpc-status", "0"), ("grpc-message", "ok")]


def h2_seeds():
    enc = Encoder()
    req = enc.encode(REQUEST)
    again = enc.encode(REQUEST)  # indexed from the dynamic table this time
    resp = enc.encode(RESPONSE)
    trailers = enc.encode(TRAILERS)
    huff = Encoder()
    huff_block = huff.encode(REQUEST, huffman=True)

    def ser(f):
        return f.serialize()

    h = HeadersFrame(1, data=req, flags=["END_HEADERS"])
    settings = SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 1 << 20,
                                          SettingsFrame.MAX_CONCURRENT_STREAMS: 100})
    data = DataFrame(1, data=b"\x00\x00\x00\x00\x05hello", flags=["END_STREAM"])
    padded = DataFrame(3, data=b"abc", flags=["PADDED"], pad_length=4)
    split_a = HeadersFrame(5, data=again[: len(again) // 2], flags=["END_STREAM"])
    split_b = ContinuationFrame(5, data=again[len(again) // 2:], flags=["END_HEADERS"])
    prio = HeadersFrame(7, data=huff_block, flags=["END_HEADERS", "PRIORITY"], depends_on=1,
                        stream_weight=16)
    conn = b"".join(ser(f) for f in [settings, h, data, WindowUpdateFrame(0, window_increment=1000),
                                     PingFrame(0, opaque_data=b"12345678"), PriorityFrame(3, depends_on=1),
                                     RstStreamFrame(1, error_code=8), padded, split_a, split_b, prio,
                                     GoAwayFrame(0, last_stream_id=7, error_code=0, additional_data=b"bye")])
    write("h2_frames", "connection", conn)
    write("h2_frames", "settings_ack", ser(SettingsFrame(0, flags=["ACK"])))
    write("h2_blocks", "connection", conn)
    write("h2_blocks", "response", ser(HeadersFrame(1, data=resp, flags=["END_HEADERS"]))
          + ser(HeadersFrame(1, data=trailers, flags=["END_HEADERS", "END_STREAM"])))
    # hpack: the first byte says where the input is cut into two blocks.
    for name, (a, b) in {"request_twice": (req, again), "response": (resp, trailers),
                         "huffman": (huff_block, b"")}.items():
        write("hpack", name, bytes([min(len(a), 255)]) + a + b)


def config_seeds():
    root = os.path.dirname(HERE)
    with open(os.path.join(root, "conf", "ringway.toml"), "rb") as f:
        write("config", "example", f.read())
    write("config", "minimal", b'[[listener]]\nname = "t"\nprotocol = "thrift"\naddress = "127.0.0.1:7000"\n'
          b'routes = [{ cluster = "c" }]\n[[cluster]]\nname = "c"\nendpoints = ["127.0.0.1:9100"]\n')


def main():
    thrift_seeds()
    h2_seeds()
    config_seeds()
    n = sum(len(files) for _, _, files in os.walk(OUT))
    print(f"{n} seed files under {OUT}")


if __name__ == "__main__":
    sys.exit(main())
