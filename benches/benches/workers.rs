//! Worker processes: ask latency against a raw socketpair ping-pong,
//! pipelined throughput, and the time from `start_worker` to a first reply.
//!
//! ```text
//! cargo bench --bench workers
//! ```
//!
//! `harness = false`: before anything else `main` forks the ping-pong child
//! and the workers' fork server, while the process has one thread. The
//! master's reactor then runs on a thread of its own, and criterion, on the
//! main thread, hands it each batch of iterations with
//! `ReactorHandle::schedule`; a batch is timed inside the reactor, from its
//! first ask to its last reply, so the hop between threads is not counted.
//!
//! - `round_trip/raw_socketpair`: 8 bytes written to a forked child that
//!   echoes them with blocking `read`/`write` on a socketpair, read back —
//!   the floor for one request between two processes.
//! - `round_trip/ask_worker_with`: `reactor.workers().ask_worker_with` of a `u64` to
//!   an echo worker, one request outstanding.
//! - `pipelined/ask_worker_with_1000_in_flight`: the same asks, 1000 kept
//!   in flight to one worker; reported as messages per second.
//! - `fork_and_ready/start_worker_to_first_reply`: `start_worker` of a
//!   `no_auto_load` worker with a new key, an ask queued at once, timed to
//!   its reply; the worker is deleted and gone before the next one.
//!
//! After criterion, an interleaved pass alternates short runs of the raw
//! and the worker round trip, so the latency ratio is taken under the same
//! machine load, and a summary prints the three numbers against their
//! targets.

use std::cell::RefCell;
use std::hint::black_box;
use std::rc::Rc;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use packet::worker::{
    RestartPolicy, Worker, WorkerContext, WorkerMessage, WorkerRegistry, WorkerSpec,
};
use packet::{Reactor, ReactorHandle};
use packet_sys::process::{self, Fork};
use packet_sys::Socket;

/// Asks kept in flight by the pipelined benchmark.
const IN_FLIGHT: u64 = 1000;

// ----- targets -----

const MAX_LATENCY_RATIO: f64 = 1.5;
const MIN_PIPELINED_PER_SEC: f64 = 300_000.0;
const MAX_FORK_READY: Duration = Duration::from_millis(2);

// ----- the worker -----

/// Replies with the number it was sent.
struct Echo;

impl Worker for Echo {
    fn receive_data(&mut self, ctx: &mut WorkerContext<'_, '_>, message: WorkerMessage) {
        let n: u64 = message.decode().expect("a u64");
        ctx.send_data(&n).expect("a u64 encodes");
    }
}

// ----- the raw ping-pong -----

/// The parent's end of the ping-pong socketpair, blocking.
struct PingPong {
    sock: Socket,
    child: i32,
}

/// Forks the child that echoes 8-byte messages until its socket closes.
fn start_ping_pong() -> std::io::Result<PingPong> {
    let (ours, theirs) = Socket::pair()?;
    match process::fork_single_threaded()? {
        Fork::Child => {
            drop(ours);
            let code = match theirs.set_nonblocking(false) {
                Ok(()) => {
                    let mut buf = [0u8; 8];
                    while read_exact(&theirs, &mut buf) && write_all(&theirs, &buf) {}
                    0
                }
                Err(_) => 1,
            };
            process::exit_immediately(code)
        }
        Fork::Parent(child) => {
            drop(theirs);
            ours.set_nonblocking(false)?;
            Ok(PingPong { sock: ours, child })
        }
    }
}

fn read_exact(sock: &Socket, mut buf: &mut [u8]) -> bool {
    while !buf.is_empty() {
        match sock.read(buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf = &mut buf[n..],
        }
    }
    true
}

fn write_all(sock: &Socket, mut buf: &[u8]) -> bool {
    while !buf.is_empty() {
        match sock.write(buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf = &buf[n..],
        }
    }
    true
}

impl PingPong {
    fn round_trips(&self, n: u64) -> Duration {
        let mut buf = [0u8; 8];
        let start = Instant::now();
        for i in 0..n {
            assert!(
                write_all(&self.sock, &i.to_le_bytes()),
                "ping-pong child gone"
            );
            assert!(read_exact(&self.sock, &mut buf), "ping-pong child gone");
            black_box(&buf);
        }
        start.elapsed()
    }

    fn stop(self) {
        drop(self.sock);
        let _ = process::wait(self.child);
    }
}

// ----- batches run in the master's reactor -----

/// Runs `batch` in the reactor and waits for the time it reports.
fn in_reactor(
    handle: &ReactorHandle,
    batch: impl FnOnce(&mut Reactor, mpsc::Sender<Duration>) + Send + 'static,
) -> Duration {
    let (tx, rx) = mpsc::channel();
    handle.schedule(move |r| batch(r, tx));
    rx.recv_timeout(Duration::from_secs(60))
        .expect("the reactor did not finish the batch")
}

/// `n` asks of `echo`, one at a time.
fn serial_asks(r: &mut Reactor, n: u64, done: mpsc::Sender<Duration>) {
    struct State {
        left: u64,
        start: Instant,
        done: mpsc::Sender<Duration>,
    }
    fn ask(r: &mut Reactor, st: Rc<RefCell<State>>) {
        let n = st.borrow().left;
        r.workers()
            .ask_worker_with("echo", None, &n, move |r, reply| {
                let got: u64 = reply.expect("echo replied").decode().expect("a u64");
                assert_eq!(got, n);
                let left = {
                    let mut s = st.borrow_mut();
                    s.left -= 1;
                    s.left
                };
                if left == 0 {
                    let s = st.borrow();
                    let _ = s.done.send(s.start.elapsed());
                } else {
                    ask(r, st);
                }
            })
            .expect("ask echo");
    }
    let st = Rc::new(RefCell::new(State {
        left: n.max(1),
        start: Instant::now(),
        done,
    }));
    ask(r, st);
}

/// `n` asks of `echo`, [`IN_FLIGHT`] outstanding at a time.
fn pipelined_asks(r: &mut Reactor, n: u64, done: mpsc::Sender<Duration>) {
    struct State {
        n: u64,
        sent: u64,
        answered: u64,
        start: Instant,
        done: mpsc::Sender<Duration>,
    }
    fn ask(r: &mut Reactor, st: &Rc<RefCell<State>>) {
        let i = {
            let mut s = st.borrow_mut();
            s.sent += 1;
            s.sent
        };
        let st = st.clone();
        r.workers()
            .ask_worker_with("echo", None, &i, move |r, reply| {
                let got: u64 = reply.expect("echo replied").decode().expect("a u64");
                debug_assert_eq!(got, i);
                let (more, finished) = {
                    let mut s = st.borrow_mut();
                    s.answered += 1;
                    (s.sent < s.n, s.answered == s.n)
                };
                if more {
                    ask(r, &st);
                } else if finished {
                    let s = st.borrow();
                    let _ = s.done.send(s.start.elapsed());
                }
            })
            .expect("ask echo");
    }
    let st = Rc::new(RefCell::new(State {
        n: n.max(1),
        sent: 0,
        answered: 0,
        start: Instant::now(),
        done,
    }));
    for _ in 0..IN_FLIGHT.min(n.max(1)) {
        ask(r, &st);
    }
}

/// `n` times: start a `fresh` worker with a new key, ask it at once, time
/// the reply, delete it and wait until its process is gone. Reports the
/// sum of the start-to-reply times only.
fn fork_and_ask(r: &mut Reactor, n: u64, done: mpsc::Sender<Duration>) {
    struct State {
        left: u64,
        key: u64,
        total: Duration,
        done: mpsc::Sender<Duration>,
    }
    fn once(r: &mut Reactor, st: Rc<RefCell<State>>) {
        let key = {
            let mut s = st.borrow_mut();
            s.key += 1;
            format!("k{}", s.key)
        };
        let start = Instant::now();
        r.workers()
            .start_worker("fresh", Some(&key), &())
            .expect("start fresh");
        let asked = key.clone();
        r.workers()
            .ask_worker_with("fresh", Some(&asked), &7u64, move |r, reply| {
                let took = start.elapsed();
                assert_eq!(
                    reply
                        .expect("fresh replied")
                        .decode::<u64>()
                        .expect("a u64"),
                    7
                );
                let pid = r
                    .workers()
                    .pids("fresh")
                    .into_iter()
                    .find(|(id, _)| id.key.as_deref() == Some(key.as_str()))
                    .map(|(_, pid)| pid as i32);
                r.workers()
                    .delete_worker("fresh", Some(&key))
                    .expect("delete fresh");
                let left = {
                    let mut s = st.borrow_mut();
                    s.total += took;
                    s.left -= 1;
                    s.left
                };
                let deadline = Instant::now() + Duration::from_secs(2);
                when_gone(r, pid, deadline, move |r| {
                    if left == 0 {
                        let s = st.borrow();
                        let _ = s.done.send(s.total);
                    } else {
                        once(r, st);
                    }
                });
            })
            .expect("ask fresh");
    }
    fn when_gone(
        r: &mut Reactor,
        pid: Option<i32>,
        deadline: Instant,
        then: impl FnOnce(&mut Reactor) + 'static,
    ) {
        // Signal 0 checks existence: fails once the fork server reaped it.
        let alive = pid.is_some_and(|p| process::kill(p, 0).is_ok());
        if !alive || Instant::now() >= deadline {
            then(r);
        } else {
            r.add_timer(Duration::from_millis(1), move |r| {
                when_gone(r, pid, deadline, then)
            });
        }
    }
    let st = Rc::new(RefCell::new(State {
        left: n.max(1),
        key: 0,
        total: Duration::ZERO,
        done,
    }));
    once(r, st);
}

// ----- measurements kept for the summary -----

/// Every (iterations, time) a benchmark measured, warm-up included.
#[derive(Default, Clone)]
struct Samples(Arc<Mutex<Vec<(u64, Duration)>>>);

impl Samples {
    fn record(&self, iters: u64, took: Duration) -> Duration {
        self.0.lock().unwrap().push((iters, took));
        took
    }

    /// The median time per iteration over the samples.
    fn median(&self) -> Option<Duration> {
        let mut per: Vec<f64> = self
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(i, _)| *i > 0)
            .map(|(i, t)| t.as_secs_f64() / *i as f64)
            .collect();
        if per.is_empty() {
            return None;
        }
        per.sort_by(f64::total_cmp);
        Some(Duration::from_secs_f64(per[per.len() / 2]))
    }
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

fn main() {
    // Both forks first, while this process has a single thread.
    let ping_pong = start_ping_pong().expect("fork the ping-pong child");
    let workers = WorkerRegistry::new()
        .register(WorkerSpec::new("echo", || Echo))
        .register(
            WorkerSpec::new("fresh", || Echo)
                .no_auto_load()
                .restart(RestartPolicy::Never),
        )
        .start()
        .expect("start the fork server");

    // The master's reactor, on its own thread; it says when echo runs.
    let (ready_tx, ready_rx) = mpsc::channel();
    let master = std::thread::spawn(move || {
        Reactor::run(move |r| {
            r.workers().add(workers)?;
            fn when_running(r: &mut Reactor, tx: mpsc::Sender<ReactorHandle>) {
                if r.workers().pids("echo").is_empty() {
                    r.add_timer(Duration::from_millis(1), move |r| when_running(r, tx));
                } else {
                    let _ = tx.send(r.handle());
                }
            }
            when_running(r, ready_tx);
            Ok(())
        })
        .expect("master reactor")
    });
    let handle = ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the echo worker did not start");

    let raw = Samples::default();
    let ask = Samples::default();
    let piped = Samples::default();
    let fork = Samples::default();

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();

    {
        let mut g = c.benchmark_group("round_trip");
        g.bench_function("raw_socketpair", |b| {
            b.iter_custom(|iters| raw.record(iters, ping_pong.round_trips(iters)))
        });
        g.bench_function("ask_worker_with", |b| {
            b.iter_custom(|iters| {
                ask.record(
                    iters,
                    in_reactor(&handle, move |r, tx| serial_asks(r, iters, tx)),
                )
            })
        });
        g.finish();
    }
    {
        let mut g = c.benchmark_group("pipelined");
        g.throughput(Throughput::Elements(1));
        g.bench_function("ask_worker_with_1000_in_flight", |b| {
            b.iter_custom(|iters| {
                piped.record(
                    iters,
                    in_reactor(&handle, move |r, tx| pipelined_asks(r, iters, tx)),
                )
            })
        });
        g.finish();
    }
    {
        let mut g = c.benchmark_group("fork_and_ready");
        g.sample_size(20);
        g.bench_function("start_worker_to_first_reply", |b| {
            b.iter_custom(|iters| {
                fork.record(
                    iters,
                    in_reactor(&handle, move |r, tx| fork_and_ask(r, iters, tx)),
                )
            })
        });
        g.finish();
    }
    c.final_summary();

    // The same two round trips, alternated, for a ratio under equal load.
    const ROUNDS: usize = 25;
    const PER_ROUND: u64 = 2000;
    let mut ratios = Vec::new();
    let (mut raw_us, mut ask_us) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let r = ping_pong.round_trips(PER_ROUND).as_secs_f64() / PER_ROUND as f64;
        let a = in_reactor(&handle, |r, tx| serial_asks(r, PER_ROUND, tx)).as_secs_f64()
            / PER_ROUND as f64;
        raw_us.push(r * 1e6);
        ask_us.push(a * 1e6);
        ratios.push(a / r);
    }

    handle.stop();
    master.join().expect("master thread");
    ping_pong.stop();

    println!();
    println!("== workers: summary (medians) ==");
    match (ask.median(), raw.median()) {
        (Some(a), Some(r)) => {
            let ratio = a.as_secs_f64() / r.as_secs_f64();
            println!(
                "round trip, one outstanding:  ask_worker_with {:.2} µs | raw socketpair ping-pong {:.2} µs | ratio {ratio:.2}x (criterion, taken at different times)",
                a.as_secs_f64() * 1e6,
                r.as_secs_f64() * 1e6,
            );
        }
        _ => println!("round trip, one outstanding:  not measured (filtered out)"),
    }
    let ratio = median(&mut ratios);
    println!(
        "  interleaved, {ROUNDS} rounds of {PER_ROUND} each: ask {:.2} µs | raw {:.2} µs | ratio {ratio:.2}x (median of per-round ratios; target <= {MAX_LATENCY_RATIO}x: {})",
        median(&mut ask_us),
        median(&mut raw_us),
        verdict(ratio <= MAX_LATENCY_RATIO),
    );
    match piped.median() {
        Some(t) => {
            let per_sec = 1.0 / t.as_secs_f64();
            println!(
                "pipelined, {IN_FLIGHT} in flight:     {per_sec:.0} messages/s (target >= {MIN_PIPELINED_PER_SEC:.0}: {})",
                verdict(per_sec >= MIN_PIPELINED_PER_SEC),
            );
        }
        None => println!("pipelined:                    not measured (filtered out)"),
    }
    match fork.median() {
        Some(t) => println!(
            "fork and ready:               {:.3} ms from start_worker to first reply (target < {:?}: {})",
            t.as_secs_f64() * 1e3,
            MAX_FORK_READY,
            verdict(t < MAX_FORK_READY),
        ),
        None => println!("fork and ready:               not measured (filtered out)"),
    }
}
