//! Encodings of the values the crate's parts hand each other: a leaf that
//! depends on no other part of the crate but its error type.

pub(crate) mod headers;
