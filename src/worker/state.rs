//! What one worker owns: the current config view with its upstream pools, the registry of
//! downstream connections (for drain), and its counters. Nothing here knows a protocol: pools
//! are kept by their connection type, connections are reached through [`DownstreamConn`].

use std::any::TypeId;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::access_log::Sink;
use crate::config::{ClusterConfig, Config, ListenerConfig, RouteConfig};
use crate::metrics::{ClusterMetrics, EndpointMetrics, EndpointState, Registry, RouteLog, RouteMetrics};
use crate::pool::{Member, Pool};
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
}

/// What a pool of any protocol answers to the worker.
trait PoolOps: 'static {
    fn retire(&self);
    fn queued_bytes(&self) -> usize;
    fn live(&self, out: &mut Vec<EndpointState>);
}

impl<C: Member> PoolOps for Pool<C> {
    fn retire(&self) {
        Pool::retire(self)
    }
    fn queued_bytes(&self) -> usize {
        Pool::queued_bytes(self)
    }
    fn live(&self, out: &mut Vec<EndpointState>) {
        Pool::live(self, out)
    }
}

/// One pool of a cluster: which pool type it is (`Pool<C>` for one connection type `C`) and
/// flavour (a Thrift dialect, say), and the pool behind what the worker needs of it.
struct PoolSlot {
    type_id: TypeId,
    flavour: u32,
    pool: Rc<dyn PoolOps>,
}

/// One cluster's pools in this worker: one per connection type and flavour in use.
pub struct ClusterPools {
    pub config: Rc<ClusterConfig>,
    /// A handful of entries at most: a scan beats hashing.
    pools: RefCell<Vec<PoolSlot>>,
    stats: Rc<Stats>,
    metrics: Rc<ClusterMetrics>,
    /// Per endpoint (same order as the config's), shared by every pool of the cluster.
    endpoint_metrics: Vec<Rc<EndpointMetrics>>,
    /// Requests of the cluster waiting in any of its pools (`max_pending_requests`).
    pending: Rc<Cell<usize>>,
}

impl ClusterPools {
    /// The pool of connections of type `C` and flavour `flavour` (protocols that need one
    /// pool per wire variant, such as Thrift dialects, number them), created on first use.
    pub fn pool<C: Member>(&self, flavour: u32) -> Rc<Pool<C>> {
        let type_id = TypeId::of::<Pool<C>>();
        let mut pools = self.pools.borrow_mut();
        if let Some(slot) = pools.iter().find(|s| s.type_id == type_id && s.flavour == flavour) {
            // SAFETY: a slot whose `type_id` is that of `Pool<C>` was pushed below from an
            // `Rc<Pool<C>>` unsize-coerced to `Rc<dyn PoolOps>`, so the data pointer of its
            // `into_raw` is the `Pool<C>` that `Rc::from_raw` expects (same type, size and
            // alignment); the clone gives the new `Rc` its own strong count. (This is
            // `Rc::downcast` without the virtual `type_id` call: one scan per request.)
            return unsafe { Rc::from_raw(Rc::into_raw(slot.pool.clone()) as *const Pool<C>) };
        }
        let p = Rc::new(Pool::<C>::new(
            self.config.clone(),
            self.stats.clone(),
            self.metrics.clone(),
            &self.endpoint_metrics,
            self.pending.clone(),
        ));
        pools.push(PoolSlot { type_id, flavour, pool: p.clone() });
        p
    }

    fn new(config: ClusterConfig, stats: Rc<Stats>, registry: &Registry) -> ClusterPools {
        let endpoint_metrics =
            config.endpoints.iter().map(|a| registry.endpoint(&config.name, &a.to_string())).collect();
        ClusterPools {
            metrics: registry.cluster(&config.name),
            config: Rc::new(config),
            pools: RefCell::new(Vec::new()),
            stats,
            endpoint_metrics,
            pending: Rc::default(),
        }
    }

    /// What each pool's endpoints hold now (connections open, requests in flight, backoff).
    pub fn live(&self, out: &mut Vec<EndpointState>) {
        // Every configured endpoint, whether or not a pool has been made for it yet.
        let cluster: Rc<str> = self.config.name.as_str().into();
        for a in &self.config.endpoints {
            let endpoint = a.to_string().into();
            out.push(EndpointState { cluster: cluster.clone(), endpoint, open: 0, inflight: 0, down: false });
        }
        for slot in self.pools.borrow().iter() {
            slot.pool.live(out);
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
}

impl WorkerState {
    pub fn new(id: usize, snapshot: Arc<Snapshot>) -> Self {
        let stats = Rc::new(Stats::default());
        let metrics = Registry::default();
        let clusters = snapshot
            .config
            .clusters
            .iter()
            .map(|c| Rc::new(ClusterPools::new(c.clone(), stats.clone(), &metrics)))
            .collect();
        WorkerState {
            id,
            view: RefCell::new(Rc::new(View::new(snapshot, clusters, &metrics))),
            stats,
            metrics,
            conns: RefCell::new(HashMap::new()),
            next_conn: Cell::new(0),
            draining: Cell::new(false),
        }
    }

    /// The current view; requests hold it for their routing decision only.
    pub fn view(&self) -> Rc<View> {
        self.view.borrow().clone()
    }

    /// Switches to a new snapshot. Clusters whose config did not change keep their pools (and
    /// open connections); the others get new pools and the old ones close as they go idle.
    pub fn apply(&self, snapshot: Arc<Snapshot>) {
        let old = self.view();
        let clusters: Vec<Rc<ClusterPools>> = snapshot
            .config
            .clusters
            .iter()
            .map(|c| match old.clusters.iter().find(|o| *o.config == *c) {
                Some(o) => o.clone(),
                None => Rc::new(ClusterPools::new(c.clone(), self.stats.clone(), &self.metrics)),
            })
            .collect();
        for o in &old.clusters {
            if !clusters.iter().any(|n| Rc::ptr_eq(n, o)) {
                o.retire();
            }
        }
        *self.view.borrow_mut() = Rc::new(View::new(snapshot, clusters, &self.metrics));
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
        self.conns.borrow_mut().remove(&id);
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

    /// Closes connections with nothing in flight that have been quiet for `idle`.
    pub fn close_idle(&self, idle: Duration) {
        let now = Instant::now();
        for c in self.all_conns() {
            c.close_if_idle(idle, now);
        }
    }

    /// A copy of the worker's counters, with the Thrift replies summed from its routes.
    pub fn stats_snapshot(&self) -> crate::stats::StatsSnapshot {
        let mut s = self.stats.snapshot();
        s.protocols.thrift.replies = self.metrics.forwarded("thrift");
        s
    }

    /// Every labelled metric of this worker, with the pools' live figures.
    pub fn metrics_report(&self) -> crate::metrics::MetricsReport {
        let mut live = Vec::new();
        for c in &self.view().clusters {
            c.live(&mut live);
        }
        self.metrics.report(&live)
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
