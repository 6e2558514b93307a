//! Listeners: TCP and Unix servers, accepting in batches, and shedding
//! connections when the process is out of descriptors (EMFILE).
//!
//! This file owns listening sockets and the spare descriptor. It accepts
//! at most `ACCEPT_BATCH` connections per listener per turn, so a flood of
//! connects cannot starve established connections.

use std::sync::Arc;

use super::*;

/// Connections accepted from one listener per turn before other sources get
/// their turn.
pub(super) const ACCEPT_BATCH: usize = 64;

pub(super) type Factory = Box<dyn FnMut() -> Box<dyn Handler>>;

pub(super) struct Listener {
    pub(super) sock: Socket,
    pub(super) factory: Factory,
    /// [`ServerOptions::on_accept`].
    pub(super) on_accept: Option<AcceptHook>,
    pub(super) tcp: bool,
    /// The Unix socket file this listener created, removed when it stops.
    pub(super) unix_path: Option<PathBuf>,
}

/// Identifies a server started on a reactor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServerId(pub(super) Token);

/// What [`ServerOptions::on_accept`] runs.
type AcceptHook = Arc<dyn Fn(&mut Connection<'_>) -> io::Result<()> + Send + Sync>;

/// How [`Reactor::start_server_with`] sets up a listening socket, and
/// what it does with each connection before its handler hears of it.
#[derive(Clone)]
pub struct ServerOptions {
    pub(super) reuse_port: bool,
    pub(super) backlog: i32,
    pub(super) on_accept: Option<AcceptHook>,
}

impl std::fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerOptions")
            .field("reuse_port", &self.reuse_port)
            .field("backlog", &self.backlog)
            .field("on_accept", &self.on_accept.is_some())
            .finish()
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            reuse_port: false,
            backlog: 4096,
            on_accept: None,
        }
    }
}

impl ServerOptions {
    /// Defaults: no `SO_REUSEPORT`, a backlog of 4096 (capped by the
    /// kernel's `somaxconn`).
    pub fn new() -> ServerOptions {
        ServerOptions::default()
    }

    /// Sets `SO_REUSEPORT`, so that several reactors (one per thread) can
    /// listen on the same port and the kernel spreads connections over them.
    pub fn reuse_port(mut self, on: bool) -> ServerOptions {
        self.reuse_port = on;
        self
    }

    /// The listen backlog.
    pub fn backlog(mut self, backlog: i32) -> ServerOptions {
        self.backlog = backlog;
        self
    }

    /// Runs `f` on every accepted connection before its handler's
    /// `post_init`: to set a filter (`reactor.tls().start_server(..)`
    /// starts TLS this way), a socket option, or to refuse the connection by
    /// returning an error, which closes it with [`CloseReason::Protocol`]
    /// (the handler's `post_init` is skipped; `unbind` still comes). `f`
    /// is shared by every reactor the options are given to, so it is
    /// `Send + Sync`.
    ///
    /// [`CloseReason::Protocol`]: crate::CloseReason::Protocol
    pub fn on_accept(
        mut self,
        f: impl Fn(&mut Connection<'_>) -> io::Result<()> + Send + Sync + 'static,
    ) -> ServerOptions {
        self.on_accept = Some(Arc::new(f));
        self
    }
}

pub(super) fn is_fd_exhaustion(errno: i32) -> bool {
    // EMFILE (24) and ENFILE (23) on Linux and the BSDs alike.
    errno == 24 || errno == 23
}

pub(super) fn is_stale_unix_socket(path: &Path) -> bool {
    matches!(
        std::os::unix::net::UnixStream::connect(path),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused
    )
}

impl Reactor {
    /// Listens on a TCP address; every accepted connection gets a handler
    /// from `factory`. `SO_REUSEADDR` is set, and `TCP_NODELAY` on every
    /// accepted connection.
    ///
    /// # Errors
    /// The address does not resolve, or the bind/listen fails (for example
    /// `AddrInUse`).
    pub fn start_server<H: Handler>(
        &mut self,
        addr: impl ToSocketAddrs,
        factory: impl FnMut() -> H + 'static,
    ) -> io::Result<ServerId> {
        self.start_server_with(addr, ServerOptions::default(), factory)
    }

    /// [`Reactor::start_server`] with options, such as `SO_REUSEPORT` for
    /// one listener per reactor thread on a shared port.
    ///
    /// # Errors
    /// As [`Reactor::start_server`].
    pub fn start_server_with<H: Handler>(
        &mut self,
        addr: impl ToSocketAddrs,
        options: ServerOptions,
        mut factory: impl FnMut() -> H + 'static,
    ) -> io::Result<ServerId> {
        let addr = Addr::Inet(resolve(addr)?);
        let sock = Socket::stream(addr.domain())?;
        sock.set_reuse_address(true)?;
        if options.reuse_port {
            sock.set_reuse_port(true)?;
        }
        sock.bind(&addr)
            .and_then(|()| sock.listen(options.backlog))
            .map_err(|e| listen_error(e, &addr))?;
        let factory: Factory = Box::new(move || Box::new(factory()));
        self.add_listener(Box::new(Listener {
            sock,
            factory,
            on_accept: options.on_accept,
            tcp: true,
            unix_path: None,
        }))
    }

    /// Listens on a Unix-domain socket at `path`. A stale socket file left
    /// by a dead process is replaced; a live one is `AddrInUse`. The file is
    /// removed when the server stops.
    ///
    /// # Errors
    /// As [`Reactor::start_server`], or a path too long for `sun_path`.
    pub fn start_unix_server<H: Handler>(
        &mut self,
        path: impl AsRef<Path>,
        mut factory: impl FnMut() -> H + 'static,
    ) -> io::Result<ServerId> {
        let path = path.as_ref().to_path_buf();
        let addr = Addr::Unix(Some(path.clone()));
        let sock = Socket::stream(Domain::Unix)?;
        match sock.bind(&addr) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && is_stale_unix_socket(&path) => {
                std::fs::remove_file(&path).map_err(|e| listen_error(e, &addr))?;
                sock.bind(&addr).map_err(|e| listen_error(e, &addr))?;
            }
            other => other.map_err(|e| listen_error(e, &addr))?,
        }
        sock.listen(ServerOptions::default().backlog)
            .map_err(|e| listen_error(e, &addr))?;
        let factory: Factory = Box::new(move || Box::new(factory()));
        self.add_listener(Box::new(Listener {
            sock,
            factory,
            on_accept: None,
            tcp: false,
            unix_path: Some(path),
        }))
    }

    /// Deregisters and closes listener `token`; the Unix socket file it
    /// made, if any. Closing alone would not end the registration while
    /// another descriptor of the socket is open (a copy kept for an
    /// upgrade, or the new process's after one): epoll watches the open
    /// socket, not the number.
    fn close_listener(&mut self, token: Token) -> Option<PathBuf> {
        let Some(Source::Listener(l)) = self.sources.remove(token) else {
            return None;
        };
        let _ = self.selector.deregister(std::os::fd::AsFd::as_fd(&l.sock));
        l.unix_path
    }

    pub(super) fn add_listener(&mut self, listener: Box<Listener>) -> io::Result<ServerId> {
        let token = self.sources.insert(Source::Listener(listener));
        let Some(Source::Listener(l)) = self.sources.get(token) else {
            unreachable!()
        };
        if let Err(e) =
            self.selector
                .register(std::os::fd::AsFd::as_fd(&l.sock), token, Interest::READABLE)
        {
            self.stop_server(ServerId(token));
            return Err(e);
        }
        Ok(ServerId(token))
    }

    /// The address a server listens on (useful after binding port 0).
    ///
    /// # Errors
    /// `NotFound` for a stopped server.
    pub fn server_addr(&self, server: ServerId) -> io::Result<Addr> {
        match self.sources.get(server.0) {
            Some(Source::Listener(l)) => l.sock.local_addr(),
            _ => Err(io::Error::new(io::ErrorKind::NotFound, "no such server")),
        }
    }

    /// Stops listening. Connections already accepted stay open. Returns
    /// whether the server was running.
    pub fn stop_server(&mut self, server: ServerId) -> bool {
        match self.sources.get(server.0) {
            Some(Source::Listener(_)) => {}
            _ => return false,
        }
        if let Some(path) = self.close_listener(server.0) {
            let _ = std::fs::remove_file(path);
        }
        true
    }

    pub(super) fn accept_from(&mut self, token: Token) {
        for _ in 0..ACCEPT_BATCH {
            let Some(Source::Listener(l)) = self.sources.get_mut(token) else {
                return;
            };
            match l.sock.accept() {
                Ok(sock) => {
                    let transport = if l.tcp {
                        let _ = sock.set_nodelay(true);
                        Transport::Tcp
                    } else {
                        Transport::Unix
                    };
                    let handler = (l.factory)();
                    let on_accept = l.on_accept.clone();
                    // Out of epoll watches or memory: the connection is
                    // dropped (closed) and the listener goes on.
                    if let Ok(conn) = self.add_conn(sock, handler, Phase::Open, transport) {
                        self.call(conn, |h, c| match on_accept.map_or(Ok(()), |f| f(c)) {
                            Ok(()) => h.post_init(c),
                            Err(e) => c.close_with_error(e),
                        });
                        self.call(conn, |h, c| h.connection_completed(c));
                        self.run_pending();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if matches!(e.raw_os_error(), Some(libc_emfile) if is_fd_exhaustion(libc_emfile)) =>
                {
                    self.shed_connections(token);
                    return;
                }
                // The connection died in the queue (ECONNABORTED, EPROTO),
                // or a transient shortage (ENOBUFS, ENOMEM): try the next.
                Err(_) => continue,
            }
        }
        // More may be queued; let other sources run first.
        self.carry(token);
    }

    /// Out of descriptors: free the spare one, accept and close what is
    /// queued so the clients see a close rather than a hang and the
    /// listener's readiness is drained (no busy loop), then take the spare
    /// back.
    pub(super) fn shed_connections(&mut self, token: Token) {
        self.spare_fd = None;
        for _ in 0..ACCEPT_BATCH * 16 {
            let Some(Source::Listener(l)) = self.sources.get(token) else {
                break;
            };
            match l.sock.accept() {
                Ok(sock) => drop(sock),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
        self.spare_fd = File::open("/dev/null").ok();
    }
}

/// Listeners handed over between processes ([`Extensions::adopt_server`],
/// [`Extensions::server_fds`], [`Extensions::stop_servers_keeping_files`]).
impl Reactor {
    pub(super) fn adopt_server<H: Handler>(
        &mut self,
        fd: OwnedFd,
        options: ServerOptions,
        mut factory: impl FnMut() -> H + 'static,
    ) -> io::Result<ServerId> {
        let sock = Socket::from(fd);
        let tcp = matches!(sock.local_addr(), Ok(Addr::Inet(_)));
        sock.set_nonblocking(true)?;
        let factory: Factory = Box::new(move || Box::new(factory()));
        self.add_listener(Box::new(Listener {
            sock,
            factory,
            on_accept: options.on_accept,
            tcp,
            unix_path: None,
        }))
    }

    pub(super) fn server_fds(&self) -> Vec<std::os::fd::BorrowedFd<'_>> {
        self.sources
            .tokens()
            .into_iter()
            .filter_map(|t| match self.sources.get(t) {
                Some(Source::Listener(l)) => Some(std::os::fd::AsFd::as_fd(&l.sock)),
                _ => None,
            })
            .collect()
    }

    pub(super) fn close_listeners_keeping_files(&mut self) -> usize {
        let servers: Vec<Token> = self
            .sources
            .tokens()
            .into_iter()
            .filter(|&t| matches!(self.sources.get(t), Some(Source::Listener(_))))
            .collect();
        for &t in &servers {
            self.close_listener(t);
        }
        servers.len()
    }
}

/// A bind or listen error naming the address: "cannot listen on
/// 127.0.0.1:8080: Address already in use (os error 98)".
fn listen_error(e: io::Error, addr: &Addr) -> io::Error {
    crate::connection::io_context(
        e,
        format_args!("cannot listen on {}", super::conn::DisplayAddr(addr)),
    )
}
