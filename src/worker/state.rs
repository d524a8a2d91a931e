//! What one worker owns: the current config view with its upstream pools, the registry of
//! downstream connections (for drain), and its counters.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Snapshot;
use crate::config::{ClusterConfig, RouteConfig};
use crate::stats::Stats;
use crate::thrift::codec::Dialect;
use crate::thrift::session::ThriftSession;
use crate::thrift::upstream::ThriftPool;

/// One cluster's pools in this worker, one per Thrift dialect seen, and one of HTTP/2
/// connections for gRPC.
pub struct ClusterPools {
    pub config: Rc<ClusterConfig>,
    /// A handful of entries at most (one per dialect in use): a scan beats hashing.
    pools: RefCell<Vec<(Dialect, Rc<ThriftPool>)>>,
    grpc: RefCell<Option<Rc<crate::grpc::GrpcPool>>>,
    stats: Rc<Stats>,
}

impl ClusterPools {
    /// The pool for `dialect`, created on first use.
    pub fn pool(&self, dialect: Dialect) -> Rc<ThriftPool> {
        let mut pools = self.pools.borrow_mut();
        if let Some((_, p)) = pools.iter().find(|(d, _)| *d == dialect) {
            return p.clone();
        }
        let p = Rc::new(ThriftPool::new(self.config.clone(), self.stats.clone()));
        pools.push((dialect, p.clone()));
        p
    }

    /// The HTTP/2 pool, created on first use.
    pub fn grpc_pool(&self) -> Rc<crate::grpc::GrpcPool> {
        self.grpc
            .borrow_mut()
            .get_or_insert_with(|| Rc::new(crate::grpc::GrpcPool::new(self.config.clone(), self.stats.clone())))
            .clone()
    }

    fn new(config: ClusterConfig, stats: Rc<Stats>) -> ClusterPools {
        ClusterPools { config: Rc::new(config), pools: RefCell::new(Vec::new()), grpc: RefCell::new(None), stats }
    }

    fn retire(&self) {
        for (_, p) in self.pools.borrow().iter() {
            p.retire();
        }
        if let Some(p) = self.grpc.borrow().as_ref() {
            p.retire();
        }
    }

    fn queued_bytes(&self) -> usize {
        let grpc = self.grpc.borrow().as_ref().map_or(0, |p| p.queued_bytes());
        self.pools.borrow().iter().map(|(_, p)| p.queued_bytes()).sum::<usize>() + grpc
    }
}

/// A config snapshot with this worker's pools for its clusters (same indexes).
pub struct View {
    pub snapshot: Arc<Snapshot>,
    pub clusters: Vec<Rc<ClusterPools>>,
}

impl View {
    /// The routes of a listener, by name.
    pub fn routes(&self, listener: &str) -> &[RouteConfig] {
        self.snapshot.config.listeners.iter().find(|l| l.name == listener).map(|l| &l.routes[..]).unwrap_or(&[])
    }

    pub fn listener(&self, listener: &str) -> Option<&crate::config::ListenerConfig> {
        self.snapshot.config.listeners.iter().find(|l| l.name == listener)
    }
}

pub struct WorkerState {
    pub id: usize,
    view: RefCell<Rc<View>>,
    pub stats: Rc<Stats>,
    conns: RefCell<HashMap<u64, Rc<ThriftSession>>>,
    grpc_conns: RefCell<HashMap<u64, Rc<crate::grpc::GrpcSession>>>,
    next_conn: Cell<u64>,
    /// Set when a drain starts: accept loops stop, idle connections get closed.
    pub draining: Cell<bool>,
}

impl WorkerState {
    pub fn new(id: usize, snapshot: Arc<Snapshot>) -> Self {
        let stats = Rc::new(Stats::default());
        let clusters =
            snapshot.config.clusters.iter().map(|c| Rc::new(ClusterPools::new(c.clone(), stats.clone()))).collect();
        WorkerState {
            id,
            view: RefCell::new(Rc::new(View { snapshot, clusters })),
            stats,
            conns: RefCell::new(HashMap::new()),
            grpc_conns: RefCell::new(HashMap::new()),
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
                None => Rc::new(ClusterPools::new(c.clone(), self.stats.clone())),
            })
            .collect();
        for o in &old.clusters {
            if !clusters.iter().any(|n| Rc::ptr_eq(n, o)) {
                o.retire();
            }
        }
        *self.view.borrow_mut() = Rc::new(View { snapshot, clusters });
    }

    pub fn register(&self, ds: Rc<ThriftSession>) -> u64 {
        let id = self.next_conn.get();
        self.next_conn.set(id + 1);
        self.conns.borrow_mut().insert(id, ds);
        id
    }

    pub fn deregister(&self, id: u64) {
        self.conns.borrow_mut().remove(&id);
    }

    pub fn register_grpc(&self, c: Rc<crate::grpc::GrpcSession>) -> u64 {
        let id = self.next_conn.get();
        self.next_conn.set(id + 1);
        if self.draining.get() {
            c.start_drain();
        }
        self.grpc_conns.borrow_mut().insert(id, c);
        id
    }

    pub fn deregister_grpc(&self, id: u64) {
        self.grpc_conns.borrow_mut().remove(&id);
    }

    pub fn conn_count(&self) -> usize {
        self.conns.borrow().len() + self.grpc_conns.borrow().len()
    }

    /// Starts the graceful HTTP/2 drain (two-phase GOAWAY) on every gRPC connection.
    pub fn drain_grpc(&self) {
        let conns: Vec<_> = self.grpc_conns.borrow().values().cloned().collect();
        for c in conns {
            c.start_drain();
        }
    }

    /// Closes connections with nothing in flight that have been quiet for `idle`.
    pub fn close_idle(&self, idle: Duration) {
        let now = Instant::now();
        for ds in self.conns.borrow().values() {
            if !ds.is_idle() {
                ds.idle_mark.set(None);
                continue;
            }
            let seen = ds.activity.get();
            match ds.idle_mark.get() {
                Some((s, since)) if s == seen => {
                    if now.duration_since(since) >= idle {
                        ds.cancel_read();
                    }
                }
                _ => ds.idle_mark.set(Some((seen, now))),
            }
        }
    }

    /// Bytes still queued towards upstreams (ONEWAY frames a drain must not drop).
    pub fn upstream_queued_bytes(&self) -> usize {
        self.view().clusters.iter().map(|c| c.queued_bytes()).sum()
    }

    /// Closes every connection now (drain timeout).
    pub fn close_all(&self) {
        for ds in self.conns.borrow().values() {
            ds.cancel_read();
            ds.out.close();
        }
        let grpc: Vec<_> = self.grpc_conns.borrow().values().cloned().collect();
        for c in grpc {
            c.close_now();
        }
    }
}
