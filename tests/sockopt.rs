//! Socket options, keep-alive and half-close on live connections.

mod util;

use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::Duration;

use packet::sockopt::{IPPROTO_TCP, SOL_SOCKET, SO_KEEPALIVE, SO_RCVBUF, TCP_NODELAY};
use packet::{CloseReason, Connection, Handler};
use util::{client, spawn_reactor, IO_TIMEOUT};

/// Checks options on connect, says goodbye with a half-close, and keeps
/// reading.
struct HalfClose(mpsc::Sender<String>);

impl Handler for HalfClose {
    fn connection_completed(&mut self, conn: &mut Connection<'_>) {
        // Accepted TCP connections get TCP_NODELAY.
        assert_eq!(conn.get_sock_opt(IPPROTO_TCP, TCP_NODELAY).unwrap(), 1);
        conn.set_sock_opt(SOL_SOCKET, SO_RCVBUF, 32 * 1024).unwrap();
        assert!(conn.get_sock_opt(SOL_SOCKET, SO_RCVBUF).unwrap() >= 32 * 1024);
        assert_eq!(conn.get_sock_opt(SOL_SOCKET, SO_KEEPALIVE).unwrap(), 0);
        conn.enable_keepalive(Duration::from_secs(30), Duration::from_secs(5), 3)
            .unwrap();
        assert_eq!(conn.get_sock_opt(SOL_SOCKET, SO_KEEPALIVE).unwrap(), 1);
        conn.send_data(b"bye");
        conn.close_write();
        // Refused after close_write.
        conn.send_data(b"never");
    }
    fn receive_data(&mut self, _conn: &mut Connection<'_>, data: &[u8]) {
        let _ = self
            .0
            .send(format!("got {}", String::from_utf8_lossy(data)));
    }
    fn unbind(&mut self, _conn: &mut Connection<'_>, reason: &CloseReason) {
        let _ = self.0.send(reason.to_string());
    }
}

#[test]
fn half_close_ends_our_stream_and_keeps_reading_theirs() {
    let (tx, rx) = mpsc::channel();
    let server = spawn_reactor(move |r| {
        let id = r.start_server("127.0.0.1:0", move || HalfClose(tx.clone()))?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    let mut c = client(server.value);
    let mut all = Vec::new();
    c.read_to_end(&mut all).unwrap();
    assert_eq!(
        all, b"bye",
        "the peer sees end of stream after the queued bytes"
    );
    c.write_all(b"still talking").unwrap();
    assert_eq!(rx.recv_timeout(IO_TIMEOUT).unwrap(), "got still talking");
    drop(c);
    assert_eq!(rx.recv_timeout(IO_TIMEOUT).unwrap(), "closed by peer");
    server.stop();
}
