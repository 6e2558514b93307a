//! File change notification on the BSDs and macOS: `EVFILT_VNODE`.
//!
//! The kqueue counterpart of `inotify.rs`, with the same two functions:
//! [`watch_path`] opens the file and registers `EVFILT_VNODE` on a kqueue of
//! its own, so a watch is one descriptor the reactor can watch for
//! readability, as on Linux; [`read_events`] turns the notes that arrived
//! into [`FileEvent`]s. No BSD or macOS machine runs it here: like
//! `kqueue.rs`, this file is reviewed against its Linux counterpart and
//! only type-checked and linted in CI (`.ci/cross-check`). Change both
//! together.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use crate::kqueue::{single_watch, take_notes, Filter};
use crate::{c_path, cvt_r, FileEvent, PathWatch};

/// `O_EVTONLY` on macOS: the descriptor exists only for notifications and
/// does not keep the volume from being unmounted. `O_NONBLOCK` everywhere:
/// open(2) of a FIFO for reading blocks until a writer opens it, which
/// would stall the reactor; with it the open returns at once (and it
/// changes nothing for other files, whose descriptor is never read).
#[cfg(any(target_os = "macos", target_os = "ios"))]
const OPEN_FLAGS: libc::c_int = libc::O_EVTONLY | libc::O_CLOEXEC | libc::O_NONBLOCK;
#[cfg(not(any(target_os = "macos", target_os = "ios")))]
const OPEN_FLAGS: libc::c_int = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NONBLOCK;

/// What `EVFILT_VNODE` is asked to report (kqueue(2) of FreeBSD, NetBSD,
/// OpenBSD and macOS list the same notes).
///
/// Where it differs from inotify: the watch is on the open descriptor, so
/// it needs a file this user may open (read permission, or `O_EVTONLY` on
/// macOS) and it follows the file through renames, as an inotify watch on
/// the inode does. `NOTE_DELETE` comes when the file is unlinked although
/// our descriptor keeps it alive, where inotify waits for the inode to go.
/// `EV_CLEAR` folds every change since the last read into one set of
/// notes, so [`read_events`] can only report them in a fixed order, not in
/// the order they happened. Linux tests of the same paths: tests/filewatch.rs
/// `modified_moved_deleted_then_unbound` (one change per turn, so each
/// batch holds one) and `a_missing_file_is_an_error_and_unwatch_ends_the_watch`.
const NOTES: u32 = libc::NOTE_WRITE
    | libc::NOTE_EXTEND
    | libc::NOTE_ATTRIB
    | libc::NOTE_LINK
    | libc::NOTE_RENAME
    | libc::NOTE_DELETE
    | libc::NOTE_REVOKE;

/// A watch on `path`: `events` is readable when something happened to the
/// file, `file` is the file's descriptor, which the watch lives on.
///
/// # Errors
/// `ENOENT` for a missing path, `EACCES`, `EMFILE`.
pub fn watch_path(path: &Path) -> io::Result<PathWatch> {
    let path = c_path(path)?;
    // SAFETY: `path` is a NUL-terminated string alive for the call; open
    // with these flags takes no mode argument.
    let fd = cvt_r(|| unsafe { libc::open(path.as_ptr(), OPEN_FLAGS) })?;
    // SAFETY: a fresh descriptor owned by nobody else.
    let file = unsafe { OwnedFd::from_raw_fd(fd) };
    let events = single_watch(file.as_raw_fd(), libc::EVFILT_VNODE as Filter, NOTES)?;
    Ok(PathWatch {
        events,
        file: Some(file),
    })
}

/// Takes pending notes from a [`watch_path`] descriptor and appends them to
/// `out` as events, in the order inotify would report them. `Ok(0)` when
/// none are pending. A deleted or revoked file ends the watch: `Ended`
/// follows `Deleted`, as `IN_IGNORED` follows `IN_DELETE_SELF` on Linux.
///
/// # Errors
/// `EBADF` when `fd` is not such a descriptor.
pub fn read_events(fd: BorrowedFd<'_>, out: &mut Vec<FileEvent>) -> io::Result<usize> {
    let (mut notes, file) = take_notes(fd)?;
    // `NOTE_DELETE` comes with every unlink of the file's name (kqueue(2):
    // "unlink() was called on the file referenced by the descriptor"),
    // even while other hard links keep it in the tree. inotify reports
    // that as `IN_ATTRIB` (the link count changed) and deletes only with
    // the last link; so does this, from the link count of the watched
    // file (the event's ident, still open in `PathWatch::file`).
    if notes & libc::NOTE_DELETE != 0 && file.is_some_and(|f| still_linked(f).unwrap_or(false)) {
        notes = (notes & !libc::NOTE_DELETE) | libc::NOTE_LINK;
    }
    let before = out.len();
    let bits = [
        (libc::NOTE_WRITE | libc::NOTE_EXTEND, FileEvent::Modified),
        (libc::NOTE_ATTRIB | libc::NOTE_LINK, FileEvent::Attributes),
        (libc::NOTE_RENAME, FileEvent::Moved),
        (libc::NOTE_DELETE, FileEvent::Deleted),
        (libc::NOTE_DELETE | libc::NOTE_REVOKE, FileEvent::Ended),
    ];
    for (bit, event) in bits {
        if notes & bit != 0 {
            out.push(event);
        }
    }
    Ok(out.len() - before)
}

/// Whether the open file `fd` still has a name (`fstat(2)`'s `st_nlink`,
/// whose type differs between the BSDs).
fn still_linked(fd: libc::c_int) -> io::Result<bool> {
    // SAFETY: all-zero is a valid stat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a live, writable stat; a closed `fd` fails with EBADF.
    crate::cvt(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st.st_nlink > 0)
}
