//! `Defer`: work on pool threads, callbacks on the reactor thread, panics
//! reported, and no thread outliving the pool.

mod util;

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::thread::{self, ThreadId};

use packet::defer::{Defer, DeferError};
use packet::Reactor;
use util::IO_TIMEOUT;

/// Runs `reactor` on this thread until something stops it; fails instead
/// of hanging if nothing does.
fn run_bounded(reactor: &mut Reactor) {
    let (tx, rx) = mpsc::channel();
    reactor.add_timer(IO_TIMEOUT, move |r| {
        let _ = tx.send(());
        r.stop();
    });
    reactor.run_until_stopped().unwrap();
    assert!(
        rx.try_recv().is_err(),
        "the reactor was not stopped by the test"
    );
}

/// Stops the reactor once `n` callbacks have counted themselves.
#[derive(Clone)]
struct Countdown(Arc<AtomicUsize>, usize);

impl Countdown {
    fn new(n: usize) -> Countdown {
        Countdown(Arc::default(), n)
    }
    fn tick(&self, r: &mut Reactor) {
        if self.0.fetch_add(1, Ordering::SeqCst) + 1 == self.1 {
            r.stop();
        }
    }
}

#[test]
fn hundred_jobs_on_four_threads_call_back_on_the_reactor_thread() {
    let mut reactor = Reactor::new().unwrap();
    let reactor_thread = thread::current().id();
    let pool = Defer::new(reactor.handle(), 4).unwrap();
    assert_eq!(pool.threads(), 4);
    let (tx, rx) = mpsc::channel();
    let done = Countdown::new(100);
    for i in 0..100u64 {
        let (tx, done) = (tx.clone(), done.clone());
        pool.defer(
            move || (i * i, thread::current().id()),
            move |r, result: Result<(u64, ThreadId), DeferError>| {
                let _ = tx.send((i, result, thread::current().id()));
                done.tick(r);
            },
        );
    }
    run_bounded(&mut reactor);
    drop(tx);
    let results: Vec<_> = rx.iter().collect();
    assert_eq!(results.len(), 100);
    let mut seen = BTreeSet::new();
    let mut workers = HashSet::new();
    for (i, result, callback_thread) in results {
        let (square, worker) = result.expect("no job panicked");
        assert_eq!(square, i * i);
        assert_ne!(worker, reactor_thread, "work ran on the reactor thread");
        assert_eq!(callback_thread, reactor_thread, "callback off the reactor");
        workers.insert(worker);
        seen.insert(i);
    }
    assert_eq!(seen.len(), 100);
    assert!(workers.len() <= 4);
    assert_eq!(pool.pending(), 0);
}

#[test]
fn a_panicking_job_is_reported_and_the_pool_keeps_working() {
    let mut reactor = Reactor::new().unwrap();
    // One thread: the jobs after the panics run on the very thread that
    // caught them.
    let pool = Defer::new(reactor.handle(), 0).unwrap();
    assert_eq!(pool.threads(), 1);
    let (tx, rx) = mpsc::channel();
    let done = Countdown::new(12);
    let report = move |tx: &mpsc::Sender<_>, r: &mut Reactor, what| {
        let _ = tx.send(what);
        done.tick(r);
    };
    let (t, rep) = (tx.clone(), report.clone());
    pool.defer(
        || -> ThreadId { panic!("boom {}", 7) },
        move |r, res| rep(&t, r, res.map(|_| "value".to_string())),
    );
    let (t, rep) = (tx.clone(), report.clone());
    pool.defer(
        || -> ThreadId { std::panic::panic_any(42u8) },
        move |r, res| rep(&t, r, res.map(|_| "value".to_string())),
    );
    let workers = Arc::new(std::sync::Mutex::new(HashSet::new()));
    for i in 0..10 {
        let (t, rep, w) = (tx.clone(), report.clone(), workers.clone());
        pool.defer(
            move || {
                w.lock().unwrap().insert(thread::current().id());
                format!("job {i}")
            },
            move |r, res| rep(&t, r, res),
        );
    }
    run_bounded(&mut reactor);
    drop(tx);
    let got: Vec<Result<String, DeferError>> = rx.iter().collect();
    assert_eq!(got[0], Err(DeferError::Panicked("boom 7".into())));
    assert!(matches!(&got[1], Err(DeferError::Panicked(_))));
    let expect: Vec<_> = (0..10).map(|i| Ok(format!("job {i}"))).collect();
    assert_eq!(got[2..], expect, "one thread: callbacks in order");
    assert_eq!(workers.lock().unwrap().len(), 1);
    assert_eq!(
        got[0].as_ref().unwrap_err().to_string(),
        "deferred work panicked: boom 7"
    );
}

thread_local! {
    /// Counts the thread's exit when a job installs it.
    static EXIT_WATCH: std::cell::RefCell<Option<ExitWatch>> = const { std::cell::RefCell::new(None) };
}

struct ExitWatch(mpsc::Sender<()>);

impl Drop for ExitWatch {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

/// Defers one job per pool thread (a barrier makes each thread take one)
/// that reports the thread's exit on the returned receiver.
fn watch_every_thread(pool: &Defer, threads: usize, done: &Countdown) -> mpsc::Receiver<()> {
    let (exited, exits) = mpsc::channel();
    let barrier = Arc::new(Barrier::new(threads));
    for _ in 0..threads {
        let (barrier, exited, done) = (barrier.clone(), exited.clone(), done.clone());
        pool.defer(
            move || {
                barrier.wait();
                EXIT_WATCH.with(|w| *w.borrow_mut() = Some(ExitWatch(exited)));
            },
            move |r, res| {
                res.unwrap();
                done.tick(r);
            },
        );
    }
    exits
}

#[test]
fn dropping_the_pool_runs_the_queued_work_and_joins_its_threads() {
    let mut reactor = Reactor::new().unwrap();
    let pool = Defer::new(reactor.handle(), 4).unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let done = Countdown::new(4 + 50);
    let exits = watch_every_thread(&pool, 4, &done);
    for _ in 0..50 {
        let (ran, done) = (ran.clone(), done.clone());
        pool.defer(
            move || {
                ran.fetch_add(1, Ordering::SeqCst);
            },
            move |r, res| {
                res.unwrap();
                done.tick(r);
            },
        );
    }
    // The reactor is not running: drop waits for the work alone.
    drop(pool);
    assert_eq!(ran.load(Ordering::SeqCst), 50, "queued work was skipped");
    assert_eq!(
        exits.try_iter().count(),
        4,
        "a pool thread outlived the pool"
    );
    // Every callback reaches the reactor once it runs.
    run_bounded(&mut reactor);
    assert_eq!(done.0.load(Ordering::SeqCst), 54);
}

#[test]
fn a_detached_pool_finishes_its_work_and_its_threads_exit() {
    let mut reactor = Reactor::new().unwrap();
    let pool = Defer::new(reactor.handle(), 2).unwrap();
    let done = Countdown::new(2 + 10);
    let exits = watch_every_thread(&pool, 2, &done);
    for i in 0..10u32 {
        let done = done.clone();
        pool.defer(
            move || i + 1,
            move |r, res| {
                assert_eq!(res, Ok(i + 1));
                done.tick(r);
            },
        );
    }
    pool.detach();
    run_bounded(&mut reactor);
    assert_eq!(done.0.load(Ordering::SeqCst), 12);
    // The threads exit on their own.
    for _ in 0..2 {
        exits
            .recv_timeout(IO_TIMEOUT)
            .expect("a detached thread did not exit");
    }
}

#[test]
fn the_last_reference_may_be_dropped_by_a_job_of_the_pool() {
    let mut reactor = Reactor::new().unwrap();
    let pool = Arc::new(Defer::new(reactor.handle(), 2).unwrap());
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let mine = pool.clone();
    pool.defer(
        move || {
            // Wait until the test has dropped its reference, then drop the
            // last one here, on a pool thread.
            let _ = go_rx.recv_timeout(IO_TIMEOUT);
            let last = Arc::strong_count(&mine) == 1;
            drop(mine);
            last
        },
        |r, res| {
            assert_eq!(res, Ok(true), "the job did not hold the last reference");
            r.stop();
        },
    );
    drop(pool);
    go_tx.send(()).unwrap();
    run_bounded(&mut reactor);
}
