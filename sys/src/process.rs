//! Process primitives for worker processes: forking a single-threaded
//! process, waiting for children, signalling them, watching their exit with
//! a pidfd, a blocking `poll` for the fork server's loop, and redirecting
//! standard output.
//!
//! `fork` is only offered for a process that has exactly one thread: in a
//! multi-threaded process the child would inherit other threads' locks
//! (malloc, stdio) held forever, which is why the worker layer forks a fork
//! server at start-up and lets it fork the workers (ARCHITECTURE.md).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::{cvt, cvt_r};

/// Which side of a [`fork_single_threaded`] this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fork {
    /// In the new child process.
    Child,
    /// In the parent; the child's process id.
    Parent(i32),
}

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It called `exit` with this code.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// The number of threads in this process.
///
/// # Errors
/// `Unsupported` where the OS offers no way to count them.
pub fn thread_count() -> io::Result<usize> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        Ok(std::fs::read_dir("/proc/self/task")?.count())
    }
    #[cfg(any(target_os = "macos", target_os = "ios"))]
    {
        // SAFETY: takes no arguments, only reads process state.
        Ok(if unsafe { libc::pthread_is_threaded_np() } == 0 {
            1
        } else {
            2
        })
    }
    #[cfg(not(any(
        target_os = "linux",
        target_os = "android",
        target_os = "macos",
        target_os = "ios"
    )))]
    {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "cannot count threads on this OS",
        ))
    }
}

/// Forks this process, which must have exactly one thread.
///
/// # Errors
/// `Other` when the process has more than one thread (forking it would be
/// unsound: see the module docs), or `EAGAIN`/`ENOMEM` from `fork(2)`.
pub fn fork_single_threaded() -> io::Result<Fork> {
    let threads = thread_count()?;
    if threads != 1 {
        return Err(io::Error::other(format!(
            "refusing to fork a process with {threads} threads: fork before starting threads"
        )));
    }
    // SAFETY: the process is single-threaded (checked above, and nothing in
    // this call can start a thread in between), so the child gets a
    // consistent copy of every lock and allocator state.
    let pid = cvt(unsafe { libc::fork() })?;
    Ok(if pid == 0 {
        Fork::Child
    } else {
        Fork::Parent(pid)
    })
}

/// Ends this process at once with `code`, without running exit handlers or
/// flushing stdio buffers: what a forked child must do so that it does not
/// run its parent's clean-up a second time.
pub fn exit_immediately(code: i32) -> ! {
    // SAFETY: _exit takes an int and does not return.
    unsafe { libc::_exit(code) }
}

/// The current process id.
pub fn getpid() -> i32 {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() }
}

fn decode_status(status: libc::c_int) -> ExitStatus {
    if libc::WIFEXITED(status) {
        ExitStatus::Code(libc::WEXITSTATUS(status))
    } else {
        ExitStatus::Signal(libc::WTERMSIG(status))
    }
}

/// Reaps child `pid` (any child with `None`) if it has exited, without
/// blocking (`WNOHANG`). `Ok(None)` when no such child has exited yet.
///
/// # Errors
/// `ECHILD` when there is no such child.
pub fn try_wait(pid: Option<i32>) -> io::Result<Option<(i32, ExitStatus)>> {
    let mut status: libc::c_int = 0;
    // SAFETY: `status` is a live int the kernel writes.
    let r = cvt_r(|| unsafe { libc::waitpid(pid.unwrap_or(-1), &mut status, libc::WNOHANG) })?;
    Ok((r > 0).then(|| (r, decode_status(status))))
}

/// Waits for child `pid` to exit and reaps it.
///
/// # Errors
/// `ECHILD` when there is no such child.
pub fn wait(pid: i32) -> io::Result<ExitStatus> {
    let mut status: libc::c_int = 0;
    // SAFETY: `status` is a live int the kernel writes.
    cvt_r(|| unsafe { libc::waitpid(pid, &mut status, 0) })?;
    Ok(decode_status(status))
}

/// Sends signal `sig` (`libc::SIGTERM`, `libc::SIGKILL`, …) to process `pid`.
///
/// # Errors
/// `ESRCH` when it does not exist, `EPERM`.
pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    if pid <= 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to signal a process group",
        ));
    }
    // SAFETY: kill takes no pointers.
    cvt(unsafe { libc::kill(pid, sig) })?;
    Ok(())
}

/// A pidfd for process `pid`: readable once it exits (Linux 5.3+).
///
/// # Errors
/// `ESRCH` when it does not exist; `ENOSYS` on older kernels.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: the pidfd_open syscall takes a pid and flags, no pointers.
    let fd = cvt(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as libc::c_int)?;
    // SAFETY: a fresh descriptor that nothing else owns. pidfds are
    // close-on-exec by definition.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// One descriptor to [`poll`], and what it reported.
#[derive(Debug)]
pub struct PollFd<'a> {
    fd: BorrowedFd<'a>,
    revents: i16,
}

impl<'a> PollFd<'a> {
    /// Watch `fd` for input (or hang-up).
    pub fn readable(fd: BorrowedFd<'a>) -> PollFd<'a> {
        PollFd { fd, revents: 0 }
    }

    /// Whether the last poll found input, end of stream, or an error.
    pub fn is_ready(&self) -> bool {
        self.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
    }
}

/// Blocks until one of `fds` is readable or `timeout` passes (`None`:
/// forever); returns how many are ready. For the fork server's small
/// single-threaded loop, not for reactors.
///
/// # Errors
/// `EINTR` is retried; `ENOMEM`.
pub fn poll(fds: &mut [PollFd<'_>], timeout: Option<Duration>) -> io::Result<usize> {
    let mut raw: Vec<libc::pollfd> = fds
        .iter()
        .map(|p| libc::pollfd {
            fd: p.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as libc::c_int);
    // SAFETY: `raw` holds `raw.len()` valid pollfd entries.
    let n = cvt_r(|| unsafe { libc::poll(raw.as_mut_ptr(), raw.len() as libc::nfds_t, ms) })?;
    for (p, r) in fds.iter_mut().zip(&raw) {
        p.revents = r.revents;
    }
    Ok(n as usize)
}

/// Points standard output and standard error at `fd` (a log file).
///
/// # Errors
/// `EBADF`.
pub fn redirect_stdout_stderr(fd: BorrowedFd<'_>) -> io::Result<()> {
    for target in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
        // SAFETY: dup2 onto the standard descriptors, which this process
        // owns for its whole life; the old file behind them is released.
        cvt_r(|| unsafe { libc::dup2(fd.as_raw_fd(), target) })?;
    }
    Ok(())
}

/// A pipe end or other fd as a raw number, for logging.
pub fn raw(fd: &impl AsFd) -> RawFd {
    fd.as_fd().as_raw_fd()
}

/// Closes every descriptor of this process except standard input, output
/// and error and `keep`, then runs `body`, which never returns: the start of
/// a process that must not hold on to anything of its parent's (the fork
/// server, forked from a master that may have listening sockets, log files
/// or other workers' links open).
///
/// Call it first thing in a freshly forked child. Descriptors owned by
/// values of the parent's code are closed underneath them; that is sound
/// only because `body` never returns to that code, so those values are
/// never used or dropped again. `body` must not reach such values through
/// globals either.
pub fn run_clean_child(keep: &[RawFd], body: impl FnOnce() -> std::convert::Infallible) -> ! {
    let mut keep: Vec<RawFd> = keep.to_vec();
    keep.extend([0, 1, 2]);
    keep.sort_unstable();
    keep.dedup();
    // Collect first, close after: the directory stream has a descriptor of
    // its own while it is read.
    let open: Vec<RawFd> =
        match std::fs::read_dir("/proc/self/fd").or_else(|_| std::fs::read_dir("/dev/fd")) {
            Ok(dir) => dir
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect(),
            Err(_) => {
                // No fd listing: fall back to every number below the limit.
                // SAFETY: sysconf takes no pointers.
                let max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) };
                (0..max.clamp(256, 65536) as RawFd).collect()
            }
        };
    for fd in open {
        if keep.binary_search(&fd).is_err() {
            // SAFETY: see the function's contract: nothing that owns `fd`
            // will run again in this process. EBADF (the directory's own
            // descriptor, already closed) is harmless.
            unsafe { libc::close(fd) };
        }
    }
    match body() {}
}

/// The soft and hard limits on open descriptors (`RLIMIT_NOFILE`).
///
/// # Errors
/// Only if the call is unsupported.
pub fn nofile_limit() -> io::Result<(u64, u64)> {
    // SAFETY: all-zero is a valid rlimit.
    let mut lim: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: `lim` is a live rlimit the kernel writes.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    Ok((lim.rlim_cur as u64, lim.rlim_max as u64))
}

/// Sets the soft limit on open descriptors (at most the hard limit), for a
/// server that holds many connections, or a test that runs out of them on
/// purpose.
///
/// # Errors
/// `EINVAL` above the hard limit, `EPERM`.
pub fn set_nofile_soft_limit(soft: u64) -> io::Result<()> {
    let (_, hard) = nofile_limit()?;
    let lim = libc::rlimit {
        rlim_cur: soft.min(hard) as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: `lim` is a live rlimit the kernel reads.
    cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) })?;
    Ok(())
}

/// A non-blocking, close-on-exec pipe: `(read end, write end)`.
///
/// # Errors
/// Out of descriptors.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    #[cfg(not(any(target_os = "macos", target_os = "ios")))]
    // SAFETY: `fds` has room for the two descriptors written.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) })?;
    #[cfg(any(target_os = "macos", target_os = "ios"))]
    {
        // SAFETY: `fds` has room for the two descriptors written.
        cvt(unsafe { libc::pipe(fds.as_mut_ptr()) })?;
        for fd in fds {
            // SAFETY: fcntl on descriptors we just made.
            unsafe {
                libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK);
            }
        }
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Moves up to `len` bytes from `from` to `to` inside the kernel
/// (`splice(2)`, one of them must be a pipe), without blocking.
///
/// # Errors
/// `WouldBlock` when `from` is empty or `to` full; `Unsupported` where the
/// OS has no splice.
pub fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let flags = libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE;
        // SAFETY: null offsets (stream positions are used); both fds are
        // open for the call.
        let n = cvt_r(|| unsafe {
            libc::splice(
                from.as_raw_fd(),
                std::ptr::null_mut(),
                to.as_raw_fd(),
                std::ptr::null_mut(),
                len,
                flags,
            )
        })?;
        Ok(n as usize)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = (from, to, len);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no splice on this OS",
        ))
    }
}
