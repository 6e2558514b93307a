//! The pre-fork pattern: the master accepts, workers serve.
//!
//! ```text
//! cargo run --release --example fd_passing [ADDR] [--workers N]
//! ```
//!
//! Listens on 127.0.0.1:11008 unless `ADDR` is given and prints
//! `listening on ADDR` once its workers run. Every client is served by one
//! of N worker processes (2 unless `--workers N`), which echoes each line
//! prefixed with `worker <pid>: `. SIGTERM or SIGINT stops it gracefully
//! (within 30 s; SIGQUIT 300 s; SIGHUP is ignored): the master stops
//! accepting, and the workers, their clients and the fork server are
//! stopped and reaped. SIGUSR2 upgrades the binary and `LISTEN_FDS` is
//! honoured, as in `eval_server`.
//!
//! # The pattern
//!
//! ```text
//!            accept                 SCM_RIGHTS over the worker channel
//!  client ──► master reactor ──detach──► send_fd_to_worker ──► worker reactor
//!     ▲                                                          │ attach(fd)
//!     └────────────── bytes flow directly, master not involved ──┘
//! ```
//!
//! 1. `WorkerRegistry::start` forks the fork server first thing in `main`;
//!    the master's reactor then starts the pool (`reactor.workers().add`).
//! 2. The master listens. In `post_init` of each accepted connection,
//!    `Connection::detach` takes the socket out of the master's reactor,
//!    still open, and `reactor.workers().send_fd_to_worker` passes it to a worker
//!    over its channel (a Unix socket, with `SCM_RIGHTS`), with a message
//!    saying what it is (here, the client's address). The master's copy is
//!    closed once sent.
//! 3. The worker gets it in `Worker::receive_fd` and hands it to its own
//!    reactor with `Reactor::attach`: from then on the client talks to the
//!    worker process directly, and the master only accepts.
//!
//! Unlike forking after `listen` and letting every process accept (the
//! classic pre-fork server), the master chooses the worker — here in turn,
//! skipping any that is restarting after a crash — and a worker that dies
//! takes only its own clients with it; the master restarts it. A client that
//! arrives while no worker runs is told so and closed.
//!
//! The master picks the instance itself, by key: a pool spreads asks
//! without a key to the instance with the fewest replies outstanding, and a
//! passed descriptor expects no reply, so every descriptor would go to
//! instance `0`.

use packet::worker::{Worker, WorkerContext, WorkerMessage, WorkerRegistry, WorkerSpec};
use packet::{Connection, Handler, Reactor};
use std::cell::Cell;
use std::io;
use std::os::fd::OwnedFd;
use std::rc::Rc;

#[path = "common/pool.rs"]
mod pool;

const WORKER: &str = "echo_worker";

/// The longest line a worker buffers; a longer one closes the connection.
const MAX_LINE: usize = 64 * 1024;

// ----- the worker process -----

/// Adopts the clients the master passes.
struct Prefork;

impl Worker for Prefork {
    fn receive_data(&mut self, _ctx: &mut WorkerContext<'_, '_>, _message: WorkerMessage) {}

    fn receive_fd(&mut self, ctx: &mut WorkerContext<'_, '_>, fd: OwnedFd, message: WorkerMessage) {
        let peer: String = message.decode().unwrap_or_else(|_| "a client".to_string());
        let echo = LineEcho {
            prefix: format!("worker {}: ", std::process::id()),
            partial: Vec::new(),
        };
        match ctx.reactor().attach(fd, echo) {
            // Goes to the master's standard error, tagged with this worker.
            Ok(_) => ctx.log(&format!("serving {peer}")),
            Err(e) => ctx.log(&format!("cannot serve {peer}: {e}")),
        }
    }
}

/// Echoes every line with the worker's prefix. Runs in the worker's reactor.
struct LineEcho {
    prefix: String,
    partial: Vec<u8>,
}

impl Handler for LineEcho {
    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        self.partial.extend_from_slice(data);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(n) = self.partial[start..].iter().position(|&b| b == b'\n') {
            out.extend_from_slice(self.prefix.as_bytes());
            out.extend_from_slice(&self.partial[start..=start + n]);
            start += n + 1;
        }
        self.partial.drain(..start);
        conn.send_data(&out);
        if self.partial.len() > MAX_LINE {
            conn.send_data(format!("error: line longer than {MAX_LINE} bytes\n").as_bytes());
            conn.close_connection_after_writing();
        }
    }

    // A client that sends without reading cannot grow the worker's memory.
    fn outbound_full(&mut self, conn: &mut Connection<'_>) {
        conn.pause();
    }

    fn outbound_drained(&mut self, conn: &mut Connection<'_>) {
        conn.resume();
    }
}

// ----- the master -----

/// The master's handler of an accepted client: passes it on at once.
struct HandOff {
    turn: Rc<Cell<usize>>,
}

impl Handler for HandOff {
    fn post_init(&mut self, conn: &mut Connection<'_>) {
        let peer = match conn.peer_addr() {
            Ok(a) => a.to_string(),
            Err(_) => "a client".to_string(),
        };
        // Running instances only: one restarting after a crash is skipped.
        let running = conn.reactor().workers().pids(WORKER);
        if running.is_empty() {
            conn.send_data(b"error: no worker is running; try again shortly\n");
            conn.close_connection_after_writing();
            return;
        }
        let (worker, pid) = running[self.turn.get() % running.len()].clone();
        self.turn.set(self.turn.get().wrapping_add(1));
        let fd = match conn.detach() {
            Ok(fd) => fd,
            Err(e) => {
                eprintln!("cannot detach {peer}: {e}");
                conn.close_connection();
                return;
            }
        };
        match conn
            .reactor()
            .workers()
            .send_fd_to_worker(WORKER, worker.key.as_deref(), fd, &peer)
        {
            Ok(()) => eprintln!("passed {peer} to {worker} (pid {pid})"),
            // The descriptor is closed: the client sees its connection end.
            Err(e) => eprintln!("cannot pass {peer} to {worker}: {e}"),
        }
    }
}

fn main() -> io::Result<()> {
    let (addr, n) = pool::parse_args("fd_passing", "127.0.0.1:11008");
    let mut listening = pool::Listening::from_env();
    let workers = WorkerRegistry::new()
        .register(WorkerSpec::new(WORKER, || Prefork).pool(n))
        .start()?;
    Reactor::run(|reactor| {
        reactor.workers().add(workers)?;
        pool::stop_on_signals(reactor)?;
        let turn = Rc::new(Cell::new(0));
        let server = listening.start(reactor, addr.as_str(), move || HandOff {
            turn: turn.clone(),
        })?;
        let bound = reactor.server_addr(server)?;
        // A client arriving before any worker runs is told so.
        pool::when_workers_run_then(reactor, WORKER, n, bound, listening)
    })
}
