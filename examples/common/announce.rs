//! Shared by the examples with worker pools (eval_server, fd_passing).

use std::io;
use std::time::Duration;

use packet::{Addr, Reactor};

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
