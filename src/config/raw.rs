//! The config file as written, before validation. Unknown keys are errors (typos must not be
//! silently ignored); values keep their written form so problems can name their key path.

use std::collections::HashSet;

use serde::Deserialize;

use super::problems::{Problems, Section, StrOrInt, SIZE_RANGE};
use super::*;

const DEFAULT_DRAIN_TIMEOUT: &str = "30s";
const DEFAULT_DRAIN_IDLE_CLOSE: &str = "1s";
const DEFAULT_COALESCE_WAIT: &str = "100us";
const DEFAULT_COALESCE_MIN_STREAMS: usize = 128;
const DEFAULT_BUSY_POLL: &str = "0";
/// A longer coalescing wait is a latency cost no proxy should pay: refused.
const MAX_SHORT_WAIT: Duration = Duration::from_millis(1);
const DEFAULT_CONNECT_TIMEOUT: &str = "1s";
const DEFAULT_CONNECT_FAILURE_BACKOFF: &str = "2s";
const DEFAULT_REQUEST_TIMEOUT: &str = "5s";
const DEFAULT_STREAM_IDLE_TIMEOUT: &str = "5m";
const DEFAULT_MAX_FRAME_SIZE: usize = 16 << 20;
const DEFAULT_MAX_WRITE_BUFFER: usize = 4 << 20;
/// Default `runtime.max_buffer_memory` (per worker).
const DEFAULT_MAX_BUFFER_MEMORY: usize = 1 << 30;
/// Default `cluster[].max_pending_requests` (per worker, as Envoy's circuit breaker).
const DEFAULT_MAX_PENDING_REQUESTS: usize = 1024;
/// Default `cluster[].max_requests` in flight per worker (Envoy: 1024 for the whole process;
/// ours is per worker and higher, so a busy worker is not the first thing to refuse).
const DEFAULT_MAX_REQUESTS: usize = 4096;
const DEFAULT_RETRIES: u32 = 1;
const DEFAULT_RETRY_BUDGET_PERCENT: u32 = 20;
const DEFAULT_DNS_REFRESH: &str = "5s";
/// Default `listener[].max_connections` (per worker).
const DEFAULT_MAX_CONNECTIONS: usize = 100_000;
const DEFAULT_ADMIN_MAX_REQUEST: usize = 64 << 10;
const DEFAULT_ADMIN_READ_TIMEOUT: &str = "5s";
const DEFAULT_MAX_CONNS_PER_ENDPOINT: usize = 4;
const DEFAULT_MAX_REQS_PER_CONN: usize = 256;

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    runtime: RawRuntime,
    #[serde(default)]
    listener: Vec<RawListener>,
    #[serde(default)]
    cluster: Vec<RawCluster>,
    admin: Option<RawAdmin>,
    #[serde(default)]
    registry: Vec<super::registry::RawRegistry>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    address: Option<String>,
    max_request_size: Option<StrOrInt>,
    read_timeout: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RawRuntime {
    workers: Option<StrOrInt>,
    driver: Option<String>,
    drain_timeout: Option<String>,
    drain_idle_close: Option<String>,
    coalesce_wait: Option<String>,
    coalesce_min_streams: Option<i64>,
    busy_poll: Option<String>,
    max_buffer_memory: Option<StrOrInt>,
}

/// A listener: the keys every listener has, and the rest, which belong to its protocol
/// (`protocol::ListenerProtocol::parse` checks them; unknown ones are refused there).
#[derive(Deserialize, Debug)]
struct RawListener {
    name: Option<String>,
    protocol: Option<String>,
    address: Option<String>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    max_write_buffer: Option<StrOrInt>,
    max_connections: Option<i64>,
    write_stall_timeout: Option<String>,
    access_log: Option<RawAccessLog>,
    #[serde(flatten)]
    rest: toml::Table,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawAccessLog {
    path: Option<String>,
    sample: Option<f64>,
    max_queued_lines: Option<i64>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    name: Option<String>,
    service: Option<String>,
    method: Option<String>,
    method_prefix: Option<String>,
    cluster: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    name: Option<String>,
    #[serde(default)]
    endpoints: Vec<String>,
    connect_timeout: Option<String>,
    connect_failure_backoff: Option<String>,
    request_timeout: Option<String>,
    stream_idle_timeout: Option<String>,
    max_connections_per_endpoint: Option<i64>,
    max_requests_per_connection: Option<i64>,
    max_pending_requests: Option<i64>,
    max_requests: Option<i64>,
    max_frame_size: Option<StrOrInt>,
    max_write_buffer: Option<StrOrInt>,
    lb: Option<String>,
    hash_key: Option<String>,
    health_check: Option<super::upstream::RawHealthCheck>,
    outlier_detection: Option<super::upstream::RawOutlier>,
    retries: Option<i64>,
    retry_budget_percent: Option<i64>,
    dns_refresh: Option<String>,
    discovery: Option<super::registry::RawDiscovery>,
}

impl RawConfig {
    pub fn validate(self) -> Result<Config, ConfigErrors> {
        let mut p = Problems::default();
        let runtime = self.runtime.validate(&mut p);
        let registries = super::registry::validate_registries(&self.registry, &mut p);

        let mut cluster_names = HashSet::new();
        let mut clusters = Vec::new();
        for (i, c) in self.cluster.iter().enumerate() {
            let path = format!("cluster[{i}]");
            let name = c.name.clone().unwrap_or_default();
            if name.is_empty() {
                p.add(format!("{path}.name"), "missing");
            } else if !cluster_names.insert(name.clone()) {
                p.add(format!("{path}.name"), format!("duplicate cluster name {name:?}"));
            }
            let discovery = c.discovery.as_ref().and_then(|d| {
                super::registry::validate_discovery(d, &format!("{path}.discovery"), &registries, &mut p)
            });
            match (c.endpoints.is_empty(), c.discovery.is_some()) {
                (true, false) => p.add(format!("{path}.endpoints"), "needs at least one endpoint (or a discovery)"),
                (false, true) => p.add(&path, "give endpoints or discovery, not both"),
                _ => {}
            }
            let mut endpoints: Vec<Address> = Vec::new();
            for (j, e) in c.endpoints.iter().enumerate() {
                match resolve_endpoint(e) {
                    Ok(addrs) => {
                        endpoints.extend(addrs.into_iter().filter(|a| !endpoints.contains(a)).collect::<Vec<_>>())
                    }
                    Err(err) => p.add(format!("{path}.endpoints[{j}]"), err),
                }
            }
            let endpoint_names = if c.endpoints.iter().any(|e| is_name(e)) { c.endpoints.clone() } else { Vec::new() };
            let dns_refresh = p.duration(format!("{path}.dns_refresh"), &c.dns_refresh, DEFAULT_DNS_REFRESH);
            if dns_refresh < Duration::from_millis(100) {
                p.add(format!("{path}.dns_refresh"), "at least 100ms");
            }
            let retries = p.count(format!("{path}.retries"), c.retries, DEFAULT_RETRIES, 5, " (0: no retries)");
            let retry_budget_percent = p.count(
                format!("{path}.retry_budget_percent"),
                c.retry_budget_percent,
                DEFAULT_RETRY_BUDGET_PERCENT,
                100,
                "",
            );
            clusters.push(ClusterConfig {
                name,
                endpoints,
                endpoint_names,
                dns_refresh,
                discovery,
                weights: Vec::new(),
                revision: 0,
                lb: super::upstream::lb_policy(&path, c.lb.as_deref(), c.hash_key.as_deref(), &mut p),
                health_check: c.health_check.as_ref().and_then(|h| h.validate(&format!("{path}.health_check"), &mut p)),
                outlier: c
                    .outlier_detection
                    .as_ref()
                    .map(|o| o.validate(&format!("{path}.outlier_detection"), &mut p))
                    .unwrap_or_default(),
                max_requests: p.positive(format!("{path}.max_requests"), c.max_requests, DEFAULT_MAX_REQUESTS, 1 << 24),
                retries,
                retry_budget_percent,
                connect_timeout: p.duration(
                    format!("{path}.connect_timeout"),
                    &c.connect_timeout,
                    DEFAULT_CONNECT_TIMEOUT,
                ),
                connect_failure_backoff: p.duration(
                    format!("{path}.connect_failure_backoff"),
                    &c.connect_failure_backoff,
                    DEFAULT_CONNECT_FAILURE_BACKOFF,
                ),
                request_timeout: p.duration(
                    format!("{path}.request_timeout"),
                    &c.request_timeout,
                    DEFAULT_REQUEST_TIMEOUT,
                ),
                stream_idle_timeout: p.duration(
                    format!("{path}.stream_idle_timeout"),
                    &c.stream_idle_timeout,
                    DEFAULT_STREAM_IDLE_TIMEOUT,
                ),
                max_connections_per_endpoint: p.positive(
                    format!("{path}.max_connections_per_endpoint"),
                    c.max_connections_per_endpoint,
                    DEFAULT_MAX_CONNS_PER_ENDPOINT,
                    1024,
                ),
                max_requests_per_connection: p.positive(
                    format!("{path}.max_requests_per_connection"),
                    c.max_requests_per_connection,
                    DEFAULT_MAX_REQS_PER_CONN,
                    1 << 20,
                ),
                max_pending_requests: p.positive(
                    format!("{path}.max_pending_requests"),
                    c.max_pending_requests,
                    DEFAULT_MAX_PENDING_REQUESTS,
                    1 << 20,
                ),
                max_frame_size: p.byte_size(
                    format!("{path}.max_frame_size"),
                    &c.max_frame_size,
                    DEFAULT_MAX_FRAME_SIZE,
                    SIZE_RANGE,
                ),
                max_write_buffer: p.byte_size(
                    format!("{path}.max_write_buffer"),
                    &c.max_write_buffer,
                    DEFAULT_MAX_WRITE_BUFFER,
                    SIZE_RANGE,
                ),
            });
        }

        let mut listener_names = HashSet::new();
        let mut listeners = Vec::new();
        if self.listener.is_empty() {
            p.add("listener", "at least one [[listener]] is needed");
        }
        for (i, l) in self.listener.iter().enumerate() {
            let path = format!("listener[{i}]");
            let name = l.name.clone().unwrap_or_else(|| format!("listener{i}"));
            if !listener_names.insert(name.clone()) {
                p.add(format!("{path}.name"), format!("duplicate listener name {name:?}"));
            }
            let address = match l.address.as_deref() {
                None => {
                    p.add(format!("{path}.address"), "missing");
                    None
                }
                Some(a) => parse_address(a).map_err(|e| p.add(format!("{path}.address"), e)).ok(),
            };
            let mut routes = Vec::new();
            let mut route_names = HashSet::new();
            for (j, r) in l.routes.iter().enumerate() {
                let rpath = format!("{path}.routes[{j}]");
                let route_name = r.name.clone().unwrap_or_else(|| j.to_string());
                if route_name.is_empty() {
                    p.add(format!("{rpath}.name"), "empty (leave it out to name the route by its index)");
                } else if !route_names.insert(route_name.clone()) {
                    p.add(format!("{rpath}.name"), format!("route {route_name:?} is defined twice in this listener"));
                }
                let cluster = match r.cluster.as_deref() {
                    None => {
                        p.add(format!("{rpath}.cluster"), "missing");
                        None
                    }
                    Some(c) => {
                        let idx = clusters.iter().position(|k| k.name == c);
                        if idx.is_none() {
                            p.add(format!("{rpath}.cluster"), format!("no cluster named {c:?}"));
                        }
                        idx
                    }
                };
                if r.method.is_some() && r.method_prefix.is_some() {
                    p.add(&rpath, "give method or method_prefix, not both");
                }
                if let Some(cluster) = cluster {
                    routes.push(RouteConfig {
                        name: route_name,
                        service: r.service.clone(),
                        method: r.method.clone(),
                        method_prefix: r.method_prefix.clone(),
                        cluster,
                    });
                }
            }
            if l.routes.is_empty() {
                p.add(format!("{path}.routes"), "needs at least one route");
            }
            let max_write_buffer = p.byte_size(
                format!("{path}.max_write_buffer"),
                &l.max_write_buffer,
                DEFAULT_MAX_WRITE_BUFFER,
                SIZE_RANGE,
            );
            let protocol = ListenerProtocol::parse(l.protocol.as_deref(), &Section::new(&l.rest, &path), &mut p);
            if let Some(address) = address {
                let access_log = l.access_log.as_ref().and_then(|a| a.validate(&format!("{path}.access_log"), &mut p));
                let max_connections = p.positive(
                    format!("{path}.max_connections"),
                    l.max_connections,
                    DEFAULT_MAX_CONNECTIONS,
                    1_000_000,
                );
                let write_stall_timeout =
                    p.duration(format!("{path}.write_stall_timeout"), &l.write_stall_timeout, "30s");
                listeners.push(ListenerConfig {
                    name,
                    address,
                    routes,
                    max_write_buffer,
                    max_connections,
                    write_stall_timeout,
                    protocol,
                    access_log,
                });
            }
        }
        let admin = self.admin.as_ref().and_then(|a| a.validate(&mut p));
        if p.0.is_empty() {
            Ok(Config { runtime, listeners, clusters, admin, registries })
        } else {
            Err(ConfigErrors(p.0))
        }
    }
}

impl RawAdmin {
    fn validate(&self, p: &mut Problems) -> Option<AdminConfig> {
        let address = match self.address.as_deref() {
            None => {
                p.add("admin.address", "missing (leave out [admin] for no admin server)");
                None
            }
            Some(a) => parse_address(a).map_err(|e| p.add("admin.address", e)).ok(),
        };
        let max_request_size = p.byte_size(
            "admin.max_request_size".into(),
            &self.max_request_size,
            DEFAULT_ADMIN_MAX_REQUEST,
            (1024..=16 << 20, "1KiB..=16MiB"),
        );
        let read_timeout = p.duration("admin.read_timeout".into(), &self.read_timeout, DEFAULT_ADMIN_READ_TIMEOUT);
        Some(AdminConfig { address: address?, max_request_size, read_timeout })
    }
}

impl RawRuntime {
    fn validate(&self, p: &mut Problems) -> RuntimeConfig {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let workers = match &self.workers {
            None => cores,
            Some(StrOrInt::Str(s)) if s == "auto" => cores,
            Some(StrOrInt::Int(n)) if *n >= 1 && *n <= 1024 => *n as usize,
            Some(other) => {
                p.add("runtime.workers", format!("{other:?}: use \"auto\" or an integer 1..=1024"));
                1
            }
        };
        let driver = match self.driver.as_deref() {
            None | Some("auto") => DriverKind::Auto,
            Some("io_uring") => DriverKind::IoUring,
            Some("epoll") => DriverKind::Epoll,
            Some(other) => {
                p.add("runtime.driver", format!("unknown driver {other:?} (auto | io_uring | epoll)"));
                DriverKind::Auto
            }
        };
        RuntimeConfig {
            workers,
            driver,
            drain_timeout: p.duration("runtime.drain_timeout".into(), &self.drain_timeout, DEFAULT_DRAIN_TIMEOUT),
            drain_idle_close: p.duration(
                "runtime.drain_idle_close".into(),
                &self.drain_idle_close,
                DEFAULT_DRAIN_IDLE_CLOSE,
            ),
            coalesce_wait: Self::off_or_short(
                "runtime.coalesce_wait",
                self.coalesce_wait.as_deref(),
                DEFAULT_COALESCE_WAIT,
                p,
            ),
            coalesce_min_streams: p.positive(
                "runtime.coalesce_min_streams".into(),
                self.coalesce_min_streams,
                DEFAULT_COALESCE_MIN_STREAMS,
                1_000_000,
            ) as u32,
            busy_poll: Self::off_or_short("runtime.busy_poll", self.busy_poll.as_deref(), DEFAULT_BUSY_POLL, p),
            max_buffer_memory: p.byte_size(
                "runtime.max_buffer_memory".into(),
                &self.max_buffer_memory,
                DEFAULT_MAX_BUFFER_MEMORY,
                (1 << 20..=1 << 40, "1MiB..=1TiB"),
            ),
        }
    }

    /// `0` (any unit, or bare) turns it off; otherwise up to 1ms. Used by
    /// `runtime.coalesce_wait` and `runtime.busy_poll`.
    fn off_or_short(key: &str, v: Option<&str>, default: &str, p: &mut Problems) -> Duration {
        let v = v.unwrap_or(default);
        let d = if v.trim() == "0" { Ok(Duration::ZERO) } else { parse_duration(v) };
        match d {
            Ok(d) if d <= MAX_SHORT_WAIT => d,
            Ok(d) => {
                p.add(key, format!("{d:?} is above the 1ms limit (use 0 to turn it off)"));
                Duration::ZERO
            }
            Err(e) => {
                p.add(key, e);
                Duration::ZERO
            }
        }
    }
}

impl RawAccessLog {
    fn validate(&self, path: &str, p: &mut Problems) -> Option<AccessLogConfig> {
        let sample = self.sample.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&sample) || sample.is_nan() {
            p.add(format!("{path}.sample"), format!("{sample} is not a fraction between 0 and 1"));
        }
        let max_queued_lines = self.max_queued_lines.unwrap_or(DEFAULT_ACCESS_LOG_QUEUE as i64);
        if !(1..=1_000_000).contains(&max_queued_lines) {
            p.add(format!("{path}.max_queued_lines"), format!("{max_queued_lines} is not between 1 and 1000000"));
        }
        match self.path.as_deref() {
            None | Some("") => {
                p.add(format!("{path}.path"), "missing (the file lines are appended to)");
                None
            }
            Some(f) => Some(AccessLogConfig {
                path: f.into(),
                sample,
                max_queued_lines: max_queued_lines.clamp(1, 1_000_000) as usize,
            }),
        }
    }
}
