//! Zero-downtime restart: listening sockets inherited from systemd (socket
//! activation) or from the previous process of a binary upgrade, as nginx
//! (`USR2`) and Unicorn do it.
//!
//! **Socket activation.** [`listeners_from_env`] reads systemd's protocol
//! (`sd_listen_fds(3)`): `LISTEN_FDS` descriptors starting at 3,
//! `LISTEN_PID` (which must be this process, or the descriptors are meant
//! for another one), and `LISTEN_FDNAMES` (optional, `:`-separated). Each
//! descriptor is checked: open, a socket, a stream socket, listening
//! (`SO_ACCEPTCONN`); anything else is an [`ActivationError`] that names
//! the descriptor. The variables are removed once read, so programs this
//! one starts do not take the descriptors for theirs, and the descriptors
//! are made close-on-exec again. [`Upgrades::adopt_server`] then serves on
//! one as [`Reactor::start_server`] would on a fresh socket.
//!
//! **Binary upgrade.** [`Upgrades::upgrade`] (or `SIGUSR2`, with
//! [`Upgrades::on_signal`]) starts the program again: the same
//! executable file (or one given with [`UpgradeOptions::program`]) with the
//! same arguments, passing every listening socket of the reactor (and those
//! given with [`UpgradeOptions::also_pass`], for the other reactors of a
//! `SO_REUSEPORT` server) in the format above, plus a readiness pipe: the
//! write end is the descriptor after the listeners, named by
//! [`READY_FD_VAR`] (`PACKET_READY_FD`). The new process writes one byte
//! to it once it serves ([`Inherited::notify_ready`]). The old process
//! waits for that byte up to [`UpgradeOptions::deadline`] (30 s by
//! default), then hands over ([`Upgrades::hand_over`]): it closes its
//! listeners at once, serves the connections it has for
//! [`UpgradeOptions::settle`] more (1 s: a client that connected just
//! before has its request read and answered rather than cut by the drain,
//! which reads no more), then stops gracefully
//! ([`Reactor::stop_gracefully`]: responses in flight finish, workers
//! answer their asks) within [`UpgradeOptions::grace`] (30 s). The kernel
//! keeps each listening socket, and the connections queued on it, as long
//! as one process holds it, so no connection is refused in between. If
//! the new program cannot be executed, exits before writing, or misses the
//! deadline (it is then killed; one that closes the pipe without writing
//! is not ready either, and is killed at the deadline unless it exits
//! first), the old process keeps serving, logs why, and reaps the child. One upgrade at a time per
//! process: a request during one is refused ([`UpgradeError::InProgress`]).
//!
//! A stop of the old process while it waits (`SIGTERM`) leaves the new
//! one running: it serves on the same sockets. A Unix-domain listener's
//! file is kept at the hand-over, and the new process, which did not
//! create it, leaves it at its own stop (the next `start_unix_server`
//! replaces a stale one).
//!
//! The new process is a child of the old one until the old one exits; it
//! is then re-parented (to PID 1, or to the nearest subreaper). Under
//! systemd, a service that upgrades itself this way needs the new main pid
//! made known (`PIDFile=`, or `sd_notify("MAINPID=")`); socket activation
//! alone (`systemctl restart` with a `.socket` unit) needs nothing more.

use std::cell::RefCell;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use packet_sys::process::{self as sys, SpawnOptions};
use packet_sys::{Addr, Socket};

pub use packet_sys::process::ExitStatus;

use crate::Reactor;

/// The first inherited descriptor (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// The variable naming the readiness pipe's write end in a process started
/// by an upgrade.
pub const READY_FD_VAR: &str = "PACKET_READY_FD";

/// How long an upgrade waits, by default, for the new process to report
/// that it serves.
pub const UPGRADE_DEADLINE: Duration = Duration::from_secs(30);

/// How long the old process goes on serving the connections it has
/// accepted, with its listeners closed, before its graceful stop begins.
pub const HANDOVER_SETTLE: Duration = Duration::from_secs(1);

/// How often the old process looks at the readiness pipe and the child
/// while it waits.
const CHECK_EVERY: Duration = Duration::from_millis(10);

/// More inherited descriptors than this is a malformed `LISTEN_FDS`.
const MAX_LISTEN_FDS: usize = 1024;

/// A listening socket this process inherited.
#[derive(Debug)]
pub struct InheritedListener {
    sock: Socket,
    fd: RawFd,
    name: Option<String>,
    addr: Addr,
}

impl InheritedListener {
    /// The descriptor number it was inherited under (3, 4, ...).
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// Its name from `LISTEN_FDNAMES`, if given.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> &Addr {
        &self.addr
    }

    /// A second handle on the same socket (`dup`), for another reactor to
    /// accept from.
    ///
    /// # Errors
    /// Out of descriptors.
    pub fn try_clone(&self) -> io::Result<InheritedListener> {
        Ok(InheritedListener {
            sock: Socket::from(self.sock.as_fd().try_clone_to_owned()?),
            fd: self.fd,
            name: self.name.clone(),
            addr: self.addr.clone(),
        })
    }

    /// Whether it is a TCP socket (not a Unix-domain one).
    pub fn is_tcp(&self) -> bool {
        self.addr.as_inet().is_some()
    }

    pub(crate) fn into_socket(self) -> Socket {
        self.sock
    }
}

impl AsFd for InheritedListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

/// What [`listeners_from_env`] found: the listening sockets, and, in a
/// process started by an upgrade, the pipe to report readiness through.
#[derive(Debug)]
pub struct Inherited {
    listeners: Vec<InheritedListener>,
    ready: Option<File>,
}

impl Inherited {
    /// Takes the listening sockets, in descriptor order.
    pub fn take_listeners(&mut self) -> Vec<InheritedListener> {
        std::mem::take(&mut self.listeners)
    }

    /// Whether a previous process started this one by an upgrade and
    /// waits for [`Inherited::notify_ready`].
    pub fn from_upgrade(&self) -> bool {
        self.ready.is_some()
    }

    /// Tells the process that started this one by an upgrade that this
    /// one serves, so it stops accepting and drains; call it once every
    /// listener is adopted. Does nothing otherwise, or a second time.
    ///
    /// # Errors
    /// The old process is gone (`BrokenPipe`).
    pub fn notify_ready(&mut self) -> io::Result<()> {
        match self.ready.take() {
            Some(mut pipe) => pipe.write_all(b"1"),
            None => Ok(()),
        }
    }
}

/// Why inherited listeners cannot be used. Each names the variable or the
/// descriptor at fault.
#[derive(Debug)]
#[non_exhaustive]
pub enum ActivationError {
    /// A variable is missing or malformed.
    Variable {
        /// `LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES` or `PACKET_READY_FD`.
        name: &'static str,
        /// Its value (empty when missing).
        value: String,
    },
    /// `LISTEN_PID` names another process: the descriptors are not ours.
    NotOurs {
        /// The pid in `LISTEN_PID`.
        listen_pid: i32,
        /// This process's pid.
        pid: i32,
    },
    /// The descriptor is not open.
    Closed {
        /// Its number.
        fd: RawFd,
    },
    /// The descriptor is not a socket (a file, a pipe).
    NotSocket {
        /// Its number.
        fd: RawFd,
    },
    /// The socket is not a stream socket (a datagram one).
    NotStream {
        /// Its number.
        fd: RawFd,
    },
    /// The socket is not listening (a connected one, or never `listen`ed).
    NotListening {
        /// Its number.
        fd: RawFd,
    },
    /// The socket is of another family than the server expects.
    WrongFamily {
        /// Its number.
        fd: RawFd,
        /// What the server expected, as "TCP".
        expected: &'static str,
    },
    /// Another error on the descriptor.
    Io {
        /// Its number.
        fd: RawFd,
        /// What failed.
        error: io::Error,
    },
}

impl std::fmt::Display for ActivationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ActivationError::Variable { name, value } if value.is_empty() => {
                write!(f, "socket activation: {name} is missing")
            }
            ActivationError::Variable { name, value } => {
                write!(f, "socket activation: {name}={value:?} is malformed")
            }
            ActivationError::NotOurs { listen_pid, pid } => write!(
                f,
                "socket activation: LISTEN_PID={listen_pid} is not this process ({pid})"
            ),
            ActivationError::Closed { fd } => {
                write!(f, "socket activation: fd {fd} is not open")
            }
            ActivationError::NotSocket { fd } => {
                write!(f, "socket activation: fd {fd} is not a socket")
            }
            ActivationError::NotStream { fd } => {
                write!(f, "socket activation: fd {fd} is not a stream socket")
            }
            ActivationError::NotListening { fd } => write!(
                f,
                "socket activation: fd {fd} is not a listening socket (connected, or never listened)"
            ),
            ActivationError::WrongFamily { fd, expected } => {
                write!(f, "socket activation: fd {fd} is not a {expected} socket")
            }
            ActivationError::Io { fd, error } => {
                write!(f, "socket activation: fd {fd}: {error}")
            }
        }
    }
}

impl std::error::Error for ActivationError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ActivationError::Io { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl From<ActivationError> for io::Error {
    fn from(e: ActivationError) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, e)
    }
}

/// Reads the listening sockets passed by systemd's protocol or by an
/// upgrade (see the module's documentation); `Ok(None)` when `LISTEN_FDS`
/// is not set.
///
/// Call it first thing in `main`, before anything opens a descriptor:
/// a number the environment names but that is closed could otherwise be
/// taken by this process's own files by the time it is read. The variables
/// are removed whatever the outcome. The descriptors they name become
/// owned by the result (closed when it is dropped): set them only for
/// descriptors nothing else in this process owns, as systemd and an
/// upgrade do.
///
/// # Errors
/// An [`ActivationError`] naming the variable or the descriptor at fault;
/// descriptors already taken are closed.
pub fn listeners_from_env() -> Result<Option<Inherited>, ActivationError> {
    let var = |name: &'static str| {
        let value = std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
        std::env::remove_var(name);
        value
    };
    let (fds, pid, names, ready) = (
        var("LISTEN_FDS"),
        var("LISTEN_PID"),
        var("LISTEN_FDNAMES"),
        var(READY_FD_VAR),
    );
    let Some(fds) = fds else { return Ok(None) };
    let bad = |name: &'static str, value: &str| ActivationError::Variable {
        name,
        value: value.to_string(),
    };
    let count: usize = fds
        .parse()
        .ok()
        .filter(|&n| n <= MAX_LISTEN_FDS)
        .ok_or_else(|| bad("LISTEN_FDS", &fds))?;
    let pid_text = pid.unwrap_or_default();
    let listen_pid: i32 = pid_text.parse().map_err(|_| bad("LISTEN_PID", &pid_text))?;
    if listen_pid != sys::getpid() {
        return Err(ActivationError::NotOurs {
            listen_pid,
            pid: sys::getpid(),
        });
    }
    let names: Vec<Option<String>> = match &names {
        None => vec![None; count],
        Some(text) => {
            let names: Vec<Option<String>> = text.split(':').map(|n| Some(n.to_string())).collect();
            if names.len() != count {
                return Err(bad("LISTEN_FDNAMES", text));
            }
            names
        }
    };
    let ready = match ready {
        None => None,
        Some(text) => match text.parse::<RawFd>() {
            Ok(fd) if fd >= LISTEN_FDS_START + count as RawFd => Some(fd),
            _ => return Err(bad(READY_FD_VAR, &text)),
        },
    };
    // Every named descriptor is taken (and made close-on-exec) before any
    // is judged, so that an error leaves none behind for a child.
    let taken: Vec<(RawFd, io::Result<OwnedFd>)> = (0..count as RawFd)
        .map(|i| LISTEN_FDS_START + i)
        .map(|fd| (fd, sys::take_inherited_fd(fd)))
        .collect();
    let ready = match ready.map(|fd| (fd, sys::take_inherited_fd(fd))) {
        None => None,
        Some((_, Ok(pipe))) => Some(File::from(pipe)),
        Some((fd, Err(error))) => return Err(fd_error(fd, error)),
    };
    let mut listeners = Vec::with_capacity(count);
    for ((fd, taken), name) in taken.into_iter().zip(names) {
        let sock = Socket::from(taken.map_err(|e| fd_error(fd, e))?);
        if !sock.is_stream().map_err(|e| fd_error(fd, e))? {
            return Err(ActivationError::NotStream { fd });
        }
        if !sock.is_listening().map_err(|e| fd_error(fd, e))? {
            return Err(ActivationError::NotListening { fd });
        }
        let addr = sock
            .local_addr()
            .map_err(|error| ActivationError::Io { fd, error })?;
        listeners.push(InheritedListener {
            sock,
            fd,
            name,
            addr,
        });
    }
    Ok(Some(Inherited { listeners, ready }))
}

fn fd_error(fd: RawFd, error: io::Error) -> ActivationError {
    if Socket::not_open(&error) {
        ActivationError::Closed { fd }
    } else if Socket::not_a_socket(&error) {
        ActivationError::NotSocket { fd }
    } else {
        ActivationError::Io { fd, error }
    }
}

/// How [`Upgrades::upgrade`] starts the new process and hands over to it.
#[derive(Debug)]
pub struct UpgradeOptions {
    program: Option<PathBuf>,
    args: Option<Vec<OsString>>,
    deadline: Duration,
    settle: Duration,
    grace: Duration,
    also: Vec<OwnedFd>,
}

impl Default for UpgradeOptions {
    fn default() -> Self {
        UpgradeOptions {
            program: None,
            args: None,
            deadline: UPGRADE_DEADLINE,
            settle: HANDOVER_SETTLE,
            grace: crate::reactor::STOP_GRACE,
            also: Vec::new(),
        }
    }
}

impl UpgradeOptions {
    /// Defaults: this program's executable file as it is now on disk (the
    /// path it was started from, where a deploy puts the new build), this
    /// process's arguments, a 30 s deadline for the new process to be
    /// ready, then 1 s of settling and 30 s for the old one to drain.
    pub fn new() -> UpgradeOptions {
        UpgradeOptions::default()
    }

    /// Executes `path` instead of this program's file.
    pub fn program(mut self, path: impl Into<PathBuf>) -> UpgradeOptions {
        self.program = Some(path.into());
        self
    }

    /// The new process's arguments, `argv[0]` included, instead of this
    /// process's.
    pub fn args<S: Into<OsString>>(mut self, args: impl IntoIterator<Item = S>) -> UpgradeOptions {
        self.args = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// How long the new process has to report that it serves before it is
    /// killed and the old one goes on.
    pub fn deadline(mut self, deadline: Duration) -> UpgradeOptions {
        self.deadline = deadline;
        self
    }

    /// How long the old process serves the connections it has, its
    /// listeners closed, before it starts draining (see
    /// [`Upgrades::hand_over`]).
    pub fn settle(mut self, settle: Duration) -> UpgradeOptions {
        self.settle = settle;
        self
    }

    /// The deadline of the old process's graceful stop once the new one
    /// serves.
    pub fn grace(mut self, grace: Duration) -> UpgradeOptions {
        self.grace = grace;
        self
    }

    /// Passes listening socket `fd` too, after the reactor's own: the
    /// listeners of the other reactors of a server with one reactor per
    /// thread. The copy is closed once the new process is started.
    pub fn also_pass(mut self, fd: OwnedFd) -> UpgradeOptions {
        self.also.push(fd);
        self
    }
}

/// Why an upgrade did not hand over; the old process goes on serving.
#[derive(Debug)]
#[non_exhaustive]
pub enum UpgradeError {
    /// Another upgrade of this process is in progress.
    InProgress,
    /// This process already handed over to a new one and is stopping.
    HandedOver,
    /// The reactor has no listening socket to pass.
    NoListeners,
    /// The new program could not be started (missing, not executable).
    Spawn(io::Error),
    /// The new process exited before it reported that it serves.
    Exited {
        /// Its pid.
        pid: i32,
        /// How it ended.
        status: ExitStatus,
    },
    /// The new process did not report that it serves within the deadline;
    /// it was killed.
    Deadline {
        /// Its pid.
        pid: i32,
        /// The deadline.
        deadline: Duration,
    },
}

impl std::fmt::Display for UpgradeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpgradeError::InProgress => f.write_str("an upgrade is already in progress"),
            UpgradeError::HandedOver => {
                f.write_str("this process already handed over to a new one")
            }
            UpgradeError::NoListeners => f.write_str("no listening socket to pass"),
            UpgradeError::Spawn(e) => write!(f, "cannot start the new program: {e}"),
            UpgradeError::Exited { pid, status } => write!(
                f,
                "the new process {pid} ended ({status}) before it was ready"
            ),
            UpgradeError::Deadline { pid, deadline } => write!(
                f,
                "the new process {pid} was not ready within {deadline:?}; killed it"
            ),
        }
    }
}

impl std::error::Error for UpgradeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UpgradeError::Spawn(e) => Some(e),
            _ => None,
        }
    }
}

/// The process's upgrade state: one upgrade at a time, whatever reactor
/// asks, and none once handed over.
static STATE: AtomicU8 = AtomicU8::new(IDLE);
const IDLE: u8 = 0;
const WAITING: u8 = 1;
const HANDED_OVER: u8 = 2;

/// The callback told how an upgrade ended.
type Then = Box<dyn FnOnce(&mut Reactor, &Result<i32, UpgradeError>)>;

/// An upgrade waiting for the new process's readiness byte.
struct Waiting {
    pid: i32,
    ready: File,
    deadline: Duration,
    started: Instant,
    settle: Duration,
    grace: Duration,
    /// The pipe reached end of file without the byte: the child gave up.
    eof: bool,
    then: Then,
}

impl Reactor {
    /// Forks and executes the new program with the listeners at 3.. and
    /// the readiness pipe after them; the child's pid and the read end.
    fn start_new_process(&mut self, options: &UpgradeOptions) -> Result<(i32, File), UpgradeError> {
        let own = self.extensions().server_fds();
        let fds: Vec<BorrowedFd<'_>> = own
            .iter()
            .copied()
            .chain(options.also.iter().map(AsFd::as_fd))
            .collect();
        if fds.is_empty() {
            return Err(UpgradeError::NoListeners);
        }
        let (read, write) = sys::pipe().map_err(UpgradeError::Spawn)?;
        let n = fds.len() as RawFd;
        let ready_fd = LISTEN_FDS_START + n;
        let names = vec!["packet"; fds.len()].join(":");
        let mut spawn = SpawnOptions::new()
            .env("LISTEN_FDS", n.to_string())
            .env("LISTEN_FDNAMES", names)
            .env(READY_FD_VAR, ready_fd.to_string())
            .env_child_pid("LISTEN_PID")
            .map_fd(write.as_fd(), ready_fd);
        for (i, fd) in (0..).zip(&fds) {
            spawn = spawn.map_fd(*fd, LISTEN_FDS_START + i);
        }
        let program = match &options.program {
            Some(p) => p.clone(),
            None => current_program().map_err(UpgradeError::Spawn)?,
        };
        spawn = spawn.program(program.clone());
        let args: Vec<OsString> = match &options.args {
            Some(a) => a.clone(),
            None => std::env::args_os().collect(),
        };
        let pid = sys::spawn(&args, &spawn).map_err(UpgradeError::Spawn)?;
        drop(write);
        crate::log::line(format_args!(
            "upgrade: started {} as pid {pid} with {n} listener(s); waiting up to {:?} for it to be ready",
            program.display(),
            options.deadline
        ));
        Ok((pid, File::from(read)))
    }
}

/// A reactor's binary upgrade, borrowed for one call:
/// `reactor.upgrades()`; see the [module](self).
///
/// ```no_run
/// # use packet::upgrade::UpgradeOptions;
/// # use packet::Reactor;
/// # fn f(r: &mut Reactor) -> std::io::Result<()> {
/// // `kill -USR2 <pid>` starts the new build on the same sockets.
/// r.upgrades().on_signal(|_| UpgradeOptions::new(), |_, outcome| {
///     eprintln!("upgrade: {outcome:?}");
/// })?;
/// # Ok(()) }
/// ```
pub struct Upgrades<'r> {
    reactor: &'r mut Reactor,
}

impl Reactor {
    /// This reactor's binary upgrade: [`Upgrades`].
    pub fn upgrades(&mut self) -> Upgrades<'_> {
        Upgrades { reactor: self }
    }
}

impl Upgrades<'_> {
    /// Serves on a listening socket this process inherited (systemd's
    /// socket activation, or the previous process of an upgrade: see the
    /// [module](self)) as [`Reactor::start_server`] serves on a new
    /// one: the socket is made non-blocking and each accepted connection
    /// gets a handler from `factory` (`TCP_NODELAY` set when it is TCP).
    /// A Unix-domain socket's file is left in place when the server stops:
    /// whoever made it owns it.
    ///
    /// # Errors
    /// The socket cannot be made non-blocking or registered.
    pub fn adopt_server<H: crate::Handler>(
        &mut self,
        listener: InheritedListener,
        factory: impl FnMut() -> H + 'static,
    ) -> io::Result<crate::ServerId> {
        self.adopt_server_with(listener, crate::ServerOptions::default(), factory)
    }

    /// [`Upgrades::adopt_server`] with what
    /// [`ServerOptions::on_accept`](crate::ServerOptions::on_accept) set
    /// (the socket options of `options` are the inherited socket's
    /// already, and are not applied).
    ///
    /// # Errors
    /// As [`Upgrades::adopt_server`].
    pub fn adopt_server_with<H: crate::Handler>(
        &mut self,
        listener: InheritedListener,
        options: crate::ServerOptions,
        factory: impl FnMut() -> H + 'static,
    ) -> io::Result<crate::ServerId> {
        self.reactor
            .extensions()
            .adopt_server(listener.into_socket().into(), options, factory)
    }

    /// The listening sockets of this reactor's running servers (in the
    /// order they were added): what an upgrade passes to the new process,
    /// and what a program with several `SO_REUSEPORT` reactors hands to
    /// the one that upgrades ([`UpgradeOptions::also_pass`]).
    pub fn server_fds(&mut self) -> Vec<BorrowedFd<'_>> {
        self.reactor.extensions().server_fds()
    }

    /// Starts the binary upgrade described in [`crate::upgrade`]: the new
    /// process is started now; `then` is called on this reactor once it
    /// reports ready (with its pid; this reactor is then handing over, see
    /// [`Upgrades::hand_over`], and `then` hands the program's other
    /// reactors over) or has
    /// failed (the reason, also logged; everything goes on as before).
    ///
    /// # Errors
    /// At once, without calling `then`: [`UpgradeError::InProgress`],
    /// [`UpgradeError::HandedOver`], [`UpgradeError::NoListeners`], or
    /// [`UpgradeError::Spawn`] (also logged).
    pub fn upgrade(
        &mut self,
        options: UpgradeOptions,
        then: impl FnOnce(&mut Reactor, &Result<i32, UpgradeError>) + 'static,
    ) -> Result<i32, UpgradeError> {
        let r = &mut *self.reactor;
        if let Err(state) =
            STATE.compare_exchange(IDLE, WAITING, Ordering::AcqRel, Ordering::Acquire)
        {
            return Err(if state == WAITING {
                UpgradeError::InProgress
            } else {
                UpgradeError::HandedOver
            });
        }
        match r.start_new_process(&options) {
            Ok((pid, ready)) => {
                let waiting = Waiting {
                    pid,
                    ready,
                    deadline: options.deadline,
                    started: Instant::now(),
                    settle: options.settle,
                    grace: options.grace,
                    eof: false,
                    then: Box::new(then),
                };
                r.add_timer(CHECK_EVERY, move |r| wait_for_ready(r, waiting));
                Ok(pid)
            }
            Err(e) => {
                STATE.store(IDLE, Ordering::Release);
                if !matches!(e, UpgradeError::NoListeners) {
                    crate::log::line(format_args!(
                        "upgrade failed: {e}; this process goes on serving"
                    ));
                }
                Err(e)
            }
        }
    }

    /// Upgrades on `SIGUSR2`, as nginx does: each signal calls
    /// [`Upgrades::upgrade`] with the options `options` makes and `then`.
    /// A signal while an upgrade is in progress, or after the hand-over,
    /// is logged and ignored.
    ///
    /// # Errors
    /// As [`Reactor::on_signal`].
    pub fn on_signal(
        &mut self,
        mut options: impl FnMut(&mut Reactor) -> UpgradeOptions + 'static,
        then: impl FnMut(&mut Reactor, &Result<i32, UpgradeError>) + 'static,
    ) -> io::Result<()> {
        let r = &mut *self.reactor;
        let then = Rc::new(RefCell::new(then));
        r.on_signal(crate::signal::SIGUSR2, move |r| {
            let opts = options(r);
            let then = then.clone();
            match r
                .upgrades()
                .upgrade(opts, move |r, outcome| (then.borrow_mut())(r, outcome))
            {
                Ok(_) | Err(UpgradeError::Spawn(_)) => {}
                Err(e) => crate::log::line(format_args!("SIGUSR2: {e}; ignored")),
            }
        })
    }

    /// What the old process does once the new one serves: stops every
    /// server now (the new process accepts from the same sockets; a
    /// Unix-domain socket's file is left in place for it), goes on
    /// serving the connections it has for `settle`, then stops gracefully
    /// within `grace` ([`Reactor::stop_gracefully`]). The settling lets a
    /// request sent on a connection accepted just before be read and
    /// answered: the graceful stop reads no more, so it would close such a
    /// connection unanswered. A stop asked for meanwhile (`SIGTERM`) starts
    /// at once.
    pub fn hand_over(&mut self, settle: Duration, grace: Duration) {
        let r = &mut *self.reactor;
        r.extensions().stop_servers_keeping_files();
        r.add_timer(settle, move |r| r.stop_gracefully(grace));
    }
}

/// The executable file this process runs, as a path where a deploy puts
/// the new build: on Linux `/proc/self/exe` names the old file, marked
/// ` (deleted)` once replaced; the path without the mark is the new one.
fn current_program() -> io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let text = exe.as_os_str().to_string_lossy();
    Ok(match text.strip_suffix(" (deleted)") {
        Some(path) => PathBuf::from(path),
        None => exe,
    })
}

/// Looks at the readiness pipe and the child every [`CHECK_EVERY`] until
/// one of them settles the upgrade or the deadline passes.
fn wait_for_ready(r: &mut Reactor, mut w: Waiting) {
    let mut byte = [0u8; 1];
    if !w.eof {
        match w.ready.read(&mut byte) {
            Ok(1) => return finish(r, w, Ok(())),
            Ok(_) => w.eof = true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => w.eof = true,
        }
    }
    if let Ok(Some((_, status))) = sys::try_wait(Some(w.pid)) {
        let pid = w.pid;
        return finish(r, w, Err(UpgradeError::Exited { pid, status }));
    }
    if w.started.elapsed() >= w.deadline {
        let (pid, deadline) = (w.pid, w.deadline);
        let _ = sys::kill(pid, sys::SIGKILL);
        let _ = sys::wait(pid);
        return finish(r, w, Err(UpgradeError::Deadline { pid, deadline }));
    }
    r.add_timer(CHECK_EVERY, move |r| wait_for_ready(r, w));
}

fn finish(r: &mut Reactor, w: Waiting, outcome: Result<(), UpgradeError>) {
    let outcome = outcome.map(|()| w.pid);
    match &outcome {
        Ok(pid) => {
            STATE.store(HANDED_OVER, Ordering::Release);
            crate::log::line(format_args!(
                "upgrade: pid {pid} is serving; this process ({}) stops accepting, and drains after {:?} (within {:?})",
                sys::getpid(),
                w.settle,
                w.grace
            ));
            r.upgrades().hand_over(w.settle, w.grace);
        }
        Err(e) => {
            STATE.store(IDLE, Ordering::Release);
            crate::log::line(format_args!(
                "upgrade failed: {e}; this process goes on serving"
            ));
        }
    }
    (w.then)(r, &outcome);
}
