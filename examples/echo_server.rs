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

    // Reactors are not Send (handlers need not be): each thread builds its
    // own and reports the bound address and its handle, or why it could not
    // bind.
    let options = ServerOptions::new().reuse_port(threads > 1);
    let (tx, rx) = std::sync::mpsc::channel();
    let threads: Vec<_> = (0..threads)
        .map(|_| {
            let (addr, options, tx) = (addr.clone(), options.clone(), tx.clone());
            std::thread::spawn(move || -> io::Result<()> {
                let mut reactor = Reactor::new()?;
                let started = reactor
                    .start_server_with(addr.as_str(), options, move || Echo { verbose })
                    .and_then(|server| reactor.server_addr(server));
                let failed = started.is_err();
                let _ = tx.send(started.map(|a| (a, reactor.handle())));
                // Main waits for every thread's report: this sender must go.
                drop(tx);
                if failed {
                    return Ok(());
                }
                reactor.run_until_stopped()
            })
        })
        .collect();
    drop(tx);
    let mut handles: Vec<ReactorHandle> = Vec::new();
    let mut bound = None;
    for started in rx {
        let (addr, handle) = started?;
        bound = Some(addr);
        handles.push(handle);
    }
    // SIGTERM and SIGINT: stop accepting, flush what is queued (for at most
    // five seconds), exit 0. One reactor receives the signals and passes the
    // stop on to the others.
    let others: Vec<ReactorHandle> = handles[1..].to_vec();
    handles[0].schedule(move |r| {
        for sig in [SIGTERM, SIGINT] {
            let others = others.clone();
            let stop = move |r: &mut Reactor| {
                for h in &others {
                    h.schedule(|r| r.stop_gracefully(GRACE));
                }
                r.stop_gracefully(GRACE);
            };
            if let Err(e) = r.on_signal(sig, stop) {
                eprintln!("echo_server: cannot handle signal {sig}: {e}");
            }
        }
    });
    println!("listening on {}", bound.expect("at least one thread"));
    for t in threads {
        t.join().expect("reactor thread panicked")?;
    }
    Ok(())
}
