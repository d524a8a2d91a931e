#!/usr/bin/env python3
"""Soak: mixed Thrift and gRPC load through ringway for MINUTES, with a reload every minute
and a backend restart every two (Thrift and gRPC in turn), sampling the proxy every 10 s:
RSS, open file descriptors, connections, requests and the proxy's errors by kind. Writes
perf/out/soak.csv, a Markdown table (perf/out/soak.md) and a plot (perf/out/soak.png).

    perf/soak.py [--minutes 30] [--rate 2000]     (scripts/soak.sh MINUTES runs it)

Builds nothing: run `cargo build --release` first. Every process it starts is stopped by
its handle. Errors are expected only around the injected faults: a backend restart fails
the requests in flight on it (upstream_lost) and, while it is down, connects
(connect_failed); the table shows which kinds occurred and when.
"""
import argparse
import csv
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (same directory: free ports, waiting for them, the binaries)

OUT = os.path.join(compare.ROOT, "perf", "out")


def metrics(admin):
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5).read().decode()
    errors, requests, conns, upstream = {}, 0.0, 0.0, 0.0
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name_labels, value = line.rsplit(" ", 1)
        name = name_labels.split("{", 1)[0]
        v = float(value)
        if name == "ringway_proxy_errors_total":
            kind = name_labels.split('kind="', 1)[1].split('"', 1)[0]
            errors[kind] = errors.get(kind, 0.0) + v
        elif name == "ringway_requests_total":
            requests += v
        elif name == "ringway_downstream_connections_active":
            conns += v
        elif name == "ringway_upstream_connections_active":
            upstream += v
    return errors, requests, conns, upstream


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def start_echo(kind, port):
    p = subprocess.Popen([os.path.join(compare.BIN, "ringway-bench"), "echo", kind, "--listen",
                          f"127.0.0.1:{port}"], stdout=subprocess.DEVNULL)
    compare.wait_port(port, p, f"{kind} echo")
    return p


def write_config(path, ports, timeout_s):
    with open(path, "w") as f:
        f.write(f"""[runtime]
workers = 2
drain_timeout = "2s"
[admin]
address = "127.0.0.1:{ports['admin']}"
[[listener]]
name = "thrift"
protocol = "thrift"
address = "127.0.0.1:{ports['thrift']}"
routes = [ {{ cluster = "thrift" }} ]
[[listener]]
name = "grpc"
protocol = "grpc"
address = "127.0.0.1:{ports['grpc']}"
routes = [ {{ cluster = "grpc" }} ]
[[cluster]]
name = "thrift"
endpoints = ["127.0.0.1:{ports['thrift_echo']}"]
request_timeout = "{timeout_s}s"
connect_failure_backoff = "200ms"
[[cluster]]
name = "grpc"
endpoints = ["127.0.0.1:{ports['grpc_echo']}"]
request_timeout = "{timeout_s}s"
connect_failure_backoff = "200ms"
""")


def load(target, protocol, rate, seconds):
    return subprocess.Popen([os.path.join(compare.BIN, "ringway-bench"), "load", "--target", target,
                             "--protocol", protocol, "-c", "8", "--rate", str(rate), "-d", f"{seconds}s",
                             "--warmup", "0s", "--json"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    t = [r["t_s"] / 60 for r in rows]
    fig, ax = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    ax[0].plot(t, [r["rss_kib"] / 1024 for r in rows], label="VmRSS")
    ax[0].plot(t, [r["rss_anon_kib"] / 1024 for r in rows], label="RssAnon (heap)")
    ax[0].plot(t, [r["rss_file_kib"] / 1024 for r in rows], label="RssFile (binary, libraries)")
    ax[0].set_ylabel("RSS MiB")
    ax[0].legend(loc="lower right", fontsize="small")
    ax[1].plot(t, [r["fds"] for r in rows])
    ax[1].set_ylabel("open fds")
    ax[2].plot(t, [r["errors"] for r in rows], label="proxy errors (cumulative)")
    ax[2].set_ylabel("errors")
    ax[2].set_xlabel("minutes")
    for a in ax:
        for r in rows:
            if r["event"]:
                a.axvline(r["t_s"] / 60, color="0.85", linewidth=0.5)
        a.set_ylim(bottom=0)
    fig.suptitle("ringway soak: mixed Thrift + gRPC load, reload every 1 min, backend restart every 2 min")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main():
    # SIGTERM ends the run like Ctrl-C: the `finally` below stops every process it started.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--rate", type=int, default=2000, help="requests per second per protocol")
    ap.add_argument("--families", default="thrift,grpc",
                    help="which load families run (thrift, grpc or both); faults hit both backends either way")
    ap.add_argument("--no-faults", action="store_true",
                    help="no reloads and no backend restarts: load alone (to tell the two apart)")
    ap.add_argument("--summarize", metavar="CSV", help="only write the table and plot of an earlier run's CSV")
    args = ap.parse_args()
    if args.summarize:
        rows = load_csv(args.summarize)
        return summarize(rows, rows[-1]["t_s"] / 60, args.rate)
    os.makedirs(OUT, exist_ok=True)
    families = set(args.families.split(","))
    if not families or families - {"thrift", "grpc"}:
        ap.error(f"--families: {args.families!r}: expected thrift, grpc or thrift,grpc")
    tmp = tempfile.mkdtemp(prefix="ringway-soak-")
    ports = {k: compare.free_port() for k in ["admin", "thrift", "grpc", "thrift_echo", "grpc_echo"]}
    conf = os.path.join(tmp, "ringway.toml")
    write_config(conf, ports, 5)
    backends = {"thrift": start_echo("thrift", ports["thrift_echo"]), "grpc": start_echo("grpc", ports["grpc_echo"])}
    log = open(os.path.join(tmp, "ringway.log"), "w")
    proxy = subprocess.Popen([os.path.join(compare.BIN, "ringway"), "run", "--config", conf], stderr=log)
    compare.wait_port(ports["admin"], proxy, "ringway admin")
    thrift_protocols = ["framed-binary", "ttheader", "framed-compact", "theader"]
    grpc_protocols = ["grpc-unary", "grpc-server-stream", "grpc-bidi"]
    loads, rows, m = [None, None], [], 0
    start = time.time()
    end = start + args.minutes * 60
    # Faults fall in the middle of load runs (which start on the minute): reloads at :30,
    # restarts at 1:45, 3:45, ...
    next_sample, next_reload, next_restart, n = start, start + 30, start + 105, 0
    if args.no_faults:
        next_reload = next_restart = float("inf")
    restart_turn = 0
    try:
        while time.time() < end:
            now = time.time()
            # One load process per protocol family, each started again (with the next
            # protocol) when it ends.
            secs = int(min(60, max(5, end - now)))
            if "thrift" in families and (loads[0] is None or loads[0].poll() is not None):
                loads[0] = load(f"127.0.0.1:{ports['thrift']}", thrift_protocols[n % 4], args.rate, secs)
                n += 1
            if "grpc" in families and (loads[1] is None or loads[1].poll() is not None):
                loads[1] = load(f"127.0.0.1:{ports['grpc']}", grpc_protocols[m % 3], args.rate, secs)
                m += 1
            event = ""
            if now >= next_reload:
                write_config(conf, ports, 5 + (int((now - start) / 60) % 2))  # a changed cluster key
                proxy.send_signal(signal.SIGHUP)
                event = "reload"
                next_reload += 60
            if now >= next_restart:
                kind = ["thrift", "grpc"][restart_turn % 2]
                restart_turn += 1
                backends[kind].kill()
                backends[kind].wait()
                time.sleep(0.5)
                backends[kind] = start_echo(kind, ports[f"{kind}_echo"])
                event = (event + " " if event else "") + f"restart {kind}"
                next_restart += 120
            if now >= next_sample or event:
                # Open fds first: the scrape's own admin connection is not counted.
                open_fds = fds(proxy.pid)
                errors, requests, conns, upstream = metrics(ports["admin"])
                row = {"t_s": round(now - start), "rss_kib": compare.mem_kib(proxy, "VmRSS"),
                       "rss_anon_kib": compare.mem_kib(proxy, "RssAnon"),
                       "rss_file_kib": compare.mem_kib(proxy, "RssFile"), "fds": open_fds,
                       "connections": int(conns), "upstream_connections": int(upstream),
                       "requests": int(requests), "errors": int(sum(errors.values())),
                       "error_kinds": " ".join(f"{k}={int(v)}" for k, v in sorted(errors.items())), "event": event}
                rows.append(row)
                print(row, flush=True)
                if now >= next_sample:
                    next_sample += 10
            time.sleep(0.5)
    finally:
        for p in loads:
            if p is not None:
                p.kill()
                p.wait()
        proxy.terminate()
        proxy.wait()
        for p in backends.values():
            p.kill()
            p.wait()
    fields = ["t_s", "rss_kib", "rss_anon_kib", "rss_file_kib", "fds", "connections", "upstream_connections",
              "requests", "errors", "error_kinds", "event"]
    with open(os.path.join(OUT, "soak.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    summarize(rows, args.minutes, args.rate)


def slope_per_10min(rows, key):
    """Least-squares slope of `key` against time, per 10 minutes."""
    n = len(rows)
    mt = sum(r["t_s"] for r in rows) / n
    mv = sum(r[key] for r in rows) / n
    den = sum((r["t_s"] - mt) ** 2 for r in rows) or 1
    return sum((r["t_s"] - mt) * (r[key] - mv) for r in rows) / den * 600


def summarize(rows, minutes, rate):
    """The Markdown table and the plot; errors are checked against the faults: every error
    must appear within 20 s after a backend restart."""
    warm = [r for r in rows if r["t_s"] >= 120] or rows
    rss = [r["rss_kib"] for r in warm]
    # RSS is the binary's and libraries' pages (file-backed) plus the anonymous part: the heap
    # and stacks, what a leak or the allocator's fragmentation would grow.
    anon = [r.get("rss_anon_kib") or 0 for r in warm]
    file = [r.get("rss_file_kib") or 0 for r in warm]
    fd = [r["fds"] for r in warm]
    # What a leak of descriptors would grow: fds not held by a client or upstream connection
    # (listeners, the rings, eventfds, the log). The two are read a moment apart, so a
    # connection opening or closing in between moves it by one or two.
    other = [r["fds"] - r["connections"] - r["upstream_connections"] for r in warm if "upstream_connections" in r]
    tens = {}
    for r in warm:
        tens.setdefault((r["t_s"] - 120) // 600, []).append(r["fds"])
    means = [sum(v) / len(v) for v in tens.values()]
    unexplained, last_restart = 0, None
    for prev, r in zip(rows, rows[1:]):
        if "restart" in r["event"]:
            last_restart = r["t_s"]
        if r["errors"] > prev["errors"] and (last_restart is None or r["t_s"] - last_restart > 20):
            unexplained += r["errors"] - prev["errors"]
    lines = [f"Soak: {minutes:g} min, {rate} req/s per protocol family, {rows[-1]['requests']} requests",
             f"after warm-up (2 min): RSS {min(rss) / 1024:.1f}-{max(rss) / 1024:.1f} MiB (spread "
             f"{100 * (max(rss) - min(rss)) / min(rss):.1f} %, trend {slope_per_10min(warm, 'rss_kib') / 1024:+.2f} "
             f"MiB per 10 min), fds {min(fd)}-{max(fd)} (trend {slope_per_10min(warm, 'fds'):+.1f} per 10 min; "
             f"they follow the connections, which load restarts, reloads and backend restarts change; "
             f"means per 10 min {', '.join(f'{m:.1f}' for m in means)})",
             f"fds not held by a connection: " + (f"{min(other)}-{max(other)} (median {sorted(other)[len(other) // 2]})"
                                                  if other else "not sampled (an older CSV)"),
             f"anonymous RSS (the heap; RSS also counts the binary's pages): {min(anon) / 1024:.1f}-"
             f"{max(anon) / 1024:.1f} MiB (spread {100 * (max(anon) - min(anon)) / max(min(anon), 1):.1f} %, trend "
             f"{slope_per_10min(warm, 'rss_anon_kib') / 1024:+.2f} MiB per 10 min)",
             f"file-backed RSS (the binary's and libraries' pages): {min(file) / 1024:.1f}-{max(file) / 1024:.1f} MiB "
             f"(trend {slope_per_10min(warm, 'rss_file_kib') / 1024:+.2f} MiB per 10 min)",
             f"errors by kind at the end: {rows[-1]['error_kinds'] or 'none'}; "
             f"errors not within 20 s after a backend restart: {unexplained}", "",
             "| min | RSS MiB | anon MiB | file MiB | fds | connections | requests | errors | event |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["t_s"] % 60 < 10 or r["event"]:
            lines.append(f"| {r['t_s'] / 60:.1f} | {r['rss_kib'] / 1024:.1f} | {r['rss_anon_kib'] / 1024:.2f} | "
                         f"{r['rss_file_kib'] / 1024:.2f} | {r['fds']} | {r['connections']} | "
                         f"{r['requests']} | {r['errors']} | {r['event']} |")
    with open(os.path.join(OUT, "soak.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines[:6]))
    plot(rows, os.path.join(OUT, "soak.png"))


def load_csv(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in ["t_s", "rss_kib", "fds", "connections", "requests", "errors"]:
            r[k] = int(r[k])
        r["rss_anon_kib"] = int(r.get("rss_anon_kib") or 0)
        r["rss_file_kib"] = int(r.get("rss_file_kib") or 0)
        if r.get("upstream_connections"):
            r["upstream_connections"] = int(r["upstream_connections"])
        else:
            r.pop("upstream_connections", None)
    return rows


if __name__ == "__main__":
    main()
