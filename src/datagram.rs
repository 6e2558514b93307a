//! UDP: EventMachine's `open_datagram_socket`, `send_datagram` and
//! per-datagram `receive_data` with the sender's address.
//!
//! This module owns datagram sockets: it reads every queued datagram into a
//! buffer of the socket's own (a datagram must be read whole, so the
//! reactor's stream buffer does not fit), tells the handler when a datagram
//! was larger than that buffer instead of handing it a silently cut one,
//! and sends datagrams at once. It is built on [`crate::watch`]; it never
//! queues outbound datagrams (UDP may drop them anyway: a full socket buffer
//! is reported as `WouldBlock`).
//!
//! ```
//! use std::net::SocketAddr;
//! use packet::datagram::{Datagram, DatagramHandler};
//! use packet::Reactor;
//!
//! struct Echo;
//! impl DatagramHandler for Echo {
//!     fn receive_datagram(&mut self, sock: &mut Datagram<'_>, data: &[u8], from: SocketAddr) {
//!         let _ = sock.send_datagram(data, from);
//!     }
//! }
//!
//! struct Ask;
//! impl DatagramHandler for Ask {
//!     fn receive_datagram(&mut self, sock: &mut Datagram<'_>, data: &[u8], _from: SocketAddr) {
//!         assert_eq!(data, b"ping");
//!         sock.reactor().stop();
//!     }
//! }
//!
//! Reactor::run(|r| {
//!     let server = r.datagrams().open_datagram_socket("127.0.0.1:0", Echo)?;
//!     let to = r.datagrams().local_addr(server)?;
//!     let client = r.datagrams().open_datagram_socket("127.0.0.1:0", Ask)?;
//!     r.datagrams().send_datagram(client, b"ping", to)?;
//!     Ok(())
//! })?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

use packet_sys::{Addr, Socket};

use crate::reactor::{resolve, Reactor};
use crate::watch::{Watch, WatchId, Watcher};

/// Datagrams taken from one socket per turn before other sources run
/// (level-triggered: the rest are read next turn).
const DATAGRAMS_PER_TURN: usize = 64;

/// The largest UDP payload over IPv4 (65,535 minus the IP and UDP headers):
/// the default receive buffer, so that no ordinary datagram is cut.
pub const MAX_UDP_PAYLOAD: usize = 65_507;

/// Identifies a datagram socket within its reactor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DatagramId(WatchId);

/// Callbacks of a datagram socket.
pub trait DatagramHandler: 'static {
    /// The socket is open and bound.
    fn post_init(&mut self, sock: &mut Datagram<'_>) {
        let _ = sock;
    }

    /// One datagram arrived from `from`.
    fn receive_datagram(&mut self, sock: &mut Datagram<'_>, data: &[u8], from: SocketAddr);

    /// A datagram of `len` bytes from `from` was larger than the receive
    /// buffer and was dropped; nothing of it is delivered.
    fn datagram_too_large(&mut self, sock: &mut Datagram<'_>, from: SocketAddr, len: usize) {
        let _ = (sock, from, len);
    }

    /// Receiving failed (for example `ECONNREFUSED` from an ICMP error after
    /// an earlier send). The socket stays open.
    fn receive_error(&mut self, sock: &mut Datagram<'_>, error: io::Error) {
        let _ = (sock, error);
    }

    /// The socket was closed, or the reactor stopped.
    fn unbind(&mut self, sock: &mut Datagram<'_>) {
        let _ = sock;
    }
}

/// The datagram socket whose callback is running, with the reactor.
pub struct Datagram<'a> {
    w: &'a mut Watch<'a>,
}

impl Datagram<'_> {
    /// This socket's id.
    pub fn id(&self) -> DatagramId {
        DatagramId(self.w.id())
    }

    /// The reactor.
    pub fn reactor(&mut self) -> &mut Reactor {
        self.w.reactor()
    }

    /// Sends `data` to `to` at once.
    ///
    /// # Errors
    /// As [`Datagrams::send_datagram`].
    pub fn send_datagram(&mut self, data: &[u8], to: SocketAddr) -> io::Result<()> {
        let id = self.id();
        self.w.reactor().datagrams().send_datagram(id, data, to)
    }

    /// Closes the socket after this callback; `unbind` follows.
    pub fn close(&mut self) {
        let id = self.id();
        self.w.reactor().datagrams().close(id);
    }
}

struct DatagramWatcher {
    handler: Box<dyn DatagramHandler>,
    buf: Vec<u8>,
    started: bool,
}

impl DatagramWatcher {
    fn with<R>(
        &mut self,
        w: &mut Watch<'_>,
        f: impl FnOnce(&mut dyn DatagramHandler, &mut Datagram<'_>) -> R,
    ) -> R {
        // Datagram<'a> wants one lifetime for the Watch and its borrow; a
        // reborrow through a short-lived Watch gives it that.
        let mut inner = w.reborrow();
        f(self.handler.as_mut(), &mut Datagram { w: &mut inner })
    }
}

impl Watcher for DatagramWatcher {
    fn notify_readable(&mut self, w: &mut Watch<'_>) {
        for _ in 0..DATAGRAMS_PER_TURN {
            let received = match w.fd() {
                Some(fd) => Socket::view(fd).recv_from(&mut self.buf),
                None => return,
            };
            match received {
                Ok((n, Addr::Inet(from), full)) if full <= n => {
                    let (handler, buf) = (&mut self.handler, &self.buf);
                    let mut inner = w.reborrow();
                    handler.receive_datagram(&mut Datagram { w: &mut inner }, &buf[..n], from);
                }
                Ok((_, Addr::Inet(from), full)) => {
                    self.with(w, |h, d| h.datagram_too_large(d, from, full))
                }
                Ok((_, Addr::Unix(_), _)) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    self.with(w, |h, d| h.receive_error(d, e));
                    return;
                }
            }
            if w.fd().is_none() {
                return;
            }
        }
    }

    fn notify_writable(&mut self, w: &mut Watch<'_>) {
        // Registered writable only to deliver post_init on the first turn.
        if !self.started {
            self.started = true;
            let _ = w.set_notify_writable(false);
            self.with(w, |h, d| h.post_init(d));
        }
    }

    fn unbind(&mut self, w: &mut Watch<'_>) {
        self.with(w, |h, d| h.unbind(d));
    }
}

/// A reactor's UDP sockets, borrowed for one call:
/// `reactor.datagrams()`. Inside a [`DatagramHandler`] callback the
/// socket's own [`Datagram`] sends and closes too.
///
/// ```no_run
/// # use std::net::SocketAddr;
/// # use packet::datagram::{Datagram, DatagramHandler};
/// # use packet::Reactor;
/// # struct Log;
/// # impl DatagramHandler for Log {
/// #     fn receive_datagram(&mut self, _: &mut Datagram<'_>, _: &[u8], _: SocketAddr) {}
/// # }
/// # fn f(r: &mut Reactor) -> std::io::Result<()> {
/// let id = r.datagrams().open_datagram_socket("127.0.0.1:0", Log)?;
/// let to = r.datagrams().local_addr(id)?;
/// r.datagrams().send_datagram(id, b"to myself", to)?;
/// # Ok(()) }
/// ```
pub struct Datagrams<'r> {
    reactor: &'r mut Reactor,
}

impl Reactor {
    /// This reactor's UDP sockets: [`Datagrams`].
    pub fn datagrams(&mut self) -> Datagrams<'_> {
        Datagrams { reactor: self }
    }
}

impl Datagrams<'_> {
    /// Opens a UDP socket bound to `addr` (IPv4 or IPv6; port 0 picks one)
    /// whose datagrams go to `handler` (EventMachine's
    /// `open_datagram_socket`). Datagrams up to [`MAX_UDP_PAYLOAD`] bytes
    /// are received whole.
    ///
    /// # Errors
    /// The address does not resolve or cannot be bound.
    pub fn open_datagram_socket(
        &mut self,
        addr: impl ToSocketAddrs,
        handler: impl DatagramHandler,
    ) -> io::Result<DatagramId> {
        self.open_datagram_socket_with(addr, MAX_UDP_PAYLOAD, handler)
    }

    /// [`Datagrams::open_datagram_socket`] with a receive buffer of
    /// `max_datagram` bytes: larger datagrams are reported to
    /// [`DatagramHandler::datagram_too_large`] and dropped.
    ///
    /// # Errors
    /// As [`Datagrams::open_datagram_socket`].
    pub fn open_datagram_socket_with(
        &mut self,
        addr: impl ToSocketAddrs,
        max_datagram: usize,
        handler: impl DatagramHandler,
    ) -> io::Result<DatagramId> {
        let r = &mut *self.reactor;
        let addr = Addr::Inet(resolve(addr)?);
        let sock = Socket::datagram(addr.domain())?;
        sock.bind(&addr)?;
        let watcher = DatagramWatcher {
            handler: Box::new(handler),
            buf: vec![0; max_datagram.max(1)],
            started: false,
        };
        // Writable once, at once: the first notification runs post_init
        // outside whatever callback opened the socket.
        let id = r.watches().watch(sock.into(), watcher, true, true)?;
        Ok(DatagramId(id))
    }

    /// Sends `data` as one datagram from socket `id` to `to`, at once.
    ///
    /// # Errors
    /// `NotFound` for a closed socket; `WouldBlock` when the socket buffer
    /// is full (the datagram is dropped, as UDP may); `EMSGSIZE`.
    pub fn send_datagram(&mut self, id: DatagramId, data: &[u8], to: SocketAddr) -> io::Result<()> {
        let watches = self.reactor.watches();
        let fd = watches
            .fd(id.0)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such socket"))?;
        let n = Socket::view(fd).send_to(data, &Addr::Inet(to))?;
        if n != data.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "datagram sent in part",
            ));
        }
        Ok(())
    }

    /// The address datagram socket `id` is bound to.
    ///
    /// # Errors
    /// `NotFound` for a closed socket.
    pub fn local_addr(&mut self, id: DatagramId) -> io::Result<SocketAddr> {
        let watches = self.reactor.watches();
        let fd = watches
            .fd(id.0)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such socket"))?;
        Socket::view(fd)
            .local_addr()?
            .as_inet()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an IP socket"))
    }

    /// Closes datagram socket `id`; its handler's `unbind` follows.
    pub fn close(&mut self, id: DatagramId) {
        if let Ok(fd) = self.reactor.watches().detach(id.0) {
            drop(fd);
        }
    }
}
