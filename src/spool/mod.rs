//! The disk spool: records kept in append-only segment files on local disk
//! while the sink is failing, read back oldest first once it answers again,
//! and found again by the next process that opens the same directory.
//!
//! A directory holds a `lock` file (an exclusive lock, held while a spool is
//! open, so two processes cannot interleave their segments), a `cursor` file
//! (how far the oldest segment is written, see [`Cursor`]) and segments named
//! by a sequence number (`00000000000000000007.seg`), in the format of
//! [`segment`]. Only the last segment a process made is appended to; segments
//! found at open are only read, so a torn tail left by a crash is never written
//! after. A segment is deleted once all its records are written (or evicted).
//!
//! Every method does blocking file I/O: the writer calls them on tokio's
//! blocking pool.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::record::binary;
use crate::UsageRecord;

mod cursor;
pub(crate) mod segment;

use cursor::{read_cursor, write_cursor, Cursor};
use segment::{Frame, Header};

/// The smallest and largest segment: a spool rolls to a new segment when the
/// last one reaches an eighth of `max_bytes`, within these bounds.
const MIN_SEGMENT: u64 = 4 * 1024;
const MAX_SEGMENT: u64 = 64 * 1024 * 1024;

/// One segment file.
#[derive(Debug)]
struct Segment {
    seq: u64,
    path: PathBuf,
    /// Bytes of the file that hold intact frames (header included).
    len: u64,
    /// Intact frames in it.
    records: u64,
    /// Where the next unread frame starts, and how many were read (written to
    /// the sink, or given up) before it.
    read_at: u64,
    read: u64,
}

impl Segment {
    fn unread(&self) -> u64 {
        self.records - self.read
    }
}

/// What [`Spool::open`] found in the directory.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Recovery {
    /// Records in intact frames, to be replayed.
    pub(crate) records: u64,
    /// Segments whose tail (or header) was torn or corrupt; what followed the
    /// damage is skipped.
    pub(crate) damaged: u64,
}

/// What [`Spool::append`] did with a batch.
#[derive(Debug, Default)]
pub(crate) struct Appended {
    /// Records appended and synced (some may have been evicted since, by
    /// later chunks of the same batch: counted in `evicted`).
    pub(crate) stored: u64,
    /// Records evicted to make room (older ones first).
    pub(crate) evicted: u64,
    /// Records that cannot fit in the spool (with a segment's header, past
    /// `max_bytes`) or in a frame (1 GiB): not stored.
    pub(crate) refused: u64,
    /// The error that stopped the append: the records after `stored` and
    /// `refused` were not stored.
    pub(crate) error: Option<io::Error>,
}

/// A batch read by [`Spool::peek`], still in the spool until [`Spool::ack`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Peeked {
    /// Records read into the caller's vector.
    pub(crate) records: u64,
    /// Intact frames that are not a record (counted as failed when acked).
    pub(crate) undecodable: u64,
}

/// An open spool directory, locked for this process.
#[derive(Debug)]
pub(crate) struct Spool {
    dir: PathBuf,
    /// Holds the directory's lock until the spool is dropped.
    _lock: File,
    /// The `cursor` file: how far the oldest segment is read (see [`Cursor`]).
    cursor: File,
    max_bytes: u64,
    segment_bytes: u64,
    /// Oldest first.
    segments: VecDeque<Segment>,
    /// The last segment, open for appending, when this process made it.
    active: Option<File>,
    next_seq: u64,
    /// What the last `peek` read: (segment, end offset, frames).
    peeked: Option<(u64, u64, u64)>,
    scratch: Vec<u8>,
    payload: Vec<u8>,
}

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
            match segment::read_header(&mut r)? {
                Header::Current => {}
                Header::Version(v) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "usage spool segment {} is in format version {v}; this release reads version {}",
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
            }
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

    /// When the oldest record in the spool arrived (its exchange ended), as
    /// far as a cheap read can tell: `None` when the spool is empty.
    pub(crate) fn oldest_arrival(&mut self) -> Option<std::time::SystemTime> {
        let mut out = Vec::new();
        self.peek(1, &mut out).ok()?;
        self.peeked = None;
        out.first().map(arrival)
    }

    /// Records in the spool, not yet acknowledged.
    pub(crate) fn records(&self) -> u64 {
        self.segments.iter().map(Segment::unread).sum()
    }

    /// Bytes of the segment files.
    pub(crate) fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// Appends `records`, in chunks of at most a segment (or one record, when
    /// that is larger), syncing each to disk (`fdatasync`): a record counted
    /// in [`Appended::stored`] survives a crash. Before each chunk, evicts the
    /// oldest segments while the spool would pass `max_bytes` (so a batch
    /// larger than the spool keeps its newest records). A record that cannot
    /// fit in the spool (or in a frame) is refused; the others are stored. On
    /// an error (a full disk, say), the records of the chunks written before
    /// it are stored, the rest are not.
    pub(crate) fn append(&mut self, records: &[UsageRecord]) -> Appended {
        let mut out = Appended::default();
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        let room = self.max_bytes.saturating_sub(segment::HEADER_LEN);
        let chunk = self.segment_bytes.min(room);
        let mut n = 0;
        for record in records {
            let start = scratch.len();
            segment::put_record(&mut scratch, record);
            let size = (scratch.len() - start) as u64;
            if size > room || size - segment::FRAME_HEAD as u64 > u64::from(segment::MAX_PAYLOAD) {
                scratch.truncate(start);
                out.refused += 1;
                continue;
            }
            if start > 0 && scratch.len() as u64 > chunk {
                // This record would take the chunk past its bound: what came
                // before it is written first.
                if let Err(e) = self.append_bytes(&scratch[..start], n, &mut out.evicted) {
                    out.error = Some(e);
                    break;
                }
                out.stored += n;
                scratch.drain(..start);
                n = 0;
            }
            n += 1;
        }
        if n > 0 && out.error.is_none() {
            match self.append_bytes(&scratch, n, &mut out.evicted) {
                Ok(()) => out.stored += n,
                Err(e) => out.error = Some(e),
            }
        }
        scratch.clear();
        if scratch.capacity() > MIN_SEGMENT as usize * 256 {
            scratch = Vec::new();
        }
        self.scratch = scratch;
        out
    }

    /// Writes one chunk of `n` frames, after evicting what it needs room
    /// from (added to `evicted`, also when an error follows).
    fn append_bytes(&mut self, bytes: &[u8], n: u64, evicted: &mut u64) -> io::Result<()> {
        let size = bytes.len() as u64;
        while self.bytes() + size + segment::HEADER_LEN > self.max_bytes {
            let Some(oldest) = self.segments.front() else {
                break;
            };
            // Deleted before it leaves the count: a segment whose delete
            // failed stays, counted as spooled.
            remove(&oldest.path)?;
            let oldest = self.segments.pop_front().expect("front");
            *evicted += oldest.unread();
            if self.segments.is_empty() {
                self.active = None;
            }
            if self.peeked.is_some_and(|(seq, ..)| seq == oldest.seq) {
                self.peeked = None;
            }
        }
        let full = self
            .segments
            .back()
            .is_none_or(|s| s.len + size > self.segment_bytes && s.records > 0);
        if self.active.is_none() || full {
            self.roll()?;
        }
        let seg = self.segments.back_mut().expect("rolled");
        let file = self.active.as_mut().expect("rolled");
        let written = file.write_all(bytes).and_then(|()| file.sync_data());
        if let Err(e) = written {
            // Leave no partial frame behind (best effort: the reader stops
            // at it anyway), and append to this segment no more, in case a
            // part of the frame stayed: the next chunk starts a new one.
            let _ = file.set_len(seg.len);
            self.active = None;
            return Err(e);
        }
        seg.len += size;
        seg.records += n;
        Ok(())
    }

    /// Starts a new segment, the only one appended to from now on.
    fn roll(&mut self) -> io::Result<()> {
        let seq = self.next_seq;
        let next = seq.checked_add(1).ok_or_else(|| {
            io::Error::other("usage spool: segment sequence numbers are exhausted")
        })?;
        let path = self.dir.join(format!("{seq:020}.seg"));
        let mut file = options().create_new(true).append(true).open(&path)?;
        let made = file
            .write_all(&segment::header())
            .and_then(|()| file.sync_data())
            .and_then(|()| sync_dir(&self.dir));
        if let Err(e) = made {
            drop(file);
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        self.next_seq = next;
        self.active = Some(file);
        self.segments.push_back(Segment {
            seq,
            path,
            len: segment::HEADER_LEN,
            records: 0,
            read_at: segment::HEADER_LEN,
            read: 0,
        });
        Ok(())
    }

    /// Reads up to `max` of the oldest records into `out` (cleared first),
    /// from one segment. They stay in the spool until [`ack`](Self::ack).
    pub(crate) fn peek(&mut self, max: usize, out: &mut Vec<UsageRecord>) -> io::Result<Peeked> {
        out.clear();
        self.peeked = None;
        self.drop_read_segments()?;
        let Some(seg) = self.segments.front() else {
            return Ok(Peeked::default());
        };
        let mut file = File::open(&seg.path)?;
        file.seek(SeekFrom::Start(seg.read_at))?;
        let mut r = BufReader::new(file.take(seg.len - seg.read_at));
        let mut at = seg.read_at;
        let mut peeked = Peeked::default();
        while peeked.records + peeked.undecodable < max as u64 {
            match segment::read_frame(&mut r, &mut self.payload)? {
                Frame::Whole { len } => {
                    at += len;
                    match binary::decode_whole(&self.payload) {
                        Some(record) => {
                            out.push(record);
                            peeked.records += 1;
                        }
                        None => peeked.undecodable += 1,
                    }
                }
                // The file changed under the spool since it was counted.
                Frame::End | Frame::Damaged => break,
            }
        }
        if self.payload.capacity() > MAX_SEGMENT as usize {
            // One huge record read: its buffer is not kept for the rest.
            self.payload = Vec::new();
        }
        let frames = peeked.records + peeked.undecodable;
        if frames == 0 && seg.unread() > 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "usage spool segment {} no longer holds the {} records it held",
                    seg.path.display(),
                    seg.unread()
                ),
            ));
        }
        self.peeked = Some((seg.seq, at, frames));
        Ok(peeked)
    }

    /// Removes what the last [`peek`](Self::peek) read (written, or given
    /// up); deletes a segment once all its records are.
    pub(crate) fn ack(&mut self) -> io::Result<()> {
        let Some((seq, at, frames)) = self.peeked.take() else {
            return Ok(());
        };
        if let Some(seg) = self.segments.front_mut().filter(|s| s.seq == seq) {
            seg.read_at = at;
            seg.read = (seg.read + frames).min(seg.records);
            write_cursor(&mut self.cursor, Cursor { seq, offset: at })?;
        }
        self.drop_read_segments()
    }

    /// Skips the unreadable rest of the oldest segment (see
    /// [`peek`](Self::peek)'s error); returns how many records that was.
    /// On an error, the segment stays (and its records in the count).
    pub(crate) fn skip_oldest(&mut self) -> io::Result<u64> {
        self.peeked = None;
        let Some(seg) = self.segments.front() else {
            return Ok(0);
        };
        remove(&seg.path)?;
        let seg = self.segments.pop_front().expect("front");
        if self.segments.is_empty() {
            self.active = None;
        }
        Ok(seg.unread())
    }

    /// Deletes the oldest segments while all their records are read.
    fn drop_read_segments(&mut self) -> io::Result<()> {
        while let Some(seg) = self.segments.front() {
            if seg.unread() > 0 {
                break;
            }
            remove(&seg.path)?;
            self.segments.pop_front();
            if self.segments.is_empty() {
                // Its file is no longer appended to: the next append starts
                // a new segment.
                self.active = None;
            }
        }
        Ok(())
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

/// Options to open a spool file: on unix, made readable and writable by
/// this user alone (records hold request data).
fn options() -> OpenOptions {
    #[allow(unused_mut)]
    let mut options = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// Creates `dir` (on unix, for this user alone) unless it exists, and returns
/// it as an absolute path, so that a later change of the working directory
/// does not move the spool.
fn create_dir(dir: &Path) -> io::Result<PathBuf> {
    let existed = dir.is_dir();
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)?;
    let dir = fs::canonicalize(dir)?;
    if !existed {
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
    }
    Ok(dir)
}

fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Makes a new or deleted directory entry durable. Not every platform can
/// open or sync a directory for this (Windows cannot open one; some file
/// systems refuse to sync one, `EINVAL`); there it is skipped. Other errors
/// (`EIO`) are returned.
fn sync_dir(dir: &Path) -> io::Result<()> {
    let Ok(d) = File::open(dir) else {
        return Ok(());
    };
    match d.sync_all() {
        Err(e)
            if !matches!(
                e.kind(),
                io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported
            ) =>
        {
            Err(e)
        }
        _ => Ok(()),
    }
}

/// When a record's exchange ended (its start, for a duration out of range).
pub(crate) fn arrival(record: &UsageRecord) -> std::time::SystemTime {
    let start = std::time::SystemTime::from(record.created_at);
    start
        .checked_add(std::time::Duration::from_micros(record.duration_us))
        .unwrap_or(start)
}

#[cfg(test)]
mod tests;
