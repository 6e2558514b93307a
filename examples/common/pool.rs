//! Shared by the examples with worker pools (eval_server, fd_passing;
//! kv_server, but for the command line): their command line, their startup
//! line and how they stop.

use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use packet::signal::{SIGINT, SIGTERM, STOP_GRACE};
use packet::{Addr, Reactor};

/// `[ADDR] [--workers N]` from the command line: the address (`addr`
/// unless given) and the pool size (2 unless given). Exits with a usage
/// line naming `program` on anything else. Starts no thread: the fork
/// server must be forked before any is.
pub fn parse_args(program: &str, addr: &str) -> (String, usize) {
    let usage = || -> ! {
        eprintln!("usage: {program} [ADDR] [--workers N]");
        std::process::exit(2);
    };
    let (mut addr, mut n) = (addr.to_string(), 2usize);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--workers" => match args.next().and_then(|v| v.parse().ok()) {
                Some(v) if v > 0 => n = v,
                _ => usage(),
            },
            a if a.starts_with('-') => usage(),
            a => addr = a.to_string(),
        }
    }
    (addr, n)
}

/// Prints `listening on ADDR` once `n` instances of worker `name` run, or
/// after five seconds regardless, saying so; the pids go to stderr.
pub fn when_workers_run(
    reactor: &mut Reactor,
    name: &'static str,
    n: usize,
    addr: Addr,
) -> io::Result<()> {
    let announce = move |r: &mut Reactor, running: usize| {
        if running < n {
            eprintln!("warning: only {running} of {n} workers are running");
        }
        let pids = r.worker_pids(name);
        let pids: Vec<String> = pids.iter().map(|(id, pid)| format!("{id}={pid}")).collect();
        eprintln!("master {}, workers: {}", std::process::id(), pids.join(" "));
        println!("listening on {addr}");
    };
    reactor
        .when_workers_running(name, n, Duration::from_secs(5), announce)
        .map_err(io::Error::other)
}

/// The library's stop signals (`Reactor::on_stop_signals`): SIGTERM or
/// SIGINT stop the master gracefully within 30 s (a second one at once),
/// SIGQUIT within 300 s: no more accepts, asks in flight answered (or
/// failed with `WorkerError::Stopping` at the deadline), answers written,
/// then the workers and the fork server stop and are reaped before
/// `Reactor::run` returns. SIGHUP is logged and ignored: the master keeps
/// serving. The workers and the fork server ignore all four (they come to
/// the whole group from a terminal), so Ctrl-C or a hangup loses no ask.
pub fn stop_on_signals(reactor: &mut Reactor) -> io::Result<()> {
    stop_on_signals_within(reactor, STOP_GRACE)
}

/// [`stop_on_signals`], but the first SIGTERM or SIGINT gives the asks in
/// flight `grace` instead of 30 s, for a server whose command line sets it;
/// a second one still stops at once.
pub fn stop_on_signals_within(reactor: &mut Reactor, grace: Duration) -> io::Result<()> {
    reactor.on_stop_signals(|_, _| {})?;
    if grace == STOP_GRACE {
        return Ok(());
    }
    // Taking SIGTERM and SIGINT over keeps SIGQUIT and SIGHUP as the
    // library sets them.
    let asked = Rc::new(Cell::new(false));
    for sig in [SIGTERM, SIGINT] {
        let asked = asked.clone();
        reactor.on_signal(sig, move |r| {
            if asked.replace(true) {
                r.stop()
            } else {
                r.stop_gracefully(grace)
            }
        })?;
    }
    Ok(())
}
