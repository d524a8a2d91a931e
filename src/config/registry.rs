//! `[[registry]]` and a cluster's `discovery`: endpoints that come from the fleet's registry
//! (etcd in Kitex's layout, `registry-etcd`) instead of the file.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::problems::Problems;

/// Kitex's default key prefix (`kitex-contrib/registry-etcd`).
pub const DEFAULT_PREFIX: &str = "kitex/registry-etcd";
const DEFAULT_RETRY_BACKOFF: &str = "500ms";
const DEFAULT_COALESCE: &str = "20ms";

/// `[[registry]]`: one registry the clusters may discover endpoints in.
#[derive(Clone, Debug, PartialEq)]
pub struct RegistryConfig {
    pub name: String,
    /// etcd client URLs (`http://host:port`), tried in turn.
    pub endpoints: Vec<EtcdEndpoint>,
    /// Keys are `<prefix>/<service>/<host:port>`.
    pub prefix: String,
    /// First wait before reading a registry again after an error; doubles up to 30 times
    /// that, with jitter.
    pub retry_backoff: Duration,
    /// Changes seen within this long of the first are applied together.
    pub coalesce: Duration,
}

/// An etcd client URL, `http://host:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdEndpoint {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for EtcdEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http://{}:{}", self.host, self.port)
    }
}

/// A cluster's `discovery`: its endpoints are the instances of `service` in `registry`.
#[derive(Clone, Debug, PartialEq)]
pub struct Discovery {
    pub registry: String,
    pub service: String,
    /// Only instances whose tags include all of these.
    pub tags: BTreeMap<String, String>,
    /// An answer that turns empty keeps the last good list (and raises an alarm), as Kitex
    /// does; false: the cluster is left without endpoints.
    pub keep_last_on_empty: bool,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RawRegistry {
    name: Option<String>,
    kind: Option<String>,
    #[serde(default)]
    endpoints: Vec<String>,
    prefix: Option<String>,
    retry_backoff: Option<String>,
    coalesce: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct RawDiscovery {
    registry: Option<String>,
    service: Option<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    keep_last_on_empty: Option<bool>,
}

/// Reads `http://host:port`.
fn parse_url(url: &str) -> Result<EtcdEndpoint, String> {
    if url.starts_with("https://") {
        return Err(format!("{url:?}: TLS to etcd is not supported (use http://)"));
    }
    let rest = url.strip_prefix("http://").ok_or_else(|| format!("{url:?}: expected http://host:port"))?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest.rsplit_once(':').ok_or_else(|| format!("{url:?}: expected http://host:port"))?;
    let port = port.parse::<u16>().map_err(|_| format!("{url:?}: {port:?} is not a port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains('/') {
        return Err(format!("{url:?}: expected http://host:port"));
    }
    Ok(EtcdEndpoint { host: host.to_string(), port })
}

pub fn validate_registries(raw: &[RawRegistry], p: &mut Problems) -> Vec<RegistryConfig> {
    let mut out: Vec<RegistryConfig> = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let path = format!("registry[{i}]");
        let name = r.name.clone().unwrap_or_default();
        if name.is_empty() {
            p.add(format!("{path}.name"), "missing");
        } else if out.iter().any(|o| o.name == name) {
            p.add(format!("{path}.name"), format!("duplicate registry name {name:?}"));
        }
        match r.kind.as_deref() {
            Some("etcd") => {}
            None => p.add(format!("{path}.kind"), "missing (\"etcd\")"),
            Some(other) => p.add(format!("{path}.kind"), format!("unknown registry kind {other:?} (etcd)")),
        }
        if r.endpoints.is_empty() {
            p.add(format!("{path}.endpoints"), "needs at least one etcd client URL (http://host:port)");
        }
        let mut endpoints = Vec::new();
        for (j, e) in r.endpoints.iter().enumerate() {
            match parse_url(e) {
                Ok(ep) => endpoints.push(ep),
                Err(err) => p.add(format!("{path}.endpoints[{j}]"), err),
            }
        }
        let prefix = r.prefix.clone().unwrap_or_else(|| DEFAULT_PREFIX.to_string());
        let prefix = prefix.trim_end_matches('/').to_string();
        if prefix.is_empty() {
            p.add(format!("{path}.prefix"), "empty");
        }
        let retry_backoff = p.duration(format!("{path}.retry_backoff"), &r.retry_backoff, DEFAULT_RETRY_BACKOFF);
        let coalesce = p.duration(format!("{path}.coalesce"), &r.coalesce, DEFAULT_COALESCE);
        if coalesce > Duration::from_secs(1) {
            p.add(format!("{path}.coalesce"), "at most 1s");
        }
        out.push(RegistryConfig { name, endpoints, prefix, retry_backoff, coalesce });
    }
    out
}

/// A cluster's `discovery`, checked against the registries.
pub fn validate_discovery(
    raw: &RawDiscovery,
    path: &str,
    registries: &[RegistryConfig],
    p: &mut Problems,
) -> Option<Discovery> {
    let registry = match raw.registry.as_deref() {
        None => {
            p.add(format!("{path}.registry"), "missing");
            return None;
        }
        Some(r) if !registries.iter().any(|g| g.name == r) => {
            let known: Vec<&str> = registries.iter().map(|g| g.name.as_str()).collect();
            p.add(format!("{path}.registry"), format!("no [[registry]] named {r:?} (known: {known:?})"));
            return None;
        }
        Some(r) => r.to_string(),
    };
    let service = match raw.service.as_deref() {
        None | Some("") => {
            p.add(format!("{path}.service"), "missing (the service name the instances register under)");
            return None;
        }
        Some(s) if s.contains('/') => {
            p.add(format!("{path}.service"), format!("{s:?}: a service name has no '/'"));
            return None;
        }
        Some(s) => s.to_string(),
    };
    Some(Discovery {
        registry,
        service,
        tags: raw.tags.clone(),
        keep_last_on_empty: raw.keep_last_on_empty.unwrap_or(true),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_plain_http_host_and_port() {
        assert_eq!(parse_url("http://127.0.0.1:2379").unwrap(), EtcdEndpoint { host: "127.0.0.1".into(), port: 2379 });
        assert_eq!(parse_url("http://etcd-0.local:2379/").unwrap().host, "etcd-0.local");
        assert_eq!(parse_url("http://[::1]:2379").unwrap().host, "::1");
        assert!(parse_url("https://127.0.0.1:2379").unwrap_err().contains("TLS"));
        assert!(parse_url("127.0.0.1:2379").is_err());
        assert!(parse_url("http://127.0.0.1").is_err());
        assert!(parse_url("http://127.0.0.1:http").is_err());
    }
}
