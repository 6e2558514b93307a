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

#[cfg(any(target_os = "linux", target_os = "android"))]
mod epoll;
#[cfg(any(target_os = "linux", target_os = "android"))]
pub use epoll::{Event, Events, Selector, Waker};

/// Keeps items to the kqueue systems (`on_kqueue! { ... }`), or with
/// `not` to every other system: the one place their list is written.
macro_rules! on_kqueue {
    (not $($item:item)*) => { on_kqueue!(@list [not] $($item)*); };
    // The list, as one parenthesised token tree for the arms below (a
    // wrapper such as `all(any(..))` would trip clippy's minimal-cfg lint).
    (@list [$($not:ident)?] $($item:item)*) => {
        on_kqueue!(@emit [$($not)?] (any(
            target_os = "macos",
            target_os = "ios",
            target_os = "freebsd",
            target_os = "netbsd",
            target_os = "openbsd",
            target_os = "dragonfly"
        )) $($item)*);
    };
    (@emit [not] $list:tt $($item:item)*) => {$( #[cfg(not $list)] $item )*};
    (@emit [] ($any:ident $systems:tt) $($item:item)*) => {$( #[cfg($any $systems)] $item )*};
    ($($item:item)*) => { on_kqueue!(@list [] $($item)*); };
}

on_kqueue! {
    mod kqueue;
    pub use kqueue::{Event, Events, Selector, Waker};
}

on_kqueue! { not
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    compile_error!("packet-sys supports Linux/Android (epoll) and the BSDs/macOS (kqueue) only");
}

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

/// Socket option levels and names for `set_int_option`/`int_option`.
pub mod sockopt {
    pub use libc::{
        IPPROTO_TCP, SOL_SOCKET, SO_KEEPALIVE, SO_RCVBUF, SO_REUSEADDR, SO_SNDBUF, TCP_NODELAY,
    };
}
pub mod signal;
pub use std::net::Shutdown;

mod common;
// Only the kqueue systems have minimum releases: Linux links none of it,
// and builds it for its tests only.
on_kqueue! { mod min_version; }
#[cfg(test)]
on_kqueue! { not mod min_version; }
// The kqueue backend's token packing; its tests run everywhere.
on_kqueue! { mod token; }
#[cfg(test)]
on_kqueue! { not mod token; }
use common::{c_path, cvt, cvt_r};
pub use common::{check_pollable, FileEvent, Interest, PathWatch, Trigger};
