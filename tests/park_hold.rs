//! The park hold in the vendored monoio (`vendor/monoio/src/driver/hold.rs`), on both
//! drivers: a blocking wait first sleeps for the hold and takes what arrived meanwhile, a
//! timer due sooner than the hold is not delayed, holds that batch nothing (one event each)
//! back off, and holds that batch go on. Lower bounds are what the hold guarantees; the upper bounds leave
//! hundreds of milliseconds for a slow machine.

use std::future::Future;
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use monoio::io::AsyncReadRent;
use monoio::net::UnixStream;

const HOLD: Duration = Duration::from_millis(300);
/// Far below `HOLD`: a wait that took less than this was not held.
const UNHELD: Duration = Duration::from_millis(200);

fn on_both_drivers<F: Future<Output = ()>>(scenario: fn() -> F) {
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().unwrap();
    rt.block_on(held(scenario()));
    if !ringway::worker::io_uring_available() {
        eprintln!("io_uring unavailable here: epoll driver only");
        return;
    }
    // The ring ringway builds (COOP_TASKRUN + TASKRUN_FLAG: completions wait for task work).
    let mut b = io_uring::IoUring::builder();
    b.setup_coop_taskrun().setup_taskrun_flag();
    let mut rt =
        monoio::RuntimeBuilder::<monoio::IoUringDriver>::new().uring_builder(b).enable_timer().build().unwrap();
    rt.block_on(held(scenario()));
}

/// Runs a scenario with the hold off before and after (it is per thread).
async fn held(scenario: impl Future<Output = ()>) {
    monoio::set_park_hold(Duration::ZERO);
    scenario.await;
    monoio::set_park_hold(Duration::ZERO);
}

/// A socket pair whose far end a thread writes one byte to, `after` each request.
struct Peer {
    ours: UnixStream,
    ask: mpsc::Sender<Duration>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Peer {
    fn new() -> Peer {
        let (a, mut b) = StdUnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let (ask, asks) = mpsc::channel::<Duration>();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            while let Ok(after) = asks.recv() {
                std::thread::sleep(after);
                b.write_all(b"x").unwrap();
            }
        });
        Peer { ours: UnixStream::from_std(a).unwrap(), ask, writer: Some(writer) }
    }

    /// Asks for a byte `after` from now and returns how long reading it took.
    async fn byte_after(&mut self, after: Duration) -> Duration {
        let t = Instant::now();
        self.ask.send(after).unwrap();
        let (res, _) = monoio::time::timeout(Duration::from_secs(10), self.ours.read(Vec::with_capacity(16)))
            .await
            .expect("read hung");
        assert_eq!(res.unwrap(), 1);
        t.elapsed()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let (tx, _) = mpsc::channel();
        self.ask = tx;
        if let Some(w) = self.writer.take() {
            w.join().unwrap();
        }
    }
}

async fn gathers() {
    let mut peer = Peer::new();
    // Warm up the registration (the first read may complete without parking).
    peer.byte_after(Duration::ZERO).await;

    monoio::set_park_hold(HOLD);
    let held = peer.byte_after(Duration::from_millis(10)).await;
    assert!(held >= HOLD, "the byte came after 10 ms but a {HOLD:?} hold must come first: read took {held:?}");
    assert!(held < HOLD + UNHELD, "one hold, then the byte at once: read took {held:?}");

    monoio::set_park_hold(Duration::ZERO);
    let unheld = peer.byte_after(Duration::from_millis(10)).await;
    assert!(unheld < UNHELD, "no hold: the read should take ~10 ms, took {unheld:?}");
}

async fn timer_not_held() {
    monoio::set_park_hold(Duration::from_secs(2));
    let t = Instant::now();
    monoio::time::sleep(Duration::from_millis(20)).await;
    let took = t.elapsed();
    assert!(took < Duration::from_secs(1), "a 20 ms timer must not wait for a 2 s hold: took {took:?}");
}

/// Each wait gets one byte, so no hold batches anything: holding backs off.
async fn backoff() {
    let mut peer = Peer::new();
    peer.byte_after(Duration::ZERO).await;
    monoio::set_park_hold(HOLD);

    // Nothing arrives during the first hold: the wait then blocks until the byte comes.
    let late = HOLD + Duration::from_millis(200);
    let first = peer.byte_after(late).await;
    assert!(first >= late, "took {first:?}");

    let mut took = vec![];
    for _ in 0..8 {
        took.push(peer.byte_after(Duration::from_millis(10)).await);
    }
    let unheld = took.iter().filter(|t| **t < UNHELD).count();
    assert!(unheld >= 3, "holds that gather one event each must back off: {took:?}");
    assert!(took.iter().all(|t| *t < UNHELD || *t >= HOLD), "{took:?}");
}

/// Each wait gets two sockets' bytes: every hold batches, and holding goes on.
async fn batches_keep_holding() {
    let (mut p1, mut p2) = (Peer::new(), Peer::new());
    p1.byte_after(Duration::ZERO).await;
    p2.byte_after(Duration::ZERO).await;
    monoio::set_park_hold(HOLD);
    let soon = Duration::from_millis(10);
    for round in 0..5 {
        let (a, b) = monoio::join!(p1.byte_after(soon), p2.byte_after(soon));
        assert!(a >= HOLD && b >= HOLD, "round {round}: holds that batch two events must go on: {a:?}, {b:?}");
        assert!(a < HOLD + UNHELD && b < HOLD + UNHELD, "round {round}: one hold per round: {a:?}, {b:?}");
    }
}

#[test]
fn a_blocking_wait_is_held_and_takes_what_arrived_meanwhile() {
    on_both_drivers(gathers);
}

#[test]
fn a_timer_due_before_the_hold_ends_is_not_delayed() {
    on_both_drivers(timer_not_held);
}

#[test]
fn holds_that_batch_nothing_back_off() {
    on_both_drivers(backoff);
}

#[test]
fn holds_that_batch_go_on() {
    on_both_drivers(batches_keep_holding);
}
