//! A third-party extension, written against `packet`'s public items only
//! (`packet::extend`, `packet::watch`): a filter between each connection's
//! socket and its handler, a plug-in source, and per-reactor state.
//!
//! ```text
//! cargo run --example xor_filter [ADDR] [KEY]
//! ```
//!
//! Listens on 127.0.0.1:11010 unless `ADDR` is given, prints `listening on
//! ADDR`. Every byte on the wire is xored with `KEY` (0-255, 90 unless
//! given) both ways, by a [`Filter`] the handler never sees: the handler
//! answers each line it reads with `echo: LINE`. A decoded NUL byte is a
//! protocol error, which closes the connection. Each line written to the
//! server's standard input (a pipe, say) goes to every connection, through
//! its filter: standard input is a plug-in source (a watch). When a
//! connection ends, a line on standard error says why and how many bytes
//! its filter decoded and encoded; the totals are per-reactor state (an
//! [`Extension`]), printed when standard input ends. `SIGTERM` or Ctrl-C
//! stops it gracefully.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::rc::Rc;

use packet::extend::Extension;
use packet::watch::{Watch, Watcher};
use packet::{CloseReason, ConnId, Connection, Handler, Reactor};

/// The extension: a xor cipher that counts what it moves.
mod xor {
    use std::cell::Cell;
    use std::io;
    use std::rc::Rc;

    use packet::extend::{Filter, FilterOutput};

    /// Bytes a filter decoded (read) and encoded (written), shared with
    /// the connection's handler, which reports them.
    #[derive(Default)]
    pub struct Counts {
        pub decoded: Cell<u64>,
        pub encoded: Cell<u64>,
    }

    pub struct Xor {
        pub key: u8,
        pub counts: Rc<Counts>,
    }

    impl Filter for Xor {
        fn decode(&mut self, from_socket: &[u8], to_handler: &mut Vec<u8>) -> io::Result<()> {
            let start = to_handler.len();
            to_handler.extend(from_socket.iter().map(|b| b ^ self.key));
            if let Some(at) = to_handler[start..].iter().position(|&b| b == 0) {
                // What came before the NUL still reaches the handler.
                to_handler.truncate(start + at);
                self.counts
                    .decoded
                    .set(self.counts.decoded.get() + at as u64);
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a NUL byte in the decoded stream",
                ));
            }
            let n = from_socket.len() as u64;
            self.counts.decoded.set(self.counts.decoded.get() + n);
            Ok(())
        }

        fn encode(&mut self, from_handler: &[u8], to_socket: &mut FilterOutput<'_>) {
            to_socket.extend(from_handler.iter().map(|b| b ^ self.key));
            let n = from_handler.len() as u64;
            self.counts.encoded.set(self.counts.encoded.get() + n);
        }
    }
}

/// Per-reactor state: the connections open, and the filters' totals.
#[derive(Default)]
struct Clients {
    open: Vec<ConnId>,
    decoded: u64,
    encoded: u64,
}

impl Extension for Clients {}

/// A line echo that sees only plaintext.
struct LineEcho {
    key: u8,
    counts: Rc<xor::Counts>,
    line: Vec<u8>,
}

impl Handler for LineEcho {
    fn post_init(&mut self, conn: &mut Connection<'_>) {
        let filter = xor::Xor {
            key: self.key,
            counts: self.counts.clone(),
        };
        if let Err(e) = conn.set_filter(filter) {
            eprintln!("xor_filter: {}: no filter: {e}", conn.id());
            conn.close_connection();
            return;
        }
        let id = conn.id();
        conn.reactor()
            .extensions()
            .get_or_default::<Clients>()
            .open
            .push(id);
    }

    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        for &b in data {
            self.line.push(b);
            if b == b'\n' || self.line.len() >= 4096 {
                conn.send_data(b"echo: ");
                conn.send_data(&self.line);
                self.line.clear();
            }
        }
    }

    fn unbind(&mut self, conn: &mut Connection<'_>, reason: &CloseReason) {
        let (id, decoded, encoded) = (
            conn.id(),
            self.counts.decoded.get(),
            self.counts.encoded.get(),
        );
        eprintln!("xor_filter: {id} closed ({reason}): {decoded} bytes decoded, {encoded} encoded");
        let clients = conn.reactor().extensions().get_or_default::<Clients>();
        clients.open.retain(|&c| c != id);
        clients.decoded += decoded;
        clients.encoded += encoded;
    }
}

/// The plug-in source: standard input, whose lines go to every client.
struct Broadcast {
    /// The watched descriptor's twin (the watch owns the other).
    input: File,
    partial: Vec<u8>,
}

impl Watcher for Broadcast {
    fn notify_readable(&mut self, w: &mut Watch<'_>) {
        let mut buf = [0u8; 4096];
        // Readable: one read takes what is there without blocking.
        match self.input.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = w.detach();
            }
            Ok(n) => {
                self.partial.extend_from_slice(&buf[..n]);
                let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
                    return;
                };
                let lines: Vec<u8> = self.partial.drain(..=end).collect();
                let reactor = w.reactor();
                let open = reactor
                    .extensions()
                    .get::<Clients>()
                    .map(|c| c.open.clone())
                    .unwrap_or_default();
                for id in open {
                    if let Some(mut conn) = reactor.connection(id) {
                        conn.send_data(&lines);
                    }
                }
            }
        }
    }

    fn unbind(&mut self, w: &mut Watch<'_>) {
        let (decoded, encoded) = w
            .reactor()
            .extensions()
            .get::<Clients>()
            .map_or((0, 0), |c| (c.decoded, c.encoded));
        eprintln!("xor_filter: standard input ended; closed connections so far: {decoded} bytes decoded, {encoded} encoded");
    }
}

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:11010".into());
    let key: u8 = match args.next().map(|k| k.parse()) {
        None => 90,
        Some(Ok(k)) => k,
        Some(Err(e)) => {
            eprintln!("xor_filter: KEY must be 0-255: {e}");
            std::process::exit(2);
        }
    };
    Reactor::run(|reactor| {
        let server = reactor.start_server(addr.as_str(), move || LineEcho {
            key,
            counts: Rc::new(xor::Counts::default()),
            line: Vec::new(),
        })?;
        let stdin = io::stdin().as_fd().try_clone_to_owned()?;
        let source = Broadcast {
            input: File::from(stdin.try_clone()?),
            partial: Vec::new(),
        };
        if let Err(e) = reactor.watches().watch(stdin, source, true, false) {
            // /dev/null, say: serve without the source.
            eprintln!("xor_filter: standard input cannot be watched: {e}");
        }
        // SIGTERM or Ctrl-C: a graceful stop, every byte sent delivered.
        reactor.on_stop_signals(|_, _| {})?;
        println!("listening on {}", reactor.server_addr(server)?);
        Ok(())
    })
}
