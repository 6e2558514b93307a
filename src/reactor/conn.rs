//! Connections: making them (connect, attach, accept's half), their
//! state, and ending them (close, detach, unbind, reconnect).
//!
//! This file owns a connection's record in the slab (`Conn`: socket,
//! flags, outbound queue, timers) and its life from creation to `unbind`.
//! It never reads or writes connection bytes (`conn_io.rs` does) and calls
//! a handler only from `finish_close`, when no other callback runs.

use super::*;

/// EventMachine's default `pending_connect_timeout`: a connect that has not
/// completed by then is abandoned with [`CloseReason::ConnectTimeout`].
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Per-connection state bits.
pub(crate) mod flag {
    pub const CONNECTING: u32 = 1 << 0;
    /// The socket may have unread input (an edge was seen and not drained).
    pub const READ_READY: u32 = 1 << 1;
    /// The peer shut down its side; reads go on until they return 0.
    pub const RDHUP: u32 = 1 << 2;
    /// The kernel send buffer is full; wait for the next writable edge.
    pub const WRITE_BLOCKED: u32 = 1 << 3;
    pub const PAUSED: u32 = 1 << 4;
    /// Close once the outbound queue is empty.
    pub const CLOSING: u32 = 1 << 5;
    /// A close is queued: no more I/O or callbacks but `unbind`.
    pub const CLOSED: u32 = 1 << 6;
    /// End of stream was read.
    pub const PEER_CLOSED: u32 = 1 << 7;
    /// `outbound_full` was reported and `outbound_drained` not yet.
    pub const ABOVE_HIGH: u32 = 1 << 8;
    /// A TCP socket, as opposed to a Unix-domain one.
    pub const TCP: u32 = 1 << 9;
    /// Reads collect passed descriptors (`SCM_RIGHTS`).
    pub const PASS_FDS: u32 = 1 << 10;
    /// A pipe or other non-socket: plain `write`, no `send` flags.
    pub const NOT_SOCKET: u32 = 1 << 11;
    /// `close_write` was asked: shut the write side once the queue drains.
    pub const SHUT_WRITE: u32 = 1 << 12;
    /// ...and it is shut.
    pub const SHUT_DONE: u32 = 1 << 13;
    /// A feature's hooks take over parts of its I/O (`ext.rs`).
    pub const HOOKED: u32 = 1 << 14;
    /// `EPOLLOUT` is in the registration. Always for TCP; for Unix sockets
    /// and pipes only while connecting or while a write is blocked, because
    /// their peers raise a writable edge on every read they make, which
    /// would wake the loop once per message for nothing.
    pub const WANT_WRITE: u32 = 1 << 16;
    /// The library's own plumbing (a worker channel), not counted by
    /// `connection_count`.
    pub const INTERNAL: u32 = 1 << 17;
}

pub(crate) struct Conn {
    pub(crate) sock: Socket,
    /// `None` only while one of its callbacks runs.
    pub(super) handler: Option<Box<dyn Handler>>,
    pub(crate) out: OutBuf,
    pub(crate) flags: u32,
    pub(super) high_water: u32,
    /// Loop time (ms, wrapping) of the last byte read or written.
    pub(super) last_activity: u32,
    /// Inactivity timeout in ms; 0 when none.
    pub(super) idle_timeout: u32,
    /// The connect timeout while connecting, then the inactivity check.
    pub(super) timer: Option<TimerKey>,
}

/// A connection's descriptor as the target of an outbound queue flush.
pub(crate) struct ConnSink<'a> {
    pub(super) sock: &'a Socket,
    pub(super) not_socket: bool,
}

impl crate::buffer::Sink for ConnSink<'_> {
    fn write(
        &mut self,
        bufs: &[IoSlice<'_>],
        fds: &[std::os::fd::BorrowedFd<'_>],
    ) -> io::Result<usize> {
        if self.not_socket {
            self.sock.write_vectored_plain(bufs)
        } else {
            self.sock.write_vectored_with_fds(bufs, fds)
        }
    }

    fn send_file(&mut self, file: &File, offset: u64, len: usize) -> io::Result<usize> {
        match self
            .sock
            .send_file(std::os::fd::AsFd::as_fd(file), offset, len)
        {
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                // No sendfile here: one bounded read, one write. Only what
                // was written counts; the rest is read again next time.
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0u8; len.min(64 * 1024)];
                let n = file.read_at(&mut buf, offset)?;
                self.write(&[IoSlice::new(&buf[..n])], &[])
            }
            other => other,
        }
    }
}

impl Conn {
    pub(super) fn write(&self, buf: &[u8]) -> io::Result<usize> {
        if self.flags & flag::NOT_SOCKET != 0 {
            self.sock.write_plain(buf)
        } else {
            self.sock.write(buf)
        }
    }

    pub(super) fn write_vectored(
        &self,
        bufs: &[IoSlice<'_>],
        fds: &[std::os::fd::BorrowedFd<'_>],
    ) -> io::Result<usize> {
        if self.flags & flag::NOT_SOCKET != 0 {
            self.sock.write_vectored_plain(bufs)
        } else {
            self.sock.write_vectored_with_fds(bufs, fds)
        }
    }
}

impl Reactor {
    /// Starts a non-blocking TCP connect. `post_init` runs as soon as the
    /// current callback returns; then `connection_completed` on success or
    /// `unbind` with [`CloseReason::ConnectFailed`] on failure (for example
    /// `ECONNREFUSED`). Names are resolved with the system resolver, which
    /// blocks: pass an IP address from inside a running reactor.
    ///
    /// # Errors
    /// The address does not resolve, or no socket could be made (`EMFILE`).
    pub fn connect<H: Handler>(
        &mut self,
        addr: impl ToSocketAddrs,
        handler: H,
    ) -> io::Result<ConnId> {
        let addr = Addr::Inet(resolve(addr)?);
        self.connect_boxed(addr, Box::new(handler))
    }

    /// Connects to a Unix-domain socket, as [`Reactor::connect`].
    ///
    /// # Errors
    /// No socket could be made, or the path is too long.
    pub fn connect_unix<H: Handler>(
        &mut self,
        path: impl AsRef<Path>,
        handler: H,
    ) -> io::Result<ConnId> {
        self.connect_boxed(
            Addr::Unix(Some(path.as_ref().to_path_buf())),
            Box::new(handler),
        )
    }

    pub(super) fn connect_boxed(
        &mut self,
        addr: Addr,
        handler: Box<dyn Handler>,
    ) -> io::Result<ConnId> {
        let sock = Socket::stream(addr.domain())?;
        let started = sock.connect(&addr);
        let tcp = if matches!(addr, Addr::Inet(_)) {
            flag::TCP
        } else {
            0
        };
        let token = self.add_conn(sock, handler, flag::CONNECTING | tcp)?;
        self.pending.push_back((token, Pending::Init));
        if let Some(limit) = self.connect_timeout {
            let deadline = self.deadline_after(limit);
            let key = self.timers.insert(deadline, TimerTask::Conn(token));
            if let Some(c) = self.conn_mut(token) {
                c.timer = Some(key);
            }
        }
        if let Err(e) = started {
            // Delivered on the next turn, not now: a handler that reconnects
            // from `unbind` must not loop inside one turn.
            self.next_turn(move |r| r.begin_close(token, CloseReason::ConnectFailed(e)));
        }
        Ok(ConnId(token))
    }

    pub(super) fn add_conn(
        &mut self,
        sock: Socket,
        handler: Box<dyn Handler>,
        flags: u32,
    ) -> io::Result<Token> {
        let high_water = self.default_high_water.min(u32::MAX as usize) as u32;
        let always_write = flags & (flag::TCP | flag::CONNECTING) != 0;
        let flags = if always_write {
            flags | flag::WANT_WRITE
        } else {
            flags
        };
        let token = self.sources.insert(Source::Conn(Conn {
            sock,
            handler: Some(handler),
            out: OutBuf::default(),
            flags,
            high_water,
            last_activity: self.now_ms() as u32,
            idle_timeout: 0,
            timer: None,
        }));
        let Some(Source::Conn(c)) = self.sources.get(token) else {
            unreachable!()
        };
        let interest = if always_write {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        if let Err(e) = self
            .selector
            .register(std::os::fd::AsFd::as_fd(&c.sock), token, interest)
        {
            self.sources.remove(token);
            return Err(e);
        }
        self.connections += 1;
        if flags & flag::INTERNAL != 0 {
            self.internal_connections += 1;
        }
        Ok(token)
    }

    /// Whether `id` is the connection whose `unbind` is running.
    pub(crate) fn is_unbinding(&self, id: ConnId) -> bool {
        self.unbinding == Some(id.0)
    }

    pub(crate) fn request_reconnect(&mut self, id: ConnId, addr: Addr) -> io::Result<()> {
        if self.unbinding != Some(id.0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "reconnect is only possible from unbind",
            ));
        }
        self.reconnect_to = Some(addr);
        Ok(())
    }

    pub(crate) fn conn_mut(&mut self, token: Token) -> Option<&mut Conn> {
        match self.sources.get_mut(token) {
            Some(Source::Conn(c)) => Some(c),
            _ => None,
        }
    }

    pub(crate) fn conn(&self, token: Token) -> Option<&Conn> {
        match self.sources.get(token) {
            Some(Source::Conn(c)) => Some(c),
            _ => None,
        }
    }

    /// Closes connection `id`, at once or after its queued output is written
    /// (see [`Connection::close_connection`]).
    pub fn close_connection(&mut self, id: ConnId, after_writing: bool) {
        let token = id.0;
        let is_current = self.current == Some(token);
        let Some(c) = self.conn_mut(token) else {
            return;
        };
        if after_writing {
            c.flags |= flag::CLOSING;
            if !is_current {
                self.check_water(token);
            }
        } else {
            self.begin_close(token, CloseReason::Local);
        }
    }

    /// Half-closes connection `id` once its queue drains (see
    /// [`Connection::close_write`]).
    pub fn close_write(&mut self, id: ConnId) {
        let is_current = self.current == Some(id.0);
        let Some(c) = self.conn_mut(id.0) else { return };
        c.flags |= flag::SHUT_WRITE;
        if !is_current {
            self.check_water(id.0);
        }
    }

    /// The socket of connection `id`, for option calls.
    pub(crate) fn conn_socket(&self, id: ConnId) -> io::Result<&Socket> {
        match self.conn(id.0) {
            Some(c) if c.flags & flag::CLOSED == 0 => Ok(&c.sock),
            _ => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Stops reading from connection `id` (see [`Connection::pause`]).
    pub fn pause(&mut self, id: ConnId) {
        if let Some(c) = self.conn_mut(id.0) {
            c.flags |= flag::PAUSED;
        }
    }

    /// Resumes reading from connection `id`.
    pub fn resume(&mut self, id: ConnId) {
        let Some(c) = self.conn_mut(id.0) else { return };
        if c.flags & flag::PAUSED == 0 {
            return;
        }
        c.flags &= !flag::PAUSED;
        // Input that arrived while paused raised no new edge: read it on the
        // next turn.
        if c.flags & flag::READ_READY != 0 {
            self.ready.push(id.0);
        }
    }

    /// Whether connection `id` is gone, closed or closing.
    pub(crate) fn is_closing(&self, id: ConnId) -> bool {
        self.conn(id.0)
            .is_none_or(|c| c.flags & (flag::CLOSED | flag::CLOSING) != 0)
    }

    /// Whether reading from connection `id` is paused.
    pub fn is_paused(&self, id: ConnId) -> bool {
        self.conn(id.0).is_some_and(|c| c.flags & flag::PAUSED != 0)
    }

    /// Bytes queued for connection `id` and not yet taken by the kernel.
    pub fn outbound_len(&self, id: ConnId) -> usize {
        let staged = if self.current == Some(id.0) {
            self.stage.len()
        } else {
            0
        };
        self.conn(id.0).map_or(0, |c| c.out.len() + staged)
    }

    /// Sets the outbound high-water mark of connection `id`.
    pub fn set_high_water_mark(&mut self, id: ConnId, bytes: usize) {
        if let Some(c) = self.conn_mut(id.0) {
            c.high_water = bytes.min(u32::MAX as usize) as u32;
        }
        self.check_water(id.0);
    }

    /// The peer address of connection `id`.
    ///
    /// # Errors
    /// `NotConnected` for a closed or still-connecting connection.
    pub fn peer_addr(&self, id: ConnId) -> io::Result<Addr> {
        match self.conn(id.0) {
            Some(c) if c.flags & flag::CONNECTING == 0 => c.sock.peer_addr(),
            _ => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// The local address of connection `id`.
    ///
    /// # Errors
    /// `NotConnected` for a closed connection.
    pub fn local_addr(&self, id: ConnId) -> io::Result<Addr> {
        match self.conn(id.0) {
            Some(c) => c.sock.local_addr(),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Turns an open descriptor into a connection with `handler`
    /// (EventMachine's `attach`): a connected stream socket, for example one
    /// received from another process, or a pipe or terminal. `post_init`
    /// and `connection_completed` follow as soon as the current callback
    /// returns. The descriptor is made non-blocking. Writing to a pipe whose
    /// reader is gone would raise `SIGPIPE`, so attaching one sets `SIGPIPE`
    /// to be ignored if it still has its default (killing) action; the
    /// write then fails with `EPIPE`, reported in `unbind`.
    ///
    /// # Errors
    /// The fd could not be made non-blocking or registered (epoll refuses
    /// regular files).
    pub fn attach<H: Handler>(&mut self, fd: OwnedFd, handler: H) -> io::Result<ConnId> {
        self.adopt_boxed(fd, Box::new(handler), 0)
    }

    /// [`Reactor::attach`] for a Unix-domain socket whose peer passes
    /// descriptors (`SCM_RIGHTS`, see [`Reactor::send_fd`]): during
    /// `receive_data`, [`Connection::take_received_fds`] hands over those
    /// that came with the bytes being delivered, in order; those not taken
    /// are closed after the callback.
    ///
    /// # Errors
    /// As [`Reactor::attach`].
    pub fn attach_receiving_fds<H: Handler>(
        &mut self,
        fd: OwnedFd,
        handler: H,
    ) -> io::Result<ConnId> {
        self.adopt_boxed(fd, Box::new(handler), flag::PASS_FDS)
    }

    /// [`Reactor::attach_receiving_fds`] for the library's own channels
    /// (to worker processes), which are not counted as user connections.
    // Extension-point API: unused in a build without the features using it.
    #[allow(dead_code)]
    pub(crate) fn adopt_channel(
        &mut self,
        fd: OwnedFd,
        handler: Box<dyn Handler>,
    ) -> io::Result<ConnId> {
        self.adopt_boxed(fd, handler, flag::PASS_FDS | flag::INTERNAL)
    }

    fn adopt_boxed(
        &mut self,
        fd: OwnedFd,
        handler: Box<dyn Handler>,
        extra: u32,
    ) -> io::Result<ConnId> {
        let sock = Socket::from(fd);
        sock.set_nonblocking(true)?;
        let kind = match sock.local_addr() {
            Ok(Addr::Inet(_)) => {
                let _ = sock.set_nodelay(true);
                flag::TCP
            }
            Ok(Addr::Unix(_)) => 0,
            Err(_) => {
                packet_sys::signal::ignore_default_sigpipe();
                flag::NOT_SOCKET
            }
        };
        let token = self.add_conn(sock, handler, kind | extra)?;
        self.pending.push_back((token, Pending::Adopted));
        Ok(ConnId(token))
    }

    /// Takes connection `id`'s socket out of the reactor and hands it back,
    /// open (EventMachine's `detach`): it is removed from the selector at
    /// once, the connection ends with [`CloseReason::Detached`] after the
    /// current callback, and bytes still queued for it are dropped. Use it
    /// to pass an accepted client to a worker.
    ///
    /// # Errors
    /// `NotConnected` for a closed connection; out of descriptors.
    pub fn detach(&mut self, id: ConnId) -> io::Result<OwnedFd> {
        let Some(c) = self.conn(id.0) else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        if c.flags & flag::CLOSED != 0 {
            return Err(io::ErrorKind::NotConnected.into());
        }
        // The returned descriptor shares the open file with ours: without
        // this the selector would keep reporting its events to a dead token.
        self.selector
            .deregister(std::os::fd::AsFd::as_fd(&c.sock))?;
        let fd = std::os::fd::AsFd::as_fd(&c.sock).try_clone_to_owned()?;
        self.begin_close(id.0, CloseReason::Detached);
        Ok(fd)
    }

    /// Marks a connection closed and queues its `unbind`.
    pub(crate) fn begin_close(&mut self, token: Token, reason: CloseReason) {
        let Some(c) = self.conn_mut(token) else {
            return;
        };
        if c.flags & flag::CLOSED != 0 {
            return;
        }
        c.flags |= flag::CLOSED;
        c.out.clear();
        self.pending.push_back((token, Pending::Close(reason)));
    }

    pub(super) fn finish_close(&mut self, token: Token, reason: CloseReason) {
        let Some(Source::Conn(mut c)) = self.sources.remove(token) else {
            return;
        };
        self.connections -= 1;
        if c.flags & flag::INTERNAL != 0 {
            self.internal_connections -= 1;
        }
        // Most reactors have no ordered connection: no hash per close then.
        if !self.ordered.is_empty() {
            self.ordered.remove(&token);
        }
        if let Some(key) = c.timer.take() {
            self.timers.cancel(key);
        }
        if c.flags & flag::HOOKED != 0 {
            if let Some(hooks) = self.conn_hooks.remove(&token) {
                (hooks.closing)(self, token);
            }
        }
        let handler = c.handler.take();
        // Closing the fd removes it from the epoll set: no explicit
        // EPOLL_CTL_DEL syscall (worker processes never inherit connection
        // fds, see ARCHITECTURE.md).
        drop(c);
        let Some(mut handler) = handler else { return };
        self.unbinding = Some(token);
        handler.unbind(&mut Connection::new(self, ConnId(token)), &reason);
        self.unbinding = None;
        if let Some(addr) = self.reconnect_to.take() {
            // A failure to even make a socket leaves nothing to report to.
            let _ = self.connect_boxed(addr, handler);
        }
    }
}
