//! Upstream side: per-worker pools of multiplexed connections. Each pool serves one cluster in
//! one Thrift dialect; each connection allocates its own seqIDs and matches replies by them.

pub mod conn;
pub mod pool;
pub mod seqtable;

pub use conn::UpConn;
pub use pool::{AcquireError, Pool};
