#!/usr/bin/env bash
# Side by side, one run: direct path, ringway, nginx, HAProxy (Thrift: L4; gRPC: grpc_pass / proto h2).
# Installs nginx/HAProxy with apt-get when missing (as root). Proxies on core 0, backend and
# load generator on core 1. Examples:
#   perf/compare.sh                          # 3 repeats, 1x1 and 32x10, framed-binary and ttheader
#   perf/compare.sh --raise-haltpoll         # raise guest_halt_poll_ns for the run, restore after
#   perf/compare.sh --repeats 5 --duration 10s --json /tmp/compare.json
#   perf/compare.sh --protocols grpc-unary,grpc-server-stream   # gRPC: nginx grpc_pass, HAProxy proto h2
#   HGRM_DIR=/tmp/hgrm perf/compare.sh --protocols framed-binary --levels 32x10
#       # also /tmp/hgrm/<peer>.hgrm (latency distributions) and /tmp/hgrm/latency.png (perf/plot.py)
set -euo pipefail
# Made absolute before the cd below, so a relative HGRM_DIR means the caller's directory.
if [ -n "${HGRM_DIR:-}" ]; then export HGRM_DIR="$(realpath -m "$HGRM_DIR")"; fi
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin ringway --bin ringway-bench
exec python3 perf/compare.py "$@"
