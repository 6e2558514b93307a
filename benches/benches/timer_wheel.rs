//! `TimerWheel` against a binary-heap timer queue, with 1,000,000 timers
//! pending at deadlines spread over 10 minutes.
//!
//! 1. `insert_cancel_same`: insert a timer and cancel it again.
//! 2. `insert_cancel_other`: insert a timer and cancel a random other
//!    pending one (1M stay pending; the cancel misses the cache).
//! 3. `expiry`: time advances 6 s (1% of the spread) whenever nothing is due,
//!    each fired timer is re-armed 0-10 min ahead; reported per fired timer
//!    and averaged over many whole cycles, so cascading is counted.
//!
//! Times leave out the time the bench thread spent preempted (this runs on
//! shared machines). After the criterion groups, an interleaved run
//! alternates the two structures round by round (each round including its
//! share of compaction and cascading) and prints median ns per op, which is
//! the fairer comparison when the machine's load drifts between criterion's
//! measurement of one and of the other. `INTERLEAVED_ROUNDS=0` skips it.
//!
//! Run with `cargo bench --bench timer_wheel`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use packet::timer::{TimerKey, TimerWheel};

const PENDING: usize = 1_000_000;
const SPREAD_MS: u64 = 600_000;
const STEP_MS: u64 = SPREAD_MS / 100;

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// What the reactor needs from a timer queue.
trait Timers {
    type Key: Copy;
    fn insert(&mut self, deadline: u64, value: u64) -> Self::Key;
    fn cancel(&mut self, key: Self::Key) -> Option<u64>;
    fn poll(&mut self, now: u64) -> Option<u64>;
}

impl Timers for TimerWheel<u64> {
    type Key = TimerKey;
    fn insert(&mut self, deadline: u64, value: u64) -> TimerKey {
        TimerWheel::insert(self, deadline, value)
    }
    fn cancel(&mut self, key: TimerKey) -> Option<u64> {
        TimerWheel::cancel(self, key)
    }
    fn poll(&mut self, now: u64) -> Option<u64> {
        TimerWheel::poll(self, now).map(|(_, v)| v)
    }
}

/// The usual heap timer queue, made as fair as we can: a 16-byte heap item
/// `(deadline, id)`, values in a slab with a free list, and lazy
/// cancellation by generation (a cancelled id's generation no longer
/// matches, no hashing). Like the wheel, it rebuilds without the cancelled
/// items once they outnumber the live ones, so memory stays bounded.
struct HeapTimers {
    heap: BinaryHeap<Reverse<(u64, u64)>>,
    slab: Vec<HeapSlot>,
    free: u32,
    live: usize,
    dead: usize,
}

struct HeapSlot {
    generation: u32,
    next_free: u32,
    value: Option<u64>,
}

const NIL: u32 = u32::MAX;

impl HeapTimers {
    fn with_capacity(n: usize) -> Self {
        HeapTimers {
            heap: BinaryHeap::with_capacity(n),
            slab: Vec::with_capacity(n),
            free: NIL,
            live: 0,
            dead: 0,
        }
    }

    fn take(&mut self, id: u64) -> Option<u64> {
        let (index, generation) = ((id >> 32) as usize, id as u32);
        let slot = self.slab.get_mut(index)?;
        if slot.generation != generation {
            return None;
        }
        let value = slot.value.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        slot.next_free = self.free;
        self.free = index as u32;
        self.live -= 1;
        Some(value)
    }
}

impl Timers for HeapTimers {
    type Key = u64;
    fn insert(&mut self, deadline: u64, value: u64) -> u64 {
        let index = if self.free != NIL {
            let index = self.free;
            self.free = self.slab[index as usize].next_free;
            self.slab[index as usize].value = Some(value);
            index
        } else {
            self.slab.push(HeapSlot {
                generation: 0,
                next_free: NIL,
                value: Some(value),
            });
            self.slab.len() as u32 - 1
        };
        let id = (index as u64) << 32 | self.slab[index as usize].generation as u64;
        self.heap.push(Reverse((deadline, id)));
        self.live += 1;
        id
    }
    fn cancel(&mut self, id: u64) -> Option<u64> {
        let value = self.take(id)?;
        self.dead += 1;
        if self.dead > self.live.max(1024) {
            let slab = &self.slab;
            self.heap
                .retain(|&Reverse((_, id))| slab[(id >> 32) as usize].generation == id as u32);
            self.dead = 0;
        }
        Some(value)
    }
    fn poll(&mut self, now: u64) -> Option<u64> {
        while let Some(&Reverse((deadline, id))) = self.heap.peek() {
            if deadline > now {
                return None;
            }
            self.heap.pop();
            if let Some(value) = self.take(id) {
                return Some(value);
            }
            self.dead -= 1;
        }
        None
    }
}

/// A queue with `PENDING` timers spread over `SPREAD_MS` from time 0.
struct Fixture<Q: Timers> {
    queue: Q,
    keys: Vec<Q::Key>,
    rng: Rng,
    now: u64,
}

impl<Q: Timers> Fixture<Q> {
    fn new(mut queue: Q) -> Self {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let keys = (0..PENDING as u64)
            .map(|v| queue.insert(1 + rng.below(SPREAD_MS), v))
            .collect();
        Fixture {
            queue,
            keys,
            rng,
            now: 0,
        }
    }

    fn deadline(&mut self) -> u64 {
        self.now + 1 + self.rng.below(SPREAD_MS)
    }

    fn insert_cancel_same(&mut self) {
        let deadline = self.deadline();
        let key = self.queue.insert(deadline, 7);
        black_box(self.queue.cancel(key));
    }

    fn insert_cancel_other(&mut self) {
        let deadline = self.deadline();
        let key = self.queue.insert(deadline, 7);
        let victim = self.rng.below(PENDING as u64) as usize;
        black_box(self.queue.cancel(self.keys[victim]));
        self.keys[victim] = key;
    }

    /// Fires `n` timers, re-arming each, stepping time whenever none is due.
    fn expire(&mut self, n: u64) {
        let mut fired = 0;
        while fired < n {
            match self.queue.poll(self.now) {
                Some(value) => {
                    fired += 1;
                    let deadline = self.deadline();
                    self.queue.insert(deadline, black_box(value));
                }
                None => self.now += STEP_MS,
            }
        }
    }
}

fn wheel() -> Fixture<TimerWheel<u64>> {
    Fixture::new(TimerWheel::with_capacity(PENDING))
}

fn heap() -> Fixture<HeapTimers> {
    Fixture::new(HeapTimers::with_capacity(PENDING))
}

/// The three measured cases; each runs `n` operations (pairs, or fired
/// timers) on a fixture.
#[derive(Clone, Copy)]
enum Case {
    InsertCancelSame,
    InsertCancelOther,
    Expiry,
}

impl Case {
    const ALL: [Case; 3] = [
        Case::InsertCancelSame,
        Case::InsertCancelOther,
        Case::Expiry,
    ];

    fn name(self) -> &'static str {
        match self {
            Case::InsertCancelSame => "insert_cancel_same",
            Case::InsertCancelOther => "insert_cancel_other",
            Case::Expiry => "expiry_per_fired_timer",
        }
    }

    fn run<Q: Timers>(self, f: &mut Fixture<Q>, n: u64) {
        match self {
            Case::InsertCancelSame => (0..n).for_each(|_| f.insert_cancel_same()),
            Case::InsertCancelOther => (0..n).for_each(|_| f.insert_cancel_other()),
            Case::Expiry => f.expire(n),
        }
    }

    /// Operations per round of the interleaved comparison, chosen so that
    /// every round pays its share of the periodic work: the heap's (and for
    /// `InsertCancelOther` the wheel's) compaction runs every 1M cancels,
    /// and expiry takes a whole 10-minute cycle (1M fired timers, 100
    /// steps) with all its cascades.
    fn round(self) -> u64 {
        match self {
            Case::InsertCancelSame => 2 * PENDING as u64,
            Case::InsertCancelOther | Case::Expiry => PENDING as u64,
        }
    }
}

/// How long this thread has waited for a CPU while runnable. The kernel
/// brings it up to date whenever the thread is switched back in, so unlike
/// the thread's run time (updated at scheduler ticks) it is exact when read
/// by the running thread. `None` where Linux's schedstat is not available.
fn time_waiting() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns = stat.split_whitespace().nth(1)?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Wall time of `f`, less the time the thread was preempted in it, so that
/// other processes on a shared machine do not inflate the numbers (they
/// still share its caches and memory bandwidth).
fn timed(f: impl FnOnce()) -> Duration {
    let waited = time_waiting();
    let start = Instant::now();
    f();
    let elapsed = start.elapsed();
    match (waited, time_waiting()) {
        (Some(before), Some(after)) => elapsed.saturating_sub(after.saturating_sub(before)),
        _ => elapsed,
    }
}

/// One criterion group per case, with the wheel and the heap in it. Each
/// fixture is built only if its benchmark is selected, and dropped before
/// the next one is built.
fn criterion_benches(c: &mut Criterion) {
    for case in Case::ALL {
        let mut group = c.benchmark_group(case.name());
        group
            .throughput(Throughput::Elements(1))
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
        let mut fixture = None;
        group.bench_function("wheel", |b| {
            let f = fixture.get_or_insert_with(wheel);
            b.iter_custom(|n| timed(|| case.run(f, n)))
        });
        drop(fixture);
        let mut fixture = None;
        group.bench_function("heap", |b| {
            let f = fixture.get_or_insert_with(heap);
            b.iter_custom(|n| timed(|| case.run(f, n)))
        });
        group.finish();
    }
}

/// Criterion measures the wheel and then the heap, so a change in the load
/// of a shared machine between the two skews the comparison. This runs
/// both side by side in alternating short rounds and prints the medians.
fn interleaved(rounds: usize) {
    println!("\ninterleaved: median of {rounds} alternating rounds, ns per op");
    for case in Case::ALL {
        let (mut w, mut h) = (wheel(), heap());
        let n = case.round();
        let per_op = |d: Duration| d.as_nanos() as f64 / n as f64;
        case.run(&mut w, n);
        case.run(&mut h, n);
        let (mut ws, mut hs) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            ws.push(per_op(timed(|| case.run(&mut w, n))));
            hs.push(per_op(timed(|| case.run(&mut h, n))));
        }
        ws.sort_by(f64::total_cmp);
        hs.sort_by(f64::total_cmp);
        let (wm, hm) = (ws[rounds / 2], hs[rounds / 2]);
        println!(
            "  {:<24} wheel {wm:8.1}   heap {hm:8.1}   heap/wheel {:5.2}",
            case.name(),
            hm / wm
        );
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    criterion_benches(&mut c);
    c.final_summary();
    // Skipped when a benchmark filter is given (numbers are option values);
    // INTERLEAVED_ROUNDS=0 turns it off.
    let filtered = std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && a.parse::<f64>().is_err() && a != "interleaved");
    let rounds = std::env::var("INTERLEAVED_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(21);
    if !filtered && rounds > 0 {
        interleaved(rounds);
    }
}
