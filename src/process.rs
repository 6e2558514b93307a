//! Child processes driven by the reactor: EventMachine's `popen`, `system`
//! and `watch_process`.
//!
//! This module owns the programs it starts until they are reaped: their
//! connection (the child's stdin and stdout are one end of a Unix
//! socketpair, the other end is an ordinary connection of the reactor, as
//! in EventMachine), and the watch on their exit (a pidfd on Linux,
//! `EVFILT_PROC` on the BSDs and macOS; a `waitpid(WNOHANG)` poll every
//! [`POLL_INTERVAL`] where neither can be had). It never kills a process on its own —
//! closing the connection only closes the child's stdin and stdout, so it
//! reads end of file and its writes fail with `EPIPE` — never blocks the
//! loop waiting for one, never reaps a process it did not start except
//! through [`Processes::watch_process`], and never leaves a zombie: a child
//! still running when its reactor stops or is dropped is reaped by a small
//! background thread when it exits.
//!
//! Programs start with [`spawn`] (`fork` + `execve`), which is safe in a
//! multi-threaded process: everything that allocates happens before the
//! fork, the child runs only async-signal-safe calls, and an `execve` that
//! fails comes back as the error of `spawn`, not as a child that exits.
//!
//! # The end of a process
//!
//! The connection closing (end of stream, or a close by either side) and
//! the process exiting are two events that come in either order: a child
//! may exit with output still unread, or close its stdout and go on
//! running, or leave a background process holding its stdout. A
//! [`ProcessHandler`] gets [`ProcessHandler::process_exited`] once, when
//! both have happened, with the exit status and why the connection closed;
//! all output has been delivered by then.
//!
//! ```
//! use packet::process::ExitStatus;
//! use packet::Reactor;
//!
//! Reactor::run(|reactor| {
//!     reactor.processes().system(["echo", "hi"], |reactor, output, status| {
//!         assert_eq!(output.bytes, b"hi\n");
//!         assert_eq!(status, Some(ExitStatus::Code(0)));
//!         reactor.stop();
//!     })?;
//!     Ok(())
//! })?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::cell::RefCell;
use std::ffi::{OsStr, OsString};
use std::io;
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsFd, OwnedFd};
use std::rc::{Rc, Weak};
use std::time::Duration;

use packet_sys::process as sys;
pub use packet_sys::process::{spawn, ExitStatus, SpawnOptions, Stdio, SIGKILL};
use packet_sys::Socket;

use crate::connection::{CloseReason, ConnId, Connection, Handler};
use crate::reactor::{Reactor, TimerId};
use crate::watch::{Watch, WatchId, Watcher};

/// How often a process is polled with `waitpid(WNOHANG)` where no exit
/// descriptor can watch it (Linux before 5.3, no descriptor left): often enough
/// that a short command's result is not held back noticeably, rarely
/// enough that a waiting child costs 50 syscalls a second.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The most output [`Processes::system`] keeps: 16 MiB. Output beyond it is
/// read and discarded, and [`Output::truncated`] says so.
pub const DEFAULT_OUTPUT_LIMIT: usize = 16 * 1024 * 1024;

/// The callbacks of a process started with [`Processes::popen`].
///
/// Every method has an empty default. Callbacks run on the reactor's
/// thread, one at a time, like [`Handler`]'s.
pub trait ProcessHandler: 'static {
    /// The process runs and its connection exists.
    fn post_init(&mut self, p: &mut ProcessContext<'_>) {
        let _ = p;
    }

    /// The process wrote `data` to its stdout (or stderr, when merged).
    /// `data` borrows the reactor's read buffer.
    fn receive_data(&mut self, p: &mut ProcessContext<'_>, data: &[u8]) {
        let _ = (p, data);
    }

    /// Bytes sent to the process's stdin and not yet taken by it grew past
    /// the connection's high-water mark (see [`Handler::outbound_full`]).
    fn outbound_full(&mut self, p: &mut ProcessContext<'_>) {
        let _ = p;
    }

    /// After [`ProcessHandler::outbound_full`], the queue drained below half
    /// the mark.
    fn outbound_drained(&mut self, p: &mut ProcessContext<'_>) {
        let _ = p;
    }

    /// The process has exited and its connection has closed — the last
    /// callback, made once both happened, in whichever order.
    ///
    /// `status` is how the process ended. It is `None` when there is none
    /// to give: the reactor stopped while the process was still running
    /// (it is not killed; it is reaped in the background when it exits),
    /// or something else in this program reaped it first (a
    /// `waitpid(-1)`, or [`Processes::watch_process`] on its pid). `reason`
    /// is why the connection closed: [`CloseReason::PeerClosed`] when the
    /// process (and whatever inherited its stdout) closed it,
    /// [`CloseReason::Local`] after a close from this side.
    ///
    /// One gap where no exit descriptor watches the process (see
    /// [`POLL_INTERVAL`]):
    /// if its connection closed earlier and it is still running when the
    /// reactor stops, this is not called (it is still reaped).
    fn process_exited(
        &mut self,
        reactor: &mut Reactor,
        status: Option<ExitStatus>,
        reason: &CloseReason,
    ) {
        let _ = (reactor, status, reason);
    }
}

/// The connection of the process whose callback is running.
///
/// Dereferences to [`Connection`]: `p.send_data(..)` writes to the
/// process's stdin, [`Connection::close_write`] closes its stdin once
/// everything sent is written (it reads end of file, and its output still
/// comes), [`Connection::close_connection`] closes stdin and stdout both
/// (the process is not killed), and `p.reactor()` reaches the reactor.
pub struct ProcessContext<'a> {
    conn: Connection<'a>,
    child: &'a Rc<RefCell<Child>>,
}

impl ProcessContext<'_> {
    /// The process id.
    pub fn pid(&self) -> i32 {
        self.child.borrow().pid
    }

    /// Sends signal `sig` to the process (see [`Subprocess::kill`]).
    ///
    /// # Errors
    /// As [`Subprocess::kill`].
    pub fn kill(&self, sig: i32) -> io::Result<()> {
        signal_child(self.child, sig)
    }

    /// A handle on the process, to keep beyond this callback.
    pub fn subprocess(&self) -> Subprocess {
        Subprocess {
            pid: self.pid(),
            conn: self.conn.id(),
            child: Rc::downgrade(self.child),
        }
    }
}

impl<'a> Deref for ProcessContext<'a> {
    type Target = Connection<'a>;
    fn deref(&self) -> &Connection<'a> {
        &self.conn
    }
}

impl<'a> DerefMut for ProcessContext<'a> {
    fn deref_mut(&mut self) -> &mut Connection<'a> {
        &mut self.conn
    }
}

/// A process started with [`Processes::popen`] or [`Processes::system`]: its
/// id, its connection, and a way to signal it. Cheap to clone; it does not
/// keep the process or its connection alive.
#[derive(Clone)]
pub struct Subprocess {
    pid: i32,
    conn: ConnId,
    child: Weak<RefCell<Child>>,
}

impl std::fmt::Debug for Subprocess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subprocess")
            .field("pid", &self.pid)
            .field("conn", &self.conn)
            .field("exited", &self.has_exited())
            .finish()
    }
}

impl Subprocess {
    /// The process id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The connection to its stdin and stdout, for
    /// [`Reactor::connection`] (to send to it, close it and the like), until
    /// it closes.
    pub fn conn(&self) -> ConnId {
        self.conn
    }

    /// Whether the process is known to have exited (reaped, or given up on
    /// when its reactor stopped).
    pub fn has_exited(&self) -> bool {
        self.child
            .upgrade()
            .is_none_or(|c| c.borrow().exit.is_some())
    }

    /// Sends signal `sig` ([`crate::signal::SIGTERM`], [`SIGKILL`], ...) to the
    /// process. A process the reactor has already reaped is not signalled,
    /// so a recycled pid is never hit by mistake: call this on the
    /// reactor's thread, where reaping happens.
    ///
    /// # Errors
    /// `NotFound` once the process has exited and been reaped; `EPERM` from
    /// `kill(2)`.
    pub fn kill(&self, sig: i32) -> io::Result<()> {
        match self.child.upgrade() {
            Some(child) => signal_child(&child, sig),
            None => Err(exited_error()),
        }
    }
}

fn exited_error() -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, "the process has already exited")
}

fn signal_child(child: &RefCell<Child>, sig: i32) -> io::Result<()> {
    let c = child.borrow();
    if c.exit.is_some() {
        return Err(exited_error());
    }
    sys::kill(c.pid, sig)
}

/// Where the standard error of a process started with
/// [`Processes::popen_with`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stderr {
    /// This program's standard error (the default, as in EventMachine).
    Inherit,
    /// The connection, mixed with stdout as the process writes them.
    Merge,
    /// `/dev/null`.
    Null,
}

/// How [`Processes::popen_with`] and [`Processes::system_with`] start a
/// process: where its stderr goes, and its environment.
#[derive(Debug, Clone)]
pub struct PopenOptions {
    stderr: Stderr,
    /// Only the environment part is used; stdio is set by popen.
    spawn: SpawnOptions<'static>,
}

impl Default for PopenOptions {
    fn default() -> Self {
        PopenOptions {
            stderr: Stderr::Inherit,
            spawn: SpawnOptions::new(),
        }
    }
}

impl PopenOptions {
    /// Stderr inherited, the parent's environment.
    pub fn new() -> PopenOptions {
        PopenOptions::default()
    }

    /// Where the process's stderr goes.
    pub fn stderr(mut self, stderr: Stderr) -> PopenOptions {
        self.stderr = stderr;
        self
    }

    /// Sets variable `key` to `value` in the process's environment.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> PopenOptions {
        self.spawn = self.spawn.env(key, value);
        self
    }

    /// Removes variable `key` from the process's environment.
    pub fn env_remove(mut self, key: impl Into<OsString>) -> PopenOptions {
        self.spawn = self.spawn.env_remove(key);
        self
    }

    /// Starts the process's environment empty; variables set with
    /// [`PopenOptions::env`] are still added. Without `PATH`, a program
    /// name is looked up in `/usr/bin:/bin`.
    pub fn env_clear(mut self) -> PopenOptions {
        self.spawn = self.spawn.env_clear();
        self
    }
}

/// What [`Processes::system`] collected from a process's stdout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// The output, at most the limit (16 MiB by default).
    pub bytes: Vec<u8>,
    /// The process wrote more than the limit; the rest was discarded.
    pub truncated: bool,
}

/// Identifies a [`Processes::watch_process`], for
/// [`Processes::unwatch_process`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcessWatchId(ExitWatch);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ExitWatch {
    Descriptor(WatchId),
    Poll(TimerId),
}

/// A reactor's child processes, borrowed for one call:
/// `reactor.processes()`, with EventMachine's `popen`, `system` and
/// `watch_process`.
///
/// ```no_run
/// # use packet::Reactor;
/// # fn f(r: &mut Reactor) -> std::io::Result<()> {
/// r.processes().system(["uname", "-s"], |_, output, status| {
///     println!("{status:?}: {}", String::from_utf8_lossy(&output.bytes));
/// })?;
/// # Ok(()) }
/// ```
pub struct Processes<'r> {
    reactor: &'r mut Reactor,
}

impl Reactor {
    /// This reactor's child processes: [`Processes`].
    pub fn processes(&mut self) -> Processes<'_> {
        Processes { reactor: self }
    }
}

impl Processes<'_> {
    /// Starts `argv` (program and arguments; a program name without `/` is
    /// looked up in `PATH`) with its stdin and stdout connected to this
    /// reactor, and `handler` as its callbacks (EventMachine's `popen`).
    ///
    /// The child's stdin and stdout are one end of a Unix socketpair; the
    /// other end becomes a connection of this reactor: what the process
    /// writes arrives in [`ProcessHandler::receive_data`], what the handler
    /// sends with `send_data` is the process's input. Its stderr is this
    /// program's (see [`Processes::popen_with`]). When the process has exited
    /// and the connection has closed, [`ProcessHandler::process_exited`]
    /// gets the exit status. The process is reaped as soon as it exits,
    /// even if the connection was closed long before; closing the
    /// connection does not kill it (use [`Subprocess::kill`]).
    ///
    /// Starting a process blocks this thread for the time of a `fork` and
    /// an `exec` (see [`spawn`]).
    ///
    /// # Errors
    /// As [`spawn`]: among them `NotFound` for a program not in `PATH` and
    /// the errno of a failed `execve`, before any callback; out of
    /// descriptors.
    pub fn popen<H: ProcessHandler>(
        &mut self,
        argv: impl IntoIterator<Item = impl AsRef<OsStr>>,
        handler: H,
    ) -> io::Result<Subprocess> {
        self.popen_with(argv, &PopenOptions::default(), handler)
    }

    /// [`Processes::popen`] with options: stderr merged into the connection
    /// or discarded, or a changed environment.
    ///
    /// # Errors
    /// As [`Processes::popen`].
    pub fn popen_with<H: ProcessHandler>(
        &mut self,
        argv: impl IntoIterator<Item = impl AsRef<OsStr>>,
        options: &PopenOptions,
        handler: H,
    ) -> io::Result<Subprocess> {
        let r = &mut *self.reactor;
        let argv: Vec<OsString> = argv
            .into_iter()
            .map(|a| a.as_ref().to_os_string())
            .collect();
        let (ours, theirs) = Socket::pair()?;
        // Programs expect blocking stdin and stdout, and O_NONBLOCK belongs
        // to the open file, which the child's copies share. Our end is a
        // separate open file and stays non-blocking.
        theirs.set_nonblocking(false)?;
        let end = Stdio::Fd(theirs.as_fd());
        let stderr = match options.stderr {
            Stderr::Inherit => Stdio::Inherit,
            Stderr::Merge => end,
            Stderr::Null => Stdio::Null,
        };
        let spawn_options = options.spawn.clone().stdin(end).stdout(end).stderr(stderr);
        let pid = spawn(&argv, &spawn_options)?;
        // The child holds its copies; ours would keep the connection from
        // ever seeing end of stream.
        drop(spawn_options);
        drop(theirs);

        let child = Rc::new(RefCell::new(Child {
            pid,
            exit: None,
            close: None,
            handler: Some(Box::new(handler)),
            needs_reap: true,
        }));
        let ended = child.clone();
        watch_exit(r, pid, Box::new(move |r, end| child_ended(&ended, r, end)));
        let conn = match r.attach(OwnedFd::from(ours), Adapter(child.clone())) {
            Ok(conn) => conn,
            Err(e) => {
                // No callback will come; the exit watch still reaps the
                // process, which reads end of file now that both ends of
                // the pair are closed.
                child.borrow_mut().handler = None;
                return Err(e);
            }
        };
        Ok(Subprocess {
            pid,
            conn,
            child: Rc::downgrade(&child),
        })
    }

    /// Runs `argv` and calls `callback` with its stdout and exit status once
    /// it has exited and closed its stdout (EventMachine's `system`). Its
    /// stdin is closed at once (it reads end of file); its stderr is this
    /// program's. At most [`DEFAULT_OUTPUT_LIMIT`] (16 MiB) of output is
    /// kept: the rest is read and discarded, so the process runs to its
    /// end, and [`Output::truncated`] is set. A process that never ends
    /// never calls back: kill it through the returned [`Subprocess`].
    ///
    /// `status` is `None` only if the reactor stopped before the process
    /// ended (see [`ProcessHandler::process_exited`]); `callback` then gets
    /// the output so far.
    ///
    /// # Errors
    /// As [`Processes::popen`].
    pub fn system(
        &mut self,
        argv: impl IntoIterator<Item = impl AsRef<OsStr>>,
        callback: impl FnOnce(&mut Reactor, Output, Option<ExitStatus>) + 'static,
    ) -> io::Result<Subprocess> {
        self.system_with(
            argv,
            &PopenOptions::default(),
            DEFAULT_OUTPUT_LIMIT,
            callback,
        )
    }

    /// [`Processes::system`] with options ([`Stderr::Merge`] collects stderr
    /// too) and an output limit of `max_output` bytes.
    ///
    /// # Errors
    /// As [`Processes::popen`].
    pub fn system_with(
        &mut self,
        argv: impl IntoIterator<Item = impl AsRef<OsStr>>,
        options: &PopenOptions,
        max_output: usize,
        callback: impl FnOnce(&mut Reactor, Output, Option<ExitStatus>) + 'static,
    ) -> io::Result<Subprocess> {
        let collect = Collect {
            output: Output::default(),
            max_output,
            callback: Some(callback),
        };
        self.popen_with(argv, options, collect)
    }

    /// Calls `callback` once process `pid` — any process, not only one this
    /// program started — has exited (EventMachine's `watch_process`). If it
    /// is a child of this process it is reaped and `callback` gets its
    /// status; for any other process the status is not ours to read and
    /// `callback` gets `None`. A pid that does not exist (or no longer:
    /// exited and reaped) gets `None` soon after.
    ///
    /// A pidfd (Linux) or `EVFILT_PROC` (the BSDs and macOS) tells the
    /// moment of exit. Where neither can be had (Linux before 5.3) the
    /// process is polled every [`POLL_INTERVAL`], and a process that is not
    /// our child counts as exited only once its own parent has reaped it.
    ///
    /// Do not watch the pid of a [`Processes::popen`] process this way: this
    /// watch would reap it and take its status from
    /// [`ProcessHandler::process_exited`].
    ///
    /// `callback` is not called if the watch is cancelled with
    /// [`Processes::unwatch_process`] or the reactor stops first.
    ///
    /// # Errors
    /// `InvalidInput` for a pid of 0 or below (process groups).
    pub fn watch_process(
        &mut self,
        pid: i32,
        callback: impl FnOnce(&mut Reactor, Option<ExitStatus>) + 'static,
    ) -> io::Result<ProcessWatchId> {
        let r = &mut *self.reactor;
        if pid <= 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "watch_process needs a process id above 0",
            ));
        }
        let on_end: OnEnd = Box::new(move |r, end| {
            if let End::Exited(status) = end {
                callback(r, status);
            }
        });
        Ok(ProcessWatchId(watch_exit(r, pid, on_end)))
    }

    /// Cancels a [`Processes::watch_process`]; its callback will not run.
    /// Returns `false`, doing nothing, if it already ran or was cancelled.
    pub fn unwatch_process(&mut self, id: ProcessWatchId) -> bool {
        let r = &mut *self.reactor;
        match id.0 {
            ExitWatch::Descriptor(watch) => r.watches().detach(watch).is_ok(),
            ExitWatch::Poll(timer) => r.cancel_timer(timer),
        }
    }
}

// ----- popen's state -----

/// One popen'd process, shared by its connection's handler (the
/// [`Adapter`]), its exit watch and the weak [`Subprocess`] handles.
struct Child {
    pid: i32,
    /// Set once the process is known to have exited: its status, or `None`
    /// when there is none to give.
    exit: Option<Option<ExitStatus>>,
    /// Set once the connection has closed.
    close: Option<CloseReason>,
    /// `None` while one of its callbacks runs and after `process_exited`.
    handler: Option<Box<dyn ProcessHandler>>,
    /// Not reaped yet (by us or anyone).
    needs_reap: bool,
}

impl Child {
    /// The reactor is stopping: take the status if the process has exited,
    /// else give up waiting (Drop reaps it later).
    fn reactor_stopping(&mut self) {
        if self.exit.is_some() {
            return;
        }
        match probe_exit(self.pid, false) {
            Some(status) => {
                self.exit = Some(status);
                self.needs_reap = false;
            }
            None => self.exit = Some(None),
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if !self.needs_reap {
            return;
        }
        // Still running with nobody left to watch it (the reactor stopped
        // or was dropped): a thread waits for it so it never stays a
        // zombie. If no thread can be made, it stays one until we exit.
        if let Ok(None) = sys::try_wait(Some(self.pid)) {
            let pid = self.pid;
            let _ = std::thread::Builder::new()
                .name("packet-reaper".into())
                .spawn(move || sys::wait(pid));
        }
    }
}

/// Calls `process_exited` once both the exit and the close are known.
fn finish(child: &RefCell<Child>, reactor: &mut Reactor) {
    let (mut handler, status, reason) = {
        let mut c = child.borrow_mut();
        let (Some(status), Some(_)) = (c.exit, c.close.as_ref()) else {
            return;
        };
        let (Some(handler), Some(reason)) = (c.handler.take(), c.close.take()) else {
            return;
        };
        (handler, status, reason)
    };
    handler.process_exited(reactor, status, &reason);
}

/// The exit watch of a popen'd process saw it end, or the reactor stop.
fn child_ended(child: &RefCell<Child>, reactor: &mut Reactor, end: End) {
    {
        let mut c = child.borrow_mut();
        match end {
            End::Exited(status) => {
                c.exit = Some(status);
                c.needs_reap = false;
            }
            End::ReactorStopped => c.reactor_stopping(),
        }
    }
    finish(child, reactor);
}

/// A [`ProcessHandler`] as the [`Handler`] of the process's connection.
struct Adapter(Rc<RefCell<Child>>);

impl Adapter {
    fn with(
        &self,
        conn: &mut Connection<'_>,
        f: impl FnOnce(&mut dyn ProcessHandler, &mut ProcessContext<'_>),
    ) {
        let Some(mut handler) = self.0.borrow_mut().handler.take() else {
            return;
        };
        let mut p = ProcessContext {
            conn: conn.reborrow(),
            child: &self.0,
        };
        f(handler.as_mut(), &mut p);
        self.0.borrow_mut().handler = Some(handler);
    }
}

impl Handler for Adapter {
    fn post_init(&mut self, conn: &mut Connection<'_>) {
        self.with(conn, |h, p| h.post_init(p));
    }

    fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
        self.with(conn, |h, p| h.receive_data(p, data));
    }

    fn outbound_full(&mut self, conn: &mut Connection<'_>) {
        self.with(conn, |h, p| h.outbound_full(p));
    }

    fn outbound_drained(&mut self, conn: &mut Connection<'_>) {
        self.with(conn, |h, p| h.outbound_drained(p));
    }

    fn unbind(&mut self, conn: &mut Connection<'_>, reason: &CloseReason) {
        {
            let mut c = self.0.borrow_mut();
            c.close = Some(copy_reason(reason));
            if matches!(reason, CloseReason::ReactorStopped) {
                c.reactor_stopping();
            }
        }
        finish(&self.0, conn.reactor());
    }
}

/// `CloseReason` holds `io::Error`s, which are not `Clone`; the reason is
/// kept from `unbind` until the process has exited too.
fn copy_reason(reason: &CloseReason) -> CloseReason {
    fn copy_error(e: &io::Error) -> io::Error {
        match e.raw_os_error() {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(e.kind(), e.to_string()),
        }
    }
    match reason {
        CloseReason::Local => CloseReason::Local,
        CloseReason::PeerClosed => CloseReason::PeerClosed,
        CloseReason::Reset => CloseReason::Reset,
        CloseReason::ConnectFailed(e) => CloseReason::ConnectFailed(copy_error(e)),
        CloseReason::Error(e) => CloseReason::Error(copy_error(e)),
        CloseReason::InactivityTimeout => CloseReason::InactivityTimeout,
        CloseReason::ConnectTimeout => CloseReason::ConnectTimeout,
        CloseReason::ReactorStopped => CloseReason::ReactorStopped,
        CloseReason::Detached => CloseReason::Detached,
        CloseReason::Protocol(e) => CloseReason::Protocol(copy_error(e)),
        CloseReason::Memory => CloseReason::Memory,
        &CloseReason::LineTooLong { max, got } => CloseReason::LineTooLong { max, got },
    }
}

/// [`Processes::system`]'s handler: collects output up to a limit.
struct Collect<F> {
    output: Output,
    max_output: usize,
    callback: Option<F>,
}

impl<F> ProcessHandler for Collect<F>
where
    F: FnOnce(&mut Reactor, Output, Option<ExitStatus>) + 'static,
{
    fn post_init(&mut self, p: &mut ProcessContext<'_>) {
        p.close_write();
    }

    fn receive_data(&mut self, _p: &mut ProcessContext<'_>, data: &[u8]) {
        let room = self.max_output.saturating_sub(self.output.bytes.len());
        if data.len() > room {
            self.output.truncated = true;
        }
        self.output
            .bytes
            .extend_from_slice(&data[..data.len().min(room)]);
    }

    fn process_exited(
        &mut self,
        reactor: &mut Reactor,
        status: Option<ExitStatus>,
        _reason: &CloseReason,
    ) {
        if let Some(callback) = self.callback.take() {
            callback(reactor, std::mem::take(&mut self.output), status);
        }
    }
}

// ----- watching for a process's exit -----

/// How a watch on a process ended.
enum End {
    /// It exited: its status if it was our child and we reaped it.
    Exited(Option<ExitStatus>),
    /// The reactor stopped first.
    ReactorStopped,
}

type OnEnd = Box<dyn FnOnce(&mut Reactor, End)>;

/// Shared between an exit descriptor's watch and the polling timer that replaces it if
/// the watch cannot be registered.
type OnEndSlot = Rc<RefCell<Option<OnEnd>>>;

fn take_on_end(slot: &OnEndSlot) -> Option<OnEnd> {
    slot.borrow_mut().take()
}

/// Whether `pid` has ended: `Some(Some(status))` for our child, now
/// reaped; `Some(None)` for a process that is gone but not ours to reap
/// (or reaped by someone else); `None` while it runs. `known_exited` says
/// an exit descriptor reported its exit, so a process that is not our child need not
/// be looked for.
fn probe_exit(pid: i32, known_exited: bool) -> Option<Option<ExitStatus>> {
    match sys::try_wait(Some(pid)) {
        Ok(Some((_, status))) => Some(Some(status)),
        Ok(None) => None,
        // ECHILD: not our child. A zombie of another parent still exists,
        // so without an exit descriptor it counts as running until that
        // parent reaps.
        Err(_) => (known_exited || !sys::process_exists(pid)).then_some(None),
    }
}

/// Watches `pid` until it exits, then reaps it if it is our child and
/// calls `on_end`: through an exit descriptor (pidfd, `EVFILT_PROC`), else
/// by polling.
fn watch_exit(reactor: &mut Reactor, pid: i32, on_end: OnEnd) -> ExitWatch {
    let slot: OnEndSlot = Rc::new(RefCell::new(Some(on_end)));
    // ENOSYS before Linux 5.3, ESRCH for a pid already gone, EMFILE:
    // polling covers each (it finds a gone pid on its first tick).
    if let Ok(fd) = sys::exit_watch(pid) {
        let watcher = ExitFdWatch {
            pid,
            slot: slot.clone(),
        };
        if let Ok(id) = reactor.watches().watch(fd, watcher, true, false) {
            return ExitWatch::Descriptor(id);
        }
    }
    poll_exit(reactor, pid, slot)
}

/// Polls `pid` every [`POLL_INTERVAL`] (the fallback of [`watch_exit`]). A
/// timer has no end callback when the reactor stops, so `on_end` is then
/// dropped without [`End::ReactorStopped`].
fn poll_exit(reactor: &mut Reactor, pid: i32, slot: OnEndSlot) -> ExitWatch {
    let timer = reactor.add_periodic_timer(POLL_INTERVAL, move |r, id| {
        let Some(status) = probe_exit(pid, false) else {
            return;
        };
        r.cancel_timer(id);
        if let Some(on_end) = take_on_end(&slot) {
            on_end(r, End::Exited(status));
        }
    });
    ExitWatch::Poll(timer)
}

/// The watch on an exit descriptor ([`sys::exit_watch`]): readable once
/// the process has exited (level-triggered, so a reap that finds nothing
/// yet is simply retried next turn).
struct ExitFdWatch {
    pid: i32,
    slot: OnEndSlot,
}

impl Watcher for ExitFdWatch {
    fn notify_readable(&mut self, w: &mut Watch<'_>) {
        let Some(status) = probe_exit(self.pid, true) else {
            return;
        };
        // Closes the descriptor; `unbind` follows with the slot empty.
        let _ = w.detach();
        if let Some(on_end) = take_on_end(&self.slot) {
            on_end(w.reactor(), End::Exited(status));
        }
    }

    fn unbind(&mut self, w: &mut Watch<'_>) {
        // The reactor stopped, or unwatch_process (whose callback ignores
        // this).
        if let Some(on_end) = take_on_end(&self.slot) {
            on_end(w.reactor(), End::ReactorStopped);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// The polling fallback, which other systems use, on this one.
    #[test]
    fn polling_reaps_a_child_and_reports_a_gone_pid() {
        let mut reactor = Reactor::new().unwrap();
        let child = spawn(&["sh", "-c", "exit 4"], &SpawnOptions::new()).unwrap();
        let gone = spawn(&["true"], &SpawnOptions::new()).unwrap();
        sys::wait(gone).unwrap();
        type Seen = Rc<RefCell<Vec<(i32, Option<ExitStatus>)>>>;
        let seen: Seen = Rc::default();
        for pid in [child, gone] {
            let seen = seen.clone();
            let slot: OnEndSlot = Rc::new(RefCell::new(Some(Box::new(move |r, end| {
                if let End::Exited(status) = end {
                    seen.borrow_mut().push((pid, status));
                }
                if seen.borrow().len() == 2 {
                    r.stop();
                }
            }))));
            poll_exit(&mut reactor, pid, slot);
        }
        reactor.run_until_stopped().unwrap();
        let mut seen = seen.take();
        seen.sort_by_key(|(pid, _)| *pid != child);
        assert_eq!(
            seen,
            [(child, Some(ExitStatus::Code(4))), (gone, None)],
            "our child reaped with its status; a gone pid reported without"
        );
        assert!(!sys::process_exists(child), "no zombie left");
    }

    /// A popen'd process still running when its reactor stops is not
    /// killed, gets `process_exited` (without a status, unless it happened
    /// to exit during the stop), and is reaped in the background when it
    /// exits.
    #[test]
    fn a_process_outliving_its_reactor_is_reaped_in_the_background() {
        struct Stop(Rc<Cell<Option<Option<ExitStatus>>>>);
        impl ProcessHandler for Stop {
            fn post_init(&mut self, p: &mut ProcessContext<'_>) {
                p.reactor().stop();
            }
            fn process_exited(
                &mut self,
                _: &mut Reactor,
                status: Option<ExitStatus>,
                reason: &CloseReason,
            ) {
                assert!(matches!(reason, CloseReason::ReactorStopped));
                self.0.set(Some(status));
            }
        }
        let seen = Rc::new(Cell::new(None));
        let mut reactor = Reactor::new().unwrap();
        let p = reactor
            .processes()
            .popen(["sleep", "0.5"], Stop(seen.clone()))
            .unwrap();
        reactor.run_until_stopped().unwrap();
        assert!(seen.get().is_some(), "process_exited ran at the stop");
        drop(reactor);
        // The reaper thread waits for it; bounded by the test's own timeout.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while sys::process_exists(p.pid()) {
            assert!(std::time::Instant::now() < deadline, "never reaped");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
