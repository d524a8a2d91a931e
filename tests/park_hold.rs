//! The park hold and the park spin in the vendored monoio (`vendor/monoio/src/driver/hold.rs`),
//! on both drivers.
//!
//! Hold: a blocking wait first sleeps for the hold and takes what arrived meanwhile, a timer
//! due sooner than the hold is not delayed, holds that batch nothing (one event each) back
//! off, and holds that batch go on.
//!
//! Spin: a wait polls without sleeping and takes an event that comes within the spin, a timer
//! is not delayed by it, a hold takes precedence, and spins that catch nothing back off
//! until one catches something again.
//!
//! Lower bounds are what the hold guarantees; the upper bounds leave hundreds of milliseconds
//! for a slow machine.

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

/// Runs a scenario with the hold and the spin off before and after (they are per thread).
async fn held(scenario: impl Future<Output = ()>) {
    monoio::set_park_hold(Duration::ZERO);
    monoio::set_park_spin(Duration::ZERO);
    scenario.await;
    monoio::set_park_hold(Duration::ZERO);
    monoio::set_park_spin(Duration::ZERO);
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

/// A 20 ms timer with a 2 s hold or spin (`set`) must fire long before the 2 s.
async fn timer_not_delayed_by(set: fn(Duration), what: &str) {
    set(Duration::from_secs(2));
    let t = Instant::now();
    monoio::time::sleep(Duration::from_millis(20)).await;
    let took = t.elapsed();
    assert!(took < Duration::from_secs(1), "a 20 ms timer must not wait for a 2 s {what}: took {took:?}");
}

async fn timer_not_held() {
    timer_not_delayed_by(monoio::set_park_hold, "hold").await;
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

/// Times this thread gave up its core (slept) so far.
fn voluntary_switches() -> u64 {
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("voluntary_ctxt_switches:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// CPU time this thread has used so far.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    assert_eq!(unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) }, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Reads a byte that comes `after`; returns how long it took and whether the thread slept.
async fn read_counting(peer: &mut Peer, after: Duration) -> (Duration, u64) {
    let before = voluntary_switches();
    let took = peer.byte_after(after).await;
    (took, voluntary_switches() - before)
}

async fn spin_takes_the_event_without_sleeping() {
    let mut peer = Peer::new();
    peer.byte_after(Duration::ZERO).await;
    let soon = Duration::from_millis(20);

    let (_, slept) = read_counting(&mut peer, soon).await;
    assert!(slept >= 1, "without a spin the wait sleeps");

    monoio::set_park_spin(Duration::from_millis(500));
    let (took, slept) = read_counting(&mut peer, soon).await;
    assert_eq!(slept, 0, "a 500 ms spin takes a byte that comes after 20 ms without sleeping");
    assert!(took < UNHELD, "and at once: took {took:?}");

    // A hold takes precedence, also while it backs off (holds of one event each): then the
    // wait blocks, it does not spin.
    let hold = Duration::from_millis(50);
    monoio::set_park_hold(hold);
    let mut reads = vec![];
    for _ in 0..6 {
        reads.push(read_counting(&mut peer, Duration::from_millis(5)).await);
    }
    assert!(reads.iter().any(|(took, _)| *took < hold), "holds of one event each back off: {reads:?}");
    assert!(reads.iter().all(|(_, slept)| *slept >= 1), "with a hold set the wait never spins: {reads:?}");
}

async fn timer_not_spun() {
    timer_not_delayed_by(monoio::set_park_spin, "spin").await;
}

/// Bytes that come after the spin: spinning backs off; bytes that come soon again: it
/// catches them and goes on.
async fn spin_backoff() {
    let mut peer = Peer::new();
    peer.byte_after(Duration::ZERO).await;
    let spin = Duration::from_millis(50);
    monoio::set_park_spin(spin);

    // Ten waits of 100 ms: spinning every time would burn 10 × 50 ms; backing off spins in
    // 3 of them (the 1st, 3rd and 6th).
    let cpu = thread_cpu();
    for _ in 0..10 {
        peer.byte_after(Duration::from_millis(100)).await;
    }
    let used = thread_cpu() - cpu;
    assert!(used < Duration::from_millis(300), "spins that catch nothing must back off: {used:?} of CPU");

    // Now bytes come soon: once the skips are used up, a spin catches and spinning goes on.
    let mut slept = vec![];
    for _ in 0..12 {
        slept.push(read_counting(&mut peer, Duration::from_millis(2)).await.1);
    }
    assert!(slept[8..].iter().all(|s| *s == 0), "spins that catch go on without sleeping: {slept:?}");
}

#[test]
fn a_spinning_wait_takes_an_event_without_sleeping_and_a_hold_comes_first() {
    on_both_drivers(spin_takes_the_event_without_sleeping);
}

#[test]
fn a_timer_due_before_the_spin_ends_is_not_delayed() {
    on_both_drivers(timer_not_spun);
}

#[test]
fn spins_that_catch_nothing_back_off_and_spins_that_catch_go_on() {
    on_both_drivers(spin_backoff);
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
