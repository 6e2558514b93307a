//! The BSD and macOS backend: `kqueue(2)` for readiness and `EVFILT_USER`
//! (a pipe on OpenBSD, which lacks it) for wake-ups.
//!
//! A definition-by-definition mirror of `epoll.rs`. No BSD or macOS machine
//! runs it here: CI type-checks and lints it for FreeBSD, NetBSD, OpenBSD,
//! DragonFly and macOS (`.ci/cross-check`), and where kqueue behaves
//! differently from epoll in a way no type-check can show, the code names
//! the man page and the Linux test that covers the same path. Change both
//! files together.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::token::Tokens;
use crate::{cvt, cvt_r, Interest, Trigger};

// The kevent field types differ between the BSDs; these casts keep one
// source for all of them.
#[cfg(target_os = "netbsd")]
pub(crate) type Filter = u32;
#[cfg(not(target_os = "netbsd"))]
pub(crate) type Filter = i16;
#[cfg(target_os = "netbsd")]
type Flags = u32;
#[cfg(not(target_os = "netbsd"))]
type Flags = u16;
/// The length type of `kevent(2)`'s change and event lists: `size_t` on
/// NetBSD, `int` elsewhere.
#[cfg(target_os = "netbsd")]
type Count = libc::size_t;
#[cfg(not(target_os = "netbsd"))]
type Count = libc::c_int;

/// A change for `ident`. The token rides in `udata`, an opaque value the
/// kernel passes back unchanged with every event of that filter (kqueue(2)
/// of FreeBSD, NetBSD, OpenBSD and macOS), as epoll does with its `u64`
/// data. It is a pointer type, never dereferenced: an address without
/// provenance. NetBSD before 10 declared it `intptr_t`, of the same size.
/// A pointer is 32 bits on i686 or armv7: `udata` is the token as
/// `token::Tokens` packs it for the target's width, never the raw `u64`.
/// The same routing on Linux, through `epoll_event.u64`: tests/tcp.rs
/// `a_handler_writes_to_other_connections_by_id`, and the all-ones waker
/// token in tests/signals.rs
/// `signals_run_callbacks_on_the_reactor_thread_and_sigterm_stops_gracefully`.
fn kevent(ident: RawFd, filter: Filter, flags: Flags, udata: u64) -> libc::kevent {
    // SAFETY: all-zero is a valid kevent.
    let mut ev: libc::kevent = unsafe { std::mem::zeroed() };
    ev.ident = ident as _;
    ev.filter = filter as _;
    ev.flags = flags as _;
    // `Tokens` never makes a value wider than the pointer.
    ev.udata = std::ptr::without_provenance_mut(udata as usize);
    ev
}

/// The low-water mark of a read filter registered only to see a hang-up:
/// no socket buffer holds this many bytes, so the filter fires on `EV_EOF`
/// or a socket error only (kqueue(2) `NOTE_LOWAT`: "the low water mark is
/// taken from data"; `filt_soread` tests end-of-file and `so_error` before
/// the mark).
const HANG_UP_ONLY: libc::c_int = libc::c_int::MAX;

/// What a `ctl` call does to an fd's filters.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    /// `EV_ADD` over whatever is there: a new registration, or a change
    /// of interest or token (kqueue(2): adding an existing event modifies
    /// it).
    Add,
    /// Both filters deleted, then added: a change of triggering. kqueue(2)'s
    /// modify path updates `udata`, `fflags` and `data` of an existing
    /// event but keeps the flags it was added with, so an `EV_CLEAR`
    /// registration re-added without `EV_CLEAR` would silently stay
    /// edge-triggered (and a level one would stay level). A fresh event is
    /// checked against the fd's state at once, so nothing pending is lost.
    Replace,
    /// Both filters deleted.
    Delete,
}

/// The errno an `EV_RECEIPT` slot reports for its change, 0 for success:
/// `EV_ERROR` in `flags` with the errno in `data` (kqueue(2)).
fn receipt_errno(ev: &libc::kevent) -> i32 {
    if ev.flags & libc::EV_ERROR != 0 {
        ev.data as i32
    } else {
        0
    }
}

/// A `kqueue` instance.
#[derive(Debug)]
pub struct Selector {
    kq: OwnedFd,
    /// Tokens in and out of `udata` (`token.rs`); on 64-bit targets it
    /// holds nothing.
    tokens: std::sync::Mutex<Tokens>,
}

impl Selector {
    /// Creates a new `kqueue`, close-on-exec.
    ///
    /// # Errors
    /// `Unsupported` on an OS release older than the minimum
    /// (`min_version.rs`: NetBSD 10, FreeBSD 12), naming the release;
    /// `EMFILE`/`ENFILE`/`ENOMEM` from `kqueue(2)`.
    pub fn new() -> io::Result<Selector> {
        crate::min_version::check_running_os()?;
        // SAFETY: kqueue takes no arguments; the result is checked.
        let fd = cvt(unsafe { libc::kqueue() })?;
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let kq = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: F_SETFD takes an int. kqueue fds are not inherited across
        // fork anyway, but they are across exec without this.
        cvt(unsafe { libc::fcntl(kq.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) })?;
        Ok(Selector {
            kq,
            tokens: std::sync::Mutex::new(Tokens::new(usize::BITS)),
        })
    }

    /// `token` as this target's `udata` ([`Tokens::register`]).
    fn udata(&self, token: u64) -> io::Result<u64> {
        // A panic while holding the lock leaves the table consistent.
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.register(token)
    }

    /// Starts watching `fd`, edge-triggered (`EV_CLEAR`), reporting `token`
    /// with its events. A hang-up or error is reported whatever `interest`
    /// holds, as epoll reports `EPOLLHUP`/`EPOLLERR`.
    ///
    /// # Errors
    /// `EBADF`, `ENOMEM`; `InvalidInput` for a token past the slot limit of
    /// a 32-bit target (`token.rs`).
    pub fn register(&self, fd: BorrowedFd<'_>, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl(fd.as_raw_fd(), token, interest, Trigger::Edge, Op::Add)
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
        self.ctl(fd.as_raw_fd(), token, interest, trigger, Op::Add)
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
        self.ctl(fd.as_raw_fd(), token, interest, trigger, Op::Replace)
    }

    /// Changes the interest set or token of a registered `fd`. Filters not
    /// in `interest` are deleted; `ENOENT` from deleting an absent filter is
    /// ignored.
    ///
    /// # Errors
    /// `EBADF`, `ENOMEM`.
    ///
    /// It keeps edge triggering, which every `register` and `reregister`
    /// sets; an fd registered level-triggered changes with
    /// [`Selector::reregister_with`], which replaces the events (see `Op`).
    pub fn reregister(&self, fd: BorrowedFd<'_>, token: u64, interest: Interest) -> io::Result<()> {
        self.ctl(fd.as_raw_fd(), token, interest, Trigger::Edge, Op::Add)
    }

    /// Stops watching `fd`. Closing the fd does the same.
    ///
    /// # Errors
    /// `EBADF`.
    pub fn deregister(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.ctl(
            fd.as_raw_fd(),
            0,
            Interest::empty(),
            Trigger::Edge,
            Op::Delete,
        )
    }

    fn ctl(
        &self,
        fd: RawFd,
        token: u64,
        interest: Interest,
        trigger: Trigger,
        op: Op,
    ) -> io::Result<()> {
        let udata = if op == Op::Delete {
            0
        } else {
            self.udata(token)?
        };
        let delete = (libc::EV_DELETE | libc::EV_RECEIPT) as Flags;
        let add = (libc::EV_ADD
            | libc::EV_RECEIPT
            | if trigger == Trigger::Edge {
                libc::EV_CLEAR
            } else {
                0
            }) as Flags;
        let read = libc::EVFILT_READ as Filter;
        let write = libc::EVFILT_WRITE as Filter;
        let mut changes = [
            kevent(fd, read, delete, 0),
            kevent(fd, write, delete, 0),
            kevent(fd, read, add, udata),
            if interest.contains(Interest::WRITABLE) {
                kevent(fd, write, add, udata)
            } else {
                kevent(fd, write, delete, 0)
            },
        ];
        // The read filter is always added: without read interest it is one
        // that fires only on a hang-up or error, which epoll reports with
        // no interest at all (EPOLLHUP, EPOLLERR; EPOLLRDHUP is always
        // asked for in epoll.rs). Without it a write-only registration
        // never learns that the peer is gone (kqueue(2): the write filter
        // sets EV_EOF only once this side can send no more).
        if !interest.contains(Interest::READABLE) {
            changes[2].fflags = libc::NOTE_LOWAT;
            changes[2].data = HANG_UP_ONLY as _;
        }
        // Which of the four run: the deletions for Replace and Delete, the
        // additions for Add and Replace.
        let run = match op {
            Op::Add => &mut changes[2..],
            Op::Replace => &mut changes[..],
            Op::Delete => &mut changes[..2],
        };
        let n = run.len() as Count;
        // EV_RECEIPT makes kevent report each change's result in place
        // instead of draining real events; the changes are applied in
        // order, deletions first.
        // SAFETY: `run` is used as both change and event list; both are
        // valid for `n` entries during the call.
        cvt_r(|| unsafe {
            libc::kevent(
                self.kq.as_raw_fd(),
                run.as_ptr(),
                n,
                run.as_mut_ptr(),
                n,
                std::ptr::null(),
            )
        })?;
        for ev in run.iter() {
            match receipt_errno(ev) {
                0 => {}
                libc::ENOENT => {}
                errno => return Err(io::Error::from_raw_os_error(errno)),
            }
        }
        Ok(())
    }

    /// Waits for events until `timeout` (rounded up to whole milliseconds,
    /// as the epoll backend must) or forever with `None`.
    ///
    /// A signal interrupting the wait returns `Ok` with no events.
    ///
    /// # Errors
    /// `EBADF`/`EINVAL` only if the selector is broken.
    pub fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
        let ts = timeout.map(|t| {
            let ms = t.as_nanos().div_ceil(1_000_000);
            libc::timespec {
                tv_sec: (ms / 1000).min(libc::time_t::MAX as u128) as libc::time_t,
                tv_nsec: ((ms % 1000) * 1_000_000) as _,
            }
        });
        let ts_ptr = ts
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        events.len = 0;
        let cap = events.buf.len().min(libc::c_int::MAX as usize) as Count;
        // SAFETY: `events.buf` holds `cap` writable kevent slots; `ts_ptr`
        // is null or points at a live timespec.
        let n = unsafe {
            libc::kevent(
                self.kq.as_raw_fd(),
                std::ptr::null(),
                0,
                events.buf.as_mut_ptr(),
                cap,
                ts_ptr,
            )
        };
        match cvt(n) {
            Ok(n) => events.len = n as usize,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        for (ev, token) in events.buf[..events.len].iter().zip(&mut events.tokens) {
            *token = tokens.token(ev.udata.addr() as u64);
        }
        Ok(())
    }
}

impl AsFd for Selector {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.kq.as_fd()
    }
}

/// A reusable batch of events.
pub struct Events {
    buf: Box<[libc::kevent]>,
    /// The full token of each event in `buf`, `None` for a stale one of an
    /// earlier registration of its slot (only on 32-bit targets, `token.rs`).
    tokens: Box<[Option<u64>]>,
    len: usize,
}

impl Events {
    /// Room for `capacity` events per wait (at least one).
    pub fn with_capacity(capacity: usize) -> Events {
        let buf = (0..capacity.max(1))
            .map(|_| kevent(0, 0, 0, 0))
            .collect::<Vec<_>>()
            .into_boxed_slice();
        let tokens = vec![None; buf.len()].into_boxed_slice();
        Events {
            buf,
            tokens,
            len: 0,
        }
    }

    /// The events of the last wait. Unlike epoll, a socket both readable
    /// and writable appears as two events with the same token. Events a
    /// 32-bit target can tell are stale are left out.
    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        self.buf[..self.len]
            .iter()
            .zip(&self.tokens[..])
            .filter_map(|(e, token)| {
                Some(Event {
                    filter: e.filter,
                    flags: e.flags,
                    fflags: e.fflags,
                    token: (*token)?,
                })
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
    filter: Filter,
    flags: Flags,
    fflags: u32,
    token: u64,
}

impl Event {
    /// The token the fd was registered with.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// Data (or a pending accept) can be read, or the read side closed.
    pub fn is_readable(&self) -> bool {
        self.filter == libc::EVFILT_READ || self.is_user()
    }

    /// Room to write, or the connection finished connecting.
    pub fn is_writable(&self) -> bool {
        self.filter == libc::EVFILT_WRITE
    }

    /// The peer will send no more (`EV_EOF` on the read filter).
    ///
    /// kqueue(2) (FreeBSD, macOS; NetBSD and OpenBSD alike): the read filter
    /// of a socket sets `EV_EOF` once the read direction is shut down, and
    /// data may still be buffered then, as with `EPOLLRDHUP`; the reactor
    /// reads until end of stream either way. `EV_EOF` on the write filter
    /// (the reader is gone) is not a close here: the next write fails with
    /// `EPIPE`, as it does on Linux. Linux tests of the same paths:
    /// tests/tcp.rs `half_close_gets_every_echoed_byte_then_end_of_stream`,
    /// `peer_close_flushes_then_reports_peer_closed`,
    /// `peer_reset_is_reported_as_reset`.
    pub fn is_read_closed(&self) -> bool {
        self.filter == libc::EVFILT_READ && self.flags & libc::EV_EOF != 0
    }

    /// The socket has a pending error: `EV_ERROR`, or `EV_EOF` with an errno
    /// in `fflags` (how kqueue reports a failed connect).
    ///
    /// kqueue(2): with `EV_EOF` the socket filters return "the socket error
    /// (if any) in fflags", where epoll sets `EPOLLERR`; the reactor then
    /// takes the errno with `SO_ERROR` on both. Linux test: tests/tcp.rs
    /// `refused_connect_is_reported_in_unbind`.
    pub fn is_error(&self) -> bool {
        self.flags & libc::EV_ERROR != 0 || (self.flags & libc::EV_EOF != 0 && self.fflags != 0)
    }

    #[cfg(not(target_os = "openbsd"))]
    fn is_user(&self) -> bool {
        self.filter == libc::EVFILT_USER
    }

    #[cfg(target_os = "openbsd")]
    fn is_user(&self) -> bool {
        false
    }
}

/// Wakes a selector from any thread, through an `EVFILT_USER` event.
#[cfg(not(target_os = "openbsd"))]
#[derive(Debug)]
pub struct Waker {
    kq: OwnedFd,
    /// The token as registered (`Selector::udata`).
    udata: u64,
}

#[cfg(not(target_os = "openbsd"))]
impl Waker {
    /// Registers a user event in `selector` under `token`.
    ///
    /// # Errors
    /// Out of descriptors, or the registration failed.
    pub fn new(selector: &Selector, token: u64) -> io::Result<Waker> {
        let kq = selector.kq.try_clone()?;
        let udata = selector.udata(token)?;
        let ev = kevent(
            0,
            libc::EVFILT_USER as Filter,
            (libc::EV_ADD | libc::EV_CLEAR | libc::EV_RECEIPT) as Flags,
            udata,
        );
        let waker = Waker { kq, udata };
        waker.submit(ev)?;
        Ok(waker)
    }

    /// Makes the selector's current or next `wait` return with this waker's
    /// token.
    ///
    /// # Errors
    /// Only if the kqueue is broken.
    pub fn wake(&self) -> io::Result<()> {
        let mut ev = kevent(
            0,
            libc::EVFILT_USER as Filter,
            libc::EV_RECEIPT as Flags,
            self.udata,
        );
        ev.fflags = libc::NOTE_TRIGGER;
        self.submit(ev)
    }

    /// What a signal handler pokes: the kqueue's number.
    pub(crate) fn raw_target(&self) -> crate::signal::Target {
        self.kq.as_raw_fd()
    }

    /// Triggers the user event of the kqueue `target`, from a signal
    /// handler: one `kevent` call.
    pub(crate) fn wake_raw(target: crate::signal::Target) {
        // A trigger may rewrite the event's udata, so it carries the token
        // the reactor registers its waker with (the all-ones token), packed
        // for this width: all-ones `usize` on every target (`token.rs`).
        let mut ev = kevent(0, libc::EVFILT_USER as Filter, 0, usize::MAX as u64);
        ev.fflags = libc::NOTE_TRIGGER;
        // SAFETY: one valid change, no event list.
        unsafe { libc::kevent(target, &ev, 1, std::ptr::null_mut(), 0, std::ptr::null()) };
    }

    /// Nothing to consume: `EV_CLEAR` resets the user event when reported.
    pub fn reset(&self) {}

    fn submit(&self, mut ev: libc::kevent) -> io::Result<()> {
        // SAFETY: `ev` is valid as change and receipt slot for one entry.
        cvt_r(|| unsafe {
            libc::kevent(self.kq.as_raw_fd(), &ev, 1, &mut ev, 1, std::ptr::null())
        })?;
        match receipt_errno(&ev) {
            0 => Ok(()),
            errno => Err(io::Error::from_raw_os_error(errno)),
        }
    }
}

/// Wakes a selector from any thread, through a non-blocking pipe (OpenBSD
/// has no `EVFILT_USER`).
#[cfg(target_os = "openbsd")]
#[derive(Debug)]
pub struct Waker {
    read: OwnedFd,
    write: OwnedFd,
}

#[cfg(target_os = "openbsd")]
impl Waker {
    /// Creates the pipe and registers its read end under `token`.
    ///
    /// # Errors
    /// Out of descriptors, or the registration failed.
    pub fn new(selector: &Selector, token: u64) -> io::Result<Waker> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` has room for the two descriptors written.
        cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) })?;
        // SAFETY: both descriptors are fresh and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        selector.register(read.as_fd(), token, Interest::READABLE)?;
        Ok(Waker { read, write })
    }

    /// Makes the selector's current or next `wait` return with this waker's
    /// token. A full pipe means a wake is pending already.
    ///
    /// # Errors
    /// Only if the pipe is broken.
    pub fn wake(&self) -> io::Result<()> {
        // SAFETY: writes one byte from a live buffer.
        match cvt_r(|| unsafe { libc::write(self.write.as_raw_fd(), b"x".as_ptr().cast(), 1) }) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// What a signal handler pokes: the pipe's write end.
    pub(crate) fn raw_target(&self) -> crate::signal::Target {
        self.write.as_raw_fd()
    }

    /// Writes one byte to the pipe `target`, from a signal handler.
    pub(crate) fn wake_raw(target: crate::signal::Target) {
        // SAFETY: writes one byte from a live buffer.
        unsafe { libc::write(target, b"x".as_ptr().cast(), 1) };
    }

    /// Drains the pipe, so that the next `wake` makes a new edge.
    pub fn reset(&self) {
        let mut buf = [0u8; 64];
        // SAFETY: reads into a live buffer of the length passed; stops at
        // EAGAIN.
        while let Ok(n) = cvt_r(|| unsafe {
            libc::read(self.read.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
        }) {
            if n <= 0 {
                break;
            }
        }
    }
}

/// A kqueue of its own that watches one kernel object (`filter` on `ident`,
/// for the notes in `fflags`), edge-triggered: the returned descriptor is
/// readable, to the reactor's selector, while that object has news. This is
/// how the BSDs get one descriptor per watch where Linux has one directly: a
/// process exit (`EVFILT_PROC`, for a pidfd) or a file change
/// (`EVFILT_VNODE`, for an inotify watch). A kqueue descriptor can itself be
/// watched by another kqueue (kqueue(2)).
///
/// # Errors
/// `ESRCH` for a process that is gone, `EBADF` for a closed file, or the
/// errors of `kqueue(2)`.
pub(crate) fn single_watch(ident: RawFd, filter: Filter, fflags: u32) -> io::Result<OwnedFd> {
    let queue = Selector::new()?;
    let mut change = kevent(
        ident,
        filter,
        (libc::EV_ADD | libc::EV_CLEAR | libc::EV_RECEIPT) as Flags,
        0,
    );
    change.fflags = fflags;
    let slot: *mut libc::kevent = &mut change;
    // SAFETY: `slot` points at one live kevent, valid as change and receipt
    // slot for the call.
    cvt_r(|| unsafe { libc::kevent(queue.kq.as_raw_fd(), slot, 1, slot, 1, std::ptr::null()) })?;
    match receipt_errno(&change) {
        0 => Ok(queue.kq),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// A descriptor readable once process `pid` has exited: `EVFILT_PROC` with
/// `NOTE_EXIT` on a queue of its own (the kqueue side of
/// `process::exit_watch`, which is a pidfd on Linux).
///
/// # Errors
/// `ESRCH` for a process that is gone, `EPERM` for one this user may not
/// watch.
///
/// Unlike a pidfd (Linux), kqueue(2) `EVFILT_PROC` names a pid, not a
/// process reference, and attaches only while the kernel still finds that
/// process. An exited, unreaped child (a zombie) is reported at once on
/// FreeBSD (`filt_procattach`) but refused with `ESRCH` on macOS, where a
/// pidfd on Linux opens and is readable at once. The caller (`watch_exit`
/// in src/process.rs) falls back to polling `waitpid` on any error, which
/// reaps such a child on its first tick, and it always takes the status
/// from `waitpid`, never from `NOTE_EXIT`'s `data`. Linux tests:
/// tests/process.rs `watch_process_reaps_our_child_with_its_status`,
/// `watch_process_on_an_exited_pid_reports_no_status`,
/// `watch_process_sees_a_process_that_is_not_our_child_exit`.
pub(crate) fn exit_watch(pid: i32) -> io::Result<OwnedFd> {
    single_watch(pid, libc::EVFILT_PROC as Filter, libc::NOTE_EXIT)
}

/// Takes the pending events of a [`single_watch`] queue without blocking:
/// the union of their notes (`fflags`), 0 when there were none, and the
/// watched object's ident (`None` when there were none). Taking them makes
/// the queue unreadable until the next change.
///
/// # Errors
/// `EBADF` when `queue` is not a kqueue.
pub(crate) fn take_notes(queue: BorrowedFd<'_>) -> io::Result<(u32, Option<RawFd>)> {
    // SAFETY: all-zero is a valid kevent.
    let mut pending: [libc::kevent; 4] = unsafe { std::mem::zeroed() };
    let now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `pending` holds 4 writable kevent slots; `now` is a live
    // timespec (a zero timeout: never blocks).
    let n = cvt_r(|| unsafe {
        libc::kevent(
            queue.as_raw_fd(),
            std::ptr::null(),
            0,
            pending.as_mut_ptr(),
            4,
            &now,
        )
    })?;
    let pending = &pending[..n as usize];
    let notes = pending.iter().fold(0, |notes, ev| notes | ev.fflags);
    Ok((notes, pending.first().map(|ev| ev.ident as RawFd)))
}
