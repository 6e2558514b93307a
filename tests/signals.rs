//! Signals delivered through the reactor, and graceful shutdown on SIGTERM.
//! A binary of its own: signal dispositions are process-wide.

mod util;

use std::io::Read;
use std::sync::mpsc;
use std::time::Duration;

use packet::signal::{StopAction, SIGTERM, SIGUSR1};
use packet::{CloseReason, Connection, Handler};
use util::{client, pattern, spawn_reactor, IO_TIMEOUT};

#[test]
fn signals_run_callbacks_on_the_reactor_thread_and_sigterm_stops_gracefully() {
    // 1. SIGUSR1 runs its callback on the reactor's thread, every time.
    let (tx, rx) = mpsc::channel();
    let running = spawn_reactor(move |r| {
        let me = std::thread::current().id();
        r.on_signal(SIGUSR1, move |_| {
            tx.send(std::thread::current().id() == me).unwrap()
        })?;
        Ok(())
    });
    for _ in 0..3 {
        packet_sys::signal::raise(SIGUSR1).unwrap();
        assert!(
            rx.recv_timeout(IO_TIMEOUT).unwrap(),
            "callback ran on another thread"
        );
    }
    running.stop();

    // 2. SIGTERM: stop accepting, flush what is queued, then stop.
    const SIZE: usize = 6 * 1024 * 1024;
    let (done_tx, done_rx) = mpsc::channel();
    let server = spawn_reactor(move |r| {
        let done = done_tx.clone();
        let id = r.start_server("127.0.0.1:0", move || Flood(done.clone()))?;
        r.on_signal(SIGTERM, |r| r.stop_gracefully(Duration::from_secs(30)))?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    let addr = server.value;
    let mut c = client(addr);
    // Wait until the server has queued everything it could not write.
    let mut first = [0u8; 1];
    c.read_exact(&mut first).unwrap();
    packet_sys::signal::raise(SIGTERM).unwrap();
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    // Our end of stream ends the server's lingering close now, not after
    // its 5 s of quiet.
    drop(c);
    assert_eq!(
        1 + rest.len(),
        SIZE,
        "every queued byte was delivered before the close"
    );
    assert!(first[0] == pattern(1, 1)[0] && rest[..] == pattern(1, SIZE)[1..]);
    assert_eq!(done_rx.recv_timeout(IO_TIMEOUT).unwrap(), "closed locally");
    // The reactor stopped by itself and its thread returned cleanly.
    server.thread.join().unwrap().unwrap();
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "no longer accepting"
    );

    // 3. `on_stop_signals` with `set_stop_grace`: SIGTERM's graceful stop
    // gets that grace (not 30 s), and a second SIGTERM, while a connection
    // still waits for the reply it is owed, stops at once.
    const GRACE: Duration = Duration::from_secs(120);
    let (owed_tx, owed_rx) = mpsc::channel();
    let (action_tx, action_rx) = mpsc::channel();
    let server = spawn_reactor(move |r| {
        let id = r.start_server("127.0.0.1:0", move || Owed(owed_tx.clone()))?;
        r.set_stop_grace(GRACE);
        r.on_stop_signals(move |_, action| action_tx.send(action).unwrap())?;
        Ok(r.server_addr(id)?.as_inet().unwrap())
    });
    let _c = client(server.value);
    owed_rx.recv_timeout(IO_TIMEOUT).expect("not accepted");
    packet_sys::signal::raise(SIGTERM).unwrap();
    assert_eq!(
        action_rx.recv_timeout(IO_TIMEOUT).unwrap(),
        StopAction::Graceful(GRACE)
    );
    packet_sys::signal::raise(SIGTERM).unwrap();
    assert_eq!(
        action_rx.recv_timeout(IO_TIMEOUT).unwrap(),
        StopAction::Immediate
    );
    server.thread.join().unwrap().unwrap();
}

/// Is promised a reply that never comes: a graceful stop waits for it.
struct Owed(mpsc::Sender<()>);

impl Handler for Owed {
    fn post_init(&mut self, conn: &mut Connection<'_>) {
        conn.expect_reply();
        let _ = self.0.send(());
    }
}

/// Queues a large payload at once and keeps the connection open.
struct Flood(mpsc::Sender<String>);

impl Handler for Flood {
    fn connection_completed(&mut self, conn: &mut Connection<'_>) {
        conn.set_high_water_mark(usize::MAX);
        conn.send_data(&pattern(1, 6 * 1024 * 1024));
    }
    fn unbind(&mut self, _conn: &mut Connection<'_>, reason: &CloseReason) {
        let _ = self.0.send(reason.to_string());
    }
}
