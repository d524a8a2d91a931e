#!/usr/bin/env bash
# Runs every test ringway has: unit, property and integration tests of every workspace member
# (each integration test on both the io_uring and the epoll driver), with Apache Thrift's Rust
# and Python peers; then the upstream monoio tests against the patched copy in vendor/monoio,
# and the check that every patched hunk there is marked.
# Usage: scripts/test.sh [extra nextest/cargo-test filter args]
set -euo pipefail
cd "$(dirname "$0")/.."

# The Python peers (PyPI thrift, grpcio) and Prometheus' Python parser.
python3 -m pip install --quiet --disable-pip-version-check -r tests/py/requirements.txt

# A real Prometheus server and promtool (Debian's prometheus package) for the metrics tests.
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
  else
    echo "scripts/test.sh: prometheus and promtool are needed (apt-get install prometheus)" >&2
  fi
fi

# A real etcd and etcdctl (Debian's etcd-server and etcd-client) for the registry tests.
if ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server etcd-client >/dev/null \
      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server etcd-client >/dev/null; }
  else
    echo "scripts/test.sh: etcd and etcdctl are needed (apt-get install etcd-server etcd-client)" >&2
  fi
fi

# Both binaries: the process tests run `ringway` and `ringway-bench` (cargo builds a binary
# for the integration tests of its own package only).
cargo build --workspace --bins

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-targets --no-fail-fast "$@"
else
  cargo test --workspace --all-targets --no-fail-fast "$@"
fi

# The vendored, patched monoio: its own upstream tests on both drivers, and every hunk marked.
bash scripts/monoio-tests.sh
bash vendor/monoio/check-patch.sh
