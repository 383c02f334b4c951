//! The two encodings of an [`http::HeaderMap`]: a compact binary one for buffers
//! that never leave the process, and a JSON one for columns that are stored.
//!
//! Both keep every value, in the map's iteration order (a name's values
//! together, in the order they were appended), and every byte of a value that is
//! not UTF-8. Neither joins repeated headers: that is for the wire format.
//!
//! # The binary encoding
//!
//! ```text
//! count    u32          the number of values that follow
//! then, per value:
//!   flags  u8           bit 0: the value is sensitive (HeaderValue::is_sensitive);
//!                       the other bits are 0, and ignored when read
//!   name   u16 + bytes  the name's length, then the name (lower-case)
//!   value  u32 + bytes  the value's length, then its bytes
//! ```
//!
//! Integers are little-endian. A map takes [`encoded_len`] bytes: 4, plus 7 and
//! the name and value per value. The widths are fixed so that a writer can
//! reserve the exact size first and fill in the count last (see
//! [`encode_entries`]). [`decode`] reads a map back from the front of a buffer,
//! copying its values out of a `&[u8]`, or, from a [`Bytes`], handing them out as
//! slices of it without a copy.
//!
//! # The JSON encoding
//!
//! `[[name, value], ...]`, a value that is not UTF-8 as `{"b64": "..."}`
//! (standard base64, padded): see [`to_json`] and [`from_json`].

use std::fmt;
use std::ops::Range;

use base64::Engine as _;
use bytes::Bytes;
use http::header::InvalidHeaderValue;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use crate::{SinkError, SinkErrorKind};

/// The flags bit of a sensitive value.
const SENSITIVE: u8 = 1;

/// Bytes of framing per value: flags, name length, value length.
const ENTRY_FRAMING: usize = 1 + 2 + 4;

/// How many bytes [`encode`] writes for `map`.
pub(crate) fn encoded_len(map: &HeaderMap) -> usize {
    4 + map
        .iter()
        .filter(|(_, value)| fits(value))
        .map(|(name, value)| ENTRY_FRAMING + name.as_str().len() + value.len())
        .sum::<usize>()
}

/// Appends `map` to `out` in the binary encoding.
pub(crate) fn encode(out: &mut Vec<u8>, map: &HeaderMap) {
    encode_entries(out, map);
}

/// Appends `entries` to `out` as one header map in the binary encoding: for a
/// part of a map (say, the headers kept from a response), without building a
/// map first. The count is written last, so `entries` is walked once.
///
/// A value of 4 GiB or more does not fit its length field and is left out
/// (a `HeaderValue` that large cannot come from any HTTP implementation).
pub(crate) fn encode_entries<'a>(
    out: &mut Vec<u8>,
    entries: impl IntoIterator<Item = (&'a HeaderName, &'a HeaderValue)>,
) {
    encode_raw_entries(
        out,
        entries
            .into_iter()
            .map(|(name, value)| (name.as_str(), value.as_bytes(), value.is_sensitive())),
    );
}

/// [`encode_entries`] from the parts of each entry, `(name, value, sensitive)`:
/// for a value made on the spot without building a `HeaderValue` (which
/// allocates). `name` must be a valid lower-case header name and `value` a
/// valid header value.
pub(crate) fn encode_raw_entries<'a>(
    out: &mut Vec<u8>,
    entries: impl IntoIterator<Item = (&'a str, &'a [u8], bool)>,
) {
    let count_at = out.len();
    out.extend_from_slice(&0u32.to_le_bytes());
    let mut count = 0u32;
    for (name, value, sensitive) in entries {
        // A value of 4 GiB or more does not fit its length field.
        let Ok(value_len) = u32::try_from(value.len()) else {
            continue;
        };
        let name = name.as_bytes();
        out.push(if sensitive { SENSITIVE } else { 0 });
        // A `HeaderName` is at most 65,535 bytes long.
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(name);
        out.extend_from_slice(&value_len.to_le_bytes());
        out.extend_from_slice(value);
        count = count.saturating_add(1);
    }
    out[count_at..count_at + 4].copy_from_slice(&count.to_le_bytes());
}

fn fits(value: &HeaderValue) -> bool {
    u32::try_from(value.len()).is_ok()
}

/// A buffer [`decode`] reads from: where the values of the decoded map come from.
pub(crate) trait Source {
    /// The encoded bytes.
    fn encoded(&self) -> &[u8];

    /// The value at `range` of [`encoded`](Self::encoded).
    fn value(&self, range: Range<usize>) -> Result<HeaderValue, InvalidHeaderValue>;
}

/// Values are copied out.
impl Source for [u8] {
    fn encoded(&self) -> &[u8] {
        self
    }

    fn value(&self, range: Range<usize>) -> Result<HeaderValue, InvalidHeaderValue> {
        HeaderValue::from_bytes(&self[range])
    }
}

/// Values are slices of the buffer: no copy, one reference count each.
impl Source for Bytes {
    fn encoded(&self) -> &[u8] {
        self
    }

    fn value(&self, range: Range<usize>) -> Result<HeaderValue, InvalidHeaderValue> {
        HeaderValue::from_maybe_shared(self.slice(range))
    }
}

/// The binary encoding ended before the map did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Truncated;

impl fmt::Display for Truncated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an encoded header map ends early")
    }
}

impl std::error::Error for Truncated {}

/// Reads the header map at the front of `src`, in the binary encoding; returns
/// it and how many bytes it took (what follows is the caller's).
///
/// A name or value that no longer parses is skipped (it cannot happen for what
/// [`encode`] wrote from a `HeaderMap`), as are the values past the most a
/// `HeaderMap` holds. Fails only when `src` ends inside the map.
pub(crate) fn decode<S: Source + ?Sized>(src: &S) -> Result<(HeaderMap, usize), Truncated> {
    let mut map = HeaderMap::new();
    let len = decode_into(src, &mut map)?;
    Ok((map, len))
}

/// [`decode`] into `map`, which should be empty (a map whose allocation is
/// reused: what it holds is kept, the decoded values appended); returns how
/// many bytes the map took.
pub(crate) fn decode_into<S: Source + ?Sized>(
    src: &S,
    map: &mut HeaderMap,
) -> Result<usize, Truncated> {
    let bytes = src.encoded();
    let mut reader = Reader { bytes, at: 0 };
    let count = reader.u32()? as usize;
    // `count` is of values; a map sized for that many names may be over
    // `HeaderMap`'s limit (a name repeated 30,000 times is a valid map).
    let capacity = count.min(bytes.len() / (ENTRY_FRAMING + 1)).min(64);
    // Room for `capacity` more (none is made when a reused map has it).
    // Fails only past `HeaderMap`'s limit: the map then grows as it can.
    let _ = map.try_reserve(capacity);
    for _ in 0..count {
        let flags = reader.u8()?;
        let name_len = reader.u16()?;
        let name = reader.take(usize::from(name_len))?;
        let value_len = reader.u32()?;
        let value = reader.take(value_len as usize)?;
        let name = HeaderName::from_bytes(&bytes[name]);
        if let (Ok(name), Ok(mut value)) = (name, src.value(value)) {
            value.set_sensitive(flags & SENSITIVE != 0);
            // Fails only past `HeaderMap`'s limit, which the encoded map was under.
            let _ = map.try_append(name, value);
        }
    }
    Ok(reader.at)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<Range<usize>, Truncated> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or(Truncated)?;
        let range = self.at..end;
        self.at = end;
        Ok(range)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Truncated> {
        let range = self.take(N)?;
        Ok(self.bytes[range].try_into().expect("took N bytes"))
    }

    fn u8(&mut self) -> Result<u8, Truncated> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, Truncated> {
        self.array().map(u16::from_le_bytes)
    }

    fn u32(&mut self) -> Result<u32, Truncated> {
        self.array().map(u32::from_le_bytes)
    }
}

/// Encodes headers as JSON, `[[name, value], ...]` in order, repeats kept; a
/// value that is not UTF-8 is stored as `{"b64": "..."}`.
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(dead_code, reason = "only the SQL sinks store headers as JSON")
)]
pub(crate) fn to_json(headers: &HeaderMap) -> Value {
    Value::Array(
        headers
            .iter()
            .map(|(name, value)| {
                let v = match value.to_str() {
                    Ok(s) => Value::String(s.to_owned()),
                    Err(_) => serde_json::json!({
                        "b64": base64::engine::general_purpose::STANDARD.encode(value.as_bytes())
                    }),
                };
                Value::Array(vec![Value::String(name.as_str().to_owned()), v])
            })
            .collect(),
    )
}

/// Decodes what [`to_json`] wrote; a [`Corrupt`](SinkErrorKind::Corrupt) error
/// for anything else.
#[cfg_attr(
    not(any(feature = "sqlite", feature = "postgres")),
    allow(dead_code, reason = "only the SQL sinks store headers as JSON")
)]
pub(crate) fn from_json(value: &Value) -> Result<HeaderMap, SinkError> {
    let corrupt =
        |what: &str| SinkError::message(SinkErrorKind::Corrupt, format!("stored headers: {what}"));
    let items = value.as_array().ok_or_else(|| corrupt("not an array"))?;
    let mut map = HeaderMap::with_capacity(items.len());
    for item in items {
        let (name, v) = match item.as_array().map(Vec::as_slice) {
            Some([Value::String(n), v]) => (n, v),
            _ => return Err(corrupt("entry is not [name, value]")),
        };
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| corrupt(&format!("bad name {name:?}: {e}")))?;
        let bad = |why: &dyn fmt::Display| corrupt(&format!("bad value of {name:?}: {why}"));
        let value = match v {
            Value::String(s) => HeaderValue::from_str(s).map_err(|e| bad(&e))?,
            Value::Object(o) => {
                let b64 = o
                    .get("b64")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(&"an object without a `b64` string"))?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|e| bad(&e))?;
                HeaderValue::from_bytes(&bytes).map_err(|e| bad(&e))?
            }
            other => return Err(bad(&format!("neither a string nor an object: {other}"))),
        };
        map.append(header, value);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Repeats, a sensitive value, a value that is not UTF-8, an empty one.
    fn sample() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.append("accept", HeaderValue::from_static("a"));
        h.append("accept", HeaderValue::from_static("b"));
        let mut secret = HeaderValue::from_static("s3cret");
        secret.set_sensitive(true);
        h.append(http::header::AUTHORIZATION, secret);
        h.append("x-raw", HeaderValue::from_bytes(&[0xff, b'a']).unwrap());
        h.append("x-empty", HeaderValue::from_static(""));
        h
    }

    #[test]
    fn binary_round_trips_with_repeats_sensitivity_and_opaque_bytes() {
        let h = sample();
        let mut out = b"before".to_vec();
        encode(&mut out, &h);
        assert_eq!(out.len(), 6 + encoded_len(&h), "encoded_len is exact");
        out.extend_from_slice(b"after");

        let (back, len) = decode(&out[6..]).unwrap();
        assert_eq!(back, h);
        assert_eq!(&out[6 + len..], b"after");
        assert!(back[http::header::AUTHORIZATION].is_sensitive());
        assert!(!back["accept"].is_sensitive());

        let shared = Bytes::from(out).slice(6..);
        let (back, _) = decode(&shared).unwrap();
        assert_eq!(back, h);
        assert!(back[http::header::AUTHORIZATION].is_sensitive());
    }

    #[test]
    fn values_decoded_from_bytes_are_slices_of_them() {
        let mut out = Vec::new();
        encode(&mut out, &sample());
        let shared = Bytes::from(out);
        let (back, _) = decode(&shared).unwrap();
        let buffer = shared.as_ptr_range();
        for value in back.values().filter(|v| !v.is_empty()) {
            assert!(
                buffer.contains(&value.as_bytes().as_ptr()),
                "{value:?} copied"
            );
        }
    }

    #[test]
    fn an_empty_map_is_its_count() {
        let mut out = Vec::new();
        encode(&mut out, &HeaderMap::new());
        assert_eq!(out, [0, 0, 0, 0]);
        assert_eq!(encoded_len(&HeaderMap::new()), 4);
        assert_eq!(decode(&out[..]).unwrap(), (HeaderMap::new(), 4));
    }

    #[test]
    fn some_entries_make_a_map_of_their_own() {
        let h = sample();
        let keep = [
            http::header::AUTHORIZATION,
            HeaderName::from_static("accept"),
        ];
        let mut out = Vec::new();
        encode_entries(
            &mut out,
            keep.iter()
                .flat_map(|name| h.get_all(name).iter().map(move |v| (name, v))),
        );
        let (back, _) = decode(&out[..]).unwrap();
        assert_eq!(back.len(), 3);
        assert_eq!(back.get_all("accept").iter().count(), 2);
        assert!(back[http::header::AUTHORIZATION].is_sensitive());
    }

    #[test]
    fn a_name_repeated_thirty_thousand_times_comes_back() {
        let mut h = HeaderMap::new();
        for i in 0..30_000 {
            h.append("x-a", HeaderValue::from(i));
        }
        let mut out = Vec::new();
        encode(&mut out, &h);
        assert_eq!(decode(&Bytes::from(out)).unwrap().0, h);
    }

    #[test]
    fn a_cut_encoding_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        encode(&mut out, &sample());
        for end in 0..out.len() {
            assert_eq!(decode(&out[..end]), Err(Truncated), "cut at {end}");
        }
        // A length past the end, and a count past the entries.
        assert_eq!(decode(&[1, 0, 0, 0, 0, 0xff, 0xff][..]), Err(Truncated));
        assert_eq!(decode(&[9, 0, 0, 0][..]), Err(Truncated));
    }

    #[test]
    fn headers_round_trip_with_repeats_and_opaque_bytes() {
        let mut h = HeaderMap::new();
        h.append("accept", HeaderValue::from_static("a"));
        h.append("accept", HeaderValue::from_static("b"));
        h.append("x-raw", HeaderValue::from_bytes(&[0xff, b'a']).unwrap());
        let back = from_json(&to_json(&h)).unwrap();
        assert_eq!(back, h);
        assert!(from_json(&serde_json::json!({"a": 1})).is_err());
    }
}
