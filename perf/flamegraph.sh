#!/usr/bin/env bash
# CPU flamegraph of ringway under load: perf record on the proxy process -> inferno -> SVG.
#   perf/flamegraph.sh [--driver auto|io_uring|epoll] [--level 32x10] [--seconds 5] [--protocol framed-binary|grpc-unary|…]
# Output: perf/out/flamegraph.svg (and .folded). Installs linux-perf / inferno when missing.
source "$(dirname "$0")/lib.sh"
DRIVER=auto; LEVEL=32x10; SECS=5
while [ $# -gt 0 ]; do case $1 in
  --driver) DRIVER=$2; shift 2;; --level) LEVEL=$2; shift 2;; --seconds) SECS=$2; shift 2;;
  --protocol) PROTOCOL=$2; shift 2;;
  *) echo "unknown flag $1" >&2; exit 2;; esac; done
command -v perf >/dev/null || { [ "$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf; }
command -v inferno-flamegraph >/dev/null || cargo install --quiet --locked inferno
export PATH="$HOME/.cargo/bin:$PATH"
start_pair "$DRIVER"
C=${LEVEL%x*}; M=${LEVEL#*x}
load "$C" "$M" "$((SECS + 2))s" > "$TMP/load.json" &
LOAD=$!
sleep 1
perf record -F 999 -g -p "$RINGWAY_PID" -o "$TMP/perf.data" -- sleep "$SECS" 2>/dev/null
wait $LOAD
perf script -i "$TMP/perf.data" 2>/dev/null | inferno-collapse-perf > "$OUT/flamegraph.folded"
inferno-flamegraph --title "ringway $DRIVER $LEVEL $PROTOCOL" < "$OUT/flamegraph.folded" > "$OUT/flamegraph.svg"
echo "load: $(json_field rps < "$TMP/load.json") req/s"
echo "wrote $OUT/flamegraph.svg"
perf report -i "$TMP/perf.data" --no-children --sort dso --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -5
