//! The protocols ringway speaks, and the one place that wires them to listeners. Adding a
//! protocol means a folder of its own (codec, proxy logic) and an entry here.
//!
//! - `serve`: an accepted connection goes to its listener's protocol.

mod serve;

pub use serve::spawn_connection;
