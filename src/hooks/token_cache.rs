//! [`TokenCache`]: the consumer ids of recently seen bearer tokens, so that a
//! token seen again costs a keyed 128-bit hash (two SipHash-1-3) instead of a
//! SHA-256 or HMAC-SHA256 (about 4,000 instructions per request in the
//! overhead probe, most of the consumer derivation).
//!
//! The cache never holds a token: a slot is keyed by a hash of the token under
//! keys drawn at random for each cache (std's `RandomState`), which says
//! nothing about the token to anyone without the keys, not even to a
//! dictionary, and holds the consumer id, which the records store anyway. Two
//! tokens share a slot's key only with probability 2^-128 per pair.
//!
//! Bounded: [`SLOTS`] slots, direct-mapped (a token's slot is chosen by its
//! keyed hash, so no client can aim tokens at one slot). A token that finds its
//! slot taken by another replaces it. The lock is only tried: a caller that
//! finds it held computes the id as without a cache, so nothing ever waits.

use std::hash::{BuildHasher, Hasher};
use std::sync::{Mutex, OnceLock};

/// How many tokens the cache keeps: 512 slots of 49 bytes (25 KiB).
pub(super) const SLOTS: usize = 512;

/// The length of a consumer id: 32 lower-case hex digits.
const ID_LEN: usize = 32;

#[derive(Clone, Copy)]
struct Slot {
    /// The keyed hash of the token; 0 when the slot is empty (a hash of 0 is
    /// never cached).
    tag: u128,
    id: [u8; ID_LEN],
}

/// See the [module docs](self).
pub(super) struct TokenCache {
    keys: (
        std::collections::hash_map::RandomState,
        std::collections::hash_map::RandomState,
    ),
    /// Allocated at the first use.
    slots: OnceLock<Mutex<Box<[Slot]>>>,
}

impl TokenCache {
    pub(super) fn new() -> Self {
        Self {
            keys: Default::default(),
            slots: OnceLock::new(),
        }
    }

    fn tag(&self, token: &str) -> u128 {
        let hash = |keys: &std::collections::hash_map::RandomState| {
            let mut h = keys.build_hasher();
            h.write(token.as_bytes());
            h.finish()
        };
        u128::from(hash(&self.keys.0)) << 64 | u128::from(hash(&self.keys.1))
    }

    /// The consumer id of `token`: from the cache (written over `buf`, so a
    /// caller can lend a spare allocation), or made by `derive` (which must
    /// give 32 ASCII bytes; any other id is returned but not cached).
    pub(super) fn get_or_derive(
        &self,
        token: &str,
        derive: impl FnOnce() -> String,
        mut buf: String,
    ) -> String {
        let tag = self.tag(token);
        let index = (tag as usize) % SLOTS;
        let slots = self.slots.get_or_init(|| {
            let empty = Slot {
                tag: 0,
                id: [0; ID_LEN],
            };
            Mutex::new(vec![empty; SLOTS].into_boxed_slice())
        });
        if let Ok(slots) = slots.try_lock() {
            let slot = &slots[index];
            if tag != 0 && slot.tag == tag {
                // Only ASCII ids are cached (below): never lossy.
                buf.clear();
                buf.push_str(&String::from_utf8_lossy(&slot.id));
                return buf;
            }
        }
        let id = derive();
        if let (Ok(bytes), Ok(mut slots)) =
            (<[u8; ID_LEN]>::try_from(id.as_bytes()), slots.try_lock())
        {
            if tag != 0 && bytes.is_ascii() {
                slots[index] = Slot { tag, id: bytes };
            }
        }
        id
    }
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn id_of(n: usize) -> String {
        format!("{n:032x}")
    }

    #[test]
    fn a_token_seen_again_is_not_derived_again() {
        let cache = TokenCache::new();
        let calls = Cell::new(0);
        let derive = |n| {
            calls.set(calls.get() + 1);
            id_of(n)
        };
        assert_eq!(
            cache.get_or_derive("token-a", || derive(1), String::new()),
            id_of(1)
        );
        assert_eq!(
            cache.get_or_derive("token-a", || derive(99), String::new()),
            id_of(1)
        );
        // A lent buffer is written over, never appended to.
        let lent = String::from("a stale consumer id of another record");
        assert_eq!(
            cache.get_or_derive("token-a", || derive(99), lent),
            id_of(1)
        );
        assert_eq!(calls.get(), 1);
        assert_eq!(
            cache.get_or_derive("token-b", || derive(2), String::new()),
            id_of(2)
        );
        assert_eq!(calls.get(), 2);
    }

    #[test]
    fn many_tokens_stay_bounded_and_each_gets_its_own_id() {
        let cache = TokenCache::new();
        // Four times the slots: evictions happen; an evicted token is derived
        // again, never answered with another token's id.
        for round in 0..2 {
            for n in 0..4 * SLOTS {
                let id = cache.get_or_derive(&format!("tok-{n}"), || id_of(n), String::new());
                assert_eq!(id, id_of(n), "round {round}, token {n}");
            }
        }
        let slots = cache.slots.get().unwrap().lock().unwrap();
        assert_eq!(slots.len(), SLOTS);
    }

    #[test]
    fn ids_of_another_shape_are_returned_but_not_cached() {
        let cache = TokenCache::new();
        assert_eq!(
            cache.get_or_derive("t", || "short".into(), String::new()),
            "short"
        );
        assert_eq!(
            cache.get_or_derive("t", || "again".into(), String::new()),
            "again"
        );
    }

    #[test]
    fn the_same_token_has_another_key_in_another_cache() {
        let (a, b) = (TokenCache::new(), TokenCache::new());
        assert_ne!(a.tag("token"), b.tag("token"));
        assert_eq!(a.tag("token"), a.tag("token"));
    }
}
