//! The OS layer of `packet`: readiness selectors, non-blocking sockets and
//! the few process primitives the reactor needs, as thin wrappers over
//! `libc`.
//!
//! This crate owns every `unsafe` block of the project; the `packet` crate
//! above it is `#![forbid(unsafe_code)]`. Each block carries a `// SAFETY:`
//! line saying why the call is sound. Nothing here knows about handlers,
//! buffers or timers: it turns syscalls into `io::Result`s and owned file
//! descriptors, and it must never allocate on a per-event path or hide a
//! blocking call.
//!
//! # The backend contract
//!
//! Exactly one readiness backend is compiled, picked below by `cfg`, in the
//! manner of mio's `sys` module. Every backend file defines the same names:
//!
//! | name | what it is |
//! |---|---|
//! | `Selector` | the kernel queue: `new`, `register`, `reregister`, `deregister`, `wait` |
//! | `Events` | a reusable batch of readiness events filled by `Selector::wait` |
//! | `Event` | one readiness event: `token`, `is_readable`, `is_writable`, `is_read_closed`, `is_error` |
//! | `Waker` | wakes a `Selector::wait` from another thread |
//!
//! Registration is edge-triggered on every backend (`EPOLLET`, `EV_CLEAR`):
//! the caller reads and writes until `WouldBlock` (or a short read) and then
//! waits for the next edge.
//!
//! | OS | selector | waker |
//! |---|---|---|
//! | Linux, Android | `epoll` (`epoll.rs`) | `eventfd` |
//! | macOS, iOS, FreeBSD, NetBSD, OpenBSD, DragonFly | `kqueue` (`kqueue.rs`) | `EVFILT_USER` (a pipe on OpenBSD) |
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::io;

#[cfg(any(target_os = "linux", target_os = "android"))]
mod epoll;
#[cfg(any(target_os = "linux", target_os = "android"))]
pub use epoll::{Event, Events, Selector, Waker};

#[cfg(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
))]
mod kqueue;
#[cfg(any(
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
))]
pub use kqueue::{Event, Events, Selector, Waker};

#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "openbsd",
    target_os = "dragonfly"
)))]
compile_error!("packet-sys supports Linux/Android (epoll) and the BSDs/macOS (kqueue) only");

mod socket;
pub use socket::{Addr, Domain, Socket, SocketRef, MAX_FDS_PER_MESSAGE};

/// File change notification: `watch_path` and `read_events` (inotify on
/// Linux, `EVFILT_VNODE` on the BSDs and macOS).
#[cfg(any(target_os = "linux", target_os = "android"))]
#[path = "inotify.rs"]
pub mod filewatch;
/// File change notification: `watch_path` and `read_events` (inotify on
/// Linux, `EVFILT_VNODE` on the BSDs and macOS).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
#[path = "vnode.rs"]
pub mod filewatch;
pub mod process;

/// What happened to a watched file ([`filewatch::read_events`]).
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

/// A watch on one path ([`filewatch::watch_path`]).
#[derive(Debug)]
pub struct PathWatch {
    /// Readable while events are pending; give it to the selector and take
    /// them with [`filewatch::read_events`].
    pub events: std::os::fd::OwnedFd,
    /// The watched file's own descriptor where the mechanism watches
    /// through one (kqueue): keep it open as long as the watch.
    pub file: Option<std::os::fd::OwnedFd>,
}

/// Socket option levels and names for `set_int_option`/`int_option`.
pub mod sockopt {
    pub use libc::{
        IPPROTO_TCP, SOL_SOCKET, SO_KEEPALIVE, SO_RCVBUF, SO_REUSEADDR, SO_SNDBUF, TCP_NODELAY,
    };
}
pub mod signal;
pub use std::net::Shutdown;

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
trait IsMinusOne: Copy {
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
fn c_path(path: &std::path::Path) -> io::Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// Turns a libc `-1` into the thread's `errno` as an `io::Error`.
#[inline]
fn cvt<T: IsMinusOne>(r: T) -> io::Result<T> {
    if r.is_minus_one() {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Like [`cvt`], but retries the call while it fails with `EINTR`, as std's
/// unix `cvt_r` does: a signal arriving mid-call is not an error for anyone
/// above this layer.
#[inline]
fn cvt_r<T: IsMinusOne>(mut f: impl FnMut() -> T) -> io::Result<T> {
    loop {
        match cvt(f()) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}
