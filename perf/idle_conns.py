#!/usr/bin/env python3
"""Memory per idle downstream connection: opens N connections to a proxy (default ringway,
one worker), sends one request on each (so every connection has been used), then leaves them
idle and reports the growth of the proxy's RSS divided by N.

    perf/idle_conns.py [--conns 10000] [--peer ringway|nginx|haproxy] [--then-close 10] [--rounds 1]
With --then-close S it then closes them all and samples the RSS once a second for S
seconds: does memory go back after a spike of connections? --rounds N repeats the spike
(open, use, close, wait S) N times on the same proxy and prints the RSS after each.
Builds nothing: run `cargo build --release` first (perf/compare.sh does).
"""
import argparse
import os
import resource
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (same directory: process helpers and peer start-up)


def call(sock, seq):
    name = b"echo"
    body = b"\x0b\x00\x01" + struct.pack(">I", 8) + struct.pack(">Ii", 0, seq) + b"\x00"
    msg = b"\x80\x01\x00\x01" + struct.pack(">I", len(name)) + name + struct.pack(">i", seq) + body
    sock.sendall(struct.pack(">I", len(msg)) + msg)
    need = 4
    data = b""
    while len(data) < need:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("closed")
        data += chunk
        if len(data) >= 4:
            need = 4 + struct.unpack(">I", data[:4])[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--peer", default="ringway")
    ap.add_argument("--driver", default="auto", help="ringway runtime.driver")
    ap.add_argument("--unused", action="store_true", help="connect only, send nothing")
    ap.add_argument("--then-close", type=int, default=0, metavar="S",
                    help="close them all, then sample the RSS every second for S seconds")
    ap.add_argument("--rounds", type=int, default=1, help="spikes in a row (with --then-close)")
    args = ap.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < args.conns + 500:
        sys.exit(f"the open-files hard limit ({hard}) is below {args.conns} connections")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by the proxy
    tmp = tempfile.mkdtemp(prefix="ringway-idle-")
    bport = compare.free_port()
    backend = subprocess.Popen([os.path.join(compare.BIN, "ringway-bench"), "echo", "thrift", "--listen",
                                f"127.0.0.1:{bport}"], stdout=subprocess.DEVNULL)
    compare.wait_port(bport, backend, "echo backend")
    start = {"ringway": lambda: compare.start_ringway(tmp, bport, args.driver),
             "nginx": lambda: compare.start_nginx(tmp, bport),
             "haproxy": lambda: compare.start_haproxy(tmp, bport)}[args.peer]
    peer = start()
    socks = []
    try:
        # One used connection first, so one-time allocations are not charged to the N.
        warm = socket.create_connection(("127.0.0.1", peer.port))
        call(warm, 1)
        time.sleep(0.5)
        before = compare.mem_kib(peer.proc, "VmRSS")
        after_rounds = []
        for rnd in range(args.rounds):
            for i in range(args.conns):
                s = socket.create_connection(("127.0.0.1", peer.port))
                if not args.unused:
                    call(s, i + 2)
                socks.append(s)
            time.sleep(1.0)
            after = compare.mem_kib(peer.proc, "VmRSS")
            per = (after - before) / args.conns
            used = "never used" if args.unused else "each used once"
            print(f"{args.peer}: {args.conns} idle connections ({used}): RSS {before / 1024:.1f} MiB -> "
                  f"{after / 1024:.1f} MiB, {per:.2f} KiB per connection")
            if not args.then_close:
                break
            for s in socks:
                s.close()
            socks.clear()
            samples = []
            for _ in range(args.then_close):
                time.sleep(1.0)
                samples.append(compare.mem_kib(peer.proc, "VmRSS"))
            series = " ".join(f"{k / 1024:.1f}" for k in samples)
            print(f"closed; RSS each second (MiB): {series}; last is {samples[-1] / before:.2f}x the "
                  f"{before / 1024:.1f} MiB before")
            after_rounds.append(samples[-1])
        if len(after_rounds) > 1:
            print("after each spike (MiB): " + " -> ".join(f"{k / 1024:.1f}" for k in [before] + after_rounds))
    finally:
        for s in socks:
            s.close()
        peer.stop()
        backend.terminate()
        backend.wait()


if __name__ == "__main__":
    main()
