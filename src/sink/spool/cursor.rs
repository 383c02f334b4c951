//! The `cursor` file: how far the spool is written back, so that a restart
//! does not write those records again.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

/// How far the spool is read: every record of the segments before `seq`,
/// and of segment `seq` those before byte `offset`, are written (or given
/// up). Kept in the `cursor` file, so that a restart does not write them
/// again: three little-endian fields, `seq` (u64), `offset` (u64), and a
/// CRC-32 of the two (u32), rewritten in place after each written batch. It
/// is not synced: a process that ends keeps it (the page cache does), a machine
/// that crashes may lose the updates the kernel had not written out yet (up
/// to about 30 s of them, the usual writeback delay), and then what the spool
/// wrote back in that time is written again from its oldest segment still
/// there (the bundled sinks keep one record per id). A cursor that does not
/// fit the segments found is ignored (see `Spool::open`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Cursor {
    pub(super) seq: u64,
    pub(super) offset: u64,
}

const CURSOR_LEN: usize = 20;

pub(super) fn read_cursor(file: &mut File) -> io::Result<Option<Cursor>> {
    let mut buf = Vec::with_capacity(CURSOR_LEN);
    file.seek(SeekFrom::Start(0))?;
    file.take(CURSOR_LEN as u64).read_to_end(&mut buf)?;
    if buf.len() < CURSOR_LEN {
        return Ok(None);
    }
    let crc = u32::from_le_bytes(buf[16..20].try_into().expect("4 bytes"));
    if crc32fast::hash(&buf[..16]) != crc {
        return Ok(None);
    }
    Ok(Some(Cursor {
        seq: u64::from_le_bytes(buf[..8].try_into().expect("8 bytes")),
        offset: u64::from_le_bytes(buf[8..16].try_into().expect("8 bytes")),
    }))
}

pub(super) fn write_cursor(file: &mut File, cursor: Cursor) -> io::Result<()> {
    let mut buf = [0u8; CURSOR_LEN];
    buf[..8].copy_from_slice(&cursor.seq.to_le_bytes());
    buf[8..16].copy_from_slice(&cursor.offset.to_le_bytes());
    let crc = crc32fast::hash(&buf[..16]);
    buf[16..].copy_from_slice(&crc.to_le_bytes());
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&buf)
}
