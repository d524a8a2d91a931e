//! What one worker owns: the current config view with its upstream pools, the registry of
//! downstream connections (for drain), and its counters. Nothing here knows a protocol: pools
//! are kept by their connection type, connections are reached through [`DownstreamConn`].

use std::any::TypeId;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::access_log::Sink;
use crate::config::{Address, ClusterConfig, Config, ListenerConfig, RouteConfig};
use crate::hosts::{Evict, Host, HostSet, Shared, DEFAULT_WEIGHT};
use crate::metrics::{EndpointState, Registry, RouteLog, RouteMetrics};
use crate::pool::{Member, Pool, PoolOps};
use crate::stats::Stats;

/// One immutable version of the config, as handed to every worker.
#[derive(Debug)]
pub struct Snapshot {
    pub generation: u64,
    pub config: Config,
    /// Each listener's access log (same indexes as `config.listeners`), if it has one.
    pub access_logs: Vec<Option<Sink>>,
}

/// A downstream connection as the worker sees it: something a drain can ask to finish, close
/// when idle, or close now. Each protocol's client connection implements it.
pub trait DownstreamConn {
    /// A drain started: announce it to the client (HTTP/2: the two-phase GOAWAY).
    fn start_drain(self: Rc<Self>);
    /// Called on every drain tick: close the connection if it has been idle (nothing in
    /// flight, no partial request) for `idle`.
    fn close_if_idle(&self, idle: Duration, now: Instant);
    /// The drain timed out: close now.
    fn close_now(self: Rc<Self>);
    /// Requests (streams) in flight on it now.
    fn requests_active(&self) -> usize;
    /// Called on every stall tick: if the client has left replies unread, with no write
    /// progress, for the listener's `write_stall_timeout`, close it (its requests cancelled,
    /// its buffers freed). True if it did.
    fn close_if_stalled(&self, now: Instant) -> bool;
}

/// What a drain's idle check remembers between ticks: the activity count last seen while the
/// connection was idle, and since when.
#[derive(Default)]
pub struct IdleMark(Cell<Option<(u64, Instant)>>);

impl IdleMark {
    pub fn get(&self) -> Option<(u64, Instant)> {
        self.0.get()
    }

    /// One drain tick: true once the connection has been idle (`idle_now`, its activity count
    /// still `seen`) for `idle`; any activity or work in flight starts the count again.
    pub fn idle_for(&self, idle_now: bool, seen: u64, now: Instant, idle: Duration) -> bool {
        if !idle_now {
            self.0.set(None);
            return false;
        }
        match self.0.get() {
            Some((s, since)) if s == seen => now.duration_since(since) >= idle,
            _ => {
                self.0.set(Some((seen, now)));
                false
            }
        }
    }
}

/// Whether a reload leaves a cluster's pools as they are: the same config, apart from the
/// endpoints of a discovered cluster (its registry, not the file, changes those).
fn same_cluster(old: &ClusterConfig, new: &ClusterConfig) -> bool {
    if old.discovery.is_some() && new.discovery.is_some() {
        let mut o = old.clone();
        o.endpoints = new.endpoints.clone();
        o.weights = new.weights.clone();
        o.revision = new.revision;
        return o == *new;
    }
    old == new
}

/// One pool of a cluster: which pool type it is (`Pool<C>` for one connection type `C`) and
/// flavour (a Thrift dialect, say), and the pool behind what the worker needs of it.
struct PoolSlot {
    type_id: TypeId,
    flavour: u32,
    pool: Rc<dyn PoolOps>,
}

/// Active health verdicts by cluster and endpoint, as the health owner last sent them (kept
/// across reloads and endpoint changes, so a new pool starts from what is known).
pub type HealthTable = RefCell<HashMap<(String, Address), bool>>;

/// One cluster's pools in this worker: one per connection type and flavour in use, over the
/// cluster's endpoints (`HostSet`, shared by all of them).
pub struct ClusterPools {
    /// The cluster as the snapshot has it (reloads compare it).
    pub config: Rc<ClusterConfig>,
    /// The endpoints now (DNS may have changed them since the snapshot) and how requests
    /// are spread over them.
    set: RefCell<Rc<HostSet>>,
    /// The config the pools use: `config` with the endpoints of `set`.
    resolved: RefCell<Rc<ClusterConfig>>,
    /// A handful of entries at most: a scan beats hashing.
    pools: RefCell<Vec<PoolSlot>>,
    stats: Rc<Stats>,
    seed: u64,
    /// Discovered clusters: the registry revision of the endpoints in use.
    pub revision: Cell<i64>,
}

impl ClusterPools {
    /// The pool of connections of type `C` and flavour `flavour` (protocols that need one
    /// pool per wire variant, such as Thrift dialects, number them), created on first use.
    pub fn pool<C: Member>(&self, flavour: u32) -> Rc<Pool<C>> {
        let type_id = TypeId::of::<Pool<C>>();
        let mut pools = self.pools.borrow_mut();
        if let Some(slot) = pools.iter().find(|s| s.type_id == type_id && s.flavour == flavour) {
            // SAFETY: a slot whose `type_id` is that of `Pool<C>` holds an `Rc<Pool<C>>`
            // unsize-coerced to `Rc<dyn PoolOps>` (pushed below, or made by `Pool<C>::rebase`,
            // which returns a `Pool<C>` too), so the data pointer of its `into_raw` is the
            // `Pool<C>` that `Rc::from_raw` expects (same type, size and alignment); the clone
            // gives the new `Rc` its own strong count. (This is `Rc::downcast` without the
            // virtual `type_id` call: one scan per request.)
            return unsafe { Rc::from_raw(Rc::into_raw(slot.pool.clone()) as *const Pool<C>) };
        }
        let set = self.set.borrow().clone();
        let p = Pool::<C>::new(self.resolved.borrow().clone(), set.clone(), self.stats.clone());
        let weak: Weak<dyn Evict> = Rc::downgrade(&(p.clone() as Rc<dyn Evict>));
        set.shared.add_pool(weak);
        pools.push(PoolSlot { type_id, flavour, pool: p.clone() });
        p
    }

    fn new(
        config: ClusterConfig,
        stats: Rc<Stats>,
        registry: &Registry,
        health: &HealthTable,
        seed: u64,
    ) -> ClusterPools {
        let shared = Shared::new(&config, registry.cluster(&config.name));
        let config = Rc::new(config);
        let set = host_set(&config, &config.endpoints, &[], &shared, registry, health, seed);
        for (h, w) in set.hosts.iter().zip(&config.weights) {
            h.weight.set(*w);
        }
        // Built again when the registry gave weights, so its weighted picks see them.
        let set = if config.weights.is_empty() {
            Rc::new(set)
        } else {
            Rc::new(HostSet::new(config.lb.clone(), set.hosts.clone(), shared.clone(), seed))
        };
        ClusterPools {
            resolved: RefCell::new(config.clone()),
            revision: Cell::new(config.revision),
            config,
            set: RefCell::new(set),
            pools: RefCell::new(Vec::new()),
            stats,
            seed,
        }
    }

    /// The cluster's endpoints now.
    pub fn hosts(&self) -> Rc<HostSet> {
        self.set.borrow().clone()
    }

    /// New endpoints for the cluster (a DNS answer changed, or its registry's list), with
    /// their weights (empty: the default for all): the endpoints that stayed keep their
    /// connections, state and counters; connections to removed ones close once idle.
    pub fn set_endpoints(&self, endpoints: &[Address], weights: &[u32], registry: &Registry, health: &HealthTable) {
        let old = self.hosts();
        let weight = |i: usize| weights.get(i).copied().unwrap_or(DEFAULT_WEIGHT);
        if old.hosts.iter().map(|h| &h.addr).eq(endpoints.iter())
            && old.hosts.iter().enumerate().all(|(i, h)| h.weight.get() == weight(i))
        {
            return;
        }
        let set = host_set(&self.config, endpoints, &old.hosts, &old.shared, registry, health, self.seed);
        let set = if weights.is_empty() {
            Rc::new(set)
        } else {
            for (i, h) in set.hosts.iter().enumerate() {
                h.weight.set(weight(i));
            }
            // Built again so its weighted picks see the weights.
            Rc::new(HostSet::new(self.config.lb.clone(), set.hosts.clone(), old.shared.clone(), self.seed))
        };
        let mut resolved = (*self.config).clone();
        resolved.endpoints = endpoints.to_vec();
        *self.resolved.borrow_mut() = Rc::new(resolved);
        for slot in self.pools.borrow_mut().iter_mut() {
            slot.pool = slot.pool.rebase(&set);
        }
        old.mark_removed(&set);
        *self.set.borrow_mut() = set;
    }

    /// The health owner's verdict on one endpoint.
    pub fn set_healthy(&self, endpoint: &Address, healthy: bool) {
        if let Some(h) = self.hosts().hosts.iter().find(|h| h.addr == *endpoint) {
            h.set_healthy(healthy);
        }
    }

    /// What each pool's endpoints hold now (connections open, requests in flight, backoff),
    /// each endpoint's health and ejection, and whether the cluster is failing open.
    pub fn live(&self, out: &mut Vec<EndpointState>, fail_open: &mut Vec<Rc<str>>) {
        let set = self.hosts();
        // Every endpoint, whether or not a pool has been made for it yet.
        let cluster: Rc<str> = self.config.name.as_str().into();
        for h in &set.hosts {
            out.push(EndpointState {
                cluster: cluster.clone(),
                endpoint: h.label.clone(),
                open: 0,
                inflight: 0,
                down: false,
                unhealthy: !h.healthy(),
                ejected: h.ejected_now(),
            });
        }
        for slot in self.pools.borrow().iter() {
            slot.pool.live(out);
        }
        if set.shared.fail_open() {
            fail_open.push(cluster);
        }
    }

    fn retire(&self) {
        for slot in self.pools.borrow().iter() {
            slot.pool.retire();
        }
    }

    fn queued_bytes(&self) -> usize {
        self.pools.borrow().iter().map(|slot| slot.pool.queued_bytes()).sum()
    }
}

/// The hosts of `endpoints`, reusing those of `old` with the same address.
fn host_set(
    config: &ClusterConfig,
    endpoints: &[Address],
    old: &[Rc<Host>],
    shared: &Rc<Shared>,
    registry: &Registry,
    health: &HealthTable,
    seed: u64,
) -> HostSet {
    let health = health.borrow();
    let hosts = endpoints
        .iter()
        .map(|a| match old.iter().find(|h| h.addr == *a) {
            Some(h) => h.clone(),
            None => {
                let healthy = health.get(&(config.name.clone(), a.clone())).copied().unwrap_or(true);
                let metrics = registry.endpoint(&config.name, &a.to_string());
                Rc::new(Host::new(a.clone(), metrics, shared.clone(), healthy))
            }
        })
        .collect();
    HostSet::new(config.lb.clone(), hosts, shared.clone(), seed)
}

/// A config snapshot with this worker's pools for its clusters (same indexes), and the
/// metrics of every route (per listener, same indexes as the config's).
pub struct View {
    pub snapshot: Arc<Snapshot>,
    pub clusters: Vec<Rc<ClusterPools>>,
    pub route_metrics: Vec<Vec<Rc<RouteMetrics>>>,
}

impl View {
    fn new(snapshot: Arc<Snapshot>, clusters: Vec<Rc<ClusterPools>>, registry: &Registry) -> View {
        let config = &snapshot.config;
        let mut route_metrics = Vec::new();
        for (i, l) in config.listeners.iter().enumerate() {
            let sink = snapshot.access_logs.get(i).cloned().flatten();
            let sample = l.access_log.as_ref().map_or(0.0, |a| a.sample);
            let protocol = l.protocol.kind().name();
            let log = |route: &str, cluster: &str| {
                sink.clone().map(|sink| RouteLog::new(&l.name, route, cluster, protocol, sink, sample))
            };
            let unrouted = registry.listener(&l.name, protocol).unrouted.clone();
            unrouted.set_log(log("", ""));
            let routes: Vec<Rc<RouteMetrics>> = l
                .routes
                .iter()
                .map(|r| {
                    let m = registry.route(&l.name, &r.name);
                    let cluster = config.clusters.get(r.cluster).map_or("", |c| c.name.as_str());
                    m.set_log(log(&r.name, cluster));
                    m
                })
                .collect();
            route_metrics.push(routes);
        }
        View { snapshot, clusters, route_metrics }
    }

    /// The routes of a listener, by name.
    pub fn routes(&self, listener: &str) -> &[RouteConfig] {
        self.listener(listener).map(|l| &l.routes[..]).unwrap_or(&[])
    }

    /// A listener's place in the config: the same in every snapshot (a reload may not change
    /// the listeners), so a connection looks it up once.
    pub fn listener_index(&self, listener: &str) -> Option<usize> {
        self.snapshot.config.listeners.iter().position(|l| l.name == listener)
    }

    /// The routes of the listener at `index` with their metrics (same indexes).
    #[inline]
    pub fn route_table(&self, index: usize) -> (&[RouteConfig], &[Rc<RouteMetrics>]) {
        match (self.snapshot.config.listeners.get(index), self.route_metrics.get(index)) {
            (Some(l), Some(m)) => (&l.routes, m),
            _ => (&[], &[]),
        }
    }

    pub fn listener(&self, listener: &str) -> Option<&ListenerConfig> {
        self.snapshot.config.listeners.iter().find(|l| l.name == listener)
    }
}

/// A per-worker seed for the load balancer's random choices.
fn seed(worker: usize) -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    crate::hosts::hash_bytes(&(t ^ worker as u64).to_le_bytes())
}

pub struct WorkerState {
    pub id: usize,
    view: RefCell<Rc<View>>,
    pub stats: Rc<Stats>,
    /// Labelled metrics, kept across reloads.
    pub metrics: Registry,
    /// Every open downstream connection, whatever its protocol (drain walks them).
    conns: RefCell<HashMap<u64, Rc<dyn DownstreamConn>>>,
    next_conn: Cell<u64>,
    /// Set when a drain starts: accept loops stop, idle connections get closed.
    pub draining: Cell<bool>,
    /// Active health verdicts (see `HealthTable`).
    health: HealthTable,
}

impl WorkerState {
    pub fn new(id: usize, snapshot: Arc<Snapshot>) -> Self {
        let stats = Rc::new(Stats::default());
        let metrics = Registry::default();
        let health = HealthTable::default();
        let clusters = snapshot
            .config
            .clusters
            .iter()
            .map(|c| Rc::new(ClusterPools::new(c.clone(), stats.clone(), &metrics, &health, seed(id))))
            .collect();
        WorkerState {
            id,
            view: RefCell::new(Rc::new(View::new(snapshot, clusters, &metrics))),
            stats,
            metrics,
            conns: RefCell::new(HashMap::new()),
            next_conn: Cell::new(0),
            draining: Cell::new(false),
            health,
        }
    }

    /// The current view; requests hold it for their routing decision only.
    pub fn view(&self) -> Rc<View> {
        self.view.borrow().clone()
    }

    /// Switches to a new snapshot. Clusters whose config did not change keep their pools (and
    /// open connections); the others get new pools and the old ones close as they go idle.
    /// `reload`: a reload's snapshot, whose names were resolved afresh (a registry change's
    /// snapshot leaves every other cluster's endpoints as the resolver last set them).
    pub fn apply(&self, snapshot: Arc<Snapshot>, reload: bool) {
        let old = self.view();
        let clusters: Vec<Rc<ClusterPools>> = snapshot
            .config
            .clusters
            .iter()
            .map(|c| match old.clusters.iter().find(|o| same_cluster(&o.config, c)) {
                Some(o) => {
                    // The reload resolved its names afresh (the resolver starts over from
                    // that); a discovered cluster's list is the registry's, in every snapshot.
                    if reload || c.discovery.is_some() {
                        o.set_endpoints(&c.endpoints, &c.weights, &self.metrics, &self.health);
                    }
                    o.revision.set(c.revision);
                    o.clone()
                }
                None => Rc::new(ClusterPools::new(
                    c.clone(),
                    self.stats.clone(),
                    &self.metrics,
                    &self.health,
                    seed(self.id),
                )),
            })
            .collect();
        for o in &old.clusters {
            if !clusters.iter().any(|n| Rc::ptr_eq(n, o)) {
                o.retire();
            }
        }
        *self.view.borrow_mut() = Rc::new(View::new(snapshot, clusters, &self.metrics));
    }

    /// The health owner's verdict on an endpoint of a cluster.
    pub fn set_health(&self, cluster: &str, endpoint: &Address, healthy: bool) {
        self.health.borrow_mut().insert((cluster.to_string(), endpoint.clone()), healthy);
        if let Some(c) = self.view().clusters.iter().find(|c| c.config.name == cluster) {
            c.set_healthy(endpoint, healthy);
        }
    }

    /// A cluster's endpoints as the resolver now answers for `names`, or as its registry
    /// lists them at `revision`. An answer for names the running config no longer has (it
    /// crossed a reload) is ignored.
    pub fn set_endpoints(&self, cluster: &str, names: &[String], endpoints: &[Address]) {
        let view = self.view();
        let c = view.clusters.iter().find(|c| c.config.name == cluster && c.config.endpoint_names == names);
        if let Some(c) = c {
            c.set_endpoints(endpoints, &[], &self.metrics, &self.health);
        }
    }

    /// Each discovered cluster's registry revision and endpoint count in this worker.
    pub fn discovered(&self) -> Vec<(String, i64, usize)> {
        let view = self.view();
        view.clusters
            .iter()
            .filter(|c| c.config.discovery.is_some())
            .map(|c| (c.config.name.clone(), c.revision.get(), c.hosts().hosts.len()))
            .collect()
    }

    /// Registers a downstream connection for drain; one that arrives during a drain is told
    /// at once.
    pub fn register(&self, conn: Rc<dyn DownstreamConn>) -> u64 {
        let id = self.next_conn.get();
        self.next_conn.set(id + 1);
        if self.draining.get() {
            conn.clone().start_drain();
        }
        self.conns.borrow_mut().insert(id, conn);
        id
    }

    pub fn deregister(&self, id: u64) {
        let mut conns = self.conns.borrow_mut();
        conns.remove(&id);
        // After a spike of connections, give the table's room back (a quarter full).
        let (len, capacity) = (conns.len(), conns.capacity());
        if capacity > 1024 && len * 4 < capacity {
            conns.shrink_to(len * 2);
        }
    }

    pub fn conn_count(&self) -> usize {
        self.conns.borrow().len()
    }

    /// Requests (streams) in flight on every downstream connection.
    pub fn requests_active(&self) -> usize {
        self.conns.borrow().values().map(|c| c.requests_active()).sum()
    }

    fn all_conns(&self) -> Vec<Rc<dyn DownstreamConn>> {
        self.conns.borrow().values().cloned().collect()
    }

    /// Tells every connection a drain started.
    pub fn start_drain(&self) {
        for c in self.all_conns() {
            c.start_drain();
        }
    }

    /// Closes the connections whose clients stopped reading their replies.
    pub fn close_stalled(&self, now: Instant) {
        for c in self.all_conns() {
            c.close_if_stalled(now);
        }
    }

    /// Closes connections with nothing in flight that have been quiet for `idle`.
    pub fn close_idle(&self, idle: Duration) {
        let now = Instant::now();
        for c in self.all_conns() {
            c.close_if_idle(idle, now);
        }
    }

    /// A copy of the worker's counters, with the Thrift replies summed from its routes.
    pub fn stats_snapshot(&self) -> crate::stats::StatsSnapshot {
        crate::local::BUDGET.with(|b| {
            self.stats.buffer_bytes.set(b.held() as u64);
            self.stats.buffer_over_budget.set(b.went_over.get());
            self.stats.buffer_over.set(u64::from(b.is_over()));
        });
        let mut s = self.stats.snapshot();
        s.protocols.thrift.replies = self.metrics.forwarded("thrift");
        s
    }

    /// Every labelled metric of this worker, with the pools' live figures.
    pub fn metrics_report(&self) -> crate::metrics::MetricsReport {
        let (mut live, mut fail_open) = (Vec::new(), Vec::new());
        for c in &self.view().clusters {
            c.live(&mut live, &mut fail_open);
        }
        self.metrics.report(&live, &fail_open)
    }

    /// Bytes still queued towards upstreams (ONEWAY frames a drain must not drop).
    pub fn upstream_queued_bytes(&self) -> usize {
        self.view().clusters.iter().map(|c| c.queued_bytes()).sum()
    }

    /// Closes every connection now (drain timeout).
    pub fn close_all(&self) {
        for c in self.all_conns() {
            c.close_now();
        }
    }
}
