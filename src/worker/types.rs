//! Type fingerprints: every worker message starts with 8 bytes naming the
//! type it was encoded from, checked when it is decoded, because postcard
//! is not self-describing — a `u32` read as an `i32` or a `bool` would
//! otherwise decode to a wrong value without an error.
//!
//! The fingerprint is a 64-bit FNV-1a hash of the type's name as
//! [`std::any::type_name`] spells it, brought to a canonical form first so
//! that the types serde encodes alike agree: references and `Box`, `Rc`,
//! `Arc` and `Cow` wrappers are dropped, `str` is `String` and a slice
//! `[T]` is `Vec<T>`. It is computed once per type and thread and cached
//! under the address of the name, so a message pays a lookup, not a hash.
//!
//! `type_name` is not stable across compilers, so a fingerprint is only
//! meaningful between processes of one binary — which the master and its
//! workers are, the workers being forks of it.
//!
//! Names for error messages: each process keeps a table of the types it
//! has fingerprinted, and a sender tells each channel the name of a type
//! the first time it sends it (`Envelope::TypeName`), so that a mismatch
//! can name both types.

use std::any::type_name;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, OnceLock};

use crate::codec::MessageError;

/// Bytes of the fingerprint in front of every message's postcard bytes.
pub(crate) const FINGERPRINT_LEN: usize = 8;

/// Keys that are already hashes or addresses need no SipHash: a
/// multiply spreads them over the table.
#[derive(Default)]
pub(crate) struct CheapHasher(u64);

impl Hasher for CheapHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// A set of fingerprints, hashed cheaply.
pub(crate) type FingerprintSet = HashSet<u64, BuildHasherDefault<CheapHasher>>;

/// Slots of the per-thread cache of fingerprints.
const SLOTS: usize = 64;

thread_local! {
    /// Fingerprints by the address and length of the type's name, in a
    /// direct-mapped table: one load and compare per message. A slot's
    /// collision only costs a recomputation.
    // Clippy 1.85 (rust-version) asks for a const initializer that is
    // already there; later releases do not.
    #[allow(clippy::missing_const_for_thread_local)]
    static CACHE: [Cell<(usize, usize, u64)>; SLOTS] =
        const { [const { Cell::new((0, 0, 0)) }; SLOTS] };
    /// The types whose names this worker process told the master already
    /// (a worker has one channel, to the master, for its whole life), and
    /// the last one, checked first.
    #[allow(clippy::missing_const_for_thread_local)]
    static TOLD_MASTER: (Cell<u64>, RefCell<FingerprintSet>) =
        (Cell::new(0), RefCell::default());
}

/// Every name this process has met, by fingerprint: its own types and the
/// names its peers told it.
fn names() -> &'static Mutex<HashMap<u64, String>> {
    static NAMES: OnceLock<Mutex<HashMap<u64, String>>> = OnceLock::new();
    NAMES.get_or_init(Mutex::default)
}

/// The fingerprint of `T` (cached).
#[inline]
pub(crate) fn fingerprint<T: ?Sized>() -> u64 {
    let raw = type_name::<T>();
    // The name is a static string: its address and length identify it.
    let (ptr, len) = (raw.as_ptr() as usize, raw.len());
    // 64-bit multiply on every target (the constant does not fit a 32-bit
    // usize); the top 6 bits pick one of the 64 slots.
    let slot = (((ptr ^ len) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize;
    let hit = CACHE.with(|c| {
        let (p, l, fp) = c[slot % SLOTS].get();
        (p == ptr && l == len).then_some(fp)
    });
    match hit {
        Some(fp) => fp,
        None => compute(raw, slot),
    }
}

/// The first use of a type on this thread (or a slot it shares).
#[cold]
#[inline(never)]
fn compute(raw: &'static str, slot: usize) -> u64 {
    let canonical = canonical(raw);
    let fp = fnv1a(canonical.as_bytes());
    learn(fp, &short_name(&canonical));
    CACHE.with(|c| c[slot % SLOTS].set((raw.as_ptr() as usize, raw.len(), fp)));
    fp
}

/// `T`'s name as error messages give it.
pub(crate) fn display_name<T: ?Sized>() -> String {
    short_name(&canonical(type_name::<T>()))
}

/// Remembers the name of fingerprint `fp` (one of ours, or told by a peer).
pub(crate) fn learn(fp: u64, name: &str) {
    if let Ok(mut names) = names().lock() {
        names.entry(fp).or_insert_with(|| name.to_string());
    }
}

/// The name of fingerprint `fp`, if this process has met it.
pub(crate) fn name_of(fp: u64) -> Option<String> {
    names().lock().ok()?.get(&fp).cloned()
}

/// The fingerprint at the front of a message, if it has one.
pub(crate) fn fingerprint_of(message: &[u8]) -> Option<u64> {
    let head = message.get(..FINGERPRINT_LEN)?;
    Some(u64::from_le_bytes(head.try_into().ok()?))
}

/// Whether this worker process has not told the master `fp`'s name yet
/// (and now counts it as told).
pub(crate) fn first_time_to_master(fp: u64) -> bool {
    TOLD_MASTER.with(|(last, told)| {
        if last.get() == fp {
            return false;
        }
        last.set(fp);
        told.borrow_mut().insert(fp)
    })
}

/// Checks that `message` was encoded from a `T` and returns its postcard
/// bytes.
///
/// # Errors
/// [`MessageError::WrongType`] naming both types (the other by its
/// fingerprint when this process never met its name).
pub(crate) fn check<T: ?Sized>(message: &[u8]) -> Result<&[u8], MessageError> {
    match fingerprint_of(message) {
        Some(fp) if fp == fingerprint::<T>() => Ok(&message[FINGERPRINT_LEN..]),
        found => Err(MessageError::WrongType {
            expected: display_name::<T>(),
            got: match found {
                Some(fp) => name_of(fp).unwrap_or_else(|| format!("unknown type {fp:#018x}")),
                None => format!("{} bytes without a type fingerprint", message.len()),
            },
        }),
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// Wrappers serde encodes as what they hold.
const TRANSPARENT: [&str; 4] = [
    "alloc::boxed::Box",
    "alloc::rc::Rc",
    "alloc::sync::Arc",
    "alloc::borrow::Cow",
];

/// The form of a type name under which the types serde encodes alike
/// agree (see the module's documentation).
fn canonical(ty: &str) -> String {
    let mut out = String::with_capacity(ty.len());
    canonical_into(ty, &mut out);
    out
}

fn canonical_into(ty: &str, out: &mut String) {
    let mut ty = ty.trim();
    loop {
        if let Some(rest) = ty.strip_prefix("&mut ") {
            ty = rest;
        } else if let Some(rest) = ty.strip_prefix('&') {
            ty = rest;
        } else if let (Some(rest), Some(end)) = (ty.strip_prefix('\''), ty.find(' ')) {
            // A lifetime (`&'a T`): serde does not see it.
            ty = &rest[end..];
        } else {
            break;
        }
    }
    if ty == "str" {
        out.push_str("alloc::string::String");
    } else if let Some(inner) = ty.strip_prefix('(').and_then(|t| t.strip_suffix(')')) {
        out.push('(');
        list_into(inner, out);
        out.push(')');
    } else if let Some(inner) = ty.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        match split_top(inner, ';').as_slice() {
            [elem, len] => {
                out.push('[');
                canonical_into(elem, out);
                out.push_str("; ");
                out.push_str(len.trim());
                out.push(']');
            }
            _ => {
                out.push_str("alloc::vec::Vec<");
                canonical_into(inner, out);
                out.push('>');
            }
        }
    } else if let (Some(open), true) = (ty.find('<'), ty.ends_with('>')) {
        let (head, args) = (&ty[..open], &ty[open + 1..ty.len() - 1]);
        let args_list: Vec<&str> = split_top(args, ',')
            .into_iter()
            .filter(|t| !t.trim().starts_with('\''))
            .collect();
        if TRANSPARENT.contains(&head) && !args_list.is_empty() {
            canonical_into(args_list[0], out);
        } else {
            out.push_str(head);
            out.push('<');
            list_into(args, out);
            out.push('>');
        }
    } else {
        out.push_str(ty);
    }
}

fn list_into(list: &str, out: &mut String) {
    // Lifetime arguments (`Cow<'_, str>`) are not part of the encoding.
    let items = split_top(list, ',').into_iter();
    for (i, item) in items.filter(|t| !t.trim().starts_with('\'')).enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        canonical_into(item, out);
    }
}

/// Splits `s` at each `sep` outside brackets; an empty `s` has no parts.
fn split_top(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, c) in s.char_indices() {
        match c {
            '<' | '(' | '[' => depth += 1,
            '>' | ')' | ']' => depth = depth.saturating_sub(1),
            c if c == sep && depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if !s.trim().is_empty() {
        parts.push(&s[start..]);
    }
    parts
}

/// A canonical name as people write it: the standard library's paths
/// (`alloc::string::String`) shortened to the type (`String`); the
/// program's own paths kept, since they tell its types apart.
fn short_name(canonical: &str) -> String {
    let mut out = String::with_capacity(canonical.len());
    let mut rest = canonical;
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        let (path, tail) = rest.split_at(end);
        let std_path = ["alloc::", "core::", "std::"]
            .iter()
            .any(|p| path.starts_with(p));
        match path.rfind("::") {
            Some(i) if std_path => out.push_str(&path[i + 2..]),
            _ => out.push_str(path),
        }
        let sep_end = tail
            .find(|c: char| c.is_alphanumeric() || c == '_' || c == ':')
            .unwrap_or(tail.len());
        out.push_str(&tail[..sep_end]);
        rest = &tail[sep_end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp<T: ?Sized>() -> u64 {
        fingerprint::<T>()
    }

    #[test]
    fn types_serde_encodes_alike_agree() {
        assert_eq!(fp::<str>(), fp::<String>());
        assert_eq!(fp::<&str>(), fp::<String>());
        assert_eq!(fp::<[u8]>(), fp::<Vec<u8>>());
        assert_eq!(fp::<Box<u32>>(), fp::<u32>());
        assert_eq!(
            fp::<(&str, Option<&[u32]>)>(),
            fp::<(String, Option<Vec<u32>>)>()
        );
        assert_eq!(fp::<std::borrow::Cow<'static, str>>(), fp::<String>());
    }

    #[test]
    fn types_serde_encodes_differently_differ() {
        assert_ne!(fp::<u32>(), fp::<i32>());
        assert_ne!(fp::<u32>(), fp::<bool>());
        assert_ne!(fp::<[u8; 4]>(), fp::<Vec<u8>>());
        assert_ne!(fp::<(u32, u32)>(), fp::<(u32,)>());
        assert_ne!(fp::<Option<u32>>(), fp::<u32>());
    }

    #[test]
    fn names_are_short_for_the_standard_library_only() {
        assert_eq!(short_name(&canonical(type_name::<&str>())), "String");
        assert_eq!(
            short_name(&canonical(type_name::<Option<Vec<(u8, String)>>>())),
            "Option<Vec<(u8, String)>>"
        );
        assert_eq!(short_name(&canonical(type_name::<[u16; 3]>())), "[u16; 3]");
        struct Mine;
        let mine = short_name(&canonical(type_name::<Mine>()));
        assert!(
            mine.starts_with("packet::") && mine.ends_with("::Mine"),
            "{mine}"
        );
    }

    #[test]
    fn a_mismatch_names_both_types() {
        let mut msg = fp::<u32>().to_le_bytes().to_vec();
        msg.push(42);
        assert_eq!(check::<u32>(&msg), Ok(&[42u8][..]));
        let err = check::<i32>(&msg).unwrap_err();
        assert_eq!(
            err,
            MessageError::WrongType {
                expected: "i32".into(),
                got: "u32".into()
            }
        );
        let unknown = [1, 2, 3, 4, 5, 6, 7, 8, 9];
        let err = check::<bool>(&unknown).unwrap_err().to_string();
        assert!(
            err.contains("`bool`") && err.contains("unknown type 0x0807"),
            "{err}"
        );
        let err = check::<bool>(&[1]).unwrap_err().to_string();
        assert!(err.contains("without a type fingerprint"), "{err}");
    }
}
