//! Endpoints by name through the system resolver (issue 14, item 6): ringway runs in a mount
//! namespace of its own whose /etc/hosts is a file this test rewrites (glibc rereads it on
//! every lookup), so a name resolves to two loopback addresses, then to one.
//! Needs root and `unshare` (CI has both); elsewhere the test says so and does nothing.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;

use common::apache::{Backend, Client, Reply, Wire};
use common::prom::get;
use common::{eventually, ChildGuard};

const NAME: &str = "backends.ringway.test";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Two backends on one port of 127.0.0.5 and 127.0.0.6.
fn backends() -> (Backend, Backend, u16) {
    for _ in 0..20 {
        let five = Backend::start_at("127.0.0.5:0".parse().unwrap()).unwrap();
        let port = five.addr.port();
        if let Ok(six) = Backend::start_at(SocketAddr::from(([127, 0, 0, 6], port))) {
            return (five, six, port);
        }
    }
    panic!("no port free on both 127.0.0.5 and 127.0.0.6");
}

#[test]
fn a_name_that_resolves_to_two_addresses_then_one_moves_traffic_and_keeps_connections() {
    // SAFETY: geteuid takes nothing and returns our effective uid.
    let root = unsafe { libc::geteuid() } == 0;
    let unshare = Command::new("unshare").args(["-m", "true"]).status().is_ok_and(|s| s.success());
    if !root || !unshare {
        eprintln!("needs root and unshare(1) for a private /etc/hosts: skipped (CI runs it)");
        return;
    }
    let (five, six, port) = backends();
    let dir = std::env::temp_dir().join(format!("ringway-dns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, format!("127.0.0.1 localhost\n127.0.0.5 {NAME}\n127.0.0.6 {NAME}\n")).unwrap();
    let admin = free_port();
    let conf = dir.join("ringway.toml");
    std::fs::write(
        &conf,
        format!(
            "[runtime]\nworkers = 1\ndriver = \"epoll\"\ndrain_timeout = \"1s\"\n\
             [admin]\naddress = \"127.0.0.1:{admin}\"\n\
             [[listener]]\nname = \"thrift\"\nprotocol = \"thrift\"\naddress = \"127.0.0.1:0\"\nroutes = [{{ cluster = \"named\" }}]\n\
             [[cluster]]\nname = \"named\"\nendpoints = [\"{NAME}:{port}\"]\ndns_refresh = \"200ms\"\nlb = \"round_robin\"\n"
        ),
    )
    .unwrap();
    let mut child = Command::new("unshare")
        .args(["-m", "sh", "-c", "mount --bind \"$1\" /etc/hosts && exec \"$2\" run --config \"$3\"", "sh"])
        .arg(&hosts)
        .arg(env!("CARGO_BIN_EXE_ringway"))
        .arg(&conf)
        .env("RINGWAY_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let _guard = ChildGuard(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.split("bound to ").nth(1).and_then(|s| s.split(' ').next()) {
                let _ = tx.send(addr.parse::<SocketAddr>().unwrap());
            }
            eprintln!("ringway: {line}");
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(20)).expect("ringway logs its bound address");
    let admin: SocketAddr = ([127, 0, 0, 1], admin).into();
    assert!(eventually(Duration::from_secs(10), || std::net::TcpStream::connect(admin).is_ok()));

    let mut c = Client::connect(addr, Wire::Binary);
    for seq in 1..=20 {
        assert_eq!(c.call("echo", seq, "x"), Reply::Ok("echo:x".into()));
    }
    assert_eq!((five.calls.load(Ordering::SeqCst), six.calls.load(Ordering::SeqCst)), (10, 10), "both addresses");
    let five_conns = five.accepted.load(Ordering::SeqCst);

    // The name loses an address: written in place, the mount sees the new content.
    std::fs::write(&hosts, format!("127.0.0.1 localhost\n127.0.0.5 {NAME}\n")).unwrap();
    let six_label = format!("127.0.0.6:{port}");
    assert!(
        eventually(Duration::from_secs(5), || {
            let clusters = get(admin, "/clusters").2;
            clusters.contains(&six_label) && clusters.contains("\"health\": \"removed\"")
        }),
        "the answer without 127.0.0.6 reached the worker"
    );
    let six_before = six.calls.load(Ordering::SeqCst);
    for seq in 21..=40 {
        assert_eq!(c.call("echo", seq, "x"), Reply::Ok("echo:x".into()));
    }
    assert_eq!(six.calls.load(Ordering::SeqCst), six_before, "no request to the removed address");
    assert_eq!(five.calls.load(Ordering::SeqCst), 30);
    assert_eq!(five.accepted.load(Ordering::SeqCst), five_conns, "the connection to the address that stayed was kept");

    // A lookup that fails keeps the last good answer.
    std::fs::write(&hosts, "127.0.0.1 localhost\n").unwrap();
    std::thread::sleep(Duration::from_millis(600));
    for seq in 41..=45 {
        assert_eq!(c.call("echo", seq, "x"), Reply::Ok("echo:x".into()));
    }
    assert_eq!(five.calls.load(Ordering::SeqCst), 35);
    let _ = std::fs::remove_dir_all(&dir);
}
