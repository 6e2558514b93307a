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
//!   the socket carries (a cipher, a compressor, a byte counter). The core
//!   keeps its rules for the filtered connection: one read per connection
//!   per turn, the water marks and closes measured on what the handler
//!   sent, and the same [`CloseReason`] for the same socket failure.
//! - **A plug-in source**: any pollable descriptor (a pipe, an eventfd, a
//!   device) with its own callbacks, as a watch: `watch::Watcher` and
//!   `reactor.watches().watch(..)` (the `watch` feature). Datagram
//!   sockets, file watches and child processes are built on it.
//!
//! This module owns the public filter trait and its adapter onto the
//! core's connection hooks; it never reads or writes a connection's
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
//! use packet::extend::Filter;
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
//!     fn encode(&mut self, from_handler: &[u8], to_socket: &mut Vec<u8>) {
//!         rot13(from_handler, to_socket);
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

use std::io::{self, IoSlice};
use std::marker::PhantomData;

use crate::buffer::FilterSink;
use crate::connection::{CloseReason, Connection};
use crate::reactor::{ConnHooks, FilterHooks, Out, QueueFlush, Reactor, ReadBy};
use crate::slab::Token;

pub use crate::reactor::{Extension, Extensions, StopHold};

/// A protocol layer between a connection's socket and its handler, which
/// the handler does not see: set with [`Connection::set_filter`].
///
/// Both directions are byte streams: a call may carry any part of what
/// the peer or the handler wrote, so a filter that works on units (blocks,
/// records) keeps the partial ones itself.
///
/// ```
/// use std::io;
/// use packet::extend::Filter;
///
/// /// Flips every bit, both ways.
/// struct Invert;
/// impl Filter for Invert {
///     fn decode(&mut self, from_socket: &[u8], to_handler: &mut Vec<u8>) -> io::Result<()> {
///         to_handler.extend(from_socket.iter().map(|b| !b));
///         Ok(())
///     }
///     fn encode(&mut self, from_handler: &[u8], to_socket: &mut Vec<u8>) {
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
    /// `receive_data` got what was appended before the error).
    fn decode(&mut self, from_socket: &[u8], to_handler: &mut Vec<u8>) -> io::Result<()>;

    /// Bytes the handler sent (or a file it sent, read in pieces): append
    /// what the socket carries to `to_socket`.
    fn encode(&mut self, from_handler: &[u8], to_socket: &mut Vec<u8>);
}

/// Handler bytes encoded per step of a filtered connection's write: the
/// socket's usual buffer, so a step is one write.
const CHUNK: usize = 64 * 1024;

/// Capacity a filtered connection keeps for its encoded bytes once all
/// are written: a chatty connection reuses it, an idle one holds no more.
const KEEP: usize = 16 * 1024;

/// A filtered connection's state: the filter, and what it encoded that
/// the socket has not taken yet.
struct Filtered<F> {
    filter: F,
    to_socket: Vec<u8>,
    /// Of `to_socket`, the bytes written.
    written: usize,
}

/// The reactor's buffer for one read's decoded bytes (its extension
/// state), lent out while they are delivered: one for all filtered
/// connections, TLS's and users' alike, as a read buffer is, not one each.
#[derive(Default)]
struct Decoded(Vec<u8>);

impl Extension for Decoded {}

impl Reactor {
    /// Lends the reactor's buffer for one read's decoded bytes, empty.
    pub(crate) fn take_decode_buffer(&mut self) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.ext_or_default::<Decoded>().0);
        buf.clear();
        buf
    }

    /// Gives the buffer back, unless one read made it larger than a read
    /// step's worth (then it is dropped, not kept for ever).
    pub(crate) fn put_decode_buffer(&mut self, buf: Vec<u8>) {
        if buf.capacity() <= CHUNK {
            self.ext_or_default::<Decoded>().0 = buf;
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
            r.hook_state::<Filtered<F>>(token)
                .map_or(0, |s| s.to_socket.len() - s.written)
        },
        // A byte stream has no goodbye of its own.
        farewell: |_, _| {},
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
        queue_checked: |_, _, _| {},
        closing: |_, _| {},
        filter: Some(&Self::FILTER),
    };
}

/// Bytes read from filtered connection `token`: decoded, then to the
/// handler.
fn input<F: Filter>(r: &mut Reactor, token: Token, data: &[u8]) {
    let mut to_handler = r.take_decode_buffer();
    let Some(s) = r.hook_state_mut::<Filtered<F>>(token) else {
        return;
    };
    let decoded = s.filter.decode(data, &mut to_handler);
    if !to_handler.is_empty() {
        r.deliver(token, &to_handler);
    }
    r.put_decode_buffer(to_handler);
    if let Err(e) = decoded {
        r.begin_close(token, CloseReason::Protocol(e));
    }
}

/// Writes what filtered connection `token` encoded, then (if
/// `take_queue`) encodes the queue's bytes a [`CHUNK`] at a time and
/// writes them, until the socket is full or all is written. Returns
/// whether nothing encoded is left unwritten.
fn write_encoded<F: Filter>(r: &mut Reactor, token: Token, take_queue: bool) -> bool {
    let mut file_buf = Vec::new();
    loop {
        let Some((c, s)) = r.conn_and_hook_state::<Filtered<F>>(token) else {
            return true;
        };
        if c.is_closed() || c.socket_waits() {
            return false;
        }
        if s.written < s.to_socket.len() {
            let left = &s.to_socket[s.written..];
            let result = c.sink().write_out(Out::Bytes(&[IoSlice::new(left)], &[]));
            // The core's rule: a full socket waits for its writable edge,
            // a failure ends the connection as on every path.
            match c.wrote(result, left.len()) {
                Ok(n) => s.written += n,
                Err(reason) => {
                    r.begin_close(token, reason);
                    return false;
                }
            }
            if s.written < s.to_socket.len() {
                return false;
            }
        }
        s.to_socket.clear();
        s.written = 0;
        if !take_queue || c.queued_nothing() {
            if s.to_socket.capacity() > KEEP {
                s.to_socket = Vec::new();
            }
            return true;
        }
        let (filter, to_socket) = (&mut s.filter, &mut s.to_socket);
        let mut sink = FilterSink {
            take: |plain: &[u8]| {
                filter.encode(plain, to_socket);
                Ok(plain.len())
            },
            budget: CHUNK,
            file_buf: &mut file_buf,
        };
        match c.queue_and_sink().0.flush(&mut sink) {
            Ok(_) if !s.to_socket.is_empty() => {}
            Ok(_) => return true,
            Err(e) => {
                let reason = c.write_failed(e);
                r.begin_close(token, reason);
                return false;
            }
        }
    }
}

impl Connection<'_> {
    /// Puts `filter` between this connection's socket and its handler:
    /// from now on `receive_data` gets what [`Filter::decode`] makes of
    /// the bytes read, and the socket gets what [`Filter::encode`] makes
    /// of the bytes sent. Call it before sending (in `post_init` or
    /// `connection_completed`, say): bytes sent earlier in the running
    /// callback go out unfiltered, first.
    ///
    /// # Errors
    /// `NotConnected` if the connection is closing; `AlreadyExists` if it
    /// has a filter, TLS or a proxy already; `InvalidInput` if bytes sent
    /// before still wait in its outbound queue (they would be encoded).
    pub fn set_filter(&mut self, filter: impl Filter) -> io::Result<()> {
        let token = self.id().0;
        self.reactor().set_filter(token, filter)
    }
}

impl Reactor {
    fn set_filter<F: Filter>(&mut self, token: Token, filter: F) -> io::Result<()> {
        self.prepare_filter(token)?;
        let Some(c) = self.conn(token) else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        if !c.queued_nothing() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "bytes sent before set_filter are still queued",
            ));
        }
        let state = Filtered {
            filter,
            to_socket: Vec::new(),
            written: 0,
        };
        self.hook_conn_with(token, &HooksFor::<F>::CONN, state)
    }
}
