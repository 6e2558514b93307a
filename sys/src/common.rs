//! What every backend shares: the registration types, the file-watch
//! types, and the errno helpers.

use std::io;

bitflags::bitflags! {
    /// Which readiness a registration asks for.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Interest: u8 {
        /// Readable, peer closed, or an error.
        const READABLE = 1;
        /// Writable, or an error.
        const WRITABLE = 2;
    }
}

/// How a registration reports readiness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Once per change (`EPOLLET`, `EV_CLEAR`): the owner reads or writes
    /// until `WouldBlock` before waiting again. What the reactor's
    /// connections use.
    Edge,
    /// For as long as the condition holds: for fds whose owner reads them
    /// itself, at its own pace.
    Level,
}

/// Integer results of libc calls, where `-1` means "look at errno".
pub(crate) trait IsMinusOne: Copy {
    fn is_minus_one(self) -> bool;
}

impl IsMinusOne for i32 {
    fn is_minus_one(self) -> bool {
        self == -1
    }
}

impl IsMinusOne for isize {
    fn is_minus_one(self) -> bool {
        self == -1
    }
}

/// `path` as the NUL-terminated string a syscall takes.
///
/// # Errors
/// `InvalidInput` when the path contains a NUL byte.
pub(crate) fn c_path(path: &std::path::Path) -> io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// Turns a libc `-1` into the thread's `errno` as an `io::Error`.
#[inline]
pub(crate) fn cvt<T: IsMinusOne>(r: T) -> io::Result<T> {
    if r.is_minus_one() {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The calling thread's `errno` slot, for code that must restore it (a
/// signal handler). Each libc names its accessor differently; this is the
/// one place that knows which.
pub(crate) fn errno_location() -> *mut libc::c_int {
    #[cfg(any(target_os = "android", target_os = "netbsd", target_os = "openbsd"))]
    use libc::__errno as location;
    #[cfg(target_os = "linux")]
    use libc::__errno_location as location;
    #[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd"))]
    use libc::__error as location;
    // DragonFly's <errno.h> makes errno a C thread-local; its libc also
    // exports glibc's accessor for code that cannot reach one.
    #[cfg(target_os = "dragonfly")]
    use libc::__errno_location as location;
    // SAFETY: returns the calling thread's errno slot; no preconditions.
    unsafe { location() }
}

/// Like [`cvt`], but retries the call while it fails with `EINTR`, as std's
/// unix `cvt_r` does: a signal arriving mid-call is not an error for anyone
/// above this layer.
#[inline]
pub(crate) fn cvt_r<T: IsMinusOne>(mut f: impl FnMut() -> T) -> io::Result<T> {
    loop {
        match cvt(f()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// What happened to a watched file ([`crate::filewatch::read_events`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileEvent {
    /// Its contents were written.
    Modified,
    /// Its metadata changed (permissions, times, link count).
    Attributes,
    /// It was renamed or moved.
    Moved,
    /// It was deleted.
    Deleted,
    /// The watch ended (after `Deleted`, or when the file system went away).
    Ended,
}

/// A watch on one path ([`crate::filewatch::watch_path`]).
#[derive(Debug)]
pub struct PathWatch {
    /// Readable while events are pending; give it to the selector and take
    /// them with [`crate::filewatch::read_events`].
    pub events: std::os::fd::OwnedFd,
    /// The watched file's own descriptor where the mechanism watches
    /// through one (kqueue): keep it open as long as the watch.
    pub file: Option<std::os::fd::OwnedFd>,
}

/// Whether `fd` can be watched for readiness: not a regular file or a
/// directory, which are always "ready". epoll refuses them with `EPERM`
/// (epoll_ctl(2)); kqueue(2) accepts them, and its read filter then fires on
/// every turn for a regular file (its `data` is the bytes to end of file).
/// Callers that take descriptors from users check first, so that every
/// backend refuses them alike, with epoll's `EPERM`.
///
/// # Errors
/// `EPERM` for a regular file or directory; `EBADF` from `fstat(2)`.
pub fn check_pollable(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: all-zero is a valid stat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is a live descriptor and `st` a live, writable stat.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG | libc::S_IFDIR => Err(io::Error::from_raw_os_error(libc::EPERM)),
        _ => Ok(()),
    }
}
