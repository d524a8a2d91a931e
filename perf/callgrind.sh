#!/usr/bin/env bash
# Instructions per request under valgrind (callgrind): counts instructions, not time, so it
# is repeatable on a noisy machine and catches regressions. Runs ringway on the epoll driver
# (valgrind does not model io_uring), once idle and once with load, and divides the
# difference by the requests ringway forwarded.
#   perf/callgrind.sh [--level 4x4] [--seconds 3] [--protocol framed-binary|ttheader|…]
source "$(dirname "$0")/lib.sh"
LEVEL=4x4; SECS=3; PROTO=framed-binary
while [ $# -gt 0 ]; do case $1 in
  --level) LEVEL=$2; shift 2;; --seconds) SECS=$2; shift 2;; --protocol) PROTO=$2; shift 2;;
  *) echo "unknown flag $1" >&2; exit 2;; esac; done
command -v valgrind >/dev/null || { [ "$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind; }
C=${LEVEL%x*}; M=${LEVEL#*x}
PROTOCOL=$PROTO
# measure NAME LOAD(0|1): ringway under callgrind, idle or loaded, then stopped (SIGTERM).
measure() {
  start_ringway epoll valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.$1.out"
  sleep 2  # valgrind start-up
  if [ "$2" = 1 ]; then load "$C" "$M" "${SECS}s" "$PROTO" > /dev/null; else sleep "$SECS"; fi
  kill -TERM "$RINGWAY_PID"
  wait "$RINGWAY_PID" || true
  grep -E '^(summary|totals):' "$TMP/cg.$1.out" | head -1 | awk '{print $2}' > "$TMP/$1.ir"
  (grep -o 'requests=[0-9]*' "$TMP/ringway.log" || echo requests=0) | tail -1 | cut -d= -f2 > "$TMP/$1.reqs"
}
start_backend
measure idle 0
measure loaded 1
cp "$TMP/cg.loaded.out" "$OUT/callgrind.out"
python3 - "$(cat "$TMP/idle.ir")" "$(cat "$TMP/loaded.ir")" "$(cat "$TMP/loaded.reqs")" <<'PY'
import sys
idle, loaded, reqs = (int(x) for x in sys.argv[1:])
print(f"requests: {reqs}")
print(f"instructions per request: {(loaded - idle) / max(reqs, 1):.0f}  (idle run {idle}, loaded run {loaded})")
PY
echo "annotated profile: callgrind_annotate $OUT/callgrind.out | head -40"
