//! The event loop: readiness from the OS selector turned into handler
//! callbacks.
//!
//! This module owns the loop and everything registered with it — listeners,
//! connections, the shared read buffer, the queue of deferred work — and is
//! the only place that calls a [`Handler`]. It must never call a handler
//! from inside another handler's callback (every such effect is deferred to
//! the `pending` queue and run when the callback returns), never read more
//! than one buffer (or one splice) per connection per turn, and never
//! block outside `Selector::wait`.
//!
//! The phases of one turn, in the order [`Reactor::run_until_stopped`] runs
//! them (ARCHITECTURE.md describes them in full):
//!
//! 0. read the clock and fire the timers that are due;
//! 1. run the closures queued with [`Reactor::next_turn`] before this turn;
//! 2. run deferred work (the `Pending` kinds: post_init, replies, end of
//!    stream, closes, water marks, resumes);
//! 3. wait for readiness, with a zero timeout if work is already waiting;
//! 4. dispatch each event: the waker (cross-thread stop and closures,
//!    signals), listeners (accept), plug-in sources (their feature's
//!    function), connections (finish connects, flush, read and call
//!    `receive_data` or the filter; a connection on the carry-over list
//!    waits for phase 5 instead); after each, run deferred work so a
//!    connection closed by one event is gone before the next event of the
//!    batch;
//! 5. give the sources carried over from the last turn (more input than
//!    one read, a full accept batch, a resume) their one read of this turn.

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
use crate::reply::{InOrder, Reply};
use crate::slab::{IdMap, Slab, Token, RESERVED_TOKEN};
use crate::timer::{TimerKey, TimerWheel};

// One file per part of the reactor; each child sees this module's names
// (`use super::*`), and this module sees theirs.
//
// This module is the core's boundary, and the compiler keeps it: what the
// core shares between its parts is `pub(super)` in the children (visible
// in `crate::reactor` and below, nowhere else) or private here, never
// `pub(crate)`. The files outside `src/reactor/` that belong to the core
// are declared here with `#[path]`, so they stay where a reader looks for
// them and the crate's paths (`crate::connection`, `packet::extend`) stay
// as they were: `Connection`, the public extension API, deferred replies
// and socket options; and watches, the public adapter for plug-in sources
// as `extend` is for filters and `takeover.rs` for relays. Every feature
// sees only public items (and `resolve`/`io_context`, which touch no
// state).
mod conn;
mod conn_io;
#[path = "../connection.rs"]
pub(crate) mod connection;
mod ending;
mod ext;
#[path = "../extend.rs"]
pub mod extend;
mod handle;
mod listener;
mod replies;
#[path = "../reply.rs"]
pub(crate) mod reply;
#[path = "../sockopt.rs"]
pub mod sockopt;
mod state;
mod takeover;
mod timers;
#[cfg(feature = "watch")]
#[path = "../watch.rs"]
pub mod watch;

use conn::*;
use conn_io::ReadInto;
use ending::*;
use ext::*;
use handle::*;
use listener::*;
use state::*;
use timers::*;

pub use ending::{Linger, StopAction, StopReport, QUIT_GRACE, STOP_GRACE};
pub use ext::{Extension, Extensions, StopHold};
pub use handle::ReactorHandle;
pub use listener::{ServerId, ServerOptions};
pub use takeover::{ConnIo, QueueFlush, ReadBy, Takeover};
pub use timers::TimerId;

/// One read buffer per reactor, lent to `receive_data`: about what a
/// loopback TCP socket has ready at once (libuv and most reactors use
/// 64 KiB).
///
/// Not a power of two on purpose: an edge-triggered reader must read again
/// after a read that fills its buffer, and power-of-two traffic (four 16 KiB
/// messages in flight) would fill a 64 KiB buffer exactly and pay one
/// `EAGAIN` read per batch.
const READ_BUF_SIZE: usize = 96 * 1024;

/// Events taken from the kernel per wait.
const EVENTS_PER_WAIT: usize = 1024;

const DEFAULT_HIGH_WATER: usize = 1024 * 1024;

/// The default outbound budget: 1 GiB of bytes queued over all of a
/// reactor's connections (see [`Reactor::set_outbound_budget`]). Generous
/// enough that only a runaway (many slow readers of large responses) meets
/// it, low enough to end that before the process is killed for memory.
pub const DEFAULT_OUTBOUND_BUDGET: usize = 1 << 30;

enum Source {
    Conn(Conn),
    /// Boxed: listeners are few, and this keeps every slab entry as small as
    /// a connection.
    Listener(Box<Listener>),
    /// A feature's descriptor (a watch, say; see `ext.rs`).
    // Made only by watch: never constructed in a core-only build.
    #[allow(dead_code)]
    Plugin(Box<PluginSource>),
}

/// Work deferred until no callback is running.
enum Pending {
    /// Call `receive_reply`.
    Reply(Reply),
    /// Call `post_init` of an outgoing connection.
    Init,
    /// Call `post_init` and `connection_completed` of an adopted socket.
    Adopted,
    /// The peer ended its stream: call `receive_eof`.
    Eof,
    Close(CloseReason),
    Full,
    Drained,
    /// Reading was resumed: call `resumed` (a layer delivers what it held).
    Resumed,
}

type Local = Box<dyn FnOnce(&mut Reactor)>;

/// An event loop with its servers, connections and deferred work.
///
/// One reactor runs on one thread; several may run in one process, each on
/// its own thread (Packet's difference from EventMachine). Everything else
/// in the library hangs off a reactor. What is done to one connection
/// (send, close, pause, timeouts, socket options, replies, proxying) is a
/// method of its [`Connection`]: a handler gets one in every callback, and
/// [`Reactor::connection`] gives one for an id from anywhere else. Each
/// plug-in is reached through one accessor named after it, so that this
/// page keeps to the loop, servers, clients, timers and stopping:
/// `reactor.workers()`, `tls()`, `datagrams()`, `processes()`, `watches()`
/// and `upgrades()`, each there when its feature is on.
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
    selector: Selector,
    sources: Slab<Source>,
    /// Lent to `receive_data`; empty while lent.
    read_buf: Vec<u8>,
    /// Output of the running callback to its own connection, written in one
    /// syscall when the callback returns.
    stage: Vec<u8>,
    /// The connection whose callback is running.
    current: Option<Token>,
    pending: VecDeque<(Token, Pending)>,
    /// Sources with input left after this turn's read, each listed once
    /// (`Flags::QUEUED`): read in the next turn (fairness bound).
    ready: Vec<Token>,
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
    /// Of `connections`, the library's own channels (`Transport::Channel`).
    internal_connections: usize,
    /// The last reply id handed out (`expect_reply`).
    last_reply: u64,
    /// Connections that take their replies in order, with those expected.
    ordered: IdMap<Token, InOrder>,
    /// The connection in `unbind`, and where it asked to reconnect.
    unbinding: Option<Token>,
    reconnect_to: Option<conn::Reconnect>,
    /// Where each client connection was made to, for its connect error's
    /// message and for `reconnect_after`.
    targets: IdMap<Token, Addr>,
    /// The connection whose send after close was last logged: a run of
    /// drops is logged once.
    drop_logged: Option<Token>,
    /// Why connections that close "locally" really end (a line too long),
    /// set by the layer that decided it.
    close_reasons: IdMap<Token, CloseReason>,
    timers: TimerWheel<TimerTask>,
    periodics: Slab<Periodic>,
    /// Descriptors received with the bytes being delivered to
    /// `receive_data`.
    fd_inbox: Vec<OwnedFd>,
    /// Features' per-reactor state (`ext.rs`).
    exts: Vec<ExtSlot>,
    /// Buffers filtered connections borrow (`ext::FilterScratch`).
    filter_scratch: FilterScratch,
    /// The hooks of connections flagged `HOOKED`, with their state.
    conn_hooks: IdMap<Token, Hooked>,
    /// Callbacks for signals routed to this reactor's waker.
    signals: Vec<(i32, Option<SignalFn>)>,
    /// The loop's clock: read once per turn.
    epoch: Instant,
    now_ns: u64,
    connect_timeout: Option<Duration>,
    /// Most bytes all outbound queues of this thread may hold.
    outbound_budget: usize,
    /// Replies owed, lingering closes and the stop in progress (`ending.rs`).
    ending: Ending,
}

/// Resolves `addr` to its first socket address. Crate-visible: it touches
/// no reactor state.
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
            internal_connections: 0,
            last_reply: 0,
            ordered: IdMap::default(),
            unbinding: None,
            reconnect_to: None,
            targets: IdMap::default(),
            drop_logged: None,
            close_reasons: IdMap::default(),
            timers: TimerWheel::new(),
            periodics: Slab::new(),
            fd_inbox: Vec::new(),
            signals: Vec::new(),
            exts: Vec::new(),
            filter_scratch: FilterScratch::default(),
            conn_hooks: IdMap::default(),
            epoch: Instant::now(),
            now_ns: 0,
            connect_timeout: Some(DEFAULT_CONNECT_TIMEOUT),
            outbound_budget: DEFAULT_OUTBOUND_BUDGET,
            ending: Ending::default(),
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

    /// Stops the loop after the current turn.
    pub fn stop(&mut self) {
        self.stopped = true;
    }

    /// Runs `f` at the start of the next turn of the loop.
    pub fn next_turn(&mut self, f: impl FnOnce(&mut Reactor) + 'static) {
        self.next_turn.push(Box::new(f));
    }

    /// Open connections (accepted, outgoing and attached); the library's
    /// own channels (to worker processes) are not counted.
    pub fn connection_count(&self) -> usize {
        self.connections - self.internal_connections
    }

    /// Sets the most bytes the outbound queues of this reactor's thread
    /// may hold together (default [`crate::DEFAULT_OUTBOUND_BUDGET`], 1 GiB).
    /// When a write takes the total past it, the connections with the
    /// largest queues are closed with [`CloseReason::Memory`], largest
    /// first, until the total is within the budget again: the peers that
    /// read least lose their connection, the others and the process carry
    /// on (never an abort). Files queued with `send_file` take no memory
    /// and do not count. `usize::MAX` turns the budget off.
    pub fn set_outbound_budget(&mut self, bytes: usize) {
        self.outbound_budget = bytes;
    }

    /// The outbound budget (see [`Reactor::set_outbound_budget`]).
    pub fn outbound_budget(&self) -> usize {
        self.outbound_budget
    }

    /// Bytes held by the outbound queues of this reactor's thread now.
    pub fn outbound_total(&self) -> usize {
        crate::buffer::queued_total()
    }

    /// The total passed the budget: closes the connections with the
    /// largest queues until it is within it.
    fn shed_outbound(&mut self) {
        while crate::buffer::queued_total() > self.outbound_budget {
            let mut largest = None;
            let mut most = 0;
            for token in self.sources.tokens() {
                if let Some(c) = self.conn(token) {
                    if c.phase != Phase::Closed && c.queued() > most {
                        most = c.queued();
                        largest = Some(token);
                    }
                }
            }
            let Some(token) = largest else { return };
            self.begin_close(token, CloseReason::Memory);
        }
    }

    /// The outbound high-water mark given to new connections.
    pub fn set_default_high_water_mark(&mut self, bytes: usize) {
        self.default_high_water = bytes;
    }

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
        if timeout != Some(Duration::ZERO) {
            // The wait may have slept for long: deadlines set by the I/O
            // callbacks below (idle limits of accepted connections, timers)
            // count from now, not from before the sleep.
            self.now_ns = self.epoch.elapsed().as_nanos() as u64;
        }
        // Sources carried over from the last turn get their read after this
        // batch (and only then); ones that may have more input after a read
        // in this turn wait for the next.
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
                Some(Source::Plugin(p)) => {
                    let ready = p.hooks.ready;
                    // An error or hang-up counts as readable: a read tells
                    // the feature what happened.
                    let readiness = Readiness {
                        readable: ev.is_readable() || ev.is_error(),
                        writable: ev.is_writable(),
                    };
                    ready(self, token, readiness);
                }
                Some(Source::Conn(c)) => {
                    // A carried-over connection gets its one read of the
                    // turn from the carried list below, not here too.
                    let read_now = ev.is_readable() && !c.flags.contains(Flags::QUEUED);
                    if ev.is_read_closed() {
                        c.flags |= Flags::RDHUP;
                    }
                    if ev.is_readable() {
                        c.flags |= Flags::READ_READY;
                    }
                    // Every edge reports EPOLLOUT while the socket has room;
                    // it only matters to a connect in progress or a queue
                    // waiting for room.
                    let wants_write = c.is_connecting()
                        || c.flags.contains(Flags::WRITE_BLOCKED)
                        || !c.out.is_empty();
                    if ev.is_error() || (ev.is_writable() && wants_write) {
                        self.on_writable(token, ev.is_error());
                    }
                    if read_now {
                        self.on_readable(token);
                    }
                }
            }
            self.run_pending();
        }
        for token in carried.drain(..) {
            match self.sources.get_mut(token) {
                Some(Source::Listener(_)) => self.accept_from(token),
                Some(Source::Conn(c)) => {
                    c.flags -= Flags::QUEUED;
                    self.on_readable(token);
                }
                Some(Source::Plugin(_)) | None => {}
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

    fn run_pending(&mut self) {
        while let Some((token, work)) = self.pending.pop_front() {
            match work {
                Pending::Init => _ = self.call(token, |h, c| h.post_init(c)),
                Pending::Reply(reply) => {
                    self.reply_settled(token);
                    if let Err(reply) = self.deliver_reply(token, reply) {
                        crate::log::log_line!(
                            "{reply:?} for connection {} dropped: it has closed",
                            ConnId(token)
                        );
                    }
                }
                Pending::Eof => _ = self.call(token, |h, c| h.receive_eof(c)),
                Pending::Adopted => {
                    self.call(token, |h, c| h.post_init(c));
                    self.call(token, |h, c| h.connection_completed(c));
                }
                Pending::Close(reason) => self.finish_close(token, reason),
                Pending::Full => _ = self.call(token, |h, c| h.outbound_full(c)),
                Pending::Drained => _ = self.call(token, |h, c| h.outbound_drained(c)),
                Pending::Resumed => _ = self.call(token, |h, c| h.resumed(c)),
            }
        }
    }

    /// Calls one handler method of a live connection, then writes what the
    /// callback staged and applies its effects on the queue. `None` when
    /// the connection is closed (or its handler is out: a callback runs).
    fn call<R>(
        &mut self,
        token: Token,
        f: impl FnOnce(&mut dyn Handler, &mut Connection<'_>) -> R,
    ) -> Option<R> {
        // One shared body behind a `dyn` call: a generic body was compiled
        // into every caller (`run_pending` alone was 4.3 KB, now 2.9 KB).
        let mut f = Some(f);
        let mut result = None;
        self.call_dyn(token, &mut |h, c| {
            if let Some(f) = f.take() {
                result = Some(f(h, c));
            }
        });
        result
    }

    fn call_dyn(&mut self, token: Token, f: &mut dyn FnMut(&mut dyn Handler, &mut Connection<'_>)) {
        let Some(c) = self.conn_mut(token) else {
            return;
        };
        if c.is_closed() {
            return;
        }
        let Some(mut handler) = c.handler.take() else {
            return;
        };
        self.current = Some(token);
        f(handler.as_mut(), &mut Connection::new(self, ConnId(token)));
        self.current = None;
        if let Some(c) = self.conn_mut(token) {
            c.handler = Some(handler);
        }
        self.flush_stage(token);
        self.flush_queue(token);
    }

    fn shutdown(&mut self) {
        self.each_ext(|ext, r| ext.shutdown(r));
        self.end_connections_for_shutdown();
        for token in self.sources.tokens() {
            match self.sources.get(token) {
                Some(Source::Listener(_)) => {
                    self.stop_server(ServerId(token));
                }
                Some(Source::Conn(_)) => self.begin_close(token, CloseReason::ReactorStopped),
                Some(Source::Plugin(p)) => {
                    let end = p.hooks.shutdown;
                    end(self, token);
                }
                None => {}
            }
        }
        self.run_pending();
        self.next_turn.clear();
        self.ready.clear();
        self.timers = TimerWheel::new();
        self.periodics = Slab::new();
        // Features' state goes with the connections it was about. (Every
        // worker channel and the fork-server link are closed now: dropping
        // the worker master waits for the fork server to reap the workers
        // and exit, and reaps it.)
        self.exts.clear();
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
