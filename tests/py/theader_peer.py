#!/usr/bin/env python3
"""Apache Thrift (PyPI `thrift`) THeader peers for ringway's integration tests.

  theader_peer.py server [--protocol binary|compact]
      Listens on 127.0.0.1:0, prints the port on the first stdout line, and answers every
      CALL `m` with args {1: text} with a REPLY whose success string is
      "m:text|<value of the client's 'tag' THeader header>". Runs until killed.

  theader_peer.py client --port P [--clients N] [--calls M] [--protocol ...] [--method m]
      N threads, each on its own THeader connection, each making M calls with its own tag
      header and text, checking every reply (seqID, method, payload, tag). Prints one JSON
      line {"ok": n, "errors": [...], "exceptions": [...]} and exits 1 if anything failed.
"""
import argparse
import json
import sys
import threading

from thrift.protocol.THeaderProtocol import THeaderProtocol
from thrift.Thrift import TApplicationException, TMessageType, TType
from thrift.transport import TSocket, TTransport
from thrift.transport.THeaderTransport import THeaderClientType, THeaderSubprotocolID

PROTOCOLS = {"binary": THeaderSubprotocolID.BINARY, "compact": THeaderSubprotocolID.COMPACT}


def read_args(iprot):
    text = ""
    iprot.readStructBegin()
    while True:
        _, ftype, fid = iprot.readFieldBegin()
        if ftype == TType.STOP:
            break
        if fid in (0, 1) and ftype == TType.STRING:
            text = iprot.readString()
        else:
            iprot.skip(ftype)
        iprot.readFieldEnd()
    iprot.readStructEnd()
    return text


def write_string_struct(oprot, name, fid, value):
    oprot.writeStructBegin(name)
    oprot.writeFieldBegin("s", TType.STRING, fid)
    oprot.writeString(value)
    oprot.writeFieldEnd()
    oprot.writeFieldStop()
    oprot.writeStructEnd()


def serve_conn(sock, protocol):
    prot = THeaderProtocol(sock, (THeaderClientType.HEADERS,), protocol)
    try:
        while True:
            name, mtype, seqid = prot.readMessageBegin()
            text = read_args(prot)
            prot.readMessageEnd()
            if mtype == TMessageType.ONEWAY:
                continue
            tag = prot.get_headers().get(b"tag", b"").decode()
            prot.writeMessageBegin(name, TMessageType.REPLY, seqid)
            write_string_struct(prot, "result", 0, f"{name}:{text}|{tag}")
            prot.writeMessageEnd()
            prot.trans.flush()
    except (TTransport.TTransportException, EOFError, ConnectionError):
        pass
    finally:
        sock.close()


def server(args):
    srv = TSocket.TServerSocket(host="127.0.0.1", port=0)
    srv.listen()
    print(srv.handle.getsockname()[1], flush=True)
    while True:
        client = srv.accept()
        threading.Thread(target=serve_conn, args=(client, PROTOCOLS[args.protocol]), daemon=True).start()


def client(args):
    ok = [0]
    errors, exceptions = [], []
    lock = threading.Lock()

    def run(i):
        sock = TSocket.TSocket("127.0.0.1", args.port)
        sock.setTimeout(10_000)
        try:
            sock.open()
            prot = THeaderProtocol(sock, (THeaderClientType.HEADERS,), PROTOCOLS[args.protocol])
            tag = f"client{i}"
            for k in range(args.calls):
                seq = i * 100_000 + k + 1
                text = f"c{i}-n{k}"
                prot.set_header(b"tag", tag.encode())
                prot.writeMessageBegin(args.method, TMessageType.CALL, seq)
                write_string_struct(prot, "args", 1, text)
                prot.writeMessageEnd()
                prot.trans.flush()
                name, mtype, rseq = prot.readMessageBegin()
                if mtype == TMessageType.EXCEPTION:
                    exc = TApplicationException()
                    exc.read(prot)
                    prot.readMessageEnd()
                    with lock:
                        exceptions.append({"type": exc.type, "message": exc.message, "seq_ok": rseq == seq, "name": name})
                    continue
                got = read_args(prot)
                prot.readMessageEnd()
                want = f"{args.method}:{text}|{tag}"
                with lock:
                    if rseq != seq or name != args.method or got != want:
                        errors.append(f"client {i} call {k}: seq {rseq} (want {seq}), name {name!r}, got {got!r} want {want!r}")
                    else:
                        ok[0] += 1
        except Exception as e:  # noqa: BLE001 - every failure is reported, none hidden
            with lock:
                errors.append(f"client {i}: {type(e).__name__}: {e}")
        finally:
            sock.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"ok": ok[0], "errors": errors, "exceptions": exceptions}), flush=True)
    return 1 if errors else 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["server", "client"])
    p.add_argument("--port", type=int)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--protocol", choices=sorted(PROTOCOLS), default="binary")
    p.add_argument("--method", default="echo")
    args = p.parse_args()
    if args.mode == "server":
        server(args)
    else:
        sys.exit(client(args))


if __name__ == "__main__":
    main()
