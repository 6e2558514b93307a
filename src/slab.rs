//! A slab of values addressed by generation-checked tokens.
//!
//! The reactor stores every connection and listener here and registers the
//! token with the selector. A token names a slot *and* the generation of the
//! value in it, so an event still queued for a value that was removed (and
//! whose slot may already hold a new value) is recognised as stale instead
//! of being delivered to the newcomer.

/// `index` in the low 32 bits, `generation` in the high 32 bits. The all-ones
/// value is never produced (generations skip `u32::MAX`) so callers can use
/// it as a reserved token.
pub(crate) type Token = u64;

pub(crate) const RESERVED_TOKEN: Token = u64::MAX;

/// A map keyed by tokens or other ids this library hands out itself.
///
/// Those keys never come from a peer, so the map needs no defence against
/// chosen collisions and skips std's `RandomState`: no random seed per map,
/// and SipHash's code and cost are gone from the hot path and the binary.
pub(crate) type IdMap<K, V> =
    std::collections::HashMap<K, V, std::hash::BuildHasherDefault<IdHasher>>;

/// One multiply per key: spreads sequential ids over both ends of the hash,
/// the low bits (the bucket) and the high bits (hashbrown's tag byte).
#[derive(Default)]
pub(crate) struct IdHasher(u64);

const MIX: u64 = 0x9e37_79b9_7f4a_7c15; // 2^64 / the golden ratio, odd

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(MIX);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(MIX);
    }
}

enum Entry<T> {
    Occupied { gen: u32, value: T },
    Vacant { gen: u32, next_free: u32 },
}

pub(crate) struct Slab<T> {
    entries: Vec<Entry<T>>,
    /// Head of the free list threaded through vacant entries; `NONE` if empty.
    free: u32,
    len: usize,
}

const NONE: u32 = u32::MAX;

/// The bytes one slot of a `Slab<T>` takes.
#[cfg(test)]
pub(crate) const fn entry_size<T>() -> usize {
    std::mem::size_of::<Entry<T>>()
}

fn split(token: Token) -> (usize, u32) {
    ((token & 0xffff_ffff) as usize, (token >> 32) as u32)
}

impl<T> Slab<T> {
    pub(crate) fn new() -> Slab<T> {
        Slab {
            entries: Vec::new(),
            free: NONE,
            len: 0,
        }
    }

    pub(crate) fn insert(&mut self, value: T) -> Token {
        self.len += 1;
        if self.free != NONE {
            let index = self.free;
            let slot = &mut self.entries[index as usize];
            let gen = match *slot {
                Entry::Vacant { gen, next_free } => {
                    self.free = next_free;
                    gen
                }
                Entry::Occupied { .. } => unreachable!("free list points at an occupied slot"),
            };
            *slot = Entry::Occupied { gen, value };
            return (u64::from(gen) << 32) | u64::from(index);
        }
        let index = self.entries.len();
        assert!(index < NONE as usize, "slab full: 2^32-1 live entries");
        self.entries.push(Entry::Occupied { gen: 0, value });
        index as u64
    }

    pub(crate) fn get(&self, token: Token) -> Option<&T> {
        let (index, gen) = split(token);
        match self.entries.get(index) {
            Some(Entry::Occupied { gen: g, value }) if *g == gen => Some(value),
            _ => None,
        }
    }

    pub(crate) fn get_mut(&mut self, token: Token) -> Option<&mut T> {
        let (index, gen) = split(token);
        match self.entries.get_mut(index) {
            Some(Entry::Occupied { gen: g, value }) if *g == gen => Some(value),
            _ => None,
        }
    }

    pub(crate) fn remove(&mut self, token: Token) -> Option<T> {
        let (index, gen) = split(token);
        match self.entries.get(index) {
            Some(Entry::Occupied { gen: g, .. }) if *g == gen => {}
            _ => return None,
        }
        // Skipping u32::MAX keeps RESERVED_TOKEN unreachable.
        let next_gen = if gen.wrapping_add(1) == u32::MAX {
            0
        } else {
            gen.wrapping_add(1)
        };
        let old = std::mem::replace(
            &mut self.entries[index],
            Entry::Vacant {
                gen: next_gen,
                next_free: self.free,
            },
        );
        self.free = index as u32;
        self.len -= 1;
        match old {
            Entry::Occupied { value, .. } => Some(value),
            Entry::Vacant { .. } => None,
        }
    }

    /// Tokens of every live value, for shutdown.
    pub(crate) fn tokens(&self) -> Vec<Token> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match e {
                Entry::Occupied { gen, .. } => Some((u64::from(*gen) << 32) | i as u64),
                Entry::Vacant { .. } => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_hasher_spreads_sequential_tokens_over_buckets_and_tags() {
        use std::hash::BuildHasher;
        let build = std::hash::BuildHasherDefault::<IdHasher>::default();
        // Slots 0..1024 of generation 3, as a busy slab hands them out.
        let hashes: Vec<u64> = (0..1024u64)
            .map(|i| build.hash_one(3u64 << 32 | i))
            .collect();
        let buckets: std::collections::BTreeSet<u64> = hashes.iter().map(|h| h & 1023).collect();
        let tags: std::collections::BTreeSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert_eq!(buckets.len(), 1024, "low bits collide");
        assert_eq!(tags.len(), 128, "hashbrown's tag byte takes few values");
        let mut map = IdMap::default();
        for i in 0..10_000u64 {
            map.insert(i << 32 | i, i);
        }
        assert!((0..10_000u64).all(|i| map.remove(&(i << 32 | i)) == Some(i)));
        assert!(map.is_empty());
    }

    #[test]
    fn stale_token_does_not_reach_the_new_occupant() {
        let mut s = Slab::new();
        let a = s.insert("a");
        assert_eq!(s.remove(a), Some("a"));
        let b = s.insert("b");
        assert_eq!(a & 0xffff_ffff, b & 0xffff_ffff, "slot is reused");
        assert_ne!(a, b);
        assert_eq!(s.get(a), None);
        assert_eq!(s.remove(a), None);
        assert_eq!(s.get(b), Some(&"b"));
        assert_eq!(s.len, 1);
    }

    #[test]
    fn free_list_reuses_slots_and_tokens_lists_live_ones() {
        let mut s = Slab::new();
        let t: Vec<_> = (0..5).map(|i| s.insert(i)).collect();
        s.remove(t[1]);
        s.remove(t[3]);
        let mut live = s.tokens();
        live.sort();
        assert_eq!(live, vec![t[0], t[2], t[4]]);
        let n = s.insert(9);
        assert_eq!(n & 0xffff_ffff, 3);
        assert_ne!(n, RESERVED_TOKEN);
    }
}
