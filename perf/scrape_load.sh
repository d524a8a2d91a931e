#!/usr/bin/env bash
# Does scraping the admin endpoint disturb the data plane? Runs ringway (one worker, pinned to
# core 0, like every perf script) with [admin] on, and drives 32x10 framed-binary load
# through it, REPEATS times each without and with a scraper that GETs /metrics 10 times a
# second for the whole run (quiet and scraped runs interleaved). Prints each run's req/s, p99
# and errors, the medians, and the scrapes' status codes and durations.
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
for r in $(seq "$REPEATS"); do
  load 32 10 "${SECS}s" > "$TMP/quiet.$r.json"
  python3 - "$ADMIN_PORT" "$SECS" "$RATE" > "$TMP/scrapes.$r.txt" <<'PY' &
import sys, time, urllib.request
port, secs, rate = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
end, codes, took = time.monotonic() + secs, {}, []
next_at = time.monotonic()
while time.monotonic() < end:
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            r.read(); code = r.status
    except Exception as e:
        code = type(e).__name__
    took.append(time.monotonic() - t0)
    codes[code] = codes.get(code, 0) + 1
    next_at += 1 / rate
    time.sleep(max(0, next_at - time.monotonic()))
took.sort()
print(f"scrapes {len(took)} codes {codes} median {took[len(took)//2]*1e3:.1f} ms max {took[-1]*1e3:.1f} ms")
PY
  SCRAPER=$!
  load 32 10 "${SECS}s" > "$TMP/scraped.$r.json"
  wait "$SCRAPER"
done
python3 - "$TMP" "$REPEATS" <<'PY'
import json, statistics, sys
tmp, n = sys.argv[1], int(sys.argv[2])
for kind in ("quiet", "scraped"):
    runs = [json.load(open(f"{tmp}/{kind}.{r}.json")) for r in range(1, n + 1)]
    for i, j in enumerate(runs, 1):
        extra = open(f"{tmp}/scrapes.{i}.txt").read().strip() if kind == "scraped" else ""
        print(f"{kind:8} run {i}: {j['rps']:9.0f} req/s  p99 {j['p99_us']:8.1f} us  errors {j['error_total']}  {extra}")
    print(f"{kind:8} median: {statistics.median(r['rps'] for r in runs):9.0f} req/s  "
          f"p99 {statistics.median(r['p99_us'] for r in runs):8.1f} us  errors {sum(r['error_total'] for r in runs)}")
PY
