#!/usr/bin/env bash
# Thrift side by side, one run: direct path, ringway, nginx `stream`, HAProxy `mode tcp`.
# Installs nginx/HAProxy with apt-get when missing (as root). Proxies on core 0, backend and
# load generator on core 1. Examples:
#   perf/compare.sh                          # 3 repeats, 1x1 and 32x10, framed-binary and ttheader
#   perf/compare.sh --raise-haltpoll         # raise guest_halt_poll_ns for the run, restore after
#   perf/compare.sh --repeats 5 --duration 10s --json /tmp/compare.json
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin ringway --bin ringway-bench
exec python3 perf/compare.py "$@"
