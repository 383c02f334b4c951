//! The storage form of a record: [`UsageRecord::to_storage_bytes`] and
//! [`UsageRecord::from_storage_bytes`], lossless and versioned, for sinks to
//! store as one opaque value.

use std::fmt;

use super::binary;
use crate::UsageRecord;

/// The first byte of every storage form: a byte no UTF-8 text (so no JSON)
/// begins with, so a stored value is never mistaken for either.
const MAGIC: u8 = 0xF5;

impl UsageRecord {
    /// The version of the [storage form](Self::to_storage_bytes) this crate
    /// writes. Its readers accept every version up to this one.
    pub const STORAGE_VERSION: u8 = binary::VERSION;

    /// The record as bytes to store: **lossless** and **versioned**, the form a
    /// sink keeps a record in. [`from_storage_bytes`](Self::from_storage_bytes)
    /// gives back an equal record, every field as captured: bodies byte for byte
    /// with their `size` and `truncated` flag (which differ from the bytes when
    /// redaction or decoding changed them), the raw query string, route params in
    /// order, repeated and non-UTF-8 header values, every [`Outcome`](crate::Outcome),
    /// the [`GrpcCall`](crate::GrpcCall), the [`TraceContext`](crate::TraceContext) and the
    /// [`CaptureNotes`](crate::CaptureNotes).
    ///
    /// The serde form is not a storage form: it is the `/usage` *output*
    /// format, which joins repeated headers, re-renders JSON bodies and folds
    /// sizes and truncation into the rendering.
    ///
    /// A sink stores these bytes as one opaque value (a `BLOB`, `BYTEA`, a
    /// Redis string) next to the few columns it indexes and filters on
    /// (`consumer`, `created_at`, `id`, and what its filters need: `method`,
    /// `path`, `status`, `route`, `outcome`). See the
    /// [guide to writing a sink](crate::sink#writing-a-sink).
    ///
    /// # Format and compatibility
    ///
    /// ```text
    /// magic    u8    0xF5 (no UTF-8 text starts with it)
    /// version  u8    STORAGE_VERSION when written (2)
    /// record         version 1: created_at as i128 little-endian Unix
    ///                nanoseconds, status as u16 little-endian, the id, then
    ///                every other field (strings as a LEB128 length and bytes)
    ///                version 2: as 1, with the trace (a flags byte after the
    ///                route, then 24 bytes when there is one)
    /// ```
    ///
    /// The promise: bytes written by any release of this crate are read by
    /// every later release. A release that changes the layout writes a new
    /// version and keeps reading the old ones; bytes of a version newer than
    /// the reader knows are refused ([`StorageError::newer_version`]), never
    /// misread. The bytes are not meant to be read by other programs field by
    /// field (store the fields you query on in columns of their own).
    ///
    /// ```
    /// use tower_usage::{CapturedBody, UsageRecord};
    ///
    /// let mut record = UsageRecord::default();
    /// record.method = "POST".into();
    /// record.request.headers.append("accept", "text/html".parse().unwrap());
    /// record.request.headers.append("accept", "application/json".parse().unwrap());
    /// // A decoded body: 37 bytes stored, 40 on the wire.
    /// record.request.body = CapturedBody { size: 40, ..CapturedBody::complete(vec![b'x'; 37]) };
    ///
    /// let bytes = record.to_storage_bytes();
    /// assert_eq!(bytes[1], UsageRecord::STORAGE_VERSION);
    /// assert_eq!(UsageRecord::from_storage_bytes(&bytes).unwrap(), record);
    /// ```
    pub fn to_storage_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_storage_bytes(&mut out);
        out
    }

    /// [`to_storage_bytes`](Self::to_storage_bytes), appended to `out`: to
    /// reuse one buffer for many records.
    pub fn write_storage_bytes(&self, out: &mut Vec<u8>) {
        out.reserve(2 + binary::whole_len_hint(self));
        out.push(MAGIC);
        out.push(Self::STORAGE_VERSION);
        binary::encode_whole(out, self);
    }

    /// The record that [`to_storage_bytes`](Self::to_storage_bytes) (of this
    /// or any earlier release) wrote into `bytes`, which it must fill exactly.
    ///
    /// Fails when `bytes` are not a storage form, are cut short or damaged,
    /// or are of a version newer than [`STORAGE_VERSION`](Self::STORAGE_VERSION).
    /// The error converts into a permanent [`SinkError`](crate::SinkError) of kind
    /// [`Corrupt`](crate::SinkErrorKind::Corrupt), so `?` works in a sink.
    ///
    /// ```
    /// use tower_usage::UsageRecord;
    ///
    /// let err = UsageRecord::from_storage_bytes(b"{\"id\":\"1\"}").unwrap_err();
    /// assert!(err.to_string().contains("not a stored record"));
    /// let err = UsageRecord::from_storage_bytes(&[0xF5, 200]).unwrap_err();
    /// assert_eq!(err.newer_version(), Some(200));
    /// ```
    pub fn from_storage_bytes(bytes: &[u8]) -> Result<Self, StorageError> {
        let (magic, version, rest) = match bytes {
            [magic, version, rest @ ..] => (*magic, *version, rest),
            _ => return Err(StorageError(Problem::NotStorage)),
        };
        if magic != MAGIC || version == 0 {
            return Err(StorageError(Problem::NotStorage));
        }
        match version {
            1..=binary::VERSION => {
                binary::decode_whole(rest, version).ok_or(StorageError(Problem::Damaged(version)))
            }
            newer => Err(StorageError(Problem::Newer(newer))),
        }
    }
}

/// Why [`UsageRecord::from_storage_bytes`] could not read a record.
///
/// Converts into a permanent [`SinkError`](crate::SinkError) of kind
/// [`Corrupt`](crate::SinkErrorKind::Corrupt), with this error as its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageError(Problem);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Problem {
    NotStorage,
    Damaged(u8),
    Newer(u8),
}

impl StorageError {
    /// The version of bytes written by a newer release of this crate, which
    /// this one cannot read; `None` for any other failure.
    pub fn newer_version(&self) -> Option<u8> {
        match self.0 {
            Problem::Newer(v) => Some(v),
            _ => None,
        }
    }
}

impl fmt::Display for StorageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Problem::NotStorage => f.write_str(
                "not a stored record: the bytes do not start with the storage form's \
                 magic byte and a version (UsageRecord::to_storage_bytes writes them)",
            ),
            Problem::Damaged(v) => write!(
                f,
                "a damaged stored record: the bytes of storage version {v} end early \
                 or hold something its layout cannot",
            ),
            Problem::Newer(v) => write!(
                f,
                "a stored record of storage version {v}, newer than the {} this release \
                 of tower-usage reads: upgrade tower-usage to read it",
                UsageRecord::STORAGE_VERSION
            ),
        }
    }
}

impl std::error::Error for StorageError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cut_and_every_foreign_start_is_refused() {
        let mut record = UsageRecord {
            id: "01J0000000000000000000000".into(),
            method: "GET".into(),
            ..UsageRecord::default()
        };
        record.request.query = "a=1".into();
        let bytes = record.to_storage_bytes();
        assert_eq!(UsageRecord::from_storage_bytes(&bytes), Ok(record));
        for cut in 0..bytes.len() {
            assert!(UsageRecord::from_storage_bytes(&bytes[..cut]).is_err());
        }
        let mut other = bytes.clone();
        other[0] = b'{';
        assert!(UsageRecord::from_storage_bytes(&other)
            .unwrap_err()
            .to_string()
            .starts_with("not a stored record"));
        other[0] = MAGIC;
        other[1] = 0;
        assert_eq!(
            UsageRecord::from_storage_bytes(&other)
                .unwrap_err()
                .newer_version(),
            None
        );
        other[1] = UsageRecord::STORAGE_VERSION + 1;
        let err = UsageRecord::from_storage_bytes(&other).unwrap_err();
        assert_eq!(err.newer_version(), Some(UsageRecord::STORAGE_VERSION + 1));
    }
}
