//! Message passing between the handlers of one reactor: [`Channel`]
//! (publish/subscribe, EventMachine's `EM::Channel`) and [`Queue`] (items
//! handed to waiting consumers one at a time, `EM::Queue`).
//!
//! This module owns the subscriber lists and item queues, and when their
//! callbacks run. Callbacks always run from a closure queued with
//! [`Reactor::next_turn`], never from inside `push`, `pop` or `subscribe`:
//! so a callback may push, pop, subscribe and unsubscribe on the very
//! channel or queue that called it, and every callback gets the reactor as
//! any other reactor callback does. Nothing here may block, hold a borrow of
//! its state while user code runs (a callback, or the `Drop` of a removed
//! one), or be shared between threads: both types are `!Send` and belong to
//! the reactor thread that created them. To feed one from another thread,
//! push from a closure given to [`ReactorHandle::schedule`] (see
//! [`crate::defer`] for work on a thread pool).
//!
//! # A chat room
//!
//! Every connection subscribes to one channel when it starts, pushes each
//! line it receives, and unsubscribes when it ends; the channel sends every
//! line to every member, the sender included.
//!
//! ```
//! use std::io::{BufRead, BufReader, Write};
//! use std::net::TcpStream;
//! use std::rc::Rc;
//! use std::time::Duration;
//!
//! use packet::channel::{Channel, SubscriptionId};
//! use packet::{CloseReason, Connection, Handler, Reactor};
//!
//! struct Member {
//!     room: Channel<Rc<[u8]>>,
//!     sub: Option<SubscriptionId>,
//!     partial: Vec<u8>,
//! }
//!
//! impl Handler for Member {
//!     fn post_init(&mut self, conn: &mut Connection<'_>) {
//!         let me = conn.id();
//!         self.sub = Some(self.room.subscribe(move |reactor, line: &Rc<[u8]>| {
//!             if let Some(mut conn) = reactor.connection(me) {
//!                 conn.send_data(line);
//!             }
//!         }));
//!         // Tells the client it is in the room (the test below waits for it).
//!         conn.send_data(b"welcome\n");
//!     }
//!
//!     fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
//!         self.partial.extend_from_slice(data);
//!         while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
//!             let line: Rc<[u8]> = self.partial.drain(..=end).collect();
//!             self.room.push(conn.reactor(), line);
//!         }
//!     }
//!
//!     fn unbind(&mut self, _conn: &mut Connection<'_>, _reason: &CloseReason) {
//!         if let Some(sub) = self.sub.take() {
//!             self.room.unsubscribe(sub);
//!         }
//!     }
//! }
//!
//! let mut reactor = Reactor::new()?;
//! let room = Channel::new();
//! let server = reactor.start_server("127.0.0.1:0", move || Member {
//!     room: room.clone(),
//!     sub: None,
//!     partial: Vec::new(),
//! })?;
//! let addr = reactor.server_addr(server)?.as_inet().unwrap();
//!
//! // Two blocking clients on another thread; the reactor stops when they
//! // are done, whatever happened.
//! let handle = reactor.handle();
//! let clients = std::thread::spawn(move || {
//!     let result = (|| -> std::io::Result<Vec<String>> {
//!         let mut readers = Vec::new();
//!         for _ in 0..2 {
//!             let stream = TcpStream::connect(addr)?;
//!             stream.set_read_timeout(Some(Duration::from_secs(20)))?;
//!             let mut reader = BufReader::new(stream);
//!             let mut line = String::new();
//!             reader.read_line(&mut line)?; // "welcome": subscribed
//!             readers.push(reader);
//!         }
//!         readers[0].get_mut().write_all(b"hello, room\n")?;
//!         let mut got = Vec::new();
//!         for reader in &mut readers {
//!             let mut line = String::new();
//!             reader.read_line(&mut line)?;
//!             got.push(line);
//!         }
//!         Ok(got)
//!     })();
//!     handle.stop();
//!     result
//! });
//! reactor.run_until_stopped()?;
//! let got = clients.join().unwrap()?;
//! assert_eq!(got, ["hello, room\n", "hello, room\n"]);
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! [`ReactorHandle::schedule`]: crate::ReactorHandle::schedule

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::reactor::Reactor;

/// Subscription ids are unique in the process, not just in their channel,
/// so an id given to the wrong channel matches nothing there.
static NEXT_SUBSCRIPTION: AtomicU64 = AtomicU64::new(1);

/// Identifies a subscription (or a pending [`Channel::pop`]) for
/// [`Channel::unsubscribe`].
///
/// Ids are unique within the process and never reused, so unsubscribing
/// twice, or from another channel, does nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriptionId(u64);

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sub#{}", self.0)
    }
}

type EveryFn<T> = Box<dyn FnMut(&mut Reactor, &T)>;
type OnceFn<T> = Box<dyn FnOnce(&mut Reactor, &T)>;

enum Subscriber<T> {
    Every(EveryFn<T>),
    /// From `pop`: removed before its one call.
    Once(OnceFn<T>),
}

/// Subscribers by id, which is also subscription order. A slot is `None`
/// while its callback runs.
type Subscribers<T> = BTreeMap<u64, Option<Subscriber<T>>>;

/// Publish/subscribe on one reactor thread: every message pushed reaches
/// every subscriber, in the order pushed — EventMachine's `EM::Channel`.
///
/// A channel is a cheap handle (an `Rc`): clone it into every handler that
/// publishes or subscribes. Messages are delivered by reference, so `T`
/// need not be `Clone`; for bytes sent to many connections an `Rc<[u8]>`
/// is pushed once and shared.
///
/// # When messages are delivered
///
/// [`Channel::push`] queues the delivery with [`Reactor::next_turn`] and
/// returns; subscribers are called at the start of the reactor's next turn,
/// one message at a time, each message to every subscriber (in subscription
/// order) before the next message. EventMachine's `push` goes through
/// `EM.schedule`, which on the reactor thread calls the subscribers at once;
/// Packet always waits for the next turn, because then no subscriber is ever
/// called from inside another's callback (or from inside the pushing
/// handler's `receive_data`):
///
/// - a callback may push: the message is delivered after the current one
///   has reached everybody, never recursively, so a subscriber that answers
///   every message cannot grow the stack;
/// - a callback may unsubscribe itself or others: a subscriber unsubscribed
///   before its turn for a message does not get it (nor any later one);
/// - a callback may subscribe: the new subscriber gets the messages whose
///   delivery has not started yet, not the one being delivered.
///
/// Who receives a message is decided when it is delivered, not when it is
/// pushed. Messages still queued when the reactor stops are dropped.
///
/// # Cycles
///
/// A subscriber that captures a clone of its own channel (to push or
/// unsubscribe from its callback) forms an `Rc` cycle that lives until it
/// is unsubscribed: unsubscribe in `unbind`, or call
/// [`Channel::unsubscribe_all`] when the channel is done.
///
/// ```
/// use std::cell::RefCell;
/// use std::rc::Rc;
///
/// use packet::channel::Channel;
/// use packet::Reactor;
///
/// let mut reactor = Reactor::new()?;
/// let news = Channel::new();
/// let seen = Rc::new(RefCell::new(Vec::new()));
/// let log = seen.clone();
/// news.subscribe(move |reactor, headline: &String| {
///     log.borrow_mut().push(headline.clone());
///     if headline == "last" {
///         reactor.stop();
///     }
/// });
/// news.push(&mut reactor, "first".to_string());
/// news.push(&mut reactor, "last".to_string());
/// assert!(seen.borrow().is_empty()); // delivered on the next turn
/// reactor.run_until_stopped()?;
/// assert_eq!(*seen.borrow(), ["first", "last"]);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Channel<T> {
    subs: Rc<RefCell<Subscribers<T>>>,
}

impl<T> Clone for Channel<T> {
    fn clone(&self) -> Self {
        Channel {
            subs: self.subs.clone(),
        }
    }
}

impl<T> Default for Channel<T> {
    fn default() -> Self {
        Channel {
            subs: Rc::new(RefCell::new(BTreeMap::new())),
        }
    }
}

impl<T> fmt::Debug for Channel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("subscribers", &self.subs.borrow().len())
            .finish()
    }
}

impl<T: 'static> Channel<T> {
    /// A channel with no subscribers.
    pub fn new() -> Channel<T> {
        Channel::default()
    }

    /// Calls `f` with every message delivered from now on, until
    /// [`Channel::unsubscribe`]. Subscribing never delivers anything by
    /// itself (a channel keeps no history).
    pub fn subscribe(&self, f: impl FnMut(&mut Reactor, &T) + 'static) -> SubscriptionId {
        self.insert(Subscriber::Every(Box::new(f)))
    }

    /// Calls `f` with the next message delivered, once, then forgets it —
    /// EventMachine's `Channel#pop`. Until then it counts as a subscriber,
    /// and the returned id cancels it with [`Channel::unsubscribe`].
    pub fn pop(&self, f: impl FnOnce(&mut Reactor, &T) + 'static) -> SubscriptionId {
        self.insert(Subscriber::Once(Box::new(f)))
    }

    fn insert(&self, sub: Subscriber<T>) -> SubscriptionId {
        let id = NEXT_SUBSCRIPTION.fetch_add(1, Ordering::Relaxed);
        self.subs.borrow_mut().insert(id, Some(sub));
        SubscriptionId(id)
    }

    /// Stops calling subscription `id` (or cancels a pending
    /// [`Channel::pop`]); it gets no further message, even one already
    /// pushed. Works from inside any callback, the subscriber's own
    /// included. Returns whether it was subscribed.
    pub fn unsubscribe(&self, id: SubscriptionId) -> bool {
        let removed = self.subs.borrow_mut().remove(&id.0);
        // Dropped with the borrow released: the callback's captures may
        // touch this channel in their `Drop`.
        removed.is_some()
    }

    /// Removes every subscriber (and pending pop), breaking any `Rc` cycle
    /// through their callbacks.
    pub fn unsubscribe_all(&self) {
        let removed = std::mem::take(&mut *self.subs.borrow_mut());
        drop(removed);
    }

    /// Subscribers, pending pops included — EventMachine's
    /// `num_subscribers`.
    pub fn subscriber_count(&self) -> usize {
        self.subs.borrow().len()
    }

    /// Publishes `msg`: it reaches every subscriber on the reactor's next
    /// turn (see [When messages are delivered](Channel#when-messages-are-delivered)).
    /// Messages are delivered in the order they are pushed.
    pub fn push(&self, reactor: &mut Reactor, msg: T) {
        let channel = self.clone();
        reactor.next_turn(move |reactor| channel.deliver(reactor, &msg));
    }

    fn deliver(&self, reactor: &mut Reactor, msg: &T) {
        // Who is subscribed as delivery starts; each is checked again just
        // before its call, since an earlier callback may unsubscribe it.
        let ids: Vec<u64> = self.subs.borrow().keys().copied().collect();
        for id in ids {
            let taken = self.subs.borrow_mut().get_mut(&id).and_then(Option::take);
            match taken {
                Some(Subscriber::Every(mut f)) => {
                    f(reactor, msg);
                    // Still subscribed (it may have unsubscribed itself):
                    // put it back.
                    if let Some(slot) = self.subs.borrow_mut().get_mut(&id) {
                        *slot = Some(Subscriber::Every(f));
                    }
                }
                Some(Subscriber::Once(f)) => {
                    let slot = self.subs.borrow_mut().remove(&id);
                    drop(slot);
                    f(reactor, msg);
                }
                // Unsubscribed by an earlier callback of this delivery.
                None => {}
            }
        }
    }
}

type PopFn<T> = Box<dyn FnOnce(&mut Reactor, T)>;

struct QueueState<T> {
    items: VecDeque<T>,
    waiting: VecDeque<PopFn<T>>,
    /// A drain is queued with `next_turn`.
    drain_queued: bool,
}

/// A FIFO of items for consumers that wait for them, on one reactor
/// thread — EventMachine's `EM::Queue`.
///
/// [`Queue::push`] adds an item; [`Queue::pop`] asks for one, and its
/// callback runs once an item is available: always on a later turn of the
/// reactor, never inside `push` or `pop`, even when an item is there
/// already. Items go to waiting consumers first come, first served: the
/// oldest item to the oldest waiting `pop`. Each `pop` gets exactly one
/// item; to consume forever, pop again from the callback (which then runs
/// on a later turn, so a steady supply of items cannot starve the loop's
/// I/O).
///
/// A queue is a cheap handle (an `Rc`): clone it into producers and
/// consumers. Items and waiting consumers left when the reactor stops stay
/// in the queue: pops and pushes on a later run serve them.
///
/// ```
/// use std::cell::RefCell;
/// use std::rc::Rc;
///
/// use packet::channel::Queue;
/// use packet::Reactor;
///
/// let mut reactor = Reactor::new()?;
/// let jobs = Queue::new();
/// let done = Rc::new(RefCell::new(Vec::new()));
/// let log = done.clone();
/// jobs.pop(&mut reactor, move |reactor, job: u32| {
///     log.borrow_mut().push(job);
///     reactor.stop();
/// });
/// assert_eq!(jobs.num_waiting(), 1);
/// jobs.push(&mut reactor, 7);
/// jobs.push(&mut reactor, 8);
/// reactor.run_until_stopped()?;
/// assert_eq!(*done.borrow(), [7]);
/// assert_eq!(jobs.len(), 1); // 8 waits for the next pop
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Queue<T> {
    state: Rc<RefCell<QueueState<T>>>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            state: self.state.clone(),
        }
    }
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue {
            state: Rc::new(RefCell::new(QueueState {
                items: VecDeque::new(),
                waiting: VecDeque::new(),
                drain_queued: false,
            })),
        }
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.state.borrow();
        f.debug_struct("Queue")
            .field("len", &s.items.len())
            .field("num_waiting", &s.waiting.len())
            .finish()
    }
}

impl<T: 'static> Queue<T> {
    /// An empty queue.
    pub fn new() -> Queue<T> {
        Queue::default()
    }

    /// Adds `item` at the back. If a consumer is waiting, the oldest one
    /// gets the oldest item on the reactor's next turn.
    pub fn push(&self, reactor: &mut Reactor, item: T) {
        let serve = {
            let mut s = self.state.borrow_mut();
            s.items.push_back(item);
            !s.waiting.is_empty()
        };
        if serve {
            self.queue_drain(reactor);
        }
    }

    /// Calls `f` with the next item, on a later turn, once one is available
    /// (EventMachine's `Queue#pop`). Consumers are served in the order they
    /// called `pop`.
    pub fn pop(&self, reactor: &mut Reactor, f: impl FnOnce(&mut Reactor, T) + 'static) {
        let serve = {
            let mut s = self.state.borrow_mut();
            s.waiting.push_back(Box::new(f));
            !s.items.is_empty()
        };
        if serve {
            self.queue_drain(reactor);
        }
    }

    /// Items not yet handed to a consumer (EventMachine's `size`).
    pub fn len(&self) -> usize {
        self.state.borrow().items.len()
    }

    /// Whether no item is waiting for a consumer.
    pub fn is_empty(&self) -> bool {
        self.state.borrow().items.is_empty()
    }

    /// Consumers waiting for an item: `pop` callbacks not yet called.
    pub fn num_waiting(&self) -> usize {
        self.state.borrow().waiting.len()
    }

    fn queue_drain(&self, reactor: &mut Reactor) {
        {
            let mut s = self.state.borrow_mut();
            if s.drain_queued {
                return;
            }
            s.drain_queued = true;
        }
        let drain = Drain(self.clone());
        reactor.next_turn(move |reactor| drain.run(reactor));
    }
}

/// A queued drain of a [`Queue`]. Dropping it clears the queue's
/// `drain_queued` flag, whether it ran or was dropped unrun because the
/// reactor stopped — so a queue whose drain was lost is served again on the
/// next push or pop.
struct Drain<T>(Queue<T>);

impl<T> Drop for Drain<T> {
    fn drop(&mut self) {
        // Never borrowed here: a drain is dropped by the reactor between
        // callbacks, or by `run` before any callback.
        if let Ok(mut s) = self.0.state.try_borrow_mut() {
            s.drain_queued = false;
        }
    }
}

impl<T: 'static> Drain<T> {
    /// Hands items to the consumers that were waiting when it started; ones
    /// that pop from their callbacks are served on a later turn.
    fn run(self, reactor: &mut Reactor) {
        let queue = self.0.clone();
        // Clears `drain_queued`: a push or pop from a callback below queues
        // the next drain.
        drop(self);
        let waiting = queue.state.borrow().waiting.len();
        for _ in 0..waiting {
            let next = {
                let mut s = queue.state.borrow_mut();
                if s.items.is_empty() || s.waiting.is_empty() {
                    None
                } else {
                    s.waiting.pop_front().zip(s.items.pop_front())
                }
            };
            let Some((f, item)) = next else {
                return;
            };
            f(reactor, item);
        }
        let more = {
            let s = queue.state.borrow();
            !s.items.is_empty() && !s.waiting.is_empty()
        };
        if more {
            queue.queue_drain(reactor);
        }
    }
}
