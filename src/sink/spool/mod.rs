//! [`Spooled`]: a disk spool around any [`UsageSink`](crate::UsageSink)
//! (feature `spool`), in the manner of Vector's and Fluent Bit's disk
//! buffers, and of tower's wrappers: it is itself a sink, so the layer and
//! its writer know nothing of it, and any sink, your own included, can be
//! spooled.
//!
//! ```
//! use tower_usage::sink::spool::Spooled;
//! use tower_usage::{MemorySink, UsageLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! # let dir = tempfile::tempdir()?;
//! let sink = Spooled::new(MemorySink::new(), dir.path().join("usage-spool"), 1 << 30)?;
//! let layer = UsageLayer::new(sink.clone());
//! let handle = layer.handle();
//! // ... serve requests through `layer` ...
//! handle.flush().await; // every record is in the sink, or on disk (synced)
//! sink.flush().await; // and now in the inner sink
//! assert!(sink.stats().is_balanced());
//! # Ok(())
//! # }
//! ```
//!
//! # How records flow
//!
//! - A batch goes straight to the inner sink while it answers and nothing
//!   waits on disk. When the inner sink fails with a temporary error, or
//!   takes longer than [`sink_timeout`](Spooled::sink_timeout) (10 s), the
//!   batch is appended to the spool instead, synced, and acknowledged; so
//!   is every later batch while the inner sink is down, and while older
//!   records wait on disk (so records reach it in order).
//! - The write-back task (spawned on tokio, or run by you: [`Spooled::pair`])
//!   probes the inner sink with the oldest spooled batch, backing off from
//!   100 ms to 2 s between tries; once it is written, it writes the rest,
//!   oldest first. New batches go to disk until the spool is empty.
//! - A permanent error, or a panic in the inner sink, fails the batch: a
//!   batch straight through returns the error (the writer counts it failed);
//!   a spooled batch is counted in [`SpoolStats::failed`]. The spool is for
//!   outages, not for records the sink refuses.
//! - When the spool cannot store a batch (a full volume, an I/O error), it
//!   is never worse than no spool: with nothing on disk, the inner sink is
//!   tried and its answer returned, so the writer retries a failing batch in
//!   memory as it would without a spool
//!   ([`max_retry_time`](crate::UsageLayer::max_retry_time)); with older
//!   records on disk, a temporary error is returned and the writer retries
//!   it, while the write-back task empties the spool.
//! - Only records are spooled: built and redacted, as the sink would get
//!   them; never the raw captures.
//!
//! # `flush`, `completeUntil` and the counters with a spool
//!
//! A record the spool acknowledged is *written* as far as the layer's writer
//! can tell: [`UsageHandle::flush`](crate::UsageHandle::flush) returns once
//! every record is in the inner sink or on disk (synced), and
//! [`WriterStats::written`](crate::WriterStats::written) counts both. To wait
//! until the spool is written back too, call [`Spooled::flush`] (or
//! [`flush_timeout`](Spooled::flush_timeout)) after it. The writer's
//! [`complete_until`](crate::UsageHandle::complete_until), and the summary's
//! `completeUntil`, are never later than the oldest record on disk
//! ([`UsageSink::pending_since`](crate::UsageSink::pending_since)): records
//! on disk are not in the inner sink's answers yet. What the spool did with
//! its records is in [`Spooled::stats`]: `appended + recovered == written +
//! failed + dropped + spooled` at every instant.
//!
//! # On disk
//!
//! Append-only segment files (`<sequence>.seg`, a new one past an eighth of
//! `max_bytes`, within 4 KiB and 64 MiB), each record framed by its length
//! and a CRC-32. Each appended batch is synced to disk (`fdatasync`) before
//! it is acknowledged, so a spooled record survives a crash of the process
//! or the machine; a batch is stored whole or not at all. A record torn by a
//! crash, or a corrupt one, is detected when the spool is opened: it and
//! what follows in its segment are skipped, logged once and counted in
//! [`SpoolStats::damaged`]; so is a file named like a segment that is not
//! one, renamed `*.bad`. A segment is deleted once all its records are
//! written (before the cursor would be moved past it, so a full volume does
//! not keep it); a `cursor` file says how far a segment is written. A crash
//! between a write to the inner sink and that record writes those records
//! again at the next start: the bundled sinks store one record per id, so
//! they keep one. A directory has one spool at a time: its `lock` file is
//! held while a spool is open, and let go when the last clone of the
//! [`Spooled`] is dropped (and its write-back task has seen it). Files are
//! for this user alone (`0600`, the directory `0700`, on unix).
//!
//! # Bounds
//!
//! When an append would take the spool past `max_bytes`, its oldest
//! segments are deleted first, and their records counted as dropped
//! (logged once per streak); a record larger than the whole spool is counted
//! as failed. A segment that cannot be read back for a passing reason (too
//! many open files, an I/O error) is kept and read again after a backoff;
//! one damaged since it was written is skipped, its records counted as
//! dropped. The file work runs on tokio's blocking pool, never on the
//! request path; in memory, the spool holds one batch read back at a time
//! (at most 256 records), and a copy of the batch being appended.

mod cursor;
mod files;
mod log;
mod logs;
#[cfg(feature = "metrics")]
mod metrics;
mod open;
pub(crate) mod segment;
mod spooled;
mod stats;
mod worker;

use logs::Logs;
pub use spooled::Spooled;
pub use stats::SpoolStats;
pub use worker::SpoolWorker;

/// The least `max_bytes` a spool takes: 16 KiB (a segment's header and a
/// few records); below it, [`Spooled::new`] is an error.
pub const MIN_SPOOL_BYTES: u64 = 16 * 1024;

#[cfg(test)]
mod tests;
