//! The admin endpoint: HTTP/1.1 with keep-alive on threads of its own, never on a worker, so
//! a saturated data plane cannot starve it and it cannot slow the data plane. Requests are
//! parsed by `httparse` (the parser hyper uses), bounded by `admin.max_request_size` and
//! `admin.read_timeout`.
//!
//! What it serves so far: `GET /healthz` (200 while the process lives), `GET /ready` (200
//! while serving; 503 before every worker is up and while draining), `GET /config` (the
//! running config as JSON with its version, source file, load time and content hash; see
//! `admin/config_json.rs`), `GET /stats` (each worker's counters, asked through its command
//! channel, their sum, and per listener and route the labelled figures with latency
//! percentiles), `GET /metrics` (the same in Prometheus text format), `GET /clusters` (per
//! cluster and endpoint: connections, requests in flight, connects, health; see
//! `admin/metrics.rs`), `POST /reload` (as
//! SIGHUP: 200 with the new version, or 400 with every problem and its key path) and `POST
//! /drain` (as SIGTERM: 202). An unknown path is a 404 and a known path with another method a
//! 405 (with `Allow`), each with a short text body.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod config_json;
mod metrics;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use crossbeam_channel::Sender;

use crate::config::{Address, AdminConfig, Config};
use crate::worker::Mailbox;

/// How long `GET /stats` waits for each worker's counters (a worker past its drain no longer
/// answers; it is then left out and named).
const REPORT_WAIT: Duration = Duration::from_secs(1);

/// What the admin endpoint asks of the control thread (the one that owns the config file and
/// the workers): the same as SIGHUP and SIGTERM.
pub enum ControlRequest {
    /// Re-read the config file; answer with the new version or every problem found.
    Reload(Sender<Result<u64, String>>),
    /// Drain and exit.
    Drain,
}

/// How long `POST /reload` waits for the control thread's answer.
const RELOAD_WAIT: Duration = Duration::from_secs(30);

/// Admin connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 16;
/// Headers one request may carry.
const MAX_HEADERS: usize = 64;

/// What the control thread tells the admin server about the proxy (it changes only on
/// start, reload and drain: plain atomics on the control side, nothing on the data path).
#[derive(Debug, Default)]
pub struct Status {
    /// Workers running; `/ready` waits for all of them.
    pub workers_up: AtomicUsize,
    pub workers: AtomicUsize,
    /// A drain started: `/ready` answers 503.
    pub draining: AtomicBool,
    /// The running config as `GET /config` shows it (replaced on each reload).
    config: Mutex<Option<Arc<ConfigInfo>>>,
    /// The file the config came from, when there is one.
    source: Mutex<Option<PathBuf>>,
    /// Each worker's mailbox, for asking its counters.
    mailboxes: Mutex<Vec<Mailbox>>,
    /// Reloads applied and refused (signal or admin request).
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    /// When the proxy started (uptime).
    started: Mutex<Option<SystemTime>>,
    /// The access log files (lines written and dropped).
    access_logs: Mutex<Vec<crate::access_log::Sink>>,
    /// Each worker's last report: a worker that does not answer in time is reported with it,
    /// so summed counters never go down (which Prometheus would take for a reset).
    last_reports: Mutex<Vec<Option<crate::worker::WorkerReport>>>,
    /// The active health checks' verdicts, per cluster and endpoint.
    health: Mutex<Option<crate::health::Verdicts>>,
    /// The registries' last lists and health.
    registries: Mutex<Option<Arc<crate::registry::Latest>>>,
}

/// One version of the running config, rendered once when it is applied.
#[derive(Debug)]
struct ConfigInfo {
    version: u64,
    loaded_at: SystemTime,
    json: serde_json::Value,
    hash: String,
}

impl Status {
    /// Where the registry watchers keep their last lists and health.
    pub fn set_registries(&self, latest: Arc<crate::registry::Latest>) {
        *self.registries.lock().unwrap_or_else(|e| e.into_inner()) = Some(latest);
    }

    /// The registry watchers' shared state, when there is one.
    pub fn registries(&self) -> Option<Arc<crate::registry::Latest>> {
        self.registries.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Where the health owner keeps its verdicts.
    pub fn set_health(&self, verdicts: crate::health::Verdicts) {
        *self.health.lock().unwrap_or_else(|e| e.into_inner()) = Some(verdicts);
    }

    /// A copy of the active health checks' verdicts.
    pub fn health(&self) -> std::collections::HashMap<(String, String), crate::health::Verdict> {
        let v = self.health.lock().unwrap_or_else(|e| e.into_inner()).clone();
        v.map(|v| v.lock().unwrap_or_else(|e| e.into_inner()).clone()).unwrap_or_default()
    }

    /// Records the config now in force (version `version`, applied now).
    pub fn set_config(&self, version: u64, config: &Config) {
        let json = config_json::config(config);
        let hash = config_json::content_hash(&json.to_string());
        let info = ConfigInfo { version, loaded_at: SystemTime::now(), json, hash };
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(info));
    }

    /// Records the start of the process (uptime counts from here).
    pub fn set_started(&self) {
        *self.started.lock().unwrap_or_else(|e| e.into_inner()) = Some(SystemTime::now());
    }

    /// Records the access log files in use.
    pub fn set_access_logs(&self, sinks: Vec<crate::access_log::Sink>) {
        *self.access_logs.lock().unwrap_or_else(|e| e.into_inner()) = sinks;
    }

    /// Records where the workers take commands.
    pub fn set_mailboxes(&self, m: Vec<Mailbox>) {
        *self.mailboxes.lock().unwrap_or_else(|e| e.into_inner()) = m;
    }

    /// Records the file the config is loaded from.
    pub fn set_source(&self, path: &std::path::Path) {
        *self.source.lock().unwrap_or_else(|e| e.into_inner()) = Some(path.to_path_buf());
    }
}

/// A running admin server.
pub struct Admin {
    addr: Option<SocketAddr>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, std::path::PathBuf),
}

impl Admin {
    /// Binds `config.address` and serves it on a thread of its own.
    /// `control`: where `POST /reload` and `POST /drain` go (`None`: they answer 503).
    pub fn start(
        config: &AdminConfig,
        status: Arc<Status>,
        control: Option<Sender<ControlRequest>>,
    ) -> io::Result<Admin> {
        let (listener, addr) = match &config.address {
            Address::Tcp(a) => {
                let l = TcpListener::bind(a)?;
                let addr = l.local_addr()?;
                (Listener::Tcp(l), Some(addr))
            }
            Address::Unix(p) => {
                let _ = std::fs::remove_file(p);
                (Listener::Unix(UnixListener::bind(p)?, p.clone()), None)
            }
        };
        match &listener {
            Listener::Tcp(l) => l.set_nonblocking(true)?,
            Listener::Unix(l, _) => l.set_nonblocking(true)?,
        }
        let stop = Arc::new(AtomicBool::new(false));
        let limits = Limits { max_request: config.max_request_size.get(), read_timeout: config.read_timeout };
        let s = stop.clone();
        let thread = std::thread::Builder::new().name("ringway-admin".into()).spawn(move || {
            yield_to_workers();
            accept_loop(listener, status, control, limits, s)
        })?;
        match addr {
            Some(a) => log::info!("admin endpoint on {a}"),
            None => log::info!("admin endpoint on {}", config.address),
        }
        Ok(Admin { addr, stop, thread: Some(thread) })
    }

    /// The bound TCP address (the real port when the config said port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.addr
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Clone, Copy)]
struct Limits {
    max_request: usize,
    read_timeout: Duration,
}

/// Admin threads run at a lower priority (nice 10) than the workers: a scrape sharing a core
/// with a busy worker then waits for the worker's turn to end instead of preempting it in the
/// middle of a batch (a p99 step under load otherwise), and still gets its share of the core
/// (a saturated worker cannot starve it).
fn yield_to_workers() {
    // SAFETY: gettid and setpriority take plain integers and touch no memory; on Linux
    // PRIO_PROCESS with a thread id sets that thread's nice value only. A failure (no
    // permission to change it) leaves the default priority, which is only slower for workers.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, ADMIN_NICE);
    }
}

/// The admin threads' nice value (see `yield_to_workers`).
const ADMIN_NICE: libc::c_int = 10;

/// Accepts until stopped (polling the non-blocking socket every 20 ms), one thread per
/// connection up to `MAX_CONNECTIONS`.
fn accept_loop(
    listener: Listener,
    status: Arc<Status>,
    control: Option<Sender<ControlRequest>>,
    limits: Limits,
    stop: Arc<AtomicBool>,
) {
    let active = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::Relaxed) {
        if active.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let conn: io::Result<Box<dyn Conn>> = match &listener {
            Listener::Tcp(l) => l.accept().map(|(s, _)| Box::new(s) as Box<dyn Conn>),
            Listener::Unix(l, _) => l.accept().map(|(s, _)| Box::new(s) as Box<dyn Conn>),
        };
        match conn {
            Ok(c) => {
                let (status, active, control) = (status.clone(), active.clone(), control.clone());
                active.fetch_add(1, Ordering::Relaxed);
                let spawned = std::thread::Builder::new().name("ringway-admin-conn".into()).spawn(move || {
                    yield_to_workers();
                    let _ = serve(c, &status, control.as_ref(), limits);
                    active.fetch_sub(1, Ordering::Relaxed);
                });
                if spawned.is_err() {
                    log::warn!("admin: could not start a connection thread; connection closed");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                log::warn!("admin: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    if let Listener::Unix(_, p) = &listener {
        let _ = std::fs::remove_file(p);
    }
}

/// A connected admin client, TCP or Unix.
trait Conn: Read + Write + Send {
    fn set_timeout(&self, t: Duration) -> io::Result<()>;
    fn shutdown_write(&self);
}

impl Conn for TcpStream {
    fn set_timeout(&self, t: Duration) -> io::Result<()> {
        self.set_nonblocking(false)?;
        self.set_nodelay(true)?;
        self.set_read_timeout(Some(t))
    }
    fn shutdown_write(&self) {
        let _ = self.shutdown(std::net::Shutdown::Write);
    }
}

impl Conn for UnixStream {
    fn set_timeout(&self, t: Duration) -> io::Result<()> {
        self.set_nonblocking(false)?;
        self.set_read_timeout(Some(t))
    }
    fn shutdown_write(&self) {
        let _ = self.shutdown(std::net::Shutdown::Write);
    }
}

/// How long a connection answered with `connection: close` is read from before it is closed.
const LINGER: Duration = Duration::from_millis(200);

/// One answer.
struct Reply {
    status: u16,
    reason: &'static str,
    body: String,
    allow: Option<&'static str>,
    content_type: &'static str,
}

impl Reply {
    fn text(status: u16, reason: &'static str, body: impl Into<String>) -> Reply {
        Reply { status, reason, body: body.into(), allow: None, content_type: "text/plain; charset=utf-8" }
    }

    fn json(v: &serde_json::Value) -> Reply {
        let body = serde_json::to_string_pretty(v).unwrap_or_default() + "\n";
        Reply { content_type: "application/json", ..Reply::text(200, "OK", body) }
    }
}

/// Serves requests on one connection until the client closes it, asks to, sends something
/// the server will not read, or stays silent past the read timeout.
fn serve(
    mut c: Box<dyn Conn>,
    status: &Status,
    control: Option<&Sender<ControlRequest>>,
    limits: Limits,
) -> io::Result<()> {
    c.set_timeout(limits.read_timeout)?;
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    loop {
        // Read until a whole head is in; the request must arrive within the read timeout.
        let deadline = Instant::now() + limits.read_timeout;
        let (head_len, method, path, keep_alive, body_len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let method = req.method.unwrap_or("").to_string();
                    let path = req.path.unwrap_or("").to_string();
                    let header = |name: &str| {
                        req.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value.to_vec())
                    };
                    let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case(b"close"));
                    let keep_alive = req.version == Some(1) && !close;
                    let body_len = match header("content-length") {
                        None => 0,
                        Some(v) => match std::str::from_utf8(&v).ok().and_then(|s| s.trim().parse::<usize>().ok()) {
                            Some(n) => n,
                            None => {
                                return respond(&mut c, Reply::text(400, "Bad Request", "bad content-length\n"), false)
                            }
                        },
                    };
                    break (n, method, path, keep_alive, body_len);
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return respond(&mut c, Reply::text(400, "Bad Request", format!("{e}\n")), false),
            }
            if buf.len() >= limits.max_request {
                let msg = format!("request head over admin.max_request_size ({} bytes)\n", limits.max_request);
                return respond(&mut c, Reply::text(431, "Request Header Fields Too Large", msg), false);
            }
            if Instant::now() >= deadline || !fill(&mut c, &mut buf, limits.max_request)? {
                return Ok(()); // closed or silent: nothing to answer
            }
        };
        if head_len + body_len > limits.max_request {
            let msg = format!("request over admin.max_request_size ({} bytes)\n", limits.max_request);
            return respond(&mut c, Reply::text(413, "Content Too Large", msg), false);
        }
        while buf.len() < head_len + body_len {
            if Instant::now() >= deadline || !fill(&mut c, &mut buf, limits.max_request)? {
                return Ok(());
            }
        }
        buf.drain(..head_len + body_len);
        let reply = route(&method, &path, status, control);
        respond(&mut c, reply, keep_alive)?;
        if !keep_alive {
            return Ok(());
        }
    }
}

/// Reads more into `buf` (at most up to `max` bytes in all); false on EOF or timeout.
fn fill(c: &mut Box<dyn Conn>, buf: &mut Vec<u8>, max: usize) -> io::Result<bool> {
    let mut tmp = [0u8; 4096];
    let want = tmp.len().min(max.saturating_sub(buf.len()).max(1));
    match c.read(&mut tmp[..want]) {
        Ok(0) => Ok(false),
        Ok(n) => {
            buf.extend_from_slice(&tmp[..n]);
            Ok(true)
        }
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The endpoints: each path with the one method it takes.
const ROUTES: &[(&str, &str)] = &[
    ("/healthz", "GET"),
    ("/ready", "GET"),
    ("/config", "GET"),
    ("/stats", "GET"),
    ("/metrics", "GET"),
    ("/clusters", "GET"),
    ("/reload", "POST"),
    ("/drain", "POST"),
];

fn route(method: &str, path: &str, status: &Status, control: Option<&Sender<ControlRequest>>) -> Reply {
    let path = path.split('?').next().unwrap_or(path);
    let Some((_, allowed)) = ROUTES.iter().find(|(p, _)| *p == path) else {
        return Reply::text(404, "Not Found", format!("no admin endpoint {path}\n"));
    };
    if method != *allowed {
        let mut r = Reply::text(405, "Method Not Allowed", format!("{path} takes {allowed}\n"));
        r.allow = Some(allowed);
        return r;
    }
    match path {
        "/healthz" => Reply::text(200, "OK", "ok\n"),
        "/ready" => ready(status),
        "/config" => config(status),
        "/stats" => stats(status),
        "/metrics" => {
            let body = metrics::prometheus(&metrics::collect(status), status);
            Reply { content_type: "text/plain; version=0.0.4; charset=utf-8", ..Reply::text(200, "OK", body) }
        }
        "/clusters" => Reply::json(&metrics::clusters_json(&metrics::collect(status), status)),
        _ => {
            let Some(control) = control else {
                return Reply::text(503, "Service Unavailable", "no control thread to ask (embedded server)\n");
            };
            if path == "/drain" {
                let _ = control.send(ControlRequest::Drain);
                return Reply::text(202, "Accepted", "draining\n");
            }
            let (tx, rx) = crossbeam_channel::bounded(1);
            if control.send(ControlRequest::Reload(tx)).is_err() {
                return Reply::text(503, "Service Unavailable", "shutting down\n");
            }
            match rx.recv_timeout(RELOAD_WAIT) {
                Ok(Ok(version)) => Reply::text(200, "OK", format!("reloaded: version {version}\n")),
                Ok(Err(problems)) => {
                    Reply::text(400, "Bad Request", format!("reload refused; the running config stays:\n{problems}\n"))
                }
                Err(_) => Reply::text(503, "Service Unavailable", "no answer from the control thread\n"),
            }
        }
    }
}

fn config(status: &Status) -> Reply {
    let Some(info) = status.config.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
        return Reply::text(503, "Service Unavailable", "no config applied yet\n");
    };
    let source = status.source.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let loaded_at = info.loaded_at.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    // Discovered clusters change between reloads: what each worker routes on now.
    let discovered = match status.registries() {
        Some(latest) => {
            let c = metrics::collect(status);
            let names: Vec<String> =
                latest.clusters.lock().unwrap_or_else(|e| e.into_inner()).keys().cloned().collect();
            names.iter().map(|n| (n.clone(), metrics::discovery_json(&c, Some(&latest), n))).collect()
        }
        None => serde_json::Map::new(),
    };
    Reply::json(&serde_json::json!({
        "version": info.version,
        "source": source.map(|p| p.display().to_string()),
        "loaded_at_unix": loaded_at,
        "hash": info.hash,
        "config": info.json,
        "discovered": discovered,
    }))
}

/// Every worker's counters and metrics, asked through its mailbox (each answers from its own
/// thread between events), their sums, and latency percentiles per route and listener.
fn stats(status: &Status) -> Reply {
    Reply::json(&metrics::stats_json(&metrics::collect(status)))
}

fn ready(status: &Status) -> Reply {
    if status.draining.load(Ordering::Relaxed) {
        return Reply::text(503, "Service Unavailable", "draining\n");
    }
    let (up, all) = (status.workers_up.load(Ordering::Relaxed), status.workers.load(Ordering::Relaxed));
    if all == 0 || up < all {
        return Reply::text(503, "Service Unavailable", format!("starting: {up} of {all} workers up\n"));
    }
    Reply::text(200, "OK", "ready\n")
}

fn respond(c: &mut Box<dyn Conn>, r: Reply, keep_alive: bool) -> io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {}\r\ncontent-length: {}\r\n",
        r.status,
        r.reason,
        r.content_type,
        r.body.len()
    );
    if let Some(a) = r.allow {
        head.push_str(&format!("allow: {a}\r\n"));
    }
    head.push_str(if keep_alive { "\r\n" } else { "connection: close\r\n\r\n" });
    // One write for head and body: two would leave the body to Nagle's algorithm, waiting for
    // the client's delayed ACK of the head (40 ms per request on a kept-alive connection).
    let mut out = head.into_bytes();
    out.extend_from_slice(r.body.as_bytes());
    c.write_all(&out)?;
    c.flush()?;
    if !keep_alive {
        // Read what the client is still sending (a refused request's rest) for a moment, so
        // the close is a FIN after our answer, not a reset that could discard it.
        c.shutdown_write();
        let _ = c.set_timeout(LINGER);
        let end = Instant::now() + LINGER;
        let mut sink = [0u8; 4096];
        while Instant::now() < end && matches!(c.read(&mut sink), Ok(n) if n > 0) {}
    }
    Ok(())
}
