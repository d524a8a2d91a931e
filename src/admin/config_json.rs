//! The running config as JSON for `GET /config`: every key with the value in force (defaults
//! filled in), durations and sizes as an operator would write them, and a content hash of
//! that JSON, so two instances (or two cores' views) can be compared at a glance.

use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::config::{CheckKind, ClusterConfig, Config, HashKey, LbPolicy, ListenerConfig};
use crate::protocol::ListenerProtocol;

/// `250ms`, `1s`, `30s`, `1.5s`: the way the config file writes durations.
fn duration(d: Duration) -> String {
    let us = d.as_micros();
    if us % 1_000_000 == 0 {
        format!("{}s", us / 1_000_000)
    } else if us % 1000 == 0 {
        format!("{}ms", us / 1000)
    } else {
        format!("{us}us")
    }
}

fn listener(l: &ListenerConfig, clusters: &[ClusterConfig]) -> Value {
    let routes: Vec<Value> = l
        .routes
        .iter()
        .map(|r| {
            let mut m = Map::new();
            m.insert("name".into(), json!(r.name));
            for (k, v) in [("service", &r.service), ("method", &r.method), ("method_prefix", &r.method_prefix)] {
                if let Some(v) = v {
                    m.insert(k.into(), json!(v));
                }
            }
            m.insert("cluster".into(), json!(clusters.get(r.cluster).map(|c| c.name.as_str())));
            Value::Object(m)
        })
        .collect();
    let mut v = json!({
        "name": l.name,
        "address": l.address.to_string(),
        "routes": routes,
        "max_write_buffer": l.max_write_buffer.get(),
        "max_connections": l.max_connections,
    });
    if let Some(a) = &l.access_log {
        v["access_log"] = json!({
            "path": a.path.display().to_string(),
            "sample": a.sample,
            "max_queued_lines": a.max_queued_lines,
        });
    }
    let keys = match &l.protocol {
        ListenerProtocol::Thrift(t) => json!({
            "protocol": "thrift",
            "max_frame_size": t.max_frame_size.get(),
            "max_pending_requests": t.max_pending_requests,
            "max_method_name": t.max_method_name,
        }),
        ListenerProtocol::Grpc(g) => json!({
            "protocol": "grpc",
            "max_concurrent_streams": g.max_concurrent_streams,
            "initial_stream_window": g.initial_stream_window,
            "initial_connection_window": g.initial_connection_window,
            "max_header_list_size": g.max_header_list_size,
            "max_continuation_frames": g.max_continuation_frames,
            "max_reset_burst": g.max_reset_burst,
            "max_resets_per_second": g.max_resets_per_second,
            "max_pending_control_frames": g.max_pending_control_frames,
            "max_settings_entries": g.max_settings_entries,
            "max_empty_data_frames": g.max_empty_data_frames,
            "stream_stall_timeout": duration(g.stream_stall_timeout),
        }),
    };
    if let (Value::Object(v), Value::Object(k)) = (&mut v, keys) {
        v.extend(k);
    }
    v
}

fn cluster(c: &ClusterConfig) -> Value {
    json!({
        "name": c.name,
        // A discovered cluster's endpoints are the registry's (`discovered` in /config), not
        // the file's: left out so the hash is the file's content.
        "endpoints": if c.discovery.is_some() { Vec::new() } else { c.endpoints.iter().map(|e| e.to_string()).collect::<Vec<_>>() },
        "connect_timeout": duration(c.connect_timeout),
        "connect_failure_backoff": duration(c.connect_failure_backoff),
        "request_timeout": duration(c.request_timeout),
        "stream_idle_timeout": duration(c.stream_idle_timeout),
        "max_connections_per_endpoint": c.max_connections_per_endpoint,
        "max_requests_per_connection": c.max_requests_per_connection,
        "max_pending_requests": c.max_pending_requests,
        "max_frame_size": c.max_frame_size.get(),
        "max_write_buffer": c.max_write_buffer.get(),
        "endpoint_names": c.endpoint_names,
        "discovery": c.discovery.as_ref().map(|d| json!({
            "registry": d.registry,
            "service": d.service,
            "tags": d.tags,
            "keep_last_on_empty": d.keep_last_on_empty,
        })),
        "dns_refresh": duration(c.dns_refresh),
        "lb": c.lb.name(),
        "hash_key": match &c.lb {
            LbPolicy::Hash(HashKey::Header(h)) => format!("header:{h}"),
            LbPolicy::Hash(HashKey::Method) => "method".into(),
            _ => String::new(),
        },
        "max_requests": c.max_requests,
        "retries": c.retries,
        "retry_budget_percent": c.retry_budget_percent,
        "health_check": c.health_check.as_ref().map(|h| json!({
            "kind": match h.kind { CheckKind::Tcp => "tcp", CheckKind::Thrift => "thrift", CheckKind::Grpc => "grpc" },
            "interval": duration(h.interval),
            "timeout": duration(h.timeout),
            "unhealthy_threshold": h.unhealthy_threshold,
            "healthy_threshold": h.healthy_threshold,
            "thrift_method": h.thrift_method,
            "grpc_service": h.grpc_service,
        })),
        "outlier_detection": {
            "consecutive_failures": c.outlier.consecutive_failures,
            "base_ejection_time": duration(c.outlier.base_ejection_time),
            "max_ejection_time": duration(c.outlier.max_ejection_time),
            "max_ejection_percent": c.outlier.max_ejection_percent,
        },
    })
}

/// The config as JSON (keys in a fixed order, so the text and its hash are stable).
pub fn config(c: &Config) -> Value {
    let r = &c.runtime;
    json!({
        "runtime": {
            "workers": r.workers,
            "driver": format!("{:?}", r.driver).to_ascii_lowercase(),
            "drain_timeout": duration(r.drain_timeout),
            "drain_idle_close": duration(r.drain_idle_close),
            "coalesce_wait": duration(r.coalesce_wait),
            "coalesce_min_streams": r.coalesce_min_streams,
            "busy_poll": duration(r.busy_poll),
        },
        "listener": c.listeners.iter().map(|l| listener(l, &c.clusters)).collect::<Vec<_>>(),
        "cluster": c.clusters.iter().map(cluster).collect::<Vec<_>>(),
        "registry": c.registries.iter().map(|r| json!({
            "name": r.name,
            "kind": "etcd",
            "endpoints": r.endpoints.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
            "prefix": r.prefix,
            "retry_backoff": duration(r.retry_backoff),
            "coalesce": duration(r.coalesce),
        })).collect::<Vec<_>>(),
        "admin": c.admin.as_ref().map(|a| json!({
            "address": a.address.to_string(),
            "max_request_size": a.max_request_size.get(),
            "read_timeout": duration(a.read_timeout),
        })),
    })
}

/// FNV-1a, 64 bits, as 16 hex digits: a content hash that is the same on every build and
/// machine (std's hasher is not).
pub fn content_hash(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_written_and_the_hash_is_fnv1a() {
        assert_eq!(duration(Duration::from_millis(250)), "250ms");
        assert_eq!(duration(Duration::from_secs(30)), "30s");
        assert_eq!(duration(Duration::from_micros(100)), "100us");
        assert_eq!(duration(Duration::ZERO), "0s");
        // FNV-1a 64 reference values.
        assert_eq!(content_hash(""), "cbf29ce484222325");
        assert_eq!(content_hash("a"), "af63dc4c8601ec8c");
    }
}
