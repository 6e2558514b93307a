//! TLS over connections: EventMachine's `start_tls`, with rustls and its
//! ring crypto provider (the `tls` feature).
//!
//! This module owns a connection's TLS session. It is a filter on the
//! core's extension point (`ConnHooks` with `FilterHooks`): the bytes the
//! reactor reads from the socket go to rustls, and the plaintext that comes
//! out reaches `receive_data`, one call per read as without TLS; the
//! plaintext a handler sends (`send_data`, files) waits in the connection's
//! outbound queue, so the high-water mark, `outbound_len`, `outbound_full`
//! and `outbound_drained` measure what the handler wrote, and is taken from
//! there only as fast as the socket takes the records it becomes (at most
//! [`CHUNK`] bytes in rustls at a time). Files are read and encrypted, not
//! sent with `sendfile`. `close_connection_after_writing` (and
//! `close_write`) send `close_notify` once everything is written; a peer's
//! `close_notify` is an end of stream (`receive_eof`).
//!
//! A TLS session can start at any point of a connection: at once
//! ([`Tls::start_server`], [`Tls::connect`]), or after a
//! plaintext exchange (SMTP's `STARTTLS`), with
//! [`Connection::start_tls`]. Bytes sent before the call go out in the
//! clear, ahead of the handshake; bytes sent after it wait for the
//! handshake, then go out encrypted. When the handshake ends the handler
//! gets [`Handler::ssl_verify_peer`] with the peer's certificate (if it
//! sent one; returning `false` closes the connection) and then
//! [`Handler::ssl_handshake_completed`]. A failure — a bad record, a
//! certificate rustls refuses, a peer speaking plaintext — ends the
//! connection with [`CloseReason::Protocol`], whose error is the
//! [`rustls::Error`] (see [`rustls_error`]).
//!
//! # Deadlines
//!
//! A handshake must end within [`DEFAULT_HANDSHAKE_TIMEOUT`] (10 s) of
//! `start_tls` (for [`Tls::connect`], of the connect): a peer that
//! sends part of a hello and waits would otherwise hold its descriptor
//! for ever. One that does not ends with [`CloseReason::Protocol`], whose
//! error (`ErrorKind::TimedOut`) holds a [`HandshakeTimeout`]. Change it
//! for the reactor with [`Tls::set_handshake_timeout`] (`None`
//! turns it off, for sessions started after the call). The inactivity
//! timeout ([`Connection::set_inactivity_timeout`]) counts during the
//! handshake as at any other time: handshake bytes are bytes moved.
//!
//! ```
//! use std::sync::Arc;
//! use packet::{tls, Connection, Handler, Reactor};
//!
//! use packet::tls::rustls::pki_types::{pem::PemObject, CertificateDer};
//!
//! // The tests' self-signed certificate for "localhost" and its key.
//! let (cert, key) = ("tests/fixtures/localhost.crt", "tests/fixtures/localhost.key");
//! let server = tls::server_config_from_pem_files(cert, key)?;
//! let client = tls::client_config(&[CertificateDer::from_pem_file(cert)?.to_vec()])?;
//!
//! struct Echo;
//! impl Handler for Echo {
//!     fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
//!         conn.send_data(data);
//!     }
//! }
//! struct Probe;
//! impl Handler for Probe {
//!     fn connection_completed(&mut self, conn: &mut Connection<'_>) {
//!         conn.send_data(b"hello"); // waits for the handshake
//!     }
//!     fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
//!         assert_eq!(data, b"hello");
//!         assert!(conn.peer_cert().is_some());
//!         conn.reactor().stop();
//!     }
//! }
//!
//! Reactor::run(|r| {
//!     let id = r.tls().start_server("127.0.0.1:0", server, || Echo)?;
//!     let addr = r.server_addr(id)?.as_inet().unwrap();
//!     r.tls().connect(addr, client, "localhost", Probe)?;
//!     Ok(())
//! })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::net::ToSocketAddrs;
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::sync::Arc;

pub use rustls;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::buffer::{FilterSink, Sink};
use crate::connection::{CloseReason, ConnId, Connection, Handler};
use crate::reactor::{
    ConnHooks, ConnSink, Extension, FilterHooks, Out, QueueFlush, Reactor, ReadBy, ServerId,
    ServerOptions, TimerId, WriteSide,
};
use crate::reply::Reply;
use crate::slab::Token;

/// Plaintext handed to rustls at a time: it is taken from the outbound
/// queue only once the records of the previous chunk are all written, so
/// the queue (what the water marks see) holds everything else. Four full
/// records, so that one `writev` carries several.
pub const CHUNK: usize = 64 * 1024;

/// How long a TLS handshake may take by default, from `start_tls` to its
/// end: 10 s, ample for a handshake over any working network (nginx
/// allows 60 s for a whole request header), short enough that stalled
/// hellos cannot pile up to the descriptor limit. See
/// [`Tls::set_handshake_timeout`].
pub const DEFAULT_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The error inside the [`CloseReason::Protocol`] of a connection whose
/// TLS handshake did not end in time (see the [module](self)'s
/// "Deadlines").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeTimeout {
    /// The limit that passed.
    pub limit: std::time::Duration,
}

impl std::fmt::Display for HandshakeTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TLS handshake not complete after {:?}", self.limit)
    }
}

impl std::error::Error for HandshakeTimeout {}

/// The handshake deadline of sessions started on this reactor (its
/// extension state).
struct Settings {
    handshake_timeout: Option<std::time::Duration>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            handshake_timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
        }
    }
}

impl Extension for Settings {}

/// What [`Connection::start_tls`] starts: the server or the client side of
/// a TLS session, with its rustls configuration.
#[derive(Clone)]
pub enum TlsConfig {
    /// Answer a client's hello.
    Server(Arc<rustls::ServerConfig>),
    /// Send a hello, for the server named (the name its certificate must
    /// bear, and the SNI sent).
    Client(Arc<rustls::ClientConfig>, ServerName<'static>),
}

impl TlsConfig {
    /// The server side.
    pub fn server(config: Arc<rustls::ServerConfig>) -> TlsConfig {
        TlsConfig::Server(config)
    }

    /// The client side, for the server called `server_name` (a DNS name or
    /// an IP address).
    ///
    /// # Errors
    /// `InvalidInput` if `server_name` is neither.
    pub fn client(config: Arc<rustls::ClientConfig>, server_name: &str) -> io::Result<TlsConfig> {
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(TlsConfig::Client(config, name))
    }
}

/// The ring crypto provider, which every configuration made here uses.
///
/// rustls 0.23.48 deprecated it because ring has no post-quantum key
/// exchange; the alternative, aws-lc-rs, needs cmake to build, which the
/// feature is chosen to avoid (ARCHITECTURE.md, "TLS").
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn invalid(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e)
}

/// A server configuration: the certificate chain (DER, the server's own
/// first) and its private key (DER: PKCS#8, PKCS#1 or SEC1), TLS 1.2 and
/// 1.3, no client certificates, and `http/1.1` offered by ALPN only if
/// `alpn` is set afterwards (`Arc::get_mut` on a fresh config).
///
/// # Errors
/// `InvalidInput` if the key does not parse or match the certificate.
pub fn server_config(
    cert_chain: Vec<Vec<u8>>,
    key: Vec<u8>,
) -> io::Result<Arc<rustls::ServerConfig>> {
    let chain = cert_chain.into_iter().map(CertificateDer::from).collect();
    let key = PrivateKeyDer::try_from(key).map_err(invalid)?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(invalid)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(invalid)?;
    Ok(Arc::new(config))
}

/// [`server_config`] from PEM files: the certificate chain and the key.
///
/// # Errors
/// A file cannot be read, holds no certificate or key, or as
/// [`server_config`].
pub fn server_config_from_pem_files(
    cert_chain: impl AsRef<Path>,
    key: impl AsRef<Path>,
) -> io::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    let (cert_path, key_path) = (cert_chain.as_ref(), key.as_ref());
    // rustls's PEM errors do not say which file; these do.
    let in_file = |what: &str, path: &Path| {
        let context = format!("cannot read the TLS {what} from {}", path.display());
        move |e| {
            let e = match e {
                // Keep the kind (`NotFound`, `PermissionDenied`).
                rustls::pki_types::pem::Error::Io(e) => e,
                other => invalid(other),
            };
            crate::connection::io_context(e, context)
        }
    };
    let chain = CertificateDer::pem_file_iter(cert_path)
        .map_err(in_file("certificate chain", cert_path))?
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(in_file("certificate chain", cert_path))?;
    if chain.is_empty() {
        return Err(invalid(format!(
            "no certificate in {}",
            cert_path.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(in_file("private key", key_path))?;
    server_config(chain, key.secret_der().to_vec())
}

/// A client configuration trusting the given root certificates (DER) only,
/// TLS 1.2 and 1.3, no client certificate.
///
/// # Errors
/// `InvalidInput` if a root does not parse.
pub fn client_config(roots: &[Vec<u8>]) -> io::Result<Arc<rustls::ClientConfig>> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store
            .add(CertificateDer::from(root.clone()))
            .map_err(invalid)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(invalid)?
        .with_root_certificates(store)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The rustls error a connection ended with, if it ended because of one
/// (a [`CloseReason::Protocol`] from this module).
pub fn rustls_error(reason: &CloseReason) -> Option<&rustls::Error> {
    match reason {
        CloseReason::Protocol(e) => e.get_ref()?.downcast_ref(),
        _ => None,
    }
}

/// One connection's TLS session: its hook state.
struct Session {
    tls: rustls::Connection,
    /// Bytes at the head of the outbound queue that were sent before
    /// `start_tls`: they go out in the clear, before any record.
    clear_left: usize,
    /// Plaintext given to rustls whose records are not all written yet.
    in_flight: usize,
    /// The handshake's end was reported to the handler.
    completed: bool,
    /// `close_notify` is queued: nothing more is sent.
    closed: bool,
    /// The server name a client asked for (SNI).
    sni: Option<String>,
    /// A file's bytes on their way into rustls.
    file_buf: Vec<u8>,
    /// The handshake's deadline, cancelled when it ends.
    deadline: Option<TimerId>,
}

static FILTER: FilterHooks = FilterHooks {
    input: |r, token, data| r.tls_input(token, data),
    output: |r, token| {
        r.tls_pump(token, true);
    },
    farewell: |r, token| r.tls_farewell(token),
    held: |r, token| {
        r.hook_state::<Session>(token).map_or(0, |s| {
            if s.tls.wants_write() {
                s.in_flight.max(1)
            } else {
                0
            }
        })
    },
};

/// How TLS takes over a connection: the core reads, the filter decrypts;
/// the writable edge writes pending records before the queue.
static HOOKS: ConnHooks = ConnHooks {
    readable: |_, _| ReadBy::Core,
    writable: |r, token| {
        if r.tls_pump(token, false) {
            QueueFlush::Now
        } else {
            QueueFlush::Later
        }
    },
    queue_checked: |r, token, queued| r.tls_close_notify_if_drained(token, queued),
    closing: |_, _| {},
    filter: Some(&FILTER),
};

/// A connection's socket as rustls's writer (the core's one write).
struct SocketWriter<'a>(ConnSink<'a>);

impl Write for SocketWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_out(Out::Bytes(&[IoSlice::new(buf)], &[]))
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.write_out(Out::Bytes(bufs, &[]))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The outbound queue's bytes sent before `start_tls`, in the clear.
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
        // start_tls refuses a queue holding files.
        Err(io::ErrorKind::Unsupported.into())
    }
}

impl Reactor {
    /// Starts TLS on connection `id` (EventMachine's `start_tls`); see the
    /// [module](self) for what changes. Bytes sent before go out in the
    /// clear; on a client, the hello goes out at once, or when the
    /// connect completes.
    ///
    /// # Errors
    /// `NotConnected` for a closed or closing connection; `AlreadyExists`
    /// if TLS (or another feature's hooks, a proxy) has it already;
    /// `Unsupported` if a file sent before is still queued; `InvalidInput`
    /// if rustls refuses the configuration.
    pub(crate) fn start_tls(&mut self, id: ConnId, config: TlsConfig) -> io::Result<()> {
        let token = id.0;
        // Bytes the running callback sent before this call are due first,
        // in the clear: written (or queued) before hooking.
        self.prepare_filter(token)?;
        let Some(c) = self.conn(token) else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        if c.queue_holds_files() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a file sent before start_tls is still queued",
            ));
        }
        let clear_left = c.queued();
        let (tls, sni) = match config {
            TlsConfig::Server(config) => (
                rustls::ServerConnection::new(config).map(rustls::Connection::Server),
                None,
            ),
            TlsConfig::Client(config, name) => {
                let sni = name.to_str().into_owned();
                (
                    rustls::ClientConnection::new(config, name).map(rustls::Connection::Client),
                    Some(sni),
                )
            }
        };
        let tls = tls.map_err(invalid)?;
        let session = Session {
            tls,
            clear_left,
            in_flight: 0,
            completed: false,
            closed: false,
            sni,
            file_buf: Vec::new(),
            deadline: None,
        };
        self.hook_conn_with(token, &HOOKS, session)?;
        if let Some(limit) = self.ext_or_default::<Settings>().handshake_timeout {
            let timer = self.add_timer(limit, move |r| r.tls_handshake_expired(id, limit));
            if let Some(s) = self.hook_state_mut::<Session>(token) {
                s.deadline = Some(timer);
            }
        }
        // A client's hello (and clear bytes still queued) go out now.
        self.tls_pump(token, false);
        if !self.in_callback_of(token) {
            self.check_water(token);
        }
        Ok(())
    }

    /// The handshake deadline of connection `id` passed: closes it if the
    /// handshake has not ended.
    fn tls_handshake_expired(&mut self, id: ConnId, limit: std::time::Duration) {
        let Some(s) = self.hook_state_mut::<Session>(id.0) else {
            return;
        };
        s.deadline = None;
        if s.completed {
            return;
        }
        let error = io::Error::new(io::ErrorKind::TimedOut, HandshakeTimeout { limit });
        self.begin_close(id.0, CloseReason::Protocol(error));
    }

    /// Ends connection `token` for a TLS failure, after a best-effort
    /// write of the alert rustls queued for the peer.
    fn tls_fail(&mut self, token: Token, error: io::Error) {
        self.tls_write_now(token);
        self.begin_close(token, CloseReason::Protocol(error));
    }

    /// Writes the records rustls holds for connection `token` as far as the
    /// socket takes them now, without waiting: for a connection about to
    /// close.
    fn tls_write_now(&mut self, token: Token) {
        if let Some((c, s)) = self.conn_and_hook_state::<Session>(token) {
            if !c.socket_waits() {
                while s.tls.wants_write() {
                    if !matches!(s.tls.write_tls(&mut SocketWriter(c.sink())), Ok(n) if n > 0) {
                        break;
                    }
                }
            }
        }
    }

    /// This side closes connection `token` before its queue drained (an
    /// inactivity timeout, a stop): `close_notify` goes out if the socket
    /// takes it, so the peer sees an orderly end rather than a truncation.
    fn tls_farewell(&mut self, token: Token) {
        if let Some(s) = self.hook_state_mut::<Session>(token) {
            if !s.closed && s.clear_left == 0 {
                s.tls.send_close_notify();
                s.closed = true;
            }
        }
        self.tls_write_now(token);
    }

    /// Records read from connection `token`: the plaintext in them goes to
    /// `receive_data` in one call, after the handshake's callbacks if it
    /// ended here.
    fn tls_input(&mut self, token: Token, data: &[u8]) {
        // The reactor's one buffer for decoded bytes (packet::extend's).
        let mut plain = self.take_decode_buffer();
        let mut rest = data;
        let mut failure = None;
        let mut peer_ended = false;
        let mut handshake_ended = false;
        let mut cert = None;
        let mut deadline = None;
        if let Some(s) = self.hook_state_mut::<Session>(token) {
            while !rest.is_empty() && failure.is_none() && !peer_ended {
                // Never an empty reader: rustls would take that for the
                // end of the stream.
                match s.tls.read_tls(&mut rest) {
                    Ok(0) => peer_ended = true,
                    Ok(_) => {}
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
                if let Err(e) = s.tls.process_new_packets() {
                    failure = Some(io::Error::new(io::ErrorKind::InvalidData, e));
                    break;
                }
                match s.tls.reader().read_to_end(&mut plain) {
                    Ok(_) => peer_ended = true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => failure = Some(e),
                }
            }
            if !s.completed && !s.tls.is_handshaking() && failure.is_none() {
                s.completed = true;
                handshake_ended = true;
                deadline = s.deadline.take();
                cert = s
                    .tls
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| c.as_ref().to_vec());
            }
        }
        if let Some(timer) = deadline {
            self.cancel_timer(timer);
        }
        if let Some(e) = failure {
            self.tls_fail(token, e);
        } else {
            // Records the handshake answers with go out before anything
            // the handler does with its end.
            self.tls_pump(token, false);
            let mut accepted = true;
            if handshake_ended {
                if let Some(cert) = cert {
                    accepted = self
                        .call_handler(token, |h, conn| h.ssl_verify_peer(conn, &cert))
                        .unwrap_or(false);
                }
                if accepted {
                    self.call_handler(token, |h, conn| h.ssl_handshake_completed(conn));
                    // What was sent while the handshake ran goes now.
                    self.flush_queue(token);
                } else {
                    self.begin_close(
                        token,
                        CloseReason::Protocol(io::Error::new(
                            io::ErrorKind::PermissionDenied,
                            "ssl_verify_peer refused the peer's certificate",
                        )),
                    );
                }
            }
            if accepted && !plain.is_empty() {
                self.deliver(token, &plain);
            }
            if peer_ended {
                self.end_of_input(token);
            }
            self.check_water(token);
        }
        self.put_decode_buffer(plain);
    }

    /// Writes what connection `token` has for the socket, in order: the
    /// clear bytes sent before `start_tls`, pending records, then (if
    /// `take_queue` and the handshake is over) the queue's plaintext as
    /// records, a [`CHUNK`] at a time, until the socket is full or all is
    /// written. Returns whether no record is left pending.
    fn tls_pump(&mut self, token: Token, take_queue: bool) -> bool {
        loop {
            let Some((c, s)) = self.conn_and_hook_state::<Session>(token) else {
                return true;
            };
            if c.is_closed() || c.socket_waits() {
                return false;
            }
            let result = (|| -> io::Result<bool> {
                if s.clear_left > 0 {
                    let (queue, conn) = c.queue_and_sink();
                    let mut sink = ClearSink {
                        conn,
                        left: s.clear_left,
                    };
                    queue.flush(&mut sink)?;
                    s.clear_left = sink.left;
                    if s.clear_left > 0 {
                        return Err(io::ErrorKind::WouldBlock.into());
                    }
                }
                while s.tls.wants_write() {
                    if s.tls.write_tls(&mut SocketWriter(c.sink()))? == 0 {
                        return Err(io::ErrorKind::WouldBlock.into());
                    }
                }
                s.in_flight = 0;
                if !take_queue || c.queued_nothing() || s.tls.is_handshaking() || s.closed {
                    return Ok(false);
                }
                let tls = &mut s.tls;
                let mut sink = FilterSink {
                    take: |plain: &[u8]| tls.writer().write(plain),
                    budget: CHUNK,
                    file_buf: &mut s.file_buf,
                };
                // A WouldBlock here is rustls taking nothing more, not a
                // full socket.
                let n = match c.queue_and_sink().0.flush(&mut sink) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                    Err(e) => return Err(e),
                };
                s.in_flight = n;
                Ok(n > 0)
            })();
            match result {
                Ok(true) => continue,
                Ok(false) => return true,
                // The core's rule: a full socket waits for its writable
                // edge, a failure ends the connection as on every path.
                Err(e) => {
                    if let Err(reason) = c.wrote(Err(e), 0) {
                        self.begin_close(token, reason);
                    }
                    return false;
                }
            }
        }
    }

    /// The queue of connection `token` was checked: once it is empty and a
    /// close (or half-close) waits for that, `close_notify` goes out first
    /// (the core closes once it is written: it is held).
    fn tls_close_notify_if_drained(&mut self, token: Token, queued: usize) {
        if queued > 0 || self.in_callback_of(token) {
            return;
        }
        let closes = self.closes_once_written(token);
        let Some((c, s)) = self.conn_and_hook_state::<Session>(token) else {
            return;
        };
        let ending = closes || c.write_side() == WriteSide::ShutWhenDrained;
        if !ending || s.closed || s.clear_left > 0 || s.tls.wants_write() {
            return;
        }
        s.tls.send_close_notify();
        s.closed = true;
        self.tls_pump(token, false);
    }
}

/// TLS servers and clients of a reactor, and its handshake deadline,
/// borrowed for one call: `reactor.tls()`. A connection's own TLS
/// ([`Connection::start_tls`], [`Connection::peer_cert`], ...) is on
/// [`Connection`], inside a handler or through
/// `reactor.connection(id)`.
///
/// ```no_run
/// # use packet::{tls, Connection, Handler, Reactor};
/// # struct Echo;
/// # impl Handler for Echo {}
/// # fn f(r: &mut Reactor) -> Result<(), Box<dyn std::error::Error>> {
/// let config = tls::server_config_from_pem_files("cert.pem", "key.pem")?;
/// r.tls().set_handshake_timeout(Some(std::time::Duration::from_secs(5)));
/// r.tls().start_server("127.0.0.1:4433", config, || Echo)?;
/// # Ok(()) }
/// ```
pub struct Tls<'r> {
    reactor: &'r mut Reactor,
}

impl Reactor {
    /// This reactor's TLS servers, clients and handshake deadline:
    /// [`Tls`].
    pub fn tls(&mut self) -> Tls<'_> {
        Tls { reactor: self }
    }
}

impl Tls<'_> {
    /// Listens on `addr` as [`Reactor::start_server`] does, with TLS
    /// started on every accepted connection before its `post_init`.
    ///
    /// # Errors
    /// As [`Reactor::start_server`].
    pub fn start_server<H: Handler>(
        &mut self,
        addr: impl ToSocketAddrs,
        config: Arc<rustls::ServerConfig>,
        factory: impl FnMut() -> H + 'static,
    ) -> io::Result<ServerId> {
        self.start_server_with(addr, ServerOptions::default(), config, factory)
    }

    /// [`Tls::start_server`] with options, as
    /// [`Reactor::start_server_with`].
    ///
    /// # Errors
    /// As [`Reactor::start_server`].
    pub fn start_server_with<H: Handler>(
        &mut self,
        addr: impl ToSocketAddrs,
        options: ServerOptions,
        config: Arc<rustls::ServerConfig>,
        mut factory: impl FnMut() -> H + 'static,
    ) -> io::Result<ServerId> {
        let r = &mut *self.reactor;
        r.start_server_with(addr, options, move || TlsFirst {
            inner: factory(),
            config: Some(TlsConfig::Server(config.clone())),
        })
    }

    /// [`Upgrades::adopt_server`](crate::upgrade::Upgrades::adopt_server)
    /// with TLS on every accepted connection, as
    /// [`Tls::start_server`] has: an inherited listening socket
    /// (socket activation, an upgrade) serving TLS.
    ///
    /// # Errors
    /// As [`Upgrades::adopt_server`](crate::upgrade::Upgrades::adopt_server).
    #[cfg(feature = "upgrade")]
    pub fn adopt_server<H: Handler>(
        &mut self,
        listener: crate::upgrade::InheritedListener,
        config: Arc<rustls::ServerConfig>,
        mut factory: impl FnMut() -> H + 'static,
    ) -> io::Result<ServerId> {
        let r = &mut *self.reactor;
        r.adopt_server(listener, move || TlsFirst {
            inner: factory(),
            config: Some(TlsConfig::Server(config.clone())),
        })
    }

    /// Connects to `addr` as [`Reactor::connect`] does, with TLS started
    /// before `post_init`, for the server called `server_name`. Bytes sent
    /// before the handshake ends wait for it.
    ///
    /// # Errors
    /// As [`Reactor::connect`]; `InvalidInput` for a `server_name` that is
    /// neither a DNS name nor an IP address.
    pub fn connect<H: Handler>(
        &mut self,
        addr: impl ToSocketAddrs,
        config: Arc<rustls::ClientConfig>,
        server_name: &str,
        handler: H,
    ) -> io::Result<ConnId> {
        let r = &mut *self.reactor;
        let config = TlsConfig::client(config, server_name)?;
        r.connect(
            addr,
            TlsFirst {
                inner: handler,
                config: Some(config),
            },
        )
    }

    /// Sets how long a TLS handshake started on this reactor from now on
    /// may take (default [`DEFAULT_HANDSHAKE_TIMEOUT`], 10 s); `None`
    /// lets it take for ever, bounded only by an inactivity timeout.
    pub fn set_handshake_timeout(&mut self, limit: Option<std::time::Duration>) {
        let r = &mut *self.reactor;
        r.ext_or_default::<Settings>().handshake_timeout = limit;
    }

    /// The TLS handshake deadline of sessions started now (see
    /// [`Tls::set_handshake_timeout`]).
    pub fn handshake_timeout(&mut self) -> Option<std::time::Duration> {
        let r = &mut *self.reactor;
        r.ext_or_default::<Settings>().handshake_timeout
    }
}

impl Connection<'_> {
    /// Starts TLS on this connection (EventMachine's `start_tls`); see the
    /// [module](self) for what changes. Bytes sent before go out in the
    /// clear; on a client, the hello goes out at once, or when the
    /// connect completes.
    ///
    /// # Errors
    /// `NotConnected` for a closed or closing connection; `AlreadyExists`
    /// if TLS (or another feature's hooks, a proxy) has it already;
    /// `Unsupported` if a file sent before is still queued; `InvalidInput`
    /// if rustls refuses the configuration.
    pub fn start_tls(&mut self, config: TlsConfig) -> io::Result<()> {
        self.reactor.start_tls(self.id, config)
    }

    /// Whether this connection has a TLS session.
    pub fn is_tls(&self) -> bool {
        self.session().is_some()
    }

    /// The peer's certificate (DER), once the handshake has ended
    /// (EventMachine's `get_peer_cert`, which gives PEM).
    pub fn peer_cert(&self) -> Option<&[u8]> {
        let s = self.session()?;
        s.tls.peer_certificates()?.first().map(|c| c.as_ref())
    }

    /// The application protocol agreed by ALPN, once the handshake has
    /// ended.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.session()?.tls.alpn_protocol()
    }

    /// The server name (SNI): on a server, the one the client asked for;
    /// on a client, the one it sent.
    pub fn sni_hostname(&self) -> Option<&str> {
        let s = self.session()?;
        match &s.tls {
            rustls::Connection::Server(server) => server.server_name(),
            rustls::Connection::Client(_) => s.sni.as_deref(),
        }
    }

    /// The TLS version and cipher suite agreed, once the handshake has
    /// ended (for logs).
    pub fn tls_parameters(
        &self,
    ) -> Option<(rustls::ProtocolVersion, rustls::SupportedCipherSuite)> {
        let s = self.session()?;
        Some((s.tls.protocol_version()?, s.tls.negotiated_cipher_suite()?))
    }

    /// This connection's TLS session, if it has one.
    fn session(&self) -> Option<&Session> {
        self.reactor.hook_state::<Session>(self.id.0)
    }
}

/// A handler with TLS started before its first callback
/// ([`Tls::start_server`], [`Tls::connect`]); every
/// callback goes to it unchanged.
struct TlsFirst<H> {
    inner: H,
    config: Option<TlsConfig>,
}

impl<H: Handler> Handler for TlsFirst<H> {
    fn post_init(&mut self, conn: &mut Connection<'_>) {
        if let Some(config) = self.config.take() {
            if let Err(e) = conn.start_tls(config) {
                let token = conn.id().0;
                conn.reactor().begin_close(token, CloseReason::Protocol(e));
                return;
            }
        }
        self.inner.post_init(conn);
    }
    fn connection_completed(&mut self, conn: &mut Connection<'_>) {
        self.inner.connection_completed(conn);
    }
    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        self.inner.receive_data(conn, data);
    }
    fn receive_eof(&mut self, conn: &mut Connection<'_>) {
        self.inner.receive_eof(conn);
    }
    fn unbind(&mut self, conn: &mut Connection<'_>, reason: &CloseReason) {
        self.inner.unbind(conn, reason);
    }
    fn receive_reply(&mut self, conn: &mut Connection<'_>, reply: Reply) {
        self.inner.receive_reply(conn, reply);
    }
    fn outbound_full(&mut self, conn: &mut Connection<'_>) {
        self.inner.outbound_full(conn);
    }
    fn outbound_drained(&mut self, conn: &mut Connection<'_>) {
        self.inner.outbound_drained(conn);
    }
    fn resumed(&mut self, conn: &mut Connection<'_>) {
        self.inner.resumed(conn);
    }
    fn ssl_handshake_completed(&mut self, conn: &mut Connection<'_>) {
        self.inner.ssl_handshake_completed(conn);
    }
    fn ssl_verify_peer(&mut self, conn: &mut Connection<'_>, cert: &[u8]) -> bool {
        self.inner.ssl_verify_peer(conn, cert)
    }
}
