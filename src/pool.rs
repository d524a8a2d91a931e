//! A pool of upstream connections for one cluster and one connection type (and flavour: a
//! Thrift dialect), inside one worker. The cluster's `HostSet` (shared by all its pools)
//! picks the endpoint (`lb`, skipping unhealthy and ejected ones); on it, the first live
//! connection with room takes the request; a new connection is opened only when all are full
//! (up to `max_connections_per_endpoint`, counted over every pool of the cluster: a pool at
//! the limit asks its siblings to close an idle connection); when an endpoint is saturated
//! the next one is tried, and when all are, callers wait for a slot until their deadline.
//! Pools of HTTP/2 connections (`Member::SPREAD`) instead open another connection whenever
//! every open one is busy, up to the same limit, and give each stream to the least-loaded
//! connection.
//!
//! A failed connect sent nothing, so the request moves on to another endpoint, at most
//! `retries` times and within the cluster's retry budget; the endpoint is marked down for
//! `connect_failure_backoff` (new connections avoid it meanwhile, unless every endpoint is
//! down; connections already open to it keep serving) and the failure counts towards its
//! outlier ejection.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::time::Instant;

use monoio::net::{TcpStream, UnixStream};

use monoio::io::{CancelableAsyncReadRent, CancelableAsyncWriteRent, Splitable};

use crate::config::{Address, ClusterConfig};
use crate::error::{ConnectCause, ErrorKind, RequestError};
use crate::hosts::{Evict, Host, HostSet, RetryGuard};
use crate::local::Notify;
use crate::metrics::{bump, EndpointState};
use crate::stats::Stats;

/// A multiplexed upstream connection a pool can hold (Thrift or HTTP/2).
pub trait Member: Sized + 'static {
    /// One new connection serves a burst of callers (HTTP/2: up to the peer's stream limit),
    /// so while one is being opened or is warming, callers wait for it instead of each
    /// opening another.
    const SHARE_NEW_CONNECTIONS: bool = false;

    /// Spread requests over up to `max_connections_per_endpoint` connections instead of
    /// filling one connection before opening the next. HTTP/2: a server handles one
    /// connection's frames in one task, and 320 streams on one connection got answered one at
    /// a time (see BENCHMARKS.md). Each caller passes an affinity key (its downstream
    /// connection): its requests stay on one upstream connection while that one has room, so
    /// their replies come back together and leave in one write.
    const SPREAD: bool = false;

    /// Requests in flight on this connection.
    fn load(&self) -> usize {
        0
    }

    /// Starts the connection's tasks on a connected stream to `host`.
    fn start<S>(stream: S, host: Rc<Host>, cluster: &ClusterConfig, capacity: Rc<Notify>, stats: Rc<Stats>) -> Rc<Self>
    where
        S: Splitable + 'static,
        S::OwnedRead: CancelableAsyncReadRent + 'static,
        S::OwnedWrite: CancelableAsyncWriteRent + 'static;
    fn is_dead(&self) -> bool;
    /// Live, not retired or going away, and room for one more request.
    fn has_capacity(&self) -> bool;
    /// Takes no new requests; closes once idle.
    fn retire(&self);
    /// Like `retire`, but the caller still sends one request first.
    fn mark_retired(&self);
    /// Bytes waiting to be written.
    fn queued_bytes(&self) -> usize;
    /// Just connected and not yet able to say how much it takes (HTTP/2 before the peer's
    /// SETTINGS): callers wait for it rather than open more connections.
    fn warming(&self) -> bool {
        false
    }
    /// The pool it belongs to (a connection that dies may hand requests it never wrote back
    /// to it).
    fn joined(&self, _pool: Weak<Pool<Self>>) {}
}

/// What a pool of any protocol answers to the worker.
pub trait PoolOps: 'static {
    fn retire(&self);
    fn queued_bytes(&self) -> usize;
    fn live(&self, out: &mut Vec<EndpointState>);
    /// The same pool over a new set of endpoints (a DNS answer changed): connections to the
    /// endpoints that stayed carry on in it; those to removed endpoints close once idle.
    fn rebase(&self, set: &Rc<HostSet>) -> Rc<dyn PoolOps>;
}

/// One request counted in one of the cluster's gauges (pending requests, retries under way)
/// while it is in `acquire`.
struct Counted<'a>(&'a Cell<usize>);

impl<'a> Counted<'a> {
    fn enter(count: &'a Cell<usize>) -> Counted<'a> {
        count.set(count.get() + 1);
        Counted(count)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// One endpoint's connections in one pool (shared with the pool that replaces this one when
/// the endpoint list changes).
pub struct Endpoint<C> {
    host: Rc<Host>,
    conns: RefCell<Vec<Rc<C>>>,
    /// Connects under way from this pool.
    connecting: Cell<usize>,
}

impl<C: Member> Endpoint<C> {
    /// Forgets dead connections; how many.
    fn reap(&self) -> usize {
        let mut conns = self.conns.borrow_mut();
        let before = conns.len();
        conns.retain(|c| !c.is_dead());
        let gone = before - conns.len();
        if gone > 0 {
            self.host.conns.set(self.host.conns.get().saturating_sub(gone));
            self.host.evicting.set(false);
        }
        gone
    }
}

/// With twice the least-loaded connection's requests, how many more a spreading pool's
/// connection may carry and still take its affinity key's next request.
const AFFINITY_SLACK: usize = 16;

/// How often a request waiting for a connection slot held by another pool of the cluster
/// looks again (their connections do not wake this pool's waiters).
const EVICT_POLL: std::time::Duration = std::time::Duration::from_millis(5);

pub struct Pool<C: Member> {
    cluster: Rc<ClusterConfig>,
    set: Rc<HostSet>,
    /// Same order as `set.hosts`.
    endpoints: Vec<Rc<Endpoint<C>>>,
    /// Woken when a connection frees a slot or dies.
    capacity: Rc<Notify>,
    stats: Rc<Stats>,
    /// No new requests after a reload replaced this pool; a connection still opened for a
    /// waiter is born retired.
    retired: Cell<bool>,
    /// Itself, for the connections it opens (`Member::joined`).
    me: Weak<Pool<C>>,
}

impl<C: Member> Pool<C> {
    /// A pool for `cluster` over the endpoints of `set`.
    pub fn new(cluster: Rc<ClusterConfig>, set: Rc<HostSet>, stats: Rc<Stats>) -> Rc<Pool<C>> {
        let endpoints = set
            .hosts
            .iter()
            .map(|h| Rc::new(Endpoint { host: h.clone(), conns: RefCell::new(Vec::new()), connecting: Cell::new(0) }))
            .collect();
        let capacity = Rc::new(Notify::default());
        Rc::new_cyclic(|me| Pool {
            cluster,
            set,
            endpoints,
            capacity,
            stats,
            retired: Cell::new(false),
            me: me.clone(),
        })
    }

    /// Each endpoint's connections open now, requests on them, and whether a failed connect
    /// holds it back.
    pub fn live(&self, out: &mut Vec<EndpointState>) {
        let now = Instant::now();
        for ep in &self.endpoints {
            let conns = ep.conns.borrow();
            let live = conns.iter().filter(|c| !c.is_dead());
            let (open, inflight) = live.fold((0, 0), |(o, i), c| (o + 1, i + c.load() as u64));
            out.push(EndpointState {
                cluster: self.cluster.name.as_str().into(),
                endpoint: ep.host.label.clone(),
                open,
                inflight,
                down: ep.host.is_down(now),
                unhealthy: false,
                ejected: false,
            });
        }
    }

    /// The connection with room a request with affinity `key` should use among `conns`, and
    /// whether every connection with room is already busy (then a spreading pool opens
    /// another when it may). A spreading pool keeps a key on its own connection while that
    /// one carries at most twice the least-loaded's requests plus `AFFINITY_SLACK`, so one
    /// client with many streams still spreads (320 streams over 4 connections: about 138 on
    /// its own and 61 on each other), while loads that only jitter keep their affinity.
    fn choose(conns: &[Rc<C>], key: usize) -> (Option<Rc<C>>, bool) {
        if !C::SPREAD {
            return (conns.iter().find(|c| c.has_capacity()).cloned(), false);
        }
        let Some(least) = conns.iter().filter(|c| c.has_capacity()).min_by_key(|c| c.load()) else {
            return (None, false);
        };
        let busy = least.load() > 0;
        let own = conns
            .get(key % conns.len().max(1))
            .filter(|c| c.has_capacity() && c.load() <= 2 * least.load() + AFFINITY_SLACK);
        (Some(own.unwrap_or(least).clone()), busy)
    }

    /// Over the cluster's `max_requests` in flight (this worker).
    #[inline]
    fn over_max_requests(&self) -> bool {
        self.set.shared.inflight.get() >= self.cluster.max_requests
    }

    /// The hot path: a live connection with room on the endpoint the cluster's policy picks,
    /// without connecting or waiting. `None` sends the request to `acquire` (which may
    /// connect, or refuse it as overloaded). `key`: affinity (see `Member::SPREAD`); pools
    /// that do not spread ignore it. `hash`: the request's key under `lb = "hash"`.
    #[inline]
    pub fn try_acquire(&self, key: usize, hash: u64) -> Option<Rc<C>> {
        if self.over_max_requests() || self.endpoints.is_empty() {
            return None;
        }
        let i = self.set.pick(hash);
        let ep = &self.endpoints[i];
        let conns = ep.conns.borrow();
        let (best, busy) = Self::choose(&conns, key);
        let Some(best) = best else {
            // `acquire` picks again: the same turn.
            self.set.rewind(i);
            return None;
        };
        // All busy and another connection may be opened: `acquire` opens it (the same
        // test as there, so the slow path is taken only when it will connect).
        if busy
            && ep.connecting.get() == 0
            && ep.host.conns.get() < self.cluster.max_connections_per_endpoint
            && !conns.iter().any(|c| c.warming())
            && !ep.host.is_down(Instant::now())
        {
            self.set.rewind(i);
            return None;
        }
        Some(best)
    }

    /// Returns a live connection with room for one more request, connecting if needed. A
    /// failed connect goes on to another endpoint (the endpoint's open connections still
    /// serve) while retries and the retry budget allow; the error of the last one is returned
    /// once no retry is left, or every endpoint has failed this request and none has a
    /// connection left to wait for, or at the deadline. Over `max_requests` in flight or
    /// `max_pending_requests` waiting, it fails at once (overloaded).
    /// `avoid`: an endpoint that just refused this request; another is tried first.
    pub async fn acquire(
        &self,
        deadline: Instant,
        key: usize,
        hash: u64,
        avoid: Option<&Host>,
    ) -> Result<Rc<C>, RequestError> {
        let n = self.endpoints.len();
        if n == 0 {
            // A discovered cluster whose registry has listed no instance (yet).
            return Err(ErrorKind::NoEndpoints { cluster: self.cluster.name.clone() }.into());
        }
        let shared = self.set.shared.clone();
        // Circuit breakers: fail now instead of queueing.
        if self.over_max_requests() || shared.pending.get() >= self.cluster.max_pending_requests {
            return Err(ErrorKind::Overloaded.into());
        }
        let _waiting = Counted::enter(&shared.pending);
        bump(&shared.metrics.pool_waits);
        // Endpoints whose connect failed for this request (allocated on the first failure).
        let mut failed: Vec<bool> = Vec::new();
        let tried = |failed: &[bool], i: usize| failed.get(i).copied().unwrap_or(false);
        let mut last_error = None;
        let mut retries = 0u32;
        // Counted among the cluster's retries under way from the first retry on.
        let mut retrying: Option<Counted> = None;
        'scan: loop {
            let mut start = self.set.pick(hash);
            if n > 1 && avoid.is_some_and(|a| std::ptr::eq(&*self.endpoints[start].host, a)) {
                start = (start + 1) % n;
            }
            let now = Instant::now();
            // Down endpoints get no new connection while another one may still get one.
            let all_down = (0..n).all(|i| tried(&failed, i) || self.endpoints[i].host.is_down(now));
            // When a skipped endpoint's backoff ends, look again.
            let mut wake = deadline;
            // The picked endpoint first; the next usable ones only when it is full.
            for k in 0..n {
                let i = (start + k) % n;
                if k > 0 && !self.set.usable(i) {
                    continue;
                }
                let ep = &self.endpoints[i];
                let host = &ep.host;
                ep.reap();
                let (best, pending, own) = {
                    let conns = ep.conns.borrow();
                    let (best, busy) = Self::choose(&conns, key);
                    let pending =
                        C::SHARE_NEW_CONNECTIONS && (ep.connecting.get() > 0 || conns.iter().any(|c| c.warming()));
                    (best.map(|c| (c, busy)), pending, conns.len() + ep.connecting.get())
                };
                let max = self.cluster.max_connections_per_endpoint;
                // At the limit with connections of other pools (dialects): ask one of them to
                // close an idle one.
                let mut room = host.conns.get() < max;
                if !room && own < max && best.is_none() && !pending {
                    room = self.set.shared.evict_idle(host, self as *const Self as *const (), own == 0);
                    if !room {
                        // A sibling's connection may go idle without waking this pool.
                        wake = wake.min(Instant::now() + EVICT_POLL);
                    }
                }
                let open = !pending && room;
                let down = host.is_down(now);
                if open && down && !all_down && !tried(&failed, i) {
                    wake = wake.min(host.down_until.get().unwrap_or(deadline));
                }
                let may_connect = open && !tried(&failed, i) && (all_down || !down);
                let busy_one = match best {
                    Some((c, busy)) if !(busy && may_connect) => return Ok(c),
                    Some((c, _)) => Some(c), // spreading: open another for this request
                    None if may_connect => None,
                    None => continue,
                };
                // Boxed: the connect future is large and rare; keeping it out of line keeps
                // every connection task small.
                let res = Box::pin(self.connect(ep, deadline)).await;
                match res {
                    Ok(c) => return Ok(c),
                    // The connection that was busy may have filled or died meanwhile.
                    Err(_) if busy_one.as_ref().is_some_and(|c| c.has_capacity()) => return Ok(busy_one.unwrap()),
                    Err(e) => {
                        if failed.is_empty() {
                            failed.resize(n, false);
                        }
                        failed[i] = true;
                        last_error = Some(e);
                        let gave_up = failed.iter().all(|&f| f)
                            && self.endpoints.iter().all(|ep| ep.conns.borrow().iter().all(|c| c.is_dead()));
                        if gave_up || Instant::now() >= deadline {
                            break 'scan;
                        }
                        // Nothing was sent: the request may go to another endpoint, as a
                        // retry within `retries` and the cluster's retry budget.
                        if retries >= self.cluster.retries {
                            break 'scan;
                        }
                        if !shared.retry_allowed(self.cluster.retry_budget_percent) {
                            bump(&shared.metrics.retries_over_budget);
                            break 'scan;
                        }
                        if retries == 0 {
                            retrying = Some(Counted::enter(&shared.retries));
                        }
                        retries += 1;
                        bump(&shared.metrics.retries);
                        continue 'scan;
                    }
                }
            }
            let wait = self.capacity.notified();
            if monoio::time::timeout_at(wake.into(), wait).await.is_err() && Instant::now() >= deadline {
                break 'scan;
            }
        }
        drop(retrying);
        Err(last_error.unwrap_or_else(|| ErrorKind::Saturated.into()))
    }

    /// A retry of a request that reached no upstream (the caller's own, such as a refused
    /// gRPC stream) may start now: within the cluster's retry budget (counted either way).
    /// The guard counts it as under way until dropped.
    pub fn begin_retry(&self) -> Option<RetryGuard> {
        let shared = &self.set.shared;
        if !shared.retry_allowed(self.cluster.retry_budget_percent) {
            bump(&shared.metrics.retries_over_budget);
            return None;
        }
        bump(&shared.metrics.retries);
        Some(RetryGuard::new(shared.clone()))
    }

    /// Times a request may be retried (`retries`).
    pub fn retries(&self) -> u32 {
        self.cluster.retries
    }

    /// Opens a connection to `ep`, giving up at `connect_timeout` or the request's deadline,
    /// whichever is first. A failure marks the endpoint down for `connect_failure_backoff`
    /// and counts towards its ejection (not a timeout cut short by the deadline).
    async fn connect(&self, ep: &Endpoint<C>, deadline: Instant) -> Result<Rc<C>, RequestError> {
        let host = &ep.host;
        let limit = self.cluster.connect_timeout.min(deadline.saturating_duration_since(Instant::now()));
        ep.connecting.set(ep.connecting.get() + 1);
        host.conns.set(host.conns.get() + 1);
        let res = monoio::time::timeout(limit, self.open(host)).await;
        ep.connecting.set(ep.connecting.get() - 1);
        let err = |cause: ConnectCause, endpoints_fault: bool| -> RequestError {
            host.conns.set(host.conns.get().saturating_sub(1));
            self.stats.connect_failures.set(self.stats.connect_failures.get() + 1);
            bump(&host.metrics.connect_failures);
            self.capacity.notify_all();
            if endpoints_fault {
                host.down_until.set(Some(Instant::now() + self.cluster.connect_failure_backoff));
                host.failure("connect failed");
            }
            ErrorKind::ConnectFailed { endpoint: host.label.clone(), cause }.into()
        };
        match res {
            Ok(Ok(conn)) => {
                host.down_until.set(None);
                // A pool replaced by a reload, or an endpoint a DNS answer removed (this pool
                // outlived its rebase for a waiter): the connection serves this request only.
                if self.retired.get() || host.is_removed() {
                    conn.mark_retired();
                }
                self.stats.upstream_connections.set(self.stats.upstream_connections.get() + 1);
                bump(&host.metrics.opened);
                conn.joined(self.me.clone());
                ep.conns.borrow_mut().push(conn.clone());
                // Callers that queued while this connect was in flight may use it too.
                self.capacity.notify_all();
                Ok(conn)
            }
            Ok(Err(e)) => Err(err(ConnectCause::Io(Rc::new(e)), true)),
            // Cut short by the request's own deadline: not the endpoint's fault.
            Err(_) => Err(err(ConnectCause::TimedOut(limit), limit == self.cluster.connect_timeout)),
        }
    }

    async fn open(&self, host: &Rc<Host>) -> std::io::Result<Rc<C>> {
        let (cap, stats) = (self.capacity.clone(), self.stats.clone());
        Ok(match &host.addr {
            Address::Tcp(a) => {
                let s = TcpStream::connect_addr(*a).await?;
                s.set_nodelay(true)?;
                C::start(s, host.clone(), &self.cluster, cap, stats)
            }
            Address::Unix(p) => C::start(UnixStream::connect(p).await?, host.clone(), &self.cluster, cap, stats),
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
        self.endpoints.iter().map(|ep| ep.conns.borrow().iter().map(|c| c.queued_bytes()).sum::<usize>()).sum()
    }
}

impl<C: Member> Evict for Pool<C> {
    fn evict_idle(&self, host: &Host, busy: bool) -> bool {
        let Some(ep) = self.endpoints.iter().find(|e| std::ptr::eq(&*e.host, host)) else {
            return false;
        };
        if ep.reap() > 0 {
            return true;
        }
        let conns = ep.conns.borrow();
        let mut live = conns.iter().filter(|c| c.has_capacity());
        let victim = if busy {
            live.min_by_key(|c| c.load()).cloned()
        } else {
            live.find(|c| c.load() == 0 && c.queued_bytes() == 0).cloned()
        };
        drop(conns);
        match victim {
            Some(c) => {
                c.retire();
                ep.reap() > 0
            }
            None => false,
        }
    }
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
    fn rebase(&self, set: &Rc<HostSet>) -> Rc<dyn PoolOps> {
        let endpoints: Vec<Rc<Endpoint<C>>> = set
            .hosts
            .iter()
            .map(|h| match self.endpoints.iter().find(|e| Rc::ptr_eq(&e.host, h)) {
                Some(e) => e.clone(),
                None => {
                    Rc::new(Endpoint { host: h.clone(), conns: RefCell::new(Vec::new()), connecting: Cell::new(0) })
                }
            })
            .collect();
        for old in &self.endpoints {
            if !endpoints.iter().any(|e| Rc::ptr_eq(e, old)) {
                for c in old.conns.borrow().iter() {
                    c.retire();
                }
            }
        }
        let pool = Rc::new_cyclic(|me| Pool {
            cluster: self.cluster.clone(),
            set: set.clone(),
            endpoints,
            capacity: self.capacity.clone(),
            stats: self.stats.clone(),
            retired: Cell::new(false),
            me: me.clone(),
        });
        let weak: std::rc::Weak<dyn Evict> = Rc::downgrade(&(pool.clone() as Rc<dyn Evict>));
        set.shared.add_pool(weak);
        pool
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connection that only has a load and a yes/no for room.
    struct Fake<const SPREAD: bool> {
        load: usize,
        room: bool,
    }

    impl<const S: bool> Member for Fake<S> {
        const SPREAD: bool = S;
        fn start<T>(_: T, _: Rc<Host>, _: &ClusterConfig, _: Rc<Notify>, _: Rc<Stats>) -> Rc<Self>
        where
            T: Splitable + 'static,
            T::OwnedRead: CancelableAsyncReadRent + 'static,
            T::OwnedWrite: CancelableAsyncWriteRent + 'static,
        {
            unreachable!("choose() never connects")
        }
        fn load(&self) -> usize {
            self.load
        }
        fn is_dead(&self) -> bool {
            false
        }
        fn has_capacity(&self) -> bool {
            self.room
        }
        fn retire(&self) {}
        fn mark_retired(&self) {}
        fn queued_bytes(&self) -> usize {
            0
        }
    }

    fn conns<const S: bool>(v: &[(usize, bool)]) -> Vec<Rc<Fake<S>>> {
        v.iter().map(|&(load, room)| Rc::new(Fake { load, room })).collect()
    }

    fn pick<const S: bool>(v: &[(usize, bool)], key: usize) -> (Option<usize>, bool) {
        let cs = conns::<S>(v);
        let (c, busy) = Pool::<Fake<S>>::choose(&cs, key);
        (c.map(|c| cs.iter().position(|x| Rc::ptr_eq(x, &c)).unwrap()), busy)
    }

    #[test]
    fn spreading_pools_keep_a_key_on_its_connection_while_it_has_room() {
        assert_eq!(pick::<true>(&[(3, true), (0, true), (5, true)], 2), (Some(2), false));
        assert_eq!(pick::<true>(&[(3, true), (0, true), (5, true)], 5), (Some(2), false), "key wraps");
        // Its own connection is full: the least-loaded one with room.
        assert_eq!(pick::<true>(&[(3, true), (1, true), (5, false)], 2), (Some(1), true));
        // Every connection with room is busy: the caller may open another.
        assert_eq!(pick::<true>(&[(3, true), (4, false)], 0), (Some(0), true));
        assert_eq!(pick::<true>(&[(3, false), (4, false)], 0), (None, false));
        assert_eq!(pick::<true>(&[], 7), (None, false));
    }

    #[test]
    fn a_key_leaves_its_connection_once_it_carries_far_more_than_the_least_loaded() {
        // One client with many streams must still spread over the connections.
        assert_eq!(pick::<true>(&[(20, true), (5, true)], 0), (Some(0), true), "within the slack");
        assert_eq!(pick::<true>(&[(40, true), (0, true), (10, true)], 0), (Some(1), false));
        assert_eq!(pick::<true>(&[(17, true), (0, true)], 2), (Some(1), false), "17 > 2 * 0 + 16");
        assert_eq!(pick::<true>(&[(100, true), (60, true)], 0), (Some(0), true), "jitter keeps affinity");
        assert_eq!(pick::<true>(&[(137, true), (60, true)], 0), (Some(1), true), "137 > 2 * 60 + 16");
    }

    #[test]
    fn filling_pools_take_the_first_connection_with_room() {
        assert_eq!(pick::<false>(&[(9, false), (7, true), (0, true)], 2), (Some(1), false));
        assert_eq!(pick::<false>(&[(9, false)], 0), (None, false));
    }
}
