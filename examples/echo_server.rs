//! Echo server: the seed's first example.
//!
//! ```text
//! cargo run --release --example echo_server [ADDR] [--verbose] [--threads N]
//! cargo run --release --features tls --example echo_server [ADDR] --tls CERT KEY
//! ```
//!
//! Listens on 127.0.0.1:11006 unless `ADDR` (an IP address and port; no
//! name lookup) is given and echoes every byte.
//! A client that sends without reading cannot grow the server's memory: when
//! a connection's outbound queue passes the high-water mark the server stops
//! reading from it until the queue drains. `--threads N` runs N reactors on
//! N threads sharing the port through `SO_REUSEPORT`. `SIGTERM` or `SIGINT`
//! stop it gracefully (`SIGQUIT` too, with a longer deadline; `SIGHUP` is
//! ignored): no new connections, everything already echoed into the queue
//! written (for at most 30 s), exit status 0, or 1 if the deadline cut
//! something. `--tls CERT KEY` (PEM files: the certificate
//! chain and its private key) serves TLS instead, with the `tls` feature.
//!
//! Zero-downtime restarts (README, "Operations"): listening sockets passed
//! in `LISTEN_FDS` (systemd's socket activation) are served instead of
//! binding `ADDR`, and `SIGUSR2` upgrades the binary: the new process gets
//! the listeners, and once it serves this one drains and exits.
//! `--upgrade-program PATH` runs another file than this one's, and
//! `--upgrade-deadline SECS` (default 30) bounds the wait for it.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use packet::{CloseReason, Connection, Handler};

#[path = "common/reactors.rs"]
mod reactors;

/// `--verbose`, for the whole process: kept out of `Echo` so that the
/// handler has no size and an idle connection costs no allocation.
static VERBOSE: AtomicBool = AtomicBool::new(false);

struct Echo;

impl Handler for Echo {
    fn post_init(&mut self, _conn: &mut Connection<'_>) {
        if VERBOSE.load(Ordering::Relaxed) {
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
        if VERBOSE.load(Ordering::Relaxed) {
            println!("client disconnected");
        }
    }
}

fn main() -> io::Result<()> {
    let mut addr = SocketAddr::from(([127, 0, 0, 1], 11006));
    let mut threads = 1usize;
    let mut tls = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--verbose" | "-v" => VERBOSE.store(true, Ordering::Relaxed),
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
            "--tls" => match (args.next(), args.next()) {
                (Some(cert), Some(key)) => tls = Some((cert, key)),
                _ => usage(),
            },
            a if reactors::upgrade_arg(a, &mut args) => {}
            // Unknown options fail to parse as an address too.
            a => addr = a.parse().unwrap_or_else(|_| usage()),
        }
    }

    match tls {
        None => reactors::serve(addr, threads, |r, listen| {
            let server = listen.start(r, || Echo)?;
            r.server_addr(server)
        }),
        Some((cert, key)) => serve_tls(addr, threads, &cert, &key),
    }
}

fn usage() -> ! {
    eprintln!("usage: echo_server [IP:PORT] [--verbose] [--threads N] [--tls CERT KEY] [--upgrade-program PATH] [--upgrade-deadline SECS]");
    std::process::exit(2);
}

#[cfg(feature = "tls")]
fn serve_tls(addr: SocketAddr, threads: usize, cert: &str, key: &str) -> io::Result<()> {
    let config = packet::tls::server_config_from_pem_files(cert, key)?;
    reactors::serve(addr, threads, move |r, listen| {
        let server = listen.start_tls(r, config.clone(), || Echo)?;
        r.server_addr(server)
    })
}

#[cfg(not(feature = "tls"))]
fn serve_tls(_: SocketAddr, _: usize, _: &str, _: &str) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "--tls needs the tls feature: cargo run --features tls --example echo_server",
    ))
}
