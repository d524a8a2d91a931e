//! Peers built on the crates.io `thrift` crate (Apache Thrift's Rust library): its framed
//! transports and binary/compact protocols do every byte of encoding and decoding here.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thrift::protocol::{
    TBinaryInputProtocol, TBinaryOutputProtocol, TCompactInputProtocol, TCompactOutputProtocol, TFieldIdentifier,
    TInputProtocol, TMessageIdentifier, TMessageType, TOutputProtocol, TStructIdentifier, TType,
};
use thrift::transport::{TFramedReadTransport, TFramedWriteTransport, TIoChannel, TTcpChannel};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    Binary,
    /// Old (non-strict) binary: what `TBinaryOutputProtocol::new(_, false)` writes.
    BinaryNonStrict,
    Compact,
}

type Protos = (Box<dyn TInputProtocol + Send>, Box<dyn TOutputProtocol + Send>);

fn protocols(stream: TcpStream, wire: Wire) -> Protos {
    let (r, w) = TTcpChannel::with_stream(stream).split().unwrap();
    let (r, w) = (TFramedReadTransport::new(r), TFramedWriteTransport::new(w));
    match wire {
        Wire::Binary => (Box::new(TBinaryInputProtocol::new(r, true)), Box::new(TBinaryOutputProtocol::new(w, true))),
        Wire::BinaryNonStrict => {
            (Box::new(TBinaryInputProtocol::new(r, false)), Box::new(TBinaryOutputProtocol::new(w, false)))
        }
        Wire::Compact => (Box::new(TCompactInputProtocol::new(r)), Box::new(TCompactOutputProtocol::new(w))),
    }
}

/// Reads a struct and returns its first string field (field 0 or 1); skips everything else.
fn read_string_struct(i: &mut dyn TInputProtocol) -> thrift::Result<String> {
    let mut text = String::new();
    i.read_struct_begin()?;
    loop {
        let f = i.read_field_begin()?;
        if f.field_type == TType::Stop {
            break;
        }
        if f.field_type == TType::String && matches!(f.id, Some(0) | Some(1)) {
            text = i.read_string()?;
        } else {
            i.skip(f.field_type)?;
        }
        i.read_field_end()?;
    }
    i.read_struct_end()?;
    Ok(text)
}

fn write_string_struct(o: &mut dyn TOutputProtocol, id: i16, value: &str) -> thrift::Result<()> {
    o.write_struct_begin(&TStructIdentifier::new("s"))?;
    o.write_field_begin(&TFieldIdentifier::new("text", TType::String, id))?;
    o.write_string(value)?;
    o.write_field_end()?;
    o.write_field_stop()?;
    o.write_struct_end()
}

/// A framed Apache Thrift echo server on its own threads. Method `slow*` waits `slow` first;
/// method `fail*` is answered with the backend's own EXCEPTION (INTERNAL_ERROR).
pub struct Backend {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    /// Connections accepted so far (the proxy's upstream connections).
    pub accepted: Arc<AtomicUsize>,
    /// Calls answered so far.
    pub calls: Arc<AtomicUsize>,
    /// Text of every ONEWAY received.
    pub oneways: Arc<Mutex<Vec<String>>>,
}

impl Backend {
    pub fn start(wire: Wire, slow: Duration) -> Backend {
        Backend::serve_on(TcpListener::bind("127.0.0.1:0").unwrap(), wire, slow)
    }

    /// A backend on a given address (another loopback address, say).
    pub fn start_at(addr: SocketAddr) -> std::io::Result<Backend> {
        Ok(Backend::serve_on(TcpListener::bind(addr)?, Wire::Binary, Duration::ZERO))
    }

    /// A backend on a given port (a "restarted" backend).
    pub fn start_on(wire: Wire, port: u16) -> Backend {
        Backend::serve_on(TcpListener::bind(("127.0.0.1", port)).unwrap(), wire, Duration::ZERO)
    }

    fn serve_on(listener: TcpListener, wire: Wire, slow: Duration) -> Backend {
        let addr = listener.local_addr().unwrap();
        let b = Backend {
            addr,
            stop: Arc::new(AtomicBool::new(false)),
            conns: Arc::default(),
            accepted: Arc::default(),
            calls: Arc::default(),
            oneways: Arc::default(),
        };
        let (stop, conns, accepted, calls, oneways) =
            (b.stop.clone(), b.conns.clone(), b.accepted.clone(), b.calls.clone(), b.oneways.clone());
        std::thread::spawn(move || {
            for s in listener.incoming() {
                let Ok(s) = s else { continue };
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                accepted.fetch_add(1, Ordering::SeqCst);
                conns.lock().unwrap().push(s.try_clone().unwrap());
                let (calls, oneways) = (calls.clone(), oneways.clone());
                std::thread::spawn(move || {
                    let (mut i, mut o) = protocols(s, wire);
                    let _ = serve(&mut *i, &mut *o, slow, &calls, &oneways);
                });
            }
        });
        b
    }

    pub fn endpoint(&self) -> String {
        self.addr.to_string()
    }

    /// Stops accepting and cuts every open connection, like a crashed process.
    pub fn kill(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

fn serve(
    i: &mut dyn TInputProtocol,
    o: &mut dyn TOutputProtocol,
    slow: Duration,
    calls: &AtomicUsize,
    oneways: &Mutex<Vec<String>>,
) -> thrift::Result<()> {
    loop {
        let id = i.read_message_begin()?;
        let text = read_string_struct(i)?;
        i.read_message_end()?;
        if id.message_type == TMessageType::OneWay {
            oneways.lock().unwrap().push(text);
            continue;
        }
        let method = id.name.rsplit(':').next().unwrap_or("").to_string();
        if method.starts_with("slow") {
            std::thread::sleep(slow);
        }
        // Counted before the reply is written: a client that has its reply must see the count.
        calls.fetch_add(1, Ordering::SeqCst);
        if method.starts_with("fail") {
            // The backend's own EXCEPTION, as a generated server writes for an error.
            let ident = TMessageIdentifier::new(id.name.clone(), TMessageType::Exception, id.sequence_number);
            o.write_message_begin(&ident)?;
            let e =
                thrift::ApplicationError::new(thrift::ApplicationErrorKind::InternalError, format!("{method} failed"));
            thrift::Error::write_application_error_to_out_protocol(&e, o)?;
            o.write_message_end()?;
            o.flush()?;
            continue;
        }
        o.write_message_begin(&TMessageIdentifier::new(id.name.clone(), TMessageType::Reply, id.sequence_number))?;
        write_string_struct(o, 0, &format!("{method}:{text}"))?;
        o.write_message_end()?;
        o.flush()?;
    }
}

/// What came back for one call.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    Ok(String),
    Exception { kind: thrift::ApplicationErrorKind, message: String },
}

/// A framed Apache Thrift client that can pipeline: send several calls, then read replies
/// and match them by seqID, as a multiplexing client would.
pub struct Client {
    i: Box<dyn TInputProtocol + Send>,
    o: Box<dyn TOutputProtocol + Send>,
}

impl Client {
    pub fn connect(addr: SocketAddr, wire: Wire) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let (i, o) = protocols(s, wire);
        Client { i, o }
    }

    pub fn send(&mut self, name: &str, seq: i32, text: &str, oneway: bool) {
        let kind = if oneway { TMessageType::OneWay } else { TMessageType::Call };
        self.o.write_message_begin(&TMessageIdentifier::new(name, kind, seq)).unwrap();
        write_string_struct(&mut *self.o, 1, text).unwrap();
        self.o.write_message_end().unwrap();
        self.o.flush().unwrap();
    }

    /// Reads one reply: (method name, seqID, reply).
    pub fn recv(&mut self) -> thrift::Result<(String, i32, Reply)> {
        let id = self.i.read_message_begin()?;
        let reply = if id.message_type == TMessageType::Exception {
            let e = thrift::Error::read_application_error_from_in_protocol(&mut *self.i)?;
            Reply::Exception { kind: e.kind, message: e.message }
        } else {
            Reply::Ok(read_string_struct(&mut *self.i)?)
        };
        self.i.read_message_end()?;
        Ok((id.name, id.sequence_number, reply))
    }

    /// One call; panics unless the reply carries our method name and seqID.
    pub fn call(&mut self, name: &str, seq: i32, text: &str) -> Reply {
        self.send(name, seq, text, false);
        let (rname, rseq, reply) = self.recv().expect("a reply");
        assert_eq!(rseq, seq, "reply seqID");
        assert_eq!(rname, name, "reply method name");
        reply
    }

    /// Sends `n` pipelined calls and checks that each reply answers its own request.
    pub fn burst(&mut self, tag: &str, first_seq: i32, n: i32) -> usize {
        let mut want = HashMap::new();
        for k in 0..n {
            let seq = first_seq + k;
            let text = format!("{tag}-{seq}");
            self.send("echo", seq, &text, false);
            want.insert(seq, format!("echo:{text}"));
        }
        for _ in 0..n {
            let (name, seq, reply) = self.recv().expect("a reply");
            assert_eq!(name, "echo");
            let expected = want.remove(&seq).unwrap_or_else(|| panic!("{tag}: unexpected or duplicate seqID {seq}"));
            assert_eq!(reply, Reply::Ok(expected), "{tag}: reply for seq {seq}");
        }
        n as usize
    }
}
