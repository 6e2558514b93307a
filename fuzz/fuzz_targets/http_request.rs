//! The HTTP server example's real request handling (`Http`, pasted in from
//! `examples/http_server/handler.rs`), fed arbitrary bytes over a Unix
//! socket pair by a real reactor: pipelining, partial requests, bodies,
//! limits, file paths below a document root, and large files streamed
//! under backpressure.
//!
//! Input: `[chunk] [flags] [bytes...]`. `bytes` is written to the server
//! `chunk` bytes per loop turn (0: at once), then the client half-closes.
//! Flag bit 0 serves files from a document root (with a symlink out of it
//! and a secret next to it); bit 1 reads the responses only every 16th
//! turn, a slow reader.
//!
//! Must hold: no panic; the connection ends by itself once the client has
//! half-closed (no hang), with a clean reason; nothing outside the root is
//! ever served; the output is HTTP responses; and memory stays bounded
//! (run with `-rss_limit_mb` / `-malloc_limit_mb`).
#![no_main]
// The example's `start` and the pieces only `main` uses are not called here.
#![allow(dead_code)]

include!("../../examples/http_server/handler.rs");

use std::cell::Cell;
use std::os::unix::net::UnixStream;

use libfuzzer_sys::fuzz_target;

/// Stored next to the document root, never below it.
const SECRET: &[u8] = b"SECRET-OUTSIDE-THE-ROOT";
/// The size of `big.bin`, larger than `CHUNK` so that it is streamed, and
/// larger than what the socket pair's buffer and the high-water mark hold
/// together, so that its stream always ends in `outbound_drained`.
/// `PACKET_FUZZ_HTTP_BIG=102400` makes it small enough to finish within
/// the request's own callback, which reproduces the example's bug of a
/// connection left paused after such a file (RELIABILITY.md).
fn big_size() -> usize {
    std::env::var("PACKET_FUZZ_HTTP_BIG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(768 * 1024)
}
/// Loop turns one input may take before it counts as a hang.
const MAX_TURNS: u64 = 200_000;

/// The document root: `index.html`, `big.bin`, `sub/a.txt`, `alias.html`
/// (a symlink to `index.html`) and `escape.txt` (a symlink to the secret,
/// one level up). One directory per file size in the system's temp dir,
/// shared by every fuzzing process and run: files are only written when
/// missing, each to a temporary name first and then renamed, so parallel
/// jobs never see a partial file.
fn document_root() -> &'static Path {
    static ROOT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    ROOT.get_or_init(|| {
        let base = std::env::temp_dir().join(format!("packet-fuzz-http-{}", big_size()));
        let root = base.join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        let put = |path: PathBuf, bytes: &[u8]| {
            if std::fs::metadata(&path).is_ok_and(|m| m.len() == bytes.len() as u64) {
                return;
            }
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, bytes).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        };
        put(base.join("secret.txt"), SECRET);
        put(root.join("index.html"), b"<p>index</p>\n");
        put(root.join("sub/a.txt"), b"a\n");
        let big: Vec<u8> = (0..big_size())
            .map(|i| b"0123456789abcdef"[i % 16])
            .collect();
        put(root.join("big.bin"), &big);
        let _ = std::os::unix::fs::symlink("index.html", root.join("alias.html"));
        let _ = std::os::unix::fs::symlink("../secret.txt", root.join("escape.txt"));
        std::fs::canonicalize(&root).unwrap()
    })
}

/// The example's handler, plus a note of how the connection ended and a
/// stop of the reactor.
struct Probe {
    http: Http,
    ended: Rc<RefCell<Option<String>>>,
}

impl Handler for Probe {
    fn post_init(&mut self, conn: &mut Connection<'_>) {
        self.http.post_init(conn);
    }
    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        self.http.receive_data(conn, data);
    }
    fn outbound_full(&mut self, conn: &mut Connection<'_>) {
        self.http.outbound_full(conn);
    }
    fn outbound_drained(&mut self, conn: &mut Connection<'_>) {
        self.http.outbound_drained(conn);
    }
    fn unbind(&mut self, conn: &mut Connection<'_>, reason: &packet::CloseReason) {
        self.http.unbind(conn, reason);
        let clean = matches!(
            reason,
            packet::CloseReason::Local | packet::CloseReason::PeerClosed
        );
        *self.ended.borrow_mut() = Some(if clean {
            String::new()
        } else {
            reason.to_string()
        });
        conn.reactor().stop();
    }
}

/// Whether `needle` occurs in `hay`: candidates found by their first
/// byte, so that megabytes of file data cost little to search.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    let mut from = 0;
    while let Some(i) = hay[from..].iter().position(|&b| b == needle[0]) {
        let at = from + i;
        if hay[at..].starts_with(needle) {
            return true;
        }
        from = at + 1;
    }
    false
}

/// What the client end has read so far, without keeping it all (a run may
/// stream megabytes): its start, its length, and whether the secret
/// appeared anywhere.
#[derive(Default)]
struct Output {
    start: Vec<u8>,
    len: usize,
    tail: Vec<u8>,
    leaked: bool,
}

impl Output {
    fn take(&mut self, bytes: &[u8]) {
        if self.start.len() < 9 {
            let n = (9 - self.start.len()).min(bytes.len());
            self.start.extend_from_slice(&bytes[..n]);
        }
        self.len += bytes.len();
        // Search across read boundaries: keep the last len(SECRET) - 1
        // bytes in front of the new ones.
        self.tail.extend_from_slice(bytes);
        if contains(&self.tail, SECRET) {
            self.leaked = true;
        }
        let keep = self.tail.len().saturating_sub(SECRET.len() - 1);
        self.tail.drain(..keep);
    }

    /// Reads what is there (non-blocking); `true` at end of stream.
    fn read_from(&mut self, client: &mut UnixStream, buf: &mut [u8]) -> bool {
        loop {
            match client.read(buf) {
                Ok(0) => return true,
                Ok(n) => self.take(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return true,
                Err(e) => panic!("client read: {e}"),
            }
        }
    }
}

/// The client's side of one run, driven from the reactor's `next_turn`.
struct Driver {
    client: UnixStream,
    input: Vec<u8>,
    written: usize,
    chunk: usize,
    shut: bool,
    slow_reader: bool,
    turns: u64,
    output: Output,
    buf: Vec<u8>,
}

fn drive(r: &mut Reactor, d: Rc<RefCell<Driver>>, hung: Rc<Cell<bool>>) {
    {
        let mut d = d.borrow_mut();
        let d = &mut *d;
        d.turns += 1;
        if d.turns > MAX_TURNS {
            hung.set(true);
            r.stop();
            return;
        }
        if d.written < d.input.len() {
            let end = (d.written + d.chunk).min(d.input.len());
            match d.client.write(&d.input[d.written..end]) {
                Ok(n) => d.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // The server closed (after an error response) with input
                // unread: the rest cannot be sent.
                Err(_) => d.written = d.input.len(),
            }
        }
        if d.written == d.input.len() && !d.shut {
            let _ = d.client.shutdown(std::net::Shutdown::Write);
            d.shut = true;
        }
        if !d.slow_reader || d.turns.is_multiple_of(16) {
            d.output.read_from(&mut d.client, &mut d.buf);
        }
    }
    r.next_turn(move |r| drive(r, d, hung));
}

thread_local! {
    /// One reactor for the whole run: it can be set up and run again
    /// after each stop.
    static REACTOR: RefCell<Reactor> = RefCell::new(Reactor::new().unwrap());
}

fuzz_target!(|data: &[u8]| {
    let [chunk, flags, input @ ..] = data else {
        return;
    };
    let root = (flags & 1 == 1).then(|| document_root().to_path_buf());
    let (server_end, client) = UnixStream::pair().unwrap();
    client.set_nonblocking(true).unwrap();
    let ended = Rc::new(RefCell::new(None));
    let hung = Rc::new(Cell::new(false));
    let driver = Rc::new(RefCell::new(Driver {
        client,
        input: input.to_vec(),
        written: 0,
        chunk: if *chunk == 0 {
            usize::MAX
        } else {
            usize::from(*chunk)
        },
        shut: false,
        slow_reader: flags & 2 == 2,
        turns: 0,
        output: Output::default(),
        buf: vec![0; 64 * 1024],
    }));
    REACTOR.with(|reactor| {
        let mut r = reactor.borrow_mut();
        // As `start` does for the example's server.
        r.set_default_high_water_mark(HIGH_WATER);
        let http = Http::new(Rc::new(Site::new(root)));
        r.attach(
            std::os::fd::OwnedFd::from(server_end),
            Probe {
                http,
                ended: ended.clone(),
            },
        )
        .unwrap();
        let (d, h) = (driver.clone(), hung.clone());
        r.next_turn(move |r| drive(r, d, h));
        r.run_until_stopped().unwrap();
    });
    assert!(
        !hung.get(),
        "the connection was still open after {MAX_TURNS} turns"
    );
    let mut d = driver.borrow_mut();
    let d = &mut *d;
    // The server end is closed: what is left is readable, then EOF.
    let mut buf = std::mem::take(&mut d.buf);
    assert!(
        d.output.read_from(&mut d.client, &mut buf),
        "no end of stream"
    );
    match ended.borrow().as_deref() {
        Some("") => {}
        Some(reason) => panic!("the connection ended with {reason}"),
        None => panic!("no unbind"),
    }
    assert!(!d.output.leaked, "a file outside the root was served");
    assert!(
        d.output.len == 0 || d.output.start == b"HTTP/1.1 ",
        "output starts with {:?}",
        String::from_utf8_lossy(&d.output.start)
    );
});
