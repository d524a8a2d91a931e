#!/usr/bin/env bash
# The chaos tests, long form: runs the fault-injection suites (tests/chaos.rs: a garbage
# backend, a backend reset mid-stream, a veth link taken down and rate-limited inside a
# network namespace; tests/hostile_clients.rs, tests/stalled_clients.rs,
# tests/memory_budget.rs, tests/upstreams.rs: killed, restarted, black-holed and slow
# backends) ROUNDS times in a row, each round on both drivers, stopping at the first
# failure. Repeats are what finds the races one run misses. Usage: scripts/chaos.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-10}
cargo build --workspace --bins
for i in $(seq 1 "$rounds"); do
  echo "chaos round $i/$rounds"
  cargo nextest run --no-fail-fast --test chaos --test hostile_clients --test stalled_clients \
    --test memory_budget --test upstreams
done
echo "chaos: $rounds rounds passed"
