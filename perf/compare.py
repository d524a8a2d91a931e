#!/usr/bin/env python3
"""Side-by-side benchmark: direct path vs ringway vs nginx vs HAProxy.

Thrift (framed-binary, ttheader, …): nginx `stream` and HAProxy `mode tcp` (L4 splices).
gRPC (--protocols grpc-unary,grpc-server-stream,grpc-bidi): nginx `grpc_pass` and HAProxy
`mode http` with `proto h2` on both sides; the backend is `ringway-bench echo grpc` (tonic).
TTHeader Streaming (--protocols ttstream-bidi,ttstream-server): nginx `stream` and HAProxy
`mode tcp` (L4 relays: neither speaks ttstream); the backend is `ringway-bench echo ttstream`.

One run, same load for every peer, peers alternated, several repeats, medians reported.
Proxies are pinned to core 0; the echo backend and the load generator share core 1.
Proxy CPU time per request is the on-CPU time of all the proxy's threads (from
/proc/PID/task/*/schedstat, in ns) divided by the replies of the run.

HGRM_DIR=DIR (environment): also keep each peer's measured latency distribution as
DIR/<peer>.hgrm (`ringway-bench load --hgrm`; the last repeat's) and draw them with
perf/plot.py into DIR/latency.png. With several protocols or levels, each pair gets its own
DIR/<protocol>-<level>/ holding those files.

Run it through perf/compare.sh (which builds the release binaries first).
"""
import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")
HALTPOLL = "/sys/module/haltpoll/parameters/guest_halt_poll_ns"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, timeout=10.0):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            sys.exit(f"{what} exited early with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} did not listen on {port} within {timeout}s")


def pids_of(proc):
    """The process and its children (nginx: master + workers)."""
    out, todo = [], [proc.pid]
    while todo:
        pid = todo.pop()
        out.append(pid)
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def cpu_ns(proc):
    total = 0
    for pid in pids_of(proc):
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def mem_kib(proc, field):
    total = 0
    for pid in pids_of(proc):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


class Peer:
    def __init__(self, name, port, proc=None):
        self.name, self.port, self.proc = name, port, proc
        self.rss_idle_kib = mem_kib(proc, "VmRSS") if proc else 0

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_ringway(tmp, backend_port, driver, grpc=False, busy_poll=None):
    port = free_port()
    conf = os.path.join(tmp, "ringway.toml")
    with open(conf, "w") as f:
        f.write(f"""[runtime]
workers = 1
driver = "{driver}"
drain_timeout = "2s"
{f'busy_poll = "{busy_poll}"' if busy_poll else ''}
[[listener]]
name = "bench"
protocol = "{'grpc' if grpc else 'thrift'}"
address = "127.0.0.1:{port}"
routes = [ {{ cluster = "echo" }} ]
[[cluster]]
name = "echo"
endpoints = ["127.0.0.1:{backend_port}"]
max_connections_per_endpoint = 4
max_requests_per_connection = 512
""")
    log = open(os.path.join(tmp, "ringway.log"), "w")
    p = subprocess.Popen(["taskset", "-c", "0", os.path.join(BIN, "ringway"), "run", "--config", conf], stderr=log)
    wait_port(port, p, "ringway")
    return Peer("ringway", port, p)


def start_nginx(tmp, backend_port, grpc=False):
    if not shutil.which("nginx"):
        return None
    port = free_port()
    prefix = os.path.join(tmp, "nginx")
    os.makedirs(os.path.join(prefix, "logs"), exist_ok=True)
    module = "/usr/lib/nginx/modules/ngx_stream_module.so"
    load = f"load_module {module};\n" if os.path.exists(module) else ""
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""{load}worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{ worker_connections 8192; }}
""")
        if grpc:
            f.write(f"""http {{
    access_log off;
    upstream echo {{ server 127.0.0.1:{backend_port}; keepalive 64; keepalive_requests 1000000000; }}
    server {{
        listen 127.0.0.1:{port} http2;
        http2_max_concurrent_streams 1024;
        http2_max_requests 1000000000;
        keepalive_requests 1000000000;
        location / {{ grpc_pass grpc://echo; }}
    }}
}}
""")
        else:
            f.write(f"""stream {{
    upstream echo {{ server 127.0.0.1:{backend_port}; }}
    server {{ listen 127.0.0.1:{port}; proxy_pass echo; }}
}}
""")
    p = subprocess.Popen(["taskset", "-c", "0", "nginx", "-p", prefix, "-c", conf], stderr=subprocess.DEVNULL)
    wait_port(port, p, "nginx")
    return Peer("nginx", port, p)


def start_haproxy(tmp, backend_port, grpc=False, busy_poll=False):
    if not shutil.which("haproxy"):
        return None
    port = free_port()
    conf = os.path.join(tmp, "haproxy.cfg")
    with open(conf, "w") as f:
        f.write(f"""global
    nbthread 1
    maxconn 8000{chr(10) + '    busy-polling' if busy_poll else ''}
defaults
    mode {'http' if grpc else 'tcp'}
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend f
    bind 127.0.0.1:{port}{' proto h2' if grpc else ''}
    default_backend b
backend b
    server echo 127.0.0.1:{backend_port}{' proto h2' if grpc else ''}
""")
    p = subprocess.Popen(["taskset", "-c", "0", "haproxy", "-db", "-f", conf], stderr=subprocess.DEVNULL)
    wait_port(port, p, "haproxy")
    return Peer("haproxy", port, p)


def load(port, protocol, conns, inflight, duration, warmup, payload, hgrm=None):
    cmd = ["taskset", "-c", "1", os.path.join(BIN, "ringway-bench"), "load", "--target", f"127.0.0.1:{port}",
           "--protocol", protocol, "-c", str(conns), "-m", str(inflight), "-d", duration, "--warmup", warmup,
           "--payload", str(payload), "--json"] + (["--hgrm", hgrm] if hgrm else [])
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if not out.stdout.strip():
        sys.exit(f"load generator failed: {out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def plot_hgrm(hgrm_dirs, peers, payload, repeats):
    """One latency.png per HGRM_DIR directory (one per protocol and level), a line per peer."""
    for (proto, level), d in hgrm_dirs.items():
        runs = [f"{os.path.join(d, p.name + '.hgrm')}:{p.name}" for p in peers
                if os.path.exists(os.path.join(d, p.name + ".hgrm"))]
        title = f"{proto} {level}, {payload} B" + (f" (last of {repeats} repeats)" if repeats > 1 else "")
        png = os.path.join(d, "latency.png")
        out = subprocess.run([sys.executable, os.path.join(ROOT, "perf", "plot.py"), "-o", png, "--title", title, *runs],
                             capture_output=True, text=True)
        if out.returncode == 0:
            print(f"latency plot: {png}")
        else:
            print(f"perf/plot.py failed for {d} (pip install matplotlib?): {out.stderr.strip()}", file=sys.stderr)


def ensure_installed(pkgs):
    missing = [p for p, binary in pkgs if not shutil.which(binary)]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"installing {' '.join(missing)} with apt-get …", flush=True)
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing, "libnginx-mod-stream"],
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, check=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--duration", default="5s")
    ap.add_argument("--warmup", default="1s")
    ap.add_argument("--levels", default="1x1,32x10", help="CONNSxINFLIGHT,…")
    ap.add_argument("--protocols", default="framed-binary,ttheader")
    ap.add_argument("--peers", default="direct,ringway,nginx,haproxy")
    ap.add_argument("--payload", type=int, default=64)
    ap.add_argument("--driver", default="auto", help="ringway runtime.driver")
    ap.add_argument("--raise-haltpoll", nargs="?", const=200000, type=int, metavar="NS",
                    help="raise guest_halt_poll_ns for the run (restored on exit); default 200000")
    ap.add_argument("--busy-poll", metavar="DURATION",
                    help="run ringway with runtime.busy_poll = DURATION and HAProxy with its equivalent, "
                         "`busy-polling` (nginx has none); HAProxy then polls even while idle, so it is "
                         "started only for its own runs")
    ap.add_argument("--json", help="also write every run and the medians here")
    args = ap.parse_args()

    old_haltpoll = None
    if os.path.exists(HALTPOLL):
        with open(HALTPOLL) as f:
            old_haltpoll = f.read().strip()

    def restore(*_):
        if args.raise_haltpoll is not None and old_haltpoll is not None:
            with open(HALTPOLL, "w") as f:
                f.write(old_haltpoll)

    def on_signal(sig, _frame):
        restore()
        sys.exit(128 + sig)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if args.raise_haltpoll is not None and old_haltpoll is not None:
        with open(HALTPOLL, "w") as f:
            f.write(str(args.raise_haltpoll))

    wanted = args.peers.split(",")
    pkgs = [(p, p) for p in ("nginx", "haproxy") if p in wanted]
    ensure_installed(pkgs)

    tmp = tempfile.mkdtemp(prefix="ringway-compare-")
    peers, backend = [], None
    try:
        protocols = args.protocols.split(",")
        kinds = {"grpc" if p.startswith("grpc") else "ttstream" if p.startswith("ttstream") else "thrift"
                 for p in protocols}
        if len(kinds) > 1:
            sys.exit("run gRPC, TTHeader Streaming and Thrift protocols separately (they need different backends)")
        kind = kinds.pop()
        grpc = kind == "grpc"
        bport = free_port()
        backend = subprocess.Popen(["taskset", "-c", "1", os.path.join(BIN, "ringway-bench"), "echo", kind,
                                    "--listen", f"127.0.0.1:{bport}", "--threads", "1"], stdout=subprocess.DEVNULL)
        wait_port(bport, backend, "echo backend")
        for name in wanted:
            if name == "direct":
                peers.append(Peer("direct", bport))
            elif name == "ringway":
                peers.append(start_ringway(tmp, bport, args.driver, grpc, args.busy_poll))
            elif name == "nginx":
                p = start_nginx(tmp, bport, grpc)
                peers.append(p) if p else print("nginx not installed: skipped")
            elif name == "haproxy" and args.busy_poll:
                # Started for each of its runs: a busy-polling HAProxy takes core 0 even idle.
                if shutil.which("haproxy"):
                    peers.append(Peer("haproxy", None))
                else:
                    print("haproxy not installed: skipped")
            elif name == "haproxy":
                p = start_haproxy(tmp, bport, grpc)
                peers.append(p) if p else print("haproxy not installed: skipped")

        hp = open(HALTPOLL).read().strip() if os.path.exists(HALTPOLL) else "n/a"
        print(f"# ringway compare — {time.strftime('%Y-%m-%d %H:%M')} — {os.cpu_count()} cores, kernel {os.uname().release}")
        print(f"# proxies pinned to core 0; echo backend and load generator on core 1")
        if grpc:
            print("# gRPC: nginx http2 + grpc_pass (keepalive 64), HAProxy mode http proto h2 both sides; "
                  "grpc-server-stream counts reply messages (10 per call) as requests")
        if kind == "ttstream":
            print("# TTHeader Streaming: nginx stream / HAProxy mode tcp relay the bytes (L4); ringway routes and "
                  "remaps every stream; messages counted as requests (ttstream-server: 10 per stream)")
        if args.busy_poll:
            print(f"# busy polling: ringway runtime.busy_poll = {args.busy_poll}; HAProxy busy-polling "
                  "(started only for its own runs); nginx has no such option")
        print(f"# guest_halt_poll_ns = {hp}" + (f" (raised from {old_haltpoll} for this run)" if args.raise_haltpoll is not None else ""))
        print(f"# {args.repeats} repeats x {args.duration} (+{args.warmup} warm-up run), payload {args.payload} B, peers alternated, medians shown", flush=True)

        levels = [tuple(int(x) for x in l.split("x")) for l in args.levels.split(",")]
        # HGRM_DIR: where each (protocol, level)'s .hgrm files go (the directory itself when there is one pair).
        hgrm_dirs = {}
        if os.environ.get("HGRM_DIR"):
            one = len(protocols) == 1 and len(levels) == 1
            for proto in protocols:
                for (c, m) in levels:
                    d = os.environ["HGRM_DIR"] if one else os.path.join(os.environ["HGRM_DIR"], f"{proto}-{c}x{m}")
                    os.makedirs(d, exist_ok=True)
                    hgrm_dirs[(proto, f"{c}x{m}")] = d
        runs = []
        for rep in range(args.repeats):
            for (c, m) in levels:
                for proto in protocols:
                    order = peers[rep % len(peers):] + peers[:rep % len(peers)]
                    for peer in order:
                        lazy = peer.name == "haproxy" and args.busy_poll
                        if lazy:
                            started = start_haproxy(tmp, bport, grpc, busy_poll=True)
                            peer.port, peer.proc, peer.rss_idle_kib = started.port, started.proc, started.rss_idle_kib
                        load(peer.port, proto, c, m, args.warmup, "0s", args.payload)
                        cpu0 = cpu_ns(peer.proc) if peer.proc else 0
                        d = hgrm_dirs.get((proto, f"{c}x{m}"))
                        hgrm = os.path.join(d, f"{peer.name}.hgrm") if d else None
                        r = load(peer.port, proto, c, m, args.duration, "0s", args.payload, hgrm)
                        cpu1 = cpu_ns(peer.proc) if peer.proc else 0
                        r.update(peer=peer.name, level=f"{c}x{m}", protocol=proto, repeat=rep,
                                 cpu_ns_per_req=(cpu1 - cpu0) / max(r["requests"], 1) if peer.proc else None,
                                 rss_peak_kib=mem_kib(peer.proc, "VmHWM") if peer.proc else None)
                        runs.append(r)
                        if lazy:
                            peer.stop()
                        print(f"  run {rep + 1}/{args.repeats} {proto} {c}x{m} {peer.name:8} {r['rps']:>10.0f} req/s "
                              f"p50 {r['p50_us']:.1f} us p99 {r['p99_us']:.1f} us errors {r['error_total']}", flush=True)

        med = lambda xs: statistics.median(xs) if xs else float("nan")
        rows = []
        for proto in protocols:
            for (c, m) in levels:
                level = f"{c}x{m}"
                direct = [r["rps"] for r in runs if r["peer"] == "direct" and r["level"] == level and r["protocol"] == proto]
                for peer in peers:
                    rs = [r for r in runs if r["peer"] == peer.name and r["level"] == level and r["protocol"] == proto]
                    row = {
                        "protocol": proto, "level": level, "peer": peer.name,
                        "rps": med([r["rps"] for r in rs]),
                        "p50_us": med([r["p50_us"] for r in rs]),
                        "p99_us": med([r["p99_us"] for r in rs]),
                        "p999_us": med([r["p999_us"] for r in rs]),
                        "cpu_ns_per_req": med([r["cpu_ns_per_req"] for r in rs]) if peer.proc else None,
                        "rss_idle_kib": peer.rss_idle_kib if peer.proc else None,
                        "rss_peak_kib": max(r["rss_peak_kib"] for r in rs) if peer.proc else None,
                        "errors": sum(r["error_total"] for r in rs),
                    }
                    row["vs_direct"] = row["rps"] / med(direct) if direct else float("nan")
                    rows.append(row)

        print()
        print("| protocol | level | peer | req/s | p50 µs | p99 µs | p99.9 µs | vs direct | proxy CPU ns/req | RSS idle MiB | RSS peak MiB | errors |")
        print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            cpu = f"{r['cpu_ns_per_req']:.0f}" if r["cpu_ns_per_req"] is not None else "—"
            idle = f"{r['rss_idle_kib'] / 1024:.1f}" if r["rss_idle_kib"] is not None else "—"
            peak = f"{r['rss_peak_kib'] / 1024:.1f}" if r["rss_peak_kib"] is not None else "—"
            print(f"| {r['protocol']} | {r['level']} | {r['peer']} | {r['rps']:.0f} | {r['p50_us']:.1f} | {r['p99_us']:.1f} | "
                  f"{r['p999_us']:.1f} | {r['vs_direct']:.3f} | {cpu} | {idle} | {peak} | {r['errors']} |")
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"runs": runs, "medians": rows, "guest_halt_poll_ns": hp}, f, indent=1)
        if hgrm_dirs:
            plot_hgrm(hgrm_dirs, peers, args.payload, args.repeats)
        bad = [r for r in rows if r["errors"]]
        if bad:
            print(f"ERROR: {len(bad)} rows had errors", file=sys.stderr)
            return 1
        return 0
    finally:
        for p in peers:
            p.stop()
        if backend:
            backend.terminate()
            backend.wait()
        restore()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
