//! One write rule (issue 21, item 3): a peer that resets the connection
//! ends it with the same `CloseReason` whichever path wrote to it — the
//! stage written when a callback returns, a direct write of a large
//! payload, a send from outside any callback (the path a proxy's copy
//! takes), the outbound queue's flush, a filter's records (TLS) and a
//! proxy's splice.
//!
//! The peer is a plain socket on another thread. It reads nothing and
//! closes once our first bytes reached it: closing with unread input sends
//! a reset. The reactor waits for that close inside its turn, before its
//! next wait, so the write under test — not an error event — is the first
//! to meet the reset. A reset is `Reset`; a reset from a peer that had
//! ended its stream (and we read that end) is `PeerClosed`
//! (`Conn::write_failed`), on every path.

mod util;

use std::cell::RefCell;
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use packet::{CloseReason, Connection, Handler, Reactor};

/// Which path writes after the reset.
#[derive(Clone, Copy, Debug)]
enum Path {
    /// A small `send_data` in a callback: staged, written when it returns.
    Stage,
    /// A large `send_data` in a callback: written at once.
    Direct,
    /// `send_data_to` from outside any callback (as a proxy's copy).
    Outside,
    /// `send_file` in a callback: the outbound queue's flush.
    Queue,
    /// `start_tls`: the filter writes the client's hello.
    #[cfg(feature = "tls")]
    Filter,
}

/// A peer that accepts one connection, waits for its first bytes, closes
/// without reading them (a reset), and then says so. If `ended_first`, it
/// ends its stream before, and resets once told that we read the end.
fn resetting_peer(
    ended_first: bool,
) -> (
    SocketAddr,
    mpsc::Sender<()>,
    mpsc::Receiver<()>,
    JoinHandle<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    let (go_tx, go) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(util::IO_TIMEOUT)).unwrap();
        let mut one = [0u8; 1];
        assert_eq!(s.peek(&mut one).unwrap(), 1, "our first bytes came");
        if ended_first {
            s.shutdown(Shutdown::Write).unwrap();
            go.recv_timeout(util::IO_TIMEOUT)
                .expect("end of stream read");
        }
        drop(s);
        let _ = tx.send(());
    });
    (addr, go_tx, rx, thread)
}

/// The reactor's end: sends its first bytes and, once the peer has reset,
/// writes on `path` (from `resumed`, a callback that runs before the next
/// wait) and records the reason in `unbind`. If the peer ends its stream
/// first, that is read (and the peer told) before the reset.
struct Writer {
    path: Path,
    ended_first: bool,
    go: mpsc::Sender<()>,
    reset: Option<mpsc::Receiver<()>>,
    reason: Rc<RefCell<Option<String>>>,
}

impl Writer {
    /// Pauses, and next turn, before its wait, writes on `path` once the
    /// peer has reset.
    fn write_after_reset(&mut self, conn: &mut Connection<'_>) {
        conn.pause();
        let id = conn.id();
        let reset = self.reset.take().expect("once");
        let path = self.path;
        conn.reactor().next_turn(move |r| {
            reset
                .recv_timeout(util::IO_TIMEOUT)
                .expect("the peer reset");
            match path {
                Path::Outside => {
                    r.send_data_to(id, b"late");
                }
                // `resumed` follows in this turn's deferred work.
                _ => r.resume(id),
            }
        });
    }
}

impl Handler for Writer {
    fn connection_completed(&mut self, conn: &mut Connection<'_>) {
        // Written when this callback returns.
        conn.send_data(b"hello");
        if !self.ended_first {
            self.write_after_reset(conn);
        }
    }

    fn receive_eof(&mut self, conn: &mut Connection<'_>) {
        // Stays open: the writes below are what ends it.
        self.go.send(()).unwrap();
        self.write_after_reset(conn);
    }

    fn resumed(&mut self, conn: &mut Connection<'_>) {
        match self.path {
            Path::Stage => conn.send_data(b"late"),
            Path::Direct => conn.send_data(&vec![7u8; 256 * 1024]),
            Path::Queue => {
                let file = std::env::current_exe().unwrap();
                conn.send_file(file).unwrap();
            }
            #[cfg(feature = "tls")]
            Path::Filter => {
                let (_, _, client) = util::tls_configs();
                let config = packet::tls::TlsConfig::client(client, "localhost").unwrap();
                conn.start_tls(config).unwrap();
            }
            Path::Outside => unreachable!("written from next_turn"),
        }
    }

    fn unbind(&mut self, conn: &mut Connection<'_>, reason: &CloseReason) {
        *self.reason.borrow_mut() = Some(format!("{reason:?}"));
        conn.reactor().stop();
    }
}

/// Runs `path` against a resetting peer; returns how the connection ended.
fn reason_after_reset(path: Path, ended_first: bool) -> String {
    let (addr, go, reset, peer) = resetting_peer(ended_first);
    let reason = Rc::new(RefCell::new(None));
    let seen = reason.clone();
    Reactor::run(move |r| {
        r.connect(
            addr,
            Writer {
                path,
                ended_first,
                go,
                reset: Some(reset),
                reason: seen,
            },
        )?;
        guard(r);
        Ok(())
    })
    .unwrap();
    peer.join().unwrap();
    let reason = reason.borrow_mut().take();
    reason.expect("unbind ran")
}

/// Every path, against both peers: a reset is `Reset`; a reset from a peer
/// that had ended its stream is that peer closing, `PeerClosed`.
fn check(path: Path) {
    assert_eq!(reason_after_reset(path, false), "Reset", "{path:?}");
    assert_eq!(
        reason_after_reset(path, true),
        "PeerClosed",
        "{path:?} after the peer's end of stream"
    );
}

/// A hang guard only.
fn guard(r: &mut Reactor) {
    r.add_timer(util::IO_TIMEOUT, |r| r.stop());
}

#[test]
fn a_reset_ends_the_staged_write_as_reset() {
    check(Path::Stage);
}

#[test]
fn a_reset_ends_a_direct_write_as_reset() {
    check(Path::Direct);
}

#[test]
fn a_reset_ends_a_write_from_outside_a_callback_as_reset() {
    check(Path::Outside);
}

#[test]
fn a_reset_ends_the_queue_flush_as_reset() {
    check(Path::Queue);
}

#[cfg(feature = "tls")]
#[test]
fn a_reset_ends_a_filter_write_as_reset() {
    check(Path::Filter);
}
