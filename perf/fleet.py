#!/usr/bin/env python3
"""Fleet simulation: one etcd, 4 backends and 8 ringway instances (one worker each) on
loopback, every instance discovering the backends in etcd (Kitex's registry-etcd layout).
It makes CHANGES changes of each kind, one at a time:

  add              a backend's key is put (under a lease kept alive by etcdctl)
  remove           a backend's key is deleted (Kitex's graceful stop)
  expire           a backend's lease stops being kept alive and etcd expires it (TTL 2 s)
  burst            100 keys put in one transaction (then deleted in one), counted once

and measures convergence: from the response to the etcd write (or, for an expiry, from the
moment this script sees the key gone) until every worker of every instance routes on a
revision at least that new (`ringway_discovery_applied_revision` on each admin endpoint,
polled). A light load runs through every instance all along, and each backend notes when it
was last called: a backend removed from the registry must get no call after every instance
converged on its removal (the data-plane cross-check). Prints p50 / p99 / max per kind and
snapshots (lists sent) per burst; --json FILE keeps every sample.

    perf/fleet.py [--changes 50] [--instances 8]    (scripts/fleet.sh runs it)

Builds nothing: run `cargo build --release` first. Needs etcd and etcdctl (Debian's
etcd-server and etcd-client). Every process it starts is stopped by its handle.
"""
import argparse
import base64
import http.client
import json
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (same directory: free ports, waiting for them, the binaries)

SERVICE = "echo"
PREFIX = f"kitex/registry-etcd/{SERVICE}/"


class Backend:
    """A framed-binary Thrift server that answers every call and notes when it was called."""

    def __init__(self, idx):
        self.idx = idx
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.addr = f"127.0.0.1:{self.port}"
        self.calls = 0
        self.last_call = 0.0
        self.stop = False
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                continue
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        c.settimeout(0.5)
        buf = b""
        while not self.stop:
            try:
                chunk = c.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            out = b""
            while len(buf) >= 4:
                n = struct.unpack(">I", buf[:4])[0] + 4
                if len(buf) < n:
                    break
                f, buf = buf[:n], buf[n:]
                ln = struct.unpack(">I", f[8:12])[0]
                name, seq = f[12:12 + ln], f[12 + ln:16 + ln]
                body = b"\x0b\x00\x00" + struct.pack(">I", 1) + bytes([48 + self.idx]) + b"\x00"
                m = b"\x80\x01\x00\x02" + struct.pack(">I", ln) + name + seq + body
                out += struct.pack(">I", len(m)) + m
                self.calls += 1
                self.last_call = time.monotonic()
            if out:
                try:
                    c.sendall(out)
                except OSError:
                    return


class Etcd:
    def __init__(self, tmp):
        self.client, self.peer = compare.free_port(), compare.free_port()
        self.url = f"http://127.0.0.1:{self.client}"
        self.proc = subprocess.Popen(
            ["etcd", "--name", "f", "--data-dir", os.path.join(tmp, "etcd"),
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", f"http://127.0.0.1:{self.peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer}",
             "--initial-cluster", f"f=http://127.0.0.1:{self.peer}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        compare.wait_port(self.client, self.proc, "etcd")
        for _ in range(100):
            try:
                self.post("/v3/kv/range", {"key": b64("x")})
                return
            except OSError:
                time.sleep(0.1)

    def post(self, path, body):
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        return json.loads(urllib.request.urlopen(req, timeout=5).read())

    def put(self, key, value, lease=None):
        body = {"key": b64(key), "value": b64(value)}
        if lease:
            body["lease"] = lease
        return int(self.post("/v3/kv/put", body)["header"]["revision"])

    def delete(self, key):
        return int(self.post("/v3/kv/deleterange", {"key": b64(key)})["header"]["revision"])

    def grant(self, ttl):
        return self.post("/v3/lease/grant", {"TTL": ttl})["ID"]

    def keep_alive(self, lease):
        return subprocess.Popen(["etcdctl", "--endpoints", self.url, "lease", "keep-alive", "%x" % int(lease)],
                                env=dict(os.environ, ETCDCTL_API="3"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def exists(self, key):
        r = self.post("/v3/kv/range", {"key": b64(key)})
        return int(r.get("count", "0")) > 0, int(r["header"]["revision"])

    def txn_puts(self, kvs):
        ops = [{"request_put": {"key": b64(k), "value": b64(v)}} for k, v in kvs]
        return int(self.post("/v3/kv/txn", {"success": ops})["header"]["revision"])

    def txn_deletes(self, keys):
        ops = [{"request_delete_range": {"key": b64(k)}} for k in keys]
        return int(self.post("/v3/kv/txn", {"success": ops})["header"]["revision"])


def b64(s):
    return base64.b64encode(s.encode()).decode()


def value(addr):
    return json.dumps({"network": "tcp", "address": addr, "weight": 10, "tags": {}})


def start_ringway(tmp, i, etcd_url):
    port, admin = compare.free_port(), compare.free_port()
    conf = os.path.join(tmp, f"ringway-{i}.toml")
    with open(conf, "w") as f:
        f.write(f"""[runtime]
workers = 1
driver = "epoll"
drain_timeout = "1s"
[admin]
address = "127.0.0.1:{admin}"
[[listener]]
name = "fleet"
address = "127.0.0.1:{port}"
routes = [ {{ cluster = "echo" }} ]
[[registry]]
name = "fleet"
kind = "etcd"
endpoints = ["{etcd_url}"]
[[cluster]]
name = "echo"
request_timeout = "2s"
discovery = {{ registry = "fleet", service = "{SERVICE}" }}
""")
    log = open(os.path.join(tmp, f"ringway-{i}.log"), "w")
    p = subprocess.Popen([os.path.join(compare.BIN, "ringway"), "run", "--config", conf], stderr=log)
    compare.wait_port(port, p, "ringway")
    compare.wait_port(admin, p, "ringway admin")
    return p, port, admin


_conns = threading.local()


def applied(admin):
    """Every worker's applied revision for the cluster, and lists sent, from /metrics (on a
    kept-alive connection per thread and instance: a new connection waits for the admin
    endpoint's accept poll, up to 20 ms)."""
    conns = _conns.__dict__.setdefault("by_admin", {})
    for attempt in range(2):
        c = conns.get(admin)
        if c is None:
            c = conns[admin] = http.client.HTTPConnection("127.0.0.1", admin, timeout=5)
        try:
            c.request("GET", "/metrics")
            text = c.getresponse().read().decode()
            break
        except (OSError, http.client.HTTPException):
            c.close()
            conns.pop(admin, None)
            if attempt:
                raise
    revs, updates = [], 0
    for line in text.splitlines():
        if line.startswith("ringway_discovery_applied_revision{"):
            revs.append(int(float(line.rsplit(" ", 1)[1])))
        elif line.startswith("ringway_registry_updates_total{"):
            updates = int(float(line.rsplit(" ", 1)[1]))
    return revs, updates


def wait_converged(admins, rev, since, limit=10.0):
    """Seconds from `since` until every worker of every instance is at `rev` or later: each
    instance polled by a thread of its own, the time of the answer that first shows it (an
    upper bound: the workers were there a little before the answer came back)."""
    done = {}

    def poll(a):
        while time.monotonic() - since < limit:
            revs, _ = applied(a)
            if revs and min(revs) >= rev:
                done[a] = time.monotonic()
                return
    threads = [threading.Thread(target=poll, args=(a,)) for a in admins]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    missing = [a for a in admins if a not in done]
    if missing:
        raise RuntimeError(f"instances {missing} did not reach revision {rev} in {limit} s")
    return max(done.values()) - since


def load(port, stop, errors):
    """About 100 calls a second through one instance, each on its own connection turn."""
    seq = 0
    s = None
    while not stop.is_set():
        try:
            if s is None:
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
            seq += 1
            m = b"\x80\x01\x00\x01" + struct.pack(">I", 3) + b"who" + struct.pack(">i", seq) + b"\x00"
            s.sendall(struct.pack(">I", len(m)) + m)
            hdr = recv_exact(s, 4)
            r = recv_exact(s, struct.unpack(">I", hdr)[0])
            if r[3] != 2:
                errors.append(r[8:].decode(errors="replace")[:120])
        except OSError as e:
            errors.append(str(e))
            s = None
        time.sleep(0.01)


def recv_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise OSError("closed")
        out += chunk
    return out


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--changes", type=int, default=50, help="changes of each kind")
    ap.add_argument("--instances", type=int, default=8)
    ap.add_argument("--json", help="also write every sample here")
    args = ap.parse_args()
    for tool in ("etcd", "etcdctl"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is needed (apt-get install etcd-server etcd-client)")
    tmp = tempfile.mkdtemp(prefix="ringway-fleet-")
    procs, keepers = [], []
    stop = threading.Event()
    errors = []
    try:
        etcd = Etcd(tmp)
        procs.append(etcd.proc)
        backends = [Backend(i) for i in range(4)]
        # The burst's 100 instances: real listeners too, so calls routed to them succeed.
        crowd = [Backend(4) for _ in range(100)]
        lease = etcd.grant(600)
        keepers.append(etcd.keep_alive(lease))
        # Two backends always registered, two that come and go.
        for b in backends[:2]:
            etcd.put(PREFIX + b.addr, value(b.addr), lease)
        instances = [start_ringway(tmp, i, etcd.url) for i in range(args.instances)]
        procs.extend(p for p, _, _ in instances)
        admins = [a for _, _, a in instances]
        rev = etcd.exists(PREFIX + backends[0].addr)[1]
        wait_converged(admins, rev, time.monotonic(), limit=30)
        loaders = [threading.Thread(target=load, args=(port, stop, errors), daemon=True) for _, port, _ in instances]
        for t in loaders:
            t.start()
        samples = {"add": [], "remove": [], "expire": [], "burst": []}
        lists_per_burst = []
        crosscheck = []  # calls a removed backend got after convergence
        mover = backends[2]
        for k in range(args.changes):
            # add
            t0 = time.monotonic()
            rev = etcd.put(PREFIX + mover.addr, value(mover.addr), lease)
            samples["add"].append(wait_converged(admins, rev, t0))
            time.sleep(0.05)
            # graceful remove, then the data-plane check
            t0 = time.monotonic()
            rev = etcd.delete(PREFIX + mover.addr)
            samples["remove"].append(wait_converged(admins, rev, t0))
            # A call already on its way may still land; from 20 ms on, none may.
            time.sleep(0.02)
            calls = mover.calls
            time.sleep(0.1)
            crosscheck.append(mover.calls - calls)
            # lease expiry: its own short lease, kept alive, then let go
            short = etcd.grant(2)
            keeper = etcd.keep_alive(short)
            t_put = time.monotonic()
            rev = etcd.put(PREFIX + backends[3].addr, value(backends[3].addr), short)
            wait_converged(admins, rev, t_put)
            keeper.kill()
            keeper.wait()
            while True:
                there, rev = etcd.exists(PREFIX + backends[3].addr)
                if not there:
                    break
                time.sleep(0.005)
            t0 = time.monotonic()
            samples["expire"].append(wait_converged(admins, rev, t0))
            # burst: 100 instances (real listeners) registered in one transaction
            before = sum(applied(a)[1] for a in admins)
            keys = [PREFIX + b.addr for b in crowd]
            t0 = time.monotonic()
            rev = etcd.txn_puts([(PREFIX + b.addr, value(b.addr)) for b in crowd])
            samples["burst"].append(wait_converged(admins, rev, t0))
            lists_per_burst.append((sum(applied(a)[1] for a in admins) - before) / len(admins))
            rev = etcd.txn_deletes(keys)
            wait_converged(admins, rev, time.monotonic())
            print(f"round {k + 1}/{args.changes}: add {samples['add'][-1] * 1000:.0f} ms, "
                  f"remove {samples['remove'][-1] * 1000:.0f} ms, expire {samples['expire'][-1] * 1000:.0f} ms, "
                  f"burst {samples['burst'][-1] * 1000:.0f} ms", file=sys.stderr)
        stop.set()
        for t in loaders:
            t.join(timeout=5)
        print(f"Fleet: 1 etcd, 4 backends, {args.instances} ringway instances (one worker each), "
              f"{args.changes} changes of each kind; convergence = etcd write answered -> every worker "
              f"of every instance on that revision (polled on the admin endpoints)")
        print("| change | n | p50 ms | p99 ms | max ms |")
        print("|---|---:|---:|---:|---:|")
        for kind, xs in samples.items():
            print(f"| {kind} | {len(xs)} | {pct(xs, 0.5) * 1000:.1f} | {pct(xs, 0.99) * 1000:.1f} | {max(xs) * 1000:.1f} |")
        print(f"lists sent per burst of 100 keys (per instance): mean {statistics.mean(lists_per_burst):.2f}, "
              f"max {max(lists_per_burst):.0f}")
        print(f"calls a removed backend got from 20 ms to 120 ms after every instance converged on its "
              f"removal: {sum(crosscheck)} (over {len(crosscheck)} removals)")
        print(f"load: {sum(b.calls for b in backends)} calls answered, {len(errors)} failed"
              + (f" (first: {errors[0]})" if errors else ""))
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"samples": samples, "lists_per_burst": lists_per_burst, "crosscheck": crosscheck,
                           "errors": errors[:50]}, f)
    finally:
        stop.set()
        for b in backends + crowd if "crowd" in locals() else []:
            b.stop = True
        for k in keepers:
            k.kill()
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
