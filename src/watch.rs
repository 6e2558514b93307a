//! Watching descriptors the user reads and writes themselves:
//! EventMachine's `watch` with `notify_readable` / `notify_writable`.
//!
//! This module owns watched descriptors: their registration (level
//! triggered, so a watcher that reads only part of what is there is told
//! again next turn), their callbacks, and handing them back with
//! [`Watches::detach`]. It never reads or writes a watched descriptor
//! itself; that is the watcher's business.
//!
//! ```
//! use std::io::{Read, Write};
//! use std::os::unix::net::UnixStream;
//! use packet::watch::{Watch, Watcher};
//! use packet::Reactor;
//!
//! struct Ready(UnixStream);
//! impl Watcher for Ready {
//!     fn notify_readable(&mut self, w: &mut Watch<'_>) {
//!         let mut buf = [0u8; 16];
//!         let n = self.0.read(&mut buf).unwrap();
//!         assert_eq!(&buf[..n], b"ping");
//!         w.reactor().stop();
//!     }
//! }
//!
//! let (mut a, b) = UnixStream::pair()?;
//! b.set_nonblocking(true)?;
//! let fd = b.try_clone()?.into();
//! Reactor::run(move |r| {
//!     r.watches().watch(fd, Ready(b), true, false)?;
//!     a.write_all(b"ping")?;
//!     Ok(())
//! })?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use packet_sys::{Interest, Trigger};

use crate::reactor::{Reactor, Readiness, SourceHooks};
use crate::slab::Token;

/// Identifies a watched descriptor within its reactor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WatchId(pub(super) Token);

/// Callbacks for a watched descriptor.
pub trait Watcher: 'static {
    /// The descriptor is readable (or hung up, or has an error: reading
    /// tells which). Called every turn while it stays readable.
    fn notify_readable(&mut self, w: &mut Watch<'_>) {
        let _ = w;
    }

    /// The descriptor is writable. Called every turn while it stays
    /// writable and writable notification is on: turn it off when there is
    /// nothing to write.
    fn notify_writable(&mut self, w: &mut Watch<'_>) {
        let _ = w;
    }

    /// The watch ended: detached, or the reactor stopped. The last call.
    fn unbind(&mut self, w: &mut Watch<'_>) {
        let _ = w;
    }
}

/// The watch whose callback is running, with the reactor behind it.
pub struct Watch<'r> {
    reactor: &'r mut Reactor,
    id: WatchId,
}

impl Watch<'_> {
    /// The same watch for a shorter time: what a wrapper that owns a
    /// `Watch` of its own (a context type handed to another kind of
    /// handler, as datagram sockets do) takes from the one it was given.
    pub fn reborrow(&mut self) -> Watch<'_> {
        Watch {
            reactor: &mut *self.reactor,
            id: self.id,
        }
    }

    /// This watch's id.
    pub fn id(&self) -> WatchId {
        self.id
    }

    /// The reactor.
    pub fn reactor(&mut self) -> &mut Reactor {
        self.reactor
    }

    /// The watched descriptor (`None` once detached).
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.reactor.watch_fd(self.id)
    }

    /// Turns readable notification on or off.
    ///
    /// # Errors
    /// The watch is gone, or the selector refused the change.
    pub fn set_notify_readable(&mut self, on: bool) -> io::Result<()> {
        self.reactor.set_notify(self.id, Some(on), None)
    }

    /// Turns writable notification on or off.
    ///
    /// # Errors
    /// As [`Watch::set_notify_readable`].
    pub fn set_notify_writable(&mut self, on: bool) -> io::Result<()> {
        self.reactor.set_notify(self.id, None, Some(on))
    }

    /// Stops watching and hands the descriptor back, open; `unbind` follows
    /// when this callback returns.
    ///
    /// # Errors
    /// As [`Watches::detach`].
    pub fn detach(&mut self) -> io::Result<OwnedFd> {
        self.reactor.detach_watch(self.id)
    }
}

pub(super) struct Watched {
    fd: OwnedFd,
    /// `None` while one of its callbacks runs.
    watcher: Option<Box<dyn Watcher>>,
    readable: bool,
    writable: bool,
}

fn interest(readable: bool, writable: bool) -> Interest {
    let mut i = Interest::empty();
    if readable {
        i |= Interest::READABLE;
    }
    if writable {
        i |= Interest::WRITABLE;
    }
    i
}

/// How the reactor reaches a watch: readiness goes to its watcher, and a
/// shutdown ends it.
static HOOKS: SourceHooks = SourceHooks {
    ready: |r, token, ready| r.on_watch_event(token, ready),
    shutdown: |r, token| r.end_watch(token),
};

impl Reactor {
    /// [`Watches::watch`], for the modules built on watches.
    pub(super) fn watch(
        &mut self,
        fd: OwnedFd,
        watcher: impl Watcher,
        readable: bool,
        writable: bool,
    ) -> io::Result<WatchId> {
        // kqueue would accept a regular file and report it ready on every
        // turn; the check makes every backend refuse it as epoll does.
        packet_sys::check_pollable(fd.as_fd())?;
        let watched = Watched {
            fd,
            watcher: Some(Box::new(watcher)),
            readable,
            writable,
        };
        let token = self.add_plugin_source(
            watched,
            |w| w.fd.as_fd(),
            interest(readable, writable),
            Trigger::Level,
            &HOOKS,
        )?;
        Ok(WatchId(token))
    }

    fn watched(&self, id: WatchId) -> Option<&Watched> {
        self.plugin(id.0)
    }

    pub(super) fn watch_fd(&self, id: WatchId) -> Option<BorrowedFd<'_>> {
        self.watched(id).map(|w| w.fd.as_fd())
    }

    fn set_notify(
        &mut self,
        id: WatchId,
        readable: Option<bool>,
        writable: Option<bool>,
    ) -> io::Result<()> {
        let Some(w) = self.watched(id) else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such watch"));
        };
        let (r, wr) = (
            readable.unwrap_or(w.readable),
            writable.unwrap_or(w.writable),
        );
        if (r, wr) != (w.readable, w.writable) {
            self.set_plugin_interest(id.0, w.fd.as_fd(), interest(r, wr), Trigger::Level)?;
            if let Some(w) = self.plugin_mut::<Watched>(id.0) {
                w.readable = r;
                w.writable = wr;
            }
        }
        Ok(())
    }

    /// [`Watches::detach`], for the modules built on watches.
    pub(super) fn detach_watch(&mut self, id: WatchId) -> io::Result<OwnedFd> {
        let Some(w) = self.remove_plugin::<Watched>(id.0) else {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such watch"));
        };
        let Watched { fd, watcher, .. } = *w;
        // The descriptor lives on: it must leave the selector explicitly.
        let _ = self.deregister_plugin_fd(fd.as_fd());
        if let Some(mut watcher) = watcher {
            self.next_turn(move |r| watcher.unbind(&mut Watch { reactor: r, id }));
        }
        Ok(fd)
    }

    /// A readiness event for watch `token`.
    fn on_watch_event(&mut self, token: Token, ready: Readiness) {
        let id = WatchId(token);
        let Some(w) = self.plugin_mut::<Watched>(token) else {
            return;
        };
        // Level-triggered: report only what was asked for, except that an
        // error or hang-up (`readable` here) goes to notify_readable, where
        // a read tells the watcher what happened.
        let (want_r, want_w) = (ready.readable, ready.writable && w.writable);
        let Some(mut watcher) = w.watcher.take() else {
            return;
        };
        if want_r {
            watcher.notify_readable(&mut Watch { reactor: self, id });
        }
        if want_w && self.plugin::<Watched>(token).is_some_and(|w| w.writable) {
            watcher.notify_writable(&mut Watch { reactor: self, id });
        }
        match self.plugin_mut::<Watched>(token) {
            Some(w) => w.watcher = Some(watcher),
            // Detached from inside its own callback.
            _ => watcher.unbind(&mut Watch { reactor: self, id }),
        }
    }

    /// Ends every watch (reactor shutdown): unbind, then close.
    fn end_watch(&mut self, token: Token) {
        let Some(w) = self.remove_plugin::<Watched>(token) else {
            return;
        };
        let Watched { fd, watcher, .. } = *w;
        if let Some(mut watcher) = watcher {
            watcher.unbind(&mut Watch {
                reactor: self,
                id: WatchId(token),
            });
        }
        drop(fd);
    }
}

/// A reactor's watched descriptors, borrowed for one call:
/// `reactor.watches()`, with EventMachine's `watch` and (the `filewatch`
/// feature) `watch_file`. Inside a [`Watcher`] callback the watch's own
/// [`Watch`] does the same for it.
///
/// ```no_run
/// # use std::os::unix::net::UnixStream;
/// # use packet::watch::Watcher;
/// # use packet::Reactor;
/// # struct Quiet;
/// # impl Watcher for Quiet {}
/// # fn f(r: &mut Reactor) -> std::io::Result<()> {
/// let (ours, _theirs) = UnixStream::pair()?;
/// let id = r.watches().watch(ours.into(), Quiet, true, false)?;
/// r.watches().set_notify_writable(id, true)?;
/// let fd = r.watches().detach(id)?; // back, open
/// # drop(fd); Ok(()) }
/// ```
pub struct Watches<'r> {
    reactor: &'r mut Reactor,
}

impl Reactor {
    /// This reactor's watched descriptors: [`Watches`].
    pub fn watches(&mut self) -> Watches<'_> {
        Watches { reactor: self }
    }
}

impl Watches<'_> {
    /// Watches `fd` (a socket, pipe, terminal, eventfd, inotify or pidfd…)
    /// for readiness the user handles themselves (EventMachine's `watch`).
    /// The reactor owns `fd` until [`Watches::detach`] gives it back,
    /// and closes it when the reactor stops.
    ///
    /// # Errors
    /// `EPERM` for a regular file or directory, which are always ready and
    /// so cannot be watched (epoll refuses them; kqueue would report them
    /// every turn: `packet_sys::check_pollable`), or the selector refused
    /// the descriptor.
    pub fn watch(
        &mut self,
        fd: OwnedFd,
        watcher: impl Watcher,
        readable: bool,
        writable: bool,
    ) -> io::Result<WatchId> {
        self.reactor.watch(fd, watcher, readable, writable)
    }

    /// The descriptor of watch `id` (`None` once detached).
    pub fn fd(&self, id: WatchId) -> Option<BorrowedFd<'_>> {
        self.reactor.watch_fd(id)
    }

    /// Turns readable notification of watch `id` on or off.
    ///
    /// # Errors
    /// `NotFound` for a detached watch.
    pub fn set_notify_readable(&mut self, id: WatchId, on: bool) -> io::Result<()> {
        self.reactor.set_notify(id, Some(on), None)
    }

    /// Turns writable notification of watch `id` on or off.
    ///
    /// # Errors
    /// `NotFound` for a detached watch.
    pub fn set_notify_writable(&mut self, id: WatchId, on: bool) -> io::Result<()> {
        self.reactor.set_notify(id, None, Some(on))
    }

    /// Stops watching `id` and hands its descriptor back, open
    /// (EventMachine's `detach`). The watcher's `unbind` runs when no
    /// callback is running.
    ///
    /// # Errors
    /// `NotFound` for a detached watch.
    pub fn detach(&mut self, id: WatchId) -> io::Result<OwnedFd> {
        self.reactor.detach_watch(id)
    }
}
