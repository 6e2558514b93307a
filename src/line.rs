//! Lines and counted binary blocks over a connection: EventMachine's
//! `LineText2`.
//!
//! This module owns the splitting of a byte stream into lines at a
//! delimiter, with switches to binary data and back made by the handler as
//! it goes: a [`LineHandler`] receives whole lines
//! ([`LineHandler::receive_line`]) and, when it asks for them, raw bytes
//! ([`LineHandler::receive_binary_data`]). [`LineProtocol`] is the
//! [`Layer`] that wraps it as a connection's handler: every other callback
//! (`post_init`, `receive_eof`, `receive_reply` with a worker's answer,
//! `unbind`, ...) reaches the line handler's own [`Handler`] methods, with
//! the mode methods below working there too.
//!
//! What it must never do: hold more than one partial line (at most the
//! maximum line length plus the delimiter), keep a large buffer after the
//! long line that needed it, copy a line that arrived whole in one read
//! (such a line is lent straight out of the reactor's read buffer), or
//! deliver anything after the connection was told to close.
//!
//! # Semantics
//!
//! - **Lines** come without their delimiter (default `\n`, any non-empty
//!   byte string with [`LineProtocol::with_delimiter`]), which may be split
//!   across reads. A `\r` before the delimiter is kept unless
//!   [`LineProtocol::strip_cr`] is on (EventMachine strips it when the
//!   delimiter is `\n`).
//! - **Maximum line length** (default [`DEFAULT_MAX_LINE_LEN`], 64 KiB,
//!   counted without the delimiter and a stripped `\r`): a longer line is
//!   reported to [`LineHandler::line_error`] as [`LineError::LineTooLong`]
//!   as soon as the buffered bytes prove it, without waiting for a
//!   delimiter, so a peer that never sends one cannot grow memory. The
//!   input then ends as at the end of stream: nothing more is read or
//!   delivered, and the handler's `receive_eof` runs, which by default
//!   closes once the queue is written (a reply sent from `line_error`
//!   still goes out; one still being computed can, if `receive_eof` waits
//!   for it).
//! - **Mode switches** are made through the connection every callback gets
//!   (a [`LineContext`] is a [`Connection`]):
//!   [`Connection::set_binary_mode`]`(n)` hands the next `n` bytes to
//!   `receive_binary_data`, in as many chunks as they arrive, then calls
//!   [`LineHandler::receive_end_of_binary_data`] and goes back to line mode
//!   (`n = 0` calls it at once); [`Connection::set_binary_mode_unbounded`]
//!   hands over every byte until [`Connection::set_line_mode`]. They work
//!   in every callback of the line handler, `post_init` and
//!   `receive_reply` included, and do nothing on a connection that is not
//!   a line connection. A switch
//!   applies to the very next byte, even within the same read. As in
//!   `LineText2`, line mode is back before the last chunk of a block is
//!   delivered, so a switch made in the last `receive_binary_data` or in
//!   `receive_end_of_binary_data` sticks (chains of blocks). In unbounded
//!   mode a chunk is the rest of a read, so a switch back to lines made
//!   while handling it applies from the next read.
//! - **Closing** the connection (`close_connection`,
//!   `close_connection_after_writing`, from a callback or through the
//!   reactor by id) stops delivery at once: the rest of the read is
//!   dropped.
//! - **End of stream**: a partial line is discarded, as EventMachine does;
//!   a counted block cut short gets no `receive_end_of_binary_data`, and
//!   [`Connection::mode`] in [`Handler::unbind`] shows how many bytes
//!   were missing. The line handler's `receive_eof` decides when to close
//!   (by default once the queue is written), so replies still being
//!   computed can go out after a client's half-close. After `unbind` the
//!   splitter starts afresh, for a `reconnect`.
//! - **Backpressure**: as every [`Layer`], the adapter pauses reading while
//!   the connection's outbound queue is over its high-water mark.
//!   [`Connection::pause`] takes effect at once, also inside one read: the
//!   line (or block chunk) whose callback paused is the last delivered, and
//!   the rest of the read is held (at most one read buffer) and delivered
//!   after [`Connection::resume`], before anything new is read. A server
//!   that pauses at a limit of requests in flight therefore never starts
//!   one past it, however many lines one read brought.
//!
//! `LineText2`'s `set_text_mode(n)` is its alias of `set_binary_mode(n)`
//! (raw "text" blocks), not a line mode; here it is spelled
//! `set_binary_mode` only.
//!
//! ```
//! use packet::line::{LineContext, LineHandler, LineProtocol};
//! use packet::{Connection, Handler, Reactor};
//!
//! /// `PUT n` is followed by `n` bytes of body; any other line is echoed.
//! struct Server { body: Vec<u8> }
//! impl Handler for Server {}
//! impl LineHandler for Server {
//!     fn receive_line(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
//!         match line.strip_prefix(b"PUT ") {
//!             Some(n) => {
//!                 let n = std::str::from_utf8(n).ok().and_then(|n| n.parse().ok());
//!                 match n {
//!                     Some(n) => ctx.set_binary_mode(n),
//!                     None => ctx.send_data(b"bad length\n"),
//!                 }
//!             }
//!             None => ctx.send_data(&[b"echo: ", line, b"\n"].concat()),
//!         }
//!     }
//!     fn receive_binary_data(&mut self, _ctx: &mut LineContext<'_>, data: &[u8]) {
//!         self.body.extend_from_slice(data);
//!     }
//!     fn receive_end_of_binary_data(&mut self, ctx: &mut LineContext<'_>) {
//!         let reply = format!("stored {} bytes\n", self.body.len());
//!         ctx.send_data(reply.as_bytes());
//!         self.body.clear();
//!     }
//! }
//!
//! struct Client { replies: Vec<Vec<u8>> }
//! impl Handler for Client {
//!     fn connection_completed(&mut self, conn: &mut Connection<'_>) {
//!         // The body holds a newline: in binary mode it is just a byte.
//!         conn.send_data(b"PUT 6\nab\ncdeping\n");
//!     }
//! }
//! impl LineHandler for Client {
//!     fn receive_line(&mut self, ctx: &mut LineContext<'_>, line: &[u8]) {
//!         self.replies.push(line.to_vec());
//!         if self.replies.len() == 2 {
//!             assert_eq!(self.replies, [&b"stored 6 bytes"[..], b"echo: ping"]);
//!             ctx.reactor().stop();
//!         }
//!     }
//! }
//!
//! Reactor::run(|r| {
//!     let server = r.start_server("127.0.0.1:0", || {
//!         LineProtocol::new(Server { body: Vec::new() })
//!     })?;
//!     let addr = r.server_addr(server)?.as_inet().unwrap();
//!     r.connect(addr, LineProtocol::new(Client { replies: Vec::new() }))?;
//!     Ok(())
//! })?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::fmt;

use crate::connection::{CloseReason, Connection, Handler, Layer};

/// The default maximum line length, 64 KiB.
pub const DEFAULT_MAX_LINE_LEN: usize = 64 * 1024;

/// A partial-line buffer whose capacity grew past this is freed, not
/// cleared, once its line is delivered.
const RETAINED_CAPACITY: usize = 4096;

/// What went wrong with the byte stream, as passed to
/// [`LineHandler::line_error`]. The connection is closed after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LineError {
    /// A line was longer than the maximum line length (the delimiter not
    /// counted). Reported as soon as the buffered bytes prove it, before
    /// its delimiter arrives.
    LineTooLong {
        /// The maximum line length.
        max: usize,
        /// The bytes of the line seen when it was refused (its delimiter
        /// not counted; more may have followed).
        got: usize,
    },
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            // The same words as the connection's close reason.
            LineError::LineTooLong { max, got } => {
                fmt::Display::fmt(&CloseReason::LineTooLong { max, got }, f)
            }
        }
    }
}

impl std::error::Error for LineError {}

/// What the splitter does with the next byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Splits bytes into lines at the delimiter (the initial mode).
    Line,
    /// The next `remaining` bytes are binary data; then
    /// [`LineHandler::receive_end_of_binary_data`] and line mode.
    Binary {
        /// Bytes of the block not yet received.
        remaining: usize,
    },
    /// Every byte is binary data until [`LineContext::set_line_mode`].
    BinaryUnbounded,
}

/// A handler that receives lines and binary blocks.
///
/// Its [`Handler`] methods (`post_init`, `receive_eof`, `receive_reply`,
/// `unbind`, ...) are called as for any handler, through
/// [`LineProtocol`]; its `receive_data` is not, since the bytes come as
/// lines and blocks here instead.
pub trait LineHandler: Handler {
    /// One line arrived, without its delimiter. `line` borrows the read
    /// buffer or the partial-line buffer: copy what must outlive the call.
    fn receive_line(&mut self, ctx: &mut LineContext<'_>, line: &[u8]);

    /// Bytes of a binary block (after [`Connection::set_binary_mode`] or
    /// [`Connection::set_binary_mode_unbounded`]), in the chunks they
    /// arrived in.
    fn receive_binary_data(&mut self, ctx: &mut LineContext<'_>, data: &[u8]) {
        let _ = (ctx, data);
    }

    /// The last byte of a counted block was delivered; the mode is line
    /// mode again unless a callback changed it since.
    fn receive_end_of_binary_data(&mut self, ctx: &mut LineContext<'_>) {
        let _ = ctx;
    }

    /// The stream broke a rule (a line too long). Reading stops and
    /// [`Handler::receive_eof`] follows, as at the end of stream; by
    /// default it closes once the queue is written, so a reply sent here
    /// still goes out.
    fn line_error(&mut self, ctx: &mut LineContext<'_>, error: LineError) {
        let _ = (ctx, error);
    }
}

/// What a line callback gets: the connection, whose [`Connection::mode`]
/// and mode switches reach the splitter.
pub type LineContext<'a> = Connection<'a>;

/// The splitter's state a line handler may change from its callbacks,
/// lent to them as [`LineProtocol`]'s [`Layer::State`].
#[derive(Debug)]
pub struct LineState {
    mode: Mode,
    /// The connection is closing: deliver nothing more.
    stopped: bool,
    /// The connection was paused by the last callback: stop, and hand the
    /// rest of the input back to be held.
    paused: bool,
}

impl LineState {
    fn new() -> LineState {
        LineState {
            mode: Mode::Line,
            stopped: false,
            paused: false,
        }
    }
}

/// The line splitter's mode switches, on the connection a line handler's
/// callbacks get. On a connection without [`LineProtocol`] they do
/// nothing and [`Connection::mode`] is `None`.
impl Connection<'_> {
    /// The splitter's current mode; `None` outside a line handler.
    pub fn mode(&self) -> Option<Mode> {
        self.layer_ref::<LineState>().map(|s| s.mode)
    }

    fn set_mode(&mut self, mode: Mode) {
        if let Some(s) = self.layer::<LineState>() {
            s.mode = mode;
        }
    }

    /// Hands the next `len` bytes to [`LineHandler::receive_binary_data`],
    /// then calls [`LineHandler::receive_end_of_binary_data`] and goes back
    /// to line mode. With `len = 0` the end comes as soon as this callback
    /// returns. Replaces a block in progress.
    pub fn set_binary_mode(&mut self, len: usize) {
        self.set_mode(Mode::Binary { remaining: len });
    }

    /// Hands every further byte to [`LineHandler::receive_binary_data`]
    /// until [`Connection::set_line_mode`].
    pub fn set_binary_mode_unbounded(&mut self) {
        self.set_mode(Mode::BinaryUnbounded);
    }

    /// Splits the following bytes into lines again. A counted block left
    /// early gets no [`LineHandler::receive_end_of_binary_data`].
    pub fn set_line_mode(&mut self) {
        self.set_mode(Mode::Line);
    }
}

/// Wraps a [`LineHandler`] as a connection's handler: splits bytes into
/// lines and binary blocks as they arrive, in any chunks, and passes every
/// other callback through (see [`Layer`]).
pub struct LineProtocol<H: LineHandler> {
    handler: H,
    splitter: Splitter,
    /// Input not delivered because the connection was paused in the
    /// middle of it; empty (no allocation) otherwise.
    held: Vec<u8>,
}

impl<H: LineHandler> LineProtocol<H> {
    /// Wraps `handler`: delimiter `\n`, `\r` kept, lines up to
    /// [`DEFAULT_MAX_LINE_LEN`] bytes.
    pub fn new(handler: H) -> Self {
        LineProtocol {
            handler,
            splitter: Splitter::new(),
            held: Vec::new(),
        }
    }

    /// Splits lines at `delimiter` instead of `\n` (for example `\r\n`).
    ///
    /// # Panics
    /// If `delimiter` is empty.
    pub fn with_delimiter(mut self, delimiter: &[u8]) -> Self {
        assert!(!delimiter.is_empty(), "line delimiter must not be empty");
        self.splitter.delimiter = delimiter.into();
        self
    }

    /// Refuses lines longer than `max` bytes (see [`LineError::LineTooLong`]).
    pub fn with_max_line_len(mut self, max: usize) -> Self {
        self.splitter.max_line_len = max;
        self
    }

    /// Also removes one `\r` right before the delimiter (so `\n` accepts
    /// `\r\n` lines too). Off by default: lines are delivered as sent.
    pub fn strip_cr(mut self, on: bool) -> Self {
        self.splitter.strip_cr = on;
        self
    }

    /// The wrapped handler.
    pub fn handler(&mut self) -> &mut H {
        &mut self.handler
    }

    fn feed(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        let LineProtocol {
            handler,
            splitter,
            held,
        } = self;
        let left = splitter.feed(data, |event, state| {
            let mut ctx = conn.with_layer(state);
            match event {
                Event::Line(line) => handler.receive_line(&mut ctx, line),
                Event::Binary(data) => handler.receive_binary_data(&mut ctx, data),
                Event::EndOfBinary => handler.receive_end_of_binary_data(&mut ctx),
                Event::Error(e) => {
                    // Nothing after a broken line can be trusted: the input
                    // ends here, as at the end of stream, and the handler
                    // decides when to close (by default once its queue is
                    // written; later if replies are still being computed),
                    // and `unbind` hears why.
                    let LineError::LineTooLong { max, got } = e;
                    ctx.set_close_reason(CloseReason::LineTooLong { max, got });
                    handler.line_error(&mut ctx, e);
                    ctx.pause();
                    handler.receive_eof(&mut ctx);
                }
            }
            // A close from the callback, or through the reactor by id,
            // ends delivery: the rest of the read is dropped. A pause
            // stops it until the resume.
            if conn.is_closing() {
                state.stopped = true;
            } else if conn.is_paused() {
                state.paused = true;
            }
        });
        if left > 0 {
            held.extend_from_slice(&data[data.len() - left..]);
        }
    }
}

impl<H: LineHandler> Layer for LineProtocol<H> {
    type Inner = H;
    type State = LineState;

    fn parts(&mut self) -> (&mut H, &mut LineState) {
        (&mut self.handler, &mut self.splitter.state)
    }

    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        if self.held.is_empty() {
            self.feed(conn, data);
        } else {
            // Input read while some is still held goes behind it.
            self.held.extend_from_slice(data);
            self.deliver_held(conn);
        }
    }

    fn deliver_held(&mut self, conn: &mut Connection<'_>) {
        if self.held.is_empty() || conn.is_paused() {
            return;
        }
        let held = std::mem::take(&mut self.held);
        self.feed(conn, &held);
    }

    fn after_callback(&mut self, conn: &mut Connection<'_>) {
        // Settles an empty block asked for outside a line callback.
        self.feed(conn, &[]);
    }

    fn reset(&mut self) {
        self.splitter.reset();
        self.held = Vec::new();
    }
}

/// What the splitter hands out.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Event<'a> {
    Line(&'a [u8]),
    Binary(&'a [u8]),
    EndOfBinary,
    Error(LineError),
}

/// The byte-stream state machine behind [`LineProtocol`], free of I/O.
struct Splitter {
    delimiter: Box<[u8]>,
    max_line_len: usize,
    strip_cr: bool,
    /// The start of a line whose delimiter has not arrived; never holds a
    /// whole delimiter, and is empty outside line mode.
    partial: Vec<u8>,
    state: LineState,
}

impl Splitter {
    fn new() -> Splitter {
        Splitter {
            delimiter: Box::new(*b"\n"),
            max_line_len: DEFAULT_MAX_LINE_LEN,
            strip_cr: false,
            partial: Vec::new(),
            state: LineState::new(),
        }
    }

    /// Back to the state of a new connection, configuration kept.
    fn reset(&mut self) {
        self.partial = Vec::new();
        self.state = LineState::new();
    }

    /// The most bytes a partial line may hold: beyond that, whatever
    /// follows, the line is too long.
    fn partial_limit(&self) -> usize {
        self.max_line_len
            .saturating_add(self.delimiter.len() - 1)
            .saturating_add(usize::from(self.strip_cr))
    }

    /// Splits `data`, calling `on` for each event with the state the
    /// handler may change; a change applies to the bytes right after the
    /// event. An empty `data` settles a pending empty block. Returns how
    /// many bytes at the end of `data` were left unsplit because `on` set
    /// `paused`: the caller feeds them again later.
    fn feed(&mut self, data: &[u8], mut on: impl FnMut(Event<'_>, &mut LineState)) -> usize {
        let limit = self.partial_limit();
        let Splitter {
            delimiter,
            max_line_len,
            strip_cr,
            partial,
            state,
        } = self;
        let (delimiter, max, strip_cr) = (&**delimiter, *max_line_len, *strip_cr);
        let too_long = |got: usize| Event::Error(LineError::LineTooLong { max, got });
        let mut rest = data;
        state.paused = false;
        loop {
            if state.stopped {
                *partial = Vec::new();
                return 0;
            }
            if state.paused {
                state.paused = false;
                return rest.len();
            }
            match state.mode {
                Mode::Binary { remaining: 0 } => {
                    state.mode = Mode::Line;
                    on(Event::EndOfBinary, state);
                }
                _ if rest.is_empty() => return 0,
                Mode::BinaryUnbounded => {
                    on(Event::Binary(rest), state);
                    rest = &[];
                }
                Mode::Binary { remaining } => {
                    let (chunk, tail) = rest.split_at(remaining.min(rest.len()));
                    rest = tail;
                    let left = remaining - chunk.len();
                    if left > 0 {
                        state.mode = Mode::Binary { remaining: left };
                        on(Event::Binary(chunk), state);
                    } else {
                        // Line mode first, so a switch made by either
                        // callback sticks.
                        state.mode = Mode::Line;
                        on(Event::Binary(chunk), state);
                        if !state.stopped {
                            on(Event::EndOfBinary, state);
                        }
                    }
                }
                Mode::Line if partial.is_empty() => match find(rest, delimiter) {
                    Some(i) => {
                        let line = trim_cr(&rest[..i], strip_cr);
                        rest = &rest[i + delimiter.len()..];
                        if line.len() > max {
                            on(too_long(line.len()), state);
                            state.stopped = true;
                        } else {
                            on(Event::Line(line), state);
                        }
                    }
                    None => {
                        if rest.len() > limit {
                            on(too_long(rest.len()), state);
                            state.stopped = true;
                        } else {
                            partial.extend_from_slice(rest);
                            rest = &[];
                        }
                    }
                },
                Mode::Line => {
                    // The delimiter may have begun in the buffer: the
                    // longest overlap is the earliest delimiter.
                    let overlap = (1..delimiter.len().min(partial.len() + 1))
                        .rev()
                        .find(|&k| {
                            partial.ends_with(&delimiter[..k]) && rest.starts_with(&delimiter[k..])
                        });
                    let (line_len, used) = match overlap {
                        Some(k) => (partial.len() - k, delimiter.len() - k),
                        None => match find(rest, delimiter) {
                            Some(i) => (partial.len() + i, i + delimiter.len()),
                            None => {
                                if partial.len() + rest.len() > limit {
                                    on(too_long(partial.len() + rest.len()), state);
                                    state.stopped = true;
                                } else {
                                    partial.extend_from_slice(rest);
                                    rest = &[];
                                }
                                continue;
                            }
                        },
                    };
                    // Judge the length before copying anything.
                    let last = if line_len > partial.len() {
                        rest.get(line_len - partial.len() - 1)
                    } else {
                        line_len.checked_sub(1).and_then(|j| partial.get(j))
                    };
                    let cr = strip_cr && last == Some(&b'\r');
                    if line_len - usize::from(cr) > max {
                        on(too_long(line_len - usize::from(cr)), state);
                        state.stopped = true;
                        continue;
                    }
                    if line_len > partial.len() {
                        partial.extend_from_slice(&rest[..line_len - partial.len()]);
                    }
                    rest = &rest[used..];
                    on(Event::Line(&partial[..line_len - usize::from(cr)]), state);
                    release(partial);
                }
            }
        }
    }
}

/// Empties the partial-line buffer, freeing it if a long line grew it.
fn release(partial: &mut Vec<u8>) {
    if partial.capacity() > RETAINED_CAPACITY {
        *partial = Vec::new();
    } else {
        partial.clear();
    }
}

fn trim_cr(line: &[u8], strip_cr: bool) -> &[u8] {
    match line {
        [head @ .., b'\r'] if strip_cr => head,
        _ => line,
    }
}

/// The position of the first `needle` in `hay`; `needle` is not empty.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, tail) = needle.split_first()?;
    let mut from = 0;
    while let Some(i) = hay.get(from..)?.iter().position(|&b| b == first) {
        let at = from + i;
        if hay.get(at + 1..)?.starts_with(tail) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An owned [`Event`], to compare runs.
    #[derive(Debug, Clone, PartialEq)]
    enum Ev {
        Line(Vec<u8>),
        Bin(Vec<u8>),
        End,
        TooLong,
    }

    fn splitter(delimiter: &[u8], max: usize, strip_cr: bool) -> Splitter {
        let mut s = Splitter::new();
        s.delimiter = delimiter.into();
        s.max_line_len = max;
        s.strip_cr = strip_cr;
        s
    }

    /// Feeds `chunks` with a scripted handler: `SIZE n` starts a block of
    /// `n` bytes, `BIN` unbounded binary, `QUIT` closes; an unbounded chunk
    /// ending in `END` goes back to lines.
    fn run(s: &mut Splitter, chunks: &[&[u8]]) -> Vec<Ev> {
        let mut got = Vec::new();
        for chunk in chunks {
            s.feed(chunk, |event, state| match event {
                Event::Line(line) => {
                    got.push(Ev::Line(line.to_vec()));
                    if let Some(n) = line.strip_prefix(b"SIZE ") {
                        let n = std::str::from_utf8(n).unwrap().parse().unwrap();
                        state.mode = Mode::Binary { remaining: n };
                    } else if line == b"BIN" {
                        state.mode = Mode::BinaryUnbounded;
                    } else if line == b"QUIT" {
                        state.stopped = true;
                    }
                }
                Event::Binary(data) => {
                    got.push(Ev::Bin(data.to_vec()));
                    if state.mode == Mode::BinaryUnbounded && data.ends_with(b"END") {
                        state.mode = Mode::Line;
                    }
                }
                Event::EndOfBinary => got.push(Ev::End),
                Event::Error(LineError::LineTooLong { .. }) => got.push(Ev::TooLong),
            });
        }
        got
    }

    /// Joins adjacent binary chunks: how they are cut depends on the reads.
    fn merged(events: Vec<Ev>) -> Vec<Ev> {
        let mut out: Vec<Ev> = Vec::new();
        for e in events {
            match (out.last_mut(), e) {
                (Some(Ev::Bin(a)), Ev::Bin(b)) => a.extend(b),
                (_, e) => out.push(e),
            }
        }
        out
    }

    fn lines(ls: &[&str]) -> Vec<Ev> {
        ls.iter().map(|l| Ev::Line(l.as_bytes().to_vec())).collect()
    }

    /// Lines of `input` found without the splitter: the oracle.
    fn reference_lines(input: &[u8], delimiter: &[u8]) -> Vec<Ev> {
        let mut out = Vec::new();
        let mut rest = input;
        while let Some(i) = rest.windows(delimiter.len()).position(|w| w == delimiter) {
            out.push(Ev::Line(rest[..i].to_vec()));
            rest = &rest[i + delimiter.len()..];
        }
        out
    }

    /// Every way to cut `input` in two and in three, and one byte at a
    /// time, gives `expect`.
    fn check_all_cuts(make: impl Fn() -> Splitter, input: &[u8], expect: &[Ev]) {
        let n = input.len();
        let one_by_one: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(merged(run(&mut make(), &one_by_one)), expect, "bytewise");
        for i in 0..=n {
            for j in i..=n {
                let cuts = [&input[..i], &input[i..j], &input[j..]];
                assert_eq!(merged(run(&mut make(), &cuts)), expect, "cut {i} {j}");
            }
        }
    }

    #[test]
    fn find_locates_the_first_occurrence() {
        assert_eq!(find(b"abc", b"\n"), None);
        assert_eq!(find(b"a\nb\n", b"\n"), Some(1));
        assert_eq!(find(b"a\r\r\n", b"\r\n"), Some(2));
        assert_eq!(find(b"aaab", b"aab"), Some(1));
        assert_eq!(find(b"aa", b"aab"), None);
        assert_eq!(find(b"", b"x"), None);
    }

    #[test]
    fn lines_come_out_the_same_however_the_input_is_cut() {
        let cases: [(&[u8], &[u8]); 4] = [
            (b"\n", b"hello\n\nworld\nno end"),
            (b"\r\n", b"a\r\n\r\nb\rc\nd\r\r\n\r"),
            // A delimiter that overlaps itself.
            (b"aab", b"xaaabyaabaabzaa"),
            (b"--", b"1-2--3---4----"),
        ];
        for (delimiter, input) in cases {
            let expect = reference_lines(input, delimiter);
            check_all_cuts(|| splitter(delimiter, 100, false), input, &expect);
        }
    }

    #[test]
    fn mode_switches_apply_to_the_next_byte_however_the_input_is_cut() {
        let input = b"SIZE 5\nab\ncdrest\nSIZE 0\nBIN\nraw\nEND\nSIZE 3\nxyz";
        let expect = vec![
            Ev::Line(b"SIZE 5".to_vec()),
            Ev::Bin(b"ab\ncd".to_vec()),
            Ev::End,
            Ev::Line(b"rest".to_vec()),
            Ev::Line(b"SIZE 0".to_vec()),
            Ev::End,
            Ev::Line(b"BIN".to_vec()),
            // Unbounded mode takes the rest of each read: only the whole
            // input in one read ends exactly here; see below.
            Ev::Bin(b"raw\nEND\nSIZE 3\nxyz".to_vec()),
        ];
        assert_eq!(run(&mut Splitter::new(), &[input]), expect);
        // Cut after `END` (and not inside it), the switch back to lines
        // lands there.
        let at = input.windows(3).position(|w| w == b"END").unwrap() + 3;
        let outside_end = |p: &usize| *p <= at - 3 || *p == at;
        let expect_cut = {
            let mut e = expect[..7].to_vec();
            e.extend([
                Ev::Bin(b"raw\nEND".to_vec()),
                Ev::Line(b"".to_vec()),
                Ev::Line(b"SIZE 3".to_vec()),
                Ev::Bin(b"xyz".to_vec()),
                Ev::End,
            ]);
            e
        };
        for i in (0..=at).filter(outside_end) {
            for j in (i..=at).filter(outside_end) {
                let cuts = [&input[..i], &input[i..j], &input[j..at], &input[at..]];
                assert_eq!(merged(run(&mut Splitter::new(), &cuts)), expect_cut);
            }
        }
    }

    #[test]
    fn a_line_inside_one_read_is_lent_not_copied() {
        let data = b"first\nsecond\npart";
        let range = data.as_ptr_range();
        let mut s = Splitter::new();
        let mut seen = 0;
        s.feed(data, |event, _| {
            let Event::Line(line) = event else {
                panic!("{event:?}")
            };
            assert!(range.contains(&line.as_ptr()));
            seen += 1;
        });
        assert_eq!(seen, 2);
        assert_eq!(s.partial, b"part");
    }

    #[test]
    fn the_buffer_of_a_long_line_is_freed() {
        let mut s = Splitter::new();
        let long = vec![b'x'; 50_000];
        assert_eq!(run(&mut s, &[&long, b"\nshort"]).len(), 1);
        assert_eq!(s.partial, b"short");
        assert!(s.partial.capacity() <= RETAINED_CAPACITY);
        assert_eq!(run(&mut s, &[&long, b"\n"]).len(), 1);
        assert_eq!(s.partial.capacity(), 0);
        // A short buffered line keeps its small buffer for the next one.
        assert_eq!(run(&mut s, &[b"ab", b"c\n"]), lines(&["abc"]));
        assert!(s.partial.capacity() > 0 && s.partial.is_empty());
    }

    #[test]
    fn the_maximum_length_is_allowed_and_one_more_is_refused() {
        for delimiter in [&b"\n"[..], b"\r\n"] {
            let ok = [&[b'x'; 8][..], delimiter].concat();
            let bad = [&[b'x'; 9][..], delimiter].concat();
            let expect_ok = lines(&["xxxxxxxx"]);
            check_all_cuts(|| splitter(delimiter, 8, false), &ok, &expect_ok);
            for cut in 0..=bad.len() {
                let mut s = splitter(delimiter, 8, false);
                let got = run(&mut s, &[&bad[..cut], &bad[cut..], b"more\n"]);
                assert_eq!(got, [Ev::TooLong], "{delimiter:?} cut {cut}");
                assert!(s.state.stopped && s.partial.capacity() == 0);
            }
        }
    }

    #[test]
    fn a_line_without_delimiter_is_refused_before_it_ends() {
        // With `\n`, 9 bytes of a line limited to 8 are too many already.
        let mut s = splitter(b"\n", 8, false);
        assert_eq!(run(&mut s, &[b"12345678"]), []);
        assert_eq!(run(&mut s, &[b"9"]), [Ev::TooLong]);
        // With `\r\n` the 9th byte may be the `\r`: the 10th decides.
        let mut s = splitter(b"\r\n", 8, false);
        assert_eq!(run(&mut s, &[b"12345678\r"]), []);
        assert_eq!(run(&mut s, &[b"\r"]), [Ev::TooLong]);
        let mut s = splitter(b"\r\n", 8, false);
        assert_eq!(run(&mut s, &[b"12345678\r", b"\n"]), lines(&["12345678"]));
        // The buffer never grows past the limit: one huge read is refused
        // without being copied.
        let mut s = splitter(b"\n", 8, false);
        assert_eq!(run(&mut s, &[&[b'x'; 100_000]]), [Ev::TooLong]);
        assert_eq!(s.partial.capacity(), 0);
    }

    #[test]
    fn strip_cr_removes_one_cr_and_does_not_count_it() {
        let input = b"a\r\n\r\nb\r\r\nc\nxxxx\r\n";
        let expect = lines(&["a", "", "b\r", "c", "xxxx"]);
        check_all_cuts(|| splitter(b"\n", 4, true), input, &expect);
        let kept = lines(&["a\r", "\r", "b\r\r", "c"]);
        assert_eq!(run(&mut splitter(b"\n", 4, false), &[&input[..11]]), kept);
    }

    #[test]
    fn nothing_is_delivered_after_a_close() {
        let mut s = Splitter::new();
        let got = run(&mut s, &[b"one\nQUIT\ntwo\nthr", b"ee\n"]);
        assert_eq!(got, lines(&["one", "QUIT"]));
        assert!(s.partial.is_empty());
    }

    #[test]
    fn switches_made_at_the_end_of_a_block_stick() {
        // Chained blocks: the next block is asked for from the end of the
        // last one, or from its last chunk.
        for from_last_chunk in [false, true] {
            let mut s = Splitter::new();
            s.state.mode = Mode::Binary { remaining: 3 };
            let mut got = Vec::new();
            let mut blocks = 0;
            s.feed(
                b"abcdefg
",
                |event, state| {
                    let chain = match event {
                        Event::Binary(d) => {
                            got.push(Ev::Bin(d.to_vec()));
                            from_last_chunk && state.mode == Mode::Line
                        }
                        Event::EndOfBinary => {
                            got.push(Ev::End);
                            !from_last_chunk
                        }
                        Event::Line(l) => {
                            got.push(Ev::Line(l.to_vec()));
                            false
                        }
                        Event::Error(_) => unreachable!(),
                    };
                    if chain && blocks < 2 {
                        blocks += 1;
                        state.mode = Mode::Binary { remaining: 2 };
                    }
                },
            );
            let expect = [
                Ev::Bin(b"abc".to_vec()),
                Ev::End,
                Ev::Bin(b"de".to_vec()),
                Ev::End,
                Ev::Bin(b"fg".to_vec()),
                Ev::End,
                Ev::Line(b"".to_vec()),
            ];
            assert_eq!(got, expect, "from last chunk: {from_last_chunk}");
        }
    }

    #[test]
    fn an_empty_block_ends_without_input() {
        let mut s = Splitter::new();
        s.state.mode = Mode::Binary { remaining: 0 };
        assert_eq!(run(&mut s, &[b""]), [Ev::End]);
        assert_eq!(s.state.mode, Mode::Line);
        assert_eq!(run(&mut s, &[b""]), []);
    }

    #[test]
    fn reset_forgets_the_connection() {
        let mut s = splitter(b"\n", 10, true);
        run(&mut s, &[b"SIZE 9\nabc"]);
        assert_eq!(s.state.mode, Mode::Binary { remaining: 6 });
        s.reset();
        run(&mut s, &[b"partial"]);
        s.reset();
        assert_eq!(s.state.mode, Mode::Line);
        assert!(s.partial.is_empty());
        assert_eq!(run(&mut s, &[b"x\r\r\n"]), lines(&["x\r"]));
    }
}
