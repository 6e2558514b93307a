//! Hostile and broken peers: resets in the middle of a write, closes with
//! data in flight, half-closes followed by more output, readers that never
//! read. Each ends with an `unbind` that names the reason, no panic, no
//! `SIGPIPE`, and a reactor that goes on serving.
//!
//! A binary of its own: it routes `SIGPIPE` to a sentinel reactor for the
//! whole process (so any `SIGPIPE` raised by a write is counted, where the
//! Rust runtime would otherwise ignore it silently), and it measures the
//! process's resident memory, so its tests run one at a time.

mod util;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use packet::{CloseReason, ConnId, Connection, Handler, Reactor};
use util::{client, echo_round_trip, pattern, spawn_reactor, Echo, IO_TIMEOUT};

/// `SIGPIPE` on Linux (and every other Unix in use).
const SIGPIPE: i32 = 13;

/// Tests share the process's memory and signal counters: one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// How many `SIGPIPE`s this process has received. The first call routes
/// the signal to a reactor of its own that counts them, and checks that
/// the counting works with a write to a pipe whose reader is gone (plain
/// `write(2)`, which does raise it).
fn sigpipes() -> usize {
    static COUNT: OnceLock<Arc<AtomicUsize>> = OnceLock::new();
    let count = COUNT.get_or_init(|| {
        let count = Arc::new(AtomicUsize::new(0));
        let c = count.clone();
        let sentinel = spawn_reactor(move |r| {
            r.on_signal(SIGPIPE, move |_| {
                c.fetch_add(1, Ordering::SeqCst);
            })
        });
        // Runs for the life of the process.
        std::mem::forget(sentinel);
        let (reader, writer) = packet_sys::process::pipe().unwrap();
        drop(reader);
        let e = std::fs::File::from(writer).write(b"x").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        assert!(
            util::eventually(IO_TIMEOUT, || count.load(Ordering::SeqCst) > 0),
            "the SIGPIPE sentinel never saw its own SIGPIPE"
        );
        count.store(0, Ordering::SeqCst);
        count
    });
    count.load(Ordering::SeqCst)
}

/// Closes with `SO_LINGER` 0: the peer gets a reset, not an end of stream.
fn reset(stream: impl Into<OwnedFd>) {
    let s = packet_sys::Socket::from(stream.into());
    s.set_linger(Some(Duration::ZERO)).unwrap();
    drop(s);
}

/// Asks the reactor behind `handle` how many connections it has.
fn connections(handle: &packet::ReactorHandle) -> usize {
    let (tx, rx) = mpsc::channel();
    handle.schedule(move |r| tx.send(r.connection_count()).unwrap());
    rx.recv_timeout(IO_TIMEOUT).unwrap()
}

/// Round trips on a fresh connection: the reactor still serves.
fn still_serves(addr: SocketAddr) {
    for i in 0..3 {
        let data = pattern(900 + i, 50_000);
        assert!(echo_round_trip(client(addr), data.clone(), false) == data);
    }
}

/// Queues `size` bytes at once (no high-water mark) and reports its
/// `unbind` reason.
struct Blaster {
    data: Arc<Vec<u8>>,
    report: mpsc::Sender<String>,
}

impl Handler for Blaster {
    fn connection_completed(&mut self, conn: &mut Connection<'_>) {
        conn.set_high_water_mark(usize::MAX);
        conn.send_data(&self.data);
    }
    fn unbind(&mut self, _conn: &mut Connection<'_>, reason: &CloseReason) {
        let _ = self.report.send(reason.to_string());
    }
}

/// The reasons a connection whose peer vanished mid-stream may end with:
/// `ECONNRESET` is a reset, `EPIPE` (the reset already consumed, or a Unix
/// socket's peer gone) the peer's close.
fn is_peer_gone(reason: &str) -> bool {
    reason == "connection reset by peer" || reason == "closed by peer"
}

#[test]
fn a_reset_in_the_middle_of_a_large_write_is_an_unbind_not_a_signal() {
    let _serial = serial();
    let pipes = sigpipes();
    let (tx, rx) = mpsc::channel();
    let data = Arc::new(pattern(5, 32 * 1024 * 1024));
    let server = spawn_reactor(move |r| {
        let blast = r.start_server("127.0.0.1:0", move || Blaster {
            data: data.clone(),
            report: tx.clone(),
        })?;
        let echo = r.start_server("127.0.0.1:0", || Echo)?;
        Ok((
            r.server_addr(blast)?.as_inet().unwrap(),
            r.server_addr(echo)?.as_inet().unwrap(),
        ))
    });
    let (blast_addr, echo_addr) = server.value;
    for round in 0..5 {
        let mut c = client(blast_addr);
        // Part of the 32 MiB is read, most of it is still queued.
        let mut some = vec![0u8; 64 * 1024 * (round + 1)];
        c.read_exact(&mut some).unwrap();
        assert!(some[..] == pattern(5, some.len())[..]);
        reset(c);
        let reason = rx.recv_timeout(IO_TIMEOUT).unwrap();
        assert!(
            is_peer_gone(&reason),
            "round {round}: unbind said {reason:?}"
        );
    }
    still_serves(echo_addr);
    assert_eq!(
        connections(&server.handle),
        0,
        "every reset connection is gone"
    );
    assert_eq!(sigpipes(), pipes, "a write raised SIGPIPE");
    server.stop();
}

/// Echoes, and reports its `unbind` reason.
struct ReportingEcho(mpsc::Sender<String>);

/// `util::Echo`'s echo and backpressure, with the report.
impl Handler for ReportingEcho {
    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        Echo.receive_data(conn, data);
    }
    fn outbound_full(&mut self, conn: &mut Connection<'_>) {
        Echo.outbound_full(conn);
    }
    fn outbound_drained(&mut self, conn: &mut Connection<'_>) {
        Echo.outbound_drained(conn);
    }
    fn unbind(&mut self, _conn: &mut Connection<'_>, reason: &CloseReason) {
        let _ = self.0.send(reason.to_string());
    }
}

#[test]
fn a_close_with_data_in_flight_both_ways_ends_only_that_connection() {
    let _serial = serial();
    let pipes = sigpipes();
    let (tx, rx) = mpsc::channel();
    let server = spawn_reactor(move |r| {
        let id = r.start_server("127.0.0.1:0", move || ReportingEcho(tx.clone()))?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    let addr = server.value;
    let bystander = client(addr);
    for round in 0..10 {
        // Sends 512 KiB and closes without reading the echo: the kernel
        // answers the echo with a reset while the server is still writing,
        // and has unread input of its own.
        let mut c = client(addr);
        c.write_all(&pattern(round, 512 * 1024)).unwrap();
        if round % 2 == 1 {
            reset(c);
        } else {
            drop(c);
        }
        let reason = rx.recv_timeout(IO_TIMEOUT).unwrap();
        assert!(
            is_peer_gone(&reason),
            "round {round}: unbind said {reason:?}"
        );
    }
    // The connection that stayed open is untouched.
    let data = pattern(77, 200_000);
    assert!(echo_round_trip(bystander, data.clone(), false) == data);
    assert_eq!(rx.recv_timeout(IO_TIMEOUT).unwrap(), "closed by peer");
    assert_eq!(connections(&server.handle), 0);
    assert_eq!(sigpipes(), pipes, "a write raised SIGPIPE");
    server.stop();
}

/// On `go`, streams `total` bytes in 64 KiB pieces, producing more only
/// from `outbound_drained` (the way a file is streamed), and reports how
/// much it sent and why it ended.
struct Streamer {
    data: Arc<Vec<u8>>,
    sent: usize,
    report: mpsc::Sender<(usize, String)>,
}

const STREAM_MARK: usize = 256 * 1024;

/// Bytes a `Streamer` sends.
const TOTAL: usize = 8 * 1024 * 1024;

/// What each `Streamer` reports: bytes sent, and its `unbind` reason.
type StreamReports = mpsc::Receiver<(usize, String)>;

/// A server of `Streamer`s, the bytes they send, and their reports.
fn streaming_server() -> (util::Running<SocketAddr>, Arc<Vec<u8>>, StreamReports) {
    let (tx, rx) = mpsc::channel();
    let data = Arc::new(pattern(9, TOTAL));
    let expect = data.clone();
    let server = spawn_reactor(move |r| {
        let id = r.start_server("127.0.0.1:0", move || Streamer {
            data: data.clone(),
            sent: 0,
            report: tx.clone(),
        })?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    (server, expect, rx)
}

impl Streamer {
    fn pump(&mut self, conn: &mut Connection<'_>) {
        let total = self.data.len();
        while self.sent < total && conn.outbound_len() <= STREAM_MARK {
            let end = (self.sent + 65536).min(total);
            conn.send_data(&self.data[self.sent..end]);
            self.sent = end;
        }
    }
}

impl Handler for Streamer {
    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        if data == b"go" && self.sent == 0 {
            conn.set_high_water_mark(STREAM_MARK);
            self.pump(conn);
        }
    }
    fn outbound_drained(&mut self, conn: &mut Connection<'_>) {
        self.pump(conn);
    }
    fn unbind(&mut self, _conn: &mut Connection<'_>, reason: &CloseReason) {
        let _ = self.report.send((self.sent, reason.to_string()));
    }
}

/// The peer half-closes right after its request; the server goes on
/// producing output from `outbound_drained` (ARCHITECTURE.md: "writes made
/// before the queue drains are still accepted (a response streamed with
/// `outbound_drained`)"). Every byte must arrive before the close.
///
/// Regression: when one flush emptied the queue, `check_water` used to
/// queue `outbound_drained` and begin the close in the same call, so the
/// callback never ran and the stream was cut short.
#[test]
fn after_the_peer_half_closes_a_stream_fed_from_outbound_drained_is_delivered_whole() {
    let _serial = serial();
    let (server, expect, rx) = streaming_server();
    for round in 0..5 {
        let mut c = client(server.value);
        c.write_all(b"go").unwrap();
        c.shutdown(std::net::Shutdown::Write).unwrap();
        let mut got = Vec::with_capacity(TOTAL);
        c.read_to_end(&mut got).unwrap();
        let (sent, reason) = rx.recv_timeout(IO_TIMEOUT).unwrap();
        assert_eq!(
            (got.len(), sent, reason.as_str()),
            (TOTAL, TOTAL, "closed by peer"),
            "round {round}: received, produced, unbind reason"
        );
        assert!(got[..] == expect[..], "round {round}: stream differs");
    }
    server.stop();
}

/// What the same stream looks like when the peer does not half-close: the
/// control for the test above, and a check that it is not the streaming
/// itself that loses bytes.
#[test]
fn a_stream_fed_from_outbound_drained_is_delivered_whole() {
    let _serial = serial();
    let (server, expect, rx) = streaming_server();
    let mut c = client(server.value);
    c.write_all(b"go").unwrap();
    let mut got = vec![0u8; TOTAL];
    c.read_exact(&mut got).unwrap();
    assert!(got[..] == expect[..], "stream differs");
    drop(c);
    assert_eq!(
        rx.recv_timeout(IO_TIMEOUT).unwrap(),
        (TOTAL, "closed by peer".to_string())
    );
    server.stop();
}

/// Sends 64 KiB every millisecond to its connection until it is gone.
struct Pusher(mpsc::Sender<String>);

impl Handler for Pusher {
    fn connection_completed(&mut self, conn: &mut Connection<'_>) {
        let id: ConnId = conn.id();
        let chunk = pattern(3, 65536);
        conn.reactor().add_periodic_timer(
            Duration::from_millis(1),
            move |r: &mut Reactor, timer| {
                if !r
                    .connection(id)
                    .is_some_and(|mut c| c.try_send_data(&chunk))
                {
                    r.cancel_timer(timer);
                }
            },
        );
    }
    fn unbind(&mut self, _conn: &mut Connection<'_>, reason: &CloseReason) {
        let _ = self.0.send(reason.to_string());
    }
}

#[test]
fn an_outgoing_connection_whose_peer_resets_while_it_writes_is_unbound() {
    let _serial = serial();
    let pipes = sigpipes();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    let running = spawn_reactor(move |r| {
        for _ in 0..5 {
            r.connect(addr, Pusher(tx.clone()))?;
        }
        Ok(())
    });
    for i in 0..5 {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        // Read a little of what it pushes, then reset.
        let mut buf = vec![0u8; 1000 * (i + 1)];
        s.read_exact(&mut buf).unwrap();
        reset(s);
    }
    for _ in 0..5 {
        let reason = rx.recv_timeout(IO_TIMEOUT).unwrap();
        assert!(is_peer_gone(&reason), "unbind said {reason:?}");
    }
    assert_eq!(connections(&running.handle), 0);
    assert_eq!(sigpipes(), pipes, "a write raised SIGPIPE");
    running.stop();
}

#[test]
fn a_unix_socket_peer_that_goes_away_mid_write_is_an_unbind_not_a_signal() {
    let _serial = serial();
    let pipes = sigpipes();
    let path = std::env::temp_dir().join(format!("packet-faults-{}.sock", std::process::id()));
    let (tx, rx) = mpsc::channel();
    let p = path.clone();
    let data = Arc::new(pattern(5, 8 * 1024 * 1024));
    let server = spawn_reactor(move |r| {
        r.start_unix_server(&p, move || Blaster {
            data: data.clone(),
            report: tx.clone(),
        })?;
        Ok(())
    });
    for _ in 0..5 {
        let mut c = std::os::unix::net::UnixStream::connect(&path).unwrap();
        c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut some = vec![0u8; 100_000];
        c.read_exact(&mut some).unwrap();
        drop(c);
        // Closed with unread data: the writer gets ECONNRESET (or EPIPE
        // once that was reported).
        let reason = rx.recv_timeout(IO_TIMEOUT).unwrap();
        assert!(is_peer_gone(&reason), "unbind said {reason:?}");
    }
    assert_eq!(sigpipes(), pipes, "a write raised SIGPIPE");
    server.stop();
    assert!(!path.exists(), "the socket file is removed");
}

#[test]
fn a_client_that_writes_and_never_reads_cannot_grow_the_servers_memory() {
    let _serial = serial();
    let server = util::echo_server();
    // Warm the reactor up (its read buffer, the first queue chunks).
    still_serves(server.value);
    let before = util::rss_kib();

    let mut c = client(server.value);
    c.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    const CAP: usize = 512 * 1024 * 1024;
    let mut written = 0usize;
    let mut offset = 0u64;
    let chunk = pattern(31, 65536);
    // Write until the server stops taking bytes: its queue is over the
    // high-water mark, it paused reading, and every kernel buffer between
    // the two is full. (A write that makes no progress for 2 s; if the
    // machine is just slow, memory is measured earlier, which only makes
    // the bound easier to meet, and `written` below shows it.)
    while written < CAP {
        match c.write(&chunk[(offset as usize)..]) {
            Ok(n) => {
                written += n;
                offset = (offset + n as u64) % 65536;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) => panic!("write failed: {e}"),
        }
    }
    let during = util::rss_kib();
    println!(
        "slow reader: {written} bytes accepted before backpressure; \
         RSS {before} KiB -> {during} KiB"
    );
    assert!(written < CAP, "the server never stopped reading");
    // The echo server queues at most its 1 MiB mark plus one read buffer
    // (96 KiB) for the connection; allow for allocator slack.
    assert!(
        during <= before + 4 * 1024,
        "RSS grew from {before} KiB to {during} KiB for one non-reading client"
    );
    // Reading resumes the flow: every byte comes back, in order.
    c.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut got = vec![0u8; written];
    c.read_exact(&mut got).unwrap();
    for (i, piece) in got.chunks(65536).enumerate() {
        assert!(piece == &chunk[..piece.len()], "echo differs in chunk {i}");
    }
    server.stop();
}
