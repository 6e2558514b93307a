//! The Linux backend: `epoll(7)` for readiness and `eventfd(2)` for wake-ups.
//!
//! `kqueue.rs` mirrors this file definition by definition; change both
//! together.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::{cvt, cvt_r, Interest, Trigger};

/// An `epoll` instance.
#[derive(Debug)]
pub struct Selector {
    ep: OwnedFd,
}

impl Selector {
    /// Creates a new `epoll` instance, close-on-exec.
    ///
    /// # Errors
    /// `EMFILE`/`ENFILE`/`ENOMEM` from `epoll_create1(2)`.
    pub fn new() -> io::Result<Selector> {
        // SAFETY: epoll_create1 takes no pointers; the result is checked.
        let fd = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let ep = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Selector { ep })
    }

    /// Starts watching `fd`, edge-triggered, reporting `token` with its events.
    ///
    /// # Errors
    /// `EEXIST` if `fd` is already registered, `EBADF`, `ENOMEM`, `ENOSPC`.
    pub fn register(&self, fd: BorrowedFd<'_>, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl(
            libc::EPOLL_CTL_ADD,
            fd.as_raw_fd(),
            token,
            interest,
            Trigger::Edge,
        )
    }

    /// Starts watching `fd` with the given triggering.
    ///
    /// # Errors
    /// As [`Selector::register`].
    pub fn register_with(
        &self,
        fd: BorrowedFd<'_>,
        token: u64,
        interest: Interest,
        trigger: Trigger,
    ) -> io::Result<()> {
        self.ctl(
            libc::EPOLL_CTL_ADD,
            fd.as_raw_fd(),
            token,
            interest,
            trigger,
        )
    }

    /// Changes the interest set, token or triggering of a registered `fd`.
    ///
    /// # Errors
    /// As [`Selector::reregister`].
    pub fn reregister_with(
        &self,
        fd: BorrowedFd<'_>,
        token: u64,
        interest: Interest,
        trigger: Trigger,
    ) -> io::Result<()> {
        self.ctl(
            libc::EPOLL_CTL_MOD,
            fd.as_raw_fd(),
            token,
            interest,
            trigger,
        )
    }

    /// Changes the interest set or token of a registered `fd`.
    ///
    /// # Errors
    /// `ENOENT` if `fd` is not registered.
    pub fn reregister(&self, fd: BorrowedFd<'_>, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl(
            libc::EPOLL_CTL_MOD,
            fd.as_raw_fd(),
            token,
            interest,
            Trigger::Edge,
        )
    }

    /// Stops watching `fd`. Closing the fd does the same, as long as no
    /// duplicate of it is open elsewhere (as after `fork` or `dup`).
    ///
    /// # Errors
    /// `ENOENT` if `fd` is not registered.
    pub fn deregister(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        // Linux before 2.6.9 wanted a non-null event even for DEL; passing
        // one costs nothing.
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        cvt(unsafe {
            libc::epoll_ctl(
                self.ep.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd.as_raw_fd(),
                &mut ev,
            )
        })?;
        Ok(())
    }

    fn ctl(
        &self,
        op: libc::c_int,
        fd: RawFd,
        token: u64,
        interest: Interest,
        trigger: Trigger,
    ) -> io::Result<()> {
        // EPOLLRDHUP tells a peer's half-close apart from "more data"
        // without another read; EPOLLET saves an epoll_ctl every time write
        // interest would toggle (see ARCHITECTURE.md).
        let mut events = libc::EPOLLRDHUP;
        if trigger == Trigger::Edge {
            events |= libc::EPOLLET;
        }
        if interest.contains(Interest::READABLE) {
            events |= libc::EPOLLIN;
        }
        if interest.contains(Interest::WRITABLE) {
            events |= libc::EPOLLOUT;
        }
        let mut ev = libc::epoll_event {
            events: events as u32,
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call;
        // the kernel copies it.
        cvt(unsafe { libc::epoll_ctl(self.ep.as_raw_fd(), op, fd, &mut ev) })?;
        Ok(())
    }

    /// Waits for events until `timeout` (rounded up to whole milliseconds,
    /// so a timer is never woken early) or forever with `None`.
    ///
    /// A signal interrupting the wait returns `Ok` with no events, so that
    /// the caller's loop can look at what the signal changed.
    ///
    /// # Errors
    /// `EBADF`/`EINVAL` only if the selector is broken.
    pub fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        let ms = match timeout {
            None => -1,
            Some(t) => {
                let ms = t.as_nanos().div_ceil(1_000_000);
                ms.min(libc::c_int::MAX as u128) as libc::c_int
            }
        };
        events.len = 0;
        let cap = events.buf.len().min(libc::c_int::MAX as usize) as libc::c_int;
        // SAFETY: `events.buf` holds `cap` writable epoll_event slots.
        let n = unsafe { libc::epoll_wait(self.ep.as_raw_fd(), events.buf.as_mut_ptr(), cap, ms) };
        match cvt(n) {
            Ok(n) => events.len = n as usize,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }
}

impl AsFd for Selector {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.ep.as_fd()
    }
}

/// A reusable batch of events.
pub struct Events {
    buf: Box<[libc::epoll_event]>,
    len: usize,
}

impl Events {
    /// Room for `capacity` events per wait (at least one).
    pub fn with_capacity(capacity: usize) -> Events {
        let buf = vec![libc::epoll_event { events: 0, u64: 0 }; capacity.max(1)].into_boxed_slice();
        Events { buf, len: 0 }
    }

    /// The events of the last wait.
    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        self.buf[..self.len].iter().map(|e| Event {
            events: e.events,
            token: e.u64,
        })
    }

    /// How many events the last wait returned.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the last wait returned no events.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// One readiness event.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    events: u32,
    token: u64,
}

impl Event {
    /// The token the fd was registered with.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// Data (or a pending accept) can be read, or the read side closed.
    pub fn is_readable(&self) -> bool {
        self.events & (libc::EPOLLIN | libc::EPOLLPRI | libc::EPOLLRDHUP | libc::EPOLLHUP) as u32
            != 0
    }

    /// Room to write, or the connection finished connecting.
    pub fn is_writable(&self) -> bool {
        self.events & libc::EPOLLOUT as u32 != 0
    }

    /// The peer will send no more: half-close (`EPOLLRDHUP`) or hang-up.
    pub fn is_read_closed(&self) -> bool {
        self.events & (libc::EPOLLRDHUP | libc::EPOLLHUP) as u32 != 0
    }

    /// The socket has a pending error (`SO_ERROR`).
    pub fn is_error(&self) -> bool {
        self.events & libc::EPOLLERR as u32 != 0
    }
}

/// Wakes a selector from any thread, through an `eventfd` registered in it.
#[derive(Debug)]
pub struct Waker {
    fd: OwnedFd,
}

impl Waker {
    /// Creates the eventfd and registers it in `selector` under `token`.
    ///
    /// # Errors
    /// Out of descriptors, or the registration failed.
    pub fn new(selector: &Selector, token: u64) -> io::Result<Waker> {
        // SAFETY: eventfd takes no pointers; the result is checked.
        let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        selector.register(fd.as_fd(), token, Interest::READABLE)?;
        Ok(Waker { fd })
    }

    /// Makes the selector's current or next `wait` return with this waker's
    /// token.
    ///
    /// # Errors
    /// Only if the eventfd is broken; a full counter is drained and retried.
    pub fn wake(&self) -> io::Result<()> {
        let one: u64 = 1;
        loop {
            // SAFETY: writes 8 bytes from a live u64.
            let r = unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
            match cvt(r) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The counter is at its maximum: the reader has not run for
                // 2^64-2 wakes. Drain it; the wake is already pending.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.reset();
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// What a signal handler pokes: the eventfd's number.
    pub(crate) fn raw_target(&self) -> crate::signal::Target {
        self.fd.as_raw_fd()
    }

    /// Wakes the waker whose [`Waker::raw_target`] is `target`, from a
    /// signal handler: one `write`, async-signal-safe.
    pub(crate) fn wake_raw(target: crate::signal::Target) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64; a failure (a full
        // counter) means a wake is pending anyway.
        unsafe { libc::write(target, (&one as *const u64).cast(), 8) };
    }

    /// Consumes pending wakes, so that the next `wake` makes a new edge.
    pub fn reset(&self) {
        let mut buf: u64 = 0;
        // EAGAIN (nothing pending) is the expected failure and is ignored.
        let _ = cvt_r(|| {
            // SAFETY: reads at most 8 bytes into a live u64.
            unsafe { libc::read(self.fd.as_raw_fd(), (&mut buf as *mut u64).cast(), 8) }
        });
    }
}
