//! A minimal mio echo server: the size baseline for packet's core-only
//! `echo_server` and for `bench/packet_echo`, which does the same on
//! packet's core (`bench/README.md`, "Core-only figures").
//!
//! ```text
//! cd bench/mio_echo && cargo build --release
//! target/release/mio_echo [ADDR]
//! ```
//!
//! Listens on 127.0.0.1:11006 unless `ADDR` is given, prints
//! `listening on ADDR`, and echoes every byte. Edge-triggered like packet:
//! every readiness event is drained until `WouldBlock`. Each connection has
//! one buffer of bytes read but not yet written back; while it holds any,
//! the connection is not read (the same back-pressure as echo_server's
//! pause on a full outbound queue, with a smaller bound).

use std::io::{self, ErrorKind, Read, Write};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const SERVER: Token = Token(0);

struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet echoed: `buf[done..len]`.
    buf: Box<[u8]>,
    done: usize,
    len: usize,
}

/// Echoes until the socket would block or closes; `Ok(false)` once the
/// connection is over.
fn serve(c: &mut Conn) -> io::Result<bool> {
    loop {
        while c.done < c.len {
            match c.stream.write(&c.buf[c.done..c.len]) {
                Ok(n) => c.done += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(true),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        match c.stream.read(&mut c.buf) {
            Ok(0) => return Ok(false),
            Ok(n) => (c.done, c.len) = (0, n),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn main() -> io::Result<()> {
    let addr = std::env::args().nth(1);
    let addr = addr.as_deref().unwrap_or("127.0.0.1:11006");
    let addr = addr
        .parse()
        .map_err(|_| io::Error::from(ErrorKind::InvalidInput))?;
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(addr)?;
    poll.registry()
        .register(&mut listener, SERVER, Interest::READABLE)?;
    println!("listening on {}", listener.local_addr()?);

    let mut events = Events::with_capacity(1024);
    // Connection `i` has token `i + 1`; closed slots are reused.
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for event in &events {
            if event.token() != SERVER {
                let i = event.token().0 - 1;
                let slot = &mut conns[i];
                if slot.as_mut().is_some_and(|c| !serve(c).unwrap_or(false)) {
                    *slot = None;
                    free.push(i);
                }
                continue;
            }
            loop {
                let (mut stream, _) = match listener.accept() {
                    Ok(s) => s,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                let _ = stream.set_nodelay(true);
                let i = free.pop().unwrap_or_else(|| {
                    conns.push(None);
                    conns.len() - 1
                });
                let both = Interest::READABLE | Interest::WRITABLE;
                poll.registry().register(&mut stream, Token(i + 1), both)?;
                let buf = vec![0; 64 * 1024].into_boxed_slice();
                conns[i] = Some(Conn {
                    stream,
                    buf,
                    done: 0,
                    len: 0,
                });
            }
        }
    }
}
