//! The config file as written, before validation. Unknown keys are errors (typos must not be
//! silently ignored); values keep their written form so problems can name their key path.

use std::collections::HashSet;

use serde::Deserialize;

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
const DEFAULT_MAX_FRAME_SIZE: usize = 16 << 20;
const DEFAULT_MAX_PENDING: usize = 1024;
const DEFAULT_MAX_WRITE_BUFFER: usize = 4 << 20;
const DEFAULT_MAX_METHOD_NAME: usize = 4096;
const DEFAULT_MAX_CONNS_PER_ENDPOINT: usize = 4;
const DEFAULT_MAX_REQS_PER_CONN: usize = 256;

#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum StrOrInt {
    Int(i64),
    Str(String),
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    runtime: RawRuntime,
    #[serde(default)]
    listener: Vec<RawListener>,
    #[serde(default)]
    cluster: Vec<RawCluster>,
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
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawListener {
    name: Option<String>,
    protocol: Option<String>,
    address: Option<String>,
    #[serde(default)]
    routes: Vec<RawRoute>,
    max_frame_size: Option<StrOrInt>,
    max_pending_requests: Option<i64>,
    max_method_name: Option<i64>,
    max_write_buffer: Option<StrOrInt>,
    max_concurrent_streams: Option<i64>,
    initial_stream_window: Option<StrOrInt>,
    initial_connection_window: Option<StrOrInt>,
    max_header_list_size: Option<StrOrInt>,
    max_continuation_frames: Option<i64>,
    max_reset_burst: Option<i64>,
    max_resets_per_second: Option<i64>,
    max_pending_control_frames: Option<i64>,
    max_settings_entries: Option<i64>,
    max_empty_data_frames: Option<i64>,
    stream_stall_timeout: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawRoute {
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
    max_connections_per_endpoint: Option<i64>,
    max_requests_per_connection: Option<i64>,
    max_frame_size: Option<StrOrInt>,
    max_write_buffer: Option<StrOrInt>,
}

/// Collects problems with their key paths.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn add(&mut self, path: impl std::fmt::Display, msg: impl std::fmt::Display) {
        self.0.push(format!("{path}: {msg}"));
    }

    fn duration(&mut self, path: String, v: &Option<String>, default: &str) -> Duration {
        match parse_duration(v.as_deref().unwrap_or(default)) {
            Ok(d) if d.is_zero() => {
                self.add(path, "must be greater than zero");
                Duration::from_secs(1)
            }
            Ok(d) => d,
            Err(e) => {
                self.add(path, e);
                Duration::from_secs(1)
            }
        }
    }

    /// A byte size in 64..=1GiB; the default depends on the key.
    fn frame_size(&mut self, path: String, v: &Option<StrOrInt>) -> usize {
        let default =
            if path.ends_with("max_write_buffer") { DEFAULT_MAX_WRITE_BUFFER } else { DEFAULT_MAX_FRAME_SIZE };
        let n = match v {
            None => return default,
            Some(StrOrInt::Int(n)) => usize::try_from(*n).map_err(|_| format!("{n} is negative")),
            Some(StrOrInt::Str(s)) => parse_byte_size(s),
        };
        match n {
            Ok(n) if (64..=0x4000_0000).contains(&n) => n,
            Ok(n) => {
                self.add(path, format!("{n} is out of range 64..=1GiB"));
                default
            }
            Err(e) => {
                self.add(path, e);
                default
            }
        }
    }

    fn positive(&mut self, path: String, v: Option<i64>, default: usize, max: usize) -> usize {
        match v {
            None => default,
            Some(n) if n >= 1 && n as u64 <= max as u64 => n as usize,
            Some(n) => {
                self.add(path, format!("{n} is out of range 1..={max}"));
                default
            }
        }
    }
}

impl RawConfig {
    pub fn validate(self) -> Result<Config, ConfigErrors> {
        let mut p = Problems::default();
        let runtime = self.runtime.validate(&mut p);

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
            if c.endpoints.is_empty() {
                p.add(format!("{path}.endpoints"), "needs at least one endpoint");
            }
            let endpoints = c
                .endpoints
                .iter()
                .enumerate()
                .filter_map(|(j, e)| parse_address(e).map_err(|err| p.add(format!("{path}.endpoints[{j}]"), err)).ok())
                .collect();
            clusters.push(ClusterConfig {
                name,
                endpoints,
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
                max_frame_size: p.frame_size(format!("{path}.max_frame_size"), &c.max_frame_size),
                max_write_buffer: p.frame_size(format!("{path}.max_write_buffer"), &c.max_write_buffer),
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
            let protocol = match l.protocol.as_deref() {
                Some("thrift") | None => ListenerProtocol::Thrift,
                Some("grpc") => ListenerProtocol::Grpc,
                Some(other) => {
                    p.add(format!("{path}.protocol"), format!("unknown protocol {other:?} (thrift | grpc)"));
                    ListenerProtocol::Thrift
                }
            };
            let address = match l.address.as_deref() {
                None => {
                    p.add(format!("{path}.address"), "missing");
                    None
                }
                Some(a) => parse_address(a).map_err(|e| p.add(format!("{path}.address"), e)).ok(),
            };
            let mut routes = Vec::new();
            for (j, r) in l.routes.iter().enumerate() {
                let rpath = format!("{path}.routes[{j}]");
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
            let max_frame_size = p.frame_size(format!("{path}.max_frame_size"), &l.max_frame_size);
            if let Some(address) = address {
                listeners.push(ListenerConfig {
                    name,
                    protocol,
                    address,
                    routes,
                    max_frame_size,
                    max_pending_requests: p.positive(
                        format!("{path}.max_pending_requests"),
                        l.max_pending_requests,
                        DEFAULT_MAX_PENDING,
                        1 << 20,
                    ),
                    max_write_buffer: p.frame_size(format!("{path}.max_write_buffer"), &l.max_write_buffer),
                    max_method_name: p.positive(
                        format!("{path}.max_method_name"),
                        l.max_method_name,
                        DEFAULT_MAX_METHOD_NAME,
                        1 << 16,
                    ),
                    h2: h2_limits(&mut p, &path, l),
                });
            }
        }
        if p.0.is_empty() {
            Ok(Config { runtime, listeners, clusters })
        } else {
            Err(ConfigErrors(p.0))
        }
    }
}

/// The HTTP/2 keys of a listener, each checked against the range the protocol allows.
fn h2_limits(p: &mut Problems, path: &str, l: &RawListener) -> H2Limits {
    let d = H2Limits::default();
    let window = |p: &mut Problems, key: &str, v: &Option<StrOrInt>, default: u32| -> u32 {
        let n = match v {
            None => return default,
            Some(StrOrInt::Int(n)) => usize::try_from(*n).map_err(|_| format!("{n} is negative")),
            Some(StrOrInt::Str(s)) => parse_byte_size(s),
        };
        match n {
            Ok(n) if (65_535..=0x7fff_ffff).contains(&n) => n as u32,
            Ok(n) => {
                p.add(format!("{path}.{key}"), format!("{n} is out of range 65535..=2147483647"));
                default
            }
            Err(e) => {
                p.add(format!("{path}.{key}"), e);
                default
            }
        }
    };
    let header_list = match &l.max_header_list_size {
        None => d.max_header_list_size,
        Some(v) => {
            let n = match v {
                StrOrInt::Int(n) => usize::try_from(*n).map_err(|_| format!("{n} is negative")),
                StrOrInt::Str(s) => parse_byte_size(s),
            };
            match n {
                Ok(n) if (1024..=16 << 20).contains(&n) => n as u32,
                Ok(n) => {
                    p.add(format!("{path}.max_header_list_size"), format!("{n} is out of range 1KiB..=16MiB"));
                    d.max_header_list_size
                }
                Err(e) => {
                    p.add(format!("{path}.max_header_list_size"), e);
                    d.max_header_list_size
                }
            }
        }
    };
    let key = |k: &str| format!("{path}.{k}");
    H2Limits {
        max_concurrent_streams: p.positive(
            key("max_concurrent_streams"),
            l.max_concurrent_streams,
            d.max_concurrent_streams as usize,
            1 << 20,
        ) as u32,
        initial_stream_window: window(p, "initial_stream_window", &l.initial_stream_window, d.initial_stream_window),
        initial_connection_window: window(
            p,
            "initial_connection_window",
            &l.initial_connection_window,
            d.initial_connection_window,
        ),
        max_header_list_size: header_list,
        max_continuation_frames: p.positive(
            key("max_continuation_frames"),
            l.max_continuation_frames,
            d.max_continuation_frames,
            1024,
        ),
        max_reset_burst: p.positive(key("max_reset_burst"), l.max_reset_burst, d.max_reset_burst as usize, 1 << 20)
            as u32,
        max_resets_per_second: p.positive(
            key("max_resets_per_second"),
            l.max_resets_per_second,
            d.max_resets_per_second as usize,
            1 << 20,
        ) as u32,
        max_pending_control_frames: p.positive(
            key("max_pending_control_frames"),
            l.max_pending_control_frames,
            d.max_pending_control_frames,
            1 << 20,
        ),
        max_settings_entries: p.positive(
            key("max_settings_entries"),
            l.max_settings_entries,
            d.max_settings_entries,
            1024,
        ),
        max_empty_data_frames: p.positive(
            key("max_empty_data_frames"),
            l.max_empty_data_frames,
            d.max_empty_data_frames as usize,
            1 << 20,
        ) as u32,
        stream_stall_timeout: match &l.stream_stall_timeout {
            None => d.stream_stall_timeout,
            Some(v) => p.duration(key("stream_stall_timeout"), &Some(v.clone()), "30s"),
        },
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
