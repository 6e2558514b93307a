//! Connections whose bytes an extension moves itself: the public form of
//! the core's connection hooks for what is not a filter (a proxy, which
//! splices one connection's input into another without reading it).
//!
//! This file owns the [`Takeover`] trait, its adapter onto the hooks (one
//! static table per takeover type, as filters have), and [`ConnIo`], the
//! connection as a takeover sees it: the core's one read step, its one
//! write with its failure rule, and the carry-over list. It never keeps
//! state of its own: a takeover's state is an [`Extension`]'s.

use std::any::TypeId;
use std::marker::PhantomData;
use std::os::fd::BorrowedFd;

use super::*;

/// What an extension does in place of parts of a connection's I/O, once
/// [`ConnIo::take_over`] gave it the connection: reads it itself, writes
/// bytes of its own ahead of the outbound queue, watches the queue, and
/// hears of the close. The methods take no `self`: a takeover's state is
/// per reactor, an [`Extension`], keyed by [`ConnId`]. A connection has
/// one takeover or one filter at a time.
///
/// The core keeps its rules for a connection taken over: the read goes
/// through its one read step ([`ConnIo::read`], [`ConnIo::read_into_pipe`]:
/// at most one per connection per turn, end of stream to the handler's
/// `receive_eof`, activity for the inactivity timeout), and a write through
/// its one write rule ([`ConnIo::write_from_pipe`]: the same failure ends
/// with the same [`CloseReason`] as on every other path).
///
/// A takeover that answers a connection's bytes in capitals below its
/// handler, which never sees them:
///
/// ```
/// use packet::extend::{ConnIo, ReadBy, Takeover};
/// use packet::{Connection, Handler, Reactor};
///
/// struct Shout;
/// impl Takeover for Shout {
///     fn readable(conn: &mut ConnIo<'_>) -> ReadBy {
///         let id = conn.id();
///         conn.read(|r, data| {
///             if let Some(mut c) = r.connection(id) {
///                 c.send_data(&data.to_ascii_uppercase());
///             }
///         });
///         ReadBy::Takeover
///     }
/// }
///
/// struct Server;
/// impl Handler for Server {
///     fn post_init(&mut self, conn: &mut Connection<'_>) {
///         let id = conn.id();
///         let mut io = conn.reactor().extensions().conn_io(id).unwrap();
///         io.take_over::<Shout>().unwrap();
///     }
///     fn receive_data(&mut self, _conn: &mut Connection<'_>, _data: &[u8]) {
///         unreachable!("the takeover reads this connection");
///     }
/// }
///
/// struct Client;
/// impl Handler for Client {
///     fn connection_completed(&mut self, conn: &mut Connection<'_>) {
///         conn.send_data(b"hello");
///     }
///     fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
///         assert_eq!(data, b"HELLO");
///         conn.reactor().stop();
///     }
/// }
///
/// Reactor::run(|r| {
///     let server = r.start_server("127.0.0.1:0", || Server)?;
///     r.connect(r.server_addr(server)?.as_inet().unwrap(), Client)?;
///     Ok(())
/// })?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub trait Takeover: 'static {
    /// The connection is readable: read it now ([`ReadBy::Takeover`], with
    /// one read step or none: input left waiting is read when
    /// [`ConnIo::read_again`] asks), or leave it to the core
    /// ([`ReadBy::Core`]: `receive_data`, as for any connection).
    fn readable(conn: &mut ConnIo<'_>) -> ReadBy;

    /// The connection got a writable edge: write what the takeover holds
    /// for it first, then let the core flush the outbound queue
    /// ([`QueueFlush::Now`]), or not yet ([`QueueFlush::Later`]: the
    /// takeover's own bytes filled the socket).
    fn writable(conn: &mut ConnIo<'_>) -> QueueFlush {
        let _ = conn;
        QueueFlush::Now
    }

    /// The outbound queue was just measured: `queued` bytes (a takeover
    /// waiting for room reads its source again here).
    fn queue_checked(conn: &mut ConnIo<'_>, queued: usize) {
        let _ = (conn, queued);
    }

    /// The connection is being removed, before its `unbind`; the
    /// takeover's hold on it ends here.
    fn closing(conn: &mut ConnIo<'_>) {
        let _ = conn;
    }
}

/// Who reads a connection a takeover has, when it is readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadBy {
    /// The takeover read it, or leaves its input waiting.
    Takeover,
    /// The core reads it, as for any connection.
    Core,
}

/// Whether the core flushes the outbound queue of a connection a takeover
/// has, at its writable edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueFlush {
    /// Now: the takeover has nothing ahead of the queue.
    Now,
    /// Later: the takeover's own bytes went first and filled the socket.
    Later,
}

/// A connection's I/O, as an extension that moves its bytes itself sees
/// it: what [`Takeover`]'s methods get, and what
/// [`Extensions::conn_io`] gives for any open connection.
pub struct ConnIo<'r> {
    reactor: &'r mut Reactor,
    token: Token,
}

/// Which takeover type has a connection: the hook state of a connection
/// taken over (a filter's is its own). A type, not the hooks' address,
/// which a generic constant does not make unique.
struct TakenBy(TypeId);

/// The core's hooks for takeover type `T`: one static per type.
struct TakeoverHooks<T>(PhantomData<T>);

impl<T: Takeover> TakeoverHooks<T> {
    const CONN: ConnHooks = ConnHooks {
        readable: |reactor, token| T::readable(&mut ConnIo { reactor, token }),
        writable: |reactor, token| T::writable(&mut ConnIo { reactor, token }),
        queue_checked: |reactor, token, queued| {
            T::queue_checked(&mut ConnIo { reactor, token }, queued)
        },
        closing: |reactor, token| T::closing(&mut ConnIo { reactor, token }),
        filter: None,
    };
}

impl<'r> Extensions<'r> {
    /// The I/O of connection `id` (`None` once it has closed), for a
    /// [`Takeover`].
    pub fn conn_io(self, id: ConnId) -> Option<ConnIo<'r>> {
        let reactor = self.reactor;
        reactor.conn(id.0)?;
        Some(ConnIo {
            reactor,
            token: id.0,
        })
    }
}

impl ConnIo<'_> {
    /// The connection's id.
    pub fn id(&self) -> ConnId {
        ConnId(self.token)
    }

    /// The reactor (to reach the takeover's [`Extension`] and other
    /// connections).
    pub fn reactor(&mut self) -> &mut Reactor {
        self.reactor
    }

    /// The connection, as its handler sees it (its queue, its close).
    pub fn connection(&mut self) -> Connection<'_> {
        Connection::new(self.reactor, ConnId(self.token))
    }

    /// Gives the connection's I/O to takeover `T` until
    /// [`ConnIo::give_back`] or the close. Taking it again for the same
    /// `T` does nothing (a connection both sends to and receives from a
    /// proxy).
    ///
    /// # Errors
    /// `NotConnected` once the connection is closing; `AlreadyExists` if
    /// a filter or another takeover has it.
    pub fn take_over<T: Takeover>(&mut self) -> io::Result<()> {
        if self.reactor.conn(self.token).is_none_or(|c| c.is_ending()) {
            return Err(io::ErrorKind::NotConnected.into());
        }
        if self.taken_by::<T>() {
            return Ok(());
        }
        let mark = TakenBy(TypeId::of::<T>());
        self.reactor
            .hook_conn_with(self.token, &TakeoverHooks::<T>::CONN, mark)
    }

    /// Gives the connection's I/O back to the core, if takeover `T` has
    /// it: `receive_data` gets what is read from now on.
    pub fn give_back<T: Takeover>(&mut self) {
        if self.taken_by::<T>() {
            self.reactor.unhook_conn(self.token);
        }
    }

    fn taken_by<T: Takeover>(&self) -> bool {
        self.reactor
            .hook_state::<TakenBy>(self.token)
            .is_some_and(|m| m.0 == TypeId::of::<T>())
    }

    /// Whether input is waiting that the core has not read: the takeover
    /// left it (no room for it yet), or it came before the takeover.
    pub fn input_waits(&self) -> bool {
        self.reactor
            .conn(self.token)
            .is_some_and(|c| c.input_waits())
    }

    /// Reads the connection in the next turn (its next read step), once
    /// however often asked: what a takeover that left input waiting calls
    /// when there is room for it.
    pub fn read_again(&mut self) {
        self.reactor.carry(self.token);
    }

    /// Whether the connect is still in progress (nothing can be written).
    pub fn is_connecting(&self) -> bool {
        self.reactor
            .conn(self.token)
            .is_some_and(|c| c.is_connecting())
    }

    /// Whether the socket was full at the last write (its writable edge
    /// has not come since).
    pub fn is_write_blocked(&self) -> bool {
        self.reactor
            .conn(self.token)
            .is_some_and(|c| c.is_write_blocked())
    }

    /// Whether the connection is a TCP or Unix-domain socket that passes
    /// no descriptors: what [`ConnIo::read_into_pipe`] and
    /// [`ConnIo::write_from_pipe`] take (a pipe's bytes carry no
    /// descriptors).
    pub fn is_plain_socket(&self) -> bool {
        self.reactor
            .conn(self.token)
            .is_some_and(|c| matches!(c.transport(), Transport::Tcp | Transport::Unix))
    }

    /// One read step into the reactor's read buffer, whose bytes go to
    /// `f`; the bytes read (`None`: nothing, the input is drained, ended
    /// or failed, which the core has acted on). Descriptors that came with
    /// the bytes are closed after `f`.
    pub fn read(&mut self, f: impl FnOnce(&mut Reactor, &[u8])) -> Option<usize> {
        let n = self.reactor.read_step_buffered(self.token, f);
        self.reactor.fd_inbox.clear();
        n
    }

    /// One read step moved with `splice(2)` into `pipe` (its write end), at
    /// most `max` bytes, without entering user space (Linux); the bytes
    /// moved, as [`ConnIo::read`].
    ///
    /// # Errors
    /// `Unsupported` where `splice` is not (not Linux), or on a connection
    /// that is not a plain socket ([`ConnIo::is_plain_socket`]).
    pub fn read_into_pipe(
        &mut self,
        pipe: BorrowedFd<'_>,
        max: usize,
    ) -> io::Result<Option<usize>> {
        if !cfg!(any(target_os = "linux", target_os = "android")) || !self.is_plain_socket() {
            return Err(io::ErrorKind::Unsupported.into());
        }
        Ok(self
            .reactor
            .read_step(self.token, ReadInto::Pipe(pipe, max)))
    }

    /// Writes up to `len` bytes from `pipe` (its read end) to the socket
    /// with `splice(2)`, through the core's one write and its rule: the
    /// bytes written; a short write marks the socket full and asks for its
    /// writable edge ([`Takeover::writable`]); a failure closes the
    /// connection with the reason any other write would give, and returns 0.
    /// Nothing is written while the connect is in progress, the socket is
    /// full or the connection has closed.
    ///
    /// # Errors
    /// As [`ConnIo::read_into_pipe`].
    pub fn write_from_pipe(&mut self, pipe: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
        if !cfg!(any(target_os = "linux", target_os = "android")) || !self.is_plain_socket() {
            return Err(io::ErrorKind::Unsupported.into());
        }
        let token = self.token;
        let moved = match self.reactor.conn_mut(token) {
            Some(c) if !c.socket_waits() && !c.is_closed() => {
                let result = c.sink().write_out(Out::Pipe(pipe, len));
                c.wrote(result, len)
            }
            _ => Ok(0),
        };
        match moved {
            Ok(n) => {
                self.reactor.arm_write_if_blocked(token);
                Ok(n)
            }
            Err(reason) => {
                self.reactor.begin_close(token, reason);
                Ok(0)
            }
        }
    }
}
