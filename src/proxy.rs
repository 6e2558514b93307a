//! Connection-to-connection proxying: EventMachine's `proxy_incoming_to`.
//!
//! This module owns proxy state: which connection's input goes straight to
//! which other connection, the pipe that carries it on Linux, the byte
//! count, and the backpressure between the two. Bytes arriving on a proxied
//! connection never reach its `receive_data`. On Linux, when both ends are
//! sockets, they move with `splice(2)` through a pipe and never enter user
//! space; elsewhere they are read into the reactor's buffer and written
//! on. Either way the source is not read while the target's outbound queue
//! holds more than the proxy's `bufsize` (or the pipe still holds bytes), so
//! a slow target cannot grow memory.
//!
//! ```
//! use packet::{Connection, Handler, Reactor};
//!
//! // An echo upstream, and a front door that proxies every client to it.
//! struct Echo;
//! impl Handler for Echo {
//!     fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
//!         conn.send_data(data);
//!     }
//! }
//! struct Front(std::net::SocketAddr);
//! impl Handler for Front {
//!     fn post_init(&mut self, conn: &mut Connection<'_>) {
//!         let me = conn.id();
//!         let up = conn.reactor().connect(self.0, Echo).unwrap();
//!         conn.proxy_incoming_to(up, 64 * 1024).unwrap();
//!         let mut up = conn.reactor().connection(up).unwrap();
//!         up.proxy_incoming_to(me, 64 * 1024).unwrap();
//!     }
//! }
//! struct Client;
//! impl Handler for Client {
//!     fn connection_completed(&mut self, conn: &mut Connection<'_>) {
//!         conn.send_data(b"through the proxy");
//!     }
//!     fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
//!         assert_eq!(data, b"through the proxy");
//!         conn.reactor().stop();
//!     }
//! }
//!
//! Reactor::run(|r| {
//!     let echo = r.start_server("127.0.0.1:0", || Echo)?;
//!     let echo = r.server_addr(echo)?.as_inet().unwrap();
//!     let front = r.start_server("127.0.0.1:0", move || Front(echo))?;
//!     r.connect(r.server_addr(front)?.as_inet().unwrap(), Client)?;
//!     Ok(())
//! })?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use packet_sys::process::pipe;

use crate::connection::{ConnId, Connection};
use crate::extend::{ConnIo, Extension, QueueFlush, ReadBy, Takeover};
use crate::slab::IdMap;
use crate::Reactor;

/// Bytes moved per splice: as much as a pipe holds by default.
const STEP: usize = 64 * 1024;

/// The proxies of one reactor (its extension state).
#[derive(Default)]
struct Proxies {
    /// By source connection.
    by_source: IdMap<ConnId, Proxy>,
    /// Source by target connection.
    by_target: IdMap<ConnId, ConnId>,
    /// The bytes the connection now in `unbind` proxied, its proxy being
    /// gone, for `proxied_bytes` there (ids are not reused, so a stale
    /// entry matches no open connection).
    unbound: Option<(ConnId, u64)>,
}

impl Extension for Proxies {}

impl Proxies {
    fn source(&self, source: ConnId) -> Option<&Proxy> {
        self.by_source.get(&source)
    }

    fn source_mut(&mut self, source: ConnId) -> Option<&mut Proxy> {
        self.by_source.get_mut(&source)
    }

    fn source_of(&self, target: ConnId) -> Option<ConnId> {
        self.by_target.get(&target).copied()
    }

    fn proxied(&self, id: ConnId) -> bool {
        self.source(id).is_some() || self.source_of(id).is_some()
    }
}

/// How proxying takes over its connections' I/O: a source is read by
/// `pump` instead of `receive_data`, a target's writable edge first
/// drains the pipe, and a target with room lets its source be read again.
struct ProxyIo;

impl Takeover for ProxyIo {
    fn readable(conn: &mut ConnIo<'_>) -> ReadBy {
        let source = conn.id();
        if proxy(conn.reactor(), source).is_some() {
            pump(conn.reactor(), source);
            ReadBy::Takeover
        } else {
            ReadBy::Core
        }
    }

    fn writable(conn: &mut ConnIo<'_>) -> QueueFlush {
        let target = conn.id();
        if drain_pipe(conn.reactor(), target) {
            QueueFlush::Now
        } else {
            QueueFlush::Later
        }
    }

    fn queue_checked(conn: &mut ConnIo<'_>, queued: usize) {
        let target = conn.id();
        target_has_room(conn.reactor(), target, queued);
    }

    fn closing(conn: &mut ConnIo<'_>) {
        let id = conn.id();
        let r = conn.reactor();
        if let Some(bytes) = proxy(r, id).map(|p| p.bytes) {
            if let Some(ps) = r.extensions().get_mut::<Proxies>() {
                ps.unbound = Some((id, bytes));
            }
            end_proxy(r, id);
        }
        let source = r
            .extensions()
            .get::<Proxies>()
            .and_then(|ps| ps.source_of(id));
        if let Some(source) = source {
            end_proxy(r, source);
        }
    }
}

struct Proxy {
    to: ConnId,
    bufsize: usize,
    bytes: u64,
    /// `(read end, write end)` when splicing.
    pipe: Option<(OwnedFd, OwnedFd)>,
    /// Bytes in the pipe, not yet in the target.
    in_pipe: usize,
    /// The source is not being read because the target is full.
    waiting: bool,
}

/// Sends everything that arrives on `from` straight to `to` (see
/// [`Connection::proxy_incoming_to`]).
fn proxy_incoming_to(r: &mut Reactor, from: ConnId, to: ConnId, bufsize: usize) -> io::Result<()> {
    let open = |r: &mut Reactor, id| r.connection(id).is_some_and(|c| !c.is_closing());
    if !open(r, from) || !open(r, to) || from == to {
        return Err(io::ErrorKind::NotConnected.into());
    }
    let ps = r.extensions().get_or_default::<Proxies>();
    if ps.source(from).is_some() || ps.source_of(to).is_some() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "already proxying",
        ));
    }
    // splice needs sockets on both ends and no descriptor passing, which
    // would lose the descriptors.
    let plain = |r: &mut Reactor, id| {
        r.extensions()
            .conn_io(id)
            .is_some_and(|c| c.is_plain_socket())
    };
    let pipe = if cfg!(any(target_os = "linux", target_os = "android"))
        && plain(r, from)
        && plain(r, to)
    {
        pipe().ok()
    } else {
        None
    };
    take_over(r, from)?;
    if let Err(e) = take_over(r, to) {
        give_back_unless_proxied(r, from);
        return Err(e);
    }
    let ps = r.extensions().get_or_default::<Proxies>();
    ps.by_source.insert(
        from,
        Proxy {
            to,
            bufsize,
            bytes: 0,
            pipe,
            in_pipe: 0,
            waiting: false,
        },
    );
    ps.by_target.insert(to, from);
    // Input already waiting raised its edge before: read it now.
    read_again_if_waiting(r, from);
    Ok(())
}

fn take_over(r: &mut Reactor, id: ConnId) -> io::Result<()> {
    match r.extensions().conn_io(id) {
        Some(mut c) => c.take_over::<ProxyIo>(),
        None => Err(io::ErrorKind::NotConnected.into()),
    }
}

fn read_again_if_waiting(r: &mut Reactor, id: ConnId) {
    if let Some(mut c) = r.extensions().conn_io(id) {
        if c.input_waits() {
            c.read_again();
        }
    }
}

/// Bytes proxied from `from` so far (0 when not proxied).
fn proxied_bytes(r: &mut Reactor, from: ConnId) -> u64 {
    let Some(ps) = r.extensions().get::<Proxies>() else {
        return 0;
    };
    match (ps.source(from), ps.unbound) {
        (Some(p), _) => p.bytes,
        (None, Some((id, bytes))) if id == from => bytes,
        _ => 0,
    }
}

fn proxy(r: &mut Reactor, source: ConnId) -> Option<&Proxy> {
    r.extensions().get::<Proxies>()?.source(source)
}

fn proxy_mut(r: &mut Reactor, source: ConnId) -> Option<&mut Proxy> {
    r.extensions().get_mut::<Proxies>()?.source_mut(source)
}

/// Gives a connection's I/O back to the core once it is neither a source
/// nor a target.
fn give_back_unless_proxied(r: &mut Reactor, id: ConnId) {
    let proxied = r
        .extensions()
        .get::<Proxies>()
        .is_some_and(|ps| ps.proxied(id));
    if !proxied {
        if let Some(mut c) = r.extensions().conn_io(id) {
            c.give_back::<ProxyIo>();
        }
    }
}

fn end_proxy(r: &mut Reactor, source: ConnId) {
    let Some(ps) = r.extensions().get_mut::<Proxies>() else {
        return;
    };
    let Some(mut p) = ps.by_source.remove(&source) else {
        return;
    };
    ps.by_target.remove(&p.to);
    give_back_unless_proxied(r, source);
    give_back_unless_proxied(r, p.to);
    read_again_if_waiting(r, source);
    // What is still in the pipe was taken from the source: it goes to the
    // target, in order, before anything sent later.
    if let Some((pipe_out, _w)) = p.pipe.take() {
        let mut left = p.in_pipe;
        let mut buf = vec![0u8; left.min(STEP)];
        while left > 0 {
            match packet_sys::Socket::view(pipe_out.as_fd()).read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if let Some(mut t) = r.connection(p.to) {
                        t.try_send_data(&buf[..n]);
                    }
                    left -= n.min(left);
                }
            }
        }
    }
}

/// A proxied connection is readable: moves one read step's worth (the
/// core's, so end of stream, activity and fairness are the core's:
/// `receive_eof` decides what the end of the source's stream does, and a
/// source with more input waits for the next turn) to its target.
fn pump(r: &mut Reactor, source: ConnId) {
    let Some(p) = proxy(r, source) else {
        return;
    };
    let (to, bufsize, in_pipe, splicing) = (p.to, p.bufsize, p.in_pipe, p.pipe.is_some());
    let Some(mut t) = r.extensions().conn_io(to) else {
        end_proxy(r, source);
        return;
    };
    if t.connection().is_closing() {
        // The source's input goes to its own handler again.
        end_proxy(r, source);
        return;
    }
    let full = t.connection().outbound_len() > bufsize
        || in_pipe > 0
        || t.is_connecting()
        || (splicing && t.is_write_blocked());
    if full {
        // The target's room lets it be read again.
        if let Some(p) = proxy_mut(r, source) {
            p.waiting = true;
        }
        return;
    }
    // Out of the proxy while the step runs; put back before its bytes are
    // moved on.
    let pipe = proxy_mut(r, source).and_then(|p| p.pipe.take());
    if let Some((pipe_out, pipe_in)) = pipe {
        let moved = match r.extensions().conn_io(source) {
            Some(mut s) => s.read_into_pipe(pipe_in.as_fd(), STEP).ok().flatten(),
            None => None,
        };
        let Some(p) = proxy_mut(r, source) else {
            return;
        };
        p.pipe = Some((pipe_out, pipe_in));
        if let Some(n) = moved {
            p.bytes += n as u64;
            p.in_pipe += n;
            drain_pipe(r, to);
        }
        return;
    }
    if let Some(mut s) = r.extensions().conn_io(source) {
        s.read(|r, data| {
            if let Some(p) = proxy_mut(r, source) {
                p.bytes += data.len() as u64;
            }
            if let Some(mut t) = r.connection(to) {
                t.try_send_data(data);
            }
        });
    }
}

/// Moves pipe contents into proxy target `target`. Returns whether the
/// pipe is empty (the target's own queue may go next).
fn drain_pipe(r: &mut Reactor, target: ConnId) -> bool {
    let Some(source) = r
        .extensions()
        .get::<Proxies>()
        .and_then(|ps| ps.source_of(target))
    else {
        return true;
    };
    let Some(p) = proxy_mut(r, source) else {
        return true;
    };
    if p.in_pipe == 0 || p.pipe.is_none() {
        return true;
    }
    let (pipe, in_pipe) = (p.pipe.take(), p.in_pipe);
    let Some((pipe_out, _)) = &pipe else {
        return true;
    };
    let moved = match r.extensions().conn_io(target) {
        Some(mut t) => t.write_from_pipe(pipe_out.as_fd(), in_pipe).unwrap_or(0),
        None => 0,
    };
    let Some(p) = proxy_mut(r, source) else {
        return true;
    };
    p.pipe = pipe;
    p.in_pipe -= moved.min(p.in_pipe);
    p.in_pipe == 0
}

/// Proxy target `target` has room again: let its source be read.
fn target_has_room(r: &mut Reactor, target: ConnId, queued: usize) {
    let Some(source) = r
        .extensions()
        .get::<Proxies>()
        .and_then(|ps| ps.source_of(target))
    else {
        return;
    };
    let Some(p) = proxy_mut(r, source) else {
        return;
    };
    if p.waiting && p.in_pipe == 0 && queued <= p.bufsize {
        p.waiting = false;
        if let Some(mut s) = r.extensions().conn_io(source) {
            s.read_again();
        }
    }
}

impl Connection<'_> {
    /// Sends everything that arrives on this connection straight to `to`,
    /// without calling this connection's `receive_data` (EventMachine's
    /// `proxy_incoming_to`). This connection is not read while `to` has
    /// more than `bufsize` bytes queued. Proxying ends with
    /// [`Connection::stop_proxying`] or when either connection closes. A
    /// connection may be the source of one proxy and the target of one
    /// (both directions of a TCP proxy): for the other direction, call
    /// this on `to` (through [`Reactor::connection`]).
    ///
    /// # Errors
    /// `NotConnected` if either connection is closed or closing;
    /// `AlreadyExists` if this connection is proxied already or `to`
    /// already receives a proxy.
    pub fn proxy_incoming_to(&mut self, to: ConnId, bufsize: usize) -> io::Result<()> {
        let from = self.id();
        proxy_incoming_to(self.reactor(), from, to, bufsize)
    }

    /// Ends proxying from this connection: bytes already taken from it
    /// still reach the target, and later ones go to its `receive_data`
    /// again.
    pub fn stop_proxying(&mut self) {
        let from = self.id();
        end_proxy(self.reactor(), from);
    }

    /// Bytes proxied from this connection so far (0 when not proxied; in
    /// `unbind`, the total of the proxy that just ended).
    pub fn proxied_bytes(&mut self) -> u64 {
        let from = self.id();
        proxied_bytes(self.reactor(), from)
    }
}
