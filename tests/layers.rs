//! Protocol layers compose with the rest of the library: a line handler and
//! an object handler, each behind its layer, get worker replies (in ask
//! order when they ask for it, local answers included), keep a half-closed
//! connection open until their last reply is out, and worker channels are
//! not counted as connections.
//!
//! A `harness = false` binary: its fork servers start while the process is
//! single-threaded (see `util::run_forking_tests`).

mod util;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use packet::codec::{encode_message, MessageDecoder};
use packet::line::{LineContext, LineHandler, LineProtocol};
use packet::objects::{ObjectHandler, ObjectProtocol};
use packet::worker::{
    Replier, Worker, WorkerContext, WorkerMessage, WorkerRegistry, WorkerSpec, Workers,
};
use packet::{Connection, Handler, Reply};
use serde::{Deserialize, Serialize};
use util::{run_with_workers as run, IO_TIMEOUT};

/// Answers `(ms, text)` with `text` after `ms` milliseconds, so one worker
/// answers out of order.
struct Delay;
impl Worker for Delay {
    fn receive_data(&mut self, ctx: &mut WorkerContext<'_, '_>, msg: WorkerMessage) {
        let (ms, text): (u64, String) = msg.decode().unwrap();
        let replier: Replier = ctx.replier().unwrap();
        ctx.reactor()
            .add_timer(Duration::from_millis(ms), move |r| {
                replier.reply(r, &text).unwrap()
            });
    }
}

/// `DELAY ms text` asks the worker; `LOCAL text` is answered by the master
/// itself, through the same reply queue, so it keeps its place in line.
/// After the client's half-close the connection stays open until every
/// reply is written.
struct Lines {
    ordered: bool,
    waiting: usize,
    eof: bool,
}

impl Lines {
    fn finish_if_done(&self, conn: &mut Connection<'_>) {
        if self.eof && self.waiting == 0 {
            conn.close_connection_after_writing();
        }
    }
}

impl Handler for Lines {
    fn post_init(&mut self, conn: &mut Connection<'_>) {
        conn.set_ordered_replies(self.ordered);
    }
    fn receive_reply(&mut self, conn: &mut Connection<'_>, reply: Reply) {
        self.waiting -= 1;
        let text = reply.decode::<String>().unwrap();
        conn.send_data(format!("{text}\n").as_bytes());
        self.finish_if_done(conn);
    }
    fn receive_eof(&mut self, conn: &mut Connection<'_>) {
        self.eof = true;
        self.finish_if_done(conn);
    }
}

impl LineHandler for Lines {
    fn receive_line(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
        let line = std::str::from_utf8(line).unwrap();
        self.waiting += 1;
        if let Some(rest) = line.strip_prefix("DELAY ") {
            let (ms, text) = rest.split_once(' ').unwrap();
            let ms: u64 = ms.parse().unwrap();
            ctx.ask_worker("delay", &(ms, text.to_string())).unwrap();
        } else if let Some(text) = line.strip_prefix("LOCAL ") {
            ctx.send_local_reply(text.to_string());
        }
    }
}

/// Sends `request`, half-closes, and reads lines until the server closes.
fn half_closed_exchange(addr: std::net::SocketAddr, request: &str) -> Vec<String> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    BufReader::new(s).lines().map(Result::unwrap).collect()
}

/// Serves `factory`'s handlers with the delay worker attached, runs
/// `client` against the server on a thread of its own once the worker is
/// up, then stops the reactor and returns what the client returned.
fn serve_then<H: Handler, T: Send + 'static>(
    workers: Workers,
    factory: impl FnMut() -> H + 'static,
    client: impl FnOnce(std::net::SocketAddr) -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    run(workers, move |r| {
        let server = r.start_server("127.0.0.1:0", factory)?;
        let addr = r.server_addr(server)?.as_inet().unwrap();
        let handle = r.handle();
        r.workers()
            .when_running("delay", 1, IO_TIMEOUT, move |_, n| {
                assert_eq!(n, 1, "the delay worker did not start");
                std::thread::spawn(move || {
                    tx.send(client(addr)).unwrap();
                    handle.stop();
                });
            })
            .map_err(std::io::Error::other)?;
        Ok(())
    });
    rx.recv().unwrap()
}

/// Runs a line server (`ordered` or not) and one half-closing client.
fn line_server_exchange(workers: Workers, ordered: bool) -> Vec<String> {
    let factory = move || {
        LineProtocol::new(Lines {
            ordered,
            waiting: 0,
            eof: false,
        })
    };
    serve_then(workers, factory, |addr| {
        half_closed_exchange(addr, "DELAY 300 slow\nDELAY 0 fast\nLOCAL here\n")
    })
}

fn line_handler_gets_replies_in_ask_order_after_a_half_close(workers: Workers) {
    let got = line_server_exchange(workers, true);
    assert_eq!(got, ["slow", "fast", "here"]);
}

fn without_ordering_replies_come_as_they_complete(workers: Workers) {
    // The control for the test above: the same exchange, unordered. Every
    // reply still arrives before the close; the slow one comes last.
    let got = line_server_exchange(workers, false);
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got.last().map(String::as_str), Some("slow"), "{got:?}");
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
enum Msg {
    Ask { ms: u64, text: String },
    Answer(String),
}

/// Asks the worker for every object and answers with what it says; stays
/// open after the peer's half-close until the answers are out.
struct Objects {
    waiting: usize,
    eof: bool,
}

impl Handler for Objects {
    fn post_init(&mut self, conn: &mut Connection<'_>) {
        conn.set_ordered_replies(true);
    }
    fn receive_reply(&mut self, conn: &mut Connection<'_>, reply: Reply) {
        self.waiting -= 1;
        let text: String = reply.decode().unwrap();
        conn.send_object(&Msg::Answer(text)).unwrap();
        if self.eof && self.waiting == 0 {
            conn.close_connection_after_writing();
        }
    }
    fn receive_eof(&mut self, conn: &mut Connection<'_>) {
        self.eof = true;
        if self.waiting == 0 {
            conn.close_connection_after_writing();
        }
    }
}

impl ObjectHandler for Objects {
    type Message = Msg;
    fn receive_object(&mut self, conn: &mut Connection<'_>, msg: Msg) {
        if let Msg::Ask { ms, text } = msg {
            self.waiting += 1;
            conn.ask_worker("delay", &(ms, text)).unwrap();
        }
    }
}

fn object_handler_gets_worker_replies_after_a_half_close(workers: Workers) {
    let factory = || {
        ObjectProtocol::new(Objects {
            waiting: 0,
            eof: false,
        })
    };
    let got = serve_then(workers, factory, |addr| {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut out = Vec::new();
        for (ms, text) in [(200, "one"), (0, "two"), (50, "three")] {
            let ask = Msg::Ask {
                ms,
                text: text.into(),
            };
            encode_message(&ask, &mut out).unwrap();
        }
        s.write_all(&out).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut bytes = Vec::new();
        s.read_to_end(&mut bytes).unwrap();
        let mut got = Vec::new();
        MessageDecoder::<Msg>::new()
            .decode(&bytes, |m| got.push(m.unwrap()))
            .unwrap();
        got
    });
    let want: Vec<Msg> = ["one", "two", "three"]
        .iter()
        .map(|t| Msg::Answer(t.to_string()))
        .collect();
    assert_eq!(got, want);
}

fn connection_count_leaves_out_worker_channels(workers: Workers) {
    let (tx, rx) = mpsc::channel();
    run(workers, move |r| {
        let server = r.start_server("127.0.0.1:0", || util::Echo)?;
        let addr = r.server_addr(server)?.as_inet().unwrap();
        r.workers()
            .when_running("delay", 1, IO_TIMEOUT, move |r, n| {
                assert_eq!(n, 1, "the delay worker did not start");
                let idle = r.connection_count();
                r.connect(addr, Counted(tx, idle)).unwrap();
            })
            .map_err(std::io::Error::other)?;
        Ok(())
    });
    let (idle, with_client) = rx.recv().unwrap();
    assert_eq!(
        idle, 0,
        "no user connection yet: only worker plumbing is open"
    );
    // The client and the server's side of it.
    assert_eq!(with_client, 2);
}

/// Reports the count before it connected and once connected, then stops.
struct Counted(mpsc::Sender<(usize, usize)>, usize);
impl Handler for Counted {
    fn connection_completed(&mut self, conn: &mut Connection<'_>) {
        // The server's side is accepted by the time the echo comes back.
        conn.send_data(b"x");
    }
    fn receive_data(&mut self, conn: &mut Connection<'_>, _data: &[u8]) {
        let now = conn.reactor().connection_count();
        self.0.send((self.1, now)).unwrap();
        conn.reactor().stop();
    }
}

type Test = util::ForkingTest<Workers>;

fn main() {
    let tests: Vec<Test> = vec![
        (
            "line_handler_gets_replies_in_ask_order_after_a_half_close",
            line_handler_gets_replies_in_ask_order_after_a_half_close,
        ),
        (
            "without_ordering_replies_come_as_they_complete",
            without_ordering_replies_come_as_they_complete,
        ),
        (
            "object_handler_gets_worker_replies_after_a_half_close",
            object_handler_gets_worker_replies_after_a_half_close,
        ),
        (
            "connection_count_leaves_out_worker_channels",
            connection_count_leaves_out_worker_channels,
        ),
    ];
    util::run_forking_tests(tests, || {
        WorkerRegistry::new()
            .register(WorkerSpec::new("delay", || Delay))
            .start()
            .expect("start fork server")
    })
}
