#!/usr/bin/env bash
# Runs one coverage-guided fuzz target (cargo fuzz, libFuzzer) for SECONDS, starting from the
# committed corpus and seeds, adding what it finds to fuzz/corpus/TARGET. A crash stops it and
# leaves the input under fuzz/artifacts/TARGET/; copy it to fuzz/regressions/TARGET/ so
# tests/fuzz_corpus.rs replays it forever. Targets: the functions of src/fuzzing.rs.
# Usage: scripts/fuzz.sh TARGET SECONDS [extra libFuzzer flags]   (e.g. -runs=10000000)
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?usage: scripts/fuzz.sh TARGET SECONDS [libFuzzer flags]}
secs=${2:?usage: scripts/fuzz.sh TARGET SECONDS [libFuzzer flags]}
shift 2
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
mkdir -p "fuzz/corpus/$target" "fuzz/logs"
# libFuzzer's instrumentation needs nightly flags; RUSTC_BOOTSTRAP lets the stable
# toolchain take them. -a: debug assertions (overflow checks) on.
cd fuzz
RUSTC_BOOTSTRAP=1 cargo fuzz run -O -a "$target" "corpus/$target" "seeds/$target" -- \
  -max_total_time="$secs" -rss_limit_mb=1024 -timeout=10 -print_final_stats=1 "$@" 2>&1 \
  | tee "logs/$target.log" | grep -E "^#[0-9]+.*(DONE|pulse)|stat::|ERROR|SUMMARY|crash-|Done" || true
test "${PIPESTATUS[0]}" -eq 0
