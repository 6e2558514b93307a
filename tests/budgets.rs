//! Budgets and deadlines that hold by default (issue 20, items 4 and 5):
//! a pause inside one read's batch of lines, the reactor-wide outbound
//! budget, the TLS handshake deadline and `http_server`'s request-header
//! deadline. Every check is on what happened (lines delivered, memory
//! used, connections closed and why); times are only hang guards.

mod util;

use std::cell::Cell;
use std::io::{Read, Write};
use std::rc::Rc;
use std::sync::mpsc;

use packet::line::{LineContext, LineHandler, LineProtocol};
use packet::{CloseReason, Connection, Handler};
use util::example::Program;
use util::{client, spawn_reactor, IO_TIMEOUT};

/// Lines one connection may have "in flight" before it pauses.
const LIMIT: usize = 4;

/// Counts lines as requests in flight, pauses at [`LIMIT`] and lets the
/// next turn "answer" them all and resume: the examples' ask limit.
struct Limited {
    in_flight: Rc<Cell<usize>>,
    most: usize,
    lines: Vec<Vec<u8>>,
    tx: mpsc::Sender<(usize, Vec<Vec<u8>>)>,
}

impl Handler for Limited {
    fn unbind(&mut self, _: &mut Connection<'_>, _: &CloseReason) {
        let _ = self.tx.send((self.most, std::mem::take(&mut self.lines)));
    }
}

impl LineHandler for Limited {
    fn receive_line(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
        self.lines.push(line.to_vec());
        let n = self.in_flight.get() + 1;
        self.in_flight.set(n);
        self.most = self.most.max(n);
        if n == LIMIT {
            ctx.pause();
            let (id, in_flight) = (ctx.id(), self.in_flight.clone());
            ctx.reactor().next_turn(move |r| {
                in_flight.set(0);
                if let Some(mut conn) = r.connection(id) {
                    conn.resume();
                }
            });
        }
    }
}

#[test]
fn a_pause_stops_the_batch_of_one_read_at_once() {
    let (tx, rx) = mpsc::channel();
    let server = spawn_reactor(move |r| {
        let id = r.start_server("127.0.0.1:0", move || {
            LineProtocol::new(Limited {
                in_flight: Rc::new(Cell::new(0)),
                most: 0,
                lines: Vec::new(),
                tx: tx.clone(),
            })
        })?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    // 192 lines in one write: one read on loopback, or a few.
    let sent: Vec<Vec<u8>> = (0..192).map(|i| format!("line {i}").into_bytes()).collect();
    let mut input = Vec::new();
    for l in &sent {
        input.extend_from_slice(l);
        input.push(b'\n');
    }
    let mut s = client(server.value);
    s.write_all(&input).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    let (most, lines) = rx.recv_timeout(IO_TIMEOUT).expect("connection ended");
    server.stop();
    assert_eq!(lines, sent, "every line, once, in order, after the resumes");
    assert_eq!(most, LIMIT, "no line was delivered past the pause");
}

/// `/proc/PID/status` field `field` of another process, in KiB.
fn status_kib_of(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("field in /proc/PID/status")
}

/// Issue 20's scenario: 100 connections each pipelining short lines, far
/// more in one read than the ask limit (128), to `eval_server`. With the
/// limit taking effect only from the next read, every line of a read
/// became an ask (1.7 GB of master memory for 96 KiB reads); with the
/// pause immediate at most 128 per connection are in flight.
///
/// The asks are made as the lines are read, so the peak is reached with
/// the first answers: each client checks its first `READ` answers, then
/// leaves, and the rest of its lines are never evaluated (the test costs
/// 100 x `READ` evaluations, not 100 x `LINES`).
#[test]
fn pipelined_clients_keep_the_eval_master_small() {
    const CONNS: usize = 100;
    // 16 KiB of 4-byte lines: one or a few reads each.
    const LINES: usize = 4096;
    // Twice the ask limit: past the point where a limit taking effect late
    // would have let every line of the first read become an ask.
    const READ: usize = 256;
    let server = Program::start("eval_server", &["127.0.0.1:0"]);
    let input = "1+1\n".repeat(LINES);
    let clients: Vec<_> = (0..CONNS)
        .map(|_| {
            let mut s = server.connect();
            let input = input.clone();
            std::thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                let writer = std::thread::spawn(move || w.write_all(input.as_bytes()));
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                while got.iter().filter(|&&b| b == b'\n').count() < READ {
                    let n = s.read(&mut buf).expect("answers keep coming");
                    assert!(n > 0, "closed early");
                    got.extend_from_slice(&buf[..n]);
                }
                writer.join().unwrap().unwrap();
                String::from_utf8(got).unwrap()
            })
        })
        .collect();
    for c in clients {
        let answers = c.join().expect("client thread");
        assert!(answers.lines().all(|l| l == "2"), "{answers:.200}");
        assert!(answers.lines().count() >= READ);
    }
    let pid = server.child.id();
    let peak_mib = status_kib_of(pid, "VmHWM:") / 1024;
    eprintln!("eval_server master peak RSS: {peak_mib} MiB");
    assert!(peak_mib < 64, "master peaked at {peak_mib} MiB");
}

/// The TLS handshake deadline and the inactivity timeout during a
/// handshake: a client that sends part of a hello and waits.
#[cfg(feature = "tls")]
mod tls_deadlines {
    use super::*;
    use packet::tls;
    use std::path::PathBuf;
    use std::time::Duration;

    /// The first 10 bytes of a TLS ClientHello: a record header announcing
    /// 512 bytes, and the start of the handshake message.
    const PARTIAL_HELLO: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03];

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    fn server_config() -> std::sync::Arc<tls::rustls::ServerConfig> {
        tls::server_config_from_pem_files(fixture("localhost.crt"), fixture("localhost.key"))
            .unwrap()
    }

    /// Sends a partial hello and reads until the server ends the
    /// connection: whether it did (end of stream or reset) within the hang
    /// guard.
    fn stalled_hello_is_closed(addr: std::net::SocketAddr) -> bool {
        let mut s = client(addr);
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(PARTIAL_HELLO).unwrap();
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {} // an alert
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false, // the 30 s guard passed
            }
        }
    }

    /// Reports each connection's close reason as text, with whether it was
    /// the handshake deadline.
    struct Report(mpsc::Sender<(String, bool)>);

    impl Handler for Report {
        fn unbind(&mut self, _: &mut Connection<'_>, reason: &CloseReason) {
            let deadline = match reason {
                CloseReason::Protocol(e) => e
                    .get_ref()
                    .and_then(|e| e.downcast_ref::<tls::HandshakeTimeout>())
                    .is_some(),
                _ => false,
            };
            let _ = self.0.send((reason.to_string(), deadline));
        }
    }

    #[test]
    fn a_stalled_handshake_ends_at_the_default_deadline() {
        let (tx, rx) = mpsc::channel();
        let server = spawn_reactor(move |r| {
            assert_eq!(
                r.tls().handshake_timeout(),
                Some(tls::DEFAULT_HANDSHAKE_TIMEOUT)
            );
            let id = r
                .tls()
                .start_server("127.0.0.1:0", server_config(), move || Report(tx.clone()))?;
            Ok(r.server_addr(id)?.as_inet().unwrap())
        });
        assert!(
            stalled_hello_is_closed(server.value),
            "still open after 30 s"
        );
        let (reason, deadline) = rx.recv_timeout(IO_TIMEOUT).unwrap();
        assert!(deadline, "closed for the handshake deadline, not {reason}");
        server.stop();
    }

    /// The inactivity timeout counts during the handshake too (here with
    /// the handshake deadline off, so only it can end the connection).
    struct Idle(Report);

    impl Handler for Idle {
        fn post_init(&mut self, conn: &mut Connection<'_>) {
            conn.set_inactivity_timeout(Some(Duration::from_millis(300)));
        }
        fn unbind(&mut self, conn: &mut Connection<'_>, reason: &CloseReason) {
            self.0.unbind(conn, reason);
        }
    }

    #[test]
    fn the_inactivity_timeout_applies_during_a_handshake() {
        let (tx, rx) = mpsc::channel();
        let server = spawn_reactor(move |r| {
            r.tls().set_handshake_timeout(None);
            let id = r
                .tls()
                .start_server("127.0.0.1:0", server_config(), move || {
                    Idle(Report(tx.clone()))
                })?;
            Ok(r.server_addr(id)?.as_inet().unwrap())
        });
        assert!(
            stalled_hello_is_closed(server.value),
            "still open after 30 s"
        );
        let (reason, _) = rx.recv_timeout(IO_TIMEOUT).unwrap();
        assert_eq!(reason, CloseReason::InactivityTimeout.to_string());
        server.stop();
    }

    /// `echo_server --tls` as a user starts it, with no other option: the
    /// library's default deadline closes a stalled hello (issue 20).
    #[test]
    fn echo_server_closes_a_stalled_hello_with_no_options() {
        let crt = fixture("localhost.crt");
        let key = fixture("localhost.key");
        let server = Program::start(
            "echo_server",
            &[
                "127.0.0.1:0",
                "--tls",
                crt.to_str().unwrap(),
                key.to_str().unwrap(),
            ],
        );
        let closed = stalled_hello_is_closed(server.addr.parse().unwrap());
        assert!(closed, "a stalled hello was still open after 30 s");
    }
}

/// Sends `len` bytes to each client as it connects, and reports how its
/// connection ended.
struct Flood {
    len: usize,
    tx: mpsc::Sender<(usize, String)>,
}

impl Handler for Flood {
    fn post_init(&mut self, conn: &mut Connection<'_>) {
        conn.send_data(&vec![7u8; self.len]);
        conn.close_connection_after_writing();
    }
    fn unbind(&mut self, _: &mut Connection<'_>, reason: &CloseReason) {
        let _ = self.tx.send((self.len, reason.to_string()));
    }
}

/// Slow readers of a small budget: the one with the largest queue is
/// closed with `CloseReason::Memory`; the others get all their bytes.
#[test]
fn the_outbound_budget_closes_the_largest_queue() {
    const SMALL: usize = 512 * 1024;
    const BIG: usize = 64 * 1024 * 1024;
    let (tx, rx) = mpsc::channel();
    let server = spawn_reactor(move |r| {
        assert_eq!(r.outbound_budget(), packet::DEFAULT_OUTBOUND_BUDGET);
        r.set_outbound_budget(16 * 1024 * 1024);
        // The small queues are written into the kernel's buffers of
        // clients that read nothing yet: their lingering closes would end
        // only after the default 5 s of quiet, which this test does not
        // check.
        r.set_default_linger(Some(packet::Linger {
            quiet: std::time::Duration::from_millis(200),
            ..packet::Linger::default()
        }));
        let sizes = std::cell::RefCell::new(vec![SMALL, SMALL, SMALL, BIG].into_iter());
        let id = r.start_server("127.0.0.1:0", move || Flood {
            len: sizes.borrow_mut().next().unwrap_or(SMALL),
            tx: tx.clone(),
        })?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    // Accepted in connect order, so the sizes go in order; nobody reads yet.
    let mut clients = Vec::new();
    for _ in 0..4 {
        let s = client(server.value);
        clients.push(s);
    }
    // The small ones fit in the kernel's buffers and close once written;
    // the big one cannot, and is over the budget.
    let mut ends: Vec<(usize, String)> = (0..4)
        .map(|_| rx.recv_timeout(IO_TIMEOUT).expect("a connection ended"))
        .collect();
    ends.sort();
    let memory = CloseReason::Memory.to_string();
    let local = CloseReason::Local.to_string();
    assert_eq!(ends[3], (BIG, memory));
    assert!(
        ends[..3].iter().all(|e| *e == (SMALL, local.clone())),
        "{ends:?}"
    );
    for mut s in clients.drain(..3) {
        let mut got = Vec::new();
        s.read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), SMALL, "a small reader got everything");
    }
    server.stop();
}

/// Slowloris: a header trickling in a byte every 0.5 s (never silent for
/// long, so the inactivity timeout never fires) gets `408` and a close at
/// the request-header deadline, here set to 2 s.
#[test]
fn http_server_ends_a_trickling_header_with_408() {
    let server = Program::start("http_server", &["127.0.0.1:0", "--header-timeout", "2"]);
    let mut s = server.connect();
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    let mut w = s.try_clone().unwrap();
    std::thread::spawn(move || {
        let head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ";
        let endless = head.iter().copied().chain(std::iter::repeat(b'a'));
        // Up to 60 bytes (30 s): stops at the first refused write.
        for b in endless.take(head.len() + 60) {
            if w.write_all(&[b]).is_err() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    });
    let mut got = Vec::new();
    let ended = match s.read_to_end(&mut got) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    // Our end of stream ends the server's lingering close at once (the
    // trickle would keep it reading for its 30 s cap), so the server's
    // stop at the end of the test does not wait for it.
    let _ = s.shutdown(std::net::Shutdown::Both);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text:?}");
    assert!(ended, "the connection was closed");
}
