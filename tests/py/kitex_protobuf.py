#!/usr/bin/env python3
"""A Kitex Protobuf ping-pong client for ringway's tests, on Google's `protobuf` package.

  kitex_protobuf.py --port P --transport framed|ttheader --method M [--seq S]

Sends one CALL in Kitex's protobuf envelope (`90 01 00 01 | u32 len | method | u32 seq |
protobuf request`, Framed or inside a TTHeader frame with protocol id 0x04 as Kitex
clients write it) whose request is `EchoRequest { string text = 1; }`, reads one reply, and
prints one JSON line: the reply's envelope (version, message type, method, seq) and, for an
EXCEPTION, the `ErrorProto { int32 TypeID = 1; string Message = 2; }` parsed by protobuf
itself (kitex pkg/remote/codec/protobuf/error.proto). The message classes are built at run
time from descriptors, so no protoc is needed.
"""
import argparse
import json
import socket
import struct

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory


def classes():
    fdp = descriptor_pb2.FileDescriptorProto(name="kitex_test.proto", package="kitextest", syntax="proto3")
    err = fdp.message_type.add(name="ErrorProto")
    err.field.add(name="TypeID", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
                  label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    err.field.add(name="Message", number=2, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                  label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    req = fdp.message_type.add(name="EchoRequest")
    req.field.add(name="text", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                  label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    get = message_factory.GetMessageClass
    return get(pool.FindMessageTypeByName("kitextest.ErrorProto")), get(pool.FindMessageTypeByName("kitextest.EchoRequest"))


def ttheader(seq, method, payload):
    # ref §2.1/§2.3: protocol id 0x04 (Kitex Protobuf), no transforms, int KV {9: method}.
    body = bytes([0x04, 0x00]) + b"\x10" + struct.pack(">HHH", 1, 9, len(method)) + method
    body += b"\x00" * (-len(body) % 4)
    head = struct.pack(">HHiH", 0x1000, 0, seq, len(body) // 4)
    frame = head + body + payload
    return struct.pack(">I", len(frame)) + frame


def read_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise EOFError("connection closed")
        out += chunk
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--transport", choices=["framed", "ttheader"], default="framed")
    ap.add_argument("--method", default="Echo")
    ap.add_argument("--seq", type=int, default=42)
    args = ap.parse_args()
    ErrorProto, EchoRequest = classes()
    method = args.method.encode()
    body = EchoRequest(text="hello").SerializeToString()
    msg = struct.pack(">HBBI", 0x9001, 0, 1, len(method)) + method + struct.pack(">i", args.seq) + body
    if args.transport == "framed":
        wire = struct.pack(">I", len(msg)) + msg
    else:
        wire = ttheader(args.seq, method, msg)
    with socket.create_connection(("127.0.0.1", args.port), timeout=20) as s:
        s.sendall(wire)
        n = struct.unpack(">I", read_exact(s, 4))[0]
        frame = read_exact(s, n)
    at = 0
    header_seq = None
    if frame[:2] == b"\x10\x00":
        header_seq = struct.unpack(">i", frame[4:8])[0]
        at = 10 + struct.unpack(">H", frame[8:10])[0] * 4
    version, _, mtype, nlen = struct.unpack(">HBBI", frame[at:at + 8])
    name = frame[at + 8:at + 8 + nlen].decode()
    seq = struct.unpack(">i", frame[at + 8 + nlen:at + 12 + nlen])[0]
    rest = frame[at + 12 + nlen:]
    out = {"version": version, "type": mtype, "method": name, "seq": seq, "header_seq": header_seq}
    if mtype == 3:
        e = ErrorProto()
        e.ParseFromString(rest)
        out["type_id"] = e.TypeID
        out["message"] = e.Message
    print(json.dumps(out))


if __name__ == "__main__":
    main()
