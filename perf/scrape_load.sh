#!/usr/bin/env bash
# Does scraping the admin endpoint disturb the data plane? Runs ringway (one worker, pinned to
# core 0, like every perf script; its admin thread shares that core) with [admin] on, and
# drives 32x10 framed-binary load through it, REPEATS times each without and with a scraper
# that GETs /metrics RATE times a second on one kept-alive connection, as Prometheus does
# (quiet and scraped runs interleaved). The scraper runs on core 1 beside the load generator
# and the backend, standing in for a Prometheus on another machine. Prints each run's req/s,
# p99, errors and ringway's CPU time per request, the medians, and the scrapes' status codes
# and durations. A third kind of run is the control: the same scraper asking GET /healthz
# (a few bytes, no figures collected), to tell the scraper's own cost on this 2-core machine
# (its CPU and wake-ups beside the load generator) from what collecting metrics costs ringway.
#   perf/scrape_load.sh [--repeats 5] [--seconds 10] [--rate 10]
source "$(dirname "$0")/lib.sh"
REPEATS=5; SECS=10; RATE=10
while [ $# -gt 0 ]; do case $1 in
  --repeats) REPEATS=$2; shift 2;; --seconds) SECS=$2; shift 2;; --rate) RATE=$2; shift 2;;
  *) echo "unknown flag $1" >&2; exit 2;; esac; done
ADMIN_PORT=$(free_port)
RINGWAY_EXTRA="[admin]
address = \"127.0.0.1:$ADMIN_PORT\""
start_pair auto
wait_port "$ADMIN_PORT"
# ringway's CPU ticks (user + system) so far.
ticks() { awk '{print $14 + $15}' "/proc/$RINGWAY_PID/stat"; }
# scrape PATH KIND R: one loaded run with the scraper asking PATH.
scrape() {
  taskset -c 1 python3 - "$ADMIN_PORT" "$SECS" "$RATE" "$1" > "$TMP/scrapes.$2.$3.txt" <<'PY' &
import http.client, sys, time
port, secs, rate, path = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
end, codes, took = time.monotonic() + secs, {}, []
next_at = time.monotonic()
while time.monotonic() < end:
    t0 = time.monotonic()
    try:
        conn.request("GET", path)
        r = conn.getresponse(); r.read(); code = r.status
    except Exception as e:
        code = type(e).__name__
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    took.append(time.monotonic() - t0)
    codes[code] = codes.get(code, 0) + 1
    next_at += 1 / rate
    time.sleep(max(0, next_at - time.monotonic()))
took.sort()
print(f"{path}: {len(took)} scrapes, codes {codes}, median {took[len(took)//2]*1e3:.2f} ms, max {took[-1]*1e3:.2f} ms")
PY
  local scraper=$!
  t0=$(ticks); load 32 10 "${SECS}s" > "$TMP/$2.$3.json"; echo $(( $(ticks) - t0 )) > "$TMP/$2.$3.ticks"
  wait "$scraper"
}
for r in $(seq "$REPEATS"); do
  t0=$(ticks); load 32 10 "${SECS}s" > "$TMP/quiet.$r.json"; echo $(( $(ticks) - t0 )) > "$TMP/quiet.$r.ticks"
  scrape /healthz healthz "$r"
  scrape /metrics scraped "$r"
done
python3 - "$TMP" "$REPEATS" <<'PY'
import json, statistics, sys
tmp, n = sys.argv[1], int(sys.argv[2])
for kind in ("quiet", "healthz", "scraped"):
    runs = [json.load(open(f"{tmp}/{kind}.{r}.json")) for r in range(1, n + 1)]
    cpu = []  # ringway CPU ns per request (ticks of 10 ms)
    for i, j in enumerate(runs, 1):
        ns = int(open(f"{tmp}/{kind}.{i}.ticks").read()) * 1e7 / max(j["requests"], 1)
        cpu.append(ns)
        extra = open(f"{tmp}/scrapes.{kind}.{i}.txt").read().strip() if kind != "quiet" else ""
        print(f"{kind:8} run {i}: {j['rps']:9.0f} req/s  p99 {j['p99_us']:8.1f} us  errors {j['error_total']}  "
              f"ringway CPU {ns:6.0f} ns/req  {extra}")
    print(f"{kind:8} median: {statistics.median(r['rps'] for r in runs):9.0f} req/s  "
          f"p99 {statistics.median(r['p99_us'] for r in runs):8.1f} us  errors {sum(r['error_total'] for r in runs)}  "
          f"ringway CPU {statistics.median(cpu):6.0f} ns/req")
PY
