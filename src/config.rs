//! Configuration: TOML parsed into raw structs, then validated once into typed structs. Every
//! problem is reported with its key path (`listener[0].routes[2].cluster: …`), all at once.

pub mod problems;
mod raw;
pub mod registry;
pub mod units;
pub mod upstream;

pub use registry::{Discovery, EtcdEndpoint, RegistryConfig};
pub use upstream::{CheckKind, HashKey, HealthCheck, LbPolicy, OutlierDetection};

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

pub use units::{parse_byte_size, parse_duration, ByteSize};

use crate::protocol::ListenerProtocol;

/// A validated configuration; immutable once built and shared with workers as a snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub runtime: RuntimeConfig,
    pub listeners: Vec<ListenerConfig>,
    pub clusters: Vec<ClusterConfig>,
    /// The admin endpoint; `None`: no admin server.
    pub admin: Option<AdminConfig>,
    /// `[[registry]]`: where clusters with `discovery` find their endpoints.
    pub registries: Vec<RegistryConfig>,
}

/// `[admin]`: the admin HTTP endpoint, served off the workers.
#[derive(Clone, Debug, PartialEq)]
pub struct AdminConfig {
    /// `host:port` or `unix:/path`.
    pub address: Address,
    /// Largest request (head and body) the admin server reads.
    pub max_request_size: ByteSize,
    /// A connection that sends nothing for this long is closed (and a request must arrive
    /// whole within it).
    pub read_timeout: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DriverKind {
    /// io_uring, falling back to epoll when the kernel or sandbox refuses io_uring.
    Auto,
    IoUring,
    Epoll,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RuntimeConfig {
    /// Number of pinned worker threads.
    pub workers: usize,
    pub driver: DriverKind,
    /// How long SIGTERM waits for in-flight requests before closing what is left.
    pub drain_timeout: Duration,
    /// During a drain, a downstream connection idle this long is closed.
    pub drain_idle_close: Duration,
    /// How long a busy worker's event loop waits before blocking, to take events from many
    /// connections in one turn (zero: never). See `worker/hold.rs`.
    pub coalesce_wait: Duration,
    /// gRPC streams open on a worker from which it starts coalescing (it stops below half).
    pub coalesce_min_streams: u32,
    /// How long an idle worker's event loop polls without blocking before it sleeps, so the
    /// next event is taken without a wake-up (zero: never, the default). See `worker/hold.rs`.
    pub busy_poll: Duration,
    /// Bytes a worker may hold in its read buffers (partial frames) and write queues; above
    /// it, the clients holding the most are not read and new requests are refused.
    pub max_buffer_memory: ByteSize,
}

/// Where a listener binds or an endpoint lives.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Tcp(a) => write!(f, "{a}"),
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ListenerConfig {
    pub name: String,
    pub address: Address,
    pub routes: Vec<RouteConfig>,
    /// Replies queued for a client that reads slowly; reading its requests pauses above this.
    pub max_write_buffer: ByteSize,
    /// Downstream connections open at once on one worker; a connection over it is closed
    /// as soon as it is accepted (and counted), the open ones are untouched.
    pub max_connections: usize,
    /// A client with replies waiting that has read none of them for this long is closed
    /// (its requests cancelled, its buffers freed).
    pub write_stall_timeout: Duration,
    /// The protocol, with the keys only it takes.
    pub protocol: ListenerProtocol,
    /// `access_log = { path, sample, max_queued_lines }`: off when absent.
    pub access_log: Option<AccessLogConfig>,
}

/// A listener's access log: one JSON line per sampled request, appended to `path` by a
/// thread of its own (reopened on SIGUSR1).
#[derive(Clone, Debug, PartialEq)]
pub struct AccessLogConfig {
    pub path: std::path::PathBuf,
    /// The fraction of requests logged (0 to 1; default 1).
    pub sample: f64,
    /// Lines waiting for the writer; beyond this, lines are dropped and counted.
    pub max_queued_lines: usize,
}

/// Default `access_log.max_queued_lines`.
pub const DEFAULT_ACCESS_LOG_QUEUE: usize = 8192;

/// One route: all given match keys must match; a route without keys matches everything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteConfig {
    /// The route's name in metrics and logs (`name`; default: its index in the listener).
    pub name: String,
    pub service: Option<String>,
    pub method: Option<String>,
    pub method_prefix: Option<String>,
    /// Index into `Config::clusters`.
    pub cluster: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ClusterConfig {
    pub name: String,
    /// The endpoints: each written address, or every A and AAAA record of a written name.
    pub endpoints: Vec<Address>,
    /// The endpoints as written, when one of them is a name (re-resolved every
    /// `dns_refresh`); empty when every endpoint is a literal address.
    pub endpoint_names: Vec<String>,
    pub dns_refresh: Duration,
    /// Endpoints from a registry instead of `endpoints` (which is then empty until the
    /// registry answers).
    pub discovery: Option<Discovery>,
    /// Discovered clusters: each endpoint's weight (same order as `endpoints`; empty: the
    /// default for all) and the registry revision the list reflects, as the snapshot carries
    /// them.
    pub weights: Vec<u32>,
    pub revision: i64,
    pub lb: LbPolicy,
    pub health_check: Option<HealthCheck>,
    pub outlier: OutlierDetection,
    /// Requests in flight to this cluster per worker; one more fails at once (overloaded).
    pub max_requests: usize,
    /// Times a request that never reached an upstream is tried again on another endpoint.
    pub retries: u32,
    /// Retries in flight are at most this share of the cluster's requests in flight.
    pub retry_budget_percent: u32,
    pub connect_timeout: Duration,
    /// After a failed connect, new connections go to the cluster's other endpoints for this
    /// long (each request still tries every endpoint before it fails).
    pub connect_failure_backoff: Duration,
    pub request_timeout: Duration,
    /// TTHeader Streaming: a stream with no frame either way for this long (after the
    /// server's first frame) is reset both ways.
    pub stream_idle_timeout: Duration,
    pub max_connections_per_endpoint: usize,
    pub max_requests_per_connection: usize,
    /// Requests of one worker waiting for an upstream connection (or a stream slot) at once;
    /// one more fails at once (overloaded) instead of queueing.
    pub max_pending_requests: usize,
    /// Largest reply frame accepted from an upstream; a larger one fails its own request.
    pub max_frame_size: ByteSize,
    /// Requests queued for writing on one upstream connection before it counts as full.
    pub max_write_buffer: ByteSize,
}

/// Every problem found in a file, each with its key path.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<String>);

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors(vec![format!("{}: {e}", path.display())]))?;
        Config::parse(&text)
    }

    /// Parses and validates config text.
    pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| ConfigErrors(vec![format!("toml: {e}")]))?;
        raw.validate()
    }
}

/// Parses `host:port` or `unix:/path`.
pub fn parse_address(s: &str) -> Result<Address, String> {
    if let Some(path) = s.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("unix: address needs a path".into());
        }
        return Ok(Address::Unix(PathBuf::from(path)));
    }
    let mut addrs = s.to_socket_addrs().map_err(|e| format!("bad address {s:?}: {e}"))?;
    addrs.next().map(Address::Tcp).ok_or_else(|| format!("address {s:?} resolves to nothing"))
}

/// Whether a written endpoint is a name to resolve (not `unix:` and not a literal IP).
pub fn is_name(s: &str) -> bool {
    !s.starts_with("unix:") && s.parse::<SocketAddr>().is_err()
}

/// Every address a written endpoint stands for: the address itself, or each A and AAAA record
/// of a name (in the resolver's order, without repeats).
pub fn resolve_endpoint(s: &str) -> Result<Vec<Address>, String> {
    if !is_name(s) {
        return parse_address(s).map(|a| vec![a]);
    }
    let mut out = Vec::new();
    for a in s.to_socket_addrs().map_err(|e| format!("cannot resolve {s:?}: {e}"))? {
        if !out.contains(&Address::Tcp(a)) {
            out.push(Address::Tcp(a));
        }
    }
    if out.is_empty() {
        return Err(format!("{s:?} resolves to nothing"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
