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
use crate::reactor::{ConnHooks, Extension, Out, QueueFlush, Reactor, ReadBy, ReadInto, Transport};
use crate::slab::{IdMap, Token};

/// Bytes moved per splice: as much as a pipe holds by default.
const STEP: usize = 64 * 1024;

/// The proxies of one reactor (its extension state).
#[derive(Default)]
struct Proxies {
    /// By source connection.
    by_source: IdMap<Token, Proxy>,
    /// Source by target connection.
    by_target: IdMap<Token, Token>,
    /// The bytes the connection now in `unbind` proxied, its proxy being
    /// gone, for `proxied_bytes` there.
    unbound: Option<(Token, u64)>,
}

impl Extension for Proxies {}

/// How proxying takes over its connections' I/O: a source is read by
/// `proxy_pump` instead of `receive_data`, a target's writable edge first
/// drains the pipe, and a target with room lets its source be read again.
static HOOKS: ConnHooks = ConnHooks {
    readable: |r, token| {
        if r.proxy(token).is_some() {
            r.proxy_pump(token);
            ReadBy::Hook
        } else {
            ReadBy::Core
        }
    },
    writable: |r, token| {
        if r.proxy_drain_pipe(token) {
            QueueFlush::Now
        } else {
            QueueFlush::Later
        }
    },
    queue_checked: |r, token, len| r.proxy_target_has_room(token, len),
    closing: |r, token| {
        if let Some(p) = r.proxy(token) {
            let bytes = p.bytes;
            if let Some(ps) = r.ext_mut::<Proxies>() {
                ps.unbound = Some((token, bytes));
            }
            r.end_proxy(token);
        }
        let source = r
            .ext::<Proxies>()
            .and_then(|ps| ps.by_target.get(&token).copied());
        if let Some(source) = source {
            r.end_proxy(source);
        }
    },
    filter: None,
};

struct Proxy {
    to: Token,
    bufsize: usize,
    bytes: u64,
    /// `(read end, write end)` when splicing.
    pipe: Option<(OwnedFd, OwnedFd)>,
    /// Bytes in the pipe, not yet in the target.
    in_pipe: usize,
    /// The source is not being read because the target is full.
    waiting: bool,
}

impl Reactor {
    /// Sends everything that arrives on `from` straight to `to`, without
    /// calling `from`'s `receive_data` (EventMachine's `proxy_incoming_to`).
    /// `from` is not read while `to` has more than `bufsize` bytes queued.
    /// Proxying ends with [`Connection::stop_proxying`] or when either
    /// connection closes. A connection may be the source of one proxy and
    /// the target of one (both directions of a TCP proxy).
    ///
    /// # Errors
    /// `NotConnected` if either connection is closed; `AlreadyExists` if
    /// `from` is proxied already or `to` already receives a proxy.
    fn proxy_incoming_to(&mut self, from: ConnId, to: ConnId, bufsize: usize) -> io::Result<()> {
        let (Some(f), Some(t)) = (self.conn(from.0), self.conn(to.0)) else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        if f.is_closed() || t.is_closed() || from == to {
            return Err(io::ErrorKind::NotConnected.into());
        }
        let (f, t) = (f.transport(), t.transport());
        let ps = self.ext_or_default::<Proxies>();
        if ps.by_source.contains_key(&from.0) || ps.by_target.contains_key(&to.0) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "already proxying",
            ));
        }
        // splice needs sockets on both ends and no descriptor passing,
        // which would lose the descriptors.
        let plain = |t: Transport| matches!(t, Transport::Tcp | Transport::Unix);
        let pipe = if cfg!(any(target_os = "linux", target_os = "android")) && plain(f) && plain(t)
        {
            pipe().ok()
        } else {
            None
        };
        self.hook_conn(from.0, &HOOKS)?;
        if let Err(e) = self.hook_conn(to.0, &HOOKS) {
            self.unhook_unless_proxied(from.0);
            return Err(e);
        }
        let ps = self.ext_or_default::<Proxies>();
        ps.by_source.insert(
            from.0,
            Proxy {
                to: to.0,
                bufsize,
                bytes: 0,
                pipe,
                in_pipe: 0,
                waiting: false,
            },
        );
        ps.by_target.insert(to.0, from.0);
        // Input already waiting raised its edge before: read it now.
        if self.conn(from.0).is_some_and(|c| c.input_waits()) {
            self.carry(from.0);
        }
        Ok(())
    }

    /// Ends the proxying of `from`: bytes already taken from it still reach
    /// the target, and later ones go to `from`'s `receive_data` again.
    fn stop_proxying(&mut self, from: ConnId) {
        self.end_proxy(from.0);
    }

    /// Bytes proxied from `from` so far (0 when not proxied).
    fn proxied_bytes(&self, from: ConnId) -> u64 {
        let Some(ps) = self.ext::<Proxies>() else {
            return 0;
        };
        match (ps.by_source.get(&from.0), ps.unbound) {
            (Some(p), _) => p.bytes,
            (None, Some((t, bytes))) if t == from.0 && self.is_unbinding(from) => bytes,
            _ => 0,
        }
    }

    fn proxy(&self, source: Token) -> Option<&Proxy> {
        self.ext::<Proxies>()?.by_source.get(&source)
    }

    fn proxy_mut(&mut self, source: Token) -> Option<&mut Proxy> {
        self.ext_mut::<Proxies>()?.by_source.get_mut(&source)
    }

    /// Gives a connection's I/O back to the core once it is neither a
    /// source nor a target.
    fn unhook_unless_proxied(&mut self, token: Token) {
        let proxied = self.ext::<Proxies>().is_some_and(|ps| {
            ps.by_source.contains_key(&token) || ps.by_target.contains_key(&token)
        });
        if !proxied {
            self.unhook_conn(token);
        }
    }

    fn end_proxy(&mut self, source: Token) {
        let Some(ps) = self.ext_mut::<Proxies>() else {
            return;
        };
        let Some(mut p) = ps.by_source.remove(&source) else {
            return;
        };
        ps.by_target.remove(&p.to);
        self.unhook_unless_proxied(source);
        self.unhook_unless_proxied(p.to);
        if self.conn(source).is_some_and(|c| c.input_waits()) {
            self.carry(source);
        }
        // What is still in the pipe was taken from the source: it goes to
        // the target's queue, in order, before anything sent later.
        if let Some((r, _w)) = p.pipe.take() {
            let mut left = p.in_pipe;
            let mut buf = vec![0u8; left.min(STEP)];
            while left > 0 {
                match packet_sys::Socket::view(r.as_fd()).read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        self.queue_out(p.to, &buf[..n]);
                        left -= n.min(left);
                    }
                }
            }
        }
        self.flush_queue(p.to);
    }

    /// A proxied connection is readable: moves one read step's worth (the
    /// core's `read_step`, so end of stream, activity and fairness are the
    /// core's: `receive_eof` decides what the end of the source's stream
    /// does, and a source with more input waits for the next turn) to its
    /// target.
    fn proxy_pump(&mut self, source: Token) {
        let Some(p) = self.proxy(source) else {
            return;
        };
        let (to, bufsize, in_pipe) = (p.to, p.bufsize, p.in_pipe);
        let Some(t) = self.conn(to).filter(|t| !t.is_ending()) else {
            // The source's input goes to its own handler again.
            self.end_proxy(source);
            return;
        };
        let full = t.queued() > bufsize
            || in_pipe > 0
            || t.is_connecting()
            || (p.pipe.is_some() && t.is_write_blocked());
        if full {
            // The target's room lets it be read again.
            if let Some(p) = self.proxy_mut(source) {
                p.waiting = true;
            }
            return;
        }
        // Out of the proxy while the step runs; put back before its bytes
        // are moved on.
        let pipe = self.proxy_mut(source).and_then(|p| p.pipe.take());
        if let Some((r, w)) = pipe {
            let moved = self.read_step(source, ReadInto::Pipe(w.as_fd(), STEP));
            let Some(p) = self.proxy_mut(source) else {
                return;
            };
            p.pipe = Some((r, w));
            if let Some(n) = moved {
                p.bytes += n as u64;
                p.in_pipe += n;
                self.proxy_drain_pipe(to);
                // A blocked target must ask for its writable edge.
                self.check_water(to);
            }
            return;
        }
        self.read_step_buffered(source, |r, data| {
            if let Some(p) = r.proxy_mut(source) {
                p.bytes += data.len() as u64;
            }
            r.send_data_to(ConnId(to), data);
            // Descriptors passed with the bytes do not cross a proxy.
            drop(r.take_received_fds());
        });
    }

    /// Moves pipe contents into proxy target `target`. Returns whether the
    /// pipe is empty (the target's own queue may go next).
    fn proxy_drain_pipe(&mut self, target: Token) -> bool {
        let Some(&source) = self
            .ext::<Proxies>()
            .and_then(|ps| ps.by_target.get(&target))
        else {
            return true;
        };
        let Some(p) = self.proxy_mut(source) else {
            return true;
        };
        if p.in_pipe == 0 || p.pipe.is_none() {
            return true;
        }
        let (pipe, in_pipe) = (p.pipe.take(), p.in_pipe);
        let Some((r, _)) = &pipe else { return true };
        let moved = match self.conn_mut(target) {
            Some(t) if !t.socket_waits() && !t.is_closed() => {
                // The core's one write and its rule: short means full.
                let result = t.sink().write_out(Out::Pipe(r.as_fd(), in_pipe));
                t.wrote(result, in_pipe)
            }
            _ => Ok(0),
        };
        let p = self.proxy_mut(source).expect("looked up above");
        p.pipe = pipe;
        match moved {
            Ok(n) => {
                p.in_pipe -= n.min(p.in_pipe);
                p.in_pipe == 0
            }
            Err(reason) => {
                self.begin_close(target, reason);
                false
            }
        }
    }

    /// Proxy target `target` has room again: let its source be read.
    fn proxy_target_has_room(&mut self, target: Token, queued: usize) {
        let Some(ps) = self.ext_mut::<Proxies>() else {
            return;
        };
        let Some(&source) = ps.by_target.get(&target) else {
            return;
        };
        let Some(p) = ps.by_source.get_mut(&source) else {
            return;
        };
        if p.waiting && p.in_pipe == 0 && queued <= p.bufsize {
            p.waiting = false;
            self.carry(source);
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
    /// `NotConnected` if either connection is closed; `AlreadyExists` if
    /// this connection is proxied already or `to` already receives a proxy.
    pub fn proxy_incoming_to(&mut self, to: ConnId, bufsize: usize) -> io::Result<()> {
        self.reactor.proxy_incoming_to(self.id, to, bufsize)
    }

    /// Ends proxying from this connection: bytes already taken from it
    /// still reach the target, and later ones go to its `receive_data`
    /// again.
    pub fn stop_proxying(&mut self) {
        self.reactor.stop_proxying(self.id);
    }

    /// Bytes proxied from this connection so far (0 when not proxied; in
    /// `unbind`, the total of the proxy that just ended).
    pub fn proxied_bytes(&self) -> u64 {
        self.reactor.proxied_bytes(self.id)
    }
}
