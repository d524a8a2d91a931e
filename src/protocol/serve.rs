//! Wires an accepted connection to its listener's protocol: the one match over protocols on
//! the connection path. Each protocol's `serve` registers the connection with the worker and
//! returns the task that serves it; the task runs under `Guarded`, so a panic closes only
//! that connection.

use std::rc::Rc;

use monoio::io::{CancelableAsyncReadRent, CancelableAsyncWriteRent, Splitable};

use super::ProtocolKind;
use crate::local::Guarded;
use crate::metrics::{bump, CloseReason, ConnMeter};
use crate::worker::state::WorkerState;
use crate::{grpc, thrift};

/// Starts serving one accepted connection of `listener`.
pub fn spawn_connection<S>(stream: S, listener: Rc<str>, state: Rc<WorkerState>)
where
    S: Splitable + 'static,
    S::OwnedRead: CancelableAsyncReadRent + 'static,
    S::OwnedWrite: CancelableAsyncWriteRent + 'static,
{
    let (protocol, max) = match state.view().listener(&listener) {
        Some(l) => (l.protocol.kind(), l.max_connections),
        None => (ProtocolKind::Thrift, usize::MAX),
    };
    let metrics = state.metrics.listener(&listener, protocol.name());
    if metrics.active() >= max as u64 {
        // Over the listener's limit on this worker: closed at once (the stream drops here),
        // counted; the open connections are untouched.
        bump(&metrics.rejected);
        log::debug!("worker {}: listener {listener}: {max} connections open; new connection closed", state.id);
        return;
    }
    state.stats.downstream_connections.set(state.stats.downstream_connections.get() + 1);
    let meter = Rc::new(ConnMeter::accepted(metrics));
    let s = state.clone();
    let name = listener.clone();
    let panic_meter = meter.clone();
    let on_panic = move |p| {
        panic_meter.closing(CloseReason::Panic);
        s.stats.panics.set(s.stats.panics.get() + 1);
        log::error!("worker {}: listener {name}: connection task panicked ({p}); connection closed", s.id);
    };
    // One allocation per connection: the task holds the connection future inline.
    match protocol {
        ProtocolKind::Grpc => {
            monoio::spawn(Guarded::new(grpc::serve(stream, listener, &state, meter), on_panic));
        }
        ProtocolKind::Thrift => {
            monoio::spawn(Guarded::new(thrift::downstream::serve(stream, listener, &state, meter), on_panic));
        }
    }
}
