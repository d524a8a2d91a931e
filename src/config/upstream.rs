//! How a cluster treats its endpoints: load balancing, active health checks, passive outlier
//! ejection, retries and name resolution. Written and validated here; used by `hosts.rs`
//! (per worker) and `health.rs` (one owner for the process).

use std::time::Duration;

use serde::Deserialize;

use super::problems::Problems;

const DEFAULT_HC_INTERVAL: &str = "1s";
const DEFAULT_HC_TIMEOUT: &str = "250ms";
const DEFAULT_HC_UNHEALTHY: usize = 3;
const DEFAULT_HC_HEALTHY: usize = 2;
const DEFAULT_HC_THRIFT_METHOD: &str = "ping";

/// Consecutive failures that eject an endpoint (Envoy: 5).
const DEFAULT_OD_CONSECUTIVE: usize = 5;
const DEFAULT_OD_BASE_EJECTION: &str = "30s";
const DEFAULT_OD_MAX_EJECTION: &str = "300s";
/// Half a cluster: one endpoint of two can be ejected (Envoy's 10 % never ejects one of two).
const DEFAULT_OD_MAX_PERCENT: usize = 50;

/// Which endpoint takes a request.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum LbPolicy {
    /// Each endpoint in turn.
    RoundRobin,
    /// Power of two choices over requests in flight: routes around a slow endpoint.
    #[default]
    LeastRequest,
    /// Consistent hashing of a key: a key stays on one endpoint while it is available.
    Hash(HashKey),
}

impl LbPolicy {
    pub fn name(&self) -> &'static str {
        match self {
            LbPolicy::RoundRobin => "round_robin",
            LbPolicy::LeastRequest => "least_request",
            LbPolicy::Hash(_) => "hash",
        }
    }
}

/// What `lb = "hash"` hashes.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum HashKey {
    /// The method name (Thrift) or `:path` (gRPC).
    #[default]
    Method,
    /// A TTHeader string header or gRPC metadata key of this name (lowercase for gRPC);
    /// requests without it hash their method.
    Header(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// A TCP connect.
    Tcp,
    /// A Thrift call (Framed, binary) with an empty struct; any reply is healthy.
    Thrift,
    /// `grpc.health.v1.Health/Check`; healthy when the answer is SERVING.
    Grpc,
}

/// `[cluster.health_check]`: active checks, made once per endpoint for the whole process.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthCheck {
    pub kind: CheckKind,
    pub interval: Duration,
    pub timeout: Duration,
    pub unhealthy_threshold: u32,
    pub healthy_threshold: u32,
    pub thrift_method: String,
    pub grpc_service: String,
}

/// `[cluster.outlier_detection]`: passive ejection on every worker from the traffic it sees.
#[derive(Clone, Debug, PartialEq)]
pub struct OutlierDetection {
    /// Consecutive failures (connect failure, connection lost with requests in flight,
    /// request timeout, gRPC UNAVAILABLE) that eject an endpoint; 0 turns ejection off.
    pub consecutive_failures: u32,
    /// An ejection lasts this times the number of times the endpoint was ejected...
    pub base_ejection_time: Duration,
    /// ...up to this.
    pub max_ejection_time: Duration,
    /// At most this share of the cluster's endpoints is ejected at once.
    pub max_ejection_percent: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            consecutive_failures: DEFAULT_OD_CONSECUTIVE as u32,
            base_ejection_time: super::units::parse_duration(DEFAULT_OD_BASE_EJECTION).unwrap(),
            max_ejection_time: super::units::parse_duration(DEFAULT_OD_MAX_EJECTION).unwrap(),
            max_ejection_percent: DEFAULT_OD_MAX_PERCENT as u32,
        }
    }
}

impl OutlierDetection {
    /// How many of `n` endpoints may be ejected at once.
    pub fn max_ejected(&self, n: usize) -> usize {
        n * self.max_ejection_percent as usize / 100
    }
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHealthCheck {
    kind: Option<String>,
    interval: Option<String>,
    timeout: Option<String>,
    unhealthy_threshold: Option<i64>,
    healthy_threshold: Option<i64>,
    thrift_method: Option<String>,
    grpc_service: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOutlier {
    consecutive_failures: Option<i64>,
    base_ejection_time: Option<String>,
    max_ejection_time: Option<String>,
    max_ejection_percent: Option<i64>,
}

impl RawHealthCheck {
    pub(super) fn validate(&self, path: &str, p: &mut Problems) -> Option<HealthCheck> {
        let kind = match self.kind.as_deref() {
            None | Some("tcp") => CheckKind::Tcp,
            Some("thrift") => CheckKind::Thrift,
            Some("grpc") => CheckKind::Grpc,
            Some(k) => {
                p.add(format!("{path}.kind"), format!("unknown kind {k:?} (use tcp, thrift or grpc)"));
                CheckKind::Tcp
            }
        };
        let interval = p.duration(format!("{path}.interval"), &self.interval, DEFAULT_HC_INTERVAL);
        let timeout = p.duration(format!("{path}.timeout"), &self.timeout, DEFAULT_HC_TIMEOUT);
        if interval < Duration::from_millis(10) {
            p.add(format!("{path}.interval"), "at least 10ms");
        }
        if timeout.is_zero() || timeout > interval {
            p.add(format!("{path}.timeout"), "must be above zero and at most the interval");
        }
        let thrift_method = self.thrift_method.clone().unwrap_or_else(|| DEFAULT_HC_THRIFT_METHOD.into());
        if thrift_method.is_empty() || thrift_method.len() > 255 {
            p.add(format!("{path}.thrift_method"), "a method name of 1..=255 bytes");
        }
        if self.thrift_method.is_some() && kind != CheckKind::Thrift {
            p.add(format!("{path}.thrift_method"), "only for kind = \"thrift\"");
        }
        if self.grpc_service.is_some() && kind != CheckKind::Grpc {
            p.add(format!("{path}.grpc_service"), "only for kind = \"grpc\"");
        }
        Some(HealthCheck {
            kind,
            interval,
            timeout,
            unhealthy_threshold: p.positive(
                format!("{path}.unhealthy_threshold"),
                self.unhealthy_threshold,
                DEFAULT_HC_UNHEALTHY,
                1000,
            ) as u32,
            healthy_threshold: p.positive(
                format!("{path}.healthy_threshold"),
                self.healthy_threshold,
                DEFAULT_HC_HEALTHY,
                1000,
            ) as u32,
            thrift_method,
            grpc_service: self.grpc_service.clone().unwrap_or_default(),
        })
    }
}

impl RawOutlier {
    pub(super) fn validate(&self, path: &str, p: &mut Problems) -> OutlierDetection {
        let d = OutlierDetection::default();
        let consecutive_failures = p.count(
            format!("{path}.consecutive_failures"),
            self.consecutive_failures,
            d.consecutive_failures,
            10_000,
            " (0: off)",
        );
        let base = p.duration(format!("{path}.base_ejection_time"), &self.base_ejection_time, DEFAULT_OD_BASE_EJECTION);
        let max = p.duration(format!("{path}.max_ejection_time"), &self.max_ejection_time, DEFAULT_OD_MAX_EJECTION);
        if base.is_zero() {
            p.add(format!("{path}.base_ejection_time"), "must be above zero");
        }
        if max < base {
            p.add(format!("{path}.max_ejection_time"), "must be at least base_ejection_time");
        }
        let max_ejection_percent =
            p.count(format!("{path}.max_ejection_percent"), self.max_ejection_percent, d.max_ejection_percent, 100, "");
        OutlierDetection {
            consecutive_failures,
            base_ejection_time: base,
            max_ejection_time: max,
            max_ejection_percent,
        }
    }
}

/// `lb` and `hash_key` as written.
pub(super) fn lb_policy(path: &str, lb: Option<&str>, hash_key: Option<&str>, p: &mut Problems) -> LbPolicy {
    let key = match hash_key {
        None | Some("method") => HashKey::Method,
        Some(k) => match k.strip_prefix("header:") {
            Some(name) if !name.is_empty() => HashKey::Header(name.to_string()),
            _ => {
                p.add(format!("{path}.hash_key"), format!("{k:?}: use \"method\" or \"header:<name>\""));
                HashKey::Method
            }
        },
    };
    let policy = match lb {
        None | Some("least_request") => LbPolicy::LeastRequest,
        Some("round_robin") => LbPolicy::RoundRobin,
        Some("hash") => LbPolicy::Hash(key),
        Some(other) => {
            p.add(format!("{path}.lb"), format!("unknown policy {other:?} (use round_robin, least_request or hash)"));
            LbPolicy::LeastRequest
        }
    };
    if hash_key.is_some() && !matches!(policy, LbPolicy::Hash(_)) {
        p.add(format!("{path}.hash_key"), "only for lb = \"hash\"");
    }
    policy
}
