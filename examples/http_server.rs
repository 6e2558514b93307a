//! HTTP/1.1 server on the reactor: the counterpart of "Mongrel running on
//! top of Packet".
//!
//! ```text
//! cargo run --release --example http_server [ADDR] [--root DIR] [--threads N]
//! ```
//!
//! Listens on 127.0.0.1:8080 unless `ADDR` is given and prints
//! `listening on ADDR` once ready. `--threads N` runs N reactors on N threads
//! sharing the port through `SO_REUSEPORT`, as the echo server does.
//!
//! Behaviour:
//!
//! - `GET /` (with or without a query string) always answers
//!   `Hello, World!\n` as `text/plain`, also with `--root`: it is the
//!   benchmark path, answered from bytes precomputed once a second (when the
//!   cached `Date` changes), so it costs one parse and one copy.
//! - With `--root DIR`, any other path names a file below `DIR`: `200` with
//!   its length and a content type by extension, `404` when missing (or when
//!   a symlink leads outside the root), `403` for directories and other
//!   non-regular files. The path is percent-decoded first; a `..` segment, a
//!   NUL byte or a bad escape is `400`; empty and `.` segments are skipped
//!   (so `//etc/passwd` is `DIR/etc/passwd`); the result is canonicalized
//!   and must still lie below the canonical root. Without `--root`, other
//!   paths are `404`.
//! - Files up to 64 KiB are read in one go and answered inline, so they
//!   pipeline like `/`. Larger files are streamed in 64 KiB chunks: chunks
//!   are sent while the connection's outbound queue is under its high-water
//!   mark (256 KiB here), then reading from the client pauses and the next
//!   chunks follow from `outbound_drained`. A response never holds more than
//!   the high-water mark plus one chunk in the process. Files are read with
//!   blocking reads on the reactor thread (fine for a page cache; a real
//!   server would use a worker for cold disks).
//! - Keep-alive: HTTP/1.1 connections stay open unless the request says
//!   `Connection: close`; HTTP/1.0 ones close unless it says
//!   `Connection: keep-alive` (answered with the same header). Idle
//!   connections close after 60 s (`set_inactivity_timeout`).
//! - Pipelining: every complete request of one read is answered during the
//!   same `receive_data`, in order, so the responses leave in one write. A
//!   request split across reads waits in a per-connection buffer that exists
//!   only while a request is incomplete.
//! - Parsing is `httparse`'s, with at most 64 headers and an 8 KiB header
//!   section. Malformed: `400` and close. Header section over 8 KiB or more
//!   than 64 headers: `413 Payload Too Large` and close (the issue's choice;
//!   `431` would be the modern code). Methods other than GET and HEAD:
//!   `405` with `Allow: GET, HEAD`. HEAD sends the headers GET would.
//! - Request bodies (`Content-Length`) are skipped without being stored, up
//!   to 1 MiB; a larger one is `413` and close. A `Transfer-Encoding` body
//!   cannot be delimited by this server: `411 Length Required` and close.
//! - Every response has a `Date`, formatted once a second by a timer.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Read, Write as _};
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use packet::{Addr, Connection, Handler, Reactor, ServerOptions};

/// Headers accepted per request.
const MAX_HEADERS: usize = 64;
/// Largest header section (request line and headers).
const MAX_HEAD: usize = 8 * 1024;
/// Largest request body skipped; above it the connection is closed.
const MAX_BODY: u64 = 1024 * 1024;
/// File read size, and the largest file answered inline.
const CHUNK: usize = 64 * 1024;
/// Outbound bytes above which no more output is produced for a connection
/// until it drains (set as the reactor's default high-water mark).
const HIGH_WATER: usize = 256 * 1024;
/// Idle keep-alive connections are closed after this.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

const HELLO: &[u8] = b"Hello, World!\n";
const ALLOW: &str = "Allow: GET, HEAD\r\n";

/// What the response says about the connection.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Persist {
    /// HTTP/1.1 keep-alive: no header needed.
    Default = 0,
    /// HTTP/1.0 that asked for keep-alive.
    KeepAlive = 1,
    /// The connection closes after this response.
    Close = 2,
}

impl Persist {
    fn header(self) -> &'static str {
        match self {
            Persist::Default => "",
            Persist::KeepAlive => "Connection: keep-alive\r\n",
            Persist::Close => "Connection: close\r\n",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Status {
    Ok,
    BadRequest,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    LengthRequired,
    PayloadTooLarge,
    InternalError,
}

impl Status {
    fn line(self) -> &'static str {
        match self {
            Status::Ok => "200 OK",
            Status::BadRequest => "400 Bad Request",
            Status::Forbidden => "403 Forbidden",
            Status::NotFound => "404 Not Found",
            Status::MethodNotAllowed => "405 Method Not Allowed",
            Status::LengthRequired => "411 Length Required",
            Status::PayloadTooLarge => "413 Payload Too Large",
            Status::InternalError => "500 Internal Server Error",
        }
    }
}

/// What all connections of one reactor share.
struct Site {
    /// The canonical document root, if files are served.
    root: Option<PathBuf>,
    state: RefCell<SiteState>,
}

struct SiteState {
    /// `Date` value of the current second.
    date: [u8; 29],
    /// The whole `GET /` response for each [`Persist`], with `date`.
    hello: [Vec<u8>; 3],
    /// Response heads are formatted here.
    head: Vec<u8>,
    /// File reads land here (allocated on first use).
    chunk: Vec<u8>,
}

impl Site {
    fn new(root: Option<PathBuf>) -> Site {
        let site = Site {
            root,
            state: RefCell::new(SiteState {
                date: [b' '; 29],
                hello: Default::default(),
                head: Vec::with_capacity(256),
                chunk: Vec::new(),
            }),
        };
        site.set_time(SystemTime::now());
        site
    }

    /// Sets the `Date` and rebuilds the precomputed responses.
    fn set_time(&self, now: SystemTime) {
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let mut s = self.state.borrow_mut();
        s.date = http_date(secs);
        let date = s.date;
        for persist in [Persist::Default, Persist::KeepAlive, Persist::Close] {
            let out = &mut s.hello[persist as usize];
            write_head(
                out,
                &date,
                Status::Ok,
                "text/plain",
                HELLO.len() as u64,
                persist,
                "",
            );
            out.extend_from_slice(HELLO);
        }
    }
}

/// Refreshes the site's `Date` now and at the start of every wall-clock
/// second from now on.
fn keep_date(reactor: &mut Reactor, site: Rc<Site>) {
    let now = SystemTime::now();
    site.set_time(now);
    let into = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let wait = Duration::from_nanos(u64::from(1_000_000_000 - into));
    reactor.add_timer(wait, move |r| keep_date(r, site));
}

/// Writes a response head into `out` (cleared first).
fn write_head(
    out: &mut Vec<u8>,
    date: &[u8; 29],
    status: Status,
    content_type: &str,
    length: u64,
    persist: Persist,
    extra: &str,
) {
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.line().as_bytes());
    out.extend_from_slice(b"\r\nDate: ");
    out.extend_from_slice(date);
    out.extend_from_slice(b"\r\nContent-Type: ");
    out.extend_from_slice(content_type.as_bytes());
    out.extend_from_slice(b"\r\nContent-Length: ");
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{length}");
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(extra.as_bytes());
    out.extend_from_slice(persist.header().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) for Unix time `secs`.
fn http_date(secs: u64) -> [u8; 29] {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(DAYS[(days % 7) as usize].as_bytes());
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize].as_bytes());
    for (at, value, width) in [
        (5, day, 2),
        (12, year % 10_000, 4),
        (17, rem / 3600, 2),
        (20, rem / 60 % 60, 2),
        (23, rem % 60, 2),
    ] {
        let mut v = value;
        for i in (at..at + width).rev() {
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    out
}

/// A content type by file extension.
fn content_type(path: &Path) -> &'static str {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    match ext.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "txt" => "text/plain; charset=utf-8",
        "css" => "text/css",
        "js" | "mjs" => "text/javascript",
        "json" => "application/json",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The path of a request target (origin or absolute form), without query
/// or fragment.
fn target_path(target: &str) -> Option<&str> {
    let target = target.split(['?', '#']).next().unwrap_or("");
    if target.starts_with('/') {
        return Some(target);
    }
    let rest = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))?;
    Some(rest.find('/').map_or("/", |i| &rest[i..]))
}

/// Maps a request path (`/` already excluded) to a file path below `root`:
/// percent-decoded, split into segments, empty and `.` segments skipped.
/// `..`, NUL bytes and bad escapes are refused.
fn file_below(root: &Path, path: &str) -> Result<PathBuf, Status> {
    use std::os::unix::ffi::OsStrExt;
    let raw = path.as_bytes();
    let mut decoded = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'%' {
            let hi = raw.get(i + 1).copied().and_then(hex);
            let lo = raw.get(i + 2).copied().and_then(hex);
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(Status::BadRequest);
            };
            decoded.push(hi << 4 | lo);
            i += 3;
        } else {
            decoded.push(b);
            i += 1;
        }
    }
    if decoded.contains(&0) {
        return Err(Status::BadRequest);
    }
    let mut file = root.to_path_buf();
    for segment in decoded.split(|&b| b == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => return Err(Status::BadRequest),
            s => file.push(std::ffi::OsStr::from_bytes(s)),
        }
    }
    Ok(file)
}

/// Finds the regular file a path names below `root`, following symlinks
/// only as far as they stay below the root. Returns its canonical path and
/// size.
fn find_file(root: &Path, path: &str) -> Result<(PathBuf, u64), Status> {
    let file = file_below(root, path)?;
    let real = std::fs::canonicalize(&file).map_err(|_| Status::NotFound)?;
    if !real.starts_with(root) {
        return Err(Status::NotFound);
    }
    let meta = std::fs::metadata(&real).map_err(|_| Status::NotFound)?;
    if !meta.is_file() {
        return Err(Status::Forbidden);
    }
    Ok((real, meta.len()))
}

/// Reads until `buf` is full or end of file.
fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// What a request's headers say about framing and persistence.
#[derive(Default)]
struct Framing {
    close: bool,
    keep_alive: bool,
    length: Option<u64>,
    transfer_encoding: bool,
    invalid: bool,
}

impl Framing {
    fn of(headers: &[httparse::Header<'_>]) -> Framing {
        let mut f = Framing::default();
        for h in headers {
            let name = h.name.as_bytes();
            match name.len() {
                10 if name.eq_ignore_ascii_case(b"connection") => {
                    for token in h.value.split(|&b| b == b',') {
                        let token = token.trim_ascii();
                        if token.eq_ignore_ascii_case(b"close") {
                            f.close = true;
                        } else if token.eq_ignore_ascii_case(b"keep-alive") {
                            f.keep_alive = true;
                        }
                    }
                }
                14 if name.eq_ignore_ascii_case(b"content-length") => match parse_length(h.value) {
                    Some(n) if f.length.unwrap_or(n) == n => f.length = Some(n),
                    _ => f.invalid = true,
                },
                17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                    f.transfer_encoding = true;
                }
                _ => {}
            }
        }
        f
    }
}

fn parse_length(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        value
            .iter()
            .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')),
    )
}

/// A large file being sent in chunks.
struct Stream {
    file: File,
    remaining: u64,
    close_after: bool,
}

/// One connection.
struct Http {
    site: Rc<Site>,
    /// Input not yet handled: an incomplete request, or requests that wait
    /// while output drains. Empty (unallocated) otherwise.
    pending: Vec<u8>,
    /// Request body bytes still to skip.
    skip: u64,
    stream: Option<Box<Stream>>,
    /// A final response was sent: ignore everything else.
    closing: bool,
}

/// Whether to go on with the next pipelined request.
enum Next {
    Continue,
    Stop,
}

impl Http {
    fn new(site: Rc<Site>) -> Http {
        Http {
            site,
            pending: Vec::new(),
            skip: 0,
            stream: None,
            closing: false,
        }
    }

    /// Answers the complete requests at the start of `input`; returns the
    /// bytes consumed. Stops at an incomplete request, after a final
    /// response, while a file streams, or once output is above the
    /// high-water mark.
    fn process(&mut self, conn: &mut Connection<'_>, input: &[u8]) -> usize {
        let mut pos = 0;
        loop {
            if self.skip > 0 {
                let n = self.skip.min((input.len() - pos) as u64);
                self.skip -= n;
                pos += n as usize;
                if self.skip > 0 {
                    return pos;
                }
            }
            if pos == input.len() {
                return pos;
            }
            let rest = &input[pos..];
            let mut headers =
                [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut []);
            match req.parse_with_uninit_headers(rest, &mut headers) {
                Ok(httparse::Status::Complete(n)) => {
                    if n > MAX_HEAD {
                        self.fail(conn, Status::PayloadTooLarge);
                        return pos;
                    }
                    pos += n;
                    if let Next::Stop = self.answer(conn, &req) {
                        return pos;
                    }
                }
                Ok(httparse::Status::Partial) => {
                    if rest.len() > MAX_HEAD {
                        self.fail(conn, Status::PayloadTooLarge);
                    }
                    return pos;
                }
                Err(httparse::Error::TooManyHeaders) => {
                    self.fail(conn, Status::PayloadTooLarge);
                    return pos;
                }
                Err(_) => {
                    self.fail(conn, Status::BadRequest);
                    return pos;
                }
            }
        }
    }

    /// Answers one parsed request.
    fn answer(&mut self, conn: &mut Connection<'_>, req: &httparse::Request<'_, '_>) -> Next {
        let framing = Framing::of(req.headers);
        if framing.invalid {
            self.fail(conn, Status::BadRequest);
            return Next::Stop;
        }
        if framing.transfer_encoding {
            self.fail(conn, Status::LengthRequired);
            return Next::Stop;
        }
        let body = framing.length.unwrap_or(0);
        if body > MAX_BODY {
            self.fail(conn, Status::PayloadTooLarge);
            return Next::Stop;
        }
        self.skip = body;
        let persist = match req.version {
            Some(1) if !framing.close => Persist::Default,
            Some(0) if framing.keep_alive && !framing.close => Persist::KeepAlive,
            _ => Persist::Close,
        };
        let head_only = match req.method {
            Some("GET") => false,
            Some("HEAD") => true,
            _ => {
                self.error(conn, Status::MethodNotAllowed, persist, false);
                return self.finish(conn, persist);
            }
        };
        let Some(path) = req.path.and_then(target_path) else {
            self.fail(conn, Status::BadRequest);
            return Next::Stop;
        };
        if path == "/" {
            let s = self.site.state.borrow();
            let hello = &s.hello[persist as usize];
            let len = if head_only {
                hello.len() - HELLO.len()
            } else {
                hello.len()
            };
            conn.send_data(&hello[..len]);
            drop(s);
            return self.finish(conn, persist);
        }
        self.file(conn, path, persist, head_only);
        if self.stream.is_some() || self.closing {
            // The stream closes the connection itself if it must.
            return Next::Stop;
        }
        if let Next::Stop = self.finish(conn, persist) {
            return Next::Stop;
        }
        // A file can be large: produce no more output until it drains.
        if conn.outbound_len() > HIGH_WATER {
            self.wait_for_drain(conn);
            return Next::Stop;
        }
        Next::Continue
    }

    /// After a response: close if it was the last.
    fn finish(&mut self, conn: &mut Connection<'_>, persist: Persist) -> Next {
        if persist == Persist::Close {
            conn.close_connection_after_writing();
            self.closing = true;
            return Next::Stop;
        }
        Next::Continue
    }

    /// Answers a file request (the root's, or 404 without one).
    fn file(&mut self, conn: &mut Connection<'_>, path: &str, persist: Persist, head_only: bool) {
        let site = self.site.clone();
        let Some(root) = site.root.as_deref() else {
            return self.error(conn, Status::NotFound, persist, head_only);
        };
        let (real, size) = match find_file(root, path) {
            Ok(found) => found,
            Err(status) => return self.error(conn, status, persist, head_only),
        };
        let ctype = content_type(&real);
        let mut state = site.state.borrow_mut();
        let s = &mut *state;
        if head_only {
            write_head(&mut s.head, &s.date, Status::Ok, ctype, size, persist, "");
            conn.send_data(&s.head);
            return;
        }
        let Ok(mut file) = File::open(&real) else {
            drop(state);
            return self.error(conn, Status::NotFound, persist, head_only);
        };
        if size <= CHUNK as u64 {
            if s.chunk.len() < CHUNK {
                s.chunk.resize(CHUNK, 0);
            }
            let Ok(n) = read_full(&mut file, &mut s.chunk[..size as usize]) else {
                drop(state);
                return self.error(conn, Status::InternalError, persist, head_only);
            };
            write_head(
                &mut s.head,
                &s.date,
                Status::Ok,
                ctype,
                n as u64,
                persist,
                "",
            );
            conn.send_data(&s.head);
            conn.send_data(&s.chunk[..n]);
            return;
        }
        write_head(&mut s.head, &s.date, Status::Ok, ctype, size, persist, "");
        conn.send_data(&s.head);
        drop(state);
        self.stream = Some(Box::new(Stream {
            file,
            remaining: size,
            close_after: persist == Persist::Close,
        }));
        // Requests behind this one wait until the file is out.
        conn.pause();
        self.pump(conn);
    }

    /// Sends chunks of the streaming file while output is under the
    /// high-water mark; finishes the response at the end of the file.
    fn pump(&mut self, conn: &mut Connection<'_>) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let id = conn.id();
        let mut s = self.site.state.borrow_mut();
        if s.chunk.len() < CHUNK {
            s.chunk.resize(CHUNK, 0);
        }
        while stream.remaining > 0 {
            if conn.outbound_len() > HIGH_WATER {
                drop(s);
                self.wait_for_drain(conn);
                return;
            }
            let want = stream.remaining.min(CHUNK as u64) as usize;
            let sent = match read_full(&mut stream.file, &mut s.chunk[..want]) {
                // The file shrank: the promised length cannot be kept.
                Ok(0) | Err(_) => false,
                Ok(n) => {
                    stream.remaining -= n as u64;
                    conn.reactor().send_data_to(id, &s.chunk[..n])
                }
            };
            if !sent {
                drop(s);
                self.stream = None;
                self.closing = true;
                conn.close_connection();
                return;
            }
        }
        let close_after = stream.close_after;
        self.stream = None;
        if close_after {
            conn.close_connection_after_writing();
            self.closing = true;
        }
    }

    /// Stops reading until `outbound_drained`.
    fn wait_for_drain(&mut self, conn: &mut Connection<'_>) {
        conn.pause();
        // Setting the mark re-checks the queue including the bytes staged
        // during this callback, so `outbound_full` (and later
        // `outbound_drained`) is due even if only staged bytes are above
        // the mark.
        conn.set_high_water_mark(HIGH_WATER);
    }

    /// Sends an error response (body: the status line).
    fn error(
        &mut self,
        conn: &mut Connection<'_>,
        status: Status,
        persist: Persist,
        head_only: bool,
    ) {
        let mut s = self.site.state.borrow_mut();
        let s = &mut *s;
        let body = status.line();
        let extra = if status == Status::MethodNotAllowed {
            ALLOW
        } else {
            ""
        };
        let length = body.len() as u64 + 1;
        write_head(
            &mut s.head,
            &s.date,
            status,
            "text/plain",
            length,
            persist,
            extra,
        );
        if !head_only {
            s.head.extend_from_slice(body.as_bytes());
            s.head.push(b'\n');
        }
        conn.send_data(&s.head);
    }

    /// Sends a final error response and closes after writing it.
    fn fail(&mut self, conn: &mut Connection<'_>, status: Status) {
        self.error(conn, status, Persist::Close, false);
        conn.close_connection_after_writing();
        self.closing = true;
        self.pending = Vec::new();
    }

    /// Handles what waits in `pending`, keeping what is left.
    fn process_pending(&mut self, conn: &mut Connection<'_>) {
        let mut input = std::mem::take(&mut self.pending);
        let used = self.process(conn, &input);
        if self.closing {
            return;
        }
        if used < input.len() {
            input.drain(..used);
            if !conn.is_paused() && input.capacity() > 2 * MAX_HEAD {
                input.shrink_to_fit();
            }
            self.pending = input;
        }
        // All consumed: the buffer is freed.
    }
}

impl Handler for Http {
    fn post_init(&mut self, conn: &mut Connection<'_>) {
        conn.set_inactivity_timeout(Some(IDLE_TIMEOUT));
    }

    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        if self.closing {
            return;
        }
        if !self.pending.is_empty() || self.stream.is_some() || conn.is_paused() {
            self.pending.extend_from_slice(data);
            if self.stream.is_none() && !conn.is_paused() {
                self.process_pending(conn);
            }
            return;
        }
        // The common case: whole requests in one read, nothing buffered.
        let used = self.process(conn, data);
        if used < data.len() && !self.closing {
            self.pending.extend_from_slice(&data[used..]);
        }
    }

    fn outbound_full(&mut self, conn: &mut Connection<'_>) {
        conn.pause();
    }

    fn outbound_drained(&mut self, conn: &mut Connection<'_>) {
        if self.closing {
            return;
        }
        if self.stream.is_some() {
            self.pump(conn);
            if self.stream.is_some() || self.closing {
                return;
            }
        }
        conn.resume();
        if !self.pending.is_empty() {
            self.process_pending(conn);
        }
    }
}

/// Starts the HTTP server on `reactor`; returns the bound address.
fn start(
    reactor: &mut Reactor,
    addr: &str,
    options: ServerOptions,
    root: Option<PathBuf>,
) -> io::Result<Addr> {
    let site = Rc::new(Site::new(root));
    reactor.set_default_high_water_mark(HIGH_WATER);
    let server = {
        let site = site.clone();
        reactor.start_server_with(addr, options, move || Http::new(site.clone()))?
    };
    keep_date(reactor, site);
    reactor.server_addr(server)
}

fn usage() -> ! {
    eprintln!("usage: http_server [ADDR] [--root DIR] [--threads N]");
    std::process::exit(2);
}

fn main() -> io::Result<()> {
    let mut addr = "127.0.0.1:8080".to_string();
    let mut root = None;
    let mut threads = 1usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--root" => {
                let dir = args.next().unwrap_or_else(|| usage());
                let dir = std::fs::canonicalize(&dir)
                    .map_err(|e| io::Error::new(e.kind(), format!("--root {dir}: {e}")))?;
                if !dir.is_dir() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "--root needs a directory",
                    ));
                }
                root = Some(dir);
            }
            "--threads" => {
                threads = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .unwrap_or_else(|| usage());
            }
            a if a.starts_with('-') => usage(),
            a => addr = a.to_string(),
        }
    }

    // Reactors are not Send: each thread builds its own and reports the
    // bound address, or why it could not bind.
    let options = ServerOptions::new().reuse_port(threads > 1);
    let (tx, rx) = std::sync::mpsc::channel();
    let threads: Vec<_> = (0..threads)
        .map(|_| {
            let (addr, options, root, tx) =
                (addr.clone(), options.clone(), root.clone(), tx.clone());
            std::thread::spawn(move || -> io::Result<()> {
                let mut reactor = Reactor::new()?;
                let started = start(&mut reactor, &addr, options, root);
                let failed = started.is_err();
                let _ = tx.send(started);
                // Dropped now, not when the reactor stops: `main` reads
                // until every sender is gone.
                drop(tx);
                if failed {
                    return Ok(());
                }
                reactor.run_until_stopped()
            })
        })
        .collect();
    drop(tx);
    let mut bound = None;
    for started in rx {
        bound = Some(started?);
    }
    println!("listening on {}", bound.expect("at least one thread"));
    for t in threads {
        t.join().expect("reactor thread panicked")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A server on its own reactor thread, stopped when dropped.
    struct Server {
        addr: SocketAddr,
        handle: packet::ReactorHandle,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Server {
        fn start(root: Option<&Path>) -> Server {
            let root = root.map(|r| std::fs::canonicalize(r).unwrap());
            let (tx, rx) = std::sync::mpsc::channel();
            let thread = std::thread::spawn(move || {
                let mut reactor = Reactor::new().unwrap();
                let addr = start(&mut reactor, "127.0.0.1:0", ServerOptions::new(), root).unwrap();
                tx.send((addr.as_inet().unwrap(), reactor.handle()))
                    .unwrap();
                reactor.run_until_stopped().unwrap();
            });
            let (addr, handle) = rx.recv().unwrap();
            Server {
                addr,
                handle,
                thread: Some(thread),
            }
        }

        fn connect(&self) -> Client {
            let stream = TcpStream::connect(self.addr).unwrap();
            // A bound, not a timing assertion: a hung test fails instead.
            stream
                .set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            Client {
                reader: BufReader::new(stream.try_clone().unwrap()),
                stream,
            }
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.handle.stop();
            if let Some(t) = self.thread.take() {
                let joined = t.join();
                if !std::thread::panicking() {
                    joined.unwrap();
                }
            }
        }
    }

    struct Client {
        stream: TcpStream,
        reader: BufReader<TcpStream>,
    }

    #[derive(Debug)]
    struct Response {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Response {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    impl Client {
        fn send(&mut self, bytes: &[u8]) {
            self.stream.write_all(bytes).unwrap();
        }

        fn get(&mut self, path: &str) -> Response {
            self.send(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
            self.response(false)
        }

        /// Reads one response; `head_only` for the answer to a HEAD.
        fn response(&mut self, head_only: bool) -> Response {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            assert!(line.starts_with("HTTP/1.1 "), "status line {line:?}");
            let status = line[9..12].parse().unwrap();
            let mut headers = Vec::new();
            loop {
                let mut line = String::new();
                self.reader.read_line(&mut line).unwrap();
                let line = line.strip_suffix("\r\n").expect("CRLF line");
                if line.is_empty() {
                    break;
                }
                let (name, value) = line.split_once(": ").expect("header line");
                headers.push((name.to_string(), value.to_string()));
            }
            let mut response = Response {
                status,
                headers,
                body: Vec::new(),
            };
            let length: usize = response
                .header("Content-Length")
                .expect("Content-Length")
                .parse()
                .unwrap();
            if !head_only {
                response.body = vec![0; length];
                self.reader.read_exact(&mut response.body).unwrap();
            }
            response
        }

        /// Whether the server closed the connection (end of stream, with
        /// nothing else sent).
        fn assert_closed(&mut self) {
            let mut rest = Vec::new();
            match self.reader.read_to_end(&mut rest) {
                Ok(_) => assert!(rest.is_empty(), "unexpected bytes {rest:?}"),
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
            }
        }
    }

    /// A fresh directory under the system's temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "packet-http-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn hello_ok(r: &Response) {
        assert_eq!(r.status, 200);
        assert_eq!(r.body, HELLO);
        assert_eq!(r.header("Content-Length"), Some("14"));
        assert_eq!(r.header("Content-Type"), Some("text/plain"));
        assert_eq!(r.header("Date").map(str::len), Some(29));
    }

    #[test]
    fn get_root_says_hello() {
        let server = Server::start(None);
        let mut c = server.connect();
        let r = c.get("/");
        hello_ok(&r);
        assert_eq!(r.header("Connection"), None);
        hello_ok(&c.get("/?q=1"));
        hello_ok(&c.get("http://example.com/"));
    }

    #[test]
    fn keep_alive_serves_sequential_requests() {
        let server = Server::start(None);
        let mut c = server.connect();
        for _ in 0..3 {
            hello_ok(&c.get("/"));
        }
        assert_eq!(c.get("/nothing").status, 404);
    }

    #[test]
    fn pipelined_requests_are_answered_in_order() {
        let dir = TempDir::new();
        for i in 0..10 {
            std::fs::write(dir.0.join(format!("f{i}.txt")), format!("file {i}\n")).unwrap();
        }
        let server = Server::start(Some(&dir.0));
        let mut c = server.connect();
        let mut batch = String::new();
        for i in 0..10 {
            let path = match i % 3 {
                0 => "/".to_string(),
                1 => format!("/f{i}.txt"),
                _ => format!("/missing{i}"),
            };
            batch.push_str(&format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n"));
        }
        c.send(batch.as_bytes());
        for i in 0..10 {
            let r = c.response(false);
            match i % 3 {
                0 => hello_ok(&r),
                1 => {
                    assert_eq!(r.status, 200);
                    assert_eq!(r.body, format!("file {i}\n").as_bytes());
                    assert_eq!(r.header("Content-Type"), Some("text/plain; charset=utf-8"));
                }
                _ => assert_eq!(r.status, 404),
            }
        }
        hello_ok(&c.get("/"));
    }

    #[test]
    fn request_split_byte_by_byte() {
        let server = Server::start(None);
        let mut c = server.connect();
        c.stream.set_nodelay(true).unwrap();
        let request = b"GET / HTTP/1.1\r\nHost: t\r\nUser-Agent: split\r\n\r\n";
        for _ in 0..2 {
            for b in request {
                c.send(std::slice::from_ref(b));
            }
            hello_ok(&c.response(false));
        }
    }

    #[test]
    fn head_sends_headers_only() {
        let dir = TempDir::new();
        std::fs::write(dir.0.join("page.html"), "<p>hi</p>").unwrap();
        let server = Server::start(Some(&dir.0));
        let mut c = server.connect();
        c.send(b"HEAD / HTTP/1.1\r\n\r\n");
        let r = c.response(true);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Content-Length"), Some("14"));
        c.send(b"HEAD /page.html HTTP/1.1\r\n\r\n");
        let r = c.response(true);
        assert_eq!(r.header("Content-Length"), Some("9"));
        assert_eq!(r.header("Content-Type"), Some("text/html; charset=utf-8"));
        c.send(b"HEAD /missing HTTP/1.1\r\n\r\n");
        assert_eq!(c.response(true).status, 404);
        // No body bytes were sent: the next response follows at once.
        hello_ok(&c.get("/"));
    }

    #[test]
    fn missing_files_and_directories() {
        let dir = TempDir::new();
        std::fs::create_dir(dir.0.join("sub")).unwrap();
        std::fs::write(dir.0.join("sub/x.json"), "{}").unwrap();
        let server = Server::start(Some(&dir.0));
        let mut c = server.connect();
        let r = c.get("/nope.txt");
        assert_eq!(r.status, 404);
        assert_eq!(r.body, b"404 Not Found\n");
        assert_eq!(c.get("/sub").status, 403);
        assert_eq!(c.get("/sub/").status, 403);
        let r = c.get("/sub/x.json");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"{}"[..]));
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        assert_eq!(c.get("/sub/%78.json").body, b"{}");
        // Without a root, only `/` exists.
        let bare = Server::start(None);
        assert_eq!(bare.connect().get("/sub/x.json").status, 404);
    }

    #[test]
    fn paths_never_leave_the_root() {
        let dir = TempDir::new();
        let root = dir.0.join("root");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(dir.0.join("secret.txt"), "SECRET").unwrap();
        std::fs::write(root.join("inside.txt"), "inside").unwrap();
        std::os::unix::fs::symlink("../secret.txt", root.join("escape.txt")).unwrap();
        std::os::unix::fs::symlink("inside.txt", root.join("alias.txt")).unwrap();
        let server = Server::start(Some(&root));
        let mut c = server.connect();
        for path in [
            "/../secret.txt",
            "/%2e%2e/secret.txt",
            "/%2E%2E/secret.txt",
            "/..%2fsecret.txt",
            "/%2e%2e%2fsecret.txt",
            "/./../secret.txt",
            "/inside.txt/../../secret.txt",
            "/escape.txt",
            "//etc/passwd",
            "/etc/passwd",
            "/../../../../../../etc/passwd",
            "/%00",
            "/inside.txt%00.html",
            "/%zz",
        ] {
            let r = c.get(path);
            assert_ne!(r.status, 200, "{path}");
            assert!(!r.body.windows(6).any(|w| w == b"SECRET"), "{path}");
            if r.header("Connection") == Some("close") {
                c = server.connect();
            }
        }
        assert_eq!(c.get("/inside.txt").body, b"inside");
        assert_eq!(c.get("//./inside.txt").body, b"inside");
        assert_eq!(c.get("/alias.txt").body, b"inside");
    }

    #[test]
    fn large_file_streams_byte_exact() {
        let dir = TempDir::new();
        // 4 MiB and an odd tail, of a pattern that shows misplaced chunks.
        let data: Vec<u8> = (0..4 * 1024 * 1024 + 12_345u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(dir.0.join("big.bin"), &data).unwrap();
        let server = Server::start(Some(&dir.0));
        let mut c = server.connect();
        // Pipelined behind and in front of the file, which must wait for it.
        c.send(
            b"GET /big.bin HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\nHEAD /big.bin HTTP/1.1\r\n\r\n",
        );
        // Not reading for a moment lets the outbound queue fill, so the rest
        // comes from `outbound_drained`.
        std::thread::sleep(Duration::from_millis(200));
        let r = c.response(false);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Content-Type"), Some("application/octet-stream"));
        assert!(r.body == data, "body differs");
        hello_ok(&c.response(false));
        let r = c.response(true);
        assert_eq!(
            r.header("Content-Length"),
            Some(data.len().to_string().as_str())
        );
        // And once more with `Connection: close`: the close waits for the
        // whole file.
        c.send(b"GET /big.bin HTTP/1.1\r\nConnection: close\r\n\r\n");
        let r = c.response(false);
        assert!(r.body == data, "body differs");
        assert_eq!(r.header("Connection"), Some("close"));
        c.assert_closed();
    }

    #[test]
    fn malformed_request_is_400_and_closes() {
        let server = Server::start(None);
        for bad in [
            &b"GARBAGE\r\n\r\n"[..],
            b"GET / HTTP/9.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"GET nowhere HTTP/1.1\r\n\r\n",
        ] {
            let mut c = server.connect();
            c.send(bad);
            let r = c.response(false);
            assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(bad));
            assert_eq!(r.header("Connection"), Some("close"));
            c.assert_closed();
        }
    }

    #[test]
    fn oversized_headers_are_413_and_close() {
        let server = Server::start(None);
        let mut c = server.connect();
        let big = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        c.send(big.as_bytes());
        let r = c.response(false);
        assert_eq!(r.status, 413);
        assert_eq!(r.header("Connection"), Some("close"));
        c.assert_closed();

        let mut c = server.connect();
        let mut many = String::from("GET / HTTP/1.1\r\n");
        for i in 0..=MAX_HEADERS {
            many.push_str(&format!("X-{i}: {i}\r\n"));
        }
        many.push_str("\r\n");
        c.send(many.as_bytes());
        assert_eq!(c.response(false).status, 413);
        c.assert_closed();

        // 64 headers are fine.
        let mut c = server.connect();
        let mut ok = String::from("GET / HTTP/1.1\r\n");
        for i in 0..MAX_HEADERS {
            ok.push_str(&format!("X-{i}: {i}\r\n"));
        }
        ok.push_str("\r\n");
        c.send(ok.as_bytes());
        hello_ok(&c.response(false));
    }

    #[test]
    fn connection_close_is_honoured() {
        let server = Server::start(None);
        let mut c = server.connect();
        c.send(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\nGET / HTTP/1.1\r\n\r\n");
        let r = c.response(false);
        hello_ok(&r);
        assert_eq!(r.header("Connection"), Some("close"));
        c.assert_closed();
    }

    #[test]
    fn http_1_0_closes_unless_keep_alive() {
        let server = Server::start(None);
        let mut c = server.connect();
        c.send(b"GET / HTTP/1.0\r\n\r\n");
        let r = c.response(false);
        hello_ok(&r);
        assert_eq!(r.header("Connection"), Some("close"));
        c.assert_closed();

        let mut c = server.connect();
        for _ in 0..2 {
            c.send(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
            let r = c.response(false);
            hello_ok(&r);
            assert_eq!(r.header("Connection"), Some("keep-alive"));
        }
    }

    #[test]
    fn other_methods_and_bodies() {
        let server = Server::start(None);
        let mut c = server.connect();
        // The body is skipped, in pieces, and the next request answered.
        c.send(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n01234");
        let r = c.response(false);
        assert_eq!(r.status, 405);
        assert_eq!(r.header("Allow"), Some("GET, HEAD"));
        c.send(b"56789GET / HTTP/1.1\r\n\r\n");
        hello_ok(&c.response(false));
        // A GET with a body.
        c.send(b"GET / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n\r\n");
        hello_ok(&c.response(false));
        hello_ok(&c.response(false));

        let mut c = server.connect();
        c.send(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(c.response(false).status, 411);
        c.assert_closed();

        let mut c = server.connect();
        c.send(b"POST / HTTP/1.1\r\nContent-Length: 1048577\r\n\r\n");
        assert_eq!(c.response(false).status, 413);
        c.assert_closed();
    }

    #[test]
    fn dates_and_paths() {
        assert_eq!(&http_date(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&http_date(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(&http_date(951_782_400), b"Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(&http_date(4_102_444_799), b"Thu, 31 Dec 2099 23:59:59 GMT");
        assert_eq!(target_path("/a?b#c"), Some("/a"));
        assert_eq!(target_path("http://h:1"), Some("/"));
        assert_eq!(target_path("https://h/x/y?z"), Some("/x/y"));
        assert_eq!(target_path("*"), None);
        let root = Path::new("/srv");
        assert_eq!(
            file_below(root, "//a/./b%20c/"),
            Ok(PathBuf::from("/srv/a/b c"))
        );
        assert_eq!(file_below(root, "/a/%2e%2E/b"), Err(Status::BadRequest));
        assert_eq!(file_below(root, "/a%2f..%2fb"), Err(Status::BadRequest));
        assert_eq!(file_below(root, "/a%"), Err(Status::BadRequest));
        assert_eq!(file_below(root, "/a%00"), Err(Status::BadRequest));
        assert_eq!(parse_length(b" 42 "), Some(42));
        assert_eq!(parse_length(b"-1"), None);
        assert_eq!(parse_length(b"99999999999999999999"), None);
    }
}
