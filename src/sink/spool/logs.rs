//! The spool's log lines: one per failure streak ([`Streak`]), one when the
//! streak ends, and one at open for what an earlier process left.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::streak::Streak;
use crate::SinkError;

/// The spool's failure streaks: the inner sink's failures, its refusals of
/// spooled records, evictions, and the spool's own write and read errors.
#[derive(Debug, Default)]
pub(super) struct Logs {
    pub(super) sink: Streak,
    refused: Streak,
    full: Streak,
    error: Streak,
    /// Recording written records (the cursor, a segment's delete).
    ack: Streak,
    read: Streak,
    /// A record larger than the whole spool was logged.
    too_large: AtomicBool,
}

impl Logs {
    /// What opening `dir` found: damage (a crash while writing?) or records
    /// to write back first.
    pub(super) fn opened(dir: &Path, records: u64, damaged: u64) {
        if damaged > 0 {
            tracing::warn!(
                target: "tower_usage",
                dir = %dir.display(),
                segments = damaged,
                records,
                "usage spool: torn or corrupt records found (a crash while writing?); what followed them is skipped (counted in its stats().damaged)"
            );
        } else if records > 0 {
            tracing::info!(
                target: "tower_usage",
                dir = %dir.display(),
                records,
                "usage spool: records left by an earlier process will be written first"
            );
        }
    }

    /// What an append of `n` records did.
    pub(super) fn appended(
        &self,
        evicted: u64,
        refused: u64,
        error: Option<&std::io::Error>,
        n: usize,
    ) {
        // A full spool stays full until the sink takes records from it: one
        // warning for all the evictions until then.
        if evicted > 0 && self.full.fail() {
            tracing::warn!(
                target: "tower_usage",
                evicted,
                "usage spool full: its oldest records are evicted to make room (counted in its stats().dropped; logged once until the sink takes records again)"
            );
        }
        if refused > 0 && !self.too_large.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                target: "tower_usage",
                refused,
                "usage spool: records larger than the whole spool are counted in its stats().failed (logged once)"
            );
        }
        match error {
            None => {
                if let Some(failures) = self.error.succeed() {
                    tracing::info!(target: "tower_usage", failures, "usage spool writes again");
                }
            }
            Some(err) => {
                if self.error.fail() {
                    tracing::error!(
                        target: "tower_usage",
                        error = %err,
                        records = n,
                        "usage spool write failed: batches go straight to the sink, or back to the writer to retry, until it writes again (further failures are counted, not logged)"
                    );
                }
            }
        }
    }

    /// The inner sink took spooled records.
    pub(super) fn taken_again(&self) {
        if let Some(batches) = self.refused.succeed() {
            tracing::info!(target: "tower_usage", batches, "usage sink takes spooled records again");
        }
        let _ = self.full.succeed();
    }

    /// The inner sink refused spooled records: a permanent error, or a panic
    /// (`None`).
    pub(super) fn refused(&self, err: Option<&SinkError>, records: u64) {
        if !self.refused.fail() {
            return;
        }
        match err {
            Some(err) => tracing::warn!(
                target: "tower_usage",
                error = %err,
                records,
                "usage sink refused spooled records (a permanent error): counted in the spool's stats().failed (further refusals are counted, not logged)"
            ),
            None => tracing::error!(
                target: "tower_usage",
                records,
                "usage sink panicked in record() on spooled records: counted in the spool's stats().failed (further failures are counted, not logged)"
            ),
        }
    }

    /// Recording a written batch (the cursor, or the segment's delete) failed.
    pub(super) fn acked(&self, result: Option<&std::io::Error>) {
        match result {
            None => {
                if let Some(failures) = self.ack.succeed() {
                    tracing::info!(target: "tower_usage", failures, "usage spool records written records again");
                }
            }
            Some(err) => {
                if self.ack.fail() {
                    tracing::error!(target: "tower_usage", error = %err, "usage spool: recording written records failed (the cursor, or a written segment's delete); a restart may write them again (further failures are not logged until one succeeds)");
                }
            }
        }
    }

    pub(super) fn read_again(&self) {
        if let Some(failures) = self.read.succeed() {
            tracing::info!(target: "tower_usage", failures, "usage spool reads again");
        }
    }

    pub(super) fn damaged(&self, err: &std::io::Error, skipped: u64) {
        if self.read.fail() {
            tracing::error!(
                target: "tower_usage",
                error = %err,
                skipped,
                "usage spool segment damaged: it is skipped (counted in its stats().dropped; further failures are not logged until a read succeeds)"
            );
        }
    }

    pub(super) fn read_failed(&self, err: &std::io::Error) {
        if self.read.fail() {
            tracing::error!(
                target: "tower_usage",
                error = %err,
                "usage spool read failed: the oldest segment is kept and read again after a backoff (further failures are not logged until a read succeeds)"
            );
        }
    }
}
