//! The segment log ([`Spool`]): records kept in append-only segment files on
//! local disk, read back oldest first, and found again by the next process
//! that opens the same directory ([`open`](super::open)).
//!
//! A directory holds a `lock` file (an exclusive lock, held while a spool is
//! open, so two processes cannot interleave their segments), a `cursor` file
//! (how far the oldest segment is written, see [`Cursor`]) and segments named
//! by a sequence number (`00000000000000000007.seg`), in the format of
//! [`segment`]. Only the last segment a process made is appended to; segments
//! found at open are only read, so a torn tail left by a crash is never written
//! after. A segment is deleted once all its records are written (or evicted).
//!
//! Every method does blocking file I/O: [`Spooled`](super::Spooled) calls
//! them on tokio's blocking pool.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use crate::record::binary;
use crate::UsageRecord;

use super::cursor::{write_cursor, Cursor};
use super::files::{options, remove, sync_dir};
use super::segment::{self, Frame};

/// The smallest and largest segment: a spool rolls to a new segment when the
/// last one reaches an eighth of `max_bytes`, within these bounds.
pub(super) const MIN_SEGMENT: u64 = 4 * 1024;
pub(super) const MAX_SEGMENT: u64 = 64 * 1024 * 1024;

/// One segment file.
#[derive(Debug)]
pub(super) struct Segment {
    pub(super) seq: u64,
    pub(super) path: PathBuf,
    /// Its format version: the binary layout of its records.
    pub(super) version: u8,
    /// Bytes of the file that hold intact frames (header included).
    pub(super) len: u64,
    /// Intact frames in it.
    pub(super) records: u64,
    /// Where the next unread frame starts, and how many were read (written to
    /// the sink, or given up) before it.
    pub(super) read_at: u64,
    pub(super) read: u64,
}

impl Segment {
    pub(super) fn unread(&self) -> u64 {
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
    pub(super) dir: PathBuf,
    /// Holds the directory's lock until the spool is dropped.
    pub(super) _lock: File,
    /// The `cursor` file: how far the oldest segment is read (see [`Cursor`]).
    pub(super) cursor: File,
    pub(super) max_bytes: u64,
    pub(super) segment_bytes: u64,
    /// Oldest first.
    pub(super) segments: VecDeque<Segment>,
    /// The last segment, open for appending, when this process made it.
    pub(super) active: Option<File>,
    pub(super) next_seq: u64,
    /// What the last `peek` read: (segment, end offset, frames).
    pub(super) peeked: Option<(u64, u64, u64)>,
    pub(super) scratch: Vec<u8>,
    pub(super) payload: Vec<u8>,
}
impl Spool {
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
    /// an error (a full disk, say), the chunks written before it are cut off
    /// again ([`undo`](Self::undo)), so that a batch is stored whole or not at
    /// all; `stored` says what stays when that fails too.
    pub(crate) fn append(&mut self, records: &[UsageRecord]) -> Appended {
        let mut out = Appended::default();
        let mut written = Vec::new();
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
                if let Err(e) =
                    self.append_bytes(&scratch[..start], n, &mut out.evicted, &mut written)
                {
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
            match self.append_bytes(&scratch, n, &mut out.evicted, &mut written) {
                Ok(()) => out.stored += n,
                Err(e) => out.error = Some(e),
            }
        }
        if out.error.is_some() && out.stored > 0 && self.undo(&written).is_ok() {
            out.stored = 0;
        }
        scratch.clear();
        if scratch.capacity() > MIN_SEGMENT as usize * 256 {
            scratch = Vec::new();
        }
        self.scratch = scratch;
        out
    }

    /// Writes one chunk of `n` frames, after evicting what it needs room
    /// from (added to `evicted`, also when an error follows); notes in
    /// `written` the segment it went to and that segment's length before.
    fn append_bytes(
        &mut self,
        bytes: &[u8],
        n: u64,
        evicted: &mut u64,
        written: &mut Vec<(u64, u64, u64)>,
    ) -> io::Result<()> {
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
        let synced = file.write_all(bytes).and_then(|()| file.sync_data());
        if let Err(e) = synced {
            // Leave no partial frame behind (best effort: the reader stops
            // at it anyway), and append to this segment no more, in case a
            // part of the frame stayed: the next chunk starts a new one.
            let _ = file.set_len(seg.len);
            self.active = None;
            return Err(e);
        }
        written.push((seg.seq, seg.len, seg.records));
        seg.len += size;
        seg.records += n;
        Ok(())
    }

    /// Cuts off the chunks an append wrote (`written`: segment, length and
    /// records before each, in order), newest first: a segment made for them
    /// is deleted, an older one cut back to its length before, synced. Either
    /// way nothing is appended to it again.
    fn undo(&mut self, written: &[(u64, u64, u64)]) -> io::Result<()> {
        for &(seq, len, records) in written.iter().rev() {
            let Some(seg) = self.segments.back_mut().filter(|s| s.seq == seq) else {
                // Evicted by a later chunk of the same batch: gone already.
                continue;
            };
            self.active = None;
            if len == segment::HEADER_LEN && records == 0 && seg.read == 0 {
                remove(&seg.path)?;
                self.segments.pop_back();
                continue;
            }
            let file = options().write(true).open(&seg.path)?;
            file.set_len(len)?;
            file.sync_data()?;
            (seg.len, seg.records) = (len, records);
        }
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
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        self.next_seq = next;
        self.active = Some(file);
        self.segments.push_back(Segment {
            seq,
            path,
            version: segment::VERSION as u8,
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
                    match binary::decode_whole(&self.payload, seg.version) {
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
        let Some(seg) = self.segments.front_mut().filter(|s| s.seq == seq) else {
            return Ok(());
        };
        seg.read_at = at;
        seg.read = (seg.read + frames).min(seg.records);
        if seg.unread() > 0 {
            return write_cursor(&mut self.cursor, Cursor { seq, offset: at });
        }
        // All of it is written: its delete says so, and needs no room on the
        // volume, where a cursor written first can fail on a full one and
        // leave the segment to be written again at every start. Only when the
        // delete fails is the cursor moved past it instead.
        let dropped = self.drop_read_segments();
        if dropped.is_err() {
            let _ = write_cursor(&mut self.cursor, Cursor { seq, offset: at });
        }
        dropped
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

/// When a record's exchange arrived (its `created_at`): what holds
/// `completeUntil` back while the record waits in the spool, since a summary
/// counts a record by its arrival, not by when its exchange ended.
pub(crate) fn arrival(record: &UsageRecord) -> std::time::SystemTime {
    std::time::SystemTime::from(record.created_at)
}

impl Spool {
    /// Removes every unread record of `consumer` from the segments, and
    /// returns how many: each segment holding one is rewritten without it
    /// (and without its records already read) into a new file, synced and
    /// renamed over the old one; a segment left empty is deleted. Frames that
    /// do not decode are kept as they are. The next append starts a new
    /// segment. A `peek` not yet acknowledged is forgotten: its records are
    /// read again.
    pub(crate) fn erase(&mut self, consumer: &str) -> io::Result<u64> {
        self.peeked = None;
        self.active = None;
        let mut erased = 0;
        let mut kept_segments = VecDeque::with_capacity(self.segments.len());
        while let Some(mut seg) = self.segments.pop_front() {
            match self.erase_in(&mut seg, consumer) {
                Ok(n) => erased += n,
                Err(e) => {
                    // This segment and the later ones stay as they are.
                    kept_segments.push_back(seg);
                    kept_segments.append(&mut self.segments);
                    self.segments = kept_segments;
                    return Err(e);
                }
            }
            if seg.unread() == 0 {
                remove(&seg.path)?;
            } else {
                kept_segments.push_back(seg);
            }
        }
        self.segments = kept_segments;
        sync_dir(&self.dir)?;
        if let Some(front) = self.segments.front() {
            write_cursor(
                &mut self.cursor,
                Cursor {
                    seq: front.seq,
                    offset: front.read_at,
                },
            )?;
        }
        Ok(erased)
    }

    /// Rewrites one segment without `consumer`'s records (see [`erase`](Self::erase)).
    fn erase_in(&mut self, seg: &mut Segment, consumer: &str) -> io::Result<u64> {
        let mut file = File::open(&seg.path)?;
        file.seek(SeekFrom::Start(seg.read_at))?;
        let mut r = BufReader::new(file.take(seg.len - seg.read_at));
        // The frames are copied as they are: the header keeps their version.
        let mut out = segment::header().to_vec();
        out[8..12].copy_from_slice(&u32::from(seg.version).to_le_bytes());
        let (mut kept, mut erased) = (0, 0);
        while let Frame::Whole { .. } = segment::read_frame(&mut r, &mut self.payload)? {
            let theirs = binary::decode_whole(&self.payload, seg.version)
                .is_some_and(|record| record.consumer.as_deref() == Some(consumer));
            if theirs {
                erased += 1;
                continue;
            }
            let len = u32::try_from(self.payload.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&crc32fast::hash(&self.payload).to_le_bytes());
            out.extend_from_slice(&self.payload);
            kept += 1;
        }
        if erased == 0 && seg.read == 0 {
            return Ok(0);
        }
        if kept > 0 {
            let tmp = seg.path.with_extension("erasing");
            let mut file = options()
                .create(true)
                .truncate(true)
                .write(true)
                .open(&tmp)?;
            file.write_all(&out)?;
            file.sync_data()?;
            std::fs::rename(&tmp, &seg.path)?;
        }
        seg.len = out.len() as u64;
        seg.records = kept;
        seg.read_at = segment::HEADER_LEN;
        seg.read = 0;
        Ok(erased)
    }
}
