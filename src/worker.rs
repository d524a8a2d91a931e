//! Worker threads: each pinned to one core, each running one monoio runtime that owns its
//! listeners' accept loops, its downstream connections, its upstream pools and its counters.
//! Workers hear from the control thread only through a crossbeam channel (plus a waker so an
//! idle worker notices at once) and answer through another.

pub mod hold;
pub mod state;

use std::io;
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use atomic_waker::AtomicWaker;
use crossbeam_channel::{Receiver, Sender, TryRecvError};
use monoio::io::{CancelHandle, Canceller};
use monoio::task::JoinHandle as TaskHandle;
use monoio::time::TimeDriver;
use monoio::{FusionRuntime, IoUringDriver, LegacyDriver, RuntimeBuilder};

pub use state::Snapshot;
use state::WorkerState;

use crate::config::DriverKind;
use crate::metrics::MetricsReport;
use crate::protocol::spawn_connection;
use crate::stats::StatsSnapshot;

/// How long a drain waits for an accept loop to notice its cancel.
/// Hands the pages this thread's allocator heap holds free back to the system.
fn return_freed_memory() {
    // SAFETY: mi_collect takes no pointers and only walks the calling thread's own heap (and
    // abandoned segments); it is safe to call at any time from any thread, with or without
    // mimalloc as the global allocator.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// How often each worker looks for clients that stopped reading.
const STALL_TICK: Duration = Duration::from_secs(1);
const ACCEPT_STOP: Duration = Duration::from_secs(1);

/// Control thread → worker.
pub enum Command {
    /// Use this config for every new request from now on.
    Apply(Arc<Snapshot>),
    /// Stop accepting, finish what is in flight, then stop.
    Drain,
    /// Send a copy of this worker's counters and metrics (the admin endpoint asks; nothing
    /// else of the worker's memory is read from outside).
    Report(Sender<WorkerReport>),
    /// The health owner's new verdict on an endpoint of a cluster.
    Health { cluster: Arc<str>, endpoint: crate::config::Address, healthy: bool },
    /// A cluster's endpoints as its names (`names`, as written) resolve now, or as its registry
    /// lists them at `revision` (0 for names).
    Endpoints { cluster: Arc<str>, names: Arc<Vec<String>>, endpoints: Arc<Vec<crate::config::Address>> },
    /// A snapshot a registry change made (a discovered cluster's list): applied as a reload
    /// is; the worker's acknowledgment is the generation and revisions it reports.
    Discovered(Arc<Snapshot>),
}

/// One worker's figures, copied on its own thread for the admin side.
#[derive(Debug, Clone)]
pub struct WorkerReport {
    pub worker: usize,
    /// `io_uring` or `epoll`.
    pub driver: &'static str,
    pub stats: StatsSnapshot,
    pub metrics: MetricsReport,
    /// Downstream connections open now.
    pub connections: usize,
    /// Requests (gRPC streams) in flight on them now.
    pub requests_active: usize,
    /// Each discovered cluster: the registry revision and the endpoint count it routes on.
    pub discovered: Vec<(String, i64, usize)>,
}

/// Where a worker takes its commands: the channel, and the waker that makes an idle worker
/// look at it. The control thread and the admin endpoint each hold one per worker.
#[derive(Clone)]
pub struct Mailbox {
    commands: Sender<Command>,
    waker: Arc<AtomicWaker>,
}

impl Mailbox {
    pub fn new(commands: Sender<Command>, waker: Arc<AtomicWaker>) -> Mailbox {
        Mailbox { commands, waker }
    }

    pub fn send(&self, cmd: Command) {
        let _ = self.commands.send(cmd);
        self.waker.wake();
    }
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mailbox")
    }
}

/// Worker → control thread.
#[derive(Debug)]
pub enum Event {
    Started { worker: usize, driver: &'static str },
    StartFailed { worker: usize, error: String },
    Applied { worker: usize, generation: u64 },
    Stopped { worker: usize, stats: Box<StatsSnapshot> },
}

/// A listening socket created by the control thread, handed to one worker.
pub enum StdListener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener),
}

/// Everything a worker thread starts from.
pub struct WorkerSpec {
    pub id: usize,
    pub core: Option<core_affinity::CoreId>,
    pub driver: DriverKind,
    pub listeners: Vec<(String, StdListener)>,
    pub snapshot: Arc<Snapshot>,
    pub commands: Receiver<Command>,
    pub waker: Arc<AtomicWaker>,
    pub events: Sender<Event>,
}

type Runtime = FusionRuntime<TimeDriver<IoUringDriver>, TimeDriver<LegacyDriver>>;

/// Builds the runtime the config asks for; `auto` falls back to epoll by itself.
fn build_runtime(kind: DriverKind) -> io::Result<(Runtime, &'static str)> {
    let uring_with = |tuned: bool| -> io::Result<Runtime> {
        Ok(RuntimeBuilder::<IoUringDriver>::new()
            .with_entries(4096)
            .uring_builder(uring_builder(tuned))
            .enable_timer()
            .build()?
            .into())
    };
    let uring = || uring_with(true).or_else(|_| uring_with(false));
    let epoll = || -> io::Result<Runtime> { Ok(RuntimeBuilder::<LegacyDriver>::new().enable_timer().build()?.into()) };
    match kind {
        DriverKind::Epoll => Ok((epoll()?, "epoll")),
        DriverKind::IoUring => {
            Ok((uring().map_err(|e| io::Error::new(e.kind(), format!("io_uring unavailable: {e}")))?, "io_uring"))
        }
        DriverKind::Auto if monoio::utils::detect_uring() => match uring() {
            Ok(rt) => Ok((rt, "io_uring")),
            Err(e) => {
                log::warn!("io_uring runtime failed to start ({e}); falling back to epoll");
                Ok((epoll()?, "epoll"))
            }
        },
        DriverKind::Auto => Ok((epoll()?, "epoll (io_uring unavailable)")),
    }
}

/// io_uring setup. COOP_TASKRUN + TASKRUN_FLAG let completions wait for our next trip into
/// the kernel instead of interrupting the worker with an IPI; measured with perf/compare.sh
/// (32x10 framed): proxy CPU 1575 -> 1191 ns per request (BENCHMARKS.md). Kernels before 5.19
/// refuse the flags; then the plain ring is used.
fn uring_builder(tuned: bool) -> io_uring::Builder {
    let mut b = io_uring::IoUring::builder();
    if tuned {
        b.setup_coop_taskrun().setup_taskrun_flag();
    }
    b
}

/// Whether this kernel and sandbox let us use io_uring.
pub fn io_uring_available() -> bool {
    monoio::utils::detect_uring()
}

/// Starts one worker thread.
pub fn spawn(spec: WorkerSpec) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(format!("ringway-w{}", spec.id)).spawn(move || {
        let id = spec.id;
        if let Some(core) = spec.core {
            if !core_affinity::set_for_current(core) {
                log::warn!("worker {id}: could not pin to core {}; running unpinned", core.id);
            }
        }
        let (mut rt, driver) = match build_runtime(spec.driver) {
            Ok(x) => x,
            Err(e) => {
                let _ = spec.events.send(Event::StartFailed { worker: id, error: e.to_string() });
                return;
            }
        };
        log::info!(
            "worker {id}: {driver} driver, core {}",
            spec.core.map(|c| c.id.to_string()).unwrap_or_else(|| "unpinned".into())
        );
        let _ = spec.events.send(Event::Started { worker: id, driver });
        rt.block_on(run(spec, driver));
    })
}

async fn run(spec: WorkerSpec, driver: &'static str) {
    let WorkerSpec { id, listeners, snapshot, commands, waker, events, .. } = spec;
    // `Started` (sent before this) already told the control thread the first snapshot is in use.
    let coalesce = |s: &Snapshot| {
        hold::configure(s.config.runtime.coalesce_wait, s.config.runtime.coalesce_min_streams);
        monoio::set_park_spin(s.config.runtime.busy_poll);
    };
    coalesce(&snapshot);
    crate::local::BUDGET.with(|b| b.set_max(snapshot.config.runtime.max_buffer_memory.get()));
    let state = Rc::new(WorkerState::new(id, snapshot));

    let accept_cancel = Canceller::new();
    let mut accepts = Vec::new();
    for (name, l) in listeners {
        let (state, cancel, name): (_, _, Rc<str>) = (state.clone(), accept_cancel.handle(), name.into());
        match l {
            StdListener::Tcp(l) => match monoio::net::TcpListener::from_std(l) {
                Ok(l) => accepts.push(monoio::spawn(accept_tcp(l, name, state, cancel))),
                Err(e) => log::error!("worker {id}: listener {name}: {e}"),
            },
            StdListener::Unix(l) => match monoio::net::UnixListener::from_std(l) {
                Ok(l) => accepts.push(monoio::spawn(accept_unix(l, name, state, cancel))),
                Err(e) => log::error!("worker {id}: listener {name}: {e}"),
            },
        }
    }

    // Clients that stopped reading their replies are cut off (each listener's
    // `write_stall_timeout`, checked once a second: a close comes up to a second late).
    // The same tick gives memory back after connections went away: mimalloc purges freed
    // pages only when the heap is used again, so a worker that went quiet after a spike of
    // connections kept them (5,000 idle connections closed: RSS stayed at 2.7x).
    let ticker = state.clone();
    monoio::spawn(async move {
        let mut conns = ticker.conn_count();
        loop {
            monoio::time::sleep(STALL_TICK).await;
            ticker.close_stalled(Instant::now());
            let now = ticker.conn_count();
            if now < conns {
                return_freed_memory();
            }
            conns = now;
        }
    });

    while let Some(cmd) = next_command(&commands, &waker).await {
        match cmd {
            Command::Apply(snap) => {
                let generation = snap.generation;
                coalesce(&snap);
                crate::local::BUDGET.with(|b| b.set_max(snap.config.runtime.max_buffer_memory.get()));
                state.apply(snap, true);
                let _ = events.send(Event::Applied { worker: id, generation });
            }
            Command::Drain => break,
            Command::Health { cluster, endpoint, healthy } => state.set_health(&cluster, &endpoint, healthy),
            Command::Endpoints { cluster, names, endpoints } => state.set_endpoints(&cluster, &names, &endpoints),
            Command::Discovered(snap) => state.apply(snap, false),
            Command::Report(to) => {
                let _ = to.send(WorkerReport {
                    worker: id,
                    driver,
                    stats: state.stats_snapshot(),
                    metrics: state.metrics_report(),
                    connections: state.conn_count(),
                    requests_active: state.requests_active(),
                    discovered: state.discovered(),
                });
            }
        }
    }

    drain(&state, accept_cancel, accepts).await;
    let _ = events.send(Event::Stopped { worker: id, stats: Box::new(state.stats_snapshot()) });
}

/// Waits for the next command without polling: the control thread wakes us after each send.
async fn next_command(rx: &Receiver<Command>, waker: &AtomicWaker) -> Option<Command> {
    std::future::poll_fn(|cx| {
        waker.register(cx.waker());
        match rx.try_recv() {
            Ok(c) => std::task::Poll::Ready(Some(c)),
            Err(TryRecvError::Empty) => std::task::Poll::Pending,
            Err(TryRecvError::Disconnected) => std::task::Poll::Ready(None),
        }
    })
    .await
}

/// Stops accepting, closes downstream connections as they go idle, and after the drain
/// timeout closes whatever is left.
async fn drain(state: &Rc<WorkerState>, accept_cancel: Canceller, accepts: Vec<TaskHandle<()>>) {
    state.draining.set(true);
    let _ = accept_cancel.cancel();
    state.start_drain();
    // The accept loops end on the cancel and drop their listening sockets. Wait for that, and
    // give the runtime one more turn: on io_uring both the cancel and the socket's close are
    // operations of this runtime, so a worker with nothing to drain that returned at once
    // left its socket open, and connects kept landing in its backlog until the process exited.
    for a in accepts {
        let _ = monoio::time::timeout(ACCEPT_STOP, a).await;
    }
    monoio::time::sleep(Duration::from_millis(1)).await;
    let rt = state.view().snapshot.config.runtime.clone();
    let deadline = Instant::now() + rt.drain_timeout;
    log::info!("worker {}: draining {} connections (up to {:?})", state.id, state.conn_count(), rt.drain_timeout);
    loop {
        state.close_idle(rt.drain_idle_close);
        if state.conn_count() == 0 && state.upstream_queued_bytes() == 0 {
            break;
        }
        if Instant::now() >= deadline {
            log::warn!("worker {}: drain timeout; closing {} connections", state.id, state.conn_count());
            state.close_all();
            monoio::time::sleep(Duration::from_millis(20)).await;
            break;
        }
        monoio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn accept_tcp(l: monoio::net::TcpListener, name: Rc<str>, state: Rc<WorkerState>, cancel: CancelHandle) {
    loop {
        match l.cancelable_accept(cancel.clone()).await {
            Ok((s, _)) => {
                let _ = s.set_nodelay(true);
                spawn_connection(s, name.clone(), state.clone());
            }
            Err(e) => {
                if state.draining.get() {
                    return;
                }
                log::warn!("worker {}: listener {name}: accept failed: {e}", state.id);
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn accept_unix(l: monoio::net::UnixListener, name: Rc<str>, state: Rc<WorkerState>, cancel: CancelHandle) {
    loop {
        match l.cancelable_accept(cancel.clone()).await {
            Ok((s, _)) => spawn_connection(s, name.clone(), state.clone()),
            Err(e) => {
                if state.draining.get() {
                    return;
                }
                log::warn!("worker {}: listener {name}: accept failed: {e}", state.id);
                monoio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
