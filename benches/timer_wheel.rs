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
//! Run with `cargo bench --bench timer_wheel`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
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

/// Runs `wheel` and `heap` in one group. Each fixture is built only if its
/// benchmark is selected, and dropped before the next one is built.
fn compare(
    c: &mut Criterion,
    name: &str,
    wheel_op: impl Fn(&mut Fixture<TimerWheel<u64>>, u64),
    heap_op: impl Fn(&mut Fixture<HeapTimers>, u64),
) {
    let mut group = c.benchmark_group(name);
    group
        .throughput(Throughput::Elements(1))
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let mut fixture = None;
    group.bench_function("wheel", |b| {
        let f = fixture.get_or_insert_with(wheel);
        b.iter_custom(|n| timed(|| wheel_op(f, n)))
    });
    drop(fixture);
    let mut fixture = None;
    group.bench_function("heap", |b| {
        let f = fixture.get_or_insert_with(heap);
        b.iter_custom(|n| timed(|| heap_op(f, n)))
    });
    group.finish();
}

fn timed(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

fn insert_cancel_same(c: &mut Criterion) {
    compare(
        c,
        "insert_cancel_same",
        |f, n| (0..n).for_each(|_| f.insert_cancel_same()),
        |f, n| (0..n).for_each(|_| f.insert_cancel_same()),
    );
}

fn insert_cancel_other(c: &mut Criterion) {
    compare(
        c,
        "insert_cancel_other",
        |f, n| (0..n).for_each(|_| f.insert_cancel_other()),
        |f, n| (0..n).for_each(|_| f.insert_cancel_other()),
    );
}

fn expiry(c: &mut Criterion) {
    compare(
        c,
        "expiry_per_fired_timer",
        |f, n| f.expire(n),
        |f, n| f.expire(n),
    );
}

criterion_group!(benches, insert_cancel_same, insert_cancel_other, expiry);
criterion_main!(benches);
