//! The segment file format, version 2.
//!
//! ```text
//! header   "TUSPOOL\n" (8 bytes), version (u32 LE, 2)
//! frame    length (u32 LE) | CRC-32 of the payload (u32 LE) | payload
//! payload  one record in `record::binary::encode_whole`, in the binary
//!          layout of the segment's version (1 or 2)
//! ```
//!
//! Version 1 segments (from releases before the record's trace) are read
//! too; new segments are always written in version 2.
//!
//! Frames follow each other to the end of the file. A frame whose bytes end
//! early (a write torn by a crash) or whose checksum does not match ends the
//! readable part of the segment: what follows it cannot be framed with
//! confidence, so it is skipped, never guessed at.

use std::io::{self, Read};

use crate::record::binary;
use crate::UsageRecord;

/// The first bytes of every segment.
pub(crate) const MAGIC: &[u8; 8] = b"TUSPOOL\n";
/// The format version this code writes (it reads every one up to it). It
/// is the layout version of the records in it, [`binary::VERSION`].
pub(crate) const VERSION: u32 = binary::VERSION as u32;
/// Bytes of the header.
pub(crate) const HEADER_LEN: u64 = 12;
/// Bytes before each payload: its length and checksum.
pub(crate) const FRAME_HEAD: usize = 8;
/// The largest payload a frame may declare; a larger length is damage.
pub(crate) const MAX_PAYLOAD: u32 = 1 << 30;

/// The header of a new segment.
pub(crate) fn header() -> [u8; HEADER_LEN as usize] {
    let mut h = [0; HEADER_LEN as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..].copy_from_slice(&VERSION.to_le_bytes());
    h
}

/// What the first bytes of a file say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Header {
    /// A segment in a version this code reads (1 up to [`VERSION`]): the
    /// binary layout of its records.
    Readable(u8),
    /// A segment of another version of this format (a newer release).
    Version(u32),
    /// Not a segment, or a header cut short (a crash while creating it).
    Damaged,
}

/// Reads and checks the header at the front of `r`.
pub(crate) fn read_header(r: &mut impl Read) -> io::Result<Header> {
    let mut h = [0; HEADER_LEN as usize];
    if read_full(r, &mut h)? < h.len() || &h[..8] != MAGIC {
        return Ok(Header::Damaged);
    }
    let version = u32::from_le_bytes(h[8..].try_into().expect("4 bytes"));
    Ok(if (1..=VERSION).contains(&version) {
        Header::Readable(version as u8)
    } else {
        Header::Version(version)
    })
}

/// Appends one record as a frame to `out`.
pub(crate) fn put_record(out: &mut Vec<u8>, record: &UsageRecord) {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEAD]);
    binary::encode_whole(out, record);
    let payload = &out[start + FRAME_HEAD..];
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let crc = crc32fast::hash(payload);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + FRAME_HEAD].copy_from_slice(&crc.to_le_bytes());
}

/// One step of reading frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A whole frame whose payload is now in the buffer; `len` bytes of the
    /// file, framing included.
    Whole { len: u64 },
    /// The end of the file, at a frame boundary.
    End,
    /// Bytes that are not a whole, intact frame: the rest of the file is
    /// unreadable.
    Damaged,
}

/// Reads the next frame from `r` into `payload` (cleared first). An I/O error
/// is returned as such; damage is a [`Frame::Damaged`], never a panic.
pub(crate) fn read_frame(r: &mut impl Read, payload: &mut Vec<u8>) -> io::Result<Frame> {
    payload.clear();
    let mut head = [0; FRAME_HEAD];
    match read_full(r, &mut head)? {
        0 => return Ok(Frame::End),
        FRAME_HEAD => {}
        _ => return Ok(Frame::Damaged),
    }
    let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(head[4..].try_into().expect("4 bytes"));
    if len > MAX_PAYLOAD {
        return Ok(Frame::Damaged);
    }
    // `take` + `read_to_end` grows the buffer with what is there, so a
    // damaged length cannot make it allocate a gigabyte up front.
    r.take(u64::from(len)).read_to_end(payload)?;
    if payload.len() != len as usize || crc32fast::hash(payload) != crc {
        return Ok(Frame::Damaged);
    }
    Ok(Frame::Whole {
        len: (FRAME_HEAD + payload.len()) as u64,
    })
}

/// Reads into `buf` until it is full or `r` ends; returns how many bytes.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// What [`read_all`] found in a segment's bytes.
#[cfg(any(fuzzing, test))]
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Contents {
    /// The records of the intact frames, in order.
    pub(crate) records: Vec<UsageRecord>,
    /// Intact frames whose payload is not a record.
    pub(crate) undecodable: u64,
    /// Whether the header or a frame was damaged (what follows is skipped).
    pub(crate) damaged: bool,
}

/// Reads a whole segment held in memory: for the tests and the fuzz target.
/// The spool itself reads segments from their files, frame by frame, with
/// [`read_header`] and [`read_frame`].
#[cfg(any(fuzzing, test))]
pub(crate) fn read_all(mut bytes: &[u8]) -> Contents {
    let mut out = Contents::default();
    let version = match read_header(&mut bytes) {
        Ok(Header::Readable(v)) => v,
        _ => {
            out.damaged = true;
            return out;
        }
    };
    let mut payload = Vec::new();
    loop {
        match read_frame(&mut bytes, &mut payload) {
            Ok(Frame::Whole { .. }) => match binary::decode_whole(&payload, version) {
                Some(record) => out.records.push(record),
                None => out.undecodable += 1,
            },
            Ok(Frame::End) => return out,
            Ok(Frame::Damaged) | Err(_) => {
                out.damaged = true;
                return out;
            }
        }
    }
}
