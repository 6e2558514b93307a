//! Lines and binary blocks over TCP: `LineProtocol`.
//!
//! The server acknowledges every read with the running total of bytes it
//! has read (8 bytes, little-endian), after the line handler has seen
//! them, and the client waits for that before sending more: each
//! `Client::send` is then read on its own, so a test decides exactly where
//! the reads are cut, and every event of a chunk is in the channel when
//! `send` returns.

mod util;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc;

use packet::line::{LineContext, LineError, LineHandler, LineProtocol, Mode};
use packet::{CloseReason, Connection, Handler};
use util::{client, pattern, spawn_reactor, Running, IO_TIMEOUT};

/// What the line handler saw, in order.
#[derive(Debug, Clone, PartialEq)]
enum Ev {
    Line(Vec<u8>),
    Bin(Vec<u8>),
    End,
    Error(LineError),
    /// The close reason as displayed, and the mode at the end.
    Unbind(String, Mode),
}

fn line(l: &str) -> Ev {
    Ev::Line(l.as_bytes().to_vec())
}

fn bin(b: &[u8]) -> Ev {
    Ev::Bin(b.to_vec())
}

/// Records every event, and speaks a small protocol: `SIZE n` is followed
/// by a block of `n` bytes, `BIN` starts unbounded binary data that a chunk
/// ending in `END` ends, `QUIT` closes.
struct Recorder {
    tx: mpsc::Sender<Ev>,
    /// A block to expect from the first byte, set in `post_init`.
    first_block: Option<usize>,
}

impl Handler for Recorder {
    fn post_init(&mut self, ctx: &mut LineContext<'_>) {
        if let Some(n) = self.first_block {
            ctx.set_binary_mode(n);
        }
    }
    fn unbind(&mut self, ctx: &mut LineContext<'_>, reason: &CloseReason) {
        let _ = self.tx.send(Ev::Unbind(
            reason.to_string(),
            ctx.mode().expect("unbind of a line connection"),
        ));
    }
}

impl LineHandler for Recorder {
    fn receive_line(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
        let _ = self.tx.send(Ev::Line(line.to_vec()));
        if let Some(n) = line.strip_prefix(b"SIZE ") {
            match std::str::from_utf8(n).ok().and_then(|n| n.parse().ok()) {
                Some(n) => ctx.set_binary_mode(n),
                None => ctx.close_connection(),
            }
        } else if line == b"BIN" {
            ctx.set_binary_mode_unbounded();
        } else if line == b"QUIT" {
            ctx.close_connection_after_writing();
        }
    }
    fn receive_binary_data(&mut self, ctx: &mut LineContext<'_>, data: &[u8]) {
        let _ = self.tx.send(Ev::Bin(data.to_vec()));
        if ctx.mode() == Some(Mode::BinaryUnbounded) && data.ends_with(b"END") {
            ctx.set_line_mode();
        }
    }
    fn receive_end_of_binary_data(&mut self, _ctx: &mut LineContext<'_>) {
        let _ = self.tx.send(Ev::End);
    }
    fn line_error(&mut self, ctx: &mut LineContext<'_>, error: LineError) {
        let _ = self.tx.send(Ev::Error(error));
        ctx.send_data(b"line too long\n");
    }
}

/// Acknowledges each read once the line protocol has handled it.
struct Acked {
    inner: LineProtocol<Recorder>,
    total: u64,
}

impl Handler for Acked {
    fn post_init(&mut self, conn: &mut Connection<'_>) {
        self.inner.post_init(conn);
    }
    fn connection_completed(&mut self, conn: &mut Connection<'_>) {
        self.inner.connection_completed(conn);
    }
    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        self.inner.receive_data(conn, data);
        self.total += data.len() as u64;
        conn.send_data(&self.total.to_le_bytes());
    }
    fn unbind(&mut self, conn: &mut Connection<'_>, reason: &CloseReason) {
        self.inner.unbind(conn, reason);
    }
}

type Configure = fn(LineProtocol<Recorder>) -> LineProtocol<Recorder>;

/// A line server configured by `configure`, and the events of all its
/// connections.
fn start(configure: Configure) -> (Running<SocketAddr>, mpsc::Receiver<Ev>) {
    let (tx, rx) = mpsc::channel();
    let server = spawn_reactor(move |r| {
        let id = r.start_server("127.0.0.1:0", move || {
            let recorder = Recorder {
                tx: tx.clone(),
                first_block: None,
            };
            Acked {
                inner: configure(LineProtocol::new(recorder)),
                total: 0,
            }
        })?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    (server, rx)
}

fn defaults(p: LineProtocol<Recorder>) -> LineProtocol<Recorder> {
    p
}

struct Client {
    stream: TcpStream,
    sent: u64,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        Client {
            stream: client(addr),
            sent: 0,
        }
    }

    /// Sends `chunk` and waits until the server has read and handled it.
    fn send(&mut self, chunk: &[u8]) {
        if chunk.is_empty() {
            return;
        }
        self.stream.write_all(chunk).unwrap();
        self.sent += chunk.len() as u64;
        let mut ack = [0u8; 8];
        loop {
            self.stream.read_exact(&mut ack).expect("ack");
            let total = u64::from_le_bytes(ack);
            assert!(total <= self.sent, "acked {total} of {} bytes", self.sent);
            if total == self.sent {
                return;
            }
        }
    }

    /// Everything the server sends until it closes.
    fn read_to_close(&mut self) -> Vec<u8> {
        let mut got = Vec::new();
        self.stream.read_to_end(&mut got).expect("read to close");
        got
    }
}

/// The events already sent (all of them, after a `send`).
fn drain(rx: &mpsc::Receiver<Ev>) -> Vec<Ev> {
    rx.try_iter().collect()
}

/// Waits for events up to and including the next unbind.
fn until_unbind(rx: &mpsc::Receiver<Ev>) -> Vec<Ev> {
    let mut got = Vec::new();
    loop {
        let e = rx.recv_timeout(IO_TIMEOUT).expect("event");
        let done = matches!(e, Ev::Unbind(..));
        got.push(e);
        if done {
            return got;
        }
    }
}

/// Joins adjacent binary chunks: how they are cut depends on the reads.
fn merged(events: Vec<Ev>) -> Vec<Ev> {
    let mut out: Vec<Ev> = Vec::new();
    for e in events {
        match (out.last_mut(), e) {
            (Some(Ev::Bin(a)), Ev::Bin(b)) => a.extend(b),
            (_, e) => out.push(e),
        }
    }
    out
}

#[test]
fn lines_split_at_every_byte_position() {
    let (server, rx) = start(defaults);
    let mut c = Client::connect(server.value);
    let msg = b"hello\n\nworld\n";
    let expect = [line("hello"), line(""), line("world")];
    for b in msg {
        c.send(std::slice::from_ref(b));
    }
    assert_eq!(drain(&rx), expect, "one byte per read");
    for cut in 0..=msg.len() {
        c.send(&msg[..cut]);
        c.send(&msg[cut..]);
        assert_eq!(drain(&rx), expect, "cut at {cut}");
    }
    server.stop();
}

#[test]
fn a_crlf_delimiter_split_between_reads() {
    let (server, rx) = start(|p| p.with_delimiter(b"\r\n"));
    let mut c = Client::connect(server.value);
    for chunk in [&b"abc\r"[..], b"\ndef\r\n", b"g\rh\nx\r", b"\n\r", b"\n"] {
        c.send(chunk);
    }
    // A lone `\r` or `\n` is part of the line.
    assert_eq!(
        drain(&rx),
        [line("abc"), line("def"), line("g\rh\nx"), line("")]
    );
    server.stop();

    // With `\n` and strip_cr, both endings work.
    let (server, rx) = start(|p| p.strip_cr(true));
    let mut c = Client::connect(server.value);
    for chunk in [&b"one\r"[..], b"\ntwo\nthree\r\r", b"\n"] {
        c.send(chunk);
    }
    assert_eq!(drain(&rx), [line("one"), line("two"), line("three\r")]);
    server.stop();
}

#[test]
fn many_lines_in_one_read() {
    let (server, rx) = start(defaults);
    let mut c = Client::connect(server.value);
    let wire: Vec<u8> = (0..1000)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect();
    c.send(&wire);
    let expect: Vec<Ev> = (0..1000).map(|i| line(&format!("line {i}"))).collect();
    assert_eq!(drain(&rx), expect);
    server.stop();
}

#[test]
fn empty_lines() {
    let (server, rx) = start(defaults);
    let mut c = Client::connect(server.value);
    c.send(b"\n\n");
    c.send(b"\n");
    c.send(b"x\n\n");
    assert_eq!(
        drain(&rx),
        [line(""), line(""), line(""), line("x"), line("")]
    );
    server.stop();
}

/// `got` without the 8-byte ack of the read that broke the line limit,
/// which follows the error's reply.
fn without_last_ack(mut got: Vec<u8>) -> Vec<u8> {
    if !got.ends_with(b"line too long\n") && got.len() >= 8 {
        got.truncate(got.len() - 8);
    }
    got
}

#[test]
fn the_maximum_length_is_allowed_and_one_more_closes_only_that_connection() {
    let (server, rx) = start(|p| p.with_max_line_len(16));
    let mut bad = Client::connect(server.value);
    let mut good = Client::connect(server.value);
    bad.send(b"0123456789abcdef\n");
    assert_eq!(drain(&rx), [line("0123456789abcdef")]);
    bad.stream.write_all(b"0123456789abcdefg\n").unwrap();
    assert_eq!(
        until_unbind(&rx),
        [
            Ev::Error(LineError::LineTooLong { max: 16, got: 17 }),
            Ev::Unbind(
                "line too long: 17 bytes seen, over the limit of 16".into(),
                Mode::Line
            ),
        ]
    );
    // The reply sent from line_error went out before the close (after the
    // ack of an earlier read, had the kernel cut the line in two).
    // The connection drains after the error (the default `receive_eof`):
    // the ack the test handler sends after the error's read goes out too.
    let got = without_last_ack(bad.read_to_close());
    assert!(got.ends_with(b"line too long\n"), "{got:?}");
    assert_eq!(got.len() % 8, 14 % 8);
    // Another client is served as usual.
    good.send(b"still here\n");
    assert_eq!(drain(&rx), [line("still here")]);
    server.stop();
}

#[test]
fn a_peer_that_never_sends_a_delimiter_is_cut_off_at_64_kib() {
    let (server, rx) = start(defaults);
    let mut c = Client::connect(server.value);
    let mut long = vec![b'x'; 64 * 1024];
    long.push(b'\n');
    c.send(&long);
    assert_eq!(drain(&rx), [Ev::Line(long[..64 * 1024].to_vec())]);
    // One byte more and no delimiter: refused without waiting for one.
    let mut flood = Client::connect(server.value);
    flood.stream.write_all(&long[..64 * 1024]).unwrap();
    flood.stream.write_all(b"x").unwrap();
    assert_eq!(
        until_unbind(&rx),
        [
            Ev::Error(LineError::LineTooLong {
                max: 64 * 1024,
                got: 64 * 1024 + 1
            }),
            Ev::Unbind(
                "line too long: 65537 bytes seen, over the limit of 65536".into(),
                Mode::Line
            ),
        ]
    );
    // Acks of the reads before the one that broke the limit, then the reply.
    let got = without_last_ack(flood.read_to_close());
    assert!(got.ends_with(b"line too long\n"), "{got:?}");
    // The first client goes on.
    c.send(b"ok\n");
    assert_eq!(drain(&rx), [line("ok")]);
    server.stop();
}

#[test]
fn a_counted_block_in_the_middle_of_a_read() {
    let (server, rx) = start(defaults);
    let mut c = Client::connect(server.value);
    // A tiny body protocol: a `SIZE n` header line, `n` bytes of body (a
    // newline in it is just a byte), then lines again.
    let msg = b"SIZE 5\nab\ncdrest\nSIZE 0\nnext\n";
    let expect = [
        line("SIZE 5"),
        bin(b"ab\ncd"),
        Ev::End,
        line("rest"),
        line("SIZE 0"),
        Ev::End,
        line("next"),
    ];
    c.send(msg);
    assert_eq!(drain(&rx), expect, "one read");
    for cut in 0..=msg.len() {
        c.send(&msg[..cut]);
        c.send(&msg[cut..]);
        assert_eq!(merged(drain(&rx)), expect, "cut at {cut}");
    }
    // A body of many reads, and the header and the next line with it.
    let body = pattern(7, 300_000);
    let wire = [&b"SIZE 300000\n"[..], &body, b"after\n"].concat();
    for chunk in wire.chunks(65_000) {
        c.send(chunk);
    }
    let got = drain(&rx);
    assert!(got.len() > 4, "the body came in several chunks");
    assert_eq!(
        merged(got),
        [line("SIZE 300000"), Ev::Bin(body), Ev::End, line("after")]
    );
    server.stop();
}

#[test]
fn unbounded_binary_mode_and_back() {
    let (server, rx) = start(defaults);
    let mut c = Client::connect(server.value);
    c.send(b"BIN\nraw\nbytes");
    assert_eq!(drain(&rx), [line("BIN"), bin(b"raw\nbytes")]);
    c.send(b"more\n\n");
    c.send(b"lastEND");
    assert_eq!(drain(&rx), [bin(b"more\n\n"), bin(b"lastEND")]);
    c.send(b"a line\nSIZE 2\nxy");
    assert_eq!(
        drain(&rx),
        [line("a line"), line("SIZE 2"), bin(b"xy"), Ev::End]
    );
    server.stop();
}

#[test]
fn a_mode_set_in_post_init_applies_from_the_first_byte() {
    let (server, rx) = start(|mut p| {
        p.handler().first_block = Some(4);
        p
    });
    let mut c = Client::connect(server.value);
    c.send(b"ab\ncline\n");
    assert_eq!(drain(&rx), [bin(b"ab\nc"), Ev::End, line("line")]);
    server.stop();

    // An empty block ends at once, before any byte.
    let (server, rx) = start(|mut p| {
        p.handler().first_block = Some(0);
        p
    });
    let _c = Client::connect(server.value);
    assert_eq!(rx.recv_timeout(IO_TIMEOUT).unwrap(), Ev::End);
    server.stop();
}

#[test]
fn a_partial_line_at_end_of_stream_is_discarded() {
    let (server, rx) = start(defaults);
    let mut c = Client::connect(server.value);
    c.send(b"complete\npartial");
    c.stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(
        until_unbind(&rx),
        [
            line("complete"),
            Ev::Unbind("closed by peer".into(), Mode::Line)
        ]
    );
    // A block cut short: no end, and unbind sees what is missing.
    let mut c = Client::connect(server.value);
    c.send(b"SIZE 10\nabc");
    c.stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(
        until_unbind(&rx),
        [
            line("SIZE 10"),
            bin(b"abc"),
            Ev::Unbind("closed by peer".into(), Mode::Binary { remaining: 7 })
        ]
    );
    server.stop();
}

#[test]
fn closing_from_receive_line_drops_the_rest_of_the_read() {
    let (server, rx) = start(defaults);
    let mut c = Client::connect(server.value);
    c.send(b"one\n");
    c.stream.write_all(b"QUIT\nafter\n").unwrap();
    assert_eq!(
        until_unbind(&rx),
        [
            line("one"),
            line("QUIT"),
            Ev::Unbind("closed locally".into(), Mode::Line)
        ]
    );
    assert_eq!(c.read_to_close(), b"");
    server.stop();
}
