//! TLS over connections: EventMachine's `start_tls`, with rustls and its
//! ring crypto provider (the `tls` feature).
//!
//! This module owns a connection's TLS session. The session is a public
//! [`Filter`], written against `packet::extend`
//! only, as a user's filter is: the bytes the reactor reads from the
//! socket go to rustls, and the plaintext that comes out reaches
//! `receive_data`, one call per read as without TLS; the plaintext a
//! handler sends (`send_data`, files) waits in the connection's outbound
//! queue, so the high-water mark, `outbound_len`, `outbound_full` and
//! `outbound_drained` measure what the handler wrote, and is taken from
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

use std::io::{self, Read, Write};
use std::net::ToSocketAddrs;
use std::path::Path;
use std::sync::Arc;

pub use rustls;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::connection::{CloseReason, ConnId, Connection, Handler};
use crate::extend::{Extension, Filter, FilterEvent, FilterOutput};
use crate::reactor::{Reactor, ServerId, ServerOptions};

pub use crate::extend::HandshakeTimeout;

/// Plaintext handed to rustls at a time: every filter's step
/// ([`ENCODE_STEP`](crate::extend::ENCODE_STEP)). It is taken from the
/// outbound queue only once the records of the previous step are all
/// written, so the queue (what the water marks see) holds everything else.
pub const CHUNK: usize = crate::extend::ENCODE_STEP;

/// How long a TLS handshake may take by default, from `start_tls` to its
/// end: 10 s, ample for a handshake over any working network (nginx
/// allows 60 s for a whole request header), short enough that stalled
/// hellos cannot pile up to the descriptor limit. See
/// [`Tls::set_handshake_timeout`].
pub const DEFAULT_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

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

/// One connection's TLS session: the connection's [`Filter`].
struct Session {
    tls: rustls::Connection,
    /// The server name a client asked for (SNI).
    sni: Option<String>,
    /// The handshake's end is reported (by [`Session::take_event`]).
    completed: bool,
    /// The peer's `close_notify` came: nothing more is read.
    peer_ended: bool,
    /// [`FilterEvent::PeerEnded`] was given.
    end_reported: bool,
    /// How long the handshake may take.
    limit: Option<std::time::Duration>,
}

impl Session {
    fn new(config: TlsConfig, limit: Option<std::time::Duration>) -> io::Result<Session> {
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
        let mut tls = tls.map_err(invalid)?;
        // The filter's step bounds what rustls holds: one step's records,
        // which it keeps when the socket is full (no copy), so no limit
        // of its own that could refuse plaintext mid-step.
        tls.set_buffer_limit(None);
        Ok(Session {
            tls,
            sni,
            completed: false,
            peer_ended: false,
            end_reported: false,
            limit,
        })
    }
}

impl Filter for Session {
    /// Records in, plaintext out: rustls reads them (never from an empty
    /// reader, which it would take for the end of the stream).
    fn decode(&mut self, from_socket: &[u8], plain: &mut Vec<u8>) -> io::Result<()> {
        let mut rest = from_socket;
        while !rest.is_empty() && !self.peer_ended {
            if self.tls.read_tls(&mut rest)? == 0 {
                self.peer_ended = true;
            }
            self.tls
                .process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            match self.tls.reader().read_to_end(plain) {
                Ok(_) => self.peer_ended = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Plaintext in, records out: straight to the socket, with one
    /// `writev`, as far as it takes them; rustls keeps the rest (its
    /// buffer has no limit, so it takes all the plaintext).
    fn encode(&mut self, plain: &[u8], records: &mut FilterOutput<'_>) {
        // Err only once `close_notify` is sent, and nothing is encoded
        // after `finish`.
        let _ = self.tls.writer().write_all(plain);
        self.own_output(records);
    }

    /// The handshake's records, alerts, `close_notify`, and records the
    /// socket did not take before.
    fn own_output(&mut self, records: &mut FilterOutput<'_>) {
        while self.tls.wants_write() {
            // A short write (a full socket) leaves the rest in rustls.
            if !matches!(self.tls.write_tls(records), Ok(n) if n > 0) {
                break;
            }
        }
    }

    /// The handler's plaintext waits in the queue while the handshake
    /// runs.
    fn takes_output(&self) -> bool {
        !self.tls.is_handshaking()
    }

    fn take_event(&mut self) -> Option<FilterEvent> {
        if !self.completed && !self.tls.is_handshaking() {
            self.completed = true;
            let peer_certificate = self
                .tls
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.as_ref().to_vec());
            return Some(FilterEvent::Established { peer_certificate });
        }
        if self.peer_ended && !self.end_reported {
            self.end_reported = true;
            return Some(FilterEvent::PeerEnded);
        }
        None
    }

    fn finish(&mut self, records: &mut FilterOutput<'_>) {
        self.tls.send_close_notify();
        self.own_output(records);
    }

    fn handshake_limit(&self) -> Option<std::time::Duration> {
        self.limit
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
        factory: impl FnMut() -> H + 'static,
    ) -> io::Result<ServerId> {
        let config = TlsConfig::Server(config);
        let options = options.on_accept(move |conn| conn.start_tls(config.clone()));
        self.reactor.start_server_with(addr, options, factory)
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
        factory: impl FnMut() -> H + 'static,
    ) -> io::Result<ServerId> {
        let config = TlsConfig::Server(config);
        let options = ServerOptions::new().on_accept(move |conn| conn.start_tls(config.clone()));
        self.reactor
            .upgrades()
            .adopt_server_with(listener, options, factory)
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
        let config = TlsConfig::client(config, server_name)?;
        let id = self.reactor.connect(addr, handler)?;
        // Its post_init is due when the running callback returns (or the
        // loop runs): TLS is on before that.
        if let Some(mut conn) = self.reactor.connection(id) {
            if let Err(e) = conn.start_tls(config) {
                conn.close_with_error(e);
            }
        }
        Ok(id)
    }

    /// Sets how long a TLS handshake started on this reactor from now on
    /// may take (default [`DEFAULT_HANDSHAKE_TIMEOUT`], 10 s); `None`
    /// lets it take for ever, bounded only by an inactivity timeout.
    pub fn set_handshake_timeout(&mut self, limit: Option<std::time::Duration>) {
        let r = &mut *self.reactor;
        r.extensions()
            .get_or_default::<Settings>()
            .handshake_timeout = limit;
    }

    /// The TLS handshake deadline of sessions started now (see
    /// [`Tls::set_handshake_timeout`]).
    pub fn handshake_timeout(&mut self) -> Option<std::time::Duration> {
        let r = &mut *self.reactor;
        r.extensions()
            .get_or_default::<Settings>()
            .handshake_timeout
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
        let limit = self.reactor().tls().handshake_timeout();
        self.set_filter(Session::new(config, limit)?)
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
        self.filter::<Session>()
    }
}
