//! TCP behaviour of the reactor over real loopback sockets.

mod util;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::sync::mpsc;
use std::time::Duration;

use packet::{CloseReason, ConnId, Connection, Handler};
use util::{client, echo_round_trip, echo_server, pattern, spawn_reactor, Echo};

#[test]
fn echoes_many_megabytes_over_many_connections_byte_exact() {
    let server = echo_server();
    let addr = server.value;
    let clients: Vec<_> = (0..24)
        .map(|i| {
            std::thread::spawn(move || {
                let data = pattern(i, 1_500_000 + i as usize * 7777);
                let got = echo_round_trip(client(addr), data.clone(), false);
                assert!(got == data, "connection {i}: echo differs");
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    server.stop();
}

#[test]
fn half_close_gets_every_echoed_byte_then_end_of_stream() {
    let server = echo_server();
    let data = pattern(7, 3_000_000);
    let got = echo_round_trip(client(server.value), data.clone(), true);
    assert_eq!(got.len(), data.len());
    assert!(got == data);
    server.stop();
}

/// Reports the reason of every `unbind` it sees.
struct Report(mpsc::Sender<String>);

impl Handler for Report {
    fn unbind(&mut self, _conn: &mut Connection<'_>, reason: &CloseReason) {
        let _ = self.0.send(match reason {
            CloseReason::ConnectFailed(e) => format!("connect failed: {:?}", e.kind()),
            other => other.to_string(),
        });
    }
}

#[test]
fn refused_connect_is_reported_in_unbind() {
    // A port that was just free: nothing listens there now.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (tx, rx) = mpsc::channel();
    let running = spawn_reactor(move |r| {
        r.connect(("127.0.0.1", port), Report(tx))?;
        Ok(())
    });
    let reason = rx.recv_timeout(util::IO_TIMEOUT).expect("unbind");
    assert_eq!(reason, "connect failed: ConnectionRefused");
    running.stop();
}

/// Sends a large payload as soon as connected, then closes after writing.
struct SendAndClose(Vec<u8>);

impl Handler for SendAndClose {
    fn connection_completed(&mut self, conn: &mut Connection<'_>) {
        for chunk in self.0.chunks(100_000) {
            conn.send_data(chunk);
        }
        conn.send_data(b"tail");
        conn.close_connection_after_writing();
        // Ignored: the connection is closing.
        conn.send_data(b"after close");
    }
}

#[test]
fn close_after_writing_flushes_everything_first() {
    let payload = pattern(3, 8_000_000);
    let expect = [payload.clone(), b"tail".to_vec()].concat();
    let server = spawn_reactor(move |r| {
        let id = r.start_server("127.0.0.1:0", move || SendAndClose(payload.clone()))?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    let mut c = client(server.value);
    // Read only once the socket is full, so the server really has to queue.
    util::wait_until_receive_queue_full(&c);
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), expect.len());
    assert!(got == expect);
    server.stop();
}

/// Echoes the first chunk and then pauses; reports its id.
struct PauseAfterFirst(mpsc::Sender<ConnId>, bool);

impl Handler for PauseAfterFirst {
    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        conn.send_data(data);
        if !self.1 {
            self.1 = true;
            conn.pause();
            assert!(conn.is_paused());
            let _ = self.0.send(conn.id());
        }
    }
}

#[test]
fn paused_connection_reads_nothing_until_resumed() {
    let (tx, rx) = mpsc::channel();
    let server = spawn_reactor(move |r| {
        let id = r.start_server("127.0.0.1:0", move || PauseAfterFirst(tx.clone(), false))?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    let mut c = client(server.value);
    c.write_all(b"first").unwrap();
    let mut buf = [0u8; 64];
    c.read_exact(&mut buf[..5]).unwrap();
    assert_eq!(&buf[..5], b"first");
    let id = rx.recv_timeout(util::IO_TIMEOUT).unwrap();
    c.write_all(b"second").unwrap();
    // While paused nothing may come back. (A broken pause fails here; a
    // working one passes however slow the machine is.)
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let e = c.read(&mut buf).unwrap_err();
    assert!(
        matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
        "{e}"
    );
    server
        .handle
        .schedule(move |r| r.connection(id).unwrap().resume());
    c.set_read_timeout(Some(util::IO_TIMEOUT)).unwrap();
    c.read_exact(&mut buf[..6]).unwrap();
    assert_eq!(&buf[..6], b"second");
    server.stop();
}

#[test]
fn stop_from_another_thread_unbinds_connections_and_closes_them() {
    let (tx, rx) = mpsc::channel();
    let server = spawn_reactor(move |r| {
        let id = r.start_server("127.0.0.1:0", move || Report(tx.clone()))?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    let mut c = client(server.value);
    c.write_all(b"x").unwrap();
    let addr = server.value;
    server.stop();
    assert_eq!(
        rx.recv_timeout(util::IO_TIMEOUT).unwrap(),
        "reactor stopped"
    );
    let mut buf = [0u8; 8];
    // End of stream, or a reset if the close raced the unread byte.
    match c.read(&mut buf) {
        Ok(n) => assert_eq!(n, 0, "the connection is closed"),
        Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset),
    }
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "the server is closed"
    );
}

/// Connects to `target`, sends `msg`, reports the echo and stops its own
/// reactor.
struct Probe {
    msg: &'static [u8],
    got: Vec<u8>,
    done: mpsc::Sender<Vec<u8>>,
}

impl Handler for Probe {
    fn connection_completed(&mut self, conn: &mut Connection<'_>) {
        conn.send_data(self.msg);
    }
    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        self.got.extend_from_slice(data);
        if self.got.len() >= self.msg.len() {
            let _ = self.done.send(std::mem::take(&mut self.got));
            conn.close_connection();
        }
    }
}

#[test]
fn two_reactors_in_one_process_talk_to_each_other() {
    let a = echo_server();
    let b = echo_server();
    let (tx, rx) = mpsc::channel();
    let (txa, txb) = (tx.clone(), tx);
    let (addr_a, addr_b) = (a.value, b.value);
    a.handle.schedule(move |r| {
        r.connect(
            addr_b,
            Probe {
                msg: b"from a",
                got: Vec::new(),
                done: txa,
            },
        )
        .unwrap();
    });
    b.handle.schedule(move |r| {
        r.connect(
            addr_a,
            Probe {
                msg: b"from b",
                got: Vec::new(),
                done: txb,
            },
        )
        .unwrap();
    });
    let mut got = [
        rx.recv_timeout(util::IO_TIMEOUT).unwrap(),
        rx.recv_timeout(util::IO_TIMEOUT).unwrap(),
    ];
    got.sort();
    assert_eq!(got, [b"from a".to_vec(), b"from b".to_vec()]);
    a.stop();
    b.stop();
}

#[test]
fn reactors_share_a_port_with_reuse_port() {
    let first = spawn_reactor(|r| {
        let opts = packet::ServerOptions::new().reuse_port(true);
        let id = r.start_server_with("127.0.0.1:0", opts, || Echo)?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    let addr = first.value;
    let second = spawn_reactor(move |r| {
        let opts = packet::ServerOptions::new().reuse_port(true);
        r.start_server_with(addr, opts, || Echo)?;
        Ok(())
    });
    for i in 0..40 {
        let data = pattern(100 + i, 1000);
        assert!(echo_round_trip(client(addr), data.clone(), false) == data);
    }
    first.stop();
    second.stop();
}

/// Writes `total` bytes of a pattern as fast as the peer takes them,
/// respecting the high-water mark, and records the largest outbound queue it
/// ever saw.
struct Firehose {
    data: std::sync::Arc<Vec<u8>>,
    sent: usize,
    max_queued: usize,
    report: mpsc::Sender<(&'static str, usize)>,
}

impl Firehose {
    fn pump(&mut self, conn: &mut Connection<'_>) {
        while self.sent < self.data.len() && conn.outbound_len() < HIGH_WATER {
            let end = (self.sent + 65536).min(self.data.len());
            conn.send_data(&self.data[self.sent..end]);
            self.sent = end;
            self.max_queued = self.max_queued.max(conn.outbound_len());
        }
        if self.sent == self.data.len() {
            conn.close_connection_after_writing();
        }
    }
}

const HIGH_WATER: usize = 256 * 1024;

impl Handler for Firehose {
    fn connection_completed(&mut self, conn: &mut Connection<'_>) {
        conn.set_high_water_mark(HIGH_WATER);
        self.pump(conn);
    }
    fn outbound_full(&mut self, _conn: &mut Connection<'_>) {
        let _ = self.report.send(("full", self.max_queued));
    }
    fn outbound_drained(&mut self, conn: &mut Connection<'_>) {
        self.pump(conn);
    }
    fn unbind(&mut self, _conn: &mut Connection<'_>, _reason: &CloseReason) {
        let _ = self.report.send(("done", self.max_queued));
    }
}

#[test]
fn a_reader_that_never_reads_does_not_grow_memory_or_stall_others() {
    const TOTAL: usize = 100 * 1024 * 1024;
    let data = std::sync::Arc::new(pattern(11, TOTAL));
    let (tx, rx) = mpsc::channel();
    let expect = data.clone();
    let server = spawn_reactor(move |r| {
        let slow = r.start_server("127.0.0.1:0", move || Firehose {
            data: data.clone(),
            sent: 0,
            max_queued: 0,
            report: tx.clone(),
        })?;
        let echo = r.start_server("127.0.0.1:0", || Echo)?;
        Ok((
            r.server_addr(slow)?.as_inet().unwrap(),
            r.server_addr(echo)?.as_inet().unwrap(),
        ))
    });
    let (slow_addr, echo_addr): (SocketAddr, SocketAddr) = server.value;
    let mut slow = client(slow_addr);
    // The server fills the kernel buffers and its queue, then waits.
    let (what, _) = rx.recv_timeout(util::IO_TIMEOUT).unwrap();
    assert_eq!(what, "full");
    // Meanwhile another client is served normally.
    for i in 0..20 {
        let data = pattern(200 + i, 10_000);
        assert!(echo_round_trip(client(echo_addr), data.clone(), false) == data);
    }
    let mut got = Vec::with_capacity(TOTAL);
    slow.read_to_end(&mut got).unwrap();
    // Our end of stream ends the server's lingering close (and so its
    // `done`) now, not after its 5 s of quiet.
    drop(slow);
    assert_eq!(got.len(), TOTAL);
    assert!(got[..] == expect[..]);
    // `full` may come again each time the queue refills; `done` ends it.
    let max_queued = loop {
        match rx.recv_timeout(util::IO_TIMEOUT).unwrap() {
            ("done", max) => break max,
            _ => continue,
        }
    };
    // The queue never held more than the mark plus one write.
    assert!(
        max_queued <= HIGH_WATER + 65536,
        "queue reached {max_queued} bytes"
    );
    server.stop();
}

/// Relays every line to every other member: the chat pattern, writing to
/// other connections by id.
struct Member(std::rc::Rc<std::cell::RefCell<Vec<ConnId>>>);

impl Handler for Member {
    fn post_init(&mut self, conn: &mut Connection<'_>) {
        self.0.borrow_mut().push(conn.id());
    }
    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        let me = conn.id();
        let members = self.0.borrow().clone();
        for other in members.into_iter().filter(|&m| m != me) {
            assert!(conn
                .reactor()
                .connection(other)
                .is_some_and(|mut c| c.try_send_data(data)));
        }
    }
    fn unbind(&mut self, conn: &mut Connection<'_>, _reason: &CloseReason) {
        let me = conn.id();
        self.0.borrow_mut().retain(|&m| m != me);
    }
}

#[test]
fn a_handler_writes_to_other_connections_by_id() {
    let server = spawn_reactor(|r| {
        let members = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let id = r.start_server("127.0.0.1:0", move || Member(members.clone()))?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    let mut clients: Vec<_> = (0..5).map(|_| client(server.value)).collect();
    // Every member must be registered before the first line is sent: a
    // round of hellos, each heard by the previous client, proves it.
    clients[0].write_all(b"hello\n").unwrap();
    for (i, c) in clients.iter_mut().enumerate().skip(1) {
        let mut buf = [0u8; 6];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello\n", "client {i}");
    }
    drop(clients.remove(0));
    clients[0].write_all(b"bye\n").unwrap();
    for c in clients.iter_mut().skip(1) {
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"bye\n");
    }
    server.stop();
}

/// Reconnects from `unbind` until it has connected `left` more times.
struct Persistent {
    addr: SocketAddr,
    left: usize,
    done: mpsc::Sender<usize>,
    connects: usize,
}

impl Handler for Persistent {
    fn connection_completed(&mut self, conn: &mut Connection<'_>) {
        self.connects += 1;
        conn.close_connection();
    }
    fn unbind(&mut self, conn: &mut Connection<'_>, _reason: &CloseReason) {
        if self.left > 0 {
            self.left -= 1;
            conn.reconnect(self.addr).unwrap();
        } else {
            let _ = self.done.send(self.connects);
        }
    }
}

#[test]
fn reconnect_from_unbind_reuses_the_handler() {
    let server = echo_server();
    let addr = server.value;
    let (tx, rx) = mpsc::channel();
    let client = spawn_reactor(move |r| {
        r.connect(
            addr,
            Persistent {
                addr,
                left: 3,
                done: tx,
                connects: 0,
            },
        )?;
        Ok(())
    });
    assert_eq!(rx.recv_timeout(util::IO_TIMEOUT).unwrap(), 4);
    client.stop();
    server.stop();
}

#[test]
fn next_turn_runs_on_the_following_iteration_in_order() {
    let (tx, rx) = mpsc::channel();
    let r = spawn_reactor(move |r| {
        let tx2 = tx.clone();
        r.next_turn(move |r| {
            tx2.send(1).unwrap();
            r.next_turn(move |_| tx2.send(3).unwrap());
        });
        r.next_turn(move |_| tx.send(2).unwrap());
        Ok(())
    });
    let got: Vec<i32> = (0..3)
        .map(|_| rx.recv_timeout(util::IO_TIMEOUT).unwrap())
        .collect();
    assert_eq!(got, vec![1, 2, 3]);
    r.stop();
}

#[test]
fn peer_reset_is_reported_as_reset() {
    let (tx, rx) = mpsc::channel();
    let server = spawn_reactor(move |r| {
        let id = r.start_server("127.0.0.1:0", move || Report(tx.clone()))?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    let c = client(server.value);
    // SO_LINGER 0: close sends RST.
    let sock = packet_sys_linger(c);
    drop(sock);
    assert_eq!(
        rx.recv_timeout(util::IO_TIMEOUT).unwrap(),
        "connection reset by peer"
    );
    server.stop();
}

fn packet_sys_linger(c: std::net::TcpStream) -> packet_sys::Socket {
    let s = packet_sys::Socket::from(std::os::fd::OwnedFd::from(c));
    s.set_linger(Some(Duration::ZERO)).unwrap();
    s
}

#[test]
fn peer_close_flushes_then_reports_peer_closed() {
    let (tx, rx) = mpsc::channel();
    let server = spawn_reactor(move |r| {
        let id = r.start_server("127.0.0.1:0", move || Report(tx.clone()))?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    let mut c = client(server.value);
    c.write_all(b"bye").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(rx.recv_timeout(util::IO_TIMEOUT).unwrap(), "closed by peer");
    server.stop();
}

#[test]
fn ipv6_loopback_server_and_client() {
    let server = spawn_reactor(|r| {
        let id = r.start_server("[::1]:0", || Echo)?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    assert!(server.value.is_ipv6());
    let (tx, rx) = mpsc::channel();
    let addr = server.value;
    let client = spawn_reactor(move |r| {
        r.connect(
            addr,
            Probe {
                msg: b"over v6",
                got: Vec::new(),
                done: tx,
            },
        )?;
        Ok(())
    });
    assert_eq!(rx.recv_timeout(util::IO_TIMEOUT).unwrap(), b"over v6");
    client.stop();
    server.stop();
}

/// Sends 200 KiB in 10 KiB pieces from one callback, with a 64 KiB mark.
struct Burst(mpsc::Sender<&'static str>);

impl Handler for Burst {
    fn receive_data(&mut self, conn: &mut Connection<'_>, _data: &[u8]) {
        conn.set_high_water_mark(64 * 1024);
        for i in 0..20u8 {
            conn.send_data(&[i; 10 * 1024]);
        }
    }
    fn outbound_full(&mut self, _conn: &mut Connection<'_>) {
        let _ = self.0.send("full");
    }
    fn outbound_drained(&mut self, _conn: &mut Connection<'_>) {
        let _ = self.0.send("drained");
    }
}

#[test]
fn bytes_sent_within_one_callback_count_toward_the_high_water_mark() {
    let (tx, rx) = mpsc::channel();
    let server = spawn_reactor(move |r| {
        let id = r.start_server("127.0.0.1:0", move || Burst(tx.clone()))?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    let mut c = client(server.value);
    c.write_all(b"go").unwrap();
    let mut got = vec![0u8; 200 * 1024];
    c.read_exact(&mut got).unwrap();
    // The handler saw outbound_len over the mark during its callback, so it
    // was told so, and then told when the queue drained.
    assert_eq!(rx.recv_timeout(util::IO_TIMEOUT).unwrap(), "full");
    assert_eq!(rx.recv_timeout(util::IO_TIMEOUT).unwrap(), "drained");
    server.stop();
}

/// Answers its own client, then tells every other member, in one callback.
struct ReplyThenBroadcast(std::rc::Rc<std::cell::RefCell<Vec<ConnId>>>);

impl Handler for ReplyThenBroadcast {
    fn post_init(&mut self, conn: &mut Connection<'_>) {
        self.0.borrow_mut().push(conn.id());
    }
    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        conn.send_data(b"ack\n");
        let me = conn.id();
        let others: Vec<ConnId> = self
            .0
            .borrow()
            .iter()
            .copied()
            .filter(|&m| m != me)
            .collect();
        for other in others {
            if let Some(mut other) = conn.reactor().connection(other) {
                other.send_data(data);
            }
        }
    }
}

#[test]
fn regression_writing_to_another_connection_keeps_the_running_ones_output() {
    // A write to another connection used to clear the bytes the running
    // callback had just sent to its own connection.
    let server = spawn_reactor(|r| {
        let members = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let id = r.start_server("127.0.0.1:0", move || ReplyThenBroadcast(members.clone()))?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    let mut a = client(server.value);
    let mut b = client(server.value);
    // b must be a member before a speaks: a round trip proves it.
    b.write_all(b"hi\n").unwrap();
    let mut ack = [0u8; 4];
    b.read_exact(&mut ack).unwrap();
    let mut hi = [0u8; 3];
    a.read_exact(&mut hi).unwrap();
    a.write_all(b"news\n").unwrap();
    a.read_exact(&mut ack).unwrap();
    assert_eq!(
        &ack, b"ack\n",
        "the speaker's own reply survived the broadcast"
    );
    let mut news = [0u8; 5];
    b.read_exact(&mut news).unwrap();
    assert_eq!(&news, b"news\n");
    server.stop();
}

/// Answers after a delay, even when the client half-closed right after
/// asking: it keeps the connection open past end of stream.
struct LateAnswer;

impl Handler for LateAnswer {
    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        let id = conn.id();
        let answer = [b"late: ", data].concat();
        conn.reactor()
            .add_timer(Duration::from_millis(50), move |r| {
                if let Some(mut conn) = r.connection(id) {
                    conn.send_data(&answer);
                    conn.close_connection_after_writing();
                }
            });
    }
    fn receive_eof(&mut self, _conn: &mut Connection<'_>) {
        // Stay open: the answer is still being worked out.
    }
}

#[test]
fn a_handler_can_answer_after_the_peer_half_closed() {
    let server = spawn_reactor(|r| {
        let id = r.start_server("127.0.0.1:0", || LateAnswer)?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    let mut c = client(server.value);
    c.write_all(b"question").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"late: question");
    server.stop();
}
