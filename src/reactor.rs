//! The event loop: readiness from the OS selector turned into handler
//! callbacks.
//!
//! This module owns the loop and everything registered with it — listeners,
//! connections, the shared read buffer, the queue of deferred work — and is
//! the only place that calls a [`Handler`]. It must never call a handler
//! from inside another handler's callback (every such effect is deferred to
//! the `pending` queue and run when the callback returns), never read more
//! than one buffer per connection per turn, and never block outside
//! `Selector::wait`.
//!
//! The phases of one turn, in the order [`Reactor::run_until_stopped`] runs
//! them (ARCHITECTURE.md describes them in full):
//!
//! 1. run the closures queued with [`Reactor::next_turn`] before this turn;
//! 2. run deferred work (post_init of new clients, closes, water marks);
//! 3. wait for readiness, with a zero timeout if work is already waiting;
//! 4. dispatch each event: accept, finish connects, flush, read and call
//!    `receive_data`; after each, run deferred work so a connection closed
//!    by one event is gone before the next event of the batch;
//! 5. give connections that had more input than one buffer their next read.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use packet_sys::{Addr, Domain, Events, Interest, Selector, Socket, Waker};

use crate::buffer::OutBuf;
use crate::connection::{CloseReason, ConnId, Connection, Handler};
use crate::slab::{Slab, Token, RESERVED_TOKEN};
use crate::timer::{TimerKey, TimerWheel};

/// One read buffer per reactor, lent to `receive_data`: about what a
/// loopback TCP socket has ready at once (libuv and most reactors use
/// 64 KiB).
///
/// Not a power of two on purpose: an edge-triggered reader must read again
/// after a read that fills its buffer, and power-of-two traffic (four 16 KiB
/// messages in flight) would fill a 64 KiB buffer exactly and pay one
/// `EAGAIN` read per batch.
const READ_BUF_SIZE: usize = 96 * 1024;

/// Writes at least this large go to the socket at once instead of being
/// staged, so big payloads are not copied just to be coalesced.
const DIRECT_WRITE_MIN: usize = 16 * 1024;

/// Connections accepted from one listener per turn before other sources get
/// their turn.
const ACCEPT_BATCH: usize = 64;

/// Events taken from the kernel per wait.
const EVENTS_PER_WAIT: usize = 1024;

const DEFAULT_HIGH_WATER: usize = 1024 * 1024;

/// EventMachine's default `pending_connect_timeout`: a connect that has not
/// completed by then is abandoned with [`CloseReason::ConnectTimeout`].
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Per-connection state bits.
pub(crate) mod flag {
    pub const CONNECTING: u32 = 1 << 0;
    /// The socket may have unread input (an edge was seen and not drained).
    pub const READ_READY: u32 = 1 << 1;
    /// The peer shut down its side; reads go on until they return 0.
    pub const RDHUP: u32 = 1 << 2;
    /// The kernel send buffer is full; wait for the next writable edge.
    pub const WRITE_BLOCKED: u32 = 1 << 3;
    pub const PAUSED: u32 = 1 << 4;
    /// Close once the outbound queue is empty.
    pub const CLOSING: u32 = 1 << 5;
    /// A close is queued: no more I/O or callbacks but `unbind`.
    pub const CLOSED: u32 = 1 << 6;
    /// End of stream was read.
    pub const PEER_CLOSED: u32 = 1 << 7;
    /// `outbound_full` was reported and `outbound_drained` not yet.
    pub const ABOVE_HIGH: u32 = 1 << 8;
    /// A TCP socket, as opposed to a Unix-domain one.
    pub const TCP: u32 = 1 << 9;
    /// Reads collect passed descriptors (`SCM_RIGHTS`).
    pub const PASS_FDS: u32 = 1 << 10;
    /// A pipe or other non-socket: plain `write`, no `send` flags.
    pub const NOT_SOCKET: u32 = 1 << 11;
    /// `close_write` was asked: shut the write side once the queue drains.
    pub const SHUT_WRITE: u32 = 1 << 12;
    /// ...and it is shut.
    pub const SHUT_DONE: u32 = 1 << 13;
    /// Input goes to another connection (`proxy_incoming_to`).
    pub const PROXY_SOURCE: u32 = 1 << 14;
    /// Receives a proxied connection's input.
    pub const PROXY_TARGET: u32 = 1 << 15;
    /// `EPOLLOUT` is in the registration. Always for TCP; for Unix sockets
    /// and pipes only while connecting or while a write is blocked, because
    /// their peers raise a writable edge on every read they make, which
    /// would wake the loop once per message for nothing.
    pub const WANT_WRITE: u32 = 1 << 16;
}

pub(crate) struct Conn {
    pub(crate) sock: Socket,
    /// `None` only while one of its callbacks runs.
    handler: Option<Box<dyn Handler>>,
    pub(crate) out: OutBuf,
    pub(crate) flags: u32,
    high_water: u32,
    /// Loop time (ms, wrapping) of the last byte read or written.
    last_activity: u32,
    /// Inactivity timeout in ms; 0 when none.
    idle_timeout: u32,
    /// The connect timeout while connecting, then the inactivity check.
    timer: Option<TimerKey>,
}

type Factory = Box<dyn FnMut() -> Box<dyn Handler>>;

/// A connection's descriptor as the target of an outbound queue flush.
struct ConnSink<'a> {
    sock: &'a Socket,
    not_socket: bool,
}

impl crate::buffer::Sink for ConnSink<'_> {
    fn write(
        &mut self,
        bufs: &[IoSlice<'_>],
        fds: &[std::os::fd::BorrowedFd<'_>],
    ) -> io::Result<usize> {
        if self.not_socket {
            self.sock.write_vectored_plain(bufs)
        } else {
            self.sock.write_vectored_with_fds(bufs, fds)
        }
    }

    fn send_file(&mut self, file: &File, offset: u64, len: usize) -> io::Result<usize> {
        match self
            .sock
            .send_file(std::os::fd::AsFd::as_fd(file), offset, len)
        {
            Err(e) if e.kind() == io::ErrorKind::Unsupported => {
                // No sendfile here: one bounded read, one write. Only what
                // was written counts; the rest is read again next time.
                use std::os::unix::fs::FileExt;
                let mut buf = vec![0u8; len.min(64 * 1024)];
                let n = file.read_at(&mut buf, offset)?;
                self.write(&[IoSlice::new(&buf[..n])], &[])
            }
            other => other,
        }
    }
}

impl Conn {
    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        if self.flags & flag::NOT_SOCKET != 0 {
            self.sock.write_plain(buf)
        } else {
            self.sock.write(buf)
        }
    }

    fn write_vectored(
        &self,
        bufs: &[IoSlice<'_>],
        fds: &[std::os::fd::BorrowedFd<'_>],
    ) -> io::Result<usize> {
        if self.flags & flag::NOT_SOCKET != 0 {
            self.sock.write_vectored_plain(bufs)
        } else {
            self.sock.write_vectored_with_fds(bufs, fds)
        }
    }
}

pub(crate) struct Listener {
    sock: Socket,
    factory: Factory,
    tcp: bool,
    /// The Unix socket file this listener created, removed when it stops.
    unix_path: Option<PathBuf>,
}

pub(crate) enum Source {
    Conn(Conn),
    /// Boxed: listeners are few, and this keeps every slab entry as small as
    /// a connection.
    Listener(Box<Listener>),
    /// A descriptor the user reads and writes (`watch`).
    Watch(Box<crate::watch::Watched>),
}

/// What a timer in the wheel does when it fires.
enum TimerTask {
    Once(Local),
    /// An entry of `Reactor::periodics`.
    Periodic(Token),
    /// A connection's connect or inactivity timeout.
    Conn(Token),
}

struct Periodic {
    /// `None` while its callback runs.
    callback: Option<PeriodicFn>,
    interval_ms: u64,
    /// The deadline it was last scheduled for: the next one is a whole
    /// number of intervals later (fixed rate).
    due_ms: u64,
    key: Option<TimerKey>,
}

/// Identifies a timer, for [`Reactor::cancel_timer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId(TimerRef);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum TimerRef {
    Once(TimerKey),
    Periodic(Token),
}

/// The deadline after `due_ms` for a fixed-rate timer, given that the loop
/// has reached `now_ms`: the next multiple of the interval after the last
/// deadline that is still in the future. A loop that fell behind skips the
/// periods it missed instead of firing them in a burst, and the phase never
/// drifts.
fn next_fixed_rate_deadline(due_ms: u64, interval_ms: u64, now_ms: u64) -> u64 {
    let next = due_ms.saturating_add(interval_ms);
    if next > now_ms {
        return next;
    }
    let missed = (now_ms - next) / interval_ms + 1;
    next.saturating_add(missed.saturating_mul(interval_ms))
}

type DeferredCall = Box<dyn FnOnce(&mut dyn Handler, &mut Connection<'_>)>;

/// Work deferred until no callback is running.
enum Pending {
    /// Call the connection's handler with this.
    #[cfg_attr(not(feature = "workers"), allow(dead_code))]
    Call(DeferredCall),
    /// Call `post_init` of an outgoing connection.
    Init,
    /// Call `post_init` and `connection_completed` of an adopted socket.
    Adopted,
    /// The peer ended its stream: call `receive_eof`.
    Eof,
    Close(CloseReason),
    Full,
    Drained,
}

/// Identifies a server started on a reactor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServerId(Token);

/// How [`Reactor::start_server_with`] sets up a listening socket.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    reuse_port: bool,
    backlog: i32,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            reuse_port: false,
            backlog: 4096,
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
}

type Remote = Box<dyn FnOnce(&mut Reactor) + Send>;
type Local = Box<dyn FnOnce(&mut Reactor)>;
type PeriodicFn = Box<dyn FnMut(&mut Reactor, TimerId)>;
type SignalFn = Box<dyn FnMut(&mut Reactor)>;

/// What other threads share with a reactor.
struct Shared {
    waker: Waker,
    stop: AtomicBool,
    queue: Mutex<Vec<Remote>>,
}

/// Controls a reactor from any thread: stop it, or run a closure on it.
#[derive(Clone)]
pub struct ReactorHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ReactorHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReactorHandle").finish_non_exhaustive()
    }
}

impl ReactorHandle {
    /// Asks the reactor to stop after its current turn. Its connections then
    /// get `unbind` with [`CloseReason::ReactorStopped`].
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        // A wake can only fail if the eventfd is broken; the stop flag is
        // still seen on the reactor's next turn.
        let _ = self.shared.waker.wake();
    }

    /// Runs `f` on the reactor's thread at the start of its next turn.
    pub fn schedule(&self, f: impl FnOnce(&mut Reactor) + Send + 'static) {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(f));
        let _ = self.shared.waker.wake();
    }
}

/// An event loop with its servers, connections and deferred work.
///
/// One reactor runs on one thread; several may run in one process, each on
/// its own thread (Packet's difference from EventMachine). Everything else
/// in the library hangs off a reactor.
///
/// ```
/// use packet::{Connection, Handler, Reactor};
///
/// struct Echo;
/// impl Handler for Echo {
///     fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
///         conn.send_data(data);
///     }
/// }
///
/// // A client that sends one line, checks the echo and stops the reactor.
/// struct Probe;
/// impl Handler for Probe {
///     fn connection_completed(&mut self, conn: &mut Connection<'_>) {
///         conn.send_data(b"hello\n");
///     }
///     fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
///         assert_eq!(data, b"hello\n");
///         conn.reactor().stop();
///     }
/// }
///
/// packet::Reactor::run(|reactor| {
///     let server = reactor.start_server("127.0.0.1:0", || Echo)?;
///     let addr = reactor.server_addr(server)?;
///     reactor.connect(addr.as_inet().unwrap(), Probe)?;
///     Ok(())
/// })?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Reactor {
    pub(crate) selector: Selector,
    pub(crate) sources: Slab<Source>,
    /// Lent to `receive_data`; empty while lent.
    pub(crate) read_buf: Vec<u8>,
    /// Output of the running callback to its own connection, written in one
    /// syscall when the callback returns.
    stage: Vec<u8>,
    /// The connection whose callback is running.
    current: Option<Token>,
    pending: VecDeque<(Token, Pending)>,
    /// Sources with input left after this turn's read (fairness bound).
    pub(crate) ready: Vec<Token>,
    ready_spare: Vec<Token>,
    next_turn: Vec<Local>,
    shared: Arc<Shared>,
    stopped: bool,
    running: bool,
    /// Held so that one descriptor can be freed to shed connections when
    /// accept fails with EMFILE (libuv's trick).
    spare_fd: Option<File>,
    default_high_water: usize,
    connections: usize,
    /// The connection in `unbind`, and where it asked to reconnect.
    unbinding: Option<Token>,
    reconnect_to: Option<Addr>,
    timers: TimerWheel<TimerTask>,
    periodics: Slab<Periodic>,
    /// Descriptors received with the bytes being delivered to
    /// `receive_data`.
    fd_inbox: Vec<OwnedFd>,
    /// Proxies by source connection, and their targets.
    pub(crate) proxies: std::collections::HashMap<Token, crate::proxy::Proxy>,
    pub(crate) proxy_targets: std::collections::HashMap<Token, Token>,
    /// Bytes the connection in `unbind` proxied, its proxy being gone.
    pub(crate) unbinding_proxied: u64,
    /// Callbacks for signals routed to this reactor's waker.
    signals: Vec<(i32, Option<SignalFn>)>,
    /// The master side of the worker processes, once attached.
    #[cfg(feature = "workers")]
    pub(crate) workers: Option<Box<crate::worker::Master>>,
    /// The loop's clock: read once per turn.
    epoch: Instant,
    now_ns: u64,
    connect_timeout: Option<Duration>,
}

/// Resolves `addr` to its first socket address.
pub(crate) fn resolve(addr: impl ToSocketAddrs) -> io::Result<SocketAddr> {
    addr.to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "address resolved to nothing"))
}

impl Reactor {
    /// Creates a reactor: an epoll/kqueue instance, a waker, and a read
    /// buffer.
    ///
    /// # Errors
    /// Out of descriptors.
    pub fn new() -> io::Result<Reactor> {
        let selector = Selector::new()?;
        let waker = Waker::new(&selector, RESERVED_TOKEN)?;
        Ok(Reactor {
            selector,
            sources: Slab::new(),
            // Capacity only: pages that no read reaches are never touched.
            read_buf: Vec::with_capacity(READ_BUF_SIZE),
            stage: Vec::new(),
            current: None,
            pending: VecDeque::new(),
            ready: Vec::new(),
            ready_spare: Vec::new(),
            next_turn: Vec::new(),
            shared: Arc::new(Shared {
                waker,
                stop: AtomicBool::new(false),
                queue: Mutex::new(Vec::new()),
            }),
            stopped: false,
            running: false,
            spare_fd: File::open("/dev/null").ok(),
            default_high_water: DEFAULT_HIGH_WATER,
            connections: 0,
            unbinding: None,
            reconnect_to: None,
            timers: TimerWheel::new(),
            periodics: Slab::new(),
            fd_inbox: Vec::new(),
            signals: Vec::new(),
            proxies: std::collections::HashMap::new(),
            proxy_targets: std::collections::HashMap::new(),
            unbinding_proxied: 0,
            #[cfg(feature = "workers")]
            workers: None,
            epoch: Instant::now(),
            now_ns: 0,
            connect_timeout: Some(DEFAULT_CONNECT_TIMEOUT),
        })
    }

    /// Creates a reactor, lets `setup` start servers and clients, and runs
    /// it until stopped — Packet's `Reactor.run { |reactor| ... }`.
    ///
    /// # Errors
    /// What `setup` returns, or a failure of the selector itself.
    pub fn run(setup: impl FnOnce(&mut Reactor) -> io::Result<()>) -> io::Result<()> {
        let mut reactor = Reactor::new()?;
        setup(&mut reactor)?;
        reactor.run_until_stopped()
    }

    /// Runs the loop until [`Reactor::stop`] or [`ReactorHandle::stop`].
    /// On return every connection has had its `unbind` and every server is
    /// closed; the reactor can be set up and run again.
    ///
    /// # Errors
    /// `WouldBlock`-free failures of the selector (the loop cannot go on),
    /// or `Other` when called from inside one of this reactor's callbacks.
    pub fn run_until_stopped(&mut self) -> io::Result<()> {
        if self.running {
            return Err(io::Error::other("the reactor is already running"));
        }
        self.running = true;
        let mut events = Events::with_capacity(EVENTS_PER_WAIT);
        let mut result = Ok(());
        while !self.stopped {
            if let Err(e) = self.turn(&mut events) {
                result = Err(e);
                break;
            }
        }
        self.shutdown();
        self.running = false;
        result
    }

    /// A handle for stopping or scheduling work from other threads.
    pub fn handle(&self) -> ReactorHandle {
        ReactorHandle {
            shared: self.shared.clone(),
        }
    }

    /// Stops the loop after the current turn.
    pub fn stop(&mut self) {
        self.stopped = true;
    }

    /// Runs `callback` on this reactor's thread each time signal `sig`
    /// arrives (for example [`crate::signal::SIGTERM`]). The signal handler
    /// itself only wakes the loop; nothing runs in signal context. One
    /// reactor per signal: a later `on_signal` for the same signal, on any
    /// reactor, takes it over. The previous action is restored when the
    /// reactor is dropped.
    ///
    /// # Errors
    /// `InvalidInput` for `SIGKILL`, `SIGSTOP` or an invalid number.
    pub fn on_signal(
        &mut self,
        sig: i32,
        callback: impl FnMut(&mut Reactor) + 'static,
    ) -> io::Result<()> {
        packet_sys::signal::watch(sig, &self.shared.waker)?;
        self.signals.retain(|(s, _)| *s != sig);
        self.signals.push((sig, Some(Box::new(callback))));
        Ok(())
    }

    /// Stops the reactor gracefully: closes every server at once; lets asks
    /// in flight to workers finish and their replies reach the askers
    /// (asks left at `within` fail with `WorkerError::Stopping`); then lets
    /// every connection write what it has queued and close (workers exit
    /// the same way, and are reaped), and stops once no connection is left
    /// or `within` has passed, whichever comes first. What a server does on
    /// `SIGTERM`.
    pub fn stop_gracefully(&mut self, within: Duration) {
        // While asks are in flight, the connections waiting for them stay
        // open; the worker system calls this again once they are done.
        #[cfg(feature = "workers")]
        let keep_connections = self.workers_draining(within);
        #[cfg(not(feature = "workers"))]
        let keep_connections = false;
        for token in self.sources.tokens() {
            match self.sources.get(token) {
                Some(Source::Listener(_)) => {
                    self.stop_server(ServerId(token));
                }
                Some(Source::Conn(_)) if keep_connections => {}
                Some(Source::Conn(_)) => self.close_connection(ConnId(token), true),
                // Watched descriptors are the user's: they end with the stop.
                Some(Source::Watch(_)) | None => {}
            }
        }
        if keep_connections {
            return;
        }
        let deadline = self.now() + within;
        let check = move |r: &mut Reactor, id: TimerId| {
            if r.connections == 0 || r.now() >= deadline {
                r.cancel_timer(id);
                r.stop();
            }
        };
        self.add_periodic_timer(Duration::from_millis(5), check);
    }

    /// Runs `f` at the start of the next turn of the loop.
    pub fn next_turn(&mut self, f: impl FnOnce(&mut Reactor) + 'static) {
        self.next_turn.push(Box::new(f));
    }

    /// Open connections (accepted and outgoing).
    pub fn connection_count(&self) -> usize {
        self.connections
    }

    /// The outbound high-water mark given to new connections.
    pub fn set_default_high_water_mark(&mut self, bytes: usize) {
        self.default_high_water = bytes;
    }

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
        sock.bind(&addr)?;
        sock.listen(options.backlog)?;
        let factory: Factory = Box::new(move || Box::new(factory()));
        self.add_listener(Box::new(Listener {
            sock,
            factory,
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
                std::fs::remove_file(&path)?;
                sock.bind(&addr)?;
            }
            other => other?,
        }
        sock.listen(ServerOptions::default().backlog)?;
        let factory: Factory = Box::new(move || Box::new(factory()));
        self.add_listener(Box::new(Listener {
            sock,
            factory,
            tcp: false,
            unix_path: Some(path),
        }))
    }

    fn add_listener(&mut self, listener: Box<Listener>) -> io::Result<ServerId> {
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
        if let Some(Source::Listener(l)) = self.sources.remove(server.0) {
            if let Some(path) = l.unix_path {
                let _ = std::fs::remove_file(path);
            }
        }
        true
    }

    /// Starts a non-blocking TCP connect. `post_init` runs as soon as the
    /// current callback returns; then `connection_completed` on success or
    /// `unbind` with [`CloseReason::ConnectFailed`] on failure (for example
    /// `ECONNREFUSED`). Names are resolved with the system resolver, which
    /// blocks: pass an IP address from inside a running reactor.
    ///
    /// # Errors
    /// The address does not resolve, or no socket could be made (`EMFILE`).
    pub fn connect<H: Handler>(
        &mut self,
        addr: impl ToSocketAddrs,
        handler: H,
    ) -> io::Result<ConnId> {
        let addr = Addr::Inet(resolve(addr)?);
        self.connect_boxed(addr, Box::new(handler))
    }

    /// Connects to a Unix-domain socket, as [`Reactor::connect`].
    ///
    /// # Errors
    /// No socket could be made, or the path is too long.
    pub fn connect_unix<H: Handler>(
        &mut self,
        path: impl AsRef<Path>,
        handler: H,
    ) -> io::Result<ConnId> {
        self.connect_boxed(
            Addr::Unix(Some(path.as_ref().to_path_buf())),
            Box::new(handler),
        )
    }

    fn connect_boxed(&mut self, addr: Addr, handler: Box<dyn Handler>) -> io::Result<ConnId> {
        let sock = Socket::stream(addr.domain())?;
        let started = sock.connect(&addr);
        let tcp = if matches!(addr, Addr::Inet(_)) {
            flag::TCP
        } else {
            0
        };
        let token = self.add_conn(sock, handler, flag::CONNECTING | tcp)?;
        self.pending.push_back((token, Pending::Init));
        if let Some(limit) = self.connect_timeout {
            let deadline = self.deadline_after(limit);
            let key = self.timers.insert(deadline, TimerTask::Conn(token));
            if let Some(c) = self.conn_mut(token) {
                c.timer = Some(key);
            }
        }
        if let Err(e) = started {
            // Delivered on the next turn, not now: a handler that reconnects
            // from `unbind` must not loop inside one turn.
            self.next_turn(move |r| r.begin_close(token, CloseReason::ConnectFailed(e)));
        }
        Ok(ConnId(token))
    }

    fn add_conn(
        &mut self,
        sock: Socket,
        handler: Box<dyn Handler>,
        flags: u32,
    ) -> io::Result<Token> {
        let high_water = self.default_high_water.min(u32::MAX as usize) as u32;
        let always_write = flags & (flag::TCP | flag::CONNECTING) != 0;
        let flags = if always_write {
            flags | flag::WANT_WRITE
        } else {
            flags
        };
        let token = self.sources.insert(Source::Conn(Conn {
            sock,
            handler: Some(handler),
            out: OutBuf::default(),
            flags,
            high_water,
            last_activity: self.now_ms() as u32,
            idle_timeout: 0,
            timer: None,
        }));
        let Some(Source::Conn(c)) = self.sources.get(token) else {
            unreachable!()
        };
        let interest = if always_write {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        if let Err(e) = self
            .selector
            .register(std::os::fd::AsFd::as_fd(&c.sock), token, interest)
        {
            self.sources.remove(token);
            return Err(e);
        }
        self.connections += 1;
        Ok(token)
    }

    /// Whether `id` is the connection whose `unbind` is running.
    pub(crate) fn is_unbinding(&self, id: ConnId) -> bool {
        self.unbinding == Some(id.0)
    }

    pub(crate) fn request_reconnect(&mut self, id: ConnId, addr: Addr) -> io::Result<()> {
        if self.unbinding != Some(id.0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "reconnect is only possible from unbind",
            ));
        }
        self.reconnect_to = Some(addr);
        Ok(())
    }

    pub(crate) fn conn_mut(&mut self, token: Token) -> Option<&mut Conn> {
        match self.sources.get_mut(token) {
            Some(Source::Conn(c)) => Some(c),
            _ => None,
        }
    }

    pub(crate) fn conn(&self, token: Token) -> Option<&Conn> {
        match self.sources.get(token) {
            Some(Source::Conn(c)) => Some(c),
            _ => None,
        }
    }

    /// Sends `data` to connection `id` (see [`Connection::send_data`]).
    /// Returns `false` if the connection is closed or closing, in which case
    /// the data is dropped.
    pub fn send_data_to(&mut self, id: ConnId, data: &[u8]) -> bool {
        let token = id.0;
        let is_current = self.current == Some(token);
        let Some(c) = self.conn_mut(token) else {
            return false;
        };
        // Refused after a local close or half-close. After the *peer*
        // closed its side (CLOSING with PEER_CLOSED) writes are still
        // taken: the connection closes once they are out.
        let closing_locally = c.flags & (flag::CLOSING | flag::PEER_CLOSED) == flag::CLOSING;
        if c.flags & (flag::CLOSED | flag::SHUT_WRITE) != 0 || closing_locally {
            return false;
        }
        if data.is_empty() {
            return true;
        }
        if !c.out.is_empty() || c.flags & (flag::WRITE_BLOCKED | flag::CONNECTING) != 0 {
            c.out.push(data);
            // Queued behind passed descriptors on a writable socket: nothing
            // else will flush it (the running callback's connection is
            // flushed when the callback returns).
            if !is_current {
                self.flush_queue(token);
            }
            self.check_water(token);
            return true;
        }
        if is_current && data.len() < DIRECT_WRITE_MIN {
            let high = c.high_water as usize;
            self.stage.extend_from_slice(data);
            // The handler sees staged bytes in outbound_len: the mark must
            // see them too, or a handler pausing on its own reading of the
            // length would wait for an outbound_drained that never comes.
            if self.stage.len() > high {
                self.check_water(token);
            }
            return true;
        }
        // Large, or not the running connection: write now, staged bytes
        // first, and queue whatever the kernel does not take.
        let staged = if is_current { self.stage.len() } else { 0 };
        let now = self.now_ms() as u32;
        let Some(Source::Conn(c)) = self.sources.get_mut(token) else {
            return false;
        };
        c.last_activity = now;
        let result = if staged > 0 {
            c.write_vectored(&[IoSlice::new(&self.stage), IoSlice::new(data)], &[])
        } else {
            c.write(data)
        };
        let written = match result {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => {
                // The stage holds the running connection's bytes: only
                // that connection's failure drops them.
                if is_current {
                    self.stage.clear();
                }
                self.begin_close(token, CloseReason::from_io(e));
                return true;
            }
        };
        if written < staged + data.len() {
            if written < staged {
                c.out.push(&self.stage[written..]);
                c.out.push(data);
            } else {
                c.out.push(&data[written - staged..]);
            }
            c.flags |= flag::WRITE_BLOCKED;
        }
        if is_current {
            self.stage.clear();
        }
        self.check_water(token);
        true
    }

    /// Closes connection `id`, at once or after its queued output is written
    /// (see [`Connection::close_connection`]).
    pub fn close_connection(&mut self, id: ConnId, after_writing: bool) {
        let token = id.0;
        let is_current = self.current == Some(token);
        let Some(c) = self.conn_mut(token) else {
            return;
        };
        if after_writing {
            c.flags |= flag::CLOSING;
            if !is_current {
                self.check_water(token);
            }
        } else {
            self.begin_close(token, CloseReason::Local);
        }
    }

    /// Half-closes connection `id` once its queue drains (see
    /// [`Connection::close_write`]).
    pub fn close_write(&mut self, id: ConnId) {
        let is_current = self.current == Some(id.0);
        let Some(c) = self.conn_mut(id.0) else { return };
        c.flags |= flag::SHUT_WRITE;
        if !is_current {
            self.check_water(id.0);
        }
    }

    /// The socket of connection `id`, for option calls.
    pub(crate) fn conn_socket(&self, id: ConnId) -> io::Result<&Socket> {
        match self.conn(id.0) {
            Some(c) if c.flags & flag::CLOSED == 0 => Ok(&c.sock),
            _ => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Stops reading from connection `id` (see [`Connection::pause`]).
    pub fn pause(&mut self, id: ConnId) {
        if let Some(c) = self.conn_mut(id.0) {
            c.flags |= flag::PAUSED;
        }
    }

    /// Resumes reading from connection `id`.
    pub fn resume(&mut self, id: ConnId) {
        let Some(c) = self.conn_mut(id.0) else { return };
        if c.flags & flag::PAUSED == 0 {
            return;
        }
        c.flags &= !flag::PAUSED;
        // Input that arrived while paused raised no new edge: read it on the
        // next turn.
        if c.flags & flag::READ_READY != 0 {
            self.ready.push(id.0);
        }
    }

    /// Whether reading from connection `id` is paused.
    pub fn is_paused(&self, id: ConnId) -> bool {
        self.conn(id.0).is_some_and(|c| c.flags & flag::PAUSED != 0)
    }

    /// Bytes queued for connection `id` and not yet taken by the kernel.
    pub fn outbound_len(&self, id: ConnId) -> usize {
        let staged = if self.current == Some(id.0) {
            self.stage.len()
        } else {
            0
        };
        self.conn(id.0).map_or(0, |c| c.out.len() + staged)
    }

    /// Sets the outbound high-water mark of connection `id`.
    pub fn set_high_water_mark(&mut self, id: ConnId, bytes: usize) {
        if let Some(c) = self.conn_mut(id.0) {
            c.high_water = bytes.min(u32::MAX as usize) as u32;
        }
        self.check_water(id.0);
    }

    /// The peer address of connection `id`.
    ///
    /// # Errors
    /// `NotConnected` for a closed or still-connecting connection.
    pub fn peer_addr(&self, id: ConnId) -> io::Result<Addr> {
        match self.conn(id.0) {
            Some(c) if c.flags & flag::CONNECTING == 0 => c.sock.peer_addr(),
            _ => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// The local address of connection `id`.
    ///
    /// # Errors
    /// `NotConnected` for a closed connection.
    pub fn local_addr(&self, id: ConnId) -> io::Result<Addr> {
        match self.conn(id.0) {
            Some(c) => c.sock.local_addr(),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Turns an open descriptor into a connection with `handler`
    /// (EventMachine's `attach`): a connected stream socket, for example one
    /// received from another process, or a pipe or terminal. `post_init`
    /// and `connection_completed` follow as soon as the current callback
    /// returns. The descriptor is made non-blocking. Writing to a pipe whose
    /// reader is gone would raise `SIGPIPE`, so attaching one sets `SIGPIPE`
    /// to be ignored if it still has its default (killing) action; the
    /// write then fails with `EPIPE`, reported in `unbind`.
    ///
    /// # Errors
    /// The fd could not be made non-blocking or registered (epoll refuses
    /// regular files).
    pub fn attach<H: Handler>(&mut self, fd: OwnedFd, handler: H) -> io::Result<ConnId> {
        self.adopt_boxed(fd, Box::new(handler), false)
    }

    pub(crate) fn adopt_boxed(
        &mut self,
        fd: OwnedFd,
        handler: Box<dyn Handler>,
        pass_fds: bool,
    ) -> io::Result<ConnId> {
        let sock = Socket::from(fd);
        sock.set_nonblocking(true)?;
        let kind = match sock.local_addr() {
            Ok(Addr::Inet(_)) => {
                let _ = sock.set_nodelay(true);
                flag::TCP
            }
            Ok(Addr::Unix(_)) => 0,
            Err(_) => {
                packet_sys::signal::ignore_default_sigpipe();
                flag::NOT_SOCKET
            }
        };
        let extra = if pass_fds { flag::PASS_FDS } else { 0 };
        let token = self.add_conn(sock, handler, kind | extra)?;
        self.pending.push_back((token, Pending::Adopted));
        Ok(ConnId(token))
    }

    /// Takes connection `id`'s socket out of the reactor and hands it back,
    /// open (EventMachine's `detach`): it is removed from the selector at
    /// once, the connection ends with [`CloseReason::Detached`] after the
    /// current callback, and bytes still queued for it are dropped. Use it
    /// to pass an accepted client to a worker.
    ///
    /// # Errors
    /// `NotConnected` for a closed connection; out of descriptors.
    pub fn detach(&mut self, id: ConnId) -> io::Result<OwnedFd> {
        let Some(c) = self.conn(id.0) else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        if c.flags & flag::CLOSED != 0 {
            return Err(io::ErrorKind::NotConnected.into());
        }
        // The returned descriptor shares the open file with ours: without
        // this the selector would keep reporting its events to a dead token.
        self.selector
            .deregister(std::os::fd::AsFd::as_fd(&c.sock))?;
        let fd = std::os::fd::AsFd::as_fd(&c.sock).try_clone_to_owned()?;
        self.begin_close(id.0, CloseReason::Detached);
        Ok(fd)
    }

    /// Sends `len` bytes of `file` from `offset` to connection `id`, after
    /// what was sent before and before what is sent after, without reading
    /// the file into memory (`sendfile` where the OS has it; bounded reads
    /// elsewhere). Unlike EventMachine's `send_file_data` the size is not
    /// limited, and nothing busy-polls: the file goes out as the socket
    /// takes it.
    ///
    /// # Errors
    /// `NotConnected` for a closed or closing connection.
    pub fn send_file_range(
        &mut self,
        id: ConnId,
        file: File,
        offset: u64,
        len: u64,
    ) -> io::Result<()> {
        let token = id.0;
        let is_current = self.current == Some(token);
        if is_current {
            self.flush_stage(token);
        }
        let Some(c) = self.conn_mut(token) else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        if c.flags & (flag::CLOSED | flag::CLOSING | flag::SHUT_WRITE) != 0 {
            return Err(io::ErrorKind::NotConnected.into());
        }
        c.out.push_file(file, offset, len);
        if !is_current {
            self.flush_queue(token);
        }
        Ok(())
    }

    /// Sends the whole file at `path` to connection `id` (EventMachine's
    /// `send_file_data`, of any size); returns its length.
    ///
    /// # Errors
    /// The file cannot be opened, or as [`Reactor::send_file_range`].
    pub fn send_file(&mut self, id: ConnId, path: impl AsRef<Path>) -> io::Result<u64> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        self.send_file_range(id, file, 0, len)?;
        Ok(len)
    }

    /// Passes `fd` to the peer of connection `id` (a Unix socket) with the
    /// next bytes sent on it — send them right after, for example a message
    /// saying what the descriptor is. The descriptor is closed here once
    /// sent. Returns `false` (closing `fd`) if the connection is closed.
    pub fn send_fd(&mut self, id: ConnId, fd: OwnedFd) -> bool {
        let token = id.0;
        // Staged bytes were sent before this call: they go ahead of it.
        if self.current == Some(token) {
            self.flush_stage(token);
        }
        let Some(c) = self.conn_mut(token) else {
            return false;
        };
        if c.flags & (flag::CLOSED | flag::CLOSING) != 0 {
            return false;
        }
        c.out.push_fd(fd);
        true
    }

    /// Runs `f` with the handler of connection `id` as soon as no callback
    /// is running (right after the current one returns). Dropped if the
    /// connection closes first.
    #[cfg_attr(not(feature = "workers"), allow(dead_code))]
    pub(crate) fn defer_call(
        &mut self,
        id: ConnId,
        f: impl FnOnce(&mut dyn Handler, &mut Connection<'_>) + 'static,
    ) {
        if self.conn(id.0).is_some() {
            self.pending.push_back((id.0, Pending::Call(Box::new(f))));
        }
    }

    /// Descriptors that arrived with the bytes now being delivered to
    /// `receive_data`, on connections that accept them (worker channels).
    /// Descriptors not taken during the callback are closed after it.
    #[cfg_attr(not(feature = "workers"), allow(dead_code))]
    pub(crate) fn take_received_fds(&mut self) -> Vec<OwnedFd> {
        std::mem::take(&mut self.fd_inbox)
    }

    // ----- timers -----

    /// The loop's time: read once per turn, so every callback of a turn
    /// sees the same instant.
    pub fn now(&self) -> Instant {
        self.epoch + Duration::from_nanos(self.now_ns)
    }

    fn now_ms(&self) -> u64 {
        self.now_ns / 1_000_000
    }

    /// The wheel tick at which `after` from the loop's time has passed,
    /// rounded up so that nothing fires early.
    fn deadline_after(&self, after: Duration) -> u64 {
        let after_ns = u64::try_from(after.as_nanos()).unwrap_or(u64::MAX);
        self.now_ns.saturating_add(after_ns).div_ceil(1_000_000)
    }

    /// Runs `f` once, `after` from the loop's current time (never earlier;
    /// at most a millisecond plus scheduling latency later). Timers with the
    /// same deadline fire in the order they were added.
    pub fn add_timer(
        &mut self,
        after: Duration,
        f: impl FnOnce(&mut Reactor) + 'static,
    ) -> TimerId {
        let deadline = self.deadline_after(after);
        TimerId(TimerRef::Once(
            self.timers.insert(deadline, TimerTask::Once(Box::new(f))),
        ))
    }

    /// Runs `f` every `interval` (at least 1 ms) at a fixed rate, as
    /// Packet's periodic timers do: the n-th call is due `n * interval`
    /// after this one was added, however late earlier calls ran. If the loop
    /// falls behind by whole periods, the missed calls are skipped rather
    /// than fired in a burst. `f` gets the timer's id, so it can cancel
    /// itself.
    pub fn add_periodic_timer(
        &mut self,
        interval: Duration,
        f: impl FnMut(&mut Reactor, TimerId) + 'static,
    ) -> TimerId {
        let interval_ms = u64::try_from(interval.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let due_ms = self.deadline_after(interval);
        let token = self.periodics.insert(Periodic {
            callback: Some(Box::new(f)),
            interval_ms,
            due_ms,
            key: None,
        });
        let key = self.timers.insert(due_ms, TimerTask::Periodic(token));
        if let Some(p) = self.periodics.get_mut(token) {
            p.key = Some(key);
        }
        TimerId(TimerRef::Periodic(token))
    }

    /// Cancels a timer. Returns `false`, doing nothing, if it already fired
    /// (one-shot) or was cancelled; a periodic timer may cancel itself from
    /// its own callback.
    pub fn cancel_timer(&mut self, id: TimerId) -> bool {
        match id.0 {
            TimerRef::Once(key) => self.timers.cancel(key).is_some(),
            TimerRef::Periodic(token) => match self.periodics.remove(token) {
                Some(p) => {
                    if let Some(key) = p.key {
                        self.timers.cancel(key);
                    }
                    true
                }
                None => false,
            },
        }
    }

    /// Sets how long connect attempts started from now may take before they
    /// end with [`CloseReason::ConnectTimeout`] (default 20 s, as
    /// EventMachine's `pending_connect_timeout`; `None` leaves it to the
    /// kernel).
    pub fn set_connect_timeout(&mut self, limit: Option<Duration>) {
        self.connect_timeout = limit;
    }

    /// Gives the connect of connection `id`, if still in progress, `limit`
    /// from now before it ends with [`CloseReason::ConnectTimeout`]
    /// (EventMachine's `pending_connect_timeout=`, typically set in
    /// `post_init`); `None` removes the limit.
    pub fn set_pending_connect_timeout(&mut self, id: ConnId, limit: Option<Duration>) {
        let deadline = limit.map(|d| self.deadline_after(d));
        let Some(c) = self.conn_mut(id.0) else { return };
        if c.flags & flag::CONNECTING == 0 {
            return;
        }
        let old = c.timer.take();
        if let Some(key) = old {
            self.timers.cancel(key);
        }
        if let Some(deadline) = deadline {
            let key = self.timers.insert(deadline, TimerTask::Conn(id.0));
            if let Some(c) = self.conn_mut(id.0) {
                c.timer = Some(key);
            }
        }
    }

    /// Closes connection `id` with [`CloseReason::InactivityTimeout`] once
    /// no byte has been read from or written to it for `limit`
    /// (EventMachine's `comm_inactivity_timeout`); `None` turns it off.
    /// Limits are kept in whole milliseconds, up to 24 days.
    pub fn set_inactivity_timeout(&mut self, id: ConnId, limit: Option<Duration>) {
        let ms = limit.map_or(0, |d| {
            d.as_millis().clamp(1, u128::from(u32::MAX / 2)) as u32
        });
        let now = self.now_ms() as u32;
        let Some(c) = self.conn_mut(id.0) else { return };
        c.idle_timeout = ms;
        c.last_activity = now;
        if c.flags & flag::CONNECTING == 0 {
            let old = c.timer.take();
            if let Some(key) = old {
                self.timers.cancel(key);
            }
            if ms > 0 {
                self.arm_idle_timer(id.0, now.wrapping_add(ms));
            }
        }
    }

    /// Milliseconds since connection `id` last read or wrote a byte, as of
    /// the loop's time (EventMachine's `get_idle_time`).
    pub fn idle_time(&self, id: ConnId) -> Option<Duration> {
        let now = self.now_ms() as u32;
        self.conn(id.0)
            .map(|c| Duration::from_millis(u64::from(now.wrapping_sub(c.last_activity))))
    }

    /// Files the inactivity check of `token` at the 32-bit loop time `at`.
    fn arm_idle_timer(&mut self, token: Token, at: u32) {
        let now = self.now_ms();
        let wait = u64::from(at.wrapping_sub(now as u32));
        let key = self.timers.insert(now + wait, TimerTask::Conn(token));
        if let Some(c) = self.conn_mut(token) {
            c.timer = Some(key);
        }
    }

    fn run_timers(&mut self) {
        let now = self.now_ms();
        while let Some((_, task)) = self.timers.poll(now) {
            match task {
                TimerTask::Once(f) => f(self),
                TimerTask::Periodic(token) => self.fire_periodic(token, now),
                TimerTask::Conn(token) => self.conn_timer(token),
            }
            self.run_pending();
        }
    }

    fn fire_periodic(&mut self, token: Token, now: u64) {
        let Some(p) = self.periodics.get_mut(token) else {
            return;
        };
        let Some(mut callback) = p.callback.take() else {
            return;
        };
        callback(self, TimerId(TimerRef::Periodic(token)));
        // Cancelled from inside its callback: the entry is gone.
        let Some(p) = self.periodics.get_mut(token) else {
            return;
        };
        p.callback = Some(callback);
        p.due_ms = next_fixed_rate_deadline(p.due_ms, p.interval_ms, now);
        let due = p.due_ms;
        let key = self.timers.insert(due, TimerTask::Periodic(token));
        if let Some(p) = self.periodics.get_mut(token) {
            p.key = Some(key);
        }
    }

    fn conn_timer(&mut self, token: Token) {
        let now = self.now_ms() as u32;
        let Some(c) = self.conn_mut(token) else {
            return;
        };
        c.timer = None;
        if c.flags & flag::CLOSED != 0 {
            return;
        }
        if c.flags & flag::CONNECTING != 0 {
            self.begin_close(token, CloseReason::ConnectTimeout);
            return;
        }
        if c.idle_timeout == 0 {
            return;
        }
        // Activity only stamps the connection; the timer checks the stamp
        // when it fires and re-arms itself for the remainder, so a busy
        // connection costs no timer operation per read or write.
        let idle = now.wrapping_sub(c.last_activity);
        if idle >= c.idle_timeout {
            self.begin_close(token, CloseReason::InactivityTimeout);
        } else {
            let at = c.last_activity.wrapping_add(c.idle_timeout);
            self.arm_idle_timer(token, at);
        }
    }

    // ----- the loop -----

    fn turn(&mut self, events: &mut Events) -> io::Result<()> {
        self.now_ns = self.epoch.elapsed().as_nanos() as u64;
        self.run_timers();
        self.run_next_turn();
        self.run_pending();
        let busy = !self.next_turn.is_empty() || !self.ready.is_empty() || !self.pending.is_empty();
        let timeout = if busy || self.stopped {
            Some(Duration::ZERO)
        } else {
            // Until the wheel's next deadline; with no timers, until I/O.
            self.timers.next_deadline().map(|due| {
                Duration::from_nanos(due.saturating_mul(1_000_000).saturating_sub(self.now_ns))
            })
        };
        self.selector.wait(events, timeout)?;
        // Sources carried over from earlier turns get their read after this
        // batch; ones that fill a buffer now wait for the next turn.
        let mut carried = std::mem::replace(&mut self.ready, std::mem::take(&mut self.ready_spare));
        for ev in events.iter() {
            let token = ev.token();
            if token == RESERVED_TOKEN {
                self.on_wake();
                continue;
            }
            match self.sources.get_mut(token) {
                None => {} // closed earlier in this batch: stale
                Some(Source::Listener(_)) => self.accept_from(token),
                Some(Source::Watch(_)) => {
                    self.on_watch_event(token, ev.is_readable() || ev.is_error(), ev.is_writable());
                }
                Some(Source::Conn(c)) => {
                    if ev.is_read_closed() {
                        c.flags |= flag::RDHUP;
                    }
                    if ev.is_readable() {
                        c.flags |= flag::READ_READY;
                    }
                    // Every edge reports EPOLLOUT while the socket has room;
                    // it only matters to a connect in progress or a queue
                    // waiting for room.
                    let wants_write = c.flags & (flag::CONNECTING | flag::WRITE_BLOCKED) != 0
                        || !c.out.is_empty();
                    if ev.is_error() || (ev.is_writable() && wants_write) {
                        self.on_writable(token, ev.is_error());
                    }
                    if ev.is_readable() {
                        self.on_readable(token);
                    }
                }
            }
            self.run_pending();
        }
        for token in carried.drain(..) {
            match self.sources.get(token) {
                Some(Source::Listener(_)) => self.accept_from(token),
                Some(Source::Conn(_)) => self.on_readable(token),
                Some(Source::Watch(_)) | None => {}
            }
            self.run_pending();
        }
        self.ready_spare = carried;
        Ok(())
    }

    fn run_next_turn(&mut self) {
        if self.next_turn.is_empty() {
            return;
        }
        for f in std::mem::take(&mut self.next_turn) {
            f(self);
            self.run_pending();
        }
    }

    fn on_wake(&mut self) {
        self.shared.waker.reset();
        if self.shared.stop.swap(false, Ordering::AcqRel) {
            self.stopped = true;
        }
        let remote =
            std::mem::take(&mut *self.shared.queue.lock().unwrap_or_else(|p| p.into_inner()));
        for f in remote {
            self.next_turn.push(f);
        }
        for i in 0..self.signals.len() {
            let sig = self.signals[i].0;
            if !packet_sys::signal::take_pending(sig) {
                continue;
            }
            let Some(mut callback) = self.signals[i].1.take() else {
                continue;
            };
            callback(self);
            self.run_pending();
            if let Some(slot) = self.signals.iter_mut().find(|(s, _)| *s == sig) {
                slot.1.get_or_insert(callback);
            }
        }
    }

    fn run_pending(&mut self) {
        while let Some((token, work)) = self.pending.pop_front() {
            match work {
                Pending::Init => self.call(token, |h, c| h.post_init(c)),
                Pending::Call(f) => self.call(token, f),
                Pending::Eof => self.call(token, |h, c| h.receive_eof(c)),
                Pending::Adopted => {
                    self.call(token, |h, c| h.post_init(c));
                    self.call(token, |h, c| h.connection_completed(c));
                }
                Pending::Close(reason) => self.finish_close(token, reason),
                Pending::Full => self.call(token, |h, c| h.outbound_full(c)),
                Pending::Drained => self.call(token, |h, c| h.outbound_drained(c)),
            }
        }
    }

    /// Calls one handler method of a live connection, then writes what the
    /// callback staged and applies its effects on the queue.
    fn call(&mut self, token: Token, f: impl FnOnce(&mut dyn Handler, &mut Connection<'_>)) {
        let Some(c) = self.conn_mut(token) else {
            return;
        };
        if c.flags & flag::CLOSED != 0 {
            return;
        }
        let Some(mut handler) = c.handler.take() else {
            return;
        };
        self.current = Some(token);
        f(
            handler.as_mut(),
            &mut Connection {
                reactor: self,
                id: ConnId(token),
            },
        );
        self.current = None;
        if let Some(c) = self.conn_mut(token) {
            c.handler = Some(handler);
        }
        self.flush_stage(token);
        self.flush_queue(token);
    }

    pub(crate) fn flush_stage(&mut self, token: Token) {
        if self.stage.is_empty() {
            return;
        }
        let now = self.now_ms() as u32;
        let Some(Source::Conn(c)) = self.sources.get_mut(token) else {
            self.stage.clear();
            return;
        };
        if c.flags & flag::CLOSED != 0 {
            self.stage.clear();
            return;
        }
        if c.out.is_empty() && c.flags & (flag::WRITE_BLOCKED | flag::CONNECTING) == 0 {
            c.last_activity = now;
            match c.write(&self.stage) {
                Ok(n) if n == self.stage.len() => {}
                Ok(n) => {
                    // A short write means the send buffer is full; the
                    // kernel raises a writable edge when it has room.
                    c.out.push(&self.stage[n..]);
                    c.flags |= flag::WRITE_BLOCKED;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    c.out.push(&self.stage);
                    c.flags |= flag::WRITE_BLOCKED;
                }
                Err(e) => {
                    self.stage.clear();
                    self.begin_close(token, CloseReason::from_io(e));
                    return;
                }
            }
        } else {
            c.out.push(&self.stage);
        }
        self.stage.clear();
    }

    /// Applies the consequences of the outbound queue's size: water-mark
    /// callbacks, and a close that was waiting for the queue to drain.
    pub(crate) fn check_water(&mut self, token: Token) {
        let is_current = self.current == Some(token);
        let staged = if is_current { self.stage.len() } else { 0 };
        let Some(Source::Conn(c)) = self.sources.get_mut(token) else {
            return;
        };
        if c.flags & flag::CLOSED != 0 {
            return;
        }
        let len = c.out.len() + staged;
        let drained = staged == 0 && c.out.is_empty();
        // The common case, nothing queued and no mark or close pending:
        // nothing to do.
        let c = if c.flags & flag::PROXY_TARGET != 0 {
            self.proxy_target_has_room(token, len);
            match self.sources.get_mut(token) {
                Some(Source::Conn(c)) => c,
                _ => return,
            }
        } else {
            c
        };
        if c.flags & (flag::WRITE_BLOCKED | flag::WANT_WRITE) == flag::WRITE_BLOCKED {
            // A blocked write on a socket registered without EPOLLOUT: ask
            // for the writable edge now (re-registering also reports it at
            // once if there is room already, so no wake-up is lost).
            let both = Interest::READABLE | Interest::WRITABLE;
            if self
                .selector
                .reregister(std::os::fd::AsFd::as_fd(&c.sock), token, both)
                .is_ok()
            {
                c.flags |= flag::WANT_WRITE;
            }
        }
        if drained && c.flags & (flag::ABOVE_HIGH | flag::CLOSING | flag::SHUT_WRITE) == 0 {
            return;
        }
        if drained
            && c.flags & (flag::SHUT_WRITE | flag::SHUT_DONE) == flag::SHUT_WRITE
            && !is_current
        {
            // Queue drained after close_write: end of stream for the peer.
            // SHUT_WRITE stays set, so later sends are still refused.
            let _ = c.sock.shutdown(std::net::Shutdown::Write);
            c.flags |= flag::SHUT_DONE;
        }
        let high = c.high_water as usize;
        if len > high && c.flags & flag::ABOVE_HIGH == 0 {
            c.flags |= flag::ABOVE_HIGH;
            self.pending.push_back((token, Pending::Full));
        } else if len <= high / 2 && c.flags & flag::ABOVE_HIGH != 0 {
            c.flags &= !flag::ABOVE_HIGH;
            self.pending.push_back((token, Pending::Drained));
            // outbound_drained may produce more (a stream after the peer's
            // half-close): the close waits for the check that follows it.
            return;
        }
        if drained && c.flags & flag::CLOSING != 0 && !is_current {
            let reason = if c.flags & flag::PEER_CLOSED != 0 {
                CloseReason::PeerClosed
            } else {
                CloseReason::Local
            };
            self.begin_close(token, reason);
        }
    }

    fn on_writable(&mut self, token: Token, error: bool) {
        let Some(c) = self.conn_mut(token) else {
            return;
        };
        if c.flags & flag::CLOSED != 0 {
            return;
        }
        if c.flags & flag::CONNECTING != 0 {
            let failure = match c.sock.take_error() {
                Ok(None) => None,
                Ok(Some(e)) | Err(e) => Some(e),
            };
            if let Some(e) = failure {
                self.begin_close(token, CloseReason::ConnectFailed(e));
                return;
            }
            c.flags &= !flag::CONNECTING;
            let connect_timer = c.timer.take();
            let idle = c.idle_timeout;
            if let Some(key) = connect_timer {
                self.timers.cancel(key);
            }
            if idle > 0 {
                let at = (self.now_ms() as u32).wrapping_add(idle);
                self.arm_idle_timer(token, at);
            }
            let Some(c) = self.conn_mut(token) else {
                return;
            };
            if c.flags & flag::TCP != 0 {
                // Request/response traffic wants small writes sent at once.
                let _ = c.sock.set_nodelay(true);
            }
            self.call(token, |h, conn| h.connection_completed(conn));
        } else if error {
            let Some(c) = self.conn_mut(token) else {
                return;
            };
            // A pipe reports its reader's departure as an error; it has no
            // SO_ERROR to ask.
            if c.flags & flag::NOT_SOCKET != 0 {
                self.begin_close(token, CloseReason::PeerClosed);
                return;
            }
            if let Ok(Some(e)) | Err(e) = c.sock.take_error() {
                self.begin_close(token, CloseReason::from_io(e));
                return;
            }
        }
        let Some(c) = self.conn_mut(token) else {
            return;
        };
        c.flags &= !flag::WRITE_BLOCKED;
        // A proxy target: what is in the proxy's pipe came first.
        if c.flags & flag::PROXY_TARGET != 0 && !self.proxy_drain_pipe(token) {
            return;
        }
        self.flush_queue(token);
        self.disarm_write(token);
    }

    /// Takes EPOLLOUT out of a non-TCP connection's registration once it
    /// has nothing left to write (see `flag::WANT_WRITE`).
    fn disarm_write(&mut self, token: Token) {
        let Some(Source::Conn(c)) = self.sources.get_mut(token) else {
            return;
        };
        let busy =
            flag::TCP | flag::CONNECTING | flag::WRITE_BLOCKED | flag::CLOSED | flag::PROXY_TARGET;
        if c.flags & flag::WANT_WRITE == 0 || c.flags & busy != 0 || !c.out.is_empty() {
            return;
        }
        if self
            .selector
            .reregister(std::os::fd::AsFd::as_fd(&c.sock), token, Interest::READABLE)
            .is_ok()
        {
            c.flags &= !flag::WANT_WRITE;
        }
    }

    pub(crate) fn flush_queue(&mut self, token: Token) {
        let self_now = self.now_ms() as u32;
        let Some(c) = self.conn_mut(token) else {
            return;
        };
        if c.out.is_empty()
            || c.flags & (flag::WRITE_BLOCKED | flag::CONNECTING | flag::CLOSED) != 0
        {
            self.check_water(token);
            return;
        }
        c.last_activity = self_now;
        let mut sink = ConnSink {
            sock: &c.sock,
            not_socket: c.flags & flag::NOT_SOCKET != 0,
        };
        match c.out.flush(&mut sink) {
            Ok(_) => {
                if !c.out.is_empty() {
                    c.flags |= flag::WRITE_BLOCKED;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.flags |= flag::WRITE_BLOCKED,
            Err(e) => {
                let reason = if c.flags & flag::PEER_CLOSED != 0 {
                    CloseReason::PeerClosed
                } else {
                    CloseReason::from_io(e)
                };
                self.begin_close(token, reason);
                return;
            }
        }
        self.check_water(token);
    }

    fn on_readable(&mut self, token: Token) {
        if self
            .conn(token)
            .is_some_and(|c| c.flags & flag::PROXY_SOURCE != 0)
        {
            self.proxy_pump(token);
            return;
        }
        let mut buf = std::mem::take(&mut self.read_buf);
        let now = self.now_ms() as u32;
        while let Some(Source::Conn(c)) = self.sources.get_mut(token) {
            let blocked =
                flag::PAUSED | flag::CLOSED | flag::CLOSING | flag::CONNECTING | flag::PEER_CLOSED;
            if c.flags & blocked != 0 || c.flags & flag::READ_READY == 0 {
                break;
            }
            let fds_before = self.fd_inbox.len();
            buf.clear();
            let read = if c.flags & flag::PASS_FDS != 0 {
                c.sock.read_with_fds(&mut buf, &mut self.fd_inbox)
            } else {
                c.sock.read_into_spare(&mut buf)
            };
            match read {
                Ok(0) => {
                    // End of stream: no more reads; the handler decides
                    // when to close (by default once its queue is written).
                    c.flags &= !flag::READ_READY;
                    c.flags |= flag::PEER_CLOSED;
                    self.pending.push_back((token, Pending::Eof));
                    break;
                }
                Ok(n) => {
                    c.last_activity = now;
                    let full = n == buf.capacity();
                    // A short read drained the socket: new data raises a new
                    // edge. After a half-close no edge comes, so read on to
                    // the end of stream. A Unix socket read stops early after
                    // bytes that carried descriptors, with more queued behind
                    // them: after such a read, only EAGAIN says drained.
                    let got_fds = self.fd_inbox.len() > fds_before;
                    let more = full || c.flags & flag::RDHUP != 0 || got_fds;
                    if !more {
                        c.flags &= !flag::READ_READY;
                    }
                    self.call(token, |h, conn| h.receive_data(conn, &buf[..n]));
                    // Descriptors the handler did not take are closed.
                    self.fd_inbox.clear();
                    if full {
                        self.ready.push(token);
                        break;
                    }
                    if !more {
                        break;
                    }
                }
                Err(e) => {
                    self.read_failed(token, e);
                    break;
                }
            }
        }
        self.read_buf = buf;
    }

    /// A read of connection `token` failed: drained (`WouldBlock`, wait for
    /// the next edge) or broken (close with the reason).
    pub(crate) fn read_failed(&mut self, token: Token, e: io::Error) {
        let Some(c) = self.conn_mut(token) else {
            return;
        };
        c.flags &= !flag::READ_READY;
        if e.kind() != io::ErrorKind::WouldBlock {
            self.begin_close(token, CloseReason::from_io(e));
        }
    }

    fn accept_from(&mut self, token: Token) {
        for _ in 0..ACCEPT_BATCH {
            let Some(Source::Listener(l)) = self.sources.get_mut(token) else {
                return;
            };
            match l.sock.accept() {
                Ok(sock) => {
                    let tcp = if l.tcp {
                        let _ = sock.set_nodelay(true);
                        flag::TCP
                    } else {
                        0
                    };
                    let handler = (l.factory)();
                    // Out of epoll watches or memory: the connection is
                    // dropped (closed) and the listener goes on.
                    if let Ok(conn) = self.add_conn(sock, handler, tcp) {
                        self.call(conn, |h, c| h.post_init(c));
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
        self.ready.push(token);
    }

    /// Out of descriptors: free the spare one, accept and close what is
    /// queued so the clients see a close rather than a hang and the
    /// listener's readiness is drained (no busy loop), then take the spare
    /// back.
    fn shed_connections(&mut self, token: Token) {
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

    /// Marks a connection closed and queues its `unbind`.
    pub(crate) fn begin_close(&mut self, token: Token, reason: CloseReason) {
        let Some(c) = self.conn_mut(token) else {
            return;
        };
        if c.flags & flag::CLOSED != 0 {
            return;
        }
        c.flags |= flag::CLOSED;
        c.out.clear();
        self.pending.push_back((token, Pending::Close(reason)));
    }

    fn finish_close(&mut self, token: Token, reason: CloseReason) {
        let Some(Source::Conn(mut c)) = self.sources.remove(token) else {
            return;
        };
        self.connections -= 1;
        if let Some(key) = c.timer.take() {
            self.timers.cancel(key);
        }
        if c.flags & flag::PROXY_SOURCE != 0 {
            // Kept for `proxied_bytes` during unbind.
            self.unbinding_proxied = self.proxied_bytes(ConnId(token));
            self.end_proxy(token);
        }
        if c.flags & flag::PROXY_TARGET != 0 {
            if let Some(&source) = self.proxy_targets.get(&token) {
                self.end_proxy(source);
            }
        }
        let handler = c.handler.take();
        // Closing the fd removes it from the epoll set: no explicit
        // EPOLL_CTL_DEL syscall (worker processes never inherit connection
        // fds, see ARCHITECTURE.md).
        drop(c);
        let Some(mut handler) = handler else { return };
        self.unbinding = Some(token);
        handler.unbind(
            &mut Connection {
                reactor: self,
                id: ConnId(token),
            },
            &reason,
        );
        self.unbinding = None;
        self.unbinding_proxied = 0;
        if let Some(addr) = self.reconnect_to.take() {
            // A failure to even make a socket leaves nothing to report to.
            let _ = self.connect_boxed(addr, handler);
        }
    }

    fn shutdown(&mut self) {
        #[cfg(feature = "workers")]
        self.workers_shutting_down();
        for token in self.sources.tokens() {
            match self.sources.get(token) {
                Some(Source::Listener(_)) => {
                    self.stop_server(ServerId(token));
                }
                Some(Source::Conn(_)) => self.begin_close(token, CloseReason::ReactorStopped),
                Some(Source::Watch(_)) => self.end_watch(token),
                None => {}
            }
        }
        self.run_pending();
        self.next_turn.clear();
        self.ready.clear();
        self.timers = TimerWheel::new();
        self.periodics = Slab::new();
        // Every worker channel and the fork-server link are closed now;
        // dropping the state waits for the fork server to reap the workers
        // and exit, and reaps it.
        #[cfg(feature = "workers")]
        {
            self.workers = None;
        }
        self.stopped = false;
    }
}

impl Drop for Reactor {
    fn drop(&mut self) {
        // The waker's descriptor closes with the reactor: its signals must
        // not keep poking a number that may be reused.
        for (sig, _) in &self.signals {
            packet_sys::signal::unwatch(*sig, &self.shared.waker);
        }
    }
}

fn is_fd_exhaustion(errno: i32) -> bool {
    // EMFILE (24) and ENFILE (23) on Linux and the BSDs alike.
    errno == 24 || errno == 23
}

fn is_stale_unix_socket(path: &Path) -> bool {
    matches!(
        std::os::unix::net::UnixStream::connect(path),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused
    )
}

#[cfg(test)]
mod tests {
    use super::next_fixed_rate_deadline;

    #[test]
    fn fixed_rate_keeps_phase_and_skips_missed_periods() {
        // On time: exactly one interval later, for 1000 periods: no drift.
        let mut due = 7;
        for k in 1..=1000u64 {
            due = next_fixed_rate_deadline(due, 10, due + 3);
            assert_eq!(due, 7 + 10 * k);
        }
        // Fell behind by 3.5 periods: the missed ones are skipped, the phase
        // kept, and the next deadline is in the future.
        assert_eq!(next_fixed_rate_deadline(100, 10, 135), 140);
        assert_eq!(next_fixed_rate_deadline(100, 10, 110), 120);
        assert_eq!(next_fixed_rate_deadline(100, 10, 109), 110);
        assert_eq!(
            next_fixed_rate_deadline(u64::MAX - 5, 10, u64::MAX - 5),
            u64::MAX
        );
    }
}
