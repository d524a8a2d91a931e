//! Graceful drain of a gRPC client connection (RFC 9113 §6.8): GOAWAY(2^31-1) and a PING
//! first, so requests already on the wire are not lost; on the PING's ACK (or after a second)
//! a GOAWAY naming the last stream that will be served; the connection closes once those
//! streams end, or at the drain timeout.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::GrpcSession;
use crate::grpc::h2::frame::{self, Reason, StreamId};
use crate::local::CatchUnwind;
use crate::metrics::CloseReason;
use crate::worker::state::DownstreamConn;

/// Payload of the PING that follows the first GOAWAY of a graceful drain.
pub(super) const DRAIN_PING: [u8; 8] = *b"rw-drain";
/// How long the first GOAWAY of a drain waits for the PING round trip.
const DRAIN_PING_WAIT: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Drain {
    Open,
    /// GOAWAY(2^31-1) and a PING sent.
    Announced,
    /// GOAWAY(last id) sent: no new streams; close once the open ones end.
    Final,
}

impl GrpcSession {
    /// The last stream id a GOAWAY may name: frozen by the final GOAWAY of a drain.
    pub(super) fn last_stream(&self) -> StreamId {
        self.goaway_last.get().unwrap_or(self.max_seen.get())
    }

    pub(super) fn close_if_drained(&self) {
        if self.drain.get() == Drain::Final && self.streams.borrow().is_empty() && !self.closed.replace(true) {
            self.core.out.close();
            self.core.cancel_reader();
        }
    }

    pub(super) fn final_goaway(&self) {
        if self.drain.get() != Drain::Announced {
            return;
        }
        self.drain.set(Drain::Final);
        self.goaway_last.set(Some(self.max_seen.get()));
        let mut b = BytesMut::with_capacity(32);
        frame::goaway::encode(self.max_seen.get(), Reason::NO_ERROR, b"draining", &mut b);
        self.core.count_goaway(Reason::NO_ERROR);
        self.core.push(b);
        self.close_if_drained();
    }
}

/// Drain: the two-phase GOAWAY; streams already open finish; the connection closes once
/// they have, or at the drain timeout.
impl DownstreamConn for GrpcSession {
    /// Graceful drain, phase one: GOAWAY(2^31-1) and a PING; phase two (on the PING's ACK, or
    /// after a second) names the last stream that will be served.
    fn start_drain(self: Rc<Self>) {
        if self.drain.get() != Drain::Open || self.closed.get() {
            return;
        }
        self.drain.set(Drain::Announced);
        self.meter.closing(CloseReason::Drain);
        self.core.count_goaway(Reason::NO_ERROR);
        let mut b = BytesMut::with_capacity(40);
        frame::goaway::encode(StreamId::MAX, Reason::NO_ERROR, b"draining", &mut b);
        frame::ping::encode(frame::ping::Ping { ack: false, data: DRAIN_PING }, &mut b);
        self.core.push(b);
        let c = self.clone();
        monoio::spawn(async move {
            monoio::time::sleep(DRAIN_PING_WAIT).await;
            if CatchUnwind::new(async { c.final_goaway() }).await.is_err() {
                c.panicked("drain");
            }
        });
    }

    fn close_if_idle(&self, _idle: Duration, _now: Instant) {}

    /// A client that reads none of its responses: the write in flight is cancelled, queued
    /// frames dropped, and the reader stopped, which cancels every stream upstream (RST_STREAM
    /// CANCEL) and frees what they hold; the upstream connections stay for the others.
    fn close_if_stalled(&self, now: Instant) -> bool {
        let timeout = self.limits_write_stall();
        if self.closed.get() || !self.core.out.stalled(&self.stall, now, timeout) {
            return false;
        }
        log::warn!(
            "listener {}: a client read none of its responses for {timeout:?} ({} bytes queued, {} streams open); connection closed",
            self.listener,
            self.core.out.queued_bytes(),
            self.open_streams()
        );
        self.meter.closing(CloseReason::WriteStall);
        self.core.out.abort();
        self.core.cancel_reader();
        true
    }

    fn requests_active(&self) -> usize {
        self.open_streams()
    }

    /// Forced close (drain timeout).
    fn close_now(self: Rc<Self>) {
        self.meter.closing(CloseReason::Drain);
        if !self.closed.get() {
            self.core.go_away(self.last_stream(), Reason::NO_ERROR, "shutting down");
            self.closed.set(true);
        }
        self.core.cancel_reader();
    }
}
