//! What the admin side makes of the workers' reports: `GET /metrics` (Prometheus text
//! exposition 0.0.4), the figures and latency percentiles of `GET /stats`, and `GET
//! /clusters`. Each worker's report is asked through its mailbox and answered from its own
//! thread (`worker::WorkerReport`); the merging happens here, off the data path.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

use super::{Status, REPORT_WAIT};
use crate::error::ErrorKind;
use crate::grpc::stats::{code_label, CODES, LIMITS, SIDES};
use crate::metrics::{sum, CloseReason, EndpointReport, RouteReport, LATENCY_BOUNDS_US, STATUSES, VARIANTS};
use crate::protocol::ProtocolKind;
use crate::stats::StatsSnapshot;
use crate::worker::{Command, WorkerReport};

/// Every worker's report, by worker id, and the ids of those that did not answer within
/// `REPORT_WAIT` (their last report stands in for them, so counters never go down).
pub struct Collected {
    pub reports: Vec<WorkerReport>,
    pub missing: Vec<usize>,
    /// The active health checks' verdicts by cluster and endpoint.
    pub health: std::collections::HashMap<(String, String), crate::health::Verdict>,
}

pub fn collect(status: &Status) -> Collected {
    let mailboxes = status.mailboxes.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let (tx, rx) = crossbeam_channel::unbounded();
    for m in &mailboxes {
        m.send(Command::Report(tx.clone()));
    }
    drop(tx);
    let deadline = Instant::now() + REPORT_WAIT;
    let mut reports: Vec<WorkerReport> = Vec::new();
    while reports.len() < mailboxes.len() {
        match rx.recv_deadline(deadline) {
            Ok(r) => reports.push(r),
            Err(_) => break,
        }
    }
    let missing: Vec<usize> = (0..mailboxes.len()).filter(|w| !reports.iter().any(|r| r.worker == *w)).collect();
    let mut last = status.last_reports.lock().unwrap_or_else(|e| e.into_inner());
    last.resize(mailboxes.len(), None);
    for r in &reports {
        last[r.worker] = Some(r.clone());
    }
    reports.extend(missing.iter().filter_map(|w| last[*w].clone()));
    reports.sort_by_key(|r| r.worker);
    Collected { reports, missing, health: status.health() }
}

impl Collected {
    /// The workers' counters, summed.
    pub fn total(&self) -> StatsSnapshot {
        let mut t = StatsSnapshot::default();
        for r in &self.reports {
            t.add(&r.stats);
        }
        t
    }

    /// Each route's figures summed over the workers (histograms merged), by (listener, route).
    pub fn routes(&self) -> BTreeMap<(String, String), RouteReport> {
        let mut m: BTreeMap<(String, String), RouteReport> = BTreeMap::new();
        for r in self.reports.iter().flat_map(|w| &w.metrics.routes) {
            match m.get_mut(&(r.listener.clone(), r.route.clone())) {
                Some(have) => have.add(r),
                None => {
                    m.insert((r.listener.clone(), r.route.clone()), r.clone());
                }
            }
        }
        m
    }

    /// Each endpoint's figures summed over the workers, with the open connections of each
    /// worker, by (cluster, endpoint).
    fn endpoints(&self) -> BTreeMap<(String, String), (EndpointReport, Vec<u64>)> {
        let mut m: BTreeMap<(String, String), (EndpointReport, Vec<u64>)> = BTreeMap::new();
        for w in &self.reports {
            for e in &w.metrics.endpoints {
                let key = (e.cluster.clone(), e.endpoint.clone());
                let entry = m.entry(key).or_insert_with(|| {
                    let zero = EndpointReport {
                        opened: 0,
                        connect_failures: 0,
                        open: 0,
                        inflight: 0,
                        ejections: 0,
                        ..e.clone()
                    };
                    (zero, Vec::new())
                });
                entry.0.opened += e.opened;
                entry.0.connect_failures += e.connect_failures;
                entry.0.open += e.open;
                entry.0.inflight += e.inflight;
                entry.0.backoff |= e.backoff;
                entry.0.configured |= e.configured;
                entry.0.ejections += e.ejections;
                entry.0.ejected |= e.ejected;
                entry.0.unhealthy |= e.unhealthy;
                entry.1.push(e.open);
            }
        }
        m
    }

    /// The protocol of each listener (from any worker's report).
    fn protocol_of(&self, listener: &str) -> ProtocolKind {
        let p = self.reports.iter().flat_map(|w| &w.metrics.listeners).find(|l| l.name == listener);
        match p.map(|l| l.protocol) {
            Some("grpc") => ProtocolKind::Grpc,
            _ => ProtocolKind::Thrift,
        }
    }
}

/// Latency percentiles of a histogram in microseconds, as `/stats` shows them.
fn percentiles(h: Option<&Histogram<u64>>) -> Value {
    let Some(h) = h.filter(|h| !h.is_empty()) else {
        return json!({ "count": 0 });
    };
    json!({
        "count": h.len(),
        "p50_us": h.value_at_quantile(0.5),
        "p90_us": h.value_at_quantile(0.9),
        "p99_us": h.value_at_quantile(0.99),
        "p999_us": h.value_at_quantile(0.999),
        "max_us": h.max(),
    })
}

fn named<const N: usize>(values: &[u64; N], label: impl Fn(usize) -> String) -> Map<String, Value> {
    values.iter().enumerate().filter(|(_, v)| **v > 0).map(|(i, v)| (label(i), json!(v))).collect()
}

/// The route and listener figures of `GET /stats`.
pub fn stats_json(c: &Collected) -> Value {
    let counters = |s: &StatsSnapshot| -> Map<String, Value> {
        s.pairs().into_iter().map(|(k, v)| (k.to_string(), json!(v))).collect()
    };
    let routes = c.routes();
    let mut by_listener: BTreeMap<&str, (u64, Option<Histogram<u64>>)> = BTreeMap::new();
    let mut route_list = Vec::new();
    for ((listener, route), r) in &routes {
        let protocol = c.protocol_of(listener);
        let entry = by_listener.entry(listener).or_default();
        entry.0 += r.total_requests();
        if let Some(h) = &r.latency {
            match &mut entry.1 {
                Some(all) => all.add(h).expect("histograms made alike"),
                None => entry.1 = Some(h.clone()),
            }
        }
        let mut requests = Map::new();
        for (v, n) in r.requests.iter().enumerate().filter(|(_, n)| **n > 0) {
            let label = protocol.variant_label(v).to_string();
            let have = requests.get(&label).and_then(Value::as_u64).unwrap_or(0);
            requests.insert(label, json!(have + n));
        }
        route_list.push(json!({
            "listener": listener,
            "route": route,
            "requests": r.total_requests(),
            "requests_by_dialect": requests,
            "forwarded": r.forwarded,
            "upstream_exceptions": r.upstream_exceptions,
            "no_reply": r.no_reply,
            "errors": named(&r.errors, |i| ErrorKind::LABELS[i].to_string()),
            "grpc_status": named(&r.statuses, |i| i.to_string()),
            "latency": percentiles(r.latency.as_ref()),
        }));
    }
    let listeners: Vec<Value> = merged_listeners(c)
        .into_iter()
        .map(|(name, (protocol, accepted, closed, bytes_in, bytes_out))| {
            let (requests, h) = by_listener.remove(name.as_str()).unwrap_or_default();
            json!({
                "listener": name,
                "protocol": protocol,
                "connections_accepted": accepted,
                "connections_active": accepted.saturating_sub(closed.iter().sum()),
                "connections_closed": named(&closed, |i| CloseReason::LABELS[i].to_string()),
                "bytes_received": bytes_in,
                "bytes_sent": bytes_out,
                "requests": requests,
                "latency": percentiles(h.as_ref()),
            })
        })
        .collect();
    let workers: Vec<Value> = c
        .reports
        .iter()
        .map(|w| {
            let conns: Map<String, Value> =
                w.metrics.listeners.iter().map(|l| (l.name.clone(), json!(l.active()))).collect();
            json!({
                "worker": w.worker,
                "driver": w.driver,
                "connections": w.connections,
                "connections_by_listener": conns,
                "requests_active": w.requests_active,
                "counters": counters(&w.stats),
            })
        })
        .collect();
    json!({
        "total": counters(&c.total()),
        "listeners": listeners,
        "routes": route_list,
        "workers": workers,
        "workers_not_answering": c.missing,
    })
}

type ListenerSums = (&'static str, u64, [u64; CloseReason::COUNT], u64, u64);

/// Each listener's connection and byte figures summed over the workers.
fn merged_listeners(c: &Collected) -> BTreeMap<String, ListenerSums> {
    let mut m: BTreeMap<String, ListenerSums> = BTreeMap::new();
    for l in c.reports.iter().flat_map(|w| &w.metrics.listeners) {
        let e = m.entry(l.name.clone()).or_insert((l.protocol, 0, [0; CloseReason::COUNT], 0, 0));
        e.1 += l.accepted;
        sum(&mut e.2, &l.closed);
        e.3 += l.bytes_in;
        e.4 += l.bytes_out;
    }
    m
}

/// Per cluster, summed over the workers: pool waits, retries, retries over budget, and the
/// workers failing open.
#[derive(Default)]
struct ClusterSums {
    pool_waits: u64,
    retries: u64,
    retries_over_budget: u64,
    fail_open_workers: Vec<usize>,
}

/// A per-cluster family: name, help, and the figure.
type ClusterFigure = (&'static str, &'static str, fn(&ClusterSums) -> u64);
/// A per-checked-endpoint family: name, type, help, and the figure.
type HealthFigure = (&'static str, &'static str, &'static str, fn(&crate::health::Verdict) -> u64);

fn cluster_sums(c: &Collected) -> BTreeMap<String, ClusterSums> {
    let mut m: BTreeMap<String, ClusterSums> = BTreeMap::new();
    for w in &c.reports {
        for cl in &w.metrics.clusters {
            let e = m.entry(cl.name.clone()).or_default();
            e.pool_waits += cl.pool_waits;
            e.retries += cl.retries;
            e.retries_over_budget += cl.retries_over_budget;
            if cl.fail_open {
                e.fail_open_workers.push(w.worker);
            }
        }
    }
    m
}

/// `GET /clusters`: per cluster and endpoint, connections open (in all and per worker),
/// requests in flight, connects and their failures, health (the active check's verdict,
/// outlier ejection, connect backoff), and per cluster pool waits, retries and fail-open.
/// A discovered cluster as `/clusters` shows it: its registry, service, revision and list as
/// last sent, and what every worker routes on.
pub fn discovery_json(c: &Collected, latest: Option<&crate::registry::Latest>, cluster: &str) -> Value {
    let Some(state) = latest.and_then(|l| l.clusters.lock().unwrap_or_else(|e| e.into_inner()).get(cluster).cloned())
    else {
        return Value::Null;
    };
    let per_worker: Vec<Value> = c
        .reports
        .iter()
        .filter_map(|w| {
            let (_, rev, n) = w.discovered.iter().find(|(name, _, _)| name == cluster)?;
            Some(json!({ "worker": w.worker, "revision": rev, "endpoints": n }))
        })
        .collect();
    json!({
        "registry": state.registry,
        "service": state.service,
        "revision": state.revision,
        "endpoints": state.endpoints.len(),
        "last_change_unix": state.changed_at,
        "empty_alarm": state.empty_alarm,
        "workers": per_worker,
    })
}

pub fn clusters_json(c: &Collected, status: &Status) -> Value {
    let latest = status.registries();
    let mut clusters: BTreeMap<String, (ClusterSums, Vec<Value>)> =
        cluster_sums(c).into_iter().map(|(k, v)| (k, (v, Vec::new()))).collect();
    for ((cluster, endpoint), (e, per_worker)) in c.endpoints() {
        let check = c.health.get(&(cluster.clone(), endpoint.clone()));
        let health = if !e.configured {
            "removed"
        } else if check.is_some_and(|v| !v.healthy) || e.unhealthy {
            "unhealthy"
        } else if e.ejected {
            "ejected"
        } else if e.backoff {
            "connect_backoff"
        } else {
            "healthy"
        };
        let active = check.map(|v| json!({ "healthy": v.healthy, "checks": v.checks, "failures": v.failures }));
        clusters.entry(cluster).or_default().1.push(json!({
            "endpoint": endpoint,
            "health": health,
            "active_check": active,
            "ejected": e.ejected,
            "ejections": e.ejections,
            "connections_open": e.open,
            "connections_open_per_worker": per_worker,
            "requests_in_flight": e.inflight,
            "connections_opened": e.opened,
            "connect_failures": e.connect_failures,
        }));
    }
    let list: Vec<Value> = clusters
        .into_iter()
        .map(|(name, (sums, endpoints))| {
            json!({
                "cluster": name,
                "pool_waits": sums.pool_waits,
                "retries": sums.retries,
                "retries_over_budget": sums.retries_over_budget,
                "fail_open_workers": sums.fail_open_workers,
                "discovery": discovery_json(c, latest.as_deref(), &name),
                "endpoints": endpoints,
            })
        })
        .collect();
    json!({ "clusters": list, "workers_not_answering": c.missing })
}

/// A Prometheus text exposition under construction: one family at a time.
struct Exposition {
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"");
                for ch in v.chars() {
                    match ch {
                        '\\' => self.out.push_str("\\\\"),
                        '"' => self.out.push_str("\\\""),
                        '\n' => self.out.push_str("\\n"),
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// Seconds with the precision Prometheus keeps, without trailing noise.
fn seconds_of_us(us: u64) -> String {
    format!("{}", us as f64 / 1e6)
}

/// What the process itself reports: resident memory and open descriptors (Linux `/proc`).
fn process_figures() -> (Option<u64>, Option<u64>) {
    let rss = std::fs::read_to_string("/proc/self/statm").ok().and_then(|s| {
        let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
        // SAFETY: sysconf has no preconditions; it only reads a system constant.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Some(pages * page.max(0) as u64)
    });
    let fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as u64);
    (rss, fds)
}

/// `GET /metrics`: every figure in Prometheus text format 0.0.4.
pub fn prometheus(c: &Collected, status: &Status) -> String {
    let mut e = Exposition { out: String::with_capacity(16 * 1024) };
    process_section(&mut e, c, status);
    downstream_section(&mut e, c);
    route_section(&mut e, c);
    upstream_section(&mut e, c);
    h2_section(&mut e, c);
    registry_section(&mut e, c, status);
    e.out
}

/// A metric family read off each item: name, type, help and the reading.
type Family<T> = (&'static str, &'static str, &'static str, fn(&T) -> i64);

fn registry_section(e: &mut Exposition, c: &Collected, status: &Status) {
    let Some(latest) = status.registries() else { return };
    let health: Vec<(String, std::sync::Arc<crate::registry::RegistryHealth>)> =
        latest.health.lock().unwrap_or_else(|x| x.into_inner()).iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let per_registry: [Family<crate::registry::RegistryHealth>; 5] = [
        ("ringway_registry_up", "gauge", "1 while the registry's watches are established.", |h| {
            i64::from(h.up.load(Ordering::Relaxed))
        }),
        ("ringway_registry_errors_total", "counter", "Registry reads and watches that failed.", |h| {
            h.errors.load(Ordering::Relaxed) as i64
        }),
        ("ringway_registry_bad_values_total", "counter", "Registry values that did not parse (skipped).", |h| {
            h.bad_values.load(Ordering::Relaxed) as i64
        }),
        ("ringway_registry_updates_total", "counter", "Endpoint lists sent to the workers.", |h| {
            h.updates.load(Ordering::Relaxed) as i64
        }),
        ("ringway_registry_revision", "gauge", "The latest registry revision read.", |h| {
            h.revision.load(Ordering::Relaxed)
        }),
    ];
    for (name, kind, help, get) in per_registry {
        e.family(name, kind, help);
        for (r, h) in &health {
            e.sample(name, &[("registry", r)], get(h));
        }
    }
    let clusters = latest.clusters.lock().unwrap_or_else(|x| x.into_inner()).clone();
    let per_cluster: [Family<crate::registry::ClusterState>; 4] = [
        ("ringway_discovery_endpoints", "gauge", "Endpoints of a discovered cluster, as last sent.", |s| {
            s.endpoints.len() as i64
        }),
        ("ringway_discovery_revision", "gauge", "The registry revision a discovered cluster's list reflects.", |s| {
            s.revision
        }),
        (
            "ringway_discovery_empty_alarm",
            "gauge",
            "1 while a discovered cluster's service lists no instance and its last list is kept.",
            |s| i64::from(s.empty_alarm),
        ),
        (
            "ringway_discovery_last_change_timestamp_seconds",
            "gauge",
            "When a discovered cluster's list last changed (Unix time).",
            |s| s.changed_at as i64,
        ),
    ];
    for (name, kind, help, get) in per_cluster {
        e.family(name, kind, help);
        for (cluster, s) in &clusters {
            e.sample(name, &[("cluster", cluster)], get(s));
        }
    }
    const APPLIED: &str = "ringway_discovery_applied_revision";
    e.family(APPLIED, "gauge", "The registry revision each worker routes a discovered cluster on.");
    for w in &c.reports {
        let worker = w.worker.to_string();
        for (cluster, rev, _) in &w.discovered {
            e.sample(APPLIED, &[("cluster", cluster), ("worker", &worker)], rev);
        }
    }
}

fn process_section(e: &mut Exposition, c: &Collected, status: &Status) {
    e.family("ringway_build_info", "gauge", "Build of the running proxy: version and git commit (always 1).");
    let git = option_env!("RINGWAY_GIT_HASH").unwrap_or("unknown");
    e.sample("ringway_build_info", &[("version", env!("CARGO_PKG_VERSION")), ("git_hash", git)], 1);
    e.family("ringway_worker_info", "gauge", "Each worker and its I/O driver, io_uring or epoll (always 1).");
    for w in &c.reports {
        e.sample("ringway_worker_info", &[("worker", &w.worker.to_string()), ("driver", w.driver)], 1);
    }
    e.family("ringway_workers_not_answering", "gauge", "Workers that did not report for this scrape.");
    e.sample("ringway_workers_not_answering", &[], c.missing.len());
    let version = status.config.lock().unwrap_or_else(|x| x.into_inner()).as_ref().map_or(0, |i| i.version);
    e.family("ringway_config_version", "gauge", "Version of the running config (1 at start, +1 per reload applied).");
    e.sample("ringway_config_version", &[], version);
    e.family(
        "ringway_config_reloads_total",
        "counter",
        "Config reloads asked for (SIGHUP or POST /reload), by result.",
    );
    e.sample("ringway_config_reloads_total", &[("result", "ok")], status.reloads_ok.load(Ordering::Relaxed));
    e.sample("ringway_config_reloads_total", &[("result", "failed")], status.reloads_failed.load(Ordering::Relaxed));
    let started = *status.started.lock().unwrap_or_else(|x| x.into_inner());
    if let Some(t) = started {
        let since = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        e.family("ringway_start_time_seconds", "gauge", "When the proxy started, seconds since the Unix epoch.");
        e.sample("ringway_start_time_seconds", &[], since(t));
        e.family("ringway_uptime_seconds", "gauge", "Seconds since the proxy started.");
        e.sample("ringway_uptime_seconds", &[], since(SystemTime::now()) - since(t));
    }
    let (rss, fds) = process_figures();
    if let Some(rss) = rss {
        e.family("ringway_process_resident_memory_bytes", "gauge", "Resident memory of the proxy process.");
        e.sample("ringway_process_resident_memory_bytes", &[], rss);
    }
    if let Some(fds) = fds {
        e.family("ringway_process_open_fds", "gauge", "File descriptors the proxy process holds open.");
        e.sample("ringway_process_open_fds", &[], fds);
    }
    let sinks = status.access_logs.lock().unwrap_or_else(|x| x.into_inner()).clone();
    const LINES: &str = "ringway_access_log_lines_total";
    const DROPPED: &str = "ringway_access_log_dropped_total";
    e.family(LINES, "counter", "Access log lines written, per file.");
    for s in &sinks {
        e.sample(LINES, &[("file", &s.path.display().to_string())], s.stats.written.load(Ordering::Relaxed));
    }
    e.family(DROPPED, "counter", "Access log lines dropped: the writer fell behind, or could not write.");
    for s in &sinks {
        e.sample(DROPPED, &[("file", &s.path.display().to_string())], s.stats.dropped.load(Ordering::Relaxed));
    }
    let t = c.total();
    e.family(
        "ringway_task_panics_total",
        "counter",
        "Connection tasks that panicked (caught; only that connection closed).",
    );
    e.sample("ringway_task_panics_total", &[], t.panics);
    e.family(
        "ringway_buffer_memory_bytes",
        "gauge",
        "Bytes held in the workers' write queues and in partial frames of client read buffers (runtime.max_buffer_memory bounds each worker's).",
    );
    e.sample("ringway_buffer_memory_bytes", &[], t.buffer_bytes);
    e.family(
        "ringway_buffer_memory_over_total",
        "counter",
        "Times a worker went over runtime.max_buffer_memory (it then pauses the largest readers and refuses new requests).",
    );
    e.sample("ringway_buffer_memory_over_total", &[], t.buffer_over_budget);
    e.family(
        "ringway_buffer_memory_over_workers",
        "gauge",
        "Workers over runtime.max_buffer_memory now (they pause the largest readers and refuse new requests until under nine tenths).",
    );
    e.sample("ringway_buffer_memory_over_workers", &[], t.buffer_over);
    e.family(
        "ringway_buffer_memory_paused_reads_total",
        "counter",
        "Client reads paused because their worker was over runtime.max_buffer_memory.",
    );
    e.sample("ringway_buffer_memory_paused_reads_total", &[], t.buffer_paused_reads);
}

fn downstream_section(e: &mut Exposition, c: &Collected) {
    const ACCEPTED: &str = "ringway_downstream_connections_accepted_total";
    const ACTIVE: &str = "ringway_downstream_connections_active";
    const CLOSED: &str = "ringway_downstream_connections_closed_total";
    const REJECTED: &str = "ringway_downstream_connections_rejected_total";
    e.family(ACCEPTED, "counter", "Downstream connections accepted, per listener and worker.");
    for w in &c.reports {
        for l in &w.metrics.listeners {
            e.sample(
                ACCEPTED,
                &[("listener", &l.name), ("protocol", l.protocol), ("worker", &w.worker.to_string())],
                l.accepted,
            );
        }
    }
    e.family(
        REJECTED,
        "counter",
        "Downstream connections closed as soon as accepted: the worker held the listener's max_connections.",
    );
    for w in &c.reports {
        for l in &w.metrics.listeners {
            e.sample(REJECTED, &[("listener", &l.name), ("worker", &w.worker.to_string())], l.rejected);
        }
    }
    e.family(ACTIVE, "gauge", "Downstream connections open, per listener and worker.");
    for w in &c.reports {
        for l in &w.metrics.listeners {
            e.sample(ACTIVE, &[("listener", &l.name), ("worker", &w.worker.to_string())], l.active());
        }
    }
    e.family(CLOSED, "counter", "Downstream connections closed, per listener, worker and reason.");
    for w in &c.reports {
        for l in &w.metrics.listeners {
            for (i, reason) in CloseReason::LABELS.iter().enumerate() {
                let labels = [("listener", l.name.as_str()), ("worker", &w.worker.to_string()), ("reason", reason)];
                e.sample(CLOSED, &labels, l.closed[i]);
            }
        }
    }
    let listeners = merged_listeners(c);
    e.family("ringway_downstream_received_bytes_total", "counter", "Bytes read from downstream clients, per listener.");
    for (name, l) in &listeners {
        e.sample("ringway_downstream_received_bytes_total", &[("listener", name)], l.3);
    }
    e.family("ringway_downstream_sent_bytes_total", "counter", "Bytes written to downstream clients, per listener.");
    for (name, l) in &listeners {
        e.sample("ringway_downstream_sent_bytes_total", &[("listener", name)], l.4);
    }
    e.family(
        "ringway_downstream_requests_active",
        "gauge",
        "Requests (gRPC streams) in flight from downstream clients, per worker.",
    );
    for w in &c.reports {
        e.sample("ringway_downstream_requests_active", &[("worker", &w.worker.to_string())], w.requests_active);
    }
}

fn route_section(e: &mut Exposition, c: &Collected) {
    let routes = c.routes();
    const REQUESTS: &str = "ringway_requests_total";
    e.family(REQUESTS, "counter", "Requests read, per listener, route (empty: none matched) and dialect.");
    for ((listener, route), r) in &routes {
        let protocol = c.protocol_of(listener);
        let mut by_label: BTreeMap<&str, u64> = BTreeMap::new();
        for v in 0..VARIANTS {
            if r.requests[v] > 0 || v == 0 {
                *by_label.entry(protocol.variant_label(v)).or_default() += r.requests[v];
            }
        }
        for (dialect, n) in by_label {
            let labels = [
                ("listener", listener.as_str()),
                ("route", route),
                ("protocol", protocol.name()),
                ("dialect", dialect),
            ];
            e.sample(REQUESTS, &labels, n);
        }
    }
    const RESPONSES: &str = "ringway_responses_total";
    e.family(RESPONSES, "counter", "Requests finished, per listener, route and outcome: forwarded (the upstream's answer), no_reply (oneway), proxy_error.");
    for ((listener, route), r) in &routes {
        let errors: u64 = r.errors.iter().sum();
        for (outcome, n) in [("forwarded", r.forwarded), ("no_reply", r.no_reply), ("proxy_error", errors)] {
            e.sample(RESPONSES, &[("listener", listener), ("route", route), ("outcome", outcome)], n);
        }
    }
    const EXCEPTIONS: &str = "ringway_upstream_exceptions_total";
    e.family(EXCEPTIONS, "counter", "Forwarded replies that were the backend's own Thrift EXCEPTION.");
    for ((listener, route), r) in &routes {
        if c.protocol_of(listener) == ProtocolKind::Thrift {
            e.sample(EXCEPTIONS, &[("listener", listener), ("route", route)], r.upstream_exceptions);
        }
    }
    const ERRORS: &str = "ringway_proxy_errors_total";
    e.family(ERRORS, "counter", "Requests the proxy answered itself, per listener, route and kind.");
    for ((listener, route), r) in &routes {
        for (i, n) in r.errors.iter().enumerate().filter(|(_, n)| **n > 0) {
            e.sample(ERRORS, &[("listener", listener), ("route", route), ("kind", ErrorKind::LABELS[i])], n);
        }
    }
    const STATUS: &str = "ringway_grpc_responses_total";
    e.family(STATUS, "counter", "Finished gRPC calls by the grpc-status the client saw, per listener and route.");
    for ((listener, route), r) in &routes {
        for (code, n) in r.statuses.iter().enumerate().take(STATUSES).filter(|(_, n)| **n > 0) {
            e.sample(STATUS, &[("listener", listener), ("route", route), ("grpc_status", &code.to_string())], n);
        }
    }
    const LATENCY: &str = "ringway_request_duration_seconds";
    e.family(LATENCY, "histogram", "Request latency from the first byte read to the last byte of the reply written (gRPC: stream open to stream end), per listener and route.");
    for ((listener, route), r) in &routes {
        let empty = crate::metrics::latency_histogram();
        let h = r.latency.as_ref().unwrap_or(&empty);
        let bucket = format!("{LATENCY}_bucket");
        for bound in LATENCY_BOUNDS_US {
            // Values HdrHistogram counts as equal to the bound (within 1 %) count as within it.
            let n = h.count_between(0, bound);
            e.sample(&bucket, &[("listener", listener), ("route", route), ("le", &seconds_of_us(bound))], n);
        }
        e.sample(&bucket, &[("listener", listener), ("route", route), ("le", "+Inf")], h.len());
        e.sample(
            &format!("{LATENCY}_sum"),
            &[("listener", listener), ("route", route)],
            seconds_of_us(r.latency_sum_us),
        );
        e.sample(&format!("{LATENCY}_count"), &[("listener", listener), ("route", route)], h.len());
    }
}

/// A per-endpoint family: name, type, help, and how to read it off a report.
type Figure = (&'static str, &'static str, &'static str, fn(&EndpointReport) -> u64);

fn upstream_section(e: &mut Exposition, c: &Collected) {
    const OPEN: &str = "ringway_upstream_connections_active";
    e.family(OPEN, "gauge", "Upstream connections open, per cluster, endpoint and worker.");
    for w in &c.reports {
        let mut per: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for ep in &w.metrics.endpoints {
            *per.entry((&ep.cluster, &ep.endpoint)).or_default() += ep.open;
        }
        for ((cluster, endpoint), n) in per {
            e.sample(OPEN, &[("cluster", cluster), ("endpoint", endpoint), ("worker", &w.worker.to_string())], n);
        }
    }
    let endpoints = c.endpoints();
    let figures: [Figure; 6] = [
        (
            "ringway_upstream_connections_opened_total",
            "counter",
            "Upstream connections opened, per cluster and endpoint.",
            |e| e.opened,
        ),
        (
            "ringway_upstream_connect_failures_total",
            "counter",
            "Failed upstream connects, per cluster and endpoint.",
            |e| e.connect_failures,
        ),
        (
            "ringway_upstream_requests_active",
            "gauge",
            "Requests (gRPC streams) in flight on upstream connections, per cluster and endpoint.",
            |e| e.inflight,
        ),
        (
            "ringway_upstream_connect_backoff",
            "gauge",
            "1 while a failed connect holds new connections to the endpoint back (on any worker).",
            |e| e.backoff as u64,
        ),
        (
            "ringway_upstream_ejections_total",
            "counter",
            "Times outlier detection ejected the endpoint, per cluster and endpoint (summed over workers).",
            |e| e.ejections,
        ),
        (
            "ringway_upstream_endpoint_ejected",
            "gauge",
            "1 while outlier detection has the endpoint ejected (on any worker).",
            |e| e.ejected as u64,
        ),
    ];
    for (name, kind, help, get) in figures {
        e.family(name, kind, help);
        for ((cluster, endpoint), (r, _)) in &endpoints {
            e.sample(name, &[("cluster", cluster), ("endpoint", endpoint)], get(r));
        }
    }
    let sums = cluster_sums(c);
    let per_cluster: [ClusterFigure; 4] = [
        (
            "ringway_upstream_pool_waits_total",
            "Requests that found no open upstream connection with room and waited for one (or for a connect), per cluster.",
            |s| s.pool_waits,
        ),
        (
            "ringway_upstream_retries_total",
            "Requests tried again on another endpoint after a failure that sent nothing (a failed connect, a request or gRPC stream its dying connection never wrote, a gRPC stream the upstream refused), per cluster.",
            |s| s.retries,
        ),
        (
            "ringway_upstream_retries_over_budget_total",
            "Retries not made because the cluster's retry budget was spent, per cluster.",
            |s| s.retries_over_budget,
        ),
        (
            "ringway_upstream_fail_open_workers",
            "Workers on which every endpoint of the cluster was unhealthy or ejected at the last pick, so requests go to all of them.",
            |s| s.fail_open_workers.len() as u64,
        ),
    ];
    for (name, help, get) in per_cluster {
        let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
        e.family(name, kind, help);
        for (cluster, s) in &sums {
            e.sample(name, &[("cluster", cluster)], get(s));
        }
    }
    let mut checked: Vec<(&(String, String), &crate::health::Verdict)> = c.health.iter().collect();
    checked.sort_by(|a, b| a.0.cmp(b.0));
    let health: [HealthFigure; 3] = [
        (
            "ringway_upstream_endpoint_healthy",
            "gauge",
            "The active health check's verdict (1 healthy, 0 unhealthy), per cluster and checked endpoint.",
            |v| v.healthy as u64,
        ),
        (
            "ringway_upstream_health_checks_total",
            "counter",
            "Active health checks made, per cluster and endpoint.",
            |v| v.checks,
        ),
        (
            "ringway_upstream_health_check_failures_total",
            "counter",
            "Active health checks that failed, per cluster and endpoint.",
            |v| v.failures,
        ),
    ];
    for (name, kind, help, get) in health {
        e.family(name, kind, help);
        for ((cluster, endpoint), v) in &checked {
            e.sample(name, &[("cluster", cluster), ("endpoint", endpoint)], get(v));
        }
    }
    let t = c.total();
    e.family("ringway_upstream_lost_total", "counter", "Upstream connections lost with requests in flight.");
    e.sample("ringway_upstream_lost_total", &[], t.upstream_lost);
    e.family(
        "ringway_thrift_late_replies_total",
        "counter",
        "Thrift replies that matched no pending request (late after a timeout, or unknown).",
    );
    e.sample("ringway_thrift_late_replies_total", &[], t.protocols.thrift.late_replies);
    let ts = &t.protocols.ttstream;
    e.family("ringway_ttstream_streams_opened_total", "counter", "TTHeader Streaming client streams opened.");
    e.sample("ringway_ttstream_streams_opened_total", &[], ts.opened);
    e.family("ringway_ttstream_streams_active", "gauge", "TTHeader Streaming client streams open now.");
    e.sample("ringway_ttstream_streams_active", &[], ts.active());
    const ENDED: &str = "ringway_ttstream_streams_ended_total";
    e.family(ENDED, "counter", "TTHeader Streaming client streams ended, by outcome.");
    let ended = [
        ("ok", ts.ended_ok),
        ("error", ts.ended_error),
        ("client_reset", ts.ended_client_reset),
        ("server_reset", ts.ended_server_reset),
        ("overflow", ts.ended_overflow),
    ];
    for (outcome, n) in ended {
        e.sample(ENDED, &[("outcome", outcome)], n);
    }
    e.family(
        "ringway_ttstream_late_frames_total",
        "counter",
        "TTHeader Streaming frames for stream ids not open (late after a reset, or unknown), dropped.",
    );
    e.sample("ringway_ttstream_late_frames_total", &[], ts.late_frames);
    e.family("ringway_ttstream_upstream_streams_total", "counter", "Streams opened on upstream ttstream connections.");
    e.sample("ringway_ttstream_upstream_streams_total", &[], ts.upstream_streams);
}

fn h2_section(e: &mut Exposition, c: &Collected) {
    let mut h2 = crate::grpc::stats::H2Snapshot::default();
    for w in &c.reports {
        h2.add(&w.stats.protocols.h2);
    }
    let tables = [
        ("ringway_grpc_rst_stream_sent_total", "RST_STREAM frames sent, per side and error code.", &h2.rst_sent),
        (
            "ringway_grpc_rst_stream_received_total",
            "RST_STREAM frames received, per side and error code.",
            &h2.rst_received,
        ),
        ("ringway_grpc_goaway_sent_total", "GOAWAY frames sent, per side and error code.", &h2.goaway_sent),
        ("ringway_grpc_goaway_received_total", "GOAWAY frames received, per side and error code.", &h2.goaway_received),
    ];
    for (name, help, table) in tables {
        e.family(name, "counter", help);
        for (side, row) in table.iter().enumerate() {
            for (code, n) in row.iter().enumerate().take(CODES).filter(|(_, n)| **n > 0) {
                e.sample(name, &[("side", SIDES[side]), ("code", code_label(code))], n);
            }
        }
    }
    const LIMIT: &str = "ringway_grpc_abuse_limits_total";
    e.family(LIMIT, "counter", "HTTP/2 connections closed with ENHANCE_YOUR_CALM, by the limit tripped.");
    for (i, (_, kind)) in LIMITS.iter().enumerate() {
        e.sample(LIMIT, &[("kind", kind)], h2.limits[i]);
    }
    e.sample(LIMIT, &[("kind", "other")], h2.limits[LIMITS.len()]);
    let t = c.total();
    e.family("ringway_grpc_upstream_streams_total", "counter", "Streams opened on upstream HTTP/2 connections.");
    e.sample("ringway_grpc_upstream_streams_total", &[], t.protocols.grpc.upstream_streams);
    e.family(
        "ringway_grpc_stalled_streams_total",
        "counter",
        "Streams reset because a peer kept its window at zero past stream_stall_timeout.",
    );
    e.sample("ringway_grpc_stalled_streams_total", &[], t.protocols.grpc.stalled);
}
