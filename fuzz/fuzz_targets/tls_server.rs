//! A TLS server connection (the `tls` module's filter on a real reactor)
//! fed by a fuzzed peer over a Unix socket pair: either arbitrary bytes
//! (hellos, records, garbage), or a real rustls client whose handshake
//! succeeds and whose application data, record sizes and ending come from
//! the input — through an echo handler with a small high-water mark, so
//! that backpressure, pause and resume, `close_notify` both ways and the
//! close after writing all run.
//!
//! Input: `[flags] [chunk] [bytes...]`. Bit 0 of `flags`: 0 sends `bytes`
//! raw, `chunk` bytes per loop turn (0: at once), then half-closes; 1 runs
//! a rustls client that sends `bytes` as application data, `chunk` bytes
//! per write (0: 16 KiB). Bit 1 (client only): end with the last 16 bytes
//! of the input written raw after the records (a corrupt stream) instead
//! of `close_notify`. Bit 2: read the server's output only every 16th
//! turn, a slow reader.
//!
//! Must hold: no panic; the connection ends by itself (no hang) with a
//! clean reason or a protocol error; and a client that ends with
//! `close_notify` gets its bytes echoed exactly, then the server's
//! `close_notify`.
#![no_main]

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use packet::tls::{self, rustls, TlsConfig};
use packet::{CloseReason, Connection, Handler, Reactor};

/// Loop turns one input may take before it counts as a hang.
const MAX_TURNS: u64 = 200_000;

struct Certs {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

/// One certificate for the whole run, made at start.
fn certs() -> &'static Certs {
    static CERTS: OnceLock<Certs> = OnceLock::new();
    CERTS.get_or_init(|| {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let cert = cert.der().to_vec();
        Certs {
            server: tls::server_config(vec![cert.clone()], key.serialize_der()).unwrap(),
            client: tls::client_config(&[cert]).unwrap(),
        }
    })
}

/// Starts TLS, echoes, pauses above the mark; notes how it ended.
struct EchoTls {
    ended: Rc<RefCell<Option<String>>>,
}

impl Handler for EchoTls {
    fn post_init(&mut self, conn: &mut Connection<'_>) {
        conn.set_high_water_mark(16 * 1024);
        conn.start_tls(TlsConfig::server(certs().server.clone()))
            .unwrap();
    }
    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        conn.send_data(data);
    }
    fn outbound_full(&mut self, conn: &mut Connection<'_>) {
        conn.pause();
    }
    fn outbound_drained(&mut self, conn: &mut Connection<'_>) {
        conn.resume();
    }
    fn unbind(&mut self, conn: &mut Connection<'_>, reason: &CloseReason) {
        let ok =
            reason.is_clean() || matches!(reason, CloseReason::Protocol(_) | CloseReason::Reset);
        *self.ended.borrow_mut() = Some(if ok {
            String::new()
        } else {
            reason.to_string()
        });
        conn.reactor().stop();
    }
}

/// The peer's side of one run, driven from the reactor's `next_turn`.
struct Driver {
    sock: UnixStream,
    input: Vec<u8>,
    /// Bytes of `input` sent (raw, or as application data).
    written: usize,
    chunk: usize,
    /// The rustls client, when the peer is one.
    tls: Option<rustls::ClientConnection>,
    corrupt: bool,
    /// The ending (close_notify, or garbage, or the half-close) is sent.
    ended: bool,
    slow_reader: bool,
    turns: u64,
    /// Plaintext (client) or raw bytes read back.
    got: Vec<u8>,
    /// The client's TLS failed (after garbage, say): stop talking TLS.
    failed: bool,
    buf: Vec<u8>,
}

impl Driver {
    /// Sends what the client has for the socket; false once it cannot.
    fn flush_tls(&mut self) {
        let Some(tls) = self.tls.as_mut() else { return };
        while tls.wants_write() {
            match tls.write_tls(&mut self.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.failed = true;
                    return;
                }
            }
        }
    }

    /// Reads what is there; true at end of stream.
    fn read(&mut self) -> bool {
        loop {
            match self.sock.read(&mut self.buf) {
                Ok(0) => return true,
                Ok(n) => self.take(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(_) => return true,
            }
        }
    }

    fn take(&mut self, n: usize) {
        let Some(tls) = self.tls.as_mut().filter(|_| !self.failed) else {
            self.got.extend_from_slice(&self.buf[..n]);
            return;
        };
        let mut bytes = &self.buf[..n];
        while !bytes.is_empty() {
            if tls.read_tls(&mut bytes).is_err() || tls.process_new_packets().is_err() {
                self.failed = true;
                return;
            }
            match tls.reader().read_to_end(&mut self.got) {
                Ok(_) => return,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    self.failed = true;
                    return;
                }
            }
        }
    }

    fn step(&mut self) {
        match self.tls.as_mut() {
            None => {
                if self.written < self.input.len() {
                    let end = (self.written + self.chunk).min(self.input.len());
                    match self.sock.write(&self.input[self.written..end]) {
                        Ok(n) => self.written += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        // The server closed with input unread.
                        Err(_) => self.written = self.input.len(),
                    }
                }
                if self.written == self.input.len() && !self.ended {
                    let _ = self.sock.shutdown(std::net::Shutdown::Write);
                    self.ended = true;
                }
            }
            Some(tls) => {
                if !tls.is_handshaking() && !self.failed && !tls.wants_write() {
                    if self.written < self.input.len() {
                        let end = (self.written + self.chunk).min(self.input.len());
                        if let Ok(n) = tls.writer().write(&self.input[self.written..end]) {
                            self.written += n;
                        }
                    } else if !self.ended {
                        self.ended = true;
                        if self.corrupt {
                            let tail = &self.input[self.input.len().saturating_sub(16)..];
                            let _ = self.sock.write(tail);
                            let _ = self.sock.shutdown(std::net::Shutdown::Write);
                        } else {
                            tls.send_close_notify();
                        }
                    }
                }
                self.flush_tls();
            }
        }
    }
}

fn drive(r: &mut Reactor, d: Rc<RefCell<Driver>>, hung: Rc<Cell<bool>>) {
    {
        let mut d = d.borrow_mut();
        d.turns += 1;
        if d.turns > MAX_TURNS {
            hung.set(true);
            r.stop();
            return;
        }
        d.step();
        if !d.slow_reader || d.turns.is_multiple_of(16) {
            d.read();
        }
    }
    r.next_turn(move |r| drive(r, d, hung));
}

thread_local! {
    static REACTOR: RefCell<Reactor> = RefCell::new(Reactor::new().unwrap());
}

fuzz_target!(|data: &[u8]| {
    let [flags, chunk, input @ ..] = data else {
        return;
    };
    let client = flags & 1 == 1;
    let (server_end, sock) = UnixStream::pair().unwrap();
    sock.set_nonblocking(true).unwrap();
    let tls = client.then(|| {
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        rustls::ClientConnection::new(certs().client.clone(), name).unwrap()
    });
    let chunk = match (*chunk, client) {
        (0, false) => usize::MAX,
        (0, true) => 16 * 1024,
        (n, _) => usize::from(n),
    };
    let driver = Rc::new(RefCell::new(Driver {
        sock,
        input: input.to_vec(),
        written: 0,
        chunk,
        tls,
        corrupt: flags & 2 == 2,
        ended: false,
        slow_reader: flags & 4 == 4,
        turns: 0,
        got: Vec::new(),
        failed: false,
        buf: vec![0; 64 * 1024],
    }));
    let ended = Rc::new(RefCell::new(None));
    let hung = Rc::new(Cell::new(false));
    REACTOR.with(|reactor| {
        let mut r = reactor.borrow_mut();
        r.attach(
            std::os::fd::OwnedFd::from(server_end),
            EchoTls {
                ended: ended.clone(),
            },
        )
        .unwrap();
        let (d, h) = (driver.clone(), hung.clone());
        r.next_turn(move |r| drive(r, d, h));
        r.run_until_stopped().unwrap();
    });
    assert!(!hung.get(), "still open after {MAX_TURNS} turns");
    match ended.borrow().as_deref() {
        Some("") => {}
        Some(reason) => panic!("the connection ended with {reason}"),
        None => panic!("no unbind"),
    }
    let mut d = driver.borrow_mut();
    // The server end is closed: what is left is readable, then EOF.
    while !d.read() {}
    let clean_client = client && !d.failed && flags & 2 == 0;
    if clean_client {
        let tls = d.tls.as_mut().unwrap();
        assert!(!tls.is_handshaking(), "the handshake did not finish");
        assert!(d.got == input, "the echo differs from the input");
    }
});
