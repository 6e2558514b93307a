//! Client side of `bench/many_connections.sh`: opens many idle connections
//! to an echo server and holds them, driven by commands on stdin.
//!
//! ```text
//! cargo run --release --example hold_connections -- ADDR COUNT [--per-source N]
//! ```
//!
//! Connections are bound to 127.0.0.2, 127.0.0.3, ... (`N` per address,
//! 4000 by default) before connecting, so that the ephemeral ports of one
//! source address are never the limit. Raises its own soft descriptor limit
//! to the hard one. Each connection sends 8 bytes and reads their echo;
//! then `holding COUNT` is printed and the client waits for a command:
//!
//! - `check`: every connection echoes 8 more bytes (different ones) and
//!   `verified COUNT` is printed;
//! - `exit` or end of input: every connection is closed, and it exits.
//!
//! Any failure is printed and ends the process with status 1.

use std::io::{self, BufRead, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use packet_sys::{Addr, Domain, Socket};

fn fail(what: impl std::fmt::Display) -> ! {
    eprintln!("hold_connections: {what}");
    std::process::exit(1);
}

fn usage() -> ! {
    fail("usage: hold_connections ADDR COUNT [--per-source N]")
}

/// A connection from `source`, blocking, with generous timeouts.
fn connect_from(source: Ipv4Addr, to: SocketAddr) -> io::Result<TcpStream> {
    let s = Socket::stream(Domain::Ipv4)?;
    s.bind(&Addr::Inet(SocketAddr::V4(SocketAddrV4::new(source, 0))))?;
    // Non-blocking: in progress, or already connected on loopback. The
    // first blocking write waits for the handshake.
    s.connect(&Addr::Inet(to))?;
    let stream = TcpStream::from(OwnedFd::from(s));
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    Ok(stream)
}

/// Sends 8 bytes naming connection `i` and round `round`, and checks the
/// echo.
fn echo(stream: &mut TcpStream, i: usize, round: u8) -> io::Result<()> {
    let mut msg = *b"r0000000";
    msg[0] = b'a' + round;
    let digits = format!("{:07}", i % 10_000_000);
    msg[1..].copy_from_slice(digits.as_bytes());
    stream.write_all(&msg)?;
    let mut got = [0u8; 8];
    stream.read_exact(&mut got)?;
    if got != msg {
        return Err(io::Error::other(format!(
            "echo {:?} for {:?}",
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&msg)
        )));
    }
    Ok(())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| usage());
    let count: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| usage());
    let mut per_source = 4000usize;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--per-source" => {
                per_source = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .unwrap_or_else(|| usage())
            }
            _ => usage(),
        }
    }
    let (_, hard) = packet_sys::process::nofile_limit().unwrap_or_else(|e| fail(e));
    packet_sys::process::set_nofile_soft_limit(hard).unwrap_or_else(|e| fail(e));

    let started = Instant::now();
    let mut conns = Vec::with_capacity(count);
    for i in 0..count {
        let n = u8::try_from(2 + i / per_source).unwrap_or_else(|_| fail("too many sources"));
        let source = Ipv4Addr::new(127, 0, 0, n);
        let mut c = connect_from(source, addr)
            .unwrap_or_else(|e| fail(format!("connection {i} from {source}: {e}")));
        echo(&mut c, i, 0).unwrap_or_else(|e| fail(format!("connection {i}: {e}")));
        conns.push(c);
    }
    println!(
        "holding {count} (from {} source addresses, opened in {:.1?})",
        count.div_ceil(per_source),
        started.elapsed()
    );
    let _ = io::stdout().flush();

    for line in io::stdin().lock().lines() {
        let line = line.unwrap_or_else(|e| fail(e));
        match line.trim() {
            "check" => {
                for (i, c) in conns.iter_mut().enumerate() {
                    echo(c, i, 1).unwrap_or_else(|e| fail(format!("check of {i}: {e}")));
                }
                println!("verified {}", conns.len());
                let _ = io::stdout().flush();
            }
            "exit" => break,
            other => fail(format!("unknown command {other:?}")),
        }
    }
    drop(conns);
}
