//! Retention on the writer thread: the age sweep and the row cap, in chunks
//! between batches, and the fair share of the row cap.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rusqlite::params;
use time::OffsetDateTime;

use super::error::context;
use super::writer::Writer;
use crate::record::unix_millis;
use crate::{SinkError, UsageRecord};

/// A consumer's fair share of `max_rows`: one `FAIR_SHARE`th (a quarter).
pub(super) const FAIR_SHARE: u64 = 4;

/// Rows deleted per retention statement; between two, queued writes go first.
const RETENTION_CHUNK: i64 = 500;

/// What retention keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Retention {
    pub(super) max_age: Option<Duration>,
    pub(super) max_rows: Option<u64>,
    /// Over `max_rows`, delete first from a consumer over its fair share.
    pub(super) fair_share: bool,
    pub(super) interval: Duration,
}

impl Retention {
    pub(super) fn enabled(&self) -> bool {
        self.max_age.is_some() || self.max_rows.is_some()
    }
}

impl Writer {
    /// Fair share bookkeeping: the heavy consumer's count grows with its new
    /// rows, and the consumer with the most rows in this batch is the one to
    /// look at next if there is no heavy one (a flood shows up there first).
    pub(super) fn note_batch_consumers(&mut self, batch: &[UsageRecord]) {
        if let Some((heavy, held)) = &mut self.heavy {
            let mine = batch.iter().filter(|r| r.consumer == *heavy).count();
            *held = held.saturating_add(mine as u64);
        }
        // The batch's most frequent consumer: batches are a few hundred records.
        let mut counts: Vec<(Option<&str>, usize)> = Vec::new();
        for record in batch {
            let consumer = record.consumer.as_deref();
            if let Some((_, n)) = counts.iter_mut().find(|(c, _)| *c == consumer) {
                *n += 1;
            } else if counts.len() < 64 {
                counts.push((consumer, 1));
            }
        }
        if let Some((consumer, _)) = counts.iter().max_by_key(|(_, n)| *n) {
            self.dominant = Some(consumer.map(str::to_owned));
        }
    }

    /// Starts a retention round: recount the rows, sweep by age.
    pub(super) fn tick(&mut self) {
        if self.retention.max_rows.is_some() {
            match self
                .conn
                .query_row("SELECT count(*) FROM usage_records", [], |row| {
                    row.get::<_, i64>(0)
                }) {
                Ok(n) => self.rows = u64::try_from(n).unwrap_or(0),
                Err(err) => {
                    if self.failing.fail() {
                        tracing::warn!(
                            path = %self.label,
                            error = %err,
                            "sqlite usage sink: counting rows for retention failed (further failures are not logged until a write succeeds)"
                        );
                    }
                }
            }
        }
        self.sweeping = self.retention.max_age.is_some();
    }

    /// Fair share: over `max_rows`, the consumer holding the most rows, when
    /// it holds more than a quarter of `max_rows`, loses its oldest rows
    /// first (at most `want`, and never below its share), so that a flood
    /// from one client cannot delete the others' history. `false` when no
    /// consumer is over its share.
    fn delete_from_heavy(&mut self, max_rows: u64, want: i64) -> Result<bool, SinkError> {
        let share = (max_rows / FAIR_SHARE).max(1);
        let stale = self
            .heavy_checked
            .is_none_or(|at| at.elapsed() >= self.retention.interval);
        if stale {
            self.heavy_checked = Some(Instant::now());
            self.heavy = self
                .conn
                .prepare_cached(
                    "SELECT consumer, count(*) AS n FROM usage_records \
                     GROUP BY consumer ORDER BY n DESC LIMIT 1",
                )
                .and_then(|mut s| {
                    s.query_row([], |row| {
                        Ok((row.get::<_, Option<String>>(0)?, row.get::<_, i64>(1)?))
                    })
                })
                .map(|(consumer, n)| (consumer, u64::try_from(n).unwrap_or(0)))
                .ok()
                .filter(|(_, n)| *n > share);
        }
        if self.heavy.as_ref().is_none_or(|(_, held)| *held <= share) {
            // Between two full looks: the last batch's main consumer, counted
            // on its index range.
            if let Some(consumer) = self.dominant.take() {
                let held = self
                    .conn
                    .prepare_cached("SELECT count(*) FROM usage_records WHERE consumer IS ?1")
                    .and_then(|mut s| {
                        s.query_row(params![consumer.as_deref()], |row| row.get::<_, i64>(0))
                    })
                    .map_or(0, |n| u64::try_from(n).unwrap_or(0));
                if held > share {
                    self.heavy = Some((consumer, held));
                }
            }
        }
        let Some((consumer, held)) = &mut self.heavy else {
            return Ok(false);
        };
        let over = held.saturating_sub(share);
        if over == 0 {
            self.heavy = None;
            return Ok(false);
        }
        let want = want.min(i64::try_from(over).unwrap_or(i64::MAX));
        let deleted = self
            .conn
            .prepare_cached(
                "DELETE FROM usage_records WHERE rowid IN (SELECT rowid FROM usage_records \
                 WHERE consumer IS ?1 ORDER BY created_at, id LIMIT ?2)",
            )
            .and_then(|mut s| s.execute(params![consumer.as_deref(), want]))
            .map_err(context(&self.label))? as u64;
        *held = held.saturating_sub(deleted);
        if deleted == 0 {
            // Gone meanwhile (another process): look again next interval.
            self.heavy = None;
            return Ok(false);
        }
        self.rows = self.rows.saturating_sub(deleted);
        tracing::debug!(path = %self.label, deleted, "sqlite usage sink: removed a heavy consumer's records past its share of max_rows");
        Ok(true)
    }

    /// Deletes up to [`RETENTION_CHUNK`] of the oldest records created more
    /// than `max_age` ago, in one statement (its own transaction), and
    /// counts them as expired.
    fn expire_chunk(&mut self, max_age: Duration) -> Result<u64, SinkError> {
        let age_ms = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
        let cutoff = unix_millis(OffsetDateTime::now_utc()).saturating_sub(age_ms);
        let deleted = self
            .conn
            .prepare_cached(
                "DELETE FROM usage_records WHERE rowid IN (SELECT rowid FROM usage_records \
                 WHERE created_at < ?1 ORDER BY created_at, id LIMIT ?2)",
            )
            .and_then(|mut s| s.execute(params![cutoff, RETENTION_CHUNK]))
            .map_err(context(&self.label))? as u64;
        self.rows = self.rows.saturating_sub(deleted);
        self.expired.fetch_add(deleted, Ordering::Relaxed);
        Ok(deleted)
    }

    /// Deletes now every record created more than `max_age` ago, chunk by
    /// chunk (each its own transaction, so the WAL stays small); returns how
    /// many.
    pub(super) fn expire_now(&mut self, max_age: Duration) -> Result<u64, SinkError> {
        let mut total = 0;
        loop {
            let deleted = self.expire_chunk(max_age)?;
            total += deleted;
            if (deleted as i64) < RETENTION_CHUNK {
                break;
            }
        }
        self.dirty |= total > 0;
        if total > 0 {
            tracing::info!(path = %self.label, expired = total, "sqlite usage sink: removed records older than asked");
        }
        Ok(total)
    }

    /// Deletes every record of `consumer`, [`RETENTION_CHUNK`] at a time
    /// (each its own transaction); returns how many.
    pub(super) fn erase(&mut self, consumer: &str) -> Result<u64, SinkError> {
        let mut total = 0;
        loop {
            let deleted = self
                .conn
                .prepare_cached(
                    "DELETE FROM usage_records WHERE rowid IN (SELECT rowid FROM usage_records \
                     WHERE consumer = ?1 LIMIT ?2)",
                )
                .and_then(|mut s| s.execute(params![consumer, RETENTION_CHUNK]))
                .map_err(context(&self.label))? as u64;
            total += deleted;
            if (deleted as i64) < RETENTION_CHUNK {
                break;
            }
        }
        self.rows = self.rows.saturating_sub(total);
        if self
            .heavy
            .as_ref()
            .is_some_and(|(c, _)| c.as_deref() == Some(consumer))
        {
            self.heavy = None;
        }
        self.dirty |= total > 0;
        tracing::info!(path = %self.label, erased = total, "sqlite usage sink: erased a consumer's records");
        Ok(total)
    }

    fn over_row_cap(&self) -> bool {
        self.retention.max_rows.is_some_and(|max| self.rows > max)
    }

    pub(super) fn retention_pending(&self) -> bool {
        self.sweeping || self.over_row_cap()
    }

    /// Deletes one chunk of what retention removes.
    pub(super) fn retention_step(&mut self) -> Result<(), SinkError> {
        if self.file.as_ref().is_some_and(|f| f.id.is_none()) {
            // The file is gone and not reopened yet: nothing to delete from.
            self.sweeping = false;
            self.rows = 0;
            return Ok(());
        }
        if self.sweeping {
            let max_age = self.retention.max_age.unwrap_or(Duration::MAX);
            let deleted = self.expire_chunk(max_age)?;
            self.swept += deleted;
            if (deleted as i64) < RETENTION_CHUNK {
                self.sweeping = false;
                let swept = std::mem::take(&mut self.swept);
                if swept > 0 {
                    tracing::info!(
                        path = %self.label,
                        expired = swept,
                        expired_total = self.expired.load(Ordering::Relaxed),
                        "sqlite usage sink: removed records past max_age"
                    );
                }
            }
            return Ok(());
        }
        if let Some(max_rows) = self.retention.max_rows {
            let excess = self.rows.saturating_sub(max_rows);
            if excess == 0 {
                return Ok(());
            }
            let want = i64::try_from(excess)
                .unwrap_or(i64::MAX)
                .min(RETENTION_CHUNK);
            if self.retention.fair_share
                && (self.delete_newcomers(max_rows, want)?
                    || self.delete_from_heavy(max_rows, want)?)
            {
                return Ok(());
            }
            let deleted = self
                .conn
                .prepare_cached(
                    "DELETE FROM usage_records WHERE rowid IN (SELECT rowid FROM usage_records \
                     ORDER BY created_at, id LIMIT ?1)",
                )
                .and_then(|mut s| s.execute(params![want]))
                .map_err(context(&self.label))?;
            if (deleted as i64) < want {
                // The table held fewer rows than counted (another process
                // deleted some) and is now empty.
                self.rows = 0;
            } else {
                self.rows = self.rows.saturating_sub(deleted as u64);
            }
            if deleted > 0 {
                tracing::debug!(path = %self.label, deleted, "sqlite usage sink: removed records past max_rows");
            }
        }
        Ok(())
    }
}
