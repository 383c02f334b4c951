//! Opening a spool directory ([`Spool::open`]): its lock, its cursor, and a
//! scan of the segments an earlier process left, counting their intact
//! records and setting aside what a crash damaged.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use super::cursor::{read_cursor, Cursor};
use super::files::{create_dir, options, remove};
use super::log::{Recovery, Segment, Spool, MAX_SEGMENT, MIN_SEGMENT};
use super::segment::{self, Frame, Header};

impl Spool {
    /// Opens (creating it if needed, readable by this user alone) and locks
    /// `dir`, and counts the records earlier processes left in it. Fails when
    /// another spool holds the lock, or a segment is of a format version this
    /// code does not read.
    pub(crate) fn open(dir: &Path, max_bytes: u64) -> io::Result<(Self, Recovery)> {
        let dir = &create_dir(dir)?;
        let lock = options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "usage spool {} is in use by another writer (its lock file is held)",
                        dir.display()
                    ),
                ))
            }
            Err(fs::TryLockError::Error(e)) => return Err(e),
        }
        let mut found = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if !entry.file_type().is_ok_and(|t| t.is_file()) {
                // Not a file this spool made (a FIFO would block the open).
                continue;
            }
            let path = entry.path();
            let seq = path
                .extension()
                .filter(|e| *e == "seg")
                .and_then(|_| path.file_stem()?.to_str()?.parse::<u64>().ok());
            if let Some(seq) = seq {
                found.push((seq, path));
            }
        }
        found.sort();
        let mut cursor = options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(dir.join("cursor"))?;
        let read_to = match read_cursor(&mut cursor)? {
            Some(c) if cursor_fits(c, &found) => Some(c),
            Some(_) => {
                // A cursor that cannot be trusted (it names a segment past
                // the last, or an offset past its end) is forgotten, on disk
                // too: its records are written again rather than lost, and
                // the segments made from now on are never taken as read.
                cursor.set_len(0)?;
                cursor.sync_data()?;
                None
            }
            None => None,
        };
        let mut recovery = Recovery::default();
        let mut segments = VecDeque::new();
        let mut payload = Vec::new();
        for (seq, path) in found {
            if read_to.is_some_and(|c| seq < c.seq) {
                // Read to its end before the cursor moved on: a crash came
                // between the cursor's write and this segment's delete.
                remove(&path)?;
                continue;
            }
            let mut r = BufReader::new(File::open(&path)?);
            let version = match segment::read_header(&mut r)? {
                Header::Readable(v) => v,
                Header::Version(v) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "usage spool segment {} is in format version {v}; this release reads versions 1 to {}",
                            path.display(),
                            segment::VERSION
                        ),
                    ))
                }
                Header::Damaged => {
                    // A crash while the segment was being created (nothing in
                    // it was counted as spooled), or a file that is not a
                    // segment: set aside as `.bad`, not deleted, unless it is
                    // shorter than a header.
                    let len = fs::metadata(&path)?.len();
                    if len > 0 {
                        recovery.damaged += 1;
                    }
                    if len >= segment::HEADER_LEN {
                        fs::rename(&path, path.with_extension("bad"))?;
                    } else {
                        fs::remove_file(&path)?;
                    }
                    continue;
                }
            };
            // Where the cursor says this segment was read to, if it is at a
            // frame boundary of it (a cursor that is not is ignored: its
            // records are written again rather than lost).
            let cut = read_to.filter(|c| c.seq == seq).map(|c| c.offset);
            let mut len = segment::HEADER_LEN;
            let mut records = 0;
            let (mut read_at, mut read) = (segment::HEADER_LEN, 0);
            loop {
                if cut == Some(len) {
                    (read_at, read) = (len, records);
                }
                match segment::read_frame(&mut r, &mut payload)? {
                    Frame::Whole { len: n } => {
                        len += n;
                        records += 1;
                    }
                    Frame::End => break,
                    Frame::Damaged => {
                        recovery.damaged += 1;
                        break;
                    }
                }
            }
            if cut == Some(len) {
                (read_at, read) = (len, records);
            }
            recovery.records += records - read;
            segments.push_back(Segment {
                seq,
                path,
                version,
                len,
                records,
                read_at,
                read,
            });
        }
        // Sequence numbers never go back, so the cursor never names a
        // segment made after it.
        let next_seq = segments
            .back()
            .map(|s| s.seq.saturating_add(1))
            .into_iter()
            .chain(read_to.map(|c| c.seq.saturating_add(1)))
            .max()
            .unwrap_or(0);
        let spool = Self {
            dir: dir.to_owned(),
            _lock: lock,
            cursor,
            max_bytes,
            segment_bytes: (max_bytes / 8).clamp(MIN_SEGMENT, MAX_SEGMENT),
            segments,
            active: None,
            next_seq,
            peeked: None,
            scratch: Vec::new(),
            payload,
        };
        Ok((spool, recovery))
    }
}

/// Whether a cursor read from disk fits the segments `found` (sorted): it
/// names a segment no later than one past the last, and, when that segment
/// is there, an offset within its file. Files may be damaged or come from
/// elsewhere: a cursor that does not fit would skip records never written.
fn cursor_fits(c: Cursor, found: &[(u64, PathBuf)]) -> bool {
    let Some(&(last, _)) = found.last() else {
        // Nothing to skip: the cursor says nothing about what comes next.
        return false;
    };
    if c.seq > last.saturating_add(1) {
        return false;
    }
    match found.iter().find(|(seq, _)| *seq == c.seq) {
        Some((_, path)) => {
            c.offset >= segment::HEADER_LEN && fs::metadata(path).is_ok_and(|m| c.offset <= m.len())
        }
        None => true,
    }
}
