//! A TCP proxy: every client is connected to `UPSTREAM` and bytes flow both
//! ways without passing through a handler (`proxy_incoming_to`; spliced
//! inside the kernel on Linux).
//!
//! ```text
//! cargo run --release --example tcp_proxy -- ADDR UPSTREAM
//! cargo run --release --example tcp_proxy -- 127.0.0.1:11010 127.0.0.1:11006
//! ```
//!
//! Prints `listening on ADDR`. When either side closes, the other is closed
//! once what was already on its way has been written. Each direction holds
//! at most `BUFSIZE` bytes before it stops reading its source.

use std::io;
use std::net::SocketAddr;

use packet::{CloseReason, ConnId, Connection, Handler, Reactor};

const BUFSIZE: usize = 256 * 1024;

/// One side of a proxied pair; knows the other side.
struct Side {
    upstream: Option<SocketAddr>,
    peer: Option<ConnId>,
}

impl Handler for Side {
    fn post_init(&mut self, conn: &mut Connection<'_>) {
        // Only the client side has an upstream to dial.
        let Some(upstream) = self.upstream else {
            return;
        };
        let me = conn.id();
        match conn.reactor().connect(
            upstream,
            Side {
                upstream: None,
                peer: Some(me),
            },
        ) {
            Ok(up) => {
                self.peer = Some(up);
                let both = conn.proxy_incoming_to(up, BUFSIZE).and_then(|()| {
                    match conn.reactor().connection(up) {
                        Some(mut up) => up.proxy_incoming_to(me, BUFSIZE),
                        None => Err(io::ErrorKind::NotConnected.into()),
                    }
                });
                if let Err(e) = both {
                    eprintln!("tcp_proxy: {e}");
                    conn.close_connection();
                }
            }
            Err(e) => {
                eprintln!("tcp_proxy: cannot reach {upstream}: {e}");
                conn.close_connection();
            }
        }
    }

    fn unbind(&mut self, conn: &mut Connection<'_>, reason: &CloseReason) {
        if let CloseReason::ConnectFailed(e) = reason {
            eprintln!("tcp_proxy: upstream: {e}");
        }
        if let Some(peer) = self.peer {
            if let Some(mut peer) = conn.reactor().connection(peer) {
                peer.close_connection_after_writing();
            }
        }
    }
}

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: tcp_proxy ADDR UPSTREAM");
        std::process::exit(2);
    };
    let upstream: SocketAddr = upstream.parse().map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("UPSTREAM must be IP:PORT: {e}"),
        )
    })?;
    Reactor::run(|reactor| {
        let server = reactor.start_server(addr.as_str(), move || Side {
            upstream: Some(upstream),
            peer: None,
        })?;
        println!("listening on {}", reactor.server_addr(server)?);
        Ok(())
    })
}
