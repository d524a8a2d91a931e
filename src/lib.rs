//! # ringway
//!
//! A thread-per-core RPC data-plane proxy for Thrift and gRPC. `docs/architecture.md` walks
//! one Thrift request and one gRPC stream through these modules.
//!
//! # Layout
//!
//! Dependencies point down this list, layer by layer (codecs at the bottom).
//!
//! Process:
//! - `main.rs`: the `ringway` binary (`run`, `check`).
//! - [`control`]: the control thread: loads config, starts workers, hands them snapshots,
//!   reload (SIGHUP), drain (SIGTERM).
//! - [`worker`]: pinned worker threads, each one monoio runtime: accept loops, commands,
//!   drain. [`worker::state`] is what a worker owns (config view, pools by connection type,
//!   the registry of downstream connections); [`worker::hold`] is event coalescing.
//! - [`admin`]: the admin HTTP endpoint, on threads of its own (`/healthz`, `/ready`,
//!   `/config`, `/stats`, `/reload`, `/drain`).
//! - [`protocol`]: the one place that lists the protocols: each listener's protocol with its
//!   typed keys, each protocol's counters, and (`protocol/serve.rs`) the task that serves an
//!   accepted connection.
//!
//! Proxy logic, one folder per protocol:
//! - [`thrift`]: Framed, TTHeader, THeader. [`thrift::codec`] (sans I/O: detect, cut,
//!   classify, patch seqIDs, exceptions), [`thrift::downstream`] (the per-connection loop),
//!   [`thrift::session`] (a client's shared state, pending entries), [`thrift::seqtable`]
//!   (pending requests by seqID), [`thrift::upstream`] (multiplexed upstream connection),
//!   [`thrift::config`] (listener keys), [`thrift::errors`] (errors → exceptions),
//!   [`thrift::stats`] (its counters).
//! - [`grpc`]: gRPC over HTTP/2 cleartext. [`grpc::h2`] (sans I/O: frames, HPACK, header
//!   blocks), [`grpc::wire`] (gRPC fields), [`grpc::config`] (listener keys),
//!   [`grpc::errors`] (errors → status or reset), [`grpc::stats`] (its counters), and, private
//!   to the folder, `conn`
//!   (connection state and connection-level frames, both sides), `stream` (one call: state
//!   machine and flow-controlled queues), `downstream`, `upstream`.
//!
//! Shared machinery (knows no protocol):
//! - [`config`]: TOML config, typed and validated once into an immutable snapshot.
//! - [`pool`]: per-worker pools of multiplexed upstream connections of any protocol.
//! - [`route`]: first-match route tables.
//! - [`error`]: what can go wrong with a request, and who started it.
//! - [`stats`]: per-worker counters every protocol shares (and the `counters!` macro).
//! - [`metrics`]: per-worker labelled metrics (listener, route, cluster, endpoint; latency
//!   histograms), kept across reloads and reported to the admin side on request.
//! - [`io`]: read and write loops over monoio (adaptive reads, outbox writes).
//! - [`local`]: single-thread building blocks: `Notify`, `Outbox`, panic guards, id maps.
//! - [`logging`]: the log line format.
//! - [`access_log`]: sampled per-request JSON lines, written by a thread per file.
//! - `fuzzing`: the fuzz targets' entry points (`fuzz/`, `tests/fuzz_corpus.rs`).

pub mod access_log;
pub mod admin;
pub mod config;
pub mod control;
pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod grpc;
pub mod health;
pub mod hosts;
pub mod io;
pub mod local;
pub mod logging;
pub mod metrics;
pub mod pool;
pub mod protocol;
pub mod registry;
pub mod resolve;
pub mod route;
pub mod stats;
pub mod thrift;
pub mod ttstream;
pub mod worker;
