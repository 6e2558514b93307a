//! Connections as handlers see them: the [`Handler`] callbacks, the
//! [`Connection`] context passed to each, and why a connection ended
//! ([`CloseReason`]).
//!
//! This module owns the public face of a connection. The state behind it
//! (socket, outbound queue, flags) lives in the reactor's slab, so that any
//! callback can reach any connection by id; a `Connection` is only a borrow
//! of the reactor plus the id of the connection whose callback is running.
//! Nothing here may block or call a handler: callbacks are made by the
//! reactor alone, one at a time.

use std::any::Any;
use std::fmt;
use std::io;
use std::time::Duration;

use crate::reactor::Reactor;
use crate::reply::Reply;
use crate::Addr;

/// Identifies a connection within its reactor.
///
/// Ids are never reused while the reactor runs in practice: the slot index is
/// paired with a generation that changes every time the slot is freed, so an
/// id kept after its connection closed simply stops matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub(super) u64);

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}.{}", self.0 & 0xffff_ffff, self.0 >> 32)
    }
}

/// Why a connection ended, as passed to [`Handler::unbind`].
#[derive(Debug)]
#[non_exhaustive]
pub enum CloseReason {
    /// This side called `close_connection` or `close_connection_after_writing`.
    Local,
    /// The peer closed its side (end of stream); queued output was flushed
    /// first.
    PeerClosed,
    /// The peer reset the connection (`ECONNRESET`).
    Reset,
    /// An outgoing connection could not be established (for example
    /// `ECONNREFUSED`).
    ConnectFailed(io::Error),
    /// A read or write failed.
    Error(io::Error),
    /// No bytes moved for longer than the connection's inactivity timeout.
    InactivityTimeout,
    /// An outgoing connection did not complete within its connect timeout.
    ConnectTimeout,
    /// The reactor stopped while the connection was open.
    ReactorStopped,
    /// The socket was handed back with `detach`; it is still open.
    Detached,
    /// A protocol layer between the socket and the handler (a secure
    /// channel, say) failed: the peer's bytes broke its protocol, or its
    /// checks refused the peer. The error carries the layer's own error
    /// (`get_ref`, then `downcast_ref`) and its message.
    Protocol(io::Error),
    /// The reactor's outbound queues together passed its budget
    /// ([`Reactor::set_outbound_budget`], 1 GiB by default) and this
    /// connection's queue was among the largest: it was closed, its queued
    /// bytes dropped, to bring the total back within the budget.
    Memory,
    /// The peer sent a line longer than the line protocol's limit (the
    /// `line` module's `LineProtocol::with_max_line_len`), and the
    /// connection closed after it.
    LineTooLong {
        /// The limit, in bytes.
        max: usize,
        /// The bytes of the line seen when it was refused (more may have
        /// followed: reading stopped there).
        got: usize,
    },
}

impl CloseReason {
    /// Maps an I/O error from a connected socket to a reason.
    pub(super) fn from_io(e: io::Error) -> CloseReason {
        match e.kind() {
            io::ErrorKind::ConnectionReset => CloseReason::Reset,
            io::ErrorKind::BrokenPipe => CloseReason::PeerClosed,
            _ => CloseReason::Error(e),
        }
    }

    /// Whether this side decided the close (so a secure channel over the
    /// connection still says goodbye to the peer).
    pub(super) fn is_local_decision(&self) -> bool {
        matches!(
            self,
            CloseReason::Local
                | CloseReason::InactivityTimeout
                | CloseReason::ReactorStopped
                | CloseReason::LineTooLong { .. }
        )
    }

    /// Whether the connection ended without any error (closed by either side
    /// or by the reactor stopping).
    pub fn is_clean(&self) -> bool {
        matches!(
            self,
            CloseReason::Local
                | CloseReason::PeerClosed
                | CloseReason::ReactorStopped
                | CloseReason::Detached
        )
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::Local => f.write_str("closed locally"),
            CloseReason::PeerClosed => f.write_str("closed by peer"),
            CloseReason::Reset => f.write_str("connection reset by peer"),
            // Ours say "cannot connect to <address>: ..." already.
            CloseReason::ConnectFailed(e) if has_context(e) => write!(f, "{e}"),
            CloseReason::ConnectFailed(e) => write!(f, "connect failed: {e}"),
            CloseReason::Error(e) => write!(f, "I/O error: {e}"),
            CloseReason::InactivityTimeout => f.write_str("inactivity timeout"),
            CloseReason::ConnectTimeout => f.write_str("connect timed out"),
            CloseReason::ReactorStopped => f.write_str("reactor stopped"),
            CloseReason::Detached => f.write_str("detached"),
            CloseReason::Protocol(e) => write!(f, "protocol error: {e}"),
            CloseReason::Memory => f.write_str("closed to keep the outbound budget"),
            CloseReason::LineTooLong { max, got } => write!(
                f,
                "line too long: {got} bytes seen, over the limit of {max}"
            ),
        }
    }
}

/// An I/O error with what was being done when it happened (the address,
/// the path), so that its message names the thing: "cannot listen on
/// 127.0.0.1:8080: Address already in use". Its kind is the original's;
/// the original is its `source()` (and `get_ref()`), with its OS error code.
#[derive(Debug)]
struct WithContext {
    context: String,
    source: io::Error,
}

impl fmt::Display for WithContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.context, self.source)
    }
}

impl std::error::Error for WithContext {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Whether `e` names what failed already (made by [`io_context`]).
pub(super) fn has_context(e: &io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<WithContext>())
}

/// Wraps `e` with `context` (see [`WithContext`]). Crate-visible: it
/// touches no reactor state.
pub(crate) fn io_context(e: io::Error, context: impl fmt::Display) -> io::Error {
    io::Error::new(
        e.kind(),
        WithContext {
            context: context.to_string(),
            source: e,
        },
    )
}

/// The callbacks of one connection, Packet's and EventMachine's names kept.
///
/// A server makes a fresh handler per accepted connection with the factory
/// it was started with; a client passes its handler to
/// [`Reactor::connect`]. Every method has an empty default, so a handler
/// implements only what it needs.
///
/// Callbacks run on the reactor's thread, one at a time, and must not
/// block: anything slow belongs in a timer, a worker or another thread.
pub trait Handler: 'static {
    /// The connection object exists. For an accepted connection it is
    /// connected already; for an outgoing one the connect is in progress and
    /// data sent now is queued until it completes.
    fn post_init(&mut self, conn: &mut Connection<'_>) {
        let _ = conn;
    }

    /// The connection is established. As in Packet, this also fires for
    /// accepted connections, right after [`Handler::post_init`].
    fn connection_completed(&mut self, conn: &mut Connection<'_>) {
        let _ = conn;
    }

    /// Bytes arrived. `data` borrows the reactor's read buffer: copy what
    /// must outlive the call.
    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        let _ = (conn, data);
    }

    /// The peer ended its stream (it closed, or shut down its writing
    /// side); nothing more will be read. The default
    /// ([`Connection::close_after_replies`]) keeps the connection open
    /// until every reply it is owed (worker asks, anything expected with
    /// [`Connection::expect_reply`]) was delivered and everything queued is
    /// written — a client that half-closed after its requests gets all its
    /// answers — then closes it, and `unbind` follows with
    /// [`CloseReason::PeerClosed`]. Override it to keep the connection
    /// open longer and close it later; writes keep working until then.
    fn receive_eof(&mut self, conn: &mut Connection<'_>) {
        conn.close_after_replies();
    }

    /// The connection ended; `reason` says why. The last callback of a
    /// connection; it may call [`Connection::reconnect`].
    fn unbind(&mut self, conn: &mut Connection<'_>, reason: &CloseReason) {
        let _ = (conn, reason);
    }

    /// A reply this connection was promised (see [`Connection::expect_reply`]):
    /// a worker's answer to `Connection::ask_worker` (the `worker` module), the
    /// result of deferred work, or anything else that completes later.
    /// Packet's `worker_receive`: it always reaches the handler instance
    /// that asked, after the callback that asked has returned, and in the
    /// order the asks were made when [`Connection::set_ordered_replies`] is
    /// on. If the connection closed meanwhile, the reply is dropped.
    fn receive_reply(&mut self, conn: &mut Connection<'_>, reply: Reply) {
        let _ = (conn, reply);
    }

    /// The outbound queue grew past the connection's high-water mark (see
    /// [`Connection::set_high_water_mark`]). A proxy pauses its source here;
    /// a server pauses reading from this very connection.
    fn outbound_full(&mut self, conn: &mut Connection<'_>) {
        let _ = conn;
    }

    /// After [`Handler::outbound_full`], the outbound queue drained below
    /// half the high-water mark.
    fn outbound_drained(&mut self, conn: &mut Connection<'_>) {
        let _ = conn;
    }

    /// Reading was resumed after [`Connection::pause`]. A protocol
    /// [`Layer`] delivers here what it held back when the pause came in the
    /// middle of a read's batch of lines or messages; the default does
    /// nothing.
    fn resumed(&mut self, conn: &mut Connection<'_>) {
        let _ = conn;
    }

    /// A secure channel over the connection (EventMachine's `start_tls`)
    /// finished its handshake: what is sent
    /// from now on, and was sent since it started, travels protected, and
    /// the peer's certificate is known. EventMachine's name.
    fn ssl_handshake_completed(&mut self, conn: &mut Connection<'_>) {
        let _ = conn;
    }

    /// The peer presented `cert` (its end-entity certificate, DER
    /// encoded) during the secure channel's handshake, which checked it
    /// against its own configuration already: return `false` to refuse it
    /// all the same (pinning, say), which closes the connection before any
    /// of its bytes reach [`Handler::receive_data`]. Called once, before
    /// [`Handler::ssl_handshake_completed`]; the default accepts.
    /// EventMachine's name.
    fn ssl_verify_peer(&mut self, conn: &mut Connection<'_>, cert: &[u8]) -> bool {
        let _ = (conn, cert);
        true
    }
}

/// The connection whose callback is running, with the reactor behind it.
///
/// Everything a handler does goes through here: writing, closing,
/// pausing, and — through [`Connection::reactor`] — starting servers,
/// connecting, reaching other connections ([`Reactor::connection`]) and
/// stopping the loop. Outside any callback (a timer, another
/// connection's handler), [`Reactor::connection`] gives the `Connection`
/// of an id.
pub struct Connection<'r> {
    pub(super) reactor: &'r mut Reactor,
    pub(super) id: ConnId,
    /// The state of the [`Layer`] whose inner handler is being called, so
    /// that protocol methods (`set_binary_mode`, ...) reach it.
    layer: Option<&'r mut dyn Any>,
}

impl<'r> Connection<'r> {
    pub(super) fn new(reactor: &'r mut Reactor, id: ConnId) -> Connection<'r> {
        Connection {
            reactor,
            id,
            layer: None,
        }
    }

    /// The same connection, with `state` as the layer state its callee
    /// reaches through [`Connection::layer`]: what a [`Layer`] passes to
    /// its inner handler's callbacks.
    pub fn with_layer<'b>(&'b mut self, state: &'b mut dyn Any) -> Connection<'b> {
        Connection {
            reactor: &mut *self.reactor,
            id: self.id,
            layer: Some(state),
        }
    }

    /// The same connection for a shorter time: what a wrapper that owns a
    /// `Connection` of its own (a context type handed to another kind of
    /// handler) takes from the one it was given.
    pub fn reborrow(&mut self) -> Connection<'_> {
        Connection {
            reactor: &mut *self.reactor,
            id: self.id,
            layer: self.layer.as_deref_mut(),
        }
    }

    /// The state of the protocol [`Layer`] this callback is called
    /// through, if it is a `T` (for example the line splitter's mode, which
    /// the `line` module's methods on `Connection` reach this way).
    pub fn layer<T: Any>(&mut self) -> Option<&mut T> {
        self.layer.as_deref_mut().and_then(|s| s.downcast_mut())
    }

    /// [`Connection::layer`], read-only.
    pub fn layer_ref<T: Any>(&self) -> Option<&T> {
        self.layer.as_deref().and_then(|s| s.downcast_ref())
    }
}

/// A protocol layer: a handler that turns the byte stream into calls on an
/// inner handler (lines, typed objects, ...) and passes every other
/// callback through.
///
/// Implementing `Layer` makes a type a [`Handler`]: the library forwards
/// `post_init`, `connection_completed`, `receive_eof`, `receive_reply`,
/// `outbound_full`, `outbound_drained`, `resumed`, `ssl_handshake_completed`,
/// `ssl_verify_peer` and `unbind` to the inner handler,
/// each with the layer's state reachable through [`Connection::layer`], so
/// a layer never needs a list of the callbacks it passes on, and a callback
/// added later reaches every inner handler. While the outbound queue is
/// over its high-water mark the layer pauses reading (its bytes would only
/// produce more output) before the inner handler is told. A layer that
/// delivers a batch (several lines or messages from one read) stops at a
/// [`Connection::pause`] made by the inner handler and keeps the rest for
/// [`Layer::deliver_held`], so a pause takes effect at once.
///
/// ```
/// use packet::{Connection, Handler, Layer, Reactor};
///
/// /// Hands the inner handler one byte at a time.
/// struct Bytewise<H>(H, ());
/// impl<H: Handler> Layer for Bytewise<H> {
///     type Inner = H;
///     type State = ();
///     fn parts(&mut self) -> (&mut H, &mut ()) {
///         (&mut self.0, &mut self.1)
///     }
///     fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
///         for b in data.chunks(1) {
///             self.0.receive_data(conn, b);
///         }
///     }
/// }
///
/// struct Echo;
/// impl Handler for Echo {
///     fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
///         conn.send_data(data);
///     }
/// }
/// let mut r = Reactor::new()?;
/// r.start_server("127.0.0.1:0", || Bytewise(Echo, ()))?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub trait Layer: 'static {
    /// The handler the layer calls.
    type Inner: Handler;
    /// What the layer lends to the inner handler's callbacks (see
    /// [`Connection::layer`]); `()` when nothing.
    type State: Any;

    /// The inner handler and the layer's state, borrowed together.
    fn parts(&mut self) -> (&mut Self::Inner, &mut Self::State);

    /// Bytes arrived: decode them and call the inner handler.
    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]);

    /// Reading was resumed: deliver what [`Layer::receive_data`] held back
    /// because the connection was paused in the middle of a batch (a pause
    /// takes effect at once, so nothing past it reaches the inner handler
    /// until now). Called before the inner handler's
    /// [`Handler::resumed`]. The default holds nothing.
    fn deliver_held(&mut self, conn: &mut Connection<'_>) {
        let _ = conn;
    }

    /// Runs after every callback passed through (but `unbind`), for state
    /// the inner handler may have changed (an empty block to settle, say).
    fn after_callback(&mut self, conn: &mut Connection<'_>) {
        let _ = conn;
    }

    /// Runs after the inner handler's `unbind`: back to the state of a new
    /// connection, for a `reconnect`.
    fn reset(&mut self) {}
}

/// Calls `f` on a layer's inner handler with the layer's state lent.
fn pass_through<L: Layer, R>(
    layer: &mut L,
    conn: &mut Connection<'_>,
    f: impl FnOnce(&mut L::Inner, &mut Connection<'_>) -> R,
) -> R {
    let (inner, state) = layer.parts();
    let result = f(inner, &mut conn.with_layer(state));
    layer.after_callback(conn);
    result
}

impl<L: Layer> Handler for L {
    fn post_init(&mut self, conn: &mut Connection<'_>) {
        pass_through(self, conn, |h, c| h.post_init(c));
    }

    fn connection_completed(&mut self, conn: &mut Connection<'_>) {
        pass_through(self, conn, |h, c| h.connection_completed(c));
    }

    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        Layer::receive_data(self, conn, data);
    }

    fn receive_eof(&mut self, conn: &mut Connection<'_>) {
        pass_through(self, conn, |h, c| h.receive_eof(c));
    }

    fn receive_reply(&mut self, conn: &mut Connection<'_>, reply: Reply) {
        pass_through(self, conn, |h, c| h.receive_reply(c, reply));
    }

    fn unbind(&mut self, conn: &mut Connection<'_>, reason: &CloseReason) {
        let (inner, state) = self.parts();
        inner.unbind(&mut conn.with_layer(state), reason);
        self.reset();
    }

    fn outbound_full(&mut self, conn: &mut Connection<'_>) {
        conn.pause();
        pass_through(self, conn, |h, c| h.outbound_full(c));
    }

    fn outbound_drained(&mut self, conn: &mut Connection<'_>) {
        conn.resume();
        pass_through(self, conn, |h, c| h.outbound_drained(c));
    }

    fn resumed(&mut self, conn: &mut Connection<'_>) {
        self.deliver_held(conn);
        pass_through(self, conn, |h, c| h.resumed(c));
    }

    fn ssl_handshake_completed(&mut self, conn: &mut Connection<'_>) {
        pass_through(self, conn, |h, c| h.ssl_handshake_completed(c));
    }

    fn ssl_verify_peer(&mut self, conn: &mut Connection<'_>, cert: &[u8]) -> bool {
        pass_through(self, conn, |h, c| h.ssl_verify_peer(c, cert))
    }
}

impl Connection<'_> {
    /// This connection's id, stable for its lifetime.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// The reactor, for anything beyond this connection.
    pub fn reactor(&mut self) -> &mut Reactor {
        self.reactor
    }

    /// Queues `data` for the peer. Bytes sent during one callback are
    /// written together when it returns (one syscall per batch); a large
    /// write goes out at once. Data sent after the connection was closed
    /// (in `unbind`, or after `close_connection`) is dropped with a line to
    /// the log hook ([`crate::log::set_log_hook`]) naming the connection
    /// and the byte count, once per run of drops.
    pub fn send_data(&mut self, data: &[u8]) {
        if !self.try_send_data(data) && !data.is_empty() {
            self.reactor.dropped_after_close(self.id, data.len());
        }
    }

    /// [`Connection::send_data`] for a sender that needs to know whether
    /// the bytes will go out: `false` when the connection takes no more
    /// output, in which case `data` is dropped without a line to the log
    /// hook. Output is taken while the connection is open or draining (a
    /// graceful stop lets it finish what it owes), and after the peer ended
    /// its stream; not after a close or half-close made on this side.
    pub fn try_send_data(&mut self, data: &[u8]) -> bool {
        self.reactor.send_data_to(self.id, data)
    }

    /// Sends the whole file at `path` after what was sent before, without
    /// reading it into memory (EventMachine's `send_file_data`, of any
    /// size); returns its length. See [`Connection::send_file_range`].
    ///
    /// # Errors
    /// The file cannot be opened, or as [`Connection::send_file_range`].
    pub fn send_file(&mut self, path: impl AsRef<std::path::Path>) -> io::Result<u64> {
        self.reactor.send_file(self.id, path)
    }

    /// Sends `len` bytes of `file` from `offset`, after what was sent
    /// before and before what is sent after, without reading the file into
    /// memory (`sendfile` where the OS has it; bounded reads elsewhere).
    /// Unlike EventMachine's `send_file_data` the size is not limited, and
    /// nothing busy-polls: the file goes out as the socket takes it.
    ///
    /// # Errors
    /// `NotConnected` for a closed or closing connection.
    pub fn send_file_range(
        &mut self,
        file: std::fs::File,
        offset: u64,
        len: u64,
    ) -> io::Result<()> {
        self.reactor.send_file_range(self.id, file, offset, len)
    }

    /// Passes `fd` to the peer (over a Unix-domain socket) with the next
    /// bytes sent — send them right after, for example a message saying
    /// what the descriptor is. The descriptor is closed here once sent.
    /// Returns `false` (closing `fd`) if the connection is closed or
    /// closing.
    pub fn send_fd(&mut self, fd: std::os::fd::OwnedFd) -> bool {
        self.reactor.send_fd(self.id, fd)
    }

    /// Closes the connection when the callback returns, dropping unwritten
    /// data. [`Handler::unbind`] follows with [`CloseReason::Local`].
    pub fn close_connection(&mut self) {
        self.reactor.close_connection(self.id, false);
    }

    /// Stops reading and closes the connection once every queued byte is
    /// written: the write side is shut first, and the peer's input read and
    /// discarded until its end of stream (a lingering close, see
    /// [`crate::Linger`]), so that input the peer sent meanwhile cannot make
    /// the kernel reset the connection and destroy what it has yet to read.
    pub fn close_connection_after_writing(&mut self) {
        self.reactor.close_connection(self.id, true);
    }

    /// Closes the connection at once because the peer broke the protocol
    /// (a parser's complaint, a refused handshake): `unbind` gets
    /// [`CloseReason::Protocol`] with `error`. Bytes still queued are
    /// dropped, as for [`Connection::close_connection`].
    pub fn close_with_error(&mut self, error: io::Error) {
        self.reactor
            .begin_close(self.id.0, CloseReason::Protocol(error));
    }

    /// Makes the close of this connection, when this side makes it (a
    /// [`Connection::close_connection`], with or without writing first),
    /// report `reason` to `unbind` instead of [`CloseReason::Local`]: a
    /// layer that ended the input names why (the `line` module's
    /// [`CloseReason::LineTooLong`]), and the handler still decides when
    /// to close. A close for a reason of its own (a reset, a timeout)
    /// reports that reason.
    pub fn set_close_reason(&mut self, reason: CloseReason) {
        self.reactor.set_close_reason(self.id, reason);
    }

    /// The descriptors that arrived with the bytes now being delivered to
    /// `receive_data`, in the order they were sent, on a connection made
    /// with [`Reactor::attach_receiving_fds`] (empty elsewhere, and outside
    /// `receive_data`). Those not taken are closed after the callback.
    pub fn take_received_fds(&mut self) -> Vec<std::os::fd::OwnedFd> {
        self.reactor.take_received_fds()
    }

    /// Whether the connection is closing or closed: a close was asked
    /// (at once or after writing), or it failed. A handler delivering a
    /// batch of decoded messages stops there.
    pub fn is_closing(&self) -> bool {
        self.reactor.is_closing(self.id)
    }

    /// Stops reading from the peer (its bytes wait in the kernel, and TCP
    /// flow control slows the sender) until [`Connection::resume`]. It
    /// takes effect at once: a protocol [`Layer`] delivering the lines or
    /// messages of one read stops after the callback that paused, and
    /// delivers the rest after the resume ([`Handler::resumed`]).
    pub fn pause(&mut self) {
        self.reactor.pause(self.id);
    }

    /// Resumes reading after [`Connection::pause`].
    pub fn resume(&mut self) {
        self.reactor.resume(self.id);
    }

    /// Whether reading is paused.
    pub fn is_paused(&self) -> bool {
        self.reactor.is_paused(self.id)
    }

    /// Bytes queued and not yet accepted by the kernel.
    pub fn outbound_len(&self) -> usize {
        self.reactor.outbound_len(self.id)
    }

    /// Sets the outbound queue size above which [`Handler::outbound_full`]
    /// fires (default: the reactor's, 1 MiB unless changed with
    /// [`Reactor::set_default_high_water_mark`]).
    pub fn set_high_water_mark(&mut self, bytes: usize) {
        self.reactor.set_high_water_mark(self.id, bytes);
    }

    /// Closes this connection with [`CloseReason::InactivityTimeout`] once
    /// no byte has moved either way for `limit` (EventMachine's
    /// `comm_inactivity_timeout`); `None` turns it off. Limits are kept in
    /// whole milliseconds, up to 24 days.
    pub fn set_inactivity_timeout(&mut self, limit: Option<std::time::Duration>) {
        self.reactor.set_inactivity_timeout(self.id, limit);
    }

    /// For an outgoing connection still connecting: give up with
    /// [`CloseReason::ConnectTimeout`] after `limit` from now (EventMachine's
    /// `pending_connect_timeout=`).
    pub fn set_pending_connect_timeout(&mut self, limit: Option<std::time::Duration>) {
        self.reactor.set_pending_connect_timeout(self.id, limit);
    }

    /// Delivers replies to this connection in the order they were expected
    /// ([`Connection::expect_reply`], which every `ask_worker` calls) instead
    /// of the order they complete, so a pipelined protocol answers in
    /// request order without a reorder buffer of its own. A reply that
    /// completes early waits for those expected before it.
    pub fn set_ordered_replies(&mut self, on: bool) {
        self.reactor.set_ordered_replies(self.id, on);
    }

    /// How long since a byte last moved on this connection, as of the
    /// loop's time (EventMachine's `get_idle_time`).
    pub fn idle_time(&self) -> std::time::Duration {
        self.reactor.idle_time(self.id).unwrap_or_default()
    }

    /// Takes this connection's socket out of the reactor and hands it
    /// back, open (EventMachine's `detach`): it is removed from the
    /// selector at once, the connection ends with [`CloseReason::Detached`]
    /// after the current callback, and bytes still queued for it are
    /// dropped. Use it to pass an accepted client to a worker.
    ///
    /// # Errors
    /// `NotConnected` for a closed connection; out of descriptors.
    pub fn detach(&mut self) -> io::Result<std::os::fd::OwnedFd> {
        self.reactor.detach(self.id)
    }

    /// The peer's address.
    ///
    /// # Errors
    /// `NotConnected` once closed or before an outgoing connect completed.
    pub fn peer_addr(&self) -> io::Result<Addr> {
        self.reactor.peer_addr(self.id)
    }

    /// The local address of the connection.
    ///
    /// # Errors
    /// `NotConnected` once closed.
    pub fn local_addr(&self) -> io::Result<Addr> {
        self.reactor.local_addr(self.id)
    }

    /// From inside [`Handler::unbind`]: connect this same handler again to
    /// `addr` once `unbind` returns (EventMachine's `reconnect`). The new
    /// connection gets a new id; `connection_completed` or another `unbind`
    /// follows.
    ///
    /// # Errors
    /// `InvalidInput` outside `unbind` or when `addr` does not resolve.
    pub fn reconnect(&mut self, addr: impl std::net::ToSocketAddrs) -> io::Result<()> {
        let addr = crate::reactor::resolve(addr)?;
        self.reactor
            .request_reconnect(self.id, Some(Addr::Inet(addr)), Duration::ZERO)
    }

    /// From inside [`Handler::unbind`] of a connection made with
    /// [`Reactor::connect`] (or `connect_unix`): connect this same handler,
    /// with the state it has, again to the same address after `delay`. The
    /// new connection gets a new id; `connection_completed` or another
    /// `unbind` follows, which may call this again — with the next delay
    /// of a [`Backoff`] kept in the handler, for a retry loop that does
    /// not hammer a server that is down. A graceful stop that starts
    /// during the delay cancels the reconnect (with a line to the log
    /// hook).
    ///
    /// ```no_run
    /// use packet::{Backoff, CloseReason, Connection, Handler, Reactor};
    /// use std::time::Duration;
    ///
    /// struct Client {
    ///     retry: Backoff,
    ///     received: usize, // kept across reconnects
    /// }
    /// impl Handler for Client {
    ///     fn connection_completed(&mut self, _conn: &mut Connection<'_>) {
    ///         self.retry.reset();
    ///     }
    ///     fn receive_data(&mut self, _conn: &mut Connection<'_>, data: &[u8]) {
    ///         self.received += data.len();
    ///     }
    ///     fn unbind(&mut self, conn: &mut Connection<'_>, reason: &CloseReason) {
    ///         // "cannot connect to 127.0.0.1:7000: Connection refused (os error 111)"
    ///         eprintln!("{reason}; retrying");
    ///         let _ = conn.reconnect_after(self.retry.next_delay());
    ///     }
    /// }
    ///
    /// Reactor::run(|r| {
    ///     let retry = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    ///     r.connect("127.0.0.1:7000", Client { retry, received: 0 })?;
    ///     Ok(())
    /// })?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    /// `InvalidInput` outside `unbind`, or for an accepted connection
    /// (which has no address of its own to go back to).
    pub fn reconnect_after(&mut self, delay: Duration) -> io::Result<()> {
        self.reactor.request_reconnect(self.id, None, delay)
    }
}

/// Delays for retries that grow: `first`, then twice as long each time up
/// to `max`, each shortened by up to a quarter at random so that many
/// clients a server dropped at once do not all come back at once. Kept in a handler
/// for [`Connection::reconnect_after`]; [`Backoff::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
    seed: u64,
}

impl Backoff {
    /// Delays from `first` (at least 1 ms), doubling, up to `max`.
    pub fn new(first: Duration, max: Duration) -> Backoff {
        let first = first.max(Duration::from_millis(1));
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        Backoff {
            first,
            max: max.max(first),
            next: first,
            seed,
        }
    }

    /// The delay before the next attempt; the one after is twice as long
    /// (up to the maximum).
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        // xorshift: a spread, not a secret.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let spread = base.as_nanos() as u64 / 4;
        let jitter = if spread == 0 { 0 } else { self.seed % spread };
        (base - Duration::from_nanos(spread) + Duration::from_nanos(jitter)).min(self.max)
    }

    /// Starts over from the first delay (the connection succeeded).
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}
