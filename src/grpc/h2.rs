//! HTTP/2 for the gRPC path, sans I/O: the frame layer ([`frame`]), header-block assembly
//! with its flood limits ([`block`]) and HPACK ([`hpack`]). Nothing here knows about sockets
//! or the runtime (ref §4.2, §4.3).

pub mod block;
pub mod field;
pub mod frame;
pub mod hpack;
