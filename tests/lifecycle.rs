//! How connections end and how servers stop (issue 20): a half-closed
//! client gets every answer it is owed; a close after writing lingers, so
//! input the client sends after the last response cannot reset it; a
//! failed connect ends with `unbind`; a late reply reaches the log hook;
//! `SIGTERM` to `http_server` mid-download delivers the whole file and
//! exits 0. Real sockets on loopback; waits are event-driven, with
//! generous bounds only as hang guards.

mod util;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use packet::{CloseReason, Connection, Handler, Reactor, ReplyId};
use util::example::Program;
use util::{client, spawn_reactor, IO_TIMEOUT};

/// Answers each line (upper-cased) 200 ms after it came, through the
/// reply service, as a slow worker would; `receive_eof` is the default.
struct SlowUpcase {
    partial: Vec<u8>,
}

impl Handler for SlowUpcase {
    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        self.partial.extend_from_slice(data);
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let id = conn.id();
            let reply = conn.expect_reply();
            conn.reactor()
                .add_timer(Duration::from_millis(200), move |r| {
                    if let Some(mut conn) = r.connection(id) {
                        conn.send_reply(reply, line.to_ascii_uppercase());
                    }
                });
        }
    }

    fn receive_reply(&mut self, conn: &mut Connection<'_>, reply: packet::Reply) {
        if let Ok(answer) = reply.take::<Vec<u8>>() {
            conn.send_data(&answer);
        }
    }
}

#[test]
fn a_half_closed_client_gets_both_slow_answers() {
    let server = spawn_reactor(|r| {
        let id = r.start_server("127.0.0.1:0", || SlowUpcase {
            partial: Vec::new(),
        })?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    let mut c = client(server.value);
    c.write_all(b"one\ntwo\n").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"ONE\nTWO\n");
    server.stop();
}

const BIG: usize = 64 * 1024 * 1024;

/// Answers the first read with `BIG` bytes and `close_connection_after_writing`,
/// as an HTTP server answers a request with `Connection: close`.
struct BigThenClose {
    answered: bool,
}

impl Handler for BigThenClose {
    fn receive_data(&mut self, conn: &mut Connection<'_>, _data: &[u8]) {
        if !self.answered {
            self.answered = true;
            conn.send_data(&vec![b'x'; BIG]);
            conn.close_connection_after_writing();
        }
    }
}

#[test]
fn a_response_followed_by_more_client_input_arrives_whole() {
    let server = spawn_reactor(|r| {
        let id = r.start_server("127.0.0.1:0", || BigThenClose { answered: false })?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    for round in 0..3 {
        let mut c = client(server.value);
        c.write_all(b"GET /big.bin HTTP/1.1\r\nConnection: close\r\n\r\n")
            .unwrap();
        // The first byte of the response: the request was read and the
        // close is decided. What comes now is unread input at the close.
        let mut first = [0u8; 1];
        c.read_exact(&mut first).unwrap();
        c.write_all(b"GET /next HTTP/1.1\r\n\r\n").unwrap();
        let mut rest = Vec::new();
        let end = c.read_to_end(&mut rest);
        assert!(
            end.is_ok(),
            "round {round}: {end:?} after {} bytes",
            rest.len() + 1
        );
        assert_eq!(rest.len() + 1, BIG, "round {round}");
    }
    server.stop();
}

/// Reports its `unbind` reason.
struct Reports(mpsc::Sender<String>);

impl Handler for Reports {
    fn unbind(&mut self, _conn: &mut Connection<'_>, reason: &CloseReason) {
        let text = match reason {
            CloseReason::ConnectFailed(e) => format!("connect failed: {:?}", e.kind()),
            other => other.to_string(),
        };
        let _ = self.0.send(text);
    }
}

#[test]
fn a_failed_connect_ends_with_unbind_and_its_reason() {
    // A port that was just free: nothing listens on it.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let running = spawn_reactor(move |r| {
        r.connect(port, Reports(tx))?;
        Ok(())
    });
    let reason = rx.recv_timeout(IO_TIMEOUT).expect("no unbind");
    assert_eq!(reason, "connect failed: ConnectionRefused");
    running.stop();
}

#[test]
fn a_reply_for_a_closed_connection_reaches_the_log_hook() {
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    packet::log::set_log_hook(move |l| sink.lock().unwrap().push(l.to_string()));
    let (tx, rx) = mpsc::channel();
    let server = spawn_reactor(move |r| {
        let id = r.start_server("127.0.0.1:0", move || Asker(tx.clone(), None))?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    let mut c = client(server.value);
    c.write_all(b"x").unwrap();
    let conn = rx.recv_timeout(IO_TIMEOUT).expect("no ask");
    drop(c);
    let logged = util::eventually(IO_TIMEOUT, || {
        lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains(&format!("for connection {conn} dropped")))
    });
    packet::log::reset_log_hook();
    assert!(logged, "{:?}", lines.lock().unwrap());
    server.stop();
}

/// Expects a reply, and at the peer's end of stream sends it and closes
/// the connection at once: the reply, queued for after the callback,
/// finds the connection closed.
struct Asker(mpsc::Sender<String>, Option<ReplyId>);

impl Handler for Asker {
    fn receive_data(&mut self, conn: &mut Connection<'_>, _data: &[u8]) {
        self.1 = Some(conn.expect_reply());
        let _ = self.0.send(conn.id().to_string());
    }

    fn receive_eof(&mut self, conn: &mut Connection<'_>) {
        if let Some(reply) = self.1.take() {
            conn.send_reply(reply, ());
        }
        conn.close_connection();
    }
}

/// `http_server --root DIR` with a 64 MiB file, a client reading it slowly,
/// and `SIGTERM` once the download is under way: the whole file arrives
/// and the server exits with status 0.
#[test]
fn sigterm_mid_download_delivers_the_whole_file_and_exits_0() {
    let dir = std::env::temp_dir().join(format!("packet-lifecycle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let body: Vec<u8> = (0..BIG).map(|i| (i % 251) as u8).collect();
    std::fs::write(dir.join("big.bin"), &body).unwrap();
    let mut server = Program::start(
        "http_server",
        &["127.0.0.1:0", "--root", dir.to_str().unwrap()],
    );
    let mut c = TcpStream::connect(&server.addr).unwrap();
    c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    c.write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut signalled = false;
    loop {
        let n = c.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if !signalled && got.len() > 1024 * 1024 {
            util::send_signal(server.child.id(), "TERM", false);
            signalled = true;
        }
        // A slow reader: the server must keep streaming during the stop.
        std::thread::sleep(Duration::from_millis(2));
    }
    // Our end of stream ends the server's lingering close, and with it the
    // stop, now rather than after its 5 s of quiet.
    drop(c);
    let head_end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no response head")
        + 4;
    assert_eq!(got.len() - head_end, BIG, "the file was cut");
    assert!(got[head_end..] == body[..], "the file arrived changed");
    let status = server.wait_exit(IO_TIMEOUT).expect("still running");
    assert_eq!(status.code(), Some(0), "{:?}", server.stderr());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_reactor_with_nothing_open_stops_gracefully_at_once_and_clean() {
    let mut r = Reactor::new().unwrap();
    r.start_server("127.0.0.1:0", || BigThenClose { answered: false })
        .unwrap();
    r.next_turn(|r| r.stop_gracefully(Duration::from_secs(30)));
    r.run_until_stopped().unwrap();
    assert!(r.stop_report().unwrap().is_clean());
}

/// `eval_server` as the leader of its own process group (a terminal's
/// hangup or Ctrl-\ reaches the whole group: master, fork server,
/// workers), with its address.
fn eval_server_in_own_group() -> (KillOnDrop, String) {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new(util::example::binary("eval_server"))
        .arg("127.0.0.1:0")
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let out = std::io::BufReader::new(child.stdout.take().unwrap());
    let addr = out
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("listening on ").map(str::to_string))
        .expect("eval_server never said where it listens");
    (KillOnDrop(child), addr)
}

/// A child process killed (by its pid) if a failed test leaves it running;
/// its workers die with it (`PR_SET_PDEATHSIG`).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Sends `n` lines `i+1` and, once the first answer is back (the master has
/// read them and asked), signals the group; returns every line read until
/// `n` answers came or the server closed.
fn asks_with_group_signal(addr: &str, pid: u32, n: usize, sig: &str) -> Vec<String> {
    use std::io::BufRead;
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let text: String = (0..n).map(|i| format!("{i}+1\n")).collect();
    s.write_all(text.as_bytes()).unwrap();
    let mut reader = std::io::BufReader::new(s);
    let mut answers = Vec::new();
    let mut line = String::new();
    while answers.len() < n {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        answers.push(line.trim_end().to_string());
        if answers.len() == 1 {
            util::send_signal(pid, sig, true);
        }
    }
    answers
}

#[test]
fn hup_and_quit_to_the_process_group_lose_no_ask() {
    let (mut server, addr) = eval_server_in_own_group();
    let child = &mut server.0;
    let pid = child.id();
    // A hangup: the master logs it and goes on; every ask is answered.
    let answers = asks_with_group_signal(&addr, pid, 500, "HUP");
    let expected: Vec<String> = (0..500).map(|i| (i + 1).to_string()).collect();
    assert_eq!(answers, expected);
    assert!(child.try_wait().unwrap().is_none(), "HUP ended the server");
    // Ctrl-\: a graceful stop; the asks read are answered (by the workers,
    // or with an error line if the stop refused them), none is silent.
    let answers = asks_with_group_signal(&addr, pid, 500, "QUIT");
    assert_eq!(
        answers.len(),
        500,
        "{:?}",
        &answers[answers.len().saturating_sub(3)..]
    );
    for (i, a) in answers.iter().enumerate() {
        assert!(
            *a == (i + 1).to_string() || a.starts_with("error: "),
            "line {i}: {a}"
        );
    }
    let exited = util::eventually(IO_TIMEOUT, || child.try_wait().unwrap().is_some());
    assert!(exited, "QUIT did not stop the server");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// `echo_server` with 8 clients sending and reading as fast as they can,
/// then `SIGTERM`: each gets an orderly end of stream (no reset) after an
/// unbroken prefix of what it sent — everything the server read was echoed
/// — and the server exits 0 (its stop cut nothing).
#[test]
fn sigterm_to_echo_server_with_busy_clients_loses_nothing() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut server = Program::start("echo_server", &["127.0.0.1:0"]);
    let (started_tx, started_rx) = mpsc::channel();
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let s = server.connect();
            let started = started_tx.clone();
            std::thread::spawn(move || {
                let done = Arc::new(AtomicBool::new(false));
                let mut w = s.try_clone().unwrap();
                let writer_done = done.clone();
                let writer = std::thread::spawn(move || {
                    let chunk: Vec<u8> = (0..251 * 256).map(|i| (i % 251) as u8).collect();
                    while !writer_done.load(Ordering::Relaxed) {
                        if w.write_all(&chunk).is_err() {
                            break;
                        }
                    }
                    let _ = w.shutdown(Shutdown::Write);
                });
                let mut r = s;
                let mut buf = vec![0u8; 64 * 1024];
                let (mut total, mut said) = (0usize, false);
                let end = loop {
                    match r.read(&mut buf) {
                        Ok(0) => break Ok(total),
                        Ok(n) => {
                            for (k, b) in buf[..n].iter().enumerate() {
                                assert_eq!(*b, ((total + k) % 251) as u8, "byte {}", total + k);
                            }
                            total += n;
                            if !said && total > 1024 * 1024 {
                                said = true;
                                let _ = started.send(());
                            }
                        }
                        Err(e) => break Err(e),
                    }
                };
                done.store(true, Ordering::Relaxed);
                writer.join().unwrap();
                end
            })
        })
        .collect();
    for _ in 0..8 {
        started_rx
            .recv_timeout(IO_TIMEOUT)
            .expect("a client got no echo");
    }
    util::send_signal(server.child.id(), "TERM", false);
    for c in clients {
        let end = c.join().unwrap();
        assert!(end.is_ok(), "a client's stream ended with {end:?}");
    }
    let status = server.wait_exit(IO_TIMEOUT).expect("still running");
    assert_eq!(status.code(), Some(0), "{:?}", server.stderr());
}

/// Sets a short inactivity timeout and does nothing else.
#[cfg(feature = "tls")]
struct Idle;

#[cfg(feature = "tls")]
impl Handler for Idle {
    fn post_init(&mut self, conn: &mut Connection<'_>) {
        conn.set_inactivity_timeout(Some(Duration::from_millis(300)));
    }
}

/// A TLS connection closed by the inactivity timeout ends with the
/// server's `close_notify`, not a bare end of stream (which a TLS client
/// must take for a truncation).
#[cfg(feature = "tls")]
#[test]
fn an_idle_timeout_on_a_tls_connection_sends_close_notify() {
    use packet::tls;
    let (_, server_config, client_config) = util::tls_configs();
    let server = spawn_reactor(move |r| {
        let id = r
            .tls()
            .start_server("127.0.0.1:0", server_config, || Idle)?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    let name = tls::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let session = tls::rustls::ClientConnection::new(client_config, name).unwrap();
    let sock = client(server.value);
    let mut stream = tls::rustls::StreamOwned::new(session, sock);
    // Completes the handshake (the server answers nothing).
    stream.write_all(b"hello").unwrap();
    let mut buf = [0u8; 16];
    let end = stream.read(&mut buf);
    assert!(
        matches!(end, Ok(0)),
        "{end:?}: no close_notify before the end"
    );
    server.stop();
}
