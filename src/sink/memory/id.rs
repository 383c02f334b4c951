//! A record id as the index keeps it: inline when short.

use std::cmp::Ordering;
use std::hash::{Hash, Hasher};

/// The longest id kept inline; a ULID has 26 bytes.
const INLINE_ID: usize = 32;

/// A record id, inline when short, so a key costs no allocation of its own.
/// Compares, orders and hashes as its bytes (which is how `str` orders).
#[derive(Clone)]
pub(super) enum Id {
    /// Zero-padded: two inline ids order as their padded bytes, then by length
    /// (a prefix first), which is how their bytes order.
    Inline {
        len: u8,
        bytes: [u8; INLINE_ID],
    },
    Heap(Box<str>),
}

impl Id {
    pub(super) fn new(id: &str) -> Self {
        if id.len() <= INLINE_ID {
            let mut bytes = [0; INLINE_ID];
            bytes[..id.len()].copy_from_slice(id.as_bytes());
            Self::Inline {
                len: id.len() as u8,
                bytes,
            }
        } else {
            Self::Heap(id.into())
        }
    }

    #[inline]
    pub(super) fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Self::Heap(id) => id.as_bytes(),
        }
    }

    pub(super) fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).expect("an id is copied from a str")
    }
}

impl PartialEq for Id {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Inline { len: la, bytes: a }, Self::Inline { len: lb, bytes: b }) => {
                la == lb && a == b
            }
            _ => self.as_bytes() == other.as_bytes(),
        }
    }
}

impl Eq for Id {}

impl PartialOrd for Id {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Id {
    #[inline]
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            // Eight bytes at a time, as big-endian words: the index compares ids
            // on every insert and every eviction, and ids made in the same
            // millisecond share their first ten bytes.
            (Self::Inline { len: la, bytes: a }, Self::Inline { len: lb, bytes: b }) => {
                for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
                    let x = u64::from_be_bytes(x.try_into().expect("8 bytes"));
                    let y = u64::from_be_bytes(y.try_into().expect("8 bytes"));
                    if x != y {
                        return x.cmp(&y);
                    }
                }
                la.cmp(lb)
            }
            _ => self.as_bytes().cmp(other.as_bytes()),
        }
    }
}

impl Hash for Id {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

#[cfg(test)]
mod tests {
    use super::Id;
    use proptest::prelude::*;

    proptest! {
        /// Inline, heap and mixed: ids order and compare exactly as their strings.
        #[test]
        fn ids_order_as_their_strings(
            a in "[\\x00a-c\u{e9}]{0,40}",
            b in "[\\x00a-c\u{e9}]{0,40}",
            prefix in "[0-9A-Z]{0,20}",
        ) {
            let (a, b) = (format!("{prefix}{a}"), format!("{prefix}{b}"));
            let (x, y) = (Id::new(&a), Id::new(&b));
            prop_assert_eq!(x.cmp(&y), a.cmp(&b));
            prop_assert_eq!(x == y, a == b);
            prop_assert_eq!(x.as_str(), a.as_str());
        }
    }

    #[test]
    fn a_prefix_orders_first_even_before_nul_bytes() {
        assert!(Id::new("a") < Id::new("a\0"));
        assert!(Id::new("a\0") < Id::new("a\0\0"));
        assert!(Id::new("a\0b") > Id::new("a\0"));
        assert!(Id::new(&"z".repeat(32)) < Id::new(&"z".repeat(33)));
    }
}
