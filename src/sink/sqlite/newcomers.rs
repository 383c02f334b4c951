//! The newcomers' pool of the row cap's fair share: consumers first seen
//! while the table is at [`max_rows`](super::SqliteSinkBuilder::max_rows)
//! share one quota (a quarter of it), so that a flood of invented identities
//! cannot delete the history of the consumers that were there before it.

use std::collections::{HashMap, VecDeque};

use rusqlite::params;

use super::error::context;
use super::retention::FAIR_SHARE;
use super::writer::Writer;
use crate::record::unix_millis;
use crate::{SinkError, UsageRecord};

/// How long a newcomer's rows must span before it is established: a minute.
const ESTABLISHED_AFTER_MS: i64 = 60_000;

/// The newcomers this writer knows of (a restart forgets them: every
/// consumer in the file is then established).
#[derive(Debug, Default)]
pub(super) struct Newcomers {
    /// Each newcomer (`None`: the anonymous one): its first row's time and
    /// how many rows it holds.
    held: HashMap<Option<String>, (i64, u64)>,
    /// Newcomers in the order they came, oldest first (some may be gone
    /// from `held` since).
    order: VecDeque<Option<String>>,
    /// The rows of all newcomers.
    rows: u64,
}

impl Writer {
    /// Before a batch is written: notes its consumers that are new while
    /// the table is full, and establishes newcomers whose rows now span
    /// [`ESTABLISHED_AFTER_MS`]. One index probe per consumer of the batch
    /// not seen before, only while the table is full.
    pub(super) fn note_newcomers(&mut self, batch: &[UsageRecord]) -> Result<(), SinkError> {
        let Some(max_rows) = self.retention.max_rows else {
            return Ok(());
        };
        if !self.retention.fair_share {
            return Ok(());
        }
        let full = self.rows >= max_rows;
        let mut seen: Vec<Option<&str>> = Vec::new();
        for record in batch {
            let consumer = record.consumer.as_deref();
            let ms = unix_millis(record.created_at);
            let key = consumer.map(str::to_owned);
            if let Some((first, _)) = self.newcomers.held.get(&key) {
                if ms.saturating_sub(*first) >= ESTABLISHED_AFTER_MS {
                    if let Some((_, rows)) = self.newcomers.held.remove(&key) {
                        self.newcomers.rows = self.newcomers.rows.saturating_sub(rows);
                    }
                }
                continue;
            }
            if !full || seen.contains(&consumer) {
                continue;
            }
            seen.push(consumer);
            let exists = self
                .conn
                .prepare_cached("SELECT 1 FROM usage_records WHERE consumer IS ?1 LIMIT 1")
                .and_then(|mut s| s.exists(params![consumer]))
                .map_err(context(&self.label))?;
            if !exists {
                self.newcomers.held.insert(key.clone(), (ms, 0));
                self.newcomers.order.push_back(key);
            }
        }
        Ok(())
    }

    /// After a batch is written: counts the newcomers' new rows.
    pub(super) fn count_newcomers(&mut self, batch: &[UsageRecord]) {
        if self.newcomers.held.is_empty() {
            return;
        }
        for record in batch {
            if let Some((_, rows)) = self.newcomers.held.get_mut(&record.consumer) {
                *rows += 1;
                self.newcomers.rows += 1;
            }
        }
    }

    /// Over `max_rows`, when the newcomers hold more than their quota (a
    /// [`FAIR_SHARE`]th of `max_rows`): deletes the rows of the oldest
    /// newcomers, whole consumers at a time (by the consumer index), about
    /// `want` rows. `false` when the newcomers are within their quota.
    pub(super) fn delete_newcomers(&mut self, max_rows: u64, want: i64) -> Result<bool, SinkError> {
        let quota = (max_rows / FAIR_SHARE).max(1);
        if self.newcomers.rows <= quota {
            return Ok(false);
        }
        let mut deleted = 0u64;
        while deleted < u64::try_from(want).unwrap_or(0) && self.newcomers.rows > quota {
            let Some(consumer) = self.newcomers.order.pop_front() else {
                break;
            };
            let Some((_, rows)) = self.newcomers.held.remove(&consumer) else {
                continue; // established since
            };
            self.newcomers.rows = self.newcomers.rows.saturating_sub(rows);
            let n = self
                .conn
                .prepare_cached("DELETE FROM usage_records WHERE consumer IS ?1")
                .and_then(|mut s| s.execute(params![consumer.as_deref()]))
                .map_err(context(&self.label))? as u64;
            deleted += n;
        }
        self.rows = self.rows.saturating_sub(deleted);
        if deleted > 0 {
            tracing::debug!(path = %self.label, deleted, "sqlite usage sink: removed newcomers' records past their quota of max_rows");
        }
        Ok(deleted > 0)
    }

    /// Forgets the newcomers (the file was replaced).
    pub(super) fn forget_newcomers(&mut self) {
        self.newcomers = Newcomers::default();
    }
}
