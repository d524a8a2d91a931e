#!/usr/bin/env bash
# Fleet simulation: one etcd, 4 backends and 8 ringway instances (one worker each) on loopback,
# at least CHANGES changes of each kind (add, graceful remove, lease expiry, burst of 100);
# prints convergence p50 / p99 / max per kind (perf/fleet.py). Usage: scripts/fleet.sh [CHANGES]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null; then
  [ "$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server etcd-client >/dev/null
fi
cargo build --release --workspace --bins
mkdir -p perf/out
exec python3 perf/fleet.py --changes "${1:-50}" --json perf/out/fleet.json
