//! Extending the reactor from outside the crate: the same extension point
//! the library's own plug-ins use.
//!
//! - **Per-reactor state**: an [`Extension`] value per type, reached with
//!   [`Reactor::extensions`] and told when the reactor stops gracefully
//!   ([`StopHold`]) and when it shuts down. Workers and proxies keep their
//!   state this way.
//! - **A filter between a connection's socket and its handler**: a
//!   [`Filter`] set with [`Connection::set_filter`] turns the bytes read
//!   into what `receive_data` sees, and what the handler sends into what
//!   the socket carries (a cipher, a compressor, a byte counter), with
//!   optional parts for a protocol that has messages of its own: a
//!   handshake with a deadline, a goodbye, the peer's end of stream
//!   ([`FilterEvent`]). The crate's TLS is such a filter. The core
//!   keeps its rules for the filtered connection: one read per connection
//!   per turn, the water marks and closes measured on what the handler
//!   sent, and the same [`CloseReason`] for the same socket failure.
//! - **A connection whose bytes the extension moves itself**: a
//!   [`Takeover`] given a connection with [`ConnIo::take_over`] reads it
//!   with the core's read step (into a buffer, or spliced into a pipe
//!   without entering user space), writes ahead of its outbound queue
//!   with the core's write rule, and hears of its queue and its close.
//!   The crate's proxy (`proxy_incoming_to`) is one.
//! - **A plug-in source**: any pollable descriptor (a pipe, an eventfd, a
//!   device) with its own callbacks, as a watch: `watch::Watcher` and
//!   `reactor.watches().watch(..)` (the `watch` feature). Datagram
//!   sockets, file watches and child processes are built on it.
//!
//! This module owns the public filter trait and its adapter onto the
//! core's connection hooks (a takeover's adapter is `takeover.rs`, beside
//! it in the core); it never reads or writes a connection's
//! fields (the core's own functions do), and it adds nothing to a
//! program that sets no filter (the adapter is generic, built per filter).
//!
//! `examples/xor_filter.rs` is a third-party extension written against
//! these items only: a xor cipher that counts bytes, and a pipe source.
//!
//! A server whose connections are rot13-encoded on the wire, and a plain
//! client that sees it:
//!
//! ```
//! use std::io;
//! use packet::extend::{Filter, FilterOutput};
//! use packet::{Connection, Handler, Reactor};
//!
//! fn rot13(bytes: &[u8], out: &mut Vec<u8>) {
//!     out.extend(bytes.iter().map(|&b| match b {
//!         b'a'..=b'z' => (b - b'a' + 13) % 26 + b'a',
//!         _ => b,
//!     }));
//! }
//!
//! struct Rot13;
//! impl Filter for Rot13 {
//!     fn decode(&mut self, from_socket: &[u8], to_handler: &mut Vec<u8>) -> io::Result<()> {
//!         rot13(from_socket, to_handler);
//!         Ok(())
//!     }
//!     fn encode(&mut self, from_handler: &[u8], to_socket: &mut FilterOutput<'_>) {
//!         let mut encoded = Vec::new();
//!         rot13(from_handler, &mut encoded);
//!         to_socket.extend_from_slice(&encoded);
//!     }
//! }
//!
//! /// Sees plain text: the filter is under it.
//! struct Echo;
//! impl Handler for Echo {
//!     fn post_init(&mut self, conn: &mut Connection<'_>) {
//!         conn.set_filter(Rot13).expect("a new connection takes a filter");
//!     }
//!     fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
//!         assert_eq!(data, b"hello");
//!         conn.send_data(b"hello back");
//!     }
//! }
//!
//! /// No filter: sees the wire.
//! struct Plain;
//! impl Handler for Plain {
//!     fn connection_completed(&mut self, conn: &mut Connection<'_>) {
//!         conn.send_data(b"uryyb"); // "hello", encoded
//!     }
//!     fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
//!         assert_eq!(data, b"uryyb onpx");
//!         conn.reactor().stop();
//!     }
//! }
//!
//! Reactor::run(|r| {
//!     let id = r.start_server("127.0.0.1:0", || Echo)?;
//!     let addr = r.server_addr(id)?.as_inet().unwrap();
//!     r.connect(addr, Plain)?;
//!     Ok(())
//! })?;
//! # Ok::<(), io::Error>(())
//! ```
//!
//! [`Reactor::extensions`]: crate::Reactor::extensions
//! [`CloseReason`]: crate::CloseReason

use std::fs::File;
use std::io::{self, IoSlice};
use std::marker::PhantomData;
use std::os::fd::BorrowedFd;
use std::time::Duration;

use crate::buffer::{FilterSink, Sink};
use crate::connection::{CloseReason, Connection};
use crate::reactor::{Conn, ConnHooks, ConnSink, FilterHooks, Out, Reactor, TimerId, WriteSide};
use crate::slab::Token;

pub use crate::reactor::{ConnIo, Extension, Extensions, QueueFlush, ReadBy, StopHold, Takeover};

/// A protocol layer between a connection's socket and its handler, which
/// the handler does not see: set with [`Connection::set_filter`].
///
/// Both directions are byte streams: a call may carry any part of what
/// the peer or the handler wrote, so a filter that works on units (blocks,
/// records) keeps the partial ones itself.
///
/// A byte transform needs [`Filter::decode`] and [`Filter::encode`] only.
/// A protocol with messages of its own (a handshake, a goodbye; this
/// crate's TLS is one) also uses the provided methods: bytes it sends
/// unasked ([`Filter::own_output`]), holding the handler's bytes back
/// until it is ready ([`Filter::takes_output`]), what the peer's bytes
/// meant besides data ([`Filter::take_event`]), a last message
/// ([`Filter::finish`]) and a deadline for its handshake
/// ([`Filter::handshake_limit`]).
///
/// ```
/// use std::io;
/// use packet::extend::{Filter, FilterOutput};
///
/// /// Flips every bit, both ways.
/// struct Invert;
/// impl Filter for Invert {
///     fn decode(&mut self, from_socket: &[u8], to_handler: &mut Vec<u8>) -> io::Result<()> {
///         to_handler.extend(from_socket.iter().map(|b| !b));
///         Ok(())
///     }
///     fn encode(&mut self, from_handler: &[u8], to_socket: &mut FilterOutput<'_>) {
///         to_socket.extend(from_handler.iter().map(|b| !b));
///     }
/// }
/// ```
pub trait Filter: 'static {
    /// Bytes read from the socket: append what the handler receives to
    /// `to_handler` (given to `receive_data` in one call, if not empty).
    ///
    /// # Errors
    /// The peer's bytes broke the filter's protocol: the connection
    /// closes with [`CloseReason::Protocol`] carrying the error (after
    /// `receive_data` got what was appended before the error, and after a
    /// best-effort write of what [`Filter::own_output`] gives, an alert
    /// say).
    fn decode(&mut self, from_socket: &[u8], to_handler: &mut Vec<u8>) -> io::Result<()>;

    /// Bytes the handler sent (or a file it sent, read in pieces): put
    /// what the socket carries in `to_socket` (written to the socket at
    /// once where it can be, see [`FilterOutput`]). Called only while
    /// [`Filter::takes_output`] is true, at most [`ENCODE_STEP`] bytes at
    /// a time, and
    /// only once what the previous call appended is written: the rest
    /// waits in the connection's outbound queue, where the water marks
    /// count it.
    fn encode(&mut self, from_handler: &[u8], to_socket: &mut FilterOutput<'_>);

    /// Bytes of the filter's own protocol for the peer that no handler
    /// byte asked for (a handshake's messages, an alert): put them in
    /// `to_socket`. Asked when the filter is set (a client's hello) and
    /// after every [`Filter::decode`]; they go out ahead of anything
    /// encoded later. None by default.
    fn own_output(&mut self, to_socket: &mut FilterOutput<'_>) {
        let _ = to_socket;
    }

    /// Whether the handler's bytes may be encoded now. `false` while a
    /// handshake runs: they wait in the outbound queue, and are encoded
    /// once it ended (the connection tries again after every decode).
    /// Always, by default.
    fn takes_output(&self) -> bool {
        true
    }

    /// What the last [`Filter::decode`] found besides bytes for the
    /// handler, one event per call until `None`. None by default.
    fn take_event(&mut self) -> Option<FilterEvent> {
        None
    }

    /// The connection is ending: this side closes after writing (once
    /// everything is written), half-closes, or closes at once (then the
    /// write is best-effort, never waited for). Append the protocol's
    /// last message (TLS's `close_notify`); nothing is encoded after it.
    /// Called at most once, and never while bytes sent before the filter
    /// was set are still unwritten. Nothing by default.
    fn finish(&mut self, to_socket: &mut FilterOutput<'_>) {
        let _ = to_socket;
    }

    /// How long the filter's handshake may take, from
    /// [`Connection::set_filter`] to its [`FilterEvent::Established`]
    /// (asked once, when the filter is set): a peer that stalls mid-way
    /// is closed with [`CloseReason::Protocol`] holding a
    /// [`HandshakeTimeout`] rather than holding its descriptor for ever.
    /// `None` (the default) for a filter without a handshake.
    fn handshake_limit(&self) -> Option<Duration> {
        None
    }
}

/// What a [`Filter`]'s decoding found besides bytes for the handler
/// ([`Filter::take_event`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FilterEvent {
    /// The filter's handshake ended: its deadline is cancelled, the
    /// handler gets [`Handler::ssl_verify_peer`] (if the peer showed a
    /// certificate; `false` closes the connection with
    /// [`CloseReason::Protocol`]) and then
    /// [`Handler::ssl_handshake_completed`], before the bytes decoded
    /// with it.
    ///
    /// [`Handler::ssl_verify_peer`]: crate::Handler::ssl_verify_peer
    /// [`Handler::ssl_handshake_completed`]: crate::Handler::ssl_handshake_completed
    Established {
        /// The peer's certificate (DER), if it sent one.
        peer_certificate: Option<Vec<u8>>,
    },
    /// The peer ended its stream in the filter's own terms (TLS's
    /// `close_notify`): an end of stream, so `receive_eof` follows the
    /// bytes decoded before it, and nothing more is read.
    PeerEnded,
}

/// Where a [`Filter`] puts the bytes it has for the socket.
///
/// - [`FilterOutput::extend_from_slice`] and [`Extend`] take everything:
///   the bytes are written after those given before, and wait in the
///   connection's buffer for the socket (a byte transform needs nothing
///   else).
/// - [`io::Write`], for a filter that keeps its output in buffers of its
///   own (rustls's records): in [`Filter::encode`], and in
///   [`Filter::own_output`] at a writable edge, a piece of at least 4 KiB
///   goes straight to the socket (behind the smaller ones given before,
///   in one `writev`), with no copy, and the write returns what the
///   socket took of it. When that is short (or `WouldBlock`), the
///   filter keeps the rest, gives nothing more in this call, and is
///   asked for it with `own_output` once the socket is writable again;
///   the connection counts it as queued meanwhile. Anywhere else, and
///   for smaller pieces, it takes everything, as `extend_from_slice`.
///
/// A filter that gives bytes after a short write in the same call would
/// put them ahead of the ones it kept: the connection closes instead,
/// with [`CloseReason::Protocol`] saying so, and nothing out of order is
/// sent.
pub struct FilterOutput<'a> {
    kept: &'a mut Vec<u8>,
    /// The socket, while bytes may go straight to it.
    socket: Option<ConnSink<'a>>,
    /// An [`io::Write`] was cut short: the filter keeps the rest.
    short: bool,
    /// What the socket said when it stopped taking bytes.
    refused: Option<io::Error>,
    /// Bytes were given after a short [`io::Write`]: they would go out
    /// ahead of the ones the filter kept.
    misordered: bool,
}

impl<'a> FilterOutput<'a> {
    /// Into the connection's buffer only.
    fn kept_only(kept: &'a mut Vec<u8>) -> FilterOutput<'a> {
        FilterOutput {
            kept,
            socket: None,
            short: false,
            refused: None,
            misordered: false,
        }
    }

    /// Straight to `socket` where it can be.
    fn direct(kept: &'a mut Vec<u8>, socket: ConnSink<'a>) -> FilterOutput<'a> {
        FilterOutput {
            kept,
            socket: Some(socket),
            short: false,
            refused: None,
            misordered: false,
        }
    }

    fn cut_short(&mut self, why: io::Error) {
        self.short = true;
        self.socket = None;
        self.refused = Some(why);
    }

    /// Bytes for the socket, in order after those given before; all are
    /// taken (after a short [`io::Write`] in the same call, none are: the
    /// connection closes, see [`FilterOutput`]).
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.misordered |= self.short;
        self.kept.extend_from_slice(bytes);
    }
}

impl Extend<u8> for FilterOutput<'_> {
    fn extend<I: IntoIterator<Item = u8>>(&mut self, bytes: I) {
        self.misordered |= self.short;
        self.kept.extend(bytes);
    }
}

impl<'b> Extend<&'b u8> for FilterOutput<'_> {
    fn extend<I: IntoIterator<Item = &'b u8>>(&mut self, bytes: I) {
        self.misordered |= self.short;
        self.kept.extend(bytes);
    }
}

/// The reason a connection closes when its filter gave bytes after a
/// short write: sending them would put the stream out of order.
fn misordered() -> CloseReason {
    CloseReason::Protocol(io::Error::other(
        "the filter gave bytes after a short write in the same call (they would go out of order)",
    ))
}

impl io::Write for FilterOutput<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    /// One `writev` when the pieces go straight out.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if self.short {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let Some(socket) = self.socket.as_ref().filter(|_| total >= DIRECT_MIN) else {
            for b in bufs {
                self.kept.extend_from_slice(b);
            }
            return Ok(total);
        };
        // Smaller pieces given before go first, in the same `writev`.
        let ahead = self.kept.len();
        let result = if ahead == 0 {
            socket.write_out(Out::Bytes(bufs, &[]))
        } else {
            let mut all = Vec::with_capacity(bufs.len() + 1);
            all.push(IoSlice::new(self.kept));
            all.extend_from_slice(bufs);
            socket.write_out(Out::Bytes(&all, &[]))
        };
        // Full, or failed: the filter keeps the rest, and the connection
        // waits for the writable edge (or closes).
        match result {
            Ok(n) if n == ahead + total => {
                self.kept.clear();
                Ok(total)
            }
            Ok(n) => {
                self.cut_short(io::ErrorKind::WouldBlock.into());
                if n < ahead {
                    self.kept.drain(..n);
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                self.kept.clear();
                match n - ahead {
                    0 => Err(io::ErrorKind::WouldBlock.into()),
                    taken => Ok(taken),
                }
            }
            Err(e) => {
                let kind = e.kind();
                self.cut_short(e);
                Err(kind.into())
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The smallest piece a [`FilterOutput`] writes straight to the socket:
/// smaller ones are gathered, so that a filter giving its bytes in small
/// pieces costs a write per step, not one per piece.
const DIRECT_MIN: usize = 4096;

/// The error inside the [`CloseReason::Protocol`] of a connection whose
/// filter's handshake did not end within [`Filter::handshake_limit`]
/// (its kind is `TimedOut`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeTimeout {
    /// The limit that passed.
    pub limit: Duration,
}

impl std::fmt::Display for HandshakeTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "handshake not complete after {:?}", self.limit)
    }
}

impl std::error::Error for HandshakeTimeout {}

/// The most handler bytes one [`Filter::encode`] call gets: the socket's
/// usual buffer, so a step is one write. More wait in the outbound queue
/// (where the water marks count them) until the step is written.
pub const ENCODE_STEP: usize = 64 * 1024;

/// A filtered connection's state: the filter, and what it encoded that
/// the socket has not taken yet.
struct Filtered<F> {
    filter: F,
    to_socket: Vec<u8>,
    /// Of `to_socket`, the bytes written.
    written: usize,
    /// The handler's bytes that `to_socket` encodes: counted as queued
    /// until it is written, so the water marks see the handler's bytes.
    encoded: usize,
    /// Bytes at the head of the outbound queue sent before the filter was
    /// set: they go out as they are, first.
    clear_left: usize,
    /// The filter keeps output the socket did not take (a short
    /// [`io::Write`] on its [`FilterOutput`]): asked for it again at the
    /// writable edge.
    holds: bool,
    /// [`Filter::finish`] was called: nothing more is encoded.
    finished: bool,
    /// The handshake's deadline, until [`FilterEvent::Established`].
    deadline: Option<TimerId>,
    /// A file's bytes on their way into the filter.
    file_buf: Vec<u8>,
}

impl Reactor {
    /// Lends the reactor's buffer for one read's decoded bytes, empty.
    fn take_decode_buffer(&mut self) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.filter_scratch().decoded);
        buf.clear();
        buf
    }

    /// Gives the buffer back, unless one read made it larger than a read
    /// step's worth (then it is dropped, not kept for ever).
    fn put_decode_buffer(&mut self, buf: Vec<u8>) {
        if buf.capacity() <= ENCODE_STEP {
            self.filter_scratch().decoded = buf;
        }
    }

    /// Lends the reactor's buffer for one write's encoded bytes (empty,
    /// maybe without capacity, if a connection kept the last one).
    fn take_encode_buffer(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.filter_scratch().encoded)
    }

    /// Gives it back (emptied by the writer), unless it outgrew two steps.
    fn put_encode_buffer(&mut self, buf: Vec<u8>) {
        if buf.capacity() <= 2 * ENCODE_STEP {
            self.filter_scratch().encoded = buf;
        }
    }
}

/// The core's hooks for a filter of type `F`: one pair of statics per
/// filter type (promoted constants).
struct HooksFor<F>(PhantomData<F>);

impl<F: Filter> HooksFor<F> {
    const FILTER: FilterHooks = FilterHooks {
        input: input::<F>,
        output: |r, token| {
            write_encoded::<F>(r, token, true);
        },
        held: |r, token| {
            r.hook_state::<Filtered<F>>(token).map_or(0, |s| {
                if s.written < s.to_socket.len() || s.holds {
                    // At least 1: a close waits for the filter's own bytes.
                    s.encoded.max(1)
                } else {
                    0
                }
            })
        },
        farewell: farewell::<F>,
    };
    const CONN: ConnHooks = ConnHooks {
        readable: |_, _| ReadBy::Core,
        // Bytes encoded before the socket filled go ahead of the queue.
        writable: |r, token| {
            if write_encoded::<F>(r, token, false) {
                QueueFlush::Now
            } else {
                QueueFlush::Later
            }
        },
        queue_checked: finish_if_drained::<F>,
        closing: |_, _| {},
        filter: Some(&Self::FILTER),
    };
}

/// Bytes read from filtered connection `token`: decoded; the filter's
/// own answer written; its events acted on; then the handler's bytes to
/// `receive_data`.
fn input<F: Filter>(r: &mut Reactor, token: Token, data: &[u8]) {
    let mut to_handler = r.take_decode_buffer();
    let Some(s) = r.hook_state_mut::<Filtered<F>>(token) else {
        r.put_decode_buffer(to_handler);
        return;
    };
    let decoded = s.filter.decode(data, &mut to_handler);
    // What decoding made the filter say (a handshake's answer) is small:
    // into the buffer. A filter that holds output already (a full socket
    // left records in rustls) keeps this behind it, and the write below
    // asks for both, straight to the socket: no copy of the held bytes.
    if !s.holds {
        s.filter
            .own_output(&mut FilterOutput::kept_only(&mut s.to_socket));
    }
    let has_output = s.written < s.to_socket.len() || s.holds;
    let mut established = None;
    let mut peer_ended = false;
    while let Some(event) = s.filter.take_event() {
        match event {
            FilterEvent::Established { peer_certificate } => {
                established = Some((peer_certificate, s.deadline.take()));
            }
            FilterEvent::PeerEnded => peer_ended = true,
        }
    }
    // The filter's own bytes (a handshake's answer) go out before
    // anything the handler does with what it receives.
    if has_output {
        write_encoded::<F>(r, token, false);
    }
    let mut accepted = true;
    if let Some((cert, deadline)) = established.filter(|_| decoded.is_ok()) {
        if let Some(timer) = deadline {
            r.cancel_timer(timer);
        }
        if let Some(cert) = cert {
            accepted = r
                .call_handler(token, |h, conn| h.ssl_verify_peer(conn, &cert))
                .unwrap_or(false);
        }
        if accepted {
            r.call_handler(token, |h, conn| h.ssl_handshake_completed(conn));
            // What was sent while the handshake ran goes now.
            r.flush_queue(token);
        } else {
            let refused = io::Error::new(
                io::ErrorKind::PermissionDenied,
                "ssl_verify_peer refused the peer's certificate",
            );
            r.begin_close(token, CloseReason::Protocol(refused));
        }
    }
    // A callback's end checks the queue (`Reactor::call`); without one,
    // the filter's own bytes may have changed what is held.
    let delivered = accepted && !to_handler.is_empty();
    if delivered {
        r.deliver(token, &to_handler);
    }
    r.put_decode_buffer(to_handler);
    match decoded {
        Err(e) => r.begin_close(token, CloseReason::Protocol(e)),
        Ok(()) if peer_ended => r.end_of_input(token),
        Ok(()) => {}
    }
    if !delivered {
        r.check_water(token);
    }
}

/// Writes what filtered connection `token` holds for the socket, in
/// order: the bytes sent before the filter was set, the filter's bytes
/// not yet written, then (if `take_queue`) the queue's bytes encoded a
/// [`ENCODE_STEP`] at a time, until the socket is full or all is written.
/// Returns whether nothing the filter holds is left unwritten.
fn write_encoded<F: Filter>(r: &mut Reactor, token: Token, take_queue: bool) -> bool {
    // Only a write that encodes needs the buffer: the others (a writable
    // edge, a read's answer) leave the reactor's extensions alone, unless
    // they give a connection's buffer back.
    let mut spare = if take_queue {
        r.take_encode_buffer()
    } else {
        Vec::new()
    };
    let done = write_encoded_with::<F>(r, token, take_queue, &mut spare);
    if spare.capacity() > 0 {
        r.put_encode_buffer(spare);
    }
    done
}

/// [`write_encoded`], with `spare` the reactor's encode buffer: taken by
/// a connection that has none, given back once all is written.
fn write_encoded_with<F: Filter>(
    r: &mut Reactor,
    token: Token,
    take_queue: bool,
    spare: &mut Vec<u8>,
) -> bool {
    loop {
        let Some((c, s)) = r.conn_and_hook_state::<Filtered<F>>(token) else {
            return true;
        };
        if c.is_closed() || c.socket_waits() {
            return false;
        }
        match write_held(c, s) {
            Ok(true) => {}
            Ok(false) => return false,
            Err(reason) => {
                r.begin_close(token, reason);
                return false;
            }
        }
        if !take_queue || c.queued_nothing() || s.finished || !s.filter.takes_output() {
            if c.queued_nothing() {
                // As the outbound queue does: an idle connection keeps no
                // buffer memory; its encode buffer goes back to the reactor.
                if spare.capacity() == 0 {
                    std::mem::swap(spare, &mut s.to_socket);
                } else {
                    s.to_socket = Vec::new();
                }
                s.file_buf = Vec::new();
            }
            return true;
        }
        if s.to_socket.capacity() == 0 {
            std::mem::swap(spare, &mut s.to_socket);
        }
        let (queue, socket) = c.queue_and_sink();
        // Nothing waits (all held bytes were written): encoded bytes may
        // go straight to the socket.
        let mut out = FilterOutput::direct(&mut s.to_socket, socket);
        let filter = &mut s.filter;
        let mut sink = FilterSink {
            take: |plain: &[u8]| {
                filter.encode(plain, &mut out);
                Ok(plain.len())
            },
            budget: ENCODE_STEP,
            file_buf: &mut s.file_buf,
        };
        let flushed = queue.flush(&mut sink);
        let refused = out.refused.take();
        s.holds = out.short;
        if out.misordered {
            r.begin_close(token, misordered());
            return false;
        }
        match flushed {
            Ok(n) if n > 0 => s.encoded = n,
            Ok(_) => return true,
            Err(e) => {
                let reason = c.write_failed(e);
                r.begin_close(token, reason);
                return false;
            }
        }
        // The core's rule for what the socket said: full waits for the
        // writable edge (the loop then stops at `socket_waits`), a
        // failure closes.
        if let Some(e) = refused {
            if let Err(reason) = c.wrote(Err(e), 1) {
                r.begin_close(token, reason);
                return false;
            }
        }
    }
}

/// Writes the bytes sent before the filter was set, the filter's bytes
/// in the connection's buffer, then what the filter itself holds:
/// `Ok(true)` once all are written, `Ok(false)` when the socket filled
/// (the core's rule: it waits for its writable edge), the reason to close
/// with when the write failed.
fn write_held<F: Filter>(c: &mut Conn, s: &mut Filtered<F>) -> Result<bool, CloseReason> {
    if s.clear_left > 0 {
        let (queue, conn) = c.queue_and_sink();
        let mut sink = ClearSink {
            conn,
            left: s.clear_left,
        };
        let result = queue.flush(&mut sink);
        s.clear_left = sink.left;
        match result {
            Err(e) => {
                c.wrote(Err(e), 1)?;
                return Ok(false);
            }
            Ok(_) if s.clear_left > 0 => {
                c.wrote(Err(io::ErrorKind::WouldBlock.into()), 1)?;
                return Ok(false);
            }
            Ok(_) => {}
        }
    }
    loop {
        if s.written < s.to_socket.len() {
            let left = &s.to_socket[s.written..];
            let result = c.sink().write_out(Out::Bytes(&[IoSlice::new(left)], &[]));
            s.written += c.wrote(result, left.len())?;
            if s.written < s.to_socket.len() {
                return Ok(false);
            }
        }
        s.to_socket.clear();
        s.written = 0;
        if !s.holds {
            return Ok(true);
        }
        let (refused, misordered_now) = {
            let mut out = FilterOutput::direct(&mut s.to_socket, c.sink());
            s.filter.own_output(&mut out);
            s.holds = out.short;
            (out.refused.take(), out.misordered)
        };
        if misordered_now {
            return Err(misordered());
        }
        if let Some(e) = refused {
            c.wrote(Err(e), 1)?;
            return Ok(false);
        }
    }
}

/// The outbound queue's bytes sent before the filter was set, as they are.
struct ClearSink<'a> {
    conn: ConnSink<'a>,
    left: usize,
}

impl Sink for ClearSink<'_> {
    fn write(&mut self, bufs: &[IoSlice<'_>], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
        // Only the clear bytes: they are at the head of the queue.
        let mut take = Vec::with_capacity(bufs.len());
        let mut room = self.left;
        for b in bufs {
            if room == 0 {
                break;
            }
            let n = b.len().min(room);
            take.push(IoSlice::new(&b[..n]));
            room -= n;
        }
        if take.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.conn.write_out(Out::Bytes(&take, fds))?;
        self.left -= n;
        Ok(n)
    }

    fn send_file(&mut self, _: &File, _: u64, _: usize) -> io::Result<usize> {
        // set_filter refuses a queue holding files.
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// Calls [`Filter::finish`] on connection `token`'s filter, once, when
/// nothing sent before the filter is left unwritten.
fn finish<F: Filter>(r: &mut Reactor, token: Token) -> bool {
    match r.hook_state_mut::<Filtered<F>>(token) {
        Some(s) if !s.finished && s.clear_left == 0 => {
            s.filter
                .finish(&mut FilterOutput::kept_only(&mut s.to_socket));
            s.holds = false;
            s.finished = true;
            true
        }
        _ => false,
    }
}

/// The queue of connection `token` was checked: once it (and what the
/// filter holds) is empty while a close or a half-close waits for that,
/// the filter's last message goes out (the close then waits for it, as
/// it is held).
fn finish_if_drained<F: Filter>(r: &mut Reactor, token: Token, queued: usize) {
    if queued > 0 || r.in_callback_of(token) {
        return;
    }
    let closes = r.closes_once_written(token);
    match r.conn(token) {
        Some(c) if closes || c.write_side() == WriteSide::ShutWhenDrained => {}
        _ => return,
    }
    if finish::<F>(r, token) {
        write_encoded::<F>(r, token, false);
    }
}

/// This side closes filtered connection `token` before its queue drained
/// (an inactivity timeout, a stop's deadline, `close_connection`): the
/// filter's last message and what it holds are written as far as the
/// socket takes them now, never waited for.
fn farewell<F: Filter>(r: &mut Reactor, token: Token) {
    finish::<F>(r, token);
    if let Some((c, s)) = r.conn_and_hook_state::<Filtered<F>>(token) {
        if !c.socket_waits() {
            // The connection is closing already: a failure changes nothing.
            let _ = write_held(c, s);
        }
    }
}

/// The handshake deadline of filtered connection `token` passed: it
/// closes, unless the handshake ended meanwhile.
fn handshake_expired<F: Filter>(r: &mut Reactor, token: Token, limit: Duration) {
    let Some(s) = r.hook_state_mut::<Filtered<F>>(token) else {
        return;
    };
    if s.deadline.take().is_none() {
        return;
    }
    let error = io::Error::new(io::ErrorKind::TimedOut, HandshakeTimeout { limit });
    r.begin_close(token, CloseReason::Protocol(error));
}

impl Connection<'_> {
    /// Puts `filter` between this connection's socket and its handler:
    /// from now on `receive_data` gets what [`Filter::decode`] makes of
    /// the bytes read, and the socket gets what [`Filter::encode`] makes
    /// of the bytes sent. Bytes sent before the call (earlier in the
    /// running callback, say: a `STARTTLS` answer) go out as they are,
    /// first. What [`Filter::own_output`] gives goes out at once (on a
    /// client still connecting, once the connect completes).
    ///
    /// # Errors
    /// `NotConnected` if the connection is closing; `AlreadyExists` if it
    /// has a filter, TLS or a proxy already; `Unsupported` if a file sent
    /// before is still queued (it would have to go out unfiltered in the
    /// middle of the filter's bytes).
    pub fn set_filter(&mut self, filter: impl Filter) -> io::Result<()> {
        let token = self.id().0;
        self.reactor().set_filter(token, filter)
    }

    /// This connection's filter, if it is an `F` (to ask a TLS session
    /// for its peer's certificate, a counter for its count).
    pub fn filter<F: Filter>(&self) -> Option<&F> {
        let token = self.id().0;
        self.reactor
            .hook_state::<Filtered<F>>(token)
            .map(|s| &s.filter)
    }

    /// [`Connection::filter`], mutably.
    pub fn filter_mut<F: Filter>(&mut self) -> Option<&mut F> {
        let token = self.id().0;
        self.reactor()
            .hook_state_mut::<Filtered<F>>(token)
            .map(|s| &mut s.filter)
    }
}

impl Reactor {
    fn set_filter<F: Filter>(&mut self, token: Token, mut filter: F) -> io::Result<()> {
        self.prepare_filter(token)?;
        let Some(c) = self.conn(token) else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        if c.queue_holds_files() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a file sent before the filter was set is still queued",
            ));
        }
        let clear_left = c.queued();
        let limit = filter.handshake_limit();
        let mut to_socket = Vec::new();
        filter.own_output(&mut FilterOutput::kept_only(&mut to_socket));
        let state = Filtered {
            filter,
            to_socket,
            written: 0,
            encoded: 0,
            clear_left,
            holds: false,
            finished: false,
            deadline: None,
            file_buf: Vec::new(),
        };
        self.hook_conn_with(token, &HooksFor::<F>::CONN, state)?;
        if let Some(limit) = limit {
            let timer = self.add_timer(limit, move |r| handshake_expired::<F>(r, token, limit));
            if let Some(s) = self.hook_state_mut::<Filtered<F>>(token) {
                s.deadline = Some(timer);
            }
        }
        // The filter's first bytes (a client's hello) go out now.
        write_encoded::<F>(self, token, false);
        if !self.in_callback_of(token) {
            self.check_water(token);
        }
        Ok(())
    }
}
