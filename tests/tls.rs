//! TLS over loopback (the `tls` feature): handshakes, large echoes under
//! random chunking, refused certificates, plaintext peers, stalled
//! handshakes, STARTTLS on a line protocol, files and `close_notify`.
//! The certificate is tests/fixtures/localhost.crt (scripts/make-test-certs.sh).

mod util;

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use packet::line::{LineContext, LineHandler, LineProtocol};
use packet::sockopt::{SOL_SOCKET, SO_RCVBUF, SO_SNDBUF};
use packet::tls::{self, rustls, TlsConfig};
use packet::{CloseReason, Connection, Handler, Reactor};
use util::{client, pattern, spawn_reactor, Echo, IO_TIMEOUT};

/// A certificate for "localhost", its key, and configurations using them.
struct Certs {
    cert: Vec<u8>,
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

fn certs() -> Certs {
    let (cert, server, client) = util::tls_configs();
    Certs {
        cert,
        server,
        client,
    }
}

/// Runs a client reactor on this thread until it stops, or fails the test
/// once `IO_TIMEOUT` has passed (a bound against hangs, not a timing
/// assertion).
fn run_client(setup: impl FnOnce(&mut Reactor) -> std::io::Result<()>) {
    let hung = Rc::new(RefCell::new(false));
    let h = hung.clone();
    let mut r = Reactor::new().unwrap();
    setup(&mut r).unwrap();
    r.add_timer(IO_TIMEOUT, move |r| {
        *h.borrow_mut() = true;
        r.stop();
    });
    r.run_until_stopped().unwrap();
    assert!(!*hung.borrow(), "the client did not finish in time");
}

/// A blocking rustls client over a loopback socket.
fn blocking_tls(
    stream: TcpStream,
    config: Arc<rustls::ClientConfig>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    rustls::StreamOwned::new(conn, stream)
}

/// Reports what a server connection saw: handshake, peer info, close.
struct Observed {
    tx: mpsc::Sender<String>,
}

/// A TLS server of `Observed` handlers on its own reactor, and what they
/// report.
fn observed_server(
    config: Arc<rustls::ServerConfig>,
) -> (util::Running<std::net::SocketAddr>, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel();
    let server = spawn_reactor(move |r| {
        let id = r
            .tls()
            .start_server("127.0.0.1:0", config, move || Observed { tx: tx.clone() })?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    (server, rx)
}

impl Handler for Observed {
    fn ssl_handshake_completed(&mut self, conn: &mut Connection<'_>) {
        let alpn = conn.alpn_protocol().map(|p| p.to_vec());
        let sni = conn.sni_hostname().map(str::to_owned);
        let _ = self.tx.send(format!(
            "server handshake alpn={:?} sni={:?}",
            alpn.as_deref().map(String::from_utf8_lossy),
            sni
        ));
    }
    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        conn.send_data(data);
    }
    fn unbind(&mut self, _: &mut Connection<'_>, reason: &CloseReason) {
        let _ = self.tx.send(format!("server unbind {reason}"));
    }
}

#[test]
fn a_handshake_reports_alpn_sni_and_the_peer_certificate() {
    let c = certs();
    let mut server_config = (*c.server).clone();
    server_config.alpn_protocols = vec![b"echo/1".to_vec()];
    let server_config = Arc::new(server_config);
    let (server, rx) = observed_server(server_config);

    struct Probe {
        cert: Vec<u8>,
        seen: Rc<RefCell<Vec<String>>>,
    }
    impl Handler for Probe {
        fn connection_completed(&mut self, conn: &mut Connection<'_>) {
            assert!(conn.is_tls());
            // Before the handshake ends: queued, sent once it has.
            conn.send_data(b"ping");
        }
        fn ssl_verify_peer(&mut self, _: &mut Connection<'_>, cert: &[u8]) -> bool {
            self.seen
                .borrow_mut()
                .push(format!("verify {}", cert == self.cert));
            true
        }
        fn ssl_handshake_completed(&mut self, conn: &mut Connection<'_>) {
            let alpn = conn.alpn_protocol().map(|p| p.to_vec());
            self.seen.borrow_mut().push(format!(
                "client handshake alpn={:?} cert={}",
                alpn.as_deref().map(String::from_utf8_lossy),
                conn.peer_cert() == Some(&self.cert[..])
            ));
        }
        fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
            self.seen
                .borrow_mut()
                .push(format!("data {}", String::from_utf8_lossy(data)));
            conn.close_connection_after_writing();
        }
        fn unbind(&mut self, conn: &mut Connection<'_>, reason: &CloseReason) {
            self.seen.borrow_mut().push(format!("unbind {reason}"));
            conn.reactor().stop();
        }
    }
    let mut client_config = (*c.client).clone();
    client_config.alpn_protocols = vec![b"echo/1".to_vec()];
    let seen = Rc::new(RefCell::new(Vec::new()));
    let probe = Probe {
        cert: c.cert.clone(),
        seen: seen.clone(),
    };
    run_client(|r| {
        r.tls()
            .connect(server.value, Arc::new(client_config), "localhost", probe)?;
        Ok(())
    });
    assert_eq!(
        *seen.borrow(),
        [
            "verify true",
            "client handshake alpn=Some(\"echo/1\") cert=true",
            "data ping",
            "unbind closed locally",
        ]
    );
    assert_eq!(
        rx.recv_timeout(IO_TIMEOUT).unwrap(),
        "server handshake alpn=Some(\"echo/1\") sni=Some(\"localhost\")"
    );
    // The client's close_notify is the server's end of stream.
    assert_eq!(
        rx.recv_timeout(IO_TIMEOUT).unwrap(),
        "server unbind closed by peer"
    );
    server.stop();
}

/// Tiny deterministic generator for chunk sizes.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Sends `data` in random-sized pieces while reading the echo, keeping at
/// most 512 KiB queued, and checks the echo byte for byte.
struct Streamer {
    data: Rc<Vec<u8>>,
    sent: usize,
    got: Vec<u8>,
    rng: Rng,
    done: Rc<RefCell<Option<String>>>,
}

impl Streamer {
    fn pump(&mut self, conn: &mut Connection<'_>) {
        while self.sent < self.data.len() && conn.outbound_len() < 512 * 1024 {
            let n = (1 + self.rng.below(70_000)).min(self.data.len() - self.sent);
            conn.send_data(&self.data[self.sent..self.sent + n]);
            self.sent += n;
        }
    }
}

impl Handler for Streamer {
    fn ssl_handshake_completed(&mut self, conn: &mut Connection<'_>) {
        self.pump(conn);
    }
    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        self.got.extend_from_slice(data);
        if self.got.len() >= self.data.len() {
            let exact = self.got[..] == self.data[..];
            *self.done.borrow_mut() = Some(format!("{} exact={exact}", self.got.len()));
            conn.close_connection_after_writing();
        } else {
            self.pump(conn);
        }
    }
    fn unbind(&mut self, conn: &mut Connection<'_>, reason: &CloseReason) {
        if self.done.borrow().is_none() {
            *self.done.borrow_mut() = Some(format!("unbind early: {reason}"));
        }
        conn.reactor().stop();
    }
}

#[test]
fn ten_mib_echo_byte_exact_both_ways_under_random_chunking() {
    let c = certs();
    let server_config = c.server.clone();
    let server = spawn_reactor(move |r| {
        // A small mark, so the echo's pause and resume are exercised.
        r.set_default_high_water_mark(64 * 1024);
        let id = r
            .tls()
            .start_server("127.0.0.1:0", server_config, || Echo)?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    let data = Rc::new(pattern(16, 10 * 1024 * 1024 + 13));
    let done = Rc::new(RefCell::new(None));
    let streamer = Streamer {
        data: data.clone(),
        sent: 0,
        got: Vec::new(),
        rng: Rng(0x5eed),
        done: done.clone(),
    };
    run_client(|r| {
        r.tls()
            .connect(server.value, c.client.clone(), "localhost", streamer)?;
        Ok(())
    });
    assert_eq!(
        done.borrow().as_deref(),
        Some(format!("{} exact=true", data.len()).as_str())
    );
    server.stop();
}

#[test]
fn a_wrong_host_name_fails_with_the_rustls_error() {
    let c = certs();
    let server_config = c.server.clone();
    let (server, rx) = observed_server(server_config);
    struct Refused(Rc<RefCell<Option<String>>>);
    impl Handler for Refused {
        fn receive_data(&mut self, _: &mut Connection<'_>, _: &[u8]) {
            panic!("data on a refused connection");
        }
        fn ssl_handshake_completed(&mut self, _: &mut Connection<'_>) {
            panic!("handshake completed with the wrong name");
        }
        fn unbind(&mut self, conn: &mut Connection<'_>, reason: &CloseReason) {
            let error = tls::rustls_error(reason).map(|e| {
                matches!(
                    e,
                    rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName)
                        | rustls::Error::InvalidCertificate(
                            rustls::CertificateError::NotValidForNameContext { .. }
                        )
                )
            });
            *self.0.borrow_mut() = Some(format!("{error:?} {reason}"));
            conn.reactor().stop();
        }
    }
    let seen = Rc::new(RefCell::new(None));
    let refused = Refused(seen.clone());
    run_client(|r| {
        r.tls()
            .connect(server.value, c.client.clone(), "wrong.example", refused)?;
        Ok(())
    });
    let seen = seen.borrow().clone().unwrap();
    assert!(
        seen.starts_with("Some(true) protocol error: invalid peer certificate"),
        "{seen}"
    );
    // The server was told by an alert and closed too.
    let server_saw = rx.recv_timeout(IO_TIMEOUT).unwrap();
    assert!(server_saw.starts_with("server unbind"), "{server_saw}");
    server.stop();
}

#[test]
fn ssl_verify_peer_refusing_closes_before_any_data() {
    let c = certs();
    let server_config = c.server.clone();
    let server = spawn_reactor(move |r| {
        let id = r
            .tls()
            .start_server("127.0.0.1:0", server_config, || Echo)?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    struct Pinning(Rc<RefCell<Vec<String>>>);
    impl Handler for Pinning {
        fn connection_completed(&mut self, conn: &mut Connection<'_>) {
            conn.send_data(b"secret");
        }
        fn ssl_verify_peer(&mut self, _: &mut Connection<'_>, _: &[u8]) -> bool {
            self.0.borrow_mut().push("verify".into());
            false
        }
        fn ssl_handshake_completed(&mut self, _: &mut Connection<'_>) {
            self.0.borrow_mut().push("completed".into());
        }
        fn receive_data(&mut self, _: &mut Connection<'_>, _: &[u8]) {
            self.0.borrow_mut().push("data".into());
        }
        fn unbind(&mut self, conn: &mut Connection<'_>, reason: &CloseReason) {
            self.0.borrow_mut().push(format!("unbind {reason}"));
            conn.reactor().stop();
        }
    }
    let seen = Rc::new(RefCell::new(Vec::new()));
    let pinning = Pinning(seen.clone());
    run_client(|r| {
        r.tls()
            .connect(server.value, c.client.clone(), "localhost", pinning)?;
        Ok(())
    });
    assert_eq!(
        *seen.borrow(),
        [
            "verify",
            "unbind protocol error: ssl_verify_peer refused the peer's certificate"
        ]
    );
    server.stop();
}

#[test]
fn a_plaintext_client_on_a_tls_port_is_closed_and_the_server_goes_on() {
    let c = certs();
    let server_config = c.server.clone();
    let (server, rx) = observed_server(server_config);
    let mut plain = client(server.value);
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    // An alert, perhaps, then the end of the stream (or a reset).
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(!got.starts_with(b"HTTP"), "{got:?}");
    let reason = rx.recv_timeout(IO_TIMEOUT).unwrap();
    assert!(
        reason.starts_with("server unbind protocol error"),
        "{reason}"
    );
    // The server still serves TLS clients.
    let mut s = blocking_tls(client(server.value), c.client.clone());
    s.write_all(b"still here").unwrap();
    let mut buf = [0u8; 10];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"still here");
    server.stop();
}

#[test]
fn a_peer_stalling_mid_handshake_is_reclaimed_by_the_inactivity_timeout() {
    let c = certs();
    let server_config = c.server.clone();
    let (tx, rx) = mpsc::channel();
    struct Idle(mpsc::Sender<String>);
    impl Handler for Idle {
        fn post_init(&mut self, conn: &mut Connection<'_>) {
            conn.set_inactivity_timeout(Some(Duration::from_millis(200)));
        }
        fn ssl_handshake_completed(&mut self, _: &mut Connection<'_>) {
            let _ = self.0.send("completed".into());
        }
        fn unbind(&mut self, _: &mut Connection<'_>, reason: &CloseReason) {
            let _ = self.0.send(format!("unbind {reason}"));
        }
    }
    let server = spawn_reactor(move |r| {
        let id = r
            .tls()
            .start_server("127.0.0.1:0", server_config, move || Idle(tx.clone()))?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    let mut stalled = client(server.value);
    // The start of a ClientHello record: a header announcing 512 bytes,
    // and a few of them.
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc])
        .unwrap();
    assert_eq!(
        rx.recv_timeout(IO_TIMEOUT).unwrap(),
        "unbind inactivity timeout"
    );
    let mut rest = Vec::new();
    let _ = stalled.read_to_end(&mut rest);
    server.stop();
}

/// A line server: `STARTTLS` is answered in the clear, then the session
/// turns to TLS; every other line is echoed with a note of whether it
/// came over TLS.
struct StartTlsLines {
    config: Arc<rustls::ServerConfig>,
    tx: mpsc::Sender<String>,
}

impl Handler for StartTlsLines {
    fn ssl_handshake_completed(&mut self, conn: &mut Connection<'_>) {
        let _ = self.tx.send(format!("completed tls={}", conn.is_tls()));
    }
}

impl LineHandler for StartTlsLines {
    fn receive_line(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
        if line == b"STARTTLS" {
            ctx.send_data(b"220 go ahead\n");
            ctx.start_tls(TlsConfig::server(self.config.clone()))
                .unwrap();
        } else {
            let tls = ctx.is_tls();
            ctx.send_data(format!("tls={tls} {}\n", String::from_utf8_lossy(line)).as_bytes());
        }
    }
}

#[test]
fn starttls_upgrades_a_line_protocol_connection() {
    let c = certs();
    let config = c.server.clone();
    let (tx, rx) = mpsc::channel();
    let server = spawn_reactor(move |r| {
        let id = r.start_server("127.0.0.1:0", move || {
            LineProtocol::new(StartTlsLines {
                config: config.clone(),
                tx: tx.clone(),
            })
        })?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    let mut plain = client(server.value);
    plain.write_all(b"hello\nSTARTTLS\n").unwrap();
    let expect = |s: &mut TcpStream, want: &[u8]| {
        let mut buf = vec![0u8; want.len()];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(String::from_utf8_lossy(&buf), String::from_utf8_lossy(want));
    };
    expect(&mut plain, b"tls=false hello\n220 go ahead\n");
    let mut s = blocking_tls(plain, c.client.clone());
    s.write_all(b"secret\n").unwrap();
    let mut buf = [0u8; 16];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"tls=true secret\n");
    // The line layer passed the handshake's end through.
    assert_eq!(rx.recv_timeout(IO_TIMEOUT).unwrap(), "completed tls=true");
    server.stop();
}

#[test]
fn a_file_goes_through_tls_and_the_close_sends_close_notify() {
    let c = certs();
    let path = std::env::temp_dir().join(format!("packet-tls-file-{}.bin", std::process::id()));
    let content = pattern(7, 3 * 1024 * 1024 + 5);
    std::fs::write(&path, &content).unwrap();
    struct SendsFile(std::path::PathBuf, mpsc::Sender<usize>);
    impl Handler for SendsFile {
        // On the client's byte, so that no input is left unread at the
        // close (which would reset the connection).
        fn receive_data(&mut self, conn: &mut Connection<'_>, _: &[u8]) {
            conn.send_data(b"HDR");
            conn.send_file(&self.0).unwrap();
            conn.send_data(b"TRL");
            let _ = self.1.send(conn.outbound_len());
            conn.close_connection_after_writing();
        }
    }
    let (tx, rx) = mpsc::channel();
    let (p, config) = (path.clone(), c.server.clone());
    let server = spawn_reactor(move |r| {
        let id = r.tls().start_server("127.0.0.1:0", config, move || {
            SendsFile(p.clone(), tx.clone())
        })?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    let mut s = blocking_tls(client(server.value), c.client.clone());
    // Starts the handshake.
    s.write_all(b"x").unwrap();
    let mut got = Vec::new();
    // rustls reports a close without close_notify as an error: Ok means
    // the server sent it.
    s.read_to_end(&mut got).unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(rx.recv_timeout(IO_TIMEOUT).unwrap() <= 6, "file in memory");
    util::assert_file_between_hdr_and_trl(&got, &content);
    server.stop();
}

#[test]
fn a_bad_server_name_and_a_second_start_tls_are_refused() {
    let c = certs();
    assert_eq!(
        TlsConfig::client(c.client.clone(), "not a name!")
            .err()
            .map(|e| e.kind()),
        Some(std::io::ErrorKind::InvalidInput)
    );
    struct Twice(
        Rc<RefCell<Option<std::io::ErrorKind>>>,
        Arc<rustls::ServerConfig>,
    );
    impl Handler for Twice {
        fn post_init(&mut self, conn: &mut Connection<'_>) {
            let again = conn.start_tls(TlsConfig::server(self.1.clone()));
            *self.0.borrow_mut() = again.err().map(|e| e.kind());
            conn.close_connection();
        }
        fn unbind(&mut self, conn: &mut Connection<'_>, _: &CloseReason) {
            conn.reactor().stop();
        }
    }
    let seen = Rc::new(RefCell::new(None));
    let twice = Twice(seen.clone(), c.server.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    run_client(|r| {
        r.tls()
            .connect(addr, c.client.clone(), "localhost", twice)?;
        Ok(())
    });
    assert_eq!(*seen.borrow(), Some(std::io::ErrorKind::AlreadyExists));
}

#[test]
fn water_marks_measure_the_plaintext_the_handler_sent() {
    let c = certs();
    let data = Arc::new(pattern(3, 4 * 1024 * 1024));
    struct Floods(Arc<Vec<u8>>, mpsc::Sender<String>);
    impl Handler for Floods {
        fn receive_data(&mut self, conn: &mut Connection<'_>, _: &[u8]) {
            conn.set_high_water_mark(256 * 1024);
            conn.send_data(&self.0);
            let _ = self.1.send(format!("queued {}", conn.outbound_len()));
        }
        fn outbound_full(&mut self, _: &mut Connection<'_>) {
            let _ = self.1.send("full".into());
        }
        fn outbound_drained(&mut self, conn: &mut Connection<'_>) {
            let _ = self
                .1
                .send(format!("drained {}", conn.outbound_len() <= 128 * 1024));
            conn.close_connection_after_writing();
        }
    }
    let (tx, rx) = mpsc::channel();
    let (d, config) = (data.clone(), c.server.clone());
    let server = spawn_reactor(move |r| {
        let id = r
            .tls()
            .start_server("127.0.0.1:0", config, move || Floods(d.clone(), tx.clone()))?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    let mut s = blocking_tls(client(server.value), c.client.clone());
    s.write_all(b"go").unwrap();
    // Not reading yet: the server's queue stays above the mark.
    assert_eq!(rx.recv_timeout(IO_TIMEOUT).unwrap(), "queued 4194304");
    assert_eq!(rx.recv_timeout(IO_TIMEOUT).unwrap(), "full");
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    assert!(got == *data, "the stream differs");
    assert_eq!(rx.recv_timeout(IO_TIMEOUT).unwrap(), "drained true");
    server.stop();
}

/// Records the socket does not take at once stay in rustls (the filter's
/// output is written straight from its buffers) and must still go out at
/// the writable edges, with nothing else to push them: no more input, no
/// close.
#[test]
fn records_left_in_rustls_by_a_full_socket_go_out_at_the_writable_edge() {
    let c = certs();
    let data = Arc::new(pattern(9, 1024 * 1024 + 12_345));
    struct SendsOnce(Arc<Vec<u8>>);
    impl Handler for SendsOnce {
        fn receive_data(&mut self, conn: &mut Connection<'_>, input: &[u8]) {
            if input == b"go" {
                // A small send buffer: most writes are short.
                conn.set_sock_opt(SOL_SOCKET, SO_SNDBUF, 4096).unwrap();
                conn.send_data(&self.0);
            } else {
                conn.close_connection_after_writing();
            }
        }
    }
    let (d, config) = (data.clone(), c.server.clone());
    let server = spawn_reactor(move |r| {
        let id = r
            .tls()
            .start_server("127.0.0.1:0", config, move || SendsOnce(d.clone()))?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    let mut s = blocking_tls(client(server.value), c.client.clone());
    s.write_all(b"go").unwrap();
    // Read slowly at first, so that the server's socket stays full.
    let mut got = vec![0; data.len()];
    let (slow, rest) = got.split_at_mut(64 * 1024);
    for piece in slow.chunks_mut(1024) {
        s.read_exact(piece).unwrap();
    }
    s.read_exact(rest).unwrap();
    assert!(got == *data, "the stream differs");
    s.write_all(b"thanks").unwrap();
    let mut after = Vec::new();
    s.read_to_end(&mut after).unwrap();
    assert!(
        after.is_empty(),
        "nothing after the stream but close_notify"
    );
    server.stop();
}

/// A graceful stop with a large TLS response in flight behind a full
/// socket: the stop waits for the records (in the queue, in the filter's
/// buffer and left in rustls), the peer gets every byte and then
/// `close_notify`, and the stop report is clean.
#[test]
fn a_graceful_stop_waits_for_tls_records_in_flight() {
    let c = certs();
    let data = Arc::new(pattern(11, 2 * 1024 * 1024 + 777));
    struct AnswersThenStops(Arc<Vec<u8>>);
    impl Handler for AnswersThenStops {
        fn receive_data(&mut self, conn: &mut Connection<'_>, _: &[u8]) {
            conn.set_sock_opt(SOL_SOCKET, SO_SNDBUF, 4096).unwrap();
            conn.send_data(&self.0);
            conn.reactor().stop_gracefully(IO_TIMEOUT);
        }
    }
    let (tx, rx) = mpsc::channel();
    let (d, config) = (data.clone(), c.server.clone());
    let server = std::thread::spawn(move || -> std::io::Result<String> {
        let mut r = Reactor::new()?;
        let id = r
            .tls()
            .start_server("127.0.0.1:0", config, move || AnswersThenStops(d.clone()))?;
        tx.send(r.server_addr(id)?.as_inet().unwrap()).unwrap();
        r.run_until_stopped()?;
        Ok(r.stop_report()
            .map_or("no report".into(), |report| report.to_string()))
    });
    let mut s = blocking_tls(client(rx.recv().unwrap()), c.client.clone());
    s.write_all(b"go").unwrap();
    // Slowly at first: the stop begins while most of it is unwritten.
    let mut got = vec![0; 64 * 1024];
    for piece in got.chunks_mut(512) {
        s.read_exact(piece).unwrap();
    }
    // To the end: an error here is a stream cut without close_notify.
    s.read_to_end(&mut got).unwrap();
    assert!(got == *data, "the stream differs ({} bytes)", got.len());
    // Our end, so that the server's lingering close ends at once.
    drop(s);
    let report = server.join().unwrap().unwrap();
    assert_eq!(report, "stopped cleanly: nothing was cut");
}

/// `outbound_len` counts the records a full socket left in rustls, as
/// bytes still to be written: a handler that closes at once when it sees
/// nothing queued loses none of them. The response (48 KiB) is encoded in
/// one step, so the queue is empty while rustls still holds what the
/// socket did not take: the client reads nothing until its small receive
/// buffer is full.
#[test]
fn outbound_len_counts_records_left_in_rustls() {
    let c = certs();
    let data = Arc::new(pattern(13, 48 * 1024));
    struct ClosesWhenNothingQueued(Arc<Vec<u8>>);
    impl Handler for ClosesWhenNothingQueued {
        fn receive_data(&mut self, conn: &mut Connection<'_>, _: &[u8]) {
            conn.set_sock_opt(SOL_SOCKET, SO_SNDBUF, 4096).unwrap();
            conn.send_data(&self.0);
            let id = conn.id();
            conn.reactor()
                .add_periodic_timer(Duration::from_millis(1), move |r, timer| {
                    match r.connection(id) {
                        Some(mut c) if c.outbound_len() == 0 => {
                            c.close_connection();
                            r.cancel_timer(timer);
                        }
                        Some(_) => {}
                        None => {
                            r.cancel_timer(timer);
                        }
                    }
                });
        }
    }
    let (d, config) = (data.clone(), c.server.clone());
    let server = spawn_reactor(move |r| {
        let id = r.tls().start_server("127.0.0.1:0", config, move || {
            ClosesWhenNothingQueued(d.clone())
        })?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    // A receive buffer set before the connect, so the window stays small.
    let sock = packet_sys::Socket::stream(packet_sys::Domain::Ipv4).unwrap();
    sock.set_int_option(SOL_SOCKET, SO_RCVBUF, 4096).unwrap();
    sock.set_nonblocking(false).unwrap();
    sock.connect(&packet::Addr::Inet(server.value)).unwrap();
    let stream = TcpStream::from(std::os::fd::OwnedFd::from(sock));
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut s = blocking_tls(stream.try_clone().unwrap(), c.client.clone());
    s.write_all(b"go").unwrap();
    s.flush().unwrap();
    util::wait_until_receive_queue_full(&stream);
    // Every byte, then the end (with or without close_notify: the close
    // was immediate, and its goodbye best-effort).
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    assert_eq!(got.len(), data.len(), "bytes cut by the close");
    assert!(got == *data, "the stream differs");
    drop(s);
    server.stop();
}
