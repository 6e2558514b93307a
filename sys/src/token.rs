//! Tokens through kqueue's pointer-sized `udata`.
//!
//! A selector token is a `u64`: a slot index in the low 32 bits and that
//! slot's generation in the high 32 bits (how `packet`'s slab hands them
//! out; the all-ones token is the waker's). epoll carries all 64 bits in
//! `epoll_event.data.u64` on every target. kqueue(2) carries a token in
//! `udata`, a `void *` (`intptr_t` on NetBSD before 10) that the kernel
//! hands back unchanged: 64 bits on 64-bit targets, only 32 on i686 or
//! armv7 FreeBSD. Cutting the token to 32 bits there would drop the
//! generation, so every event of a reused slot would look stale and the
//! waker's all-ones token would no longer match.
//!
//! On a 32-bit target the token is therefore packed as 24 bits of slot and
//! the low 8 bits of generation, and the selector keeps the full token of
//! each slot's latest registration ([`Tokens`]) to give back with its events.
//! The limits that follow, documented in RELIABILITY.md:
//!
//! - at most [`MAX_SLOT_32`] + 1 slots (16,777,215): registering a token
//!   whose slot is past that fails with `InvalidInput` naming the limit,
//!   rather than truncating it into another slot;
//! - the stale check inside one batch of events compares generations modulo
//!   256; a queued event of a slot reused exactly a multiple of 256 times
//!   since is delivered to the newest registration as a spurious readiness,
//!   which edge-triggered owners already tolerate (a read that finds
//!   nothing).
//!
//! The packing is a pure function of the pointer width, so the 32-bit
//! layout is unit-tested on the 64-bit Linux host.

use std::io;

/// The token of the waker and of nothing else: all ones at every width.
pub(crate) const RESERVED: u64 = u64::MAX;

/// Slot bits in a 32-bit `udata`; the other 8 carry the generation.
const SLOT_BITS_32: u32 = 24;

/// The largest slot a 32-bit `udata` carries. All 24 ones is left out so
/// that no slot's packed form can equal the waker's all-ones `udata`.
pub(crate) const MAX_SLOT_32: u64 = (1 << SLOT_BITS_32) - 2;

/// The all-ones value of `width` bits: the waker's `udata`.
fn all_ones(width: u32) -> u64 {
    u64::MAX >> (64 - width.min(64))
}

/// `token` as a `udata` value of `width` bits (`usize::BITS` of the
/// target), or the error a registration past the slot limit returns.
pub(crate) fn pack(token: u64, width: u32) -> io::Result<u64> {
    if token == RESERVED {
        return Ok(all_ones(width));
    }
    if width >= 64 {
        return Ok(token);
    }
    let (slot, generation) = (token & 0xffff_ffff, token >> 32);
    if slot > MAX_SLOT_32 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "kqueue on a 32-bit target: slot {slot} is past the limit of {} registrations \
                 per reactor (24 bits of the pointer-sized udata, kqueue(2))",
                MAX_SLOT_32 + 1
            ),
        ));
    }
    Ok(((generation & 0xff) << SLOT_BITS_32) | slot)
}

/// The slot and the generation bits a `udata` of `width` bits carries: for
/// 64 bits the whole token is `(low 32, high 32)`; for 32 bits, 24 and 8.
pub(crate) fn split(packed: u64, width: u32) -> (u64, u64) {
    if width >= 64 {
        (packed & 0xffff_ffff, packed >> 32)
    } else {
        (packed & all_ones(SLOT_BITS_32), packed >> SLOT_BITS_32)
    }
}

/// What turns a `udata` back into the caller's full token: nothing on
/// 64-bit targets, the latest full token per slot on 32-bit ones.
#[derive(Debug)]
pub(crate) struct Tokens {
    width: u32,
    /// Indexed by slot; [`RESERVED`] where no registration was seen.
    latest: Vec<u64>,
}

impl Tokens {
    /// For a `udata` of `width` bits: `usize::BITS` outside tests.
    pub(crate) fn new(width: u32) -> Tokens {
        Tokens {
            width,
            latest: Vec::new(),
        }
    }

    /// The `udata` value to register `token` with, remembering the full
    /// token where the width cannot carry it.
    ///
    /// # Errors
    /// `InvalidInput` past the slot limit of a 32-bit target.
    pub(crate) fn register(&mut self, token: u64) -> io::Result<u64> {
        let packed = pack(token, self.width)?;
        if self.width < 64 && token != RESERVED {
            let slot = split(packed, self.width).0 as usize;
            if self.latest.len() <= slot {
                self.latest.resize(slot + 1, RESERVED);
            }
            self.latest[slot] = token;
        }
        Ok(packed)
    }

    /// The full token an event's `udata` stands for, or `None` for an event
    /// left over from an earlier registration of the slot (stale).
    pub(crate) fn token(&self, udata: u64) -> Option<u64> {
        if self.width >= 64 {
            return Some(udata);
        }
        if udata == all_ones(self.width) {
            return Some(RESERVED);
        }
        let (slot, generation) = split(udata, self.width);
        match self.latest.get(slot as usize) {
            Some(&full) if full != RESERVED && (full >> 32) & 0xff == generation => Some(full),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(slot: u64, generation: u64) -> u64 {
        (generation << 32) | slot
    }

    #[test]
    fn sixty_four_bits_carry_every_token_unchanged() {
        let mut t = Tokens::new(64);
        for tok in [0, 7, token(5, 3), token(0xffff_fffe, 0xffff_fffe), RESERVED] {
            let udata = t.register(tok).unwrap();
            assert_eq!(udata, tok);
            assert_eq!(t.token(udata), Some(tok));
        }
    }

    #[test]
    fn thirty_two_bits_round_trip_slot_and_full_generation() {
        let mut t = Tokens::new(32);
        for (slot, generation) in [(0, 0), (1, 1), (5, 255), (5, 256), (9, 0xffff_fffe)] {
            let tok = token(slot, generation);
            let udata = t.register(tok).unwrap();
            assert!(
                udata <= u64::from(u32::MAX),
                "{udata:#x} does not fit 32 bits"
            );
            assert_eq!(split(udata, 32), (slot, generation & 0xff));
            assert_eq!(
                t.token(udata),
                Some(tok),
                "slot {slot} generation {generation}"
            );
        }
        let max = token(MAX_SLOT_32, 3);
        let udata = t.register(max).unwrap();
        assert_ne!(
            udata,
            u64::from(u32::MAX),
            "the last slot must not look like the waker"
        );
        assert_eq!(t.token(udata), Some(max));
    }

    #[test]
    fn thirty_two_bits_keep_the_waker_token() {
        let mut t = Tokens::new(32);
        let udata = t.register(RESERVED).unwrap();
        assert_eq!(udata, u64::from(u32::MAX));
        assert_eq!(t.token(udata), Some(RESERVED));
    }

    #[test]
    fn thirty_two_bits_refuse_slots_past_the_limit_instead_of_truncating() {
        let mut t = Tokens::new(32);
        for slot in [MAX_SLOT_32 + 1, 1 << 24, 0xffff_fffe] {
            let e = t.register(token(slot, 1)).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
            assert!(e.to_string().contains("16777215"), "{e}");
        }
    }

    #[test]
    fn thirty_two_bits_drop_events_of_an_earlier_registration_of_the_slot() {
        let mut t = Tokens::new(32);
        let old = t.register(token(4, 10)).unwrap();
        let new = t.register(token(4, 11)).unwrap();
        assert_eq!(t.token(old), None, "stale: the slot was registered again");
        assert_eq!(t.token(new), Some(token(4, 11)));
        assert_eq!(
            t.token(pack(token(6, 0), 32).unwrap()),
            None,
            "never registered"
        );
    }
}
