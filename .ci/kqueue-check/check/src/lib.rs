//! packet-sys's kqueue backend, compiled on Linux against FreeBSD's
//! definitions (see ../README.md). The module layout mirrors
//! `sys/src/lib.rs` for the parts the backend uses; `kqueue::exit_watch` is
//! what `process::exit_watch` calls off Linux.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
// Only the type-check matters: nothing here is called.
#![allow(dead_code)]

#[path = "../../../../sys/src/common.rs"]
mod common;
use common::{c_path, cvt, cvt_r};
pub use common::{FileEvent, Interest, PathWatch, Trigger};

#[path = "../../../../sys/src/kqueue.rs"]
mod kqueue;
pub use kqueue::{Event, Events, Selector, Waker};

#[path = "../../../../sys/src/vnode.rs"]
pub mod filewatch;

/// What `sys/src/signal.rs` gives the backend.
pub mod signal {
    pub(crate) type Target = std::os::fd::RawFd;
}
