//! Connection I/O: bytes from sockets to `receive_data` and from
//! `send_data` to sockets, the per-callback stage, outbound queues and
//! their water marks.
//!
//! This file owns the hot path. Every reader of a connection goes through
//! one read step (`read_step`), which reads at most one buffer (or one
//! splice) per connection per turn and carries a connection with more
//! input to the next turn (`ready`, listed once), writes a callback's output to its
//! own connection with one syscall when the callback returns, and defers
//! every handler call it causes (water marks, closes) to the pending
//! queue.

use super::*;

/// Where one read step ([`Reactor::read_step`]) puts the bytes.
pub(super) enum ReadInto<'a> {
    /// This buffer (the reactor's, lent out), its capacity being the most
    /// read; descriptors passed with the bytes go to the reactor's inbox.
    Buffer(&'a mut Vec<u8>),
    /// This pipe, with `splice`, at most this many bytes (a takeover on
    /// Linux, as the proxy: the bytes never enter user space).
    Pipe(std::os::fd::BorrowedFd<'a>, usize),
}

/// Writes at least this large go to the socket at once instead of being
/// staged, so big payloads are not copied just to be coalesced.
const DIRECT_WRITE_MIN: usize = 16 * 1024;

impl Reactor {
    /// Sends `data` to connection `id` (see [`Connection::send_data`]).
    /// Returns `false` if the connection is closed or closing, in which case
    /// the data is dropped.
    pub(super) fn send_data_to(&mut self, id: ConnId, data: &[u8]) -> bool {
        let token = id.0;
        let is_current = self.current == Some(token);
        let Some(c) = self.conn_mut(token) else {
            return false;
        };
        if !c.takes_output() {
            return false;
        }
        if data.is_empty() {
            return true;
        }
        if !c.out.is_empty() || c.write_waits() {
            c.out.push(data);
            // Queued behind passed descriptors on a writable socket: nothing
            // else will flush it (the running callback's connection is
            // flushed when the callback returns).
            if !is_current {
                self.flush_queue(token);
            }
            self.check_water(token);
            return true;
        }
        if is_current && data.len() < DIRECT_WRITE_MIN {
            let high = c.high_water as usize;
            self.stage.extend_from_slice(data);
            // The handler sees staged bytes in outbound_len: the mark must
            // see them too, or a handler pausing on its own reading of the
            // length would wait for an outbound_drained that never comes.
            if self.stage.len() > high {
                self.check_water(token);
            }
            return true;
        }
        // Large, or not the running connection: write now, staged bytes
        // first, and queue whatever the kernel does not take.
        let staged = if is_current { self.stage.len() } else { 0 };
        let now = self.now_ms() as u32;
        let Some(Source::Conn(c)) = self.sources.get_mut(token) else {
            return false;
        };
        c.last_activity = now;
        let bufs = [IoSlice::new(&self.stage[..staged]), IoSlice::new(data)];
        let bufs = if staged > 0 { &bufs[..] } else { &bufs[1..] };
        let result = c.sink().write_out(Out::Bytes(bufs, &[]));
        let written = match c.wrote(result, staged + data.len()) {
            Ok(n) => n,
            Err(reason) => {
                // The stage holds the running connection's bytes: only
                // that connection's failure drops them.
                if is_current {
                    self.stage.clear();
                }
                self.begin_close(token, reason);
                return true;
            }
        };
        if written < staged {
            c.out.push(&self.stage[written..]);
            c.out.push(data);
        } else if written < staged + data.len() {
            c.out.push(&data[written - staged..]);
        }
        if is_current {
            self.stage.clear();
        }
        self.check_water(token);
        true
    }

    /// Sends `len` bytes of `file` from `offset` to connection `id`, after
    /// what was sent before and before what is sent after, without reading
    /// the file into memory (`sendfile` where the OS has it; bounded reads
    /// elsewhere). Unlike EventMachine's `send_file_data` the size is not
    /// limited, and nothing busy-polls: the file goes out as the socket
    /// takes it.
    ///
    /// # Errors
    /// `NotConnected` for a closed or closing connection.
    pub(super) fn send_file_range(
        &mut self,
        id: ConnId,
        file: File,
        offset: u64,
        len: u64,
    ) -> io::Result<()> {
        let token = id.0;
        let is_current = self.current == Some(token);
        if is_current {
            self.flush_stage(token);
        }
        let Some(c) = self.conn_mut(token) else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        if !c.takes_output() {
            return Err(io::ErrorKind::NotConnected.into());
        }
        c.out.push_file(file, offset, len);
        if !is_current {
            self.flush_queue(token);
        }
        Ok(())
    }

    /// Sends the whole file at `path` to connection `id` (EventMachine's
    /// `send_file_data`, of any size); returns its length.
    ///
    /// # Errors
    /// The file cannot be opened, or as [`Connection::send_file_range`].
    pub(super) fn send_file(&mut self, id: ConnId, path: impl AsRef<Path>) -> io::Result<u64> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| {
            crate::connection::io_context(e, format_args!("cannot open {}", path.display()))
        })?;
        let len = file.metadata()?.len();
        self.send_file_range(id, file, 0, len)?;
        Ok(len)
    }

    /// Passes `fd` to the peer of connection `id` (a Unix socket) with the
    /// next bytes sent on it — send them right after, for example a message
    /// saying what the descriptor is. The descriptor is closed here once
    /// sent. Returns `false` (closing `fd`) if the connection is closed.
    pub(super) fn send_fd(&mut self, id: ConnId, fd: OwnedFd) -> bool {
        let token = id.0;
        // Staged bytes were sent before this call: they go ahead of it.
        if self.current == Some(token) {
            self.flush_stage(token);
        }
        let Some(c) = self.conn_mut(token) else {
            return false;
        };
        if !c.takes_output() {
            return false;
        }
        c.out.push_fd(fd);
        true
    }

    /// See [`Connection::take_received_fds`].
    pub(super) fn take_received_fds(&mut self) -> Vec<OwnedFd> {
        std::mem::take(&mut self.fd_inbox)
    }

    pub(super) fn flush_stage(&mut self, token: Token) {
        if self.stage.is_empty() {
            return;
        }
        let now = self.now_ms() as u32;
        let Some(Source::Conn(c)) = self.sources.get_mut(token) else {
            self.stage.clear();
            return;
        };
        if c.is_closed() {
            self.stage.clear();
            return;
        }
        if c.out.is_empty() && !c.write_waits() {
            c.last_activity = now;
            let result = c
                .sink()
                .write_out(Out::Bytes(&[IoSlice::new(&self.stage)], &[]));
            match c.wrote(result, self.stage.len()) {
                Ok(n) if n == self.stage.len() => {}
                // What the kernel did not take waits for the writable edge.
                Ok(n) => c.out.push(&self.stage[n..]),
                Err(reason) => {
                    self.stage.clear();
                    self.begin_close(token, reason);
                    return;
                }
            }
        } else {
            c.out.push(&self.stage);
        }
        self.stage.clear();
    }

    /// Applies the consequences of the outbound queue's size, in order: a
    /// feature watching the queue, the writable edge a blocked write needs,
    /// a half-close waiting for the queue to drain, the water-mark
    /// callbacks, and a close waiting for the queue to drain.
    pub(super) fn check_water(&mut self, token: Token) {
        let is_current = self.current == Some(token);
        let staged = if is_current { self.stage.len() } else { 0 };
        if crate::buffer::queued_total() > self.outbound_budget() {
            self.shed_outbound();
        }
        let Some(c) = self.conn(token) else {
            return;
        };
        if c.is_closed() {
            return;
        }
        let mut len = c.queued() + staged;
        let mut drained = staged == 0 && c.out.is_empty();
        if c.is_hooked() {
            if let Some(hooks) = self.hooks_of(token) {
                (hooks.queue_checked)(self, token, len);
            }
            // A filter's bytes on their way to the socket are still queued.
            let held = self.filter_held(token);
            len += held;
            drained &= held == 0;
        }
        self.arm_write_if_blocked(token);
        let Some(c) = self.conn_mut(token) else {
            return;
        };
        // The common case, nothing queued and no mark or close pending:
        // nothing to do.
        if drained
            && !c.flags.contains(Flags::ABOVE_HIGH)
            && !c.phase.closes_when_drained()
            && c.flags.write_side() != WriteSide::ShutWhenDrained
        {
            return;
        }
        // The running callback may still send: its connection's close and
        // half-close wait for the check after it returns.
        let drained = drained && !is_current;
        if drained {
            c.shut_write_if_asked();
        }
        if self.cross_water_marks(token, len) {
            // outbound_drained may produce more (a stream after the peer's
            // half-close): the close waits for the check that follows it.
            return;
        }
        if drained {
            self.close_when_written(token);
        }
    }

    /// A blocked write on a socket registered without `EPOLLOUT`: asks for
    /// the writable edge now (re-registering also reports it at once if
    /// there is room already, so no wake-up is lost).
    pub(super) fn arm_write_if_blocked(&mut self, token: Token) {
        let Some(Source::Conn(c)) = self.sources.get_mut(token) else {
            return;
        };
        if !c.flags.contains(Flags::WRITE_BLOCKED) || c.flags.contains(Flags::WANT_WRITE) {
            return;
        }
        let both = Interest::READABLE | Interest::WRITABLE;
        if self
            .selector
            .reregister(std::os::fd::AsFd::as_fd(&c.sock), token, both)
            .is_ok()
        {
            c.flags |= Flags::WANT_WRITE;
        }
    }

    /// Queues `outbound_full` when `len` passes the high-water mark, and
    /// `outbound_drained` when it falls to half of it. Returns whether
    /// `outbound_drained` was queued.
    fn cross_water_marks(&mut self, token: Token, len: usize) -> bool {
        let Some(c) = self.conn_mut(token) else {
            return false;
        };
        let high = c.high_water as usize;
        if len > high && !c.flags.contains(Flags::ABOVE_HIGH) {
            c.flags |= Flags::ABOVE_HIGH;
            self.pending.push_back((token, Pending::Full));
        } else if len <= high / 2 && c.flags.contains(Flags::ABOVE_HIGH) {
            c.flags -= Flags::ABOVE_HIGH;
            self.pending.push_back((token, Pending::Drained));
            return true;
        }
        false
    }

    pub(super) fn on_writable(&mut self, token: Token, error: bool) {
        let Some(c) = self.conn_mut(token) else {
            return;
        };
        if c.is_closed() {
            return;
        }
        if c.is_connecting() {
            let failure = match c.sock.take_error() {
                Ok(None) => None,
                Ok(Some(e)) | Err(e) => Some(e),
            };
            if let Some(e) = failure {
                self.begin_close(token, CloseReason::ConnectFailed(e));
                return;
            }
            c.phase = c.phase.connected();
            let connect_timer = c.take_timer_key();
            let idle = c.idle_ms();
            if let Some(key) = connect_timer {
                self.timers.cancel(key);
            }
            if idle > 0 {
                let at = (self.now_ms() as u32).wrapping_add(idle);
                self.arm_idle_timer(token, at);
            }
            let Some(c) = self.conn_mut(token) else {
                return;
            };
            if c.transport == Transport::Tcp {
                // Request/response traffic wants small writes sent at once.
                let _ = c.sock.set_nodelay(true);
            }
            self.call(token, |h, conn| h.connection_completed(conn));
        } else if error {
            let Some(c) = self.conn_mut(token) else {
                return;
            };
            // A pipe reports its reader's departure as an error; it has no
            // SO_ERROR to ask.
            if c.transport == Transport::Pipe {
                self.begin_close(token, CloseReason::PeerClosed);
                return;
            }
            if let Ok(Some(e)) | Err(e) = c.sock.take_error() {
                // The same reset ends the same way whether a write or this
                // event saw it first.
                let reason = c.write_failed(e);
                self.begin_close(token, reason);
                return;
            }
        }
        let Some(c) = self.conn_mut(token) else {
            return;
        };
        c.flags -= Flags::WRITE_BLOCKED;
        // A feature's bytes may have to go first (a proxy's pipe).
        if c.is_hooked() {
            if let Some(hooks) = self.hooks_of(token) {
                if (hooks.writable)(self, token) == QueueFlush::Later {
                    return;
                }
            }
        }
        self.flush_queue(token);
        self.disarm_write(token);
    }

    /// Takes EPOLLOUT out of a non-TCP connection's registration once it
    /// has nothing left to write (see `Flags::WANT_WRITE`).
    pub(super) fn disarm_write(&mut self, token: Token) {
        let Some(Source::Conn(c)) = self.sources.get_mut(token) else {
            return;
        };
        let busy = c.transport == Transport::Tcp
            || c.is_connecting()
            || c.is_closed()
            || c.flags.intersects(Flags::WRITE_BLOCKED | Flags::HOOKED);
        if !c.flags.contains(Flags::WANT_WRITE) || busy || !c.out.is_empty() {
            return;
        }
        if self
            .selector
            .reregister(std::os::fd::AsFd::as_fd(&c.sock), token, Interest::READABLE)
            .is_ok()
        {
            c.flags -= Flags::WANT_WRITE;
        }
    }

    pub(super) fn flush_queue(&mut self, token: Token) {
        let self_now = self.now_ms() as u32;
        let Some(c) = self.conn_mut(token) else {
            return;
        };
        if c.out.is_empty() || c.socket_waits() || c.is_closed() {
            self.check_water(token);
            return;
        }
        c.last_activity = self_now;
        if c.is_hooked() {
            if let Some(filter) = self.hooks_of(token).and_then(|h| h.filter) {
                (filter.output)(self, token);
                self.check_water(token);
                return;
            }
        }
        let Some(c) = self.conn_mut(token) else {
            return;
        };
        let (queue, mut sink) = c.queue_and_sink();
        let result = queue.flush(&mut sink);
        // Bytes left in the queue mean the socket is full.
        let wanted = if c.out.is_empty() { 0 } else { usize::MAX };
        if let Err(reason) = c.wrote(result, wanted) {
            self.begin_close(token, reason);
            return;
        }
        self.check_water(token);
    }

    /// One read step of connection `token` into the reactor's read buffer,
    /// whose bytes go to `f`; `None` if nothing was read (see
    /// [`Reactor::read_step`]).
    pub(super) fn read_step_buffered(
        &mut self,
        token: Token,
        f: impl FnOnce(&mut Reactor, &[u8]),
    ) -> Option<usize> {
        let mut buf = std::mem::take(&mut self.read_buf);
        let read = self.read_step(token, ReadInto::Buffer(&mut buf));
        if let Some(n) = read {
            f(self, &buf[..n]);
        }
        self.read_buf = buf;
        read
    }

    pub(super) fn on_readable(&mut self, token: Token) {
        if self.conn(token).is_some_and(|c| c.is_hooked()) {
            if let Some(hooks) = self.hooks_of(token) {
                if (hooks.readable)(self, token) == ReadBy::Takeover {
                    return;
                }
            }
        }
        // Not `read_step_buffered`: written out here, the echo path costs
        // about 0.25 fewer instructions per message (callgrind,
        // bench/callgrind_echo.sh).
        let mut buf = std::mem::take(&mut self.read_buf);
        if let Some(n) = self.read_step(token, ReadInto::Buffer(&mut buf)) {
            if self.conn(token).is_some_and(|c| c.is_hooked()) {
                self.hooked_input(token, &buf[..n]);
            } else {
                self.call(token, |h, conn| h.receive_data(conn, &buf[..n]));
            }
            // Descriptors the handler did not take are closed.
            self.fd_inbox.clear();
        }
        self.read_buf = buf;
        if self
            .conn(token)
            .is_some_and(|c| c.phase == Phase::Lingering)
        {
            self.linger_read(token);
        }
    }

    /// The one read step every reader of a connection uses — `receive_data`,
    /// a filter's input, a proxy's copy or splice: reads once into `into`
    /// if the connection is to be read, and keeps the books: end of stream
    /// (no more reads; `receive_eof` follows, and the handler decides when
    /// to close), activity (the inactivity timer), a failed read (closes),
    /// and fairness — a connection that may have more input is carried to
    /// the next turn (`carry`), never read again in this one. Returns the
    /// bytes read, for the caller to deliver.
    pub(super) fn read_step(&mut self, token: Token, into: ReadInto<'_>) -> Option<usize> {
        let now = self.now_ms() as u32;
        let Some(Source::Conn(c)) = self.sources.get_mut(token) else {
            return None;
        };
        if !c.reads() {
            return None;
        }
        let fds_before = self.fd_inbox.len();
        let (read, room) = match into {
            ReadInto::Buffer(buf) => {
                buf.clear();
                let read = if c.transport.receives_fds() {
                    c.sock.read_with_fds(buf, &mut self.fd_inbox)
                } else {
                    c.sock.read_into_spare(buf)
                };
                (read, buf.capacity())
            }
            // A short splice does not mean drained (it stops when the pipe
            // runs out of slots, or after one chunk when non-blocking):
            // only EAGAIN says so, hence no room to compare with.
            ReadInto::Pipe(pipe, most) => (
                packet_sys::process::splice(std::os::fd::AsFd::as_fd(&c.sock), pipe, most),
                0,
            ),
        };
        match read {
            Ok(0) => {
                c.flags -= Flags::READ_READY;
                c.flags |= Flags::EOF_READ;
                self.pending.push_back((token, Pending::Eof));
                None
            }
            Ok(n) => {
                c.last_activity = now;
                // A short read drained the socket: new data raises a new
                // edge. After the peer's half-close no edge comes, so the
                // next turn reads on to the end of stream. A Unix socket
                // read stops early after bytes that carried descriptors,
                // with more queued behind them: after such a read, only
                // EAGAIN says drained.
                let got_fds = self.fd_inbox.len() > fds_before;
                let more = n >= room || c.flags.contains(Flags::RDHUP) || got_fds;
                if more {
                    self.carry(token);
                } else {
                    c.flags -= Flags::READ_READY;
                }
                Some(n)
            }
            Err(e) => {
                self.read_failed(token, e);
                None
            }
        }
    }

    /// Puts source `token` on the carry-over list for its next read (or
    /// accept batch) in the next turn, once: a connection already on it
    /// (`Flags::QUEUED`) is not listed again.
    pub(super) fn carry(&mut self, token: Token) {
        match self.sources.get_mut(token) {
            Some(Source::Conn(c)) => {
                if c.flags.contains(Flags::QUEUED) {
                    return;
                }
                c.flags |= Flags::QUEUED;
            }
            // Listeners are few: a look through the list does.
            Some(Source::Listener(_)) if !self.ready.contains(&token) => {}
            _ => return,
        }
        self.ready.push(token);
    }

    /// A read of connection `token` failed: drained (`WouldBlock`, wait for
    /// the next edge) or broken (close with the reason).
    pub(super) fn read_failed(&mut self, token: Token, e: io::Error) {
        let Some(c) = self.conn_mut(token) else {
            return;
        };
        c.flags -= Flags::READ_READY;
        if e.kind() != io::ErrorKind::WouldBlock {
            self.begin_close(token, CloseReason::from_io(e));
        }
    }
}
