//! Connections: making them (connect, attach, accept's half), their
//! state, and ending them (close, detach, unbind, reconnect).
//!
//! This file owns a connection's record in the slab (`Conn`: socket,
//! flags, outbound queue, timers) and its life from creation to `unbind`,
//! and the one write to its descriptor (`ConnSink::write_out`) with the
//! one rule for that write's outcome (`Conn::wrote`). It decides no read
//! or write itself (`conn_io.rs` does) and calls a handler only from
//! `finish_close`, when no other callback runs.

use super::*;

/// EventMachine's default `pending_connect_timeout`: a connect that has not
/// completed by then is abandoned with [`CloseReason::ConnectTimeout`].
pub(super) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

pub(super) struct Conn {
    pub(super) sock: Socket,
    /// `None` only while one of its callbacks runs.
    pub(super) handler: Option<Box<dyn Handler>>,
    pub(super) out: OutBuf,
    pub(super) phase: Phase,
    pub(super) transport: Transport,
    pub(super) flags: Flags,
    pub(super) high_water: u32,
    /// Loop time (ms, wrapping) of the last byte read or written.
    pub(super) last_activity: u32,
    /// Boxed: most connections have no timer, and this keeps the record
    /// of an idle connection at 48 bytes.
    pub(super) timer: Option<Box<ConnTimer>>,
}

impl Conn {
    /// Why a connection whose socket failed with `e` (a write on any path
    /// — stage, queue, filter, proxy — or an error event) ends: a peer
    /// that had already ended its stream closed (the error is its reset of
    /// our late bytes); otherwise the error itself.
    pub(super) fn write_failed(&self, e: io::Error) -> CloseReason {
        if self.flags.contains(Flags::EOF_READ) {
            CloseReason::PeerClosed
        } else {
            CloseReason::from_io(e)
        }
    }

    /// The one rule for what a write to the socket did, every path's: a
    /// full send buffer (`WouldBlock`, or fewer than `wanted` bytes taken)
    /// waits for the writable edge; a failure ends the connection with
    /// [`Conn::write_failed`]'s reason, for the caller to close with.
    // Always inlined: on the echo path (the stage's write) a call cost 2 %
    // more instructions per message.
    #[inline(always)]
    pub(super) fn wrote(
        &mut self,
        result: io::Result<usize>,
        wanted: usize,
    ) -> Result<usize, CloseReason> {
        match result {
            Ok(n) => {
                if n < wanted {
                    self.flags |= Flags::WRITE_BLOCKED;
                }
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.flags |= Flags::WRITE_BLOCKED;
                Ok(0)
            }
            Err(e) => Err(self.write_failed(e)),
        }
    }

    /// The connection's descriptor as a write target.
    pub(super) fn sink(&self) -> ConnSink<'_> {
        ConnSink {
            sock: &self.sock,
            transport: self.transport,
        }
    }

    /// The outbound queue and the descriptor, borrowed together: a filter
    /// takes the queue's bytes with a sink that writes to the socket.
    pub(super) fn queue_and_sink(&mut self) -> (&mut OutBuf, ConnSink<'_>) {
        let sink = ConnSink {
            sock: &self.sock,
            transport: self.transport,
        };
        (&mut self.out, sink)
    }

    /// Bytes waiting in the outbound queue (files not counted).
    pub(super) fn queued(&self) -> usize {
        self.out.len()
    }

    /// Whether nothing (no bytes, file or descriptor) waits in the
    /// outbound queue.
    pub(super) fn queued_nothing(&self) -> bool {
        self.out.is_empty()
    }

    /// Whether a file waits in the outbound queue.
    pub(super) fn queue_holds_files(&self) -> bool {
        self.out.holds_files()
    }

    /// Whether the connection is closed: its record lingers only until its
    /// `unbind` has run.
    pub(super) fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Whether the connection is closing or closed.
    pub(super) fn is_ending(&self) -> bool {
        self.phase.is_ending()
    }

    /// Whether the connect is still in progress.
    pub(super) fn is_connecting(&self) -> bool {
        self.phase.is_connecting()
    }

    /// What the descriptor is (TCP, Unix, pipe, channel).
    pub(super) fn transport(&self) -> Transport {
        self.transport
    }

    /// Whether input waits that no read has taken yet (its edge came).
    pub(super) fn input_waits(&self) -> bool {
        self.flags.contains(Flags::READ_READY)
    }

    /// Whether the socket was full at the last write (the writable edge
    /// has not come since).
    pub(super) fn is_write_blocked(&self) -> bool {
        self.flags.contains(Flags::WRITE_BLOCKED)
    }

    /// Whether a feature's hooks have the connection's I/O.
    pub(super) fn is_hooked(&self) -> bool {
        self.flags.contains(Flags::HOOKED)
    }

    /// What happens to the write side once the queue drains.
    pub(super) fn write_side(&self) -> WriteSide {
        self.flags.write_side()
    }
}

/// A connection's timer: the connect timeout while connecting, then the
/// inactivity check.
#[derive(Default)]
pub(super) struct ConnTimer {
    pub(super) key: Option<TimerKey>,
    /// Inactivity timeout in ms; 0 when none.
    pub(super) idle_ms: u32,
}

/// What one write to a connection's descriptor carries.
pub(super) enum Out<'a> {
    /// Bytes, with descriptors to pass along (Unix sockets).
    Bytes(&'a [IoSlice<'a>], &'a [std::os::fd::BorrowedFd<'a>]),
    /// `len` bytes of a file from `offset`.
    File(&'a File, u64, usize),
    /// `len` bytes waiting in a pipe (a takeover's splice on Linux: the
    /// proxy's).
    Pipe(std::os::fd::BorrowedFd<'a>, usize),
}

/// A connection's descriptor as a write target: every write to a
/// connection — the stage, the queue, a filter's records, a proxy's pipe —
/// is one [`ConnSink::write_out`], so the system call for the descriptor
/// (pipe or socket) is chosen in one place. A value of its own, not a
/// `&Conn`, so a flush can write while the connection's queue is borrowed.
pub(super) struct ConnSink<'a> {
    pub(super) sock: &'a Socket,
    pub(super) transport: Transport,
}

impl ConnSink<'_> {
    /// Writes `out` without blocking; returns the bytes taken.
    // Always inlined, the variant being known where it is called: the one
    // buffer of the stage then costs what a plain `send` call does.
    #[inline(always)]
    pub(super) fn write_out(&self, out: Out<'_>) -> io::Result<usize> {
        match out {
            // One buffer (the stage, most often): `send`, not `sendmsg`.
            Out::Bytes([buf], []) => self.write_one(buf),
            other => self.write_other(other),
        }
    }

    fn write_one(&self, buf: &[u8]) -> io::Result<usize> {
        if self.transport == Transport::Pipe {
            self.sock.write_plain(buf)
        } else {
            self.sock.write(buf)
        }
    }

    #[inline(never)]
    fn write_other(&self, out: Out<'_>) -> io::Result<usize> {
        match out {
            Out::Bytes(bufs, fds) => {
                if self.transport == Transport::Pipe {
                    self.sock.write_vectored_plain(bufs)
                } else {
                    self.sock.write_vectored_with_fds(bufs, fds)
                }
            }
            Out::File(file, offset, len) => self.send_file_range(file, offset, len),
            Out::Pipe(pipe, len) => {
                packet_sys::process::splice(pipe, std::os::fd::AsFd::as_fd(self.sock), len)
            }
        }
    }
}

impl ConnSink<'_> {
    /// `sendfile`, or where there is none one bounded read and one write:
    /// only what was written counts, the rest is read again next time.
    #[inline(never)]
    fn send_file_range(&self, file: &File, offset: u64, len: usize) -> io::Result<usize> {
        match self
            .sock
            .send_file(std::os::fd::AsFd::as_fd(file), offset, len)
        {
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0u8; len.min(64 * 1024)];
                let n = file.read_at(&mut buf, offset)?;
                self.write_out(Out::Bytes(&[IoSlice::new(&buf[..n])], &[]))
            }
            other => other,
        }
    }
}

impl crate::buffer::Sink for ConnSink<'_> {
    fn write(
        &mut self,
        bufs: &[IoSlice<'_>],
        fds: &[std::os::fd::BorrowedFd<'_>],
    ) -> io::Result<usize> {
        self.write_out(Out::Bytes(bufs, fds))
    }

    fn send_file(&mut self, file: &File, offset: u64, len: usize) -> io::Result<usize> {
        self.write_out(Out::File(file, offset, len))
    }
}

impl Conn {
    /// Takes the key of the pending timer, if any, for cancelling; frees
    /// the box once it holds nothing.
    pub(super) fn take_timer_key(&mut self) -> Option<TimerKey> {
        let t = self.timer.as_mut()?;
        let key = t.key.take();
        if t.idle_ms == 0 {
            self.timer = None;
        }
        key
    }

    pub(super) fn set_timer_key(&mut self, key: TimerKey) {
        self.timer.get_or_insert_with(Box::default).key = Some(key);
    }

    /// The inactivity timeout in ms; 0 when none.
    pub(super) fn idle_ms(&self) -> u32 {
        self.timer.as_ref().map_or(0, |t| t.idle_ms)
    }

    pub(super) fn set_idle_ms(&mut self, ms: u32) {
        match &mut self.timer {
            Some(t) => t.idle_ms = ms,
            None if ms > 0 => {
                self.timer = Some(Box::new(ConnTimer {
                    key: None,
                    idle_ms: ms,
                }))
            }
            None => {}
        }
    }

    /// Whether new output is taken: while open or draining (a graceful
    /// stop lets a connection finish what it owes), not after a local close
    /// or a half-close. After the *peer* closed its side it still is: the
    /// connection closes once it is out.
    pub(super) fn takes_output(&self) -> bool {
        let phase_takes = match self.phase {
            Phase::Open
            | Phase::Draining
            | Phase::Connecting {
                close_after_writing: false,
            } => true,
            Phase::Closing
            | Phase::Connecting {
                close_after_writing: true,
            } => self.flags.contains(Flags::EOF_READ),
            Phase::Lingering | Phase::Closed => false,
        };
        phase_takes && self.flags.write_side() == WriteSide::Open
    }

    /// Whether a write now would have to queue: the connect is in
    /// progress, the send buffer is full, or a feature's hooks have the
    /// connection (its writes go through the queue, where a filter sees
    /// them). One mask test for both flags.
    pub(super) fn write_waits(&self) -> bool {
        self.phase.is_connecting() || self.flags.intersects(Flags::WRITE_BLOCKED | Flags::HOOKED)
    }

    /// Whether the socket itself cannot take a write now: the connect is
    /// in progress or the send buffer is full.
    pub(super) fn socket_waits(&self) -> bool {
        self.phase.is_connecting() || self.flags.contains(Flags::WRITE_BLOCKED)
    }

    /// Whether the socket is to be read now.
    pub(super) fn reads(&self) -> bool {
        self.flags.contains(Flags::READ_READY)
            && !self.flags.intersects(Flags::PAUSED | Flags::EOF_READ)
            && !self.phase.is_ending()
            && !self.phase.is_connecting()
    }

    /// The queue drained: shuts the write side if `close_write` asked.
    pub(super) fn shut_write_if_asked(&mut self) {
        if self.flags.write_side() == WriteSide::ShutWhenDrained {
            // End of stream for the peer; later sends are still refused.
            let _ = self.sock.shutdown(std::net::Shutdown::Write);
            self.flags.set_write_side(WriteSide::Shut);
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
        let started = started.map_err(|e| connect_error(e, &addr));
        let transport = if matches!(addr, Addr::Inet(_)) {
            Transport::Tcp
        } else {
            Transport::Unix
        };
        let connecting = Phase::Connecting {
            close_after_writing: false,
        };
        let token = self.add_conn(sock, handler, connecting, transport)?;
        self.targets.insert(token, addr);
        self.pending.push_back((token, Pending::Init));
        if let Some(limit) = self.connect_timeout {
            let deadline = self.deadline_after(limit);
            let key = self.timers.insert(deadline, TimerTask::Conn(token));
            if let Some(c) = self.conn_mut(token) {
                c.set_timer_key(key);
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
        phase: Phase,
        transport: Transport,
    ) -> io::Result<Token> {
        let high_water = self.default_high_water.min(u32::MAX as usize) as u32;
        let always_write = transport == Transport::Tcp || phase.is_connecting();
        let flags = if always_write {
            Flags::WANT_WRITE
        } else {
            Flags::empty()
        };
        let token = self.sources.insert(Source::Conn(Conn {
            sock,
            handler: Some(handler),
            out: OutBuf::default(),
            phase,
            transport,
            flags,
            high_water,
            last_activity: self.now_ms() as u32,
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
        if transport == Transport::Channel {
            self.internal_connections += 1;
        }
        Ok(token)
    }

    /// Connection `id`, to act on from outside its own callbacks (a timer,
    /// another connection's handler, code that answers it later): the same
    /// [`Connection`] its handler gets, with every per-connection operation
    /// (`send_data`, `close_connection`, `pause`, `set_inactivity_timeout`,
    /// `send_reply`, ...).
    ///
    /// `None` when `id` names no connection of this reactor any more: its
    /// `unbind` has run (or is running). A connection that is closing but
    /// not yet unbound is still returned ([`Connection::is_closing`] says
    /// so), and what is sent to it is dropped, as from its own handler.
    ///
    /// ```
    /// use packet::{Handler, Reactor};
    /// use std::time::Duration;
    ///
    /// struct Quiet;
    /// impl Handler for Quiet {}
    ///
    /// let mut r = Reactor::new()?;
    /// let server = r.start_server("127.0.0.1:0", || Quiet)?;
    /// let addr = r.server_addr(server)?.as_inet().unwrap();
    /// let id = r.connect(addr, Quiet)?;
    /// // Say hello once connected, from a timer that only knows the id.
    /// r.add_timer(Duration::from_millis(10), move |r| {
    ///     if let Some(mut conn) = r.connection(id) {
    ///         conn.send_data(b"hello\n");
    ///         conn.close_connection_after_writing();
    ///     }
    ///     r.stop();
    /// });
    /// r.run_until_stopped()?;
    /// // Unbound once the reactor stopped: the id names nothing now.
    /// assert!(r.connection(id).is_none());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn connection(&mut self, id: ConnId) -> Option<Connection<'_>> {
        self.conn(id.0)?;
        Some(Connection::new(self, id))
    }

    /// Connects the handler of `id`, now in `unbind`, again: to `addr`
    /// (`None`: where it was connected to) after `after`.
    pub(super) fn request_reconnect(
        &mut self,
        id: ConnId,
        addr: Option<Addr>,
        after: Duration,
    ) -> io::Result<()> {
        if self.unbinding != Some(id.0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "reconnect is only possible from unbind",
            ));
        }
        let Some(addr) = addr.or_else(|| self.targets.get(&id.0).cloned()) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("connection {id} was accepted, not connected: it cannot reconnect"),
            ));
        };
        self.reconnect_to = Some(Reconnect { addr, after });
        Ok(())
    }

    /// See [`Connection::set_close_reason`].
    pub(super) fn set_close_reason(&mut self, id: ConnId, reason: CloseReason) {
        if self.conn(id.0).is_some() {
            self.close_reasons.insert(id.0, reason);
        }
    }

    /// See [`Connection::send_data`]: logs a run of sends to a closed
    /// connection once.
    pub(super) fn dropped_after_close(&mut self, id: ConnId, len: usize) {
        if self.drop_logged != Some(id.0) {
            self.drop_logged = Some(id.0);
            crate::log::log_line!("connection {id}: {len} bytes sent after it closed were dropped");
        }
    }

    pub(super) fn conn_mut(&mut self, token: Token) -> Option<&mut Conn> {
        match self.sources.get_mut(token) {
            Some(Source::Conn(c)) => Some(c),
            _ => None,
        }
    }

    pub(super) fn conn(&self, token: Token) -> Option<&Conn> {
        match self.sources.get(token) {
            Some(Source::Conn(c)) => Some(c),
            _ => None,
        }
    }

    /// Closes connection `id`, at once or after its queued output is written
    /// (see [`Connection::close_connection`]).
    pub(super) fn close_connection(&mut self, id: ConnId, after_writing: bool) {
        let token = id.0;
        let is_current = self.current == Some(token);
        let Some(c) = self.conn_mut(token) else {
            return;
        };
        if after_writing {
            c.phase = c.phase.close_after_writing();
            if !is_current {
                self.check_water(token);
            }
        } else {
            self.begin_close(token, CloseReason::Local);
        }
    }

    /// Half-closes connection `id` once its queue drains (see
    /// [`Connection::close_write`]).
    pub(super) fn close_write(&mut self, id: ConnId) {
        let is_current = self.current == Some(id.0);
        let Some(c) = self.conn_mut(id.0) else { return };
        if c.flags.write_side() == WriteSide::Open {
            c.flags.set_write_side(WriteSide::ShutWhenDrained);
        }
        if !is_current {
            self.check_water(id.0);
        }
    }

    /// The socket of connection `id`, for option calls.
    pub(super) fn conn_socket(&self, id: ConnId) -> io::Result<&Socket> {
        match self.conn(id.0) {
            Some(c) if c.phase != Phase::Closed => Ok(&c.sock),
            _ => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Stops reading from connection `id` (see [`Connection::pause`]).
    pub(super) fn pause(&mut self, id: ConnId) {
        if let Some(c) = self.conn_mut(id.0) {
            c.flags |= Flags::PAUSED;
        }
    }

    /// Resumes reading from connection `id`.
    pub(super) fn resume(&mut self, id: ConnId) {
        let Some(c) = self.conn_mut(id.0) else { return };
        if !c.flags.contains(Flags::PAUSED) {
            return;
        }
        c.flags -= Flags::PAUSED;
        // Input that arrived while paused raised no new edge: read it on the
        // next turn.
        if c.flags.contains(Flags::READ_READY) {
            self.carry(id.0);
        }
        // Before that read: a layer that stopped inside a read's batch
        // delivers the rest of it first (deferred work runs before reads).
        self.pending.push_back((id.0, Pending::Resumed));
    }

    /// Whether connection `id` is gone, closed or closing.
    pub(super) fn is_closing(&self, id: ConnId) -> bool {
        self.conn(id.0).is_none_or(|c| c.phase.is_ending())
    }

    /// Whether reading from connection `id` is paused.
    pub(super) fn is_paused(&self, id: ConnId) -> bool {
        self.conn(id.0)
            .is_some_and(|c| c.flags.contains(Flags::PAUSED))
    }

    /// Bytes queued for connection `id` and not yet taken by the kernel.
    pub(super) fn outbound_len(&self, id: ConnId) -> usize {
        let staged = if self.current == Some(id.0) {
            self.stage.len()
        } else {
            0
        };
        let Some(c) = self.conn(id.0) else { return 0 };
        let held = if c.flags.contains(Flags::HOOKED) {
            self.filter_held(id.0)
        } else {
            0
        };
        c.out.len() + staged + held
    }

    /// Sets the outbound high-water mark of connection `id`.
    pub(super) fn set_high_water_mark(&mut self, id: ConnId, bytes: usize) {
        if let Some(c) = self.conn_mut(id.0) {
            c.high_water = bytes.min(u32::MAX as usize) as u32;
        }
        self.check_water(id.0);
    }

    /// The peer address of connection `id`.
    ///
    /// # Errors
    /// `NotConnected` for a closed or still-connecting connection.
    pub(super) fn peer_addr(&self, id: ConnId) -> io::Result<Addr> {
        match self.conn(id.0) {
            Some(c) if !c.phase.is_connecting() => c.sock.peer_addr(),
            _ => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// The local address of connection `id`.
    ///
    /// # Errors
    /// `NotConnected` for a closed connection.
    pub(super) fn local_addr(&self, id: ConnId) -> io::Result<Addr> {
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
        self.adopt_boxed(fd, Box::new(handler), None)
    }

    /// [`Reactor::attach`] for a Unix-domain socket whose peer passes
    /// descriptors (`SCM_RIGHTS`, see [`Connection::send_fd`]): during
    /// `receive_data`, [`Connection::take_received_fds`] hands over those
    /// that came with the bytes being delivered, in order; those not taken
    /// are closed after the callback.
    ///
    /// # Errors
    /// `InvalidInput` if `fd` is not a Unix-domain socket; otherwise as
    /// [`Reactor::attach`].
    pub fn attach_receiving_fds<H: Handler>(
        &mut self,
        fd: OwnedFd,
        handler: H,
    ) -> io::Result<ConnId> {
        self.adopt_boxed(fd, Box::new(handler), Some(Transport::UnixWithFds))
    }

    pub(super) fn adopt_boxed(
        &mut self,
        fd: OwnedFd,
        handler: Box<dyn Handler>,
        with_fds: Option<Transport>,
    ) -> io::Result<ConnId> {
        let sock = Socket::from(fd);
        sock.set_nonblocking(true)?;
        let transport = match (sock.local_addr(), with_fds) {
            (Ok(Addr::Unix(_)), Some(fds)) => fds,
            (Ok(Addr::Unix(_)), None) => Transport::Unix,
            (_, Some(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "descriptors pass only over Unix-domain sockets",
                ))
            }
            (Ok(Addr::Inet(_)), None) => {
                let _ = sock.set_nodelay(true);
                Transport::Tcp
            }
            (Err(_), None) => {
                packet_sys::signal::ignore_default_sigpipe();
                Transport::Pipe
            }
        };
        let token = self.add_conn(sock, handler, Phase::Open, transport)?;
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
    pub(super) fn detach(&mut self, id: ConnId) -> io::Result<OwnedFd> {
        let Some(c) = self.conn(id.0) else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        if c.phase == Phase::Closed {
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
    pub(super) fn begin_close(&mut self, token: Token, reason: CloseReason) {
        let Some(c) = self.conn_mut(token) else {
            return;
        };
        if c.phase == Phase::Closed {
            return;
        }
        // A secure channel says goodbye (TLS close_notify) when the close
        // is this side's decision; after a failure there is no one to tell.
        if c.flags.contains(Flags::HOOKED) && reason.is_local_decision() {
            if let Some(filter) = self.hooks_of(token).and_then(|h| h.filter) {
                (filter.farewell)(self, token);
            }
        }
        let Some(c) = self.conn_mut(token) else {
            return;
        };
        c.phase = Phase::Closed;
        c.out.clear();
        self.pending.push_back((token, Pending::Close(reason)));
    }

    pub(super) fn finish_close(&mut self, token: Token, reason: CloseReason) {
        let Some(Source::Conn(mut c)) = self.sources.remove(token) else {
            return;
        };
        self.connections -= 1;
        if c.transport == Transport::Channel {
            self.internal_connections -= 1;
        }
        self.forget_ending(token);
        // Client connections and overridden reasons are few: no hash per
        // close when there are none.
        let target = if self.targets.is_empty() {
            None
        } else {
            self.targets.remove(&token)
        };
        let decided = if self.close_reasons.is_empty() {
            None
        } else {
            self.close_reasons.remove(&token)
        };
        // The error of a connect that failed later (refused) is the
        // socket's; name the address here.
        let reason = match (reason, target.as_ref(), decided) {
            (CloseReason::ConnectFailed(e), Some(addr), _)
                if !crate::connection::has_context(&e) =>
            {
                CloseReason::ConnectFailed(connect_error(e, addr))
            }
            (CloseReason::Local, _, Some(decided)) => decided,
            (reason, _, _) => reason,
        };
        // Most reactors have no ordered connection: no hash per close then.
        if !self.ordered.is_empty() {
            self.ordered.remove(&token);
        }
        if let Some(key) = c.take_timer_key() {
            self.timers.cancel(key);
        }
        if c.flags.contains(Flags::HOOKED) {
            if let Some(hooks) = self.take_hooks(token) {
                (hooks.closing)(self, token);
            }
        }
        let handler = c.handler.take();
        // Closing the fd removes it from the epoll set: no explicit
        // EPOLL_CTL_DEL syscall (worker processes never inherit connection
        // fds, see ARCHITECTURE.md).
        drop(c);
        let Some(mut handler) = handler else { return };
        // Back for the length of `unbind`, for its `reconnect_after`.
        if let Some(addr) = target {
            self.targets.insert(token, addr);
        }
        self.unbinding = Some(token);
        handler.unbind(&mut Connection::new(self, ConnId(token)), &reason);
        self.unbinding = None;
        if !self.targets.is_empty() {
            self.targets.remove(&token);
        }
        if let Some(Reconnect { addr, after }) = self.reconnect_to.take() {
            if after.is_zero() {
                // A failure to even make a socket leaves nothing to report to.
                let _ = self.connect_boxed(addr, handler);
            } else {
                self.add_timer(after, move |r| {
                    // A graceful stop started meanwhile: nothing new.
                    if r.is_stopping() {
                        crate::log::log_line!(
                            "reconnect to {} not made: the reactor is stopping",
                            DisplayAddr(&addr)
                        );
                    } else {
                        let _ = r.connect_boxed(addr, handler);
                    }
                });
            }
        }
    }
}

/// A reconnect asked for in `unbind`.
pub(super) struct Reconnect {
    addr: Addr,
    after: Duration,
}

/// An address as error messages give it.
pub(super) struct DisplayAddr<'a>(pub(super) &'a Addr);

impl std::fmt::Display for DisplayAddr<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Addr::Inet(a) => write!(f, "{a}"),
            Addr::Unix(Some(p)) => write!(f, "{}", p.display()),
            Addr::Unix(None) => f.write_str("an unnamed Unix socket"),
        }
    }
}

fn connect_error(e: io::Error, addr: &Addr) -> io::Error {
    crate::connection::io_context(e, format_args!("cannot connect to {}", DisplayAddr(addr)))
}
