//! The segment reader against damage (a property test), and the spool's files
//! through open, append, peek, ack, eviction and a reopen.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;

use bytes::Bytes;
use proptest::prelude::*;
use time::OffsetDateTime;

use super::cursor::{write_cursor, Cursor};
use super::log::{Appended, Recovery, Spool};
use super::segment::{self, Contents};
use crate::UsageRecord;

fn record(i: u64, body: Vec<u8>, path: String) -> UsageRecord {
    let mut r = UsageRecord {
        id: format!("rec-{i:06}"),
        method: ["GET", "POST", "DELETE"][(i % 3) as usize].into(),
        path,
        status: 200 + (i % 300) as u16,
        created_at: OffsetDateTime::from_unix_timestamp_nanos(
            1_700_000_000_000_000_000 + i as i128 * 1_000_000,
        )
        .unwrap(),
        duration_us: i * 7,
        ..UsageRecord::default()
    };
    r.request.body.size = body.len() as u64;
    r.request.body.bytes = Bytes::from(body);
    if i.is_multiple_of(4) {
        r.consumer = Some(format!("key:{i}"));
    }
    if i % 3 == 1 {
        r.trace = Some(crate::TraceContext {
            trace_id: format!("{:032x}", i + 1),
            span_id: format!("{:016x}", i + 1),
        });
    }
    r
}

fn records() -> impl Strategy<Value = Vec<UsageRecord>> {
    prop::collection::vec(
        (
            prop::collection::vec(any::<u8>(), 0..200),
            "/[a-z0-9/]{0,24}",
        ),
        0..24,
    )
    .prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (body, path))| record(i as u64, body, path))
            .collect()
    })
}

/// A segment of `records`, and where each record's frame ends.
fn segment_of(records: &[UsageRecord]) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = segment::header().to_vec();
    let mut ends = Vec::new();
    for r in records {
        segment::put_record(&mut bytes, r);
        ends.push(bytes.len());
    }
    (bytes, ends)
}

/// How a test damages the tail of a segment.
#[derive(Debug, Clone)]
enum Damage {
    /// Cut at this fraction (per mille) of the bytes after the header.
    Truncate(u16),
    /// Flip bits of the byte at this fraction (per mille) past the header.
    Flip(u16, u8),
    /// Append these bytes (a torn frame, or garbage).
    Append(Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (0u16..1000).prop_map(Damage::Truncate),
        (0u16..1000, 1u8..=255).prop_map(|(at, bits)| Damage::Flip(at, bits)),
        prop::collection::vec(any::<u8>(), 1..40).prop_map(Damage::Append),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever happens to a segment's tail, every record before the damage
    /// comes back, in order, and nothing panics.
    #[test]
    fn every_intact_record_before_the_damage_is_read_back_in_order(
        records in records(),
        damage in damage(),
    ) {
        let (mut bytes, ends) = segment_of(&records);
        let header = segment::HEADER_LEN as usize;
        let span = bytes.len() - header;
        // The records whose frames lie wholly before the damage.
        let intact = match &damage {
            Damage::Truncate(at) => {
                let cut = header + span * usize::from(*at) / 1000;
                bytes.truncate(cut);
                ends.iter().take_while(|&&e| e <= cut).count()
            }
            Damage::Flip(at, bits) => {
                if span == 0 {
                    0
                } else {
                    let at = header + span * usize::from(*at) / 1000;
                    bytes[at] ^= bits;
                    ends.iter().take_while(|&&e| e <= at).count()
                }
            }
            Damage::Append(garbage) => {
                bytes.extend_from_slice(garbage);
                records.len()
            }
        };
        let Contents { records: read, undecodable, damaged } = segment::read_all(&bytes);
        prop_assert_eq!(undecodable, 0);
        // A flipped byte is caught by the CRC (a miss is a 2^-32 chance), a
        // cut inside a frame by its length.
        prop_assert_eq!(&read[..], &records[..intact]);
        let whole = matches!(damage, Damage::Truncate(_)) && ends[..intact].last().copied().unwrap_or(header) == bytes.len();
        let untouched = records.is_empty() && !matches!(damage, Damage::Append(_));
        prop_assert_eq!(damaged, !(whole || untouched));
    }

    /// Arbitrary bytes after a valid header: no panic, and what is read is
    /// what a reader of intact frames would read.
    #[test]
    fn arbitrary_bytes_never_panic(tail in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut bytes = segment::header().to_vec();
        bytes.extend_from_slice(&tail);
        let _ = segment::read_all(&bytes);
        let _ = segment::read_all(&tail);
    }
}

fn some(n: u64, from: u64) -> Vec<UsageRecord> {
    (from..from + n)
        .map(|i| record(i, vec![b'x'; 100], format!("/r/{i}")))
        .collect()
}

/// The evictions of an append that must succeed whole.
fn ok(a: Appended) -> u64 {
    assert!(a.error.is_none() && a.refused == 0, "{a:?}");
    a.evicted
}

fn read_everything(spool: &mut Spool) -> Vec<UsageRecord> {
    let mut all = Vec::new();
    let mut batch = Vec::new();
    loop {
        let peeked = spool.peek(7, &mut batch).unwrap();
        if peeked.records + peeked.undecodable == 0 {
            return all;
        }
        all.append(&mut batch);
        spool.ack().unwrap();
    }
}

/// A directory in which a spool of 1 MiB was left with `n` records.
fn left_behind(n: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = Spool::open(dir.path(), 1 << 20).unwrap();
    ok(spool.append(&some(n, 0)));
    dir
}

#[test]
fn records_come_back_in_order_across_segments_and_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, recovery) = Spool::open(dir.path(), 128 * 1024).unwrap();
    assert_eq!(recovery, Recovery::default());
    for k in 0..10 {
        assert_eq!(ok(spool.append(&some(20, k * 20))), 0, "nothing evicted");
    }
    assert_eq!(spool.records(), 200);
    // A second spool on the directory is refused while this one is open.
    let err = Spool::open(dir.path(), 128 * 1024).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "{err}");
    let segments = fs::read_dir(dir.path()).unwrap().count() - 2;
    assert!(segments > 1, "rolled into {segments} segments");

    // Half read and acknowledged, then the process ends.
    let mut batch = Vec::new();
    let mut read = 0;
    while read < 100 {
        read += spool.peek(10, &mut batch).unwrap().records;
        spool.ack().unwrap();
    }
    drop(spool);

    let (mut spool, recovery) = Spool::open(dir.path(), 128 * 1024).unwrap();
    // The cursor says where the reading stopped: the 100 unread come back.
    assert_eq!(
        recovery,
        Recovery {
            records: 100,
            damaged: 0
        }
    );
    ok(spool.append(&some(5, 200)));
    let all = read_everything(&mut spool);
    let ids: Vec<u64> = all.iter().map(|r| r.id[4..].parse().unwrap()).collect();
    assert_eq!(ids, (100..205).collect::<Vec<_>>());
    assert_eq!(all[0], some(1, ids[0])[0], "the record as it was appended");
    assert_eq!(spool.records(), 0);
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        2,
        "every written segment is deleted; the lock and cursor files stay"
    );
}

#[test]
fn a_torn_tail_is_skipped_counted_and_never_appended_after() {
    let dir = left_behind(10);
    let seg = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let len = fs::metadata(&seg).unwrap().len();
    // A crash in the middle of the last frame.
    fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 30)
        .unwrap();

    let (mut spool, recovery) = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(
        recovery,
        Recovery {
            records: 9,
            damaged: 1
        }
    );
    ok(spool.append(&some(3, 10)));
    let ids: Vec<String> = read_everything(&mut spool)
        .into_iter()
        .map(|r| r.id)
        .collect();
    let want: Vec<String> = (0..9)
        .chain(10..13)
        .map(|i| format!("rec-{i:06}"))
        .collect();
    assert_eq!(ids, want);
}

#[test]
fn a_full_spool_evicts_its_oldest_segments_and_says_how_many_records() {
    let dir = tempfile::tempdir().unwrap();
    let max = 64 * 1024;
    let (mut spool, _) = Spool::open(dir.path(), max).unwrap();
    let mut evicted = 0;
    for k in 0..100 {
        evicted += ok(spool.append(&some(10, k * 10)));
        assert!(spool.bytes() <= max, "{} > {max}", spool.bytes());
    }
    assert!(evicted > 0);
    assert_eq!(spool.records() + evicted, 1000);
    let ids: Vec<u64> = read_everything(&mut spool)
        .iter()
        .map(|r| r.id[4..].parse().unwrap())
        .collect();
    assert_eq!(ids.len() as u64 + evicted, 1000);
    assert_eq!(ids[0], evicted, "the oldest went first");
    assert_eq!(*ids.last().unwrap(), 999);

    // A record larger than the whole spool is refused; a batch larger than
    // the spool keeps its newest records.
    ok(spool.append(&some(5, 1000)));
    let huge = record(0, vec![0; 80 * 1024], "/big".into());
    let a = spool.append(&[huge]);
    assert_eq!((a.stored, a.refused, a.evicted), (0, 1, 0));
    assert_eq!(spool.records(), 5);
    let a = spool.append(&some(1000, 2000));
    assert!(a.error.is_none());
    assert_eq!(a.stored, 1000);
    assert_eq!(a.evicted + spool.records(), 1005, "{a:?}");
    assert!(spool.bytes() <= max);
    let ids: Vec<u64> = read_everything(&mut spool)
        .iter()
        .map(|r| r.id[4..].parse().unwrap())
        .collect();
    assert_eq!(*ids.last().unwrap(), 2999);
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
}

#[test]
fn a_segment_of_a_newer_format_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut header = segment::header();
    header[8] = segment::VERSION as u8 + 1;
    fs::write(dir.path().join("00000000000000000003.seg"), header).unwrap();
    let err = Spool::open(dir.path(), 1 << 20).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(
        err.to_string()
            .contains(&format!("version {}", segment::VERSION + 1)),
        "{err}"
    );
}

/// A segment written by a release before the trace (format version 1) is
/// read by this one: what an upgrade finds in the spool is written back.
#[test]
fn a_segment_of_version_1_is_read() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/spool_segment");
    let old = fs::read(dir.join("seed-whole-v1")).unwrap();
    assert_eq!(&old[8..12], &1u32.to_le_bytes());
    let read = segment::read_all(&old);
    assert!(!read.damaged);
    assert_eq!(read.undecodable, 0);
    // Version 1 has no trace.
    let mut expected = some(3, 0);
    for r in &mut expected {
        r.trace = None;
    }
    assert_eq!(read.records, expected);
    // And through the spool's own open and peek.
    let spool_dir = tempfile::tempdir().unwrap();
    fs::write(spool_dir.path().join("00000000000000000000.seg"), &old).unwrap();
    let (mut spool, recovery) = Spool::open(spool_dir.path(), 1 << 20).unwrap();
    assert_eq!(recovery.records, 3);
    let mut out = Vec::new();
    spool.peek(10, &mut out).unwrap();
    assert_eq!(out, expected);
}

/// Writes the fuzz target's seed segments (`fuzz/regressions/spool_segment`)
/// when `SPOOL_SEEDS=1`; otherwise checks they are what this code writes.
#[test]
fn fuzz_seeds_are_segments_of_this_format() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/spool_segment");
    let (whole, ends) = segment_of(&some(3, 0));
    let seeds = [
        ("seed-whole", whole.clone()),
        ("seed-torn", whole[..ends[1] + 5].to_vec()),
        ("seed-header-only", segment::header().to_vec()),
        // One record's payload, as a frame holds it.
        (
            "seed-payload",
            whole[segment::HEADER_LEN as usize + 8..ends[0]].to_vec(),
        ),
    ];
    for (name, bytes) in seeds {
        let path = dir.join(name);
        if std::env::var_os("SPOOL_SEEDS").is_some() {
            fs::write(&path, &bytes).unwrap();
        }
        assert_eq!(
            fs::read(&path).unwrap(),
            bytes,
            "{name}: rerun with SPOOL_SEEDS=1"
        );
    }
}

#[test]
fn the_records_before_one_too_large_for_the_spool_are_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = Spool::open(dir.path(), 32 * 1024).unwrap();
    let huge = record(9, vec![0; 40 * 1024], "/big".into());
    let mut batch = some(2, 0);
    batch.push(huge);
    let a = spool.append(&batch);
    assert!(a.error.is_none(), "{a:?}");
    assert_eq!((a.stored, a.refused, a.evicted), (2, 1, 0));
    let ids: Vec<String> = read_everything(&mut spool)
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, ["rec-000000", "rec-000001"]);
}

#[test]
fn a_chunk_never_takes_the_spool_past_max_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let max = 5000;
    let (mut spool, _) = Spool::open(dir.path(), max).unwrap();
    // Each fits alone; the two together pass both a chunk and the spool.
    let batch = [
        record(0, vec![1; 3000], "/a".into()),
        record(1, vec![2; 3000], "/b".into()),
    ];
    let a = spool.append(&batch);
    assert!(a.error.is_none(), "{a:?}");
    assert_eq!((a.stored, a.refused, a.evicted), (2, 0, 1), "{a:?}");
    assert!(spool.bytes() <= max, "{} > {max}", spool.bytes());
    let ids: Vec<String> = read_everything(&mut spool)
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, ["rec-000001"]);
}

/// A spool of several segments (of 8 KiB, the spool being 64 KiB).
fn several_segments(dir: &Path) -> Spool {
    let (mut spool, _) = Spool::open(dir, 64 * 1024).unwrap();
    for k in 0..6 {
        ok(spool.append(&some(20, k * 20)));
    }
    assert!(spool.segments.len() >= 3, "{:?}", spool.segments);
    spool
}

/// Puts a directory where a segment's file was: its delete and its reads fail.
fn block(path: &Path) {
    fs::remove_file(path).unwrap();
    fs::create_dir(path).unwrap();
    fs::write(path.join("x"), b"").unwrap();
}

#[test]
fn a_segment_whose_delete_fails_stays_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut spool = several_segments(dir.path());
    let before = spool.records();
    block(&spool.segments[0].path.clone());
    assert!(spool.skip_oldest().is_err());
    assert_eq!(spool.records(), before, "still counted, still there");

    // An eviction that fails at the second segment counts the first.
    let dir = tempfile::tempdir().unwrap();
    let mut spool = several_segments(dir.path());
    let first = spool.segments[0].unread();
    block(&spool.segments[1].path.clone());
    let a = spool.append(&some(300, 1000));
    assert!(a.error.is_some(), "{a:?}");
    assert_eq!(a.evicted, first, "{a:?}");
    assert_eq!(spool.records() + first, 120 + a.stored);
}

#[test]
fn after_a_failed_write_the_next_append_starts_a_new_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = Spool::open(dir.path(), 1 << 20).unwrap();
    ok(spool.append(&some(3, 0)));
    // A handle that cannot write (nor be cut back): the write fails.
    let path = spool.segments.back().unwrap().path.clone();
    spool.active = Some(File::open(&path).unwrap());
    let a = spool.append(&some(3, 3));
    assert!(a.error.is_some() && a.stored == 0, "{a:?}");
    ok(spool.append(&some(3, 6)));
    let ids: Vec<u64> = read_everything(&mut spool)
        .iter()
        .map(|r| r.id[4..].parse().unwrap())
        .collect();
    assert_eq!(ids, [0, 1, 2, 6, 7, 8]);
}

fn put_cursor(dir: &Path, c: Cursor) {
    let mut file = OpenOptions::new()
        .write(true)
        .open(dir.join("cursor"))
        .unwrap();
    write_cursor(&mut file, c).unwrap();
}

#[test]
fn a_cursor_that_does_not_fit_the_segments_is_ignored() {
    let dir = left_behind(10);
    // Past the last segment: it would skip (delete) every segment.
    put_cursor(
        dir.path(),
        Cursor {
            seq: 1000,
            offset: segment::HEADER_LEN,
        },
    );
    let (spool, recovery) = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(recovery.records, 10);
    drop(spool);
    // Past the end of its segment.
    put_cursor(
        dir.path(),
        Cursor {
            seq: 0,
            offset: 1 << 40,
        },
    );
    let (mut spool, recovery) = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(recovery.records, 10);
    assert_eq!(read_everything(&mut spool).len(), 10);
    drop(spool);

    // The largest sequence number, with no segment: no overflow.
    put_cursor(
        dir.path(),
        Cursor {
            seq: u64::MAX,
            offset: 0,
        },
    );
    let (mut spool, recovery) = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(recovery.records, 0);
    ok(spool.append(&some(2, 20)));
    drop(spool);
    let (mut spool, recovery) = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(recovery.records, 2);
    assert_eq!(read_everything(&mut spool).len(), 2);
}

#[test]
fn a_relative_directory_is_made_absolute() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    fs::create_dir_all(&root).unwrap();
    let dir = tempfile::tempdir_in(&root).unwrap();
    let name = dir.path().file_name().unwrap();
    // Tests run in the package's directory.
    let relative = Path::new("target").join(name).join("spool");
    assert!(relative.is_relative());
    let (spool, _) = Spool::open(&relative, 1 << 20).unwrap();
    assert!(spool.dir.is_absolute(), "{}", spool.dir.display());
    assert_eq!(spool.dir, fs::canonicalize(&relative).unwrap());
}

#[cfg(unix)]
#[test]
fn the_spools_files_are_for_this_user_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool");
    let (mut spool, _) = Spool::open(&path, 1 << 20).unwrap();
    ok(spool.append(&some(1, 0)));
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&path), 0o700);
    for entry in fs::read_dir(&path).unwrap() {
        let p = entry.unwrap().path();
        assert_eq!(mode(&p), 0o600, "{}", p.display());
    }
}

#[test]
fn files_that_are_not_segments_are_left_alone_or_set_aside() {
    let dir = left_behind(3);
    fs::create_dir(dir.path().join("00000000000000000005.seg")).unwrap();
    let stranger = dir.path().join("00000000000000000006.seg");
    fs::write(&stranger, b"not a segment, but someone's file").unwrap();
    let (mut spool, recovery) = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(
        recovery,
        Recovery {
            records: 3,
            damaged: 1
        }
    );
    assert_eq!(
        fs::read(stranger.with_extension("bad")).unwrap(),
        b"not a segment, but someone's file"
    );
    assert_eq!(read_everything(&mut spool).len(), 3);
}

#[test]
fn a_written_segment_is_deleted_even_when_the_cursor_cannot_be_written() {
    // A full volume: the cursor file (empty on a fresh spool) cannot grow.
    // The segment's delete needs no room, and says all of it is written.
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = Spool::open(dir.path(), 1 << 20).unwrap();
    ok(spool.append(&some(3, 0)));
    let mut batch = Vec::new();
    assert_eq!(spool.peek(10, &mut batch).unwrap().records, 3);
    spool.cursor = File::open(dir.path().join("cursor")).unwrap();
    spool.ack().unwrap();
    assert_eq!(spool.records(), 0);
    assert!(fs::read_dir(dir.path()).unwrap().all(|e| e
        .unwrap()
        .path()
        .extension()
        .is_none_or(|e| e != "seg")));
    drop(spool);
    let (_, recovery) = Spool::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(recovery.records, 0, "nothing is written again at a restart");

    // Part of a segment written: the cursor says so; when it cannot, the
    // error is returned (and logged by the caller), the records stay read.
    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = Spool::open(dir.path(), 1 << 20).unwrap();
    ok(spool.append(&some(3, 0)));
    assert_eq!(spool.peek(2, &mut batch).unwrap().records, 2);
    spool.cursor = File::open(dir.path().join("cursor")).unwrap();
    assert!(spool.ack().is_err());
    assert_eq!(spool.records(), 1);
}

#[test]
fn a_batch_is_appended_whole_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    // Segments of 8 KiB: a batch of 100 records (about 20 KiB) takes three
    // chunks, the first in a new segment; the second cannot make its own.
    let (mut spool, _) = Spool::open(dir.path(), 64 * 1024).unwrap();
    ok(spool.append(&some(3, 0)));
    let before = spool.bytes();
    let next = dir.path().join(format!("{:020}.seg", spool.next_seq + 1));
    fs::create_dir(&next).unwrap();
    let a = spool.append(&some(100, 3));
    assert!(a.error.is_some(), "{a:?}");
    assert_eq!((a.stored, a.evicted), (0, 0), "{a:?}");
    assert_eq!((spool.records(), spool.bytes()), (3, before));
    fs::remove_dir(&next).unwrap();
    ok(spool.append(&some(2, 103)));
    let ids: Vec<u64> = read_everything(&mut spool)
        .iter()
        .map(|r| r.id[4..].parse().unwrap())
        .collect();
    assert_eq!(ids, [0, 1, 2, 103, 104]);
    drop(spool);
    let (_, recovery) = Spool::open(dir.path(), 64 * 1024).unwrap();
    assert_eq!(recovery, Recovery::default());
}
