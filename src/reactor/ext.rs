//! The extension point: how features plug into the core without the core
//! naming them.
//!
//! A feature (watches, proxies, workers, ...) reaches the reactor through
//! three things, besides the core functions it calls by name (the fields
//! of the reactor and of a connection are private to `crate::reactor`:
//! `src/reactor/` and the files it declares with `#[path]`):
//!
//! - **extension state**: one value per type per reactor
//!   ([`Reactor::ext_mut`], [`Reactor::with_ext`]), told when the reactor
//!   stops gracefully and when it shuts down ([`Extension`]); public, as
//!   is [`Extensions`], the accessor users get (`packet::extend`);
//! - **plug-in sources**: a descriptor registered with the selector whose
//!   readiness goes to the feature's function, with the feature's state
//!   kept in the slab beside connections ([`Reactor::add_plugin_source`]);
//! - **connection hooks**: a feature taking over parts of one connection's
//!   I/O — its reads, its writable edge, its queue's size, its close —
//!   ([`Reactor::hook_conn_with`], [`ConnHooks`]), optionally with a **filter**
//!   between the socket and the handler ([`FilterHooks`]): the feature
//!   turns the bytes read into what `receive_data` sees, and the bytes the
//!   handler sends (kept in the connection's outbound queue, so water marks
//!   measure what the handler wrote) into what the socket gets.
//!
//! The public filter of `packet::extend` (`extend.rs`) and the public
//! takeover (`takeover.rs`) are built on the connection hooks, and the
//! public plug-in source is the watch (`watch.rs`), built on plug-in
//! sources.
//!
//! This file owns those three mechanisms and nothing else: its code never
//! names a feature (the comments on items only some features call say
//! which, and why they are allowed to be dead in a core-only build). The
//! hot path pays a flag test per read (two: the hook's read, then the
//! filter's input), write and queue check for hooks, and nothing for the
//! other two.

use std::any::{Any, TypeId};
use std::os::fd::{BorrowedFd, OwnedFd};

use packet_sys::Trigger;

use super::*;

/// Any `'static` value as `&dyn Any`, so an [`Extension`] trait object
/// can be downcast to its type. Implemented for every type; public only
/// because [`Extension`] is built on it (this module is private, so the
/// name cannot be used outside the crate).
pub trait AsAny: Any {
    /// `self` as `&dyn Any`.
    fn as_any(&self) -> &dyn Any;
    /// `self` as `&mut dyn Any`.
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Any> AsAny for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Per-reactor state of an extension (a plug-in of the library's own, or
/// of yours), one value per type per reactor, reached with
/// [`Reactor::extensions`]; the reactor tells it when a stop begins and
/// when it shuts down.
///
/// ```
/// use packet::extend::Extension;
/// use packet::Reactor;
///
/// #[derive(Default)]
/// struct Greetings(u32);
/// impl Extension for Greetings {}
///
/// let mut reactor = Reactor::new()?;
/// reactor.extensions().get_or_default::<Greetings>().0 += 1;
/// assert_eq!(reactor.extensions().get::<Greetings>().map(|g| g.0), Some(1));
/// # Ok::<(), std::io::Error>(())
/// ```
pub trait Extension: AsAny {
    /// [`Reactor::stop_gracefully`] began, before anything is closed: stop
    /// taking new work. Return [`StopHold::Hold`] while work is in flight
    /// for the connections; the extension must then call
    /// `stop_gracefully` again once the work is done (within `within`),
    /// and the connections are left open until then (the stop's deadline
    /// still holds).
    fn stop_gracefully(&mut self, reactor: &mut Reactor, within: Duration) -> StopHold {
        let _ = (reactor, within);
        StopHold::Release
    }

    /// The reactor is shutting down, before its connections are closed.
    /// The value is dropped once they are.
    fn shutdown(&mut self, reactor: &mut Reactor) {
        let _ = reactor;
    }
}

/// Whether an [`Extension`] holds a graceful stop for its work in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopHold {
    /// Nothing of this extension's is in flight: the stop may close the
    /// connections.
    Release,
    /// Work is in flight: the connections stay open until the extension
    /// calls [`Reactor::stop_gracefully`] again (or the deadline passes).
    Hold,
}

/// A reactor's extension state, borrowed for one call:
/// [`Reactor::extensions`]. Each [`Extension`] type has at most one value.
/// It also offers what only extensions need of the reactor, kept off
/// [`Reactor`]'s own page: channels of their own
/// ([`Extensions::attach_channel`]), failed requests in a stop's report,
/// and servers on listening sockets handed over by another process.
pub struct Extensions<'r> {
    pub(super) reactor: &'r mut Reactor,
}

impl<'r> Extensions<'r> {
    /// The value of type `T`, if set (and not lent out by
    /// [`Extensions::with`]).
    pub fn get<T: Extension>(self) -> Option<&'r T> {
        self.reactor.ext()
    }

    /// [`Extensions::get`], mutably.
    pub fn get_mut<T: Extension>(self) -> Option<&'r mut T> {
        self.reactor.ext_mut()
    }

    /// The value of type `T`, made with `T::default()` the first time.
    ///
    /// # Panics
    /// While the value is lent out by [`Extensions::with`].
    pub fn get_or_default<T: Extension + Default>(self) -> &'r mut T {
        self.reactor.ext_or_default()
    }

    /// Sets (or replaces) the value of type `T`.
    pub fn insert<T: Extension>(self, value: T) {
        self.reactor.set_ext(value);
    }

    /// Runs `f` with the value of type `T` taken out of the reactor, so
    /// that `f` may use both; `None` if there is none. A value of type `T`
    /// inserted while `f` runs is replaced by the one lent out.
    pub fn with<T: Extension, R>(self, f: impl FnOnce(&mut T, &mut Reactor) -> R) -> Option<R> {
        self.reactor.with_ext(f)
    }

    /// Attaches `fd`, a Unix-domain socket, as a channel of the
    /// extension's own (to a helper process it runs), as
    /// [`Reactor::attach_receiving_fds`] does, but not as one of the
    /// application's connections: [`Reactor::connection_count`] leaves it
    /// out, and a stop's report does not count what it still had queued as
    /// cut (the extension's [`Extension::stop_gracefully`] says when its
    /// channels are done).
    ///
    /// # Errors
    /// As [`Reactor::attach_receiving_fds`].
    pub fn attach_channel<H: Handler>(self, fd: OwnedFd, handler: H) -> io::Result<ConnId> {
        self.reactor
            .adopt_boxed(fd, Box::new(handler), Some(Transport::Channel))
    }

    /// Counts `n` requests of the extension's that the stop in progress
    /// failed before their answers came ([`StopReport::asks_failed`]:
    /// whoever asked heard an error instead), so that the report is not
    /// clean.
    pub fn count_failed_asks(self, n: usize) {
        self.reactor.count_failed_asks(n);
    }

    /// Serves on `sock`, a listening socket this reactor did not make (one
    /// inherited from the process that started this one, or from a service
    /// manager), as [`Reactor::start_server_with`] serves on its own: the
    /// socket is made non-blocking; `TCP_NODELAY` is set on each accepted
    /// TCP connection; `options`' socket options are the socket's already
    /// and are not applied. A Unix-domain socket's file is left in place
    /// when the server stops: whoever made it owns it.
    ///
    /// # Errors
    /// The socket cannot be made non-blocking or registered.
    pub fn adopt_server<H: Handler>(
        self,
        sock: OwnedFd,
        options: ServerOptions,
        factory: impl FnMut() -> H + 'static,
    ) -> io::Result<ServerId> {
        self.reactor.adopt_server(sock, options, factory)
    }

    /// The listening sockets of this reactor's running servers, in the
    /// order they were added.
    pub fn server_fds(self) -> Vec<BorrowedFd<'r>> {
        self.reactor.server_fds()
    }

    /// Closes every listener of this reactor, as [`Reactor::stop_server`]
    /// does, but leaves Unix-domain socket files in place, for a process
    /// that serves on the same sockets next. How many there were.
    pub fn stop_servers_keeping_files(self) -> usize {
        self.reactor.close_listeners_keeping_files()
    }
}

/// One extension's slot; the value is out while one of its operations
/// runs ([`Reactor::with_ext`]).
pub(super) struct ExtSlot {
    type_id: TypeId,
    value: Option<Box<dyn Extension>>,
}

/// What a plug-in source's descriptor is ready for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Readiness {
    /// Readable, or hung up, or failed: a read tells which.
    pub(super) readable: bool,
    pub(super) writable: bool,
}

/// What a plug-in source does when its descriptor is ready, and when the
/// reactor shuts down while it is registered.
pub(super) struct SourceHooks {
    pub(super) ready: fn(&mut Reactor, Token, Readiness),
    /// The reactor is shutting down: end the source (remove it).
    pub(super) shutdown: fn(&mut Reactor, Token),
}

/// A descriptor a feature registered, with its state.
pub(super) struct PluginSource {
    // Read only by watch: never read in a core-only build.
    #[allow(dead_code)]
    pub(super) state: Box<dyn Any>,
    pub(super) hooks: &'static SourceHooks,
}

/// What a feature does in place of parts of a connection's I/O.
///
/// Every write to a hooked connection goes through its outbound queue
/// (`Conn::write_waits`), never straight to the socket, so that a filter
/// sees all of it.
pub(super) struct ConnHooks {
    /// The connection is readable: the hook reads it itself (with the
    /// core's one read step, `Reactor::read_step`), or leaves the read to
    /// the core, which gives the bytes to the filter or `receive_data`.
    pub(super) readable: fn(&mut Reactor, Token) -> ReadBy,
    /// The connection got a writable edge: the core flushes its outbound
    /// queue now, or the feature's own bytes still go first.
    pub(super) writable: fn(&mut Reactor, Token) -> QueueFlush,
    /// The outbound queue's size (with staged bytes) was just checked.
    pub(super) queue_checked: fn(&mut Reactor, Token, usize),
    /// The connection is being removed, before its `unbind`; its hook
    /// state ([`Reactor::hook_conn_with`]) is already gone.
    pub(super) closing: fn(&mut Reactor, Token),
    /// A filter between the socket and the handler, if the feature is one.
    pub(super) filter: Option<&'static FilterHooks>,
}

/// A filter between a connection's socket and its handler: a protocol
/// layer below the handler's bytes (encryption, say) that the handler does
/// not see. Its state is the connection's hook state.
pub(super) struct FilterHooks {
    /// Bytes were read from the socket: turn them into the handler's bytes
    /// and give those to [`Reactor::deliver`] (in one call per read, as
    /// the core does), or close the connection. The core has done the
    /// read's bookkeeping (end of stream, fairness, activity) already.
    pub(super) input: fn(&mut Reactor, Token, &[u8]),
    /// The outbound queue holds bytes and the socket is not known to be
    /// full: take what the socket can carry from the queue
    /// (`OutBuf::flush` with a sink of the filter's) and write it. Set
    /// `Flags::WRITE_BLOCKED` when the socket is full; the writable edge
    /// then goes to [`ConnHooks::writable`]. The core checks the water
    /// marks afterwards.
    pub(super) output: fn(&mut Reactor, Token),
    /// Bytes taken from the queue and not yet written to the socket (more
    /// when the filter writes bytes of its own, as a closing message): the
    /// core counts them as queued, for `outbound_len`, the water marks and
    /// the closes that wait for the queue to drain.
    pub(super) held: fn(&Reactor, Token) -> usize,
    /// The connection is being closed by this side before its queue
    /// drained (an inactivity timeout, a stop's deadline, a
    /// `close_connection`): say goodbye in the protocol's own terms (TLS
    /// `close_notify`) with a best-effort write that never waits.
    pub(super) farewell: fn(&mut Reactor, Token),
}

/// The reactor's buffers for filtered connections, one of each for all
/// of them as the read buffer is, so that an idle filtered connection
/// holds none: one read's decoded bytes, lent out while they are
/// delivered, and one write's encoded bytes, lent to a connection until
/// they are written. A field, not an extension: a request borrows each
/// once or twice, and an extension's lookup cost 3 % of an HTTPS
/// request's instructions.
#[derive(Default)]
pub(super) struct FilterScratch {
    pub(super) decoded: Vec<u8>,
    pub(super) encoded: Vec<u8>,
}

/// A hooked connection's hooks and the feature's state for it.
pub(super) struct Hooked {
    hooks: &'static ConnHooks,
    state: Box<dyn Any>,
}

impl Reactor {
    /// This reactor's extension state ([`Extension`]): per-reactor values
    /// of plug-ins, looked up by type; and the few services that only
    /// extensions use (their own channels, inherited listeners).
    pub fn extensions(&mut self) -> Extensions<'_> {
        Extensions { reactor: self }
    }

    fn ext_index(&self, id: TypeId) -> Option<usize> {
        self.exts.iter().position(|e| e.type_id == id)
    }

    /// The extension state of type `T`, if set (and not out in
    /// [`Reactor::with_ext`]).
    pub(super) fn ext<T: Extension>(&self) -> Option<&T> {
        let i = self.ext_index(TypeId::of::<T>())?;
        self.exts[i].value.as_deref()?.as_any().downcast_ref()
    }

    /// [`Reactor::ext`], mutably.
    pub(super) fn ext_mut<T: Extension>(&mut self) -> Option<&mut T> {
        let i = self.ext_index(TypeId::of::<T>())?;
        self.exts[i]
            .value
            .as_deref_mut()?
            .as_any_mut()
            .downcast_mut()
    }

    /// The extension state of type `T`, made with `T::default()` the first
    /// time.
    pub(super) fn ext_or_default<T: Extension + Default>(&mut self) -> &mut T {
        if self.ext_index(TypeId::of::<T>()).is_none() {
            self.set_ext(T::default());
        }
        self.ext_mut().expect("just set, and not taken out")
    }

    /// Sets (or replaces) the extension state of type `T`.
    pub(super) fn set_ext<T: Extension>(&mut self, value: T) {
        let value: Box<dyn Extension> = Box::new(value);
        match self.ext_index(TypeId::of::<T>()) {
            Some(i) => self.exts[i].value = Some(value),
            None => self.exts.push(ExtSlot {
                type_id: TypeId::of::<T>(),
                value: Some(value),
            }),
        }
    }

    /// Runs `f` with the extension state of type `T` taken out of the
    /// reactor, so that `f` may use both; `None` if there is none.
    pub(super) fn with_ext<T: Extension, R>(
        &mut self,
        f: impl FnOnce(&mut T, &mut Reactor) -> R,
    ) -> Option<R> {
        let i = self.ext_index(TypeId::of::<T>())?;
        let mut value = self.exts[i].value.take()?;
        let result = value
            .as_mut()
            .as_any_mut()
            .downcast_mut()
            .map(|t| f(t, self));
        // `f` may have added extensions, never removed one: `i` holds.
        self.exts[i].value = Some(value);
        result
    }

    /// Calls `f` on every extension, each taken out while it runs.
    pub(super) fn each_ext(&mut self, mut f: impl FnMut(&mut dyn Extension, &mut Reactor)) {
        for i in 0..self.exts.len() {
            let Some(mut value) = self.exts[i].value.take() else {
                continue;
            };
            f(value.as_mut(), self);
            self.exts[i].value = Some(value);
        }
    }

    /// Registers a plug-in source: `state` (the feature's, reached with
    /// [`Reactor::plugin_mut`]) joins the slab, and the descriptor `fd`
    /// finds in it is registered for `interest` (`trigger`ed), its
    /// readiness going to `hooks.ready` with the source's token. The
    /// feature owns the descriptor and removes the source with
    /// [`Reactor::remove_plugin`].
    ///
    /// # Errors
    /// The selector refused the descriptor.
    // Called only by watch: uncalled in a core-only build.
    #[allow(dead_code)]
    pub(super) fn add_plugin_source<T: Any>(
        &mut self,
        state: T,
        fd: impl FnOnce(&T) -> BorrowedFd<'_>,
        interest: Interest,
        trigger: Trigger,
        hooks: &'static SourceHooks,
    ) -> io::Result<Token> {
        let state: Box<dyn Any> = Box::new(state);
        let token = self
            .sources
            .insert(Source::Plugin(Box::new(PluginSource { state, hooks })));
        let registered = match self.sources.get(token) {
            Some(Source::Plugin(p)) => match p.state.downcast_ref::<T>() {
                Some(state) => self
                    .selector
                    .register_with(fd(state), token, interest, trigger),
                None => unreachable!("just inserted as a T"),
            },
            _ => unreachable!("just inserted"),
        };
        if let Err(e) = registered {
            self.sources.remove(token);
            return Err(e);
        }
        Ok(token)
    }

    /// The state of plug-in source `token`, if it is a `T`.
    // Called only by watch: uncalled in a core-only build.
    #[allow(dead_code)]
    pub(super) fn plugin<T: Any>(&self, token: Token) -> Option<&T> {
        match self.sources.get(token) {
            Some(Source::Plugin(p)) => p.state.downcast_ref(),
            _ => None,
        }
    }

    /// [`Reactor::plugin`], mutably.
    // Called only by watch: uncalled in a core-only build.
    #[allow(dead_code)]
    pub(super) fn plugin_mut<T: Any>(&mut self, token: Token) -> Option<&mut T> {
        match self.sources.get_mut(token) {
            Some(Source::Plugin(p)) => p.state.downcast_mut(),
            _ => None,
        }
    }

    /// Changes what plug-in source `token`'s descriptor `fd` is watched
    /// for.
    ///
    /// # Errors
    /// The selector refused the change.
    // Called only by watch: uncalled in a core-only build.
    #[allow(dead_code)]
    pub(super) fn set_plugin_interest(
        &self,
        token: Token,
        fd: BorrowedFd<'_>,
        interest: Interest,
        trigger: Trigger,
    ) -> io::Result<()> {
        self.selector.reregister_with(fd, token, interest, trigger)
    }

    /// Takes a removed plug-in source's descriptor out of the selector
    /// (one that lives on after the source: closing it would do that).
    ///
    /// # Errors
    /// The selector did not know the descriptor.
    // Called only by watch: uncalled in a core-only build.
    #[allow(dead_code)]
    pub(super) fn deregister_plugin_fd(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.selector.deregister(fd)
    }

    /// Removes plug-in source `token` if its state is a `T`, and returns
    /// the state. Its descriptor is the feature's to deregister or close.
    // Called only by watch: uncalled in a core-only build.
    #[allow(dead_code)]
    pub(super) fn remove_plugin<T: Any>(&mut self, token: Token) -> Option<Box<T>> {
        self.plugin::<T>(token)?;
        match self.sources.remove(token) {
            Some(Source::Plugin(p)) => p.state.downcast().ok(),
            _ => None,
        }
    }

    /// Lets `hooks` take over parts of connection `token`'s I/O, until
    /// [`Reactor::unhook_conn`] or the close, with the feature's state for
    /// the connection, reached with [`Reactor::hook_state_mut`] and dropped
    /// with the hooks.
    ///
    /// # Errors
    /// `NotConnected` for a closed connection; `AlreadyExists` if the
    /// connection is hooked already (a filter, a takeover).
    pub(super) fn hook_conn_with<T: Any>(
        &mut self,
        token: Token,
        hooks: &'static ConnHooks,
        state: T,
    ) -> io::Result<()> {
        let Some(c) = self.conn_mut(token) else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        if c.is_closed() {
            return Err(io::ErrorKind::NotConnected.into());
        }
        if c.is_hooked() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the connection's I/O is taken over already (a filter, a proxy)",
            ));
        }
        c.flags |= Flags::HOOKED;
        let state = Box::new(state);
        self.conn_hooks.insert(token, Hooked { hooks, state });
        Ok(())
    }

    /// Readies connection `token` for a filter (TLS, a user's): the running
    /// callback's staged bytes, sent before, go out (or join the queue)
    /// unfiltered first; then the connection must be open and not hooked.
    ///
    /// # Errors
    /// `NotConnected` if it is closing; `AlreadyExists` if a filter or a
    /// proxy has it.
    pub(super) fn prepare_filter(&mut self, token: Token) -> io::Result<()> {
        if self.in_callback_of(token) {
            self.flush_stage(token);
        }
        match self.conn(token) {
            Some(c) if !c.is_ending() => {}
            _ => return Err(io::ErrorKind::NotConnected.into()),
        }
        if self.conn_hooks.contains_key(&token) {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the connection has a filter (TLS, say) or a proxy already",
            ));
        }
        Ok(())
    }

    /// Gives connection `token`'s I/O back to the core.
    pub(super) fn unhook_conn(&mut self, token: Token) {
        if let Some(c) = self.conn_mut(token) {
            c.flags -= Flags::HOOKED;
        }
        self.conn_hooks.remove(&token);
    }

    /// The hooks of a connection flagged `HOOKED`.
    pub(super) fn hooks_of(&self, token: Token) -> Option<&'static ConnHooks> {
        self.conn_hooks.get(&token).map(|h| h.hooks)
    }

    /// Removes the hooks of a closing connection, with their state.
    pub(super) fn take_hooks(&mut self, token: Token) -> Option<&'static ConnHooks> {
        self.conn_hooks.remove(&token).map(|h| h.hooks)
    }

    /// The feature's state for hooked connection `token`, if it is a `T`.
    pub(super) fn hook_state<T: Any>(&self, token: Token) -> Option<&T> {
        self.conn_hooks.get(&token)?.state.downcast_ref()
    }

    /// [`Reactor::hook_state`], mutably.
    pub(super) fn hook_state_mut<T: Any>(&mut self, token: Token) -> Option<&mut T> {
        self.conn_hooks.get_mut(&token)?.state.downcast_mut()
    }

    /// Connection `token` and the feature's state for it, borrowed
    /// together (a filter writing the connection's queue to its socket).
    pub(super) fn conn_and_hook_state<T: Any>(
        &mut self,
        token: Token,
    ) -> Option<(&mut Conn, &mut T)> {
        let state = self.conn_hooks.get_mut(&token)?.state.downcast_mut()?;
        match self.sources.get_mut(token) {
            Some(Source::Conn(c)) => Some((c, state)),
            _ => None,
        }
    }

    /// Calls handler method `f` of connection `token` as the core does:
    /// not while another callback runs, and with the callback's output
    /// written when it returns. `None` if the connection is closed.
    pub(super) fn call_handler<R>(
        &mut self,
        token: Token,
        f: impl FnOnce(&mut dyn Handler, &mut Connection<'_>) -> R,
    ) -> Option<R> {
        self.call(token, f)
    }

    /// A filter's bytes for the handler: calls `receive_data` with them.
    pub(super) fn deliver(&mut self, token: Token, data: &[u8]) {
        self.call(token, |h, conn| h.receive_data(conn, data));
    }

    /// A filter's stream for connection `token` ended (its protocol's own
    /// end-of-stream message came): as an end of stream read from the
    /// socket, no more reads, and `receive_eof` follows.
    pub(super) fn end_of_input(&mut self, token: Token) {
        let Some(c) = self.conn_mut(token) else {
            return;
        };
        if c.flags.contains(Flags::EOF_READ) || c.is_closed() {
            return;
        }
        c.flags -= Flags::READ_READY;
        c.flags |= Flags::EOF_READ;
        self.pending.push_back((token, Pending::Eof));
    }

    /// The buffers filtered connections borrow.
    pub(super) fn filter_scratch(&mut self) -> &mut FilterScratch {
        &mut self.filter_scratch
    }

    /// Whether a callback of connection `token` is running (its output is
    /// still being staged, and its closes wait for it to return).
    pub(super) fn in_callback_of(&self, token: Token) -> bool {
        self.current == Some(token)
    }

    /// Bytes read from hooked connection `token`: through its filter, or
    /// straight to `receive_data` if it has none.
    pub(super) fn hooked_input(&mut self, token: Token, data: &[u8]) {
        match self.hooks_of(token).and_then(|h| h.filter) {
            Some(filter) => (filter.input)(self, token, data),
            None => self.deliver(token, data),
        }
    }

    /// Bytes a hooked connection's filter holds, counted as queued.
    pub(super) fn filter_held(&self, token: Token) -> usize {
        match self.hooks_of(token).and_then(|h| h.filter) {
            Some(filter) => (filter.held)(self, token),
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Count(u32);
    impl Extension for Count {}

    #[derive(Default)]
    struct Other;
    impl Extension for Other {}

    #[test]
    fn extension_state_is_found_by_type_and_lent_out() {
        let mut r = Reactor::new().unwrap();
        assert!(r.ext::<Count>().is_none());
        r.ext_or_default::<Count>().0 += 1;
        r.set_ext(Other);
        // Taken out while `f` runs, put back after.
        let seen = r.with_ext(|c: &mut Count, r| {
            assert!(r.ext::<Count>().is_none(), "lent out");
            assert!(r.ext::<Other>().is_some());
            c.0 += 1;
            c.0
        });
        assert_eq!(seen, Some(2));
        assert_eq!(r.ext::<Count>().map(|c| c.0), Some(2));
        let mut visited = 0;
        r.each_ext(|ext, _| {
            if let Some(c) = ext.as_any_mut().downcast_mut::<Count>() {
                c.0 += 10;
            }
            visited += 1;
        });
        assert_eq!((visited, r.ext::<Count>().map(|c| c.0)), (2, Some(12)));
    }
}
