//! A worker tree (master → fork server → two workers) under what
//! production does to it: signals to the whole process group, a killed
//! master, a stop with asks in flight. Real processes: this binary re-runs
//! itself as a line server (when `PACKET_TEST_SERVE` is set), and the tests
//! talk to it over 127.0.0.1, signal it, and check its process tree.
//!
//! `harness = false`: the server mode must start its fork server at the
//! top of `main`, before any thread. The tests themselves only spawn
//! programs (fork + exec), which is safe from any thread.

mod util;

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use packet::worker::{WorkerRegistry, WorkerReply, WorkerSpec};
use packet::{Connection, Handler, Reactor, Reply};
use util::Slow;
use util::IO_TIMEOUT;

/// Set to the graceful stop's deadline in milliseconds: run as the server.
const SERVE: &str = "PACKET_TEST_SERVE";

// ----- the server mode -----

/// One client: each line is a number of milliseconds to ask a worker for;
/// each answer is a line `ok MS` or `error: WHY`.
#[derive(Default)]
struct Lines {
    partial: Vec<u8>,
}

impl Handler for Lines {
    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        self.partial.extend_from_slice(data);
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let ms: u64 = String::from_utf8_lossy(&line).trim().parse().unwrap_or(0);
            if let Err(e) = conn.ask_worker("slow", &ms) {
                conn.send_data(format!("error: {e}\n").as_bytes());
            }
        }
    }

    fn receive_reply(&mut self, conn: &mut Connection<'_>, reply: Reply) {
        let reply: WorkerReply = reply.take().expect("a worker reply");
        let line = match reply.and_then(|m| Ok(m.decode::<u64>()?)) {
            Ok(ms) => format!("ok {ms}\n"),
            Err(e) => format!("error: {e}\n"),
        };
        conn.send_data(line.as_bytes());
    }
}

fn registry() -> WorkerRegistry {
    WorkerRegistry::new().register(WorkerSpec::new("slow", || Slow).pool(2))
}

/// The server: stops gracefully within `stop_within` on any of the group
/// signals, and prints `listening on ADDR` once both workers run.
fn serve(stop_within: Duration) -> io::Result<()> {
    let workers = registry().start()?;
    Reactor::run(|r| {
        r.workers().add(workers)?;
        let server = r.start_server("127.0.0.1:0", Lines::default)?;
        let addr = r.server_addr(server)?;
        use packet::signal::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
        for sig in [SIGTERM, SIGINT, SIGHUP, SIGQUIT] {
            r.on_signal(sig, move |r| r.stop_gracefully(stop_within))?;
        }
        r.workers()
            .when_running("slow", 2, Duration::from_secs(30), move |_, running| {
                println!("listening on {addr} with {running} workers");
            })
            .map_err(io::Error::other)
    })
}

// ----- the tests' side -----

/// A server process of this binary, the leader of its own process group.
struct Server {
    child: Child,
    addr: SocketAddr,
    /// The master, the fork server and the workers, as started.
    tree: Vec<u32>,
}

impl Server {
    fn start(stop_within: Duration) -> Server {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(SERVE, stop_within.as_millis().to_string())
            .process_group(0)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|l| l.split(' ').next())
            .unwrap_or_else(|| panic!("server said {line:?}"))
            .parse()
            .unwrap();
        assert!(line.ends_with("with 2 workers\n"), "{line}");
        let mut tree = vec![child.id()];
        tree.extend(util::descendants(child.id()));
        assert_eq!(tree.len(), 4, "master, fork server, 2 workers: {tree:?}");
        Server { child, addr, tree }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the master to exit; whether it exited with 0.
    fn wait(mut self) -> (bool, Vec<u32>) {
        let status = self.child.wait().unwrap();
        (status.success(), self.tree)
    }
}

/// Every process of `tree` is reaped: none runs, none is a zombie.
fn assert_all_gone(tree: &[u32]) {
    let left: Vec<u32> = tree
        .iter()
        .copied()
        .filter(|&p| !util::is_gone(p))
        .collect();
    assert!(left.is_empty(), "processes left of {tree:?}: {left:?}");
}

fn group_signals_while_idle_stop_the_tree_in_order(_: ()) {
    // Ctrl-C, Ctrl-\, a hang-up and `timeout`/systemd all signal the whole
    // group: the master alone acts, stops its workers and reaps them.
    for sig in ["TERM", "INT", "HUP", "QUIT"] {
        let server = Server::start(Duration::from_secs(10));
        util::send_signal(server.pid(), sig, true);
        let (clean, tree) = server.wait();
        assert!(clean, "SIG{sig}: the master did not exit with 0");
        assert_all_gone(&tree);
    }
}

fn a_killed_master_takes_the_fork_server_and_workers_with_it(_: ()) {
    let server = Server::start(Duration::from_secs(10));
    util::send_signal(server.pid(), "KILL", false);
    let (_, tree) = server.wait();
    // The fork server was the master's child and is re-parented: whoever
    // adopts it reaps it, so a zombie is as dead as it gets here.
    assert!(
        util::eventually(Duration::from_secs(30), || tree
            .iter()
            .all(|&p| util::is_dead(p))),
        "still running after the master was killed: {:?}",
        tree.iter()
            .filter(|&&p| !util::is_dead(p))
            .collect::<Vec<_>>()
    );
}

/// Writes `lines` at once, and returns the connection once the first
/// answer arrived (so the master has read the lines and asked).
fn ask_lines(addr: SocketAddr, lines: &[u64]) -> (BufReader<TcpStream>, String) {
    let mut stream = util::client(addr);
    let text: String = lines.iter().map(|ms| format!("{ms}\n")).collect();
    stream.write_all(text.as_bytes()).unwrap();
    let mut reader = BufReader::new(stream);
    let mut first = String::new();
    reader.read_line(&mut first).unwrap();
    (reader, first)
}

/// Every line until end of stream.
fn read_to_end(reader: BufReader<TcpStream>) -> Vec<String> {
    reader.lines().map(|l| l.unwrap()).collect()
}

/// `n` lines asking for `ms` each, after one answered at once; the signal
/// goes out once that first answer is back, so the master has read every
/// line and the other asks are in flight.
fn stop_with_asks_in_flight(
    stop_within: Duration,
    n: usize,
    ms: u64,
    sig: &str,
    group: bool,
) -> Vec<String> {
    let server = Server::start(stop_within);
    let mut lines = vec![0];
    lines.extend(std::iter::repeat_n(ms, n));
    let (reader, first) = ask_lines(server.addr, &lines);
    assert_eq!(first, "ok 0\n");
    util::send_signal(server.pid(), sig, group);
    let answers = read_to_end(reader);
    let (clean, tree) = server.wait();
    assert!(clean, "the master did not exit with 0");
    assert_all_gone(&tree);
    answers
}

fn group_sigterm_with_asks_in_flight_answers_every_ask_and_leaves_no_process(_: ()) {
    // Workers ignore the group's SIGTERM and the master drains: every ask
    // in flight is answered, by the worker it went to.
    let answers = stop_with_asks_in_flight(Duration::from_secs(60), 40, 300, "TERM", true);
    assert_eq!(answers.len(), 40, "{answers:?}");
    assert!(answers.iter().all(|a| a == "ok 300"), "{answers:?}");
}

fn sigterm_with_500_asks_in_flight_gets_500_replies_or_errors(_: ()) {
    let answers = stop_with_asks_in_flight(Duration::from_secs(60), 500, 200, "TERM", false);
    let answered = answers.iter().filter(|a| *a == "ok 200").count();
    println!(
        "  SIGTERM with 500 asks in flight: {answered} answered, {} errors",
        answers.len() - answered
    );
    assert_eq!(answers.len(), 500, "none may be silent");
    assert!(
        answers
            .iter()
            .all(|a| a == "ok 200" || a.starts_with("error: ")),
        "{answers:?}"
    );
}

fn asks_that_outlast_the_stop_deadline_fail_with_stopping(_: ()) {
    // A minute's work each against a 300 ms stop: each ask gets an error
    // its handler sees, then the tree still stops and is reaped.
    let answers = stop_with_asks_in_flight(Duration::from_millis(300), 20, 60_000, "TERM", false);
    assert_eq!(answers.len(), 20, "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|a| a.starts_with("error: the reactor is stopping: worker slow[")),
        "{answers:?}"
    );
}

// ----- runner -----

fn main() {
    if let Ok(ms) = std::env::var(SERVE) {
        let within = Duration::from_millis(ms.parse().expect("stop deadline in ms"));
        if let Err(e) = serve(within) {
            eprintln!("server: {e}");
            std::process::exit(1);
        }
        return;
    }
    let _ = IO_TIMEOUT;
    let tests: Vec<util::ForkingTest<()>> = vec![
        (
            "group_signals_while_idle_stop_the_tree_in_order",
            group_signals_while_idle_stop_the_tree_in_order,
        ),
        (
            "a_killed_master_takes_the_fork_server_and_workers_with_it",
            a_killed_master_takes_the_fork_server_and_workers_with_it,
        ),
        (
            "group_sigterm_with_asks_in_flight_answers_every_ask_and_leaves_no_process",
            group_sigterm_with_asks_in_flight_answers_every_ask_and_leaves_no_process,
        ),
        (
            "sigterm_with_500_asks_in_flight_gets_500_replies_or_errors",
            sigterm_with_500_asks_in_flight_gets_500_replies_or_errors,
        ),
        (
            "asks_that_outlast_the_stop_deadline_fail_with_stopping",
            asks_that_outlast_the_stop_deadline_fail_with_stopping,
        ),
    ];
    util::run_forking_tests(tests, || ())
}
