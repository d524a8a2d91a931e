//! The vendored monoio patch (vendor/monoio/RINGWAY-PATCH.md): on the epoll driver a short
//! read on a stream socket clears read readiness instead of waiting for an EAGAIN read.
//! These tests check what that must not break: bytes that arrive after a short read still
//! wake the reader, an EOF or reset that follows data is still seen, and a read that fills its
//! buffer keeps readiness (it proves nothing about the queue).

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::time::Duration;

use monoio::io::AsyncReadRent;
use monoio::net::{TcpStream, UnixStream};

const STEP: Duration = Duration::from_secs(5);

fn epoll() -> monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>> {
    monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().unwrap()
}

/// Reads once into a 1 KiB buffer, failing the test if nothing comes within `STEP`.
async fn read_once<R: AsyncReadRent>(r: &mut R) -> Vec<u8> {
    let (res, buf) = monoio::time::timeout(STEP, r.read(Vec::with_capacity(1024)))
        .await
        .expect("read hung: read readiness was lost");
    res.expect("read failed");
    buf
}

/// The peer side of each scenario, run on a plain thread against a std socket.
fn peer(mut w: impl Write + Send + 'static, finish: fn(&mut dyn Write)) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        w.write_all(b"first").unwrap();
        // The reader has done its short read of "first" by now, and cleared readiness.
        std::thread::sleep(Duration::from_millis(100));
        w.write_all(b"later").unwrap();
        std::thread::sleep(Duration::from_millis(100));
        finish(&mut w);
    })
}

async fn expect_scenario<R: AsyncReadRent>(r: &mut R) {
    assert_eq!(read_once(r).await, b"first");
    // Arrives after a short read: a new edge must wake us.
    assert_eq!(read_once(r).await, b"later");
    // The last bytes and the FIN arrive together; the FIN must still be read as EOF.
    assert_eq!(read_once(r).await, b"tail");
    assert!(read_once(r).await.is_empty(), "EOF expected");
    // EOF stays visible.
    assert!(read_once(r).await.is_empty(), "EOF must repeat");
}

#[test]
fn tcp_short_read_then_late_bytes_and_eof() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    epoll().block_on(async move {
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().unwrap();
        // `peer` drops the socket when its thread ends, which sends FIN right after "tail".
        let writer = peer(server, |w| w.write_all(b"tail").unwrap());
        expect_scenario(&mut client).await;
        writer.join().unwrap();
    });
}

/// The other half of the rule: a read that fills its buffer proves nothing about the queue,
/// so readiness must stay. 64 KiB arrive at once and nothing after (no new epoll edge), then
/// the reader takes them in 1 KiB reads: each must complete without another edge.
#[test]
fn tcp_full_reads_keep_readiness_while_bytes_remain() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    epoll().block_on(async move {
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let body: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 251) as u8).collect();
        server.write_all(&body).unwrap();
        // The writer keeps the socket open (no FIN: no edge) until the reader is done.
        let holder = std::thread::spawn(move || {
            let _ = done_rx.recv_timeout(Duration::from_secs(30));
            drop(server);
        });
        // Let every byte reach the receive queue before the first read.
        std::thread::sleep(Duration::from_millis(100));
        let mut got = Vec::new();
        while got.len() < body.len() {
            let chunk = read_once(&mut client).await;
            assert!(!chunk.is_empty(), "EOF before all bytes");
            got.extend_from_slice(&chunk);
        }
        assert!(got == body, "bytes differ");
        done_tx.send(()).unwrap();
        holder.join().unwrap();
    });
}

#[test]
fn unix_short_read_then_late_bytes_and_eof() {
    let (ours, theirs) = StdUnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    epoll().block_on(async move {
        let mut ours = UnixStream::from_std(ours).unwrap();
        let writer = peer(theirs, |w| w.write_all(b"tail").unwrap());
        expect_scenario(&mut ours).await;
        writer.join().unwrap();
    });
}

#[test]
fn tcp_reset_after_short_read_is_seen() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    epoll().block_on(async move {
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().unwrap();
        let writer = std::thread::spawn(move || {
            (&server).write_all(b"first").unwrap();
            std::thread::sleep(Duration::from_millis(100));
            // SO_LINGER 0 turns the close into a reset.
            socket_linger_zero(&server);
            drop(server);
        });
        assert_eq!(read_once(&mut client).await, b"first");
        let (res, _) = monoio::time::timeout(STEP, client.read(Vec::with_capacity(1024)))
            .await
            .expect("read hung: the close after a short read was not seen");
        match res {
            Ok(0) | Err(_) => {}
            Ok(n) => panic!("expected EOF or reset, read {n} bytes"),
        }
        writer.join().unwrap();
    });
}

fn socket_linger_zero(s: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: `s` is a live socket for the duration of the call, and the pointer and length
    // describe a valid `linger` value on this stack frame.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
}
