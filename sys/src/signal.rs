//! Delivering signals into a reactor instead of running code in a signal
//! handler.
//!
//! The handler installed here is async-signal-safe: it sets a pending flag
//! for the signal and pokes the waker of the reactor that asked for it (a
//! `write` to an eventfd, or a `kevent` trigger), nothing else. The reactor
//! then sees a wake-up, takes the pending flags and runs its callbacks on
//! its own thread, like any other event. One reactor per
//! signal: a later [`watch`] of the same signal moves it to the new waker.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Mutex;

use crate::{common::errno_location, cvt, Waker};

/// Signals 1..=64 cover every realtime and standard signal on Linux and
/// the BSDs.
const SLOTS: usize = 65;

static TARGET: [AtomicI32; SLOTS] = [const { AtomicI32::new(-1) }; SLOTS];
static PENDING: [AtomicBool; SLOTS] = [const { AtomicBool::new(false) }; SLOTS];
/// The disposition each watched signal had before, restored by [`unwatch`].
static PREVIOUS: Mutex<Vec<(i32, libc::sigaction)>> = Mutex::new(Vec::new());

extern "C" fn on_signal(sig: libc::c_int) {
    // Only async-signal-safe work here: atomics and one syscall. errno is
    // saved because the interrupted code may be about to read it.
    let errno = errno_location();
    // SAFETY: errno_location points at this thread's errno.
    let saved = unsafe { *errno };
    if let Some(slot) = usize::try_from(sig).ok().filter(|&s| s < SLOTS) {
        PENDING[slot].store(true, Ordering::Release);
        let target = TARGET[slot].load(Ordering::Acquire);
        if target >= 0 {
            Waker::wake_raw(target);
        }
    }
    // SAFETY: as above.
    unsafe { *errno = saved };
}

fn slot(sig: i32) -> io::Result<usize> {
    match usize::try_from(sig) {
        Ok(s) if s > 0 && s < SLOTS && sig != libc::SIGKILL && sig != libc::SIGSTOP => Ok(s),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("signal {sig} cannot be watched"),
        )),
    }
}

/// Routes signal `sig` to `waker`: from now on the signal sets its pending
/// flag and wakes that waker instead of its previous action.
///
/// # Errors
/// `InvalidInput` for `SIGKILL`, `SIGSTOP` or numbers out of range.
pub fn watch(sig: i32, waker: &Waker) -> io::Result<()> {
    let s = slot(sig)?;
    TARGET[s].store(waker.raw_target(), Ordering::Release);
    // SAFETY: all-zero is a valid sigaction; the fields set below make it a
    // plain handler with an empty mask.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
    action.sa_flags = libc::SA_RESTART;
    // SAFETY: `action.sa_mask` is a live sigset_t.
    unsafe { libc::sigemptyset(&mut action.sa_mask) };
    // SAFETY: all-zero is a valid sigaction for the kernel to fill in.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live sigactions; the handler above is
    // async-signal-safe.
    cvt(unsafe { libc::sigaction(sig, &action, &mut old) })?;
    let mut previous = PREVIOUS.lock().unwrap_or_else(|p| p.into_inner());
    if !previous.iter().any(|(s, _)| *s == sig) {
        previous.push((sig, old));
    }
    Ok(())
}

/// Gives signal `sig` back its previous action, if it is still routed to
/// `waker`.
pub fn unwatch(sig: i32, waker: &Waker) {
    let Ok(s) = slot(sig) else { return };
    if TARGET[s]
        .compare_exchange(waker.raw_target(), -1, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return;
    }
    let mut previous = PREVIOUS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(i) = previous.iter().position(|(s, _)| *s == sig) {
        let (_, old) = previous.remove(i);
        // SAFETY: restores a disposition the kernel gave us earlier.
        unsafe { libc::sigaction(sig, &old, std::ptr::null_mut()) };
    }
}

/// Whether `sig` arrived since the last call, clearing the flag.
pub fn take_pending(sig: i32) -> bool {
    slot(sig).is_ok_and(|s| PENDING[s].swap(false, Ordering::AcqRel))
}

/// Sends `sig` to this process (for tests and for re-raising).
///
/// # Errors
/// Only for invalid signal numbers.
pub fn raise(sig: i32) -> io::Result<()> {
    // SAFETY: raise takes an int.
    cvt(unsafe { libc::raise(sig) })?;
    Ok(())
}

/// The raw descriptor type a waker is poked through, for the handler.
pub(crate) type Target = RawFd;

/// Hang-up: conventionally "reload configuration".
pub const SIGHUP: i32 = libc::SIGHUP;
/// Interrupt (Ctrl-C).
pub const SIGINT: i32 = libc::SIGINT;
/// Quit (Ctrl-\).
pub const SIGQUIT: i32 = libc::SIGQUIT;
/// Termination request: what service managers send to stop a server.
pub const SIGTERM: i32 = libc::SIGTERM;
/// User-defined signal 1.
pub const SIGUSR1: i32 = libc::SIGUSR1;
/// User-defined signal 2.
pub const SIGUSR2: i32 = libc::SIGUSR2;
/// A child process stopped or exited.
pub const SIGCHLD: i32 = libc::SIGCHLD;

/// Sets `SIGPIPE` to be ignored if it still has its default action (which
/// kills the process), so that writing to a pipe whose reader is gone fails
/// with `EPIPE` instead. Rust programs ignore it already at start-up; this
/// covers hosts that do not. A handler someone installed is left alone.
pub fn ignore_default_sigpipe() {
    // SAFETY: all-zero is a valid sigaction for the kernel to fill in.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only queries the current one.
    if unsafe { libc::sigaction(libc::SIGPIPE, std::ptr::null(), &mut old) } != 0 {
        return;
    }
    if old.sa_sigaction == libc::SIG_DFL {
        // SAFETY: SIG_IGN is a valid disposition for SIGPIPE.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
    }
}
