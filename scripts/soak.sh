#!/usr/bin/env bash
# Soak test: mixed Thrift and gRPC load through a release build of ringway for MINUTES, with
# reloads and backend restarts, sampling RSS, open fds and errors every 10 s (perf/soak.py).
# Writes perf/out/soak.{csv,md,png}. Usage: scripts/soak.sh [MINUTES]   (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check matplotlib==3.9.2
cargo build --release --workspace --bins
exec python3 perf/soak.py --minutes "${1:-30}"
