// The request handling of the HTTP server example: everything but `main`.
//
// `examples/http_server.rs` pastes it in with `include!`, and so does the
// `http_request` fuzz target (`fuzz/fuzz_targets/http_request.rs`), which
// drives the real `Http` handler over a socket pair. Plain `//` comments:
// a file pasted with `include!` may not have inner attributes or `//!`
// docs. The module documentation is in `examples/http_server.rs`.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Read, Write as _};
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use packet::{Connection, Handler, Reactor};

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

/// The default request-header deadline: nginx's `client_header_timeout`.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(60);

/// The request-header deadline in ms (0: off), set once by `main` from
/// `--header-timeout` before any reactor runs.
pub static HEADER_TIMEOUT_MS: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(DEFAULT_HEADER_TIMEOUT.as_millis() as u64);

/// What a client whose header did not arrive in time gets before the close.
const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: text/plain\r\nContent-Length: 20\r\nConnection: close\r\n\r\n408 Request Timeout\n";

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
    /// Requests parsed so far, and the deadline of the header being
    /// received with the count it was set at.
    parsed: u64,
    header_deadline: Option<(packet::TimerId, u64)>,
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
            parsed: 0,
            header_deadline: None,
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
                    self.parsed += 1;
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
        // A file that fit under the mark went out whole inside `pump`: no
        // `outbound_drained` will come to resume reading.
        if self.stream.is_none() && !self.closing {
            conn.resume();
        }
    }

    /// Sends chunks of the streaming file while output is under the
    /// high-water mark; finishes the response at the end of the file.
    fn pump(&mut self, conn: &mut Connection<'_>) {
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
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
                    conn.try_send_data(&s.chunk[..n])
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

    /// Keeps the request-header deadline: a partial header being received
    /// (not requests waiting behind a response) must be complete within
    /// the deadline of its first byte, however slowly its bytes trickle in
    /// (the inactivity timeout measures silence only). A timer per header,
    /// set once, not per byte.
    fn watch_header(&mut self, conn: &mut Connection<'_>) {
        let receiving =
            !self.closing && !self.pending.is_empty() && self.stream.is_none() && !conn.is_paused();
        match self.header_deadline {
            Some((_, at)) if receiving && at == self.parsed => return,
            Some((timer, _)) => {
                conn.reactor().cancel_timer(timer);
                self.header_deadline = None;
            }
            None => {}
        }
        let ms = HEADER_TIMEOUT_MS.load(std::sync::atomic::Ordering::Relaxed);
        if !receiving || ms == 0 {
            return;
        }
        let id = conn.id();
        let timer = conn
            .reactor()
            .add_timer(Duration::from_millis(ms), move |r| {
                if let Some(mut conn) = r.connection(id) {
                    if conn.try_send_data(REQUEST_TIMEOUT) {
                        conn.close_connection_after_writing();
                    }
                }
            });
        self.header_deadline = Some((timer, self.parsed));
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
            self.watch_header(conn);
            return;
        }
        // The common case: whole requests in one read, nothing buffered.
        let used = self.process(conn, data);
        if used < data.len() && !self.closing {
            self.pending.extend_from_slice(&data[used..]);
        }
        if self.header_deadline.is_some() || !self.pending.is_empty() {
            self.watch_header(conn);
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
