//! The sweeper of a gRPC client connection: fails streams past their deadline
//! (DEADLINE_EXCEEDED) and resets streams whose data waited on a zero window longer than
//! `stream_stall_timeout`.

use std::rc::Rc;
use std::time::Instant;

use super::GrpcSession;
use crate::error::ErrorKind;
use crate::grpc::errors::reset_code;
use crate::grpc::stream::Due;

impl GrpcSession {
    /// Fails streams past their deadline, and resets streams whose data waited on a zero
    /// window for longer than `stream_stall_timeout`.
    pub(super) async fn sweep(self: Rc<Self>) {
        let stall = self.limits.stream_stall_timeout;
        loop {
            if self.closed.get() && self.streams.borrow().is_empty() {
                return;
            }
            let now = Instant::now();
            let mut next: Option<Instant> = None;
            let mut expired = Vec::new();
            let mut stalled = Vec::new();
            for s in self.streams.borrow().values() {
                match s.due(now, stall) {
                    Due::Expired => expired.push(s.clone()),
                    Due::Stalled => stalled.push(s.clone()),
                    Due::Later(Some(at)) => next = Some(next.map_or(at, |n| n.min(at))),
                    Due::Later(None) => {}
                }
            }
            for s in expired {
                let stats = self.stats();
                stats.timeouts.set(stats.timeouts.get() + 1);
                s.fail(&ErrorKind::Timeout { endpoint: None }.into());
            }
            for s in stalled {
                log::debug!("listener {}: stream {} stalled on a zero window; reset", self.listener, s.down_id);
                self.stats().protocols.grpc.stalled.set(self.stats().protocols.grpc.stalled.get() + 1);
                let r = reset_code(&ErrorKind::Stalled.into());
                s.count_error(&ErrorKind::Stalled);
                s.reset(Some(r), Some(r));
            }
            let woken = self.sweeper.notified();
            match next {
                Some(at) => {
                    monoio::select! {
                        _ = monoio::time::sleep_until(at.into()) => {},
                        _ = woken => {},
                    }
                }
                None => woken.await,
            }
        }
    }
}
