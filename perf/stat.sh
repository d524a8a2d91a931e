#!/usr/bin/env bash
# Cycles and instructions per request of the ringway process under load (perf stat), plus
# task-clock ns, context switches and recvfrom / sendto / epoll_wait / io_uring_enter calls
# per request. Where the VM exposes no hardware counters, says so and still
# reports task-clock; perf/callgrind.sh counts instructions without hardware counters.
#   perf/stat.sh [--driver auto] [--level 32x10] [--seconds 5] [--protocol framed-binary|grpc-unary|…]
source "$(dirname "$0")/lib.sh"
DRIVER=auto; LEVEL=32x10; SECS=5
while [ $# -gt 0 ]; do case $1 in
  --driver) DRIVER=$2; shift 2;; --level) LEVEL=$2; shift 2;; --seconds) SECS=$2; shift 2;;
  --protocol) PROTOCOL=$2; shift 2;;
  *) echo "unknown flag $1" >&2; exit 2;; esac; done
command -v perf >/dev/null || { [ "$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf; }
start_pair "$DRIVER"
C=${LEVEL%x*}; M=${LEVEL#*x}
perf stat -x, -e task-clock,cycles,instructions -p "$RINGWAY_PID" -o "$TMP/stat.csv" -- sleep "$((SECS + 1))" &
STAT=$!
# Syscalls and context switches per request (tracepoints; a separate run so that a kernel
# without them still gets the figures above).
SYSCALLS=context-switches,syscalls:sys_exit_recvfrom,syscalls:sys_exit_sendto,syscalls:sys_exit_epoll_wait,syscalls:sys_exit_io_uring_enter
(perf stat -x, -e "$SYSCALLS" -p "$RINGWAY_PID" -o "$TMP/sys.csv" -- sleep "$((SECS + 1))" 2>/dev/null || true) &
SYS=$!
sleep 0.3
load "$C" "$M" "${SECS}s" > "$TMP/load.json"
wait $STAT $SYS
[ -s "$TMP/sys.csv" ] && cat "$TMP/sys.csv" >> "$TMP/stat.csv"
REQS=$(json_field requests < "$TMP/load.json")
python3 - "$TMP/stat.csv" "$REQS" <<'PY'
import sys
path, reqs = sys.argv[1], int(sys.argv[2])
print(f"requests: {reqs}")
for line in open(path):
    f = line.strip().split(",")
    if len(f) < 3 or not f[2]:
        continue
    value, event = f[0], f[2]
    if value.startswith("<not"):
        print(f"{event}: not supported on this machine (no hardware counters); see perf/callgrind.sh")
        continue
    v = float(value)
    if event == "task-clock":
        print(f"task-clock per request: {v * 1e6 / max(reqs, 1):.0f} ns")  # msec -> ns
    elif event in ("cycles", "instructions"):
        print(f"{event} per request: {v / max(reqs, 1):.0f}")
    else:
        print(f"{event.replace('syscalls:sys_exit_', '')} per request: {v / max(reqs, 1):.3f}")
PY
