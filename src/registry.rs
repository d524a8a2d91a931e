//! Endpoints from the fleet's registry: for every `(registry, service)` that some cluster's
//! `discovery` names, a thread of the control side (`ringway-reg`) reads the service's keys
//! in Kitex's etcd layout (`<prefix>/<service>/<host:port>`, a JSON value per instance), then
//! watches them from the next revision. Changes within the registry's `coalesce` window are
//! applied together: each cluster's list (instances whose tags match its filter), with its
//! weights and the registry revision it reflects, becomes a new config snapshot, handed to
//! every worker the way a reload's is (`Publish`, the control side's), where endpoints that
//! stayed keep their connections and removed ones finish what they carry. A watch that ends
//! (compaction, a dropped connection, an error) is read again from scratch on the next etcd
//! endpoint, after a backoff with jitter; meanwhile the workers keep the last good list.
//! The last list of each cluster is kept here too (`Latest`), so a reload's snapshot starts
//! from it rather than from nothing.

pub mod etcd;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::{resolve_endpoint, Address, Config, Discovery, RegistryConfig};

/// Where a registry's lists go: the control side makes each a new snapshot for the workers.
pub trait Publish: Send + Sync {
    /// `cluster`'s endpoints (and their weights) at registry `revision`.
    fn discovered(&self, cluster: &str, endpoints: Vec<Address>, weights: Vec<u32>, revision: i64);
}

use etcd::{Event, Kv, Watch, WatchMsg};

/// How long one etcd request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait between looks at the stop flag.
const TICK: Duration = Duration::from_millis(50);
/// Kitex's default instance weight (`registry-etcd` reads a weight <= 0 as this).
pub const DEFAULT_WEIGHT: i64 = crate::hosts::DEFAULT_WEIGHT as i64;

/// One instance as Kitex's `registry-etcd` writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Instance {
    pub address: String,
    pub weight: i64,
    pub tags: BTreeMap<String, String>,
}

/// Reads an instance from its key and JSON value (`{"network":"tcp","address":"host:port",
/// "weight":10,"tags":{..}}`): the address from the value, else the key's tail; a weight of 0
/// or less is 10.
pub fn parse_instance(key: &[u8], value: &[u8]) -> Result<Instance, String> {
    let v: serde_json::Value = serde_json::from_slice(value).map_err(|e| format!("value is not JSON: {e}"))?;
    if !v.is_object() {
        return Err("value is not a JSON object".into());
    }
    match v.get("network").and_then(|n| n.as_str()) {
        None | Some("") | Some("tcp") | Some("tcp4") | Some("tcp6") => {}
        Some(other) => return Err(format!("network {other:?} is not tcp")),
    }
    let tail = std::str::from_utf8(key).ok().and_then(|k| k.rsplit('/').next()).unwrap_or("");
    let address = match v.get("address").and_then(|a| a.as_str()) {
        Some(a) if !a.is_empty() => a.to_string(),
        _ if !tail.is_empty() => tail.to_string(),
        _ => return Err("no address in the value or the key".into()),
    };
    let weight = v.get("weight").and_then(|w| w.as_i64()).filter(|w| *w > 0).unwrap_or(DEFAULT_WEIGHT);
    let mut tags = BTreeMap::new();
    if let Some(t) = v.get("tags").and_then(|t| t.as_object()) {
        for (k, val) in t {
            tags.insert(k.clone(), val.as_str().map(str::to_string).unwrap_or_else(|| val.to_string()));
        }
    }
    Ok(Instance { address, weight, tags })
}

/// What every worker should route one discovered cluster on, as last sent.
#[derive(Clone, Debug, Default)]
pub struct ClusterState {
    pub registry: String,
    pub service: String,
    pub endpoints: Vec<Address>,
    /// Each endpoint's weight (Kitex's, 10 when it gives none).
    pub weights: Vec<u32>,
    /// The registry revision the list reflects.
    pub revision: i64,
    /// When the list last changed (seconds since the epoch).
    pub changed_at: u64,
    /// The service's answer is empty and the last good list is kept.
    pub empty_alarm: bool,
}

/// One registry's health, for the log, `/metrics` and `/clusters`.
#[derive(Default, Debug)]
pub struct RegistryHealth {
    /// 1 while a watch is established.
    pub up: AtomicBool,
    /// Reads and watches that failed.
    pub errors: AtomicU64,
    /// Values that did not parse (skipped).
    pub bad_values: AtomicU64,
    /// Lists sent to the workers.
    pub updates: AtomicU64,
    /// Latest revision seen.
    pub revision: AtomicI64,
}

/// The last list of every discovered cluster and each registry's health: shared with the
/// control thread (a reload starts from these lists) and the admin endpoint.
#[derive(Default, Debug)]
pub struct Latest {
    pub clusters: Mutex<BTreeMap<String, ClusterState>>,
    pub health: Mutex<BTreeMap<String, Arc<RegistryHealth>>>,
}

impl Latest {
    /// `config` with each discovered cluster's endpoints set to its last known list.
    pub fn fill(&self, config: &mut Config) {
        let known = self.clusters.lock().unwrap();
        for c in config.clusters.iter_mut().filter(|c| c.discovery.is_some()) {
            if let Some(s) = known.get(&c.name) {
                c.endpoints = s.endpoints.clone();
                c.weights = s.weights.clone();
                c.revision = s.revision;
            }
        }
    }
}

/// The registry threads of one config.
pub struct Registries {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    pub latest: Arc<Latest>,
    publish: Arc<dyn Publish>,
}

impl Registries {
    pub fn start(config: &Config, publish: Arc<dyn Publish>, latest: Arc<Latest>) -> Registries {
        let mut r = Registries { stop: Arc::new(AtomicBool::new(false)), threads: Vec::new(), latest, publish };
        r.spawn(config);
        r
    }

    /// A reload: the watches of the new config (the last lists are kept).
    pub fn set_config(&mut self, config: &Config) {
        self.halt();
        self.stop = Arc::new(AtomicBool::new(false));
        self.spawn(config);
    }

    fn spawn(&mut self, config: &Config) {
        let mut groups: BTreeMap<(String, String), Vec<(String, Discovery)>> = BTreeMap::new();
        for c in &config.clusters {
            if let Some(d) = &c.discovery {
                groups.entry((d.registry.clone(), d.service.clone())).or_default().push((c.name.clone(), d.clone()));
            }
        }
        for ((registry, service), clusters) in groups {
            let Some(reg) = config.registries.iter().find(|r| r.name == registry).cloned() else { continue };
            let health = self.latest.health.lock().unwrap().entry(registry.clone()).or_default().clone();
            let watcher = Watcher {
                reg,
                service,
                clusters,
                publish: self.publish.clone(),
                latest: self.latest.clone(),
                health,
                stop: self.stop.clone(),
                instances: HashMap::new(),
            };
            match std::thread::Builder::new().name(format!("ringway-reg-{registry}")).spawn(move || watcher.run()) {
                Ok(t) => self.threads.push(t),
                Err(e) => log::error!("registry {registry}: cannot start its thread: {e}"),
            }
        }
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Registries {
    fn drop(&mut self) {
        self.halt();
    }
}

/// One `(registry, service)` and the clusters that discover it.
struct Watcher {
    reg: RegistryConfig,
    service: String,
    clusters: Vec<(String, Discovery)>,
    publish: Arc<dyn Publish>,
    latest: Arc<Latest>,
    health: Arc<RegistryHealth>,
    stop: Arc<AtomicBool>,
    /// The service's instances by key, as last read.
    instances: HashMap<Vec<u8>, Instance>,
}

/// Why a watch ended.
enum Ended {
    Stopped,
    Failed(String),
}

impl Watcher {
    fn prefix(&self) -> Vec<u8> {
        format!("{}/{}/", self.reg.prefix, self.service).into_bytes()
    }

    fn run(mut self) {
        let mut attempt = 0u32;
        let mut which = 0usize;
        let mut failing = false;
        while !self.stop.load(Ordering::Relaxed) {
            let ep = self.reg.endpoints[which % self.reg.endpoints.len()].clone();
            match self.read_and_watch(&ep) {
                Ended::Stopped => return,
                Ended::Failed(why) => {
                    self.health.up.store(false, Ordering::Relaxed);
                    self.health.errors.fetch_add(1, Ordering::Relaxed);
                    if !std::mem::replace(&mut failing, true) || attempt % 20 == 0 {
                        log::warn!(
                            "registry {} ({ep}), service {}: {why}; keeping the last good endpoints and trying again",
                            self.reg.name,
                            self.service
                        );
                    }
                    which += 1;
                    attempt = attempt.saturating_add(1);
                    self.sleep(backoff(self.reg.retry_backoff, attempt));
                }
            }
            if self.health.up.load(Ordering::Relaxed) && std::mem::take(&mut failing) {
                attempt = 0;
            }
        }
    }

    fn sleep(&self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end && !self.stop.load(Ordering::Relaxed) {
            std::thread::sleep(TICK.min(end.saturating_duration_since(Instant::now())));
        }
    }

    /// Reads the service's keys, applies them, then follows the watch until it ends.
    fn read_and_watch(&mut self, ep: &crate::config::EtcdEndpoint) -> Ended {
        let prefix = self.prefix();
        let (kvs, revision) = match etcd::range_prefix(ep, &prefix, REQUEST_TIMEOUT) {
            Ok(r) => r,
            Err(e) => return Ended::Failed(format!("reading {} failed: {e}", String::from_utf8_lossy(&prefix))),
        };
        self.instances.clear();
        for kv in kvs {
            self.put(kv);
        }
        self.apply(revision);
        let mut watch = match Watch::start(ep, &prefix, revision + 1, REQUEST_TIMEOUT) {
            Ok(w) => w,
            Err(e) => return Ended::Failed(format!("watching failed: {e}")),
        };
        self.health.up.store(true, Ordering::Relaxed);
        log::info!(
            "registry {} ({ep}), service {}: {} instances at revision {revision}; watching",
            self.reg.name,
            self.service,
            self.instances.len()
        );
        let mut pending: Option<(Instant, i64)> = None;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Ended::Stopped;
            }
            let wait = match pending {
                Some((due, _)) => due.saturating_duration_since(Instant::now()).min(TICK),
                None => TICK,
            };
            match watch.next(wait) {
                Ok(Some(WatchMsg::Created)) => {}
                Ok(Some(WatchMsg::Events { revision, events })) => {
                    for e in events {
                        match e {
                            Event::Put(kv) => self.put(kv),
                            Event::Delete(key) => {
                                self.instances.remove(&key);
                            }
                        }
                    }
                    let due = pending.map_or(Instant::now() + self.reg.coalesce, |(d, _)| d);
                    pending = Some((due, revision));
                }
                Ok(Some(WatchMsg::Canceled { compact_revision, reason })) => {
                    let why = if compact_revision > 0 {
                        format!(
                            "watch from revision {} was compacted (now {compact_revision}): reading again",
                            revision + 1
                        )
                    } else {
                        format!("watch canceled: {reason}")
                    };
                    if let Some((_, rev)) = pending.take() {
                        self.apply(rev);
                    }
                    return Ended::Failed(why);
                }
                Ok(None) => {}
                Err(e) => {
                    if let Some((_, rev)) = pending.take() {
                        self.apply(rev);
                    }
                    return Ended::Failed(format!("watch ended: {e}"));
                }
            }
            if let Some((due, rev)) = pending {
                if Instant::now() >= due {
                    pending = None;
                    self.apply(rev);
                }
            }
        }
    }

    fn put(&mut self, kv: Kv) {
        match parse_instance(&kv.key, &kv.value) {
            Ok(i) => {
                self.instances.insert(kv.key, i);
            }
            Err(why) => {
                self.health.bad_values.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "registry {}, service {}: key {} skipped: {why}",
                    self.reg.name,
                    self.service,
                    String::from_utf8_lossy(&kv.key)
                );
                self.instances.remove(&kv.key);
            }
        }
    }

    /// Sends each cluster's list (at `revision`) to every worker if it changed.
    fn apply(&mut self, revision: i64) {
        self.health.revision.store(revision, Ordering::Relaxed);
        for (cluster, d) in &self.clusters {
            let mut list: Vec<(Address, i64)> = Vec::new();
            for i in self.instances.values().filter(|i| d.tags.iter().all(|(k, v)| i.tags.get(k) == Some(v))) {
                match resolve_endpoint(&i.address) {
                    Ok(addrs) => list.extend(addrs.into_iter().map(|a| (a, i.weight))),
                    Err(e) => log::warn!("registry {}, cluster {cluster}: instance {}: {e}", self.reg.name, i.address),
                }
            }
            list.sort_by(|a, b| format!("{:?}", a.0).cmp(&format!("{:?}", b.0)));
            list.dedup_by(|a, b| a.0 == b.0);
            let weights: Vec<u32> = list.iter().map(|(_, w)| (*w).clamp(1, 10_000) as u32).collect();
            let endpoints: Vec<Address> = list.into_iter().map(|(a, _)| a).collect();
            let mut latest = self.latest.clusters.lock().unwrap();
            let state = latest.entry(cluster.clone()).or_insert_with(|| ClusterState {
                registry: self.reg.name.clone(),
                service: self.service.clone(),
                ..ClusterState::default()
            });
            let empty = endpoints.is_empty() && !state.endpoints.is_empty() && d.keep_last_on_empty;
            if empty {
                if !state.empty_alarm {
                    log::warn!(
                        "registry {}, cluster {cluster}: service {} lists no instance (revision {revision}); keeping the last {} endpoints (discovery.keep_last_on_empty)",
                        self.reg.name,
                        self.service,
                        state.endpoints.len()
                    );
                }
                state.empty_alarm = true;
                state.revision = revision;
                continue;
            }
            state.empty_alarm = false;
            state.revision = revision;
            if state.endpoints == endpoints && state.weights == weights && state.changed_at != 0 {
                // Same list; the workers still learn the revision it stands for.
                self.send(cluster, &endpoints, &weights, revision);
                continue;
            }
            log::info!(
                "registry {}, cluster {cluster}: {} endpoints at revision {revision} (were {}); updating every worker",
                self.reg.name,
                endpoints.len(),
                state.endpoints.len()
            );
            state.endpoints = endpoints.clone();
            state.weights = weights.clone();
            state.changed_at = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            drop(latest);
            self.health.updates.fetch_add(1, Ordering::Relaxed);
            self.send(cluster, &endpoints, &weights, revision);
        }
    }

    fn send(&self, cluster: &str, endpoints: &[Address], weights: &[u32], revision: i64) {
        self.publish.discovered(cluster, endpoints.to_vec(), weights.to_vec(), revision);
    }
}

/// The wait before attempt `n` (from 1): `base` doubled per attempt up to 30 times `base`,
/// with up to half of it again as jitter.
fn backoff(base: Duration, n: u32) -> Duration {
    let d = base.saturating_mul(1u32 << n.min(5).saturating_sub(1)).min(base.saturating_mul(30));
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |t| t.subsec_nanos());
    d + d.mul_f64(f64::from(nanos % 1000) / 2000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_are_read_as_kitex_writes_them() {
        let v = br#"{"network":"tcp","address":"10.0.0.7:8888","weight":0,"tags":{"env":"prod","zone":"a"}}"#;
        let i = parse_instance(b"kitex/registry-etcd/echo/10.0.0.7:8888", v).unwrap();
        assert_eq!(i.address, "10.0.0.7:8888");
        assert_eq!(i.weight, 10, "a weight of 0 or less reads as Kitex's default");
        assert_eq!(i.tags.get("zone").map(String::as_str), Some("a"));
        let no_addr = parse_instance(b"kitex/registry-etcd/echo/10.0.0.8:8888", br#"{"weight":30}"#).unwrap();
        assert_eq!((no_addr.address.as_str(), no_addr.weight), ("10.0.0.8:8888", 30), "the key's tail");
        assert!(parse_instance(b"k/echo/x", b"{not json").is_err());
        assert!(parse_instance(b"k/echo/x", br#"{"network":"udp","address":"1.2.3.4:5"}"#).is_err());
        assert!(parse_instance(b"k/echo/x", b"[1,2]").is_err());
    }

    #[test]
    fn backoff_doubles_and_stops_growing() {
        let b = Duration::from_millis(100);
        assert!(backoff(b, 1) >= b && backoff(b, 1) <= b.mul_f64(1.5));
        assert!(backoff(b, 3) >= b * 4);
        assert!(backoff(b, 40) <= b * 16 * 3 / 2);
    }
}
