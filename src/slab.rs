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
