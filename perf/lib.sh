# Shared set-up for perf/*.sh: release build, an echo backend on core 1 and ringway on core 0.
# Source it; it defines start_pair, load, cleanup and RINGWAY_PID, PROXY_PORT. Set PROTOCOL
# (a ringway-bench load protocol, default framed-binary) before start_pair: a grpc-* protocol
# gets the gRPC echo backend and a grpc listener. RINGWAY_RUNTIME adds lines to ringway's
# [runtime] table (e.g. 'coalesce_wait = "0"'); RINGWAY_EXTRA adds tables at the end (e.g.
# an [admin] section).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo build --release --quiet --bin ringway --bin ringway-bench
BIN=target/release
OUT=perf/out
mkdir -p "$OUT"
TMP=$(mktemp -d)
PIDS=()
PROTOCOL=${PROTOCOL:-framed-binary}
# kind: the listener's protocol, thrift or grpc, from PROTOCOL (read when the processes
# start, after flag parsing); backend_kind: the echo backend's (ttstream-* are served on a
# Thrift listener by a ttstream backend).
kind() { case $PROTOCOL in grpc-*) echo grpc;; *) echo thrift;; esac; }
backend_kind() { case $PROTOCOL in ttstream-*) echo ttstream;; *) kind;; esac; }
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_port() {
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on $1" >&2; exit 1
}

# start_backend: the echo backend on core 1.
start_backend() {
  BACKEND_PORT=$(free_port)
  taskset -c 1 "$BIN/ringway-bench" echo "$(backend_kind)" --listen "127.0.0.1:$BACKEND_PORT" >/dev/null 2>&1 &
  PIDS+=($!)
  wait_port "$BACKEND_PORT"
}

# start_ringway DRIVER [WRAPPER...]: ringway (one worker) on core 0 in front of the backend,
# optionally under a wrapper command (valgrind …).
start_ringway() {
  local driver=$1; shift
  PROXY_PORT=$(free_port)
  cat > "$TMP/ringway.toml" <<TOML
[runtime]
workers = 1
driver = "$driver"
drain_timeout = "5s"
drain_idle_close = "10ms"
${RINGWAY_RUNTIME:-}
[[listener]]
name = "bench"
protocol = "$(kind)"
address = "127.0.0.1:$PROXY_PORT"
routes = [ { cluster = "echo" } ]
[[cluster]]
name = "echo"
endpoints = ["127.0.0.1:$BACKEND_PORT"]
max_requests_per_connection = 512
${RINGWAY_EXTRA:-}
TOML
  taskset -c 0 "$@" "$BIN/ringway" run --config "$TMP/ringway.toml" >/dev/null 2>"$TMP/ringway.log" &
  RINGWAY_PID=$!
  PIDS+=($RINGWAY_PID)
  wait_port "$PROXY_PORT"
}

# start_pair DRIVER: both.
start_pair() {
  start_backend
  start_ringway "$@"
}

# load CONNS INFLIGHT DURATION [PROTOCOL]: closed-loop load on core 1, prints the JSON line.
load() {
  taskset -c 1 "$BIN/ringway-bench" load --target "127.0.0.1:$PROXY_PORT" -c "$1" -m "$2" -d "$3" \
    --warmup 0s --protocol "${4:-$PROTOCOL}" --json
}

json_field() { python3 -c "import json,sys; print(json.loads(sys.stdin.read())['$1'])"; }
