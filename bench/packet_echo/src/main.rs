//! packet's core in an echo server that does what `bench/mio_echo` does and
//! no more: the like-for-like size figure of `bench/README.md`, "Core-only
//! figures". `examples/echo_server` adds `--threads`, `--verbose` and a
//! graceful stop on `SIGTERM`/`SIGINT`.
//!
//! ```text
//! cd bench/packet_echo && cargo build --release
//! target/release/packet_echo [IP:PORT]
//! ```
//!
//! Listens on 127.0.0.1:11006 unless an address is given, prints
//! `listening on ADDR`, and echoes every byte; a connection whose
//! outbound queue passes the high-water mark is not read until it drains.

use std::io::{self, ErrorKind};
use std::net::SocketAddr;

use packet::{Connection, Handler, Reactor};

struct Echo;

impl Handler for Echo {
    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        conn.send_data(data);
    }

    fn outbound_full(&mut self, conn: &mut Connection<'_>) {
        conn.pause();
    }

    fn outbound_drained(&mut self, conn: &mut Connection<'_>) {
        conn.resume();
    }
}

fn main() -> io::Result<()> {
    let addr: SocketAddr = match std::env::args().nth(1) {
        Some(a) => a
            .parse()
            .map_err(|_| io::Error::from(ErrorKind::InvalidInput))?,
        None => ([127, 0, 0, 1], 11006).into(),
    };
    let mut reactor = Reactor::new()?;
    let server = reactor.start_server(addr, || Echo)?;
    println!("listening on {}", reactor.server_addr(server)?);
    reactor.run_until_stopped()
}
