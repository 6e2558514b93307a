//! Blocking work on a thread pool, with its result handed back to the
//! reactor — EventMachine's `EM.defer(operation, callback)`.
//!
//! This module owns the pool's threads and its job queue. Work never runs
//! on the reactor thread, and callbacks never run anywhere but on it: they
//! travel back only through [`ReactorHandle::schedule`], which wakes the
//! loop. A job's panic is caught on the pool thread and reported to its
//! callback; it must never take a pool thread down or leave a callback
//! uncalled while the reactor runs. Nothing here blocks the reactor except
//! dropping a [`Defer`], which waits for the queued work (see
//! [`Defer::detach`] for a pool that must go away without waiting).
//!
//! ```
//! use packet::defer::Defer;
//! use packet::Reactor;
//!
//! let mut reactor = Reactor::new()?;
//! let pool = Defer::new(reactor.handle(), 2)?;
//! pool.defer(
//!     || (1..=20u64).product::<u64>(), // runs on a pool thread
//!     |reactor, result| {
//!         // back on the reactor thread
//!         assert_eq!(result, Ok(2_432_902_008_176_640_000));
//!         reactor.stop();
//!     },
//! );
//! reactor.run_until_stopped()?;
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! From a handler, keep the pool where every handler can reach it (an
//! `Rc` or `Arc` captured by the server's factory) and send the result to
//! the connection by id: the connection may have closed by the time the
//! callback runs, and [`Reactor::connection`] then returns `None`.
//!
//! ```
//! use std::io::{BufRead, BufReader, Write};
//! use std::net::TcpStream;
//! use std::rc::Rc;
//!
//! use packet::defer::Defer;
//! use packet::{Connection, Handler, Reactor};
//!
//! /// Answers each request with the length of its line, computed "slowly".
//! struct Measure(Rc<Defer>);
//!
//! impl Handler for Measure {
//!     fn receive_data(&mut self, conn: &mut Connection<'_>, data: &[u8]) {
//!         let id = conn.id();
//!         let line = data.to_vec();
//!         self.0.defer(
//!             move || line.trim_ascii().len(),
//!             move |reactor, len| {
//!                 let reply = match len {
//!                     Ok(len) => format!("{len}\n"),
//!                     Err(e) => format!("error: {e}\n"),
//!                 };
//!                 if let Some(mut conn) = reactor.connection(id) {
//!                     conn.send_data(reply.as_bytes());
//!                 }
//!             },
//!         );
//!     }
//! }
//!
//! let mut reactor = Reactor::new()?;
//! let pool = Rc::new(Defer::new(reactor.handle(), 2)?);
//! let server = reactor.start_server("127.0.0.1:0", move || Measure(pool.clone()))?;
//! let addr = reactor.server_addr(server)?.as_inet().unwrap();
//! let handle = reactor.handle();
//! let client = std::thread::spawn(move || {
//!     let reply = (|| -> std::io::Result<String> {
//!         let mut stream = TcpStream::connect(addr)?;
//!         stream.set_read_timeout(Some(std::time::Duration::from_secs(20)))?;
//!         stream.write_all(b"hello\n")?;
//!         let mut reply = String::new();
//!         BufReader::new(stream).read_line(&mut reply)?;
//!         Ok(reply)
//!     })();
//!     handle.stop();
//!     reply
//! });
//! reactor.run_until_stopped()?;
//! assert_eq!(client.join().unwrap()?, "5\n");
//! # Ok::<(), std::io::Error>(())
//! ```

use std::any::Any;
use std::fmt;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use crate::reactor::{Reactor, ReactorHandle};

/// Why a deferred job produced no result.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeferError {
    /// The work panicked; this is the panic's message (or a placeholder
    /// when the payload was not a string). The panic hook has already
    /// printed it, as for any panic.
    Panicked(String),
}

impl fmt::Display for DeferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeferError::Panicked(msg) => write!(f, "deferred work panicked: {msg}"),
        }
    }
}

impl std::error::Error for DeferError {}

type Job = Box<dyn FnOnce() + Send>;

/// A pool of threads for blocking work, whose results come back to one
/// reactor — EventMachine's `EM.defer`.
///
/// [`Defer::defer`] queues `work` for the first idle pool thread; when it
/// returns, `callback` runs on the reactor's thread (at the start of a turn,
/// like [`ReactorHandle::schedule`]) with its result, or with
/// [`DeferError::Panicked`] if it panicked. The thread that caught the panic
/// goes on with the next job. Callbacks run in the order their work
/// finished, which with more than one thread need not be the order of the
/// `defer` calls.
///
/// The pool is `Send` and `Sync`: work may be deferred from any thread,
/// callbacks still run on the reactor. Callbacks of work that finishes after
/// the reactor stopped are dropped without being called, as everything
/// scheduled on a stopped reactor is.
///
/// # The queue is unbounded
///
/// `defer` is called from reactor callbacks, which must not block, so it
/// never waits for room; and a "full" error would have to be handled at
/// every call site, where all a handler can do about it is what it could do
/// beforehand: count. [`Defer::pending`] says how much work is queued or
/// running, for callers that need a bound (stop reading from a client,
/// answer "busy") — the memory is theirs to limit.
///
/// # Dropping
///
/// Dropping the pool closes its queue, lets its threads finish every job
/// already queued (their callbacks are scheduled as usual) and joins them:
/// no thread outlives the pool. That blocks the dropping thread for as long
/// as the queued work takes — on the reactor thread, the loop stalls — and
/// deadlocks if queued work waits for the dropping thread. Use
/// [`Defer::detach`] there instead. Rust cannot stop a running thread, so
/// there is no way to abandon work already started.
///
/// Panics are caught with `catch_unwind`: a binary built with
/// `panic = "abort"` aborts on a panicking job instead.
pub struct Defer {
    /// `None` once closed.
    jobs: Option<Sender<Job>>,
    /// Kept as well as by the threads, so that sending never fails.
    _queue: Arc<Mutex<Receiver<Job>>>,
    threads: Vec<JoinHandle<()>>,
    handle: ReactorHandle,
    pending: Arc<AtomicUsize>,
}

impl fmt::Debug for Defer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Defer")
            .field("threads", &self.threads.len())
            .field("pending", &self.pending())
            .finish_non_exhaustive()
    }
}

impl Defer {
    /// Starts `threads` pool threads (at least one), named `packet-defer`,
    /// whose callbacks go to the reactor behind `handle`. EventMachine's
    /// default is 20; blocking I/O wants about as many threads as requests
    /// it should overlap, CPU work about one per core.
    ///
    /// # Errors
    /// A thread could not be spawned (the ones already started are joined).
    pub fn new(handle: ReactorHandle, threads: usize) -> io::Result<Defer> {
        let (tx, rx) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(rx));
        let mut pool = Defer {
            jobs: Some(tx),
            _queue: queue.clone(),
            threads: Vec::new(),
            handle,
            pending: Arc::new(AtomicUsize::new(0)),
        };
        for _ in 0..threads.max(1) {
            let queue = queue.clone();
            let thread = std::thread::Builder::new()
                .name("packet-defer".into())
                .spawn(move || work_loop(&queue))?;
            pool.threads.push(thread);
        }
        Ok(pool)
    }

    /// Runs `work` on a pool thread, then `callback` on the reactor thread
    /// with what it returned, or with the panic it raised.
    pub fn defer<R: Send + 'static>(
        &self,
        work: impl FnOnce() -> R + Send + 'static,
        callback: impl FnOnce(&mut Reactor, Result<R, DeferError>) + Send + 'static,
    ) {
        let Some(jobs) = &self.jobs else {
            return; // only while dropping, when nobody can call this
        };
        let handle = self.handle.clone();
        let pending = self.pending.clone();
        pending.fetch_add(1, Ordering::Relaxed);
        let job: Job = Box::new(move || {
            let result = catch_unwind(AssertUnwindSafe(work)).map_err(|payload| {
                let msg = panic_message(payload.as_ref());
                // A payload whose `Drop` panics must not take the thread.
                let _ = catch_unwind(AssertUnwindSafe(move || drop(payload)));
                DeferError::Panicked(msg)
            });
            pending.fetch_sub(1, Ordering::Relaxed);
            handle.schedule(move |reactor| callback(reactor, result));
        });
        // Cannot fail: this pool holds a receiver until it is dropped.
        let _ = jobs.send(job);
    }

    /// Jobs deferred whose work has not finished yet: queued or running.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// The number of pool threads.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// Closes the pool without waiting: its threads finish the queued work
    /// (callbacks are scheduled as usual) and then exit on their own. For
    /// the reactor thread, which must not block on a drop.
    pub fn detach(mut self) {
        self.jobs = None;
        // Dropping a `JoinHandle` detaches its thread.
        self.threads.clear();
    }
}

impl Drop for Defer {
    fn drop(&mut self) {
        // The threads see the queue closed once it is empty.
        self.jobs = None;
        let me = std::thread::current().id();
        for thread in self.threads.drain(..) {
            // The last reference to the pool may be dropped by one of its
            // own jobs: that thread exits by itself after the job.
            if thread.thread().id() == me {
                continue;
            }
            // A pool thread cannot panic (jobs catch their panics).
            let _ = thread.join();
        }
    }
}

/// One pool thread: runs jobs until the queue is closed and empty.
fn work_loop(queue: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for a job, never while one
        // runs; nothing that holds it can panic, but a poisoned lock is
        // still a working queue.
        let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = job else {
            return;
        };
        // The job catches the work's panics itself; this catches anything
        // else (the callback's scheduling), so the thread survives.
        let _ = catch_unwind(AssertUnwindSafe(job));
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic payload that is not a string)".to_string()
    }
}
