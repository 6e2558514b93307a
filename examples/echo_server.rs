//! Echo server: the seed's first example.
//!
//! ```text
//! cargo run --release --example echo_server [ADDR] [--verbose] [--threads N]
//! ```
//!
//! Listens on 127.0.0.1:11006 unless `ADDR` is given and echoes every byte.
//! A client that sends without reading cannot grow the server's memory: when
//! a connection's outbound queue passes the high-water mark the server stops
//! reading from it until the queue drains. `--threads N` runs N reactors on
//! N threads sharing the port through `SO_REUSEPORT`. `SIGTERM` or `SIGINT`
//! stop it gracefully: no new connections, queued output flushed (for at
//! most 5 s), exit status 0.

use std::io;
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use packet::signal::{SIGINT, SIGTERM};
use packet::{CloseReason, Connection, Handler, Reactor, ReactorHandle, ServerOptions};

/// How long a stop signal waits for queued output to drain.
const GRACE: Duration = Duration::from_secs(5);

struct Echo {
    verbose: bool,
}

impl Handler for Echo {
    fn post_init(&mut self, _conn: &mut Connection<'_>) {
        if self.verbose {
            println!("client connected");
        }
    }

    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        conn.send_data(data);
    }

    fn outbound_full(&mut self, conn: &mut Connection<'_>) {
        conn.pause();
    }

    fn outbound_drained(&mut self, conn: &mut Connection<'_>) {
        conn.resume();
    }

    fn unbind(&mut self, _conn: &mut Connection<'_>, _reason: &CloseReason) {
        if self.verbose {
            println!("client disconnected");
        }
    }
}

fn main() -> io::Result<()> {
    let mut addr = "127.0.0.1:11006".to_string();
    let mut verbose = false;
    let mut threads = 1usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--verbose" | "-v" => verbose = true,
            "--threads" => {
                threads = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .ok_or_else(|| {
                        io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "--threads needs a positive number",
                        )
                    })?;
            }
            a if a.starts_with('-') => {
                eprintln!("usage: echo_server [ADDR] [--verbose] [--threads N]");
                std::process::exit(2);
            }
            a => addr = a.to_string(),
        }
    }

    // This thread runs the first reactor; `--threads N` adds N - 1 more on
    // their own threads, listening on the address the first one bound (so
    // port 0 works too). Reactors are not Send (handlers need not be), so
    // each thread builds its own and hands back only its `ReactorHandle`,
    // which the first reactor's signal handler uses to stop the others.
    let options = ServerOptions::new().reuse_port(threads > 1);
    let mut reactor = Reactor::new()?;
    let server =
        reactor.start_server_with(addr.as_str(), options.clone(), move || Echo { verbose })?;
    let bound = reactor.server_addr(server)?;
    let others = Arc::new(Mutex::new(Vec::<ReactorHandle>::new()));
    // Every extra reactor is listening before `listening on` is printed.
    let ready = Arc::new(Barrier::new(threads));
    let workers: Vec<_> = (1..threads)
        .map(|_| {
            let (bound, options) = (bound.to_string(), options.clone());
            let (others, ready) = (others.clone(), ready.clone());
            std::thread::spawn(move || -> io::Result<()> {
                let mut reactor = Reactor::new()?;
                let started =
                    reactor.start_server_with(bound.as_str(), options, move || Echo { verbose });
                if let Err(e) = started {
                    eprintln!("echo_server: cannot listen on {bound}: {e}");
                    std::process::exit(1);
                }
                lock(&others).push(reactor.handle());
                ready.wait();
                reactor.run_until_stopped()
            })
        })
        .collect();
    ready.wait();
    // SIGTERM and SIGINT: stop accepting, flush what is queued (for at most
    // five seconds), exit 0. This reactor receives the signals and passes
    // the stop on to the others.
    for sig in [SIGTERM, SIGINT] {
        let others = others.clone();
        reactor.on_signal(sig, move |r| {
            for h in lock(&others).iter() {
                h.schedule(|r| r.stop_gracefully(GRACE));
            }
            r.stop_gracefully(GRACE);
        })?;
    }
    println!("listening on {bound}");
    reactor.run_until_stopped()?;
    for w in workers {
        w.join().expect("reactor thread panicked")?;
    }
    Ok(())
}

/// The handles stay usable even if a thread panicked holding the lock.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
