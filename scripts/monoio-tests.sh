#!/usr/bin/env bash
# Runs the upstream monoio 0.2.4 tests that exercise what ringway's patches to the vendored
# monoio touch (vendor/monoio/RINGWAY-PATCH.md, "Upstream tests"): TCP and Unix stream reads and
# writes, datagram reads (the patched Recv op), readiness, timers, park/unpark and cancellation,
# against the patched copy, each `#[monoio::test_all]` test on both drivers (io_uring and
# legacy/epoll), with the features ringway builds monoio with.
# Usage: scripts/monoio-tests.sh [extra libtest args, e.g. a name filter or --nocapture]
# CARGO_TARGET_DIR defaults to ringway's target/ so dependencies are built once.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
manifest="$root/vendor/monoio/Cargo.toml"

# ringway's monoio features (workspace.dependencies in Cargo.toml).
features=iouring,legacy,macros,bytes,utils,sync,async-cancel
# Unit tests in src/ (timer wheel, park/unpark across threads, spawn_blocking, buffers) and
# the integration tests in tests/ that touch the patched paths.
targets=(--lib
  --test tcp_echo --test tcp_split --test tcp_into_split --test tcp_accept --test tcp_connect
  --test buf_writter --test uds_split --test udp --test unix_datagram
  --test unix_seqpacket)
# Left out (RINGWAY-PATCH.md, "Upstream tests"): tests that need more than 127.0.0.1 (outside
# hosts or DNS, IPv6, a hostname), and uds_stream (monoio 0.2.4's UnixListener::bind sets
# SO_REUSEPORT, which current kernels refuse on Unix sockets).
skips=(--skip connect_timeout_dst --skip cancel_read --skip cancel_select --skip connect_v6
  --skip host_str)

# Build first (not bounded: a cold build on a busy machine takes minutes), then run the tests
# with a bound (they take about two seconds; the bound also covers waiting for target/'s lock
# if another cargo is building there).
cargo test --locked --manifest-path "$manifest" --no-default-features --features "$features" \
  "${targets[@]}" --no-run
timeout --kill-after=10 120 cargo test --locked --manifest-path "$manifest" \
  --no-default-features --features "$features" --no-fail-fast "${targets[@]}" \
  -- "${skips[@]}" "$@"
