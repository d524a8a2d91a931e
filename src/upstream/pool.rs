//! A pool of upstream connections for one cluster and one dialect, inside one worker.
//! Requests go round-robin across endpoints; on an endpoint, the first live connection with
//! room takes the request; a new connection is opened only when all are full (up to
//! `max_connections_per_endpoint`); when an endpoint is saturated the next one is tried, and
//! when all are, callers wait for a slot until their deadline.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Instant;

use monoio::net::{TcpStream, UnixStream};

use super::conn::{ConnLimits, UpConn};
use crate::config::{Address, ClusterConfig};
use crate::local::Notify;
use crate::stats::Stats;

/// Why no connection could be had for a request.
#[derive(Debug)]
pub enum AcquireError {
    /// Connecting to this endpoint failed or timed out.
    Connect { endpoint: String, why: String },
    /// Every connection stayed full until the request's deadline.
    Saturated,
}

impl std::fmt::Display for AcquireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AcquireError::Connect { endpoint, why } => write!(f, "connect to upstream {endpoint} failed: {why}"),
            AcquireError::Saturated => write!(f, "no upstream connection had room before the request deadline"),
        }
    }
}

struct Endpoint {
    addr: Address,
    label: Rc<str>,
    conns: RefCell<Vec<Rc<UpConn>>>,
    connecting: Cell<usize>,
}

pub struct Pool {
    cluster: Rc<ClusterConfig>,
    endpoints: Vec<Endpoint>,
    next: Cell<usize>,
    /// Woken when a connection frees a slot or dies.
    capacity: Rc<Notify>,
    stats: Rc<Stats>,
    /// No new requests after a reload replaced this pool; a connection still opened for a
    /// waiter is born retired.
    retired: Cell<bool>,
}

impl Pool {
    pub fn new(cluster: Rc<ClusterConfig>, stats: Rc<Stats>) -> Pool {
        let endpoints = cluster
            .endpoints
            .iter()
            .map(|a| Endpoint {
                addr: a.clone(),
                label: a.to_string().into(),
                conns: RefCell::new(Vec::new()),
                connecting: Cell::new(0),
            })
            .collect();
        Pool {
            cluster,
            endpoints,
            next: Cell::new(0),
            capacity: Rc::new(Notify::default()),
            stats,
            retired: Cell::new(false),
        }
    }

    /// The hot path: a live connection with room on this turn's endpoint, without connecting
    /// or waiting. `None` leaves the turn where it is for `acquire` (which may connect).
    pub fn try_acquire(&self) -> Option<Rc<UpConn>> {
        let turn = self.next.get();
        let conn = self.endpoints[turn].conns.borrow().iter().find(|c| c.has_capacity()).cloned()?;
        self.next.set((turn + 1) % self.endpoints.len());
        Some(conn)
    }

    /// Returns a live connection with room for one more request, connecting if needed.
    pub async fn acquire(&self, deadline: Instant) -> Result<Rc<UpConn>, AcquireError> {
        let n = self.endpoints.len();
        loop {
            let start = self.next.get();
            self.next.set((start + 1) % n);
            // This turn's endpoint first; the next ones only when it is full.
            for k in 0..n {
                let ep = &self.endpoints[(start + k) % n];
                let open = {
                    let mut conns = ep.conns.borrow_mut();
                    conns.retain(|c| !c.is_dead());
                    if let Some(c) = conns.iter().find(|c| c.has_capacity()) {
                        return Ok(c.clone());
                    }
                    conns.len() + ep.connecting.get() < self.cluster.max_connections_per_endpoint
                };
                if open {
                    // Boxed: the connect future is large and rare; keeping it out of line keeps
                    // every connection task small.
                    return Box::pin(self.connect(ep)).await;
                }
            }
            let wait = self.capacity.notified();
            if monoio::time::timeout_at(deadline.into(), wait).await.is_err() {
                return Err(AcquireError::Saturated);
            }
        }
    }

    async fn connect(&self, ep: &Endpoint) -> Result<Rc<UpConn>, AcquireError> {
        ep.connecting.set(ep.connecting.get() + 1);
        let res = monoio::time::timeout(self.cluster.connect_timeout, self.open(ep)).await;
        ep.connecting.set(ep.connecting.get() - 1);
        let err = |why: String| AcquireError::Connect { endpoint: ep.label.to_string(), why };
        match res {
            Ok(Ok(conn)) => {
                if self.retired.get() {
                    conn.mark_retired();
                }
                self.stats.upstream_connections.set(self.stats.upstream_connections.get() + 1);
                ep.conns.borrow_mut().push(conn.clone());
                // Callers that queued while this connect was in flight may use it too.
                self.capacity.notify_all();
                Ok(conn)
            }
            Ok(Err(e)) => {
                self.stats.connect_failures.set(self.stats.connect_failures.get() + 1);
                self.capacity.notify_all();
                Err(err(e.to_string()))
            }
            Err(_) => {
                self.stats.connect_failures.set(self.stats.connect_failures.get() + 1);
                self.capacity.notify_all();
                Err(err(format!("timed out after {:?}", self.cluster.connect_timeout)))
            }
        }
    }

    async fn open(&self, ep: &Endpoint) -> std::io::Result<Rc<UpConn>> {
        let limits = ConnLimits {
            max_inflight: self.cluster.max_requests_per_connection,
            max_frame: self.cluster.max_frame_size,
            max_write_buffer: self.cluster.max_write_buffer,
        };
        let (cap, stats, label) = (self.capacity.clone(), self.stats.clone(), ep.label.clone());
        Ok(match &ep.addr {
            Address::Tcp(a) => {
                let s = TcpStream::connect_addr(*a).await?;
                s.set_nodelay(true)?;
                UpConn::start(s, label, limits, cap, stats)
            }
            Address::Unix(p) => UpConn::start(UnixStream::connect(p).await?, label, limits, cap, stats),
        })
    }

    /// The pool is no longer used for new requests (config changed): close connections as
    /// they become idle.
    pub fn retire(&self) {
        self.retired.set(true);
        for ep in &self.endpoints {
            for c in ep.conns.borrow().iter() {
                c.retire();
            }
        }
        self.capacity.notify_all();
    }

    /// Bytes queued on this pool's connections and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.endpoints
            .iter()
            .flat_map(|ep| ep.conns.borrow().iter().map(|c| c.queued_bytes()).collect::<Vec<_>>())
            .sum()
    }
}
