//! UDP echo server: every datagram goes back to its sender.
//!
//! ```text
//! cargo run --release --example udp_echo [ADDR]
//! ```
//!
//! Listens on 127.0.0.1:11009 unless `ADDR` is given, prints
//! `listening on ADDR`. Datagrams up to 65,507 bytes come back whole.

use std::io;
use std::net::SocketAddr;

use packet::datagram::{Datagram, DatagramHandler};
use packet::Reactor;

struct Echo;

impl DatagramHandler for Echo {
    fn receive_datagram(&mut self, sock: &mut Datagram<'_>, data: &[u8], from: SocketAddr) {
        // A full socket buffer drops the reply, as UDP may.
        if let Err(e) = sock.send_datagram(data, from) {
            eprintln!("udp_echo: reply to {from}: {e}");
        }
    }

    fn datagram_too_large(&mut self, _sock: &mut Datagram<'_>, from: SocketAddr, len: usize) {
        eprintln!("udp_echo: dropped a {len}-byte datagram from {from}");
    }
}

fn main() -> io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:11009".into());
    Reactor::run(|reactor| {
        let id = reactor
            .datagrams()
            .open_datagram_socket(addr.as_str(), Echo)?;
        println!("listening on {}", reactor.datagrams().local_addr(id)?);
        Ok(())
    })
}
