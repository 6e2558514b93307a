//! HTTP/1.1 server on the reactor: the counterpart of "Mongrel running on
//! top of Packet".
//!
//! ```text
//! cargo run --release --example http_server [ADDR] [--root DIR] [--threads N] [--header-timeout SECS]
//! cargo run --release --features tls --example http_server [ADDR] --tls CERT KEY
//! ```
//!
//! Listens on 127.0.0.1:8080 unless `ADDR` is given and prints
//! `listening on ADDR` once ready. `--threads N` runs N reactors on N threads
//! sharing the port through `SO_REUSEPORT`, as the echo server does.
//! `SIGTERM` or `SIGINT` stop it gracefully (`SIGQUIT` too, with a longer
//! deadline; `SIGHUP` is ignored): no new connections, responses
//! in flight finished, files being streamed included (for at most 30 s),
//! then exit status 0, or 1 if the deadline cut a response. `--tls CERT KEY`
//! (PEM files: the certificate chain and its private key) serves HTTPS
//! instead, with the `tls` feature (ALPN offers `http/1.1`).
//!
//! Zero-downtime restarts (README, "Operations"): listening sockets passed
//! in `LISTEN_FDS` (systemd's socket activation) are served instead of
//! binding `ADDR`; `kill -USR2 $(pidof http_server)` upgrades the binary:
//! the new process (this executable file as it is now on disk, the same
//! arguments) gets the listeners, and once it serves this one stops
//! accepting, finishes its responses and exits 0. `--upgrade-program PATH`
//! runs another file, and `--upgrade-deadline SECS` (default 30) bounds
//! the wait for the new process; past it, or if it dies first, this one
//! goes on serving.
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
//! - Request-header deadline (slowloris): a request's header must arrive
//!   whole within 60 s of its first byte, as nginx's
//!   `client_header_timeout`; the inactivity timeout measures silence only,
//!   so a header trickling in a byte at a time would otherwise hold the
//!   connection for ever. Past it: `408 Request Timeout` and close.
//!   `--header-timeout SECS` changes it (fractions allowed; `0` turns it
//!   off). Requests waiting behind a response (pipelined, or while a file
//!   streams) are not timed.
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

include!("http_server/handler.rs");

#[path = "common/reactors.rs"]
mod reactors;

use packet::Addr;

// Here rather than in handler.rs, which the fuzz target `http_request`
// includes without the `reactors` module.
/// Starts the HTTP server on `reactor`; returns the bound address.
fn start(
    reactor: &mut Reactor,
    listen: reactors::Listen,
    root: Option<PathBuf>,
) -> io::Result<Addr> {
    let site = Rc::new(Site::new(root));
    reactor.set_default_high_water_mark(HIGH_WATER);
    let server = {
        let site = site.clone();
        listen.start(reactor, move || Http::new(site.clone()))?
    };
    keep_date(reactor, site);
    reactor.server_addr(server)
}

fn usage() -> ! {
    eprintln!("usage: http_server [ADDR] [--root DIR] [--threads N] [--header-timeout SECS] [--tls CERT KEY] [--upgrade-program PATH] [--upgrade-deadline SECS]");
    std::process::exit(2);
}

fn main() -> io::Result<()> {
    let mut addr = "127.0.0.1:8080".to_string();
    let mut root = None;
    let mut threads = 1usize;
    let mut tls = None;
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
            "--header-timeout" => {
                let secs: f64 = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n: &f64| n >= 0.0)
                    .unwrap_or_else(|| usage());
                let ms = (secs * 1000.0) as u64;
                HEADER_TIMEOUT_MS.store(ms, std::sync::atomic::Ordering::Relaxed);
            }
            "--tls" => match (args.next(), args.next()) {
                (Some(cert), Some(key)) => tls = Some((cert, key)),
                _ => usage(),
            },
            a if reactors::upgrade_arg(a, &mut args) => {}
            a if a.starts_with('-') => usage(),
            a => addr = a.to_string(),
        }
    }

    // Names are resolved here: the shared reactors::serve takes an address.
    let addr = std::net::ToSocketAddrs::to_socket_addrs(&addr)?
        .next()
        .ok_or(io::ErrorKind::InvalidInput)?;
    match tls {
        None => reactors::serve(addr, threads, move |r, listen| {
            start(r, listen, root.clone())
        }),
        Some((cert, key)) => serve_https(addr, threads, root, &cert, &key),
    }
}

/// As `start`, with TLS on every connection.
#[cfg(feature = "tls")]
fn serve_https(
    addr: std::net::SocketAddr,
    threads: usize,
    root: Option<PathBuf>,
    cert: &str,
    key: &str,
) -> io::Result<()> {
    let mut config = packet::tls::server_config_from_pem_files(cert, key)?;
    if let Some(c) = std::sync::Arc::get_mut(&mut config) {
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
    }
    reactors::serve(addr, threads, move |r, listen| {
        let site = Rc::new(Site::new(root.clone()));
        r.set_default_high_water_mark(HIGH_WATER);
        let server = {
            let site = site.clone();
            listen.start_tls(r, config.clone(), move || Http::new(site.clone()))?
        };
        keep_date(r, site);
        r.server_addr(server)
    })
}

#[cfg(not(feature = "tls"))]
fn serve_https(
    _: std::net::SocketAddr,
    _: usize,
    _: Option<PathBuf>,
    _: &str,
    _: &str,
) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "--tls needs the tls feature: cargo run --features tls --example http_server",
    ))
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
                let listen = reactors::Listen::Bind(
                    ([127, 0, 0, 1], 0).into(),
                    packet::ServerOptions::new(),
                );
                let addr = start(&mut reactor, listen, root).unwrap();
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
