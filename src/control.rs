//! The control thread's side: binds listeners, starts pinned workers with the first snapshot,
//! hands them every later snapshot through crossbeam channels (waiting for each worker to
//! acknowledge), and drains them on shutdown. `Server` is what tests and `main` drive.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use atomic_waker::AtomicWaker;
use crossbeam_channel::{Receiver, Sender};

use crate::access_log::{Sink, Writers};
use crate::admin::{Admin, ControlRequest, Status};
use crate::config::{Address, Config, ListenerConfig};
use crate::health::HealthOwner;
use crate::registry::{Latest, Registries};
use crate::resolve::Resolver;
use crate::stats::StatsSnapshot;
use crate::worker::{self, Command, Event, Mailbox, Snapshot, StdListener, WorkerSpec};

/// How long the control thread waits for every worker to take a new snapshot.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

struct WorkerLink {
    mailbox: Mailbox,
    thread: Option<JoinHandle<()>>,
}

impl WorkerLink {
    fn send(&self, cmd: Command) {
        self.mailbox.send(cmd);
    }
}

/// A running proxy: its workers and the addresses its listeners are bound to.
pub struct Server {
    workers: Vec<WorkerLink>,
    events: Receiver<Event>,
    bound: Vec<(String, Address)>,
    /// The snapshot in force; reloads and registry changes replace it, one at a time.
    publisher: Arc<Publisher>,
    drivers: Vec<&'static str>,
    /// What the admin endpoint reports (workers up, draining).
    status: Arc<Status>,
    /// The admin endpoint, when `[admin]` is configured; it stops when the server is dropped.
    admin: Option<Admin>,
    /// The access log files' writer threads.
    writers: Writers,
    /// Resolves endpoint names and tells `health` what to check (stopped before `health`).
    resolver: Option<Resolver>,
    /// The active health checks' owner.
    health: Option<HealthOwner>,
    /// The registry watchers (discovered clusters), and the last list of each.
    registries: Option<Registries>,
    latest: Arc<Latest>,
}

/// The snapshot in force and how the next one reaches the workers: shared by reloads (the
/// control thread) and registry changes (the registry threads), one at a time under its lock,
/// so two never take the same generation.
pub struct Publisher {
    inner: std::sync::Mutex<Published>,
    status: Arc<Status>,
}

struct Published {
    current: Arc<Snapshot>,
    mailboxes: Vec<Mailbox>,
}

impl Publisher {
    fn current(&self) -> Arc<Snapshot> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).current.clone()
    }

    /// A reload: `config` becomes the next snapshot, handed to every worker as `Apply` (each
    /// acknowledges it on the events channel). Returns its generation.
    fn reload(&self, config: Config, access_logs: Vec<Option<Sink>>) -> u64 {
        let mut p = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let generation = p.current.generation + 1;
        self.status.set_config(generation, &config);
        p.current = Arc::new(Snapshot { generation, config, access_logs });
        for m in &p.mailboxes {
            m.send(Command::Apply(p.current.clone()));
        }
        generation
    }
}

impl crate::registry::Publish for Publisher {
    /// A registry change: the snapshot in force with `cluster`'s new list, as the next
    /// generation, handed to every worker the way a reload's is (their acknowledgment is the
    /// generation and revision each reports).
    fn discovered(&self, cluster: &str, endpoints: Vec<Address>, weights: Vec<u32>, revision: i64) {
        let mut p = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let cur = p.current.clone();
        let Some(i) = cur.config.clusters.iter().position(|c| c.name == cluster && c.discovery.is_some()) else {
            return;
        };
        let mut config = cur.config.clone();
        let c = &mut config.clusters[i];
        (c.endpoints, c.weights, c.revision) = (endpoints, weights, revision);
        let generation = cur.generation + 1;
        self.status.set_config(generation, &config);
        p.current = Arc::new(Snapshot { generation, config, access_logs: cur.access_logs.clone() });
        for m in &p.mailboxes {
            m.send(Command::Discovered(p.current.clone()));
        }
    }
}

/// Each listener's access log sink (starting a writer for a file not open yet).
fn access_logs(config: &Config, writers: &mut Writers) -> io::Result<Vec<Option<Sink>>> {
    config
        .listeners
        .iter()
        .map(|l| {
            l.access_log
                .as_ref()
                .map(|a| {
                    writers.sink(&a.path, a.max_queued_lines).map_err(|e| {
                        io::Error::other(format!("listener {}: access log {}: {e}", l.name, a.path.display()))
                    })
                })
                .transpose()
        })
        .collect()
}

impl Server {
    /// Binds every listener (one SO_REUSEPORT socket per worker for TCP), starts the workers
    /// and waits until each one runs.
    pub fn start(config: Config) -> io::Result<Server> {
        Server::start_with(config, None)
    }

    /// Like `start`; the admin endpoint's `POST /reload` and `POST /drain` go to `control`.
    pub fn start_with(config: Config, control: Option<Sender<ControlRequest>>) -> io::Result<Server> {
        let n = config.runtime.workers;
        let mut per_worker: Vec<Vec<(String, StdListener)>> = (0..n).map(|_| Vec::new()).collect();
        let mut bound = Vec::new();
        for l in &config.listeners {
            let (addr, socks) = bind_listener(l, n)?;
            log::info!("listener {} ({:?}) bound to {addr} on {n} workers", l.name, l.protocol.kind());
            bound.push((l.name.clone(), addr));
            for (w, s) in socks.into_iter().enumerate() {
                per_worker[w].push((l.name.clone(), s));
            }
        }
        let status = Arc::new(Status::default());
        status.set_started();
        status.workers.store(n, std::sync::atomic::Ordering::Relaxed);
        status.set_config(1, &config);
        // Up before the workers, so `/ready` can say they are not all up yet.
        let admin = config.admin.as_ref().map(|a| Admin::start(a, status.clone(), control)).transpose()?;
        let mut writers = Writers::default();
        let access_logs = access_logs(&config, &mut writers)?;
        status.set_access_logs(writers.sinks());
        let current = Arc::new(Snapshot { generation: 1, config, access_logs });
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let (ev_tx, events) = crossbeam_channel::unbounded();
        let mut workers = Vec::new();
        for (id, listeners) in per_worker.into_iter().enumerate() {
            let (tx, rx) = crossbeam_channel::unbounded();
            let waker = Arc::new(AtomicWaker::new());
            let spec = WorkerSpec {
                id,
                core: (!cores.is_empty()).then(|| cores[id % cores.len()]),
                driver: current.config.runtime.driver,
                listeners,
                snapshot: current.clone(),
                commands: rx,
                waker: waker.clone(),
                events: ev_tx.clone(),
            };
            let thread = worker::spawn(spec)?;
            workers.push(WorkerLink { mailbox: Mailbox::new(tx, waker), thread: Some(thread) });
        }
        let mut server = Server {
            workers,
            events,
            bound,
            publisher: Arc::new(Publisher {
                inner: std::sync::Mutex::new(Published { current, mailboxes: Vec::new() }),
                status: status.clone(),
            }),
            drivers: vec![""; n],
            status,
            admin,
            writers,
            resolver: None,
            health: None,
            registries: None,
            latest: Arc::new(Latest::default()),
        };
        let mut started = 0;
        let mut failure = None;
        while started < n {
            match server.events.recv_timeout(ACK_TIMEOUT) {
                Ok(Event::Started { worker, driver }) => {
                    server.drivers[worker] = driver;
                    server.status.workers_up.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    started += 1;
                }
                Ok(Event::StartFailed { worker, error }) => {
                    failure.get_or_insert(format!("worker {worker}: {error}"));
                    started += 1;
                }
                Ok(_) => {}
                Err(_) => return Err(io::Error::other("workers did not start in time")),
            }
        }
        if let Some(f) = failure {
            server.shutdown();
            return Err(io::Error::other(f));
        }
        let mailboxes: Vec<Mailbox> = server.workers.iter().map(|w| w.mailbox.clone()).collect();
        server.status.set_mailboxes(mailboxes.clone());
        let health = HealthOwner::start(mailboxes.clone())?;
        server.status.set_health(health.verdicts.clone());
        server.publisher.inner.lock().unwrap_or_else(|e| e.into_inner()).mailboxes = mailboxes.clone();
        let config = Arc::new(server.publisher.current().config.clone());
        server.resolver = Some(Resolver::start(config.clone(), mailboxes.clone(), health.sender())?);
        server.health = Some(health);
        server.status.set_registries(server.latest.clone());
        let publish: Arc<dyn crate::registry::Publish> = server.publisher.clone();
        server.registries = Some(Registries::start(&config, publish, server.latest.clone()));
        Ok(server)
    }

    /// Where a listener ended up (the real port when the config said port 0).
    pub fn local_addr(&self, listener: &str) -> Option<SocketAddr> {
        self.bound.iter().find(|(n, _)| n == listener).and_then(|(_, a)| match a {
            Address::Tcp(a) => Some(*a),
            Address::Unix(_) => None,
        })
    }

    /// Where the admin endpoint listens (TCP), when one is configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().and_then(|a| a.local_addr())
    }

    /// The registry watchers' last lists and health.
    pub fn registries(&self) -> Option<Arc<Latest>> {
        self.registries.as_ref().map(|r| r.latest.clone())
    }

    /// The I/O driver each worker got.
    pub fn drivers(&self) -> &[&'static str] {
        &self.drivers
    }

    /// Hands a new config to every worker and waits until all use it. Listener changes need a
    /// restart: the new file must keep the same listeners (names, protocols, addresses).
    pub fn reload(&mut self, config: Config) -> io::Result<()> {
        let same = |a: &ListenerConfig, b: &ListenerConfig| {
            a.name == b.name && a.protocol.kind() == b.protocol.kind() && a.address == b.address
        };
        let current = self.publisher.current();
        let old = &current.config;
        if old.listeners.len() != config.listeners.len()
            || old.listeners.iter().zip(&config.listeners).any(|(a, b)| !same(a, b))
        {
            return Err(io::Error::other("listeners changed (name, protocol or address): that needs a restart; routes, clusters and limits reload live"));
        }
        if config.runtime.workers != old.runtime.workers || config.runtime.driver != old.runtime.driver {
            log::warn!("runtime.workers and runtime.driver take effect at the next restart");
        }
        // Discovered clusters start from their last lists, not from the file's none.
        let mut config = config;
        self.latest.fill(&mut config);
        let access_logs = access_logs(&config, &mut self.writers)?;
        self.status.set_access_logs(self.writers.sinks());
        if let Some(r) = &self.resolver {
            r.set_config(Arc::new(config.clone()));
        }
        let generation = self.publisher.reload(config.clone(), access_logs);
        // The new config's watches, after its snapshot: their lists build on it.
        if let Some(r) = &mut self.registries {
            r.set_config(&config);
        }
        self.wait_applied(generation)
    }

    fn wait_applied(&self, generation: u64) -> io::Result<()> {
        let mut acked = vec![false; self.workers.len()];
        while acked.iter().any(|a| !a) {
            match self.events.recv_timeout(ACK_TIMEOUT) {
                Ok(Event::Applied { worker, generation: g }) if g == generation => acked[worker] = true,
                Ok(_) => {}
                Err(_) => return Err(io::Error::other("a worker did not acknowledge the new config in time")),
            }
        }
        Ok(())
    }

    /// Stops accepting, lets in-flight requests finish (up to the drain timeout), stops the
    /// workers and returns their summed counters.
    pub fn shutdown(mut self) -> StatsSnapshot {
        self.status.draining.store(true, std::sync::atomic::Ordering::Relaxed);
        self.resolver = None;
        self.registries = None;
        self.health = None;
        for w in &self.workers {
            w.send(Command::Drain);
        }
        let mut total = StatsSnapshot::default();
        for w in &mut self.workers {
            if let Some(t) = w.thread.take() {
                if t.join().is_err() {
                    log::error!("a worker thread panicked outside any connection");
                }
            }
        }
        while let Ok(ev) = self.events.try_recv() {
            if let Event::Stopped { stats, .. } = ev {
                total.add(&stats);
            }
        }
        total
    }
}

/// Binds one socket per worker (TCP, SO_REUSEPORT; port 0 resolved once so all share it) or
/// one unix socket shared by all workers.
fn bind_listener(l: &ListenerConfig, workers: usize) -> io::Result<(Address, Vec<StdListener>)> {
    let ctx = |e: io::Error| io::Error::new(e.kind(), format!("listener {} ({}): {e}", l.name, l.address));
    match &l.address {
        Address::Tcp(addr) => {
            let mut addr = *addr;
            let mut out = Vec::new();
            for _ in 0..workers {
                let s = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)
                    .map_err(ctx)?;
                s.set_reuse_address(true).map_err(ctx)?;
                s.set_reuse_port(true).map_err(ctx)?;
                s.set_nonblocking(true).map_err(ctx)?;
                s.bind(&addr.into()).map_err(ctx)?;
                s.listen(1024).map_err(ctx)?;
                let std: std::net::TcpListener = s.into();
                addr = std.local_addr()?;
                out.push(StdListener::Tcp(std));
            }
            Ok((Address::Tcp(addr), out))
        }
        Address::Unix(path) => {
            remove_stale_socket(path);
            let l0 = std::os::unix::net::UnixListener::bind(path).map_err(ctx)?;
            l0.set_nonblocking(true)?;
            let mut out = Vec::new();
            for _ in 1..workers {
                out.push(StdListener::Unix(l0.try_clone()?));
            }
            out.push(StdListener::Unix(l0));
            Ok((Address::Unix(path.clone()), out))
        }
    }
}

/// A socket file left by a previous run that nobody listens on any more is removed.
fn remove_stale_socket(path: &Path) {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() && std::os::unix::net::UnixStream::connect(path).is_err() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// What the control thread waits for.
enum ControlEvent {
    Signal(i32),
    Admin(ControlRequest),
}

/// Runs a server with `config` (loaded from `path`) until SIGTERM or SIGINT (or `POST /drain`);
/// SIGHUP (or `POST /reload`) reloads the file.
pub fn run_until_signal(path: &Path, config: Config) -> io::Result<StatsSnapshot> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
    let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGTERM, SIGINT, SIGUSR1])?;
    let signals_handle = signals.handle();
    let (events, rx) = crossbeam_channel::unbounded();
    let from_signals = events.clone();
    std::thread::Builder::new().name("ringway-signals".into()).spawn(move || {
        for sig in signals.forever() {
            if from_signals.send(ControlEvent::Signal(sig)).is_err() {
                return;
            }
        }
    })?;
    let (admin_tx, admin_rx) = crossbeam_channel::unbounded();
    std::thread::Builder::new().name("ringway-admin-requests".into()).spawn(move || {
        for r in admin_rx {
            if events.send(ControlEvent::Admin(r)).is_err() {
                return;
            }
        }
    })?;
    let mut server = Server::start_with(config, Some(admin_tx))?;
    server.status.set_source(path);
    log::info!("ringway running with {} workers ({})", server.drivers().len(), server.drivers().join(", "));
    let reload = |server: &mut Server| -> Result<u64, String> {
        let applied =
            Config::load(path).map_err(|e| e.to_string()).and_then(|c| server.reload(c).map_err(|e| e.to_string()));
        let counter = if applied.is_ok() { &server.status.reloads_ok } else { &server.status.reloads_failed };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        applied.map(|()| server.publisher.current().generation)
    };
    for event in rx {
        match event {
            ControlEvent::Signal(SIGUSR1) => {
                log::info!("SIGUSR1: reopening access logs");
                server.writers.reopen_all();
            }
            ControlEvent::Signal(SIGHUP) => match reload(&mut server) {
                Ok(g) => log::info!("reloaded {} (generation {g})", path.display()),
                Err(e) => log::error!("reload of {} refused; keeping the running config:\n{e}", path.display()),
            },
            ControlEvent::Admin(ControlRequest::Reload(reply)) => {
                let r = reload(&mut server);
                match &r {
                    Ok(g) => log::info!("reloaded {} (generation {g}, admin request)", path.display()),
                    Err(e) => log::error!(
                        "reload of {} (admin request) refused; keeping the running config:\n{e}",
                        path.display()
                    ),
                }
                let _ = reply.send(r);
            }
            ControlEvent::Signal(sig) => {
                log::info!("signal {sig}: draining");
                break;
            }
            ControlEvent::Admin(ControlRequest::Drain) => {
                log::info!("admin request: draining");
                break;
            }
        }
    }
    signals_handle.close();
    let stats = server.shutdown();
    let summary: Vec<String> = stats.pairs().iter().filter(|(_, v)| *v > 0).map(|(k, v)| format!("{k}={v}")).collect();
    log::info!("stopped: {}", summary.join(" "));
    Ok(stats)
}
