#!/usr/bin/env python3
"""One kind of work at a time through ringway (the soak's config, two workers), printing the
proxy's anonymous RSS every 20 s: to tell which work makes the soak's RSS climb
(docs/reliability.md, "Soak").

    perf/one_load_rss.py MODE [MINUTES] [LOAD_SECONDS]

MODE: `grpc:PROTOCOL` or `thrift:PROTOCOL` (a ringway-bench load protocol at 2,000 requests/s
on 8 connections, each load process running LOAD_SECONDS, default 60, then started again),
`scrape` (GET /metrics 20 times a second), `reload` (SIGHUP twice a second, a cluster key
changed each time) or `reconnect` (1-second Thrift loads, back to back). With SMAPS=1 it also
saves /proc/PID/smaps at each sample (/tmp/one_load_rss.smaps.SECONDS). Builds nothing: run
`cargo build --release` first. Every process it starts is stopped by its handle.
"""
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402
import soak  # noqa: E402


def main():
    mode = sys.argv[1]
    minutes = float(sys.argv[2]) if len(sys.argv) > 2 else 5
    load_secs = int(sys.argv[3]) if len(sys.argv) > 3 else 60
    kind, _, protocol = mode.partition(":")
    if kind not in ("grpc", "thrift", "scrape", "reload", "reconnect"):
        sys.exit(f"unknown mode {mode!r}")
    tmp = tempfile.mkdtemp(prefix="ringway-one-load-")
    ports = {k: compare.free_port() for k in ["admin", "thrift", "grpc", "thrift_echo", "grpc_echo"]}
    conf = os.path.join(tmp, "ringway.toml")
    soak.write_config(conf, ports, 5)
    procs = [soak.start_echo("thrift", ports["thrift_echo"]), soak.start_echo("grpc", ports["grpc_echo"])]
    proxy = subprocess.Popen([os.path.join(compare.BIN, "ringway"), "run", "--config", conf],
                             stderr=subprocess.DEVNULL)
    load = None
    try:
        compare.wait_port(ports["admin"], proxy, "ringway admin")
        start = time.time()
        next_sample, n = start, 0
        while time.time() < start + minutes * 60:
            now = time.time()
            if kind == "scrape":
                urllib.request.urlopen(f"http://127.0.0.1:{ports['admin']}/metrics", timeout=5).read()
            elif kind == "reload":
                soak.write_config(conf, ports, 5 + n % 2)
                proxy.send_signal(signal.SIGHUP)
            elif load is None or load.poll() is not None:
                if load is not None:
                    load.wait()
                target = f"127.0.0.1:{ports['grpc' if kind == 'grpc' else 'thrift']}"
                if kind == "reconnect":
                    load = soak.load(target, "framed-binary", 200, 1)
                else:
                    load = soak.load(target, protocol, 2000, load_secs)
            n += 1
            if now >= next_sample:
                t = int(now - start)
                if os.environ.get("SMAPS"):
                    with open(f"/proc/{proxy.pid}/smaps") as src, open(f"/tmp/one_load_rss.smaps.{t}", "w") as dst:
                        dst.write(src.read())
                print(f"{t:5d} s  anonymous RSS {compare.mem_kib(proxy, 'RssAnon')} KiB", flush=True)
                next_sample += 20
            time.sleep({"scrape": 0.05, "reload": 0.5}.get(kind, 0.2))
    finally:
        if load is not None:
            load.kill()
            load.wait()
        proxy.terminate()
        proxy.wait()
        for p in procs:
            p.kill()
            p.wait()


if __name__ == "__main__":
    main()
