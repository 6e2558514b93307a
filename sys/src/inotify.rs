//! File change notification on Linux: `inotify(7)`.
//!
//! One inotify instance per watched path, so a watch is one descriptor the
//! reactor can watch for readability; events are decoded here into
//! [`FileEvent`]s. `vnode.rs` is the BSD and macOS counterpart, with the
//! same functions over `EVFILT_VNODE`; change both together.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use crate::{c_path, cvt, FileEvent, PathWatch, Socket};

/// A watch on `path`: an inotify descriptor, readable when something
/// happened (inotify needs no descriptor of the file itself).
///
/// # Errors
/// `ENOENT` for a missing path, `ENOSPC` when the per-user watch limit is
/// reached.
pub fn watch_path(path: &Path) -> io::Result<PathWatch> {
    let path = c_path(path)?;
    // SAFETY: inotify_init1 takes flags only.
    let fd = cvt(unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) })?;
    // SAFETY: a fresh descriptor owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mask = libc::IN_MODIFY | libc::IN_ATTRIB | libc::IN_MOVE_SELF | libc::IN_DELETE_SELF;
    // SAFETY: `path` is a NUL-terminated string alive for the call.
    cvt(unsafe {
        libc::inotify_add_watch(std::os::fd::AsRawFd::as_raw_fd(&fd), path.as_ptr(), mask)
    })?;
    Ok(PathWatch {
        events: fd,
        file: None,
    })
}

/// Reads and decodes pending events from a [`watch_path`] descriptor into
/// `out` (in order). `Ok(0)` when none are pending.
///
/// # Errors
/// `WouldBlock` is mapped to `Ok(0)`; other read errors pass through.
pub fn read_events(fd: BorrowedFd<'_>, out: &mut Vec<FileEvent>) -> io::Result<usize> {
    // Room for many events: each is 16 bytes (no name for a file watch).
    let mut buf = [0u8; 4096];
    let n = match Socket::view(fd.as_fd()).read(&mut buf) {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
        Err(e) => return Err(e),
    };
    let before = out.len();
    let mut at = 0;
    // struct inotify_event { int wd; uint32_t mask, cookie, len; char name[]; }
    while at + 16 <= n {
        let field = |i: usize| {
            u32::from_ne_bytes([
                buf[at + i],
                buf[at + i + 1],
                buf[at + i + 2],
                buf[at + i + 3],
            ])
        };
        let (mask, len) = (field(4), field(12) as usize);
        let bits = [
            (libc::IN_MODIFY, FileEvent::Modified),
            (libc::IN_ATTRIB, FileEvent::Attributes),
            (libc::IN_MOVE_SELF, FileEvent::Moved),
            (libc::IN_DELETE_SELF, FileEvent::Deleted),
            (libc::IN_IGNORED | libc::IN_UNMOUNT, FileEvent::Ended),
        ];
        for (bit, event) in bits {
            if mask & bit != 0 {
                out.push(event);
            }
        }
        at += 16 + len;
    }
    Ok(out.len() - before)
}
