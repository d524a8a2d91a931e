//! ringway patch: a park hold (event-loop interrupt moderation).
//!
//! When the run queue is empty the runtime parks: it blocks in `epoll_wait` or
//! `io_uring_enter` until the next event. Under load from many independent peers that
//! means one wake-up per event: each one is an IPI for the peer that sends it and a
//! context switch here, and every read and write covers a single event's bytes.
//!
//! With a hold set, a park that would block first sleeps for the hold, and only then
//! waits. Events from many sockets arrive during the sleep and are taken in one turn:
//! fewer wake-ups, bigger reads and writes, at the cost of up to the hold's time per turn.
//! Nothing is delayed by more than the hold, a park with a shorter timer deadline does not
//! hold, and a park that must not block (foreign wakers, tasks made ready) never holds.
//!
//! Holds that gather fewer than two events batch nothing (idle, or one peer that waits for
//! us). When the moving average of what holds gathered drops below 1.5, the next holds are
//! skipped, 1, 2, 4, … up to `MAX_SKIP` parks, until holds gather more again.
//! The application decides when holding is allowed at all (ringway: while enough gRPC
//! streams are open on the thread) with [`set_park_hold`].

use std::{cell::Cell, time::Duration};

/// Most parks skipped after repeated useless holds.
const MAX_SKIP: u32 = 1024;

/// Holds are kept while they gather at least 1.5 events on average (fixed point, 1.0 = 16).
const AVG_KEEP: u32 = 24;
/// Where the average starts: holding is given a chance.
const AVG_START: u32 = 32;

struct Hold {
    /// Zero: off.
    hold: Cell<Duration>,
    /// Parks still to skip before the next hold.
    skip: Cell<u32>,
    /// What `skip` is set to after the next useless hold.
    backoff: Cell<u32>,
    /// Moving average of what holds gathered (fixed point, 1.0 = 16).
    avg: Cell<u32>,
}

thread_local! {
    static HOLD: Hold = const {
        Hold {
            hold: Cell::new(Duration::ZERO),
            skip: Cell::new(0),
            backoff: Cell::new(1),
            avg: Cell::new(AVG_START),
        }
    };
}

/// Sets this thread's park hold; `Duration::ZERO` turns it off. Each call starts afresh
/// (no holds left to skip). Cheap: the application may call it whenever its load changes.
pub fn set_park_hold(hold: Duration) {
    HOLD.with(|h| {
        h.hold.set(hold);
        h.skip.set(0);
        h.backoff.set(1);
        h.avg.set(AVG_START);
    });
}

/// Sleeps for the hold before a blocking park, when one applies; shortens `timeout` by
/// the time slept. `prepare` runs just before the sleep (the io_uring driver submits what
/// is queued, so writes are not held back). Returns whether it slept; the
/// driver then tells [`after`] whether anything arrived meanwhile.
pub(crate) fn before(
    timeout: &mut Option<Duration>,
    prepare: impl FnOnce() -> std::io::Result<()>,
) -> std::io::Result<bool> {
    let hold = HOLD.with(|h| h.hold.get());
    // A park that may not block as long as the hold (timer due, or must not block at all) is
    // not one that could hold, so it does not use up a skip either.
    if hold.is_zero() || matches!(timeout, Some(t) if *t <= hold) {
        return Ok(false);
    }
    let skipped = HOLD.with(|h| {
        let n = h.skip.get();
        if n > 0 {
            h.skip.set(n - 1);
        }
        n > 0
    });
    if skipped {
        return Ok(false);
    }
    if let Some(t) = timeout {
        *t -= hold;
    }
    prepare()?;
    std::thread::sleep(hold);
    Ok(true)
}

/// Records what a hold gathered: the events (epoll) or completions (io_uring) that arrived
/// while it slept. Holds are kept while they gather at least 1.5 on average (a moving
/// average over the last few holds, so one thin hold under load does not count); one or
/// none per hold means nothing is batched (idle, or a peer that waits for us) and the hold
/// only adds latency, so the next holds are skipped.
pub(crate) fn after(gathered: usize) {
    HOLD.with(|h| {
        // Fixed point, 1.0 = 16; weight 1/4 for the newest hold.
        let avg = (h.avg.get() * 3 + (gathered.min(64) as u32) * 16) / 4;
        h.avg.set(avg);
        if avg >= AVG_KEEP {
            h.backoff.set(1);
        } else {
            h.skip.set(h.backoff.get());
            h.backoff.set((h.backoff.get() * 2).min(MAX_SKIP));
        }
    })
}

// ringway patch: idle busy-polling (a park spin).
//
// On a machine where waking an idle core is slow (a VM: an IPI and a halt exit per wake-up),
// a ping-pong exchange with a peer pays a sleep and a wake-up on every hop. With a spin set,
// a park that would block first polls without blocking for up to the spin, and blocks only
// if nothing arrived: the thread stays on its core, at the price of that core's time. It is
// the same trade as HAProxy's `busy-polling` and Seastar's idle poll.
//
// Spins that catch nothing (idle, or a peer slower than the spin) back off: the next spins
// are skipped, 1, 2, 4, … up to `MAX_SKIP` parks, until one catches something again. So an
// idle thread spins rarely, and a thread whose events come further apart than the spin
// stops spinning. The spin does not apply while a hold is set (the two are opposites: a
// hold waits for events to pile up, a spin catches each at once).

struct Spin {
    /// Zero: off.
    spin: Cell<Duration>,
    skip: Cell<u32>,
    backoff: Cell<u32>,
}

thread_local! {
    static SPIN: Spin = const {
        Spin { spin: Cell::new(Duration::ZERO), skip: Cell::new(0), backoff: Cell::new(1) }
    };
}

/// Sets this thread's park spin; `Duration::ZERO` turns it off (the default). Each call
/// starts afresh (no spins left to skip).
pub fn set_park_spin(spin: Duration) {
    SPIN.with(|s| {
        s.spin.set(spin);
        s.skip.set(0);
        s.backoff.set(1);
    });
}

/// Before a park that would block: calls `poll` (which must not block and says whether
/// anything is ready) until it says yes or the spin (or `timeout`, if sooner) has passed.
/// Returns whether it caught something; `timeout` is shortened by the time spent.
pub(crate) fn spin(
    timeout: &mut Option<Duration>,
    mut poll: impl FnMut() -> std::io::Result<bool>,
) -> std::io::Result<bool> {
    let spin = SPIN.with(|s| s.spin.get());
    if spin.is_zero() || timeout.is_some_and(|t| t.is_zero()) || !HOLD.with(|h| h.hold.get().is_zero()) {
        return Ok(false);
    }
    let skipped = SPIN.with(|s| {
        let n = s.skip.get();
        if n > 0 {
            s.skip.set(n - 1);
        }
        n > 0
    });
    if skipped {
        return Ok(false);
    }
    let limit = timeout.map_or(spin, |t| t.min(spin));
    let start = std::time::Instant::now();
    let caught = loop {
        if poll()? {
            break true;
        }
        if start.elapsed() >= limit {
            break false;
        }
        std::hint::spin_loop();
    };
    if let Some(t) = timeout {
        *t = t.saturating_sub(start.elapsed());
    }
    SPIN.with(|s| {
        if caught {
            s.backoff.set(1);
        } else if limit == spin {
            // A spin cut short by a timer says nothing about the peers.
            s.skip.set(s.backoff.get());
            s.backoff.set((s.backoff.get() * 2).min(MAX_SKIP));
        }
    });
    Ok(caught)
}
