//! Process primitives for worker processes: forking a single-threaded
//! process, waiting for children, signalling them, watching their exit with
//! a pidfd, a blocking `poll` for the fork server's loop, and redirecting
//! standard output.
//!
//! A bare `fork` is only offered for a process that has exactly one thread:
//! in a multi-threaded process the child would inherit other threads' locks
//! (malloc, stdio) held forever, which is why the worker layer forks a fork
//! server at start-up and lets it fork the workers (ARCHITECTURE.md).
//! [`spawn`], which execs a program right away, is safe in any process: it
//! prepares everything before forking and the child calls only
//! async-signal-safe functions until `execve`.

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
/// Whatever the OS's query fails with (on Linux: no `/proc`).
pub fn thread_count() -> io::Result<usize> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        Ok(std::fs::read_dir("/proc/self/task")?.count())
    }
    #[cfg(any(target_os = "macos", target_os = "ios"))]
    {
        // The live count (proc_pidinfo, <libproc.h>): pthread_is_threaded_np
        // only says whether a thread was ever started, so it would refuse
        // every fork after a thread that has ended.
        // SAFETY: all-zero is a valid proc_taskinfo.
        let mut info: libc::proc_taskinfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of_val(&info) as libc::c_int;
        // SAFETY: `info` is a live, writable proc_taskinfo of `size` bytes.
        let n = unsafe {
            libc::proc_pidinfo(
                getpid(),
                libc::PROC_PIDTASKINFO,
                0,
                std::ptr::from_mut(&mut info).cast(),
                size,
            )
        };
        if n != size {
            return Err(io::Error::last_os_error());
        }
        Ok(info.pti_threadnum as usize)
    }
    #[cfg(any(target_os = "freebsd", target_os = "dragonfly"))]
    {
        // SAFETY: all-zero is a valid kinfo_proc.
        let mut info: libc::kinfo_proc = unsafe { std::mem::zeroed() };
        let mib = [
            libc::CTL_KERN,
            libc::KERN_PROC,
            libc::KERN_PROC_PID,
            getpid(),
        ];
        // SAFETY: kern.proc.pid.<pid> answers with one kinfo_proc (sysctl(3)).
        unsafe { sysctl_one(&mib, &mut info) }?;
        #[cfg(target_os = "freebsd")]
        let threads = info.ki_numthreads;
        #[cfg(target_os = "dragonfly")]
        let threads = info.kp_nthreads;
        Ok(threads as usize)
    }
    #[cfg(target_os = "netbsd")]
    {
        // SAFETY: all-zero is a valid kinfo_proc2.
        let mut info: libc::kinfo_proc2 = unsafe { std::mem::zeroed() };
        let mib = [
            libc::CTL_KERN,
            libc::KERN_PROC2,
            libc::KERN_PROC_PID,
            getpid(),
            std::mem::size_of_val(&info) as libc::c_int,
            1,
        ];
        // SAFETY: kern.proc2 with this entry size and count 1 answers with
        // one kinfo_proc2 (sysctl(7)).
        unsafe { sysctl_one(&mib, &mut info) }?;
        Ok(info.p_nlwps as usize)
    }
    #[cfg(target_os = "openbsd")]
    {
        // OpenBSD's kinfo_proc has no thread count; with
        // KERN_PROC_SHOW_THREADS, kern.proc lists the process (p_tid -1)
        // and then each of its threads (sysctl(2)).
        let entry = std::mem::size_of::<libc::kinfo_proc>();
        let mut mib = [
            libc::CTL_KERN,
            libc::KERN_PROC,
            libc::KERN_PROC_PID | libc::KERN_PROC_SHOW_THREADS,
            getpid(),
            entry as libc::c_int,
            0,
        ];
        loop {
            let mut len = 0;
            // SAFETY: a null buffer only asks for the size of the answer.
            cvt(unsafe {
                libc::sysctl(
                    mib.as_ptr(),
                    mib.len() as libc::c_uint,
                    std::ptr::null_mut(),
                    &mut len,
                    std::ptr::null_mut(),
                    0,
                )
            })?;
            // Room for threads started between the two calls.
            let room = len / entry + 4;
            mib[5] = room as libc::c_int;
            // SAFETY: all-zero is a valid kinfo_proc.
            let mut list = vec![unsafe { std::mem::zeroed::<libc::kinfo_proc>() }; room];
            let mut len = room * entry;
            // SAFETY: `list` is writable for `len` bytes; the kernel writes
            // at most `mib[5]` entries of `mib[4]` bytes.
            let r = cvt(unsafe {
                libc::sysctl(
                    mib.as_ptr(),
                    mib.len() as libc::c_uint,
                    list.as_mut_ptr().cast(),
                    &mut len,
                    std::ptr::null_mut(),
                    0,
                )
            });
            match r {
                Ok(_) => {
                    list.truncate(len / entry);
                    return Ok(list.iter().filter(|p| p.p_tid != -1).count());
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOMEM) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Reads the `sysctl(3)` node `mib` into `out`, which it must fill exactly:
/// a different length means the libc crate's struct does not match this
/// kernel's.
///
/// # Safety
/// `T` must be the plain C struct the node answers with.
#[cfg(any(target_os = "freebsd", target_os = "dragonfly", target_os = "netbsd"))]
unsafe fn sysctl_one<T>(mib: &[libc::c_int], out: &mut T) -> io::Result<()> {
    let size = std::mem::size_of::<T>();
    let mut len = size;
    // SAFETY: `out` is writable for `len` bytes, and by this function's
    // contract any answer of that length is a valid `T`.
    cvt(unsafe {
        libc::sysctl(
            mib.as_ptr(),
            mib.len() as libc::c_uint,
            std::ptr::from_mut(out).cast(),
            &mut len,
            std::ptr::null(),
            0,
        )
    })?;
    if len != size {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("sysctl answered {len} bytes for a {size}-byte struct"),
        ));
    }
    Ok(())
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

/// A descriptor that becomes readable once process `pid` has exited, for
/// a selector to watch: a pidfd on Linux (5.3 and later), a kqueue of its
/// own watching `EVFILT_PROC`/`NOTE_EXIT` on the BSDs and macOS. It does
/// not reap the process.
///
/// # Errors
/// `ESRCH` when the process does not exist (some systems: or has already
/// exited); `ENOSYS` on Linux before 5.3; `EPERM` for a process this user
/// may not watch (BSD).
pub fn exit_watch(pid: i32) -> io::Result<OwnedFd> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        pidfd_open(pid)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        crate::kqueue::exit_watch(pid)
    }
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
    close_all_but(&keep);
    // rustc 1.85 (the MSRV) already counts the call as diverging and calls
    // the match unreachable; later versions do not.
    #[allow(unreachable_code)]
    match body() {}
}

/// Closes every descriptor not in `keep` (sorted), for [`run_clean_child`],
/// whose contract makes that sound.
#[cfg(not(any(
    target_os = "freebsd",
    target_os = "dragonfly",
    target_os = "netbsd",
    target_os = "openbsd"
)))]
fn close_all_but(keep: &[RawFd]) {
    // Collect first, close after: the directory stream has a descriptor of
    // its own while it is read. Linux's /proc/self/fd and macOS's /dev/fd
    // list exactly the open descriptors.
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
            // SAFETY: run_clean_child's contract: nothing that owns `fd`
            // will run again in this process. EBADF (the directory's own
            // descriptor, already closed) is harmless.
            unsafe { libc::close(fd) };
        }
    }
}

/// Closes every descriptor not in `keep` (sorted and holding 0), for
/// [`run_clean_child`], whose contract makes that sound.
///
/// /dev/fd cannot say what is open here: FreeBSD's holds only 0 to 2
/// unless fdescfs(5) is mounted on it, and OpenBSD's and NetBSD's are
/// fixed device nodes. So every number below the highest kept one is
/// closed and the rest with closefrom(2) (OpenBSD; closefrom(3) on the
/// others).
#[cfg(any(
    target_os = "freebsd",
    target_os = "dragonfly",
    target_os = "netbsd",
    target_os = "openbsd"
))]
fn close_all_but(keep: &[RawFd]) {
    let mut next = 0;
    for &kept in keep {
        for fd in next..kept {
            // SAFETY: run_clean_child's contract: nothing that owns `fd`
            // will run again in this process. EBADF (not open) is harmless.
            unsafe { libc::close(fd) };
        }
        next = kept + 1;
    }
    // SAFETY: as above, for every descriptor from `next` on.
    unsafe { libc::closefrom(next) };
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
    // rlim_t is u64 on Linux, macOS, NetBSD and OpenBSD but i64 on FreeBSD
    // and DragonFly, where RLIM_INFINITY is i64::MAX.
    #[allow(clippy::unnecessary_cast)]
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

// ----- starting programs: fork + execve in a multi-threaded process -----

use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Where one standard stream of a program started with [`spawn`] comes
/// from.
#[derive(Debug, Clone, Copy)]
pub enum Stdio<'a> {
    /// The parent's descriptor of the same number, shared.
    Inherit,
    /// `/dev/null`, read and write.
    Null,
    /// This descriptor (for example one end of a socketpair). The child gets
    /// a copy; the caller keeps its own and should close it once `spawn`
    /// returns, or the other end never sees end of stream.
    Fd(BorrowedFd<'a>),
}

/// How [`spawn`] starts a program: its standard streams and environment.
#[derive(Debug, Clone)]
pub struct SpawnOptions<'a> {
    stdio: [Stdio<'a>; 3],
    clear_env: bool,
    /// Changes to the environment, in order: `None` removes the variable.
    env: Vec<(OsString, Option<OsString>)>,
    /// A descriptor the program inherits under its own number.
    pass: Option<BorrowedFd<'a>>,
    /// The file to execute, when it is not `argv[0]`.
    program: Option<OsString>,
    /// Descriptors the program inherits under another number: (ours, its).
    maps: Vec<(BorrowedFd<'a>, RawFd)>,
    /// A variable set to the child's own pid, written between `fork` and
    /// `execve`.
    pid_var: Option<OsString>,
}

impl Default for SpawnOptions<'_> {
    fn default() -> Self {
        SpawnOptions {
            stdio: [Stdio::Inherit; 3],
            clear_env: false,
            env: Vec::new(),
            pass: None,
            program: None,
            maps: Vec::new(),
            pid_var: None,
        }
    }
}

impl<'a> SpawnOptions<'a> {
    /// Standard input, output and error inherited, and the parent's
    /// environment.
    pub fn new() -> SpawnOptions<'a> {
        SpawnOptions::default()
    }

    /// Where standard input comes from.
    pub fn stdin(mut self, stdio: Stdio<'a>) -> SpawnOptions<'a> {
        self.stdio[0] = stdio;
        self
    }

    /// Where standard output goes.
    pub fn stdout(mut self, stdio: Stdio<'a>) -> SpawnOptions<'a> {
        self.stdio[1] = stdio;
        self
    }

    /// Where standard error goes.
    pub fn stderr(mut self, stdio: Stdio<'a>) -> SpawnOptions<'a> {
        self.stdio[2] = stdio;
        self
    }

    /// Sets variable `key` to `value` in the child's environment.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> SpawnOptions<'a> {
        self.env.push((key.into(), Some(value.into())));
        self
    }

    /// Removes variable `key` from the child's environment.
    pub fn env_remove(mut self, key: impl Into<OsString>) -> SpawnOptions<'a> {
        self.env.push((key.into(), None));
        self
    }

    /// Lets the program inherit `fd` under the same number (3 or above),
    /// for example one end of a socketpair whose number it is told in an
    /// environment variable. Every other descriptor but 0, 1 and 2 is
    /// closed at `execve`.
    pub fn pass_fd(mut self, fd: BorrowedFd<'a>) -> SpawnOptions<'a> {
        self.pass = Some(fd);
        self
    }

    /// Executes `path` instead of `argv[0]`, which the program still gets
    /// as its `argv[0]`: for example `/proc/self/exe` (this very binary,
    /// even if its file was replaced) under the name the user started it
    /// with, so that `ps` shows that name. A path without a `/` is looked
    /// up in `PATH` as `argv[0]` would be.
    pub fn program(mut self, path: impl Into<OsString>) -> SpawnOptions<'a> {
        self.program = Some(path.into());
        self
    }

    /// Lets the program inherit `fd` as its descriptor number `target` (3
    /// or above), as systemd passes listening sockets (`LISTEN_FDS`: 3, 4,
    /// ...). The parent's `fd` keeps its number and its close-on-exec flag;
    /// only the child's copy at `target` survives `execve`. Several maps
    /// may be given, with distinct targets.
    pub fn map_fd(mut self, fd: BorrowedFd<'a>, target: RawFd) -> SpawnOptions<'a> {
        self.maps.push((fd, target));
        self
    }

    /// Sets variable `key` to the child's own process id, which is only
    /// known after `fork` (systemd's `LISTEN_PID`): the child writes the
    /// digits into room prepared before the fork.
    pub fn env_child_pid(mut self, key: impl Into<OsString>) -> SpawnOptions<'a> {
        self.pid_var = Some(key.into());
        self
    }

    /// Starts the child's environment empty instead of from the parent's;
    /// variables set with [`SpawnOptions::env`] are still added.
    pub fn env_clear(mut self) -> SpawnOptions<'a> {
        self.clear_env = true;
        self.env.clear();
        self
    }

    /// The child's environment: the parent's (read now, under std's
    /// environment lock) unless cleared, with the changes applied.
    fn environment(&self) -> io::Result<Vec<(OsString, OsString)>> {
        let mut vars: Vec<(OsString, OsString)> = if self.clear_env {
            Vec::new()
        } else {
            std::env::vars_os().collect()
        };
        for (key, value) in &self.env {
            let bytes = key.as_bytes();
            if bytes.is_empty() || bytes.contains(&b'=') || bytes.contains(&0) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("invalid environment variable name {key:?}"),
                ));
            }
            vars.retain(|(k, _)| k != key);
            if let Some(value) = value {
                vars.push((key.clone(), value.clone()));
            }
        }
        if let Some(key) = &self.pid_var {
            vars.retain(|(k, _)| k != key);
        }
        Ok(vars)
    }
}

/// The search path when the child's environment has no `PATH`, as
/// `confstr(_CS_PATH)` gives on glibc and the BSDs.
const DEFAULT_PATH: &str = "/usr/bin:/bin";

/// Signals whose handlers the child resets before it unblocks signals: 1 to
/// 64 covers Linux's standard and realtime signals; the BSDs' realtime
/// range ends at 126. Numbers a system does not have fail harmlessly.
#[cfg(any(target_os = "linux", target_os = "android"))]
const LAST_SIGNAL: libc::c_int = 64;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const LAST_SIGNAL: libc::c_int = 126;

/// What the child reports through the pipe before `_exit(127)`: the step
/// that failed (high 32 bits) and its errno (low 32 bits).
const STEP_STDIO: u32 = 1;
const STEP_EXEC: u32 = 2;

/// Everything the child needs between `fork` and `execve`, prepared by the
/// parent so that the child allocates nothing.
struct ChildPlan {
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    /// The descriptor to put at 0, 1 and 2, or -1 to leave that one alone.
    /// Always 3 or above, so no `dup2` overwrites another's source.
    redirect: [RawFd; 3],
    /// The write end of the close-on-exec report pipe (3 or above).
    report: RawFd,
    /// A descriptor (3 or above) to keep open across `execve`, or -1.
    pass: RawFd,
    /// `(source, target)` pairs to `dup2`, `maps_len` of them; every
    /// source is numbered above every target, so no `dup2` overwrites a
    /// source still needed, and `dup2` clears close-on-exec on the target.
    maps: *const (RawFd, RawFd),
    maps_len: usize,
    /// Room for the decimal digits of the child's pid and a NUL, inside the
    /// `KEY=` string the environment array points to; null when unused.
    pid_digits: *mut u8,
    /// `SIG_DFL` with an empty mask.
    default_action: libc::sigaction,
    /// The child's signal mask: nothing blocked.
    empty_mask: libc::sigset_t,
}

/// Starts program `argv[0]` with arguments `argv` (`argv[0]` included) by
/// `fork` and `execve`, and returns its process id. Safe to call in a
/// multi-threaded process.
///
/// A name without a `/` is looked up in the `PATH` of the child's
/// environment before forking (`/usr/bin:/bin` when it has none); a
/// program that is not found is a `NotFound` error and no process is
/// started. If `execve` itself fails (`EACCES`, `ENOEXEC`: there is no
/// fallback to `/bin/sh` as `execvp` has), the child reports its errno
/// through a close-on-exec pipe and exits with 127; `spawn` reaps it and
/// returns that error. So a returned pid always runs the program, and the
/// caller must reap it ([`wait`], [`try_wait`], or a [`pidfd_open`] watch).
///
/// # Fork safety
/// Everything that allocates — the argument and environment strings and
/// their pointer arrays, the `PATH` search, the duplicated descriptors and
/// the pipe — is done before `fork`. The child then calls only
/// async-signal-safe functions (`sigaction`, `dup2`, `fcntl`, `getpid`,
/// `sigprocmask`, `execve`, `write`, `_exit`), so locks other threads held
/// at the fork (malloc's, stdio's) are never touched. All signals are blocked in the
/// parent across the `fork`, so none of the parent's handlers runs in the
/// child; the child resets caught signals and `SIGPIPE` (which Rust
/// programs ignore) to their default action, then unblocks every signal
/// right before `execve`.
///
/// # Descriptors
/// The child inherits only 0, 1 and 2 as chosen in `options`, and the
/// descriptors given to [`SpawnOptions::pass_fd`] and
/// [`SpawnOptions::map_fd`]: every other descriptor of this project is
/// close-on-exec, so the parent's sockets,
/// epoll instance and pipes are closed by `execve`. A descriptor the
/// embedding program made without `O_CLOEXEC` would be inherited.
///
/// `spawn` blocks until the child has called `execve` (or failed to): the
/// time of a `fork` and an `exec`.
///
/// # Errors
/// `InvalidInput` for an empty `argv`, a NUL byte in an argument or
/// variable, or an invalid variable name; `NotFound` for a program not in
/// `PATH`; `EAGAIN`/`ENOMEM` from `fork`; `EMFILE` for the pipe; the errno
/// of a failed `execve` (`NotFound`, `PermissionDenied`, ...) with the
/// program's path in the message.
pub fn spawn<S: AsRef<OsStr>>(argv: &[S], options: &SpawnOptions<'_>) -> io::Result<i32> {
    let Some(program) = argv.first() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "spawn needs at least the program name",
        ));
    };
    let env = options.environment()?;
    let search = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_os_str());
    let program = options.program.as_deref().unwrap_or(program.as_ref());
    let path = resolve_program(program, search)?;

    let path_c = c_string(path.as_os_str().as_bytes().to_vec())?;
    let argv_c = argv
        .iter()
        .map(|a| c_string(a.as_ref().as_bytes().to_vec()))
        .collect::<io::Result<Vec<_>>>()?;
    let env_c = env
        .iter()
        .map(|(k, v)| {
            let mut kv = Vec::with_capacity(k.len() + v.len() + 1);
            kv.extend_from_slice(k.as_bytes());
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            c_string(kv)
        })
        .collect::<io::Result<Vec<_>>>()?;
    let argv_p = null_terminated(&argv_c);
    let mut envp_p = null_terminated(&env_c);
    // `KEY=` and room for the pid's digits and a NUL, filled in the child.
    let mut pid_var: Option<Vec<u8>> = options.pid_var.as_ref().map(|key| {
        let mut kv = key.as_bytes().to_vec();
        kv.push(b'=');
        kv.resize(kv.len() + PID_ROOM, 0);
        kv
    });
    if let Some(key) = &options.pid_var {
        let bytes = key.as_bytes();
        if bytes.is_empty() || bytes.contains(&b'=') || bytes.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid environment variable name {key:?}"),
            ));
        }
    }
    // One pointer for both uses: the environment array reads the string,
    // the child writes the digits after `KEY=`.
    let pid_digits = match (&options.pid_var, pid_var.as_mut()) {
        (Some(key), Some(kv)) => {
            let base = kv.as_mut_ptr();
            envp_p.insert(envp_p.len() - 1, base.cast_const().cast());
            base.wrapping_add(key.len() + 1)
        }
        _ => std::ptr::null_mut(),
    };

    // Every descriptor the child reads from is numbered above every map
    // target, so that no dup2 in the child overwrites a source it still
    // needs.
    let mut targets: Vec<RawFd> = options.maps.iter().map(|&(_, t)| t).collect();
    targets.sort_unstable();
    if targets.first().is_some_and(|&t| t < 3)
        || targets.windows(2).any(|w| w[0] == w[1])
        || options
            .pass
            .is_some_and(|p| targets.contains(&p.as_raw_fd()))
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "descriptor map targets must be distinct, 3 or above, and not a passed descriptor",
        ));
    }
    let floor = targets.last().map_or(3, |&t| t + 1);
    let map_sources = options
        .maps
        .iter()
        .map(|&(fd, _)| dup_at_least(fd, floor))
        .collect::<io::Result<Vec<_>>>()?;
    let maps: Vec<(RawFd, RawFd)> = map_sources
        .iter()
        .zip(&options.maps)
        .map(|(source, &(_, target))| (source.as_raw_fd(), target))
        .collect();

    // Copies numbered 3 and up of every descriptor the child puts at 0..2,
    // so that no dup2 in the child overwrites a source still needed (for
    // example stdin = our fd 1 and stdout = our fd 0).
    let null = if options.stdio.iter().any(|s| matches!(s, Stdio::Null)) {
        Some(
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/null")?,
        )
    } else {
        None
    };
    let mut sources: [Option<OwnedFd>; 3] = [None, None, None];
    for (source, stdio) in sources.iter_mut().zip(&options.stdio) {
        *source = match stdio {
            Stdio::Inherit => None,
            Stdio::Null => null
                .as_ref()
                .map(|f| dup_at_least(f.as_fd(), floor))
                .transpose()?,
            Stdio::Fd(fd) => Some(dup_at_least(*fd, floor)?),
        };
    }
    if options.pass.is_some_and(|fd| fd.as_raw_fd() < 3) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a passed descriptor must be 3 or above: 0..2 are the standard streams",
        ));
    }
    let (report_read, report_write) = report_pipe()?;
    let report_write = if report_write.as_raw_fd() < floor {
        dup_at_least(report_write.as_fd(), floor)?
    } else {
        report_write
    };

    let mut redirect = [-1; 3];
    for (r, s) in redirect.iter_mut().zip(&sources) {
        if let Some(fd) = s {
            *r = fd.as_raw_fd();
        }
    }
    // SAFETY: all-zero is a valid sigaction: SIG_DFL, no flags; the mask is
    // emptied below.
    let mut default_action: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: `sa_mask` is a live sigset_t.
    unsafe { libc::sigemptyset(&mut default_action.sa_mask) };
    // SAFETY: all-zero is valid storage for a sigset_t, emptied below.
    let mut empty_mask: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `empty_mask` is a live sigset_t.
    unsafe { libc::sigemptyset(&mut empty_mask) };
    let plan = ChildPlan {
        path: path_c.as_ptr(),
        argv: argv_p.as_ptr(),
        envp: envp_p.as_ptr(),
        redirect,
        report: report_write.as_raw_fd(),
        pass: options.pass.map_or(-1, |fd| fd.as_raw_fd()),
        maps: maps.as_ptr(),
        maps_len: maps.len(),
        pid_digits,
        default_action,
        empty_mask,
    };

    let pid = fork_and_exec(&plan)?;
    // Our copies: the child has its own. Without closing the report pipe's
    // write end the read below would never see end of file.
    drop(report_write);
    drop(sources);
    drop(map_sources);
    match read_report(&report_read) {
        Ok(None) => Ok(pid),
        Ok(Some((step, errno))) => {
            // The child is about to _exit(127), or has.
            let _ = wait(pid);
            let cause = io::Error::from_raw_os_error(errno);
            let what = if step == STEP_STDIO {
                "cannot set up the standard streams of"
            } else {
                "cannot execute"
            };
            Err(io::Error::new(
                cause.kind(),
                format!("{what} {}: {cause}", path.display()),
            ))
        }
        Err(e) => {
            // Whether the program started is unknown: do not leave it
            // running unreaped.
            let _ = kill(pid, libc::SIGKILL);
            let _ = wait(pid);
            Err(e)
        }
    }
}

/// The program to execute: `program` itself when it has a `/`, else the
/// first executable regular file named `program` in the directories of
/// `search` (an empty entry is the current directory, as POSIX says).
fn resolve_program(program: &OsStr, search: Option<&OsStr>) -> io::Result<PathBuf> {
    if program.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "empty program name",
        ));
    }
    if program.as_bytes().contains(&b'/') {
        return Ok(PathBuf::from(program));
    }
    let search = search.unwrap_or(OsStr::new(DEFAULT_PATH));
    for dir in search.as_bytes().split(|&b| b == b':') {
        let dir = if dir.is_empty() {
            Path::new(".")
        } else {
            Path::new(OsStr::from_bytes(dir))
        };
        let candidate = dir.join(program);
        if is_executable_file(&candidate) {
            return Ok(candidate);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: program not found in PATH", program.to_string_lossy()),
    ))
}

fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn c_string(bytes: Vec<u8>) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a NUL byte in an argument or environment variable",
        )
    })
}

/// The `char *const[]` execve wants: pointers into `strings`, then NULL.
fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Room for a pid's decimal digits (at most 10 for a 32-bit pid) and a NUL.
const PID_ROOM: usize = 12;

/// A close-on-exec copy of `fd` numbered 3 or above.
fn dup_above_stdio(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    dup_at_least(fd, 3)
}

/// A close-on-exec copy of `fd` numbered `min` or above.
fn dup_at_least(fd: BorrowedFd<'_>, min: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC takes ints and returns a new descriptor.
    let new = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) })?;
    // SAFETY: a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// The pipe the child reports a failed `execve` through: close-on-exec on
/// both ends, so a successful `execve` closes it (the parent reads end of
/// file), and the write end numbered 3 or above so the child's `dup2`s
/// onto 0..2 cannot overwrite it (a parent with a closed fd 0 gets pipe
/// ends at 0 and 1).
fn report_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    #[cfg(not(any(target_os = "macos", target_os = "ios")))]
    {
        // SAFETY: `fds` has room for the two descriptors written.
        cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    }
    #[cfg(any(target_os = "macos", target_os = "ios"))]
    {
        // No pipe2: another thread forking between these two calls could
        // leak the ends into its child until that child execs, which only
        // delays our end of file.
        // SAFETY: `fds` has room for the two descriptors written.
        cvt(unsafe { libc::pipe(fds.as_mut_ptr()) })?;
        for fd in fds {
            // SAFETY: F_SETFD takes an int.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
    // SAFETY: both descriptors are fresh and owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let w = if w.as_raw_fd() < 3 {
        dup_above_stdio(w.as_fd())?
    } else {
        w
    };
    Ok((r, w))
}

/// Forks with every signal blocked; the child runs [`exec_child`] and never
/// returns here. Returns the child's pid in the parent.
fn fork_and_exec(plan: &ChildPlan) -> io::Result<i32> {
    // SAFETY: all-zero is valid storage for sigset_t; sigfillset fills it.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `all` is a live sigset_t.
    unsafe { libc::sigfillset(&mut all) };
    // SAFETY: as above, written by pthread_sigmask.
    let mut saved: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live sigsets. Blocking only affects this
    // thread, and only until the mask is restored below.
    let r = unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut saved) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    // SAFETY: the child runs only exec_child, which calls async-signal-safe
    // functions on memory prepared before the fork (see `spawn`), so it is
    // sound even though other threads' locks may be held in the copy.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: this is the freshly forked child, and `plan` was built by
        // `spawn` with pointers into strings and arrays that live in this
        // copy of the parent's memory.
        unsafe { exec_child(plan) }
    }
    let fork_error = (pid == -1).then(io::Error::last_os_error);
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &saved, std::ptr::null_mut()) };
    match fork_error {
        Some(e) => Err(e),
        None => Ok(pid),
    }
}

/// The child's side of [`spawn`]: reset signals, set up 0..2, unblock
/// signals, `execve`; on failure report the errno and `_exit(127)`.
///
/// # Safety
/// Call only in a child just forked by [`fork_and_exec`], with every signal
/// blocked, and with `plan`'s pointers valid. Nothing here allocates,
/// panics or takes a lock: only async-signal-safe calls.
unsafe fn exec_child(plan: &ChildPlan) -> ! {
    for sig in 1..=LAST_SIGNAL {
        // SAFETY: all-zero is valid storage for the kernel to fill.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: a null new action only reads the current one.
        let caught = unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) } == 0
            && old.sa_sigaction != libc::SIG_DFL
            && old.sa_sigaction != libc::SIG_IGN;
        if caught || sig == libc::SIGPIPE {
            // SAFETY: `default_action` is a valid SIG_DFL sigaction. The
            // parent's handlers must not run in this process: they poke the
            // parent's reactor. SIGPIPE goes back to its default because
            // Rust ignores it and an ignored signal survives execve.
            unsafe { libc::sigaction(sig, &plan.default_action, std::ptr::null_mut()) };
        }
    }
    for (target, &source) in (0..).zip(plan.redirect.iter()) {
        if source < 0 {
            continue;
        }
        // SAFETY: dup2 takes ints. It clears close-on-exec on the target;
        // `source` (3 or above) stays close-on-exec and vanishes at execve.
        while unsafe { libc::dup2(source, target) } == -1 {
            let errno = last_errno();
            if errno != libc::EINTR {
                // SAFETY: as this function's contract.
                unsafe { report_and_exit(plan.report, STEP_STDIO, errno) }
            }
        }
    }
    for i in 0..plan.maps_len {
        // SAFETY: `maps` points to `maps_len` pairs alive in this copy of
        // the parent's memory.
        let (source, target) = unsafe { *plan.maps.add(i) };
        // SAFETY: dup2 takes ints; `source` is above every target, so no
        // earlier dup2 replaced it, and the target loses close-on-exec.
        while unsafe { libc::dup2(source, target) } == -1 {
            let errno = last_errno();
            if errno != libc::EINTR {
                // SAFETY: as this function's contract.
                unsafe { report_and_exit(plan.report, STEP_STDIO, errno) }
            }
        }
    }
    if !plan.pid_digits.is_null() {
        // SAFETY: getpid cannot fail.
        let pid = unsafe { libc::getpid() };
        let mut digits = [0u8; PID_ROOM];
        let (mut n, mut len) = (pid.unsigned_abs(), 0);
        loop {
            digits[len] = b'0' + (n % 10) as u8;
            len += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for i in 0..len {
            // SAFETY: `pid_digits` has PID_ROOM writable bytes (zeroed, so
            // the string stays NUL-terminated), and `len` < PID_ROOM.
            unsafe { *plan.pid_digits.add(i) = digits[len - 1 - i] };
        }
    }
    if plan.pass >= 0 {
        // SAFETY: F_SETFD takes an int. Clearing close-on-exec on this
        // child's copy of the descriptor only; the parent's keeps its flag.
        if unsafe { libc::fcntl(plan.pass, libc::F_SETFD, 0) } == -1 {
            // SAFETY: as this function's contract.
            unsafe { report_and_exit(plan.report, STEP_STDIO, last_errno()) }
        }
    }
    // SAFETY: `empty_mask` is a valid sigset_t; in the single thread of the
    // child sigprocmask is the process mask.
    unsafe { libc::sigprocmask(libc::SIG_SETMASK, &plan.empty_mask, std::ptr::null_mut()) };
    // SAFETY: the pointers are NUL-terminated strings and NULL-terminated
    // arrays of them, alive in this copy of the parent's memory.
    unsafe { libc::execve(plan.path, plan.argv, plan.envp) };
    let errno = last_errno();
    // SAFETY: as this function's contract.
    unsafe { report_and_exit(plan.report, STEP_EXEC, errno) }
}

/// Writes `step` and `errno` to the report pipe and exits with 127.
///
/// # Safety
/// As [`exec_child`].
unsafe fn report_and_exit(fd: RawFd, step: u32, errno: i32) -> ! {
    let word = (u64::from(step) << 32) | u64::from(errno as u32);
    let bytes = word.to_ne_bytes();
    // Eight bytes are less than PIPE_BUF: one write is atomic.
    loop {
        // SAFETY: `bytes` is valid for its length.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n != -1 || last_errno() != libc::EINTR {
            break;
        }
    }
    // SAFETY: _exit ends the process without running the parent's exit
    // handlers or flushing its stdio buffers in this copy.
    unsafe { libc::_exit(127) }
}

/// The calling thread's errno; reading it neither allocates nor locks.
fn last_errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Reads the child's report: `None` at end of file (it called `execve`
/// successfully), or the failed step and its errno.
fn read_report(fd: &OwnedFd) -> io::Result<Option<(u32, i32)>> {
    let mut buf = [0u8; 8];
    let mut got = 0;
    while got < buf.len() {
        let rest = &mut buf[got..];
        let n = cvt_r(|| {
            // SAFETY: `rest` is valid for `rest.len()` writable bytes.
            unsafe { libc::read(fd.as_raw_fd(), rest.as_mut_ptr().cast(), rest.len()) }
        })?;
        if n == 0 {
            break;
        }
        got += n as usize;
    }
    match got {
        0 => Ok(None),
        8 => {
            let word = u64::from_ne_bytes(buf);
            Ok(Some(((word >> 32) as u32, word as u32 as i32)))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a spawned child sent a truncated error report",
        )),
    }
}

/// Whether process `pid` exists, running or a zombie not yet reaped by its
/// parent (`kill(pid, 0)`: `ESRCH` means it does not; `EPERM` that it
/// exists but belongs to someone else).
pub fn process_exists(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill takes no pointers; signal 0 only checks the target.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// `SIGKILL`, for [`kill`]: ends a process at once; it cannot be caught.
pub const SIGKILL: i32 = libc::SIGKILL;

/// `SIGSTOP`, for [`kill`]: stops a process until `SIGCONT` (or its
/// death); it cannot be caught. A hung process, for tests.
pub const SIGSTOP: i32 = libc::SIGSTOP;

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

// ----- worker processes: signals belong to the master -----

/// The signals a terminal (Ctrl-C, Ctrl-\, hang-up) or a kill of a whole
/// process group (`timeout`, systemd's `KillMode=control-group`) sends to
/// every process of the group at once.
pub const GROUP_SIGNALS: [i32; 4] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT];

/// Ignores every signal of [`GROUP_SIGNALS`] in this process, so that only
/// its parent decides when it stops. For a freshly forked helper process
/// (a fork server, a worker); the ignored dispositions survive `fork` and
/// `execve`.
///
/// # Errors
/// `EINVAL` from `sigaction`, which these numbers cannot cause.
pub fn ignore_group_signals() -> io::Result<()> {
    // SAFETY: all-zero is valid storage for a sigaction; the fields that
    // matter are set below.
    let mut ignore: libc::sigaction = unsafe { std::mem::zeroed() };
    ignore.sa_sigaction = libc::SIG_IGN;
    // SAFETY: `sa_mask` is a live sigset_t.
    unsafe { libc::sigemptyset(&mut ignore.sa_mask) };
    for sig in GROUP_SIGNALS {
        // SAFETY: `ignore` is a valid SIG_IGN action; the old one is not
        // wanted.
        cvt(unsafe { libc::sigaction(sig, &ignore, std::ptr::null_mut()) })?;
    }
    Ok(())
}

/// The parent process's id.
pub fn getppid() -> i32 {
    // SAFETY: getppid cannot fail.
    unsafe { libc::getppid() }
}

/// Arranges for this process to be killed (`SIGKILL`) when its parent dies,
/// and returns whether `parent` is still its parent — `false` when it
/// died before the arrangement was made, and the caller should exit.
///
/// On Linux this is `PR_SET_PDEATHSIG`, which fires when the parent
/// *thread* that forked this process ends, so fork from a thread that
/// lives as long as the child should. On FreeBSD it is procctl(2)
/// `PROC_PDEATHSIG_CTL`, the same contract ("delivered when the parent
/// process exits", 11.2 and later). On the other kqueue systems (macOS,
/// NetBSD, OpenBSD, DragonFly) a thread of this process waits on a kqueue
/// of its own for kqueue(2) `EVFILT_PROC`/`NOTE_EXIT` of `parent` and then
/// kills this process; call it from a process that may start a thread
/// (after a fork from a single-threaded parent, as the fork server does).
///
/// # Errors
/// `EINVAL` from `prctl`/`procctl`, which `SIGKILL` cannot cause; on the
/// other kqueue systems `ESRCH` is `Ok(false)` (the parent is gone) and
/// the errors of `kqueue(2)` or of starting a thread are returned.
pub fn die_with_parent(parent: i32) -> io::Result<bool> {
    #[cfg(target_os = "freebsd")]
    {
        let mut signal: libc::c_int = libc::SIGKILL;
        // SAFETY: PROC_PDEATHSIG_CTL reads one int (the signal) through
        // `data`, which points at a live c_int; P_PID 0 is this process.
        cvt(unsafe {
            libc::procctl(
                libc::P_PID,
                0,
                libc::PROC_PDEATHSIG_CTL,
                (&mut signal as *mut libc::c_int).cast(),
            )
        })?;
    }
    #[cfg(any(
        target_os = "macos",
        target_os = "ios",
        target_os = "netbsd",
        target_os = "openbsd",
        target_os = "dragonfly"
    ))]
    {
        // Registered before the thread starts, so an exit in between is
        // still reported; a parent already gone fails with ESRCH.
        let queue = match exit_watch(parent) {
            Ok(queue) => queue,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(false),
            Err(e) => return Err(e),
        };
        std::thread::Builder::new()
            .name("parent-death".into())
            .spawn(move || {
                let mut ready = [PollFd::readable(queue.as_fd())];
                // Blocks until the parent's NOTE_EXIT makes the queue
                // readable; an error is treated the same way, since this
                // thread has no one to tell.
                let _ = poll(&mut ready, None);
                // SAFETY: kill of this very process, with a valid signal.
                unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            })?;
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // SAFETY: PR_SET_PDEATHSIG takes a signal number in the second
        // argument; the others are unused and passed as 0.
        cvt(unsafe {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        })?;
    }
    Ok(getppid() == parent)
}

/// Takes ownership of descriptor `fd`, inherited from the parent that
/// started this program (see [`SpawnOptions::pass_fd`]), and marks it
/// close-on-exec again so it goes no further.
///
/// Call it once per inherited descriptor, early in `main`, before anything
/// else could have taken that number.
///
/// # Errors
/// `EBADF` when no such descriptor is open; `InvalidInput` for 0..2.
pub fn take_inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 3 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "descriptors 0..2 are the standard streams",
        ));
    }
    // SAFETY: F_SETFD takes an int; on a closed number it fails with EBADF
    // and nothing is changed.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) })?;
    // SAFETY: the descriptor is open (checked above) and was handed to this
    // process by its parent for the caller, who is its only owner: the
    // contract above has it taken once, before any other code could.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

// ----- supervision: reaping orphans, process names -----

/// Makes this process a "child subreaper" (Linux `PR_SET_CHILD_SUBREAPER`):
/// a descendant orphaned by the death of its parent is re-parented to this
/// process instead of to PID 1, so this process can reap it. Returns
/// `false` where the system has no such thing (then orphans go to PID 1,
/// or to the nearest subreaper above).
///
/// # Errors
/// `EINVAL` from `prctl`, which a supported kernel does not return.
pub fn set_child_subreaper() -> io::Result<bool> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // SAFETY: PR_SET_CHILD_SUBREAPER takes a flag in the second
        // argument; the others are unused and passed as 0.
        cvt(unsafe {
            libc::prctl(
                libc::PR_SET_CHILD_SUBREAPER,
                1 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        })?;
        Ok(true)
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    Ok(false)
}

/// Sets the name this process shows in `ps -o comm`, `top` and
/// `/proc/PID/comm` (Linux `PR_SET_NAME`; the kernel keeps at most 15
/// bytes, so a longer name is cut, at a character boundary). A process
/// started from `/proc/self/exe` would otherwise be called `exe`. Elsewhere
/// nothing is changed.
///
/// # Errors
/// `InvalidInput` for a name with a NUL byte.
pub fn set_process_name(name: &str) -> io::Result<()> {
    let mut end = name.len().min(15);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    let name = c_string(name.as_bytes()[..end].to_vec())?;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16
        // bytes from the second argument, which `name` is and outlives the
        // call; the other arguments are unused.
        cvt(unsafe {
            libc::prctl(
                libc::PR_SET_NAME,
                name.as_ptr() as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        })?;
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    drop(name);
    Ok(())
}
