//! The spool's metrics (feature `metrics`; names and meaning in
//! [`crate::metrics`]): its [`SpoolStats`] reported from the place that
//! publishes them to waiting flushes, after every change, so the counters are
//! exact and the gauge current.

use super::SpoolStats;
use crate::metrics::{self as names, Share};

/// What this spool reported last.
#[derive(Debug)]
pub(super) struct Report {
    appended: Share,
    recovered: Share,
    written: Share,
    failed: Share,
    dropped: Share,
    retried: Share,
    damaged: Share,
    records: Share,
}

impl Report {
    pub(super) fn new() -> Self {
        Self {
            appended: Share::counter(names::SPOOL_APPENDED),
            recovered: Share::counter(names::SPOOL_RECOVERED),
            written: Share::counter(names::SPOOL_WRITTEN),
            failed: Share::counter(names::SPOOL_FAILED),
            dropped: Share::counter(names::SPOOL_DROPPED),
            retried: Share::counter(names::SPOOL_RETRIED),
            damaged: Share::counter(names::SPOOL_DAMAGED),
            records: Share::gauge(names::SPOOL_RECORDS),
        }
    }

    /// Reports what changed since the last call.
    pub(super) fn report(&mut self, stats: &SpoolStats) {
        self.appended.set(stats.appended);
        self.recovered.set(stats.recovered);
        self.written.set(stats.written);
        self.failed.set(stats.failed);
        self.dropped.set(stats.dropped);
        self.retried.set(stats.retried);
        self.damaged.set(stats.damaged);
        self.records.set(stats.spooled);
    }
}

impl Drop for Report {
    /// The spool is closed: what it holds on disk is no longer this
    /// process's to write back.
    fn drop(&mut self) {
        self.records.retract();
    }
}
