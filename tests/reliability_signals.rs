//! SIGINT stops a server as gracefully as SIGTERM does (`tests/signals.rs`
//! covers SIGTERM): listeners close at once, queued output is delivered,
//! then the reactor stops by itself. A binary of its own: signal
//! dispositions are process-wide.
//!
//! Run alone: `cargo test --all-features --test reliability_signals`.

mod util;

use std::io::Read;
use std::sync::mpsc;
use std::time::Duration;

use packet::signal::SIGINT;
use packet::{CloseReason, Connection, Handler};
use util::{client, pattern, spawn_reactor, IO_TIMEOUT};

const SIZE: usize = 6 * 1024 * 1024;

/// Queues a large payload at once and keeps the connection open.
struct Flood(mpsc::Sender<String>);

impl Handler for Flood {
    fn connection_completed(&mut self, conn: &mut Connection<'_>) {
        conn.set_high_water_mark(usize::MAX);
        conn.send_data(&pattern(2, SIZE));
    }
    fn unbind(&mut self, _conn: &mut Connection<'_>, reason: &CloseReason) {
        let _ = self.0.send(reason.to_string());
    }
}

#[test]
fn sigint_stops_gracefully_like_sigterm() {
    let (done_tx, done_rx) = mpsc::channel();
    let server = spawn_reactor(move |r| {
        let done = done_tx.clone();
        let id = r.start_server("127.0.0.1:0", move || Flood(done.clone()))?;
        r.on_signal(SIGINT, |r| r.stop_gracefully(Duration::from_secs(30)))?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    let addr = server.value;
    let mut c = client(addr);
    // The server has queued what the kernel did not take once a byte
    // arrives.
    let mut first = [0u8; 1];
    c.read_exact(&mut first).unwrap();
    // Interrupt the whole process, as Ctrl-C does: the handler only wakes
    // the reactor, which stops gracefully on its own thread.
    packet_sys::signal::raise(SIGINT).unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    // Our end of stream ends the server's lingering close now, not after
    // its 5 s of quiet.
    drop(c);
    assert_eq!(1 + rest.len(), SIZE, "every queued byte arrives");
    let expect = pattern(2, SIZE);
    assert!(first[0] == expect[0] && rest[..] == expect[1..]);
    assert_eq!(done_rx.recv_timeout(IO_TIMEOUT).unwrap(), "closed locally");
    // The reactor stopped by itself and its thread returned cleanly; the
    // process is still alive (SIGINT's default action would have ended it).
    server.thread.join().unwrap().unwrap();
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "no longer accepting"
    );
}
