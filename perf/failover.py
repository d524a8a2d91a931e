#!/usr/bin/env python3
"""Backends that fail, measured (issue 14): BENCHMARKS.md "Backends that fail".

  perf/failover.py kill  [--repeats 3]   one of two Thrift echo backends killed mid-run at 32x10:
                                         requests that failed, requests in flight on it when it
                                         died, and how long until none went to it
  perf/failover.py slow  [--repeats 3]   p99 at 32x10 of a two-backend cluster with one backend
                                         20x slower (2 ms vs 100 us per reply batch), under
                                         lb = round_robin and lb = least_request, interleaved

ringway on core 0; backends and load generator on core 1. Build first:
  cargo build --release --bin ringway --bin ringway-bench
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import free_port, wait_port  # noqa: E402  (the same helpers as perf/compare.py)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release")


def echo(port, delay):
    p = subprocess.Popen(["taskset", "-c", "1", os.path.join(BIN, "ringway-bench"), "echo", "thrift",
                          "--listen", f"127.0.0.1:{port}", "--delay", delay], stdout=subprocess.DEVNULL)
    wait_port(port, p, "echo backend")
    return p


def ringway(tmp, endpoints, extra):
    port, admin = free_port(), free_port()
    conf = os.path.join(tmp, "ringway.toml")
    eps = ", ".join(f'"127.0.0.1:{e}"' for e in endpoints)
    with open(conf, "w") as f:
        f.write(f"""[runtime]
workers = 1
drain_timeout = "2s"
[admin]
address = "127.0.0.1:{admin}"
[[listener]]
name = "bench"
protocol = "thrift"
address = "127.0.0.1:{port}"
routes = [ {{ cluster = "echo" }} ]
[[cluster]]
name = "echo"
endpoints = [{eps}]
max_connections_per_endpoint = 4
max_requests_per_connection = 512
{extra}
""")
    log = open(os.path.join(tmp, "ringway.log"), "w")
    p = subprocess.Popen(["taskset", "-c", "0", os.path.join(BIN, "ringway"), "run", "--config", conf], stderr=log)
    wait_port(port, p, "ringway")
    return p, port, admin


def stop(p):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def load(port, duration, warmup="1s"):
    cmd = ["taskset", "-c", "1", os.path.join(BIN, "ringway-bench"), "load", "--target", f"127.0.0.1:{port}",
           "-c", "32", "-m", "10", "-d", duration, "--warmup", warmup, "--json"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def metrics(admin):
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        series, value = line.rsplit(" ", 1)
        out[series] = float(value)
    return out


def series(m, name, endpoint):
    return sum(v for k, v in m.items() if k.startswith(name + "{") and f'endpoint="{endpoint}"' in k)


def kill_run(tmp):
    a_port, b_port = free_port(), free_port()
    a, b = echo(a_port, "0ms"), echo(b_port, "0ms")
    extra = ('health_check = { kind = "tcp", interval = "1s", timeout = "250ms", '
             'unhealthy_threshold = 3, healthy_threshold = 2 }')
    rw, port, admin = ringway(tmp, [a_port, b_port], extra)
    dead = f"127.0.0.1:{b_port}"
    lg = load(port, "8s")
    time.sleep(1.0 + 3.0)  # warm-up, then 3 s of steady load
    before = metrics(admin)
    b.kill()
    killed = time.time()
    b.wait()
    samples = []
    stop_sampling = threading.Event()

    def sample():
        while not stop_sampling.is_set():
            m = metrics(admin)
            samples.append((time.time() - killed, series(m, "ringway_upstream_connect_failures_total", dead),
                            series(m, "ringway_upstream_requests_active", dead),
                            m.get(f'ringway_upstream_endpoint_healthy{{cluster="echo",endpoint="{dead}"}}', 1.0)))
            time.sleep(0.02)

    t = threading.Thread(target=sample)
    t.start()
    out, err = lg.communicate(timeout=120)
    stop_sampling.set()
    t.join()
    result = json.loads(out.strip().splitlines()[-1])
    after = metrics(admin)
    stop(rw)
    stop(a)
    with open(os.path.join(tmp, "ringway.log")) as f:
        warnings = [l.strip() for l in f if "WARN" in l or "ERROR" in l]
    # The last moment a request still went to the dead backend: a connect attempt to it (a
    # failure counted) or a request in flight on it.
    last_attempt = 0.0
    prev = samples[0][1] if samples else 0.0
    for at, failures, active, _ in samples:
        if failures > prev or active > 0:
            last_attempt = at
        prev = failures
    unhealthy_at = next((at for at, _, _, healthy in samples if healthy == 0.0), None)
    lost = after.get("ringway_upstream_lost_total", 0.0) - before.get("ringway_upstream_lost_total", 0.0)
    kinds = {}
    for k, v in after.items():
        if k.startswith("ringway_proxy_errors_total{"):
            kind = k.split('kind="')[1].split('"')[0]
            kinds[kind] = kinds.get(kind, 0) + v - before.get(k, 0.0)
    return {
        "requests": result["requests"],
        "errors": result["error_total"],
        "proxy_errors_by_kind": {k: v for k, v in kinds.items() if v},
        # What the proxy logged when the dead backend's connections closed.
        "inflight_on_dead_when_lost": sum(int(w.split("failing ")[1].split(" ")[0]) for w in warnings
                                          if "failing " in w and dead in w),
        "upstream_connections_lost": lost,
        "connect_attempts_to_dead": series(after, "ringway_upstream_connect_failures_total", dead),
        "connections_opened_to_dead": series(before, "ringway_upstream_connections_opened_total", dead),
        "connections_open_to_dead_at_kill": series(before, "ringway_upstream_connections_active", dead),
        "last_request_to_dead_s": round(last_attempt, 3),
        "marked_unhealthy_s": None if unhealthy_at is None else round(unhealthy_at, 3),
        "retries": sum(v for k, v in after.items() if k.startswith("ringway_upstream_retries_total")),
    }


def slow_run(tmp, lb):
    f_port, s_port = free_port(), free_port()
    fast, slow = echo(f_port, "100us"), echo(s_port, "2ms")
    rw, port, _ = ringway(tmp, [f_port, s_port], f'lb = "{lb}"')
    lg = load(port, "5s")
    out, _ = lg.communicate(timeout=120)
    stop(rw)
    stop(fast)
    stop(slow)
    r = json.loads(out.strip().splitlines()[-1])
    return {"lb": lb, "rps": r["rps"], "p50_us": r["p50_us"], "p90_us": r["p90_us"], "p99_us": r["p99_us"],
            "errors": r["error_total"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["kill", "slow"])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.what == "kill":
            runs = [kill_run(tmp) for _ in range(args.repeats)]
            for r in runs:
                print(json.dumps(r))
            for k in ("errors", "inflight_on_dead_when_lost", "last_request_to_dead_s", "marked_unhealthy_s"):
                vals = [r[k] for r in runs if r[k] is not None]
                if vals:
                    print(f"median {k}: {statistics.median(vals)}")
        else:
            runs = []
            for _ in range(args.repeats):
                for lb in ("round_robin", "least_request"):
                    runs.append(slow_run(tmp, lb))
                    print(json.dumps(runs[-1]))
            for lb in ("round_robin", "least_request"):
                mine = [r for r in runs if r["lb"] == lb]
                print(f"{lb}: median p99 {statistics.median(r['p99_us'] for r in mine):.0f} us, "
                      f"p90 {statistics.median(r['p90_us'] for r in mine):.0f} us, "
                      f"p50 {statistics.median(r['p50_us'] for r in mine):.0f} us, "
                      f"rps {statistics.median(r['rps'] for r in mine):.0f}")


if __name__ == "__main__":
    main()
