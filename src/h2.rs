//! HTTP/2 for the gRPC path, sans I/O: the frame layer ([`frame`]) and HPACK ([`hpack`]).
//! Nothing here knows about sockets or the runtime (ref §4.2, §4.3).

pub mod hpack;
