//! Endpoints from a real etcd (Debian's `etcd-server`, started here on free loopback ports with
//! a data directory of its own, stopped by its handle), keys written by `etcdctl` in Kitex's
//! `registry-etcd` layout (`kitex/registry-etcd/<service>/<host:port>`, a JSON value, under a
//! lease kept alive by `etcdctl lease keep-alive`). Backends answer with their own id, so each
//! test sees which endpoints the proxy routes to.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::ChildGuard;
use ringway::config::Config;
use ringway::control::Server;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// An etcd member of its own.
struct Etcd {
    child: Option<ChildGuard>,
    client: u16,
    peer: u16,
    dir: std::path::PathBuf,
}

impl Etcd {
    fn start() -> Etcd {
        let dir = std::env::temp_dir().join(format!("ringway-etcd-{}-{}", std::process::id(), free_port()));
        let mut e = Etcd { child: None, client: free_port(), peer: free_port(), dir };
        e.run();
        e
    }

    fn run(&mut self) {
        let (c, p) = (self.client, self.peer);
        let child = Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(&self.dir)
            .args(["--listen-client-urls", &format!("http://127.0.0.1:{c}")])
            .args(["--advertise-client-urls", &format!("http://127.0.0.1:{c}")])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{p}")])
            .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{p}")])
            .args(["--initial-cluster", &format!("t=http://127.0.0.1:{p}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd runs (Debian's etcd-server: .ci/run installs it)");
        self.child = Some(ChildGuard(child));
        let end = Instant::now() + Duration::from_secs(20);
        while !self.ctl(&["endpoint", "health"]).1 {
            assert!(Instant::now() < end, "etcd did not become healthy");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn kill(&mut self) {
        self.child = None;
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client)
    }

    /// Runs etcdctl against this member: its stdout and whether it succeeded.
    fn ctl(&self, args: &[&str]) -> (String, bool) {
        let out = Command::new("timeout")
            .args(["10", "etcdctl", "--endpoints", &self.url(), "--dial-timeout", "2s"])
            .args(args)
            .env("ETCDCTL_API", "3")
            .output()
            .expect("etcdctl runs (Debian's etcd-client)");
        (String::from_utf8_lossy(&out.stdout).to_string(), out.status.success())
    }

    /// A lease of `ttl` seconds, kept alive until the returned guard is dropped.
    fn lease(&self, ttl: u32) -> (String, ChildGuard) {
        let (out, ok) = self.ctl(&["lease", "grant", &ttl.to_string()]);
        assert!(ok, "lease grant: {out}");
        let id = out.split_whitespace().nth(1).expect("lease <id> granted").to_string();
        let keep = Command::new("etcdctl")
            .args(["--endpoints", &self.url(), "lease", "keep-alive", &id])
            .env("ETCDCTL_API", "3")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        (id, ChildGuard(keep))
    }

    /// Registers `addr` under `service` as Kitex's registry-etcd does.
    fn register(&self, service: &str, addr: SocketAddr, lease: &str, tags: &str) {
        let key = format!("kitex/registry-etcd/{service}/{addr}");
        let value = format!(r#"{{"network":"tcp","address":"{addr}","weight":10,"tags":{{{tags}}}}}"#);
        let (out, ok) = self.ctl(&["put", &key, &value, "--lease", lease]);
        assert!(ok, "put: {out}");
    }

    fn put_raw(&self, key: &str, value: &str) {
        assert!(self.ctl(&["put", key, value]).1);
    }

    fn deregister(&self, service: &str, addr: SocketAddr) {
        assert!(self.ctl(&["del", &format!("kitex/registry-etcd/{service}/{addr}")]).1);
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.child = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A framed-binary Thrift backend that answers every CALL with a REPLY whose success string
/// is its own id; `stop` closes it.
fn id_backend(id: &'static str) -> (SocketAddr, Arc<AtomicBool>, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (stop, served) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let (st, sv) = (stop.clone(), served.clone());
    l.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(120);
        while Instant::now() < end && !st.load(Ordering::SeqCst) {
            let Ok((mut s, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            s.set_nonblocking(false).unwrap();
            let (st, sv) = (st.clone(), sv.clone());
            std::thread::spawn(move || {
                s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                while !st.load(Ordering::SeqCst) {
                    match s.read(&mut tmp) {
                        Ok(0) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        Err(_) => continue,
                    }
                    while buf.len() >= 4 {
                        let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize + 4;
                        if buf.len() < len {
                            break;
                        }
                        let f: Vec<u8> = buf.drain(..len).collect();
                        let n = u32::from_be_bytes(f[8..12].try_into().unwrap()) as usize;
                        let (name, seq) = (&f[12..12 + n], &f[12 + n..16 + n]);
                        let mut m = vec![0x80, 0x01, 0x00, 0x02];
                        m.extend_from_slice(&(n as u32).to_be_bytes());
                        m.extend_from_slice(name);
                        m.extend_from_slice(seq);
                        m.extend_from_slice(&[11, 0, 0]);
                        m.extend_from_slice(&(id.len() as u32).to_be_bytes());
                        m.extend_from_slice(id.as_bytes());
                        m.push(0);
                        let mut out = (m.len() as u32).to_be_bytes().to_vec();
                        out.extend_from_slice(&m);
                        sv.fetch_add(1, Ordering::SeqCst);
                        if s.write_all(&out).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, stop, served)
}

/// One call through the proxy: the id of the backend that answered, or the exception's text.
fn who(s: &mut TcpStream, seq: i32) -> Result<String, String> {
    let mut m = vec![0x80, 0x01, 0x00, 0x01, 0, 0, 0, 3];
    m.extend_from_slice(b"who");
    m.extend_from_slice(&seq.to_be_bytes());
    m.push(0);
    let mut f = (m.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(&m);
    s.write_all(&f).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut r = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut r).unwrap();
    let n = u32::from_be_bytes(r[4..8].try_into().unwrap()) as usize;
    let at = 8 + n + 4 + 3;
    let l = u32::from_be_bytes(r[at..at + 4].try_into().unwrap()) as usize;
    let text = String::from_utf8_lossy(&r[at + 4..at + 4 + l]).to_string();
    if r[3] == 2 {
        Ok(text)
    } else {
        Err(text)
    }
}

fn proxy(etcd: &Etcd, discovery: &str) -> (Server, SocketAddr) {
    let server = Server::start(config(etcd, discovery, "")).unwrap();
    let addr = server.local_addr("thrift").unwrap();
    (server, addr)
}

fn config(etcd: &Etcd, discovery: &str, extra: &str) -> Config {
    let toml = format!(
        r#"
[runtime]
workers = 2
driver = "epoll"
drain_timeout = "2s"
[[listener]]
name = "thrift"
address = "127.0.0.1:0"
routes = [ {{ cluster = "echo" }} ]
[[registry]]
name = "fleet"
kind = "etcd"
endpoints = ["http://127.0.0.1:1", "{}"]
retry_backoff = "100ms"
[[cluster]]
name = "echo"
request_timeout = "2s"
connect_timeout = "300ms"
discovery = {discovery}
{extra}
"#,
        etcd.url()
    );
    Config::parse(&toml).unwrap()
}

/// Calls until the set of backends that answer `n` calls in a row is `want` (bounded).
fn routes_to(addr: SocketAddr, want: &[&str]) {
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    let end = Instant::now() + Duration::from_secs(15);
    let mut last = Vec::new();
    while Instant::now() < end {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut seen: Vec<String> =
            (0..40).map(|i| who(&mut s, i + 1).unwrap_or_else(|e| format!("error: {e}"))).collect();
        seen.sort();
        seen.dedup();
        if seen == want {
            return;
        }
        last = seen;
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("routing to {last:?}, expected {want:?}");
}

#[test]
fn instances_come_and_go_as_the_registry_says() {
    let etcd = Etcd::start();
    let (a, _, _) = id_backend("a");
    let (b, _, _) = id_backend("b");
    let (c, _, _) = id_backend("c");
    let (server, addr) = proxy(&etcd, r#"{ registry = "fleet", service = "echo" }"#);
    // Nothing registered yet: a clear error, not a hang.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let e = who(&mut s, 1).unwrap_err();
    assert!(e.contains("no endpoints"), "{e}");
    // Add: a and b register, each under a lease kept alive.
    let (la, _keep_a) = etcd.lease(5);
    let (lb, keep_b) = etcd.lease(2);
    etcd.register("echo", a, &la, "");
    etcd.register("echo", b, &lb, "");
    routes_to(addr, &["a", "b"]);
    // A third one registers; a graceful stop deletes its key while a client keeps calling:
    // no call fails.
    let (lc, _keep_c) = etcd.lease(5);
    etcd.register("echo", c, &lc, "");
    routes_to(addr, &["a", "b", "c"]);
    let busy = std::thread::spawn(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut errors = Vec::new();
        for i in 0..600 {
            if let Err(e) = who(&mut s, i + 1) {
                errors.push(e);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        errors
    });
    std::thread::sleep(Duration::from_millis(300));
    etcd.deregister("echo", c);
    let errors = busy.join().unwrap();
    assert!(errors.is_empty(), "calls failed during a graceful removal: {errors:?}");
    routes_to(addr, &["a", "b"]);
    // b's keepalive stops (a crash): its key goes when the lease expires.
    drop(keep_b);
    routes_to(addr, &["a"]);
    // A value that is not JSON is skipped; the rest stays.
    etcd.put_raw("kitex/registry-etcd/echo/127.0.0.1:9", "{not json");
    let (ld, _keep_d) = etcd.lease(5);
    etcd.register("echo", b, &ld, "");
    routes_to(addr, &["a", "b"]);
    let latest = server.registries().unwrap();
    let health = latest.health.lock().unwrap()["fleet"].clone();
    assert!(health.bad_values.load(Ordering::Relaxed) >= 1);
    assert!(health.up.load(Ordering::Relaxed));
    drop(server);
}

#[test]
fn tags_filter_and_an_empty_answer_keeps_the_last_list() {
    let etcd = Etcd::start();
    let (a, _, _) = id_backend("a");
    let (b, _, _) = id_backend("b");
    let (_server, addr) = proxy(&etcd, r#"{ registry = "fleet", service = "echo", tags = { env = "prod" } }"#);
    let (l, _keep) = etcd.lease(5);
    etcd.register("echo", a, &l, r#""env":"prod""#);
    etcd.register("echo", b, &l, r#""env":"staging""#);
    routes_to(addr, &["a"]);
    // The answer turns empty: the last good list stays.
    etcd.deregister("echo", a);
    std::thread::sleep(Duration::from_millis(500));
    routes_to(addr, &["a"]);
}

#[test]
fn etcd_down_keeps_the_last_list_and_its_return_is_followed() {
    let mut etcd = Etcd::start();
    let (a, _, _) = id_backend("a");
    let (b, _, _) = id_backend("b");
    let (_server, addr) = proxy(&etcd, r#"{ registry = "fleet", service = "echo" }"#);
    let (l, keep) = etcd.lease(30);
    etcd.register("echo", a, &l, "");
    routes_to(addr, &["a"]);
    drop(keep);
    etcd.kill();
    std::thread::sleep(Duration::from_millis(500));
    routes_to(addr, &["a"]);
    etcd.run();
    let (l, _keep) = etcd.lease(30);
    etcd.register("echo", b, &l, "");
    routes_to(addr, &["a", "b"]);
}

impl Etcd {
    /// The store's revision now.
    fn revision(&self) -> i64 {
        let (out, ok) = self.ctl(&["get", "x", "-w", "json"]);
        assert!(ok, "{out}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["header"]["revision"].as_i64().unwrap()
    }
}

/// Every worker's applied revision for `cluster`, from /metrics.
fn applied(admin: SocketAddr, cluster: &str) -> Vec<i64> {
    let (_, _, text) = common::prom::get(admin, "/metrics");
    common::prom::parse(&text)
        .into_iter()
        .filter(|(n, l, _)| {
            n == "ringway_discovery_applied_revision" && l.get("cluster").map(String::as_str) == Some(cluster)
        })
        .map(|(_, _, v)| v as i64)
        .collect()
}

#[test]
fn every_worker_acknowledges_the_revision_and_a_burst_builds_few_lists() {
    let etcd = Etcd::start();
    let backends: Vec<(SocketAddr, _, _)> = (0..4).map(|_| id_backend("x")).collect();
    let mut server = Server::start(config(
        &etcd,
        r#"{ registry = "fleet", service = "echo" }"#,
        "[admin]\naddress = \"127.0.0.1:0\"",
    ))
    .unwrap();
    let admin = server.admin_addr().unwrap();
    let (l, _keep) = etcd.lease(30);
    etcd.register("echo", backends[0].0, &l, "");
    let rev = etcd.revision();
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let a = applied(admin, "echo");
        if a.len() == 2 && a.iter().all(|r| *r >= rev) {
            break;
        }
        assert!(Instant::now() < end, "workers applied {a:?}, etcd is at {rev}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A burst: 100 registrations (keys of ports nothing listens on, plus the real ones) in one
    // etcdctl transaction-free run of puts; the proxy coalesces them into a few lists.
    let updates = |s: &Server| s.registries().unwrap().health.lock().unwrap()["fleet"].updates.load(Ordering::Relaxed);
    let before = updates(&server);
    let mut script = String::new();
    for i in 0..100 {
        let addr = format!("127.0.0.1:{}", 20000 + i);
        script.push_str(&format!(
            "put kitex/registry-etcd/echo/{addr} {{\"network\":\"tcp\",\"address\":\"{addr}\",\"weight\":10}}\n"
        ));
    }
    let mut child = Command::new("etcdctl")
        .args(["--endpoints", &etcd.url(), "txn"])
        .env("ETCDCTL_API", "3")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // One transaction: no compare, 100 puts on success, none on failure.
    child.stdin.take().unwrap().write_all(format!("\n{script}\n\n").as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
    let end = Instant::now() + Duration::from_secs(10);
    while server.registries().unwrap().clusters.lock().unwrap()["echo"].endpoints.len() != 101 {
        assert!(Instant::now() < end, "the burst did not arrive");
        std::thread::sleep(Duration::from_millis(20));
    }
    let lists = updates(&server) - before;
    assert!((1..=3).contains(&lists), "100 registrations built {lists} lists");
    // /clusters and /config say the same.
    let (_, _, clusters) = common::prom::get(admin, "/clusters");
    let v: serde_json::Value = serde_json::from_str(&clusters).unwrap();
    let d = &v["clusters"][0]["discovery"];
    assert_eq!(
        (d["registry"].as_str(), d["service"].as_str(), d["endpoints"].as_u64()),
        (Some("fleet"), Some("echo"), Some(101)),
        "{d}"
    );
    assert_eq!(d["workers"].as_array().unwrap().len(), 2);
    let (_, _, cfg) = common::prom::get(admin, "/config");
    let v: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    assert_eq!(v["discovered"]["echo"]["endpoints"].as_u64(), Some(101), "{v}");
    // promtool accepts the exposition with the registry families in it.
    let (_, _, text) = common::prom::get(admin, "/metrics");
    assert!(text.contains("ringway_registry_up{registry=\"fleet\"} 1"), "{text}");
    let (passed, said) = common::prom::promtool_check(&text);
    assert!(passed && said.trim().is_empty(), "promtool: {said}");
    // A reload keeps the discovered list (it does not start from the file's none).
    server
        .reload(config(&etcd, r#"{ registry = "fleet", service = "echo" }"#, "[admin]\naddress = \"127.0.0.1:0\"\n"))
        .unwrap();
    let (_, _, clusters) = common::prom::get(admin, "/clusters");
    let v: serde_json::Value = serde_json::from_str(&clusters).unwrap();
    for w in v["clusters"][0]["discovery"]["workers"].as_array().unwrap() {
        assert_eq!(w["endpoints"].as_u64(), Some(101), "{w}");
    }
}

#[test]
fn weights_share_the_calls() {
    let etcd = Etcd::start();
    let (a, _, served_a) = id_backend("a");
    let (b, _, served_b) = id_backend("b");
    let (_server, addr) = {
        let server =
            Server::start(config(&etcd, r#"{ registry = "fleet", service = "echo" }"#, "lb = \"round_robin\""))
                .unwrap();
        let addr = server.local_addr("thrift").unwrap();
        (server, addr)
    };
    let (l, _keep) = etcd.lease(30);
    for (addr, weight) in [(a, 10), (b, 30)] {
        let key = format!("kitex/registry-etcd/echo/{addr}");
        let value = format!(r#"{{"network":"tcp","address":"{addr}","weight":{weight},"tags":{{}}}}"#);
        assert!(etcd.ctl(&["put", &key, &value, "--lease", &l]).1);
    }
    routes_to(addr, &["a", "b"]);
    let (a0, b0) = (served_a.load(Ordering::SeqCst), served_b.load(Ordering::SeqCst));
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for i in 0..400 {
        who(&mut s, i + 1).unwrap();
    }
    let (na, nb) = (served_a.load(Ordering::SeqCst) - a0, served_b.load(Ordering::SeqCst) - b0);
    assert_eq!(na + nb, 400);
    assert_eq!((na, nb), (100, 300), "weights 10 and 30 under round robin");
}

/// A TCP relay to `to` that can be cut (every connection reset, new ones refused) and restored:
/// a network partition between ringway and etcd.
struct Relay {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    conns: Arc<std::sync::Mutex<Vec<TcpStream>>>,
}

impl Relay {
    fn start(to: SocketAddr) -> Relay {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let r = Relay { addr: l.local_addr().unwrap(), open: Arc::new(AtomicBool::new(true)), conns: Arc::default() };
        let (open, conns) = (r.open.clone(), r.conns.clone());
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { continue };
                if !open.load(Ordering::SeqCst) {
                    let _ = socket2::SockRef::from(&c).set_linger(Some(Duration::ZERO));
                    continue;
                }
                let Ok(up) = TcpStream::connect(to) else { continue };
                let mut list = conns.lock().unwrap();
                list.push(c.try_clone().unwrap());
                list.push(up.try_clone().unwrap());
                for (mut from, mut into) in [(c.try_clone().unwrap(), up.try_clone().unwrap()), (up, c)] {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut into);
                        let _ = into.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        r
    }

    fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

#[test]
fn a_compaction_while_disconnected_is_read_again_in_full() {
    let etcd = Etcd::start();
    let relay = Relay::start(format!("127.0.0.1:{}", etcd.client).parse().unwrap());
    let (a, _, _) = id_backend("a");
    let (b, _, _) = id_backend("b");
    let toml = format!(
        "[runtime]\nworkers = 1\ndriver = \"epoll\"\n[[listener]]\nname = \"thrift\"\naddress = \"127.0.0.1:0\"\n\
         routes = [ {{ cluster = \"echo\" }} ]\n[[registry]]\nname = \"fleet\"\nkind = \"etcd\"\n\
         endpoints = [\"http://{}\"]\nretry_backoff = \"100ms\"\n[[cluster]]\nname = \"echo\"\n\
         discovery = {{ registry = \"fleet\", service = \"echo\" }}\n",
        relay.addr
    );
    let server = Server::start(Config::parse(&toml).unwrap()).unwrap();
    let addr = server.local_addr("thrift").unwrap();
    let (l, _keep) = etcd.lease(30);
    etcd.register("echo", a, &l, "");
    routes_to(addr, &["a"]);
    relay.cut();
    // While ringway cannot see etcd: b registers, a deregisters, and history is compacted
    // past both.
    etcd.register("echo", b, &l, "");
    etcd.deregister("echo", a);
    for i in 0..20 {
        etcd.put_raw(&format!("other/{i}"), "x");
    }
    let rev = etcd.revision();
    assert!(etcd.ctl(&["compaction", &rev.to_string()]).1);
    std::thread::sleep(Duration::from_millis(300));
    routes_to(addr, &["a"]); // the last good list meanwhile
    let latest = server.registries().unwrap();
    assert!(!latest.health.lock().unwrap()["fleet"].up.load(Ordering::Relaxed));
    relay.restore();
    routes_to(addr, &["b"]);
    let applied = latest.clusters.lock().unwrap()["echo"].revision;
    assert!(applied >= rev, "routes on revision {applied}, etcd compacted at {rev}");
}
