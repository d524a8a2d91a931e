//! The protocols ringway speaks: the one place that lists them and wires them to listeners.
//! Adding a protocol means a folder of its own (codec, proxy logic, listener keys, counters)
//! and an entry in each of the lists here: the listener section it parses and its counters
//! (below, used by the config and the stats) and the task that serves its connections
//! (`serve.rs`, used by the workers).
//!
//! The two halves sit at the two ends of the layer order: the config (low) needs to know each
//! protocol's listener keys; the workers (top) need each protocol's connection task, which
//! itself uses the config. Keeping them in one file would make the config depend on every
//! protocol's proxy code.

mod serve;

use crate::config::problems::{Problems, Section};
use crate::grpc::config::{self as grpc, GrpcListener};
use crate::grpc::stats::{GrpcSnapshot, GrpcStats, H2Counters, H2Snapshot};
use crate::thrift::config::{self as thrift, ThriftListener};
use crate::thrift::stats::{ThriftSnapshot, ThriftStats};
use crate::ttstream::stats::{TtStreamSnapshot, TtStreamStats};

pub use serve::spawn_connection;

/// Which protocol a listener speaks (logs, and what a reload may not change).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolKind {
    /// Framed, TTHeader and THeader, detected per connection.
    Thrift,
    /// gRPC over HTTP/2 cleartext, prior knowledge.
    Grpc,
}

impl ProtocolKind {
    /// The name a config and the metrics use.
    pub fn name(self) -> &'static str {
        match self {
            ProtocolKind::Thrift => "thrift",
            ProtocolKind::Grpc => "grpc",
        }
    }

    /// The metric label of each request variant the protocol counts apart (`metrics::VARIANTS`).
    pub fn variant_label(self, variant: usize) -> &'static str {
        match self {
            ProtocolKind::Thrift => crate::thrift::stats::variant_label(variant),
            ProtocolKind::Grpc => "grpc",
        }
    }
}

/// A listener's protocol with its own keys, typed.
#[derive(Clone, Debug, PartialEq)]
pub enum ListenerProtocol {
    Thrift(ThriftListener),
    Grpc(GrpcListener),
}

/// Each protocol's own counters, per worker (the shared ones are in `crate::stats`).
#[derive(Default, Debug)]
pub struct ProtocolStats {
    pub thrift: ThriftStats,
    pub grpc: GrpcStats,
    /// TTHeader Streaming (on Thrift listeners).
    pub ttstream: TtStreamStats,
    /// HTTP/2 resets, GOAWAYs and abuse limits, by side and code.
    pub h2: H2Counters,
}

/// A copy of `ProtocolStats` that can cross threads.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolSnapshot {
    pub thrift: ThriftSnapshot,
    pub grpc: GrpcSnapshot,
    pub ttstream: TtStreamSnapshot,
    pub h2: H2Snapshot,
}

impl ProtocolStats {
    pub fn snapshot(&self) -> ProtocolSnapshot {
        ProtocolSnapshot {
            thrift: self.thrift.snapshot(),
            grpc: self.grpc.snapshot(),
            ttstream: self.ttstream.snapshot(),
            h2: self.h2.snapshot(),
        }
    }
}

impl ProtocolSnapshot {
    pub fn add(&mut self, o: &ProtocolSnapshot) {
        self.thrift.add(&o.thrift);
        self.grpc.add(&o.grpc);
        self.ttstream.add(&o.ttstream);
        self.h2.add(&o.h2);
    }

    pub fn pairs(&self) -> Vec<(&'static str, u64)> {
        let mut p = self.thrift.pairs();
        p.extend(self.grpc.pairs());
        p.extend(self.ttstream.pairs());
        p
    }
}

/// Every protocol's name and listener keys, for `protocol = "…"` and for naming the protocol a
/// misplaced key belongs to.
const PROTOCOLS: &[(&str, &[&str])] = &[("thrift", thrift::KEYS), ("grpc", grpc::KEYS)];

impl ListenerProtocol {
    pub fn kind(&self) -> ProtocolKind {
        match self {
            ListenerProtocol::Thrift(_) => ProtocolKind::Thrift,
            ListenerProtocol::Grpc(_) => ProtocolKind::Grpc,
        }
    }

    /// The Thrift keys, when this is a Thrift listener.
    pub fn thrift(&self) -> Option<&ThriftListener> {
        match self {
            ListenerProtocol::Thrift(t) => Some(t),
            _ => None,
        }
    }

    /// The gRPC keys, when this is a gRPC listener.
    pub fn grpc(&self) -> Option<&GrpcListener> {
        match self {
            ListenerProtocol::Grpc(g) => Some(g),
            _ => None,
        }
    }

    /// `protocol = name` (absent: thrift) with the listener's other keys in `section`: each
    /// is checked by its protocol, and a key that belongs to another protocol is refused.
    pub fn parse(name: Option<&str>, section: &Section<'_>, p: &mut Problems) -> ListenerProtocol {
        let name = match name {
            None => "thrift",
            Some(n) if PROTOCOLS.iter().any(|(k, _)| *k == n) => n,
            Some(other) => {
                let names: Vec<&str> = PROTOCOLS.iter().map(|(k, _)| *k).collect();
                p.add(section.path("protocol"), format!("unknown protocol {other:?} ({})", names.join(" | ")));
                return ListenerProtocol::Thrift(ThriftListener::default());
            }
        };
        let own = PROTOCOLS.iter().find(|(k, _)| *k == name).map_or(&[][..], |(_, keys)| *keys);
        let others: Vec<(&str, &[&str])> = PROTOCOLS.iter().filter(|(k, _)| *k != name).copied().collect();
        section.refuse_unknown(p, name, own, &others);
        match name {
            "grpc" => ListenerProtocol::Grpc(grpc::parse(section, p)),
            _ => ListenerProtocol::Thrift(thrift::parse(section, p)),
        }
    }
}
