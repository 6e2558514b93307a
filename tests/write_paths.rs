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
//! to meet the reset (loopback delivers the reset within the peer's
//! `close`; on a very busy machine the kernel may defer it past our
//! write, and then the error event meets it: the reason must be the same
//! either way, which is the point). A reset is `Reset`; a reset from a
//! peer that had ended its stream (and we read that end) is `PeerClosed`
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
    /// `send_data` from outside any callback, through
    /// `Reactor::connection` (as a proxy's copy).
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
                    if let Some(mut conn) = r.connection(id) {
                        conn.send_data(b"late");
                    }
                }
                // `resumed` follows in this turn's deferred work.
                _ => {
                    if let Some(mut conn) = r.connection(id) {
                        conn.resume();
                    }
                }
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

/// A proxy's splice into a target whose peer reset: `Reset` too.
///
/// The order is arranged so that the splice, not the target's error
/// event, meets the reset: the reactor is held inside a callback while a
/// driver makes a blocker connection readable and then the proxy's
/// source, so one wait returns both, the blocker first (epoll reports in
/// the order readiness came). The blocker's callback has the target's
/// peer reset; the source's read right after splices into the target.
#[cfg(all(feature = "proxy", any(target_os = "linux", target_os = "android")))]
mod proxy_splice {
    use super::*;
    use std::io::Write;
    use std::net::TcpStream;

    #[derive(Default)]
    struct State {
        blocker: Option<packet::ConnId>,
        source: Option<packet::ConnId>,
        target: Option<packet::ConnId>,
        target_ready: bool,
        /// Bytes that reached the source's own handler (none may: they
        /// are proxied).
        source_got: usize,
        reason: Option<String>,
    }

    type Shared = Rc<RefCell<State>>;

    struct Channels {
        armed: mpsc::Sender<()>,
        go: mpsc::Receiver<()>,
        abort: mpsc::Sender<()>,
        aborted: mpsc::Receiver<()>,
    }

    /// The server's connections: the first accepted is the blocker, the
    /// second the proxy's source.
    struct Side {
        s: Shared,
        ch: Rc<Channels>,
    }

    impl Handler for Side {
        fn post_init(&mut self, conn: &mut Connection<'_>) {
            let mut s = self.s.borrow_mut();
            if s.blocker.is_none() {
                s.blocker = Some(conn.id());
            } else {
                s.source = Some(conn.id());
            }
            drop(s);
            arm_when_ready(conn.reactor(), &self.s, &self.ch);
        }
        fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
            if Some(conn.id()) == self.s.borrow().source {
                self.s.borrow_mut().source_got += data.len();
                return;
            }
            // The blocker: the target's peer resets now, before the
            // source's event of this same batch.
            self.ch.abort.send(()).unwrap();
            self.ch
                .aborted
                .recv_timeout(util::IO_TIMEOUT)
                .expect("the peer reset");
        }
    }

    struct Target {
        s: Shared,
        ch: Rc<Channels>,
    }

    impl Handler for Target {
        fn connection_completed(&mut self, conn: &mut Connection<'_>) {
            // Left unread by the peer: its close is a reset.
            conn.send_data(b"hello");
            self.s.borrow_mut().target_ready = true;
            arm_when_ready(conn.reactor(), &self.s, &self.ch);
        }
        fn unbind(&mut self, conn: &mut Connection<'_>, reason: &CloseReason) {
            self.s.borrow_mut().reason = Some(format!("{reason:?}"));
            conn.reactor().stop();
        }
    }

    /// Once the three connections exist: proxy the source to the target,
    /// and next turn hold the reactor until the driver has made the
    /// blocker and then the source readable.
    fn arm_when_ready(r: &mut Reactor, s: &Shared, ch: &Rc<Channels>) {
        let st = s.borrow();
        let (Some(source), Some(target), true) = (st.source, st.target, st.target_ready) else {
            return;
        };
        drop(st);
        r.connection(source)
            .unwrap()
            .proxy_incoming_to(target, 1 << 20)
            .unwrap();
        let ch = ch.clone();
        r.next_turn(move |_| {
            ch.armed.send(()).unwrap();
            ch.go.recv_timeout(util::IO_TIMEOUT).expect("driver wrote");
        });
    }

    #[test]
    fn a_reset_ends_a_proxy_splice_as_reset() {
        let (peer_addr, aborted_tx_holder) = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            (l.local_addr().unwrap(), l)
        };
        let (abort_tx, abort_rx) = mpsc::channel();
        let (aborted_tx, aborted_rx) = mpsc::channel();
        let peer = std::thread::spawn(move || {
            let (s, _) = aborted_tx_holder.accept().unwrap();
            s.set_read_timeout(Some(util::IO_TIMEOUT)).unwrap();
            let mut one = [0u8; 1];
            assert_eq!(s.peek(&mut one).unwrap(), 1, "the hello came");
            abort_rx
                .recv_timeout(util::IO_TIMEOUT)
                .expect("told to reset");
            drop(s);
            aborted_tx.send(()).unwrap();
        });
        let (armed_tx, armed_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel();
        let (addr_tx, addr_rx) = mpsc::channel::<SocketAddr>();
        let driver = std::thread::spawn(move || {
            let addr = addr_rx.recv_timeout(util::IO_TIMEOUT).unwrap();
            let mut blocker = TcpStream::connect(addr).unwrap();
            let mut source = TcpStream::connect(addr).unwrap();
            armed_rx.recv_timeout(util::IO_TIMEOUT).expect("armed");
            blocker.write_all(b"b").unwrap();
            source.write_all(&[5u8; 1024]).unwrap();
            go_tx.send(()).unwrap();
            // Open until the reactor is done with them.
            let mut rest = Vec::new();
            let _ = std::io::Read::read_to_end(&mut blocker, &mut rest);
            let _ = std::io::Read::read_to_end(&mut source, &mut rest);
        });
        let ch = Rc::new(Channels {
            armed: armed_tx,
            go: go_rx,
            abort: abort_tx,
            aborted: aborted_rx,
        });
        let s: Shared = Rc::default();
        let s2 = s.clone();
        Reactor::run(move |r| {
            let (s3, ch3) = (s2.clone(), ch.clone());
            let server = r.start_server("127.0.0.1:0", move || Side {
                s: s3.clone(),
                ch: ch3.clone(),
            })?;
            let target = r.connect(peer_addr, Target { s: s2.clone(), ch })?;
            s2.borrow_mut().target = Some(target);
            addr_tx
                .send(r.server_addr(server)?.as_inet().expect("tcp"))
                .unwrap();
            guard(r);
            Ok(())
        })
        .unwrap();
        peer.join().unwrap();
        driver.join().unwrap();
        let s = s.borrow();
        assert_eq!(
            s.source_got, 0,
            "the source's bytes were proxied, not delivered (the splice met the reset)"
        );
        assert_eq!(s.reason.as_deref(), Some("Reset"));
    }
}
