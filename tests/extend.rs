//! The public extension API (`packet::extend`) used from outside the
//! crate: a filter between socket and handler over real sockets, an
//! extension holding a graceful stop, and the third-party example
//! (`examples/xor_filter.rs`: a filter, a pipe source and per-reactor
//! state) run as a user runs it.
//!
//! Alone: `cargo test --all-features --test extend`.

mod util;

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use packet::extend::{Extension, Filter, FilterOutput, StopHold};
use packet::line::{LineContext, LineHandler, LineProtocol};
use packet::sockopt::{SOL_SOCKET, SO_SNDBUF};
use packet::{CloseReason, ConnId, Connection, Handler, Reactor};

use util::example::Program;
use util::{client, echo_round_trip, pattern, spawn_reactor};

/// Xors what it reads with one key and what it writes with another, so
/// that the bytes on the wire show both directions were filtered.
struct TwoKeys {
    read_key: u8,
    write_key: u8,
}

impl Filter for TwoKeys {
    fn decode(&mut self, from_socket: &[u8], to_handler: &mut Vec<u8>) -> io::Result<()> {
        to_handler.extend(from_socket.iter().map(|b| b ^ self.read_key));
        Ok(())
    }
    fn encode(&mut self, from_handler: &[u8], to_socket: &mut FilterOutput<'_>) {
        to_socket.extend(from_handler.iter().map(|b| b ^ self.write_key));
    }
}

/// Puts a [`TwoKeys`] filter on `conn`.
fn set_two_keys(conn: &mut Connection<'_>, read_key: u8, write_key: u8) {
    conn.set_filter(TwoKeys {
        read_key,
        write_key,
    })
    .expect("a new connection takes a filter");
}

/// Runs a server of `handler`s on its own thread until the reactor stops
/// (gracefully, from inside); its address, and the thread, which says
/// whether the stop report was clean.
fn serve_until_stopped<H: Handler>(
    handler: impl FnMut() -> H + Send + 'static,
) -> (
    std::net::SocketAddr,
    std::thread::JoinHandle<io::Result<bool>>,
) {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || -> io::Result<bool> {
        let mut reactor = Reactor::new()?;
        let id = reactor.start_server("127.0.0.1:0", handler)?;
        tx.send(reactor.server_addr(id)?.as_inet().expect("tcp"))
            .unwrap();
        reactor.run_until_stopped()?;
        Ok(reactor.stop_report().is_some_and(|r| r.is_clean()))
    });
    (rx.recv().expect("server started"), thread)
}

/// Runs `reactor` until its handlers stop it, or for at most
/// [`util::IO_TIMEOUT`] (the test's checks then fail).
fn run_bounded(mut reactor: Reactor) {
    reactor.add_timer(util::IO_TIMEOUT, |r| r.stop());
    reactor.run_until_stopped().unwrap();
}

fn xor(data: &[u8], key: u8) -> Vec<u8> {
    data.iter().map(|b| b ^ key).collect()
}

/// Echoes through a [`TwoKeys`] filter; records what a second `set_filter` said and why the
/// connection ended.
struct FilteredEcho {
    log: Arc<Mutex<Vec<String>>>,
}

impl Handler for FilteredEcho {
    fn post_init(&mut self, conn: &mut Connection<'_>) {
        set_two_keys(conn, 0x11, 0x22);
        let again = conn.set_filter(TwoKeys {
            read_key: 0,
            write_key: 0,
        });
        self.log
            .lock()
            .unwrap()
            .push(format!("second filter: {:?}", again.map_err(|e| e.kind())));
    }
    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        conn.send_data(data);
    }
    fn unbind(&mut self, _conn: &mut Connection<'_>, reason: &CloseReason) {
        self.log.lock().unwrap().push(format!("unbind: {reason:?}"));
    }
}

#[test]
fn a_filter_carries_megabytes_both_ways_and_drains_before_the_close() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let server_log = log.clone();
    let server = spawn_reactor(move |r| {
        let id = r.start_server("127.0.0.1:0", move || FilteredEcho {
            log: server_log.clone(),
        })?;
        Ok(r.server_addr(id)?.as_inet().expect("tcp"))
    });
    // 4 MiB: far more than the socket buffers, so the filter's encoded
    // bytes wait for the writable edge.
    let plain = pattern(7, 4 << 20);
    let got = echo_round_trip(client(server.value), xor(&plain, 0x11), true);
    assert_eq!(got.len(), plain.len(), "every byte came back");
    assert!(
        got == xor(&plain, 0x22),
        "decoded with the read key, encoded with the write key"
    );
    server.stop();
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log,
        [
            "second filter: Err(AlreadyExists)".to_string(),
            "unbind: PeerClosed".to_string(),
        ]
    );
}

/// A client that puts its filter on before its connect completes and
/// sends at once: the bytes wait for the connect and leave encoded.
struct FilteredClient {
    answer: Arc<Mutex<Vec<u8>>>,
}

impl Handler for FilteredClient {
    fn post_init(&mut self, conn: &mut Connection<'_>) {
        set_two_keys(conn, 0x33, 0x44);
        conn.send_data(b"ping\n");
    }
    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        self.answer.lock().unwrap().extend_from_slice(data);
        if self.answer.lock().unwrap().len() >= 5 {
            conn.close_connection();
            conn.reactor().stop();
        }
    }
}

#[test]
fn a_client_filters_from_before_its_connect_completes() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(util::IO_TIMEOUT)).unwrap();
        let mut got = [0u8; 5];
        s.read_exact(&mut got).unwrap();
        s.write_all(&xor(b"pong\n", 0x33)).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        got
    });
    let answer = Arc::new(Mutex::new(Vec::new()));
    let mut reactor = Reactor::new().unwrap();
    reactor
        .connect(
            addr,
            FilteredClient {
                answer: answer.clone(),
            },
        )
        .unwrap();
    run_bounded(reactor);
    assert_eq!(peer.join().unwrap(), xor(b"ping\n", 0x44)[..]);
    assert_eq!(*answer.lock().unwrap(), b"pong\n");
}

/// Sends a descriptor through its filter, which cannot carry one.
struct SendsAnFd {
    reason: Arc<Mutex<Option<String>>>,
}

impl Handler for SendsAnFd {
    fn post_init(&mut self, conn: &mut Connection<'_>) {
        set_two_keys(conn, 1, 1);
        let fd = std::fs::File::open("/dev/null").unwrap();
        assert!(conn.send_fd(fd.into()));
        conn.send_data(b"the descriptor's message");
    }
    fn unbind(&mut self, conn: &mut Connection<'_>, reason: &CloseReason) {
        *self.reason.lock().unwrap() = Some(reason.to_string());
        conn.reactor().stop();
    }
}

#[test]
fn a_descriptor_sent_through_a_filter_ends_the_connection_with_a_clear_error() {
    let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    theirs.set_read_timeout(Some(util::IO_TIMEOUT)).unwrap();
    let reason = Arc::new(Mutex::new(None));
    let mut reactor = Reactor::new().unwrap();
    reactor
        .attach(
            ours.into(),
            SendsAnFd {
                reason: reason.clone(),
            },
        )
        .unwrap();
    run_bounded(reactor);
    let mut got = Vec::new();
    theirs.read_to_end(&mut got).unwrap();
    assert!(got.is_empty(), "nothing went out without its descriptor");
    let reason = reason.lock().unwrap().clone().expect("unbind ran");
    assert!(
        reason.contains("descriptors cannot be passed through a filter"),
        "{reason}"
    );
}

/// A filter's `decode` that passes the peer's bytes on as they are.
fn unchanged(from_socket: &[u8], to_handler: &mut Vec<u8>) -> io::Result<()> {
    to_handler.extend_from_slice(from_socket);
    Ok(())
}

/// Writes each byte eight times: the socket carries far more than the
/// handler sent, so the filter holds encoded bytes the socket has not
/// taken when the handler's queue is already empty.
struct Expand;

impl Filter for Expand {
    fn decode(&mut self, from_socket: &[u8], to_handler: &mut Vec<u8>) -> io::Result<()> {
        unchanged(from_socket, to_handler)
    }
    fn encode(&mut self, from_handler: &[u8], to_socket: &mut FilterOutput<'_>) {
        for &b in from_handler {
            to_socket.extend_from_slice(&[b; 8]);
        }
    }
}

/// Sends 256 KiB through [`Expand`] on connect, then closes after writing.
struct SendsAndCloses;

impl Handler for SendsAndCloses {
    fn post_init(&mut self, conn: &mut Connection<'_>) {
        // A small send buffer: every step's encoded bytes outgrow it.
        conn.set_sock_opt(SOL_SOCKET, SO_SNDBUF, 4096).unwrap();
        conn.set_filter(Expand).unwrap();
        conn.send_data(&pattern(3, 256 << 10));
        conn.close_connection_after_writing();
    }
}

#[test]
fn a_close_after_writing_waits_for_what_the_filter_holds() {
    let server = spawn_reactor(|r| {
        let id = r.start_server("127.0.0.1:0", || SendsAndCloses)?;
        Ok(r.server_addr(id)?.as_inet().expect("tcp"))
    });
    let mut c = client(server.value);
    // Not reading yet: the socket fills while the filter holds the rest.
    std::thread::sleep(Duration::from_millis(300));
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    drop(c);
    server.stop();
    let want: Vec<u8> = pattern(3, 256 << 10).iter().flat_map(|&b| [b; 8]).collect();
    assert_eq!(got.len(), want.len(), "every encoded byte before the close");
    assert!(got == want);
}

/// The line protocol over a filter: each line is answered with 4 KiB, and
/// the line `stop` stops the reactor gracefully with those answers still
/// on their way.
struct Shout;

impl Handler for Shout {
    fn post_init(&mut self, conn: &mut Connection<'_>) {
        // Small, so the stop finds encoded bytes the socket has not taken.
        conn.set_sock_opt(SOL_SOCKET, SO_SNDBUF, 4096).unwrap();
        set_two_keys(conn, 0x11, 0x22);
    }
}

impl LineHandler for Shout {
    fn receive_line(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
        if line == b"stop" {
            ctx.reactor().stop_gracefully(Duration::from_secs(20));
            return;
        }
        let mut answer = line.to_ascii_uppercase();
        answer.resize(4096 - 1, b'.');
        answer.push(b'\n');
        ctx.send_data(&answer);
    }
}

#[test]
fn a_graceful_stop_delivers_every_answer_of_a_filtered_line_protocol() {
    let (addr, thread) = serve_until_stopped(|| LineProtocol::new(Shout));
    let mut c = client(addr);
    let mut request = Vec::new();
    for i in 0..1000 {
        request.extend_from_slice(format!("line {i}\n").as_bytes());
    }
    request.extend_from_slice(b"stop\n");
    c.write_all(&xor(&request, 0x11)).unwrap();
    // 4 MB of answers wait in the filter and the queue while we sleep.
    std::thread::sleep(Duration::from_millis(300));
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while got.len() < 1000 * 4096 {
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "end of stream after {} bytes", got.len());
        got.extend_from_slice(&buf[..n]);
    }
    c.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    drop(c);
    assert!(rest.is_empty());
    let got = xor(&got, 0x22);
    for (i, answer) in got.chunks(4096).enumerate() {
        let head = format!("LINE {i}");
        assert!(answer.starts_with(head.as_bytes()), "answer {i}");
        assert_eq!(answer.last(), Some(&b'\n'));
    }
    let clean = thread.join().expect("reactor thread").expect("reactor");
    assert!(clean, "the stop ended within its deadline");
}

/// Per-reactor state of a job the handler started: the extension holds a
/// graceful stop until the job's answer is sent.
#[derive(Default)]
struct Jobs {
    waiting: Option<ConnId>,
    stop_asked: bool,
}

impl Extension for Jobs {
    fn stop_gracefully(&mut self, _reactor: &mut Reactor, _within: Duration) -> StopHold {
        if self.waiting.is_some() {
            self.stop_asked = true;
            StopHold::Hold
        } else {
            StopHold::Release
        }
    }
}

/// Starts a job on `work`, and stops the reactor gracefully at once: the
/// job's answer must still reach the client.
struct StartsJob;

impl Handler for StartsJob {
    fn receive_data(&mut self, conn: &mut Connection<'_>, _data: &[u8]) {
        let id = conn.id();
        let reactor = conn.reactor();
        reactor.extensions().get_or_default::<Jobs>().waiting = Some(id);
        reactor.add_timer(Duration::from_millis(200), move |r| {
            if let Some(mut conn) = r.connection(id) {
                conn.send_data(b"done\n");
            }
            let jobs = r.extensions().get_or_default::<Jobs>();
            jobs.waiting = None;
            if jobs.stop_asked {
                // The extension's work is done: the stop goes on.
                r.stop_gracefully(Duration::from_secs(10));
            }
        });
        reactor.stop_gracefully(Duration::from_secs(10));
    }
}

#[test]
fn an_extension_holds_a_graceful_stop_until_its_work_is_answered() {
    let (addr, thread) = serve_until_stopped(|| StartsJob);
    let mut c = client(addr);
    c.write_all(b"work\n").unwrap();
    let mut answer = [0u8; 5];
    c.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"done\n", "the stop waited for the job's answer");
    // Our end of stream lets the server's close finish; nothing follows.
    c.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    drop(c);
    assert!(rest.is_empty());
    let clean = thread.join().expect("reactor thread").expect("reactor");
    assert!(clean, "the stop ended within its deadline");
}

/// `examples/xor_filter.rs`, a third-party extension on public items
/// only: its filter decodes and encodes every byte, its pipe source
/// (standard input) reaches every connection through their filters, a
/// decoding error closes with `protocol error`, and its per-reactor
/// totals count what the filters moved.
#[test]
fn the_third_party_example_filters_broadcasts_its_pipe_and_counts() {
    const KEY: u8 = 77;
    let mut server =
        Program::start_with_stdin("xor_filter", &["127.0.0.1:0", "77"], Stdio::piped());
    let mut stdin = server.child.stdin.take().expect("piped");
    let mut c = server.connect();
    c.write_all(&xor(b"hello\n", KEY)).unwrap();
    let mut echo = vec![0u8; b"echo: hello\n".len()];
    c.read_exact(&mut echo).unwrap();
    assert_eq!(xor(&echo, KEY), b"echo: hello\n");

    // The plug-in source: a line on the server's standard input.
    stdin.write_all(b"news\n").unwrap();
    stdin.flush().unwrap();
    let mut news = [0u8; 5];
    c.read_exact(&mut news).unwrap();
    assert_eq!(xor(&news, KEY), b"news\n");

    // A NUL byte after decoding: the line before it is answered, then the
    // connection ends.
    let mut bad = server.connect();
    bad.write_all(&xor(b"ok\nno\0more", KEY)).unwrap();
    bad.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    bad.read_to_end(&mut rest).unwrap();
    drop(bad);
    assert_eq!(xor(&rest, KEY), b"echo: ok\n");

    c.shutdown(Shutdown::Write).unwrap();
    let mut tail = Vec::new();
    c.read_to_end(&mut tail).unwrap();
    drop(c);
    assert!(tail.is_empty());
    // Standard input ends: the source's unbind prints the totals.
    drop(stdin);
    util::eventually(util::IO_TIMEOUT, || {
        server
            .stderr()
            .iter()
            .any(|l| l.contains("standard input ended"))
    });
    let stderr = server.stderr();
    let has = |needle: &str| stderr.iter().any(|l| l.contains(needle));
    assert!(
        has(
            "closed (protocol error: a NUL byte in the decoded stream): 5 bytes decoded, 9 encoded"
        ),
        "{stderr:?}"
    );
    assert!(
        has("closed (closed by peer): 6 bytes decoded, 17 encoded"),
        "{stderr:?}"
    );
    assert!(
        has("standard input ended; closed connections so far: 11 bytes decoded, 26 encoded"),
        "{stderr:?}"
    );
}

/// A protocol with a handshake, in the terms of `Filter`'s provided
/// methods: it greets with `HELLO\n`; the peer's `OK\n` ends the
/// handshake (with a pretend certificate); after it, bytes are
/// upper-cased on the way out and passed as they are on the way in, and
/// the peer's `BYE\n` ends the peer's stream; this side's last words
/// are `BYE\n` too.
#[derive(Default)]
struct Greeter {
    seen: Vec<u8>,
    established: bool,
    reported: bool,
    peer_ended: bool,
    /// Bytes `encode` was given before the handshake ended: must stay 0.
    encoded_early: usize,
    decodes: u32,
}

impl Filter for Greeter {
    fn decode(&mut self, from_socket: &[u8], to_handler: &mut Vec<u8>) -> io::Result<()> {
        self.decodes += 1;
        self.seen.extend_from_slice(from_socket);
        if !self.established {
            let Some(rest) = self.seen.strip_prefix(b"OK\n") else {
                return if b"OK\n".starts_with(&self.seen) {
                    Ok(())
                } else {
                    Err(io::Error::new(io::ErrorKind::InvalidData, "no OK"))
                };
            };
            self.seen = rest.to_vec();
            self.established = true;
        }
        match self.seen.windows(4).position(|w| w == b"BYE\n") {
            Some(at) => {
                to_handler.extend_from_slice(&self.seen[..at]);
                self.peer_ended = true;
            }
            None => to_handler.extend_from_slice(&self.seen),
        }
        self.seen.clear();
        Ok(())
    }
    fn encode(&mut self, from_handler: &[u8], to_socket: &mut FilterOutput<'_>) {
        if !self.established {
            self.encoded_early += from_handler.len();
        }
        to_socket.extend(from_handler.iter().map(u8::to_ascii_uppercase));
    }
    fn own_output(&mut self, to_socket: &mut FilterOutput<'_>) {
        if self.decodes == 0 {
            to_socket.extend_from_slice(b"HELLO\n");
        }
    }
    fn takes_output(&self) -> bool {
        self.established
    }
    fn take_event(&mut self) -> Option<packet::extend::FilterEvent> {
        use packet::extend::FilterEvent;
        if self.established && !self.reported {
            self.reported = true;
            return Some(FilterEvent::Established {
                peer_certificate: Some(b"pretend cert".to_vec()),
            });
        }
        if std::mem::take(&mut self.peer_ended) {
            return Some(FilterEvent::PeerEnded);
        }
        None
    }
    fn finish(&mut self, to_socket: &mut FilterOutput<'_>) {
        to_socket.extend_from_slice(b"BYE\n");
    }
    fn handshake_limit(&self) -> Option<Duration> {
        Some(Duration::from_millis(300))
    }
}

/// Speaks through a [`Greeter`], logging every callback.
struct GreeterServer {
    log: Log,
}

impl GreeterServer {
    fn log(&self, line: String) {
        self.log.lock().unwrap().push(line);
    }
}

impl Handler for GreeterServer {
    fn post_init(&mut self, conn: &mut Connection<'_>) {
        // Before the filter: goes out as it is, first.
        conn.send_data(b"banner\n");
        conn.set_filter(Greeter::default()).unwrap();
        // After it: held in the queue (counted) until the handshake ends.
        conn.send_data(b"early,");
        self.log(format!("queued after set_filter: {}", conn.outbound_len()));
    }
    fn ssl_verify_peer(&mut self, _conn: &mut Connection<'_>, cert: &[u8]) -> bool {
        self.log(format!("verify {}", String::from_utf8_lossy(cert)));
        true
    }
    fn ssl_handshake_completed(&mut self, conn: &mut Connection<'_>) {
        self.log("completed".into());
        conn.send_data(b"done,");
    }
    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        let greeter = conn.filter::<Greeter>().expect("the filter is reachable");
        self.log(format!(
            "data {} (encoded early: {})",
            String::from_utf8_lossy(data),
            greeter.encoded_early
        ));
        conn.send_data(data);
    }
    fn receive_eof(&mut self, conn: &mut Connection<'_>) {
        self.log("eof".into());
        conn.close_connection_after_writing();
    }
    fn unbind(&mut self, conn: &mut Connection<'_>, reason: &CloseReason) {
        let timeout = match reason {
            CloseReason::Protocol(e) => e
                .get_ref()
                .and_then(|e| e.downcast_ref::<packet::extend::HandshakeTimeout>())
                .map(|t| t.limit),
            _ => None,
        };
        self.log(format!("unbind: {reason}, handshake timeout: {timeout:?}"));
        conn.reactor().stop_gracefully(Duration::from_secs(5));
    }
}

/// One log shared by a server's handlers.
type Log = Arc<Mutex<Vec<String>>>;

/// [`serve_until_stopped`] with handlers made by `make` around one shared
/// log, and a client connected to it.
fn serve_logged<H: Handler>(
    make: impl Fn(Log) -> H + Send + 'static,
) -> (
    Log,
    std::net::TcpStream,
    std::thread::JoinHandle<io::Result<bool>>,
) {
    let log = Log::default();
    let server_log = log.clone();
    let (addr, server) = serve_until_stopped(move || make(server_log.clone()));
    (log, client(addr), server)
}

/// Reads `stream` to its end, then waits for the server to stop (it must
/// be a clean stop); what was read.
fn read_until_stopped(
    mut stream: std::net::TcpStream,
    server: std::thread::JoinHandle<io::Result<bool>>,
) -> Vec<u8> {
    let mut got = Vec::new();
    stream.read_to_end(&mut got).unwrap();
    drop(stream);
    assert!(server.join().unwrap().unwrap(), "a clean stop");
    got
}

#[test]
fn a_filter_with_a_handshake_holds_the_handlers_bytes_and_says_goodbye() {
    let (log, mut stream, server) = serve_logged(|log| GreeterServer { log });
    let mut greeting = [0; 13];
    stream.read_exact(&mut greeting).unwrap();
    assert_eq!(
        &greeting, b"banner\nHELLO\n",
        "clear bytes, then the filter's own"
    );
    stream.write_all(b"OK\nping,").unwrap();
    stream.write_all(b"BYE\n").unwrap();
    let rest = read_until_stopped(stream, server);
    assert_eq!(
        String::from_utf8_lossy(&rest),
        "EARLY,DONE,PING,BYE\n",
        "held bytes encoded once the handshake ended, the echo, the last words"
    );
    assert_eq!(
        *log.lock().unwrap(),
        [
            "queued after set_filter: 6",
            "verify pretend cert",
            "completed",
            "data ping, (encoded early: 0)",
            "eof",
            "unbind: closed by peer, handshake timeout: None",
        ]
    );
}

#[test]
fn a_stalled_filter_handshake_ends_at_its_deadline() {
    let (log, mut stream, server) = serve_logged(|log| GreeterServer { log });
    // Half a handshake, then nothing: only the deadline ends it.
    stream.write_all(b"O").unwrap();
    let got = read_until_stopped(stream, server);
    assert_eq!(
        got, b"banner\nHELLO\n",
        "nothing encoded, no goodbye after a failure"
    );
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(
        log[1].ends_with("handshake timeout: Some(300ms)"),
        "{log:?}"
    );
}

/// Closes every connection in `post_init` with an error of its own.
struct Refuser {
    log: Log,
}

impl Handler for Refuser {
    fn post_init(&mut self, conn: &mut Connection<'_>) {
        conn.send_data(b"dropped with the close");
        conn.close_with_error(io::Error::new(io::ErrorKind::InvalidData, "bad greeting"));
    }
    fn unbind(&mut self, conn: &mut Connection<'_>, reason: &CloseReason) {
        let kind = match reason {
            CloseReason::Protocol(e) => Some(e.kind()),
            _ => None,
        };
        self.log
            .lock()
            .unwrap()
            .push(format!("{reason} / {kind:?}"));
        conn.reactor().stop_gracefully(Duration::from_secs(5));
    }
}

#[test]
fn close_with_error_ends_with_that_protocol_error() {
    let (log, stream, server) = serve_logged(|log| Refuser { log });
    let got = read_until_stopped(stream, server);
    assert_eq!(got, b"", "a protocol error drops what was queued");
    assert_eq!(
        *log.lock().unwrap(),
        ["protocol error: bad greeting / Some(InvalidData)"]
    );
}

/// Greets in `post_init` and logs its callbacks.
struct Greets {
    log: Log,
}

impl Handler for Greets {
    fn post_init(&mut self, conn: &mut Connection<'_>) {
        self.log.lock().unwrap().push("post_init".into());
        conn.send_data(b"hi");
        conn.close_connection_after_writing();
    }
    fn unbind(&mut self, conn: &mut Connection<'_>, reason: &CloseReason) {
        self.log.lock().unwrap().push(format!("unbind: {reason}"));
        conn.reactor().stop_gracefully(Duration::from_secs(5));
    }
}

/// Serves [`Greets`] with `options` until the first connection ends;
/// returns what a client read and the server's log.
fn greet_once(options: packet::ServerOptions) -> (Vec<u8>, Vec<String>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let server_log = log.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || -> io::Result<()> {
        let mut reactor = Reactor::new()?;
        let id = reactor.start_server_with("127.0.0.1:0", options, move || Greets {
            log: server_log.clone(),
        })?;
        tx.send(reactor.server_addr(id)?.as_inet().expect("tcp"))
            .unwrap();
        reactor.run_until_stopped()
    });
    let mut stream = client(rx.recv().unwrap());
    let mut got = Vec::new();
    stream.read_to_end(&mut got).unwrap();
    drop(stream);
    server.join().unwrap().unwrap();
    let log = log.lock().unwrap().clone();
    (got, log)
}

#[test]
fn on_accept_sets_a_filter_before_post_init_or_refuses_the_connection() {
    // The filter is on before the handler's first byte.
    let options = packet::ServerOptions::new().on_accept(|conn| {
        conn.set_filter(TwoKeys {
            read_key: 0x11,
            write_key: 0x22,
        })
    });
    let (got, log) = greet_once(options);
    assert_eq!(got, xor(b"hi", 0x22));
    assert_eq!(log, ["post_init", "unbind: closed locally"]);

    // An error closes it: no post_init, the reason in unbind.
    let options = packet::ServerOptions::new()
        .on_accept(|_| Err(io::Error::new(io::ErrorKind::PermissionDenied, "not today")));
    let (got, log) = greet_once(options);
    assert_eq!(got, b"");
    assert_eq!(log, ["unbind: protocol error: not today"]);
}

/// Writes each piece with `io::Write` (straight to the socket when it is
/// large) and then, wrongly, a marker with `extend_from_slice` even when
/// the write came back short: the marker would overtake the rest.
struct Misorders;

impl Filter for Misorders {
    fn decode(&mut self, from_socket: &[u8], to_handler: &mut Vec<u8>) -> io::Result<()> {
        unchanged(from_socket, to_handler)
    }
    fn encode(&mut self, from_handler: &[u8], to_socket: &mut FilterOutput<'_>) {
        // What the socket does not take is lost here: the filter is wrong
        // twice, and the connection must end before either shows.
        let _ = to_socket.write(from_handler);
        to_socket.extend_from_slice(b"|");
    }
}

/// Sends 8 MiB through [`Misorders`] behind a small send buffer and
/// reports why the connection ended.
struct FloodsMisordered(std::sync::mpsc::Sender<String>);

impl Handler for FloodsMisordered {
    fn post_init(&mut self, conn: &mut Connection<'_>) {
        conn.set_sock_opt(SOL_SOCKET, SO_SNDBUF, 4096).unwrap();
        conn.set_filter(Misorders).unwrap();
        conn.send_data(&pattern(5, 8 * 1024 * 1024));
    }
    fn unbind(&mut self, _conn: &mut Connection<'_>, reason: &CloseReason) {
        let _ = self.0.send(reason.to_string());
    }
}

#[test]
fn bytes_given_after_a_short_write_close_the_connection_instead_of_reordering() {
    let (tx, rx) = std::sync::mpsc::channel();
    let server = spawn_reactor(move |r| {
        let tx = tx.clone();
        let id = r.start_server("127.0.0.1:0", move || FloodsMisordered(tx.clone()))?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    // Not reading: the socket fills, and a write comes back short.
    let mut stream = client(server.value);
    let reason = rx
        .recv_timeout(util::IO_TIMEOUT)
        .expect("the connection ends");
    assert!(reason.contains("out of order"), "{reason}");
    // What did arrive is in order: without the markers, a beginning of
    // what was sent (the close came before the lost tail of the short
    // write could show).
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    let unmarked =
        |bytes: &[u8]| -> Vec<u8> { bytes.iter().copied().filter(|&b| b != b'|').collect() };
    let (got, sent) = (unmarked(&got), unmarked(&pattern(5, 8 * 1024 * 1024)));
    assert!(
        !got.is_empty() && sent.starts_with(&got),
        "{} bytes, out of order",
        got.len()
    );
    server.stop();
}
