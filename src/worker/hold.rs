//! Event coalescing: while many gRPC streams are open on a worker, its event loop sleeps
//! for `runtime.coalesce_wait` before each blocking wait, so frames from many connections
//! are handled in one turn (the park hold in the patched monoio,
//! `vendor/monoio/src/driver/hold.rs`).
//!
//! Why: at 32 gRPC connections × 10 streams, ringway's loop woke once per event (95 % of its
//! `epoll_wait` calls returned one event: HTTP/2 peers write each response as it is ready),
//! and each wake-up costs an IPI on the peer's core and a context switch here. Waiting
//! 100 µs cut CPU per call by about 40 % and raised throughput, with no loss of p50 or p99 at
//! that load (BENCHMARKS.md). Under light load the wait only adds latency, so it is on only
//! while at least `runtime.coalesce_min_streams` gRPC streams are open on the worker, and
//! off again below half of that. While on, when holds gather fewer than 1.5 events on
//! average (a moving average; one peer waiting for us, or idle long-lived streams) the loop
//! skips the next waits (1, 2, 4, … up to 1024).
//!
//! Thrift requests do not count: a pipelined Thrift connection already arrives and leaves in
//! bursts (about 55 requests per `epoll_wait` at 32×10), and the same wait cost 8 % more CPU
//! and 22 % less throughput there.

use std::cell::Cell;
use std::marker::PhantomData;
use std::time::Duration;

struct Gate {
    in_flight: Cell<u32>,
    wait: Cell<Duration>,
    min_streams: Cell<u32>,
    on: Cell<bool>,
}

thread_local! {
    static GATE: Gate = const {
        Gate {
            in_flight: Cell::new(0),
            wait: Cell::new(Duration::ZERO),
            min_streams: Cell::new(u32::MAX),
            on: Cell::new(false),
        }
    };
}

/// Sets this worker's coalescing (at start and on every config change). A zero `wait`
/// turns it off.
pub fn configure(wait: Duration, min_streams: u32) {
    GATE.with(|g| {
        g.wait.set(wait);
        g.min_streams.set(min_streams.max(1));
        if g.on.get() {
            g.on.set(false);
            monoio::set_park_hold(Duration::ZERO);
            set_timer_slack(false);
        }
        g.update();
    });
}

/// Streams open on this worker thread.
#[cfg(test)]
fn in_flight() -> u32 {
    GATE.with(|g| g.in_flight.get())
}

/// Whether the loop currently waits before blocking.
#[cfg(test)]
fn active() -> bool {
    GATE.with(|g| g.on.get())
}

impl Gate {
    fn update(&self) {
        let n = self.in_flight.get();
        let min = self.min_streams.get();
        let want = if self.on.get() { n >= min.div_ceil(2) } else { n >= min };
        let want = want && !self.wait.get().is_zero();
        if want != self.on.get() {
            self.on.set(want);
            monoio::set_park_hold(if want { self.wait.get() } else { Duration::ZERO });
            set_timer_slack(want);
            log::debug!("event coalescing {} ({n} gRPC streams open)", if want { "on" } else { "off" });
        }
    }
}

/// One gRPC stream open on this worker; counts while it lives (not `Send`: the count is the
/// thread's).
pub struct InFlight(PhantomData<*const ()>);

impl InFlight {
    pub fn new() -> InFlight {
        GATE.with(|g| {
            g.in_flight.set(g.in_flight.get() + 1);
            if !g.on.get() {
                g.update();
            }
        });
        InFlight(PhantomData)
    }
}

impl Default for InFlight {
    fn default() -> Self {
        InFlight::new()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        GATE.with(|g| {
            g.in_flight.set(g.in_flight.get() - 1);
            if g.on.get() {
                g.update();
            }
        });
    }
}

/// While coalescing, lets the kernel end this thread's sleeps close to when they are due (the
/// default timer slack, 50 µs, would stretch a 100 µs wait to up to 150 µs); otherwise back
/// to the default, so the thread's other timers may be merged as usual.
fn set_timer_slack(tight: bool) {
    // 0 restores the thread's default slack (prctl(2)).
    let ns: libc::c_ulong = if tight { 1_000 } else { 0 };
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer and changes only this thread's timer
    // slack; no memory is passed to the kernel.
    let rc = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, ns, 0, 0, 0) };
    if rc != 0 {
        log::debug!("PR_SET_TIMERSLACK: {}", std::io::Error::last_os_error());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_on_at_the_threshold_and_off_below_half() {
        configure(Duration::from_micros(50), 4);
        let mut held: Vec<InFlight> = (0..3).map(|_| InFlight::new()).collect();
        assert!(!active(), "3 of 4 in flight");
        held.push(InFlight::new());
        assert!(active(), "4 of 4 in flight");
        held.pop();
        assert!(active(), "3 in flight: still above half");
        held.pop();
        assert!(active(), "2 in flight: half, still on");
        held.pop();
        assert!(!active(), "1 in flight: below half");
        assert_eq!(in_flight(), 1);
        drop(held);
        assert_eq!(in_flight(), 0);
    }

    fn timer_slack() -> i32 {
        // SAFETY: PR_GET_TIMERSLACK reads this thread's slack; no memory is passed.
        unsafe { libc::prctl(libc::PR_GET_TIMERSLACK, 0, 0, 0, 0) }
    }

    #[test]
    fn timer_slack_is_tight_only_while_on() {
        let default = timer_slack();
        assert_ne!(default, 1_000, "test assumes the usual 50 us default");
        configure(Duration::from_micros(100), 2);
        let held: Vec<InFlight> = (0..2).map(|_| InFlight::new()).collect();
        assert!(active());
        assert_eq!(timer_slack(), 1_000);
        drop(held);
        assert!(!active());
        assert_eq!(timer_slack(), default);
    }

    #[test]
    fn zero_wait_never_switches_on() {
        configure(Duration::ZERO, 1);
        let _a = InFlight::new();
        let _b = InFlight::new();
        assert!(!active());
    }

    #[test]
    fn reconfiguring_applies_to_what_is_already_in_flight() {
        configure(Duration::ZERO, 2);
        let held: Vec<InFlight> = (0..3).map(|_| InFlight::new()).collect();
        assert!(!active());
        configure(Duration::from_micros(20), 2);
        assert!(active(), "3 in flight, threshold 2");
        configure(Duration::from_micros(20), 10);
        assert!(!active(), "3 in flight, threshold 10");
        drop(held);
    }
}
