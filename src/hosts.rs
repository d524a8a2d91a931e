//! The endpoints of one cluster as one worker sees them, shared by every pool of the cluster
//! (one per protocol and Thrift dialect): whether each is healthy (active checks, decided
//! by the health owner and handed to every worker) or ejected (passive outlier detection,
//! from this worker's own traffic), how many connections and requests each carries, and
//! which one takes the next request (`lb`).
//!
//! A pool keeps its own connections per endpoint; what must hold across pools lives here: the
//! per-endpoint connection limit, requests in flight (least request, `max_requests`) and the
//! retry budget.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::time::Instant;

use crate::config::{Address, ClusterConfig, LbPolicy, OutlierDetection};
use crate::metrics::{bump, now_us, ClusterMetrics, EndpointMetrics};

/// Points per endpoint on the hash ring: with 100, adding a fifth endpoint moves 20 % ± a few
/// of the keys.
const RING_POINTS: usize = 100;
/// Retries allowed in flight whatever the budget says (Envoy's `min_retry_concurrency`).
const MIN_RETRY_CONCURRENCY: usize = 3;

/// What a pool can be asked about its connections to one endpoint by a sibling pool that
/// needs a connection slot.
pub trait Evict {
    /// Forgets dead connections to `host` and closes one idle one; whether a slot came free.
    /// With `busy`, a pool with no idle one retires its least-loaded connection instead (it
    /// closes once its requests finish).
    fn evict_idle(&self, host: &Host, busy: bool) -> bool;
}

/// What the cluster's endpoints share in one worker, kept across endpoint changes (DNS).
pub struct Shared {
    pub outlier: OutlierDetection,
    /// `connect_failure_backoff`: also how long new connections avoid an endpoint that just
    /// dropped one with requests in flight.
    backoff: std::time::Duration,
    pub cluster: Rc<str>,
    /// Endpoints in the current set (for `max_ejection_percent`).
    size: Cell<usize>,
    /// Endpoints ejected now.
    ejected: Cell<usize>,
    /// Endpoints unhealthy or ejected now: zero lets a pick skip every check.
    unavailable: Cell<usize>,
    /// Requests in flight on the cluster's connections (`max_requests`).
    pub inflight: Cell<usize>,
    /// Requests waiting for a connection or a stream slot (`max_pending_requests`).
    pub pending: Cell<usize>,
    /// Retries under way (the retry budget).
    pub retries: Cell<usize>,
    /// The last pick found no endpoint available and used all of them.
    fail_open: Cell<bool>,
    pub metrics: Rc<ClusterMetrics>,
    /// The cluster's pools, asked to give up an idle connection when a sibling needs a slot.
    pools: RefCell<Vec<Weak<dyn Evict>>>,
}

impl Shared {
    pub fn new(cluster: &ClusterConfig, metrics: Rc<ClusterMetrics>) -> Rc<Shared> {
        Rc::new(Shared {
            outlier: cluster.outlier.clone(),
            backoff: cluster.connect_failure_backoff,
            cluster: cluster.name.as_str().into(),
            size: Cell::new(0),
            ejected: Cell::new(0),
            unavailable: Cell::new(0),
            inflight: Cell::new(0),
            pending: Cell::new(0),
            retries: Cell::new(0),
            fail_open: Cell::new(false),
            metrics,
            pools: RefCell::new(Vec::new()),
        })
    }

    pub fn add_pool(&self, pool: Weak<dyn Evict>) {
        let mut pools = self.pools.borrow_mut();
        pools.retain(|p| p.strong_count() > 0);
        pools.push(pool);
    }

    /// Asks every pool but `except` to free a connection slot of `host`: an idle connection
    /// closes at once. A pool with no connection to `host` at all (`starved`) gets one of a
    /// busy sibling retired, once, so it is not starved by a sibling that is never idle.
    pub fn evict_idle(&self, host: &Host, except: *const (), starved: bool) -> bool {
        let pools: Vec<Rc<dyn Evict>> = self.pools.borrow().iter().filter_map(|p| p.upgrade()).collect();
        let others = || pools.iter().filter(|p| Rc::as_ptr(p) as *const () != except);
        if others().any(|p| p.evict_idle(host, false)) {
            host.evicting.set(false);
            return true;
        }
        if starved && !host.evicting.get() && others().any(|p| p.evict_idle(host, true)) {
            host.evicting.set(true);
        }
        false
    }

    /// A retry may start: the retries under way stay within `percent` of the requests in
    /// flight (at least `MIN_RETRY_CONCURRENCY`).
    pub fn retry_allowed(&self, percent: u32) -> bool {
        let budget = (self.inflight.get() + self.pending.get()) * percent as usize / 100;
        self.retries.get() < budget.max(MIN_RETRY_CONCURRENCY)
    }

    pub fn fail_open(&self) -> bool {
        self.fail_open.get()
    }

    /// Fail open while every endpoint is unhealthy or ejected; logged when it starts and ends.
    fn update_fail_open(&self) {
        let all = self.size.get() > 0 && self.unavailable.get() >= self.size.get();
        if self.fail_open.replace(all) == all {
            return;
        }
        if all {
            log::warn!(
                "cluster {}: every endpoint is unhealthy or ejected; sending to all of them (fail open)",
                self.cluster
            );
        } else {
            log::info!("cluster {}: an endpoint is available again; fail-open mode over", self.cluster);
        }
    }

    pub fn ejected(&self) -> usize {
        self.ejected.get()
    }
}

/// A retry under way, counted against the cluster's retry budget until dropped.
pub struct RetryGuard(Rc<Shared>);

impl RetryGuard {
    pub fn new(shared: Rc<Shared>) -> RetryGuard {
        shared.retries.set(shared.retries.get() + 1);
        RetryGuard(shared)
    }
}

impl Drop for RetryGuard {
    fn drop(&mut self) {
        self.0.retries.set(self.0.retries.get().saturating_sub(1));
    }
}

/// One endpoint of the cluster in this worker.
pub struct Host {
    pub addr: Address,
    pub label: Rc<str>,
    pub metrics: Rc<EndpointMetrics>,
    pub shared: Rc<Shared>,
    /// Connections open or being opened to it, in every pool of the cluster.
    pub conns: Cell<usize>,
    /// Requests in flight on it, every pool.
    pub inflight: Cell<usize>,
    /// A busy connection was retired to give a starved pool its slot; not again until a
    /// slot came free.
    pub evicting: Cell<bool>,
    /// Set by a failed connect: no new connections before this instant.
    pub down_until: Cell<Option<Instant>>,
    /// The active health check's verdict (true until a check says otherwise).
    healthy: Cell<bool>,
    /// Ejected until this `now_us` (0: not ejected).
    ejected_until: Cell<u64>,
    /// When the last ejection ended (`now_us`), to forget old ejections.
    returned_at: Cell<u64>,
    times_ejected: Cell<u32>,
    /// Failures in a row (connect failures, connections lost with requests, timeouts,
    /// gRPC UNAVAILABLE) since the last success.
    failures: Cell<u32>,
    /// A DNS answer took it out of the cluster: its last connections finish, and what they
    /// see no longer counts (the cluster's counters are about its current endpoints).
    removed: Cell<bool>,
    /// Its share of requests against the others' (a registry's instance weight; 10, Kitex's
    /// default, for endpoints from the file or DNS).
    pub weight: Cell<u32>,
    /// Smooth weighted round robin's running score.
    current: Cell<i64>,
}

/// The weight of an endpoint nothing gave one (Kitex's default).
pub const DEFAULT_WEIGHT: u32 = 10;

impl Host {
    /// A host of `shared`'s cluster; its set (`HostSet::new`) counts it.
    pub fn new(addr: Address, metrics: Rc<EndpointMetrics>, shared: Rc<Shared>, healthy: bool) -> Host {
        Host {
            label: addr.to_string().into(),
            addr,
            metrics,
            shared,
            conns: Cell::new(0),
            inflight: Cell::new(0),
            evicting: Cell::new(false),
            down_until: Cell::new(None),
            healthy: Cell::new(healthy),
            ejected_until: Cell::new(0),
            returned_at: Cell::new(0),
            times_ejected: Cell::new(0),
            failures: Cell::new(0),
            removed: Cell::new(false),
            weight: Cell::new(DEFAULT_WEIGHT),
            current: Cell::new(0),
        }
    }

    /// A request was put on a connection to this endpoint.
    #[inline]
    pub fn request_started(&self) {
        self.inflight.set(self.inflight.get() + 1);
        self.shared.inflight.set(self.shared.inflight.get() + 1);
    }

    /// `n` requests on a connection to this endpoint ended (answered, failed or timed out).
    #[inline]
    pub fn requests_ended(&self, n: usize) {
        self.inflight.set(self.inflight.get().saturating_sub(n));
        self.shared.inflight.set(self.shared.inflight.get().saturating_sub(n));
    }

    /// The endpoint answered: its failure streak ends.
    #[inline]
    pub fn success(&self) {
        if self.failures.get() != 0 {
            self.failures.set(0);
        }
    }

    /// A connection to it was lost with requests in flight: a failure for outlier detection,
    /// and no new connection for `connect_failure_backoff` (unless every endpoint is down). A
    /// process that is going down still completes connects from its listen backlog for a
    /// moment; reconnecting at once sent a second batch of requests to a dying backend.
    pub fn lost_with_requests(&self) {
        self.down_until.set(Some(Instant::now() + self.shared.backoff));
        self.failure("connection lost with requests in flight");
    }

    /// A failure outlier detection counts; ejects the endpoint at the threshold when the
    /// cluster may lose one more.
    pub fn failure(&self, what: &str) {
        let od = &self.shared.outlier;
        if self.removed.get() {
            return;
        }
        let n = self.failures.get() + 1;
        self.failures.set(n);
        if od.consecutive_failures == 0 || n < od.consecutive_failures {
            return;
        }
        let now = now_us();
        if self.is_ejected(now) {
            return;
        }
        self.failures.set(0);
        let (ejected, size) = (self.shared.ejected.get(), self.shared.size.get());
        if ejected >= od.max_ejected(size) {
            log::warn!(
                "cluster {} endpoint {}: {n} failures in a row (last: {what}), not ejected: {ejected} of {size} endpoints already are (max_ejection_percent {})",
                self.shared.cluster,
                self.label,
                od.max_ejection_percent
            );
            return;
        }
        // An endpoint that behaved for a while after its last ejection starts over.
        if now.saturating_sub(self.returned_at.get()) > od.max_ejection_time.as_micros() as u64 {
            self.times_ejected.set(0);
        }
        let times = self.times_ejected.get() + 1;
        self.times_ejected.set(times);
        let ms = (od.base_ejection_time * times).min(od.max_ejection_time);
        self.change(|| self.ejected_until.set(now + ms.as_micros() as u64));
        self.shared.ejected.set(ejected + 1);
        bump(&self.metrics.ejections);
        log::warn!(
            "cluster {} endpoint {}: ejected for {ms:?} after {n} failures in a row (last: {what}); new requests go to the other endpoints",
            self.shared.cluster,
            self.label
        );
    }

    /// Ejected now; an ejection that ran out ends here.
    fn is_ejected(&self, now: u64) -> bool {
        let until = self.ejected_until.get();
        if until == 0 {
            return false;
        }
        if now < until {
            return true;
        }
        self.returned_at.set(now);
        self.change(|| self.ejected_until.set(0));
        if self.removed.get() {
            return false;
        }
        self.shared.ejected.set(self.shared.ejected.get().saturating_sub(1));
        log::info!("cluster {} endpoint {}: ejection over; taking requests again", self.shared.cluster, self.label);
        false
    }

    pub fn ejected_now(&self) -> bool {
        self.is_ejected(now_us())
    }

    pub fn healthy(&self) -> bool {
        self.healthy.get()
    }

    /// The health owner's verdict.
    pub fn set_healthy(&self, healthy: bool) {
        self.change(|| self.healthy.set(healthy));
    }

    /// Takes new requests: healthy and not ejected.
    fn available(&self, now: u64) -> bool {
        self.healthy.get() && !self.is_ejected(now)
    }

    /// Healthy and not marked ejected (an ejection that ran out still counts until a look
    /// ends it).
    fn marked_available(&self) -> bool {
        self.healthy.get() && self.ejected_until.get() == 0
    }

    /// Applies a change of health or ejection, keeping the cluster's count of unavailable
    /// endpoints (one per endpoint, whatever the reasons) and its fail-open state.
    fn change(&self, f: impl FnOnce()) {
        let before = self.marked_available();
        f();
        let after = self.marked_available();
        if before == after || self.removed.get() {
            return;
        }
        let u = &self.shared.unavailable;
        u.set(if after { u.get().saturating_sub(1) } else { u.get() + 1 });
        self.shared.update_fail_open();
    }

    /// A DNS answer took it out of the cluster.
    pub fn is_removed(&self) -> bool {
        self.removed.get()
    }

    pub fn is_down(&self, now: Instant) -> bool {
        self.down_until.get().is_some_and(|t| now < t)
    }
}

/// A cluster's endpoints in one worker and the policy that picks among them.
pub struct HostSet {
    pub hosts: Vec<Rc<Host>>,
    pub shared: Rc<Shared>,
    policy: LbPolicy,
    /// Round robin's next turn.
    next: Cell<usize>,
    /// xorshift state for the two choices.
    rng: Cell<u64>,
    /// Hash ring: (point, endpoint index), sorted by point.
    ring: Vec<(u64, u32)>,
    /// Endpoints differ in weight: the weighted forms of round robin and least request,
    /// over `cumulative` (each endpoint's weight added to the ones before it).
    weighted: bool,
    cumulative: Vec<u64>,
}

impl HostSet {
    pub fn new(policy: LbPolicy, hosts: Vec<Rc<Host>>, shared: Rc<Shared>, seed: u64) -> HostSet {
        for h in &hosts {
            h.removed.set(false);
        }
        shared.size.set(hosts.len());
        let now = now_us();
        // Ends ejections that ran out, then counts each endpoint once.
        shared.ejected.set(hosts.iter().filter(|h| h.is_ejected(now)).count());
        shared.unavailable.set(hosts.iter().filter(|h| !h.marked_available()).count());
        shared.update_fail_open();
        let ring = if matches!(policy, LbPolicy::Hash(_)) { ring(&hosts) } else { Vec::new() };
        let weighted = hosts.windows(2).any(|w| w[0].weight.get() != w[1].weight.get());
        let mut sum = 0u64;
        let cumulative = hosts
            .iter()
            .map(|h| {
                h.current.set(0);
                sum += u64::from(h.weight.get().max(1));
                sum
            })
            .collect();
        HostSet { hosts, shared, policy, next: Cell::new(0), rng: Cell::new(seed | 1), ring, weighted, cumulative }
    }

    /// The endpoints of `self` that `next` does not keep are out of the cluster.
    pub fn mark_removed(&self, next: &HostSet) {
        for h in &self.hosts {
            if !next.hosts.iter().any(|n| Rc::ptr_eq(n, h)) {
                h.removed.set(true);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    fn random(&self) -> u64 {
        let mut x = self.rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.set(x);
        x
    }

    /// The endpoint for the next request (`hash`: its key's hash under `lb = "hash"`). Skips
    /// unhealthy and ejected endpoints; when none is left, uses them all (fail open).
    #[inline]
    pub fn pick(&self, hash: u64) -> usize {
        let n = self.hosts.len();
        if n == 1 {
            return 0;
        }
        if self.shared.unavailable.get() == 0 {
            return self.pick_among(hash, |_| true);
        }
        let now = now_us();
        // Ends ejections that ran out (which may end fail-open mode).
        for h in &self.hosts {
            h.is_ejected(now);
        }
        if self.shared.fail_open.get() {
            return self.pick_among(hash, |_| true);
        }
        self.pick_among(hash, |h| h.available(now))
    }

    /// The request that was given endpoint `i` picks again (round robin: the same turn).
    pub fn rewind(&self, i: usize) {
        if self.policy != LbPolicy::RoundRobin {
            return;
        }
        if !self.weighted {
            return self.next.set(i);
        }
        // Smooth weighted round robin: every usable endpoint gained its weight and `i` paid
        // the total back; undone, so the next pick picks `i` again (without it, an endpoint
        // with no connection yet was picked here, passed over by the slow path's own pick,
        // and never got one).
        let mut total = 0i64;
        for (j, h) in self.hosts.iter().enumerate() {
            if self.usable(j) {
                let w = i64::from(h.weight.get().max(1));
                h.current.set(h.current.get() - w);
                total += w;
            }
        }
        self.hosts[i].current.set(self.hosts[i].current.get() + total);
    }

    /// Whether the endpoint takes new requests now (a pool skips the others while it scans).
    pub fn usable(&self, i: usize) -> bool {
        self.shared.unavailable.get() == 0 || self.shared.fail_open.get() || self.hosts[i].available(now_us())
    }

    /// An endpoint drawn with probability proportional to its weight.
    fn draw(&self, r: u32) -> usize {
        let total = *self.cumulative.last().unwrap_or(&1);
        let t = u64::from(r) % total;
        self.cumulative.partition_point(|&c| c <= t).min(self.hosts.len() - 1)
    }

    fn pick_among(&self, hash: u64, ok: impl Fn(&Host) -> bool) -> usize {
        let n = self.hosts.len();
        match self.policy {
            // Smooth weighted round robin (nginx's): every endpoint gains its weight, the
            // highest score is picked and pays back the total.
            LbPolicy::RoundRobin if self.weighted => {
                let (mut best, mut total) = (None::<(usize, i64)>, 0i64);
                for (i, h) in self.hosts.iter().enumerate().filter(|(_, h)| ok(h)) {
                    let w = i64::from(h.weight.get().max(1));
                    let c = h.current.get() + w;
                    h.current.set(c);
                    total += w;
                    if best.is_none_or(|(_, bc)| c > bc) {
                        best = Some((i, c));
                    }
                }
                match best {
                    Some((i, c)) => {
                        self.hosts[i].current.set(c - total);
                        i
                    }
                    None => self.next.get() % n,
                }
            }
            // Two choices drawn by weight; the second only when it carries fewer requests per
            // unit of weight, so idle endpoints share in proportion to their weights and busy
            // ones by their load.
            LbPolicy::LeastRequest if self.weighted => {
                let r = self.random();
                let (a, b) = (self.draw(r as u32), self.draw((r >> 32) as u32));
                let (ha, hb) = (&self.hosts[a], &self.hosts[b]);
                // requests / weight, compared without dividing.
                let a_load = ha.inflight.get() as u64 * u64::from(hb.weight.get().max(1));
                let b_load = hb.inflight.get() as u64 * u64::from(ha.weight.get().max(1));
                match (ok(ha), ok(hb)) {
                    (true, true) if b_load < a_load => b,
                    (true, _) => a,
                    (false, true) => b,
                    (false, false) => (1..n).map(|k| (a + k) % n).find(|&i| ok(&self.hosts[i])).unwrap_or(a),
                }
            }
            LbPolicy::RoundRobin => {
                let start = self.next.get();
                let i = (0..n).map(|k| (start + k) % n).find(|&i| ok(&self.hosts[i])).unwrap_or(start % n);
                self.next.set((i + 1) % n);
                i
            }
            LbPolicy::LeastRequest => {
                let r = self.random();
                let a = (r % n as u64) as usize;
                let b = (a + 1 + ((r >> 32) % (n as u64 - 1)) as usize) % n;
                match (ok(&self.hosts[a]), ok(&self.hosts[b])) {
                    (true, true) if self.hosts[b].inflight.get() < self.hosts[a].inflight.get() => b,
                    (true, _) => a,
                    (false, true) => b,
                    (false, false) => (1..n).map(|k| (a + k) % n).find(|&i| ok(&self.hosts[i])).unwrap_or(a),
                }
            }
            LbPolicy::Hash(_) => {
                let at = self.ring.partition_point(|&(p, _)| p < hash);
                let len = self.ring.len();
                (0..len)
                    .map(|k| self.ring[(at + k) % len].1 as usize)
                    .find(|&i| ok(&self.hosts[i]))
                    .unwrap_or(self.ring[at % len].1 as usize)
            }
        }
    }
}

/// `RING_POINTS` points per endpoint of the default weight (more or fewer in proportion to
/// its weight, 1 to 10 times as many at most), placed by hashing its address: an endpoint's
/// points do not depend on the others, so adding one moves only the keys that land on them.
fn ring(hosts: &[Rc<Host>]) -> Vec<(u64, u32)> {
    let mut ring = Vec::with_capacity(hosts.len() * RING_POINTS);
    for (i, h) in hosts.iter().enumerate() {
        let points = (RING_POINTS * h.weight.get() as usize / DEFAULT_WEIGHT as usize).clamp(1, RING_POINTS * 10);
        for k in 0..points {
            ring.push((hash_bytes(format!("{}#{k}", h.label).as_bytes()), i as u32));
        }
    }
    ring.sort_unstable();
    ring
}

/// FNV-1a, finished with a mixer so nearby inputs spread over the ring.
pub fn hash_bytes(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &x in b {
        h ^= u64::from(x);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HashKey;

    fn set(policy: LbPolicy, n: usize, od: OutlierDetection) -> HostSet {
        let mut cluster = crate::config::Config::parse(
            "[[listener]]\naddress=\"127.0.0.1:0\"\nprotocol=\"thrift\"\nroutes=[{cluster=\"c\"}]\n[[cluster]]\nname=\"c\"\nendpoints=[\"127.0.0.1:1\"]\n",
        )
        .unwrap()
        .clusters
        .remove(0);
        cluster.outlier = od;
        let shared = Shared::new(&cluster, Rc::default());
        let hosts = (0..n)
            .map(|i| {
                let addr = Address::Tcp(format!("127.0.0.{}:{}", 1 + i / 1000, 1000 + i % 1000).parse().unwrap());
                Rc::new(Host::new(addr, Rc::default(), shared.clone(), true))
            })
            .collect();
        HostSet::new(policy, hosts, shared, 42)
    }

    fn weighted(policy: LbPolicy, weights: &[u32]) -> HostSet {
        let s = set(policy.clone(), weights.len(), OutlierDetection::default());
        for (h, w) in s.hosts.iter().zip(weights) {
            h.weight.set(*w);
        }
        HostSet::new(policy, s.hosts.clone(), s.shared.clone(), 7)
    }

    #[test]
    fn weights_share_requests_in_proportion() {
        // Smooth weighted round robin: exact shares, interleaved.
        let s = weighted(LbPolicy::RoundRobin, &[10, 30]);
        let picks: Vec<usize> = (0..8).map(|_| s.pick(0)).collect();
        assert_eq!(picks.iter().filter(|&&i| i == 1).count(), 6, "{picks:?}");
        assert_ne!(picks[..4], [1, 1, 1, 0], "interleaved, not in runs: {picks:?}");
        s.hosts[1].set_healthy(false);
        assert!((0..4).all(|_| s.pick(0) == 0), "an unhealthy endpoint is skipped whatever its weight");
        // A pick the slow path takes again (`rewind`) picks the same endpoint again.
        let s = weighted(LbPolicy::RoundRobin, &[10, 30]);
        for _ in 0..8 {
            let i = s.pick(0);
            s.rewind(i);
            assert_eq!(s.pick(0), i);
        }
        // Least request with nothing in flight: drawn by weight.
        let s = weighted(LbPolicy::LeastRequest, &[10, 90]);
        let heavy = (0..10_000).filter(|_| s.pick(0) == 1).count();
        assert!((8_500..9_800).contains(&heavy), "{heavy} of 10,000 to the weight-90 endpoint");
        // ...and requests in flight count per unit of weight: 9 on the heavy one is its
        // share, so the light one (1 in flight) is not preferred over it.
        s.hosts[1].inflight.set(9);
        s.hosts[0].inflight.set(1);
        let heavy = (0..10_000).filter(|_| s.pick(0) == 1).count();
        assert!(heavy > 5_000, "{heavy}");
        // The hash ring gives points in proportion.
        let s = weighted(LbPolicy::Hash(HashKey::Method), &[10, 30]);
        let heavy = (0..20_000u64).filter(|k| s.pick(hash_bytes(&k.to_be_bytes())) == 1).count();
        assert!((13_000..17_000).contains(&heavy), "{heavy} of 20,000 keys on the weight-30 endpoint");
        // Equal weights: the unweighted picks (and their tests above) are unchanged.
        assert!(!weighted(LbPolicy::RoundRobin, &[10, 10]).weighted);
    }

    #[test]
    fn round_robin_takes_turns_and_skips_unhealthy_endpoints() {
        let s = set(LbPolicy::RoundRobin, 3, OutlierDetection::default());
        assert_eq!((0..6).map(|_| s.pick(0)).collect::<Vec<_>>(), [0, 1, 2, 0, 1, 2]);
        s.hosts[1].set_healthy(false);
        assert_eq!((0..4).map(|_| s.pick(0)).collect::<Vec<_>>(), [0, 2, 0, 2]);
        assert!(!s.shared.fail_open());
    }

    #[test]
    fn with_every_endpoint_unhealthy_a_cluster_fails_open() {
        let s = set(LbPolicy::RoundRobin, 2, OutlierDetection::default());
        s.hosts[0].set_healthy(false);
        s.hosts[1].set_healthy(false);
        assert_eq!((0..4).map(|_| s.pick(0)).collect::<Vec<_>>(), [0, 1, 0, 1]);
        assert!(s.shared.fail_open());
        s.hosts[1].set_healthy(true);
        assert_eq!(s.pick(0), 1);
        assert!(!s.shared.fail_open());
    }

    #[test]
    fn least_request_prefers_the_endpoint_with_fewer_requests_in_flight() {
        let s = set(LbPolicy::LeastRequest, 2, OutlierDetection::default());
        for _ in 0..10 {
            s.hosts[0].request_started();
        }
        assert!((0..100).all(|_| s.pick(0) == 1), "two choices of two always see both");
        let s = set(LbPolicy::LeastRequest, 4, OutlierDetection::default());
        for _ in 0..10 {
            s.hosts[2].request_started();
        }
        let to_busy = (0..1000).filter(|_| s.pick(0) == 2).count();
        assert_eq!(to_busy, 0, "the busy one loses every comparison it is in");
        assert_eq!(s.shared.inflight.get(), 10);
    }

    #[test]
    fn consecutive_failures_eject_at_most_max_ejection_percent() {
        let od = OutlierDetection { consecutive_failures: 3, ..OutlierDetection::default() };
        let s = set(LbPolicy::RoundRobin, 2, od);
        s.hosts[0].failure("timeout");
        s.hosts[0].failure("timeout");
        s.hosts[0].success();
        s.hosts[0].failure("timeout");
        s.hosts[0].failure("timeout");
        assert!(!s.hosts[0].ejected_now(), "a success breaks the streak");
        s.hosts[0].failure("timeout");
        assert!(s.hosts[0].ejected_now());
        assert_eq!(s.hosts[0].metrics.ejections.get(), 1);
        assert!((0..4).all(|_| s.pick(0) == 1));
        // 50 % of two: the second one is never ejected as well.
        for _ in 0..6 {
            s.hosts[1].failure("connect failed");
        }
        assert!(!s.hosts[1].ejected_now());
        assert_eq!(s.shared.ejected(), 1);
    }

    #[test]
    fn an_ejection_ends_after_its_time_and_grows_with_each_ejection() {
        let od = OutlierDetection {
            consecutive_failures: 1,
            base_ejection_time: std::time::Duration::from_millis(30),
            max_ejection_time: std::time::Duration::from_millis(50),
            ..OutlierDetection::default()
        };
        let s = set(LbPolicy::RoundRobin, 2, od);
        s.hosts[0].failure("timeout");
        assert!(s.hosts[0].ejected_now());
        std::thread::sleep(std::time::Duration::from_millis(40));
        assert!(!s.hosts[0].ejected_now(), "30ms ejection is over");
        s.hosts[0].failure("timeout");
        let until = s.hosts[0].ejected_until.get() - now_us();
        assert!(until > 40_000 && until <= 50_000, "second ejection: min(2 x 30ms, 50ms), left {until}us");
    }

    #[test]
    fn an_endpoint_a_dns_answer_removed_no_longer_counts_for_the_cluster() {
        let od = OutlierDetection { consecutive_failures: 1, ..OutlierDetection::default() };
        let s = set(LbPolicy::RoundRobin, 3, od);
        s.hosts[2].failure("timeout");
        assert_eq!((s.shared.ejected(), s.shared.unavailable.get()), (1, 1));
        let next = HostSet::new(LbPolicy::RoundRobin, s.hosts[..2].to_vec(), s.shared.clone(), 1);
        s.mark_removed(&next);
        assert_eq!((next.shared.ejected(), next.shared.unavailable.get()), (0, 0), "counted over the new set");
        s.hosts[2].failure("connection lost with requests in flight");
        s.hosts[2].failure("timeout");
        assert_eq!(next.shared.unavailable.get(), 0, "a removed endpoint's failures do not count");
        next.hosts[0].failure("timeout");
        assert_eq!(next.shared.ejected(), 1, "50 % of the two left: one may go");
        assert!(next.hosts[0].ejected_now());
    }

    #[test]
    fn an_endpoint_unhealthy_and_ejected_counts_once_and_fail_open_ends_with_a_recovery() {
        let od = OutlierDetection {
            consecutive_failures: 1,
            base_ejection_time: std::time::Duration::from_millis(30),
            max_ejection_time: std::time::Duration::from_millis(30),
            max_ejection_percent: 100,
        };
        let s = set(LbPolicy::RoundRobin, 2, od);
        s.hosts[0].set_healthy(false);
        s.hosts[0].failure("timeout");
        assert!(s.hosts[0].ejected_now());
        assert_eq!(s.shared.unavailable.get(), 1, "one endpoint, two reasons");
        s.hosts[1].set_healthy(false);
        assert!(s.shared.fail_open());
        s.hosts[1].set_healthy(true);
        assert!(!s.shared.fail_open(), "over as soon as one is back, before any pick");
        // A new set (a DNS answer) counts the same way.
        let next = HostSet::new(LbPolicy::RoundRobin, s.hosts.clone(), s.shared.clone(), 1);
        assert_eq!(next.shared.unavailable.get(), 1);
        std::thread::sleep(std::time::Duration::from_millis(40));
        assert!(!next.hosts[0].ejected_now(), "the ejection ran out");
        assert_eq!(next.shared.unavailable.get(), 1, "still unhealthy");
        assert!((0..4).all(|_| next.pick(0) == 1));
    }

    #[test]
    fn a_single_unhealthy_endpoint_is_reported_as_failing_open() {
        let s = set(LbPolicy::LeastRequest, 1, OutlierDetection::default());
        s.hosts[0].set_healthy(false);
        assert_eq!(s.pick(0), 0);
        assert!(s.shared.fail_open());
    }

    #[test]
    fn hashing_keeps_a_key_on_one_endpoint_and_moves_about_one_in_n_when_one_is_added() {
        let keys: Vec<u64> = (0..10_000).map(|k| hash_bytes(format!("user-{k}").as_bytes())).collect();
        let four = set(LbPolicy::Hash(HashKey::Method), 4, OutlierDetection::default());
        let five = set(LbPolicy::Hash(HashKey::Method), 5, OutlierDetection::default());
        let before: Vec<usize> = keys.iter().map(|&k| four.pick(k)).collect();
        assert!(keys.iter().zip(&before).all(|(&k, &b)| four.pick(k) == b), "stable");
        let moved = keys.iter().zip(&before).filter(|(&k, &b)| five.pick(k) != b).count();
        assert!(moved > 1200 && moved < 2800, "about 1/5 of 10000 moved: {moved}");
        assert!(keys.iter().zip(&before).all(|(&k, &b)| five.pick(k) == b || five.pick(k) == 4), "only to the new one");
        // An unavailable endpoint's keys go elsewhere; the others stay.
        four.hosts[1].set_healthy(false);
        assert!(keys.iter().zip(&before).all(|(&k, &b)| b == 1 || four.pick(k) == b));
        assert!(keys.iter().all(|&k| four.pick(k) != 1));
    }
}
