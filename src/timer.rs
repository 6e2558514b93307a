//! A hierarchical timing wheel: the reactor's timer queue.
//!
//! [`TimerWheel<T>`] stores values of type `T` under millisecond deadlines
//! and hands them back, earliest first, once the caller says that time has
//! passed. Insert and cancel are O(1), expiry is amortised O(1) per timer
//! (a timer is re-filed at most once per level on its way down), and after
//! warm-up the hot paths do not allocate per timer, however many timers are
//! pending.
//!
//! # What this module owns, and what it never does
//!
//! It owns the pending timers and their values, and nothing else. It never
//! reads a clock: time is whatever `u64` the caller passes to
//! [`TimerWheel::poll`] (the reactor uses milliseconds since it started,
//! with deadlines rounded *up* so nothing fires early). It never runs
//! callbacks, sleeps or does I/O: [`poll`](TimerWheel::poll) returns one
//! expired value at a time and the caller decides what that means, so a
//! callback run between two pops may freely insert or cancel timers in the
//! same wheel.
//!
//! # Layout
//!
//! Eleven levels of 64 slots cover the whole `u64` range (6 bits a level, the
//! top level only uses 16 slots), so there is no overflow list and a deadline
//! of `u64::MAX` is as ordinary as one in 5 ms. A timer sits at the level of
//! the highest 6-bit digit in which its deadline differs from the wheel's
//! current time, in the slot named by that digit of the deadline:
//!
//! ```text
//!  deadline bits:  63..60  59..54      ...      17..12   11..6    5..0
//!                 +------+--------+-- ... --+--------+--------+--------+
//!                 |  L10 |   L9   |         |   L2   |   L1   |   L0   |
//!                 +------+--------+-- ... --+--------+--------+--------+
//!
//!  level 0   [ 0][ 1][ 2] ... [63]   one slot per ms       (< 64 ms ahead)
//!  level 1   [ 0][ 1][ 2] ... [63]   64 ms a slot          (< 4.1 s)
//!  level 2   [ 0][ 1][ 2] ... [63]   4.1 s a slot          (< 4.4 min)
//!  level 3   [ 0][ 1][ 2] ... [63]   4.4 min a slot        (< 4.7 h)
//!   ...
//!  level 10  [ 0] ... [15]           2^60 ms a slot        (the rest of u64)
//!
//!  occupied: one u64 bitmap per level -> the next slot is found with
//!            trailing_zeros, so next_deadline() is O(levels).
//! ```
//!
//! When time reaches the start of an occupied slot above level 0, its timers
//! are re-filed one level down or more ("cascaded"); when it reaches a level
//! 0 slot, that slot's timers become due and `poll` pops them in order.
//!
//! Each slot is a `Vec` of small records (deadline, slab index, generation)
//! rather than an intrusive linked list: cascading a slot is then a
//! sequential scan instead of a chain of dependent cache misses, which is
//! what keeps expiry fast when a million timers no longer fit in cache
//! (measured with 1M timers: about 5x faster expiry than the same wheel
//! with intrusive lists, at the same insert and cancel cost). The
//! values live in a slab indexed by [`TimerKey`]; a cancel frees the slab
//! entry at once and leaves a tombstone in the slot (removed at once when it
//! is the slot's last record, the common insert-then-cancel case). Tombstones
//! are dropped when they reach the front of the queue, or by a compaction
//! pass once they outnumber the live timers, so memory stays proportional to
//! the number of pending timers.
//!
//! # Ordering
//!
//! Timers fire in order of deadline, and timers with equal deadlines fire in
//! insertion order. The wheel has *reached* `now()` once `poll` has returned
//! `None`, and during a sequence of `poll` calls it has reached the deadline
//! of the timer it last returned. A deadline at or before the time reached
//! is treated as due *at* that time: it fires on the next `poll`, after the
//! timers already due then. So a timer inserted by a callback with a
//! deadline `<= now` fires later in the same sequence, in its place in that
//! order, and one with a deadline in the past fires before anything later.
//!
//! # Example
//!
//! ```
//! use packet::timer::TimerWheel;
//!
//! let mut wheel = TimerWheel::new();
//! let _a = wheel.insert(30, "a");
//! let b = wheel.insert(10, "b");
//! let _c = wheel.insert(10, "c");
//! assert_eq!(wheel.cancel(b), Some("b"));
//! assert_eq!(wheel.cancel(b), None); // idempotent
//!
//! // The reactor sleeps at most until the next deadline...
//! assert!(wheel.next_deadline().unwrap() <= 10);
//! // ...then pops what has expired, running each callback in between.
//! let mut fired = Vec::new();
//! while let Some((_key, value)) = wheel.poll(25) {
//!     fired.push(value);
//! }
//! assert_eq!(fired, ["c"]);
//! assert_eq!(wheel.len(), 1);
//! assert_eq!(wheel.poll(30).map(|(_, v)| v), Some("a"));
//! assert!(wheel.is_empty());
//! ```

use std::fmt;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};

/// Bits of the deadline consumed by one level.
const SLOT_BITS: u32 = 6;
/// Slots per level: one bit of the level's `u64` occupancy bitmap each.
const SLOTS: usize = 1 << SLOT_BITS;
/// Enough levels for every `u64` deadline: ceil(64 / 6).
const LEVELS: usize = (u64::BITS as usize).div_ceil(SLOT_BITS as usize);
/// `Entry::loc` of a timer filed in the due queue rather than a slot.
const LOC_DUE: u32 = u32::MAX;
/// End of the free list.
const NIL: u32 = u32::MAX;
/// Tombstones tolerated regardless of the live count before compacting, so a
/// nearly empty wheel does not compact on every other cancel.
const COMPACT_MIN: usize = if cfg!(test) { 4 } else { 1024 };
/// Slot buffers larger than this (in records) are released when their slot
/// empties, so the capacity left behind in slots that held a big share of
/// the timers once does not pile up across the wheel.
const KEEP_CAPACITY: usize = if cfg!(test) { 2 } else { 4096 };

/// Seeds each wheel's generations differently, so that a key from another
/// wheel almost never matches a live timer here.
static NEXT_SEED: AtomicU32 = AtomicU32::new(0);

/// A handle to a timer in a [`TimerWheel`], returned by
/// [`insert`](TimerWheel::insert) and used to [`cancel`](TimerWheel::cancel)
/// it.
///
/// Keys are generation-checked: once the timer has fired or been cancelled
/// its key is stale and cancelling it does nothing, even after the slot has
/// been reused by another timer. `Option<TimerKey>` is the same size as
/// `TimerKey` (8 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct TimerKey {
    /// Slab index + 1, so that `Option<TimerKey>` needs no extra tag.
    index: NonZeroU32,
    generation: u32,
}

impl TimerKey {
    fn new(index: u32, generation: u32) -> Self {
        // `index < NIL` is guaranteed by `alloc`, so `index + 1` cannot wrap
        // to zero.
        let index = NonZeroU32::new(index.wrapping_add(1)).unwrap_or(NonZeroU32::MIN);
        TimerKey { index, generation }
    }

    fn slab_index(self) -> usize {
        (self.index.get() - 1) as usize
    }
}

/// One timer as filed in a slot. Copied (not pointed to) so that moving a
/// slot down a level reads memory sequentially.
#[derive(Clone, Copy, Debug)]
struct Record {
    deadline: u64,
    index: u32,
    generation: u32,
}

/// A slab entry: the value of a pending timer, or a link in the free list.
struct Entry<T> {
    /// Bumped when the entry is freed, which makes every key and record of
    /// the previous occupant stale.
    generation: u32,
    /// While occupied: the slot (or `LOC_DUE`) the timer was filed in, used
    /// to drop the record at once when it is still that slot's last one.
    /// It goes stale when the timer cascades, which only costs a tombstone.
    /// While free: the next free entry.
    loc: u32,
    value: Option<T>,
}

/// A hierarchical timing wheel holding values of type `T` under `u64`
/// millisecond deadlines. See the [module documentation](self).
pub struct TimerWheel<T> {
    entries: Vec<Entry<T>>,
    free_head: u32,
    /// Generation given to fresh entries; an entry whose generation comes
    /// back round to it is retired rather than reused.
    seed: u32,
    /// Pending timers.
    live: usize,
    /// Records of cancelled timers still sitting in slots or `due`.
    dead: usize,
    /// The time the slots are laid out against: every timer in a slot has a
    /// deadline after it, and no occupied slot starts at or before it.
    elapsed: u64,
    /// The latest time given to `poll`; `elapsed <= now`.
    now: u64,
    occupied: [u64; LEVELS],
    slots: Box<[Vec<Record>]>,
    /// Timers due at `elapsed` (or clamped to it), popped from `due_pos`.
    due: Vec<Record>,
    due_pos: usize,
}

impl<T> TimerWheel<T> {
    /// Creates an empty wheel whose time starts at 0.
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// Creates an empty wheel with room for `capacity` pending timers before
    /// its slab reallocates.
    pub fn with_capacity(capacity: usize) -> Self {
        let seed = NEXT_SEED
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9);
        TimerWheel {
            entries: Vec::with_capacity(capacity),
            free_head: NIL,
            seed,
            live: 0,
            dead: 0,
            elapsed: 0,
            now: 0,
            occupied: [0; LEVELS],
            slots: (0..LEVELS * SLOTS).map(|_| Vec::new()).collect(),
            due: Vec::new(),
            due_pos: 0,
        }
    }

    /// The number of pending timers.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The latest time passed to [`poll`](Self::poll) (0 at first). It
    /// never decreases. Every timer with a deadline at or before it has
    /// fired, or is returned by the next calls to `poll`.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Schedules `value` to fire at `deadline_ms` and returns the key that
    /// cancels it.
    ///
    /// A deadline at or before the time the wheel has reached (see the
    /// module docs on ordering) is due at once: the next `poll` returns it,
    /// after the timers already due.
    ///
    /// # Panics
    ///
    /// If more than `u32::MAX - 1` timers would be pending at once.
    pub fn insert(&mut self, deadline_ms: u64, value: T) -> TimerKey {
        let (index, generation) = self.alloc();
        let loc = self.file(Record {
            deadline: deadline_ms,
            index,
            generation,
        });
        let entry = &mut self.entries[index as usize];
        entry.loc = loc;
        entry.value = Some(value);
        self.live += 1;
        TimerKey::new(index, generation)
    }

    /// Cancels the timer `key` and returns its value, or returns `None`
    /// without touching anything if that timer has already fired or been
    /// cancelled.
    ///
    /// A key from another wheel cannot panic or corrupt this one. It almost
    /// always returns `None` (each wheel numbers its generations from its
    /// own seed) but, like any handle confusion, may rarely match and
    /// cancel a timer here.
    pub fn cancel(&mut self, key: TimerKey) -> Option<T> {
        let index = key.slab_index();
        let entry = self.entries.get_mut(index)?;
        if entry.generation != key.generation {
            return None;
        }
        let value = entry.value.take()?;
        let loc = entry.loc;
        self.release(index as u32);
        self.live -= 1;

        let is_ours = |r: &Record| r.index == index as u32 && r.generation == key.generation;
        if loc == LOC_DUE {
            if self.due.len() > self.due_pos && self.due.last().is_some_and(is_ours) {
                self.due.pop();
                return Some(value);
            }
        } else if let Some(slot) = self.slots.get_mut(loc as usize) {
            if slot.last().is_some_and(is_ours) {
                slot.pop();
                if slot.is_empty() {
                    let (level, bit) = (loc as usize / SLOTS, loc as usize % SLOTS);
                    self.occupied[level] &= !(1 << bit);
                }
                return Some(value);
            }
        }
        self.dead += 1;
        if self.dead > self.live.max(COMPACT_MIN) {
            self.compact();
        }
        Some(value)
    }

    /// The earliest time at which [`poll`](Self::poll) may return a timer,
    /// or `None` if no timer is pending. Meant as the reactor's poll
    /// timeout; O(levels).
    ///
    /// This is exact when the earliest timer is less than 64 ms beyond the
    /// wheel's time, and otherwise may be a lower bound: the start of the
    /// slot holding it. Polling at that time then re-files the slot without
    /// firing anything, and the next call gives a later, closer bound, so a
    /// reactor that sleeps until this time wakes early at most once per
    /// level. It is never later than the earliest pending deadline (for a
    /// deadline that was already past when inserted, the time the wheel had
    /// reached then), and it is `<= now()` only when a `poll(now())` would
    /// make progress.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.live == 0 {
            return None;
        }
        if self.due_pos < self.due.len() {
            return Some(self.elapsed);
        }
        self.next_slot().map(|(_, start)| start)
    }

    /// Advances the wheel to `now_ms` and pops one expired timer, earliest
    /// deadline first and in insertion order among equal deadlines; returns
    /// `None` once nothing with a deadline `<= now_ms` is left.
    ///
    /// Call it in a loop, running each timer's callback between calls; the
    /// callbacks may insert and cancel timers (see the module docs for how
    /// such inserts are ordered). Time never goes backwards: a `now_ms`
    /// smaller than one seen before is taken as that earlier, larger time.
    pub fn poll(&mut self, now_ms: u64) -> Option<(TimerKey, T)> {
        self.now = self.now.max(now_ms);
        loop {
            while let Some(&record) = self.due.get(self.due_pos) {
                self.due_pos += 1;
                if let Some(value) = self.take(record.index, record.generation) {
                    return Some((TimerKey::new(record.index, record.generation), value));
                }
                self.dead -= 1;
            }
            self.due.clear();
            self.due_pos = 0;
            if self.live == 0 {
                if self.dead > 0 {
                    self.drop_tombstones();
                }
                self.elapsed = self.now;
                return None;
            }
            match self.next_slot() {
                Some((id, start)) if start <= self.now => {
                    self.elapsed = start;
                    self.occupied[id / SLOTS] &= !(1 << (id % SLOTS));
                    if id < SLOTS {
                        // Every record of a level 0 slot has this very
                        // deadline: the whole slot becomes due. Swapping
                        // hands the slot the (empty) due buffer to reuse.
                        std::mem::swap(&mut self.slots[id], &mut self.due);
                        trim(&mut self.slots[id]);
                    } else {
                        self.cascade(id);
                    }
                }
                _ => {
                    // No occupied slot starts in (elapsed, now], so jumping
                    // there leaves every record at the level and slot it
                    // would be filed in now.
                    self.elapsed = self.now;
                    return None;
                }
            }
        }
    }

    /// Takes a free slab entry (without filling it in).
    fn alloc(&mut self) -> (u32, u32) {
        if self.free_head != NIL {
            let index = self.free_head;
            let entry = &mut self.entries[index as usize];
            self.free_head = entry.loc;
            return (index, entry.generation);
        }
        let index = self.entries.len();
        assert!(index < NIL as usize - 1, "too many pending timers");
        self.entries.push(Entry {
            generation: self.seed,
            loc: NIL,
            value: None,
        });
        (index as u32, self.seed)
    }

    /// Frees an entry whose value has been taken.
    fn release(&mut self, index: u32) {
        let entry = &mut self.entries[index as usize];
        entry.generation = entry.generation.wrapping_add(1);
        if entry.generation == self.seed {
            // Every generation has been handed out for this entry; reusing
            // it could let a 2^32-old key or tombstone match again, so it is
            // left out of the free list for good (24 bytes per 4 billion
            // timers through one entry).
            return;
        }
        entry.loc = self.free_head;
        self.free_head = index;
    }

    /// Takes the value of a pending timer and frees its entry, if the
    /// timer is still pending.
    fn take(&mut self, index: u32, generation: u32) -> Option<T> {
        let entry = self.entries.get_mut(index as usize)?;
        if entry.generation != generation {
            return None;
        }
        let value = entry.value.take()?;
        self.release(index);
        self.live -= 1;
        Some(value)
    }

    /// Files a record against `elapsed`, returning where it went.
    fn file(&mut self, record: Record) -> u32 {
        if record.deadline <= self.elapsed {
            self.due.push(record);
            return LOC_DUE;
        }
        let level = level_for(record.deadline, self.elapsed);
        let bit = (record.deadline >> (level as u32 * SLOT_BITS)) as usize % SLOTS;
        let id = level * SLOTS + bit;
        self.occupied[level] |= 1 << bit;
        self.slots[id].push(record);
        id as u32
    }

    /// Re-files the records of a slot above level 0 that `elapsed` has just
    /// reached; each lands at a lower level (or in `due`). Tombstones go
    /// along rather than being checked here, which would cost a random slab
    /// read per record; they are dropped at the front of `due`.
    fn cascade(&mut self, id: usize) {
        let mut records = std::mem::take(&mut self.slots[id]);
        if id < 2 * SLOTS {
            // A level 1 slot holds the timers of the next 64 ms, each about
            // to need its slab entry. Fetching them all now, in a loop with
            // no other work, lets the cache misses overlap instead of
            // stalling `poll` once per timer (with 1M timers pending this
            // about halves the cost of each fired timer).
            warm(&self.entries, &records);
        }
        for &record in &records {
            self.file(record);
        }
        records.clear();
        trim(&mut records);
        self.slots[id] = records;
    }

    /// The earliest occupied slot and its start time. Every record at a level
    /// has the same higher digits as `elapsed` and a larger digit at that
    /// level, and every record at a lower level is earlier than any at a
    /// higher one, so this is the lowest set bit of the lowest non-empty
    /// level.
    fn next_slot(&self) -> Option<(usize, u64)> {
        let level = self.occupied.iter().position(|&bits| bits != 0)?;
        let bit = self.occupied[level].trailing_zeros() as usize;
        let shift = level as u32 * SLOT_BITS;
        let span_bits = shift + SLOT_BITS;
        let higher = if span_bits >= u64::BITS {
            0
        } else {
            self.elapsed & !((1u64 << span_bits) - 1)
        };
        Some((level * SLOTS + bit, higher | ((bit as u64) << shift)))
    }

    /// Drops every tombstone, keeping the order of the live records.
    #[cold]
    #[inline(never)]
    fn compact(&mut self) {
        self.due.drain(..self.due_pos);
        self.due_pos = 0;
        retain_live(&self.entries, &mut self.due);
        for level in 0..LEVELS {
            let mut bits = self.occupied[level];
            while bits != 0 {
                let bit = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let slot = &mut self.slots[level * SLOTS + bit];
                retain_live(&self.entries, slot);
                if slot.is_empty() {
                    trim(slot);
                    self.occupied[level] &= !(1 << bit);
                }
            }
        }
        self.dead = 0;
    }

    /// With no timer pending, every record left is a tombstone.
    #[cold]
    fn drop_tombstones(&mut self) {
        for level in 0..LEVELS {
            let mut bits = std::mem::take(&mut self.occupied[level]);
            while bits != 0 {
                let bit = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let slot = &mut self.slots[level * SLOTS + bit];
                slot.clear();
                trim(slot);
            }
        }
        self.dead = 0;
    }
}

impl<T> Default for TimerWheel<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for TimerWheel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimerWheel")
            .field("len", &self.live)
            .field("now", &self.now)
            .field("next_deadline", &self.next_deadline())
            .finish_non_exhaustive()
    }
}

/// The level a deadline after `elapsed` is filed at: that of the highest
/// 6-bit digit in which the two differ.
fn level_for(deadline: u64, elapsed: u64) -> usize {
    // `| (SLOTS - 1)` makes a difference confined to digit 0 count as level
    // 0 rather than needing a special case.
    let highest_bit = u64::BITS - 1 - ((deadline ^ elapsed) | (SLOTS as u64 - 1)).leading_zeros();
    (highest_bit / SLOT_BITS) as usize
}

/// Reads the slab entries of `records`, so that they are in cache when used.
fn warm<T>(entries: &[Entry<T>], records: &[Record]) {
    let mut sum = 0u32;
    for record in records {
        if let Some(entry) = entries.get(record.index as usize) {
            // Both ends of the entry, which may straddle two cache lines.
            sum = sum.wrapping_add(entry.generation) ^ u32::from(entry.value.is_some());
        }
    }
    std::hint::black_box(sum);
}

/// Drops the tombstones from `records`, keeping order. Liveness is worked
/// out a chunk at a time before anything moves, so the slab reads (random,
/// mostly cache misses) are independent and overlap; `Vec::retain` would
/// branch on each one and let a misprediction throw the others away.
fn retain_live<T>(entries: &[Entry<T>], records: &mut Vec<Record>) {
    const CHUNK: usize = 1024;
    let mut live = [false; CHUNK];
    let mut kept = 0;
    for start in (0..records.len()).step_by(CHUNK) {
        let chunk = &records[start..records.len().min(start + CHUNK)];
        for (flag, record) in live.iter_mut().zip(chunk) {
            *flag = entries
                .get(record.index as usize)
                .is_some_and(|e| e.generation == record.generation);
        }
        for i in 0..chunk.len() {
            if live[i] {
                records[kept] = records[start + i];
                kept += 1;
            }
        }
    }
    records.truncate(kept);
}

/// Releases an empty slot buffer that has grown past `KEEP_CAPACITY`.
fn trim(records: &mut Vec<Record>) {
    if records.capacity() > KEEP_CAPACITY && records.is_empty() {
        *records = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashMap};

    use crate::test_rng::Rng;

    /// Level boundaries (64^k) for every level.
    fn boundaries() -> Vec<u64> {
        (1..LEVELS as u32).map(|k| 1u64 << (6 * k)).collect()
    }

    fn drain(wheel: &mut TimerWheel<u64>, now: u64) -> Vec<u64> {
        std::iter::from_fn(|| wheel.poll(now).map(|(_, v)| v)).collect()
    }

    /// Reference: a sorted map keyed by (effective deadline, insertion seq).
    #[derive(Default)]
    struct Model {
        queue: BTreeMap<(u64, u64), u64>,
        by_id: HashMap<u64, (u64, u64)>,
        deadlines: HashMap<u64, u64>,
        seq: u64,
        /// Mirror of the wheel's `elapsed`: the effective deadline of the last
        /// timer popped, or the poll time once a sequence ran dry.
        reached: u64,
        now: u64,
    }

    impl Model {
        fn insert(&mut self, id: u64, deadline: u64) {
            let effective = deadline.max(self.reached);
            self.queue.insert((effective, self.seq), id);
            self.by_id.insert(id, (effective, self.seq));
            self.deadlines.insert(id, deadline);
            self.seq += 1;
        }
        fn cancel(&mut self, id: u64) -> Option<u64> {
            let at = self.by_id.remove(&id)?;
            self.queue.remove(&at);
            Some(id)
        }
        fn pop(&mut self) -> Option<u64> {
            let (&(effective, seq), &id) = self.queue.iter().next()?;
            if effective > self.now {
                return None;
            }
            self.queue.remove(&(effective, seq));
            self.by_id.remove(&id);
            self.reached = effective;
            Some(id)
        }
        fn earliest(&self) -> Option<u64> {
            self.queue.keys().next().map(|&(effective, _)| effective)
        }
    }

    fn random_deadline(rng: &mut Rng, base: u64) -> u64 {
        let bounds = boundaries();
        match rng.below(10) {
            0 => base.saturating_add(rng.below(70)),
            1 => base.saturating_add(rng.below(5000)),
            2 => base.saturating_add(rng.below(1 << 22)),
            3 | 4 => {
                // Exactly on, or one either side of, a level boundary: both
                // relative to now and aligned in absolute time.
                let b = bounds[rng.below(bounds.len() as u64) as usize];
                let at = if rng.chance(50) {
                    base.saturating_add(b)
                } else {
                    (base & !(b - 1)).saturating_add(b)
                };
                at.saturating_add(1).saturating_sub(rng.below(3))
            }
            5 => match rng.below(4) {
                0 => u64::MAX - rng.below(3),
                1 => u64::MAX / 2 + rng.below(3),
                2 => base.saturating_add(rng.next() >> rng.below(64)),
                _ => rng.next(),
            },
            6 => base.saturating_sub(rng.below(100)),
            _ => base.saturating_add(rng.below(300)),
        }
    }

    fn random_time(rng: &mut Rng, wheel: &TimerWheel<u64>, model: &Model) -> u64 {
        let now = model.now;
        let bounds = boundaries();
        match rng.below(12) {
            0 => now.saturating_add(rng.below(10)),
            1 => now.saturating_add(rng.below(200)),
            2 => now.saturating_add(rng.below(100_000)),
            3 => model.earliest().unwrap_or(now),
            4 => model.earliest().unwrap_or(now).saturating_sub(1),
            5 => wheel.next_deadline().unwrap_or(now),
            6 => {
                let b = bounds[rng.below(bounds.len() as u64) as usize];
                (now & !(b - 1))
                    .saturating_add(b)
                    .saturating_add(1)
                    .saturating_sub(rng.below(3))
            }
            7 => now.saturating_sub(rng.below(1000)),
            8 if rng.chance(10) => u64::MAX - rng.below(2),
            _ => now.saturating_add(rng.below(1000)),
        }
    }

    /// Random inserts, cancels (of live, fired and cancelled keys) and time
    /// advances, with callbacks inserting and cancelling mid-sequence,
    /// checked step by step against the reference model.
    #[test]
    fn matches_reference_model() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _run in 0..1000 {
            let mut wheel = TimerWheel::new();
            let mut model = Model::default();
            let mut keys: Vec<(TimerKey, u64)> = Vec::new();
            let mut fired = 0usize;
            let ops = 50 + rng.below(400);
            // Per-run mix, so some runs build up many timers and others
            // cancel as fast as they insert (piling up tombstones).
            let inserts = 20 + rng.below(40);
            let cancels = inserts + rng.below(50);
            for _ in 0..ops {
                match rng.below(100) {
                    r if r < inserts => {
                        let id = keys.len() as u64;
                        let deadline = random_deadline(&mut rng, model.reached);
                        keys.push((wheel.insert(deadline, id), id));
                        model.insert(id, deadline);
                    }
                    r if r < cancels && !keys.is_empty() => {
                        // Mostly live timers (so tombstones pile up and get
                        // compacted), sometimes fired or cancelled ones.
                        let mut pick = rng.below(keys.len() as u64) as usize;
                        for _ in 0..8 {
                            if model.by_id.contains_key(&keys[pick].1) {
                                break;
                            }
                            pick = rng.below(keys.len() as u64) as usize;
                        }
                        let (key, id) = keys[pick];
                        assert_eq!(wheel.cancel(key), model.cancel(id));
                    }
                    _ => {
                        let to = random_time(&mut rng, &wheel, &model);
                        model.now = model.now.max(to);
                        loop {
                            let got = wheel.poll(to);
                            let want = model.pop();
                            assert_eq!(got.map(|(_, id)| id), want);
                            let Some((key, id)) = got else { break };
                            assert_eq!(key, keys[id as usize].0);
                            assert!(model.deadlines[&id] <= model.now, "fired early");
                            fired += 1;
                            // A callback: insert or cancel mid-sequence.
                            if rng.chance(30) {
                                let id = keys.len() as u64;
                                let deadline = random_deadline(&mut rng, model.reached);
                                keys.push((wheel.insert(deadline, id), id));
                                model.insert(id, deadline);
                            }
                            if rng.chance(20) {
                                let (key, id) = keys[rng.below(keys.len() as u64) as usize];
                                assert_eq!(wheel.cancel(key), model.cancel(id));
                            }
                        }
                        model.reached = model.now;
                        assert_eq!(wheel.now(), model.now);
                    }
                }
                assert_eq!(wheel.len(), model.queue.len());
                match (wheel.next_deadline(), model.earliest()) {
                    (None, None) => {}
                    (Some(bound), Some(earliest)) => assert!(bound <= earliest),
                    other => panic!("next_deadline mismatch: {other:?}"),
                }
            }
            // Everything left fires by the end of time, in order.
            model.now = u64::MAX;
            while let Some((_, id)) = wheel.poll(u64::MAX) {
                assert_eq!(Some(id), model.pop());
                fired += 1;
            }
            assert!(model.queue.is_empty() && wheel.is_empty());
            assert!(fired <= keys.len());
        }
    }

    /// A reactor that sleeps exactly until `next_deadline` fires every timer
    /// on time and wakes in vain at most once per level per deadline.
    #[test]
    fn next_deadline_drives_reactor_without_busy_loop() {
        let mut rng = Rng(42);
        let mut wheel = TimerWheel::new();
        let mut expected: BTreeMap<(u64, u64), u64> = BTreeMap::new();
        for id in 0..2000u64 {
            let deadline = random_deadline(&mut rng, 0);
            expected.insert((deadline, id), id);
            wheel.insert(deadline, id);
        }
        let distinct = expected
            .keys()
            .map(|&(d, _)| d)
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        let mut wakeups = 0;
        while let Some(at) = wheel.next_deadline() {
            assert!(
                at >= wheel.now() || wheel.now() == 0,
                "deadline in the past"
            );
            wakeups += 1;
            while let Some((_, id)) = wheel.poll(at) {
                let (&(deadline, seq), _) = expected.iter().next().unwrap();
                assert_eq!(
                    (deadline, seq),
                    (at, id),
                    "fired late, early or out of order"
                );
                expected.remove(&(deadline, seq));
            }
            assert!(wakeups <= distinct * LEVELS, "busy loop");
        }
        assert!(expected.is_empty());
    }

    #[test]
    fn stale_key_cannot_cancel_new_occupant() {
        let mut wheel = TimerWheel::new();
        let fired = wheel.insert(5, 1);
        assert_eq!(wheel.poll(5), Some((fired, 1)));
        let reuse = wheel.insert(10, 2);
        assert_eq!(fired.slab_index(), reuse.slab_index(), "slot reused");
        assert_eq!(wheel.cancel(fired), None);

        let cancelled = reuse;
        assert_eq!(wheel.cancel(cancelled), Some(2));
        let occupant = wheel.insert(10, 3);
        assert_eq!(cancelled.slab_index(), occupant.slab_index());
        assert_eq!(wheel.cancel(cancelled), None);
        assert_eq!(wheel.len(), 1);
        assert_eq!(drain(&mut wheel, 10), [3]);
    }

    #[test]
    fn cancel_is_idempotent() {
        let mut wheel = TimerWheel::new();
        let a = wheel.insert(100, 1);
        let b = wheel.insert(100, 2);
        let c = wheel.insert(100, 3);
        assert_eq!(wheel.cancel(b), Some(2));
        for _ in 0..3 {
            assert_eq!(wheel.cancel(b), None);
        }
        assert_eq!(wheel.len(), 2);
        assert_eq!(drain(&mut wheel, 100), [1, 3]);
        assert_eq!(wheel.cancel(a), None);
        assert_eq!(wheel.cancel(c), None);
        assert!(wheel.is_empty());
    }

    #[test]
    fn key_from_another_wheel_is_harmless() {
        let mut a = TimerWheel::new();
        let mut b = TimerWheel::new();
        let ka = a.insert(5, 1);
        b.insert(5, 2);
        assert_eq!(b.cancel(ka), None);
        let far = TimerKey::new(1_000_000, 0);
        assert_eq!(a.cancel(far), None);
        assert_eq!(drain(&mut b, 5), [2]);
        assert_eq!(drain(&mut a, 5), [1]);
    }

    #[test]
    fn next_deadline_bounds() {
        let mut wheel = TimerWheel::new();
        assert_eq!(wheel.next_deadline(), None);
        wheel.insert(40, 1);
        assert_eq!(wheel.next_deadline(), Some(40), "exact within level 0");
        let k = wheel.insert(3, 2);
        assert_eq!(wheel.next_deadline(), Some(3));
        wheel.cancel(k);
        assert_eq!(wheel.next_deadline(), Some(40));
        assert_eq!(drain(&mut wheel, 40), [1]);
        assert_eq!(wheel.next_deadline(), None);

        // Farther out: the slot start bounds the deadline from below, and
        // polling there tightens it.
        wheel.insert(5000, 3);
        let first = wheel.next_deadline().unwrap();
        assert!((40..=5000).contains(&first));
        assert!(wheel.poll(first).is_none());
        let second = wheel.next_deadline().unwrap();
        assert!(second > first && second <= 5000);

        // Past deadlines are due now.
        wheel.insert(7, 4);
        assert_eq!(wheel.next_deadline(), Some(first));
        assert_eq!(drain(&mut wheel, first), [4]);
        assert_eq!(drain(&mut wheel, 5000), [3]);
    }

    #[test]
    fn huge_deadlines_fire_on_time() {
        let mut wheel = TimerWheel::new();
        let deadlines = [
            u64::MAX,
            u64::MAX / 2,
            u64::MAX / 2 + 1,
            1 << 60,
            (1 << 60) - 1,
            86_400_000,
        ];
        for (i, &d) in deadlines.iter().enumerate() {
            wheel.insert(d, i as u64);
        }
        let mut sorted: Vec<_> = deadlines.iter().copied().enumerate().collect();
        sorted.sort_by_key(|&(_, d)| d);
        for (i, d) in sorted {
            assert_eq!(
                drain(&mut wheel, d - 1),
                Vec::<u64>::new(),
                "early at {}",
                d - 1
            );
            assert_eq!(drain(&mut wheel, d), [i as u64]);
        }
        assert!(wheel.is_empty());
        assert_eq!(wheel.now(), u64::MAX);
        // At the end of time everything is due immediately.
        wheel.insert(u64::MAX, 9);
        wheel.insert(0, 10);
        assert_eq!(drain(&mut wheel, 0), [9, 10]);
    }

    #[test]
    fn time_never_goes_backwards() {
        let mut wheel = TimerWheel::new();
        wheel.insert(50, 1);
        wheel.insert(150, 2);
        assert_eq!(drain(&mut wheel, 100), [1]);
        assert_eq!(wheel.now(), 100);
        assert_eq!(drain(&mut wheel, 20), Vec::<u64>::new());
        assert_eq!(wheel.now(), 100);
        // A deadline behind the wheel's time is due now.
        wheel.insert(60, 3);
        assert_eq!(drain(&mut wheel, 0), [3]);
        assert_eq!(drain(&mut wheel, 150), [2]);
    }

    #[test]
    fn equal_deadlines_fire_in_insertion_order() {
        let mut wheel = TimerWheel::new();
        // Inserted from different times, so they cascade from different
        // levels before meeting in the same slot.
        wheel.insert(10_000, 0);
        wheel.insert(10_000, 1);
        drain(&mut wheel, 4100);
        wheel.insert(10_000, 2);
        drain(&mut wheel, 9_990);
        wheel.insert(10_000, 3);
        assert_eq!(drain(&mut wheel, 10_000), [0, 1, 2, 3]);
    }

    #[test]
    fn inserts_during_poll_sequence() {
        let mut wheel = TimerWheel::new();
        wheel.insert(10, 1);
        wheel.insert(10, 2);
        wheel.insert(30, 3);
        assert_eq!(wheel.poll(40).map(|(_, v)| v), Some(1));
        wheel.insert(5, 4); // past: due at 10, after 2
        wheel.insert(20, 5); // between: fires before 3
        wheel.insert(50, 6); // beyond now: waits
        assert_eq!(drain(&mut wheel, 40), [2, 4, 5, 3]);
        assert_eq!(drain(&mut wheel, 50), [6]);
    }

    #[test]
    fn tombstones_stay_bounded() {
        let mut wheel = TimerWheel::new();
        let keep: Vec<_> = (0..100).map(|i| wheel.insert(1_000_000 + i, i)).collect();
        let mut rng = Rng(7);
        let mut pending = Vec::new();
        for i in 0..100_000u64 {
            pending.push(wheel.insert(rng.below(1 << 30), i));
            if pending.len() > 10 {
                // Cancel a non-tail record, so tombstones are left behind.
                let k = pending.swap_remove(rng.below(5) as usize);
                assert!(wheel.cancel(k).is_some());
            }
            assert!(wheel.dead <= wheel.live.max(COMPACT_MIN));
        }
        assert_eq!(wheel.len(), keep.len() + pending.len());
        let records: usize = wheel.slots.iter().map(Vec::len).sum::<usize>() + wheel.due.len();
        assert_eq!(records, wheel.live + wheel.dead);
    }

    #[test]
    fn option_key_is_small() {
        assert_eq!(std::mem::size_of::<Option<TimerKey>>(), 8);
    }
}
